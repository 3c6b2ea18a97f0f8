//! The `berth.builder.v1.WorkingContainers` service (proto/working.proto):
//! [`crate::workctr`] on the daemon's store, for clients without a local
//! store. `Run` streams output; `RunInteractive` also takes stdin and can
//! give the process a terminal (a pty in the daemon, see
//! [`workctr::terminal_stdio`]). Either kills its process when the client
//! goes away.
use super::spool::{first_message, spool_into_temp};
use super::{blocking, chunk_stream, not_found_or_internal};
use crate::exec::run::Runtime;
use crate::store::Store;
use crate::workctr::terminal_stdio::{Resizer, Session};
use crate::workctr::{self, run::Overrides, Container, InvalidName, NameInUse, NoSuchContainer};
use berth_proto::v1::working_containers_server::WorkingContainers;
use berth_proto::v1::{self as pb, copy_in_request, import_rootfs_request, run_event, run_input};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use watch::Watch;

mod watch;

pub struct WorkService {
    pub store: Store,
    pub runtime: Runtime,
    /// Largest root filesystem tar `ImportRootfs` spools (--max-import-size).
    pub max_import_size: u64,
}

/// The caller's mistakes and unknown names get their own codes; the rest
/// maps as every store call does.
fn work_status(e: anyhow::Error) -> Status {
    if e.chain().any(|c| c.is::<NoSuchContainer>()) {
        Status::not_found(format!("{e:#}"))
    } else if e.chain().any(|c| c.is::<NameInUse>()) {
        Status::already_exists(format!("{e:#}"))
    } else if e.chain().any(|c| c.is::<InvalidName>()) {
        Status::invalid_argument(format!("{e:#}"))
    } else {
        not_found_or_internal(e)
    }
}

async fn work<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Status> {
    blocking(move || Ok(f())).await?.map_err(work_status)
}

fn info(s: workctr::State) -> pb::ContainerInfo {
    pb::ContainerInfo {
        name: s.name,
        image: s.image,
        image_digest: s.image_digest,
        created: s.created,
    }
}

/// How long the output of a finished run may take to drain (a process that
/// escaped with the terminal must not hold the exit code back).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Checks a run's options: (networked, overrides), or what is wrong with
/// them (INVALID_ARGUMENT).
fn run_options(r: &pb::RunRequest, tty: bool) -> Result<(bool, Overrides), String> {
    if r.args.is_empty() {
        return Err("run needs a command (args)".into());
    }
    let network_host = match r.network.as_str() {
        "" => true,
        n => workctr::run::parse_network(n).map_err(|e| e.to_string())?,
    };
    for v in &r.volumes {
        workctr::run::parse_volume(v).map_err(|e| e.to_string())?;
    }
    let o = Overrides {
        env: r.env.clone(),
        volumes: r.volumes.clone(),
        workdir: (!r.workdir.is_empty()).then(|| r.workdir.clone()),
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        hostname: (!r.hostname.is_empty()).then(|| r.hostname.clone()),
        tty,
    };
    Ok((network_host, o))
}

/// A terminal dimension as the kernel takes it.
fn cells(n: u32) -> u16 {
    n.min(u16::MAX as u32) as u16
}

fn output_event(is_err: bool, data: Vec<u8>) -> pb::RunEvent {
    let event = if is_err {
        run_event::Event::Stderr(data)
    } else {
        run_event::Event::Stdout(data)
    };
    pb::RunEvent { event: Some(event) }
}

/// Ends a run's stream: its exit code, or the error as the call's status
/// (DEADLINE_EXCEEDED when the caller's deadline stopped it).
fn send_exit(
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
    name: &str,
    res: anyhow::Result<i32>,
    expired: &AtomicBool,
) {
    let last = match res {
        _ if expired.load(Ordering::SeqCst) => Err(Status::deadline_exceeded(
            "the deadline passed: the process was killed",
        )),
        Ok(code) => Ok(pb::RunEvent {
            event: Some(run_event::Event::ExitCode(code)),
        }),
        Err(e) => {
            eprintln!("berth-buildd: run in working container {name}: {e:#}");
            Err(work_status(e))
        }
    };
    let _ = tx.blocking_send(last);
}

