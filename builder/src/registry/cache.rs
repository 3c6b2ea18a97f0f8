//! Registry build cache (`--cache-to` / `--cache-from type=registry,ref=R`,
//! BuildKit's flags): many builders, one registry.
//!
//! The cache is an OCI manifest at R whose config
//! (`application/vnd.berth.buildcache.config.v1+json`) maps each step's
//! cache key to what the step produced (layer descriptor, diff_id, time),
//! and whose layers are those layers, so they live in R's repository:
//!
//! ```json
//! {"berthBuildCache": 1, "entries": {"sha256:<key>": {"layer": {...}, "created": "..."}}}
//! ```
//!
//! Import reads the manifest and config only. A layer is downloaded when a
//! step hits its entry ([`crate::store::CacheLink`]), verified against its
//! digest and, decompressed, against its diff_id: a cache that lies about a
//! layer's content gives a cache miss, never a wrong snapshot.
use super::{Registry, RemoteRef, TransferEvent, TransferKind, TransferProgress};
use crate::digest::{sha256_of, HashingWriter};
use crate::image::{check_size, Descriptor, Manifest, MEDIA_MANIFEST};
use crate::store::{CacheEntry, CacheLink, LayerFetcher, Store};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MEDIA_CACHE_CONFIG: &str = "application/vnd.berth.buildcache.config.v1+json";
/// Largest cache config read: far above real ones (an entry is ~300 bytes).
const MAX_CACHE_CONFIG: u64 = 32 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    #[serde(rename = "berthBuildCache")]
    version: u32,
    entries: BTreeMap<String, CacheEntry>,
}

/// Parses a `--cache-to`/`--cache-from` value: `type=registry,ref=R[,...]`.
/// Other keys (`mode=max`, ...) are accepted and ignored: berth always
/// exports every step of the build.
pub fn parse_cache_spec(spec: &str) -> Result<String> {
    let mut kind = None;
    let mut reference = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("ref", v)) => reference = Some(v.to_string()),
            Some(_) => {}
            None => bail!("bad cache spec {spec:?}: want type=registry,ref=REF"),
        }
    }
    match kind {
        Some("registry") => {}
        Some(o) => bail!("cache type {o:?} is not supported (type=registry)"),
        None => bail!("bad cache spec {spec:?}: want type=registry,ref=REF"),
    }
    let r = reference.with_context(|| format!("cache spec {spec:?} needs ref="))?;
    RemoteRef::parse(&r)?;
    Ok(r)
}

