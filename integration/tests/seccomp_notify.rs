//! SCMP_ACT_NOTIFY (seccomp user notification) as runc 1.1 implements it, and the
//! seccomp filter being in place before startContainer hooks run (issue 10 item 5).
//!
//! An agent in the test process listens at the profile's `listenerPath`, receives
//! runc's `ContainerProcessState` JSON with the listener fd (SCM_RIGHTS) and answers
//! the notifications with SECCOMP_IOCTL_NOTIF_RECV/SEND. Canaries in the (writable)
//! rootfs prove on the host side that a notified `mkdir` never reached the kernel.

use anyhow::{bail, Context, Result};
use berth_integration::harness::*;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the agent answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Success without doing anything (`mkdir` "works", no directory appears).
    Pretend,
    /// Fail the call with this errno.
    Errno(i32),
    /// Close the listener as soon as it arrives.
    CloseAtOnce,
}

#[derive(Default)]
struct Seen {
    /// Every `ContainerProcessState` received, in order.
    states: Vec<Value>,
    /// Syscall numbers of the notifications answered.
    calls: Vec<i32>,
}

/// A seccomp agent at `<tmp>/agent.sock`, stopped (threads joined) on drop.
struct Agent {
    dir: TempDir,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    fn start(answer: Answer) -> Result<Agent> {
        let dir = TempDir::new("berth-agent")?;
        let listener = UnixListener::bind(dir.path().join("agent.sock"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut answering = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("agent accept: {e}"),
                };
                let (state, fd) = receive_state(&conn).expect("agent: receive state");
                seen2.lock().unwrap().states.push(state);
                match answer {
                    Answer::CloseAtOnce => drop(fd),
                    _ => {
                        let (stop3, seen3) = (stop2.clone(), seen2.clone());
                        answering.push(std::thread::spawn(move || {
                            answer_until_gone(&fd, answer, &stop3, &seen3)
                        }));
                    }
                }
            }
            for t in answering {
                let _ = t.join();
            }
        });
        Ok(Agent {
            dir,
            stop,
            seen,
            thread: Some(thread),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn states(&self) -> Vec<Value> {
        self.seen.lock().unwrap().states.clone()
    }

    /// The states received once there are `n` (the runtime has sent the message
    /// when it returns; the agent thread may still be reading it).
    fn wait_states(&self, n: usize) -> Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states = self.states();
            if states.len() >= n || Instant::now() > deadline {
                return Ok(states);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn calls(&self) -> Vec<i32> {
        self.seen.lock().unwrap().calls.clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message: the JSON with the listener fd attached.
fn receive_state(conn: &UnixStream) -> Result<(Value, OwnedFd)> {
    conn.set_nonblocking(false)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this fd for us.
                fd.get_or_insert(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let n = msg.bytes;
    let fd = fd.context("no fd attached to the container process state")?;
    Ok((serde_json::from_slice(&buf[..n])?, fd))
}

/// Answers notifications on `fd` until every filtered process is gone (POLLHUP).
fn answer_until_gone(fd: &OwnedFd, answer: Answer, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        if pfd.revents & libc::POLLIN == 0 {
            return; // POLLHUP: no process uses the filter any more
        }
        // SAFETY: plain data, zeroed as the kernel requires.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills `req`.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            continue; // the caller went away meanwhile
        }
        seen.lock().unwrap().calls.push(req.data.nr);
        let error = match answer {
            Answer::Errno(e) => -e,
            _ => 0,
        };
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error,
            flags: 0,
        };
        // SAFETY: SEND reads `resp`.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

fn bundle_path(b: &Bundle) -> String {
    b.path().display().to_string()
}

/// A busybox bundle with a writable rootfs (so an un-notified mkdir would show on the
/// host), `script` as its process and `seccomp` as its profile.
fn bundle(script: &str, seccomp: Value, nnp: bool) -> Result<Bundle> {
    let mut b = Bundle::busybox()?;
    b.sh(script);
    b.config["root"]["readonly"] = json!(false);
    b.config["process"]["noNewPrivileges"] = json!(nnp);
    b.config["linux"]["seccomp"] = seccomp;
    Ok(b)
}

/// mkdir (both spellings) → NOTIFY, plus `extra` rules.
fn notify_profile(agent: &Path, extra: Vec<Value>) -> Value {
    let mut rules = vec![json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"})];
    rules.extend(extra);
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": agent,
        "listenerMetadata": "berth-test-metadata",
        "syscalls": rules,
    })
}

/// Waits until `path` (written by the container) contains `marker`.
fn wait_for_file(path: &Path, marker: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(marker) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{} never got {marker:?} (has {text:?})", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const MKDIR_NR: i32 = libc::SYS_mkdir as i32;
const MKDIRAT_NR: i32 = libc::SYS_mkdirat as i32;

#[test]
fn notify_with_other_actions_for_create_and_exec() -> Result<()> {
    for nnp in [true, false] {
        let agent = Agent::start(Answer::Pretend)?;
        let rt = Runtime::new()?;
        let profile = notify_profile(
            &agent.path(),
            vec![
                json!({"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
            ],
        );
        let b = bundle(
            "mkdir /notified; echo mkdir=$? > /out; \
             chmod 0700 /etc; echo chmod=$? >> /out; echo done >> /out; sleep 100",
            profile,
            nnp,
        )?;
        let id = unique("notify");
        rt.create(&id, &b)?;
        // create returns only once the listener was sent to the agent.
        let states = agent.wait_states(1)?;
        assert_eq!(states.len(), 1, "nnp={nnp}: {states:?}");
        let init_pid = rt.state(&id)?["pid"].as_i64().context("state pid")?;
        let st = &states[0];
        assert_eq!(st["fds"], json!(["seccompFd"]));
        assert_eq!(st["pid"], json!(init_pid));
        assert_eq!(st["metadata"], json!("berth-test-metadata"));
        assert!(st["ociVersion"].is_string(), "{st}");
        assert_eq!(st["state"]["id"], json!(id));
        assert_eq!(st["state"]["status"], json!("creating"));
        assert_eq!(st["state"]["pid"], json!(init_pid));
        assert_eq!(st["state"]["bundle"], json!(bundle_path(&b)));

        rt.ok(&["start", &id])?;
        let out = wait_for_file(&b.rootfs().join("out"), "done")?;
        // The agent said yes, the kernel never saw the call: no directory on the host.
        assert!(out.contains("mkdir=0"), "nnp={nnp}: {out}");
        assert!(!b.rootfs().join("notified").exists(), "nnp={nnp}");
        // The ERRNO rule still applies next to the notify rules.
        assert!(out.contains("chmod=1"), "nnp={nnp}: {out}");
        let mode = std::fs::metadata(b.rootfs().join("etc"))?
            .permissions()
            .mode();
        assert_ne!(mode & 0o777, 0o700, "nnp={nnp}");
        let calls = agent.calls();
        assert!(
            calls.iter().any(|nr| *nr == MKDIR_NR || *nr == MKDIRAT_NR),
            "{calls:?}"
        );

        // exec: a second listener, with the exec'd process's pid and a running state.
        let out = rt.ok(&[
            "exec",
            &id,
            "sh",
            "-c",
            "mkdir /exec-notified && echo exec-mkdir=$?",
        ])?;
        assert!(out.contains("exec-mkdir=0"), "nnp={nnp}: {out}");
        assert!(!b.rootfs().join("exec-notified").exists(), "nnp={nnp}");
        let states = agent.wait_states(2)?;
        assert_eq!(states.len(), 2, "nnp={nnp}: {states:?}");
        let st = &states[1];
        assert_eq!(st["state"]["status"], json!("running"));
        assert_eq!(st["state"]["pid"], json!(init_pid));
        assert_ne!(st["pid"], json!(init_pid), "the exec'd process's own pid");
        assert_eq!(st["fds"], json!(["seccompFd"]));
        rt.ok(&["delete", "--force", &id])?;
    }
    Ok(())
}

#[test]
fn only_notify_rules_with_a_chosen_errno_through_run() -> Result<()> {
    let agent = Agent::start(Answer::Errno(libc::EROFS))?;
    let rt = Runtime::new()?;
    let mut b = bundle(
        "mkdir /denied 2>&1; echo mkdir=$?",
        notify_profile(&agent.path(), vec![]),
        true,
    )?;
    b.config["linux"]["seccomp"]
        .as_object_mut()
        .unwrap()
        .remove("listenerMetadata");
    let id = unique("notify-only");
    let (code, out, err) = rt.run(&id, &b)?;
    assert_eq!(code, 0, "{out}{err}{}", rt.log_text());
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("mkdir=1"), "{out}");
    assert!(!b.rootfs().join("denied").exists());
    let states = agent.wait_states(1)?;
    assert_eq!(states.len(), 1);
    assert!(
        states[0].get("metadata").is_none(),
        "omitted when empty: {}",
        states[0]
    );
    Ok(())
}

#[test]
fn listener_closed_early_fails_notified_calls_with_enosys() -> Result<()> {
    let agent = Agent::start(Answer::CloseAtOnce)?;
    let rt = Runtime::new()?;
    let b = bundle(
        "mkdir /orphan 2>&1; echo mkdir=$?; echo still-running",
        notify_profile(&agent.path(), vec![]),
        false,
    )?;
    let id = unique("notify-closed");
    let (code, out, err) = rt.run(&id, &b)?;
    assert_eq!(code, 0, "{out}{err}{}", rt.log_text());
    assert!(out.contains("Function not implemented"), "{out}");
    assert!(out.contains("still-running"), "{out}");
    assert!(!b.rootfs().join("orphan").exists());
    assert_eq!(agent.wait_states(1)?.len(), 1);
    Ok(())
}

/// Processes on the host whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn missing_agent_socket_fails_cleanly() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = TempDir::new("berth-noagent")?;
    let missing = dir.path().join("nobody-listens.sock");
    for (i, cmd) in ["create", "run"].into_iter().enumerate() {
        let b = bundle(
            "mkdir /never; sleep 3131",
            notify_profile(&missing, vec![]),
            i == 0,
        )?;
        b.write()?;
        let id = unique("notify-missing");
        let out = rt.output(&[cmd, "--bundle", &bundle_path(&b), &id])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} must fail");
        assert!(
            err.contains("failed to connect with seccomp agent")
                && err.contains(&missing.display().to_string()),
            "{cmd}: {err}"
        );
        // Nothing left: no state, no cgroup, no container process.
        assert!(!rt.root.path().join(&id).exists(), "{cmd}: state dir left");
        assert!(!cgroup_exists(&id), "{cmd}: cgroup left");
        assert!(
            processes_with("sleep 3131").is_empty(),
            "{cmd}: process left"
        );
        assert!(!b.rootfs().join("never").exists());
    }

    // exec after the agent went away: exec fails alone, the container lives on.
    let agent = Agent::start(Answer::Pretend)?;
    let b = bundle("sleep 100", notify_profile(&agent.path(), vec![]), true)?;
    let id = unique("notify-gone");
    rt.create(&id, &b)?;
    rt.ok(&["start", &id])?;
    std::fs::remove_file(agent.path())?;
    let out = rt.output(&["exec", &id, "sh", "-c", "mkdir /late; sleep 3232"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "exec's own failure: {err}");
    assert!(
        err.contains("failed to connect with seccomp agent"),
        "{err}"
    );
    assert!(
        processes_with("sleep 3232").is_empty(),
        "exec'd process left"
    );
    assert!(!b.rootfs().join("late").exists());
    assert_eq!(rt.status(&id)?, "running");
    Ok(())
}

/// Item 5: runc loads the filter before startContainer hooks run, so a hook is confined
/// like the container process. Same scenario through runc and berth, with and without
/// noNewPrivileges (runc installs the filter at two different points).
#[test]
fn start_container_hooks_run_under_seccomp_like_runc() -> Result<()> {
    for nnp in [true, false] {
        for (name, rt) in [("runc", Runtime::runc()?), ("berth", Runtime::new()?)] {
            let b = bundle(
                "echo process-ran > /ran",
                json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}],
                }),
                nnp,
            )?;
            let mut b = b;
            b.config["hooks"] = json!({
                "startContainer": [{"path": "/bin/mkdir", "args": ["mkdir", "/hook-canary"]}]
            });
            let id = unique("hook-seccomp");
            let (code, out, err) = rt.run(&id, &b)?;
            let canary = b.rootfs().join("hook-canary");
            assert!(
                !canary.exists(),
                "{name} nnp={nnp}: the startContainer hook escaped the filter ({code}: {out}{err})"
            );
            assert_ne!(code, 0, "{name} nnp={nnp}: a failing hook fails run");
            assert!(!b.rootfs().join("ran").exists(), "{name} nnp={nnp}");
        }
    }
    Ok(())
}

