//! Putting a new process into its cgroup without paying for a migration.
//!
//! Writing a pid to `cgroup.procs` takes the kernel's global
//! cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
//! period: ~10–15 ms here, the single biggest cost of starting a container
//! (runc pays it too). Two ways around it:
//! - cgroup v2: clone3(CLONE_INTO_CGROUP) creates the child directly in its
//!   cgroup, so there is no migration at all;
//! - cgroup v1: a single-threaded process moving *itself* by writing "0" to
//!   a hierarchy's `tasks` file skips the global lock (the kernel only
//!   needs it to keep a thread group stable while moving another process).
//!
//! When neither applies (e.g. init in a new user namespace cannot write the
//! host's cgroup files) the parent falls back to `cgroup.procs`.

use anyhow::{bail, Context, Result};
use berth_cgroups::Cgroup;
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub struct Placement {
    unified: Option<OwnedFd>,
    /// The unified directory `unified` was opened from (for the
    /// `cgroup.procs` fallback when clone3 cannot place the child).
    unified_dir: Option<PathBuf>,
    v1_tasks: Vec<PathBuf>,
}

impl Placement {
    pub fn new(cg: &Cgroup) -> Result<Placement> {
        Self::with_sub(cg, &SubCgroups::None)
    }

    /// The container's cgroups, or sub-cgroups of them (`exec --cgroup`).
    /// A sub-cgroup must exist already, as with runc.
    pub fn with_sub(cg: &Cgroup, sub: &SubCgroups) -> Result<Placement> {
        // Which v1 directories get a sub-path: several controllers may
        // share one hierarchy, so the override is by directory.
        let mut v1_sub: Vec<(PathBuf, &Path)> = Vec::new();
        if let SubCgroups::PerController(list) = sub {
            for (ctrl, rel) in list {
                let dir = cg.v1_dir(ctrl).ok_or_else(|| {
                    anyhow::anyhow!("unknown controller {ctrl} in SubCgroupPaths")
                })?;
                v1_sub.retain(|(d, _)| d != dir);
                v1_sub.push((dir.to_path_buf(), rel.as_path()));
            }
        }
        let target = |dir: &Path| -> PathBuf {
            match sub {
                SubCgroups::None => dir.to_path_buf(),
                SubCgroups::All(rel) => dir.join(rel),
                SubCgroups::PerController(_) => v1_sub
                    .iter()
                    .find(|(d, _)| d == dir)
                    .map_or_else(|| dir.to_path_buf(), |(_, rel)| dir.join(rel)),
            }
        };
        let unified_dir = cg.unified_dir().map(&target);
        let unified = match &unified_dir {
            Some(dir) => {
                let fd = nix::fcntl::open(
                    dir,
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .with_context(|| format!("open cgroup {}", dir.display()))?;
                // SAFETY: fresh fd we own.
                Some(unsafe { OwnedFd::from_raw_fd(fd) })
            }
            None => None,
        };
        let v1_tasks = cg
            .dirs()
            .into_iter()
            .filter(|d| Some(d.as_path()) != cg.unified_dir())
            .map(|d| target(&d).join("tasks"))
            .collect();
        Ok(Placement {
            unified,
            unified_dir,
            v1_tasks,
        })
    }

    /// The unified directory the process goes to, if any.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified_dir.as_deref()
    }

    /// Moves another process (not ourselves) into every directory of this
    /// placement: the slow, migrating path for when the process could not
    /// place itself.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let procs = self
            .v1_tasks
            .iter()
            .filter_map(|t| t.parent())
            .chain(self.unified_dir.as_deref())
            .map(|d| d.join("cgroup.procs"));
        for p in procs {
            std::fs::write(&p, pid.to_string())
                .with_context(|| format!("write {pid} to {}", p.display()))?;
        }
        Ok(())
    }
}

/// `exec --cgroup` arguments, as runc reads them: `sub` (or `:sub`) for
/// every hierarchy, or `ctrl[,ctrl...]:sub` per v1 controller; paths are
/// relative to the container's cgroup and may not leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubCgroups {
    None,
    All(PathBuf),
    PerController(Vec<(String, PathBuf)>),
}

