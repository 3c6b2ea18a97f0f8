//! Loading and validating an OCI bundle (config.json + rootfs).

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// The raw config.json, kept verbatim in the state dir.
    pub raw_config: Vec<u8>,
    /// Absolute, canonical rootfs path.
    pub rootfs: PathBuf,
}

pub fn load(dir: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("bundle directory {}", dir.display()))?;
    let config_path = dir.join("config.json");
    let raw_config = match std::fs::read(&config_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "JSON specification file config.json not found in {}",
                dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", config_path.display())),
    };
    let spec: Spec = serde_json::from_slice(&raw_config)
        .with_context(|| format!("invalid config.json ({})", config_path.display()))?;
    validate(&spec)?;
    let root = spec
        .root()
        .as_ref()
        .context("invalid config.json: root.path is missing")?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .with_context(|| format!("rootfs ({}) does not exist", rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("rootfs ({}) is not a directory", rootfs.display());
    }
    Ok(Bundle {
        dir,
        spec,
        raw_config,
        rootfs,
    })
}

/// Checks the runtime-spec demands before anything is created.
pub fn validate(spec: &Spec) -> Result<()> {
    if spec.version().is_empty() {
        bail!("invalid config.json: ociVersion is missing");
    }
    let process = spec
        .process()
        .as_ref()
        .context("invalid config.json: process is missing")?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("invalid config.json: process.args must not be empty");
    }
    if !process.cwd().is_absolute() {
        bail!(
            "invalid config.json: process.cwd {:?} is not an absolute path",
            process.cwd()
        );
    }
    if let Some(linux) = spec.linux() {
        crate::namespaces::Plan::from_spec(spec).context("invalid config.json")?;
        let has_userns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User);
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if has_maps && !has_userns {
            bail!("invalid config.json: uidMappings given without a user namespace");
        }
    } else {
        bail!("invalid config.json: linux section is missing");
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            bail!(
                "invalid config.json: mount destination {:?} is not absolute",
                m.destination()
            );
        }
    }
    Ok(())
}
