//! Loading and validating an OCI bundle (config.json + rootfs).

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// One clock's offset in a new time namespace.
pub struct TimeOffset {
    pub clock: String,
    pub secs: i64,
    pub nanos: u32,
}

pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// The raw config.json, kept verbatim in the state dir.
    pub raw_config: Vec<u8>,
    /// Absolute, canonical rootfs path.
    pub rootfs: PathBuf,
    /// linux.timeOffsets as (clock, secs, nanosecs), parsed here because
    /// oci-spec 0.7 models the field as strings instead of the spec's
    /// `{"secs": N, "nanosecs": N}` objects.
    pub time_offsets: Vec<TimeOffset>,
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
    let (spec, time_offsets) = parse_config(&raw_config)
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
        time_offsets,
    })
}

/// Parse config.json into the spec plus its time offsets.
pub fn parse_config(raw: &[u8]) -> Result<(Spec, Vec<TimeOffset>)> {
    let mut doc: serde_json::Value = serde_json::from_slice(raw)?;
    let time_offsets = take_time_offsets(&mut doc)?;
    Ok((serde_json::from_value(doc)?, time_offsets))
}

/// Remove and parse `linux.timeOffsets` ({"monotonic": {"secs": 1, "nanosecs": 0}}).
fn take_time_offsets(doc: &mut serde_json::Value) -> Result<Vec<TimeOffset>> {
    let Some(obj) = doc
        .get_mut("linux")
        .and_then(|l| l.as_object_mut())
        .and_then(|l| l.remove("timeOffsets"))
    else {
        return Ok(Vec::new());
    };
    let map = obj
        .as_object()
        .context("invalid config.json: linux.timeOffsets must be an object")?;
    let mut out = Vec::new();
    for (clock, v) in map {
        if clock != "monotonic" && clock != "boottime" {
            bail!("invalid config.json: linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)");
        }
        let secs = v.get("secs").and_then(|s| s.as_i64()).unwrap_or(0);
        let nanos = v.get("nanosecs").and_then(|s| s.as_u64()).unwrap_or(0);
        let nanos = u32::try_from(nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .with_context(|| {
                format!("invalid config.json: linux.timeOffsets.{clock}.nanosecs out of range")
            })?;
        out.push(TimeOffset {
            clock: clock.clone(),
            secs,
            nanos,
        });
    }
    Ok(out)
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
