//! File-descriptor based operations inside a root directory.
//!
//! Everything the builder does to a tree it does not fully trust (a layer
//! being unpacked, a RUN step's root after the step, a build context) goes
//! through these helpers: paths are resolved by the kernel relative to an fd
//! of the root (`openat2` with `RESOLVE_IN_ROOT`, and `RESOLVE_NO_SYMLINKS`
//! where the builder itself is about to modify something), and every
//! modification is made on an fd or on a single name inside a directory fd
//! with `AT_SYMLINK_NOFOLLOW`. A path string is never resolved twice, so
//! neither a symlink planted by an archive nor one swapped in by a concurrent
//! process can redirect a chmod, chown, unlink or mount to the host.
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Flags for fds that only name a directory (never read, never inherited).
const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and is owned
    // by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens `path` (a directory the builder chose, e.g. a snapshot or context
/// root) as an `O_PATH` directory fd that anchors later in-root lookups.
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(path, DIR_PATH, Mode::empty())
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(owned(fd))
}

/// The path under `/proc/self/fd` that names `fd`'s file itself: the kernel
/// follows that magic link to the open file, never to a path.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `rel` as a path the kernel resolves relative to a dirfd ("." for empty).
fn rel_arg(rel: &Path) -> &Path {
    // Leading slashes are fine with RESOLVE_IN_ROOT, but keep it relative
    // so the same string also works with plain openat.
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// `openat2(root, rel)` with `resolve` plus `RESOLVE_IN_ROOT`: `..` and
/// absolute symlinks can never leave `root`; magic links are refused.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve | ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root.as_raw_fd(), rel_arg(rel), how) {
            // openat2 may ask to retry when a rename raced the lookup.
            Err(Errno::EAGAIN) => continue,
            r => return r.map(owned),
        }
    }
}

/// Opens the directory `rel` below `root` refusing any symlink on the way:
/// the fd for modifying a tree. Errors as `open_in_root`.
pub fn open_dir_nofollow(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    open_in_root(root, rel, DIR_PATH, ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// Opens (creating missing components with `mode`) the directory `rel` below
/// `root`, refusing symlinks and non-directories on the way.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, rel: &Path, mode: u32) -> Result<OwnedFd> {
    match open_dir_nofollow(root, rel) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(walk_error(rel, e)),
    }
    let mut cur = open_dir_nofollow(root, Path::new("")).context("opening the root")?;
    for c in rel.components() {
        let name = match c {
            Component::Normal(n) => n,
            Component::CurDir | Component::RootDir => continue,
            _ => bail!(
                "refusing path {} (not a plain relative path)",
                rel.display()
            ),
        };
        let next = match openat(
            Some(cur.as_raw_fd()),
            name,
            DIR_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => owned(fd),
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    Some(cur.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(mode),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("creating directory {}", rel.display()))
                    }
                }
                let fd = openat(
                    Some(cur.as_raw_fd()),
                    name,
                    DIR_PATH | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| walk_error(rel, e))?;
                owned(fd)
            }
            Err(e) => return Err(walk_error(rel, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// A lookup error in words that say why the path was refused.
pub fn walk_error(rel: &Path, e: Errno) -> anyhow::Error {
    match e {
        Errno::ELOOP => anyhow::anyhow!("refusing {}: it goes through a symlink", rel.display()),
        Errno::ENOTDIR => anyhow::anyhow!("{}: a component is not a directory", rel.display()),
        Errno::EXDEV => anyhow::anyhow!("refusing {}: it leaves the root", rel.display()),
        e => anyhow::Error::new(e).context(format!("opening {}", rel.display())),
    }
}

/// `lstat` of `name` in `dir` (None when missing).
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>> {
    match fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("stat {}", Path::new(name).display())),
    }
}

/// The file type bits of a stat result.
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens the directory `name` in `dir` for reading its entries, not
/// following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(owned)
}

