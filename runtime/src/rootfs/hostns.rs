//! A container without a mount namespace of its own (no `mount` entry in
//! `linux.namespaces`), as runc runs it.
//!
//! runc still performs the rootfs steps, in the host's mount namespace: the
//! rootfs bound onto itself, the spec's mounts inside it, devices, then a
//! chroot(2) into it instead of pivot_root (which would pivot the host).
//! It refuses maskedPaths/readonlyPaths there ("unable to restrict sys
//! entries without a private MNT namespace"), as berth does.
//!
//! Where berth differs, on purpose:
//! - runc first makes the host's `/` recursively slave (its usual first
//!   step, meant for a private namespace): berth leaves the host's
//!   propagation alone and instead makes only its own rootfs bind
//!   recursively private, so the container's mounts do not propagate into
//!   other namespaces and nobody else's into the container;
//! - `--no-pivot` would MS_MOVE the rootfs onto the host's `/`: berth
//!   chroots in that case too;
//! - runc leaves every mount behind on the host when the container is
//!   deleted (17 for the busybox bundle). berth detaches its rootfs bind,
//!   and everything mounted under it, in `delete` ([`release_rootfs`]),
//!   when init fails half-way ([`undo_after_failure`]) and when `create`
//!   fails after init's mounts (its rollback);
//! - runc refuses `exec` into such a container ("ns paths are empty"):
//!   berth's exec enters init's root (exec.rs), never the host's `/`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::mounts::{mount_err, sys_mount};
use super::RootfsContext;

/// True when the spec neither creates nor joins a mount namespace.
pub(crate) fn shares_host_mount_ns(spec: &Spec) -> bool {
    !spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Mount))
}

/// runc's validation of such a spec: masking or making paths read-only
/// would do it on the host.
pub fn check_spec(spec: &Spec) -> Result<()> {
    if !shares_host_mount_ns(spec) {
        return Ok(());
    }
    let linux = spec.linux().as_ref();
    let masked = linux
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|p| !p.is_empty());
    let readonly = linux
        .and_then(|l| l.readonly_paths().as_ref())
        .is_some_and(|p| !p.is_empty());
    if masked || readonly {
        bail!("unable to restrict sys entries without a private MNT namespace");
    }
    Ok(())
}

/// What init has done to the host's mount table, for [`undo_after_failure`].
/// Init is a single-threaded clone, so a process-wide flag is its own.
static PROGRESS: AtomicU8 = AtomicU8::new(NOTHING);
const NOTHING: u8 = 0;
const BOUND: u8 = 1;
const CHROOTED: u8 = 2;

/// The rootfs bound onto itself (so `root.readonly` and the propagation of
/// the container's tree act on a mount of its own), then made recursively
/// private: see the module doc.
pub(crate) fn bind_rootfs(ctx: &RootfsContext) -> Result<()> {
    sys_mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| mount_err(&ctx.rootfs.to_string_lossy(), ctx.rootfs, ctx.rootfs, e))?;
    PROGRESS.store(BOUND, Ordering::SeqCst);
    sys_mount(
        None,
        ctx.rootfs,
        None,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| mount_err("rprivate (rootfs bind)", ctx.rootfs, ctx.rootfs, e))
}

/// runc's chroot() for a container in the host's mount namespace.
pub(crate) fn chroot_into(rootfs: &Path) -> Result<()> {
    let err =
        |what: &str, e: Errno| anyhow!("chroot into {}: {what}: {}", rootfs.display(), e.desc());
    chdir(rootfs).map_err(|e| err("chdir rootfs", e))?;
    chroot(".").map_err(|e| err("chroot", e))?;
    PROGRESS.store(CHROOTED, Ordering::SeqCst);
    chdir("/").map_err(|e| err("chdir /", e))
}

/// Init failed: take its mounts off the host again. Before the chroot the
/// rootfs bind is found by its host path; after it, it is our own root,
/// which MNT_DETACH may unmount (with everything under it).
pub fn undo_after_failure(rootfs: &Path) {
    match PROGRESS.swap(NOTHING, Ordering::SeqCst) {
        BOUND => {
            if let Err(e) = release_rootfs(rootfs) {
                eprintln!("berth init: {e:#}");
            }
        }
        CHROOTED => {
            if let Err(e) = umount2("/", MntFlags::MNT_DETACH) {
                eprintln!("berth init: detach the rootfs bind: {}", e.desc());
            }
        }
        _ => {}
    }
}

/// One `/proc/self/mountinfo` entry: what identifies a mount, fields kept
/// as the kernel escapes them.
struct Entry<'a> {
    id: u64,
    parent: u64,
    dev: &'a str,
    root: &'a str,
    mount_point: &'a str,
}

fn parse_entry(line: &str) -> Option<Entry<'_>> {
    let mut f = line.split(' ');
    Some(Entry {
        id: f.next()?.parse().ok()?,
        parent: f.next()?.parse().ok()?,
        dev: f.next()?,
        root: f.next()?,
        mount_point: f.next()?,
    })
}

/// mountinfo's octal escaping of a path.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// The mount id of the mount an fd is on (from /proc/self/fdinfo).
fn mount_id_of(fd: &OwnedFd) -> Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .context("read fdinfo of the rootfs")?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no mnt_id in fdinfo")
}

/// `delete`: detach the rootfs bind init made in the host's mount
/// namespace, with every mount under it. It is recognised, not assumed: the
/// topmost mount on the rootfs path must be a bind of exactly what lies
/// beneath it (same device, same directory), so a rootfs that is a mount of
/// its own (containerd's overlay) is never taken away. The unmount goes
/// through a descriptor checked to be on that very mount.
pub fn release_rootfs(rootfs: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let entries: Vec<Entry> = text.lines().filter_map(parse_entry).collect();
    let at = escape(rootfs);
    let stacked: Vec<&Entry> = entries.iter().filter(|e| e.mount_point == at).collect();
    let Some(top) = stacked
        .iter()
        .find(|e| !stacked.iter().any(|o| o.parent == e.id))
    else {
        return Ok(()); // nothing mounted there (any more)
    };
    let Some(below) = entries.iter().find(|e| e.id == top.parent) else {
        return Ok(());
    };
    // Where the rootfs directory is inside the filesystem beneath.
    let rel = Path::new(&at)
        .strip_prefix(below.mount_point)
        .unwrap_or(Path::new(""));
    let expected = Path::new(below.root).join(rel);
    if top.dev != below.dev || Path::new(top.root) != expected {
        return Ok(()); // not a bind of the rootfs onto itself: not ours
    }
    let fd = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("open rootfs {}: {}", rootfs.display(), e.desc()))?;
    // SAFETY: fresh descriptor from open(2), owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if mount_id_of(&fd)? != top.id {
        bail!(
            "rootfs {} changed while its mounts were being released",
            rootfs.display()
        );
    }
    umount2(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        MntFlags::MNT_DETACH,
    )
    .map_err(|e| {
        anyhow!(
            "detach the rootfs bind on {}: {}",
            rootfs.display(),
            e.desc()
        )
    })
}
