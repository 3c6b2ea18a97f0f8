//! `berth spec`: the starter config.json `runc spec [--rootless]` writes.
//!
//! The template is made of small serde structs declared in runc's field order (rather
//! than `oci_spec::runtime::Spec`, whose capability sets are hash sets), so the file we
//! write matches runc's byte for byte apart from two values: `ociVersion` is the version
//! our oci-spec types speak and `hostname` is "berth".

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
#[cfg(test)]
use serde_json::Value;

use crate::features::oci_version;

/// The capabilities runc grants in its template (all four sets).
const CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Template {
    oci_version: String,
    process: Process,
    root: Root,
    hostname: &'static str,
    mounts: Vec<Mount>,
    linux: Linux,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    terminal: bool,
    user: User,
    args: &'static [&'static str],
    env: &'static [&'static str],
    cwd: &'static str,
    capabilities: Capabilities,
    rlimits: Vec<Rlimit>,
    no_new_privileges: bool,
}

#[derive(Serialize)]
struct User {
    uid: u32,
    gid: u32,
}

#[derive(Serialize)]
struct Capabilities {
    bounding: &'static [&'static str],
    effective: &'static [&'static str],
    permitted: &'static [&'static str],
    ambient: &'static [&'static str],
}

#[derive(Serialize)]
struct Rlimit {
    #[serde(rename = "type")]
    kind: &'static str,
    hard: u64,
    soft: u64,
}

#[derive(Serialize)]
struct Root {
    path: &'static str,
    readonly: bool,
}

