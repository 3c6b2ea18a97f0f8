//! Device nodes and the /dev symlinks the OCI runtime-spec requires.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::{fchmodat, fstat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, Spec};

use super::mounts::{check_proc_target, mount_err, mount_target, sys_mount};
use super::paths::{self, fd_path, Last};
use super::{fdmount, RootfsContext};

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

/// The container's /dev, resolved (and created if missing) inside the
/// rootfs once for the device nodes and links made in it.
pub(crate) fn open_dev(ctx: &RootfsContext) -> Result<OwnedFd> {
    paths::create_in_root(ctx.rootfs, Path::new("/dev"), Last::Dir)
}

/// Default devices plus `linux.devices` (a spec entry replaces a default
/// with the same path). `dev` is [`open_dev`]'s descriptor: nothing is
/// mounted on /dev meanwhile, so it stays what resolving /dev again gives.
pub(crate) fn create_devices(ctx: &RootfsContext, dev: &OwnedFd) -> Result<()> {
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
        create_device(ctx, dev, d)?;
    }
    Ok(())
}

fn create_device(ctx: &RootfsContext, dev: &OwnedFd, d: &LinuxDevice) -> Result<()> {
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
    let other_dir;
    let dir: &OwnedFd = if parent == Path::new("/dev") {
        dev
    } else {
        other_dir = paths::create_in_root(ctx.rootfs, parent, Last::Dir)?;
        &other_dir
    };
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
    // A hostile image's /dev may lead into /proc (`dev -> /proc/sys/...`).
    let (target, _) = mount_target(ctx, dest, Some(d.path()), "bind", Last::File)?;
    check_proc_target(ctx, &target, dest, Some(d.path()), "bind")?;
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
pub(crate) fn create_symlinks(ctx: &RootfsContext, dev: &OwnedFd) -> Result<()> {
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
        symlink_in(ctx, dev, target, name)?;
    }
    Ok(())
}

/// With a private devpts instance at /dev/pts, /dev/ptmx must be its ptmx.
pub(crate) fn setup_ptmx(ctx: &RootfsContext, dev: &OwnedFd) -> Result<()> {
    let has_devpts = ctx
        .spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| paths::clean(m.destination()) == Path::new("/dev/pts"));
    if !has_devpts {
        return Ok(());
    }
    match unlinkat(Some(dev.as_raw_fd()), "ptmx", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => bail!(
            "remove /dev/ptmx (rootfs {}): {}",
            ctx.rootfs.display(),
            e.desc()
        ),
    }
    symlink_in(ctx, dev, "pts/ptmx", "ptmx")
}

/// Creates /dev/console and binds the terminal's pty slave onto it. Called
/// after `enter`, so `/` is the container root and everything in it may be
/// hostile (a shared /dev, an image's symlinks): the slave comes as the
/// descriptor its master opened, the target is opened without following a
/// final symlink and must be a regular file or a character device off
/// procfs, and the mount goes from descriptor to descriptor
/// (CVE-2025-52565, as runc's fix).
pub fn bind_console(slave: &OwnedFd) -> Result<()> {
    let dest = Path::new("/dev/console");
    let root = Path::new("/");
    let pty = fstat(slave.as_raw_fd()).map_err(|e| anyhow!("stat pty slave: {}", e.desc()))?;
    if SFlag::from_bits_truncate(pty.st_mode) & SFlag::S_IFMT != SFlag::S_IFCHR {
        bail!("the pty slave is not a character device");
    }
    let dev = paths::create_in_root(root, Path::new("/dev"), Last::Dir)?;
    let target = open_console_target(&dev)?;
    check_console_target(&target)?;
    let err = |what: &str, e: Errno| anyhow!("{what} the pty onto {:?}: {}", dest, e.desc());
    let tree = fdmount::clone_tree(slave, false).map_err(|e| err("clone", e))?;
    fdmount::move_onto(&tree, &target).map_err(|e| err("mount", e))?;
    drop(target);
    // What is at /dev/console now must be our pty and nothing else.
    let now = openat(
        Some(dev.as_raw_fd()),
        "console",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("reopen {:?}: {}", dest, e.desc()))?;
    // SAFETY: fresh descriptor owned from here on.
    let now = unsafe { OwnedFd::from_raw_fd(now) };
    let st = fstat(now.as_raw_fd()).map_err(|e| anyhow!("stat {:?}: {}", dest, e.desc()))?;
    if st.st_rdev != pty.st_rdev || st.st_ino != pty.st_ino {
        bail!("{:?} is not the container's pty after mounting it", dest);
    }
    Ok(())
}

/// /dev/console inside `dev`, created empty (mode 0) when missing, never
/// through a symlink.
fn open_console_target(dev: &OwnedFd) -> Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(Some(dev.as_raw_fd()), "console", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            let created = openat(
                Some(dev.as_raw_fd()),
                "console",
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| anyhow!("create /dev/console: {}", e.desc()))?;
            let _ = nix::unistd::close(created);
            openat(Some(dev.as_raw_fd()), "console", flags, Mode::empty())
                .map_err(|e| anyhow!("open /dev/console: {}", e.desc()))?
        }
        Err(e) => bail!("open /dev/console: {}", e.desc()),
    };
    // SAFETY: fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The console target must be a regular file or a character device (a
/// symlink, directory, fifo... is refused) and must not be on procfs.
fn check_console_target(target: &OwnedFd) -> Result<()> {
    let st = fstat(target.as_raw_fd()).map_err(|e| anyhow!("stat /dev/console: {}", e.desc()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFCHR {
        bail!(
            "/dev/console in the container is not a regular file or character device (mode {:o}): refusing to mount the console there",
            st.st_mode
        );
    }
    let fs = fstatfs(target).map_err(|e| anyhow!("statfs /dev/console: {}", e.desc()))?;
    if fs.filesystem_type() == PROC_SUPER_MAGIC {
        bail!("/dev/console in the container is on procfs: refusing to mount the console there");
    }
    Ok(())
}
