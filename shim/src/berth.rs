//! Invokes the `berth` CLI the way containerd-shim-runc-v2 invokes runc (go-runc flags):
//! every call gets `--root R --log <bundle>/log.json --log-format json`.
//!
//! The shim is a subreaper whose SIGCHLD handler (containerd-shim crate) reaps every child,
//! so `Child::wait` would race it; exit codes come from the crate's exit monitor instead.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use containerd_shim::debug;
use containerd_shim::monitor::{ExitEvent, Subject, Topic};
use containerd_shim::synchronous::monitor::monitor_subscribe;

/// The berth binary plus the global flags every call carries.
#[derive(Debug, Clone)]
pub struct Berth {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
}

/// stdio handed to `berth create`/`berth exec`; for create it becomes the container's stdio.
pub struct ChildStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ChildStdio {
    pub fn null() -> ChildStdio {
        ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// What the runtime printed, once it exited successfully.
pub struct Output {
    pub stdout: Vec<u8>,
}

/// A runtime failure, with the last `level=error` message berth logged.
#[derive(Debug)]
pub struct BerthError {
    pub message: String,
}

impl std::fmt::Display for BerthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BerthError {}

/// Default state root for a containerd namespace, next to runc's `/run/containerd/runc/<ns>`.
pub fn default_root(namespace: &str) -> PathBuf {
    Path::new("/run/containerd/berth").join(namespace)
}

/// Runtime options' BinaryName if set, else `berth` on PATH, else next to the shim binary.
pub fn find_binary(binary_name: &str) -> Result<PathBuf> {
    if !binary_name.is_empty() {
        let p = Path::new(binary_name);
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        return search_path(binary_name)
            .ok_or_else(|| anyhow!("runtime binary {binary_name} not found on PATH"));
    }
    if let Some(p) = search_path("berth") {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locate the shim binary")?;
    let sibling = exe.with_file_name("berth");
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!("berth not found on PATH nor next to {}", exe.display())
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Berth {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        cmd
    }

    /// `create --bundle B --pid-file P [--console-socket S] ID`.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg(id);
        self.run_with_stdio(cmd, stdio).map(drop)
    }

    /// `exec --process F --detach --pid-file P [--console-socket S] ID`.
    pub fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--process")
            .arg(process_json)
            .arg("--detach")
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg(id);
        self.run_with_stdio(cmd, stdio).map(drop)
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.simple(&["start", id]).map(drop)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        if all {
            self.simple(&["kill", "--all", id, &sig]).map(drop)
        } else {
            self.simple(&["kill", id, &sig]).map(drop)
        }
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        if force {
            self.simple(&["delete", "--force", id]).map(drop)
        } else {
            self.simple(&["delete", id]).map(drop)
        }
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.simple(&["pause", id]).map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.simple(&["resume", id]).map(drop)
    }

    /// `update --resources - ID` with LinuxResources JSON on stdin.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        let mut cmd = self.command();
        cmd.args(["update", "--resources", "-", id]);
        self.run(cmd, Some(resources_json)).map(drop)
    }

    /// Pids of every process in the container (`ps --format json`).
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.simple(&["ps", "--format", "json", id])?;
        serde_json::from_slice(&out.stdout).context("parse berth ps output")
    }

    fn simple(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command();
        cmd.args(args);
        self.run(cmd, None)
    }

    fn run(&self, mut cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let log_start = self.log_len();
        let started = Instant::now();
        let sub = monitor_subscribe(Topic::Pid).context("subscribe to exit monitor")?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.binary.display()))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).context("write berth stdin")?;
        }
        let mut stdout = Vec::new();
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_end(&mut stdout).context("read berth stdout")?;
        }
        let code = wait_exit(child.id() as i32, sub)?;
        log_timing(&subcommand(&cmd), code, started);
        self.check_code(code, log_start)?;
        Ok(Output { stdout })
    }

    fn run_with_stdio(&self, mut cmd: Command, stdio: ChildStdio) -> Result<Output> {
        cmd.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let log_start = self.log_len();
        let started = Instant::now();
        let sub = monitor_subscribe(Topic::Pid).context("subscribe to exit monitor")?;
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.binary.display()))?;
        let name = subcommand(&cmd);
        // Our copies of the stdio fds must close now so readers see EOF when the
        // container (their only other holder) exits.
        drop(cmd);
        let code = wait_exit(child.id() as i32, sub)?;
        log_timing(&name, code, started);
        self.check_code(code, log_start)?;
        Ok(Output { stdout: Vec::new() })
    }

    fn check_code(&self, code: i32, log_start: u64) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let message = self
            .last_error_since(log_start)
            .unwrap_or_else(|| format!("berth exited with status {code}"));
        Err(BerthError { message }.into())
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The last `level=error` message berth appended since `start` (containerd does the same).
    fn last_error_since(&self, start: u64) -> Option<String> {
        let mut f = File::open(&self.log).ok()?;
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
            .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
    }
}

/// Debug log of each berth call (containerd shows it with `-debug`): the subcommand, its
/// status and how long it took, which is most of the shim's latency.
fn log_timing(subcommand: &str, code: i32, started: Instant) {
    debug!(
        "berth {subcommand}: status {code} in {:?}",
        started.elapsed()
    );
}

/// The berth subcommand of `cmd`: the global flags come first (6 words).
fn subcommand(cmd: &Command) -> String {
    cmd.get_args()
        .nth(6)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Waits for the reaper to report `pid`'s exit; the subscription was taken before the
/// spawn so an early exit is queued, not lost.
fn wait_exit(pid: i32, sub: containerd_shim::synchronous::monitor::Subscription) -> Result<i32> {
    loop {
        match sub.rx.recv() {
            Ok(ExitEvent {
                subject: Subject::Pid(p),
                exit_code,
            }) if p == pid => return Ok(exit_code),
            Ok(_) => continue,
            Err(_) => bail!("exit monitor closed while waiting for pid {pid}"),
        }
    }
}

/// Reads a pid file written by `berth create`/`exec --pid-file`.
pub fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("parse pid in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-shim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn last_error_only_looks_at_new_records() {
        let dir = scratch("log");
        let log = dir.join("log.json");
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"old failure\"}\n").unwrap();
        let b = Berth {
            binary: PathBuf::from("/bin/false"),
            root: dir.clone(),
            log: log.clone(),
        };
        let start = b.log_len();
        assert_eq!(b.last_error_since(start), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(f, "{{\"level\":\"info\",\"msg\":\"noise\"}}").unwrap();
        writeln!(
            f,
            "{{\"level\":\"error\",\"msg\":\"container \\\"x\\\" does not exist\"}}"
        )
        .unwrap();
        writeln!(f, "{{\"level\":\"warning\",\"msg\":\"later\"}}").unwrap();
        assert_eq!(
            b.last_error_since(start).as_deref(),
            Some("container \"x\" does not exist")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn binary_name_wins_and_missing_names_fail() {
        assert_eq!(
            find_binary("/opt/x/berth").unwrap(),
            PathBuf::from("/opt/x/berth")
        );
        assert!(find_binary("surely-not-a-binary-on-path-4711").is_err());
    }

    #[test]
    fn pid_files_are_trimmed() {
        let dir = scratch("pid");
        let p = dir.join("init.pid");
        std::fs::write(&p, "4242").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 4242);
        std::fs::write(&p, "x").unwrap();
        assert!(read_pid(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
