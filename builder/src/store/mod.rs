//! The image store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) plus berth's own side directories:
//! `snapshots/<diffid-hex>/` (each layer unpacked alone, in overlayfs format, used as a lowerdir),
//! `cache/<key-hex>.json` (build cache entries), `summaries/<manifest-hex>.json`
//! (what `images` lists: size and creation time, so listing never parses
//! configs), `layer-sizes/<blob-hex>` (a layer's content size as Docker
//! counts it, see `layer_size.rs`), `sources/<digest-hex>` (registry
//! repositories a blob is known to be in, see `sources.rs`),
//! `partial/<digest-hex>` (interrupted downloads kept for a retry) and
//! `tmp/` (work space, wiped on open).
//!
//! Crash consistency: blobs and snapshots are created under `tmp/` and renamed
//! into place; `index.json` is replaced atomically and only after everything it
//! references exists, so an interrupted build never leaves a dangling reference.
mod blobs;
mod cache_link;
mod history;
mod layer_size;
mod refs;
mod sources;

pub use blobs::BlobWriter;
pub use cache_link::{CacheLink, LayerFetcher};
pub use history::HistoryRow;
pub use layer_size::StreamSizer;
pub use refs::{
    canonical_tag, docker_full_name, looks_like_content_address, normalize_ref, parse_reference,
    same_name, InvalidReference, Reference,
};

use crate::digest::hex_part;
use crate::fsutil::{atomic_write, disk_usage, remove_any, replace_file};
use crate::image::{
    check_size, Descriptor, ImageConfig, Index, Manifest, ANNOTATION_REF_NAME, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, MEDIA_INDEX,
};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// A work directory in the store's `tmp/`, with the lock that marks it alive.
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    lock: Option<Flock<File>>,
    lock_path: PathBuf,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Directory first, then the lock: a cleaner never sees a free lock
        // next to a directory that is still in use.
        drop(self.dir.take());
        let _ = fs::remove_file(&self.lock_path);
        drop(self.lock.take());
    }
}

/// Default store location.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// A handle on a store directory. Cheap to clone; all state lives on disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// A build's shared cache (see [`CacheLink`]); `None` for plain handles.
    cache_link: Option<std::sync::Arc<CacheLink>>,
}

/// An image resolved from a name: its manifest descriptor, manifest and config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// One image in the index with all the names pointing at it.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub descriptor: Descriptor,
    pub tags: Vec<String>,
}

/// One image as `images` lists it, from the index and the image's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub digest: String,
    /// Config digest: the image ID Docker and podman show.
    pub id: String,
    pub tags: Vec<String>,
    /// Manifest's layers plus config, compressed sizes.
    pub size: u64,
    /// Docker's image size: the layers' unpacked content (`docker images`
    /// SIZE, `docker image inspect -f {{.Size}}`).
    pub unpacked_size: u64,
    pub created: String,
}

/// `summaries/<manifest-hex>.json`: computed once, when an image enters the
/// index (or on first listing of an older store).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSummary {
    size: u64,
    #[serde(default)]
    created: String,
    /// Config digest; empty in summaries written before it was kept (those
    /// are recomputed).
    #[serde(default)]
    id: String,
    /// Docker's image size; missing in summaries written before it was kept
    /// (those are recomputed, measuring each layer once).
    #[serde(default)]
    unpacked: Option<u64>,
}

/// What a build step produced, keyed by the step's cache key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheEntry {
    /// The layer the step produced; `None` when it changed nothing.
    pub layer: Option<CachedLayer>,
    /// When the step ran (RFC 3339): reused in history so that a fully
    /// cached rebuild yields the very same image digest.
    #[serde(default)]
    pub created: String,
}

