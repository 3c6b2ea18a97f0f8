//! `pull`: manifest (choosing the platform's entry of an index), config and
//! layers into the store, then the name into the index.
//!
//! Every blob streams into a temporary file of the store's `tmp/` and is
//! renamed into `blobs/` only after its sha256 and size match the manifest
//! (the manifest itself matches the pinned digest or the index entry). The
//! index is written last, so a failed pull leaves no image behind, and the
//! verified blobs it did finish are reused by the retry. A blob cut off
//! mid-way is kept in `partial/` and resumed with a Range request; its
//! digest is checked over all its bytes, old and new.
use super::{
    registry_error, short, Registry, RemoteRef, TransferEvent, TransferKind, TransferProgress,
};
use crate::digest::{hex_part, sha256_of};
use crate::image::{
    check_size, Descriptor, ImageConfig, Index, Manifest, Platform, MAX_CONFIG_SIZE,
};
use crate::store::{canonical_tag, Store};
use anyhow::{bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use std::io::Write;

pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types whose content berth can unpack.
const LAYER_TYPES: &[&str] = &[
    crate::image::MEDIA_LAYER_GZIP,
    crate::image::MEDIA_LAYER_ZSTD,
    crate::image::MEDIA_LAYER_TAR,
    crate::image::MEDIA_DOCKER_LAYER_GZIP,
];

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The name recorded in the index (none for a pull by digest).
    pub name: Option<String>,
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// Blobs downloaded (the rest were in the store already).
    pub fetched: usize,
    pub fetched_bytes: u64,
}

/// Pulls `reference` into `store` and names it as typed (plus `:latest`).
pub fn pull(
    store: &Store,
    reg: &Registry,
    reference: &str,
    progress: &dyn TransferProgress,
) -> Result<PullOutcome> {
    super::relayed(progress, |p| pull_inner(store, reg, reference, p))
}

fn pull_inner(
    store: &Store,
    reg: &Registry,
    reference: &str,
    progress: &dyn TransferProgress,
) -> Result<PullOutcome> {
    let r = RemoteRef::parse(reference)?;
    let name = if r.digest.is_none() {
        Some(canonical_tag(reference)?)
    } else {
        None
    };
    let hosts = reg.hosts.pull_hosts(&r.host);
    let mut last_err = None;
    for host in &hosts {
        if host != &r.host {
            progress.event(TransferEvent::new(
                TransferKind::Info,
                "",
                0,
                0,
                format!("trying mirror {host} for {}", r.host),
            ));
        }
        match super::block_on(pull_from(store, reg, &r, host, name.as_deref(), progress))? {
            Ok(o) => return Ok(o),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| anyhow::anyhow!("no registry host to pull from"))
        .context(format!("pulling {r}")))
}

