//! berth-buildd: serves the berth.builder.v1 gRPC API on a unix socket.
use berth_builder::exec::run::Runtime;
use berth_builder::store::{Store, DEFAULT_ROOT};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "berth-buildd", version, about = "berth image build daemon")]
struct Args {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/berth/buildd.sock")]
    socket: PathBuf,
    /// Image store directory.
    #[arg(long, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// OCI runtime for RUN steps (default: berth next to this binary or on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let result = (|| -> anyhow::Result<()> {
        let store = Store::open(&args.root)?;
        let runtime = Runtime::locate(args.runtime.as_deref(), args.root.join("runtime"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(berth_builder::daemon::serve(store, runtime, args.socket))
    })();
    if let Err(e) = result {
        eprintln!("berth-buildd: {e:#}");
        std::process::exit(1);
    }
}
