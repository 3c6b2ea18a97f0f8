//! OOM-kill accounting and notification.
//! v1: an eventfd registered through cgroup.event_control on memory.oom_control;
//! v2: inotify on memory.events, comparing its oom_kill counter.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::fsutil;
use crate::Loc;

pub(crate) fn kill_count(loc: &Loc) -> Result<u64> {
    let (file, key) = match loc {
        Loc::V1(d) => (d.join("memory.oom_control"), "oom_kill"),
        Loc::V2(d) => (d.join("memory.events"), "oom_kill"),
    };
    // Kernels before 4.13 lack the v1 oom_kill line: nothing counted then.
    Ok(fsutil::read_keyed_value(&file, key)?.unwrap_or(0))
}

enum Kind {
    V1 {
        efd: EventFd,
        // Registration lives as long as this fd stays open.
        _oom_control: File,
        dir: PathBuf,
    },
    V2 {
        inotify: Inotify,
        events: PathBuf,
        last: u64,
    },
}

/// Reports OOM kills in a cgroup. Pollable (see [`AsFd`]) so a shim can put it in its own
/// event loop and call [`OomWatcher::wait`] with a zero timeout when it becomes readable.
pub struct OomWatcher {
    kind: Kind,
}

impl OomWatcher {
    pub(crate) fn new(loc: &Loc) -> Result<OomWatcher> {
        match loc {
            Loc::V1(dir) => {
                let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .context("eventfd for OOM notification")?;
                let ctl = dir.join("memory.oom_control");
                let oom_control = File::open(&ctl)
                    .map_err(|e| anyhow!("open {}: {}", ctl.display(), fsutil::describe(&e)))?;
                fsutil::write(
                    &dir.join("cgroup.event_control"),
                    &format!("{} {}", efd.as_fd().as_raw_fd(), oom_control.as_raw_fd()),
                )?;
                Ok(OomWatcher {
                    kind: Kind::V1 {
                        efd,
                        _oom_control: oom_control,
                        dir: dir.clone(),
                    },
                })
            }
            Loc::V2(dir) => {
                let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                    .context("inotify_init for OOM notification")?;
                let events = dir.join("memory.events");
                inotify
                    .add_watch(&events, AddWatchFlags::IN_MODIFY)
                    .map_err(|e| anyhow!("inotify watch {}: {}", events.display(), e.desc()))?;
                let last = kill_count(loc)?;
                Ok(OomWatcher {
                    kind: Kind::V2 {
                        inotify,
                        events,
                        last,
                    },
                })
            }
        }
    }

    /// Waits up to `timeout` (None = forever) for an OOM kill; true if one happened since the
    /// last call (or since creation). False on timeout or when the cgroup went away.
    /// On v1 the kernel signals "the cgroup hit OOM", just before the killer runs (this is
    /// what containerd reports as /tasks/oom on v1 too); on v2 it is the oom_kill counter.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.check()? {
                return Ok(true);
            }
            if self.gone() {
                return Ok(false);
            }
            let remaining = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    PollTimeout::try_from(d - now).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, remaining) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(anyhow!("poll OOM watcher: {}", e.desc())),
            }
        }
    }

    /// Consumes pending notifications; true if they signal a new OOM kill.
    fn check(&mut self) -> Result<bool> {
        match &mut self.kind {
            Kind::V1 { efd, dir, .. } => match efd.read() {
                // The eventfd also fires when the cgroup is removed.
                Ok(_) => Ok(dir.join("memory.oom_control").exists()),
                Err(nix::errno::Errno::EAGAIN) => Ok(false),
                Err(e) => Err(anyhow!("read OOM eventfd: {}", e.desc())),
            },
            Kind::V2 {
                inotify,
                events,
                last,
            } => {
                match inotify.read_events() {
                    Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => return Err(anyhow!("read inotify events: {}", e.desc())),
                }
                let Ok(now) = fsutil::read_keyed_value(events, "oom_kill") else {
                    return Ok(false);
                };
                let now = now.unwrap_or(0);
                let new = now > *last;
                *last = now;
                Ok(new)
            }
        }
    }

    fn gone(&self) -> bool {
        let probe: &Path = match &self.kind {
            Kind::V1 { dir, .. } => dir,
            Kind::V2 { events, .. } => events,
        };
        !probe.exists()
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { efd, .. } => efd.as_fd(),
            Kind::V2 { inotify, .. } => inotify.as_fd(),
        }
    }
}
