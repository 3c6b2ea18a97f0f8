//! `cp` between a working container and the host. Inside the container
//! every path is resolved by the kernel relative to an fd of its root
//! (`openat2` with `RESOLVE_IN_ROOT`): a symlink in the container, absolute
//! or full of `..`, resolves inside the root and can never name a host file.
//! Entries are then created and read one name at a time in a directory fd
//! with `O_NOFOLLOW`, so a symlink swapped in later is never followed either.
//! Host paths are the caller's own and are used as given.
use crate::fsutil::safe;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag, ResolveFlag};
use nix::sys::stat::{fchmod, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::symlinkat;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One side of a `cp`: `NAME:PATH` in a container, or a host path.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Container { name: String, path: String },
    Host(PathBuf),
}

pub fn parse_endpoint(s: &str) -> Endpoint {
    match s.split_once(':') {
        // As Docker: a host path with a colon needs a `/` before it (./a:b).
        Some((n, p)) if !n.is_empty() && !n.contains('/') => Endpoint::Container {
            name: n.to_string(),
            path: p.to_string(),
        },
        _ => Endpoint::Host(PathBuf::from(s)),
    }
}

const FILE_READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn base_name(p: &Path) -> Result<&OsStr> {
    p.file_name()
        .with_context(|| format!("{} has no final name", p.display()))
}

/// Copies `src` (inside the root `root`) to the host path `dest`; the copies
/// belong to the caller, as with `docker cp`.
pub fn from_container(root: &Path, src: &str, dest: &Path) -> Result<()> {
    copy_out(root, src, dest, false)
}

/// As [`from_container`], keeping owners (Docker's copy into a new volume).
pub fn from_container_keep_owner(root: &Path, src: &str, dest: &Path) -> Result<()> {
    copy_out(root, src, dest, true)
}

fn copy_out(root: &Path, src: &str, dest: &Path, keep: bool) -> Result<()> {
    let root_fd = safe::open_root(root)?;
    let fd = safe::open_in_root(
        root_fd.as_fd(),
        Path::new(src),
        OFlag::O_PATH,
        ResolveFlag::empty(),
    )
    .map_err(|e| safe::walk_error(Path::new(src), e))
    .with_context(|| format!("container path {src}"))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat")?;
    // Into an existing directory: under the source's own name.
    let target = if dest.is_dir() {
        let name = Path::new(src)
            .file_name()
            .unwrap_or_else(|| OsStr::new("."));
        if name == "." {
            dest.to_path_buf()
        } else {
            dest.join(name)
        }
    } else {
        dest.to_path_buf()
    };
    match safe::kind(&st) {
        SFlag::S_IFDIR => copy_dir_out(fd.as_fd(), &target, &st, keep),
        SFlag::S_IFREG => {
            let f = reopen_file(fd.as_fd())?;
            copy_file_out(f, &target, &st, keep)
        }
        _ => bail!("{src}: not a regular file or directory"),
    }
}

/// Reopens an `O_PATH` fd of a regular file for reading, through its magic link.
fn reopen_file(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    nix::fcntl::open(
        &safe::fd_path(fd),
        FILE_READ.difference(OFlag::O_NOFOLLOW),
        Mode::empty(),
    )
    .map(owned)
    .context("opening the container file")
}

/// Gives `dest` the owner of `st` when asked (before the chmod: a chown
/// clears set-id bits).
fn owner(dest: &Path, st: &FileStat, keep: bool) -> Result<()> {
    if keep {
        std::os::unix::fs::lchown(dest, Some(st.st_uid), Some(st.st_gid))
            .with_context(|| format!("chown {}", dest.display()))?;
    }
    Ok(())
}

fn copy_file_out(src: OwnedFd, dest: &Path, st: &FileStat, keep: bool) -> Result<()> {
    let mut from = fs::File::from(src);
    let mut to = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    std::io::copy(&mut from, &mut to).with_context(|| format!("writing {}", dest.display()))?;
    owner(dest, st, keep)?;
    to.set_permissions(fs::Permissions::from_mode(st.st_mode & 0o7777))
        .with_context(|| format!("chmod {}", dest.display()))
}

fn copy_dir_out(dir: BorrowedFd<'_>, dest: &Path, dst: &FileStat, keep: bool) -> Result<()> {
    if !dest.is_dir() {
        fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    for name in safe::list_dir(dir)? {
        let Some(st) = safe::stat_at(dir, &name)? else {
            continue;
        };
        let to = dest.join(&name);
        match safe::kind(&st) {
            SFlag::S_IFDIR => {
                let sub = safe::open_subdir(dir, &name)
                    .with_context(|| format!("opening {}", Path::new(&name).display()))?;
                copy_dir_out(sub.as_fd(), &to, &st, keep)?;
            }
            SFlag::S_IFREG => {
                let f = openat(
                    Some(dir.as_raw_fd()),
                    name.as_os_str(),
                    FILE_READ,
                    Mode::empty(),
                )
                .map(owned)
                .with_context(|| format!("opening {}", Path::new(&name).display()))?;
                copy_file_out(f, &to, &st, keep)?;
            }
            SFlag::S_IFLNK => {
                let target =
                    readlinkat(Some(dir.as_raw_fd()), name.as_os_str()).context("readlink")?;
                let _ = fs::remove_file(&to);
                std::os::unix::fs::symlink(&target, &to)
                    .with_context(|| format!("creating {}", to.display()))?;
                owner(&to, &st, keep)?;
            }
            // Devices, FIFOs and sockets are not copied out (as `docker cp`
            // to a non-root host would not either).
            _ => {}
        }
    }
    owner(dest, dst, keep)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(dst.st_mode & 0o7777))
        .with_context(|| format!("chmod {}", dest.display()))
}

