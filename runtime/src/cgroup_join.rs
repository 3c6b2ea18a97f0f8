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

use anyhow::{Context, Result};
use berth_cgroups::Cgroup;
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

pub struct Placement {
    unified: Option<OwnedFd>,
    v1_tasks: Vec<PathBuf>,
}

impl Placement {
    pub fn new(cg: &Cgroup) -> Result<Placement> {
        let unified = match cg.unified_dir() {
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
            .map(|d| d.join("tasks"))
            .collect();
        Ok(Placement { unified, v1_tasks })
    }
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
