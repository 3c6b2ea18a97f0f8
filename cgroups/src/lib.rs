//! cgroup v1 / v2 / hybrid management for berth (runtime) and its containerd shim.
//!
//! A [`Cgroup`] is resolved once from the OCI `linux.cgroupsPath` (see [`Cgroup::resolve`]),
//! then serialized into the container state so later commands reuse the exact directories.
//! On hybrid hosts a controller is driven through its v1 hierarchy when mounted there and
//! through the unified (v2) hierarchy otherwise; processes join every hierarchy, as runc does.

mod bpf;
mod devices;
mod freezer;
mod fsutil;
mod mountinfo;
mod oom;
mod path;
mod resources;
mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use mountinfo::{detect_mode, CgroupMode};
pub use oom::OomWatcher;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};

/// A resolved container cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    mode: CgroupMode,
    /// The cleaned cgroupsPath this was resolved from ("/a/b" or relative "a/b").
    path: String,
    /// v1 controller (as named in mount options, e.g. "memory", "name=systemd") → directory.
    v1: BTreeMap<String, PathBuf>,
    /// Directory in the unified (v2) hierarchy, on V2 and Hybrid hosts.
    unified: Option<PathBuf>,
    /// Mount point of the unified hierarchy, for error messages and controller enabling.
    unified_mount: Option<PathBuf>,
}

/// Where a controller's files live for this cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loc {
    V1(PathBuf),
    V2(PathBuf),
}

