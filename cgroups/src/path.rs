//! Resolution of an OCI `linux.cgroupsPath` to per-hierarchy directories, following runc's
//! cgroupfs driver: absolute paths are relative to each hierarchy root, relative paths are
//! relative to the caller's own cgroup (on pure v2: to its parent, since the caller's own leaf
//! usually holds processes and so cannot delegate controllers), and an empty path means the
//! container id relative to the caller's cgroup (runc specconv leaves `Path` empty and sets
//! `Name` = id, which the fs drivers join as a relative path).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::mountinfo::{self, CgroupMode, Hierarchies};
use crate::Cgroup;

/// Lexically cleans a cgroup path like runc's `utils.CleanPath`: collapses `.`/`..`/`//`
/// and never lets a relative path climb above its starting point.
pub(crate) fn clean_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Joins a hierarchy-relative cgroup path (e.g. "/a/b") onto a mount whose root within the
/// hierarchy is `mount_root` (usually "/").
fn dir_in_mount(mount_point: &Path, mount_root: &str, cg_path: &str) -> PathBuf {
    let rel = if mount_root != "/" {
        cg_path
            .strip_prefix(mount_root)
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .unwrap_or(cg_path)
    } else {
        cg_path
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    }
}

fn join_cg(base: &str, inner: &str) -> String {
    clean_path(&format!("{base}/{inner}"))
}

fn parent_cg(p: &str) -> String {
    match p.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => parent.to_string(),
        _ => "/".to_string(),
    }
}

/// Detects runc's systemd form "slice:prefix:name".
fn is_systemd_form(p: &str) -> bool {
    !p.starts_with('/') && p.split(':').count() == 3
}

pub(crate) fn resolve(cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
    let raw = cgroups_path.unwrap_or("").trim();
    if is_systemd_form(raw) {
        bail!("cgroupsPath {raw:?}: systemd cgroup driver is not supported (use a plain path)");
    }
    let inner = if raw.is_empty() {
        if id.is_empty() {
            bail!("cannot derive a cgroup path: empty cgroupsPath and empty container id");
        }
        clean_path(id)
    } else {
        clean_path(raw)
    };
    if inner.is_empty() || inner == "/" {
        bail!("cgroupsPath {raw:?} resolves to a hierarchy root, refusing to manage it");
    }
    let h = mountinfo::hierarchies()?;
    let own = if inner.starts_with('/') {
        Vec::new()
    } else {
        mountinfo::own_cgroups()?
    };
    build(&h, &own, &inner)
}

pub(crate) fn build(h: &Hierarchies, own: &[(Vec<String>, String)], inner: &str) -> Result<Cgroup> {
    let absolute = inner.starts_with('/');
    let own_path = |ctrl: Option<&str>| -> String {
        own.iter()
            .find(|(ctrls, _)| match ctrl {
                Some(c) => ctrls.iter().any(|x| x == c),
                None => ctrls.is_empty(),
            })
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| "/".to_string())
    };
    let mut v1 = BTreeMap::new();
    for m in &h.v1 {
        for c in &m.controllers {
            let full = if absolute {
                inner.to_string()
            } else {
                join_cg(&own_path(Some(c)), inner)
            };
            v1.insert(c.clone(), dir_in_mount(&m.mount_point, &m.root, &full));
        }
    }
    let (unified, unified_mount) = match &h.v2 {
        Some(m) => {
            let full = if absolute {
                inner.to_string()
            } else if h.mode == CgroupMode::V2 {
                join_cg(&parent_cg(&own_path(None)), inner)
            } else {
                join_cg(&own_path(None), inner)
            };
            (
                Some(dir_in_mount(&m.mount_point, &m.root, &full)),
                Some(m.mount_point.clone()),
            )
        }
        None => (None, None),
    };
    let cg = Cgroup {
        mode: h.mode,
        path: inner.to_string(),
        v1,
        unified,
        unified_mount,
    };
    // A path that collapses onto a mount point would make us manage (and later rmdir) a root.
    for d in cg.dirs() {
        let is_root = h.v1.iter().any(|m| m.mount_point == d)
            || h.v2.as_ref().is_some_and(|m| m.mount_point == d);
        if is_root {
            bail!(
                "cgroup path {inner:?} resolves to the hierarchy root {}",
                d.display()
            );
        }
    }
    Ok(cg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse_mountinfo;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn clean() {
        assert_eq!(clean_path("/a/../b//c/."), "/b/c");
        assert_eq!(clean_path("../../x"), "x");
        assert_eq!(clean_path("/.."), "/");
    }

    #[test]
    fn systemd_form_rejected() {
        let e = resolve(Some("system.slice:runc:abc"), "abc").unwrap_err();
        assert!(format!("{e:#}").contains("systemd cgroup driver is not supported"));
    }

    #[test]
    fn absolute_and_relative() {
        let h = parse_mountinfo(HYBRID);
        let own = vec![
            (vec!["memory".to_string()], "/process_api/x".to_string()),
            (vec!["cpu".to_string()], "/".to_string()),
            (vec![], "/user".to_string()),
        ];
        let cg = build(&h, &own, "/a/b").unwrap();
        assert_eq!(cg.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory/a/b"));
        assert_eq!(
            cg.unified.clone().unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/a/b")
        );
        let cg = build(&h, &own, "c1").unwrap();
        assert_eq!(
            cg.v1["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/process_api/x/c1")
        );
        assert_eq!(cg.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu/c1"));
        // hybrid: relative to the caller's own unified cgroup, like runc's fs driver.
        assert_eq!(
            cg.unified.unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/user/c1")
        );
    }

    #[test]
    fn v2_relative_uses_parent_of_own() {
        let h = parse_mountinfo("50 31 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let own = vec![(vec![], "/user.slice/session-1.scope".to_string())];
        let cg = build(&h, &own, "c1").unwrap();
        assert_eq!(
            cg.unified.unwrap(),
            PathBuf::from("/sys/fs/cgroup/user.slice/c1")
        );
    }

    #[test]
    fn mount_root_is_stripped() {
        assert_eq!(
            dir_in_mount(Path::new("/sys/fs/cgroup/cpu"), "/docker/x", "/docker/x/c1"),
            PathBuf::from("/sys/fs/cgroup/cpu/c1")
        );
    }

    #[test]
    fn root_is_refused() {
        let h = parse_mountinfo(HYBRID);
        let own = vec![(vec!["cpu".to_string()], "/".to_string())];
        assert!(build(&h, &own, "/").is_err());
    }
}
