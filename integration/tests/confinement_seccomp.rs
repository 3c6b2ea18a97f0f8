//! seccomp in real containers: Debian containers-common's default profile (Docker format,
//! converted to the OCI `linux.seccomp` form here as podman does) denies a syscall that
//! the container's capabilities would allow, and a tiny custom profile shows errnoRet.

mod confinement_common;

use anyhow::{Context, Result};
use berth_integration::harness::*;
use serde_json::{json, Value};

const PROFILE: &str = "/usr/share/containers/seccomp.json";

/// Go's name for this architecture, as used by the profile's includes/excludes.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn native_scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "",
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

/// Docker/containers-common profile → OCI LinuxSeccomp for a process holding `caps`:
/// the native arch map entry gives the architectures, and each rule is kept only when its
/// includes (arches, caps) hold and its excludes do not (libpod's conversion rules).
fn docker_to_oci(profile: &Value, caps: &[String]) -> Value {
    let mut archs: Vec<String> = strings(&profile["architectures"]);
    for m in profile["archMap"].as_array().into_iter().flatten() {
        if m["architecture"] == native_scmp_arch() {
            archs.push(native_scmp_arch().to_string());
            archs.extend(strings(&m["subArchitectures"]));
        }
    }
    let has = |c: &String| caps.contains(c);
    let mut syscalls = Vec::new();
    for s in profile["syscalls"].as_array().into_iter().flatten() {
        let inc_arches = strings(&s["includes"]["arches"]);
        let excluded = strings(&s["excludes"]["arches"])
            .iter()
            .any(|a| a == go_arch())
            || strings(&s["excludes"]["caps"]).iter().any(has);
        let included = (inc_arches.is_empty() || inc_arches.iter().any(|a| a == go_arch()))
            && strings(&s["includes"]["caps"]).iter().all(has);
        if excluded || !included {
            continue;
        }
        let mut names = strings(&s["names"]);
        names.extend(s["name"].as_str().map(str::to_string));
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

/// Gives the process `caps` in every set the fixture lists (and a writable /tmp).
fn set_caps(b: &mut Bundle, caps: &[String]) {
    b.config["root"]["readonly"] = json!(false);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = json!(caps);
    }
}

/// swapoff is denied outright by the profile (errnoRet 1). With CAP_SYS_ADMIN the kernel
/// would let it through to fail with EINVAL on a file that is not swap, so EPERM can only
/// come from the filter; the same container without the profile shows the EINVAL.
#[test]
fn containers_common_profile_denies_with_eperm() -> Result<()> {
    if !confinement_common::is_root() {
        skip("needs root");
        return Ok(());
    }
    let profile: Value = serde_json::from_slice(
        &std::fs::read(PROFILE).with_context(|| format!("read {PROFILE} (containers-common)"))?,
    )?;
    let rt = Runtime::new()?;
    let mut caps = strings(&Bundle::busybox()?.config["process"]["capabilities"]["bounding"]);
    caps.push("CAP_SYS_ADMIN".to_string());
    let script = "touch /tmp/notswap; swapoff /tmp/notswap; echo rc=$?; id -u";

    let mut plain = Bundle::busybox()?;
    set_caps(&mut plain, &caps);
    plain.sh(script);
    let (code, out, err) = rt.run(&unique("noseccomp"), &plain)?;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Invalid argument"), "without seccomp: {err}");

    let mut confined = Bundle::busybox()?;
    set_caps(&mut confined, &caps);
    confined.config["linux"]["seccomp"] = docker_to_oci(&profile, &caps);
    confined.sh(script);
    let (code2, out2, err2) = rt.run(&unique("seccomp"), &confined)?;
    assert_eq!(code2, 0, "{err2}");
    assert!(
        err2.contains("Operation not permitted"),
        "with the profile: {err2}"
    );
    // Everything the profile allows still works (shell, fork/exec, touch, id).
    assert_eq!(out, "rc=1\n0\n");
    assert_eq!(out2, out);
    Ok(())
}

/// A custom profile: allow everything except mkdir/mkdirat, which return ENOSYS (38)
/// instead of running, and rmdir, which returns EACCES (13).
#[test]
fn custom_profile_errno_ret() -> Result<()> {
    if !confinement_common::is_root() {
        skip("needs root");
        return Ok(());
    }
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    std::fs::create_dir(b.rootfs().join("tmp/keep"))?;
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [native_scmp_arch()],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ]
    });
    b.sh("mkdir /tmp/newdir; echo mkdir=$?; rmdir /tmp/keep; echo rmdir=$?; echo done");
    let (code, out, err) = rt.run(&unique("errnoret"), &b)?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "mkdir=1\nrmdir=1\ndone\n");
    assert!(err.contains("Function not implemented"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!b.rootfs().join("tmp/newdir").exists());
    assert!(b.rootfs().join("tmp/keep").is_dir());
    Ok(())
}
