//! Distribution: pulling images from and pushing them to OCI registries.
//!
//! The protocol (auth challenges, tokens, chunked uploads, blob mounts) is
//! spoken by `oci-client`, the reference Rust client, except for manifest
//! downloads (`manifest.rs`): oci-client reads those whole, with no size
//! bound, so they are fetched here with a 4 MiB cap. This module wraps it
//! behind the store: what enters the store is verified against its digest
//! first ([`crate::store::BlobWriter::commit`]), manifests are stored as the
//! registry sent them and pushed as stored (so digests survive a round
//! trip), and the index changes only once every blob of an image is in.
//!
//! * [`auth`]: credentials in Docker's `config.json` (and its helpers).
//! * [`hosts`]: per-registry settings (plain http, CA, mirrors).
//! * [`pull`], [`push`]: the transfers, with per-blob progress events.
//! * [`cache`]: the registry build cache (`--cache-to`, `--cache-from`).
pub mod auth;
pub mod cache;
pub mod hosts;
mod login;
mod manifest;
mod pull;
mod push;

pub use auth::Credential;
pub use hosts::HostsConfig;
pub use login::check_login;
pub use pull::{pull, PullOutcome};
pub use push::{push, PushOutcome};

use crate::store::parse_reference;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Blobs transferred at the same time, per pull or push: enough to hide
/// per-request latency, few enough not to starve a small registry.
pub const MAX_PARALLEL: usize = 4;

/// A reference with Docker's defaults applied: `busybox` is
/// `docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// `host[:port]`, lowercase, `docker.io` for Docker Hub.
    pub host: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RemoteRef {
    /// Parses with Docker's grammar ([`crate::store::parse_reference`]) and
    /// normalizes. A reference with neither tag nor digest gets `latest`.
    pub fn parse(input: &str) -> Result<Self> {
        let r = parse_reference(input)?;
        let host = auth::normalize_host(r.domain.as_deref().unwrap_or("docker.io"));
        let repository = if host == "docker.io" && !r.path.contains('/') {
            format!("library/{}", r.path)
        } else {
            r.path.clone()
        };
        if let Some(d) = &r.digest {
            crate::digest::hex_part(d).with_context(|| format!("reference {input:?}"))?;
        }
        let tag = match (&r.tag, &r.digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.clone(),
        };
        Ok(Self {
            host,
            repository,
            tag,
            digest: r.digest,
        })
    }

    /// The same repository and tag/digest on another host (a mirror).
    pub(crate) fn oci(&self, host: &str) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                host.to_string(),
                self.repository.clone(),
                d.clone(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                "latest".into(),
            ),
        }
    }
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `os/arch[/variant]` to pick from an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// This host's platform (linux/amd64 here).
    pub fn host() -> Self {
        Self {
            os: "linux".into(),
            architecture: crate::image::host_arch().into(),
            variant: None,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => bail!("invalid platform {s:?}: want os/arch[/variant], e.g. linux/amd64"),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Where credentials come from: the Docker config of the user running
/// berth-build, or the set a client sent to the daemon with its request.
#[derive(Clone)]
pub enum Credentials {
    DockerConfig(PathBuf),
    Given(BTreeMap<String, Credential>),
}

/// What a transfer needs besides the store: registry settings, credentials
/// and the platform to choose from image indexes.
#[derive(Clone)]
pub struct Registry {
    pub hosts: Arc<HostsConfig>,
    pub credentials: Credentials,
    pub platform: PlatformSpec,
}

impl std::fmt::Debug for Registry {
    // Never prints a credential, only which hosts have one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let creds = match &self.credentials {
            Credentials::DockerConfig(p) => format!("docker config {}", p.display()),
            Credentials::Given(m) => format!("given for {:?}", m.keys().collect::<Vec<_>>()),
        };
        f.debug_struct("Registry")
            .field("hosts", &self.hosts)
            .field("credentials", &creds)
            .field("platform", &self.platform.to_string())
            .finish()
    }
}

