//! Unwritable views of the running berth binary, cheapest first:
//! - a detached read-only bind mount of the binary (open_tree +
//!   mount_setattr: two syscalls, no copy, no mount namespace);
//! - the same made in a throwaway mount namespace (kernels without
//!   mount_setattr);
//! - a write-sealed memfd copy (no CAP_SYS_ADMIN; ~2–3 ms for 4 MiB).
//!
//! Every view is checked to be the file we are running from.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// A readable fd of our binary that no one can write through.
pub fn unwritable_view() -> Result<File> {
    let mounted = match detached_read_only_mount() {
        Ok(view) => Ok(view),
        Err(e) => {
            crate::logging::debug(&format!("open_tree view unavailable ({e:#})"));
            namespaced_read_only_mount()
        }
    };
    match mounted {
        Ok(view) => Ok(view),
        Err(e) => {
            crate::logging::debug(&format!(
                "read-only view of berth binary unavailable ({e:#}); copying it"
            ));
            sealed_memfd_copy()
        }
    }
}

/// open_tree(OPEN_TREE_CLONE) of /proc/self/exe (the magic link resolves
/// to exactly the file we run from, so a binary replaced on disk cannot
/// slip in) gives a private, unattached bind mount of that one file;
/// mount_setattr makes it read-only. Nothing is ever attached to a mount
/// namespace, and the mount goes away with the last reference to it.
fn detached_read_only_mount() -> Result<File> {
    let exe = CString::new("/proc/self/exe").context("path")?;
    // SAFETY: open_tree with a valid C string; we own the returned fd.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            exe.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(std::io::Error::last_os_error()).context("open_tree(/proc/self/exe)");
    }
    // SAFETY: fresh fd we own.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = CString::new("").context("path")?;
    // SAFETY: mount_setattr on our own detached mount with a valid struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("mount_setattr(MOUNT_ATTR_RDONLY)");
    }
    // The tree fd is O_PATH: mapping and prctl need a real open file.
    let view = File::open(format!("/proc/self/fd/{}", tree.as_raw_fd()))
        .context("reopen read-only view")?;
    check_view(&view)?;
    Ok(view)
}

/// A read-only bind mount of our binary made in a private mount namespace
/// we enter and leave again right away (no fork). Once we are back, no
/// process is left in that namespace: it is torn down, and the mount lives
/// on detached, held only by the returned file.
fn namespaced_read_only_mount() -> Result<File> {
    let target = std::fs::read_link("/proc/self/exe").context("readlink /proc/self/exe")?;
    let own_ns = File::open("/proc/self/ns/mnt").context("open /proc/self/ns/mnt")?;
    // setns(CLONE_NEWNS) resets the working directory: keep a handle on it.
    let cwd = File::open(".").context("open working directory")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    let view = (|| -> Result<File> {
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
        File::open(&target).context("open read-only view")
    })();
    // Going back is not optional: everything after this (state dirs,
    // bundles, hooks) must see the caller's mounts.
    if let Err(e) = nix::sched::setns(&own_ns, nix::sched::CloneFlags::CLONE_NEWNS) {
        eprintln!("berth: cannot return to the original mount namespace: {e}");
        std::process::abort();
    }
    nix::unistd::fchdir(cwd.as_raw_fd()).context("restore working directory")?;
    let view = view?;
    // The path may now name a different file (binary upgraded on disk).
    check_view(&view)?;
    Ok(view)
}

/// The view must be the running binary, on a read-only mount.
fn check_view(view: &File) -> Result<()> {
    let meta = view.metadata().context("stat read-only view")?;
    let exe = std::fs::metadata("/proc/self/exe").context("stat /proc/self/exe")?;
    if meta.dev() != exe.dev() || meta.ino() != exe.ino() {
        bail!("the read-only view is no longer the running binary");
    }
    let flags = nix::sys::statvfs::fstatvfs(view).context("statvfs read-only view")?;
    if !flags
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        bail!("the view of the berth binary is writable");
    }
    Ok(())
}

/// A write-sealed memfd holding a copy of our binary.
pub fn sealed_memfd_copy() -> Result<File> {
    let name = CString::new("berth").context("memfd name")?;
    // SAFETY: memfd_create with a valid C string; we own the returned fd.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create for sealed binary copy");
    }
    // SAFETY: raw is a fresh fd we own.
    let mut dst = unsafe { File::from_raw_fd(raw) };
    let mut exe = File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let len = exe.metadata().context("stat /proc/self/exe")?.len();
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
    Ok(dst)
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

    fn is_root() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    fn assert_unwritable_running_binary(view: &File) {
        let meta = view.metadata().unwrap();
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert_eq!((meta.dev(), meta.ino()), (exe.dev(), exe.ino()));
        let path = format!("/proc/self/fd/{}", view.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)),
            "{err}"
        );
    }

    #[test]
    fn memfd_copy_is_complete_and_write_sealed() {
        let fd = sealed_memfd_copy().unwrap();
        let len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(fd.metadata().unwrap().len(), len);
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
    fn detached_view_is_the_running_binary_and_unwritable() {
        if !is_root() {
            eprintln!("skipped: needs root for mounts");
            return;
        }
        assert_unwritable_running_binary(&detached_read_only_mount().unwrap());
    }

    #[test]
    fn namespaced_view_is_the_running_binary_and_unwritable() {
        if !is_root() {
            eprintln!("skipped: needs root for mount namespaces");
            return;
        }
        assert_unwritable_running_binary(&namespaced_read_only_mount().unwrap());
    }
}
