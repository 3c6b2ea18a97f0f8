//! The working-container subcommands of `berth-build`, on the embedded
//! store or (`--addr`, see [`super::remote`]) on berth-buildd's.
use super::run::Overrides;
use crate::exec::run::Runtime;
use crate::store::Store;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum WorkCommand {
    /// Make a working container from an image.
    From {
        image: String,
        /// Name (default: <image>-working-container[-N]).
        #[arg(long)]
        name: Option<String>,
    },
    /// List working containers.
    Containers {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove working containers (overlay, mounts and state).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a working container.
    #[command(disable_help_flag = true)]
    Run(Box<RunArgs>),
    /// Make an image from a working container: its image plus one layer.
    Commit {
        name: String,
        image: Option<String>,
        /// Commit message (the history entry's comment).
        #[arg(short, long)]
        message: Option<String>,
        /// Author.
        #[arg(short, long)]
        author: Option<String>,
        /// Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, EXPOSE,
        /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
        #[arg(short, long = "change")]
        change: Vec<String>,
    },
    /// List the changes of a working container (A added, C changed, D deleted).
    Diff { name: String },
    /// Copy between a working container and the host (NAME:PATH on one side).
    Cp { source: String, dest: String },
    /// Write a working container's root filesystem as a tar archive.
    Export {
        name: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Make a one-layer image from a root filesystem tar (Docker's `import`).
    Import {
        /// The tar (plain, gzip or zstd).
        archive: PathBuf,
        image: Option<String>,
        /// Commit message (the history entry's comment).
        #[arg(short, long)]
        message: Option<String>,
        /// Dockerfile instruction to apply.
        #[arg(short, long = "change")]
        change: Vec<String>,
    },
}

/// `-e -v -w -u -h -t`, shared with `bundle`.
#[derive(Debug, Clone, Args, Default)]
pub struct OverrideArgs {
    /// Set an environment variable (KEY=VALUE, or KEY from this environment).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Bind-mount a host directory or file: SRC:DST[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name or uid, [:group]).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Hostname.
    #[arg(short = 'h', long = "hostname")]
    pub hostname: Option<String>,
    /// Give the process a terminal.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
}

impl OverrideArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            env: self.env.clone(),
            volumes: self.volume.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            tty: self.tty,
        }
    }
}

/// `bundle IMAGE DIR` with the overrides of `run`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    pub image: String,
    pub dir: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub name: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Keep stdin open and pass it to the process (locally it always is).
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// none or host.
    #[arg(long, default_value = "host")]
    pub network: String,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The command (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs `cmd` against the store at `root`; returns the exit code.
pub fn dispatch(
    root: &std::path::Path,
    runtime: Option<&std::path::Path>,
    cmd: WorkCommand,
) -> Result<i32> {
    let store = Store::open(root)?;
    let locate = || Runtime::locate(runtime, store.root().join("runtime"));
    match cmd {
        WorkCommand::From { image, name } => {
            println!("{}", super::create(&store, &image, name.as_deref())?);
        }
        WorkCommand::Containers { quiet } => {
            let rows = super::list(&store)?
                .into_iter()
                .map(|c| Row {
                    name: c.name,
                    image: c.image,
                    image_digest: c.image_digest,
                    created: c.created,
                })
                .collect();
            print_containers(rows, quiet);
        }
        WorkCommand::Rm { names } => {
            let rt = locate().ok().map(|r| r.binary);
            for n in names {
                super::remove(&store, &n, rt.as_deref())?;
                println!("{n}");
            }
        }
        WorkCommand::Run(a) => {
            let mut c = super::Container::open(&store, &a.name)?;
            let network_host = super::run::parse_network(&a.network)?;
            let rt = locate()?;
            return super::run::run(
                &store,
                &mut c,
                &rt,
                &a.command,
                &a.overrides.overrides(),
                network_host,
                super::run::RunIo::Inherit,
            );
        }
        WorkCommand::Commit {
            name,
            image,
            message,
            author,
            change,
        } => {
            let c = super::Container::open(&store, &name)?;
            let digest = super::commit::commit(
                &store,
                &c,
                image.as_deref(),
                &super::commit::CommitOptions {
                    message,
                    author,
                    changes: change,
                },
            )?;
            println!("{digest}");
        }
        WorkCommand::Diff { name } => {
            let c = super::Container::open(&store, &name)?;
            let lowers = c.lowers(&store)?;
            for (k, p) in super::diff::changes(&c.upper(), &lowers)? {
                println!("{} {p}", k.letter());
            }
        }
        WorkCommand::Cp { source, dest } => {
            use super::copy::{parse_endpoint, Endpoint};
            match (parse_endpoint(&source), parse_endpoint(&dest)) {
                (Endpoint::Container { name, path }, Endpoint::Host(h)) => {
                    let c = super::Container::open(&store, &name)?;
                    let root = c.mount(&store)?;
                    super::copy::from_container(&root.path, &path, &h)?;
                }
                (Endpoint::Host(h), Endpoint::Container { name, path }) => {
                    let c = super::Container::open(&store, &name)?;
                    let root = c.mount(&store)?;
                    super::copy::into_container(&root.path, &h, &path)?;
                }
                _ => bail!("cp wants exactly one side as NAME:PATH"),
            }
        }
        WorkCommand::Export { name, output } => {
            let c = super::Container::open(&store, &name)?;
            let root = c.mount(&store)?;
            super::archive::export(&root.path, &output)?;
        }
        WorkCommand::Import {
            archive,
            image,
            message,
            change,
        } => {
            let source = archive.display().to_string();
            let digest = super::archive::import(
                &store,
                &archive,
                &source,
                image.as_deref(),
                message,
                &change,
            )?;
            println!("{digest}");
        }
    }
    Ok(0)
}

/// One line of `containers`.
pub struct Row {
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub created: String,
}

pub fn print_containers(rows: Vec<Row>, quiet: bool) {
    if !quiet {
        println!("{:<32} {:<14} {:<40} CREATED", "NAME", "IMAGE ID", "IMAGE");
    }
    for c in rows {
        if quiet {
            println!("{}", c.name);
            continue;
        }
        let short: String = c
            .image_digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        println!("{:<32} {short:<14} {:<40} {}", c.name, c.image, c.created);
    }
}

/// Runs `cmd` on the local store, or on berth-buildd when `addr` is given.
pub fn dispatch_any(
    addr: Option<&str>,
    root: &std::path::Path,
    runtime: Option<&std::path::Path>,
    cmd: WorkCommand,
) -> Result<i32> {
    match addr {
        Some(a) => super::remote::dispatch(a, cmd),
        None => dispatch(root, runtime, cmd),
    }
}
