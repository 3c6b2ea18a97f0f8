//! A build's link to a shared (registry) cache: entries imported from
//! `--cache-from`, a way to fetch a layer blob the store lacks, and the
//! record of every entry the build used or made (what `--cache-to` exports).
//!
//! [`Store::with_cache_link`] gives the engine a store handle whose
//! [`Store::cache_get`] consults the imported entries after the local ones
//! and fetches a hit's layer only then: a build downloads just the layers of
//! the steps it reuses.
use super::{CacheEntry, Store};
use crate::image::Descriptor;
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Fetches a layer (descriptor, diff_id) into the store, verified.
pub type LayerFetcher = dyn Fn(&Descriptor, &str) -> Result<()> + Send + Sync;

pub struct CacheLink {
    imported: BTreeMap<String, CacheEntry>,
    fetch: Option<Box<LayerFetcher>>,
    used: Mutex<BTreeMap<String, CacheEntry>>,
}

impl std::fmt::Debug for CacheLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLink")
            .field("imported", &self.imported.len())
            .field("fetch", &self.fetch.is_some())
            .finish()
    }
}

impl CacheLink {
    pub fn new(imported: BTreeMap<String, CacheEntry>, fetch: Option<Box<LayerFetcher>>) -> Self {
        Self {
            imported,
            fetch,
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every entry the build looked up with a hit or wrote, by key.
    pub fn used(&self) -> BTreeMap<String, CacheEntry> {
        match self.used.lock() {
            Ok(u) => u.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(super) fn record(&self, key: &str, entry: &CacheEntry) {
        let mut u = match self.used.lock() {
            Ok(u) => u,
            Err(p) => p.into_inner(),
        };
        u.insert(key.to_string(), entry.clone());
    }

    pub(super) fn imported(&self, key: &str) -> Option<CacheEntry> {
        self.imported.get(key).cloned()
    }

    pub(super) fn fetch(&self, d: &Descriptor, diff_id: &str) -> bool {
        self.fetch.as_ref().is_some_and(|f| f(d, diff_id).is_ok())
    }
}

impl Store {
    /// This store, with `link` consulted and fed by the cache calls.
    pub fn with_cache_link(&self, link: Arc<CacheLink>) -> Store {
        Store {
            root: self.root.clone(),
            cache_link: Some(link),
        }
    }
}
