//! containerd's rootfs mounts on `<bundle>/rootfs`, and their removal.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use containerd_shim::mount::{mount_rootfs, umount_recursive};
use containerd_shim::protos::types::mount::Mount;
use containerd_shim::warn;

/// Mounts containerd's rootfs mounts (bind for native, overlay for overlayfs) on `target`.
pub fn mount_all(rootfs: &[Mount], target: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {}", target.display()))?;
    for m in rootfs {
        mount_rootfs(Some(&m.type_), Some(&m.source), &m.options, target).map_err(|e| {
            anyhow!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.type_,
                target.display()
            )
        })?;
    }
    Ok(())
}

/// Lazily unmounts everything at and below `target`; failures are only logged.
pub fn unmount(target: &Path) {
    if let Some(t) = target.to_str() {
        if let Err(e) = umount_recursive(Some(t), libc::MNT_DETACH) {
            warn!("unmount {t}: {e}");
        }
    }
}
