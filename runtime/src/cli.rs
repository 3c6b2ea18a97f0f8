//! Command line, shaped exactly like runc's so containerd, podman/conmon and
//! people can swap `runc` for `berth`.
//!
//! runc uses Go's flag package, which accepts `-flag`, `--flag`, `-flag=v`,
//! `--flag v` and `-boolflag=false`. clap only knows GNU style, so
//! [`normalize_args`] rewrites the Go forms first.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_ROOT: &str = "/run/berth";

impl Cli {
    /// `--rootless` given as true: what `spec` uses (it never guesses).
    pub fn rootless(&self) -> bool {
        self.rootless.as_deref() == Some("true")
    }

    /// Whether containers are made the rootless way (cgroups that cannot be
    /// created are skipped when no limit needs them). As runc: `true` or
    /// `false` when given, else (`auto`) when not running as root or when
    /// root only inside a user namespace (nested in a rootless container).
    pub fn rootless_mode(&self) -> bool {
        match self.rootless.as_deref() {
            Some("true") => true,
            Some("false") => false,
            _ => !nix::unistd::Uid::effective().is_root() || in_user_namespace(),
        }
    }

    /// The state root: `--root`, else as runc `$XDG_RUNTIME_DIR/berth` for
    /// a non-root user who has one, else /run/berth.
    pub fn state_root(&self) -> PathBuf {
        if let Some(root) = &self.root {
            return root.clone();
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() && !nix::unistd::Uid::effective().is_root() => {
                PathBuf::from(dir).join("berth")
            }
            _ => PathBuf::from(DEFAULT_ROOT),
        }
    }
}

/// Not in the initial user namespace, whose uid_map is the full identity
/// map `0 0 4294967295`.
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    about = "berth: a runc-compatible OCI container runtime",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print version information (`berth version X`, `spec: Y`).
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Enable debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Append log records to this file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Root directory for container state (default /run/berth, or
    /// $XDG_RUNTIME_DIR/berth for a non-root user).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Path to criu (accepted for compatibility; checkpoint is not supported).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Use systemd to manage cgroups (not supported: reported as an error).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once per process: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new specification file (config.json).
    Spec(SpecArgs),
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start(IdArg),
    /// Create and start a container (foreground unless -d).
    Run(RunArgs),
    /// Output the state of a container as JSON.
    State(IdArg),
    /// List containers.
    List(ListArgs),
    /// Send a signal to the container's init process.
    Kill(KillArgs),
    /// Delete a container and its resources.
    Delete(DeleteArgs),
    /// Run a new process inside a running container.
    Exec(ExecArgs),
    /// Show the processes running in a container.
    Ps(PsArgs),
    /// Show the runtime's enabled features (JSON).
    Features,
    /// Suspend every process in the container (cgroup freezer).
    Pause(IdArg),
    /// Resume every process of a paused container.
    Resume(IdArg),
    /// Change the resource limits of a running container.
    Update(UpdateArgs),
    /// Print resource usage and OOM events of a container as JSON lines.
    Events(EventsArgs),
}

impl Command {
    /// The subcommand's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Spec(_) => "spec",
            Command::Create(_) => "create",
            Command::Start(_) => "start",
            Command::Run(_) => "run",
            Command::State(_) => "state",
            Command::List(_) => "list",
            Command::Kill(_) => "kill",
            Command::Delete(_) => "delete",
            Command::Exec(_) => "exec",
            Command::Ps(_) => "ps",
            Command::Features => "features",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Update(_) => "update",
            Command::Events(_) => "events",
        }
    }
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Directory to write config.json to.
    #[arg(short = 'b', long)]
    pub bundle: Option<PathBuf>,
    // `--rootless` is the global flag (`berth spec --rootless` still parses).
}

