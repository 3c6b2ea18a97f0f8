//! `berth features`: what this runtime implements, in the runtime-spec `features.md`
//! format (the shape `runc features` prints). Everything listed here comes from the
//! tables the implementing modules use, so the report cannot claim more than exists.

use oci_spec::runtime::LinuxNamespaceType;
use serde::Serialize;
use serde_json::{json, Value};

use crate::seccomp;

/// Every mount option name the runtime accepts in `mounts[].options`, sorted: the flag,
/// propagation and recursive (`mount_setattr`) options rootfs/options.rs implements, plus
/// `tmpcopyup` — the same 62 names runc 1.1 reports. Anything else is passed to the
/// filesystem as data.
pub const MOUNT_OPTIONS: &[&str] = &[
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// Hook kinds the runtime runs, in the order the spec lists them.
pub const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Namespace types the runtime can create or join.
pub const NAMESPACES: &[LinuxNamespaceType] = &[
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::User,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Time,
];

/// Oldest runtime-spec version whose configs the runtime accepts.
pub const OCI_VERSION_MIN: &str = "1.0.0";

/// The runtime-spec version the `oci-spec` crate implements (its `version()`, "1.0.2" for
/// oci-spec 0.7): what `berth spec` writes and the newest version we claim to understand.
pub fn oci_version() -> String {
    oci_spec::runtime::version()
}

/// Serializes enum values with their spec spelling (e.g. `SCMP_ACT_ALLOW`, `network`).
fn names<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// Sorts string values, the order runc prints lists in.
fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    values
}

/// Capability names known to the `caps` crate, in kernel number order.
fn capabilities() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(|c| c.to_string()).collect()
}

/// The `berth features` document.
pub fn features() -> Value {
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": oci_version(),
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": names(NAMESPACES),
            "capabilities": capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
            },
            "seccomp": {
                "enabled": true,
                "actions": names(seccomp::SUPPORTED_ACTIONS),
                "operators": names(seccomp::SUPPORTED_OPERATORS),
                "archs": sorted(names(seccomp::filtered_archs())),
                "knownFlags": names(seccomp::KNOWN_FLAGS),
                "supportedFlags": names(&seccomp::supported_flags()),
            },
            // berth applies both when the host has them enabled and refuses
            // labels otherwise (lsm.rs): "enabled" says which case this is.
            "apparmor": { "enabled": crate::lsm::apparmor_enabled() },
            "selinux": { "enabled": crate::lsm::selinux_enabled() },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } },
        },
        "annotations": {
            "io.github.berth.version": env!("CARGO_PKG_VERSION"),
            "io.github.berth.seccomp.backend": "seccompiler",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Features, LinuxSeccompAction};

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string"))
            .collect()
    }

    #[test]
    fn document_parses_as_oci_features() {
        let doc = features();
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let parsed: Features = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.oci_version_min(), "1.0.0");
        assert_eq!(parsed.oci_version_max(), &oci_version());
        assert_eq!(parsed.hooks().as_ref().unwrap().len(), 6);
        assert_eq!(
            parsed.mount_options().as_ref().unwrap().len(),
            MOUNT_OPTIONS.len()
        );

        let linux = parsed.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.contains(&LinuxNamespaceType::Time) && ns.contains(&LinuxNamespaceType::User));
        let caps = linux.capabilities().as_ref().unwrap();
        assert_eq!(caps.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(caps.iter().all(|c| c.starts_with("CAP_")));

        let cg = linux.cgroup().as_ref().unwrap();
        assert_eq!(
            (cg.v1(), cg.v2(), cg.systemd()),
            (&Some(true), &Some(true), &Some(false))
        );

        let sc = linux.seccomp().as_ref().unwrap();
        assert_eq!(sc.enabled(), &Some(true));
        let actions = sc.actions().as_ref().unwrap();
        assert!(actions.contains(&LinuxSeccompAction::ScmpActErrno));
        assert!(actions.contains(&LinuxSeccompAction::ScmpActNotify));
        assert_eq!(sc.operators().as_ref().unwrap().len(), 7);
        assert!(!sc.archs().as_ref().unwrap().is_empty());
        let known = sc.known_flags().as_ref().unwrap();
        assert!(known.iter().any(|f| f == "SECCOMP_FILTER_FLAG_LOG"));
        let supported = sc.supported_flags().as_ref().unwrap();
        assert!(supported.iter().all(|f| known.contains(f)));

        assert_eq!(
            linux.apparmor().as_ref().unwrap().enabled(),
            &Some(crate::lsm::apparmor_enabled())
        );
        assert_eq!(
            linux.selinux().as_ref().unwrap().enabled(),
            &Some(crate::lsm::selinux_enabled())
        );
        let idmap = linux.mount_extensions().as_ref().unwrap().idmap();
        assert_eq!(idmap.as_ref().unwrap().enabled(), &Some(false));

        let ann = parsed.annotations().as_ref().unwrap();
        assert_eq!(ann["io.github.berth.version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn spellings_match_runc() {
        let doc = features();
        let sc = &doc["linux"]["seccomp"];
        assert_eq!(
            strings(&sc["operators"]),
            [
                "SCMP_CMP_EQ",
                "SCMP_CMP_GE",
                "SCMP_CMP_GT",
                "SCMP_CMP_LE",
                "SCMP_CMP_LT",
                "SCMP_CMP_MASKED_EQ",
                "SCMP_CMP_NE"
            ]
        );
        assert!(strings(&sc["actions"]).contains(&"SCMP_ACT_KILL_PROCESS"));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(strings(&sc["archs"]), ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]);
        }
        assert_eq!(
            strings(&doc["linux"]["namespaces"]),
            ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"]
        );
        assert_eq!(strings(&doc["hooks"])[0], "prestart");
    }

    #[test]
    fn mount_options_sorted_and_unique() {
        assert!(MOUNT_OPTIONS.windows(2).all(|w| w[0] < w[1]));
        for opt in [
            "ro",
            "rbind",
            "tmpcopyup",
            "nosuid",
            "rslave",
            "rro",
            "nosymfollow",
        ] {
            assert!(MOUNT_OPTIONS.contains(&opt), "{opt}");
        }
    }
}