/// Copies the host path `src` to `dest` inside the root `root`.
pub fn into_container(root: &Path, src: &Path, dest: &str) -> Result<()> {
    let meta = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let root_fd = safe::open_root(root)?;
    let dest_path = Path::new(dest);
    // An existing directory (symlinks resolved inside the root) receives
    // the source under its own name; otherwise `dest` names the copy.
    let (parent, name) = match safe::open_in_root(
        root_fd.as_fd(),
        dest_path,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        ResolveFlag::empty(),
    ) {
        Ok(dir) => (dir, base_name(src)?.to_os_string()),
        Err(Errno::ENOENT | Errno::ENOTDIR) => {
            let (p, n) = safe::split(dest_path)?;
            let dir = safe::open_in_root(
                root_fd.as_fd(),
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                ResolveFlag::empty(),
            )
            .map_err(|e| safe::walk_error(p, e))
            .with_context(|| format!("container directory of {dest}"))?;
            (dir, n.to_os_string())
        }
        Err(e) => return Err(safe::walk_error(dest_path, e)),
    };
    copy_in(parent.as_fd(), &name, src, &meta)
}

fn copy_in(dir: BorrowedFd<'_>, name: &OsStr, src: &Path, meta: &fs::Metadata) -> Result<()> {
    let shown = || Path::new(name).display().to_string();
    let existing = safe::stat_at(dir, name)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        match existing {
            Some(st) if safe::kind(&st) == SFlag::S_IFDIR => {}
            Some(_) => {
                safe::remove_at(dir, name)?;
                mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700))
                    .with_context(|| format!("creating {}", shown()))?;
            }
            None => mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o700))
                .with_context(|| format!("creating {}", shown()))?,
        }
        let sub = safe::open_subdir(dir, name).with_context(|| format!("opening {}", shown()))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let m = fs::symlink_metadata(e.path())?;
            copy_in(sub.as_fd(), &e.file_name(), &e.path(), &m)?;
        }
        fchmod(
            sub.as_raw_fd(),
            Mode::from_bits_truncate(meta.mode() & 0o7777),
        )
        .with_context(|| format!("chmod {}", shown()))?;
        return Ok(());
    }
    // Whatever is in the way (a file, a symlink planted by the container) is
    // replaced, never written through.
    if existing.is_some() {
        safe::remove_at(dir, name)?;
    }
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        symlinkat(target.as_path(), Some(dir.as_raw_fd()), name)
            .with_context(|| format!("creating {}", shown()))?;
    } else if ft.is_file() {
        let fd = openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map(owned)
        .with_context(|| format!("creating {}", shown()))?;
        let mut to = fs::File::from(fd);
        let mut from = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        std::io::copy(&mut from, &mut to).with_context(|| format!("writing {}", shown()))?;
        to.flush()?;
        fchmod(
            to.as_raw_fd(),
            Mode::from_bits_truncate(meta.mode() & 0o7777),
        )
        .with_context(|| format!("chmod {}", shown()))?;
    } else {
        bail!(
            "{}: only files, directories and symlinks are copied",
            src.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("web:/etc/x"),
            Endpoint::Container {
                name: "web".into(),
                path: "/etc/x".into()
            }
        );
        assert_eq!(parse_endpoint("./a:b"), Endpoint::Host("./a:b".into()));
        assert_eq!(parse_endpoint("/tmp/x"), Endpoint::Host("/tmp/x".into()));
    }

    #[test]
    fn symlinks_in_the_container_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let (root, host) = (t.path().join("root"), t.path().join("host"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("canary"), "host").unwrap();
        // The container points /etc/out at the host directory and /etc/f at the canary.
        std::os::unix::fs::symlink(&host, root.join("etc/out")).unwrap();
        std::os::unix::fs::symlink(host.join("canary"), root.join("etc/f")).unwrap();
        let src = t.path().join("src");
        fs::write(&src, "new").unwrap();
        // Into a symlinked "directory": resolved inside the root, where it does not exist.
        assert!(into_container(&root, &src, "/etc/out/canary").is_err());
        // Onto a symlink: the link is replaced, the host file untouched.
        into_container(&root, &src, "/etc/f").unwrap();
        assert_eq!(fs::read_to_string(host.join("canary")).unwrap(), "host");
        assert_eq!(fs::read_to_string(root.join("etc/f")).unwrap(), "new");
        // Reading through the symlink reads inside the root.
        let out = t.path().join("out");
        assert!(from_container(&root, "/etc/out/canary", &out).is_err());
        assert!(!out.exists());
    }
}