/// RunInteractive's input after `start`: stdin to the session's writer (its
/// end, closed on `close_stdin` or when the client ends its half), resizes
/// to the terminal.
async fn forward_input(
    mut input: Streaming<pb::RunInput>,
    stdin: mpsc::Sender<Vec<u8>>,
    resizer: Option<Resizer>,
) {
    let mut stdin = Some(stdin);
    // An error is a client gone: its run's watcher takes care of it.
    while let Ok(Some(m)) = input.message().await {
        match m.input {
            Some(run_input::Input::Stdin(data)) => {
                if let Some(s) = &stdin {
                    if s.send(data).await.is_err() {
                        stdin = None; // the process stopped reading for good
                    }
                }
            }
            Some(run_input::Input::Resize(s)) => {
                if let Some(r) = &resizer {
                    r.resize((cells(s.rows), cells(s.cols)));
                }
            }
            Some(run_input::Input::CloseStdin(_)) => stdin = None,
            Some(run_input::Input::Start(_)) | None => {}
        }
    }
}

type RunEvents = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// One checked run request (`Run` or `RunInteractive`), for the blocking
/// task that executes it: [`RunJob::run`] then [`RunJob::exit`].
struct RunJob {
    r: pb::RunRequest,
    o: Overrides,
    network_host: bool,
    store: Store,
    runtime: Runtime,
    /// The run's events (output, then the exit code or the error).
    tx: RunEvents,
    /// Taken by [`RunJob::run`].
    watch: Option<Watch>,
    expired: std::sync::Arc<AtomicBool>,
}

impl RunJob {
    /// Runs the request in its container once the container is free (see
    /// [`Watch::run_in`]), its stdio as `io` says.
    fn run(&mut self, io: workctr::run::RunIo<'_>) -> anyhow::Result<i32> {
        let watch = self.watch.take().expect("a run job runs once");
        let tx = &self.tx;
        watch.run_in(
            &self.store,
            &self.r.name,
            || tx.is_closed(),
            |store, c| {
                workctr::run::run(
                    store,
                    c,
                    &self.runtime,
                    &self.r.args,
                    &self.o,
                    self.network_host,
                    io,
                )
            },
        )
    }

    /// Ends the stream: the exit code, or the error (see [`send_exit`]).
    fn exit(self, res: anyhow::Result<i32>) {
        send_exit(&self.tx, &self.r.name, res, &self.expired);
    }
}

impl WorkService {
    /// Checks run request `r` and makes its job and event stream, or says
    /// what is wrong with it (INVALID_ARGUMENT); the job's process is killed
    /// once its caller is gone or `deadline` passed (see [`watch`]).
    fn run_job(
        &self,
        r: pb::RunRequest,
        tty: bool,
        deadline: Option<Duration>,
    ) -> Result<(RunJob, ReceiverStream<Result<pb::RunEvent, Status>>), String> {
        let (network_host, o) = run_options(&r, tty)?;
        let (tx, rx) = mpsc::channel(32);
        let watch = watch::watch(
            tx.clone(),
            self.runtime.clone(),
            r.name.clone(),
            workctr::runtime_id(&r.name),
            deadline,
        );
        let job = RunJob {
            expired: watch.expired.clone(),
            watch: Some(watch),
            r,
            o,
            network_host,
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            tx,
        };
        Ok((job, ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl WorkingContainers for WorkService {
    type RunStream = ReceiverStream<Result<pb::RunEvent, Status>>;
    type RunInteractiveStream = ReceiverStream<Result<pb::RunEvent, Status>>;
    type ExportContainerStream = ReceiverStream<Result<pb::Chunk, Status>>;
    type CopyOutStream = ReceiverStream<Result<pb::Chunk, Status>>;

    async fn from(
        &self,
        req: Request<pb::FromRequest>,
    ) -> Result<Response<pb::ContainerInfo>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let state = work(move || {
            let name = (!r.name.is_empty()).then_some(r.name.as_str());
            let name = workctr::create(&store, &r.image, name)?;
            Ok(Container::open(&store, &name)?.state)
        })
        .await?;
        Ok(Response::new(info(state)))
    }

    async fn list_containers(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let store = self.store.clone();
        let all = work(move || workctr::list(&store)).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: all.into_iter().map(info).collect(),
        }))
    }

