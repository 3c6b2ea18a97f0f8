//! Mount sources of a RUN step, opened by fd before the runtime sees them.
//!
//! A bind source (a path in the build context or in another stage, a cache
//! directory, a secret copy) is opened with `openat2(RESOLVE_IN_ROOT)`
//! relative to an fd of its root, and that very file is bind-mounted (via
//! its `/proc/self/fd` magic link) onto a staging point inside the step's
//! private work directory. The runtime gets the staging point: nothing it
//! resolves is reachable by a container or by a parallel stage, so swapping
//! a source directory for a symlink to `/` after the check changes nothing
//! (the BuildKit CVE-2024-23651 race).
//!
//! A read-write `type=bind` mount is, as in BuildKit, a throwaway
//! copy-on-write layer: an overlay whose lower is the (read-only) staged
//! source and whose upper lives in the work directory, discarded after the
//! step, so writes never reach the build context on the host. Cache mounts
//! stay read-write binds: persisting writes is their purpose, and their
//! directories live in the store, not on the host's files. A working
//! container's `-v` volume is a `Cache` source too: a host path the caller
//! chose (a directory or a single file), opened once and bound from the fd.
use super::run::{MountSource, RunMount};
use crate::fsutil::safe;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Flags of every staged mount.
const MOUNT_SAFETY: MsFlags = MsFlags::MS_NODEV.union(MsFlags::MS_NOSUID);

/// Mounts made for one step; detached (deepest first) on drop, before the
/// work directory holding them is removed.
#[derive(Debug, Default)]
pub struct StagedMounts {
    mounted: Vec<PathBuf>,
}

impl Drop for StagedMounts {
    fn drop(&mut self) {
        for p in self.mounted.iter().rev() {
            let _ = umount2(p, MntFlags::MNT_DETACH);
        }
    }
}

/// Stages the sources of `mounts` below `dir` (a fresh private directory);
/// returns, for each mount, the path to give the runtime (empty for tmpfs).
pub fn stage(mounts: &[RunMount], dir: &Path) -> Result<(Vec<PathBuf>, StagedMounts)> {
    let mut staged = StagedMounts::default();
    let mut sources = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let point = dir.join(i.to_string());
        let src = match &m.source {
            MountSource::Tmpfs { .. } => PathBuf::new(),
            MountSource::Bind {
                root,
                path,
                readonly,
            } => {
                let root_fd = safe::open_root(root)?;
                let fd = open_source(root_fd.as_fd(), path)
                    .with_context(|| format!("mount on {}", m.target))?;
                if *readonly {
                    bind_fd(fd.as_fd(), &point, true, &mut staged)?;
                    point
                } else {
                    throwaway(fd.as_fd(), dir, i, &mut staged)
                        .with_context(|| format!("read-write bind mount on {}", m.target))?
                }
            }
            MountSource::Cache {
                dir: cache,
                readonly,
            } => {
                let fd = open_host_source(cache)?;
                bind_fd(fd.as_fd(), &point, *readonly, &mut staged)?;
                point
            }
        };
        sources.push(src);
    }
    Ok((sources, staged))
}

