//! Writing to procfs through a handle that is known to be procfs.
//!
//! The runtime writes sysctls, `oom_score_adj`, LSM labels and id maps into
//! procfs. Inside the container `/proc` is whatever the container's mount
//! tree puts there: a bind mount over it, a symlinked mount destination or a
//! mount over a single file can turn such a write into a silent no-op or
//! redirect it elsewhere (CVE-2019-16884, CVE-2025-52881). So every write
//! goes through [`ProcFs`]:
//!
//! * the handle is a private procfs instance made with `fsopen("proc")` +
//!   `fsmount` (a detached mount: no path reaches it, nothing can cover
//!   it); when the kernel refuses a new instance (a user namespace without a
//!   fully visible procfs) it falls back to the current `/proc`, accepted
//!   only if it is the root directory of a procfs;
//! * files are opened relative to that handle with `openat2` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//!   RESOLVE_NO_XDEV`, so neither a symlink nor a mount on the way can
//!   redirect the lookup, and the opened file is checked to be on procfs.
//!
//! `self` and `thread-self` are symlinks, which `RESOLVE_NO_SYMLINKS` would
//! refuse: they are read with readlinkat on the verified handle (procfs
//! itself generates them) and the numeric path is used instead.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

/// Inode number of every procfs instance's root directory.
const PROC_ROOT_INO: u64 = 1;

/// A verified handle on the root of a procfs instance.
pub struct ProcFs {
    root: OwnedFd,
}

impl ProcFs {
    /// A private procfs instance, or the current `/proc` if it is one.
    pub fn open() -> Result<ProcFs> {
        let root = match private_instance() {
            Ok(fd) => fd,
            // No permission for a new instance (user namespace, too
            // revealing), or no new mount API: use /proc, verified below.
            Err(_) => open_dir(Path::new("/proc"))?,
        };
        verify_root(&root)?;
        Ok(ProcFs { root })
    }

    /// Opens `rel` (relative to the procfs root) for writing, never
    /// following a symlink nor crossing a mount, and checks the result is a
    /// procfs file.
    pub fn open_file(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd> {
        // openat2 rejects O_PATH combined with anything but a few flags.
        let extra = if flags.contains(OFlag::O_PATH) {
            OFlag::O_CLOEXEC
        } else {
            OFlag::O_CLOEXEC | OFlag::O_NOCTTY
        };
        let how = OpenHow::new()
            .flags(flags | extra)
            .mode(Mode::empty())
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let fd = retry_eagain(|| openat2(self.root.as_raw_fd(), rel, how)).map_err(|e| {
            anyhow!(
                "open /proc/{} on a verified procfs: {}",
                rel.display(),
                e.desc()
            )
        })?;
        // SAFETY: openat2 returned a fresh descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        ensure_procfs(&fd).with_context(|| format!("/proc/{}", rel.display()))?;
        Ok(fd)
    }

    /// Writes `data` to `rel` in one write(2), as procfs files expect.
    pub fn write(&self, rel: &Path, data: &str) -> Result<()> {
        let fd = self.open_file(rel, OFlag::O_WRONLY)?;
        let n = nix::unistd::write(&fd, data.as_bytes()).map_err(|e| {
            anyhow!(
                "write {:?} to /proc/{}: {}",
                data.trim_end(),
                rel.display(),
                e.desc()
            )
        })?;
        if n != data.len() {
            bail!(
                "write {:?} to /proc/{}: short write ({n} of {} bytes)",
                data.trim_end(),
                rel.display(),
                data.len()
            );
        }
        Ok(())
    }

    /// Reads `rel` (small procfs files: one read of up to 4 KiB).
    pub fn read(&self, rel: &Path) -> Result<String> {
        let fd = self.open_file(rel, OFlag::O_RDONLY)?;
        let mut buf = vec![0u8; 4096];
        let n = nix::unistd::read(fd.as_raw_fd(), &mut buf)
            .map_err(|e| anyhow!("read /proc/{}: {}", rel.display(), e.desc()))?;
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| anyhow!("read /proc/{}: not UTF-8", rel.display()))
    }

    /// Reads `rel` under this process's own directory (`/proc/self/rel`).
    pub fn read_self(&self, rel: &str) -> Result<String> {
        let dir = self.link("self")?;
        self.read(&dir.join(rel))
    }

    /// Writes `rel` under this process's own directory (`/proc/self/rel`).
    pub fn write_self(&self, rel: &str, data: &str) -> Result<()> {
        let dir = self.link("self")?;
        self.write(&dir.join(rel), data)
    }

    /// Writes `rel` under this thread's own directory
    /// (`/proc/thread-self/rel`); LSM attributes may only be written by the
    /// thread they describe.
    pub fn write_thread_self(&self, rel: &str, data: &str) -> Result<()> {
        let dir = self.link("thread-self")?;
        self.write(&dir.join(rel), data)
    }

