//! The containerd task service (`containerd.task.v2.Task`) on top of the berth CLI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, ExecProcessRequest, KillRequest, Options, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::protos::api::{CheckpointTaskRequest, Empty};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{warn, ExitSignal, Task, TtrpcContext, TtrpcResult};
use serde::{Deserialize, Serialize};

use crate::berth::{self, Berth, BerthError};
use crate::cgroup::{load_cgroup, spawn_oom_watcher};
use crate::container::{Container, Process, Shared, State, Status};
use crate::events::EventQueue;
use crate::metrics;
use crate::rootfs::{mount_all, unmount};
use crate::stdio::{self, StdioPaths};

/// Where Create records which berth it used, so `containerd-shim-berth-v2 delete` (run
/// after this shim died) cleans up with the same binary and root.
pub const RUNTIME_FILE: &str = "berth-runtime.json";

#[derive(Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub binary: PathBuf,
    pub root: PathBuf,
}

/// Type names of the runc shim's messages (spelled out, see metrics::V1_METRICS).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

pub struct Service {
    shared: Arc<Shared>,
    namespace: String,
    exit: Arc<ExitSignal>,
}

fn status(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

/// Maps a failure to the gRPC code containerd's errdefs understand (same substrings
/// containerd matches in runc's log).
fn to_ttrpc(e: anyhow::Error) -> ttrpc::Error {
    let msg = format!("{e:#}");
    let code = if e.downcast_ref::<BerthError>().is_some()
        && (msg.contains("does not exist")
            || msg.contains("container not running")
            || msg.contains("no such process"))
    {
        Code::NOT_FOUND
    } else {
        Code::UNKNOWN
    };
    status(code, msg)
}

fn not_found(what: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("{what}: not found"))
}

fn container<'a>(st: &'a mut State, id: &str) -> TtrpcResult<&'a mut Container> {
    match st.container.as_mut() {
        Some(c) if c.id == id => Ok(c),
        _ => Err(not_found(&format!("container {id}"))),
    }
}

fn process<'a>(c: &'a mut Container, exec_id: &str) -> TtrpcResult<&'a mut Process> {
    c.processes
        .get_mut(exec_id)
        .ok_or_else(|| not_found(&format!("process {exec_id}")))
}

