//! COPY/ADD file operations: selecting sources inside a root (context or
//! another stage), hashing them for the cache, and copying them into a rootfs.
use super::glob::{component_match, Filter};
use crate::fsutil::{remove_any, resolve_in_root, safe};
use anyhow::{bail, Context, Result};
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::{utimensat, FileStat, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One selected source: a host path inside the source root and the name it
/// gets at the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The source root `path` was resolved in (empty for data sources).
    pub root: PathBuf,
    pub path: PathBuf,
    /// Path relative to the source root (for messages and excludes).
    pub rel: String,
    pub name: String,
    pub is_dir: bool,
}

/// Resolves the COPY source `pattern` inside `root`. Top-level symlinks are
/// followed (within `root`), wildcards expanded. A missing plain path is an
/// error; a pattern with wildcards may match nothing (BuildKit allows empty
/// wildcards: `COPY nomatch* /dst/` copies nothing and succeeds).
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
            root: root.to_path_buf(),
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
            if has_wildcard(c) {
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
            } else if !c.contains('\\') {
                next.push(join_rel(base, c));
            }
            // A literal name with a backslash: BuildKit sends the context
            // through patterns where `\` escapes (`a\b` matches `ab`) but
            // then looks the literal `a\b` up, which was never sent, so the
            // source is "not found" whatever the escape directive.
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
            root: root.to_path_buf(),
            path,
            rel,
            name,
            is_dir: meta.is_dir(),
        });
    }
    if out.is_empty() && !comps.iter().any(|c| has_wildcard(c)) {
        bail!(
            "failed to compute cache key: \"/{}\": not found",
            comps.join("/")
        );
    }
    Ok(out)
}

/// True when `pattern` has a wildcard that is not escaped by a backslash
/// (fsutil's containsWildcards: `a\*b` is the literal name `a\*b`).
pub fn has_wildcard(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
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
    let src = Src::open_selected(sel)?;
    hash_entry(&src, &sel.rel, excludes, files)
}

/// A source entry held by an `O_PATH` fd that never followed a symlink,
/// with the stat of that very inode. The walk over a source tree goes from
/// fd to child fd: a directory or file swapped for a symlink while the
/// build reads it (the context belongs to whoever runs the build) is copied
/// as that symlink or refused, never followed to a host file.
struct Src {
    fd: OwnedFd,
    st: FileStat,
}

impl Src {
    /// The top-level source: `sel.path` was resolved inside `sel.root`
    /// (symlinks followed there), so it must now be free of symlinks.
    fn open_selected(sel: &Selected) -> Result<Src> {
        let root = safe::open_root(&sel.root)?;
        let rel = sel
            .path
            .strip_prefix(&sel.root)
            .with_context(|| format!("{} is outside its source", sel.path.display()))?;
        let fd = safe::open_in_root(
            root.as_fd(),
            rel,
            OFlag::O_PATH,
            ResolveFlag::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| safe::walk_error(rel, e))
        .with_context(|| format!("source {:?} changed while it was read", sel.rel))?;
        Self::from_fd(fd)
    }

    fn from_fd(fd: OwnedFd) -> Result<Src> {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat of a source")?;
        Ok(Src { fd, st })
    }

    fn child(&self, name: &OsStr) -> Result<Src> {
        let fd = safe::open_entry(self.fd.as_fd(), name)
            .with_context(|| format!("opening {}", Path::new(name).display()))?;
        Self::from_fd(fd)
    }

    fn kind(&self) -> SFlag {
        safe::kind(&self.st)
    }

    fn names(&self) -> Result<Vec<OsString>> {
        let mut names = safe::list_dir(self.fd.as_fd())?;
        names.sort();
        Ok(names)
    }

    /// A reader of this regular file (the inode that was opened).
    fn reader(&self) -> Result<File> {
        if self.kind() != SFlag::S_IFREG {
            bail!("not a regular file");
        }
        File::open(safe::fd_path(self.fd.as_fd())).context("reopening a source file")
    }

    fn link_target(&self) -> Result<PathBuf> {
        nix::fcntl::readlinkat(Some(self.fd.as_raw_fd()), "")
            .map(PathBuf::from)
            .context("reading a symlink")
    }

