//! The working-container commands against berth-buildd (`--addr`), over the
//! `WorkingContainers` gRPC service (proto/working.proto). `run` streams the
//! process's output (stdin empty); `run -i` passes stdin on and `run -t`
//! also gives the process a terminal (RunInteractive), this terminal raw.
use super::cli::WorkCommand;
use anyhow::{bail, Context, Result};
use berth_proto::v1::working_containers_client::WorkingContainersClient;
use berth_proto::v1::{self as pb, run_event};
use std::io::Write;
use tonic::transport::Channel;

fn connect(rt: &tokio::runtime::Runtime, addr: &str) -> Result<WorkingContainersClient<Channel>> {
    Ok(WorkingContainersClient::new(crate::client::channel(
        rt, addr,
    )?))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// Runs `cmd` on the daemon at `addr`; returns the exit code.
pub fn dispatch(addr: &str, cmd: WorkCommand) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c = connect(&rt, addr)?;
    match cmd {
        WorkCommand::From { image, name } => {
            let r = rt
                .block_on(c.from(pb::FromRequest {
                    image,
                    name: name.unwrap_or_default(),
                }))
                .map_err(status)?;
            println!("{}", r.into_inner().name);
        }
        WorkCommand::Containers { quiet } => {
            let all = rt
                .block_on(c.list_containers(pb::Empty {}))
                .map_err(status)?
                .into_inner()
                .containers;
            let rows = all
                .into_iter()
                .map(|i| super::cli::Row {
                    name: i.name,
                    image: i.image,
                    image_digest: i.image_digest,
                    created: i.created,
                })
                .collect();
            super::cli::print_containers(rows, quiet);
        }
        WorkCommand::Rm { names } => {
            for n in names {
                rt.block_on(c.remove_container(pb::ContainerRef { name: n.clone() }))
                    .map_err(status)?;
                println!("{n}");
            }
        }
        WorkCommand::Run(a) => {
            let o = &a.overrides;
            let req = pb::RunRequest {
                name: a.name.clone(),
                args: a.command.clone(),
                env: o.env.clone(),
                volumes: o.volume.clone(),
                workdir: o.workdir.clone().unwrap_or_default(),
                user: o.user.clone().unwrap_or_default(),
                hostname: o.hostname.clone().unwrap_or_default(),
                network: a.network.clone(),
            };
            if o.tty || a.interactive {
                return run_interactive(&rt, &mut c, req, o.tty);
            }
            let mut stream = rt.block_on(c.run(req)).map_err(status)?.into_inner();
            let mut code = None;
            while let Some(ev) = rt.block_on(stream.message()).map_err(status)? {
                if let Some(c) = write_event(ev)? {
                    code = Some(c);
                }
            }
            return code.context("berth-buildd ended the run without an exit code");
        }
        WorkCommand::Commit {
            name,
            image,
            message,
            author,
            change,
        } => {
            let r = rt
                .block_on(c.commit(pb::CommitRequest {
                    name,
                    image: image.unwrap_or_default(),
                    message: message.unwrap_or_default(),
                    author: author.unwrap_or_default(),
                    changes: change,
                }))
                .map_err(status)?;
            println!("{}", r.into_inner().digest);
        }
        WorkCommand::Diff { name } => {
            let r = rt
                .block_on(c.diff(pb::ContainerRef { name }))
                .map_err(status)?;
            for ch in r.into_inner().changes {
                println!("{} {}", ch.kind, ch.path);
            }
        }
        WorkCommand::Export { name, output } => {
            let mut stream = rt
                .block_on(c.export_container(pb::ContainerRef { name }))
                .map_err(status)?
                .into_inner();
            let dir = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            while let Some(chunk) = rt.block_on(stream.message()).map_err(status)? {
                tmp.write_all(&chunk.data)?;
            }
            tmp.persist(&output)
                .with_context(|| format!("writing {}", output.display()))?;
        }
        WorkCommand::Import {
            archive,
            image,
            message,
            change,
        } => {
            let digest = import(&rt, &mut c, &archive, image, message, change)?;
            println!("{digest}");
        }
        WorkCommand::Cp { source, dest } => {
            use super::copy::{parse_endpoint, Endpoint};
            match (parse_endpoint(&source), parse_endpoint(&dest)) {
                (Endpoint::Container { name, path }, Endpoint::Host(h)) => {
                    copy_out(&rt, &mut c, name, path, &h)?
                }
                (Endpoint::Host(h), Endpoint::Container { name, path }) => {
                    copy_in(&rt, &mut c, &h, name, path)?
                }
                _ => bail!("cp wants exactly one side as NAME:PATH"),
            }
        }
    }
    Ok(0)
}

