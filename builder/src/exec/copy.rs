//! COPY/ADD file operations: selecting sources inside a root (context or
//! another stage), hashing them for the cache, and copying them into a rootfs.
use super::glob::{component_match, has_meta, Filter};
use crate::fsutil::{remove_any, resolve_in_root};
use anyhow::{bail, Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use std::fs::{self, File, Metadata};
use std::os::unix::fs::{
    lchown, symlink, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};

/// One selected source: a host path inside the source root and the name it
/// gets at the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub path: PathBuf,
    /// Path relative to the source root (for messages and excludes).
    pub rel: String,
    pub name: String,
    pub is_dir: bool,
}

/// Resolves the COPY source `pattern` inside `root`. Top-level symlinks are
/// followed (within `root`), wildcards expanded; nothing matching is an error.
pub fn select(root: &Path, pattern: &str) -> Result<Vec<Selected>> {
    // Like BuildKit, `..` is clamped at the root of the source.
    let mut comps: Vec<&str> = Vec::new();
    for c in pattern.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Ok(vec![Selected {
            path: root.to_path_buf(),
            rel: String::new(),
            name: String::new(),
            is_dir: true,
        }]);
    }
    let mut candidates: Vec<String> = vec![String::new()];
    for c in &comps {
        let mut next = Vec::new();
        for base in &candidates {
            if has_meta(c) {
                let dir = resolve_in_root(root, base)?;
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    if component_match(c, &n) {
                        next.push(join_rel(base, &n));
                    }
                }
            } else {
                next.push(join_rel(base, c));
            }
        }
        candidates = next;
    }
    let mut out = Vec::new();
    for rel in candidates {
        let path = resolve_in_root(root, &rel)?;
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        out.push(Selected {
            path,
            rel,
            name,
            is_dir: meta.is_dir(),
        });
    }
    if out.is_empty() {
        bail!(
            "failed to compute cache key: \"/{}\": not found",
            comps.join("/")
        );
    }
    Ok(out)
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Content hash of a selected source for cache keys: for each file its mode,
/// uid, gid, size, type, link target, kept xattr and content — never mtime;
/// a directory covers its children's names and hashes. Returns also the
/// per-file hashes (relative path → hash) so a miss can name the changed file.
pub fn hash_selected(
    sel: &Selected,
    excludes: &Filter,
    files: &mut Vec<(String, String)>,
) -> Result<String> {
    let meta = fs::metadata(&sel.path).with_context(|| format!("stat {}", sel.path.display()))?;
    hash_entry(&sel.path, &sel.rel, &meta, excludes, files)
}

fn hash_entry(
    path: &Path,
    rel: &str,
    meta: &Metadata,
    excludes: &Filter,
    files: &mut Vec<(String, String)>,
) -> Result<String> {
    let mut h = Sha256::new();
    let ft = meta.file_type();
    h.update(format!("{:o}:{}:{}:", meta.mode(), meta.uid(), meta.gid()));
    if let Ok(Some(cap)) = xattr::get(path, crate::layer::tarw::KEPT_XATTR) {
        h.update(b"cap:");
        h.update(&cap);
    }
    if ft.is_dir() {
        h.update(b"dir\0");
        let mut names: Vec<_> = fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let child_rel = join_rel(rel, &n.to_string_lossy());
            if excludes.skip(&child_rel) {
                continue;
            }
            let child = path.join(&n);
            let m = fs::symlink_metadata(&child)?;
            let ch = hash_entry(&child, &child_rel, &m, excludes, files)?;
            h.update((n.len() as u64).to_le_bytes());
            h.update(n.as_encoded_bytes());
            h.update(ch.as_bytes());
        }
    } else if ft.is_symlink() {
        h.update(b"symlink\0");
        h.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        h.update(format!("file:{}\0", meta.len()));
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    } else {
        h.update(format!(
            "special:{:o}:{}",
            meta.mode() & libc::S_IFMT,
            meta.rdev()
        ));
    }
    let out = hex::encode(h.finalize());
    if !ft.is_dir() {
        files.push((rel.to_string(), out.clone()));
    }
    Ok(out)
}

/// Ownership and mode overrides of a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` resolved; `None` keeps the source owner.
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<u32>,
    pub filter: Filter,
}

