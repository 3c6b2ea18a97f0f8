//! Stopping a build whose client went away (cancelled the call, or its
//! deadline passed).
//!
//! The engine runs RUN steps through the OCI runtime in the foreground
//! (`<runtime> --root R run ...`) and has no notion of a caller. So each
//! build gets its own runtime state directory below the daemon's, which
//! holds this build's containers and no one else's; once the client's
//! stream is closed, every container found there is killed (SIGKILL),
//! again until the build returns, so the running RUN fails at once and no
//! later RUN gets to run. The build then fails, and the daemon tags nothing.
use crate::exec::run::Runtime;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often containers are looked for after the client went away.
const POLL: Duration = Duration::from_millis(200);

/// `base` with a state directory of its own (short: the runtime may put
/// unix sockets below it).
pub fn per_build(base: &Runtime) -> Runtime {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Runtime {
        binary: base.binary.clone(),
        state_root: base.state_root.join(format!("b{n}")),
    }
}

/// Kills the build's containers once `tx`'s receiver is gone, until
/// `finished` fires. Returns at once when the build finishes first.
pub async fn stop_on_disconnect<T>(
    tx: mpsc::Sender<T>,
    runtime: Runtime,
    mut finished: oneshot::Receiver<()>,
) {
    tokio::select! {
        _ = tx.closed() => {}
        _ = &mut finished => return,
    }
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || {
        // Empty: not fired yet; Closed: the build is over (fired or dropped).
        while finished.try_recv() == Err(oneshot::error::TryRecvError::Empty) {
            kill_all(&runtime);
            std::thread::sleep(POLL);
        }
    })
    .await;
}

/// SIGKILLs every container in the runtime's state directory.
fn kill_all(rt: &Runtime) {
    let Ok(entries) = std::fs::read_dir(&rt.state_root) else {
        return; // no RUN has started yet
    };
    for e in entries.flatten() {
        let id = e.file_name();
        let Some(id) = id.to_str() else { continue };
        kill(rt, &rt.state_root, id);
    }
}

fn kill(rt: &Runtime, root: &Path, id: &str) {
    let _ = Command::new(&rt.binary)
        .arg("--root")
        .arg(root)
        .args(["kill", id, "KILL"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes the build's (now empty) state directory.
pub fn cleanup(rt: &Runtime) {
    let _ = std::fs::remove_dir(&rt.state_root);
}
