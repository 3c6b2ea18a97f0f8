//! `berth-build --addr ... run -t` / `-i` against a real berth-buildd (with
//! berth as its runtime), and runs whose client goes away.
//!
//! The terminal case drives the client the way a user's terminal does: the
//! test holds a pty master, the client runs on its slave as session leader
//! (so a resize of the test's pty reaches it as SIGWINCH), and what is typed
//! into the master must reach the shell in the container. The disconnect
//! cases kill the client (SIGKILL, and Ctrl-C of `-i`) mid-run and require
//! that the container's process is gone and the runtime keeps no state,
//! while the working container itself stays usable.
use berth_integration::builder::{processes_matching, processes_with, BuildEnv, Buildd, Busybox};
use berth_integration::harness::{berth_bin, unique};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A berth-buildd on a private socket and store. On drop: the daemon is
/// killed, then whatever a failed test left behind is removed (the
/// runtime's containers, the working containers, mounts).
struct Daemon {
    /// Taken (killed) first on drop, before the cleanup below.
    buildd: Option<Buildd>,
    /// Its store; dropped last: working containers, mounts, directory.
    env: BuildEnv,
}

impl Daemon {
    fn start() -> Daemon {
        let env = BuildEnv::new("bb-tty").with_runtime(berth_bin());
        let buildd = env.buildd();
        Daemon {
            buildd: Some(buildd),
            env,
        }
    }

    fn buildd(&self) -> &Buildd {
        self.buildd.as_ref().unwrap()
    }

    fn log(&self) -> String {
        self.buildd().log()
    }

    /// Where the daemon keeps the runtime's state (`<root>/runtime`).
    fn runtime_root(&self) -> PathBuf {
        self.env.store().join("runtime")
    }

