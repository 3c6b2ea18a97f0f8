//! Mounting an overlay over any number of lower layers (up to overlayfs's
//! own limit of 500).
//!
//! `mount(2)` passes all options in one page: with the store's absolute
//! snapshot paths (~90 bytes each) that is ~40 layers, far below Docker's
//! 127. So, like containerd and Docker do in their own ways:
//!
//! * Linux 6.8+: the new mount API, `fsopen("overlay")` and one
//!   `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", dir)` per layer, which has
//!   no size limit, then `fsmount` + `move_mount` onto the target.
//! * Older kernels: `mount(2)` with each lower given as `/proc/self/fd/N`
//!   of an `O_PATH` descriptor opened just before (≤ 19 bytes a layer, so
//!   ~200 layers fit in the page), closed once the mount holds the layers.
use anyhow::{bail, Context, Result};
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// overlayfs refuses more lower layers than this (OVL_MAX_STACK).
pub const MAX_LOWERS: usize = 500;

/// Options of every build overlay. `volatile`: no syncs on umount; the
/// layer blob is what gets fsynced.
const STRING_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "off"),
];
const FLAG_OPTIONS: [&str; 1] = ["volatile"];

// linux/mount.h; libc has the syscall numbers but not (on every target)
// these constants.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// What to mount: `lowers` top layer first (overlay's order), never empty.
pub struct Overlay<'a> {
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
}

impl Overlay<'_> {
    /// Mounts the overlay on `target`.
    pub fn mount(&self, target: &Path) -> Result<()> {
        if self.lowers.is_empty() {
            bail!("an overlay needs at least one lower directory");
        }
        if self.lowers.len() > MAX_LOWERS {
            bail!(
                "{} layers: overlayfs stacks at most {MAX_LOWERS} lower layers",
                self.lowers.len()
            );
        }
        match self.mount_fsconfig(target) {
            Ok(()) => Ok(()),
            Err(NewApi::Unsupported) => self.mount_legacy(target),
            Err(NewApi::Failed(e)) => Err(e),
        }
    }

    /// The new mount API with `lowerdir+` (Linux 6.8+).
    fn mount_fsconfig(&self, target: &Path) -> Result<(), NewApi> {
        let name = cstr("overlay").map_err(NewApi::Failed)?;
        // SAFETY: fsopen takes a NUL-terminated string and flags; the
        // returned descriptor is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            // ENOSYS (old kernel) or EPERM (a seccomp filter): use mount(2).
            return Err(NewApi::Unsupported);
        }
        // SAFETY: fsopen returned a fresh descriptor nobody else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut first = true;
        for l in self.lowers {
            match set_string(&fs, "lowerdir+", l.as_os_str().as_bytes()) {
                Ok(()) => {}
                // Kernels before 6.8 do not know "lowerdir+".
                Err(e) if first && e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(NewApi::Unsupported)
                }
                Err(e) => {
                    return Err(NewApi::Failed(anyhow::anyhow!(
                        "overlay lowerdir+ {}: {e}{}",
                        l.display(),
                        fs_log(&fs)
                    )))
                }
            }
            first = false;
        }
        for (key, path) in [("upperdir", self.upper), ("workdir", self.work)] {
            set_string(&fs, key, path.as_os_str().as_bytes()).map_err(|e| {
                NewApi::Failed(anyhow::anyhow!(
                    "overlay {key} {}: {e}{}",
                    path.display(),
                    fs_log(&fs)
                ))
            })?;
        }
        for (key, value) in STRING_OPTIONS {
            set_string(&fs, key, value.as_bytes()).map_err(|e| {
                NewApi::Failed(anyhow::anyhow!("overlay {key}={value}: {e}{}", fs_log(&fs)))
            })?;
        }
        for key in FLAG_OPTIONS {
            fsconfig(&fs, FSCONFIG_SET_FLAG, Some(key), None).map_err(|e| {
                NewApi::Failed(anyhow::anyhow!("overlay {key}: {e}{}", fs_log(&fs)))
            })?;
        }
        fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None).map_err(|e| {
            NewApi::Failed(anyhow::anyhow!(
                "creating the overlay ({} lowers): {e}{}",
                self.lowers.len(),
                fs_log(&fs)
            ))
        })?;
        // SAFETY: fsmount on a configured fs context; the result is owned below.
        let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
        if m < 0 {
            return Err(NewApi::Failed(anyhow::anyhow!(
                "fsmount overlay: {}{}",
                std::io::Error::last_os_error(),
                fs_log(&fs)
            )));
        }
        // SAFETY: fsmount returned a fresh descriptor nobody else owns.
        let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
        let empty = cstr("").map_err(NewApi::Failed)?;
        let to = CString::new(target.as_os_str().as_bytes())
            .map_err(|e| NewApi::Failed(anyhow::anyhow!("{}: {e}", target.display())))?;
        // SAFETY: move_mount with valid descriptors and NUL-terminated paths.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(NewApi::Failed(anyhow::anyhow!(
                "moving the overlay onto {}: {}",
                target.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// mount(2) with each lower as `/proc/self/fd/N` of an O_PATH descriptor.
    fn mount_legacy(&self, target: &Path) -> Result<()> {
        let mut fds = Vec::with_capacity(self.lowers.len());
        for l in self.lowers {
            let fd = open(
                l,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening layer {}", l.display()))?;
            // SAFETY: open returned a fresh descriptor nobody else owns.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let lower: Vec<String> = fds
            .iter()
            .map(|f| format!("/proc/self/fd/{}", f.as_raw_fd()))
            .collect();
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        for (k, v) in STRING_OPTIONS {
            opts.push_str(&format!(",{k}={v}"));
        }
        for k in FLAG_OPTIONS {
            opts.push_str(&format!(",{k}"));
        }
        // The kernel copies one page of mount data.
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        if opts.len() >= page {
            bail!(
                "{} layers do not fit in overlay's mount options on this kernel ({} bytes, limit {}); Linux 6.8+ mounts any number up to {MAX_LOWERS}",
                self.lowers.len(),
                opts.len(),
                page - 1
            );
        }
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| format!("mount(2) of an overlay of {} layers", self.lowers.len()))?;
        // The mount holds the layers now; the descriptors can go.
        drop(fds);
        Ok(())
    }
}

