//! Discovery of cgroup hierarchies from /proc/self/mountinfo and of the
//! caller's own cgroup from /proc/self/cgroup.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where cgroups live on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupMode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// cgroup2 mounted on /sys/fs/cgroup.
    V2,
    /// v1 controllers plus a cgroup2 hierarchy (usually /sys/fs/cgroup/unified).
    Hybrid,
}

/// The standard location where the cgroup tree is mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A v1 hierarchy: its controllers (and `name=` option) and where it is mounted.
#[derive(Debug, Clone)]
pub(crate) struct V1Mount {
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// Path of the mount's root within the hierarchy (not "/" in a cgroup namespace or bind mount).
    pub root: String,
}

#[derive(Debug, Clone)]
pub(crate) struct V2Mount {
    pub mount_point: PathBuf,
    pub root: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Hierarchies {
    pub mode: CgroupMode,
    pub v1: Vec<V1Mount>,
    pub v2: Option<V2Mount>,
}

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

/// Undoes mountinfo's octal escaping of spaces, tabs, newlines and backslashes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 5 || post.len() < 3 {
        return None;
    }
    Some(MountEntry {
        root: unescape(pre[3]),
        mount_point: PathBuf::from(unescape(pre[4])),
        fstype: post[0].to_string(),
        super_opts: post[2].to_string(),
    })
}

/// Mount options of a v1 cgroup mount that are not controller names.
fn is_controller_opt(opt: &str) -> bool {
    !matches!(
        opt,
        "rw" | "ro"
            | "noprefix"
            | "clone_children"
            | "xattr"
            | "cpuset_v2_mode"
            | "none"
            | "nsdelegate"
            | "memory_recursiveprot"
            | "favordynmods"
            | "memory_localevents"
    ) && !opt.starts_with("release_agent=")
}

pub(crate) fn parse_mountinfo(content: &str) -> Hierarchies {
    let entries: Vec<MountEntry> = content.lines().filter_map(parse_line).collect();
    let root = Path::new(CGROUP_ROOT);
    // The last mount on /sys/fs/cgroup wins (it hides earlier ones): if it is
    // cgroup2 the host (or this mount namespace) is unified, and any v1
    // mounts underneath the old tmpfs are unreachable.
    let top = entries.iter().rev().find(|e| e.mount_point == root);
    if let Some(top) = top.filter(|t| t.fstype == "cgroup2") {
        return Hierarchies {
            mode: CgroupMode::V2,
            v1: Vec::new(),
            v2: Some(V2Mount {
                mount_point: top.mount_point.clone(),
                root: top.root.clone(),
            }),
        };
    }
    let mut v1: Vec<V1Mount> = Vec::new();
    let mut v2: Option<V2Mount> = None;
    // Prefer mounts under /sys/fs/cgroup over other (bind) mounts of the same hierarchy.
    let mut sorted: Vec<&MountEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| !e.mount_point.starts_with(root));
    for e in sorted {
        match e.fstype.as_str() {
            "cgroup" => {
                let controllers: Vec<String> = e
                    .super_opts
                    .split(',')
                    .filter(|o| is_controller_opt(o))
                    // Of the named (controller-less) hierarchies only systemd's is joined,
                    // as runc does.
                    .filter(|o| !o.starts_with("name=") || *o == "name=systemd")
                    .map(str::to_string)
                    .collect();
                let dup = controllers
                    .iter()
                    .any(|c| v1.iter().any(|m| m.controllers.contains(c)));
                if !controllers.is_empty() && !dup {
                    v1.push(V1Mount {
                        controllers,
                        mount_point: e.mount_point.clone(),
                        root: e.root.clone(),
                    });
                }
            }
            "cgroup2" if v2.is_none() => {
                v2 = Some(V2Mount {
                    mount_point: e.mount_point.clone(),
                    root: e.root.clone(),
                })
            }
            _ => {}
        }
    }
    let mode = if v1.is_empty() && v2.is_some() {
        CgroupMode::V2
    } else if v2.is_some() {
        CgroupMode::Hybrid
    } else {
        CgroupMode::V1
    };
    Hierarchies { mode, v1, v2 }
}

pub(crate) fn hierarchies() -> Result<Hierarchies> {
    let content =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let h = parse_mountinfo(&content);
    if h.v1.is_empty() && h.v2.is_none() {
        anyhow::bail!("no cgroup filesystem is mounted (see /proc/self/mountinfo)");
    }
    Ok(h)
}

/// Detects whether this mount namespace uses cgroup v1, v2 or a hybrid layout.
pub fn detect_mode() -> Result<CgroupMode> {
    Ok(hierarchies()?.mode)
}

/// The caller's own cgroups from /proc/self/cgroup: (controllers, path) per line;
/// the v2 entry has an empty controller list.
pub(crate) fn own_cgroups() -> Result<Vec<(Vec<String>, String)>> {
    let content = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    Ok(parse_proc_cgroup(&content))
}

pub(crate) fn parse_proc_cgroup(content: &str) -> Vec<(Vec<String>, String)> {
    content
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((ctrls, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout() {
        let h = parse_mountinfo(HYBRID);
        assert_eq!(h.mode, CgroupMode::Hybrid);
        assert_eq!(h.v1.len(), 3);
        assert_eq!(h.v1[2].controllers, vec!["name=systemd".to_string()]);
        assert_eq!(
            h.v2.map(|m| m.mount_point),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn cgroup2_overmount_is_v2() {
        let s = format!("{HYBRID}50 31 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let h = parse_mountinfo(&s);
        assert_eq!(h.mode, CgroupMode::V2);
        assert!(h.v1.is_empty());
        assert_eq!(
            h.v2.map(|m| m.mount_point),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn v1_only_and_combined_controllers() {
        let s = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = parse_mountinfo(s);
        assert_eq!(h.mode, CgroupMode::V1);
        assert_eq!(h.v1[0].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn escaped_mount_point() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn proc_cgroup() {
        let v = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(v[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(v[1].0, vec!["cpu", "cpuacct"]);
        assert_eq!(v[2], (vec![], "/x".to_string()));
    }
}
