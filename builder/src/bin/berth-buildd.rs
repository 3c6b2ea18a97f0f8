//! berth-buildd: serves the berth.builder.v1 gRPC API on a unix socket.
use berth_builder::daemon::{
    socket, ServeOptions, DEFAULT_MAX_CONTEXT_SIZE, DEFAULT_MAX_IMPORT_SIZE,
};
use berth_builder::exec::run::Runtime;
use berth_builder::store::{Store, DEFAULT_ROOT};
use clap::Parser;
use std::path::PathBuf;

const ABOUT_SECURITY: &str = "\
Who may use the socket: anyone who can connect to berth-buildd can run \
arbitrary RUN steps as root, bind build contexts and write the image \
store, so access to the socket is root on this host (as with docker.sock \
and buildkitd). The socket is created mode 0660, owned by the daemon's \
user (root) and --group (default root), whatever the umask or the mode of \
its directory; add to that group only users you would give root.

Limits: a Dockerfile may be at most 2 MiB, an image config at most 4 MiB, \
a build context stream at most --max-context-size, an image archive \
sent to load at most --max-import-size.";

#[derive(Parser)]
#[command(
    name = "berth-buildd",
    version,
    about = "berth image build daemon",
    after_long_help = ABOUT_SECURITY
)]
struct Args {
    /// Unix socket to listen on (created 0660 owner:--group).
    #[arg(long, default_value = "/run/berth/buildd.sock")]
    socket: PathBuf,
    /// Group (name or gid) that owns the socket; its members get root-equivalent access.
    #[arg(short = 'G', long, default_value = "root")]
    group: String,
    /// Largest build context a client may stream, in bytes (default 8 GiB).
    #[arg(long, default_value_t = DEFAULT_MAX_CONTEXT_SIZE)]
    max_context_size: u64,
    /// Largest image archive a client may send to `load`, in bytes
    /// (default 32 GiB).
    #[arg(long, default_value_t = DEFAULT_MAX_IMPORT_SIZE)]
    max_import_size: u64,
    /// Image store directory.
    #[arg(long, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// OCI runtime for RUN steps (default: berth next to this binary or on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Registries configuration (plain http, CA certificates, mirrors);
    /// default /etc/berth/registries.toml when it exists.
    #[arg(long = "registries-config")]
    registries_config: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let result = (|| -> anyhow::Result<()> {
        let gid = socket::parse_group(&args.group)?;
        let store = Store::open(&args.root)?;
        let runtime = Runtime::locate(args.runtime.as_deref(), args.root.join("runtime"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(berth_builder::daemon::serve(
            store,
            runtime,
            ServeOptions {
                socket: args.socket,
                gid,
                max_context_size: args.max_context_size,
                max_import_size: args.max_import_size,
                registries: berth_builder::registry::HostsConfig::load(
                    args.registries_config.as_deref(),
                )?,
            },
        ))
    })();
    if let Err(e) = result {
        eprintln!("berth-buildd: {e:#}");
        std::process::exit(1);
    }
}