    async fn remove_container(
        &self,
        req: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let name = req.into_inner().name;
        let (store, rt) = (self.store.clone(), self.runtime.binary.clone());
        work(move || workctr::remove(&store, &name, Some(&rt))).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn run(&self, req: Request<pb::RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let deadline = watch::deadline(req.metadata());
        let (mut job, events) = self
            .run_job(req.into_inner(), false, deadline)
            .map_err(Status::invalid_argument)?;
        tokio::task::spawn_blocking(move || {
            let out = job.tx.clone();
            let mut sink = |is_err: bool, data: Vec<u8>| {
                let _ = out.blocking_send(Ok(output_event(is_err, data)));
            };
            let res = job.run(workctr::run::RunIo::Capture(&mut sink));
            job.exit(res);
        });
        Ok(Response::new(events))
    }

    async fn run_interactive(
        &self,
        req: Request<Streaming<pb::RunInput>>,
    ) -> Result<Response<Self::RunInteractiveStream>, Status> {
        let deadline = watch::deadline(req.metadata());
        let mut input = req.into_inner();
        let start = first_message(&mut input, "start", |m: pb::RunInput| match m.input {
            Some(run_input::Input::Start(s)) => Some(s),
            _ => None,
        })
        .await?;
        let r = start.options.unwrap_or_default();
        // Checked before the session opens (and again by run_job, after it).
        run_options(&r, start.tty).map_err(Status::invalid_argument)?;
        let size = start.size.map(|s| (cells(s.rows), cells(s.cols)));
        let mut session =
            Session::open(start.tty, size).map_err(|e| Status::internal(format!("{e:#}")))?;
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        session.spawn_stdin(stdin_rx);
        let forward = tokio::spawn(forward_input(input, stdin_tx, session.resizer()));
        let (mut job, events) = self
            .run_job(r, start.tty, deadline)
            .map_err(Status::invalid_argument)?;
        tokio::task::spawn_blocking(move || {
            let out = job.tx.clone();
            // Output read after the exit code (a process that escaped with
            // the terminal) is dropped: the exit code is the last event.
            let ended = std::sync::Arc::new(AtomicBool::new(false));
            let over = ended.clone();
            let readers = session.spawn_output(move |is_err, data| {
                if !over.load(Ordering::SeqCst) {
                    let _ = out.blocking_send(Ok(output_event(is_err, data)));
                }
            });
            let terminal = session.tty();
            let res = job.run(workctr::run::RunIo::Custom {
                terminal,
                start: &mut |cmd| session.start(cmd),
            });
            // Our ends of a runtime that never started: the readers end.
            drop(session);
            // All output before the exit code; no more input.
            readers.wait(OUTPUT_DRAIN);
            ended.store(true, Ordering::SeqCst);
            forward.abort();
            job.exit(res);
        });
        Ok(Response::new(events))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let digest = work(move || {
            let c = Container::open(&store, &r.name)?;
            workctr::commit::commit(
                &store,
                &c,
                (!r.image.is_empty()).then_some(r.image.as_str()),
                &workctr::commit::CommitOptions {
                    message: Some(r.message),
                    author: Some(r.author).filter(|a| !a.is_empty()),
                    changes: r.changes,
                },
            )
        })
        .await?;
        Ok(Response::new(pb::CommitResponse { digest }))
    }

    async fn diff(
        &self,
        req: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let name = req.into_inner().name;
        let store = self.store.clone();
        let changes = work(move || {
            let c = Container::open(&store, &name)?;
            workctr::diff::changes(&c.upper(), &c.lowers(&store)?)
        })
        .await?;
        Ok(Response::new(pb::DiffResponse {
            changes: changes
                .into_iter()
                .map(|(k, path)| pb::Change {
                    kind: k.letter().to_string(),
                    path,
                })
                .collect(),
        }))
    }

    async fn export_container(
        &self,
        req: Request<pb::ContainerRef>,
    ) -> Result<Response<Self::ExportContainerStream>, Status> {
        let name = req.into_inner().name;
        let store = self.store.clone();
        let stream = chunk_stream(
            move |w| {
                let c = Container::open(&store, &name)?;
                let root = c.mount(&store)?;
                crate::layer::diff::write_tar(&root.path, w, None)?;
                Ok(())
            },
            work_status,
        );
        Ok(Response::new(stream))
    }

    async fn import_rootfs(
        &self,
        req: Request<Streaming<pb::ImportRootfsRequest>>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let mut stream = req.into_inner();
        let options = first_message(&mut stream, "options", |m: pb::ImportRootfsRequest| match m
            .part
        {
            Some(import_rootfs_request::Part::Options(o)) => Some(o),
            _ => None,
        })
        .await?;
        if !options.image.is_empty() {
            crate::store::canonical_tag(&options.image).map_err(|e| {
                Status::invalid_argument(format!("image name {:?}: {e}", options.image))
            })?;
        }
        // Spooled into the store's tmp/ (removed with `tmp` on any return).
        let (tmp, path) = spool_into_temp(
            &self.store,
            "rootfs-",
            "rootfs.tar",
            &mut stream,
            self.max_import_size,
            "the root filesystem tar",
            |m: pb::ImportRootfsRequest| match m.part {
                Some(import_rootfs_request::Part::Chunk(data)) => Some(data),
                _ => None,
            },
        )
        .await?;
        let store = self.store.clone();
        let digest = work(move || {
            let _keep = tmp;
            let source = if options.source.is_empty() {
                "-".to_string()
            } else {
                options.source
            };
            workctr::archive::import(
                &store,
                &path,
                &source,
                (!options.image.is_empty()).then_some(options.image.as_str()),
                Some(options.message),
                &options.changes,
            )
        })
        .await?;
        Ok(Response::new(pb::CommitResponse { digest }))
    }

    async fn copy_out(
        &self,
        req: Request<pb::ContainerPath>,
    ) -> Result<Response<Self::CopyOutStream>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let stream = chunk_stream(
            move |w| {
                let c = Container::open(&store, &r.name)?;
                let root = c.mount(&store)?;
                // Copied out by fd (see workctr::copy) into the daemon's
                // tmp/, then sent as a tar of that copy.
                let tmp = store.temp_dir("cp-")?;
                let base = std::path::Path::new(&r.path)
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| "root".into());
                workctr::copy::from_container(&root.path, &r.path, &tmp.path().join(&base))?;
                drop(root);
                crate::layer::diff::write_tar(tmp.path(), w, None)?;
                Ok(())
            },
            work_status,
        );
        Ok(Response::new(stream))
    }

    async fn copy_in(
        &self,
        req: Request<Streaming<pb::CopyInRequest>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let mut stream = req.into_inner();
        let dest = first_message(&mut stream, "options", |m: pb::CopyInRequest| {
            match m.part {
                Some(copy_in_request::Part::Options(o)) => Some(o),
                _ => None,
            }
        })
        .await?;
        let (tmp, path) = spool_into_temp(
            &self.store,
            "cp-",
            "in.tar",
            &mut stream,
            self.max_import_size,
            "the copied tree",
            |m: pb::CopyInRequest| match m.part {
                Some(copy_in_request::Part::Chunk(data)) => Some(data),
                _ => None,
            },
        )
        .await?;
        let store = self.store.clone();
        work(move || {
            // Unpacked safely into tmp/, then copied in by fd.
            let tree = tmp.path().join("tree");
            std::fs::create_dir(&tree)?;
            let file = std::fs::File::open(&path)?;
            crate::layer::unpack(file, &tree, crate::layer::UnpackMode::Apply)
                .map_err(|e| InvalidName(format!("the copied tar: {e:#}")))?;
            let mut tops = std::fs::read_dir(&tree)?.collect::<std::io::Result<Vec<_>>>()?;
            if tops.len() != 1 {
                return Err(
                    InvalidName("the copied tar must hold exactly one top entry".into()).into(),
                );
            }
            let top = tops.remove(0).path();
            let c = Container::open(&store, &dest.name)?;
            let root = c.mount(&store)?;
            workctr::copy::into_container(&root.path, &top, &dest.path)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }
}