impl Cgroup {
    /// Resolves `linux.cgroupsPath` for container `id`: absolute paths are relative to the
    /// hierarchy roots, relative paths to the caller's cgroup, empty means `id` (runc's default).
    /// The systemd "slice:prefix:name" form is rejected.
    pub fn resolve(cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        path::resolve(cgroups_path, id)
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The cleaned cgroupsPath this cgroup was resolved from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The v1 directory of `controller`, if that controller is mounted as v1.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// The directory in the unified hierarchy (V2 and Hybrid).
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// Every distinct directory of this cgroup (v1 hierarchies may mount several
    /// controllers together), v1 first then unified.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for d in self.v1.values().chain(self.unified.iter()) {
            if seen.insert(d.clone()) {
                out.push(d.clone());
            }
        }
        out
    }

    /// Creates the cgroup in every hierarchy. On v2 the controllers available at each ancestor
    /// are enabled in its cgroup.subtree_control so the leaf gets them. On failure the
    /// directories this call created are removed again (pre-existing ones are left alone).
    pub fn create(&self) -> Result<()> {
        let fresh = self.create_v1()?;
        self.create_unified().inspect_err(|_| {
            for d in fresh.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        })
    }

    /// Creates only the directory in the unified hierarchy: what clone3(CLONE_INTO_CGROUP)
    /// needs before a process can be born in it. [`Cgroup::create`] later creates the rest.
    pub fn create_unified(&self) -> Result<()> {
        let (Some(dir), Some(mount)) = (&self.unified, &self.unified_mount) else {
            return Ok(());
        };
        mkdir(dir)?;
        enable_controllers(mount, dir);
        Ok(())
    }

    /// Creates the v1 directories (cpuset ones get cpus/mems from their parent) and
    /// returns those this call created. On failure removes them again.
    fn create_v1(&self) -> Result<Vec<&Path>> {
        let mut fresh: Vec<&Path> = Vec::new();
        let res = (|| {
            for (ctrl, dir) in &self.v1 {
                if mkdir(dir)? {
                    fresh.push(dir.as_path());
                }
                if ctrl == "cpuset" {
                    init_cpuset(dir)?;
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(fresh),
            Err(e) => {
                for d in fresh.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                Err(e)
            }
        }
    }

    /// Applies every limit given in `res`, mapped to v1 or v2 files per controller.
    pub fn apply(&self, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
        resources::apply(self, res)
    }

    /// Changes limits of a live cgroup; only the fields present in `res` are touched.
    pub fn update(&self, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
        resources::apply(self, res)
    }

    /// Moves `pid` into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            fsutil::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self.procs_dir()?;
        let mut out = Vec::new();
        collect_pids(&dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The directory whose process list is authoritative: freezer (what pause acts on) first.
    fn procs_dir(&self) -> Result<PathBuf> {
        ["freezer", "pids", "memory", "devices", "cpu"]
            .iter()
            .find_map(|c| self.v1.get(*c))
            .or(self.unified.as_ref())
            .or_else(|| self.v1.values().next())
            .cloned()
            .ok_or_else(|| anyhow!("cgroup {:?} has no hierarchy", self.path))
    }

    /// Freezes every process (v1 freezer.state FROZEN / v2 cgroup.freeze) and waits until the
    /// kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        freezer::freeze(&self.freezer_loc()?)
    }

    pub fn thaw(&self) -> Result<()> {
        freezer::thaw(&self.freezer_loc()?)
    }

    pub fn is_frozen(&self) -> Result<bool> {
        freezer::is_frozen(&self.freezer_loc()?)
    }

    fn freezer_loc(&self) -> Result<Loc> {
        if let Some(d) = self.v1.get("freezer") {
            return Ok(Loc::V1(d.clone()));
        }
        // cgroup.freeze is a core v2 file: no controller needs enabling.
        match &self.unified {
            Some(d) => Ok(Loc::V2(d.clone())),
            None => Err(self.unavailable("freezer")),
        }
    }

    /// Sends `signal` to every process in the cgroup (`kill --all`, `delete --force`).
    /// On v2 SIGKILL uses cgroup.kill when the kernel has it (atomic, no race with fork).
    /// Otherwise, like runc, the cgroup is frozen while pids are listed and signalled so no
    /// new process escapes; a container that was paused before stays paused, except for
    /// SIGKILL, which is only delivered to thawed tasks on v1.
    pub fn signal_all(&self, signal: Signal) -> Result<()> {
        if signal == Signal::SIGKILL && self.mode == CgroupMode::V2 {
            if let Some(kill) = self.unified.as_ref().map(|d| d.join("cgroup.kill")) {
                if kill.exists() {
                    return fsutil::write(&kill, "1");
                }
            }
        }
        let was_frozen = self.is_frozen().unwrap_or(false);
        let froze = !was_frozen && self.freeze().is_ok();
        let res = self.pids().and_then(|pids| {
            for pid in pids {
                match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => bail!("send {signal} to {pid}: {}", e.desc()),
                }
            }
            Ok(())
        });
        if froze || (was_frozen && signal == Signal::SIGKILL) {
            self.thaw()?;
        }
        res
    }

    /// Resource usage in the shape of runc's `events --stats` "data" object.
    pub fn stats(&self) -> Result<Stats> {
        stats::collect(self)
    }

    /// Number of processes the kernel OOM killer has killed in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64> {
        oom::kill_count(&self.locate("memory")?)
    }

    /// A watcher that reports OOM kills (v1: eventfd on memory.oom_control; v2: inotify on
    /// memory.events).
    pub fn oom_watcher(&self) -> Result<OomWatcher> {
        OomWatcher::new(&self.locate("memory")?)
    }

    /// Removes the cgroup (and any sub-cgroups) from every hierarchy. Already gone is fine.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.dirs() {
            if let Err(e) = remove_tree(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// runc's checks on a cgroup a new container is about to use: an error when it
    /// already exists frozen (a process placed in it would hang in the freezer for ever),
    /// otherwise the number of processes already in it (0 when it does not exist), which
    /// the caller reports as runc does ("container's cgroup is not empty").
    pub fn check_before_use(&self) -> Result<usize> {
        if !self.exists() {
            return Ok(0);
        }
        if let Ok(loc) = self.freezer_loc() {
            let dir = match &loc {
                Loc::V1(d) | Loc::V2(d) => d,
            };
            if dir.is_dir() && freezer::is_frozen_or_freezing(&loc)? {
                bail!("container's cgroup unexpectedly frozen");
            }
        }
        Ok(self.pids().map(|p| p.len()).unwrap_or(0))
    }

    /// True if the cgroup directory exists in any hierarchy.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// Finds where `controller`'s files live: its v1 hierarchy if mounted, else the unified
    /// hierarchy if the controller is available there.
    pub(crate) fn locate(&self, controller: &str) -> Result<Loc> {
        if let Some(d) = self.v1.get(controller) {
            return Ok(Loc::V1(d.clone()));
        }
        if let Some(d) = &self.unified {
            if v2_available(d)?.iter().any(|c| c == controller) {
                return Ok(Loc::V2(d.clone()));
            }
        }
        Err(self.unavailable(controller))
    }

    pub(crate) fn unified_mount_display(&self) -> String {
        self.unified_mount
            .as_deref()
            .map(|m| m.display().to_string())
            .unwrap_or_default()
    }

    pub(crate) fn unavailable(&self, controller: &str) -> anyhow::Error {
        let unified = self.unified_mount_display();
        match self.mode {
            CgroupMode::V2 => anyhow!(
                "cgroup controller {controller:?} is not available (v2 unified hierarchy at {unified})"
            ),
            CgroupMode::V1 => anyhow!(
                "cgroup controller {controller:?} is not available (no cgroup v1 hierarchy mounts it)"
            ),
            CgroupMode::Hybrid => anyhow!(
                "cgroup controller {controller:?} is not available (not mounted as cgroup v1, and not in the v2 unified hierarchy at {unified})"
            ),
        }
    }
}

/// Controllers usable in the v2 cgroup `dir`: its own cgroup.controllers, or before the
/// cgroup exists, what its nearest existing ancestor could delegate.
pub(crate) fn v2_available(dir: &Path) -> Result<Vec<String>> {
    let mut d = Some(dir);
    while let Some(cur) = d {
        let f = cur.join("cgroup.controllers");
        if f.exists() {
            return Ok(fsutil::read(&f)?
                .split_whitespace()
                .map(str::to_string)
                .collect());
        }
        d = cur.parent();
    }
    Ok(Vec::new())
}

/// A cgroup directory the caller may not create: a rootless runtime
/// without a delegated cgroup. [`Cgroup::create`] fails with this (nothing
/// left behind) so a rootless caller can go on without a cgroup.
#[derive(Debug)]
pub struct NoPermission {
    pub dir: PathBuf,
}

impl std::fmt::Display for NoPermission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "create cgroup {}: Permission denied", self.dir.display())
    }
}