#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Path to the OCI bundle (default: current directory).
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Unix socket that receives a pidfd of the init process.
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    /// File to write the init process's host pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (3..3+N) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Detach from the container's process (`create` always does).
    #[arg(short = 'd', long)]
    pub detach: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Everything `create` takes (`-d/--detach` detaches from the process).
    #[command(flatten)]
    pub create: CreateArgs,
    /// Keep the container's state after the process exits.
    #[arg(long)]
    pub keep: bool,
    /// Do not make berth a child subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format: table or json.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// Display only container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Send the signal to every process in the container.
    #[arg(short = 'a', long)]
    pub all: bool,
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number (default SIGTERM).
    pub signal: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container if it is still running.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// UID[:GID] to run as.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Additional group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// process.json describing the process (as in config.json's "process").
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Detach from the process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability to the process's bounding/effective/permitted sets.
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run in a sub-cgroup of the container (accepted, ignored).
    #[arg(long = "cgroup")]
    pub cgroup: Vec<String>,
    /// Allow exec into a paused container.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    /// Command and arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Output format: table or json.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Options passed to ps(1).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `update`: runc's flags. Values stay strings so update.rs can parse them
/// with runc's syntax (memory sizes like `100M`, `-1` for unlimited).
#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// LinuxResources JSON file, or `-` for stdin; all other flags are then ignored.
    #[arg(short = 'r', long, allow_hyphen_values = true)]
    pub resources: Option<String>,
    /// Per cgroup weight, 10 to 1000.
    #[arg(long = "blkio-weight", allow_hyphen_values = true)]
    pub blkio_weight: Option<String>,
    /// CPU CFS period (usecs).
    #[arg(long = "cpu-period", allow_hyphen_values = true)]
    pub cpu_period: Option<String>,
    /// CPU CFS quota (usecs) per period; -1 for unlimited.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<String>,
    /// CPU shares (relative weight).
    #[arg(
        long = "cpu-share",
        visible_alias = "cpu-shares",
        allow_hyphen_values = true
    )]
    pub cpu_share: Option<String>,
    /// CPU realtime period (usecs).
    #[arg(long = "cpu-rt-period", allow_hyphen_values = true)]
    pub cpu_rt_period: Option<String>,
    /// CPU realtime runtime (usecs) per period.
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<String>,
    /// CPUs to use (e.g. 0-1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a k/m/g/t/p suffix); -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit).
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Total memory + swap; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Ignored (kernel memory limits are deprecated), as in runc.
    #[arg(long = "kernel-memory", allow_hyphen_values = true, hide = true)]
    pub kernel_memory: Option<String>,
    /// Ignored (kernel memory limits are deprecated), as in runc.
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true, hide = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of pids; -1 for unlimited.
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// Intel RDT/CAT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT/MBA memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Stats collection interval (Go duration: 5s, 500ms, 1m30s).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Print the container's stats once, then exit.
    #[arg(long)]
    pub stats: bool,
    pub id: String,
}

/// Long flags that take a value: needed to know where positionals begin.
const VALUE_FLAGS: &[&str] = &[
    "log",
    "log-format",
    "root",
    "criu",
    "bundle",
    "console-socket",
    "pidfd-socket",
    "pid-file",
    "preserve-fds",
    "format",
    "cwd",
    "env",
    "user",
    "additional-gids",
    "process",
    "process-label",
    "apparmor",
    "cap",
    "cgroup",
    "resources",
    "blkio-weight",
    "cpu-period",
    "cpu-quota",
    "cpu-share",
    "cpu-shares",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpuset-cpus",
    "cpuset-mems",
    "memory",
    "memory-reservation",
    "memory-swap",
    "kernel-memory",
    "kernel-memory-tcp",
    "pids-limit",
    "l3-cache-schema",
    "mem-bw-schema",
    "interval",
];

/// Boolean long flags; Go lets these be written `-flag=true|false`.
const BOOL_FLAGS: &[&str] = &[
    "debug",
    "systemd-cgroup",
    "no-pivot",
    "no-new-keyring",
    "detach",
    "keep",
    "no-subreaper",
    "quiet",
    "all",
    "force",
    "tty",
    "no-new-privs",
    "ignore-paused",
    "stats",
    "version",
    "help",
];

/// Short flags that take a value.
const SHORT_VALUE_FLAGS: &[&str] = &["b", "f", "e", "u", "g", "p", "c", "r"];

