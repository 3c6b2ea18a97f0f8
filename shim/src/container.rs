//! The shim's record of its container and processes, and the exit path shared by the
//! SIGCHLD monitor and the RPCs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_cgroups::Cgroup;
use containerd_shim::monitor::{ExitEvent, Subject, Topic};
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC;
use containerd_shim::synchronous::monitor::monitor_subscribe;
use containerd_shim::{error, warn};

use crate::berth::Berth;
use crate::cgroup::Oom;
use crate::events::EventQueue;
use crate::stdio::{self, ProcessIo, StdioPaths};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

pub struct Process {
    /// "" for the init process.
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub exit_status: u32,
    pub exited_at: Option<Timestamp>,
    pub stdio: StdioPaths,
    pub io: ProcessIo,
    /// The exec's OCI process JSON, kept until Start.
    pub spec: Vec<u8>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::Created,
            exit_status: 0,
            exited_at: None,
            stdio,
            io: ProcessIo::default(),
            spec: Vec::new(),
        }
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub berth: Berth,
    pub rootfs: Option<PathBuf>,
    pub cgroup: Option<Cgroup>,
    pub processes: HashMap<String, Process>,
}

#[derive(Default)]
pub struct State {
    pub container: Option<Container>,
    /// Exits of pids not (yet) known as a process, with when they were seen.
    early_exits: HashMap<u32, (i32, Instant)>,
}

impl State {
    fn remember(&mut self, pid: u32, code: i32) {
        // Most unknown pids are berth CLI runs; forget them after a while.
        let now = Instant::now();
        self.early_exits
            .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        self.early_exits.insert(pid, (code, now));
    }
}

/// State shared by the RPC handlers and the exit monitor.
pub struct Shared {
    state: Mutex<State>,
    pub cond: Condvar,
    pub events: EventQueue,
    pub oom: Oom,
}

impl Shared {
    pub fn new(events: EventQueue) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            events,
            oom: Oom::default(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the SIGCHLD reaper's exit reports for the lifetime of the shim.
    pub fn start_exit_monitor(self: &Arc<Self>) {
        let sub = match monitor_subscribe(Topic::Pid) {
            Ok(s) => s,
            Err(e) => {
                error!("subscribe to exits: {e}");
                return;
            }
        };
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("exits".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                for ev in sub.rx.iter() {
                    if let ExitEvent {
                        subject: Subject::Pid(pid),
                        exit_code,
                    } = ev
                    {
                        if let Ok(pid) = u32::try_from(pid) {
                            shared.process_exited(pid, exit_code);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            error!("spawn exit monitor: {e}");
        }
    }

    /// Records an exit: waits for the process's output to drain, marks it stopped, queues
    /// `/tasks/exit` and wakes Wait callers.
    pub fn process_exited(&self, pid: u32, code: i32) {
        let done = {
            let mut st = self.lock();
            let Some(p) = st.container.as_mut().and_then(|c| running_by_pid(c, pid)) else {
                st.remember(pid, code);
                return;
            };
            p.io.take_output_done()
        };
        stdio::wait_output(done);
        let mut st = self.lock();
        let Some(c) = st.container.as_mut() else {
            return;
        };
        let cid = c.id.clone();
        let Some(p) = running_by_pid(c, pid) else {
            return;
        };
        // SIGKILLed: if by the OOM killer, its /tasks/oom must come first.
        if code == 128 + libc::SIGKILL {
            self.oom.drain(&cid, &self.events);
        }
        p.status = Status::Stopped;
        p.exit_status = code as u32;
        p.exited_at = Some(Timestamp::now());
        p.io.close();
        let id = if p.exec_id.is_empty() {
            cid.clone()
        } else {
            p.exec_id.clone()
        };
        self.events.send(
            TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: cid,
                id,
                pid,
                exit_status: p.exit_status,
                exited_at: p.exited_at.clone().into(),
                ..Default::default()
            }),
        );
        self.cond.notify_all();
    }

    /// Called right after a pid became known: delivers an exit the monitor saw first.
    pub fn claim_early_exit(self: &Arc<Self>, st: &mut State, pid: u32) {
        if let Some((code, _)) = st.early_exits.remove(&pid) {
            warn!("pid {pid} exited before it was registered");
            let shared = Arc::clone(self);
            // Not inline: the caller holds the state lock and has queued its own event first.
            if let Err(e) = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || shared.process_exited(pid, code))
            {
                error!("spawn early exit: {e}");
            }
        }
    }
}

fn running_by_pid(c: &mut Container, pid: u32) -> Option<&mut Process> {
    c.processes
        .values_mut()
        .find(|p| p.pid == pid && p.status != Status::Stopped)
}
