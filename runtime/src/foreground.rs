//! Foreground supervision for `run` and non-detached `exec`: forward
//! signals to the container process, proxy a terminal, reap, and return the
//! process's exit status the way a shell would (128+signal when killed).

use crate::{console, signals};
use anyhow::{Context, Result};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// Block every signal in this (still single-threaded) process, so that
/// none is lost before the forwarding loop runs. Children unblock.
pub fn block_signals() -> Result<SigSet> {
    let mask = SigSet::all();
    mask.thread_block().context("block signals")?;
    Ok(mask)
}

pub struct Terminal {
    master: File,
    _raw: console::RawMode,
    output: std::sync::mpsc::Receiver<()>,
}

/// Start copying stdin → pty master and pty master → stdout.
pub fn proxy_terminal(master: OwnedFd) -> Result<Terminal> {
    let master = File::from(master);
    if let Some((rows, cols)) = console::get_size(0) {
        let _ = console::set_size(master.as_raw_fd(), rows, cols);
    }
    let raw = console::RawMode::enable();
    let mut to_pty = master.try_clone().context("dup pty master")?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut from_pty = master.try_clone().context("dup pty master")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed: the container side is gone.
        while let Ok(n) = from_pty.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
        let _ = done_tx.send(());
    });
    Ok(Terminal {
        master,
        _raw: raw,
        output: done_rx,
    })
}

/// Reaps one exited child without blocking: Some((pid, raw status)).
/// libc rather than nix: nix cannot represent a death by a real-time
/// signal and would reap the child yet report an error.
fn reap_one() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes only the status int we pass.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// The shell's exit code for a wait status: the code, or 128 + signal.
fn exit_code(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Forward signals to `pid` and wait for it; returns its exit code.
/// `mask` is the set blocked by [`block_signals`].
pub fn supervise(pid: i32, mask: &SigSet, terminal: Option<Terminal>) -> Result<i32> {
    let mut sfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let code = 'outer: loop {
        // Reap first: the process may have exited before we got here.
        while let Some((reaped, status)) = reap_one() {
            if reaped == pid {
                if let Some(code) = exit_code(status) {
                    break 'outer code;
                }
            }
        }
        // Not our child (no subreaper): fall back to polling /proc.
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            break 'outer 255;
        }
        let info = match wait_signal(&mut sfd) {
            Some(i) => i,
            None => continue,
        };
        match info {
            libc::SIGCHLD => {}
            libc::SIGWINCH => {
                if let Some(t) = &terminal {
                    if let Some((rows, cols)) = console::get_size(0) {
                        let _ = console::set_size(t.master.as_raw_fd(), rows, cols);
                    }
                }
            }
            other => {
                let _ = signals::send(pid, other);
            }
        }
    };
    if let Some(t) = terminal {
        // Let the last output through, but don't hang on a slave still
        // held open by some other process in the container.
        let _ = t.output.recv_timeout(Duration::from_millis(500));
    }
    Ok(code)
}

/// One signal number, or None after a short timeout (to re-check liveness).
fn wait_signal(sfd: &mut SignalFd) -> Option<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(100u16)) {
        Ok(n) if n > 0 => sfd.read_signal().ok().flatten().map(|s| s.ssi_signo as i32),
        _ => None,
    }
}
