//! Terminals and mount sources as runc 1.1.5 has them, each scenario run
//! through runc (the reference) and berth in the same test:
//! - the pty slave of `run -t` / `exec -t` belongs to the process's uid
//!   (the gid devpts gave it stays);
//! - a foreground terminal passes the process's bytes unchanged (runc
//!   clears ONLCR on the console it proxies itself: no `\r\n`);
//!
//! Foreground terminals are driven through a pty the test owns: the
//! runtime gets its slave as stdio (as a person's shell would give it) and
//! the test reads, byte for byte, what arrives on the master.

use anyhow::{bail, Context, Result};
use berth_integration::harness::*;
use serde_json::json;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Both runtimes, reference first, each with a state root of its own.
fn runtimes() -> Result<[(&'static str, Runtime); 2]> {
    Ok([("runc", Runtime::runc()?), ("berth", Runtime::new()?)])
}

fn bundle_path(b: &Bundle) -> String {
    b.path().display().to_string()
}

/// Where the runtime's stdout goes: the pty like its stdin and stderr (a
/// person at a terminal), or a pipe (`berth run ... > file` from one).
#[derive(Clone, Copy, Debug)]
enum Stdout {
    Pty,
    Pipe,
}

/// Runs `cmd` with a fresh pty's slave as its stdin and stderr (and
/// stdout, or a pipe) and returns (exit code, every byte that came out of
/// its stdout). Killed after `limit`.
fn run_on_pty(mut cmd: Command, stdout: Stdout, limit: Duration) -> Result<(i32, Vec<u8>)> {
    let pty = nix::pty::openpty(None, None).context("openpty")?;
    let slave = File::from(pty.slave);
    cmd.stdin(Stdio::from(slave.try_clone()?));
    match stdout {
        Stdout::Pty => cmd.stdout(Stdio::from(slave.try_clone()?)),
        Stdout::Pipe => cmd.stdout(Stdio::piped()),
    };
    cmd.stderr(Stdio::from(slave));
    let mut child = cmd.spawn().context("spawn runtime on a pty")?;
    // Our copies of the slave are gone with `cmd`: once the runtime and
    // the container are done the master reads EIO.
    drop(cmd);
    let from_master = drain(File::from(pty.master));
    let from_pipe = child
        .stdout
        .take()
        .map(|p| drain(File::from(OwnedFd::from(p))));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("runtime on a pty did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let join = |h: std::thread::JoinHandle<Vec<u8>>| {
        h.join()
            .map_err(|_| anyhow::anyhow!("output reader panicked"))
    };
    let on_terminal = join(from_master)?;
    let out = match from_pipe {
        Some(h) => join(h)?,
        None => on_terminal,
    };
    Ok((status.code().unwrap_or(-1), out))
}

/// Reads `f` to its end (EOF, or EIO for a pty master) in a thread.
fn drain(mut f: File) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    })
}

/// Foreground `run` with a terminal of `script` in a busybox bundle
/// changed by `edit`, on a pty; returns (exit code, stdout bytes).
fn run_terminal(
    rt: &Runtime,
    id: &str,
    script: &str,
    stdout: Stdout,
    edit: impl Fn(&mut Bundle),
) -> Result<(i32, Vec<u8>)> {
    let mut b = Bundle::busybox()?;
    b.config["process"]["terminal"] = json!(true);
    b.sh(script);
    edit(&mut b);
    b.write()?;
    run_on_pty(
        rt.cmd(&["run", "--bundle", &bundle_path(&b), id]),
        stdout,
        Duration::from_secs(30),
    )
}

/// A running (detached, no terminal) busybox container to exec into.
fn sleeper(rt: &Runtime, id: &str) -> Result<Bundle> {
    let mut b = Bundle::busybox()?;
    b.args(&["sleep", "1000"]);
    b.write()?;
    rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), id])?;
    Ok(b)
}

