//! A layer's content size as Docker reports it: what `docker images` sums
//! into an image's SIZE and `docker history` shows per layer.
//!
//! Docker's overlay2 driver unpacks a layer tar into the layer's own `diff`
//! directory (whiteouts become 0/0 character devices, opaque markers become
//! an xattr) and takes `pkg/directory.Size` of it: the `st_size` of every
//! entry that is not a directory and not empty, each inode once (a hard
//! link counts once; a symlink counts its target's length). The same is
//! computed here from the tar itself, following what unpacking would leave
//! behind (a later entry replaces an earlier one at the same path).
//!
//! The result is kept per layer blob in `layer-sizes/<blob-hex>` (a decimal
//! number), computed once, the first time an image using the layer enters
//! the index or is listed, so `images` never reads a layer twice.
use super::Store;
use crate::digest::hex_part;
use crate::fsutil::replace_file;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use tar::EntryType;

/// The directory of the per-layer sizes, below the store root.
pub(super) const DIR: &str = "layer-sizes";

/// Docker's opaque-directory marker (an xattr on the directory once
/// unpacked: no entry of its own).
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Docker's content size of the (uncompressed) layer tar `r`.
pub fn content_size(r: impl Read) -> Result<u64> {
    // Path -> inode number, and each inode's size: what the unpacked
    // directory would hold. Directories are kept (as `None`) so that a
    // file replacing one drops what was below it.
    let mut paths: BTreeMap<PathBuf, Option<usize>> = BTreeMap::new();
    let mut inodes: Vec<u64> = Vec::new();
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().context("reading layer")? {
        let e = e.context("reading layer entry")?;
        let Ok(path) = crate::layer::unpack::clean_name(&e.path_bytes()) else {
            // Unpacking refuses such a name; it adds nothing.
            continue;
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let h = e.header();
        let (path, size) = match name.as_deref() {
            Some(OPAQUE) => continue,
            Some(n) if n.starts_with(WHITEOUT_PREFIX) => {
                // Unpacked as a 0/0 character device named after the
                // deleted entry: present, size 0.
                (path.with_file_name(&n[WHITEOUT_PREFIX.len()..]), 0)
            }
            _ => match h.entry_type() {
                EntryType::Directory => {
                    // A directory over a non-directory replaces it; over a
                    // directory it merges.
                    if paths.get(&path).is_some_and(Option::is_some) {
                        paths.remove(&path);
                    }
                    paths.insert(path, None);
                    continue;
                }
                EntryType::Link => {
                    let target = e
                        .link_name_bytes()
                        .and_then(|t| crate::layer::unpack::clean_name(&t).ok());
                    let inode = target.and_then(|t| paths.get(&t).copied().flatten());
                    if let Some(inode) = inode {
                        replace(&mut paths, path, Some(inode));
                    }
                    continue;
                }
                EntryType::Symlink => (path, e.link_name_bytes().map_or(0, |t| t.len() as u64)),
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    (path, h.size().context("layer entry size")?)
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => (path, 0),
                // PAX/GNU metadata headers are folded into their entry by
                // the reader; anything else is not unpacked.
                _ => continue,
            },
        };
        inodes.push(size);
        replace(&mut paths, path, Some(inodes.len() - 1));
    }
    let live: BTreeSet<usize> = paths.values().flatten().copied().collect();
    Ok(live
        .into_iter()
        .map(|i| inodes[i])
        .fold(0u64, u64::saturating_add))
}

/// Puts `path` in the tree as `inode`, dropping whatever it replaces (a
/// directory's content too).
fn replace(paths: &mut BTreeMap<PathBuf, Option<usize>>, path: PathBuf, inode: Option<usize>) {
    if let Some(None) = paths.get(&path) {
        let below: Vec<PathBuf> = paths
            .range(path.clone()..)
            .take_while(|(p, _)| p.starts_with(&path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            paths.remove(&p);
        }
    }
    paths.insert(path, inode);
}

impl Store {
    fn layer_size_path(&self, blob: &str) -> Result<PathBuf> {
        Ok(self.root.join(DIR).join(hex_part(blob)?))
    }

    /// Docker's content size of the layer blob `blob` (compressed or not),
    /// from its recorded value or measured once and recorded.
    pub fn layer_content_size(&self, blob: &str) -> Result<u64> {
        let path = self.layer_size_path(blob)?;
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Ok(n) = s.trim().parse() {
                return Ok(n);
            }
        }
        let size =
            measure(&self.blob_path(blob)?).with_context(|| format!("measuring layer {blob}"))?;
        // Derived data: a lost record is measured again.
        std::fs::create_dir_all(self.root.join(DIR))
            .context("creating the layer sizes directory")?;
        replace_file(&path, size.to_string().as_bytes())?;
        Ok(size)
    }
}

fn measure(blob: &Path) -> Result<u64> {
    content_size(crate::layer::open_decompressed(blob)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, len: usize) {
        let data = vec![b'x'; len];
        b.append(&header(path, EntryType::Regular, len as u64), &data[..])
            .unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, target: &str) {
        let mut h = header(path, kind, 0);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn counts_like_overlay2_directory_size() {
        let tar = layer(|b| {
            b.append(&header("etc/", EntryType::Directory, 0), std::io::empty())
                .unwrap();
            file(b, "etc/a", 100);
            // A hard link is the same inode: counted once.
            link(b, "etc/b", EntryType::Link, "etc/a");
            // A symlink's size is its target's length.
            link(b, "etc/s", EntryType::Symlink, "a-target");
            // Whiteouts and opaque markers: nothing.
            file(b, "etc/.wh.gone", 0);
            file(b, "etc/.wh..wh..opq", 0);
            // A later entry replaces an earlier one.
            file(b, "over", 7);
            file(b, "over", 3);
            // A file over a directory drops what was below it.
            b.append(&header("d/", EntryType::Directory, 0), std::io::empty())
                .unwrap();
            file(b, "d/inner", 50);
            file(b, "d", 2);
            file(b, "empty", 0);
        });
        assert_eq!(content_size(&tar[..]).unwrap(), 100 + 8 + 3 + 2);
        // A hard link keeps its inode alive when its first name is replaced.
        let tar = layer(|b| {
            file(b, "a", 10);
            link(b, "b", EntryType::Link, "a");
            file(b, "a", 4);
        });
        assert_eq!(content_size(&tar[..]).unwrap(), 14);
    }
}