    /// The kept capability xattr of a file or directory (read through the
    /// fd's magic link, which names the inode itself).
    fn cap_xattr(&self) -> Option<Vec<u8>> {
        if !matches!(self.kind(), SFlag::S_IFREG | SFlag::S_IFDIR) {
            return None;
        }
        xattr::get(
            safe::fd_path(self.fd.as_fd()),
            crate::layer::tarw::KEPT_XATTR,
        )
        .ok()
        .flatten()
    }
}

fn hash_entry(
    src: &Src,
    rel: &str,
    excludes: &Filter,
    files: &mut Vec<(String, String)>,
) -> Result<String> {
    let mut h = Sha256::new();
    let st = &src.st;
    h.update(format!("{:o}:{}:{}:", st.st_mode, st.st_uid, st.st_gid));
    if let Some(cap) = src.cap_xattr() {
        h.update(b"cap:");
        h.update(&cap);
    }
    match src.kind() {
        SFlag::S_IFDIR => {
            h.update(b"dir\0");
            for n in src.names().with_context(|| format!("reading {rel}"))? {
                let child_rel = join_rel(rel, &n.to_string_lossy());
                if excludes.skip(&child_rel) {
                    continue;
                }
                let child = src.child(&n)?;
                let ch = hash_entry(&child, &child_rel, excludes, files)?;
                h.update((n.len() as u64).to_le_bytes());
                h.update(n.as_encoded_bytes());
                h.update(ch.as_bytes());
            }
        }
        SFlag::S_IFLNK => {
            h.update(b"symlink\0");
            h.update(src.link_target()?.as_os_str().as_encoded_bytes());
        }
        SFlag::S_IFREG => {
            h.update(format!("file:{}\0", st.st_size));
            let mut f = src.reader().with_context(|| format!("opening {rel}"))?;
            std::io::copy(&mut f, &mut h).with_context(|| format!("reading {rel}"))?;
        }
        _ => {
            h.update(format!(
                "special:{:o}:{}",
                st.st_mode & libc::S_IFMT,
                st.st_rdev
            ));
        }
    }
    let out = hex::encode(h.finalize());
    if src.kind() != SFlag::S_IFDIR {
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

/// Opens the selected regular file for reading, as [`copy_tree`] reaches it
/// (reopened in its root without following a symlink).
pub fn open_selected_file(sel: &Selected) -> Result<File> {
    Src::open_selected(sel)?
        .reader()
        .with_context(|| format!("opening {}", sel.rel))
}

/// Copies `src` (file, symlink or directory tree) to `dst`, which has been
/// resolved inside `rootfs`. Directories merge into existing ones.
///
/// A directory source's *contents* are copied, as BuildKit does: the
/// destination directory itself is created 0755 (owned by `--chown`, else
/// root) when missing and left exactly as it is when it exists — neither
/// the source directory's metadata nor `--chmod` applies to it. Files that
/// are hard links of each other in the source stay hard links.
pub fn copy_tree(rootfs: &Path, sel: &Selected, dst: &Path, opts: &CopyOptions) -> Result<u64> {
    // The top-level source was already resolved: copy what it points to.
    let src = Src::open_selected(sel)?;
    make_parents(rootfs, dst, opts.owner)?;
    let mut links = Links::new();
    if src.kind() == SFlag::S_IFDIR {
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            existing => {
                if existing.is_ok() {
                    remove_any(dst)?;
                }
                create_dir_owned(dst, opts.owner)?;
            }
        }
        return Ok(1 + copy_children(rootfs, &src, &sel.rel, dst, opts, &mut links)?);
    }
    copy_entry(rootfs, &src, &sel.rel, dst, opts, &mut links)
}

/// First destination of each multiply-linked source inode (dev, ino).
type Links = std::collections::HashMap<(u64, u64), PathBuf>;

/// A new 0755 directory (whatever the umask), owned by `owner` or root.
fn create_dir_owned(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))?;
    let (u, g) = owner.unwrap_or((0, 0));
    lchown(path, Some(u), Some(g)).with_context(|| format!("chown {}", path.display()))
}

