//! Freezing: v1 freezer.state, v2 cgroup.freeze + cgroup.events.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::fsutil;
use crate::Loc;

/// How long we wait for the kernel to reach the requested state. Freezing can take a while
/// when tasks are in uninterruptible sleep (e.g. on NFS or a FUSE mount).
const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn freeze(loc: &Loc) -> Result<()> {
    match loc {
        Loc::V1(dir) => {
            let res = v1_set(dir, "FROZEN");
            if res.is_err() {
                // Never leave a half-frozen container behind (runc does the same).
                let _ = v1_set(dir, "THAWED");
            }
            res
        }
        Loc::V2(dir) => {
            let res = v2_set(dir, true);
            if res.is_err() {
                let _ = v2_set(dir, false);
            }
            res
        }
    }
}

pub(crate) fn thaw(loc: &Loc) -> Result<()> {
    match loc {
        Loc::V1(dir) => v1_set(dir, "THAWED"),
        Loc::V2(dir) => v2_set(dir, false),
    }
}

pub(crate) fn is_frozen(loc: &Loc) -> Result<bool> {
    match loc {
        Loc::V1(dir) => Ok(fsutil::read(&dir.join("freezer.state"))?.trim() == "FROZEN"),
        Loc::V2(dir) => Ok(fsutil::read(&dir.join("cgroup.freeze"))?.trim() == "1"),
    }
}

/// Frozen, or on its way there (v1 FREEZING; v2 cgroup.freeze set before the
/// kernel reports `frozen 1`).
pub(crate) fn is_frozen_or_freezing(loc: &Loc) -> Result<bool> {
    match loc {
        Loc::V1(dir) => Ok(matches!(
            fsutil::read(&dir.join("freezer.state"))?.trim(),
            "FROZEN" | "FREEZING"
        )),
        Loc::V2(_) => is_frozen(loc),
    }
}

/// Writes the state repeatedly until it sticks: a v1 freeze can stay in FREEZING when a task
/// forks concurrently, and re-writing FROZEN makes the kernel retry.
fn v1_set(dir: &Path, state: &str) -> Result<()> {
    let file = dir.join("freezer.state");
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        fsutil::write(&file, state)?;
        let cur = fsutil::read(&file)?;
        if cur.trim() == state {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            bail!(
                "{}: still {:?} after {:?}, wanted {state}",
                file.display(),
                cur.trim(),
                TIMEOUT
            );
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

fn v2_set(dir: &Path, frozen: bool) -> Result<()> {
    let value = if frozen { "1" } else { "0" };
    fsutil::write(&dir.join("cgroup.freeze"), value)?;
    let events = dir.join("cgroup.events");
    let want = u64::from(frozen);
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        if fsutil::read_keyed_value(&events, "frozen")? == Some(want) {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            bail!(
                "{}: \"frozen\" did not become {want} within {:?}",
                events.display(),
                TIMEOUT
            );
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}
