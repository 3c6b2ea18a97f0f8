//! berth-buildd's gRPC service: the engine and store behind the
//! `berth.builder.v1.Builder` API, served on a unix socket (see [`socket`]
//! for who may connect: access is root on the host).
//!
//! Requests are bounded: a Dockerfile of at most
//! [`crate::dockerfile::MAX_DOCKERFILE_SIZE`], a build context stream of at
//! most `--max-context-size`, image configs of at most
//! [`crate::image::MAX_CONFIG_SIZE`]; names are checked against the
//! reference grammar. Refusals are INVALID_ARGUMENT / RESOURCE_EXHAUSTED.
pub mod authority;
mod cancel;
pub mod info;
pub mod socket;
mod spool;
mod status;
pub mod workctr;

use crate::chunked::ChunkedWriter;
use crate::engine::{build, BuildOptions};
use crate::exec::run::Runtime;
use crate::export::{self, Format};
use crate::progress::{Event, EventKind, Progress};
use crate::store::Store;
use berth_proto::v1::builder_server::{Builder, BuilderServer};
use berth_proto::v1::{self as pb, build_event, build_request};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

const CHUNK: usize = 1 << 20;

/// Largest gRPC message the daemon decodes.
const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Default of `--max-context-size`: 8 GiB of build context tar per build.
pub const DEFAULT_MAX_CONTEXT_SIZE: u64 = 8 << 30;

/// Default of `--max-import-size`: 32 GiB of image archive per Import
/// (the archive is spooled to the store's disk before it is read).
pub const DEFAULT_MAX_IMPORT_SIZE: u64 = 32 << 30;

pub struct Service {
    store: Store,
    runtime: Runtime,
    max_context_size: u64,
    max_import_size: u64,
    /// The daemon's registries config (plain http, CAs, mirrors); the
    /// credentials come with each request.
    hosts: std::sync::Arc<crate::registry::HostsConfig>,
}

impl Service {
    pub fn new(store: Store, runtime: Runtime) -> Self {
        let _ = STORE_SCRUB.set(status::Scrub::default().with(store.root(), "<store>"));
        Self {
            store,
            runtime,
            max_context_size: DEFAULT_MAX_CONTEXT_SIZE,
            max_import_size: DEFAULT_MAX_IMPORT_SIZE,
            hosts: Default::default(),
        }
    }

    /// Sets the registries config used for pulls, pushes and `FROM`.
    pub fn with_registries(mut self, hosts: crate::registry::HostsConfig) -> Self {
        self.hosts = std::sync::Arc::new(hosts);
        self
    }

    /// Registry access for one request, with the credentials it carried.
    fn registry(
        &self,
        creds: Vec<pb::RegistryCredential>,
        platform: &str,
    ) -> anyhow::Result<crate::registry::Registry> {
        let mut reg = crate::registry::Registry {
            hosts: self.hosts.clone(),
            credentials: given_credentials(creds),
            platform: crate::registry::PlatformSpec::host(),
        };
        if !platform.is_empty() {
            reg.platform = crate::registry::PlatformSpec::parse(platform)?;
        }
        Ok(reg)
    }

    /// Caps the bytes of build context a client may stream.
    pub fn with_max_context_size(mut self, bytes: u64) -> Self {
        self.max_context_size = bytes;
        self
    }

    /// Caps the bytes of image archive a client may stream to Import.
    pub fn with_max_import_size(mut self, bytes: u64) -> Self {
        self.max_import_size = bytes;
        self
    }
}

/// The credentials of a request, keyed by normalized host.
fn given_credentials(creds: Vec<pb::RegistryCredential>) -> crate::registry::Credentials {
    crate::registry::Credentials::Given(
        creds
            .into_iter()
            .map(|c| {
                (
                    crate::registry::auth::normalize_host(&c.registry),
                    crate::registry::Credential {
                        username: c.username,
                        secret: c.secret,
                    },
                )
            })
            .collect(),
    )
}

/// Sends transfer events to the client stream.
struct TransferChannel(mpsc::Sender<Result<pb::TransferEvent, Status>>);

