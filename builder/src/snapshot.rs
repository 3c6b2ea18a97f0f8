//! Snapshots: each layer lives unpacked alone in `snapshots/<diffid-hex>/`
//! in overlayfs format; a step's root filesystem is an overlay mount whose
//! lowerdirs are its parent layers and whose upperdir collects its changes
//! ([`overlay`] mounts any number of them, up to overlayfs's 500).
pub mod overlay;

use crate::layer::{open_decompressed, unpack, UnpackMode};
use crate::store::Store;
use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};
use std::fs;
use std::path::{Path, PathBuf};

/// Makes sure the layer `diff_id` (blob `digest`) is unpacked; returns its directory.
pub fn ensure_layer(store: &Store, digest: &str, diff_id: &str) -> Result<PathBuf> {
    let dest = store.snapshot_dir(diff_id)?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = store.temp_dir("snap-")?;
    let dir = tmp.path().join("layer");
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let r = open_decompressed(&store.blob_path(digest)?)?;
    unpack(r, &dir, UnpackMode::Overlay).with_context(|| format!("unpacking layer {digest}"))?;
    install(&dir, &dest)?;
    Ok(dest)
}

/// Moves a finished upper directory into the snapshot store as layer `diff_id`
/// (it already is in overlayfs format), unless that layer is already there.
pub fn adopt_upper(store: &Store, upper: &Path, diff_id: &str) -> Result<PathBuf> {
    let dest = store.snapshot_dir(diff_id)?;
    if !dest.is_dir() {
        install(upper, &dest)?;
    }
    Ok(dest)
}

fn install(src: &Path, dest: &Path) -> Result<()> {
    match fs::rename(src, dest) {
        Ok(()) => Ok(()),
        // Another build installed the same content first.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("installing snapshot {}", dest.display())),
    }
}

/// A mounted overlay. Unmounted (lazily) and removed on drop.
pub struct OverlayMount {
    pub merged: PathBuf,
    pub upper: PathBuf,
    mounted: bool,
    // Holds upper/work/merged; dropped after the unmount.
    dir: crate::store::WorkDir,
}

impl OverlayMount {
    /// Mounts `lowers` (bottom first) with a fresh upper directory.
    pub fn new(store: &Store, lowers: &[PathBuf]) -> Result<Self> {
        let dir = store.temp_dir("mnt-")?;
        let (upper, work, merged, empty) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
            dir.path().join("empty"),
        );
        for d in [&upper, &work, &merged, &empty] {
            fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // Overlay's order: top layer first.
        let lower: Vec<PathBuf> = if lowers.is_empty() {
            vec![empty.clone()]
        } else {
            lowers.iter().rev().cloned().collect()
        };
        overlay::Overlay {
            lowers: &lower,
            upper: &upper,
            work: &work,
        }
        .mount(&merged)
        .with_context(|| {
            format!(
                "mounting overlay on {} ({} lowers)",
                merged.display(),
                lowers.len()
            )
        })?;
        Ok(Self {
            merged,
            upper,
            mounted: true,
            dir,
        })
    }

    /// Unmounts, leaving the upper directory to be read.
    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            umount2(&self.merged, MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {}", self.merged.display()))?;
            self.mounted = false;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// Best-effort unmount of leftovers from a crashed build below `dir`: the
/// overlay roots and every other mount below it (a RUN step's staged mount
/// sources are binds of build contexts: removing the directory while they
/// are mounted would delete the host files they show).
pub fn unmount_stale(dir: &Path) {
    for sub in ["merged", "rootfs"] {
        let _ = umount2(&dir.join(sub), MntFlags::MNT_DETACH);
    }
    let mut below = mounts_below(dir);
    // Deepest first.
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in below {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
    }
}

/// Mount points strictly below `dir`, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(super::unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(super::unescape_mountinfo(r"/plain\04"), r"/plain\04");
    }
}