fn copy_children(
    rootfs: &Path,
    src: &Src,
    rel: &str,
    dst: &Path,
    opts: &CopyOptions,
    links: &mut Links,
) -> Result<u64> {
    let mut count = 0;
    for n in src.names().with_context(|| format!("reading {rel}"))? {
        let child_rel = join_rel(rel, &n.to_string_lossy());
        if opts.filter.skip(&child_rel) {
            continue;
        }
        let child = src.child(&n)?;
        // Re-resolve inside the rootfs: an existing entry may be a symlink.
        let target = dst.join(&n);
        let target = match fs::symlink_metadata(&target) {
            Ok(tm) if tm.file_type().is_symlink() && child.kind() == SFlag::S_IFDIR => {
                let rel_t = target.strip_prefix(rootfs).context("outside rootfs")?;
                resolve_in_root(rootfs, &rel_t.to_string_lossy())?
            }
            _ => target,
        };
        count += copy_entry(rootfs, &child, &child_rel, &target, opts, links)?;
    }
    Ok(count)
}

fn copy_entry(
    rootfs: &Path,
    src: &Src,
    rel: &str,
    dst: &Path,
    opts: &CopyOptions,
    links: &mut Links,
) -> Result<u64> {
    let st = &src.st;
    let kind = src.kind();
    let existing = fs::symlink_metadata(dst).ok();
    let mut count = 1;
    if kind == SFlag::S_IFDIR {
        match &existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                remove_any(dst)?;
                fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
            }
            None => fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?,
        }
        count += copy_children(rootfs, src, rel, dst, opts, links)?;
    } else {
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!("cannot replace directory {} with a file", dst.display());
            }
            remove_any(dst)?;
        }
        match kind {
            SFlag::S_IFLNK => {
                let t = src.link_target()?;
                symlink(&t, dst).with_context(|| format!("symlink {}", dst.display()))?;
            }
            SFlag::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&key) {
                        // Another name of a file already copied: link it, so
                        // the layer records a tar hard link as BuildKit's.
                        fs::hard_link(first, dst)
                            .with_context(|| format!("linking {}", dst.display()))?;
                        return Ok(count);
                    }
                    links.insert(key, dst.to_path_buf());
                }
                let mut from = src.reader().with_context(|| format!("opening {rel}"))?;
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
                let (uid, gid) = opts.owner.unwrap_or((st.st_uid, st.st_gid));
                std::os::unix::fs::fchown(&to, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dst.display()))?;
                let mode = opts.chmod.unwrap_or(st.st_mode & 0o7777);
                to.set_permissions(fs::Permissions::from_mode(mode))
                    .with_context(|| format!("chmod {}", dst.display()))?;
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
                to.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
                    .with_context(|| format!("setting mtime of {}", dst.display()))?;
                return Ok(count);
            }
            SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK => {
                nix::sys::stat::mknod(dst, kind, nix::sys::stat::Mode::empty(), st.st_rdev)
                    .with_context(|| format!("mknod {}", dst.display()))?;
            }
            _ => return Ok(0), // sockets are skipped
        }
    }
    let (uid, gid) = opts.owner.unwrap_or((st.st_uid, st.st_gid));
    lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
    if kind != SFlag::S_IFLNK {
        let mode = opts.chmod.unwrap_or(st.st_mode & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    let t = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
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
    use std::os::unix::fs::MetadataExt;

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
        let err = select(d.path(), "nope/x.c").unwrap_err();
        assert!(format!("{err}").contains("not found"));
        // A backslash escapes, as in BuildKit: `src\\*.c` is no wildcard
        // (and a literal name with a backslash is never found), while in a
        // wildcard pattern `\\m` matches `m`.
        assert!(!has_wildcard("a\\*b") && has_wildcard("a\\*b*") && has_wildcard("[ab]"));
        fs::write(d.path().join("src/a\\b"), b"x").unwrap();
        assert!(select(d.path(), "src/a\\b").is_err());
        assert!(select(d.path(), "src\\*.c").is_err());
        let s = select(d.path(), "src/\\main*").unwrap();
        assert_eq!(
            s.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(),
            vec!["src/main.c"]
        );
        // A wildcard may match nothing (BuildKit's AllowEmptyWildcard).
        assert!(select(d.path(), "nope/*.c").unwrap().is_empty());
        assert!(select(d.path(), "src/*.rs").unwrap().is_empty());
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

    /// What Docker 20.10's BuildKit does with `COPY --chmod=0600 dir /dst/`
    /// (existing /dst 0700 stays 0700, entries get 0600) and
    /// `COPY --chown=1000:1000 dir /own/a/` (/own, /own/a created 0755
    /// 1000:1000): the destination directory is not the source directory.
    #[test]
    fn directory_source_copies_contents_not_the_directory() {
        let d = ctx();
        fs::set_permissions(d.path().join("src"), fs::Permissions::from_mode(0o700)).unwrap();
        let root = tempfile::tempdir().unwrap();
        let sel = select(d.path(), "src").unwrap().remove(0);
        fs::create_dir(root.path().join("dst")).unwrap();
        fs::set_permissions(root.path().join("dst"), fs::Permissions::from_mode(0o700)).unwrap();
        let opts = CopyOptions {
            chmod: Some(0o600),
            ..Default::default()
        };
        copy_tree(root.path(), &sel, &root.path().join("dst"), &opts).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.path().join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("dst"), 0o700);
        assert_eq!(mode("dst/main.c"), 0o600);
        assert_eq!(mode("dst/sub"), 0o600);
        // A new destination is 0755 whatever the source dir's mode or --chmod.
        copy_tree(root.path(), &sel, &root.path().join("new"), &opts).unwrap();
        assert_eq!(mode("new"), 0o755);
        let opts = CopyOptions {
            owner: Some((1000, 1000)),
            ..Default::default()
        };
        copy_tree(root.path(), &sel, &root.path().join("own/a"), &opts).unwrap();
        for p in ["own", "own/a", "own/a/main.c"] {
            let m = fs::symlink_metadata(root.path().join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
        }
        assert_eq!(mode("own/a"), 0o755);
    }

    #[test]
    fn hard_links_stay_hard_links() {
        let d = ctx();
        fs::hard_link(
            d.path().join("src/main.c"),
            d.path().join("src/sub/again.c"),
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let sel = select(d.path(), "src").unwrap().remove(0);
        copy_tree(
            root.path(),
            &sel,
            &root.path().join("app"),
            &CopyOptions::default(),
        )
        .unwrap();
        let a = fs::metadata(root.path().join("app/main.c")).unwrap();
        let b = fs::metadata(root.path().join("app/sub/again.c")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        // Files that are not links of each other stay separate.
        let c = fs::metadata(root.path().join("app/util.c")).unwrap();
        assert_ne!(a.ino(), c.ino());
    }

    #[test]
    fn sources_swapped_for_symlinks_after_selection_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x.h"), b"host secret").unwrap();
        let d = ctx();
        let sel = select(d.path(), "src").unwrap().remove(0);
        // After selection, src/sub becomes a symlink to a host directory.
        fs::remove_dir_all(d.path().join("src/sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("src/sub")).unwrap();
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("app");
        copy_tree(root.path(), &sel, &dst, &CopyOptions::default()).unwrap();
        assert!(fs::symlink_metadata(dst.join("sub"))
            .unwrap()
            .file_type()
            .is_symlink());
        let mut files = Vec::new();
        hash_selected(&sel, &Filter::default(), &mut files).unwrap();
        assert!(!files.iter().any(|(p, _)| p == "src/sub/x.h"));
        // The selected directory itself swapped: refused.
        fs::rename(d.path().join("src"), d.path().join("src.real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("src")).unwrap();
        assert!(copy_tree(
            root.path(),
            &sel,
            &root.path().join("b"),
            &CopyOptions::default()
        )
        .is_err());
        assert!(hash_selected(&sel, &Filter::default(), &mut Vec::new()).is_err());
        assert!(!root.path().join("b/x.h").exists());
    }
}
