//! containerd 1.6 driving berth for real: through containerd-shim-berth-v2
//! (`--runtime io.containerd.berth.v2`) and through the stock containerd-shim-runc-v2 with
//! `--runc-binary berth` (runc drop-in). Each test starts its own containerd.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_integration::containerd::{shim_bin, Containerd};
use berth_integration::harness::{berth_bin, busybox_fixture, skip, TempDir};
use berth_integration::image::write_docker_archive;

const IMAGE: &str = "docker.io/library/busybox:latest";
const SHIM: &str = "io.containerd.berth.v2";

/// Why this machine can't run the test, if it can't.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("containerd is not installed".into());
    }
    if !busybox_fixture().join("rootfs/bin/busybox").exists() {
        return Some("busybox fixture missing (make fixtures)".into());
    }
    None
}

/// A containerd with the busybox image imported.
fn daemon_with_busybox() -> Result<Containerd> {
    let ctrd = Containerd::start(false, "")?;
    let tmp = TempDir::new("img")?;
    let archive = tmp.path().join("busybox.tar");
    write_docker_archive(&busybox_fixture().join("rootfs"), IMAGE, &["sh"], &archive)?;
    ctrd.import(&archive)?;
    Ok(ctrd)
}

/// `ctr events` in the background; killed on drop.
struct Events {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Events {
    fn start(ctrd: &Containerd) -> Result<Events> {
        let mut child = ctrd
            .ctr_cmd(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn ctr events")?;
        let out = child.stdout.take().context("ctr events stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let events = Events { child, rx };
        events.wait_subscribed(ctrd)?;
        Ok(events)
    }

    /// Labels the namespace until the resulting /namespaces/update shows up, so no task
    /// event of the test can precede the subscription.
    fn wait_subscribed(&self, ctrd: &Containerd) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut probe = 0;
        while Instant::now() < deadline {
            probe += 1;
            ctrd.ctr_ok(&[
                "namespaces",
                "label",
                &ctrd.namespace,
                &format!("berth-probe={probe}"),
            ])?;
            while let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
                if line.contains("/namespaces/update") {
                    return Ok(());
                }
            }
        }
        bail!("ctr events never delivered a probe event")
    }

    /// Topics seen for container `id` until `last` arrives (or the timeout).
    fn topics_until(&self, id: &str, last: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut topics = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.rx.recv_timeout(left) else {
                break;
            };
            if !line.contains(&format!("\"{id}\"")) {
                continue;
            }
            if let Some(topic) = line.split_whitespace().find(|w| w.starts_with("/tasks/")) {
                topics.push(topic.to_string());
                if topic == last {
                    break;
                }
            }
        }
        topics
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_task_status(ctrd: &Containerd, id: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = ctrd.ctr_ok(&["tasks", "list"])?;
        if last
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains(want))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("task {id} never reached {want}:\n{last}")
}

/// `ctr run -d` of `sleep 1000` in a task named `name` through the berth shim.
fn run_detached_sleeper(ctrd: &Containerd, name: &str) -> Result<()> {
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runtime",
        SHIM,
        IMAGE,
        name,
        "sleep",
        "1000",
    ])?;
    Ok(())
}