fn task_status(s: Status) -> TaskStatus {
    match s {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
}

/// `containerd.runc.v1.Options` (BinaryName, Root) if containerd passed them.
fn runtime_options(any: Option<&Any>) -> anyhow::Result<Options> {
    match any {
        Some(a) if a.type_url.ends_with(RUNC_OPTIONS) => {
            Options::parse_from_bytes(&a.value).context("decode runtime options")
        }
        _ => Ok(Options::default()),
    }
}

impl Service {
    pub fn new(events: EventQueue, namespace: String, exit: Arc<ExitSignal>) -> Service {
        let shared = Shared::new(events);
        shared.start_exit_monitor();
        Service {
            shared,
            namespace,
            exit,
        }
    }

    fn create_container(&self, req: &CreateTaskRequest) -> anyhow::Result<Container> {
        let opts = runtime_options(req.options.as_ref())?;
        let bundle = PathBuf::from(&req.bundle);
        let berth = Berth {
            binary: berth::find_binary(&opts.binary_name)?,
            root: if opts.root.is_empty() {
                berth::default_root(&self.namespace)
            } else {
                Path::new(&opts.root).join(&self.namespace)
            },
            log: bundle.join("log.json"),
        };
        let record = RuntimeRecord {
            binary: berth.binary.clone(),
            root: berth.root.clone(),
        };
        std::fs::write(bundle.join(RUNTIME_FILE), serde_json::to_vec(&record)?)
            .context("record runtime")?;
        let rootfs = if req.rootfs.is_empty() {
            None
        } else {
            let target = bundle.join("rootfs");
            if let Err(e) = mount_all(&req.rootfs, &target) {
                unmount(&target);
                return Err(e);
            }
            Some(target)
        };
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let pid_file = bundle.join("init.pid");
        let created = (|| {
            let (child, pending) = stdio::prepare(&paths)?;
            let console = pending.console.as_ref().map(|c| c.path().to_path_buf());
            berth.create(&req.id, &bundle, &pid_file, console.as_deref(), child)?;
            let io = pending.finish();
            let io = match io {
                Ok(io) => io,
                Err(e) => {
                    let _ = berth.delete(&req.id, true);
                    return Err(e);
                }
            };
            let pid = berth::read_pid(&pid_file)?;
            anyhow::Ok((io, pid))
        })();
        let (io, pid) = match created {
            Ok(v) => v,
            Err(e) => {
                if let Some(r) = &rootfs {
                    unmount(r);
                }
                return Err(e);
            }
        };
        let cgroup = match load_cgroup(&berth.root, &req.id) {
            Ok(cg) => Some(cg),
            Err(e) => {
                warn!("no cgroup for {}: {e:#}", req.id);
                None
            }
        };
        let mut init = Process::new("", paths);
        init.pid = pid;
        init.io = io;
        Ok(Container {
            id: req.id.clone(),
            bundle,
            berth,
            rootfs,
            cgroup,
            processes: HashMap::from([(String::new(), init)]),
        })
    }

    fn start_exec(c: &mut Container, exec_id: &str) -> anyhow::Result<u32> {
        let (paths, spec) = {
            let p = c
                .processes
                .get(exec_id)
                .ok_or_else(|| anyhow!("exec {exec_id} not found"))?;
            (p.stdio.clone(), p.spec.clone())
        };
        let spec_file = c.bundle.join(format!(".{exec_id}.process.json"));
        std::fs::write(&spec_file, &spec)
            .with_context(|| format!("write {}", spec_file.display()))?;
        let pid_file = c.bundle.join(format!("{exec_id}.pid"));
        let result = (|| {
            let (child, pending) = stdio::prepare(&paths)?;
            let console = pending.console.as_ref().map(|s| s.path().to_path_buf());
            c.berth
                .exec(&c.id, &spec_file, &pid_file, console.as_deref(), child)?;
            let io = pending.finish()?;
            let pid = berth::read_pid(&pid_file)?;
            anyhow::Ok((io, pid))
        })();
        let _ = std::fs::remove_file(&spec_file);
        let (io, pid) = result?;
        if let Some(p) = c.processes.get_mut(exec_id) {
            p.io = io;
            p.pid = pid;
            p.status = Status::Running;
        }
        Ok(pid)
    }
}

impl Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let mut st = self.shared.lock();
        if st.container.is_some() {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {} already exists in this shim", req.id),
            ));
        }
        let c = self.create_container(&req).map_err(to_ttrpc)?;
        let pid = c.processes.get("").map_or(0, |p| p.pid);
        if let Some(cg) = &c.cgroup {
            spawn_oom_watcher(cg, c.id.clone(), Arc::clone(&self.shared));
        }
        self.shared.events.send(
            TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid,
                ..Default::default()
            }),
        );
        st.container = Some(c);
        self.shared.claim_early_exit(&mut st, pid);
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let p = process(c, &req.exec_id)?;
        if p.status != Status::Created || (p.pid != 0 && !req.exec_id.is_empty()) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("process {} is not in the created state", req.exec_id),
            ));
        }
        let pid = if req.exec_id.is_empty() {
            c.berth.start(&c.id).map_err(to_ttrpc)?;
            let p = process(c, "")?;
            p.status = Status::Running;
            let pid = p.pid;
            self.shared.events.send(
                TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
            pid
        } else {
            let pid = Self::start_exec(c, &req.exec_id).map_err(to_ttrpc)?;
            self.shared.events.send(
                TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
            pid
        };
        self.shared.claim_early_exit(&mut st, pid);
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let bundle = c.bundle.display().to_string();
        let p = process(c, &req.exec_id)?;
        Ok(StateResponse {
            id: req.id.clone(),
            bundle,
            pid: p.pid,
            status: task_status(p.status).into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: p.exit_status,
            exited_at: p.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let pids = c.berth.ps(&c.id).map_err(to_ttrpc)?;
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            let exec = c
                .processes
                .values()
                .find(|p| p.pid == pid && !p.exec_id.is_empty());
            let info = match exec {
                Some(p) => {
                    let details = ProcessDetails {
                        exec_id: p.exec_id.clone(),
                        ..Default::default()
                    };
                    Some(Any {
                        type_url: PROCESS_DETAILS.to_string(),
                        value: details
                            .write_to_bytes()
                            .map_err(|e| status(Code::INTERNAL, e))?,
                        ..Default::default()
                    })
                }
                None => None,
            };
            processes.push(ProcessInfo {
                pid,
                info: info.into(),
                ..Default::default()
            });
        }
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        c.berth.pause(&c.id).map_err(to_ttrpc)?;
        process(c, "")?.status = Status::Paused;
        self.shared.events.send(
            TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        c.berth.resume(&c.id).map_err(to_ttrpc)?;
        process(c, "")?.status = Status::Running;
        self.shared.events.send(
            TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(status(
            Code::UNIMPLEMENTED,
            "checkpoint is not supported by berth",
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let p = process(c, &req.exec_id)?;
        if p.status == Status::Stopped {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        }
        if req.exec_id.is_empty() {
            c.berth.kill(&c.id, req.signal, req.all).map_err(to_ttrpc)?;
        } else {
            if p.pid == 0 {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} was not started", req.exec_id),
                ));
            }
            // The raw number: nix's Signal has no real-time signals
            // (SIGRTMIN+3 is a systemd container's stop signal).
            // SAFETY: kill has no memory-safety preconditions.
            let sent = unsafe { libc::kill(p.pid as i32, req.signal as i32) };
            nix::errno::Errno::result(sent).map_err(|e| match e {
                nix::errno::Errno::EINVAL => status(
                    Code::INVALID_ARGUMENT,
                    format!("invalid signal {}", req.signal),
                ),
                nix::errno::Errno::ESRCH => status(Code::NOT_FOUND, "process already finished"),
                e => status(Code::UNKNOWN, format!("kill exec {}: {e}", req.exec_id)),
            })?;
        }
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        if c.processes.contains_key(&req.exec_id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("exec {} already exists", req.exec_id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let mut p = Process::new(
            &req.exec_id,
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        );
        p.spec = spec;
        c.processes.insert(req.exec_id.clone(), p);
        self.shared.events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let p = process(c, &req.exec_id)?;
        p.io.resize(req.width, req.height)
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("{e:#}")))?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let p = process(c, &req.exec_id)?;
        if req.stdin {
            p.io.close_stdin();
        }
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        // containerd marshals specs.LinuxResources (not a proto type) as JSON inside the Any.
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "update without resources"))?;
        c.berth.update(&c.id, &resources).map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut st = self.shared.lock();
        loop {
            let c = container(&mut st, &req.id)?;
            let p = process(c, &req.exec_id)?;
            if p.status == Status::Stopped {
                return Ok(WaitResponse {
                    exit_status: p.exit_status,
                    exited_at: p.exited_at.clone().into(),
                    ..Default::default()
                });
            }
            st = self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let cg = c
            .cgroup
            .as_ref()
            .ok_or_else(|| status(Code::NOT_FOUND, "container has no cgroup"))?;
        let stats = metrics::collect(cg).map_err(to_ttrpc)?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let mut st = self.shared.lock();
        let task_pid = match st.container.as_mut() {
            Some(c) if c.id == req.id => c.processes.get("").map_or(0, |p| p.pid),
            _ => 0,
        };
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> TtrpcResult<containerd_shim::api::DeleteResponse> {
        let mut st = self.shared.lock();
        let c = container(&mut st, &req.id)?;
        let p = process(c, &req.exec_id)?;
        let (pid, exit_status, exited_at, state) =
            (p.pid, p.exit_status, p.exited_at.clone(), p.status);
        if matches!(state, Status::Running | Status::Paused) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("process {} is still running", req.exec_id),
            ));
        }
        if req.exec_id.is_empty() {
            // A never-started container still has its init blocked in create: force.
            if let Err(e) = c.berth.delete(&c.id, state == Status::Created) {
                if !format!("{e:#}").contains("does not exist") {
                    return Err(to_ttrpc(e));
                }
            }
            if let Some(r) = &c.rootfs {
                unmount(r);
            }
            self.shared.events.send(
                TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    container_id: req.id.clone(),
                    pid,
                    exit_status,
                    exited_at: exited_at.clone().into(),
                    id: req.id.clone(),
                    ..Default::default()
                }),
            );
            st.container = None;
        } else {
            c.processes.remove(&req.exec_id);
            let _ = std::fs::remove_file(c.bundle.join(format!("{}.pid", req.exec_id)));
        }
        self.shared.cond.notify_all();
        Ok(containerd_shim::api::DeleteResponse {
            pid,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        // Only once the container was deleted (as containerd-shim-runc-v2 does), unless
        // containerd insists (`now`, when it gives up on the task).
        if req.now || self.shared.lock().container.is_none() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn type_names_match_the_protos() {
        assert_eq!(Options::descriptor().full_name(), RUNC_OPTIONS);
        assert_eq!(ProcessDetails::descriptor().full_name(), PROCESS_DETAILS);
    }

    #[test]
    fn runtime_options_are_read_only_from_runc_options() {
        let opts = Options {
            binary_name: "/opt/berth".into(),
            root: "/run/b".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: RUNC_OPTIONS.into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let got = runtime_options(Some(&any)).unwrap();
        assert_eq!(got.binary_name, "/opt/berth");
        assert_eq!(got.root, "/run/b");
        let other = Any {
            type_url: "something.Else".into(),
            value: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(runtime_options(Some(&other)).unwrap().binary_name, "");
        assert_eq!(runtime_options(None).unwrap().binary_name, "");
    }
}
