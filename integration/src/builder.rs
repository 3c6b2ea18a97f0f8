//! The builder tests' shared pieces: where they find berth-build /
//! berth-buildd and the OCI runtime their RUN steps use, a store to drive
//! the CLI against ([`BuildEnv`]), a daemon on a private socket
//! ([`Buildd`]), the minimal busybox root filesystem `FROM scratch` +
//! `ADD busybox.tar /` contexts start from ([`Busybox`]), a `save`d image
//! read back ([`SavedImage`]) and process/mount lookups for cleanup checks.

use crate::harness::berth_bin;
use std::path::{Path, PathBuf};

/// The repository's root (the integration crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// berth-build / berth-buildd: in $BERTH_BUILDER_DIR, else next to
/// $BERTH_BIN, else target/debug.
pub fn builder_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BUILDER_DIR") {
        return PathBuf::from(dir).join(name);
    }
    if let Some(dir) = std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let p = dir.join(name);
        if p.exists() {
            return p;
        }
    }
    repo_root().join("target/debug").join(name)
}

/// The OCI runtime RUN steps use: berth when $BERTH_BIN is set, else runc.
pub fn step_runtime() -> PathBuf {
    match std::env::var_os("BERTH_BIN") {
        Some(_) => berth_bin(),
        None => PathBuf::from("/usr/sbin/runc"),
    }
}

mod buildd;
mod env;
mod podman;
mod procs;
mod rootfs;
mod saved;
mod tools;

pub use buildd::Buildd;
pub use env::{expect_ok, text, BuildEnv};
pub use podman::{remove_conmon_cgroups, Podman, PODMAN_RUN_OPTS};
pub use procs::{mounts_under, processes_matching, processes_with};
pub use rootfs::{busybox_tar, tar_dir, tar_entry, Busybox};
pub use saved::SavedImage;
pub use tools::{have, run_bundle};