/// Opens `path` inside `root` (symlinks resolved as if `root` were `/`).
fn open_source(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd> {
    match safe::open_in_root(root, path, OFlag::O_PATH, ResolveFlag::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => bail!("bind mount source {:?} not found", path.display()),
        Err(e) => Err(e).context("opening the source inside its root"),
    }
}

/// Opens a host path the caller chose (a store cache directory, a `-v`
/// volume source: a directory or any other file, as Docker binds both) as an
/// `O_PATH` fd, once: the bind is made from this fd. Symlinks are followed,
/// as Docker follows them in a volume's source: the path is the caller's
/// own, on the host's side.
fn open_host_source(path: &Path) -> Result<OwnedFd> {
    match nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) {
        // SAFETY: a fresh descriptor from open(2), owned from here on.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        // Docker's `-v` creates a missing source directory; berth does not
        // guess (a typo would silently mount an empty directory).
        Err(Errno::ENOENT) => bail!(
            "bind source path {} does not exist (create it first)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

fn is_dir(fd: BorrowedFd<'_>) -> Result<bool> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat of a mount source")?;
    Ok(safe::kind(&st) == SFlag::S_IFDIR)
}

/// Bind-mounts the file `fd` refers to onto `point` (created to match),
/// read-only if asked: the kernel follows the fd's magic link to the opened
/// file itself, never to a path.
fn bind_fd(
    fd: BorrowedFd<'_>,
    point: &Path,
    readonly: bool,
    staged: &mut StagedMounts,
) -> Result<()> {
    if is_dir(fd)? {
        fs::create_dir(point)
    } else {
        fs::File::create(point).map(drop)
    }
    .with_context(|| format!("creating {}", point.display()))?;
    mount(
        Some(&safe::fd_path(fd)),
        point,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting a mount source on {}", point.display()))?;
    staged.mounted.push(point.to_path_buf());
    // nodev, nosuid: a device node or setuid file that a client's context
    // tar or another stage planted is inert through the mount (the runtime's
    // bind of this point inherits the flags).
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MOUNT_SAFETY;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, point, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("restricting the mount on {}", point.display()))?;
    Ok(())
}

/// A writable view of `fd` whose writes are thrown away after the step:
/// an overlay over a read-only bind for a directory, a private copy for a
/// regular file. Returns the path to hand to the runtime.
fn throwaway(
    fd: BorrowedFd<'_>,
    dir: &Path,
    i: usize,
    staged: &mut StagedMounts,
) -> Result<PathBuf> {
    if !is_dir(fd)? {
        return private_copy(fd, &dir.join(format!("{i}-copy")));
    }
    let (lower, upper, work, merged) = (
        dir.join(format!("{i}-lower")),
        dir.join(format!("{i}-upper")),
        dir.join(format!("{i}-work")),
        dir.join(i.to_string()),
    );
    bind_fd(fd, &lower, true, staged)?;
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off,volatile",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MOUNT_SAFETY,
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting a copy-on-write overlay on {}", merged.display()))?;
    staged.mounted.push(merged.clone());
    Ok(merged)
}

/// Copies the regular file `fd` refers to (content and mode) to `dest`.
fn private_copy(fd: BorrowedFd<'_>, dest: &Path) -> Result<PathBuf> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat of a mount source")?;
    if safe::kind(&st) != SFlag::S_IFREG {
        bail!("a read-write bind mount source must be a directory or a regular file");
    }
    // Reopen the very inode for reading (O_PATH fds can't be read).
    let mut src = fs::File::open(safe::fd_path(fd)).context("reopening the mount source")?;
    let mut out = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    std::io::copy(&mut src, &mut out).context("copying the mount source")?;
    out.flush()?;
    out.set_permissions(fs::Permissions::from_mode(st.st_mode & 0o7777))
        .context("chmod of the copy")?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bind(root: &Path, path: &str, readonly: bool) -> RunMount {
        RunMount {
            target: "/t".into(),
            source: MountSource::Bind {
                root: root.to_path_buf(),
                path: path.into(),
                readonly,
            },
        }
    }

    #[test]
    fn sources_resolve_inside_their_root_and_rw_writes_are_discarded() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("host"), b"host").unwrap();
        let ctx = tempfile::tempdir().unwrap();
        fs::create_dir(ctx.path().join("sub")).unwrap();
        fs::write(ctx.path().join("sub/f"), b"ctx").unwrap();
        symlink("/", ctx.path().join("up")).unwrap();
        symlink(outside.path(), ctx.path().join("abs")).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mounts = [
            bind(ctx.path(), "up/sub", true),
            bind(ctx.path(), "sub", false),
            bind(ctx.path(), "sub/f", false),
            bind(ctx.path(), "/", true),
        ];
        let (srcs, staged) = stage(&mounts, work.path()).unwrap();
        // "/" through a symlink is the context root, not the host's.
        assert_eq!(fs::read(srcs[0].join("f")).unwrap(), b"ctx");
        assert_eq!(fs::read(srcs[3].join("sub/f")).unwrap(), b"ctx");
        assert!(fs::write(srcs[0].join("new"), b"x").is_err(), "read-only");
        fs::write(srcs[1].join("f"), b"changed").unwrap();
        fs::write(srcs[1].join("new"), b"x").unwrap();
        fs::write(&srcs[2], b"changed too").unwrap();
        drop(staged);
        assert_eq!(fs::read(ctx.path().join("sub/f")).unwrap(), b"ctx");
        assert!(!ctx.path().join("sub/new").exists());
        // Device nodes in a source are inert (nodev), in every kind of mount.
        nix::sys::stat::mknod(
            &ctx.path().join("sub/null"),
            SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            libc::makedev(1, 3),
        )
        .unwrap();
        let again = work.path().join("again");
        fs::create_dir(&again).unwrap();
        let mounts = [
            bind(ctx.path(), "sub", true),
            bind(ctx.path(), "sub", false),
        ];
        let (srcs, staged) = stage(&mounts, &again).unwrap();
        for s in &srcs {
            let e = fs::File::open(s.join("null")).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{}", s.display());
        }
        drop(staged);
        // A host file (a `-v` volume): bound itself, read-only when asked.
        let host_file = outside.path().join("host");
        let cache = |readonly| RunMount {
            target: "/etc/f".into(),
            source: MountSource::Cache {
                dir: host_file.clone(),
                readonly,
            },
        };
        let files = work.path().join("files");
        fs::create_dir(&files).unwrap();
        let (srcs, staged) = stage(&[cache(true), cache(false)], &files).unwrap();
        assert!(srcs[0].is_file() && srcs[1].is_file());
        let e = fs::OpenOptions::new()
            .append(true)
            .open(&srcs[0])
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        fs::OpenOptions::new()
            .append(true)
            .open(&srcs[1])
            .unwrap()
            .write_all(b"+")
            .unwrap();
        drop(staged);
        assert_eq!(fs::read(&host_file).unwrap(), b"host+");
        let missing = RunMount {
            target: "/x".into(),
            source: MountSource::Cache {
                dir: outside.path().join("nope"),
                readonly: false,
            },
        };
        let err = stage(&[missing], &files).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        // An absolute symlink out of the context resolves inside it: missing.
        let err = stage(&[bind(ctx.path(), "abs/host", true)], work.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not found"), "{err:#}");
    }
}