/// Writes a run's output event where it belongs; the exit code if it is one.
fn write_event(ev: pb::RunEvent) -> Result<Option<i32>> {
    match ev.event {
        Some(run_event::Event::Stdout(d)) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&d)?;
            out.flush()?;
        }
        Some(run_event::Event::Stderr(d)) => std::io::stderr().write_all(&d)?,
        Some(run_event::Event::ExitCode(c)) => return Ok(Some(c)),
        None => {}
    }
    Ok(None)
}

/// `run -i` / `run -t` over RunInteractive: this process's stdin goes to
/// the remote process; with `tty` it gets a terminal of this terminal's
/// size, this terminal goes raw (restored on every way out: return, error,
/// the signals below, panic) and its resizes are forwarded. Like the local
/// `run -t`, `-t` passes stdin on whether or not `-i` is given; unlike it,
/// stdin must then be a terminal (Docker's rule for `-it`).
fn run_interactive(
    rt: &tokio::runtime::Runtime,
    c: &mut WorkingContainersClient<Channel>,
    options: pb::RunRequest,
    tty: bool,
) -> Result<i32> {
    use super::terminal;
    use berth_proto::v1::run_input::Input;
    use std::os::fd::AsFd;
    use tokio::signal::unix::{signal, SignalKind};
    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    // A terminal fed from a pipe has no reliable end: the ^D the daemon
    // types at EOF is a NUL byte to a shell that has not yet set up its
    // line discipline, and the run never ends. Docker refuses it too.
    if tty && terminal::size(stdin_fd).is_none() {
        anyhow::bail!("the input device is not a TTY (run -t needs a terminal on stdin; use -i for piped input)");
    }
    let local_size =
        || terminal::size(stdin_fd).or_else(|| terminal::size(std::io::stdout().as_fd()));
    let pb_size = |(rows, cols): terminal::Size| pb::TerminalSize {
        rows: rows.into(),
        cols: cols.into(),
    };
    let input = |i: Input| pb::RunInput { input: Some(i) };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let start = pb::RunStart {
        options: Some(options),
        tty,
        size: if tty { local_size().map(pb_size) } else { None },
    };
    tx.try_send(input(Input::Start(start)))
        .map_err(|_| anyhow::anyhow!("queueing the run's start"))?;
    // Blocking reads of stdin on their own thread; stdin's end (or an
    // error reading it) becomes close_stdin.
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 32 << 10];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin_tx
                        .blocking_send(input(Input::Stdin(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = stdin_tx.blocking_send(input(Input::CloseStdin(true)));
    });
    // With tty, stdin was checked to be a terminal above.
    let _raw = match tty {
        true => Some(terminal::RawMode::enable(stdin_fd)?),
        false => None,
    };
    rt.block_on(async move {
        let mut winch = signal(SignalKind::window_change())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut events = c
            .run_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(status)?
            .into_inner();
        let mut code = None;
        loop {
            // Returning drops the call: berth-buildd kills the process.
            tokio::select! {
                ev = events.message() => match ev.map_err(status)? {
                    // The exit code is the last event: done, even if the
                    // daemon's end of the stream stays open a little longer.
                    Some(ev) => if let Some(c) = write_event(ev)? { code = Some(c); break },
                    None => break,
                },
                _ = winch.recv() => {
                    if let Some(s) = local_size().filter(|_| tty) {
                        let _ = tx.send(input(Input::Resize(pb_size(s)))).await;
                    }
                }
                _ = int.recv() => return Ok(128 + libc::SIGINT),
                _ = term.recv() => return Ok(128 + libc::SIGTERM),
                _ = hup.recv() => return Ok(128 + libc::SIGHUP),
            }
        }
        code.context("berth-buildd ended the run without an exit code")
    })
}

