//! `push`: the stored blobs and manifest, byte for byte, so the image keeps
//! its digest (nothing is recompressed or re-serialized).
//!
//! Each blob is first asked for (HEAD): the registry may have it already,
//! e.g. from an interrupted push, and it is then not sent again. Next, when
//! the store knows another repository of the same registry holding the blob
//! ([`Store::sources`]), the registry is asked to mount it from there.
//! Otherwise it is uploaded in chunks. Blobs move in parallel (bounded); the
//! manifest goes last, once every blob it names is in the registry.
use super::{
    registry_error, short, Forward, Registry, RemoteRef, TransferEvent, TransferKind,
    TransferProgress,
};
use crate::image::{Descriptor, MAX_MANIFEST_SIZE};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use std::io::Read;

/// Bytes read from a blob file per upload chunk.
const CHUNK: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// Where the image went (`host/repository:tag`).
    pub reference: String,
    /// The manifest digest (the stored image's, unchanged).
    pub digest: String,
    /// Blobs uploaded (the rest existed or were mounted).
    pub uploaded: usize,
    pub uploaded_bytes: u64,
}

/// Pushes the stored image `image` to `dest` (default: `image` itself).
pub fn push(
    store: &Store,
    reg: &Registry,
    image: &str,
    dest: Option<&str>,
    progress: &dyn TransferProgress,
) -> Result<PushOutcome> {
    super::relayed(progress, |p| push_inner(store, reg, image, dest, p))
}

fn push_inner(
    store: &Store,
    reg: &Registry,
    image: &str,
    dest: Option<&str>,
    progress: &Forward,
) -> Result<PushOutcome> {
    let dest = match dest {
        Some(d) => d,
        None if crate::store::looks_like_content_address(image) || image.contains('@') => {
            bail!("pushing {image:?} needs a destination name: berth-build push {image} REGISTRY/REPOSITORY[:TAG]")
        }
        None => image,
    };
    let img = store.resolve(image)?;
    let r = RemoteRef::parse(dest)?;
    if let Some(d) = &r.digest {
        if d != &img.descriptor.digest {
            bail!(
                "{dest}: the image {image} has digest {}, not {d}",
                img.descriptor.digest
            );
        }
    }
    let manifest_bytes =
        store.read_blob_limited(&img.descriptor.digest, "manifest", MAX_MANIFEST_SIZE)?;
    let media_type = img
        .manifest
        .media_type
        .clone()
        .unwrap_or_else(|| img.descriptor.media_type.clone());
    let blobs: Vec<Descriptor> = std::iter::once(img.manifest.config.clone())
        .chain(img.manifest.layers.iter().cloned())
        .collect();
    for b in &blobs {
        if !store.has_blob(&b.digest) {
            bail!("{image}: blob {} is missing from the store", b.digest);
        }
    }
    let (uploaded, uploaded_bytes) = upload(
        store,
        reg,
        &r,
        &manifest_bytes,
        &media_type,
        &blobs,
        progress,
    )
    .with_context(|| format!("pushing {image} to {r}"))?;
    progress.event(TransferEvent::new(
        TransferKind::Resolved,
        "",
        0,
        0,
        format!("{r}: manifest {}", img.descriptor.digest),
    ));
    Ok(PushOutcome {
        reference: r.to_string(),
        digest: img.descriptor.digest,
        uploaded,
        uploaded_bytes,
    })
}

