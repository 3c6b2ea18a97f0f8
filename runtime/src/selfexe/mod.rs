//! Protection against CVE-2019-5736: a container process that gets the
//! kernel to exec /proc/self/exe while berth is inside the container (e.g. a
//! `#!/proc/self/exe` entrypoint during `exec`) would otherwise hold the host
//! berth binary and could overwrite it. Before entering any container berth
//! makes an unwritable view of its binary its executable (view.rs: a
//! detached read-only bind mount, else a sealed memfd copy), so every
//! process it clones has that view as /proc/self/exe:
//! - in place, by re-mapping its own segments from the view and switching
//!   the exe link with prctl (remap.rs; a few syscalls);
//! - else by re-executing itself from the view (a second process start,
//!   ~1 ms).
//!
//! A binary that already sits on a read-only mount needs neither.

mod remap;
mod view;

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;

const MARKER_ENV: &str = "_BERTH_CLONED_BINARY";

/// True when this process runs from a write-sealed memfd copy.
fn running_from_sealed_memfd() -> bool {
    match File::open("/proc/self/exe") {
        Ok(f) => {
            // SAFETY: F_GET_SEALS only reads flags of our own fd.
            let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
            seals >= 0 && seals & libc::F_SEAL_WRITE != 0
        }
        Err(_) => false,
    }
}

/// True when the binary we run from sits on a read-only mount: reopening
/// /proc/self/exe for writing then fails with EROFS.
fn binary_on_read_only_mount() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Make an unwritable view of the binary this process's executable, unless
/// it already runs from one.
pub fn ensure_cloned() -> Result<()> {
    let reexecuted = std::env::var_os(MARKER_ENV).is_some();
    if reexecuted {
        std::env::remove_var(MARKER_ENV);
    }
    if binary_on_read_only_mount() || running_from_sealed_memfd() {
        return Ok(());
    }
    if reexecuted {
        bail!("re-executed berth still runs from a writable binary");
    }
    let view = view::unwritable_view()?;
    match remap::switch_exe(&view) {
        Ok(()) => Ok(()),
        Err(e) if e.is::<remap::NotKernelLoaded>() => Err(e),
        Err(e) => {
            crate::logging::debug(&format!(
                "cannot switch executable in place ({e:#}); re-executing"
            ));
            reexec(&view)
        }
    }
}

/// execveat(fd, "", argv, envp + marker, AT_EMPTY_PATH).
fn reexec(fd: &File) -> Result<()> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .context("argument contains NUL")?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARKER_ENV}=1")).context("marker env")?);
    let empty = CString::new("").context("empty path")?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: execveat(fd, "", argv, envp, AT_EMPTY_PATH) with NULL-terminated arrays.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error()).context("re-exec berth from its protected copy")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` in a forked child (single-threaded, as berth is when it
    /// switches) and returns the child's exit status.
    fn in_child(check: fn() -> Result<()>) -> i32 {
        // SAFETY: the child only runs `check` and exits; glibc's fork keeps
        // malloc usable in the child.
        match unsafe { libc::fork() } {
            0 => {
                // A panic must not unwind into the harness running in the child.
                let code = match std::panic::catch_unwind(check)
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
                {
                    Ok(()) => 0,
                    Err(e) => {
                        // Straight to fd 2: the harness captures eprintln.
                        let msg = format!("child: {e:#}\n");
                        // SAFETY: writing a valid buffer to stderr.
                        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                        1
                    }
                };
                // SAFETY: leave the child without running the test harness.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                }
            }
            _ => panic!("fork: {}", std::io::Error::last_os_error()),
        }
    }

    #[test]
    fn switching_in_place_makes_proc_self_exe_unwritable() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root for mounts and PR_SET_MM");
            return;
        }
        let status = in_child(|| {
            let before = std::fs::metadata("/proc/self/exe")?;
            // In place: a failure here must not fall back to re-exec.
            remap::switch_exe(&view::unwritable_view()?)?;
            // Still the same program, now reached through a read-only view.
            let after = std::fs::metadata("/proc/self/exe")?;
            use std::os::unix::fs::MetadataExt;
            anyhow::ensure!((before.dev(), before.ino()) == (after.dev(), after.ino()));
            anyhow::ensure!(
                binary_on_read_only_mount(),
                "exe is not on a read-only mount"
            );
            let err = std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/exe")
                .err()
                .context("/proc/self/exe opened for writing")?;
            // ETXTBSY while we run from it, EROFS once we no longer do.
            anyhow::ensure!(
                matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)),
                "{err}"
            );
            // The re-mapped program keeps working: code, statics, heap.
            let words: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
            anyhow::ensure!(words.join(",").len() > 1000);
            // And later calls see that nothing is left to do.
            ensure_cloned()?;
            Ok(())
        });
        assert_eq!(status, 0);
    }
}
