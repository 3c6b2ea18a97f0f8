//! The seccomp profile RUN steps run under: the container engines' default
//! profile, as BuildKit applies it to every sandboxed RUN step (containerd's
//! default profile there; the same Docker-format profile podman and buildah
//! use here, from containers-common).
//!
//! The profile is in Docker's format (`archMap`, `names`, `includes` /
//! `excludes` by capability, architecture and kernel version); this module
//! turns it into the OCI `linux.seccomp` object for this architecture and the
//! capabilities RUN steps hold, the way podman's conversion does.
//!
//! Where it comes from: `$BERTH_SECCOMP_PROFILE` when set (a path, or
//! `unconfined` to run RUN steps without a filter, as BuildKit's
//! `--security=insecure` does), else the first of [`PROFILE_PATHS`] that
//! exists. No profile at all is an error, never a silent unconfined run.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Where containers-common installs the default profile (podman's order).
pub const PROFILE_PATHS: &[&str] = &[
    "/etc/containers/seccomp.json",
    "/usr/share/containers/seccomp.json",
];

/// Upper bound on a profile file: the default one is ~20 KiB.
const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// The OCI seccomp object for RUN steps holding `caps`, or `None` when the
/// user asked for unconfined RUN steps.
pub fn run_step_profile(caps: &[&str]) -> Result<Option<Value>> {
    let source = std::env::var("BERTH_SECCOMP_PROFILE").ok();
    let path = match source.as_deref() {
        Some("unconfined") => return Ok(None),
        Some(p) => p.to_string(),
        None => PROFILE_PATHS
            .iter()
            .find(|p| Path::new(p).is_file())
            .map(|p| p.to_string())
            .context(
                "RUN steps need a seccomp profile and none was found in /etc/containers or \
                 /usr/share/containers (install Debian's golang-github-containers-common, or set \
                 BERTH_SECCOMP_PROFILE to a profile or to `unconfined`)",
            )?,
    };
    let file =
        std::fs::File::open(&path).with_context(|| format!("open seccomp profile {path}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_PROFILE_BYTES + 1),
        &mut text,
    )
    .with_context(|| format!("read seccomp profile {path}"))?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        bail!("seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes");
    }
    let profile: Value =
        serde_json::from_str(&text).with_context(|| format!("parse seccomp profile {path}"))?;
    Ok(Some(to_oci(
        &profile,
        caps,
        std::env::consts::ARCH,
        kernel_version(),
    )))
}

/// Docker/libseccomp architecture names for Rust's `ARCH`.
fn scmp_arch(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "",
    }
}

/// Go's names, as used by `includes.arches` / `excludes.arches`.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// (major, minor) of the running kernel, for `includes.minKernel`.
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release)
}

fn parse_version(s: &str) -> (u32, u32) {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Docker-format profile → OCI `linux.seccomp` for `arch` and `caps`: the
/// native `archMap` entry gives the architectures; a rule is kept when all its
/// includes hold (arch, every cap, kernel at least minKernel) and none of its
/// excludes does.
pub fn to_oci(profile: &Value, caps: &[&str], arch: &str, kernel: (u32, u32)) -> Value {
    let native = scmp_arch(arch);
    let mut archs = strings(&profile["architectures"]);
    for m in profile["archMap"].as_array().into_iter().flatten() {
        if m["architecture"] == native {
            archs.push(native.to_string());
            archs.extend(strings(&m["subArchitectures"]));
        }
    }
    let has_cap = |c: &String| caps.contains(&c.as_str());
    let mut syscalls = Vec::new();
    for s in profile["syscalls"].as_array().into_iter().flatten() {
        let inc = &s["includes"];
        let exc = &s["excludes"];
        let arch_ok = {
            let arches = strings(&inc["arches"]);
            arches.is_empty() || arches.iter().any(|a| a == go_arch(arch))
        };
        let kernel_ok = inc["minKernel"]
            .as_str()
            .is_none_or(|v| kernel >= parse_version(v));
        let included = arch_ok && kernel_ok && strings(&inc["caps"]).iter().all(has_cap);
        let excluded = strings(&exc["arches"]).iter().any(|a| a == go_arch(arch))
            || strings(&exc["caps"]).iter().any(has_cap);
        if !included || excluded {
            continue;
        }
        let mut names = strings(&s["names"]);
        names.extend(s["name"].as_str().map(str::to_string));
        if names.is_empty() {
            continue;
        }
        let mut rule = json!({"names": names, "action": s["action"]});
        for key in ["errnoRet", "args"] {
            if !s[key].is_null() {
                rule[key] = s[key].clone();
            }
        }
        syscalls.push(rule);
    }
    let mut oci = json!({
        "defaultAction": profile["defaultAction"],
        "architectures": archs,
        "syscalls": syscalls,
    });
    if !profile["defaultErrnoRet"].is_null() {
        oci["defaultErrnoRet"] = profile["defaultErrnoRet"].clone();
    }
    oci
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_CHOWN"]}},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
                {"names": ["landlock_create_ruleset"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.13"}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        })
    }

    fn names(oci: &Value) -> Vec<String> {
        oci["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| strings(&s["names"]))
            .collect()
    }

    #[test]
    fn keeps_what_the_caps_arch_and_kernel_allow() {
        let oci = to_oci(&sample(), &["CAP_CHOWN"], "x86_64", (6, 1));
        assert_eq!(
            oci["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        assert_eq!(oci["defaultErrnoRet"], 38);
        let n = names(&oci);
        for want in [
            "read",
            "write",
            "chown",
            "personality",
            "arch_prctl",
            "landlock_create_ruleset",
            "clone",
            "kexec_load",
        ] {
            assert!(n.contains(&want.to_string()), "{want} missing: {n:?}");
        }
        assert!(
            !n.contains(&"mount".to_string()),
            "mount needs CAP_SYS_ADMIN"
        );
        let personality = oci["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"][0] == "personality")
            .unwrap();
        assert_eq!(personality["args"][0]["op"], "SCMP_CMP_EQ");
        let kexec = oci["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"][0] == "kexec_load")
            .unwrap();
        assert_eq!(kexec["errnoRet"], 1);
    }

    #[test]
    fn excludes_and_other_arches_and_old_kernels_drop_rules() {
        let oci = to_oci(&sample(), &["CAP_SYS_ADMIN"], "aarch64", (5, 10));
        assert_eq!(
            oci["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        let n = names(&oci);
        assert!(n.contains(&"mount".to_string()));
        assert!(
            !n.contains(&"clone".to_string()),
            "excluded with CAP_SYS_ADMIN"
        );
        assert!(!n.contains(&"arch_prctl".to_string()), "amd64 only");
        assert!(
            !n.contains(&"landlock_create_ruleset".to_string()),
            "needs 5.13"
        );
        assert!(!n.contains(&"chown".to_string()), "needs CAP_CHOWN");
    }

    #[test]
    fn versions_parse_like_uname_releases() {
        assert_eq!(parse_version("6.1.0-13-amd64"), (6, 1));
        assert_eq!(parse_version("5.13"), (5, 13));
        assert_eq!(parse_version(""), (0, 0));
    }
}
