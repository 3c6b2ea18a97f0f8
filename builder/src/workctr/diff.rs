//! `diff`: Docker's change list of a container, read from its overlay upper
//! directory: `D` for a whiteout (a 0/0 character device), `C` for a path
//! the image already has, `A` for a new one (and everything below a new or
//! opaque directory), sorted by path as `docker diff` prints them.
use crate::layer::diff::OPAQUE_XATTR;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Added,
    Changed,
    Deleted,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Changed => 'C',
            Kind::Deleted => 'D',
        }
    }
}

/// The changes in `upper` relative to `lowers` (bottom first).
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<(Kind, String)>> {
    let mut out = Vec::new();
    walk(upper, Path::new(""), lowers, false, &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn walk(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    all_new: bool,
    out: &mut Vec<(Kind, String)>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let path = upper.join(&r);
        let m = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let shown = format!("/{}", r.display());
        if m.file_type().is_char_device() && m.rdev() == 0 {
            if !all_new {
                out.push((Kind::Deleted, shown));
            }
            continue;
        }
        let existed = !all_new && exists_below(lowers, &r);
        out.push((if existed { Kind::Changed } else { Kind::Added }, shown));
        if m.is_dir() {
            // An opaque directory replaced the image's one: its content is new.
            let opaque = xattr::get(&path, OPAQUE_XATTR).ok().flatten().as_deref() == Some(b"y");
            walk(upper, &r, lowers, all_new || !existed || opaque, out)?;
        }
    }
    Ok(())
}

/// True when `rel` is visible in the image: the topmost layer that has an
/// entry for it (or a whiteout) decides.
fn exists_below(lowers: &[PathBuf], rel: &Path) -> bool {
    for l in lowers.iter().rev() {
        if let Ok(m) = fs::symlink_metadata(l.join(rel)) {
            return !(m.file_type().is_char_device() && m.rdev() == 0);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_deleted() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("l"), t.path().join("u"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/old"), "x").unwrap();
        fs::write(lower.join("gone"), "x").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/new"), "y").unwrap();
        fs::write(upper.join("etc/old"), "z").unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let got: Vec<String> = changes(&upper, &[lower])
            .unwrap()
            .into_iter()
            .map(|(k, p)| format!("{} {p}", k.letter()))
            .collect();
        assert_eq!(got, ["C /etc", "A /etc/new", "C /etc/old", "D /gone"]);
    }
}
