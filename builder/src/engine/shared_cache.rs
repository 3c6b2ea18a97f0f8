//! `--cache-from` / `--cache-to` for one build: the imported registry
//! cache is linked to the build's store handle before the stages run, and
//! the entries the build used or made are exported after it committed.
use super::BuildOptions;
use crate::progress::{Event, EventKind, Progress};
use crate::registry::{TransferEvent, TransferKind};
use crate::store::{CacheLink, Store};
use anyhow::{Context, Result};
use std::sync::Arc;

fn forwarder(progress: &dyn Progress) -> impl Fn(TransferEvent) + Send + Sync + '_ {
    move |e: TransferEvent| {
        if matches!(e.kind, TransferKind::Resolved | TransferKind::Info) {
            let mut ev = Event::new(EventKind::Info);
            ev.message = e.message;
            progress.event(ev);
        }
    }
}

/// The link for this build, when it imports or exports a registry cache.
pub(crate) fn link(
    store: &Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Option<Arc<CacheLink>>> {
    if opts.cache_from.is_empty() && opts.cache_to.is_none() {
        return Ok(None);
    }
    let reg = opts
        .registry
        .as_ref()
        .context("--cache-from/--cache-to need registry access")?;
    let link = if opts.cache_from.is_empty() {
        CacheLink::new(Default::default(), None)
    } else {
        crate::registry::cache::import(store, reg, &opts.cache_from, &forwarder(progress))
    };
    Ok(Some(Arc::new(link)))
}

/// Pushes what the build used to `--cache-to`.
pub(crate) fn export(
    store: &Store,
    opts: &BuildOptions,
    link: &CacheLink,
    progress: &dyn Progress,
) -> Result<()> {
    let (Some(to), Some(reg)) = (&opts.cache_to, &opts.registry) else {
        return Ok(());
    };
    crate::registry::cache::export(store, reg, to, &link.used(), &forwarder(progress))?;
    Ok(())
}
