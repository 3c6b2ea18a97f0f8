//! Mount points of `-v` volumes inside a container root, made by fd.
//!
//! Docker resolves a volume's destination inside the container's root
//! (symlinks in the image are followed as if the root were `/`) and creates
//! what is missing: a directory for a directory source, an empty file for a
//! file source. Here every step is one name looked up in a directory fd that
//! was itself opened with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`, a symlink
//! is read (never followed by the kernel) and its target walked the same
//! way, and a missing entry is created with `O_EXCL | O_NOFOLLOW` / `mkdirat`
//! in that fd. So an image's `/etc/evil -> /../../host/file` lands on
//! `<root>/host/file`, never on the host's file. The runtime gets the
//! resolved, symlink-free destination, and the caller gets what was created
//! (the runtime's mount points are not the container's changes: they are
//! removed after the run, see `run::remove_stubs`).
use crate::fsutil::safe;
use anyhow::{bail, Context, Result};
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one destination before giving up (Linux's limit).
const MAX_LINKS: u32 = 40;

/// A destination made ready for a mount.
#[derive(Debug, Clone, PartialEq)]
pub struct MountPoint {
    /// Absolute, symlink-free path inside the root: what the runtime mounts on.
    pub dest: String,
    /// Topmost entries this call created (relative to the root).
    pub created: Vec<PathBuf>,
}

/// Resolves `dest` inside the root `root` and makes sure it exists as a
/// directory (`dir`) or a non-directory (a file source), creating what is
/// missing.
pub fn prepare(root: BorrowedFd<'_>, dest: &str, dir: bool) -> Result<MountPoint> {
    let mut todo: VecDeque<OsString> = parts(Path::new(dest));
    let mut cur = PathBuf::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let mut links = 0u32;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            // `..` at the root stays at the root, as in the kernel.
            cur.pop();
            continue;
        }
        let parent = safe::open_dir_nofollow(root, &cur).map_err(|e| safe::walk_error(&cur, e))?;
        let last = todo.is_empty();
        let here = cur.join(&name);
        match safe::stat_at(parent.as_fd(), &name)? {
            None => {
                if last && !dir {
                    create_file(parent.as_fd(), &name)
                } else {
                    mkdirat(
                        Some(parent.as_raw_fd()),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                }
                .with_context(|| format!("creating mount point /{}", here.display()))?;
                if !created.iter().any(|c| here.starts_with(c)) {
                    created.push(here.clone());
                }
            }
            Some(st) => match safe::kind(&st) {
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("volume destination {dest}: too many levels of symlinks");
                    }
                    let target = readlinkat(Some(parent.as_raw_fd()), name.as_os_str())
                        .with_context(|| format!("reading symlink /{}", here.display()))?;
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    for p in parts(&target).into_iter().rev() {
                        todo.push_front(p);
                    }
                    continue;
                }
                SFlag::S_IFDIR if last && !dir => {
                    bail!("cannot mount a file on {dest}: it is a directory in the container")
                }
                SFlag::S_IFDIR => {}
                _ if !last => bail!(
                    "volume destination {dest}: /{} is not a directory",
                    here.display()
                ),
                _ if dir => bail!(
                    "cannot mount a directory on {dest}: it is not a directory in the container"
                ),
                _ => {}
            },
        }
        cur = here;
    }
    if cur.as_os_str().is_empty() && !dir {
        bail!("cannot mount a file on {dest}: it is the container's root");
    }
    Ok(MountPoint {
        dest: format!("/{}", cur.display()),
        created,
    })
}

/// The names and `..` of a path, in order (`.` and slashes dropped).
fn parts(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// An empty file `name` in `dir`, never through a symlink, never an existing
/// entry (`O_EXCL`).
fn create_file(dir: BorrowedFd<'_>, name: &OsString) -> nix::Result<()> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name.as_os_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    // SAFETY: a fresh descriptor from openat, closed right away.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn destinations_resolve_inside_the_root_and_report_what_was_made() {
        let outside = tempfile::tempdir().unwrap();
        let canary = outside.path().join("canary");
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/passwd"), "x").unwrap();
        symlink(
            format!("/../../../..{}", canary.display()),
            r.join("etc/evil"),
        )
        .unwrap();
        symlink("../etc/passwd", r.join("etc/pw")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let root = safe::open_root(r).unwrap();
        let root = root.as_fd();

        // A dangling symlink out of the root: created inside it instead.
        let m = prepare(root, "/etc/evil", false).unwrap();
        assert_eq!(m.dest, format!("{}", canary.display()));
        assert!(!canary.exists());
        assert!(r.join(canary.strip_prefix("/").unwrap()).is_file());
        let top = canary
            .strip_prefix("/")
            .unwrap()
            .components()
            .next()
            .unwrap();
        assert_eq!(m.created, vec![PathBuf::from(top.as_os_str())]);

        // An existing file through a relative symlink: nothing made.
        let m = prepare(root, "/etc/pw", false).unwrap();
        assert_eq!((m.dest.as_str(), m.created.len()), ("/etc/passwd", 0));

        let m = prepare(root, "/new/dir/", true).unwrap();
        assert_eq!(m.dest, "/new/dir");
        assert_eq!(m.created, vec![PathBuf::from("new")]);
        assert!(r.join("new/dir").is_dir());

        assert!(
            prepare(root, "/etc", false).is_err(),
            "file onto a directory"
        );
        assert!(
            prepare(root, "/etc/passwd", true).is_err(),
            "directory onto a file"
        );
        assert!(prepare(root, "/etc/passwd/x", false).is_err());
        assert!(prepare(root, "/loop", false).is_err());
        assert!(prepare(root, "/", false).is_err());
    }
}
