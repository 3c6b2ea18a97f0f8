//! The gRPC backend: the same commands, executed by berth-buildd.
use super::{Backend, ImageRow, RegistryAccess};
use crate::engine::BuildOptions;
use crate::export::Format;
use crate::image::History;
use crate::progress::{Event, EventKind, Progress};
use crate::registry::{PullOutcome, PushOutcome, TransferEvent, TransferKind, TransferProgress};
use crate::store::{DiskUsage, HistoryRow, PruneReport};
use anyhow::{bail, Context, Result};
use berth_proto::v1::builder_client::BuilderClient;
use berth_proto::v1::{self as pb, build_event, build_request};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

const CHUNK: usize = 1 << 20;

/// A channel to berth-buildd at `addr` (`unix:///path/to/socket`, the only
/// transport it serves), connected on `rt`: for the builder's and the
/// working containers' clients.
pub(crate) fn channel(rt: &tokio::runtime::Runtime, addr: &str) -> Result<Channel> {
    let Some(path) = addr.strip_prefix("unix://") else {
        bail!("unsupported address {addr:?}: want unix:///path/to/buildd.sock");
    };
    let path = PathBuf::from(path);
    rt.block_on(async {
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
    .with_context(|| format!("connecting to berth-buildd at {addr}"))
}

pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: BuilderClient<Channel>,
    access: RegistryAccess,
}

impl Remote {
    /// Connects to `unix:///path/to/socket`.
    pub fn connect(addr: &str, access: RegistryAccess) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = channel(&rt, addr)?;
        let client = BuilderClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Self { rt, client, access })
    }

    fn client(&self) -> BuilderClient<Channel> {
        self.client.clone()
    }

    /// The daemon's Version RPC.
    pub fn version(&self) -> Result<pb::VersionResponse> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.version(pb::Empty {}))
            .map_err(status)?
            .into_inner())
    }

    /// The daemon's Info RPC.
    pub fn info(&self) -> Result<pb::InfoResponse> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.info(pb::Empty {}))
            .map_err(status)?
            .into_inner())
    }

    /// Streams an export into `w`.
    fn export_to(
        &self,
        name: &str,
        also: &[String],
        format: &str,
        w: &mut dyn Write,
    ) -> Result<()> {
        let mut c = self.client();
        self.rt.block_on(async {
            let mut s = c
                .export(pb::ExportRequest {
                    image: name.to_string(),
                    format: format.to_string(),
                    also: also.to_vec(),
                })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(chunk) = s.message().await.map_err(status)? {
                w.write_all(&chunk.data)?;
            }
            Ok(())
        })
    }
}

/// The client's credentials as request fields.
fn credentials(list: Vec<(String, crate::registry::Credential)>) -> Vec<pb::RegistryCredential> {
    list.into_iter()
        .map(|(host, c)| pb::RegistryCredential {
            registry: host,
            username: c.username,
            secret: c.secret,
        })
        .collect()
}

/// Relays a Pull/Push event stream to `progress`; returns the COMPLETE event.
async fn relay(
    mut s: tonic::Streaming<pb::TransferEvent>,
    progress: &dyn TransferProgress,
) -> Result<pb::TransferEvent> {
    use pb::transfer_event::Kind;
    while let Some(ev) = s.message().await.map_err(status)? {
        let kind = match Kind::try_from(ev.kind).unwrap_or(Kind::Info) {
            Kind::Complete => return Ok(ev),
            Kind::Info => TransferKind::Info,
            Kind::Resolved => TransferKind::Resolved,
            Kind::Started => TransferKind::Started,
            Kind::Progress => TransferKind::Progress,
            Kind::Done => TransferKind::Done,
            Kind::Exists => TransferKind::Exists,
            Kind::Mounted => TransferKind::Mounted,
        };
        progress.event(TransferEvent::new(
            kind, &ev.id, ev.current, ev.total, ev.message,
        ));
    }
    bail!("the daemon ended the transfer without a result")
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Streams the context directory as tar chunks (after the options message).
fn send_context(context: PathBuf, tx: mpsc::Sender<pb::BuildRequest>) -> Result<()> {
    struct W(mpsc::Sender<pb::BuildRequest>, Vec<u8>);
    impl Write for W {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(d);
            if self.1.len() >= CHUNK {
                self.flush()?;
            }
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if !self.1.is_empty() {
                let data = std::mem::take(&mut self.1);
                self.0
                    .blocking_send(pb::BuildRequest {
                        msg: Some(build_request::Msg::ContextChunk(data)),
                    })
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "daemon went away")
                    })?;
            }
            Ok(())
        }
    }
    let mut b = tar::Builder::new(W(tx, Vec::new()));
    b.follow_symlinks(false);
    b.append_dir_all(".", &context)
        .with_context(|| format!("sending context {}", context.display()))?;
    let mut w = b.into_inner()?;
    w.flush()?;
    Ok(())
}

