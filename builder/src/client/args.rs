//! Command-line syntax of `berth-build`.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "berth-build",
    version,
    about = "Build and manage OCI images with berth"
)]
pub struct Cli {
    /// Image store directory (embedded mode).
    #[arg(long, global = true, default_value = crate::store::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// berth-buildd address (unix:///path); without it the engine runs in-process.
    #[arg(long, global = true)]
    pub addr: Option<String>,
    /// OCI runtime for RUN steps (default: berth next to this binary or on PATH).
    #[arg(long, global = true)]
    pub runtime: Option<PathBuf>,
    /// Directory of the Docker client config.json holding registry
    /// credentials (default: $DOCKER_CONFIG, else ~/.docker).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Registries configuration (plain http, CA certificates, mirrors).
    #[arg(long = "registries-config", global = true)]
    pub registries_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// List images.
    Images(super::images::ImagesArgs),
    /// Show an image's manifest and config.
    Inspect { image: String },
    /// Add a name to an image.
    Tag { source: String, target: String },
    /// Remove image names (blobs go on `prune`).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's history.
    History(super::images::HistoryArgs),
    /// Write an image archive.
    Save {
        image: String,
        #[arg(short, long)]
        output: PathBuf,
        /// docker (docker-archive) or oci.
        #[arg(long, default_value = "docker")]
        format: String,
    },
    /// Import an OCI or docker archive.
    Load {
        #[arg(short, long)]
        input: PathBuf,
    },
    /// Show disk usage of the store.
    Df,
    /// Remove build cache and everything no image uses.
    Prune,
    /// Write an OCI runtime bundle (rootfs + config.json) for an image,
    /// with the overrides of `run` (-e -v -w -u -h -t); prints the `berth run` line.
    #[command(disable_help_flag = true)]
    Bundle(crate::workctr::cli::BundleArgs),
    /// Working containers (from, containers, rm, run, commit, diff).
    #[command(flatten)]
    Work(crate::workctr::cli::WorkCommand),
    /// Download an image from a registry.
    Pull {
        reference: String,
        /// Platform to choose from a multi-platform image (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
        /// auto, plain or tty.
        #[arg(long, default_value = "auto")]
        progress: String,
    },
    /// Upload an image to a registry (as DEST, default its own name).
    Push {
        image: String,
        dest: Option<String>,
        /// auto, plain or tty.
        #[arg(long, default_value = "auto")]
        progress: String,
    },
    /// Store credentials for a registry in the Docker config.json.
    Login {
        #[arg(short = 'u', long)]
        username: Option<String>,
        /// Read the password from standard input.
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        registry: String,
    },
    /// Remove a registry's credentials.
    Logout { registry: String },
    /// Show the version of this client (and of berth-buildd with --addr).
    Version,
    /// Show the store, runtime and build defaults (of berth-buildd with --addr).
    Info,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name for the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tag: Vec<String>,
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// auto, plain or tty.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// type=oci|docker|local,dest=PATH (repeatable).
    #[arg(short = 'o', long = "output")]
    pub output: Vec<String>,
    /// gzip or zstd.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// id=ID,src=PATH for RUN --mount=type=secret.
    #[arg(long)]
    pub secret: Vec<String>,
    /// Default network of RUN steps: default (networked, as `docker
    /// build`: the host's network, there being no CNI bridge), host, or none.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Pull every base image again, even if the store has it.
    #[arg(long)]
    pub pull: bool,
    /// type=registry,ref=REF: reuse steps cached there (repeatable).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// type=registry,ref=REF: export this build's cache there.
    #[arg(long = "cache-to")]
    pub cache_to: Option<String>,
    /// Print the resolved build plan (needed stages, dependencies first,
    /// with every instruction as the engine runs it: words expanded, base
    /// images' ONBUILD triggers in place, build args in effect) as JSON,
    /// and build nothing. Each step has `cache_key` (the key the build
    /// looks it up with, null with `pending` when it can only be known
    /// once the build runs), `key_inputs` (each field hashed, by name:
    /// parent key, command, env, user, workdir, mounts, network, sources'
    /// content digests…), `cached` (the store has it now) and, on a miss,
    /// `miss_reason`. See docs/build-plan.md.
    #[arg(long)]
    pub print: bool,
    pub context: PathBuf,
}