impl crate::registry::TransferProgress for TransferChannel {
    fn event(&self, e: crate::registry::TransferEvent) {
        use crate::registry::TransferKind as K;
        use pb::transfer_event::Kind;
        let kind = match e.kind {
            K::Resolved => Kind::Resolved,
            K::Started => Kind::Started,
            K::Progress => Kind::Progress,
            K::Done => Kind::Done,
            K::Exists => Kind::Exists,
            K::Mounted => Kind::Mounted,
            K::Info => Kind::Info,
        };
        let _ = self.0.blocking_send(Ok(pb::TransferEvent {
            kind: kind as i32,
            id: e.id,
            current: e.current,
            total: e.total,
            message: e.message,
            ..Default::default()
        }));
    }
}

/// Maps a failed transfer to a status: bad references are INVALID_ARGUMENT,
/// refused credentials UNAUTHENTICATED, missing images NOT_FOUND.
fn transfer_status(e: anyhow::Error) -> Status {
    let msg = format!("{e:#}");
    if msg.contains("401 Unauthorized") {
        Status::unauthenticated(msg)
    } else {
        not_found_or_internal(e)
    }
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(store_scrub().apply(&format!("{e:#}")))
}

/// The store's directory, shown as `<store>` in messages: its temporary
/// directories are the daemon's business. Set once by [`Service::new`].
static STORE_SCRUB: std::sync::OnceLock<status::Scrub> = std::sync::OnceLock::new();

fn store_scrub() -> &'static status::Scrub {
    STORE_SCRUB.get_or_init(status::Scrub::default)
}

/// Maps an error to a gRPC status: bad names are the caller's fault
/// (INVALID_ARGUMENT), as are oversized inputs; lookups that found nothing
/// are NOT_FOUND; lost blobs FAILED_PRECONDITION; the rest is INTERNAL
/// (see [`status`]).
fn not_found_or_internal(e: anyhow::Error) -> Status {
    status::store_status(e, store_scrub())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(not_found_or_internal)
}

/// Sends build events to the client stream, with private paths rewritten.
/// DONE is held back until the daemon has tagged the image, so a client
/// that sees DONE finds the tags.
struct ChannelProgress {
    tx: mpsc::Sender<Result<pb::BuildEvent, Status>>,
    scrub: status::Scrub,
    done: std::sync::Mutex<Option<pb::BuildEvent>>,
}

impl ChannelProgress {
    /// Sends the held DONE event.
    fn release_done(&self) {
        let done = self.done.lock().map(|mut d| d.take()).unwrap_or_default();
        if let Some(ev) = done {
            let _ = self.tx.blocking_send(Ok(ev));
        }
    }
}

impl Progress for ChannelProgress {
    fn event(&self, e: Event) {
        let kind = match e.kind {
            EventKind::Started => build_event::Kind::StepStarted,
            EventKind::Cached => build_event::Kind::StepCached,
            EventKind::Completed => build_event::Kind::StepCompleted,
            EventKind::Log => build_event::Kind::Log,
            EventKind::Info => build_event::Kind::Info,
            EventKind::Error => build_event::Kind::Error,
            EventKind::Done => build_event::Kind::Done,
        };
        let ev = pb::BuildEvent {
            kind: kind as i32,
            stage: e.stage,
            step: e.step,
            instruction: self.scrub.apply(&e.instruction),
            message: self.scrub.apply(&e.message),
            image_digest: e.image_digest,
            seconds: e.seconds,
            plan: String::new(),
        };
        if kind == build_event::Kind::Done {
            if let Ok(mut d) = self.done.lock() {
                *d = Some(ev);
            }
            return;
        }
        let _ = self.tx.blocking_send(Ok(ev));
    }
}

