//! The container's cgroup (as berth recorded it) and its OOM notifications.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use berth_cgroups::{Cgroup, OomWatcher};
use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC;
use containerd_shim::warn;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::container::Shared;
use crate::events::EventQueue;

/// The container's cgroup as berth resolved it (`<root>/<id>/state.json` key "cgroup").
pub fn load_cgroup(root: &Path, id: &str) -> anyhow::Result<Cgroup> {
    let path = root.join(id).join("state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let cg = v
        .get("cgroup")
        .cloned()
        .ok_or_else(|| anyhow!("{} has no cgroup", path.display()))?;
    serde_json::from_value(cg).context("decode berth's cgroup record")
}

/// The container's OOM watcher, shared by its thread and the exit path: whoever takes a
/// pending notification publishes /tasks/oom, so an OOM kill is reported once and before
/// the task's /tasks/exit even when the reaper wins the race against the watcher's wakeup.
#[derive(Default)]
pub struct Oom {
    watcher: Mutex<Option<OomWatcher>>,
}

impl Oom {
    /// Publishes /tasks/oom if an OOM notification is pending; never blocks.
    pub fn drain(&self, id: &str, events: &EventQueue) {
        let mut guard = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = guard.as_mut() else {
            return;
        };
        match w.wait(Some(Duration::ZERO)) {
            Ok(true) => events.send(
                TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            ),
            Ok(false) => {}
            Err(e) => warn!("OOM watcher for {id}: {e:#}"),
        }
    }

    fn stop(&self) {
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Watches the container's cgroup for OOMs on a small thread that ends when the cgroup is
/// removed.
pub fn spawn_oom_watcher(cg: &Cgroup, id: String, shared: Arc<Shared>) {
    let watcher = match cg.oom_watcher() {
        Ok(w) => w,
        Err(e) => {
            warn!("no OOM notifications for {id}: {e:#}");
            return;
        }
    };
    // The thread polls its own copy of the fd so the watcher's lock is free while it sleeps.
    let fd = match watcher.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            warn!("no OOM notifications for {id}: dup watcher fd: {e}");
            return;
        }
    };
    *shared.oom.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
    let cg = cg.clone();
    let spawned = std::thread::Builder::new()
        .name("oom".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    warn!("poll OOM watcher for {id}: {e}");
                    break;
                }
            }
            shared.oom.drain(&id, &shared.events);
            // The fd also wakes when the cgroup is removed: the container was deleted.
            if !cg.exists() {
                shared.oom.stop();
                break;
            }
        });
    if let Err(e) = spawned {
        warn!("spawn OOM watcher: {e}");
    }
}
