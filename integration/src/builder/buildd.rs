//! berth-buildd on a private socket, and `berth-build --addr` against it.

use super::{builder_bin, expect_ok};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running berth-buildd. Drop kills it (SIGKILL, or SIGTERM after
/// [`Buildd::terminate_on_drop`]) and reaps it, even when the test failed;
/// the socket, store and log stay for the test's own directory guard.
pub struct Buildd {
    child: Child,
    socket: PathBuf,
    log: Option<PathBuf>,
    terminate: bool,
}

impl Buildd {
    /// The daemon's command line: `berth-buildd --socket SOCKET --root ROOT
    /// --runtime RUNTIME`, stdin and stdout from/to /dev/null, stderr
    /// discarded. Callers add flags (or a `pre_exec`) before
    /// [`Buildd::spawn`].
    pub fn command(socket: &Path, root: &Path, runtime: &Path) -> Command {
        let mut c = Command::new(builder_bin("berth-buildd"));
        c.arg("--socket")
            .arg(socket)
            .arg("--root")
            .arg(root)
            .arg("--runtime")
            .arg(runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Starts `berth-buildd` on `socket` over the store `root` with
    /// `extra` flags, stderr (and stdout) into `log` when given, and
    /// waits until it accepts connections.
    pub fn start(
        socket: &Path,
        root: &Path,
        runtime: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Buildd {
        let mut cmd = Buildd::command(socket, root, runtime);
        cmd.args(extra);
        if let Some(log) = log {
            let f = std::fs::File::create(log).unwrap();
            cmd.stdout(f.try_clone().unwrap()).stderr(f);
        }
        let mut d = Buildd::spawn(cmd, socket);
        d.log = log.map(Path::to_path_buf);
        d.wait_ready();
        d
    }

    /// Spawns `cmd` (a [`Buildd::command`]) without waiting for the
    /// socket: for tests that watch it come up themselves.
    pub fn spawn(mut cmd: Command, socket: &Path) -> Buildd {
        Buildd {
            child: cmd.spawn().unwrap(),
            socket: socket.to_path_buf(),
            log: None,
            terminate: false,
        }
    }

    /// Waits (up to 20 s) until the socket accepts a connection; panics
    /// with the daemon's log if it exits first or never listens.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "berth-buildd exited ({st}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "berth-buildd did not listen on {}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it with SIGTERM (its orderly shutdown) rather than SIGKILL.
    pub fn terminate_on_drop(mut self) -> Buildd {
        self.terminate = true;
        self
    }

    /// The daemon process (to signal or wait for it).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://SOCKET`, for `--addr`.
    pub fn addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// What the daemon wrote to its log so far ("" without one).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// `berth-build --addr unix://SOCKET ARGS`, stdin from /dev/null.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(builder_bin("berth-build"));
        c.arg("--addr")
            .arg(self.addr())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs [`Buildd::client`] to its end, whatever its status.
    pub fn out(&self, args: &[&str]) -> Output {
        self.client(args).output().unwrap()
    }

    /// Runs it, asserting success (its output and the daemon's log in the
    /// message); returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_err(args).0
    }

    /// Like [`Buildd::ok`], returning stdout and stderr.
    pub fn ok_err(&self, args: &[&str]) -> (String, String) {
        let log = format!("\ndaemon log:\n{}", self.log());
        expect_ok("berth-build --addr", args, &self.out(args), &log)
    }
}

impl Drop for Buildd {
    fn drop(&mut self) {
        if self.terminate {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
