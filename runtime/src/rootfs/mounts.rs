//! Performing the spec's `mounts` inside the rootfs, in order.
//!
//! Every target is resolved inside the rootfs (see `paths`) and the mount(2)
//! call goes through `/proc/self/fd/N` of the resolved descriptor, so a
//! symlink swapped in after resolution cannot redirect it onto the host.
//! Follow-up calls (remount, propagation) re-resolve the target because the
//! old descriptor still points at the covered directory, not the new mount.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, mknod, Mode, SFlag};
use nix::sys::statfs::{fstatfs, statfs, PROC_SUPER_MAGIC};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::options::{self, MountOptions};
use super::paths::{self, fd_path, Last, Missing};
use super::{cgroup, fdmount, RootfsContext};

/// Entries under /proc that may be covered (what lxcfs emulates), as runc.
const SAFE_PROC_MOUNTS: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// mount(2) with optional source/type/data, empty data meaning none.
pub(crate) fn sys_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    let data = data.filter(|d| !d.is_empty());
    nix::mount::mount(source, target, fstype, flags, data)
}

/// The error every failed mount reports: what, where, which rootfs, why.
pub(crate) fn mount_err(what: &str, dest: &Path, rootfs: &Path, e: Errno) -> anyhow::Error {
    anyhow!(
        "mount {:?} on {:?} (rootfs {}): {}",
        what,
        dest,
        rootfs.display(),
        e.desc()
    )
}

/// Per-mount flags of the mount at `path`, as MS_* flags.
pub(crate) fn mount_flags_of(path: &Path) -> nix::Result<MsFlags> {
    let f = statvfs(path)?.flags();
    let pairs = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st, _)| f.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
}

/// Performs one entry of the spec's `mounts`; `source_fd` is its bind
/// source as the runtime opened it (see `sources`), if it did.
pub(crate) fn mount_entry(
    ctx: &RootfsContext,
    m: &Mount,
    source_fd: Option<&OwnedFd>,
) -> Result<()> {
    let dest = paths::clean(m.destination());
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let is_bind = typ == "bind" || opts.is_bind();

    if opts.flags.contains(MsFlags::MS_REMOUNT) {
        remount_existing(ctx, &dest, typ, &opts)?;
    } else if is_bind {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| anyhow!("bind mount on {:?} has no source", dest))?;
        bind(ctx, &dest, source, source_fd, &opts)?;
    } else {
        mount_typed(ctx, m, &dest, typ, &opts)?;
    }
    if opts.has_recursive_attrs() {
        set_recursive_attrs(ctx.rootfs, &dest, &opts)?;
    }
    Ok(())
}

fn mount_typed(
    ctx: &RootfsContext,
    m: &Mount,
    dest: &Path,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    match typ {
        "proc" | "sysfs" => kernel_fs(ctx, m, dest, typ, opts),
        "cgroup" => cgroup::mount_cgroup(ctx, dest, opts),
        "tmpfs" => tmpfs(ctx, m, dest, opts),
        "" => bail!("mount on {:?}: no type given and not a bind mount", dest),
        _ => generic(ctx, m, dest, typ, opts),
    }
}

/// Refuses mounts that would cover parts of /proc a container could use to
/// escape or hide from its runtime (runc's checkProcMount).
pub(crate) fn check_proc_mount(
    dest: &Path,
    bind_source: Option<&Path>,
    fstype: &str,
) -> Result<()> {
    let proc = Path::new("/proc");
    if !dest.starts_with(proc) {
        return Ok(());
    }
    if dest == proc {
        if fstype == "proc" {
            return Ok(());
        }
        if let Some(src) = bind_source {
            let st = statfs(src).with_context(|| format!("statfs bind source {:?}", src))?;
            if st.filesystem_type() == PROC_SUPER_MAGIC {
                return Ok(());
            }
        }
        bail!(
            "{:?} cannot be mounted because it is not of type proc",
            dest
        );
    }
    if SAFE_PROC_MOUNTS.iter().any(|p| dest == Path::new(p)) {
        return Ok(());
    }
    bail!("{:?} cannot be mounted because it is inside /proc", dest)
}

