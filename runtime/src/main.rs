//! berth: a runc-compatible OCI runtime.

mod bundle;
mod cgroup_join;
mod cli;
mod console;
mod create;
mod device_rules;
mod events;
mod exec;
mod features;
mod foreground;
mod hooks;
mod init;
mod intermediate;
mod lifecycle;
mod logging;
mod lsm;
mod namespaces;
mod pause;
mod process;
mod procfs;
mod rootfs;
mod run;
mod seccomp;
mod selfexe;
mod signals;
mod spec_template;
mod state;
mod sync;
mod update;

use anyhow::{bail, Result};
use clap::Parser;
use cli::{Cli, Command};

fn main() {
    let args = cli::normalize_args(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let format = match cli.log_format.as_str() {
        "json" => logging::LogFormat::Json,
        "text" => logging::LogFormat::Text,
        other => {
            eprintln!("berth: invalid log format {other:?}: must be text or json");
            std::process::exit(1);
        }
    };
    logging::init(cli.log.clone(), format, cli.debug);
    let started = std::time::Instant::now();
    let name = cli.command.as_ref().map_or("berth", Command::name);
    logging::debug(&format!("{name}: start"));
    let result = dispatch(&cli);
    logging::debug(&format!(
        "{name}: {} after {:?}",
        if result.is_ok() { "done" } else { "failed" },
        started.elapsed()
    ));
    match result {
        Ok(code) => std::process::exit(code),
        // runc exits 255 when `exec` itself fails, so callers can tell that apart
        // from the process's own exit status (1..254), and says so.
        Err(e) if matches!(cli.command, Some(Command::Exec(_))) => {
            logging::error(&format!("exec failed: {e:#}"));
            std::process::exit(EXEC_FAILED);
        }
        Err(e) => {
            logging::error(&format!("{e:#}"));
            std::process::exit(1);
        }
    }
}

/// Exit status of an `exec` that could not run its process (runc's).
const EXEC_FAILED: i32 = 255;

fn print_version() {
    println!("berth version {}", env!("CARGO_PKG_VERSION"));
    println!(
        "commit: {}",
        option_env!("BERTH_COMMIT").unwrap_or("unknown")
    );
    println!("spec: {}", state::OCI_VERSION);
}

fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.version {
        print_version();
        return Ok(0);
    }
    let Some(command) = &cli.command else {
        bail!("no command given; see `berth --help`");
    };
    if cli.systemd_cgroup {
        bail!("systemd cgroup driver is not supported (--systemd-cgroup)");
    }
    let state_root = cli.state_root();
    let root = state_root.as_path();
    match command {
        Command::Spec(a) => {
            let bundle = a.bundle.clone().unwrap_or_else(|| ".".into());
            spec_template::write_spec(&bundle, cli.rootless())?;
        }
        Command::Create(a) => {
            process::check_preserved_fds(a.preserve_fds)?;
            selfexe::ensure_cloned()?;
            create::create(&create::CreateOptions {
                root,
                args: a,
                console_fd: None,
                rootless: cli.rootless_mode(),
            })?;
        }
        Command::Start(a) => lifecycle::start(root, &a.id)?,
        Command::Run(a) => {
            process::check_preserved_fds(a.create.preserve_fds)?;
            selfexe::ensure_cloned()?;
            return run::run(root, a, cli.rootless_mode());
        }
        Command::State(a) => lifecycle::print_state(root, &a.id)?,
        Command::List(a) => lifecycle::list(root, &a.format, a.quiet)?,
        Command::Kill(a) => lifecycle::kill_container(root, &a.id, a.signal.as_deref(), a.all)?,
        Command::Delete(a) => lifecycle::delete(root, &a.id, a.force)?,
        Command::Exec(a) => {
            process::check_preserved_fds(a.preserve_fds)?;
            selfexe::ensure_cloned()?;
            return exec::exec(root, a);
        }
        Command::Ps(a) => lifecycle::ps(root, &a.id, &a.format, &a.ps_args)?,
        Command::Features => println!("{}", serde_json::to_string_pretty(&features::features())?),
        Command::Pause(a) => pause::pause(root, &a.id)?,
        Command::Resume(a) => pause::resume(root, &a.id)?,
        Command::Update(a) => update::update(root, a)?,
        Command::Events(a) => events::events(root, &a.id, &a.interval, a.stats)?,
    }
    Ok(0)
}