impl std::error::Error for NoPermission {}

/// mkdir for a cgroup directory (and missing parents); Ok(true) if this call created it.
fn mkdir(dir: &Path) -> Result<bool> {
    let describe = |e: io::Error| -> anyhow::Error {
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => NoPermission {
                dir: dir.to_path_buf(),
            }
            .into(),
            _ => anyhow!("create cgroup {}: {}", dir.display(), fsutil::describe(&e)),
        }
    };
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(describe)?;
            Ok(true)
        }
        Err(e) => Err(describe(e)),
    }
}

/// Enables, top-down from the mount point to the leaf's parent, every controller each ancestor
/// has. Failures are ignored on purpose: a controller that cannot be delegated (e.g. the
/// parent holds processes) then shows up as "not available" when a limit needs it.
fn enable_controllers(mount: &Path, leaf: &Path) {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return;
    };
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        let controllers = fsutil::read(&cur.join("cgroup.controllers")).unwrap_or_default();
        let enabled = fsutil::read(&cur.join("cgroup.subtree_control")).unwrap_or_default();
        for c in controllers.split_whitespace() {
            if !enabled.split_whitespace().any(|e| e == c) {
                let _ = fsutil::write_raw(&cur.join("cgroup.subtree_control"), &format!("+{c}"));
            }
        }
        cur.push(comp);
    }
}

/// A new v1 cpuset cgroup starts with empty cpus/mems, which makes joining it fail with
/// ENOSPC; copy them down from the parent at every level we (may have) created.
fn init_cpuset(leaf: &Path) -> Result<()> {
    let mut chain = Vec::new();
    let mut cur = leaf;
    while let Some(parent) = cur.parent() {
        if !parent.join("cpuset.cpus").exists() {
            break;
        }
        chain.push(cur.to_path_buf());
        cur = parent;
    }
    for dir in chain.iter().rev() {
        let parent = dir.parent().unwrap_or(dir);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let cur = fsutil::read(&dir.join(f))?;
            if cur.trim().is_empty() {
                let val = fsutil::read(&parent.join(f))?;
                fsutil::write(&dir.join(f), val.trim())?;
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let content = match std::fs::read_to_string(&procs) {
        Ok(c) => c,
        // A sub-cgroup removed while we walk is not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.parent().is_some() => return Ok(()),
        Err(e) => bail!("read {}: {}", procs.display(), fsutil::describe(&e)),
    };
    for l in content.lines() {
        let pid = l
            .trim()
            .parse::<i32>()
            .with_context(|| format!("parse pid {l:?} in {}", procs.display()))?;
        out.push(pid);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("read dir {}: {}", dir.display(), fsutil::describe(&e)),
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_pids(&e.path(), out)?;
        }
    }
    Ok(())
}

/// rmdir children first, then `dir`, retrying EBUSY briefly (the kernel releases a cgroup
/// slightly after its last process exits).
fn remove_tree(dir: &Path) -> Result<()> {
    // The common case is a leaf cgroup: one rmdir, no directory listing.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("read dir {}: {}", dir.display(), fsutil::describe(&e)),
    }
    let mut delay = Duration::from_millis(5);
    for attempt in 0.. {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 8 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => bail!("remove cgroup {}: {}", dir.display(), fsutil::describe(&e)),
        }
    }
    Ok(())
}