/// Where a selected source lands: `dest` is absolute inside `rootfs`. When
/// `dest` ends with `/` (or is an existing directory, or several sources are
/// copied) files go inside it under their own name.
pub fn destination_for(
    rootfs: &Path,
    dest: &str,
    sel: &Selected,
    into_dir: bool,
) -> Result<PathBuf> {
    let resolved = resolve_in_root(rootfs, dest)?;
    if sel.is_dir {
        return Ok(resolved); // a directory's contents are copied into dest
    }
    let dest_is_dir =
        dest.ends_with('/') || into_dir || fs::metadata(&resolved).is_ok_and(|m| m.is_dir());
    Ok(if dest_is_dir {
        resolved.join(&sel.name)
    } else {
        resolved
    })
}

/// Creates the missing parents of `path` (inside `rootfs`) as root-owned 0755 dirs.
pub fn make_parents(rootfs: &Path, path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let rel = path
        .strip_prefix(rootfs)
        .context("destination outside the rootfs")?;
    let mut cur = rootfs.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "cannot copy to {}: {} is not a directory",
                    path.display(),
                    cur.display()
                ),
                Err(_) => {
                    fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))?;
                    if let Some((u, g)) = owner {
                        lchown(&cur, Some(u), Some(g))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Copies `src` (file, symlink or directory tree) to `dst`, which has been
/// resolved inside `rootfs`. Directories merge into existing ones.
pub fn copy_tree(rootfs: &Path, sel: &Selected, dst: &Path, opts: &CopyOptions) -> Result<u64> {
    // The top-level source was already resolved: copy what it points to.
    let meta = fs::metadata(&sel.path).with_context(|| format!("stat {}", sel.path.display()))?;
    make_parents(rootfs, dst, opts.owner)?;
    copy_entry(rootfs, &sel.path, &sel.rel, &meta, dst, opts)
}

fn copy_entry(
    rootfs: &Path,
    src: &Path,
    rel: &str,
    meta: &Metadata,
    dst: &Path,
    opts: &CopyOptions,
) -> Result<u64> {
    let ft = meta.file_type();
    let existing = fs::symlink_metadata(dst).ok();
    let mut count = 1;
    if ft.is_dir() {
        match &existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                remove_any(dst)?;
                fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
            }
            None => fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?,
        }
        let mut names: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let child_rel = join_rel(rel, &n.to_string_lossy());
            if opts.filter.skip(&child_rel) {
                continue;
            }
            let child = src.join(&n);
            let m = fs::symlink_metadata(&child)?;
            // Re-resolve inside the rootfs: an existing entry may be a symlink.
            let target = dst.join(&n);
            let target = match fs::symlink_metadata(&target) {
                Ok(tm) if tm.file_type().is_symlink() && m.is_dir() => {
                    let rel_t = target.strip_prefix(rootfs).context("outside rootfs")?;
                    resolve_in_root(rootfs, &rel_t.to_string_lossy())?
                }
                _ => target,
            };
            count += copy_entry(rootfs, &child, &child_rel, &m, &target, opts)?;
        }
    } else {
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!("cannot replace directory {} with a file", dst.display());
            }
            remove_any(dst)?;
        }
        if ft.is_symlink() {
            let t = fs::read_link(src)?;
            symlink(&t, dst).with_context(|| format!("symlink {}", dst.display()))?;
        } else if ft.is_file() {
            let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
            let mut to = File::options()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(dst)
                .with_context(|| format!("creating {}", dst.display()))?;
            std::io::copy(&mut from, &mut to)
                .with_context(|| format!("copying to {}", dst.display()))?;
            // Metadata through the open fd: no more path lookups per file.
            let (uid, gid) = opts.owner.unwrap_or((meta.uid(), meta.gid()));
            std::os::unix::fs::fchown(&to, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", dst.display()))?;
            let mode = opts.chmod.unwrap_or(meta.mode() & 0o7777);
            to.set_permissions(fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", dst.display()))?;
            let mtime = std::time::UNIX_EPOCH
                + std::time::Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
            to.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
                .with_context(|| format!("setting mtime of {}", dst.display()))?;
            return Ok(count);
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            nix::sys::stat::mknod(dst, kind, nix::sys::stat::Mode::empty(), meta.rdev())
                .with_context(|| format!("mknod {}", dst.display()))?;
        } else {
            return Ok(0); // sockets are skipped
        }
    }
    let (uid, gid) = opts.owner.unwrap_or((meta.uid(), meta.gid()));
    lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
    if !ft.is_symlink() {
        let mode = opts.chmod.unwrap_or(meta.mode() & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    let t = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, dst, &t, &t, UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting mtime of {}", dst.display()))?;
    Ok(count)
}

/// Writes a file with `data` at `dst` (heredoc sources, downloads).
pub fn write_file(
    rootfs: &Path,
    dst: &Path,
    data: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> Result<()> {
    make_parents(rootfs, dst, None)?;
    if let Ok(m) = fs::symlink_metadata(dst) {
        if m.is_dir() {
            bail!("cannot replace directory {} with a file", dst.display());
        }
        remove_any(dst)?;
    }
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    std::io::Write::write_all(&mut f, data)
        .with_context(|| format!("writing {}", dst.display()))?;
    std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1))?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::glob::Excludes;

    fn ctx() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/sub")).unwrap();
        fs::write(d.path().join("src/main.c"), b"int main;").unwrap();
        fs::write(d.path().join("src/util.c"), b"util").unwrap();
        fs::write(d.path().join("src/sub/x.h"), b"x").unwrap();
        fs::write(d.path().join("README"), b"r").unwrap();
        d
    }

    #[test]
    fn select_handles_wildcards_and_missing() {
        let d = ctx();
        let s = select(d.path(), "src/*.c").unwrap();
        assert_eq!(
            s.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(),
            vec!["src/main.c", "src/util.c"]
        );
        assert!(select(d.path(), "src").unwrap()[0].is_dir);
        let err = select(d.path(), "nope/*.c").unwrap_err();
        assert!(format!("{err}").contains("not found"));
        // ".." cannot leave the context.
        assert_eq!(
            select(d.path(), "../../README").unwrap()[0].path,
            d.path().join("README")
        );
    }

    #[test]
    fn hash_ignores_mtime_but_sees_content_and_mode() {
        let d = ctx();
        let sel = select(d.path(), "src").unwrap().remove(0);
        let ex = Filter::default();
        let h1 = hash_selected(&sel, &ex, &mut Vec::new()).unwrap();
        let t = TimeSpec::new(1, 0);
        utimensat(
            None,
            &d.path().join("src/main.c"),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        assert_eq!(h1, hash_selected(&sel, &ex, &mut Vec::new()).unwrap());
        fs::set_permissions(
            d.path().join("src/main.c"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let h2 = hash_selected(&sel, &ex, &mut Vec::new()).unwrap();
        assert_ne!(h1, h2);
        fs::write(d.path().join("src/sub/x.h"), b"y").unwrap();
        let mut files = Vec::new();
        assert_ne!(h2, hash_selected(&sel, &ex, &mut files).unwrap());
        assert!(files.iter().any(|(p, _)| p == "src/sub/x.h"));
        // Excluded files don't count.
        let ex = Filter {
            exclude: Excludes::new(&["sub"]),
            base: "src".into(),
            ..Default::default()
        };
        let h3 = hash_selected(&sel, &ex, &mut Vec::new()).unwrap();
        fs::write(d.path().join("src/sub/x.h"), b"z").unwrap();
        assert_eq!(h3, hash_selected(&sel, &ex, &mut Vec::new()).unwrap());
    }

    #[test]
    fn copy_dir_contents_with_owner_and_mode() {
        let d = ctx();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.path().join("lib")).unwrap();
        let sel = select(d.path(), "src").unwrap().remove(0);
        let filter = Filter {
            ignore: crate::dockerfile::IgnoreMatcher::new(["**/*.h"]).unwrap(),
            ..Default::default()
        };
        let opts = CopyOptions {
            owner: Some((7, 8)),
            chmod: Some(0o640),
            filter,
        };
        let dst = destination_for(root.path(), "/lib/app/", &sel, false).unwrap();
        assert_eq!(dst, root.path().join("usr/lib/app"));
        copy_tree(root.path(), &sel, &dst, &opts).unwrap();
        let m = fs::metadata(root.path().join("usr/lib/app/main.c")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o640));
        assert!(!root.path().join("usr/lib/app/sub/x.h").exists());
        // A single file to a non-directory destination is renamed.
        let f = select(d.path(), "README").unwrap().remove(0);
        let dst = destination_for(root.path(), "/etc/readme.txt", &f, false).unwrap();
        copy_tree(root.path(), &f, &dst, &CopyOptions::default()).unwrap();
        assert_eq!(fs::read(root.path().join("etc/readme.txt")).unwrap(), b"r");
    }
}
