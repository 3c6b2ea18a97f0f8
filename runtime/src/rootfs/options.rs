//! Parsing of OCI mount options into mount(2) flags, propagation changes and
//! filesystem data, with the same option vocabulary as runc.

use nix::mount::MsFlags;

/// Parsed form of a mount's `options` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags for the mount(2) call that creates the mount.
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount exists.
    pub propagation: Vec<MsFlags>,
    /// Options the kernel flags do not know: passed to the filesystem.
    pub data: Vec<String>,
    /// runc extension: copy the target's previous contents into the tmpfs.
    pub tmpcopyup: bool,
    /// Recursive options (`rro`, `rnosuid`, ...): mount_setattr(2) attributes
    /// to set and clear on the whole mount tree at the target.
    pub rec_set: u64,
    pub rec_clr: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            tmpcopyup: false,
            rec_set: 0,
            rec_clr: 0,
        }
    }
}

impl MountOptions {
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }

    pub fn has_data_key(&self, key: &str) -> bool {
        self.data
            .iter()
            .any(|d| d.split_once('=').map_or(d.as_str(), |(k, _)| k) == key)
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn has_recursive_attrs(&self) -> bool {
        self.rec_set != 0 || self.rec_clr != 0
    }
}

/// Flags that `MS_REMOUNT|MS_BIND` can change on a bind mount. Anything else
/// set on a bind mount is ignored by the kernel, so a second call is needed.
pub(crate) fn remount_flags(flags: MsFlags) -> MsFlags {
    flags
        & !(MsFlags::MS_BIND
            | MsFlags::MS_REC
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_SILENT
            | MsFlags::MS_DIRSYNC)
}

/// `(set, clear)` for each flag option; `clear` options undo an earlier set.
fn flag_option(opt: &str) -> Option<(MsFlags, MsFlags)> {
    let e = MsFlags::empty();
    Some(match opt {
        "defaults" => (e, e),
        "ro" => (MsFlags::MS_RDONLY, e),
        "rw" => (e, MsFlags::MS_RDONLY),
        "suid" => (e, MsFlags::MS_NOSUID),
        "nosuid" => (MsFlags::MS_NOSUID, e),
        "dev" => (e, MsFlags::MS_NODEV),
        "nodev" => (MsFlags::MS_NODEV, e),
        "exec" => (e, MsFlags::MS_NOEXEC),
        "noexec" => (MsFlags::MS_NOEXEC, e),
        "sync" => (MsFlags::MS_SYNCHRONOUS, e),
        "async" => (e, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (MsFlags::MS_DIRSYNC, e),
        "remount" => (MsFlags::MS_REMOUNT, e),
        "mand" => (MsFlags::MS_MANDLOCK, e),
        "nomand" => (e, MsFlags::MS_MANDLOCK),
        "atime" => (e, MsFlags::MS_NOATIME),
        "noatime" => (MsFlags::MS_NOATIME, e),
        "diratime" => (e, MsFlags::MS_NODIRATIME),
        "nodiratime" => (MsFlags::MS_NODIRATIME, e),
        "relatime" => (MsFlags::MS_RELATIME, e),
        "norelatime" => (e, MsFlags::MS_RELATIME),
        "strictatime" => (MsFlags::MS_STRICTATIME, e),
        "nostrictatime" => (e, MsFlags::MS_STRICTATIME),
        "bind" => (MsFlags::MS_BIND, e),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, e),
        "silent" => (MsFlags::MS_SILENT, e),
        "loud" => (e, MsFlags::MS_SILENT),
        "iversion" => (MsFlags::MS_I_VERSION, e),
        "noiversion" => (e, MsFlags::MS_I_VERSION),
        "lazytime" => (MsFlags::MS_LAZYTIME, e),
        "nolazytime" => (e, MsFlags::MS_LAZYTIME),
        "acl" => (MsFlags::MS_POSIXACL, e),
        "noacl" => (e, MsFlags::MS_POSIXACL),
        "nosymfollow" => (MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW), e),
        "symfollow" => (e, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        _ => return None,
    })
}

fn propagation_option(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// `(set, clear)` mount_setattr(2) attributes of a recursive option. The
/// kernel only accepts atime changes that clear the whole atime field.
fn recursive_option(opt: &str) -> Option<(u64, u64)> {
    const ATIME: u64 = libc::MOUNT_ATTR__ATIME;
    Some(match opt {
        "rro" => (libc::MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, libc::MOUNT_ATTR_RDONLY),
        "rnosuid" => (libc::MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, libc::MOUNT_ATTR_NOSUID),
        "rnodev" => (libc::MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, libc::MOUNT_ATTR_NODEV),
        "rnoexec" => (libc::MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, libc::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (libc::MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, libc::MOUNT_ATTR_NODIRATIME),
        "rrelatime" | "ratime" | "rnostrictatime" => (libc::MOUNT_ATTR_RELATIME, ATIME),
        "rnoatime" => (libc::MOUNT_ATTR_NOATIME, ATIME),
        "rstrictatime" | "rnorelatime" => (libc::MOUNT_ATTR_STRICTATIME, ATIME),
        "rnosymfollow" => (libc::MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, libc::MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Parses a propagation mode name (as in `linux.rootfsPropagation`).
pub(crate) fn parse_propagation(mode: &str) -> Option<MsFlags> {
    propagation_option(mode)
}

/// Parses an OCI `options` list. Unknown options are filesystem data
/// (`size=65536k`, `mode=755`, `newinstance`, ...), as in runc.
pub(crate) fn parse(options: &[String]) -> MountOptions {
    let mut out = MountOptions::default();
    for opt in options {
        if let Some((set, clear)) = flag_option(opt) {
            out.flags.remove(clear);
            out.flags.insert(set);
        } else if let Some(p) = propagation_option(opt) {
            out.propagation.push(p);
        } else if let Some((set, clear)) = recursive_option(opt) {
            if clear & libc::MOUNT_ATTR__ATIME != 0 {
                out.rec_set &= !libc::MOUNT_ATTR__ATIME;
            }
            out.rec_set = (out.rec_set & !clear) | set;
            out.rec_clr = (out.rec_clr & !set) | clear;
        } else if opt == "tmpcopyup" {
            out.tmpcopyup = true;
        } else if !opt.is_empty() {
            out.data.push(opt.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = parse(&opts(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "rslave",
            "ro",
            "tmpcopyup",
        ]));
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data_string(), "newinstance,ptmxmode=0666");
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert!(o.tmpcopyup);
        assert!(o.has_data_key("ptmxmode"));
        assert!(!o.has_data_key("mode"));
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = parse(&opts(&[
            "ro", "rw", "nosuid", "suid", "rbind", "noatime", "atime",
        ]));
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(o.is_bind());
        assert_eq!(remount_flags(o.flags), MsFlags::empty());
    }

    #[test]
    fn recursive_options_become_mount_attrs() {
        let o = parse(&opts(&[
            "rbind", "rro", "rnosuid", "rnoatime", "rrw", "rsuid",
        ]));
        assert!(o.has_recursive_attrs());
        assert_eq!(o.rec_set, libc::MOUNT_ATTR_NOATIME);
        assert_eq!(
            o.rec_clr,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR__ATIME
        );
        assert!(o.data.is_empty());
        let o = parse(&opts(&["rro"]));
        assert_eq!((o.rec_set, o.rec_clr), (libc::MOUNT_ATTR_RDONLY, 0));
    }

    #[test]
    fn remount_keeps_only_changeable_flags() {
        let o = parse(&opts(&["bind", "ro", "nosuid", "nodev"]));
        assert_eq!(
            remount_flags(o.flags),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        );
    }
}
