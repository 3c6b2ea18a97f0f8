//! Resolving container paths inside the rootfs without ever leaving it.
//!
//! Every path taken from the spec is attacker-controlled (the image owns the
//! rootfs and may plant symlinks such as `etc/x -> /host/path`). Resolution
//! therefore treats `root` as `/`: absolute symlinks restart at `root`, and
//! `..` never climbs above it. The kernel does this for us with
//! `openat2(RESOLVE_IN_ROOT)` (Linux 5.6+); older kernels get a manual
//! component-by-component walk over `O_PATH|O_NOFOLLOW` descriptors.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// Linux's own limit on symlinks followed during one lookup.
const MAX_SYMLINKS: usize = 40;

/// What to do when a component of the path does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Fail with ENOENT.
    Fail,
    /// Create missing directories; the final component becomes `Last`.
    Create(Last),
    /// Stop touching the filesystem and append the rest lexically (only the
    /// resolved path is wanted, as in `filepath-securejoin`).
    Lexical,
}

/// Kind of object to create for a missing final component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Last {
    Dir,
    File,
}

/// Result of a walk: the `O_PATH` descriptor (absent when part of the path
/// was missing in `Lexical` mode) and the path relative to the root.
pub(crate) struct Resolved {
    pub fd: Option<OwnedFd>,
    pub rel: PathBuf,
}

/// Opens `unsafe_path` (as seen inside the container) under `root` and
/// returns an `O_PATH` descriptor that is guaranteed to lie inside `root`.
pub fn open_in_root(root: &Path, unsafe_path: &Path) -> Result<OwnedFd> {
    open_in_root_fd(&open_root(root)?, root, unsafe_path)
}

/// [`open_in_root`] with the root already open (`root_fd` is `root`).
pub(crate) fn open_in_root_fd(
    root_fd: &OwnedFd,
    root: &Path,
    unsafe_path: &Path,
) -> Result<OwnedFd> {
    match openat2_in_root(root_fd, unsafe_path) {
        Ok(fd) => Ok(fd),
        // Old kernel, or a seccomp filter that hides openat2: walk by hand.
        Err(Errno::ENOSYS) | Err(Errno::EPERM) | Err(Errno::E2BIG) => {
            walk(root, unsafe_path, Missing::Fail)?
                .fd
                .ok_or_else(|| anyhow!("resolve {:?} in {:?}: not found", unsafe_path, root))
        }
        Err(e) => Err(anyhow!(
            "open {:?} inside root {:?}: {}",
            unsafe_path,
            root,
            e.desc()
        )),
    }
}

/// [`open_in_root`] for a path that may well not exist: `None` when the
/// kernel's in-root lookup does not open it for whatever reason (missing,
/// a dangling symlink, no openat2), leaving the caller to its slower
/// path.
pub(crate) fn open_existing_in_root(root: &Path, unsafe_path: &Path) -> Result<Option<OwnedFd>> {
    Ok(openat2_in_root(&open_root(root)?, unsafe_path).ok())
}

/// Returns the host path of `unsafe_path` resolved inside `root`. Missing
/// trailing components are appended lexically, so the result can be used to
/// create the path; it always starts with `root`.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let resolved = walk(root, unsafe_path, Missing::Lexical)?;
    Ok(root.join(resolved.rel))
}

/// Like [`open_in_root`] but creates missing directories on the way and the
/// final component as `last` when it does not exist. Symlinks met on the way
/// (including dangling ones) are followed *inside* the root.
pub(crate) fn create_in_root(root: &Path, unsafe_path: &Path, last: Last) -> Result<OwnedFd> {
    walk(root, unsafe_path, Missing::Create(last))?
        .fd
        .ok_or_else(|| anyhow!("create {:?} in {:?}: nothing opened", unsafe_path, root))
}