async fn pull_from(
    store: &Store,
    reg: &Registry,
    r: &RemoteRef,
    host: &str,
    name: Option<&str>,
    progress: &dyn TransferProgress,
) -> Result<PullOutcome> {
    let client = reg.client_for(host)?;
    let cred = reg.credential(host)?;
    let auth = super::auth_of(cred.clone());
    let oref = r.oci(host);
    // Blobs go through oci-client, which needs the credentials up front.
    client
        .store_auth_if_needed(oref.resolve_registry(), &auth)
        .await;
    let manifests = super::manifest::ManifestFetcher::new(reg, host, &r.repository, cred)?;
    let first = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (mut bytes, mut media_type) = manifests.get(&first).await?;
    let mut digest = sha256_of(&bytes);
    if let Some(want) = &r.digest {
        if &digest != want {
            bail!("registry {host} sent a manifest with digest {digest} for {r}: refused");
        }
    }
    if is_index(&media_type, &bytes) {
        let index: Index = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the image index of {r}"))?;
        let entry = choose(&index, &reg.platform)
            .with_context(|| format!("image index of {r} from {host}"))?;
        progress.event(TransferEvent::new(
            TransferKind::Info,
            "",
            0,
            0,
            format!(
                "{r}: index {digest}, platform {} is {}",
                reg.platform, entry.digest
            ),
        ));
        hex_part(&entry.digest)?;
        (bytes, media_type) = manifests.get(&entry.digest).await?;
        digest = sha256_of(&bytes);
        if digest != entry.digest {
            bail!(
                "registry {host} sent a manifest with digest {digest} for index entry {}: refused",
                entry.digest
            );
        }
        if is_index(&media_type, &bytes) {
            bail!(
                "{r}: the index entry for {} is itself an index",
                reg.platform
            );
        }
    }
    progress.event(TransferEvent::new(
        TransferKind::Resolved,
        "",
        0,
        0,
        format!("{r}: manifest {digest}"),
    ));
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing the manifest of {r}"))?;
    let media_type = manifest.media_type.clone().unwrap_or(media_type);
    if media_type != crate::image::MEDIA_MANIFEST
        && media_type != crate::image::MEDIA_DOCKER_MANIFEST
    {
        bail!("{r}: unsupported manifest type {media_type:?}");
    }
    check_size(
        format!("image config {}", manifest.config.digest),
        manifest.config.size,
        MAX_CONFIG_SIZE,
    )?;
    let config_type = manifest.config.media_type.as_str();
    if config_type != crate::image::MEDIA_CONFIG && config_type != MEDIA_DOCKER_CONFIG {
        bail!("{r}: {config_type:?} is not a container image config (an artifact?)");
    }
    for l in &manifest.layers {
        hex_part(&l.digest).with_context(|| format!("{r}: layer"))?;
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            bail!(
                "{r}: layer {} has unsupported media type {:?}",
                l.digest,
                l.media_type
            );
        }
    }
    hex_part(&manifest.config.digest)?;

    // Config first: its diff_ids must match the layers before any layer moves.
    let mut fetched = 0usize;
    let mut fetched_bytes = 0u64;
    if fetch_blob(&client, &oref, host, store, &manifest.config, progress).await? {
        fetched += 1;
        fetched_bytes += manifest.config.size;
    }
    let config: ImageConfig =
        store.read_json_limited(&manifest.config.digest, "image config", MAX_CONFIG_SIZE)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "{r}: {} layers but {} diff_ids in the config",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    // The futures are made first: a closure inside the stream would not be
    // Send (a known limit of the compiler with borrowed items).
    let downloads: Vec<_> = manifest
        .layers
        .iter()
        .map(|l| fetch_blob(&client, &oref, host, store, l, progress))
        .collect();
    let results: Vec<bool> = futures_util::stream::iter(downloads)
        .buffer_unordered(super::MAX_PARALLEL)
        .try_collect()
        .await?;
    for (l, got) in manifest.layers.iter().zip(&results) {
        if *got {
            fetched += 1;
            fetched_bytes += l.size;
        }
    }
    // The manifest exactly as the registry sent it: its digest is the image's.
    let stored = store.put_blob(&bytes)?;
    debug_assert_eq!(stored, digest);
    let source = format!("{}/{}", r.host, r.repository);
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        store.add_source(&d.digest, &source)?;
    }
    let desc = Descriptor {
        media_type,
        digest: digest.clone(),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: Some(Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        }),
    };
    let tags: Vec<String> = name.map(str::to_string).into_iter().collect();
    store.add_to_index(&desc, &tags)?;
    Ok(PullOutcome {
        name: name.map(str::to_string),
        digest,
        fetched,
        fetched_bytes,
    })
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type == crate::image::MEDIA_INDEX || media_type == MEDIA_DOCKER_LIST {
        return true;
    }
    // An OCI index may omit mediaType: it has "manifests" and no "config".
    media_type.is_empty()
        && serde_json::from_slice::<serde_json::Value>(bytes)
            .is_ok_and(|v| v.get("manifests").is_some() && v.get("config").is_none())
}

/// The index entry for `platform` (a variant, when asked for, must match).
fn choose<'a>(index: &'a Index, platform: &super::PlatformSpec) -> Result<&'a Descriptor> {
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            && match &platform.variant {
                None => true,
                Some(v) => {
                    d.platform.as_ref().and_then(|p| p.variant.as_deref()) == Some(v.as_str())
                }
            }
    });
    found.with_context(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        format!(
            "no manifest for platform {platform} (the index has: {})",
            have.join(", ")
        )
    })
}

