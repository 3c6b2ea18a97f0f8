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
    if let Some(process) = doc.get_mut("process") {
        drop_unknown_capabilities(process);
    }
    root_relative_mount_destinations(&mut doc);
    Ok((serde_json::from_value(doc)?, time_offsets))
}

/// As runc: capability names this runtime does not know (a newer kernel's,
/// or a typo) are dropped with a warning instead of failing the container.
/// `process` is a runtime-spec process object (config.json's, or exec's
/// `--process` file).
pub fn drop_unknown_capabilities(process: &mut serde_json::Value) {
    let Some(sets) = process
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return;
    };
    let mut unknown: Vec<String> = Vec::new();
    for set in sets.values_mut() {
        if let Some(names) = set.as_array_mut() {
            names.retain(|name| {
                let known =
                    serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_ok();
                if !known {
                    let name = name.as_str().unwrap_or_default().to_string();
                    if !unknown.contains(&name) {
                        unknown.push(name);
                    }
                }
                known
            });
        }
    }
    if !unknown.is_empty() {
        crate::logging::warn(&format!(
            "ignoring unknown or unavailable capabilities: [{}]",
            unknown.join(" ")
        ));
    }
}

/// runtime-spec 1.1 (and runc): a relative mount destination is deprecated
/// but MUST be taken as relative to the container's `/`.
fn root_relative_mount_destinations(doc: &mut serde_json::Value) {
    let Some(mounts) = doc.get_mut("mounts").and_then(|m| m.as_array_mut()) else {
        return;
    };
    for m in mounts {
        let Some(dest) = m.get_mut("destination") else {
            continue;
        };
        if let Some(rel) = dest.as_str().filter(|d| !d.starts_with('/')) {
            crate::logging::warn(&format!(
                "mount destination {rel:?} is not absolute: taken as /{rel} (deprecated)"
            ));
            *dest = serde_json::Value::String(format!("/{rel}"));
        }
    }
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
    validate_sysctls(spec)?;
    // Labels the host cannot apply are refused, never dropped.
    crate::lsm::validate(spec)
}

/// IPC-namespaced sysctls besides `fs.mqueue.*`.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// A sysctl is written from inside the container, so it must belong to a
/// namespace the container has of its own: otherwise it would change the
/// host (runc's rules, and its messages).
fn validate_sysctls(spec: &Spec) -> Result<()> {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let Some(sysctl) = linux.sysctl() else {
        return Ok(());
    };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let find = |t: T| namespaces.iter().find(|n| n.typ() == t);
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for raw_key in keys {
        let key = raw_key.replace('/', ".");
        if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if find(T::Ipc).is_none() {
                bail!("invalid config.json: sysctl {raw_key:?} is not allowed in the host's ipc namespace");
            }
            continue;
        }
        if key.starts_with("net.") {
            let Some(net) = find(T::Network) else {
                bail!("invalid config.json: sysctl {raw_key:?} is not allowed in the host's network namespace");
            };
            if let Some(path) = net.path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
                if same_file(path, Path::new("/proc/self/ns/net")) {
                    bail!("invalid config.json: sysctl {raw_key:?} not allowed in host network namespace");
                }
            }
            continue;
        }
        if find(T::Uts).is_some() {
            match key.as_str() {
                "kernel.domainname" => continue,
                "kernel.hostname" => bail!(
                    "invalid config.json: sysctl {raw_key:?} is not allowed as it conflicts with the OCI \"hostname\" field"
                ),
                _ => {}
            }
        }
        bail!("invalid config.json: sysctl {raw_key:?} is not in a separate kernel namespace");
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(namespaces: serde_json::Value, sysctl: serde_json::Value) -> Spec {
        let doc = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": namespaces, "sysctl": sysctl},
        });
        parse_config(&serde_json::to_vec(&doc).unwrap()).unwrap().0
    }

    #[test]
    fn net_sysctl_in_the_hosts_netns_joined_by_path_is_refused() {
        let host = spec_with(
            serde_json::json!([{"type": "network", "path": "/proc/self/ns/net"}]),
            serde_json::json!({"net.ipv4.ip_forward": "1"}),
        );
        let err = validate_sysctls(&host).unwrap_err().to_string();
        assert!(
            err.contains("not allowed in host network namespace"),
            "{err}"
        );
        let own = spec_with(
            serde_json::json!([{"type": "network"}]),
            serde_json::json!({"net/ipv4/ip_forward": "1"}),
        );
        validate_sysctls(&own).unwrap();
    }

    #[test]
    fn ipc_and_uts_sysctls_need_their_namespaces() {
        let with = spec_with(
            serde_json::json!([{"type": "ipc"}, {"type": "uts"}]),
            serde_json::json!({"fs.mqueue.msg_max": "20", "kernel.domainname": "x"}),
        );
        validate_sysctls(&with).unwrap();
        let without = spec_with(
            serde_json::json!([{"type": "uts"}]),
            serde_json::json!({"fs.mqueue.msg_max": "20"}),
        );
        assert!(validate_sysctls(&without).is_err());
    }

    #[test]
    fn unknown_capabilities_are_dropped_known_ones_kept() {
        let mut process = serde_json::json!({
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NOPE"], "effective": ["CAP_NOPE"]}
        });
        drop_unknown_capabilities(&mut process);
        assert_eq!(
            process["capabilities"],
            serde_json::json!({"bounding": ["CAP_CHOWN"], "effective": []})
        );
    }
}
