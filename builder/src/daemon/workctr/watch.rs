//! Stopping a working-container run whose caller is gone: the client
//! cancelled the call, its connection dropped, or its deadline passed.
//!
//! `run` starts the process in the foreground through the OCI runtime and
//! knows nothing of the call, so a watcher per run kills the process
//! through the runtime (`kill ID KILL`, repeated until the run returns: it
//! may not have started the process yet). The run then removes the
//! runtime's state, its bundle and mount stubs as after any run.
//!
//! The deadline is enforced here too, not only by the client: gRPC clients
//! built on tonic bound only the wait for response headers, so a streaming
//! call past its `grpc-timeout` would otherwise run on.
use crate::exec::run::Runtime;
use crate::store::Store;
use crate::workctr::Container;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataMap;

/// How often the process is killed again after the caller went away.
const KILL_POLL: Duration = Duration::from_millis(200);

/// The caller's deadline from gRPC's `grpc-timeout` header (at most 8
/// digits, then H, M, S, m, u or n), if it sent a valid one.
pub fn deadline(meta: &MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A run's watcher, from the run's side.
pub struct Watch {
    /// Dropped once the run is over (while the container is still locked,
    /// so no later run with the same runtime id gets killed).
    finished: oneshot::Sender<()>,
    /// Set when the caller's deadline stopped the run.
    pub expired: Arc<AtomicBool>,
    /// Set once the run holds the container's lock: before that, the
    /// runtime id may be another run's (one still holding the container),
    /// which must not be killed for this caller.
    holding: Arc<AtomicBool>,
    /// Held by the watcher while it kills: the run waits for a kill in
    /// flight before it frees the container (and its runtime id).
    kills: Arc<Mutex<()>>,
}

impl Watch {
    /// Runs `f` on container `name` once it is free (one operation holds
    /// its lock at a time), unless the caller is gone by then (`gone`, or
    /// the deadline passed); the watcher kills only while the container is
    /// this run's, so neither an earlier run of it nor a later one.
    pub fn run_in<T>(
        self,
        store: &Store,
        name: &str,
        gone: impl Fn() -> bool,
        f: impl FnOnce(&Store, &mut Container) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut c = Container::open(store, name)?;
        if gone() || self.expired.load(Ordering::SeqCst) {
            anyhow::bail!("the caller went away before the container was free");
        }
        self.holding.store(true, Ordering::SeqCst);
        let res = f(store, &mut c);
        drop(self.finished);
        drop(self.kills.lock().unwrap_or_else(|e| e.into_inner()));
        drop(c);
        res
    }
}

/// Watches the run of container `name` (runtime id `id`) whose events go to
/// `tx`: once the receiver is dropped or `deadline` passes, kills its
/// process while it runs (see [`Watch::run_in`]).
pub fn watch<T: Send + 'static>(
    tx: mpsc::Sender<T>,
    runtime: Runtime,
    name: String,
    id: String,
    deadline: Option<Duration>,
) -> Watch {
    let (finished, mut finished_rx) = oneshot::channel::<()>();
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let holding = Arc::new(AtomicBool::new(false));
    let ours = holding.clone();
    let kills = Arc::new(Mutex::new(()));
    let killing = kills.clone();
    // A plain thread times the deadline; it ends early (disconnected) when
    // the watcher returns and drops `_cancel`.
    let (fire, mut fired) = oneshot::channel::<()>();
    let (_cancel, cancelled) = std::sync::mpsc::channel::<()>();
    if let Some(d) = deadline {
        std::thread::spawn(move || {
            if cancelled.recv_timeout(d) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                let _ = fire.send(());
            }
        });
    }
    tokio::spawn(async move {
        let _cancel = _cancel;
        let why = tokio::select! {
            // A run that is over is not stopped, even if its client left too.
            biased;
            _ = &mut finished_rx => return,
            _ = tx.closed() => "the client went away",
            Ok(()) = &mut fired => {
                flag.store(true, Ordering::SeqCst);
                "the client's deadline passed"
            }
        };
        drop(tx);
        eprintln!("berth-buildd: run in working container {name}: {why}: killing its process");
        let _ = tokio::task::spawn_blocking(move || {
            loop {
                {
                    let _killing = killing.lock().unwrap_or_else(|e| e.into_inner());
                    // Empty: the run goes on; Closed: it is over.
                    if finished_rx.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                        break;
                    }
                    if ours.load(Ordering::SeqCst) {
                        let _ = Command::new(&runtime.binary)
                            .arg("--root")
                            .arg(&runtime.state_root)
                            .args(["kill", &id, "KILL"])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
                std::thread::sleep(KILL_POLL);
            }
            eprintln!("berth-buildd: run in working container {name} stopped and cleaned up");
        })
        .await;
    });
    Watch {
        finished,
        expired,
        holding,
        kills,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(deadline(&meta("5S")), Some(Duration::from_secs(5)));
        assert_eq!(deadline(&meta("1500m")), Some(Duration::from_millis(1500)));
        assert_eq!(deadline(&meta("2H")), Some(Duration::from_secs(7200)));
        assert_eq!(deadline(&meta("3M")), Some(Duration::from_secs(180)));
        assert_eq!(deadline(&meta("7u")), Some(Duration::from_micros(7)));
        assert_eq!(deadline(&meta("9n")), Some(Duration::from_nanos(9)));
        assert_eq!(deadline(&meta("123456789S")), None, "9 digits");
        assert_eq!(deadline(&meta("S")), None);
        assert_eq!(deadline(&meta("5s")), None);
        assert_eq!(deadline(&meta("-5S")), None);
        assert_eq!(deadline(&MetadataMap::new()), None);
    }
}
