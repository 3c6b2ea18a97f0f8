//! The shim's SIGCHLD reaper, in place of the containerd-shim crate's.
//!
//! The crate reaps with nix's `waitpid`, which cannot represent a death by a
//! real-time signal: it reaps such a child, returns an error and the exit
//! is never reported (containerd then waits forever for a process that
//! SIGRTMIN+3, a systemd container's stop signal, has killed). This reaper
//! reads the raw status and reports every exit to the crate's monitor, as
//! the crate's reaper does: 128 + N for a signal.

use containerd_shim::synchronous::monitor::monitor_notify_by_pid;
use containerd_shim::warn;
use signal_hook::consts::SIGCHLD;
use signal_hook::iterator::Signals;

/// Registers for SIGCHLD and reaps in a thread of its own from now on.
/// Called before any child exists, instead of the crate's reaper
/// (`Config::no_reaper`).
pub fn start() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGCHLD])?;
    std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for _ in signals.forever() {
                reap_all();
            }
        })?;
    Ok(())
}

/// Reaps every exited child (one SIGCHLD may stand for several).
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the status int we pass.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if pid <= 0 {
            return;
        }
        let Some(code) = exit_code(status) else {
            continue;
        };
        if let Err(e) = monitor_notify_by_pid(pid, code) {
            warn!("report exit of pid {pid}: {e}");
        }
    }
}

/// The exit code containerd reports: the status, or 128 + the signal.
fn exit_code(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_include_real_time_signals() {
        // Raw wait statuses: exit code in bits 8-15, else the signal number.
        assert_eq!(exit_code(3 << 8), Some(3));
        assert_eq!(exit_code(libc::SIGKILL), Some(137));
        let rt = libc::SIGRTMIN() + 3;
        assert_eq!(exit_code(rt), Some(128 + rt));
    }
}