/// [`check_proc_mount`] on where `dest` really leads inside the rootfs, before
/// anything is created there: a symlink on the way (`/myvol -> /proc`,
/// `/a -> /proc/self`) must not smuggle a mount onto procfs. Returns the
/// destination's descriptor when it exists (from the same walk).
fn check_proc_dest(
    ctx: &RootfsContext,
    dest: &Path,
    bind_source: Option<&Path>,
    fstype: &str,
) -> Result<Option<OwnedFd>> {
    let walked = paths::walk(ctx.rootfs, dest, Missing::Lexical)?;
    let resolved = Path::new("/").join(&walked.rel);
    check_proc_mount(&resolved, bind_source, fstype)
        .with_context(|| proc_context(ctx, dest, &resolved))?;
    Ok(walked.fd)
}

/// The descriptor a mount on `dest` goes through, and whether `dest`
/// existed. The caller applies [`check_proc_target`] to it, which checks
/// where it really leads. An existing destination is opened by the
/// kernel's in-root lookup (one openat2); [`check_proc_dest`] would only
/// check the same path again. Anything else goes the careful way:
/// [`check_proc_dest`] first, so nothing gets created on a way into /proc,
/// then the walk that creates what is missing (its final component as
/// `last`).
pub(crate) fn mount_target(
    ctx: &RootfsContext,
    dest: &Path,
    bind_source: Option<&Path>,
    fstype: &str,
    last: Last,
) -> Result<(OwnedFd, bool)> {
    if let Some(fd) = paths::open_existing_in_root(ctx.rootfs, dest)? {
        return Ok((fd, true));
    }
    match check_proc_dest(ctx, dest, bind_source, fstype)? {
        Some(fd) => Ok((fd, true)),
        None => Ok((paths::create_in_root(ctx.rootfs, dest, last)?, false)),
    }
}

/// The same rule on the descriptor the mount will go through, which is
/// what the kernel will really cover: its path names the resolved
/// destination, and a target that is on procfs anywhere but under /proc
/// (a procfs mounted elsewhere by the config) is refused too.
pub(crate) fn check_proc_target(
    ctx: &RootfsContext,
    target: &OwnedFd,
    dest: &Path,
    bind_source: Option<&Path>,
    fstype: &str,
) -> Result<()> {
    let host = fs::read_link(fd_path(target))
        .with_context(|| format!("find where mount target {:?} resolved", dest))?;
    let rel = host.strip_prefix(ctx.rootfs).map_err(|_| {
        anyhow!(
            "mount target {:?} resolved to {:?}, outside the rootfs {}",
            dest,
            host,
            ctx.rootfs.display()
        )
    })?;
    let resolved = Path::new("/").join(rel);
    let on_procfs = fstatfs(target)
        .map_err(|e| anyhow!("statfs mount target {:?}: {}", dest, e.desc()))?
        .filesystem_type()
        == PROC_SUPER_MAGIC;
    if on_procfs && !resolved.starts_with("/proc") && fstype != "proc" {
        return Err(anyhow!(
            "{:?} cannot be mounted because it is on procfs",
            resolved
        ))
        .with_context(|| proc_context(ctx, dest, &resolved));
    }
    check_proc_mount(&resolved, bind_source, fstype)
        .with_context(|| proc_context(ctx, dest, &resolved))
}

fn proc_context(ctx: &RootfsContext, dest: &Path, resolved: &Path) -> String {
    format!(
        "mount destination {:?} resolves to {:?} in the rootfs {}",
        dest,
        resolved,
        ctx.rootfs.display()
    )
}

