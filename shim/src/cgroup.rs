//! The container's cgroup (as berth recorded it) and its OOM notifications.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use berth_cgroups::Cgroup;
use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC;
use containerd_shim::warn;

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

/// Publishes /tasks/oom for every OOM in the container's cgroup, on a small thread that
/// ends when the cgroup is removed.
pub fn spawn_oom_watcher(cg: &Cgroup, id: String, events: EventQueue) {
    let mut watcher = match cg.oom_watcher() {
        Ok(w) => w,
        Err(e) => {
            warn!("no OOM notifications for {id}: {e:#}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("oom".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            match watcher.wait(None) {
                Ok(true) => events.send(
                    TASK_OOM_EVENT_TOPIC,
                    Box::new(TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    }),
                ),
                // The cgroup is gone: the container was deleted.
                Ok(false) => break,
                Err(e) => {
                    warn!("OOM watcher for {id}: {e:#}");
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        warn!("spawn OOM watcher: {e}");
    }
}
