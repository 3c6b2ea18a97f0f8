//! `berth-build`: the command-line client. Each command runs against a
//! [`Backend`]: the engine in-process (default) or `berth-buildd` over gRPC
//! (`--addr unix:///path`).
mod about;
mod args;
mod embedded;
mod images;
mod login;
mod remote;
mod transfer_ui;

pub use args::{Cli, Command};
pub(crate) use remote::channel;

use crate::engine::BuildOptions;
use crate::export::Format;
use crate::progress::Progress;
use crate::registry::{
    Credential, Credentials, HostsConfig, PullOutcome, PushOutcome, Registry, TransferProgress,
};
use crate::store::{DiskUsage, PruneReport};
use anyhow::{Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};

/// One image as listed by `images`.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub tags: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Config digest: the image ID Docker and podman show.
    pub id: String,
    /// Compressed blobs (layers and config) as stored.
    pub size: u64,
    /// Docker's image size (unpacked layer content): the SIZE column.
    pub unpacked_size: u64,
    pub created: String,
}

/// What the commands need from the engine and store.
pub trait Backend {
    fn build(&self, opts: &BuildOptions, progress: &dyn Progress) -> Result<String>;
    /// `build --print`: the plan of `opts` with each step's cache key, as
    /// JSON (docs/build-plan.md); builds nothing.
    fn plan(&self, opts: &BuildOptions) -> Result<String>;
    fn images(&self) -> Result<Vec<ImageRow>>;
    /// (manifest digest, manifest JSON, config JSON)
    fn inspect(&self, name: &str) -> Result<(String, String, String)>;
    fn tag(&self, src: &str, dst: &str) -> Result<()>;
    fn remove(&self, name: &str) -> Result<()>;
    /// Newest first, as Docker lists it.
    fn history(&self, name: &str) -> Result<Vec<crate::store::HistoryRow>>;
    /// Writes an oci or docker archive of `name` to `dest` (a file).
    /// With `also`: more names of the same image to record (build's other
    /// `-t`s); names the image does not have are skipped.
    fn save(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()>;
    fn load(&self, src: &Path) -> Result<Vec<(String, String)>>;
    fn disk_usage(&self) -> Result<DiskUsage>;
    fn prune(&self) -> Result<PruneReport>;
    /// Writes an OCI bundle of `name` into `dir`.
    fn bundle(&self, name: &str, dir: &Path) -> Result<()>;
    /// Exports to a directory (oci layout or local filesystem).
    /// `also` as for [`Backend::save`] (an OCI layout records every name).
    fn export_dir(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()>;
    /// Downloads `reference` from its registry into the store.
    fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PullOutcome>;
    /// Uploads the stored `image` to `dest` (default: its own name).
    fn push(
        &self,
        image: &str,
        dest: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PushOutcome>;
}

/// How this client reaches registries: its registries config and its
/// Docker config.json (credentials).
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub docker_config: PathBuf,
    pub registries_config: Option<PathBuf>,
}

impl RegistryAccess {
    pub fn from_cli(cli: &Cli) -> Self {
        Self {
            docker_config: crate::registry::auth::config_dir(cli.config.as_deref()),
            registries_config: cli.registries_config.clone(),
        }
    }

    /// Registry settings with credentials read from the Docker config.
    pub fn registry(&self) -> Result<Registry> {
        Ok(Registry::new(
            HostsConfig::load(self.registries_config.as_deref())?,
            Credentials::DockerConfig(self.docker_config.clone()),
        ))
    }

    /// The credentials to send to the daemon for `hosts` (all configured
    /// hosts when `None`, for builds whose `FROM` lines the client does not read).
    pub fn credentials_for(&self, hosts: Option<&[String]>) -> Result<Vec<(String, Credential)>> {
        let cfg = crate::registry::auth::DockerConfig::load(&self.docker_config)?;
        let wanted = match hosts {
            Some(h) => h.to_vec(),
            None => cfg.hosts(),
        };
        let mut out = Vec::new();
        for h in wanted {
            if let Some(c) = cfg.get(&h)? {
                out.push((h, c));
            }
        }
        Ok(out)
    }
}

/// Entry point of the `berth-build` binary.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        // `berth-build images | head`: the reader left; exit quietly.
        Err(e) if images::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("berth-build: {e:#}");
            1
        }
    }
}

