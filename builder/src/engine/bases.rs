//! Base images from registries: before any stage runs, every `FROM` image
//! the build needs that is not in the store is pulled (all of them with
//! `--pull`, except digest-pinned ones already present, which cannot
//! change). Stages then resolve their base from the store as before, so a
//! build never mixes a half-pulled image into its cache keys.
use super::BuildOptions;
use crate::dockerfile::Stage;
use crate::progress::{Event, EventKind, Progress};
use crate::registry::{TransferEvent, TransferKind};
use crate::store::Store;
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// True when `base` names a stage before `index` (by name or number).
fn is_stage_ref(stages: &[Stage], base: &str, index: usize) -> bool {
    let lower = base.to_ascii_lowercase();
    stages[..index]
        .iter()
        .any(|s| s.name.as_deref() == Some(lower.as_str()))
        || base.parse::<usize>().is_ok_and(|i| i < index)
}

/// Pulls the bases of `needed` stages as described in the module doc.
pub(crate) fn pull_bases(
    store: &Store,
    opts: &BuildOptions,
    stages: &[Stage],
    bases: &[String],
    needed: &BTreeSet<usize>,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(reg) = &opts.registry else {
        return Ok(());
    };
    let mut done = BTreeSet::new();
    for &i in needed {
        let base = &bases[i];
        if base == "scratch" || is_stage_ref(stages, base, i) || !done.insert(base.clone()) {
            continue;
        }
        let present = store.resolve(base).is_ok();
        let pinned = base.contains('@');
        if present && (!opts.pull || pinned) {
            continue;
        }
        let info = |message: String| {
            let mut e = Event::new(EventKind::Info);
            e.message = message;
            progress.event(e);
        };
        info(format!("pulling base image {base}"));
        let forward = |e: TransferEvent| {
            if matches!(
                e.kind,
                TransferKind::Done | TransferKind::Resolved | TransferKind::Info
            ) {
                if let Some(line) = e.plain_line() {
                    info(line);
                }
            }
        };
        crate::registry::pull(store, reg, base, &forward).with_context(|| {
            if present {
                format!("base image {base:?}: --pull could not refresh it")
            } else {
                format!("base image {base:?} is not in the store, and pulling it failed")
            }
        })?;
    }
    Ok(())
}
