//! Minimal `/proc/self/mountinfo` parser (proc(5)): enough to find cgroup
//! hierarchies, the mount holding the rootfs, and to verify mounts in tests.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// Root of the mount within its filesystem (field 4).
    pub root: PathBuf,
    /// Mount point relative to the process root (field 5).
    pub mount_point: PathBuf,
    /// Per-mount options, e.g. `ro,nosuid,relatime` (field 6).
    pub mount_options: Vec<String>,
    /// Optional fields such as `shared:12` or `master:3`.
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options, e.g. `rw,size=65536k,mode=755`.
    pub super_options: Vec<String>,
}

impl MountInfo {
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }

    #[cfg(test)]
    pub fn has_mount_option(&self, opt: &str) -> bool {
        self.mount_options.iter().any(|o| o == opt)
    }

    pub fn has_super_option(&self, opt: &str) -> bool {
        self.super_options.iter().any(|o| o == opt)
    }
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_opts(s: &str) -> Vec<String> {
    s.split(',').map(str::to_string).collect()
}

pub(crate) fn parse_line(line: &str) -> Option<MountInfo> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 6 || post.len() < 3 {
        return None;
    }
    Some(MountInfo {
        root: PathBuf::from(unescape(pre[3])),
        mount_point: PathBuf::from(unescape(pre[4])),
        mount_options: split_opts(pre[5]),
        optional: pre[6..].iter().map(|s| s.to_string()).collect(),
        fstype: post[0].to_string(),
        source: unescape(post[1]),
        super_options: split_opts(post[2]),
    })
}

pub(crate) fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

pub(crate) fn read_self() -> Result<Vec<MountInfo>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse(&text))
}

/// The last-mounted (topmost) mount whose mount point is the longest prefix
/// of `path`: the mount that contains `path`.
pub(crate) fn containing<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best
                .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_optional_fields_and_escapes() {
        let l = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue";
        let m = parse_line(l).expect("valid line");
        assert_eq!(m.root, PathBuf::from("/mnt1"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt x"));
        assert!(m.has_mount_option("noatime"));
        assert!(m.is_shared());
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(m.has_super_option("errors=continue"));
    }

    #[test]
    fn containing_picks_longest_prefix() {
        let ms = parse(
            "1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / /sys rw - sysfs sysfs rw\n3 2 0:3 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n",
        );
        let m = containing(&ms, Path::new("/sys/fs/cgroup/cpu")).expect("found");
        assert_eq!(m.fstype, "tmpfs");
        let m = containing(&ms, Path::new("/sysx")).expect("found");
        assert_eq!(m.fstype, "ext4");
    }
}