impl Remote {
    /// A Build request with `opts` and the context: the image's digest,
    /// or with `print` the daemon's plan JSON (nothing built).
    fn stream_build(
        &self,
        opts: &BuildOptions,
        print: bool,
        progress: &dyn Progress,
    ) -> Result<String> {
        let context = opts
            .context
            .canonicalize()
            .with_context(|| format!("context {}", opts.context.display()))?;
        let mut o = pb::BuildOptions {
            tags: opts.tags.clone(),
            build_args: opts.build_args.clone().into_iter().collect(),
            target: opts.target.clone().unwrap_or_default(),
            no_cache: opts.no_cache,
            compression: match opts.compression {
                crate::layer::Compression::Gzip => "gzip".into(),
                crate::layer::Compression::Zstd => "zstd".into(),
            },
            network: if opts.network_host {
                "host".into()
            } else {
                "none".into()
            },
            pull: opts.pull,
            print,
            cache_from: opts.cache_from.clone(),
            cache_to: opts.cache_to.clone().unwrap_or_default(),
            // The daemon pulls FROM images with the client's credentials;
            // the client does not read the Dockerfile, so it sends them all.
            credentials: credentials(self.access.credentials_for(None)?),
            ..Default::default()
        };
        if let Some(df) = &opts.dockerfile {
            o.dockerfile_content = crate::dockerfile::read_dockerfile(df)
                .with_context(|| format!("reading {}", df.display()))?;
        }
        for (id, p) in &opts.secrets {
            o.secrets
                .insert(id.clone(), crate::engine::secret::read(id, p)?);
        }
        let (tx, rx) = mpsc::channel(16);
        tx.blocking_send(pb::BuildRequest {
            msg: Some(build_request::Msg::Options(o)),
        })
        .map_err(|_| anyhow::anyhow!("build request channel closed"))?;
        let sender = std::thread::spawn(move || send_context(context, tx));
        let mut c = self.client();
        let digest = self.rt.block_on(async {
            let mut s = c
                .build(ReceiverStream::new(rx))
                .await
                .map_err(status)?
                .into_inner();
            let mut digest = None;
            let mut error: Option<String> = None;
            loop {
                // A failed build ends with an ERROR event, then a non-OK
                // status: the event's text says what failed, as in-process.
                let ev = match s.message().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(st) => match error {
                        Some(e) => bail!("{e}"),
                        None => return Err(status(st)),
                    },
                };
                let kind =
                    match build_event::Kind::try_from(ev.kind).unwrap_or(build_event::Kind::Info) {
                        build_event::Kind::StepStarted => EventKind::Started,
                        build_event::Kind::StepCached => EventKind::Cached,
                        build_event::Kind::StepCompleted => EventKind::Completed,
                        build_event::Kind::Log => EventKind::Log,
                        build_event::Kind::Info => EventKind::Info,
                        build_event::Kind::Error => EventKind::Error,
                        build_event::Kind::Done => EventKind::Done,
                    };
                match kind {
                    EventKind::Done if print => digest = Some(ev.plan.clone()),
                    EventKind::Done => digest = Some(ev.image_digest.clone()),
                    EventKind::Error => error = Some(ev.message.clone()),
                    _ => {}
                }
                progress.event(Event {
                    kind,
                    stage: ev.stage,
                    step: ev.step,
                    instruction: ev.instruction,
                    message: ev.message,
                    image_digest: ev.image_digest,
                    seconds: ev.seconds,
                });
            }
            match (digest, error) {
                (_, Some(e)) => bail!("{e}"),
                (Some(d), None) => Ok(d),
                (None, None) => bail!("the daemon ended the build without a result"),
            }
        })?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("context sender panicked"))??;
        Ok(digest)
    }
}

impl Backend for Remote {
    fn build(&self, opts: &BuildOptions, progress: &dyn Progress) -> Result<String> {
        self.stream_build(opts, false, progress)
    }

    fn plan(&self, opts: &BuildOptions) -> Result<String> {
        self.stream_build(opts, true, &crate::progress::Quiet)
    }