impl SubCgroups {
    pub fn parse(args: &[String]) -> Result<SubCgroups> {
        let mut all: Option<&str> = None;
        let mut per: Vec<(String, &str)> = Vec::new();
        for arg in args {
            let mut parts = arg.splitn(3, ':');
            let (first, second) = (parts.next().unwrap_or(""), parts.next());
            if parts.next().is_some() {
                bail!("invalid --cgroup argument: {arg}");
            }
            match second {
                None => {
                    if args.len() != 1 {
                        bail!("invalid --cgroup argument: {arg} (missing <controller>: prefix)");
                    }
                    all = Some(first);
                }
                Some(sub) => {
                    for ctrl in first.split(',') {
                        if ctrl.is_empty() {
                            // runc: an empty controller name means all of them.
                            all = Some(sub);
                        } else {
                            // A later mention of a controller wins (runc's map).
                            per.retain(|(c, _)| c != ctrl);
                            per.push((ctrl.to_string(), sub));
                        }
                    }
                }
            }
        }
        // runc's "" key takes precedence over any per-controller one.
        if let Some(sub) = all {
            return Ok(SubCgroups::All(relative_sub(sub)?));
        }
        if per.is_empty() {
            return Ok(SubCgroups::None);
        }
        per.into_iter()
            .map(|(c, sub)| Ok((c, relative_sub(sub)?)))
            .collect::<Result<_>>()
            .map(SubCgroups::PerController)
    }
}

/// A sub-cgroup path made relative and lexically clean; refused (runc's
/// words) when `..` would lead out of the container's cgroup. Checked by
/// components, not by string prefix: `../<name>-other` is refused too.
fn relative_sub(sub: &str) -> Result<PathBuf> {
    let mut out: Vec<&str> = Vec::new();
    for c in sub.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    bail!("{sub} is not a sub cgroup path");
                }
            }
            name => out.push(name),
        }
    }
    Ok(out.iter().collect())
}

/// clone3 flag (bit 33): libc's constant is a c_int and overflows.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Outcome of [`clone_placed`] in the parent.
pub struct Child {
    pub pid: i32,
    /// The unified cgroup was not joined at clone time: the parent must add it.
    pub needs_unified: bool,
}

/// clone(2) with fork semantics into the v2 cgroup when possible.
/// Returns Ok(None) in the child.
pub fn clone_placed(flags: CloneFlags, placement: Option<&Placement>) -> Result<Option<Child>> {
    if let Some(fd) = placement.and_then(|p| p.unified.as_ref()) {
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..Default::default()
        };
        // SAFETY: clone3 with stack 0 behaves like fork; we are single-threaded.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match r {
            0 => return Ok(None),
            pid if pid > 0 => {
                return Ok(Some(Child {
                    pid: pid as i32,
                    needs_unified: false,
                }))
            }
            _ => {
                let err = std::io::Error::last_os_error();
                // Old kernel or unusable cgroup: fall back to clone + migration.
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::ENOSYS)
                        | Some(libc::EINVAL)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EBUSY)
                ) {
                    return Err(err)
                        .with_context(|| format!("clone3 container process ({flags:?})"));
                }
            }
        }
    }
    // SAFETY: clone with a NULL stack behaves like fork; single-threaded here.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match r {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Child {
            pid: pid as i32,
            needs_unified: placement.is_some_and(|p| p.unified.is_some()),
        })),
        _ => Err(std::io::Error::last_os_error())
            .with_context(|| format!("clone container process ({flags:?})")),
    }
}

/// In the child: move this (single-threaded) process into every v1
/// hierarchy via `tasks`, the lock-free path.
pub fn join_v1_self(placement: &Placement) -> Result<()> {
    for tasks in &placement.v1_tasks {
        std::fs::write(tasks, "0").with_context(|| format!("join cgroup {}", tasks.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SubCgroups> {
        SubCgroups::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sub_cgroup_arguments_read_as_runc_reads_them() {
        assert_eq!(parse(&[]).unwrap(), SubCgroups::None);
        assert_eq!(parse(&["sub"]).unwrap(), SubCgroups::All("sub".into()));
        assert_eq!(parse(&[":sub"]).unwrap(), SubCgroups::All("sub".into()));
        assert_eq!(parse(&["/a/./b/"]).unwrap(), SubCgroups::All("a/b".into()));
        assert_eq!(parse(&["a/../b"]).unwrap(), SubCgroups::All("b".into()));
        assert_eq!(
            parse(&["cpu:"]).unwrap(),
            SubCgroups::PerController(vec![("cpu".into(), "".into())])
        );
        assert_eq!(
            parse(&["cpu,memory:s", "cpu:t"]).unwrap(),
            SubCgroups::PerController(vec![
                ("memory".into(), "s".into()),
                ("cpu".into(), "t".into())
            ])
        );
        assert!(parse(&["a:b:c"])
            .unwrap_err()
            .to_string()
            .contains("invalid --cgroup argument"));
        assert!(parse(&["sub", "cpu:x"])
            .unwrap_err()
            .to_string()
            .contains("missing <controller>: prefix"));
    }

    #[test]
    fn escapes_are_not_sub_cgroups() {
        for bad in ["..", "../x", "/../x", "sub/../..", "a/../../b"] {
            let e = parse(&[bad]).unwrap_err().to_string();
            assert_eq!(e, format!("{bad} is not a sub cgroup path"));
        }
        let e = parse(&["cpu:../x"]).unwrap_err().to_string();
        assert_eq!(e, "../x is not a sub cgroup path");
    }
}