/// The same notify scenario through runc (the reference) and berth: what the container
/// sees and what the agent receives have the same shape.
#[test]
fn notify_matches_runc() -> Result<()> {
    let mut results = Vec::new();
    for (name, rt) in [("runc", Runtime::runc()?), ("berth", Runtime::new()?)] {
        let agent = Agent::start(Answer::Pretend)?;
        let b = bundle(
            "mkdir /pretend; echo mkdir=$?; test -d /pretend && echo exists; echo end",
            notify_profile(&agent.path(), vec![]),
            true,
        )?;
        let id = unique("notify-parity");
        let (code, out, err) = rt.run(&id, &b)?;
        assert_eq!(code, 0, "{name}: {out}{err}{}", rt.log_text());
        assert!(!b.rootfs().join("pretend").exists(), "{name}");
        let states = agent.wait_states(1)?;
        assert_eq!(states.len(), 1, "{name}");
        let st = states[0].clone();
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v
                .as_object()
                .map_or(Vec::new(), |o| o.keys().cloned().collect());
            k.sort();
            k
        };
        results.push((
            out,
            keys(&st),
            keys(&st["state"]),
            st["fds"].clone(),
            st["metadata"].clone(),
            st["state"]["status"].clone(),
            st["pid"] == st["state"]["pid"],
        ));
        drop(rt);
    }
    assert_eq!(results[0], results[1], "runc vs berth");
    Ok(())
}