    fn images(&self) -> Result<Vec<ImageRow>> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.list_images(pb::ListImagesRequest {}))
            .map_err(status)?
            .into_inner();
        Ok(r.images
            .into_iter()
            .map(|i| ImageRow {
                tags: i.tags,
                digest: i.digest,
                id: i.id,
                size: i.size,
                unpacked_size: i.unpacked_size,
                created: i.created,
            })
            .collect())
    }

    fn inspect(&self, name: &str) -> Result<(String, String, String)> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.inspect_image(pb::ImageRef { name: name.into() }))
            .map_err(status)?
            .into_inner();
        Ok((r.manifest_digest, r.manifest_json, r.config_json))
    }

    fn tag(&self, src: &str, dst: &str) -> Result<()> {
        let mut c = self.client();
        self.rt
            .block_on(c.tag_image(pb::TagImageRequest {
                source: src.into(),
                tag: dst.into(),
            }))
            .map_err(status)?;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut c = self.client();
        self.rt
            .block_on(c.remove_image(pb::ImageRef { name: name.into() }))
            .map_err(status)?;
        Ok(())
    }

    fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.history(pb::ImageRef { name: name.into() }))
            .map_err(status)?
            .into_inner();
        Ok(r.entries
            .into_iter()
            .map(|h| HistoryRow {
                id: Some(h.id).filter(|i| !i.is_empty()),
                size: h.size,
                history: History {
                    created: Some(h.created),
                    created_by: Some(h.created_by),
                    author: None,
                    comment: Some(h.comment),
                    empty_layer: h.empty_layer,
                },
            })
            .collect())
    }

    fn save(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()> {
        let f = match format {
            Format::Oci => "oci",
            Format::Docker => "docker",
            Format::Local => bail!("save writes archives: use --format docker or oci"),
        };
        let mut out =
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        self.export_to(name, also, f, &mut out)
    }

    fn load(&self, src: &Path) -> Result<Vec<(String, String)>> {
        let data =
            std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let (tx, rx) = mpsc::channel(8);
        let reader = std::thread::spawn(move || -> Result<()> {
            let mut data = data;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = std::io::Read::read(&mut data, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if tx.blocking_send(pb::Chunk { data: buf }).is_err() {
                    return Ok(());
                }
            }
        });
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.import(ReceiverStream::new(rx)))
            .map_err(status)?
            .into_inner();
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        Ok(r.tags.into_iter().zip(r.digests).collect())
    }

    fn disk_usage(&self) -> Result<DiskUsage> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.disk_usage(pb::Empty {}))
            .map_err(status)?
            .into_inner();
        Ok(DiskUsage {
            blobs_bytes: r.blobs_bytes,
            blobs_count: r.blobs_count,
            snapshots_bytes: r.snapshots_bytes,
            cache_entries: r.cache_entries,
            images: r.images,
        })
    }

    fn prune(&self) -> Result<PruneReport> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.prune(pb::Empty {}))
            .map_err(status)?
            .into_inner();
        Ok(PruneReport {
            removed_blobs: r.removed_blobs,
            reclaimed_bytes: r.reclaimed_bytes,
            removed_snapshots: r.removed_snapshots,
            removed_cache_entries: 0,
        })
    }

    fn bundle(&self, name: &str, dir: &Path) -> Result<()> {
        let rootfs = dir.join("rootfs");
        if rootfs.exists() {
            bail!("{} already exists", rootfs.display());
        }
        std::fs::create_dir_all(&rootfs)?;
        self.export_dir(name, &[], Format::Local, &rootfs)?;
        let (_, _, config) = self.inspect(name)?;
        let config: crate::image::ImageConfig =
            serde_json::from_str(&config).context("parsing image config")?;
        crate::bundle::write_config(&config, name, dir)
    }

    fn export_dir(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()> {
        let f = match format {
            Format::Oci => "oci",
            Format::Local => "local",
            Format::Docker => "docker",
        };
        // Receive the tar into memory-bounded temp storage, then unpack safely.
        let mut tmp = tempfile::tempfile().context("temp file")?;
        self.export_to(name, also, f, &mut tmp)?;
        std::io::Seek::rewind(&mut tmp)?;
        std::fs::create_dir_all(dest)?;
        crate::layer::unpack(
            std::io::BufReader::new(tmp),
            dest,
            crate::layer::UnpackMode::Apply,
        )?;
        Ok(())
    }

    fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PullOutcome> {
        let host = crate::registry::RemoteRef::parse(reference)?.host;
        let reg = self.access.registry()?;
        let mut hosts = reg.hosts.pull_hosts(&host);
        hosts.dedup();
        let req = pb::PullRequest {
            reference: reference.to_string(),
            platform: platform.unwrap_or_default().to_string(),
            credentials: credentials(self.access.credentials_for(Some(&hosts))?),
        };
        let mut c = self.client();
        let done = self.rt.block_on(async {
            let s = c.pull(req).await.map_err(status)?.into_inner();
            relay(s, progress).await
        })?;
        Ok(PullOutcome {
            name: (!done.name.is_empty()).then_some(done.name),
            digest: done.digest,
            fetched: done.count as usize,
            fetched_bytes: done.bytes,
        })
    }

    fn push(
        &self,
        image: &str,
        dest: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PushOutcome> {
        let host = crate::registry::RemoteRef::parse(dest.unwrap_or(image))
            .map(|r| r.host)
            .ok();
        let req = pb::PushRequest {
            image: image.to_string(),
            destination: dest.unwrap_or_default().to_string(),
            credentials: credentials(match host {
                Some(h) => self.access.credentials_for(Some(&[h]))?,
                None => Vec::new(),
            }),
        };
        let mut c = self.client();
        let done = self.rt.block_on(async {
            let s = c.push(req).await.map_err(status)?.into_inner();
            relay(s, progress).await
        })?;
        Ok(PushOutcome {
            reference: done.name,
            digest: done.digest,
            uploaded: done.count as usize,
            uploaded_bytes: done.bytes,
        })
    }
}
