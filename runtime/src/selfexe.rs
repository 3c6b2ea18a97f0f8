//! Protection against CVE-2019-5736: a container process that gets the
//! kernel to exec /proc/self/exe while berth is inside the container (e.g. a
//! `#!/proc/self/exe` entrypoint during `exec`) would otherwise hold the host
//! berth binary and could overwrite it. Before entering any container berth
//! re-executes itself from a copy of its binary that cannot be written:
//! - preferably a read-only bind mount of the binary made in a throwaway
//!   mount namespace and then detached (no copy: ~0.3 ms), so
//!   /proc/self/exe reopens with EROFS and is reachable from no namespace;
//! - else (no CAP_SYS_ADMIN, binary replaced on disk) a write-sealed memfd
//!   copy of the binary (~2–3 ms for a 4 MiB binary).
//!
//! A binary that already sits on a read-only mount needs neither.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

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

/// Re-exec the current command from an unwritable view of the binary,
/// unless this process already runs from one. Returns only then.
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
    let fd = match read_only_view() {
        Ok(fd) => fd,
        Err(e) => {
            crate::logging::debug(&format!(
                "read-only view of berth binary unavailable ({e:#}); copying it"
            ));
            sealed_memfd_copy()?
        }
    };
    reexec(&fd)
}

/// An O_PATH fd of our binary through a read-only bind mount made in a
/// private mount namespace we enter and leave again right away (no fork).
/// Once we are back, no process is left in that namespace: it is torn
/// down, and the mount lives on detached, held only by the fd.
fn read_only_view() -> Result<OwnedFd> {
    let target = std::fs::read_link("/proc/self/exe").context("readlink /proc/self/exe")?;
    let own_ns = File::open("/proc/self/ns/mnt").context("open /proc/self/ns/mnt")?;
    // setns(CLONE_NEWNS) resets the working directory: keep a handle on it.
    let cwd = File::open(".").context("open working directory")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    let view = (|| -> Result<OwnedFd> {
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .context("make / private")?;
        mount(Some(&target), &target, none, MsFlags::MS_BIND, none).context("bind berth binary")?;
        mount(
            none,
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )
        .context("remount berth binary read-only")?;
        let fd = nix::fcntl::open(
            &target,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("open read-only view")?;
        // SAFETY: fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    // Going back is not optional: everything after this (state dirs,
    // bundles, hooks) must see the caller's mounts.
    if let Err(e) = nix::sched::setns(&own_ns, nix::sched::CloneFlags::CLONE_NEWNS) {
        eprintln!("berth: cannot return to the original mount namespace: {e}");
        std::process::abort();
    }
    nix::unistd::fchdir(cwd.as_raw_fd()).context("restore working directory")?;
    let fd = view?;
    // The path may now name a different file (binary upgraded on disk).
    let view = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat read-only view")?;
    let exe = std::fs::metadata("/proc/self/exe").context("stat /proc/self/exe")?;
    if view.st_dev != exe.dev() || view.st_ino != exe.ino() {
        bail!("{} is no longer the running binary", target.display());
    }
    Ok(fd)
}

/// A write-sealed memfd holding a copy of our binary.
fn sealed_memfd_copy() -> Result<OwnedFd> {
    let name = CString::new("berth").context("memfd name")?;
    // SAFETY: memfd_create with a valid C string; we own the returned fd.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create for sealed binary copy");
    }
    // SAFETY: raw is a fresh fd we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut exe = File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let len = exe.metadata().context("stat /proc/self/exe")?.len();
    let mut dst = File::from(memfd);
    let copied = copy_all(&mut exe, &mut dst, len)?;
    anyhow::ensure!(
        copied == len,
        "short copy of berth binary ({copied} of {len} bytes)"
    );
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: adding seals to our own memfd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error()).context("seal berth binary copy");
    }
    Ok(OwnedFd::from(dst))
}

/// execveat(fd, "", argv, envp + marker, AT_EMPTY_PATH).
fn reexec(fd: &OwnedFd) -> Result<()> {
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

/// copy_file_range in a loop (in-kernel copy, no userspace buffer).
fn copy_all(src: &mut File, dst: &mut File, len: u64) -> Result<u64> {
    let mut done = 0u64;
    while done < len {
        // SAFETY: both fds are valid; offsets are tracked by the kernel.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                (len - done) as usize,
                0,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if done == 0
                && matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EINVAL)
                )
            {
                return std::io::copy(src, dst).context("copy berth binary into memfd");
            }
            return Err(err).context("copy berth binary into memfd");
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_copy_is_complete_and_write_sealed() {
        let fd = sealed_memfd_copy().unwrap();
        let len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(
            nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_size as u64,
            len
        );
        // SAFETY: reading seals of our own fd.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_WRITE != 0);
        // The seal allows opening for writing but refuses every write.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        use std::io::Write;
        let err = f.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    #[test]
    fn read_only_view_is_the_running_binary_and_unwritable() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root for mount namespaces");
            return;
        }
        let fd = read_only_view().unwrap();
        let view = nix::sys::stat::fstat(fd.as_raw_fd()).unwrap();
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert_eq!((view.st_dev, view.st_ino), (exe.dev(), exe.ino()));
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let flags = nix::sys::statvfs::statvfs(path.as_str()).unwrap().flags();
        assert!(flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)),
            "{err}"
        );
    }
}
