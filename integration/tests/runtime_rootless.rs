//! berth run by an unprivileged user, the way rootless podman or a user
//! running runc by hand does: `spec --rootless`, a user namespace mapping
//! only the caller's own ids, no cgroup (this host delegates none), state
//! under `$XDG_RUNTIME_DIR/berth` by default.
//!
//! The tests run berth as a uid that has no passwd entry (so `list` shows
//! runc's `#uid` owner) and no rights on any cgroup hierarchy.

use anyhow::{Context, Result};
use berth_integration::harness::*;
use berth_integration::rootless::*;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::Command;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn rootless_run_create_exec_ps_kill_delete() -> Result<()> {
    if !is_root() {
        skip("needs root to switch to an unprivileged uid");
        return Ok(());
    }
    let rt = user_runtime()?;
    let mut b = rootless_bundle(&rt)?;

    // Foreground run: root inside, the caller's uid outside, exit status.
    b.sh("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; hostname; echo $$; exit 7");
    b.write()?;
    let bundle = b.path().display().to_string();
    let out = output(
        as_user(&rt, &["run", "--bundle", &bundle, &unique("rlrun")]),
        rt.root.path(),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", rt.log_text());
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let uid = UID.to_string();
    assert_eq!(
        words,
        ["0", "0", "0", &uid, "1", "0", &uid, "1", "berth", "1"],
        "{stdout}"
    );

    // create / start / state / list / exec / ps / kill --all / delete.
    b.args(&["sleep", "1000"]);
    b.write()?;
    let id = unique("rl");
    ok(&rt, &["create", "--bundle", &bundle, &id])?;
    ok(&rt, &["start", &id])?;
    let st: Value = serde_json::from_str(&ok(&rt, &["state", &id])?)?;
    assert_eq!(st["status"], "running");
    let init = st["pid"].as_i64().context("pid")?;
    let list: Value = serde_json::from_str(&ok(&rt, &["list", "--format", "json"])?)?;
    assert_eq!(list[0]["id"], id.as_str());
    // No passwd entry: runc's fallback owner name.
    assert_eq!(list[0]["owner"], format!("#{UID}"));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(rt.root.path().join(&id).join("state.json"))?)?;
    assert_eq!(saved["cgroup"], Value::Null, "no cgroup could be made");
    assert_eq!(saved["rootless"], true);

    // exec joins the user namespace before the pid namespace.
    assert_eq!(ok(&rt, &["exec", &id, "id", "-u"])?, "0\n");
    let failing = output(
        as_user(&rt, &["exec", &id, "sh", "-c", "exit 3"]),
        rt.root.path(),
    )?;
    assert_eq!(failing.status.code(), Some(3));
    let pid_file = rt.root.path().join("exec.pid");
    ok(
        &rt,
        &[
            "exec",
            "-d",
            "--pid-file",
            &pid_file.display().to_string(),
            &id,
            "sleep",
            "1000",
        ],
    )?;
    let exec_pid: i64 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    assert_eq!(
        std::fs::metadata(format!("/proc/{exec_pid}/ns/pid"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?,
        std::fs::metadata(format!("/proc/{init}/ns/pid"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?,
        "exec'd process is in the container's pid namespace"
    );
    // Without a cgroup, ps lists the processes of the pid namespace.
    let pids: Vec<i64> = serde_json::from_str(&ok(&rt, &["ps", "--format", "json", &id])?)?;
    assert_eq!(pids, [init.min(exec_pid), init.max(exec_pid)]);
    ok(&rt, &["kill", "--all", &id, "KILL"])?;
    ok(&rt, &["delete", "--force", &id])?;
    assert!(!rt.root.path().join(&id).exists());
    for pid in [init, exec_pid] {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "process {pid} survived delete --force");
    }
    Ok(())
}

#[test]
fn rootless_state_defaults_to_xdg_runtime_dir() -> Result<()> {
    if !is_root() {
        skip("needs root to switch to an unprivileged uid");
        return Ok(());
    }
    let rt = user_runtime()?;
    let mut b = rootless_bundle(&rt)?;
    b.args(&["sleep", "1000"]);
    b.write()?;
    let xdg = TempDir::new("berth-xdg")?;
    std::os::unix::fs::chown(xdg.path(), Some(UID), Some(UID))?;
    let id = unique("rlxdg");
    let berth = |args: &[&str]| {
        let mut c = Command::new(berth_bin());
        c.args(args)
            .uid(UID)
            .gid(UID)
            .env("XDG_RUNTIME_DIR", xdg.path());
        output(c, rt.root.path())
    };
    let bundle = b.path().display().to_string();
    let created = berth(&["create", "--bundle", &bundle, &id])?;
    // Removed whatever happened, as root (rootless state is plain files).
    let cleanup = || {
        let _ = Command::new(berth_bin())
            .arg("--root")
            .arg(xdg.path().join("berth"))
            .args(["delete", "--force", &id])
            .output();
    };
    let res = (|| -> Result<()> {
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        assert!(xdg
            .path()
            .join("berth")
            .join(&id)
            .join("state.json")
            .is_file());
        let listed = berth(&["list", "-q"])?;
        assert_eq!(String::from_utf8_lossy(&listed.stdout), format!("{id}\n"));
        let deleted = berth(&["delete", "--force", &id])?;
        assert!(deleted.status.success());
        assert!(!xdg.path().join("berth").join(&id).exists());
        Ok(())
    })();
    cleanup();
    res
}

#[test]
fn rootless_limits_without_a_cgroup_are_refused_naming_them() -> Result<()> {
    if !is_root() {
        skip("needs root to switch to an unprivileged uid");
        return Ok(());
    }
    let rt = user_runtime()?;
    let mut b = rootless_bundle(&rt)?;
    b.args(&["true"]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 33554432});
    b.config["linux"]["resources"]["pids"] = json!({"limit": 10});
    b.write()?;
    let id = unique("rllimit");
    let out = output(
        as_user(
            &rt,
            &["run", "--bundle", &b.path().display().to_string(), &id],
        ),
        rt.root.path(),
    )?;
    assert_eq!(out.status.code(), Some(1));
    let log = rt.log_text();
    assert!(
        log.contains("cannot apply its memory, pids limits without a cgroup"),
        "{log}"
    );
    assert!(log.contains("\"level\":\"error\""), "{log}");
    assert!(!rt.root.path().join(&id).exists(), "state dir left behind");
    assert!(!cgroup_exists(&id), "cgroup left behind");
    Ok(())
}
