//! Hostile-tar-safe layer unpacking.
//!
//! Entry names are reduced to plain relative components: absolute names and
//! `..` are refused, and so is any entry whose parent path goes through a
//! symlink (written by the same archive or already on disk), because that is
//! the way archives write outside their root. Hardlink targets obey the same
//! rules. Only the `security.capability` xattr is applied.
//!
//! Every operation is made through fds resolved inside the root (see
//! [`crate::fsutil::safe`]): an entry's parent directory is opened with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`, the entry is created, chowned,
//! chmodded and timestamped by fd or by its single name in that directory
//! fd without following symlinks, and the final pass that restores
//! directory modes reopens each directory the same way, so a later entry
//! that replaced a directory with a symlink (`d/` then `d -> /host`) makes
//! that pass skip it instead of chmodding the host.
use super::diff::{OPAQUE_WHITEOUT, OPAQUE_XATTR, WHITEOUT_PREFIX};
use super::tarw::KEPT_XATTR;
use crate::fsutil::safe;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// How whiteouts are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// Keep the layer alone in overlayfs format: `.wh.x` becomes a 0/0 char
    /// device `x`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its dir.
    Overlay,
    /// Apply onto what is already in the root: whiteouts delete.
    Apply,
}

/// Statistics of one unpack.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UnpackStats {
    pub entries: u64,
}

/// Turns a tar entry name into safe relative components, or fails.
pub fn clean_name(raw: &[u8]) -> Result<PathBuf> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        bail!("refusing absolute path {s:?} in archive");
    }
    let mut out = PathBuf::new();
    for c in Path::new(s.as_ref()).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => bail!("refusing path {s:?} in archive: contains '..'"),
            Component::RootDir | Component::Prefix(_) => bail!("refusing absolute path {s:?}"),
        }
    }
    Ok(out)
}

/// Opens (creating missing directories) the parent directory of `rel`,
/// refusing symlinks and non-directories on the way.
fn parent_dir(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    safe::mkdir_all_in_root(root, parent, 0o755)
        .with_context(|| format!("archive entry {}", rel.display()))
}

struct DirMeta {
    rel: PathBuf,
    mode: u32,
    mtime: i64,
}

/// Unpacks the tar stream `r` into `root` (which must exist).
pub fn unpack(r: impl Read, root: &Path, mode: UnpackMode) -> Result<UnpackStats> {
    let root_fd = safe::open_root(root)?;
    let root_fd = root_fd.as_fd();
    let mut archive = tar::Archive::new(r);
    let mut stats = UnpackStats::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    // Paths written by this archive: an opaque marker must not delete them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().context("reading archive")? {
        let mut entry = entry.context("reading archive entry")?;
        let rel = clean_name(&entry.path_bytes())?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        stats.entries += 1;
        let parent = parent_dir(root_fd, &rel)?;
        let dir = parent.as_fd();
        let name = rel.file_name().context("entry without a name")?;
        let fname = name.to_string_lossy().into_owned();
        if let Some(target) = fname.strip_prefix(WHITEOUT_PREFIX) {
            whiteout(dir, &rel, target, mode, &written)?;
            continue;
        }
        written.insert(rel.clone());
        let h = entry.header().clone();
        let perm = h.mode().context("entry mode")? & 0o7777;
        // Some archivers leave ids blank; that means root.
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let kind = h.entry_type();
        let existing = safe::stat_at(dir, name)?;
        let keep_dir = kind == EntryType::Directory
            && existing
                .as_ref()
                .is_some_and(|st| safe::kind(st) == SFlag::S_IFDIR);
        if existing.is_some() && !keep_dir {
            safe::remove_at(dir, name).with_context(|| format!("replacing {}", rel.display()))?;
        }
        let ctx = |what: &str| format!("{what} {}", rel.display());
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    nix::sys::stat::mkdirat(
                        Some(dir.as_raw_fd()),
                        name,
                        Mode::from_bits_truncate(0o755),
                    )
                    .with_context(|| ctx("creating"))?;
                }
                chown_at(dir, name, uid, gid).with_context(|| ctx("chown"))?;
                // Mode and mtime last (see below), by reopening in the root.
                dirs.push(DirMeta {
                    rel: rel.clone(),
                    mode: perm,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                let fd = nix::fcntl::openat(
                    Some(dir.as_raw_fd()),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .with_context(|| ctx("creating"))?;
                // SAFETY: fd was just opened and is owned by nobody else.
                let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                std::io::copy(&mut entry, &mut f).with_context(|| ctx("writing"))?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .with_context(|| ctx("chown"))?;
                // chmod after chown: chown clears setuid bits.
                fchmod(f.as_raw_fd(), Mode::from_bits_truncate(perm))
                    .with_context(|| ctx("chmod"))?;
                // The capability xattr after chown too (chown drops it).
                if let Some(value) = kept_xattr(&mut entry) {
                    xattr::FileExt::set_xattr(&f, KEPT_XATTR, &value)
                        .with_context(|| ctx(&format!("setting {KEPT_XATTR} on")))?;
                }
                let t = TimeSpec::new(mtime, 0);
                futimens(f.as_raw_fd(), &t, &t).with_context(|| ctx("setting mtime of"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .with_context(|| format!("symlink {} has no target", rel.display()))?;
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                symlinkat(&target, Some(dir.as_raw_fd()), name).with_context(|| ctx("symlink"))?;
                chown_at(dir, name, uid, gid).with_context(|| ctx("chown"))?;
                set_mtime_at(dir, name, mtime).with_context(|| ctx("setting mtime of"))?;
            }
            EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .with_context(|| format!("hardlink {} has no target", rel.display()))?;
                let target_rel = clean_name(&raw)?;
                let (tparent, tname) = safe::split(&target_rel)
                    .with_context(|| format!("hardlink {}", rel.display()))?;
                let tdir = safe::open_dir_nofollow(root_fd, tparent).map_err(|e| {
                    safe::walk_error(tparent, e).context(format!(
                        "hardlink {} -> {}",
                        rel.display(),
                        target_rel.display()
                    ))
                })?;
                let tst = safe::stat_at(tdir.as_fd(), tname)?.with_context(|| {
                    format!(
                        "hardlink {} -> {}: target missing",
                        rel.display(),
                        target_rel.display()
                    )
                })?;
                if safe::kind(&tst) == SFlag::S_IFDIR {
                    bail!("refusing hardlink {} to a directory", rel.display());
                }
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                linkat(
                    Some(tdir.as_raw_fd()),
                    tname,
                    Some(dir.as_raw_fd()),
                    name,
                    AtFlags::empty(),
                )
                .with_context(|| ctx("hardlink"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                mknodat(
                    Some(dir.as_raw_fd()),
                    name,
                    sflag,
                    Mode::from_bits_truncate(perm),
                    libc::makedev(major, minor),
                )
                .with_context(|| ctx("mknod"))?;
                chown_at(dir, name, uid, gid).with_context(|| ctx("chown"))?;
                // The node is never opened for I/O: O_PATH, then chmod by fd.
                let node = safe::open_entry(dir, name).with_context(|| ctx("opening"))?;
                safe::chmod_fd(node.as_fd(), perm).with_context(|| ctx("chmod"))?;
                set_mtime_at(dir, name, mtime).with_context(|| ctx("setting mtime of"))?;
            }
            EntryType::XGlobalHeader => continue,
            other => bail!(
                "unsupported archive entry type {other:?} for {}",
                rel.display()
            ),
        }
    }
    // Directory modes and mtimes last: adding children changes dir mtimes,
    // and a read-only directory mode must not block its own extraction.
    // Each directory is reopened inside the root without following symlinks:
    // if a later entry replaced it (with a symlink, a file), it is skipped.
    for d in dirs.iter().rev() {
        let fd = match safe::open_in_root(
            root_fd,
            &d.rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT | Errno::EXDEV) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("reopening directory {}", d.rel.display()))
            }
        };
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(d.mode))
            .with_context(|| format!("chmod {}", d.rel.display()))?;
        let t = TimeSpec::new(d.mtime, 0);
        futimens(fd.as_raw_fd(), &t, &t)
            .with_context(|| format!("setting mtime of {}", d.rel.display()))?;
    }
    Ok(stats)
}

