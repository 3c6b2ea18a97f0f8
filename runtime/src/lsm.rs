//! Linux security modules: `process.apparmorProfile`,
//! `process.selinuxLabel` and `linux.mountLabel`.
//!
//! A label the config asks for is a confinement the caller relies on, so it
//! is never dropped: when the LSM is enabled it is applied, when it is not
//! the container (or exec) is refused before anything is created. runc does
//! the same for SELinux (same message) and fails for AppArmor when the
//! profile cannot be applied; berth says why up front. Labels take effect at
//! the process's execve: they are written to the calling thread's
//! `attr/exec` through a verified procfs (see `procfs`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Process, Spec};

use crate::procfs::ProcFs;

/// Magic number of selinuxfs (linux/magic.h).
const SELINUX_MAGIC: i64 = 0xf97c_ff8c;

/// AppArmor is enabled: its securityfs directory exists and the module says
/// so (runc's `apparmor.IsEnabled`).
pub fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").is_dir()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

/// SELinux is enabled: selinuxfs is mounted at /sys/fs/selinux and our own
/// context is a real one (go-selinux's `GetEnabled`).
pub fn selinux_enabled() -> bool {
    let Ok(st) = nix::sys::statfs::statfs("/sys/fs/selinux") else {
        return false;
    };
    if st.filesystem_type().0 != SELINUX_MAGIC {
        return false;
    }
    std::fs::read_to_string("/proc/self/attr/current")
        .is_ok_and(|c| !c.trim_end_matches('\0').trim().is_empty() && c.trim() != "kernel")
}

/// Refuses a config whose labels cannot be honoured on this host.
pub fn validate(spec: &Spec) -> Result<()> {
    if let Some(p) = spec.process() {
        validate_process(p)?;
    }
    let mount_label = spec
        .linux()
        .as_ref()
        .and_then(|l| l.mount_label().as_deref())
        .filter(|l| !l.is_empty());
    if let Some(label) = mount_label {
        if !selinux_enabled() {
            bail!(
                "linux.mountLabel {label:?} is specified in config, but selinux is disabled or not supported"
            );
        }
    }
    Ok(())
}

/// Refuses a process (container or exec) whose labels cannot be honoured.
pub fn validate_process(p: &Process) -> Result<()> {
    if let Some(profile) = apparmor_profile(p) {
        if !apparmor_enabled() {
            bail!(
                "apparmor profile {profile:?} specified but AppArmor is not enabled on this system"
            );
        }
    }
    if selinux_label(p).is_some() && !selinux_enabled() {
        bail!("selinux label is specified in config, but selinux is disabled or not supported");
    }
    Ok(())
}

/// Arms the process's labels for its execve. Call in the process itself,
/// on the thread that will exec, before privileges are dropped.
pub fn apply_exec_labels(p: &Process) -> Result<()> {
    let profile = apparmor_profile(p);
    let label = selinux_label(p);
    if profile.is_none() && label.is_none() {
        return Ok(());
    }
    // Checked again here: exec paths that skipped validation must not run
    // unconfined either.
    validate_process(p)?;
    let procfs = ProcFs::open()?;
    if let Some(profile) = profile {
        // Newer kernels keep AppArmor's attributes in their own directory
        // (stacking LSMs); older ones only have the shared attr/exec.
        let rel = if procfs.thread_self_has("attr/apparmor/exec") {
            "attr/apparmor/exec"
        } else {
            "attr/exec"
        };
        procfs
            .write_thread_self(rel, &format!("exec {profile}"))
            .with_context(|| format!("apply apparmor profile {profile:?}"))?;
    }
    if let Some(label) = label {
        procfs
            .write_thread_self("attr/exec", label)
            .with_context(|| format!("set selinux exec label {label:?}"))?;
    }
    Ok(())
}

/// `context="<label>"` to add to a tmpfs/devpts mount's data when the
/// config has a mount label (only ever set with SELinux enabled: see
/// [`validate`]).
pub fn mount_context(spec: &Spec) -> Option<String> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.mount_label().as_deref())
        .filter(|l| !l.is_empty())
        .map(|l| format!("context=\"{l}\""))
}

fn apparmor_profile(p: &Process) -> Option<&str> {
    p.apparmor_profile().as_deref().filter(|s| !s.is_empty())
}

fn selinux_label(p: &Process) -> Option<&str> {
    p.selinux_label().as_deref().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(extra: serde_json::Value) -> Process {
        let mut v = serde_json::json!({"cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn unset_or_empty_labels_need_no_lsm() {
        validate_process(&process(serde_json::json!({}))).unwrap();
        validate_process(&process(serde_json::json!({"apparmorProfile": ""}))).unwrap();
    }

    #[test]
    fn labels_are_refused_exactly_when_the_lsm_is_off() {
        let aa = validate_process(&process(serde_json::json!({"apparmorProfile": "x"})));
        assert_eq!(aa.is_ok(), apparmor_enabled());
        if let Err(e) = aa {
            assert!(e.to_string().contains("AppArmor is not enabled"), "{e}");
        }
        let se = validate_process(&process(serde_json::json!({"selinuxLabel": "a:b:c:s0"})));
        assert_eq!(se.is_ok(), selinux_enabled());
    }
}