/// Names in the directory `dir` (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let d = nix::dir::Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("opening directory")?;
    let mut out = Vec::new();
    for e in d {
        let e = e.context("reading directory")?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` whatever it is (a directory with all its
/// content); symlinks are removed, never followed. Missing is fine.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if kind(&st) == SFlag::S_IFDIR {
        let sub = open_subdir(dir, name)
            .with_context(|| format!("opening {}", Path::new(name).display()))?;
        for child in list_dir(sub.as_fd())? {
            remove_at(sub.as_fd(), &child)?;
        }
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
    }
    .or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
    .with_context(|| format!("removing {}", Path::new(name).display()))
}

/// chmod of the file `fd` refers to (an `O_PATH` fd is fine): through the
/// fd's magic link, so the inode that was opened is changed, and a symlink
/// is never followed (symlinks have no mode of their own: refused).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat")?;
    if kind(&st) == SFlag::S_IFLNK {
        bail!("refusing to chmod a symlink");
    }
    nix::sys::stat::fchmodat(
        None,
        &fd_path(fd),
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .context("chmod")
}

/// Opens `name` in `dir` as an `O_PATH` fd of the entry itself (a symlink
/// is opened as the link, not followed).
pub fn open_entry(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(owned)
}

/// Reads the regular file `rel` inside the tree at `root` (symlinks resolved
/// as if `root` were `/`), at most `limit` bytes; None when it is missing or
/// not a regular file (a FIFO or device planted by an image is never opened
/// for reading: `O_NONBLOCK` for the open, then the type is checked).
pub fn read_file_in_root(root: &Path, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let root_fd = open_root(root)?;
    let fd = match open_in_root(
        root_fd.as_fd(),
        rel,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        ResolveFlag::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", rel.display())),
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat")?;
    if kind(&st) != SFlag::S_IFREG {
        return Ok(None);
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(limit)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", rel.display()))?;
    Ok(Some(data))
}

/// Makes the unpacked archive at `root` plain, so that its members can be
/// read by path afterwards: every symlink is replaced by a hard link to the
/// regular file it names inside `root` (resolved as if `root` were `/`, as
/// `docker save` links shared layers), and any other kind of entry (FIFO,
/// device, socket, a link to a directory or to nothing) is refused. A
/// hostile image archive thus cannot make an import read a host file or
/// block on a FIFO.
pub fn plain_tree(root: &Path) -> Result<()> {
    let root_fd = open_root(root)?;
    plain_dir(root_fd.as_fd(), root_fd.as_fd(), Path::new(""))
}

fn plain_dir(root: BorrowedFd<'_>, dir: BorrowedFd<'_>, rel: &Path) -> Result<()> {
    for name in list_dir(dir)? {
        let child = rel.join(&name);
        let Some(st) = stat_at(dir, &name)? else {
            continue;
        };
        match kind(&st) {
            SFlag::S_IFDIR => {
                let sub = open_subdir(dir, &name)
                    .with_context(|| format!("opening {}", child.display()))?;
                plain_dir(root, sub.as_fd(), &child)?;
            }
            SFlag::S_IFREG => {}
            SFlag::S_IFLNK => {
                let target = open_in_root(root, &child, OFlag::O_PATH, ResolveFlag::empty())
                    .map_err(|e| walk_error(&child, e))?;
                let tst = nix::sys::stat::fstat(target.as_raw_fd()).context("fstat")?;
                if kind(&tst) != SFlag::S_IFREG {
                    bail!("archive member {} is a link to a non-file", child.display());
                }
                unlinkat(
                    Some(dir.as_raw_fd()),
                    name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                )
                .with_context(|| format!("removing {}", child.display()))?;
                // The magic link names the opened inode itself.
                nix::unistd::linkat(
                    None,
                    fd_path(target.as_fd()).as_path(),
                    Some(dir.as_raw_fd()),
                    Path::new(&name),
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
                .with_context(|| format!("linking {}", child.display()))?;
            }
            _ => bail!(
                "archive member {} is not a file or directory",
                child.display()
            ),
        }
    }
    Ok(())
}

/// Splits a relative path into its parent and final name.
pub fn split(rel: &Path) -> Result<(&Path, &OsStr)> {
    let name = rel
        .file_name()
        .with_context(|| format!("{} has no final name", rel.display()))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn lookups_stay_in_the_root_and_refuse_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        symlink(outside.path(), r.join("evil")).unwrap();
        symlink("/", r.join("up")).unwrap();
        let root = open_root(r).unwrap();
        assert!(open_dir_nofollow(root.as_fd(), Path::new("a/b")).is_ok());
        assert!(open_dir_nofollow(root.as_fd(), Path::new("/")).is_ok());
        assert_eq!(
            open_dir_nofollow(root.as_fd(), Path::new("evil")).unwrap_err(),
            Errno::ELOOP
        );
        // IN_ROOT: "/" through a symlink is the root itself.
        let up = open_in_root(
            root.as_fd(),
            Path::new("up/a"),
            DIR_PATH,
            ResolveFlag::empty(),
        )
        .unwrap();
        let st = nix::sys::stat::fstat(up.as_raw_fd()).unwrap();
        let want = fs::metadata(r.join("a")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(st.st_ino, want.ino());
        assert!(mkdir_all_in_root(root.as_fd(), Path::new("evil/x"), 0o755).is_err());
        assert!(!outside.path().join("x").exists());
        mkdir_all_in_root(root.as_fd(), Path::new("n/m"), 0o755).unwrap();
        assert!(r.join("n/m").is_dir());
    }

    #[test]
    fn plain_tree_turns_inside_links_into_files_and_refuses_the_rest() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("host"), b"host").unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a")).unwrap();
        fs::write(r.join("a/layer.tar"), b"layer").unwrap();
        symlink("../a/layer.tar", r.join("shared")).unwrap();
        plain_tree(r).unwrap();
        assert!(!fs::symlink_metadata(r.join("shared"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(r.join("shared")).unwrap(), b"layer");
        // An absolute link resolves inside the root: there, nothing.
        symlink(outside.path().join("host"), r.join("evil")).unwrap();
        assert!(plain_tree(r).is_err());
        fs::remove_file(r.join("evil")).unwrap();
        nix::unistd::mkfifo(&r.join("fifo"), Mode::S_IRWXU).unwrap();
        assert!(plain_tree(r).is_err());
    }

    #[test]
    fn remove_and_chmod_never_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"x").unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("t/sub")).unwrap();
        symlink(outside.path(), r.join("t/sub/link")).unwrap();
        let root = open_root(r).unwrap();
        remove_at(root.as_fd(), OsStr::new("t")).unwrap();
        assert!(!r.join("t").exists());
        assert!(outside.path().join("keep").exists());
        symlink(outside.path(), r.join("l")).unwrap();
        let e = open_entry(root.as_fd(), OsStr::new("l")).unwrap();
        let before = fs::metadata(outside.path()).unwrap().permissions().mode();
        assert!(chmod_fd(e.as_fd(), 0o777).is_err());
        assert_eq!(
            fs::metadata(outside.path()).unwrap().permissions().mode(),
            before
        );
    }
}