/// The path through which the kernel reaches the object behind `fd`. Using
/// it as a mount target pins the target against symlink-exchange races.
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open root {:?}", root))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat2_in_root(root_fd: &OwnedFd, unsafe_path: &Path) -> nix::Result<OwnedFd> {
    let rel = relative(unsafe_path);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // EAGAIN means a concurrent rename raced the lookup: the kernel asks us
    // to retry rather than risk an escape.
    let mut tries = 0;
    loop {
        match openat2(root_fd.as_raw_fd(), rel.as_os_str(), how) {
            // SAFETY: openat2 returned a fresh descriptor we now own.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// `unsafe_path` as a relative path (`.` for the root itself).
pub(crate) fn relative(unsafe_path: &Path) -> PathBuf {
    let rel: PathBuf = unsafe_path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Splits a path into the components that matter for resolution.
fn components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

fn open_path_at(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(dir),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The manual resolver: a stack of `O_PATH` descriptors, one per resolved
/// component, so `..` pops back to a descriptor we already validated.
pub(crate) fn walk(root: &Path, unsafe_path: &Path, missing: Missing) -> Result<Resolved> {
    let root_fd = open_root(root)?;
    let mut queue: VecDeque<OsString> = components(unsafe_path).collect();
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    // Components after the first missing one (Lexical mode only).
    let mut tail: Vec<OsString> = Vec::new();
    let mut links = 0;

    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if tail.pop().is_none() {
                stack.pop();
            }
            continue;
        }
        if !tail.is_empty() {
            tail.push(name);
            continue;
        }
        let dir = stack
            .last()
            .map_or(root_fd.as_raw_fd(), |(fd, _)| fd.as_raw_fd());
        match open_path_at(dir, &name) {
            Ok(fd) => {
                let st = fstat(fd.as_raw_fd())
                    .with_context(|| format!("stat {:?} under {:?}", name, root))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        bail!(
                            "resolve {:?} in {:?}: too many levels of symbolic links",
                            unsafe_path,
                            root
                        );
                    }
                    let target = readlinkat(Some(dir), name.as_os_str())
                        .with_context(|| format!("readlink {:?} under {:?}", name, root))?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                        queue.push_front(c);
                    }
                    continue;
                }
                stack.push((fd, name));
            }
            Err(Errno::ENOENT) => match missing {
                Missing::Fail => bail!(
                    "resolve {:?} in root {:?}: component {:?} does not exist",
                    unsafe_path,
                    root,
                    name
                ),
                Missing::Lexical => tail.push(name),
                Missing::Create(last) => {
                    create_at(dir, &name, queue.is_empty().then_some(last)).with_context(|| {
                        format!("create {:?} for {:?} in root {:?}", name, unsafe_path, root)
                    })?;
                    // Open what we just created on the next round, which also
                    // copes with someone racing us to create it.
                    queue.push_front(name);
                }
            },
            Err(e) => bail!(
                "resolve {:?} in root {:?}: open {:?}: {}",
                unsafe_path,
                root,
                name,
                e.desc()
            ),
        }
    }

    let rel: PathBuf = stack
        .iter()
        .map(|(_, n)| n.as_os_str())
        .chain(tail.iter().map(|n| n.as_os_str()))
        .collect();
    let fd = if !tail.is_empty() {
        None
    } else if let Some((fd, _)) = stack.pop() {
        Some(fd)
    } else {
        Some(root_fd)
    };
    Ok(Resolved { fd, rel })
}

/// Creates one missing component: a directory unless it is the final one
/// and a file was asked for.
fn create_at(dir: RawFd, name: &OsStr, last: Option<Last>) -> nix::Result<()> {
    let res = if last == Some(Last::File) {
        openat(
            Some(dir),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(|fd| {
            // SAFETY: fresh descriptor, closed right away.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        })
    } else {
        mkdirat(Some(dir), name, Mode::from_bits_truncate(0o755))
    };
    match res {
        Err(Errno::EEXIST) => Ok(()),
        other => other,
    }
}

/// Normalises a container path lexically: absolute, no `.`/`..`, no
/// duplicate slashes (`..` above `/` stays at `/`).
pub(crate) fn clean(p: &Path) -> PathBuf {
    let mut out: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    let mut res = PathBuf::from("/");
    res.extend(out);
    res
}