#[derive(Serialize)]
struct Mount {
    destination: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    options: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Linux {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid_mappings: Option<[IdMapping; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid_mappings: Option<[IdMapping; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Resources>,
    namespaces: Vec<Namespace>,
    masked_paths: &'static [&'static str],
    readonly_paths: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdMapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

#[derive(Serialize)]
struct Resources {
    devices: [DeviceRule; 1],
}

#[derive(Serialize)]
struct DeviceRule {
    allow: bool,
    access: &'static str,
}

#[derive(Serialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: &'static str,
}

fn mounts(rootless: bool) -> Vec<Mount> {
    let m = |destination, kind, source, options| Mount {
        destination,
        kind,
        source,
        options,
    };
    vec![
        m("/proc", "proc", "proc", &[]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        if rootless {
            // The tty group of the host cannot be mapped into a rootless container.
            m(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            )
        } else {
            m(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            )
        },
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        if rootless {
            // sysfs cannot be mounted without owning the network namespace: bind the host's.
            m(
                "/sys",
                "none",
                "/sys",
                &["rbind", "nosuid", "noexec", "nodev", "ro"],
            )
        } else {
            m(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            )
        },
        m(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

fn template(rootless: bool) -> Template {
    let namespaces: &[&str] = if rootless {
        // No network namespace: a rootless container could not configure one.
        &["pid", "ipc", "uts", "mount", "user"]
    } else {
        &["pid", "network", "ipc", "uts", "mount"]
    };
    let mapping = |host_id| {
        [IdMapping {
            container_id: 0,
            host_id,
            size: 1,
        }]
    };
    Template {
        oci_version: oci_version(),
        process: Process {
            terminal: true,
            user: User { uid: 0, gid: 0 },
            args: &["sh"],
            env: &[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            cwd: "/",
            capabilities: Capabilities {
                bounding: CAPS,
                effective: CAPS,
                permitted: CAPS,
                ambient: CAPS,
            },
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE",
                hard: 1024,
                soft: 1024,
            }],
            no_new_privileges: true,
        },
        root: Root {
            path: "rootfs",
            readonly: true,
        },
        hostname: "berth",
        mounts: mounts(rootless),
        linux: Linux {
            // runc maps container root to the caller's effective ids.
            uid_mappings: rootless.then(|| mapping(nix::unistd::geteuid().as_raw())),
            gid_mappings: rootless.then(|| mapping(nix::unistd::getegid().as_raw())),
            // Rootless containers usually cannot use the devices cgroup.
            resources: (!rootless).then_some(Resources {
                devices: [DeviceRule {
                    allow: false,
                    access: "rwm",
                }],
            }),
            namespaces: namespaces.iter().map(|&kind| Namespace { kind }).collect(),
            masked_paths: MASKED_PATHS,
            readonly_paths: READONLY_PATHS,
        },
    }
}

/// The template as JSON (what `berth spec` writes).
/// The default spec as JSON (tests compare it with `runc spec`).
#[cfg(test)]
pub fn default_spec(rootless: bool) -> Result<Value> {
    serde_json::to_value(template(rootless)).context("serializing the spec template")
}

/// runc's formatting: tab indentation, no trailing newline.
fn render(rootless: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    template(rootless)
        .serialize(&mut ser)
        .context("serializing the spec template")?;
    Ok(out)
}

/// Writes `<bundle>/config.json`, refusing to replace an existing one (runc's message),
/// with mode 0666 minus the umask like runc.
pub fn write_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let path = bundle.join("config.json");
    let data = render(rootless)?;
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bail!("File config.json exists. Remove it first")
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(&data)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceType, Spec};
    use std::path::PathBuf;
    use std::process::Command;

    /// A temp dir removed on drop, even when the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "berth-spec-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `runc spec [--rootless]` output, or None when runc is not installed.
    fn runc_spec(rootless: bool) -> Option<Value> {
        let dir = TempDir::new(if rootless { "runc-rl" } else { "runc" });
        let mut cmd = Command::new("runc");
        cmd.arg("spec").current_dir(&dir.0);
        if rootless {
            cmd.arg("--rootless");
        }
        let ok = cmd.status().ok()?.success();
        assert!(ok, "runc spec failed");
        let text = std::fs::read_to_string(dir.0.join("config.json")).unwrap();
        Some(serde_json::from_str(&text).unwrap())
    }

    fn check_against_runc(rootless: bool) {
        let ours = default_spec(rootless).unwrap();
        let spec: Spec = serde_json::from_value(ours.clone()).expect("valid OCI spec");
        assert_eq!(spec.version(), &oci_version());
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["sh".to_string()]);
        assert!(process.terminal().unwrap());
        let bounding = process.capabilities().as_ref().unwrap().bounding();
        assert_eq!(bounding.as_ref().unwrap().len(), 3);
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns.contains(&LinuxNamespaceType::User), rootless);
        assert_eq!(ns.contains(&LinuxNamespaceType::Network), !rootless);
        let mounts = spec.mounts().as_ref().unwrap();
        let sys = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        let sys_opts = sys.options().as_ref().unwrap();
        assert_eq!(sys_opts.contains(&"rbind".to_string()), rootless);
        if rootless {
            let uid = &linux.uid_mappings().as_ref().unwrap()[0];
            assert_eq!(uid.host_id(), nix::unistd::geteuid().as_raw());
            assert_eq!((uid.container_id(), uid.size()), (0, 1));
            let gid = &linux.gid_mappings().as_ref().unwrap()[0];
            assert_eq!(gid.host_id(), nix::unistd::getegid().as_raw());
        }

        // Apart from the two documented values, identical to runc's template.
        let Some(mut runc) = runc_spec(rootless) else {
            eprintln!("runc not installed: skipped the comparison with `runc spec`");
            return;
        };
        runc["ociVersion"] = ours["ociVersion"].clone();
        runc["hostname"] = ours["hostname"].clone();
        assert_eq!(ours, runc);
    }

    #[test]
    fn default_matches_runc() {
        check_against_runc(false);
    }

    #[test]
    fn rootless_matches_runc() {
        check_against_runc(true);
    }

    #[test]
    fn written_file_is_formatted_like_runc_and_never_overwritten() {
        let dir = TempDir::new("write");
        write_spec(&dir.0, false).unwrap();
        let path = dir.0.join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n\t\"ociVersion\": "), "{text}");
        assert!(text.ends_with('}'));
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, default_spec(false).unwrap());

        let err = write_spec(&dir.0, true).unwrap_err().to_string();
        assert_eq!(err, "File config.json exists. Remove it first");
        // The existing file was left alone.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn file_text_matches_runc_byte_for_byte() {
        let dir = TempDir::new("bytes");
        let Ok(status) = Command::new("runc")
            .arg("spec")
            .current_dir(&dir.0)
            .status()
        else {
            eprintln!("runc not installed: skipped");
            return;
        };
        assert!(status.success());
        let runc = std::fs::read_to_string(dir.0.join("config.json")).unwrap();
        let ours = String::from_utf8(render(false).unwrap()).unwrap();
        let normalize = |s: &str| -> String {
            s.lines()
                .filter(|l| !l.contains("\"ociVersion\"") && !l.contains("\"hostname\""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(normalize(&ours), normalize(&runc));
    }
}
