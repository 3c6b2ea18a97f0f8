//! Resolving many paths inside one root with few syscalls (for the masked
//! and readonly paths `finalize` covers: runc's default spec has fifteen,
//! nearly all of them under `/proc` and `/sys`).
//!
//! The root is opened once. A path's parent directory is resolved once,
//! by the kernel, inside the root (`openat2(RESOLVE_IN_ROOT)`, the same
//! resolution [`paths::open_in_root`] does) and kept open; each final
//! component is then opened relative to that descriptor with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, which
//! can only yield the child itself (or the mount on top of it, as any
//! lookup would). Whatever that fast path does not answer plainly (a
//! final component that is a symlink, a magic link on the way, a parent
//! that is not a directory, a kernel or seccomp filter without openat2) is
//! resolved by the component-by-component walk the callers used before,
//! so every outcome, error or not, is the one a full in-root resolution
//! gives.
//!
//! A cached parent is only valid while no mount covers it or one of its
//! ancestors: callers report each mount they make with
//! [`Lookup::mounted_on`], which forgets the parents at or below it.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::paths::{self, Missing};

/// A parent directory as resolved: open, or not usable by the fast path
/// (its paths are resolved by the walk each time). A missing parent is not
/// usable: the walk appends what is missing lexically (`/a -> /missing/../etc`
/// leads to `/etc`), where the kernel just answers ENOENT.
enum Parent {
    Open(OwnedFd),
    Slow,
}

pub(crate) struct Lookup {
    root_path: PathBuf,
    root: OwnedFd,
    parents: Vec<(PathBuf, Parent)>,
}

impl Lookup {
    /// Opens `root` (an absolute host path; `/` once inside the container).
    pub(crate) fn new(root: &Path) -> Result<Lookup> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| anyhow!("open root {:?}: {}", root, e.desc()))?;
        Ok(Lookup {
            root_path: root.to_path_buf(),
            // SAFETY: `open` just returned this descriptor and nothing else owns it.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            parents: Vec::new(),
        })
    }

    /// `O_PATH` descriptor of `p` (a clean absolute container path) inside
    /// the root, following symlinks inside it; `None` when part of the
    /// path does not exist (as `paths::walk` with `Missing::Lexical`).
    pub(crate) fn open(&mut self, p: &Path) -> Result<Option<OwnedFd>> {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return self.walk(p);
        };
        let fast = match self.parent(parent) {
            Parent::Open(dir) => child(dir, name),
            Parent::Slow => return self.walk(p),
        };
        match fast {
            Ok(fd) => Ok(Some(fd)),
            // With no symlink followed, the entry itself is missing.
            Err(Errno::ENOENT) => Ok(None),
            // A symlink as the final component (ELOOP), ...: the full walk
            // decides.
            Err(_) => self.walk(p),
        }
    }

    /// `O_PATH` descriptor of `p` resolved afresh from the root by the
    /// kernel (no cached parent): what the container will see at `p`.
    pub(crate) fn open_fresh(&self, p: &Path) -> Result<OwnedFd> {
        paths::open_in_root_fd(&self.root, &self.root_path, p)
    }

    /// A mount was made on `p`: parents at or below it may now be covered.
    pub(crate) fn mounted_on(&mut self, p: &Path) {
        self.parents.retain(|(dir, _)| !dir.starts_with(p));
    }

    fn walk(&self, p: &Path) -> Result<Option<OwnedFd>> {
        Ok(paths::walk(&self.root_path, p, Missing::Lexical)?.fd)
    }

    fn parent(&mut self, dir: &Path) -> &Parent {
        let i = match self.parents.iter().position(|(d, _)| d == dir) {
            Some(i) => i,
            None => {
                let resolved = match open_dir_in_root(&self.root, dir) {
                    Ok(fd) => Parent::Open(fd),
                    Err(_) => Parent::Slow,
                };
                self.parents.push((dir.to_path_buf(), resolved));
                self.parents.len() - 1
            }
        };
        &self.parents[i].1
    }
}

/// openat2 answers EAGAIN when a concurrent rename raced the lookup.
fn retry_eagain(mut f: impl FnMut() -> nix::Result<OwnedFd>) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

fn open_dir_in_root(root: &OwnedFd, dir: &Path) -> nix::Result<OwnedFd> {
    let rel = paths::relative(dir);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    retry_eagain(|| {
        openat2(root.as_raw_fd(), rel.as_os_str(), how)
            // SAFETY: openat2 returned a fresh descriptor we now own.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// The entry `name` of `dir` itself: no symlink followed, nothing outside
/// `dir` reachable.
fn child(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    retry_eagain(|| {
        openat2(dir.as_raw_fd(), name, how)
            // SAFETY: openat2 returned a fresh descriptor we now own.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    })
}
