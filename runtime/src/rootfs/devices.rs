//! Device nodes and the /dev symlinks the OCI runtime-spec requires.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::MsFlags;
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, Spec};

use super::mounts::{mount_err, sys_mount};
use super::paths::{self, fd_path, Last};
use super::RootfsContext;

/// "Default Devices" of config-linux.md.
pub(crate) fn default_devices() -> Result<Vec<LinuxDevice>> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| {
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()
            .map_err(|e| anyhow!("build default device {}: {}", path, e))
    })
    .collect()
}

/// runc leaves /dev alone when the spec bind-mounts it from elsewhere.
pub(crate) fn needs_setup_dev(spec: &Spec) -> bool {
    !spec.mounts().iter().flatten().any(|m| {
        paths::clean(m.destination()) == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

/// Default devices plus `linux.devices` (a spec entry replaces a default
/// with the same path).
pub(crate) fn create_devices(ctx: &RootfsContext) -> Result<()> {
    let mut devs = default_devices()?;
    let extra = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in extra {
        devs.retain(|x| paths::clean(x.path()) != paths::clean(d.path()));
        devs.push(d);
    }
    for d in &devs {
        create_device(ctx, d)?;
    }
    Ok(())
}

fn create_device(ctx: &RootfsContext, d: &LinuxDevice) -> Result<()> {
    let dest = paths::clean(d.path());
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        bail!("device path {:?} is not a file path", d.path());
    };
    if ctx.in_user_ns {
        // mknod is never allowed in a user namespace: borrow the host node.
        return bind_device(ctx, &dest, d);
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => bail!("device {:?}: type \"a\" cannot be created", dest),
    };
    let (Ok(major), Ok(minor)) = (u64::try_from(d.major()), u64::try_from(d.minor())) else {
        bail!(
            "device {:?}: negative major/minor {}:{}",
            dest,
            d.major(),
            d.minor()
        );
    };
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666) & 0o7777);
    let dir: OwnedFd = paths::create_in_root(ctx.rootfs, parent, Last::Dir)?;
    let err = |what: &str, e: Errno| {
        anyhow!(
            "{} device {:?} ({}:{}) (rootfs {}): {}",
            what,
            dest,
            major,
            minor,
            ctx.rootfs.display(),
            e.desc()
        )
    };
    match mknodat(
        Some(dir.as_raw_fd()),
        name,
        kind,
        mode,
        makedev(major, minor),
    ) {
        Ok(()) => {}
        // Already provided by the image or an earlier entry: keep it, as runc.
        Err(Errno::EEXIST) => return Ok(()),
        Err(Errno::EPERM) => return bind_device(ctx, &dest, d),
        Err(e) => return Err(err("mknod", e)),
    }
    fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(d.uid().unwrap_or(0))),
        Some(Gid::from_raw(d.gid().unwrap_or(0))),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err("chown", e))?;
    // mknod honours the umask; set the exact mode the spec asked for.
    fchmodat(
        Some(dir.as_raw_fd()),
        name,
        mode,
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| err("chmod", e))
}

/// Bind-mounts the host's node at the device's path onto an empty file.
fn bind_device(ctx: &RootfsContext, dest: &Path, d: &LinuxDevice) -> Result<()> {
    let target = paths::create_in_root(ctx.rootfs, dest, Last::File)?;
    sys_mount(
        Some(d.path()),
        &fd_path(&target),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .map_err(|e| mount_err(&d.path().to_string_lossy(), dest, ctx.rootfs, e))
}

fn symlink_in(ctx: &RootfsContext, dir: &OwnedFd, target: &str, name: &str) -> Result<()> {
    match symlinkat(target, Some(dir.as_raw_fd()), name) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => bail!(
            "symlink /dev/{} -> {} (rootfs {}): {}",
            name,
            target,
            ctx.rootfs.display(),
            e.desc()
        ),
    }
}

/// /dev/fd, /dev/std{in,out,err} and, when the host has it, /dev/core.
pub(crate) fn create_symlinks(ctx: &RootfsContext) -> Result<()> {
    let dev = paths::create_in_root(ctx.rootfs, Path::new("/dev"), Last::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        symlink_in(ctx, &dev, target, name)?;
    }
    Ok(())
}

/// With a private devpts instance at /dev/pts, /dev/ptmx must be its ptmx.
pub(crate) fn setup_ptmx(ctx: &RootfsContext) -> Result<()> {
    let has_devpts = ctx
        .spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| paths::clean(m.destination()) == Path::new("/dev/pts"));
    if !has_devpts {
        return Ok(());
    }
    let dev = paths::create_in_root(ctx.rootfs, Path::new("/dev"), Last::Dir)?;
    match unlinkat(Some(dev.as_raw_fd()), "ptmx", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => bail!(
            "remove /dev/ptmx (rootfs {}): {}",
            ctx.rootfs.display(),
            e.desc()
        ),
    }
    symlink_in(ctx, &dev, "pts/ptmx", "ptmx")
}

/// Creates /dev/console and binds the terminal's pty slave onto it. Called
/// after `enter`, so `/` is the container root.
pub fn bind_console(pty_slave_path: &Path) -> Result<()> {
    let dest = Path::new("/dev/console");
    let target = paths::create_in_root(Path::new("/"), dest, Last::File)?;
    // Without a /proc in the container the descriptor cannot serve as the
    // target; inside the container root the plain path is equally confined.
    let via = if Path::new("/proc/self/fd").is_dir() {
        fd_path(&target)
    } else {
        dest.to_path_buf()
    };
    sys_mount(Some(pty_slave_path), &via, None, MsFlags::MS_BIND, None)
        .map_err(|e| mount_err(&pty_slave_path.to_string_lossy(), dest, Path::new("/"), e))
}