/// Streams `archive` to ImportRootfs: options first, then 1 MiB chunks.
fn import(
    rt: &tokio::runtime::Runtime,
    c: &mut WorkingContainersClient<Channel>,
    archive: &std::path::Path,
    image: Option<String>,
    message: Option<String>,
    changes: Vec<String>,
) -> Result<String> {
    use berth_proto::v1::import_rootfs_request::{Options, Part};
    use std::io::Read;
    let mut f =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = pb::ImportRootfsRequest {
        part: Some(Part::Options(Options {
            image: image.unwrap_or_default(),
            message: message.unwrap_or_default(),
            changes,
            source: archive.display().to_string(),
        })),
    };
    tx.blocking_send(first).ok();
    let reader = std::thread::spawn(move || -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).context("reading the archive")?;
            if n == 0 {
                return Ok(());
            }
            let m = pb::ImportRootfsRequest {
                part: Some(Part::Chunk(buf[..n].to_vec())),
            };
            if tx.blocking_send(m).is_err() {
                return Ok(());
            }
        }
    });
    let r = rt.block_on(c.import_rootfs(tokio_stream::wrappers::ReceiverStream::new(rx)));
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("archive reader panicked"))??;
    Ok(r.map_err(status)?.into_inner().digest)
}

/// CopyOut: the tar (one top entry) unpacked beside `dest`, then moved into
/// place with `docker cp`'s naming.
fn copy_out(
    rt: &tokio::runtime::Runtime,
    c: &mut WorkingContainersClient<Channel>,
    name: String,
    path: String,
    dest: &std::path::Path,
) -> Result<()> {
    let target = if dest.is_dir() {
        match std::path::Path::new(&path).file_name() {
            Some(n) => dest.join(n),
            None => dest.to_path_buf(),
        }
    } else {
        dest.to_path_buf()
    };
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".berth-cp-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    let mut stream = rt
        .block_on(c.copy_out(pb::ContainerPath { name, path }))
        .map_err(status)?
        .into_inner();
    let spool = tmp.path().join("out.tar");
    let mut f = std::fs::File::create(&spool)?;
    while let Some(chunk) = rt.block_on(stream.message()).map_err(status)? {
        f.write_all(&chunk.data)?;
    }
    drop(f);
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree)?;
    crate::layer::unpack(
        std::fs::File::open(&spool)?,
        &tree,
        crate::layer::UnpackMode::Apply,
    )?;
    let mut tops = std::fs::read_dir(&tree)?.collect::<std::io::Result<Vec<_>>>()?;
    if tops.len() != 1 {
        bail!("berth-buildd sent {} top entries, want one", tops.len());
    }
    let top = tops.remove(0).path();
    if target.is_dir() && top.is_dir() {
        // Merged into an existing directory, as `docker cp` does.
        for e in std::fs::read_dir(&top)? {
            let e = e?;
            let to = target.join(e.file_name());
            if to.is_dir() {
                std::fs::remove_dir_all(&to)?;
            }
            std::fs::rename(e.path(), &to).with_context(|| format!("writing {}", to.display()))?;
        }
    } else {
        if target.is_dir() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(&top, &target).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// CopyIn: `src` as a tar whose single top entry carries its base name.
fn copy_in(
    rt: &tokio::runtime::Runtime,
    c: &mut WorkingContainersClient<Channel>,
    src: &std::path::Path,
    name: String,
    path: String,
) -> Result<()> {
    use berth_proto::v1::copy_in_request::Part;
    let base = src
        .file_name()
        .with_context(|| format!("{} has no final name", src.display()))?
        .to_os_string();
    let meta =
        std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&base, src)
    } else {
        b.append_path_with_name(src, &base)
    }
    .with_context(|| format!("reading {}", src.display()))?;
    let data = b.into_inner()?;
    let mut msgs = vec![pb::CopyInRequest {
        part: Some(Part::Options(pb::ContainerPath { name, path })),
    }];
    msgs.extend(data.chunks(1 << 20).map(|d| pb::CopyInRequest {
        part: Some(Part::Chunk(d.to_vec())),
    }));
    rt.block_on(c.copy_in(tokio_stream::iter(msgs)))
        .map_err(status)?;
    Ok(())
}