enum NewApi {
    /// The kernel (or a seccomp filter) does not offer it: fall back.
    Unsupported,
    Failed(anyhow::Error),
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} has a NUL byte"))
}

fn set_string(fs: &OwnedFd, key: &str, value: &[u8]) -> std::io::Result<()> {
    let v = CString::new(value).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    fsconfig(fs, FSCONFIG_SET_STRING, Some(key), Some(&v))
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&str>,
    value: Option<&CString>,
) -> std::io::Result<()> {
    let key = key
        .map(|k| CString::new(k).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL)))
        .transpose()?;
    // SAFETY: fsconfig with a valid fs context descriptor and NUL-terminated
    // (or null) key and value that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            value.map_or(std::ptr::null(), |v| v.as_ptr()),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The messages the filesystem logged on its context (why a step failed).
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; the log holds at most a few.
    for _ in 0..8 {
        match nix::unistd::read(fs.as_raw_fd(), &mut buf) {
            Ok(n) if n > 0 => {
                out.push_str("; ");
                out.push_str(String::from_utf8_lossy(&buf[..n]).trim_end());
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 130 lowers (more than Docker's 127) stack, in order, through the
    /// preferred path and through the mount(2) fallback.
    #[test]
    fn mounts_more_layers_than_fit_in_a_page() {
        let d = tempfile::tempdir().unwrap();
        let long = d
            .path()
            .join("a-rather-long-directory-name-like-the-store-has".repeat(2));
        let mut lowers = Vec::new();
        for i in 0..130 {
            let l = long.join(format!("{i:064}"));
            std::fs::create_dir_all(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(l.join("top"), i.to_string()).unwrap();
            lowers.push(l);
        }
        lowers.reverse(); // top first
        for (n, legacy) in [(0, false), (1, true)] {
            let (upper, work, merged) = (
                d.path().join(format!("u{n}")),
                d.path().join(format!("w{n}")),
                d.path().join(format!("m{n}")),
            );
            for p in [&upper, &work, &merged] {
                std::fs::create_dir(p).unwrap();
            }
            let o = Overlay {
                lowers: &lowers,
                upper: &upper,
                work: &work,
            };
            let r = if legacy {
                o.mount_legacy(&merged)
            } else {
                o.mount(&merged)
            };
            r.unwrap();
            let top = std::fs::read_to_string(merged.join("top"));
            let first = std::fs::read_to_string(merged.join("f0"));
            let last = std::fs::read_to_string(merged.join("f129"));
            nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
            assert_eq!(top.unwrap(), "129", "the top layer wins");
            assert_eq!(first.unwrap(), "0");
            assert_eq!(last.unwrap(), "129");
        }
    }
}