#[test]
fn berth_shim_runs_exec_pause_metrics_kill_delete() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    assert!(
        shim_bin().exists(),
        "{} missing: run cargo build --workspace --bins",
        shim_bin().display()
    );
    let ctrd = daemon_with_busybox()?;

    // Run to completion: output and exit code come back through the shim.
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--runtime",
        SHIM,
        IMAGE,
        "once",
        "sh",
        "-c",
        "echo hello from berth; echo to-stderr >&2; exit 3",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout={stdout} log={}",
        ctrd.log()
    );
    assert!(stdout.contains("hello from berth"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));

    // A file:// log URI: the shim writes the task's output to the file itself.
    let log = ctrd.dir().join("logs/task.log");
    let uri = format!("file://{}", log.display());
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--runtime",
        SHIM,
        "--log-uri",
        &uri,
        IMAGE,
        "logged",
        "sh",
        "-c",
        "echo to-log; echo err-log >&2; exit 2",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    let logged = std::fs::read_to_string(&log)?;
    assert!(
        logged.contains("to-log") && logged.contains("err-log"),
        "{logged}"
    );

    // An overlayfs snapshot: the shim mounts containerd's overlay rootfs on the bundle.
    let out = ctrd.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        "overlayfs",
        "--runtime",
        SHIM,
        IMAGE,
        "ovl",
        "sh",
        "-c",
        "grep ' / ' /proc/mounts",
    ])?;
    assert!(out.starts_with("overlay / overlay"), "{out}");

    // stdin reaches the task and its EOF ends it.
    let mut cat = ctrd
        .ctr_cmd(&[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runtime",
            SHIM,
            IMAGE,
            "stdin",
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut w = cat.stdin.take().context("cat stdin")?;
        w.write_all(b"piped through the shim\n")?;
    }
    let out = cat.wait_with_output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "piped through the shim\n"
    );

    // A terminal: ctr needs a console of its own, so run it under script(1); the size set
    // there reaches the container via ResizePty.
    let ctr_line = format!(
        "stty cols 91 rows 33; ctr --address {} --namespace {} run --rm -t --snapshotter native \
         --runtime {SHIM} {IMAGE} tty sh -c 'sleep 0.3; tty; stty size; exit 4'",
        ctrd.socket.display(),
        ctrd.namespace
    );
    let out = Command::new("script")
        .args(["-eqc", &ctr_line, "/dev/null"])
        .env("PATH", berth_integration::containerd::path_with_bins())
        .stdin(Stdio::null())
        .output()
        .context("run script(1)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("33 91"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");

    // A detached task with exec, ps, pause/resume, metrics, kill and delete; the events
    // must arrive in order.
    let events = Events::start(&ctrd)?;
    run_detached_sleeper(&ctrd, "bg")?;
    wait_task_status(&ctrd, "bg", "RUNNING")?;
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo in-exec; exit 5",
    ])?;
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("in-exec"));
    let ps = ctrd.ctr_ok(&["tasks", "ps", "bg"])?;
    assert!(ps.lines().count() >= 2, "{ps}");
    ctrd.ctr_ok(&["tasks", "pause", "bg"])?;
    wait_task_status(&ctrd, "bg", "PAUSED")?;
    ctrd.ctr_ok(&["tasks", "resume", "bg"])?;
    wait_task_status(&ctrd, "bg", "RUNNING")?;
    let metrics = ctrd.ctr_ok(&["tasks", "metrics", "bg"])?;
    assert!(metrics.contains("pids.current"), "{metrics}");
    assert!(metrics.contains("memory"), "{metrics}");
    ctrd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "bg"])?;
    wait_task_status(&ctrd, "bg", "STOPPED")?;
    ctrd.ctr_ok(&["tasks", "delete", "bg"])?;
    ctrd.ctr_ok(&["containers", "rm", "bg"])?;
    let left = ctrd.ctr_ok(&["containers", "list", "--quiet"])?;
    assert!(!left.lines().any(|l| l.trim() == "bg"), "{left}");

    let topics = events.topics_until("bg", "/tasks/delete", Duration::from_secs(10));
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(topics, want);
    Ok(())
}

/// A process killed by a real-time signal (SIGRTMIN+3 stops systemd
/// containers) still has its exit reported, as 128 + N: nix's waitpid, which
/// the containerd-shim crate's own reaper uses, cannot represent that death.
#[test]
fn berth_shim_reports_an_exec_killed_by_a_real_time_signal() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    let ctrd = daemon_with_busybox()?;
    run_detached_sleeper(&ctrd, "rtsig")?;
    wait_task_status(&ctrd, "rtsig", "RUNNING")?;
    let mut exec = ctrd
        .ctr_cmd(&["tasks", "exec", "--exec-id", "rt", "rtsig", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Header, init and the exec'd sleep.
    while ctrd.ctr_ok(&["tasks", "ps", "rtsig"])?.lines().count() < 3 {
        if Instant::now() > deadline {
            let _ = exec.kill();
            bail!("exec never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = libc::SIGRTMIN() + 3;
    ctrd.ctr_ok(&[
        "tasks",
        "kill",
        "--exec-id",
        "rt",
        "--signal",
        &rt.to_string(),
        "rtsig",
    ])?;
    let status = loop {
        if let Some(st) = exec.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = exec.kill();
            let _ = exec.wait();
            bail!("the exec's exit was never reported");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(128 + rt));
    ctrd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "rtsig"])?;
    wait_task_status(&ctrd, "rtsig", "STOPPED")?;
    ctrd.ctr_ok(&["tasks", "delete", "rtsig"])?;
    ctrd.ctr_ok(&["containers", "rm", "rtsig"])?;
    Ok(())
}

#[test]
fn berth_shim_reports_oom() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    let ctrd = daemon_with_busybox()?;
    let events = Events::start(&ctrd)?;
    // A shell doubling a string until the 20 MB limit kills it.
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runtime",
        SHIM,
        "--memory-limit",
        "20000000",
        IMAGE,
        "hog",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ])?;
    let topics = events.topics_until("hog", "/tasks/exit", Duration::from_secs(20));
    assert!(topics.contains(&"/tasks/oom".to_string()), "{topics:?}");
    let out = ctrd.ctr_ok(&["tasks", "list"])?;
    assert!(out.contains("STOPPED"), "{out}");
    ctrd.ctr_ok(&["tasks", "delete", "hog"])?;
    ctrd.ctr_ok(&["containers", "rm", "hog"])?;
    Ok(())
}

