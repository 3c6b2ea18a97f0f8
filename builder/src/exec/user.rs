//! Resolves `user[:group]` strings against a root filesystem's /etc/passwd and
//! /etc/group the way Docker does: names are looked up, numeric ids are taken
//! as they are, and a user without a group gets its passwd primary group (0
//! when the uid isn't listed).
use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// Largest /etc/passwd or /etc/group read (an image could plant a huge one).
const MAX_DB: u64 = 16 << 20;

/// An `/etc` database of the image, read inside its root: a symlink such as
/// `/etc/passwd -> /etc/shadow` resolves within the image, never on the host.
fn read_db(rootfs: &Path, rel: &str) -> String {
    crate::fsutil::safe::read_file_in_root(rootfs, Path::new(rel), MAX_DB)
        .ok()
        .flatten()
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default()
}

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    let data = read_db(rootfs, "etc/passwd");
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// (name, gid, members)
fn read_group(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    let data = read_db(rootfs, "etc/group");
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// Resolves `spec` (`""`, `uid`, `name`, `uid:gid`, `name:group`...) in `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_passwd(rootfs);
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(passwd.iter().find(|e| e.name == user).with_context(|| {
            format!("unable to find user {user}: no matching entries in passwd file")
        })?),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map(|e| e.uid).unwrap_or(0),
    };
    let groups = read_group(rootfs);
    let gid = match group {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|(n, _, _)| n == g) {
                Some((_, gid, _)) => *gid,
                None => bail!("unable to find group {g}: no matching entries in group file"),
            },
        },
        _ => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut additional_gids = Vec::new();
    if group.is_none() {
        if let Some(e) = entry {
            for (_, g, members) in &groups {
                if members.contains(&e.name) && *g != gid && !additional_gids.contains(g) {
                    additional_gids.push(*g);
                }
            }
        }
    }
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_ids_and_groups() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
        )
        .unwrap();
        let r = resolve_user(d.path(), "").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve_user(d.path(), "app").unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (1000, 1001, vec![10])
        );
        let r = resolve_user(d.path(), "app:wheel").unwrap();
        assert_eq!((r.uid, r.gid), (1000, 10));
        let r = resolve_user(d.path(), "4242:7").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 7, "/"));
        assert!(resolve_user(d.path(), "nobody").is_err());
        assert!(resolve_user(d.path(), "app:nogroup").is_err());
    }

    #[test]
    fn databases_are_read_inside_the_root() {
        // A host file the image's /etc/passwd points at must not be read.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(
            host.path().join("passwd"),
            "hostuser:x:4321:4321::/h:/bin/sh\n",
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve_user(d.path(), "hostuser").is_err());
        // A FIFO planted as /etc/group is not read (it would block).
        nix::unistd::mkfifo(&d.path().join("etc/group"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(resolve_user(d.path(), "0").unwrap().uid, 0);
    }
}
