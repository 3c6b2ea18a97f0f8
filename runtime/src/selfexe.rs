//! Protection against CVE-2019-5736: a container process that gets the
//! kernel to exec /proc/self/exe while berth is inside the container (e.g. a
//! `#!/proc/self/exe` entrypoint during `exec`) would otherwise hold the host
//! berth binary and could overwrite it. Before entering any container we
//! re-exec from a sealed memfd copy, so /proc/self/exe is an anonymous,
//! write-sealed file that is useless to an attacker.

use anyhow::{Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MARKER_ENV: &str = "_BERTH_CLONED_BINARY";

/// True when this process already runs from a sealed memfd copy.
fn running_from_sealed_copy() -> bool {
    if std::env::var_os(MARKER_ENV).is_none() {
        return false;
    }
    // Don't trust the env alone: the seals must really be there.
    match File::open("/proc/self/exe") {
        // SAFETY: F_GET_SEALS only reads flags of our own fd.
        Ok(f) => {
            let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
            seals >= 0 && seals & libc::F_SEAL_WRITE != 0
        }
        Err(_) => false,
    }
}

/// True when the binary we run from sits on a read-only mount: reopening
/// /proc/self/exe for writing then fails with EROFS, so a copy buys nothing.
/// (Install berth on such a mount, e.g. `mount --bind -o ro B B`, to skip
/// the ~3 ms copy and re-exec on every create/run/exec.)
fn binary_on_read_only_mount() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Re-exec the current command from a sealed memfd, unless already done or
/// not needed. Returns only when nothing needed doing.
pub fn ensure_cloned() -> Result<()> {
    if running_from_sealed_copy() {
        std::env::remove_var(MARKER_ENV);
        return Ok(());
    }
    if binary_on_read_only_mount() {
        return Ok(());
    }
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
            dst.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error()).context("re-exec berth from sealed memfd")
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