/// Pid and ttrpc socket of the berth shim serving container `id` in `ns` (found by its
/// command line).
fn shim_process(ns: &str, id: &str) -> Option<(i32, PathBuf)> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-berth-v2"));
        let has = |flag: &[u8], value: &str| {
            args.windows(2)
                .any(|w| w[0] == flag && w[1] == value.as_bytes())
        };
        let socket = args.windows(2).find(|w| w[0] == b"-socket").map(|w| {
            String::from_utf8_lossy(w[1])
                .trim_start_matches("unix://")
                .to_string()
        })?;
        (is_shim && has(b"-namespace", ns) && has(b"-id", id)).then(|| (pid, PathBuf::from(socket)))
    })
}

#[test]
fn dead_shim_is_cleaned_up_by_the_delete_action() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    let ctrd = daemon_with_busybox()?;
    run_detached_sleeper(&ctrd, "orphan")?;
    wait_task_status(&ctrd, "orphan", "RUNNING")?;
    let task_pid: i32 = ctrd
        .ctr_ok(&["tasks", "list"])?
        .lines()
        .find(|l| l.starts_with("orphan "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .context("task pid")?;
    let (shim, socket) = shim_process(&ctrd.namespace, "orphan").context("find the shim")?;
    assert!(socket.exists(), "{}", socket.display());
    let state = std::path::Path::new("/run/containerd/berth")
        .join(&ctrd.namespace)
        .join("orphan");
    assert!(state.exists());

    // containerd notices the dead shim and runs `containerd-shim-berth-v2 delete`, which
    // must force-delete the container through berth.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (state.exists() || socket.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!state.exists(), "berth state survived the dead shim");
    assert!(
        !socket.exists(),
        "dead shim's socket {} left",
        socket.display()
    );
    // The task is gone: dead (a zombie until init reaps it) or already reaped.
    let alive = std::fs::read_to_string(format!("/proc/{task_pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "container process {task_pid} still running");
    let tasks = ctrd.ctr_ok(&["tasks", "list"])?;
    assert!(!tasks.contains("RUNNING"), "{tasks}");
    ctrd.ctr_ok(&["containers", "rm", "orphan"])?;
    Ok(())
}

#[test]
fn runc_shim_with_berth_binary() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    if !std::path::Path::new("/usr/bin/containerd-shim-runc-v2").exists() {
        skip("containerd-shim-runc-v2 is not installed");
        return Ok(());
    }
    let ctrd = daemon_with_busybox()?;
    let berth = berth_bin().canonicalize()?;
    let berth = berth.to_string_lossy();

    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--runc-binary",
        &berth,
        IMAGE,
        "once",
        "sh",
        "-c",
        "echo drop-in; exit 7",
    ])?;
    assert_eq!(out.status.code(), Some(7), "{}", ctrd.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("drop-in"));

    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runc-binary",
        &berth,
        IMAGE,
        "bg",
        "sleep",
        "1000",
    ])?;
    wait_task_status(&ctrd, "bg", "RUNNING")?;
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo x; exit 2",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains('x'));
    ctrd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "bg"])?;
    wait_task_status(&ctrd, "bg", "STOPPED")?;
    ctrd.ctr_ok(&["tasks", "delete", "bg"])?;
    ctrd.ctr_ok(&["containers", "rm", "bg"])?;
    Ok(())
}
