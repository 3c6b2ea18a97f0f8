//! Last filesystem steps, run inside the container root after `enter`:
//! rootfs propagation, readonlyPaths, maskedPaths, read-only /dev and root.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, makedev, SFlag};
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};

use super::lookup::Lookup;
use super::mounts::{mount_flags_of, sys_mount};
use super::{fdmount, options, paths, pivot, RootfsContext};

pub fn finalize(ctx: &RootfsContext) -> Result<()> {
    create_cwd(ctx)?;
    let root = Path::new("/");
    // Only now: applied before pivot it would act on the host's "/" mount.
    if let Some(flags) = pivot::rootfs_propagation(ctx)? {
        sys_mount(None, root, None, flags, None)
            .map_err(|e| anyhow!("set rootfs propagation {:?} on /: {}", flags, e.desc()))?;
    }
    let linux = ctx.spec.linux().as_ref();
    // One root descriptor and one per parent directory for all of them.
    let mut lookup = Lookup::new(root)?;
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(&mut lookup, Path::new(p))?;
    }
    let mut devnull = None;
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(&mut lookup, Path::new(p), &mut devnull)?;
    }
    remount_dev_readonly(ctx)?;
    if ctx
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        readonly_root()?;
    }
    Ok(())
}

/// Like runc, create a missing process.cwd (0755, owned by root) once inside the new root
/// and before anything is made read-only: Kubernetes and compose set workingDirs that
/// images often lack. A relative cwd is left for the process setup to reject.
fn create_cwd(ctx: &RootfsContext) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(cwd) = ctx.spec.process().as_ref().map(|p| p.cwd()) else {
        return Ok(());
    };
    if !cwd.is_absolute() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cwd)
        .map_err(|e| anyhow!("create cwd {:?}: {}", cwd, e))
}

/// Bind the path onto itself and make that read-only, keeping the source
/// mount's nosuid/nodev/noexec (mount_setattr only touches `ro`). The path
/// is resolved once, inside the root, and the bind goes from that
/// descriptor onto itself.
fn readonly_path(lookup: &mut Lookup, p: &Path) -> Result<()> {
    let p = paths::clean(p);
    let err = |what: &str, e: Errno| anyhow!("readonly path {:?}: {}: {}", p, what, e.desc());
    let Some(target) = lookup.open(&p)? else {
        return Ok(());
    };
    let tree = fdmount::clone_tree(&target, true).map_err(|e| err("bind", e))?;
    set_tree_attrs_top(&tree, libc::MOUNT_ATTR_RDONLY).map_err(|e| err("make read-only", e))?;
    fdmount::move_onto(&tree, &target).map_err(|e| err("mount", e))?;
    lookup.mounted_on(&p);
    Ok(())
}

/// Files are covered with /dev/null, directories with an empty read-only
/// tmpfs; paths that do not exist need no masking. `devnull` is the
/// container's /dev/null, verified (see [`open_dev_null`]); the mount goes
/// from descriptor to descriptor, so neither the mask's source nor its
/// target can be redirected by a symlink swapped in meanwhile
/// (CVE-2025-31133), and the result is checked.
fn mask_path(lookup: &mut Lookup, p: &Path, devnull: &mut Option<OwnedFd>) -> Result<()> {
    let p = paths::clean(p);
    let err = |what: &str, e: Errno| anyhow!("mask path {:?}: {}: {}", p, what, e.desc());
    let Some(target) = lookup.open(&p)? else {
        return Ok(());
    };
    let st = fstat(target.as_raw_fd()).map_err(|e| err("stat", e))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    let tree = if is_dir {
        fdmount::new_fs(c"tmpfs", libc::MOUNT_ATTR_RDONLY)
            .map_err(|e| err("make read-only tmpfs", e))?
    } else {
        if devnull.is_none() {
            *devnull = Some(open_dev_null(lookup)?);
        }
        let Some(null) = devnull.as_ref() else {
            unreachable!("set just above");
        };
        fdmount::clone_tree(null, false).map_err(|e| err("clone /dev/null", e))?
    };
    fdmount::move_onto(&tree, &target).map_err(|e| err("mount", e))?;
    drop(target);
    lookup.mounted_on(&p);
    verify_masked(lookup, &p, is_dir)
}

/// The container's /dev/null, which must really be the null device (1:3):
/// an image or a shared /dev may have made it a symlink to a procfs file.
fn open_dev_null(lookup: &Lookup) -> Result<OwnedFd> {
    let fd = lookup.open_fresh(Path::new("/dev/null"))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| anyhow!("stat /dev/null: {}", e.desc()))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || st.st_rdev != makedev(1, 3) {
        bail!("/dev/null in the container is not the null device (1:3): refusing to mask paths with it");
    }
    Ok(fd)
}

/// After masking, the path must show the null device or an empty tmpfs,
/// looked up afresh from the root (no cached parent): what the container
/// will find there.
fn verify_masked(lookup: &Lookup, p: &Path, is_dir: bool) -> Result<()> {
    let fd = lookup.open_fresh(p)?;
    let ok = if is_dir {
        fstatfs(&fd).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
    } else {
        fstat(fd.as_raw_fd()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
                && st.st_rdev == makedev(1, 3)
        })
    };
    if !ok {
        bail!(
            "mask path {:?}: after masking it is not covered by the mask",
            p
        );
    }
    Ok(())
}

/// mount_setattr on the top mount of a detached tree only.
fn set_tree_attrs_top(tree: &OwnedFd, set: u64) -> nix::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the empty
    // NUL-terminated path; the descriptor stays open for the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(res).map(drop)
}

/// A read-only /dev was mounted writable so devices could be created.
fn remount_dev_readonly(ctx: &RootfsContext) -> Result<()> {
    let dev = Path::new("/dev");
    for m in ctx.spec.mounts().iter().flatten() {
        if paths::clean(m.destination()) != dev {
            continue;
        }
        let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
        if !opts.flags.contains(MsFlags::MS_RDONLY) {
            continue;
        }
        let flags = if opts.is_bind() {
            options::remount_flags(opts.flags) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT
        } else {
            opts.flags | MsFlags::MS_REMOUNT
        };
        sys_mount(None, dev, None, flags, Some(&opts.data_string()))
            .map_err(|e| anyhow!("remount /dev read-only: {}", e.desc()))?;
    }
    Ok(())
}

/// root.readonly: remount / read-only; if locked flags make that fail, keep
/// the mount's current flags and retry (as runc).
fn readonly_root() -> Result<()> {
    let root = Path::new("/");
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if sys_mount(None, root, None, base, None).is_ok() {
        return Ok(());
    }
    let current = mount_flags_of(root).map_err(|e| anyhow!("statvfs /: {}", e.desc()))?;
    sys_mount(None, root, None, base | current, None)
        .map_err(|e| anyhow!("remount / read-only: {}", e.desc()))
}
