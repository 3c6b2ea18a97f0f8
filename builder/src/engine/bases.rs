//! Base images from registries: before any stage runs, every image the
//! build needs (`FROM`, `COPY --from=<image>`, `RUN --mount=from=<image>`)
//! that is not in the store is pulled (all of them with `--pull`, except
//! digest-pinned ones already present, which cannot change). Stages then resolve their base from the store as before, so a
//! build never mixes a half-pulled image into its cache keys.
use super::BuildOptions;
use crate::dockerfile::{Instruction, Stage};
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

/// Images stage `i` reads: its base and the `from` of its COPY and RUN
/// mounts, expanded with `expand` (global ARGs).
fn images_of(stage: &Stage, base: &str, expand: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut refs = vec![base.to_string()];
    for node in &stage.instructions {
        match &node.instruction {
            Instruction::Copy(c) => refs.extend(c.from.iter().map(|f| expand(f))),
            Instruction::Run(r) => refs.extend(
                r.mounts
                    .iter()
                    .filter_map(|m| m.from.as_deref().map(expand)),
            ),
            _ => {}
        }
    }
    refs
}

/// Pulls the images of `needed` stages as described in the module doc.
pub(crate) fn pull_bases(
    store: &Store,
    opts: &BuildOptions,
    stages: &[Stage],
    bases: &[String],
    needed: &BTreeSet<usize>,
    expand: &dyn Fn(&str) -> String,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(reg) = &opts.registry else {
        return Ok(());
    };
    let mut done = BTreeSet::new();
    for &i in needed {
        for image in images_of(&stages[i], &bases[i], expand) {
            pull_one(store, opts, reg, stages, i, &image, &mut done, progress)?;
        }
    }
    Ok(())
}

/// Pulls `image` (read by stage `i`) unless the module doc's rules skip it.
#[allow(clippy::too_many_arguments)]
fn pull_one(
    store: &Store,
    opts: &BuildOptions,
    reg: &crate::registry::Registry,
    stages: &[Stage],
    i: usize,
    image: &str,
    done: &mut BTreeSet<String>,
    progress: &dyn Progress,
) -> Result<()> {
    // Unexpanded stage-level ARGs are left to the stage to resolve.
    if image == "scratch"
        || image.contains('$')
        || is_stage_ref(stages, image, i)
        || !done.insert(image.to_string())
    {
        return Ok(());
    }
    let present = store.resolve(image).is_ok();
    let pinned = image.contains('@');
    if present && (!opts.pull || pinned) {
        return Ok(());
    }
    let info = |message: String| {
        let mut e = Event::new(EventKind::Info);
        e.message = message;
        progress.event(e);
    };
    info(format!("pulling base image {image}"));
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
    crate::registry::pull(store, reg, image, &forward).with_context(|| {
        if present {
            format!("image {image:?}: --pull could not refresh it")
        } else {
            format!("image {image:?} is not in the store, and pulling it failed")
        }
    })?;
    Ok(())
}