/// A layer blob and its uncompressed digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedLayer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct PruneReport {
    pub removed_blobs: u64,
    pub reclaimed_bytes: u64,
    pub removed_snapshots: u64,
    pub removed_cache_entries: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct DiskUsage {
    pub blobs_bytes: u64,
    pub blobs_count: u64,
    pub snapshots_bytes: u64,
    pub cache_entries: u64,
    pub images: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and clears leftovers of
    /// interrupted operations from `tmp/`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for d in [
            "blobs/sha256",
            "snapshots",
            "cache",
            "summaries",
            layer_size::DIR,
            "sources",
            "partial",
            "tmp",
        ] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        let store = Self {
            root,
            cache_link: None,
        };
        let _lock = store.lock()?;
        if !store.root.join("oci-layout").exists() {
            atomic_write(
                &store.root.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        if !store.index_path().exists() {
            store.write_index(&Index {
                schema_version: 2,
                media_type: Some(MEDIA_INDEX.into()),
                manifests: Vec::new(),
            })?;
        }
        store.clean_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Removes work directories of dead processes: each live work dir has a
    /// sibling `<name>.lock` held with flock by its owner, so a lock we can
    /// take means the owner is gone (crashed or killed). Stray files without
    /// a lock (temporary blobs) are removed once they are a minute old.
    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(dir_name) = name.strip_suffix(".lock") {
                let Ok(f) = File::options().write(true).open(&path) else {
                    continue;
                };
                if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    let dir = tmp.join(dir_name);
                    crate::snapshot::unmount_stale(&dir);
                    remove_any(&dir)?;
                    remove_any(&path)?;
                    drop(lock);
                }
                continue;
            }
            if path.is_dir() && tmp.join(format!("{name}.lock")).exists() {
                continue;
            }
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 60);
            if old {
                crate::snapshot::unmount_stale(&path);
                remove_any(&path)?;
            }
        }
        Ok(())
    }

    /// Takes the store-wide lock that serializes index and cache updates.
    pub fn lock(&self) -> Result<Flock<File>> {
        let path = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", path.display()))
    }

    /// A fresh private directory under `tmp/`, removed on drop, or by the
    /// next `Store::open` if this process dies first.
    pub fn temp_dir(&self, prefix: &str) -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.root.join("tmp"))
            .context("creating a work directory in the store")?;
        let name = dir
            .path()
            .file_name()
            .context("work dir without a name")?
            .to_string_lossy()
            .into_owned();
        let lock_path = self.root.join("tmp").join(format!("{name}.lock"));
        let f = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        Ok(WorkDir {
            dir: Some(dir),
            lock: Some(lock),
            lock_path,
        })
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.index_path();
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let data = serde_json::to_vec(index).context("serializing index.json")?;
        atomic_write(&self.index_path(), &data)
    }

    /// Resolves a tag (`name`, `name:tag`), a manifest digest
    /// (`sha256:<hex>`, `name@sha256:<hex>`) or a unique digest prefix.
    /// Manifest and config are read only up to berth's size limits.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage> {
        let descriptor = self.find_descriptor(name)?;
        self.resolve_descriptor(descriptor)
    }

    fn resolve_descriptor(&self, descriptor: Descriptor) -> Result<ResolvedImage> {
        let manifest: Manifest =
            self.read_json_limited(&descriptor.digest, "manifest", MAX_MANIFEST_SIZE)?;
        check_size(
            format!("image config {}", manifest.config.digest),
            manifest.config.size,
            MAX_CONFIG_SIZE,
        )?;
        let config: ImageConfig =
            self.read_json_limited(&manifest.config.digest, "image config", MAX_CONFIG_SIZE)?;
        Ok(ResolvedImage {
            descriptor,
            manifest,
            config,
        })
    }

    fn find_descriptor(&self, name: &str) -> Result<Descriptor> {
        Self::find_in(&self.index()?, name)
            .with_context(|| format!("looking up {name:?} in store {}", self.root.display()))
    }

    /// Finds `name` in `index`. A content address (`sha256:<hex...>`, a
    /// 64-hex id, `name@digest`) is looked up by content only: no stored
    /// name can stand in for a digest. Other names are tags first, then (if
    /// they are hex) unique digest prefixes, as Docker does.
    fn find_in(index: &Index, name: &str) -> Result<Descriptor> {
        let by_prefix = |prefix: &str| -> Result<Option<Descriptor>> {
            let found: BTreeMap<&str, &Descriptor> = index
                .manifests
                .iter()
                .filter(|d| {
                    d.digest
                        .strip_prefix("sha256:")
                        .is_some_and(|h| h.starts_with(prefix))
                })
                .map(|d| (d.digest.as_str(), d))
                .collect();
            match found.len() {
                0 => Ok(None),
                1 => {
                    let (_, d) = found.into_iter().next().context("unreachable")?;
                    let mut d = d.clone();
                    d.annotations.clear();
                    Ok(Some(d))
                }
                _ => bail!("image reference {name:?} is ambiguous"),
            }
        };
        let is_hex = |s: &str| s.len() >= 4 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if name.contains('@') {
            let r = parse_reference(name)?;
            let digest = r.digest.context("unreachable: '@' without digest")?;
            let hex = hex_part(&digest)?;
            return by_prefix(hex)?.with_context(|| format!("image {name:?} not found"));
        }
        if let Some(hex) = name.strip_prefix("sha256:") {
            if !is_hex(hex) {
                return Err(InvalidReference {
                    input: name.to_string(),
                    reason: "malformed digest",
                }
                .into());
            }
            return by_prefix(&hex.to_ascii_lowercase())?
                .with_context(|| format!("image {name:?} not found"));
        }
        if looks_like_content_address(name) {
            return by_prefix(&name.to_ascii_lowercase())?
                .with_context(|| format!("image {name:?} not found"));
        }
        parse_reference(name)?;
        let wanted = normalize_ref(name);
        // The name as stored first, then Docker's equivalent forms
        // (`busybox` finds `docker.io/library/busybox:latest` and back).
        if let Some(d) = index
            .manifests
            .iter()
            .find(|d| d.annotations.get(ANNOTATION_REF_NAME) == Some(&wanted))
            .or_else(|| {
                index.manifests.iter().find(|d| {
                    d.annotations
                        .get(ANNOTATION_REF_NAME)
                        .is_some_and(|n| same_name(n, &wanted))
                })
            })
        {
            return Ok(d.clone());
        }
        if is_hex(name) {
            if let Some(d) = by_prefix(&name.to_ascii_lowercase())? {
                return Ok(d);
            }
        }
        bail!("image {name:?} not found")
    }

    fn summary_path(&self, manifest_digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("summaries")
            .join(format!("{}.json", hex_part(manifest_digest)?)))
    }

    /// Computes and records what `images` shows for a manifest. Reads the
    /// manifest and config once, within the size limits.
    fn write_summary(&self, desc: &Descriptor) -> Result<StoredSummary> {
        let img = self.resolve_descriptor(desc.clone())?;
        let summary = StoredSummary {
            size: img.manifest.layers.iter().map(|l| l.size).sum::<u64>()
                + img.manifest.config.size,
            created: img.config.created.unwrap_or_default(),
            id: img.manifest.config.digest.clone(),
            unpacked: Some(self.unpacked_size(&img.manifest)),
        };
        let data = serde_json::to_vec(&summary).context("serializing image summary")?;
        // Derived data: a lost summary is recomputed on the next listing.
        replace_file(&self.summary_path(&desc.digest)?, &data)?;
        Ok(summary)
    }

    /// Docker's size of an image: its layers' content sizes summed (a layer
    /// listed twice counts twice, as Docker's layer chain does). A layer
    /// that is not a readable tar (which Docker would refuse to load) adds
    /// nothing rather than keeping the image out of the listing.
    fn unpacked_size(&self, m: &Manifest) -> u64 {
        m.layers
            .iter()
            .map(|l| self.layer_content_size(&l.digest).unwrap_or(0))
            .fold(0u64, u64::saturating_add)
    }

    fn read_summary(&self, digest: &str) -> Result<StoredSummary> {
        let path = self.summary_path(digest)?;
        match fs::read(&path) {
            Ok(data) if data.len() < 64 << 10 => {
                if let Ok(s) = serde_json::from_slice::<StoredSummary>(&data) {
                    if !s.id.is_empty() && s.unpacked.is_some() {
                        return Ok(s);
                    }
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        // A store made before summaries existed, or a damaged summary.
        let desc = Descriptor {
            media_type: crate::image::MEDIA_MANIFEST.into(),
            digest: digest.to_string(),
            size: 0,
            annotations: BTreeMap::new(),
            platform: None,
        };
        match self.write_summary(&desc) {
            Ok(s) => Ok(s),
            // An image an older berth let in with a config over the limit
            // (or a damaged one) is still listed, from its manifest alone,
            // rather than making every listing fail.
            Err(_) => {
                let m: Manifest = self.read_json_limited(digest, "manifest", MAX_MANIFEST_SIZE)?;
                Ok(StoredSummary {
                    size: m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size,
                    created: String::new(),
                    unpacked: Some(self.unpacked_size(&m)),
                    id: m.config.digest,
                })
            }
        }
    }

    /// What `images` lists: the index and one small summary file per
    /// image, never the image configs themselves.
    pub fn image_summaries(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for i in self.images()? {
            let s = self.read_summary(&i.descriptor.digest)?;
            out.push(ImageSummary {
                digest: i.descriptor.digest,
                id: s.id,
                tags: i.tags,
                size: s.size,
                unpacked_size: s.unpacked.unwrap_or(0),
                created: s.created,
            });
        }
        Ok(out)
    }

    /// All images (one entry per manifest digest) with their tags.
    pub fn images(&self) -> Result<Vec<ImageEntry>> {
        let mut by_digest: BTreeMap<String, ImageEntry> = BTreeMap::new();
        for d in self.index()?.manifests {
            let entry = by_digest.entry(d.digest.clone()).or_insert_with(|| {
                let mut plain = d.clone();
                plain.annotations.clear();
                ImageEntry {
                    descriptor: plain,
                    tags: Vec::new(),
                }
            });
            if let Some(tag) = d.annotations.get(ANNOTATION_REF_NAME) {
                entry.tags.push(tag.clone());
            }
        }
        Ok(by_digest.into_values().collect())
    }

    /// Writes config and manifest blobs for an image whose layer blobs are
    /// already stored, then records it in the index under `tags` (or untagged).
    pub fn commit_image(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        tags: &[String],
    ) -> Result<Descriptor> {
        // Every layer is checked present by commit_image_bytes, before any write.
        let config_bytes = crate::image::to_go_json(config).context("serializing image config")?;
        self.commit_image_bytes(&config_bytes, config, layers, tags)
    }

    /// [`Self::commit_image`] with the config's bytes as they are (an
    /// archive's): re-serializing would change the config digest, which is
    /// the image ID Docker and podman show.
    pub fn commit_image_bytes(
        &self,
        config_bytes: &[u8],
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        tags: &[String],
    ) -> Result<Descriptor> {
        for l in &layers {
            if !self.has_blob(&l.digest) {
                bail!(
                    "refusing to commit an image whose layer {} is missing",
                    l.digest
                );
            }
        }
        check_size("image config", config_bytes.len() as u64, MAX_CONFIG_SIZE)?;
        let config_digest = self.put_blob(config_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(crate::image::MEDIA_MANIFEST.into()),
            config: Descriptor {
                media_type: crate::image::MEDIA_CONFIG.into(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).context("serializing manifest")?;
        let digest = self.put_blob(&manifest_bytes)?;
        let desc = Descriptor {
            media_type: crate::image::MEDIA_MANIFEST.into(),
            digest,
            size: manifest_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: Some(crate::image::Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
            }),
        };
        self.add_to_index(&desc, tags)?;
        Ok(desc)
    }

    /// Adds a manifest (whose blobs exist) to the index, moving each tag to it.
    /// With no tags, the image is kept untagged (a later prune removes it).
    pub fn add_to_index(&self, desc: &Descriptor, tags: &[String]) -> Result<()> {
        let names: BTreeSet<String> = tags
            .iter()
            .map(|t| canonical_tag(t))
            .collect::<Result<_, _>>()?;
        if !self.summary_path(&desc.digest)?.exists() {
            self.write_summary(desc)?;
        }
        self.sync_blob_dir()?;
        let _lock = self.lock()?;
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| match d.annotations.get(ANNOTATION_REF_NAME) {
                // A tag moves whatever form it was stored under
                // (`busybox:latest` is replaced by `docker.io/library/busybox`).
                Some(n) => !names.iter().any(|w| same_name(n, w)),
                None => d.digest != desc.digest,
            });
        let mut plain = desc.clone();
        plain.annotations.clear();
        if names.is_empty() {
            index.manifests.push(plain);
        } else {
            for n in names {
                let mut d = plain.clone();
                d.annotations.insert(ANNOTATION_REF_NAME.into(), n);
                index.manifests.push(d);
            }
        }
        // Drop untagged entries of images that now have a name.
        let named: BTreeSet<String> = index
            .manifests
            .iter()
            .filter(|d| d.annotations.contains_key(ANNOTATION_REF_NAME))
            .map(|d| d.digest.clone())
            .collect();
        index.manifests.retain(|d| {
            d.annotations.contains_key(ANNOTATION_REF_NAME) || !named.contains(&d.digest)
        });
        self.write_index(&index)
    }

    /// Points `tag` at the image `source` resolves to.
    pub fn tag(&self, source: &str, tag: &str) -> Result<()> {
        canonical_tag(tag)?;
        let desc = self.find_descriptor(source)?;
        self.add_to_index(&desc, &[tag.to_string()])
    }

    /// Removes a tag, or every index entry of a digest. Blobs stay until `prune`.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let wanted = normalize_ref(name);
        let before = index.manifests.len();
        let content_form =
            name.contains('@') || name.starts_with("sha256:") || looks_like_content_address(name);
        // Names are matched as stored, unvalidated, so that a bad name left
        // by an older berth can still be removed.
        let tag_matches = |d: &Descriptor| {
            d.annotations
                .get(ANNOTATION_REF_NAME)
                .is_some_and(|n| n == &wanted || same_name(n, &wanted))
        };
        let by_tag = !content_form && index.manifests.iter().any(tag_matches);
        if by_tag {
            index.manifests.retain(|d| !tag_matches(d));
        } else {
            let desc = Self::find_in(&index, name)
                .with_context(|| format!("looking up {name:?} in store {}", self.root.display()))?;
            // A digest-shaped name an older berth stored goes with it.
            index.manifests.retain(|d| {
                d.digest != desc.digest && d.annotations.get(ANNOTATION_REF_NAME) != Some(&wanted)
            });
        }
        if index.manifests.len() == before {
            bail!("image {name:?} not found");
        }
        self.write_index(&index)
    }

    // ---- build cache ----

    fn cache_path(&self, key: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("cache")
            .join(format!("{}.json", hex_part(key)?)))
    }

    /// The cache entry for `key`, if present and its blob still exists.
    /// With a [`CacheLink`], an entry imported from a shared cache counts
    /// too, its layer fetched (and verified) now if the store lacks it.
    pub fn cache_get(&self, key: &str) -> Option<CacheEntry> {
        let local = fs::read(self.cache_path(key).ok()?)
            .ok()
            .and_then(|data| serde_json::from_slice::<CacheEntry>(&data).ok());
        let link = self.cache_link.as_deref();
        let from_link = local.is_none();
        let entry = local.or_else(|| link.and_then(|l| l.imported(key)))?;
        if let Some(l) = &entry.layer {
            if !self.has_blob(&l.descriptor.digest)
                && !link.is_some_and(|k| k.fetch(&l.descriptor, &l.diff_id))
            {
                return None;
            }
        }
        if from_link {
            // Kept locally: the next build here needs no registry.
            let _ = self.cache_put_file(key, &entry);
        }
        if let Some(l) = link {
            l.record(key, &entry);
        }
        Some(entry)
    }

    pub fn cache_put(&self, key: &str, entry: &CacheEntry) -> Result<()> {
        self.cache_put_file(key, entry)?;
        if let Some(l) = self.cache_link.as_deref() {
            l.record(key, entry);
        }
        Ok(())
    }

    fn cache_put_file(&self, key: &str, entry: &CacheEntry) -> Result<()> {
        let data = serde_json::to_vec(entry).context("serializing cache entry")?;
        // Its blob is already durable; a lost entry only costs a rebuild.
        replace_file(&self.cache_path(key)?, &data)
    }

    /// Notes kept about the last execution of a step (what its inputs were),
    /// used to explain cache misses. Keyed like cache entries.
    pub fn memo_get(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let path = self
            .root
            .join("cache")
            .join(format!("{}.memo", hex_part(key).ok()?));
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn memo_put(&self, key: &str, memo: &BTreeMap<String, String>) -> Result<()> {
        let path = self
            .root
            .join("cache")
            .join(format!("{}.memo", hex_part(key)?));
        atomic_write(
            &path,
            &serde_json::to_vec(memo).context("serializing memo")?,
        )
    }

    // ---- snapshots ----

    /// Directory holding the layer with `diff_id` unpacked in overlayfs format.
    pub fn snapshot_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(hex_part(diff_id)?))
    }

    // ---- garbage collection ----

    /// Digests reachable from the index (manifests, configs, layers).
    fn reachable(&self) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let mut blobs = BTreeSet::new();
        let mut diff_ids = BTreeSet::new();
        for d in self.index()?.manifests {
            blobs.insert(d.digest.clone());
            let m: Manifest = self.read_json(&d.digest)?;
            blobs.insert(m.config.digest.clone());
            let c: ImageConfig = self.read_json(&m.config.digest)?;
            diff_ids.extend(c.rootfs.diff_ids);
            blobs.extend(m.layers.into_iter().map(|l| l.digest));
        }
        // Working containers keep their image's layers (blobs for commit,
        // snapshots for their overlay) even once the image is gone.
        let (b, d) = crate::workctr::in_use(self);
        blobs.extend(b);
        diff_ids.extend(d);
        Ok((blobs, diff_ids))
    }

    /// Drops the build cache and every blob and snapshot no tagged image uses.
    pub fn prune(&self) -> Result<PruneReport> {
        let _lock = self.lock()?;
        let mut report = PruneReport::default();
        let cache = self.root.join("cache");
        for e in fs::read_dir(&cache).with_context(|| format!("reading {}", cache.display()))? {
            remove_any(&e?.path())?;
            report.removed_cache_entries += 1;
        }
        let (blobs, diff_ids) = self.reachable()?;
        let blob_dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blob_dir)? {
            let e = e?;
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            if !blobs.contains(&digest) {
                report.reclaimed_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                remove_any(&e.path())?;
                report.removed_blobs += 1;
            }
        }
        let summaries = self.root.join("summaries");
        for e in
            fs::read_dir(&summaries).with_context(|| format!("reading {}", summaries.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{}", name.trim_end_matches(".json"));
            if !blobs.contains(&digest) {
                remove_any(&e.path())?;
            }
        }
        // Interrupted downloads: a retry after a prune starts over.
        let partial = self.root.join("partial");
        if partial.is_dir() {
            for e in fs::read_dir(&partial)? {
                let e = e?;
                report.reclaimed_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                remove_any(&e.path())?;
            }
        }
        for side in ["sources", layer_size::DIR] {
            let dir = self.root.join(side);
            for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let e = e?;
                let digest = format!("sha256:{}", e.file_name().to_string_lossy());
                if !blobs.contains(&digest) {
                    remove_any(&e.path())?;
                }
            }
        }
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps)? {
            let e = e?;
            let diff_id = format!("sha256:{}", e.file_name().to_string_lossy());
            if !diff_ids.contains(&diff_id) {
                report.reclaimed_bytes += disk_usage(&e.path());
                remove_any(&e.path())?;
                report.removed_snapshots += 1;
            }
        }
        Ok(report)
    }

    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let mut du = DiskUsage::default();
        for e in fs::read_dir(self.root.join("blobs/sha256"))? {
            du.blobs_count += 1;
            du.blobs_bytes += e?.metadata().map(|m| m.len()).unwrap_or(0);
        }
        du.snapshots_bytes = disk_usage(&self.root.join("snapshots"));
        du.cache_entries = fs::read_dir(self.root.join("cache"))?.count() as u64;
        du.images = self.images()?.len() as u64;
        Ok(du)
    }
}

#[cfg(test)]
mod tests;
