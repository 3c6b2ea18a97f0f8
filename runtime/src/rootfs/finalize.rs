//! Last filesystem steps, run inside the container root after `enter`:
//! rootfs propagation, readonlyPaths, maskedPaths, read-only /dev and root.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, Result};
use nix::errno::Errno;
use nix::mount::MsFlags;

use super::mounts::{mount_flags_of, sys_mount};
use super::{options, paths, pivot, RootfsContext};

pub fn finalize(ctx: &RootfsContext) -> Result<()> {
    create_cwd(ctx)?;
    let root = Path::new("/");
    // Only now: applied before pivot it would act on the host's "/" mount.
    if let Some(flags) = pivot::rootfs_propagation(ctx)? {
        sys_mount(None, root, None, flags, None)
            .map_err(|e| anyhow!("set rootfs propagation {:?} on /: {}", flags, e.desc()))?;
    }
    let linux = ctx.spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(Path::new(p))?;
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
/// mount's nosuid/nodev/noexec (which a user namespace could not clear).
fn readonly_path(p: &Path) -> Result<()> {
    let p = paths::clean(p);
    let err = |what: &str, e: Errno| anyhow!("readonly path {:?}: {}: {}", p, what, e.desc());
    match sys_mount(Some(&p), &p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err("bind", e)),
    }
    let keep = mount_flags_of(&p).map_err(|e| err("statvfs", e))?
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    sys_mount(
        Some(&p),
        &p,
        None,
        keep | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(|e| err("remount read-only", e))
}

/// Files are covered with /dev/null, directories with an empty read-only
/// tmpfs; paths that do not exist need no masking.
fn mask_path(p: &Path) -> Result<()> {
    let p = paths::clean(p);
    let err = |what: &str, e: Errno| anyhow!("mask path {:?}: {}: {}", p, what, e.desc());
    let md = match fs::metadata(&p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow!("mask path {:?}: stat: {}", p, e)),
    };
    if md.is_dir() {
        sys_mount(
            Some(Path::new("tmpfs")),
            &p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
        .map_err(|e| err("mount read-only tmpfs", e))
    } else {
        sys_mount(
            Some(Path::new("/dev/null")),
            &p,
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| err("bind /dev/null", e))
    }
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