/// Foreground `exec -t` of `args` (after `extra` flags) on a pty.
fn exec_terminal(
    rt: &Runtime,
    id: &str,
    extra: &[&str],
    args: &[&str],
    stdout: Stdout,
) -> Result<(i32, Vec<u8>)> {
    let mut argv = vec!["exec", "-t"];
    argv.extend_from_slice(extra);
    argv.push(id);
    argv.extend_from_slice(args);
    run_on_pty(rt.cmd(&argv), stdout, Duration::from_secs(30))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

/// Owner of the process's terminal, as it sees it: "uid:gid".
const TTY_OWNER: &str = "stat -L -c %u:%g /proc/self/fd/0";

#[test]
fn tty_belongs_to_the_process_user() -> Result<()> {
    for (name, rt) in runtimes()? {
        let id = unique("ttyown");
        let (code, out) = run_terminal(&rt, &id, TTY_OWNER, Stdout::Pty, |b| {
            b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        })?;
        assert_eq!(code, 0, "{name}: run: {} {}", text(&out), rt.log_text());
        // runc changes only the uid: the gid stays devpts' gid=5 (tty).
        assert_eq!(text(&out), "1000:5", "{name}: run -t as uid 1000");

        let id = unique("ttyownx");
        let _b = sleeper(&rt, &id)?;
        let (code, out) = exec_terminal(
            &rt,
            &id,
            &["--user", "1234:1234"],
            &["sh", "-c", TTY_OWNER],
            Stdout::Pty,
        )?;
        assert_eq!(code, 0, "{name}: exec: {} {}", text(&out), rt.log_text());
        assert_eq!(text(&out), "1234:5", "{name}: exec -t as uid 1234");
        // Root keeps the terminal as devpts made it.
        let (code, out) = exec_terminal(&rt, &id, &[], &["sh", "-c", TTY_OWNER], Stdout::Pty)?;
        assert_eq!(code, 0, "{name}: exec as root: {}", text(&out));
        assert_eq!(text(&out), "0:5", "{name}: exec -t as root");
        rt.ok(&["delete", "--force", &id])?;
    }
    Ok(())
}

/// runc clears ONLCR on the terminal it proxies, and keeps output
/// processing on the caller's terminal (containerd/console's raw mode):
/// the process's `\n` reaches a pipe as `\n`, and a terminal shows it as
/// `\r\n`, translated once.
#[test]
fn foreground_terminal_passes_the_process_bytes_unchanged() -> Result<()> {
    let want = |stdout: Stdout, text: &str| -> Vec<u8> {
        match stdout {
            Stdout::Pipe => text.as_bytes().to_vec(),
            Stdout::Pty => text.replace('\n', "\r\n").into_bytes(),
        }
    };
    for (name, rt) in runtimes()? {
        for stdout in [Stdout::Pipe, Stdout::Pty] {
            let id = unique("onlcr");
            let (code, out) =
                run_terminal(&rt, &id, "printf 'one\\ntwo\\n'; exit 3", stdout, |_| {})?;
            assert_eq!(code, 3, "{name}: {} {}", text(&out), rt.log_text());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want(stdout, "one\ntwo\n")),
                "{name}: run -t, stdout on a {stdout:?}"
            );

            // runc 1.1.5 clears ONLCR only once the master reached it,
            // which for `exec` can be after the process wrote (seen:
            // "a\r\r\n"): its bytes are the goal, not the reference, there.
            if name == "runc" {
                continue;
            }
            let id = unique("onlcrx");
            let _b = sleeper(&rt, &id)?;
            let (code, out) = exec_terminal(&rt, &id, &[], &["printf", "a\\nb\\n"], stdout)?;
            assert_eq!(code, 0, "{name}: exec: {} {}", text(&out), rt.log_text());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want(stdout, "a\nb\n")),
                "{name}: exec -t, stdout on a {stdout:?}"
            );
            // Cleared on the terminal itself, as the process sees it.
            let (code, out) = exec_terminal(&rt, &id, &[], &["stty", "-a"], stdout)?;
            assert_eq!(code, 0, "{name}: stty: {}", text(&out));
            assert!(text(&out).contains("-onlcr"), "{name}: {}", text(&out));
            rt.ok(&["delete", "--force", &id])?;
        }
    }
    Ok(())
}

/// Whoever asked for a console socket gets the terminal as the kernel
/// sets it up (translation on): only the runtime's own foreground proxy
/// clears it.
#[test]
fn console_socket_terminal_keeps_newline_translation() -> Result<()> {
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        b.config["process"]["terminal"] = json!(true);
        b.args(&["stty", "-a"]);
        b.write()?;
        let dir = TempDir::new("console-onlcr")?;
        let sock = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        let id = unique("onlcrsock");
        let mut creator = rt
            .cmd(&[
                "create",
                "--bundle",
                &bundle_path(&b),
                "--console-socket",
                &sock.display().to_string(),
                &id,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let (conn, _) = listener.accept()?;
        let master = recv_master(&conn)?;
        let status = creator.wait()?;
        assert!(status.success(), "{name}: create: {}", rt.log_text());
        rt.ok(&["start", &id])?;
        let mut f = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let t = String::from_utf8_lossy(&out);
        assert!(t.contains(" onlcr") && !t.contains("-onlcr"), "{name}: {t}");
        assert!(t.contains("\r\n"), "{name}: translated output {t:?}");
        rt.wait_status(&id, "stopped")?;
        rt.ok(&["delete", &id])?;
    }
    Ok(())
}

/// The pty master sent over a console socket (SCM_RIGHTS).
fn recv_master(conn: &std::os::unix::net::UnixStream) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{FromRawFd, RawFd};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    bail!("no pty master received")
}