    /// `berth-build --addr unix://<socket> ARGS`.
    fn client(&self, args: &[&str]) -> Command {
        self.buildd().client(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.buildd().ok(args)
    }

    /// Container ids the runtime has state for, from `berth list`.
    fn runtime_containers(&self) -> Vec<String> {
        let o = Command::new(berth_bin())
            .arg("--root")
            .arg(self.runtime_root())
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// A working container from a minimal busybox image, imported over
    /// the daemon's API.
    fn container(&self) -> String {
        let tar = self.env.path().join(format!("{}.tar", unique("rootfs")));
        let rootfs = Busybox {
            dirs: &["bin", "etc", "tmp", "root", "proc", "dev", "sys"],
            modes: &[],
            ..Busybox::new(&["sh", "echo", "cat", "sleep", "stty", "tty", "true"])
        };
        rootfs.write_tar(&tar, &self.env.path().join(unique("scratch")));
        let image = unique("tty-img");
        self.ok(&["import", tar.to_str().unwrap(), &image]);
        let name = unique("tty");
        self.ok(&["from", &image, "--name", &name]);
        name
    }

    /// No process of the run, no runtime state, no bundle left; the
    /// container still listed and usable.
    /// `why` is the reason the daemon logs, `times` how often so far.
    fn assert_cleaned_up(&self, name: &str, marker: &str, why: &str, times: usize) {
        // No process of the run: its own, nor the runtime's (`run`, then the
        // daemon's `delete --force`: their command lines carry the id).
        let id = format!("berth-work-{name}");
        let t = Instant::now();
        loop {
            let left = processes_with(marker);
            let runtime = processes_matching(|w| w.contains(&id));
            let state = self.runtime_containers();
            if left.is_empty() && runtime.is_empty() && state.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "10 s after the client went away: processes {left:?}, runtime's {runtime:?}, runtime state {state:?}\ndaemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let dir = self.env.store().join("containers").join(name);
        let t = Instant::now();
        loop {
            let bundles: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("bundle"))
                .collect();
            if bundles.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "bundle left: {bundles:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let said = format!("run in working container {name}: {why}: killing its process");
        assert_eq!(self.log().matches(&said).count(), times, "{}", self.log());
        // The overlay is mounted only while an operation needs it.
        let left: Vec<_> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&*dir.join("").to_string_lossy()))
            .collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
        assert!(self.ok(&["containers", "-q"]).lines().any(|l| l == name));
        let out = self.ok(&["run", name, "--", "echo", "still-usable"]);
        assert_eq!(out, "still-usable\n");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The daemon first, then the runtime's containers a failed test
        // left; `env` then removes the working containers and mounts.
        drop(self.buildd.take());
        let rt = self.runtime_root();
        if let Ok(o) = Command::new(berth_bin())
            .arg("--root")
            .arg(&rt)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                for args in [&["kill", id, "KILL"][..], &["delete", "--force", id]] {
                    let _ = Command::new(berth_bin())
                        .arg("--root")
                        .arg(&rt)
                        .args(args)
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn wait_for_process(cmdline: &str, d: &Daemon) {
    let t = Instant::now();
    while processes_with(cmdline).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{cmdline:?} never started\ndaemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

/// The client on a pty of the test's: its slave is the client's stdin,
/// stdout, stderr and controlling terminal (the client leads a session of
/// its own, so the pty's size changes reach it as SIGWINCH). Everything the
/// client writes is collected from the master.
struct Terminal {
    master: std::fs::File,
    /// The test's own slave fd: to check the client's raw mode is undone.
    slave: OwnedFd,
    /// The terminal's settings before the client started.
    initial: nix::sys::termios::Termios,
    output: Arc<Mutex<Vec<u8>>>,
    child: Child,
}

impl Terminal {
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Terminal {
        let pty = nix::pty::openpty(None, None).unwrap();
        set_size(pty.master.as_fd(), rows, cols);
        let slave = pty.slave;
        let initial = nix::sys::termios::tcgetattr(slave.as_fd()).unwrap();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut r, out) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            slave,
            initial,
            output,
            child,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn type_in(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits until the output holds `want` (after what it held at `from`).
    fn wait_for(&self, want: &str, from: usize, d: &Daemon) -> usize {
        let t = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|s| s.find(want)) {
                return from + i + want.len();
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no {want:?} in the terminal's output: {text:?}\ndaemon log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(&mut self, d: &Daemon) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the client did not exit; output {:?}\ndaemon log:\n{}",
                self.text(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn remote_run_t_gives_a_real_terminal_with_size_resizes_and_input() {
    let d = Daemon::start();
    let name = d.container();
    let mut term = Terminal::spawn(d.client(&["run", "-t", &name, "--", "sh"]), 30, 99);
    let before = term.initial.clone();

    // `tty` names a pts; `stty size` sees the size of the test's terminal.
    // Quotes split the markers, so the typed echo never matches them.
    term.type_in("echo S''TART; tty; stty size; echo E''ND\n");
    let at = term.wait_for("START", 0, &d);
    let end = term.wait_for("END", at, &d);
    let first = term.text()[at..end].to_string();
    assert!(first.contains("/dev/pts/"), "{first:?}");
    assert!(first.contains("30 99"), "{first:?}");
    // The client's terminal is raw while it runs: the shell's echo is the
    // only one (no local echo, no line editing).
    let now = nix::sys::termios::tcgetattr(term.slave.as_fd()).unwrap();
    assert!(!now
        .local_flags
        .contains(nix::sys::termios::LocalFlags::ICANON));

    // A resize of the test's terminal reaches the same shell.
    set_size(term.master.as_fd(), 41, 123);
    let mut from = end;
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        term.type_in("echo S''Z; stty size; echo Z''Z\n");
        let a = term.wait_for("SZ", from, &d);
        let b = term.wait_for("ZZ", a, &d);
        let seen = term.text()[a..b].to_string();
        from = b;
        if seen.contains("41 123") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the resize never reached the container: {seen:?}"
        );
    }

    // Typed input reaches the shell; the exit status comes back.
    term.type_in("echo h''i; exit 3\n");
    let st = term.wait(&d);
    let rest = term.text()[from..].to_string();
    assert!(rest.contains("hi\r\n"), "{rest:?}");
    assert_eq!(st.code(), Some(3), "{rest:?}\n{}", d.log());
    // The client put its terminal back the way it found it.
    let after = nix::sys::termios::tcgetattr(term.slave.as_fd()).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
    assert!(d.runtime_containers().is_empty());
}

#[test]
fn remote_run_i_pipes_stdin_and_keeps_stdout_and_stderr_apart() {
    let d = Daemon::start();
    let name = d.container();
    let run_i = |args: &[&str], input: &[u8]| {
        let mut c = d
            .client(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let input = input.to_vec();
        let w = std::thread::spawn(move || stdin.write_all(&input));
        let o = c.wait_with_output().unwrap();
        w.join().unwrap().unwrap();
        o
    };
    let o = run_i(&["run", "-i", &name, "--", "cat"], b"abc");
    assert_eq!(o.stdout, b"abc", "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success());

    // Larger than any pipe or message buffer on the way, in order.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let o = run_i(&["run", "-i", &name, "--", "cat"], &big);
    assert_eq!(o.stdout.len(), big.len());
    assert!(o.stdout == big, "the bytes came back changed");

    let o = run_i(
        &[
            "run",
            "-i",
            &name,
            "--",
            "sh",
            "-c",
            "read l; echo \"out $l\"; echo \"err $l\" >&2; exit 7",
        ],
        b"line\n",
    );
    assert_eq!(o.stdout, b"out line\n");
    assert_eq!(o.stderr, b"err line\n");
    assert_eq!(o.status.code(), Some(7));

    // Without -i stdin stays empty (the plain Run call).
    let o = run_i(&["run", &name, "--", "cat"], b"ignored");
    assert_eq!(o.stdout, b"");
    assert!(o.status.success());

    // -t needs a terminal on stdin (Docker's "the input device is not a
    // TTY"): a pipe could never end the remote shell. Refused before any
    // process starts.
    let o = run_i(
        &["run", "-t", &name, "--", "sh", "-c", "touch /tty-ran"],
        b"x\n",
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the input device is not a TTY"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run_i(&["run", &name, "--", "ls", "/tty-ran"], b"");
    assert!(
        !o.status.success(),
        "run -t with a piped stdin ran its command"
    );
}

#[test]
fn a_run_whose_client_goes_away_is_killed_and_cleaned_up() {
    let d = Daemon::start();
    let name = d.container();

    // Run (no stdin): the client killed hard mid-run.
    let secs = format!("{}", 100_000 + std::process::id() % 1000);
    let marker = format!("sleep {secs}");
    let script = format!("echo kept > /kept; exec sleep {secs}");
    let mut client = d
        .client(&["run", &name, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_process(&marker, &d);
    client.kill().unwrap();
    client.wait().unwrap();
    d.assert_cleaned_up(&name, &marker, "the client went away", 1);
    // What the killed run wrote stays the container's.
    assert_eq!(d.ok(&["run", &name, "--", "cat", "/kept"]), "kept\n");

    // RunInteractive with a terminal: the same.
    let secs = format!("{}", 101_000 + std::process::id() % 1000);
    let marker = format!("sleep {secs}");
    let mut term = Terminal::spawn(
        d.client(&["run", "-t", &name, "--", "sleep", &secs]),
        24,
        80,
    );
    wait_for_process(&marker, &d);
    term.child.kill().unwrap();
    term.child.wait().unwrap();
    d.assert_cleaned_up(&name, &marker, "the client went away", 2);

    // RunInteractive without one: Ctrl-C of the client (SIGINT) ends the
    // call, with the shell's status for it.
    let secs = format!("{}", 102_000 + std::process::id() % 1000);
    let marker = format!("sleep {secs}");
    let mut client = d
        .client(&["run", "-i", &name, "--", "sleep", &secs])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_process(&marker, &d);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = client.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{st:?} (signal {:?})", st.signal());
    d.assert_cleaned_up(&name, &marker, "the client went away", 3);
}

#[test]
fn a_run_past_its_grpc_deadline_is_stopped_by_the_daemon() {
    use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};
    use tonic::codegen::http::uri::PathAndQuery;
    let d = Daemon::start();
    let name = d.container();
    let secs = format!("{}", 103_000 + std::process::id() % 1000);
    let marker = format!("sleep {secs}");
    let sock = d.buildd().socket().to_path_buf();
    // The process did start before the deadline stopped it.
    let seen = {
        let marker = marker.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if !processes_with(&marker).is_empty() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, took) = rt.block_on(async {
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let sock = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(sock).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // A plain tonic client: it sends its deadline as `grpc-timeout` but
        // does nothing when it passes on a stream, so the daemon must. CRI's
        // ExecSync messages have exactly RunRequest's first fields (1 string
        // name, 2 repeated string args) and RunEvent's (1 bytes stdout, 2
        // bytes stderr, 3 int32 exit_code) on the wire, and this crate has
        // their generated code already.
        let mut req = tonic::Request::new(ExecSyncRequest {
            container_id: name.clone(),
            cmd: vec!["sleep".into(), secs.clone()],
            timeout: 0,
        });
        req.set_timeout(Duration::from_millis(1500));
        let t = Instant::now();
        let mut events = grpc
            .server_streaming(
                req,
                PathAndQuery::from_static("/berth.builder.v1.WorkingContainers/Run"),
                tonic::codec::ProstCodec::<ExecSyncRequest, ExecSyncResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the run ended OK past its deadline"),
                    Err(s) => break s,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("still running 20 s past a 1.5 s deadline\n{}", d.log()));
        (end, t.elapsed())
    });
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(seen.join().unwrap(), "{marker:?} never ran");
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    d.assert_cleaned_up(&name, &marker, "the client's deadline passed", 1);
}

#[test]
fn a_queued_run_whose_client_goes_away_leaves_the_running_one_alone() {
    let d = Daemon::start();
    let name = d.container();
    let secs = format!("{}", 104_000 + std::process::id() % 1000);
    let marker = format!("sleep {secs}");
    let mut first = d
        .client(&["run", &name, "--", "sleep", &secs])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_process(&marker, &d);
    let pid = processes_with(&marker);
    // A second run of the same container waits for it (same runtime id);
    // its client goes away while it waits.
    let mut second = d
        .client(&["run", &name, "--", "sh", "-c", "echo ran > /second-ran"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    second.kill().unwrap();
    second.wait().unwrap();
    // Several of the watcher's kill rounds later, the first run is intact.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        processes_with(&marker),
        pid,
        "the first run was killed for the second's client\n{}",
        d.log()
    );
    first.kill().unwrap();
    first.wait().unwrap();
    d.assert_cleaned_up(&name, &marker, "the client went away", 2);
    // The second run never started once the container was free.
    assert!(
        d.log()
            .contains("the caller went away before the container was free"),
        "{}",
        d.log()
    );
    let o = d
        .client(&["run", &name, "--", "cat", "/second-ran"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