/// A bind mount: the target takes the source's kind (dir or file); flags
/// other than bind/rec need a second `MS_REMOUNT|MS_BIND` call. With
/// `source_fd` (the source opened by the runtime, see `sources`) `source`
/// is only named in messages: the mount is cloned from the descriptor.
pub(crate) fn bind(
    ctx: &RootfsContext,
    dest: &Path,
    source: &Path,
    source_fd: Option<&OwnedFd>,
    opts: &MountOptions,
) -> Result<()> {
    let source: PathBuf = if source.is_absolute() {
        source.to_path_buf()
    } else {
        ctx.bundle.join(source)
    };
    if let Some(o) = opts.data.iter().find(|o| *o == "idmap" || *o == "ridmap") {
        bail!(
            "bind mount {:?} on {:?}: option {:?} (id-mapped mounts) is not supported",
            source,
            dest,
            o
        );
    }
    let is_dir = match source_fd {
        Some(fd) => fstat(fd.as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(|e| anyhow!("stat bind mount source {:?}: {}", source, e.desc())),
        None => fs::metadata(&source)
            .map(|m| m.is_dir())
            .with_context(|| format!("bind mount source {:?} for {:?}", source, dest)),
    }?;
    // What the checks stat: the descriptor itself when there is one (its
    // path may not be searchable from here).
    let checked_source = source_fd.map(fd_path).unwrap_or_else(|| source.clone());
    let kind = if is_dir { Last::Dir } else { Last::File };
    let (target, _) =
        mount_target(ctx, dest, Some(&checked_source), "bind", kind).with_context(|| {
            format!(
                "create bind mount target {:?} (rootfs {})",
                dest,
                ctx.rootfs.display()
            )
        })?;
    check_proc_target(ctx, &target, dest, Some(&checked_source), "bind")?;
    let recursive = opts.flags.contains(MsFlags::MS_REC);
    match source_fd {
        Some(fd) => {
            fdmount::clone_tree(fd, recursive).and_then(|tree| fdmount::move_onto(&tree, &target))
        }
        None => {
            let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
            sys_mount(Some(&source), &fd_path(&target), None, flags, None)
        }
    }
    .map_err(|e| mount_err(&source.to_string_lossy(), dest, ctx.rootfs, e))?;
    drop(target);

    let extra = options::remount_flags(opts.flags);
    if !extra.is_empty() {
        remount_bind(ctx.rootfs, dest, extra)?;
    }
    apply_propagation(ctx.rootfs, dest, &opts.propagation)
}

/// Sets per-mount flags on the bind mount now at `dest`. In a user
/// namespace flags inherited from a more privileged mount (nosuid, nodev,
/// ro, ...) are locked: on EPERM keep the mount's current flags and retry.
pub(crate) fn remount_bind(rootfs: &Path, dest: &Path, flags: MsFlags) -> Result<()> {
    let target = paths::open_in_root(rootfs, dest)?;
    let p = fd_path(&target);
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let err = |e: Errno| {
        anyhow!(
            "remount {:?} with flags {:?} (rootfs {}): {}",
            dest,
            flags,
            rootfs.display(),
            e.desc()
        )
    };
    match sys_mount(None, &p, None, base | flags, None) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => {
            let locked = mount_flags_of(&p).map_err(err)?;
            sys_mount(None, &p, None, base | flags | locked, None).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Applies recursive options (`rro`, `rnosuid`, ...) to the whole mount tree
/// at `dest` with mount_setattr(2) (Linux 5.12+).
fn set_recursive_attrs(rootfs: &Path, dest: &Path, opts: &MountOptions) -> Result<()> {
    let target = paths::open_in_root(rootfs, dest)?;
    set_tree_attrs(&target, opts.rec_set, opts.rec_clr).map_err(|e| {
        anyhow!(
            "set recursive mount attributes (set {:#x}, clear {:#x}) on {:?} (rootfs {}): {}",
            opts.rec_set,
            opts.rec_clr,
            dest,
            rootfs.display(),
            e.desc()
        )
    })
}

/// mount_setattr(2) with AT_RECURSIVE on the mount `target` is the root of:
/// sets `set` and clears `clear` (MOUNT_ATTR_* bits) on it and every mount
/// below it in one call.
pub(crate) fn set_tree_attrs(target: &OwnedFd, set: u64, clear: u64) -> nix::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the empty
    // NUL-terminated path; the descriptor stays open for the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(res).map(drop)
}

/// Applies `private`, `rslave`, ... options to the mount at `dest`.
pub(crate) fn apply_propagation(rootfs: &Path, dest: &Path, props: &[MsFlags]) -> Result<()> {
    for p in props {
        let target = paths::open_in_root(rootfs, dest)?;
        sys_mount(None, &fd_path(&target), None, *p, None).map_err(|e| {
            anyhow!(
                "set propagation {:?} on {:?} (rootfs {}): {}",
                p,
                dest,
                rootfs.display(),
                e.desc()
            )
        })?;
    }
    Ok(())
}

/// A `remount` entry changes an existing mount instead of creating one.
fn remount_existing(
    ctx: &RootfsContext,
    dest: &Path,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    let target = paths::open_in_root(ctx.rootfs, dest)?;
    let fstype = (!typ.is_empty() && typ != "bind" && typ != "none").then_some(typ);
    sys_mount(
        None,
        &fd_path(&target),
        fstype,
        opts.flags,
        Some(&opts.data_string()),
    )
    .map_err(|e| mount_err("remount", dest, ctx.rootfs, e))?;
    drop(target);
    apply_propagation(ctx.rootfs, dest, &opts.propagation)
}

/// proc and sysfs must land on a real directory: an existing symlink or
/// file there is refused rather than mounted through.
fn kernel_fs(
    ctx: &RootfsContext,
    m: &Mount,
    dest: &Path,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    ensure_not_special(ctx.rootfs, dest, typ)?;
    let (target, _) = mount_target(ctx, dest, None, typ, Last::Dir)?;
    check_proc_target(ctx, &target, dest, None, typ)?;
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    match sys_mount(
        Some(&source),
        &fd_path(&target),
        Some(typ),
        opts.flags,
        Some(&opts.data_string()),
    ) {
        Ok(()) => {}
        // Without owning the network namespace sysfs cannot be mounted from
        // a user namespace; runc falls back to a recursive bind of /sys.
        Err(Errno::EPERM) if typ == "sysfs" && ctx.in_user_ns => {
            drop(target);
            let mut bind_opts = opts.clone();
            bind_opts.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
            return bind(ctx, dest, Path::new("/sys"), None, &bind_opts);
        }
        Err(e) => return Err(mount_err(typ, dest, ctx.rootfs, e)),
    }
    drop(target);
    apply_propagation(ctx.rootfs, dest, &opts.propagation)
}

/// Fails when `dest` already exists in the rootfs as anything but a
/// directory (checked without following the final component).
fn ensure_not_special(rootfs: &Path, dest: &Path, typ: &str) -> Result<()> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Ok(());
    };
    let host = paths::resolve_in_root(rootfs, parent)?.join(name);
    match fs::symlink_metadata(&host) {
        Ok(md) if !md.is_dir() => bail!(
            "filesystem {:?} must be mounted on an ordinary directory, but {:?} (rootfs {}) is not one",
            typ,
            dest,
            rootfs.display()
        ),
        _ => Ok(()),
    }
}

