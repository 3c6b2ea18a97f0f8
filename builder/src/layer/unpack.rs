//! Hostile-tar-safe layer unpacking.
//!
//! Entry names are reduced to plain relative components: absolute names and
//! `..` are refused, and so is any entry whose parent path goes through a
//! symlink (written by the same archive or already on disk), because that is
//! the way archives write outside their root. Hardlink targets obey the same
//! rules. Only the `security.capability` xattr is applied.
use super::diff::{OPAQUE_WHITEOUT, OPAQUE_XATTR, WHITEOUT_PREFIX};
use super::tarw::KEPT_XATTR;
use crate::fsutil::remove_any;
use anyhow::{bail, Context, Result};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{lchown, symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// How whiteouts are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// Keep the layer alone in overlayfs format: `.wh.x` becomes a 0/0 char
    /// device `x`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its dir.
    Overlay,
    /// Apply onto what is already in the root: whiteouts delete.
    Apply,
}

/// Statistics of one unpack.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UnpackStats {
    pub entries: u64,
}

/// Turns a tar entry name into safe relative components, or fails.
pub fn clean_name(raw: &[u8]) -> Result<PathBuf> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        bail!("refusing absolute path {s:?} in archive");
    }
    let mut out = PathBuf::new();
    for c in Path::new(s.as_ref()).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => bail!("refusing path {s:?} in archive: contains '..'"),
            Component::RootDir | Component::Prefix(_) => bail!("refusing absolute path {s:?}"),
        }
    }
    Ok(out)
}

/// Creates the parent directories of `rel` below `root`, refusing to go
/// through symlinks or non-directories. Returns the absolute parent path.
fn safe_parent(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => bail!(
                    "refusing archive entry {}: its parent {} is a symlink",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ),
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "archive entry {}: {} is not a directory",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&cur)
                        .with_context(|| format!("creating {}", cur.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("stat {}", cur.display())),
            }
        }
    }
    Ok(cur)
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: i64,
}

/// Unpacks the tar stream `r` into `root` (which must exist).
pub fn unpack(r: impl Read, root: &Path, mode: UnpackMode) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(r);
    let mut stats = UnpackStats::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    // Paths written by this archive: an opaque marker must not delete them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().context("reading archive")? {
        let mut entry = entry.context("reading archive entry")?;
        let rel = clean_name(&entry.path_bytes())?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        stats.entries += 1;
        let parent = safe_parent(root, &rel)?;
        let fname = rel
            .file_name()
            .context("entry without a name")?
            .to_string_lossy()
            .into_owned();
        if let Some(target) = fname.strip_prefix(WHITEOUT_PREFIX) {
            whiteout(root, &parent, &rel, target, mode, &written)?;
            continue;
        }
        let dest = parent.join(&fname);
        written.insert(rel.clone());
        let h = entry.header().clone();
        let perm = h.mode().context("entry mode")? & 0o7777;
        // Some archivers leave ids blank; that means root.
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let kind = h.entry_type();
        let existing = fs::symlink_metadata(&dest).ok();
        let keep_dir =
            kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            remove_any(&dest)?;
        }
        match kind {
            EntryType::Directory => {
                if !dest.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&dest)
                        .with_context(|| format!("creating {}", dest.display()))?;
                }
                lchown(&dest, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dest.display()))?;
                dirs.push(DirMeta {
                    path: dest.clone(),
                    mode: perm,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = File::options()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                std::io::copy(&mut entry, &mut f)
                    .with_context(|| format!("writing {}", dest.display()))?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dest.display()))?;
                // chmod after chown: chown clears setuid bits.
                f.set_permissions(fs::Permissions::from_mode(perm))
                    .with_context(|| format!("chmod {}", dest.display()))?;
                set_mtime(&dest, mtime)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .with_context(|| format!("symlink {} has no target", rel.display()))?;
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                symlink(&target, &dest).with_context(|| format!("symlink {}", dest.display()))?;
                lchown(&dest, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dest.display()))?;
                set_mtime(&dest, mtime)?;
            }
            EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .with_context(|| format!("hardlink {} has no target", rel.display()))?;
                let target_rel = clean_name(&raw)?;
                let target_parent = safe_parent(root, &target_rel)?;
                let target = target_parent.join(
                    target_rel
                        .file_name()
                        .context("hardlink target without a name")?,
                );
                let tm = fs::symlink_metadata(&target).with_context(|| {
                    format!(
                        "hardlink {} -> {}: target missing",
                        rel.display(),
                        target_rel.display()
                    )
                })?;
                if tm.is_dir() {
                    bail!("refusing hardlink {} to a directory", rel.display());
                }
                fs::hard_link(&target, &dest)
                    .with_context(|| format!("hardlink {}", dest.display()))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = u64::from(h.device_major().ok().flatten().unwrap_or(0));
                let minor = u64::from(h.device_minor().ok().flatten().unwrap_or(0));
                mknod(
                    &dest,
                    sflag,
                    Mode::from_bits_truncate(perm),
                    libc::makedev(major as u32, minor as u32),
                )
                .with_context(|| format!("mknod {}", dest.display()))?;
                lchown(&dest, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dest.display()))?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(perm))
                    .with_context(|| format!("chmod {}", dest.display()))?;
                set_mtime(&dest, mtime)?;
            }
            EntryType::XGlobalHeader => continue,
            other => bail!(
                "unsupported archive entry type {other:?} for {}",
                rel.display()
            ),
        }
        if let Some(exts) = entry.pax_extensions().ok().flatten() {
            for ext in exts.flatten() {
                if ext.key().ok() == Some(&format!("SCHILY.xattr.{KEPT_XATTR}")[..]) {
                    xattr::set(&dest, KEPT_XATTR, ext.value_bytes())
                        .with_context(|| format!("setting {KEPT_XATTR} on {}", dest.display()))?;
                }
            }
        }
    }
    // Directory modes and mtimes last: adding children changes dir mtimes,
    // and a read-only directory mode must not block its own extraction.
    for d in dirs.iter().rev() {
        fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))
            .with_context(|| format!("chmod {}", d.path.display()))?;
        set_mtime(&d.path, d.mtime)?;
    }
    Ok(stats)
}

fn whiteout(
    root: &Path,
    parent: &Path,
    rel: &Path,
    target: &str,
    mode: UnpackMode,
    written: &HashSet<PathBuf>,
) -> Result<()> {
    let fname = format!("{WHITEOUT_PREFIX}{target}");
    if fname == OPAQUE_WHITEOUT {
        match mode {
            UnpackMode::Overlay => xattr::set(parent, OPAQUE_XATTR, b"y")
                .with_context(|| format!("marking {} opaque", parent.display()))?,
            UnpackMode::Apply => {
                let parent_rel = parent.strip_prefix(root).unwrap_or(Path::new(""));
                for e in
                    fs::read_dir(parent).with_context(|| format!("reading {}", parent.display()))?
                {
                    let e = e?;
                    if !written.contains(&parent_rel.join(e.file_name())) {
                        remove_any(&e.path())?;
                    }
                }
            }
        }
        return Ok(());
    }
    if target.is_empty() || target == "." || target == ".." || target.starts_with(WHITEOUT_PREFIX) {
        bail!("refusing malformed whiteout {}", rel.display());
    }
    let victim = parent.join(target);
    match mode {
        UnpackMode::Overlay => {
            remove_any(&victim)?;
            mknod(&victim, SFlag::S_IFCHR, Mode::empty(), 0)
                .with_context(|| format!("creating whiteout {}", victim.display()))?;
        }
        UnpackMode::Apply => remove_any(&victim)?,
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting mtime of {}", path.display()))
}