/// Streams what `produce` writes as `Chunk` messages, produced on a blocking
/// thread; an error ends the stream with the status `to_status` makes of it.
fn chunk_stream(
    produce: impl FnOnce(&mut dyn Write) -> anyhow::Result<()> + Send + 'static,
    to_status: fn(anyhow::Error) -> Status,
) -> ReceiverStream<Result<pb::Chunk, Status>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        // Bytes become `Chunk` messages on the channel.
        let out = tx.clone();
        let mut w = ChunkedWriter::new(CHUNK, move |data| {
            out.blocking_send(Ok(pb::Chunk { data })).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
            })
        });
        let res = produce(&mut w).and_then(|()| Ok(w.flush()?));
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(to_status(e)));
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl Builder for Service {
    type BuildStream = ReceiverStream<Result<pb::BuildEvent, Status>>;
    type ExportStream = ReceiverStream<Result<pb::Chunk, Status>>;
    type PullStream = ReceiverStream<Result<pb::TransferEvent, Status>>;
    type PushStream = ReceiverStream<Result<pb::TransferEvent, Status>>;

    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let r = req.into_inner();
        let reg = self
            .registry(r.credentials, &r.platform)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        crate::registry::RemoteRef::parse(&r.reference)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let (tx, rx) = mpsc::channel(256);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let progress = TransferChannel(tx.clone());
            let last = match crate::registry::pull(&store, &reg, &r.reference, &progress) {
                Ok(o) => Ok(pb::TransferEvent {
                    kind: pb::transfer_event::Kind::Complete as i32,
                    digest: o.digest,
                    name: o.name.unwrap_or_default(),
                    count: o.fetched as u64,
                    bytes: o.fetched_bytes,
                    ..Default::default()
                }),
                Err(e) => Err(transfer_status(e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let r = req.into_inner();
        let reg = self
            .registry(r.credentials, "")
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let (tx, rx) = mpsc::channel(256);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let progress = TransferChannel(tx.clone());
            let dest = (!r.destination.is_empty()).then_some(r.destination.as_str());
            let last = match crate::registry::push(&store, &reg, &r.image, dest, &progress) {
                Ok(o) => Ok(pb::TransferEvent {
                    kind: pb::transfer_event::Kind::Complete as i32,
                    digest: o.digest,
                    name: o.reference,
                    count: o.uploaded as u64,
                    bytes: o.uploaded_bytes,
                    ..Default::default()
                }),
                Err(e) => Err(transfer_status(e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn build(
        &self,
        req: Request<Streaming<pb::BuildRequest>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("empty build request"));
        };
        let Some(build_request::Msg::Options(o)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first build message must carry the options",
            ));
        };
        // Checked before the context is accepted, so a bad request costs nothing.
        for t in &o.tags {
            crate::store::canonical_tag(t)
                .map_err(|e| Status::invalid_argument(format!("tag {t:?}: {e}")))?;
        }
        crate::dockerfile::check_dockerfile_size(o.dockerfile_content.len() as u64)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let work = self.store.temp_dir("ctx-").map_err(internal)?;
        let scrub = store_scrub().clone().with(work.path(), "<build>");
        let tar_path = work.path().join("context.tar");
        let mut file =
            std::fs::File::create(&tar_path).map_err(|e| Status::internal(e.to_string()))?;
        let mut received: u64 = 0;
        while let Some(m) = stream.message().await? {
            if let Some(build_request::Msg::ContextChunk(data)) = m.msg {
                received += data.len() as u64;
                if received > self.max_context_size {
                    // Dropping `work` removes what was written so far.
                    return Err(Status::resource_exhausted(format!(
                        "the build context is too large: more than {} bytes (berth-buildd --max-context-size)",
                        self.max_context_size
                    )));
                }
                file.write_all(&data).map_err(|e| {
                    Status::internal(scrub.apply(&format!("writing the build context: {e}")))
                })?;
            }
        }
        drop(file);
        let (tx, rx) = mpsc::channel(256);
        let store = self.store.clone();
        let mut o = o;
        let reg = self
            .registry(std::mem::take(&mut o.credentials), "")
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        // This build's containers are killed if the client goes away.
        let runtime = cancel::per_build(&self.runtime);
        let (finished, finished_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cancel::stop_on_disconnect(
            tx.clone(),
            runtime.clone(),
            finished_rx,
        ));
        tokio::task::spawn_blocking(move || {
            let build_runtime = runtime.clone();
            let scrub = store_scrub()
                .clone()
                .with(work.path(), "<build>")
                .with(&work.path().join("context"), "");
            let progress = ChannelProgress {
                tx: tx.clone(),
                scrub: scrub.clone(),
                done: Default::default(),
            };
            // The daemon tags, not the engine: a client that cancelled or
            // whose deadline passed (its stream is gone) gets no tags.
            let tags = std::mem::take(&mut o.tags);
            let result = run_build(&store, runtime, reg, o, work.path(), &tar_path, &progress)
                .and_then(|out| match out {
                    Outcome::Image(desc) => {
                        if tx.is_closed() {
                            anyhow::bail!("the client went away: not tagging {}", desc.digest);
                        }
                        store.add_to_index(&desc, &tags)
                    }
                    Outcome::Plan(plan) => {
                        let done = pb::BuildEvent {
                            kind: build_event::Kind::Done as i32,
                            plan: scrub.apply(&plan),
                            ..Default::default()
                        };
                        let _ = tx.blocking_send(Ok(done));
                        Ok(())
                    }
                });
            let _ = finished.send(());
            cancel::cleanup(&build_runtime);
            match result {
                Ok(()) => progress.release_done(),
                Err(e) if tx.is_closed() => {
                    eprintln!(
                        "berth-buildd: build stopped, the client went away: {}",
                        scrub.apply(&format!("{e:#}"))
                    );
                }
                Err(e) => {
                    if !e.is::<Reported>() {
                        let mut ev = Event::new(EventKind::Error);
                        ev.message = format!("{e:#}");
                        progress.event(ev);
                    }
                    let _ = tx.blocking_send(Err(status::build_status(&e, &scrub)));
                }
            }
            drop(work);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_images(
        &self,
        _: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let store = self.store.clone();
        // From the index and per-image summaries: no config is parsed here.
        let images = blocking(move || {
            Ok(store
                .image_summaries()?
                .into_iter()
                .map(|i| pb::ImageSummary {
                    tags: i.tags,
                    digest: i.digest,
                    size: i.size,
                    unpacked_size: i.unpacked_size,
                    created: i.created,
                    id: i.id,
                })
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn inspect_image(
        &self,
        req: Request<pb::ImageRef>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        let store = self.store.clone();
        let name = req.into_inner().name;
        let r = blocking(move || {
            let img = store.resolve(&name)?;
            Ok(pb::InspectImageResponse {
                manifest_digest: img.descriptor.digest.clone(),
                manifest_json: String::from_utf8_lossy(&store.read_blob(&img.descriptor.digest)?)
                    .into_owned(),
                config_json: String::from_utf8_lossy(
                    &store.read_blob(&img.manifest.config.digest)?,
                )
                .into_owned(),
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn tag_image(
        &self,
        req: Request<pb::TagImageRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let store = self.store.clone();
        let r = req.into_inner();
        crate::store::canonical_tag(&r.tag).map_err(|e| Status::invalid_argument(e.to_string()))?;
        blocking(move || store.tag(&r.source, &r.tag)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_image(
        &self,
        req: Request<pb::ImageRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let store = self.store.clone();
        let name = req.into_inner().name;
        blocking(move || store.remove(&name)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn history(
        &self,
        req: Request<pb::ImageRef>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let store = self.store.clone();
        let name = req.into_inner().name;
        // Newest first, with layer sizes and the image ID, as Docker's API.
        let entries = blocking(move || store.history(&name)).await?;
        Ok(Response::new(pb::HistoryResponse {
            entries: entries
                .into_iter()
                .map(|r| pb::HistoryEntry {
                    created: r.history.created.unwrap_or_default(),
                    created_by: r.history.created_by.unwrap_or_default(),
                    comment: r.history.comment.unwrap_or_default(),
                    empty_layer: r.history.empty_layer,
                    size: r.size,
                    id: r.id.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let r = req.into_inner();
        // Unset: docker, as `berth-build save` and `docker save`.
        let format: Format = if r.format.is_empty() {
            "docker"
        } else {
            &r.format
        }
        .parse()
        .map_err(|e: anyhow::Error| Status::invalid_argument(e.to_string()))?;
        let store = self.store.clone();
        let img = {
            let store = store.clone();
            let name = r.image.clone();
            blocking(move || store.resolve(&name)).await?
        };
        let requested = r.image.clone();
        let also = r.also;
        let stream = chunk_stream(
            move |w| {
                let mut tags = export::export_names(&store, &requested, &img)?;
                for n in &also {
                    for t in export::export_names(&store, n, &img)? {
                        if !tags.contains(&t) {
                            tags.push(t);
                        }
                    }
                }
                match format {
                    Format::Oci => {
                        export::write_oci_tar(&store, &img, &tags, w)?;
                    }
                    Format::Docker => {
                        export::write_docker_tar(&store, &img, &tags, w)?;
                    }
                    Format::Local => {
                        let dir = store.temp_dir("local-")?;
                        export::write_local(&store, &img, dir.path())?;
                        let mut b = tar::Builder::new(w);
                        b.follow_symlinks(false);
                        b.append_dir_all(".", dir.path())?;
                        b.into_inner()?;
                    }
                }
                Ok(())
            },
            not_found_or_internal,
        );
        Ok(Response::new(stream))
    }

    async fn import(
        &self,
        req: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let mut stream = req.into_inner();
        let tmp = self.store.temp_dir("upload-").map_err(internal)?;
        let path = tmp.path().join("archive.tar");
        spool::spool(
            &mut stream,
            &path,
            self.max_import_size,
            "the image archive",
            |c: pb::Chunk| Some(c.data),
        )
        .await?;
        let store = self.store.clone();
        let loaded = blocking(move || {
            let f = std::fs::File::open(&path)?;
            let r = export::import(&store, std::io::BufReader::new(f));
            drop(tmp);
            r
        })
        .await?;
        Ok(Response::new(pb::ImportResponse {
            tags: loaded.iter().map(|(t, _)| t.clone()).collect(),
            digests: loaded.into_iter().map(|(_, d)| d).collect(),
        }))
    }

    async fn disk_usage(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::DiskUsageResponse>, Status> {
        let store = self.store.clone();
        let du = blocking(move || store.disk_usage()).await?;
        Ok(Response::new(pb::DiskUsageResponse {
            blobs_bytes: du.blobs_bytes,
            blobs_count: du.blobs_count,
            snapshots_bytes: du.snapshots_bytes,
            cache_entries: du.cache_entries,
            images: du.images,
        }))
    }

    async fn version(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(info::version()))
    }

    async fn info(&self, _: Request<pb::Empty>) -> Result<Response<pb::InfoResponse>, Status> {
        let store = self.store.clone();
        let images = blocking(move || Ok(store.image_summaries()?.len() as u64)).await?;
        Ok(Response::new(info::info(info::Facts {
            store_root: self.store.root(),
            runtime: &self.runtime.binary,
            max_context_size: self.max_context_size,
            images,
        })))
    }

    async fn prune(&self, _: Request<pb::Empty>) -> Result<Response<pb::PruneResponse>, Status> {
        let store = self.store.clone();
        let r = blocking(move || store.prune()).await?;
        Ok(Response::new(pb::PruneResponse {
            removed_blobs: r.removed_blobs,
            reclaimed_bytes: r.reclaimed_bytes,
            removed_snapshots: r.removed_snapshots,
        }))
    }
}

/// What a Build request produced.
enum Outcome {
    /// The image built (to be tagged).
    Image(crate::image::Descriptor),
    /// `print`: the plan's JSON; nothing was built.
    Plan(String),
}

fn run_build(
    store: &Store,
    runtime: Runtime,
    registry: crate::registry::Registry,
    o: pb::BuildOptions,
    work: &Path,
    tar_path: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    let context = work.join("context");
    std::fs::create_dir(&context)?;
    let f = std::fs::File::open(tar_path)?;
    crate::layer::unpack(
        std::io::BufReader::new(f),
        &context,
        crate::layer::UnpackMode::Apply,
    )
    .map_err(|e| {
        status::BadInput(format!(
            "the build context is not an uncompressed tar stream: {e:#}"
        ))
    })?;
    let mut opts = BuildOptions::new(context.clone(), runtime);
    for t in &o.tags {
        crate::store::canonical_tag(t)?;
    }
    if !o.dockerfile_content.is_empty() {
        let p = work.join("Dockerfile");
        std::fs::write(&p, &o.dockerfile_content)?;
        opts.dockerfile = Some(p);
    } else if !o.dockerfile.is_empty() {
        opts.dockerfile = Some(crate::fsutil::resolve_in_root(&context, &o.dockerfile)?);
    }
    opts.tags = o.tags;
    opts.build_args = o.build_args.into_iter().collect();
    opts.target = (!o.target.is_empty()).then_some(o.target);
    opts.no_cache = o.no_cache;
    opts.compression = o
        .compression
        .parse()
        .map_err(|e: anyhow::Error| status::BadInput(format!("{e:#}")))?;
    // Empty: the engine's default, which Info reports.
    opts.network_host = match o.network.as_str() {
        "" => opts.network_host,
        "host" => true,
        "none" => false,
        other => {
            return Err(
                status::BadInput(format!("unknown network {other:?} (want host or none)")).into(),
            )
        }
    };
    opts.registry = Some(registry);
    opts.pull = o.pull;
    for c in &o.cache_from {
        crate::registry::RemoteRef::parse(c).context("cache_from")?;
    }
    opts.cache_from = o.cache_from;
    if !o.cache_to.is_empty() {
        crate::registry::RemoteRef::parse(&o.cache_to).context("cache_to")?;
        opts.cache_to = Some(o.cache_to);
    }
    let secrets_dir = work.join("secrets");
    std::fs::create_dir(&secrets_dir)?;
    for (i, (id, data)) in o.secrets.into_iter().enumerate() {
        if let Err(e) = crate::engine::secret::check_size(&id, data.len()) {
            return Err(status::BadInput(format!("{e:#}")).into());
        }
        let p = secrets_dir.join(i.to_string());
        std::fs::write(&p, data)?;
        opts.secrets.insert(id, p);
    }
    if o.print {
        // Planning sends no events: its failures are reported by the caller.
        return Ok(Outcome::Plan(crate::engine::plan_json(&opts, store)?));
    }
    // Engine failures reach the client as the engine's own Error event;
    // only failures before the engine ran are reported by the caller.
    match build(store, &opts, progress) {
        Ok(out) => Ok(Outcome::Image(out.descriptor)),
        Err(e) => Err(e.context(Reported)),
    }
}

/// Marks a build error the engine already sent as an ERROR event.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build failed")
    }
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub socket: PathBuf,
    /// Group owning the socket (mode 0660); 0 = root.
    pub gid: u32,
    pub max_context_size: u64,
    pub max_import_size: u64,
    pub registries: crate::registry::HostsConfig,
}

/// Serves the API on `opts.socket` until SIGINT/SIGTERM.
pub async fn serve(store: Store, runtime: Runtime, opts: ServeOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    let socket = opts.socket.clone();
    let std_listener = socket::bind(&socket, opts.gid)?;
    std_listener
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    eprintln!("berth-buildd: listening on {}", socket.display());
    let (work_store, work_runtime) = (store.clone(), runtime.clone());
    tonic::transport::Server::builder()
        .add_service(
            BuilderServer::new(
                Service::new(store, runtime)
                    .with_max_context_size(opts.max_context_size)
                    .with_max_import_size(opts.max_import_size)
                    .with_registries(opts.registries),
            )
            // One message is at most a 1 MiB chunk, or the build options
            // with a Dockerfile (≤ 2 MiB) and secrets: 16 MiB bounds what a
            // client can make the daemon buffer per call before any check.
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            berth_proto::v1::working_containers_server::WorkingContainersServer::new(
                workctr::WorkService {
                    store: work_store,
                    runtime: work_runtime,
                    max_import_size: opts.max_import_size,
                },
            ),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|c| c.map(authority::relay)),
            shutdown,
        )
        .await
        .context("serving gRPC")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn refusals_are_invalid_argument() {
        let bad_name: anyhow::Error = crate::store::canonical_tag("../x").unwrap_err().into();
        let s = not_found_or_internal(bad_name.context("tagging"));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("invalid reference format"), "{s:?}");
        let big = crate::dockerfile::check_dockerfile_size(3 << 20)
            .map_err(anyhow::Error::from)
            .context("build")
            .unwrap_err();
        assert_eq!(
            not_found_or_internal(big).code(),
            tonic::Code::InvalidArgument
        );
        let missing = anyhow::anyhow!("image \"x\" not found");
        assert_eq!(not_found_or_internal(missing).code(), tonic::Code::NotFound);
        assert_eq!(
            not_found_or_internal(anyhow::anyhow!("disk on fire")).code(),
            tonic::Code::Internal
        );
    }
}