/// The `security.capability` value a PAX header carries, if any.
fn kept_xattr<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<Vec<u8>> {
    let key = format!("SCHILY.xattr.{KEPT_XATTR}");
    let exts = entry.pax_extensions().ok().flatten()?;
    for ext in exts.flatten() {
        if ext.key().ok() == Some(key.as_str()) {
            return Some(ext.value_bytes().to_vec());
        }
    }
    None
}

fn whiteout(
    dir: BorrowedFd<'_>,
    rel: &Path,
    target: &str,
    mode: UnpackMode,
    written: &HashSet<PathBuf>,
) -> Result<()> {
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let fname = format!("{WHITEOUT_PREFIX}{target}");
    if fname == OPAQUE_WHITEOUT {
        match mode {
            UnpackMode::Overlay => {
                // xattrs need a real (non-O_PATH) fd of the directory itself.
                let d = safe::open_subdir(dir, OsStr::new("."))
                    .with_context(|| format!("opening {}", parent_rel.display()))?;
                let f = File::from(d);
                xattr::FileExt::set_xattr(&f, OPAQUE_XATTR, b"y")
                    .with_context(|| format!("marking {} opaque", parent_rel.display()))?;
            }
            UnpackMode::Apply => {
                for child in safe::list_dir(dir)
                    .with_context(|| format!("reading {}", parent_rel.display()))?
                {
                    if !written.contains(&parent_rel.join(&child)) {
                        safe::remove_at(dir, &child)?;
                    }
                }
            }
        }
        return Ok(());
    }
    if target.is_empty()
        || target == "."
        || target == ".."
        || target.contains('/')
        || target.starts_with(WHITEOUT_PREFIX)
    {
        bail!("refusing malformed whiteout {}", rel.display());
    }
    let victim = OsStr::new(target);
    safe::remove_at(dir, victim)?;
    if mode == UnpackMode::Overlay {
        mknodat(
            Some(dir.as_raw_fd()),
            victim,
            SFlag::S_IFCHR,
            Mode::empty(),
            0,
        )
        .with_context(|| format!("creating whiteout {}", parent_rel.join(target).display()))?;
    }
    Ok(())
}

/// lchown of `name` in `dir`.
fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> nix::Result<()> {
    fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Sets the mtime (and atime) of `name` in `dir`, not following a symlink.
fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> nix::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        Some(dir.as_raw_fd()),
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
}
