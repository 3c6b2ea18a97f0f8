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
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            tmpcopyup: false,
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
    fn remount_keeps_only_changeable_flags() {
        let o = parse(&opts(&["bind", "ro", "nosuid", "nodev"]));
        assert_eq!(
            remount_flags(o.flags),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        );
    }
}