impl Registry {
    pub fn new(hosts: HostsConfig, credentials: Credentials) -> Self {
        Self {
            hosts: Arc::new(hosts),
            credentials,
            platform: PlatformSpec::host(),
        }
    }

    /// The credential for `host`, if any.
    pub fn credential(&self, host: &str) -> Result<Option<Credential>> {
        match &self.credentials {
            Credentials::DockerConfig(dir) => auth::DockerConfig::load(dir)?.get(host),
            Credentials::Given(m) => Ok(m.get(&auth::normalize_host(host)).cloned()),
        }
    }

    fn auth_for(&self, host: &str) -> Result<oci_client::secrets::RegistryAuth> {
        Ok(auth_of(self.credential(host)?))
    }

    /// A protocol client for `host`: http or https per [`HostsConfig`], its
    /// CA trusted in addition to the system roots.
    fn client_for(&self, host: &str) -> Result<oci_client::Client> {
        install_crypto_provider();
        let mut cfg = oci_client::client::ClientConfig {
            protocol: if self.hosts.insecure(host) {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            // Indexes are resolved here, against --platform.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(300)),
            user_agent: concat!("berth-build/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        if let Some(ca) = self.hosts.ca_file(host) {
            let data =
                std::fs::read(&ca).with_context(|| format!("reading CA {}", ca.display()))?;
            cfg.extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                });
        }
        oci_client::Client::try_from(cfg)
            .map_err(|e| anyhow::anyhow!("setting up a client for registry {host}: {e}"))
    }
}

/// oci-client's form of a credential.
fn auth_of(cred: Option<Credential>) -> oci_client::secrets::RegistryAuth {
    match cred {
        Some(c) => oci_client::secrets::RegistryAuth::Basic(c.username, c.secret),
        None => oci_client::secrets::RegistryAuth::Anonymous,
    }
}

/// rustls needs one process-wide crypto provider; ring is the one already
/// in the dependency tree.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Runs a transfer on a private runtime. Callers are synchronous: the CLI,
/// build threads, or the daemon's blocking pool, whose threads are inside
/// the daemon's runtime context, where a nested runtime may not block: there
/// the transfer gets a thread of its own.
fn block_on<F>(f: F) -> Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let run = move || -> Result<F::Output> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the transfer runtime")?;
        Ok(rt.block_on(f))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .map_err(|_| anyhow::anyhow!("the transfer thread panicked"))?
    })
}

/// What a transfer reports, one blob at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferKind {
    /// The reference resolved; `message` names the manifest digest.
    Resolved,
    /// A blob transfer started; `total` is its size, `message` the
    /// direction (downloading, uploading).
    Started,
    /// `current` of `total` bytes are done.
    Progress,
    /// The blob is complete and verified.
    Done,
    /// Nothing to send: the store (pull) or registry (push) has the blob.
    Exists,
    /// The registry linked the blob from another repository (push).
    Mounted,
    /// Free text (which host, which platform).
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEvent {
    pub kind: TransferKind,
    /// Short digest of the blob (12 hex), empty for image-level events.
    pub id: String,
    pub current: u64,
    pub total: u64,
    pub message: String,
}

impl TransferEvent {
    pub fn new(kind: TransferKind, id: &str, current: u64, total: u64, message: String) -> Self {
        Self {
            kind,
            id: id.to_string(),
            current,
            total,
            message,
        }
    }