    /// Whether `rel` exists on this procfs (looked up the same safe way).
    pub fn exists(&self, rel: &Path) -> bool {
        self.open_file(rel, OFlag::O_PATH).is_ok()
    }

    /// Whether `/proc/thread-self/rel` exists.
    pub fn thread_self_has(&self, rel: &str) -> bool {
        self.link("thread-self")
            .is_ok_and(|dir| self.exists(&dir.join(rel)))
    }

    /// The target of procfs's own `self` / `thread-self` link: a numeric
    /// path in the pid namespace of this procfs instance.
    fn link(&self, name: &str) -> Result<PathBuf> {
        let target = readlinkat(Some(self.root.as_raw_fd()), name)
            .map_err(|e| anyhow!("readlink /proc/{name} on a verified procfs: {}", e.desc()))?;
        let target = PathBuf::from(target);
        // procfs answers "<pid>" or "<pid>/task/<tid>"; anything else means
        // we are not in this instance's pid namespace.
        let numeric = target.components().all(|c| match c {
            std::path::Component::Normal(s) => s
                .to_str()
                .is_some_and(|s| s == "task" || s.bytes().all(|b| b.is_ascii_digit())),
            _ => false,
        });
        if !numeric || target.as_os_str().is_empty() {
            bail!("/proc/{name} on a verified procfs points at {target:?}, not at a pid");
        }
        Ok(target)
    }
}

/// fsopen("proc") + fsmount: a procfs of our own pid namespace that is
/// mounted nowhere.
fn private_instance() -> nix::Result<OwnedFd> {
    crate::rootfs::fdmount::new_fs(
        c"proc",
        libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
    )
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| anyhow!("open {}: {}", p.display(), e.desc()))?;
    // SAFETY: fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The handle must be the root directory of a procfs, not a directory of
/// some other filesystem dressed up as /proc nor a subdirectory of procfs.
fn verify_root(fd: &OwnedFd) -> Result<()> {
    ensure_procfs(fd).context("/proc")?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| anyhow!("stat /proc: {}", e.desc()))?;
    if st.st_ino != PROC_ROOT_INO {
        bail!(
            "/proc is not the root of a procfs (inode {}): refusing to write through it",
            st.st_ino
        );
    }
    Ok(())
}

fn ensure_procfs<Fd: AsFd>(fd: Fd) -> Result<()> {
    let st = fstatfs(fd).map_err(|e| anyhow!("statfs: {}", e.desc()))?;
    if st.filesystem_type() != PROC_SUPER_MAGIC {
        bail!(
            "not on procfs (filesystem type {:#x}): refusing to write through it",
            st.filesystem_type().0
        );
    }
    Ok(())
}

/// openat2 answers EAGAIN when a concurrent rename raced the lookup.
fn retry_eagain<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_link_is_numeric_and_files_are_reachable() {
        let p = ProcFs::open().unwrap();
        let me = p.link("self").unwrap();
        assert!(me.to_str().unwrap().bytes().all(|b| b.is_ascii_digit()));
        let r = p.open_file(&me.join("oom_score_adj"), OFlag::O_PATH);
        assert!(r.is_ok(), "{:?}", r.err());
        assert!(p.exists(Path::new("sys/kernel/ostype")));
    }

    #[test]
    fn symlinks_on_the_way_are_refused() {
        let p = ProcFs::open().unwrap();
        // "self" is a symlink: it must not be followed implicitly.
        let err = p.open_file(Path::new("self/oom_score_adj"), OFlag::O_RDONLY);
        assert!(err.is_err());
        assert!(p
            .open_file(Path::new("../etc/hostname"), OFlag::O_RDONLY)
            .is_err());
    }

    #[test]
    fn a_plain_directory_is_not_accepted_as_procfs() {
        let fd = open_dir(Path::new("/tmp")).unwrap();
        assert!(verify_root(&fd).is_err());
        let sub = open_dir(Path::new("/proc/sys")).unwrap();
        assert!(verify_root(&sub).is_err());
    }

    #[test]
    fn reads_match_the_path_view() {
        let p = ProcFs::open().unwrap();
        assert_eq!(
            p.read_self("oom_score_adj").unwrap(),
            std::fs::read_to_string("/proc/self/oom_score_adj").unwrap()
        );
    }

    #[test]
    fn writing_own_oom_score_adj_keeps_the_value() {
        let p = ProcFs::open().unwrap();
        let me = p.link("self").unwrap();
        let cur = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        p.write_self("oom_score_adj", cur.trim()).unwrap();
        assert!(me.to_str().is_some());
    }
}
