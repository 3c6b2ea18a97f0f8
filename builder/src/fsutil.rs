//! Small filesystem helpers: atomic file replacement and recursive removal;
//! [`safe`] holds the fd-based, in-root operations used on untrusted trees.
pub mod safe;

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` atomically: a temp file in the same directory is
/// written, fsynced and renamed over `path`, then the directory is fsynced, so a
/// crash leaves either the old or the new content, never a torn file.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("atomic_write: path has no parent")?;
    let name = path
        .file_name()
        .context("atomic_write: path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// Replaces `path` atomically (temp file + rename) without fsync: for data
/// that is only an optimisation (cache entries, notes), where losing the last
/// write on power failure is fine but a torn file is not.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("replace_file: path has no parent")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

/// Removes `path` whatever it is (file, symlink, directory tree); missing is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
    }
}

/// Total size in bytes of regular files below `path` (not following symlinks).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(rd) = fs::read_dir(path) else { return 0 };
    rd.flatten().map(|e| disk_usage(&e.path())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

/// Resolves `path` (interpreted inside `root`, absolute or relative to it)
/// following symlinks as if `root` were `/`: `..` and absolute link targets
/// can never leave `root`. Components that don't exist are appended as they are.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<std::path::PathBuf> {
    use std::path::Component;
    let mut hops = 0;
    let mut resolved = std::path::PathBuf::new(); // relative to root, no symlinks
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&comp);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    anyhow::bail!("too many levels of symbolic links resolving {path}");
                }
                let target = fs::read_link(&candidate)
                    .with_context(|| format!("reading link {}", candidate.display()))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(&comp),
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../..", r.join("up")).unwrap();
        assert_eq!(resolve_in_root(r, "/lib/x").unwrap(), r.join("usr/lib/x"));
        assert_eq!(
            resolve_in_root(r, "abs/passwd").unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "/up/tmp").unwrap(), r.join("tmp"));
        assert_eq!(resolve_in_root(r, "../../x").unwrap(), r.join("x"));
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "/loop").is_err());
    }
}