/// Reads the cache manifests at `refs` (later ones do not override earlier
/// ones) and returns the link that serves them to a build. A missing or
/// unreadable cache is reported and skipped, as BuildKit does: the build
/// then runs uncached.
pub fn import(
    store: &Store,
    reg: &Registry,
    refs: &[String],
    progress: &dyn TransferProgress,
) -> CacheLink {
    let mut entries = BTreeMap::new();
    let mut sources = Vec::new();
    for r in refs {
        match super::relayed(progress, |p| import_one(store, reg, r, p)) {
            Ok((found, remote)) => {
                progress.event(TransferEvent::new(
                    TransferKind::Info,
                    "",
                    0,
                    0,
                    format!("cache {r}: {} entries", found.len()),
                ));
                for (k, v) in found {
                    entries.entry(k).or_insert(v);
                }
                sources.push(remote);
            }
            Err(e) => progress.event(TransferEvent::new(
                TransferKind::Info,
                "",
                0,
                0,
                format!("cache {r} not imported: {e:#}"),
            )),
        }
    }
    let store2 = store.clone();
    let reg2 = reg.clone();
    let fetch: Box<LayerFetcher> = Box::new(move |d: &Descriptor, diff_id: &str| {
        let mut last = None;
        for r in &sources {
            match fetch_layer(&store2, &reg2, r, d, diff_id) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no cache source for {}", d.digest)))
    });
    CacheLink::new(entries, Some(fetch))
}

fn import_one(
    store: &Store,
    reg: &Registry,
    reference: &str,
    progress: &dyn TransferProgress,
) -> Result<(BTreeMap<String, CacheEntry>, RemoteRef)> {
    let r = RemoteRef::parse(reference)?;
    let host = r.host.clone();
    let config = super::block_on(async {
        let client = reg.client_for(&host)?;
        let cred = reg.credential(&host)?;
        let auth = super::auth_of(cred.clone());
        let oref = r.oci(&host);
        client
            .store_auth_if_needed(oref.resolve_registry(), &auth)
            .await;
        let manifests = super::manifest::ManifestFetcher::new(reg, &host, &r.repository, cred)?;
        let reference = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let (bytes, _) = manifests.get(&reference).await?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{r} is not a berth build cache manifest"))?;
        if m.config.media_type != MEDIA_CACHE_CONFIG {
            bail!(
                "{r} is not a berth build cache (config type {:?})",
                m.config.media_type
            );
        }
        check_size("build cache config", m.config.size, MAX_CACHE_CONFIG)?;
        super::pull::fetch_blob(&client, &oref, &host, store, &m.config, progress).await?;
        Ok(m.config)
    })??;
    let data = store.read_blob_limited(&config.digest, "build cache config", MAX_CACHE_CONFIG)?;
    let cfg: CacheConfig = serde_json::from_slice(&data)
        .with_context(|| format!("parsing the cache config of {r}"))?;
    if cfg.version != 1 {
        bail!("{r}: build cache version {} is not supported", cfg.version);
    }
    let mut entries = BTreeMap::new();
    for (k, v) in cfg.entries {
        // Keys and digests become file names: only well-formed ones.
        if crate::digest::hex_part(&k).is_err() {
            continue;
        }
        if let Some(l) = &v.layer {
            if crate::digest::hex_part(&l.descriptor.digest).is_err()
                || crate::digest::hex_part(&l.diff_id).is_err()
            {
                continue;
            }
        }
        entries.insert(k, v);
    }
    Ok((entries, r))
}

/// Downloads layer `d` from the cache repository and checks that it
/// decompresses to `diff_id`.
fn fetch_layer(
    store: &Store,
    reg: &Registry,
    r: &RemoteRef,
    d: &Descriptor,
    diff_id: &str,
) -> Result<()> {
    if !store.has_blob(&d.digest) {
        let quiet = |_: TransferEvent| {};
        super::block_on(async {
            let client = reg.client_for(&r.host)?;
            let auth = reg.auth_for(&r.host)?;
            let oref = r.oci(&r.host);
            client
                .store_auth_if_needed(oref.resolve_registry(), &auth)
                .await;
            super::pull::fetch_blob(&client, &oref, &r.host, store, d, &quiet).await
        })??;
    }
    let mut reader = crate::layer::open_decompressed(&store.blob_path(&d.digest)?)?;
    let mut w = HashingWriter::new(std::io::sink());
    std::io::copy(&mut reader, &mut w).with_context(|| format!("reading layer {}", d.digest))?;
    let (_, got, _) = w.finish();
    if got != diff_id {
        bail!(
            "cache layer {} decompresses to {got}, the cache entry says {diff_id}: refused",
            d.digest
        );
    }
    Ok(())
}

/// Pushes the entries a build used or made to `reference`.
pub fn export(
    store: &Store,
    reg: &Registry,
    reference: &str,
    entries: &BTreeMap<String, CacheEntry>,
    progress: &dyn TransferProgress,
) -> Result<String> {
    let r = RemoteRef::parse(reference)?;
    let cfg = CacheConfig {
        version: 1,
        entries: entries.clone(),
    };
    let cfg_bytes = serde_json::to_vec(&cfg).context("serializing the build cache")?;
    let cfg_digest = store.put_blob(&cfg_bytes)?;
    let mut layers: BTreeMap<String, Descriptor> = BTreeMap::new();
    for e in entries.values() {
        if let Some(l) = &e.layer {
            let mut d = l.descriptor.clone();
            d.annotations.clear();
            d.platform = None;
            layers.insert(d.digest.clone(), d);
        }
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: Descriptor {
            media_type: MEDIA_CACHE_CONFIG.into(),
            digest: cfg_digest,
            size: cfg_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: layers.into_values().collect(),
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).context("serializing the cache manifest")?;
    let digest = sha256_of(&bytes);
    let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    super::relayed(progress, |p| {
        super::push::upload(store, reg, &r, &bytes, MEDIA_MANIFEST, &blobs, p)
    })
    .with_context(|| format!("exporting the build cache to {r}"))?;
    progress.event(TransferEvent::new(
        TransferKind::Resolved,
        "",
        0,
        0,
        format!("cache {r}: {} entries, manifest {digest}", entries.len()),
    ));
    Ok(digest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_specs() {
        assert_eq!(
            super::parse_cache_spec("type=registry,ref=localhost:5000/cache:main").unwrap(),
            "localhost:5000/cache:main"
        );
        assert!(super::parse_cache_spec("type=registry,ref=localhost:5000/c,mode=max").is_ok());
        assert!(super::parse_cache_spec("type=local,dest=/tmp").is_err());
        assert!(super::parse_cache_spec("ref=x").is_err());
        assert!(super::parse_cache_spec("type=registry").is_err());
        assert!(super::parse_cache_spec("type=registry,ref=a//b").is_err());
    }
}