/// Rewrite Go-style arguments into the GNU style clap parses:
/// `-no-subreaper` → `--no-subreaper`, `-log=x` → `--log=x`,
/// `--detach=false` → (dropped), `--detach=true` → `--detach`.
/// Rewriting stops at the first positional after the subcommand (the
/// container id), so a command given to `exec` is passed through untouched.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(argv0) = iter.next() {
        out.push(argv0);
    }
    let mut seen_subcommand = false;
    let mut passthrough = false;
    let mut expect_value = false;
    for arg in iter {
        if passthrough {
            out.push(arg);
            continue;
        }
        if expect_value {
            expect_value = false;
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        if let Some(body) = arg.strip_prefix('-') {
            let body = body.strip_prefix('-').unwrap_or(body);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let is_long_name = name.len() > 1;
            if is_long_name && BOOL_FLAGS.contains(&name) {
                match value {
                    Some("false") | Some("0") => {}
                    _ => out.push(format!("--{name}")),
                }
                continue;
            }
            if is_long_name && VALUE_FLAGS.contains(&name) {
                match value {
                    Some(v) => out.push(format!("--{name}={v}")),
                    None => {
                        out.push(format!("--{name}"));
                        expect_value = true;
                    }
                }
                continue;
            }
            if is_long_name && name == "rootless" {
                out.push(match value {
                    Some(v) => format!("--rootless={v}"),
                    None => "--rootless".to_string(),
                });
                continue;
            }
            if !is_long_name && value.is_none() && SHORT_VALUE_FLAGS.contains(&name) {
                expect_value = true;
            }
            out.push(arg);
            continue;
        }
        if seen_subcommand {
            // First positional of the subcommand (the id): stop rewriting.
            passthrough = true;
        }
        seen_subcommand = true;
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_namespace_is_detected() {
        let host_identity = std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
        assert_eq!(in_user_namespace(), !host_identity);
        // SAFETY: the child only unshares, reads a file and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
                    && in_user_namespace();
                // SAFETY: leave the forked test harness without unwinding.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                assert!(pid > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
    }

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        assert_eq!(
            norm(&["berth", "-root", "/r", "run", "-no-subreaper", "-d", "id"]),
            ["berth", "--root", "/r", "run", "--no-subreaper", "-d", "id"]
        );
    }

    #[test]
    fn go_booleans_with_values() {
        assert_eq!(
            norm(&[
                "berth",
                "--rootless=false",
                "--systemd-cgroup=false",
                "state",
                "x"
            ]),
            ["berth", "--rootless=false", "state", "x"]
        );
        assert_eq!(
            norm(&["berth", "create", "--detach=true", "x"]),
            ["berth", "create", "--detach", "x"]
        );
    }

    #[test]
    fn exec_command_untouched() {
        assert_eq!(
            norm(&["berth", "exec", "-t", "--cwd", "/", "id", "ls", "-help", "--root=x"]),
            ["berth", "exec", "-t", "--cwd", "/", "id", "ls", "-help", "--root=x"]
        );
    }

    #[test]
    fn parses_containerd_create_line() {
        let args = norm(&[
            "berth",
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket=/tmp/s",
            "id1",
        ]);
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.log_format, "json");
        match cli.command {
            Some(Command::Create(c)) => {
                assert_eq!(c.id, "id1");
                assert_eq!(c.pid_file.unwrap(), PathBuf::from("/b/init.pid"));
                assert_eq!(c.console_socket.unwrap(), PathBuf::from("/tmp/s"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn update_takes_negative_values_and_stdin() {
        let cli = Cli::try_parse_from(norm(&[
            "berth",
            "update",
            "--memory",
            "-1",
            "--cpu-quota=-1",
            "-cpu-shares",
            "512",
            "-r",
            "-",
            "id",
        ]))
        .unwrap();
        match cli.command {
            Some(Command::Update(u)) => {
                assert_eq!(u.memory.as_deref(), Some("-1"));
                assert_eq!(u.cpu_quota.as_deref(), Some("-1"));
                assert_eq!(u.cpu_share.as_deref(), Some("512"));
                assert_eq!(u.resources.as_deref(), Some("-"));
                assert_eq!(u.id, "id");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn events_flags_go_style() {
        let cli = Cli::try_parse_from(norm(&["berth", "events", "-stats", "-interval=2s", "id"]))
            .unwrap();
        match cli.command {
            Some(Command::Events(e)) => {
                assert!(e.stats);
                assert_eq!(e.interval, "2s");
                assert_eq!(e.id, "id");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn kill_takes_signal_positional() {
        let cli = Cli::try_parse_from(norm(&["berth", "kill", "--all", "id", "9"])).unwrap();
        match cli.command {
            Some(Command::Kill(k)) => {
                assert!(k.all);
                assert_eq!(k.signal.as_deref(), Some("9"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
