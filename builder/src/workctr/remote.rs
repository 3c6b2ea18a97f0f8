//! The working-container commands against berth-buildd (`--addr`), over the
//! `WorkingContainers` gRPC service (proto/working.proto). `run` streams the
//! process's output (no terminal, stdin empty); `cp` and `import` need the
//! local store.
use super::cli::WorkCommand;
use anyhow::{bail, Context, Result};
use berth_proto::v1::working_containers_client::WorkingContainersClient;
use berth_proto::v1::{self as pb, run_event};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint, Uri};

fn connect(rt: &tokio::runtime::Runtime, addr: &str) -> Result<WorkingContainersClient<Channel>> {
    let Some(path) = addr.strip_prefix("unix://") else {
        bail!("unsupported address {addr:?}: want unix:///path/to/buildd.sock");
    };
    let path = PathBuf::from(path);
    let channel = rt
        .block_on(async {
            Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
        })
        .with_context(|| format!("connecting to berth-buildd at {addr}"))?;
    Ok(WorkingContainersClient::new(channel))
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
            if o.tty {
                bail!("-t needs the local store: a terminal is not carried over --addr");
            }
            let mut stream = rt
                .block_on(c.run(pb::RunRequest {
                    name: a.name.clone(),
                    args: a.command.clone(),
                    env: o.env.clone(),
                    volumes: o.volume.clone(),
                    workdir: o.workdir.clone().unwrap_or_default(),
                    user: o.user.clone().unwrap_or_default(),
                    hostname: o.hostname.clone().unwrap_or_default(),
                    network: a.network.clone(),
                }))
                .map_err(status)?
                .into_inner();
            let mut code = None;
            while let Some(ev) = rt.block_on(stream.message()).map_err(status)? {
                match ev.event {
                    Some(run_event::Event::Stdout(d)) => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&d)?;
                        out.flush()?;
                    }
                    Some(run_event::Event::Stderr(d)) => std::io::stderr().write_all(&d)?,
                    Some(run_event::Event::ExitCode(c)) => code = Some(c),
                    None => {}
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
        WorkCommand::Cp { .. } => {
            bail!("cp needs the local store (not available with --addr)")
        }
    }
    Ok(0)
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
