//! Mounting from descriptor to descriptor with the new mount API
//! (`open_tree`, `move_mount`, `fsopen`/`fsmount`, Linux 5.2+).
//!
//! Once `/` is the container root, every path is one the container's image
//! (or a shared /dev) may have planted: a mount source looked up by path can
//! be swapped for a symlink to a procfs file (CVE-2025-52565,
//! CVE-2025-31133) and `/proc/self/fd/N` is only as good as the container's
//! /proc. Cloning the source from a descriptor that was checked and moving
//! it onto a descriptor that was checked involves no path at all.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// A detached copy of the mount (sub)tree at `src` (which may be a file),
/// `recursive` including the mounts below it.
pub(crate) fn clone_tree(src: &OwnedFd, recursive: bool) -> nix::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: open_tree reads the empty NUL-terminated path; returns a new
    // descriptor or -1.
    let fd = Errno::result(unsafe {
        libc::syscall(libc::SYS_open_tree, src.as_raw_fd(), c"".as_ptr(), flags)
    })?;
    // SAFETY: fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached mount `tree` on top of the object `target` is
/// open on (an `O_PATH` descriptor is enough).
pub(crate) fn move_onto(tree: &OwnedFd, target: &OwnedFd) -> nix::Result<()> {
    // SAFETY: both paths are empty NUL-terminated strings; the descriptors
    // stay open for the call.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A new, detached instance of filesystem `fstype` with mount attributes
/// `attrs` (MOUNT_ATTR_*).
pub(crate) fn new_fs(fstype: &std::ffi::CStr, attrs: u64) -> nix::Result<OwnedFd> {
    // SAFETY: fsopen reads the NUL-terminated name; returns a new fd or -1.
    let fsfd = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC)
    })?;
    // SAFETY: fresh descriptor owned from here on.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as RawFd) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on the configured context; returns a new fd or -1.
    let mfd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    })?;
    // SAFETY: fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(mfd as RawFd) })
}
