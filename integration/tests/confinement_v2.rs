//! Confinement on cgroup v2. This host is hybrid, so `v2_in_private_mount_namespace`
//! re-runs this test binary in a private mount namespace where cgroup2 (the unified
//! hierarchy, which here delegates only hugetlb besides the core files) is mounted on
//! /sys/fs/cgroup; every berth it starts then sees a pure v2 host. The helper tests are
//! `#[ignore]`d so they only run there, and the parent checks each one really passed.

mod confinement_common;

use anyhow::{Context, Result};
use berth_integration::harness::*;
use confinement_common::*;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "BERTH_CONFINEMENT_V2_CHILD";
const CHILD_TESTS: &[&str] = &[
    "v2_pause_resume_and_ps",
    "v2_hugetlb_limit_and_update",
    "v2_unavailable_controllers_are_clear_errors",
    "v2_events_stream_ends_with_container",
    "v2_rootless_in_a_delegated_cgroup",
    "v2_frozen_cgroup_is_refused",
    "v2_exec_cgroup_joins_a_sub_cgroup",
];

#[test]
fn v2_in_private_mount_namespace() -> Result<()> {
    if !is_root() {
        skip("needs root");
        return Ok(());
    }
    if !Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified");
        return Ok(());
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--ignored", "--nocapture", "--test-threads=2", "v2_"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only raw syscalls run between fork and exec (nix copies the short paths
    // onto the stack).
    unsafe {
        cmd.pre_exec(|| {
            unshare(CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some("cgroup2"),
                "/sys/fs/cgroup",
                Some("cgroup2"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            Ok(())
        });
    }
    let child = cmd.spawn().context("spawn v2 helper")?;
    let child_pid = child.id();
    let out = child.wait_with_output()?;
    // The helper's guards clean up even when it fails; this catches one that died.
    remove_leftovers(child_pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "v2 helper failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for t in CHILD_TESTS {
        assert!(
            stdout.contains(&format!("test {t} ... ok")),
            "{t} did not pass in the v2 namespace:\n{stdout}"
        );
    }
    Ok(())
}

/// Cgroups the helper (pid `child_pid`) may have left, seen from here under /unified.
fn remove_leftovers(child_pid: u32) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup/unified") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("berth-v2-") && name.contains(&format!("-{child_pid}-")) {
            eprintln!("removing leftover cgroup {name}");
            let dir = e.path();
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            std::thread::sleep(Duration::from_millis(100));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Helper tests run only inside the v2 namespace.
fn in_v2_namespace() -> bool {
    std::env::var_os(CHILD_ENV).is_some() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_pause_resume_and_ps() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    let cg = CgroupGuard::new("berth-v2-pause");
    let rt = Runtime::new()?;
    let id = unique("pause");
    let mut b = bundle_in(&cg)?;
    b.sh(&format!("sleep 600 & {COUNTER_SCRIPT}"));
    start_detached(&rt, &id, &b)?;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rt.root.path().join(&id).join("state.json"))?)?;
    assert_eq!(state["cgroup"]["mode"], "V2", "{state}");

    check_pause_resume(&rt, &id, &b)?;
    assert_eq!(cg.read("", "cgroup.freeze")?, "0");

    // ps lists exactly the cgroup.procs members (read while frozen so none come and go).
    rt.ok(&["pause", &id])?;
    assert_eq!(cg.read("", "cgroup.freeze")?, "1");
    let ps: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])?)?;
    let mut procs: Vec<i64> = cg
        .read("", "cgroup.procs")?
        .lines()
        .map(|l| l.parse())
        .collect::<Result<_, _>>()?;
    procs.sort_unstable();
    assert_eq!(ps, procs);
    assert!(ps.len() >= 2, "init and sleep expected: {ps:?}");
    assert!(ps.contains(&rt.state(&id)?["pid"].as_i64().unwrap_or(0)));
    rt.ok(&["resume", &id])?;

    rt.ok(&["delete", "--force", &id])?;
    assert!(cg.existing_dirs().is_empty(), "{:?}", cg.existing_dirs());
    Ok(())
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_hugetlb_limit_and_update() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    let cg = CgroupGuard::new("berth-v2-huge");
    let rt = Runtime::new()?;
    let id = unique("huge");
    let mut b = bundle_in(&cg)?;
    set_resource(
        &mut b,
        "hugepageLimits",
        json!([{"pageSize": "2MB", "limit": 4 << 20}]),
    );
    b.sh("sleep 600");
    start_detached(&rt, &id, &b)?;
    assert_eq!(cg.read("", "hugetlb.2MB.max")?, (4 << 20).to_string());

    let out = update_stdin(
        &rt,
        &id,
        r#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}]}"#,
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cg.read("", "hugetlb.2MB.max")?, "2097152");
    // unified keys of a delegated controller are fine too.
    let out = update_stdin(&rt, &id, r#"{"unified":{"hugetlb.2MB.max":"6291456"}}"#)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cg.read("", "hugetlb.2MB.max")?, "6291456");

    let data = stats(&rt, &id)?;
    assert!(data["hugetlb"].get("2MB").is_some(), "{data}");
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        rt.root.path().join(&id).join("resources.json"),
    )?)?;
    assert_eq!(
        rec["hugepageLimits"],
        json!([{"pageSize": "2MB", "limit": 2097152}])
    );
    assert_eq!(rec["unified"]["hugetlb.2MB.max"], "6291456");

    rt.ok(&["delete", "--force", &id])?;
    assert!(cg.existing_dirs().is_empty(), "{:?}", cg.existing_dirs());
    Ok(())
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_unavailable_controllers_are_clear_errors() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    let cg = CgroupGuard::new("berth-v2-unavail");
    let rt = Runtime::new()?;
    let id = unique("unavail");
    let mut b = bundle_in(&cg)?;
    set_resource(
        &mut b,
        "hugepageLimits",
        json!([{"pageSize": "2MB", "limit": 4 << 20}]),
    );
    b.sh("sleep 600");
    start_detached(&rt, &id, &b)?;
    for (args, want) in [
        (
            vec!["--memory", "10M"],
            "controller \"memory\" is not available",
        ),
        (
            vec!["--pids-limit", "10"],
            "controller \"pids\" is not available",
        ),
        (
            vec!["--cpu-quota", "20000"],
            "controller \"cpu\" is not available",
        ),
        (
            vec!["--cpuset-cpus", "0"],
            "controller \"cpuset\" is not available",
        ),
        (
            vec!["--blkio-weight", "100"],
            "controller \"io\" is not available",
        ),
    ] {
        let mut full = vec!["update"];
        full.extend(args.iter().copied());
        full.push(&id);
        let err = fails(&rt, &full)?;
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    // The valid part of a request is not applied when another part cannot be.
    let out = update_stdin(
        &rt,
        &id,
        r#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}],"unified":{"memory.max":"1"}}"#,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("\"memory\" is not available"), "{err}");
    assert_eq!(cg.read("", "hugetlb.2MB.max")?, (4 << 20).to_string());
    assert_eq!(rt.status(&id)?, "running");

    // Creating with a limit for a controller v2 lacks here fails cleanly too.
    let cg2 = CgroupGuard::new("berth-v2-unavail");
    let mut b2 = bundle_in(&cg2)?;
    set_resource(&mut b2, "pids", json!({"limit": 10}));
    b2.sh("true");
    let (code, _, err) = rt.run(&unique("unavail-create"), &b2)?;
    assert_ne!(code, 0);
    assert!(err.contains("\"pids\" is not available"), "{err}");
    assert!(cg2.existing_dirs().is_empty(), "{:?}", cg2.existing_dirs());
    Ok(())
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_events_stream_ends_with_container() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    let cg = CgroupGuard::new("berth-v2-events");
    let rt = Runtime::new()?;
    let id = unique("events");
    let mut b = bundle_in(&cg)?;
    b.sh("while [ ! -e /tmp/stop ]; do sleep 0.05; done");
    start_detached(&rt, &id, &b)?;
    // No memory controller here: the stream still delivers stats, then ends with init.
    let mut events = EventStream::start(&rt, &id, "200ms")?;
    poll(Duration::from_secs(5), || {
        events.events().ok().filter(|e| e.len() >= 2)
    })
    .context("no stats events")?;
    std::fs::write(b.rootfs().join("tmp/stop"), "")?;
    let (code, evs) = events.wait(Duration::from_secs(5))?;
    assert_eq!(code, 0, "{evs:?}");
    for e in &evs {
        assert_eq!(e["type"], "stats", "{e}");
        assert_eq!(e["id"], json!(id));
        assert!(e["data"]["hugetlb"].is_object(), "{e}");
    }
    Ok(())
}

/// Rootless with a delegated cgroup, as systemd gives each user on a v2
/// host: the user owns a subtree (and its cgroup.procs, subtree_control),
/// its processes already run inside it, and berth creates the container's
/// cgroup there, moves init into it and applies limits without privileges.
#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_rootless_in_a_delegated_cgroup() -> Result<()> {
    use berth_integration::rootless::{self, UID};
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    // Dropped last to first: container, runner, delegated subtree.
    let delegated = CgroupGuard::new("berth-v2-deleg");
    let deleg_dir = delegated.dir("");
    std::fs::create_dir(&deleg_dir)?;
    std::fs::write(deleg_dir.join("cgroup.subtree_control"), "+hugetlb")?;
    let runner = CgroupGuard {
        name: format!("{}/runner", delegated.name),
    };
    std::fs::create_dir(runner.dir(""))?;
    for path in [
        deleg_dir.clone(),
        deleg_dir.join("cgroup.procs"),
        deleg_dir.join("cgroup.subtree_control"),
        deleg_dir.join("cgroup.threads"),
        runner.dir(""),
        runner.dir("").join("cgroup.procs"),
    ] {
        std::os::unix::fs::chown(&path, Some(UID), Some(UID))?;
    }
    let container = CgroupGuard {
        name: format!("{}/c1", delegated.name),
    };

    let rt = rootless::user_runtime()?;
    let mut b = rootless::rootless_bundle(&rt)?;
    b.config["linux"]["cgroupsPath"] = json!(container.cgroups_path());
    set_resource(
        &mut b,
        "hugepageLimits",
        json!([{"pageSize": "2MB", "limit": 4 << 20}]),
    );
    b.args(&["sleep", "600"]);
    b.write()?;
    let id = unique("deleg");
    let berth = |args: &[&str]| {
        rootless::as_user_in_cgroup(&rt, args, &runner.dir("").join("cgroup.procs"))
            .and_then(|cmd| rootless::ok_cmd(&rt, cmd))
    };
    berth(&["create", "--bundle", &b.path().display().to_string(), &id])?;
    berth(&["start", &id])?;
    let pid = rt.state(&id)?["pid"].as_i64().context("pid")?;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rt.root.path().join(&id).join("state.json"))?)?;
    assert_eq!(state["cgroup"]["mode"], "V2", "{state}");
    assert_eq!(state["rootless"], true);
    // The unified line (the host's v1 hierarchies still list theirs).
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert_eq!(
        cgroups.lines().find(|l| l.starts_with("0::")),
        Some(format!("0::/{}", container.name).as_str()),
        "{cgroups}"
    );
    assert_eq!(
        container.read("", "hugetlb.2MB.max")?,
        (4 << 20).to_string()
    );
    let ps: Vec<i64> = serde_json::from_str(&berth(&["ps", "--format", "json", &id])?)?;
    assert_eq!(ps, [pid]);
    berth(&["delete", "--force", &id])?;
    assert!(!container.dir("").exists(), "container cgroup left behind");
    Ok(())
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_frozen_cgroup_is_refused() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    // runc: "container's cgroup unexpectedly frozen"; placing init there would
    // freeze it (and its creator waiting for it) for ever.
    let cg = CgroupGuard::new("berth-v2-frozen");
    std::fs::create_dir_all(cg.dir(""))?;
    std::fs::write(cg.dir("").join("cgroup.freeze"), "1")?;
    let rt = Runtime::new()?;
    let mut b = bundle_in(&cg)?;
    b.args(&["true"]);
    b.write()?;
    let id = unique("frozen");
    let mut child = rt
        .cmd(&[
            "run",
            "-d",
            "--bundle",
            &b.path().display().to_string(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let status = poll(Duration::from_secs(20), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.context("run -d into a frozen v2 cgroup hung")?;
    assert!(!status.success(), "run -d into a frozen cgroup succeeded");
    assert!(
        rt.log_text()
            .contains("container's cgroup unexpectedly frozen"),
        "{}",
        rt.log_text()
    );
    assert!(
        cg.dir("").is_dir(),
        "the refused container removed the cgroup"
    );
    Ok(())
}

#[test]
#[ignore = "runs inside v2_in_private_mount_namespace"]
fn v2_exec_cgroup_joins_a_sub_cgroup() -> Result<()> {
    assert!(
        in_v2_namespace(),
        "run through v2_in_private_mount_namespace"
    );
    // Same scenario through runc and berth: `exec --cgroup sub` lands in the
    // container's sub-cgroup of the unified tree; `..` is refused.
    let mut seen = Vec::new();
    for (name, rt) in [("runc", Runtime::runc()?), ("berth", Runtime::new()?)] {
        let cg = CgroupGuard::new("berth-v2-execcg");
        let mut b = bundle_in(&cg)?;
        b.args(&["sleep", "600"]);
        let id = unique("execcg");
        start_detached(&rt, &id, &b)?;
        std::fs::create_dir(cg.dir("").join("sub"))?;
        let out = rt.ok(&["exec", "--cgroup", "sub", &id, "cat", "/proc/self/cgroup"])?;
        let o = rt.output(&["exec", "--cgroup", "../x", &id, "true"])?;
        assert_eq!(o.status.code(), Some(255), "{name}: --cgroup ../x accepted");
        assert!(
            rt.log_text().contains("is not a sub cgroup path"),
            "{name}: {}",
            rt.log_text()
        );
        rt.ok(&["delete", "--force", &id])?;
        // The kernel still lists the host's v1 hierarchies; the unified line
        // is the one this namespace's cgroup2 mount is about.
        let unified = out
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .with_context(|| format!("{name}: no unified line in {out}"))?
            .replace(&cg.name, "<cg>");
        seen.push((name, unified));
    }
    assert!(seen[0].1.ends_with("<cg>/sub"), "runc: {seen:?}");
    assert_eq!(seen[1].1, seen[0].1, "berth vs runc: {seen:?}");
    Ok(())
}