/// tmpfs: keeps the covered directory's mode unless `mode=` is given,
/// supports `tmpcopyup`, and delays `ro` until its contents are in place
/// (for /dev until `finalize`, after the device nodes exist).
fn tmpfs(ctx: &RootfsContext, m: &Mount, dest: &Path, opts: &MountOptions) -> Result<()> {
    let (target, existed) = mount_target(ctx, dest, None, "tmpfs", Last::Dir)?;
    check_proc_target(ctx, &target, dest, None, "tmpfs")?;
    let covered = fstat(target.as_raw_fd())
        .map_err(|e| anyhow!("stat mount target {:?}: {}", dest, e.desc()))?;
    // Kept open so the covered contents stay reachable once the tmpfs is on top.
    let lower = if opts.tmpcopyup {
        Some(
            open_dir(&fd_path(&target))
                .with_context(|| format!("open {:?} for tmpcopyup", dest))?,
        )
    } else {
        None
    };
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from("tmpfs"));
    let data = with_mount_label(ctx, opts.data_string());
    sys_mount(
        Some(&source),
        &fd_path(&target),
        Some("tmpfs"),
        opts.flags - MsFlags::MS_RDONLY,
        Some(&data),
    )
    .map_err(|e| mount_err("tmpfs", dest, ctx.rootfs, e))?;
    drop(target);

    let top = paths::open_in_root(ctx.rootfs, dest)?;
    let top_path = fd_path(&top);
    if let Some(lower) = lower {
        copy_tree(&fd_path(&lower), &top_path).with_context(|| {
            format!(
                "tmpcopyup into {:?} (rootfs {})",
                dest,
                ctx.rootfs.display()
            )
        })?;
        chown(&top_path, Some(covered.st_uid), Some(covered.st_gid))
            .with_context(|| format!("chown tmpfs at {:?}", dest))?;
    }
    if existed && !opts.has_data_key("mode") {
        fs::set_permissions(
            &top_path,
            fs::Permissions::from_mode(covered.st_mode & 0o7777),
        )
        .with_context(|| format!("chmod tmpfs at {:?}", dest))?;
    }
    if ro && dest != Path::new("/dev") {
        sys_mount(
            None,
            &top_path,
            None,
            opts.flags | MsFlags::MS_REMOUNT,
            Some(&data),
        )
        .map_err(|e| mount_err("tmpfs (read-only remount)", dest, ctx.rootfs, e))?;
    }
    drop(top);
    apply_propagation(ctx.rootfs, dest, &opts.propagation)
}