    /// One line for `--progress plain`; `None` for byte counts.
    pub fn plain_line(&self) -> Option<String> {
        let size = human_size(self.total);
        Some(match self.kind {
            TransferKind::Resolved | TransferKind::Info => self.message.clone(),
            TransferKind::Started if self.message.is_empty() => {
                format!("{}: started {size}", self.id)
            }
            TransferKind::Started => format!("{}: {} {size}", self.id, self.message),
            TransferKind::Progress => return None,
            TransferKind::Done => format!("{}: done {size}", self.id),
            TransferKind::Exists => format!("{}: already exists", self.id),
            TransferKind::Mounted => format!("{}: mounted {}", self.id, self.message),
        })
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Receives transfer events (thread-safe: blobs move in parallel).
pub trait TransferProgress: Send + Sync {
    fn event(&self, e: TransferEvent);
}

impl<F: Fn(TransferEvent) + Send + Sync> TransferProgress for F {
    fn event(&self, e: TransferEvent) {
        self(e)
    }
}

/// Forwards events through a channel (never blocks the sender). Cheap to
/// clone and `'static`, so a byte stream handed to the protocol client can
/// report through it too.
#[derive(Clone)]
pub(crate) struct Forward(std::sync::mpsc::Sender<TransferEvent>);

impl TransferProgress for Forward {
    fn event(&self, e: TransferEvent) {
        let _ = self.0.send(e);
    }
}

/// Runs `f` with a progress sink that only queues events; a thread of its
/// own hands them to `progress`. Transfers report from inside their async
/// runtime, where a receiver that blocks (a bounded gRPC stream, a build's
/// event channel) must never be called.
pub(crate) fn relayed<T>(progress: &dyn TransferProgress, f: impl FnOnce(&Forward) -> T) -> T {
    let (tx, rx) = std::sync::mpsc::channel::<TransferEvent>();
    std::thread::scope(|s| {
        s.spawn(move || {
            for e in rx {
                progress.event(e);
            }
        });
        let sink = Forward(tx);
        f(&sink)
        // `sink` drops here, ending the relay thread before the scope ends.
    })
}

/// The `WWW-Authenticate` challenge of a 401 answer ("" without one).
pub(crate) fn challenge_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The 12 hex characters of a digest that progress lines show.
pub(crate) fn short(digest: &str) -> String {
    digest
        .split_once(':')
        .map_or(digest, |(_, h)| h)
        .chars()
        .take(12)
        .collect()
}

/// Turns a protocol error into one that names the registry and, for
/// refused credentials, says so plainly.
pub(crate) fn registry_error(
    host: &str,
    what: &str,
    e: oci_client::errors::OciDistributionError,
) -> anyhow::Error {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    let refused = match &e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
        E::ServerError { code, .. } => *code == 401,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized)),
        _ => false,
    };
    if refused {
        return anyhow::anyhow!(
            "{what}: registry {host} answered 401 Unauthorized: the credentials are missing or wrong (berth-build login {host}): {e}"
        );
    }
    match &e {
        E::RequestError(re) => {
            // reqwest's Display omits the cause (connection refused, TLS).
            let mut msg = format!("{what}: registry {host}: {re}");
            let mut src = std::error::Error::source(re);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            anyhow::anyhow!(msg)
        }
        _ => anyhow::anyhow!("{what}: registry {host}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_reference_defaults() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x:v1", "localhost/x:v1"),
            ("Reg.Example.com:443/a/b:c", "reg.example.com:443/a/b:c"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(
                RemoteRef::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        let hex = "a".repeat(64);
        let r = RemoteRef::parse(&format!("localhost:5000/x@sha256:{hex}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{hex}").as_str()));
        let r = RemoteRef::parse(&format!("x:v1@sha256:{hex}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn malformed_references_are_refused_clearly() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "x@sha256:abc",
            "host:port/x",
            "-x",
            "a:b:c",
        ] {
            let e = RemoteRef::parse(bad).unwrap_err();
            assert!(
                format!("{e:#}").contains("invalid reference format"),
                "{bad}: {e:#}"
            );
        }
    }

    #[test]
    fn platforms() {
        assert_eq!(
            PlatformSpec::parse("linux/arm64").unwrap().architecture,
            "arm64"
        );
        assert_eq!(
            PlatformSpec::parse("linux/arm/v7")
                .unwrap()
                .variant
                .as_deref(),
            Some("v7")
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "Linux/amd64"] {
            assert!(PlatformSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