fn backend(cli: &Cli) -> Result<Box<dyn Backend>> {
    let access = RegistryAccess::from_cli(cli);
    match &cli.addr {
        Some(addr) => Ok(Box::new(remote::Remote::connect(addr, access)?)),
        None => Ok(Box::new(embedded::Embedded::new(
            &cli.root,
            cli.runtime.as_deref(),
            access,
        )?)),
    }
}

/// Parses `-o type=oci,dest=PATH`.
pub fn parse_output(spec: &str) -> Result<(Format, PathBuf)> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.parse::<Format>()?),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => anyhow::bail!("bad output spec {spec:?}: want type=oci|docker|local,dest=PATH"),
        }
    }
    Ok((
        kind.context("output spec needs type=")?,
        dest.context("output spec needs dest=")?,
    ))
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // Credentials are the client's business: no store or daemon needed.
    match &cli.command {
        Command::Login {
            username,
            password_stdin,
            registry,
        } => {
            return login::login(
                &RegistryAccess::from_cli(&cli),
                username.as_deref(),
                *password_stdin,
                registry,
            )
        }
        Command::Logout { registry } => {
            return login::logout(&RegistryAccess::from_cli(&cli), registry)
        }
        // What this client and its daemon are.
        Command::Version => return about::version(&cli),
        Command::Info => return about::info(&cli),
        _ => {}
    }
    if let Command::Work(w) = cli.command {
        // The local store, or berth-buildd's WorkingContainers service.
        let code = crate::workctr::cli::dispatch_any(
            cli.addr.as_deref(),
            &cli.root,
            cli.runtime.as_deref(),
            w,
        )?;
        if code != 0 {
            // `run` passes the process's exit status on; every guard of the
            // run has been dropped by now.
            std::process::exit(code);
        }
        return Ok(());
    }
    let be = backend(&cli)?;
    match cli.command {
        Command::Build(b) => {
            // Refuse bad names before any work (the store refuses them too).
            for t in &b.tag {
                crate::store::canonical_tag(t).with_context(|| format!("-t {t:?}"))?;
            }
            let outputs: Vec<(Format, PathBuf)> = b
                .output
                .iter()
                .map(|o| parse_output(o))
                .collect::<Result<_>>()?;
            let mut opts = BuildOptions::new(
                b.context.clone(),
                crate::exec::run::Runtime {
                    binary: PathBuf::new(),
                    state_root: PathBuf::new(),
                },
            );
            opts.dockerfile = b.file.clone();
            opts.tags = b.tag.clone();
            for a in &b.build_arg {
                let (k, v) = a
                    .split_once('=')
                    .with_context(|| format!("--build-arg {a:?}: want KEY=VALUE"))?;
                opts.build_args.insert(k.to_string(), v.to_string());
            }
            for s in &b.secret {
                let mut id = None;
                let mut src = None;
                for part in s.split(',') {
                    match part.split_once('=') {
                        Some(("id", v)) => id = Some(v.to_string()),
                        Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                        _ => anyhow::bail!("bad --secret {s:?}: want id=ID,src=PATH"),
                    }
                }
                opts.secrets.insert(
                    id.context("--secret needs id=")?,
                    src.context("--secret needs src=")?,
                );
            }
            opts.target = b.target.clone();
            opts.no_cache = b.no_cache;
            opts.compression = b.compression.parse()?;
            opts.pull = b.pull;
            for c in &b.cache_from {
                opts.cache_from
                    .push(crate::registry::cache::parse_cache_spec(c).context("--cache-from")?);
            }
            if let Some(c) = &b.cache_to {
                opts.cache_to =
                    Some(crate::registry::cache::parse_cache_spec(c).context("--cache-to")?);
            }
            opts.network_host = match b.network.as_str() {
                "host" | "default" => true,
                "none" => false,
                o => anyhow::bail!("unknown --network {o:?} (default, host or none)"),
            };
            if b.print {
                // After every option a step's key covers (--network).
                println!("{}", be.plan(&opts)?);
                return Ok(());
            }
            let ui = crate::ui::renderer(b.progress.parse()?);
            let digest = be.build(&opts, ui.as_ref())?;
            // Archives record the build's names (every -t), not other tags
            // the image happens to have; without -t, no name.
            let name = opts.tags.first().unwrap_or(&digest);
            let also = opts.tags.get(1..).unwrap_or_default();
            for (format, dest) in outputs {
                match format {
                    Format::Docker => be.save(name, also, format, &dest)?,
                    Format::Oci if dest.extension().is_some_and(|e| e == "tar") => {
                        be.save(name, also, format, &dest)?
                    }
                    _ => be.export_dir(name, also, format, &dest)?,
                }
            }
            println!("{digest}");
        }
        Command::Images(a) => {
            images::print_images(be.images()?, &a, &mut std::io::stdout().lock())?
        }
        Command::Inspect { image } => {
            let (digest, manifest, config) = be.inspect(&image)?;
            let out = serde_json::json!({
                "Digest": digest,
                "Manifest": serde_json::from_str::<serde_json::Value>(&manifest)?,
                "Config": serde_json::from_str::<serde_json::Value>(&config)?,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Tag { source, target } => {
            crate::store::canonical_tag(&target)?;
            be.tag(&source, &target)?
        }
        Command::Rmi { images } => {
            for i in images {
                be.remove(&i)?;
                println!("Untagged: {i}");
            }
        }
        Command::History(a) => {
            images::print_history(&be.history(&a.image)?, &a, &mut std::io::stdout().lock())?
        }
        Command::Save {
            image,
            output,
            format,
        } => be.save(&image, &[], format.parse()?, &output)?,
        Command::Load { input } => {
            for (name, digest) in be.load(&input)? {
                println!(
                    "Loaded image: {} ({digest})",
                    if name.is_empty() { "<none>" } else { &name }
                );
            }
        }
        Command::Df => {
            let du = be.disk_usage()?;
            println!("images:        {}", du.images);
            println!(
                "blobs:         {} ({})",
                du.blobs_count,
                human(du.blobs_bytes)
            );
            println!("snapshots:     {}", human(du.snapshots_bytes));
            println!("cache entries: {}", du.cache_entries);
        }
        Command::Prune => {
            let r = be.prune()?;
            println!(
                "removed {} blobs, {} snapshots, {} cache entries; reclaimed {}",
                r.removed_blobs,
                r.removed_snapshots,
                r.removed_cache_entries,
                human(r.reclaimed_bytes)
            );
        }
        Command::Bundle(b) => {
            let dir = &b.dir;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            be.bundle(&b.image, dir)?;
            // Overrides and anonymous volumes on top of what the backend wrote.
            let (_, _, config) = be.inspect(&b.image)?;
            let config: crate::image::ImageConfig =
                serde_json::from_str(&config).context("parsing image config")?;
            let line = crate::workctr::bundle::finish(dir, &config, &b.overrides.overrides())?;
            println!("{line}");
        }
        Command::Pull {
            reference,
            platform,
            progress,
        } => {
            let ui = transfer_ui::renderer(progress.parse()?);
            let o = be.pull(&reference, platform.as_deref(), ui.as_ref())?;
            drop(ui);
            eprintln!(
                "pulled {} ({} blobs, {} downloaded)",
                o.name.as_deref().unwrap_or(&reference),
                o.fetched,
                human(o.fetched_bytes)
            );
            println!("{}", o.digest);
        }
        Command::Push {
            image,
            dest,
            progress,
        } => {
            let ui = transfer_ui::renderer(progress.parse()?);
            let o = be.push(&image, dest.as_deref(), ui.as_ref())?;
            drop(ui);
            eprintln!(
                "pushed {} ({} blobs, {} uploaded)",
                o.reference,
                o.uploaded,
                human(o.uploaded_bytes)
            );
            println!("{}", o.digest);
        }
        Command::Login { .. }
        | Command::Logout { .. }
        | Command::Work(_)
        | Command::Version
        | Command::Info => {}
    }
    Ok(())
}
