//! Making the rootfs a mount of its own and switching the process into it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use super::mounts::{mount_err, sys_mount};
use super::{mountinfo, options, RootfsContext};

/// Propagation requested by `linux.rootfsPropagation`, if any.
pub(crate) fn rootfs_propagation(ctx: &RootfsContext) -> Result<Option<MsFlags>> {
    let Some(mode) = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .filter(|m| !m.is_empty())
    else {
        return Ok(None);
    };
    options::parse_propagation(mode)
        .map(Some)
        .ok_or_else(|| anyhow!("unknown linux.rootfsPropagation {:?}", mode))
}

/// Detaches our mount tree from the host's (rslave unless the spec asks
/// otherwise, as runc), makes the rootfs's parent mount private so the
/// rootfs bind does not propagate and pivot_root accepts it, then binds the
/// rootfs onto itself so it is a mount point.
pub(crate) fn prepare_root(ctx: &RootfsContext) -> Result<()> {
    let flags = rootfs_propagation(ctx)?.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    sys_mount(None, Path::new("/"), None, flags, None).map_err(|e| {
        mount_err(
            &format!("propagation {:?}", flags),
            Path::new("/"),
            ctx.rootfs,
            e,
        )
    })?;

    // pivot_root refuses a rootfs whose parent mount is shared. After a
    // recursive slave or private change of / no mount is shared any more,
    // so only a shared rootfsPropagation needs the (costly) mountinfo look.
    let none_shared = flags.contains(MsFlags::MS_REC)
        && flags.intersects(MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE);
    if none_shared {
        return bind_rootfs(ctx);
    }
    let mounts = mountinfo::read_self()?;
    if let Some(parent) = mountinfo::containing(&mounts, ctx.rootfs) {
        if parent.is_shared() {
            sys_mount(None, &parent.mount_point, None, MsFlags::MS_PRIVATE, None).map_err(|e| {
                mount_err(
                    "private (rootfs parent)",
                    &parent.mount_point,
                    ctx.rootfs,
                    e,
                )
            })?;
        }
    }

    bind_rootfs(ctx)
}

/// The rootfs becomes a mount point of its own (pivot_root needs one).
fn bind_rootfs(ctx: &RootfsContext) -> Result<()> {
    sys_mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| mount_err(&ctx.rootfs.to_string_lossy(), ctx.rootfs, ctx.rootfs, e))
}

/// After a chroot the host's full proc and sysfs mounts would still be in
/// our mount namespace, reachable through leaked descriptors and letting
/// the kernel's "fully visible proc" check pass for new proc mounts. Detach
/// them (or cover them when they are locked), as runc's msMoveRoot does.
fn hide_host_kernel_fs(rootfs: &Path) -> Result<()> {
    let is_host_kfs = |m: &mountinfo::MountInfo| {
        m.root == Path::new("/")
            && (m.fstype == "proc" || m.fstype == "sysfs")
            && !m.mount_point.starts_with(rootfs)
    };
    let targets: Vec<_> = mountinfo::read_self()?
        .into_iter()
        .filter(|m| is_host_kfs(m))
        .map(|m| m.mount_point)
        .collect();
    for p in targets {
        let err = |what: &str, e: Errno| {
            anyhow!("hide host {:?} before chroot: {}: {}", p, what, e.desc())
        };
        match sys_mount(None, &p, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None) {
            Ok(()) => {}
            // Already gone with a parent we detached.
            Err(Errno::ENOENT) | Err(Errno::EINVAL) => continue,
            Err(e) => return Err(err("make rslave", e)),
        }
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(Errno::EINVAL) | Err(Errno::EPERM) => {
                // Locked by a user namespace: cover it if it is still there.
                let still = mountinfo::read_self()?
                    .iter()
                    .any(|m| m.mount_point == p && is_host_kfs(m));
                if still {
                    sys_mount(
                        Some(Path::new("tmpfs")),
                        &p,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        None,
                    )
                    .map_err(|e| err("cover with tmpfs", e))?;
                }
            }
            Err(e) => return Err(err("detach", e)),
        }
    }
    Ok(())
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    let fd = open(
        p,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("open {:?}: {}", p, e.desc()))?;
    // SAFETY: fresh descriptor from open(2), owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Switches `/` to the rootfs and drops every reference to the host tree.
pub fn enter(ctx: &RootfsContext) -> Result<()> {
    if ctx.no_pivot {
        move_root(ctx.rootfs)
    } else {
        pivot(ctx.rootfs)
    }
}

/// pivot_root(".", ".") stacks the old root on top of the new one at the
/// same place; unmounting "." then removes it without needing a directory
/// for the old root inside the (possibly read-only) rootfs.
fn pivot(rootfs: &Path) -> Result<()> {
    let err = |what: &str, e: Errno| {
        anyhow!(
            "pivot_root into {}: {}: {}",
            rootfs.display(),
            what,
            e.desc()
        )
    };
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    fchdir(new_root.as_raw_fd()).map_err(|e| err("fchdir new root", e))?;
    pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    fchdir(old_root.as_raw_fd()).map_err(|e| err("fchdir old root", e))?;
    // The unmount below must not propagate to the host.
    sys_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| err("make old root rslave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detach old root", e))?;
    chdir("/").map_err(|e| err("chdir /", e))
}

/// --no-pivot (e.g. a ramfs root where pivot_root is impossible): move the
/// rootfs mount over / and chroot into it.
fn move_root(rootfs: &Path) -> Result<()> {
    let err =
        |what: &str, e: Errno| anyhow!("move root to {}: {}: {}", rootfs.display(), what, e.desc());
    hide_host_kernel_fs(rootfs)?;
    chdir(rootfs).map_err(|e| err("chdir rootfs", e))?;
    sys_mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)
        .map_err(|e| err("MS_MOVE onto /", e))?;
    chroot(".").map_err(|e| err("chroot", e))?;
    chdir("/").map_err(|e| err("chdir /", e))
}