/// Any other filesystem type (devpts, mqueue, overlay, ...) passed through.
fn generic(
    ctx: &RootfsContext,
    m: &Mount,
    dest: &Path,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    let (target, _) = mount_target(ctx, dest, None, typ, Last::Dir)?;
    check_proc_target(ctx, &target, dest, None, typ)?;
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let mut flags = opts.flags;
    if dest == Path::new("/dev") {
        // Device nodes still have to be created: ro is applied in finalize.
        flags.remove(MsFlags::MS_RDONLY);
    }
    let data = if typ == "devpts" {
        with_mount_label(ctx, opts.data_string())
    } else {
        opts.data_string()
    };
    match sys_mount(
        Some(&source),
        &fd_path(&target),
        Some(typ),
        flags,
        Some(&data),
    ) {
        Ok(()) => {}
        // A user namespace that does not own the IPC namespace cannot mount
        // mqueue: expose the host's instance instead (as runc).
        Err(Errno::EPERM) if typ == "mqueue" && ctx.in_user_ns => {
            drop(target);
            let mut bind_opts = opts.clone();
            bind_opts.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
            return bind(ctx, dest, Path::new("/dev/mqueue"), None, &bind_opts);
        }
        Err(e) => return Err(mount_err(typ, dest, ctx.rootfs, e)),
    }
    drop(target);
    apply_propagation(ctx.rootfs, dest, &opts.propagation)
}

/// linux.mountLabel as the SELinux `context=` of the filesystems runc
/// labels (tmpfs, devpts); the config is refused up front when SELinux is
/// not enabled (lsm::validate), so a label here is one the kernel takes.
fn with_mount_label(ctx: &RootfsContext, data: String) -> String {
    match crate::lsm::mount_context(ctx.spec) {
        Some(c) if data.is_empty() => c,
        Some(c) => format!("{data},{c}"),
        None => data,
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("open {:?}: {}", p, e.desc()))?;
    // SAFETY: fresh descriptor from open(2), owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies a directory tree preserving type, mode and ownership (for
/// `tmpcopyup`). `src` is only ever read through paths below it.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("read dir {:?}", src))? {
        let entry = entry.with_context(|| format!("read dir {:?}", src))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&s).with_context(|| format!("stat {:?}", s))?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).with_context(|| format!("mkdir {:?}", d))?;
            copy_tree(&s, &d)?;
            copy_owner_mode(&d, &md)?;
            continue;
        }
        if ft.is_symlink() {
            let link = fs::read_link(&s).with_context(|| format!("readlink {:?}", s))?;
            symlink(&link, &d).with_context(|| format!("symlink {:?}", d))?;
            lchown(&d, Some(md.uid()), Some(md.gid()))
                .with_context(|| format!("lchown {:?}", d))?;
            continue;
        }
        if ft.is_file() {
            fs::copy(&s, &d).with_context(|| format!("copy {:?} to {:?}", s, d))?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            mknod(&d, kind, Mode::from_bits_truncate(md.mode()), md.rdev())
                .map_err(|e| anyhow!("mknod {:?}: {}", d, e.desc()))?;
        }
        copy_owner_mode(&d, &md)?;
    }
    Ok(())
}

fn copy_owner_mode(p: &Path, md: &fs::Metadata) -> Result<()> {
    lchown(p, Some(md.uid()), Some(md.gid())).with_context(|| format!("chown {:?}", p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(md.mode() & 0o7777))
        .with_context(|| format!("chmod {:?}", p))
}
