//! Snapshots: each layer lives unpacked alone in `snapshots/<diffid-hex>/`
//! in overlayfs format; a step's root filesystem is an overlay mount whose
//! lowerdirs are its parent layers and whose upperdir collects its changes.
use crate::layer::{open_decompressed, unpack, UnpackMode};
use crate::store::Store;
use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
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
        let lower: Vec<String> = if lowers.is_empty() {
            vec![empty.display().to_string()]
        } else {
            lowers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect()
        };
        let opts = format!(
            // volatile: no syncs on umount; the layer blob is what gets fsynced.
            "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off,volatile",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
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

/// Best-effort unmount of leftovers from a crashed build below `dir`.
pub fn unmount_stale(dir: &Path) {
    for sub in ["merged", "rootfs"] {
        let _ = umount2(&dir.join(sub), MntFlags::MNT_DETACH);
    }
}