/// Downloads one blob into the store unless it is there; returns whether it
/// downloaded. Sizes and digests are checked before the blob is renamed in.
pub(super) async fn fetch_blob(
    client: &oci_client::Client,
    oref: &oci_client::Reference,
    host: &str,
    store: &Store,
    desc: &Descriptor,
    progress: &dyn TransferProgress,
) -> Result<bool> {
    let id = short(&desc.digest);
    if store.has_blob(&desc.digest) {
        progress.event(TransferEvent::new(
            TransferKind::Exists,
            &id,
            desc.size,
            desc.size,
            String::new(),
        ));
        return Ok(false);
    }
    progress.event(TransferEvent::new(
        TransferKind::Started,
        &id,
        0,
        desc.size,
        "downloading".into(),
    ));
    // An earlier download of this blob that was cut off resumes where it
    // stopped, when the registry honours Range; all bytes are hashed anyway.
    let (mut w, mut done) = match store.resume_writer(&desc.digest, desc.size)? {
        Some((w, n)) => (w, n),
        None => (store.blob_writer()?, 0),
    };
    let mut stream = if done > 0 {
        use oci_client::client::BlobResponse;
        match client
            .pull_blob_stream_partial(oref, desc.digest.as_str(), done, None)
            .await
            .map_err(|e| registry_error(host, &format!("fetching blob {}", desc.digest), e))?
        {
            BlobResponse::Partial(s) => {
                progress.event(TransferEvent::new(
                    TransferKind::Info,
                    &id,
                    done,
                    desc.size,
                    format!("{id}: resuming at {done} bytes"),
                ));
                s
            }
            BlobResponse::Full(s) => {
                // The whole blob again: start over.
                w = store.blob_writer()?;
                done = 0;
                s
            }
        }
    } else {
        client
            .pull_blob_stream(oref, desc.digest.as_str())
            .await
            .map_err(|e| registry_error(host, &format!("fetching blob {}", desc.digest), e))?
    };
    let mut reported = done;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            // oci-client checks the digest as the stream ends.
            Err(e)
                if e.get_ref()
                    .is_some_and(|i| i.is::<oci_client::errors::DigestError>()) =>
            {
                bail!(
                    "blob {} from registry {host} failed verification ({e}): refused, nothing stored",
                    desc.digest
                )
            }
            Err(e) => {
                // Cut off: keep what came for the next attempt.
                let kept = if done > 0 {
                    w.keep_partial(&desc.digest).unwrap_or(0)
                } else {
                    0
                };
                return Err(e).with_context(|| {
                    format!(
                        "registry {host}: reading blob {} (connection lost after {done} bytes; {kept} kept for a retry)",
                        desc.digest
                    )
                });
            }
        };
        done += chunk.len() as u64;
        if done > desc.size {
            bail!(
                "registry {host} sent more than the {} bytes the manifest gives for blob {}: refused",
                desc.size,
                desc.digest
            );
        }
        w.write_all(&chunk).context("writing a downloaded blob")?;
        if done - reported >= 256 << 10 {
            reported = done;
            progress.event(TransferEvent::new(
                TransferKind::Progress,
                &id,
                done,
                desc.size,
                String::new(),
            ));
        }
    }
    if done != desc.size {
        bail!(
            "registry {host} sent {done} bytes for blob {} where the manifest says {}: refused",
            desc.digest,
            desc.size
        );
    }
    w.commit(Some(&desc.digest)).with_context(|| {
        format!(
            "blob {} from registry {host} failed verification",
            desc.digest
        )
    })?;
    progress.event(TransferEvent::new(
        TransferKind::Done,
        &id,
        done,
        desc.size,
        String::new(),
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, hex: char) -> serde_json::Value {
        let mut p = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            p["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": crate::image::MEDIA_MANIFEST,
            "digest": format!("sha256:{}", hex.to_string().repeat(64)),
            "size": 1,
            "platform": p,
        })
    }

    #[test]
    fn chooses_platform_from_index() {
        let index: Index = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                entry("linux", "arm", Some("v6"), 'a'),
                entry("linux", "arm", Some("v7"), 'b'),
                entry("linux", "amd64", None, 'c'),
                entry("windows", "amd64", None, 'd'),
            ]
        }))
        .unwrap();
        let pick = |s: &str| {
            choose(&index, &super::super::PlatformSpec::parse(s).unwrap()).map(|d| d.digest.clone())
        };
        assert!(pick("linux/amd64").unwrap().ends_with('c'));
        assert!(pick("windows/amd64").unwrap().ends_with('d'));
        assert!(pick("linux/arm/v7").unwrap().ends_with('b'));
        assert!(pick("linux/arm").unwrap().ends_with('a'));
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn recognizes_indexes() {
        assert!(is_index(MEDIA_DOCKER_LIST, b"{}"));
        assert!(is_index("", br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(
            "",
            br#"{"schemaVersion":2,"config":{},"layers":[]}"#
        ));
        assert!(!is_index(crate::image::MEDIA_DOCKER_MANIFEST, b"{}"));
    }
}