/// Sends `blobs` (all in the store) and then the manifest `manifest_bytes`
/// to `r`; returns how many blobs and bytes were uploaded. Records the
/// repository as a source of each blob.
pub(super) fn upload(
    store: &Store,
    reg: &Registry,
    r: &RemoteRef,
    manifest_bytes: &[u8],
    media_type: &str,
    blobs: &[Descriptor],
    progress: &Forward,
) -> Result<(usize, u64)> {
    for b in blobs {
        if !store.has_blob(&b.digest) {
            bail!("blob {} is missing from the store", b.digest);
        }
    }
    let outcome = super::block_on(async {
        let host = r.host.as_str();
        let client = reg.client_for(host)?;
        let auth = reg.auth_for(host)?;
        let oref = r.oci(host);
        client
            .auth(&oref, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| registry_error(host, &format!("authenticating to push {r}"), e))?;
        // Futures made first, so the stream holds no borrowing closure
        // (which would not be Send).
        let uploads: Vec<_> = blobs
            .iter()
            .map(|b| push_blob(&client, &oref, r, store, b, progress))
            .collect();
        let sent: Vec<Option<u64>> = futures_util::stream::iter(uploads)
            .buffer_unordered(super::MAX_PARALLEL)
            .try_collect()
            .await?;
        let content_type = media_type
            .parse()
            .with_context(|| format!("manifest media type {media_type:?}"))?;
        client
            .push_manifest_raw(&oref, manifest_bytes.to_vec(), content_type)
            .await
            .map_err(|e| registry_error(host, &format!("pushing manifest of {r}"), e))?;
        let uploaded = sent.iter().flatten().count();
        let uploaded_bytes = sent.iter().flatten().sum();
        anyhow::Ok((uploaded, uploaded_bytes))
    })??;
    let repo = format!("{}/{}", r.host, r.repository);
    for b in blobs {
        store.add_source(&b.digest, &repo)?;
    }
    Ok(outcome)
}

/// Makes one blob present in the destination repository; returns the bytes
/// uploaded, or `None` when nothing had to be sent.
async fn push_blob(
    client: &oci_client::Client,
    oref: &oci_client::Reference,
    r: &RemoteRef,
    store: &Store,
    b: &Descriptor,
    progress: &Forward,
) -> Result<Option<u64>> {
    let host = r.host.as_str();
    let id = short(&b.digest);
    let exists = match client.blob_exists(oref, &b.digest).await {
        Ok(exists) => exists,
        // A server error to HEAD says nothing about the blob (a registry
        // killed while linking a blob answers 500 for it until the blob is
        // uploaded again): upload it, which either repairs it or fails
        // with the registry's own error.
        Err(e) if is_server_error(&e) => false,
        Err(e) => {
            return Err(registry_error(
                host,
                &format!("checking blob {}", b.digest),
                e,
            ))
        }
    };
    if exists {
        progress.event(TransferEvent::new(
            TransferKind::Exists,
            &id,
            b.size,
            b.size,
            String::new(),
        ));
        return Ok(None);
    }
    let own = format!("{}/{}", r.host, r.repository);
    for source in store.sources(&b.digest) {
        let Some(repo) = source.strip_prefix(&format!("{}/", r.host)) else {
            continue;
        };
        if source == own {
            continue;
        }
        let from =
            oci_client::Reference::with_tag(host.to_string(), repo.to_string(), "latest".into());
        // A registry that will not mount answers 202 with an upload
        // session instead: then the blob is uploaded as usual.
        if client.mount_blob(oref, &from, &b.digest).await.is_ok() {
            progress.event(TransferEvent::new(
                TransferKind::Mounted,
                &id,
                b.size,
                b.size,
                format!("from {repo}"),
            ));
            return Ok(None);
        }
    }
    progress.event(TransferEvent::new(
        TransferKind::Started,
        &id,
        0,
        b.size,
        "uploading".into(),
    ));
    let path = store.blob_path(&b.digest)?;
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // Read in CHUNK pieces; oci-client sends each as a PATCH of the upload.
    // Each piece is reported as it is handed over.
    let reporter = progress.clone();
    let (total, rid) = (b.size, id.clone());
    let stream = futures_util::stream::unfold((file, 0u64), move |(mut f, sent)| {
        let reporter = reporter.clone();
        let rid = rid.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    reporter.event(TransferEvent::new(
                        TransferKind::Progress,
                        &rid,
                        sent,
                        total,
                        String::new(),
                    ));
                    Some((Ok(bytes::Bytes::from(buf)), (f, sent)))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    (f, sent),
                )),
            }
        }
    });
    client
        .push_blob_stream(oref, stream, &b.digest, Some(b.size))
        .await
        .map_err(|e| registry_error(host, &format!("uploading blob {}", b.digest), e))?;
    progress.event(TransferEvent::new(
        TransferKind::Done,
        &id,
        b.size,
        b.size,
        String::new(),
    ));
    Ok(Some(b.size))
}

/// A 5xx answer (whichever way oci-client reports it).
fn is_server_error(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RequestError(re) => re.status().is_some_and(|s| s.is_server_error()),
        E::ServerError { code, .. } => (500..600).contains(code),
        _ => false,
    }
}
