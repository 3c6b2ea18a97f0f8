//! Runtime confinement through cgroups on this (hybrid or v1) host, with real busybox
//! containers: memory limit + OOM events, pids limit vs. a fork loop, CPU quota,
//! pause/resume, live `update` (flags, --resources FILE and stdin), bad input, and
//! `delete` removing the cgroup from every hierarchy. v2 is covered by confinement_v2.rs.

mod confinement_common;

use anyhow::{Context, Result};
use berth_integration::harness::*;
use confinement_common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// These tests drive v1 controller files directly: skip (loudly) elsewhere.
fn v1_host() -> bool {
    if !is_root() {
        skip("needs root");
        return false;
    }
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        skip("no cgroup v1 memory hierarchy (see confinement_v2.rs)");
        return false;
    }
    true
}

const MIB: u64 = 1 << 20;

#[test]
fn memory_limit_oom_kills_and_events_report_it() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-oom");
    let rt = Runtime::new()?;
    let id = unique("oom");
    let mut b = bundle_in(&cg)?;
    let limit = 32 * MIB;
    set_resource(&mut b, "memory", json!({"limit": limit, "swap": limit}));
    // Wait for the go file so the event stream is attached before memory runs out, then
    // double a shell string until the cgroup's OOM killer ends it.
    b.sh("while [ ! -e /tmp/go ]; do sleep 0.05; done; x=a; while true; do x=\"$x$x\"; done");
    b.write()?;
    let bundle = b.path().display().to_string();
    let run = {
        let mut c = rt.cmd(&["run", "--bundle", &bundle, &id]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.spawn().context("spawn berth run")?
    };
    let mut run = ChildGuard(run);
    wait_running(&rt, &id)?;

    let data = stats(&rt, &id)?;
    assert_eq!(data["memory"]["usage"]["limit"], json!(limit), "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert_eq!(
        cg.read("memory", "memory.memsw.limit_in_bytes")?,
        limit.to_string()
    );

    let mut events = EventStream::start(&rt, &id, "1s")?;
    // The stream must be attached (its OOM watcher registered) before memory runs out.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(b.rootfs().join("tmp/go"), "")?;
    let status = run.wait(Duration::from_secs(30))?;
    assert_eq!(status, 137, "container should die of SIGKILL (OOM)");

    let (code, evs) = events.wait(Duration::from_secs(10))?;
    assert_eq!(code, 0, "events exits 0 when the container stops: {evs:?}");
    assert!(
        evs.iter().any(|e| *e == json!({"type": "oom", "id": id})),
        "no oom event in {evs:?}"
    );
    assert!(!cgroup_exists(&cg.name), "run left the cgroup behind");
    Ok(())
}

#[test]
fn pids_limit_contains_fork_loop() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-pids");
    let rt = Runtime::new()?;
    let mut b = bundle_in(&cg)?;
    let limit = 10;
    set_resource(&mut b, "pids", json!({"limit": limit}));
    // Every `sleep &` is a fork; ash exits with "can't fork" at the first refused one.
    b.sh("i=0; while [ $i -lt 40 ]; do i=$((i+1)); sleep 10 & echo spawned $i; done");
    let (code, out, err) = rt.run(&unique("pids"), &b)?;
    let spawned = out.lines().filter(|l| l.starts_with("spawned")).count();
    assert_ne!(code, 0, "the fork loop should have failed: {out}");
    assert!(
        err.contains("can't fork") && err.contains("Resource temporarily unavailable"),
        "{err}"
    );
    // The shell itself is one of the `limit` tasks; allow one more for a runtime helper
    // that might not have left the cgroup yet when the loop starts.
    assert!(
        (limit - 2..limit).contains(&spawned),
        "{spawned} spawns with pids.max {limit}: {out}"
    );
    Ok(())
}

#[test]
fn cpu_quota_caps_a_busy_loop() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-cpu");
    let rt = Runtime::new()?;
    let id = unique("cpu");
    let mut b = bundle_in(&cg)?;
    set_resource(&mut b, "cpu", json!({"quota": 20000, "period": 100000}));
    b.sh("while :; do :; done");
    start_detached(&rt, &id, &b)?;
    assert_eq!(cg.read("cpu", "cpu.cfs_quota_us")?, "20000");

    let usage = |d: &serde_json::Value| d["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    let t0 = std::time::Instant::now();
    let u0 = usage(&stats(&rt, &id)?);
    std::thread::sleep(Duration::from_millis(1500));
    let data = stats(&rt, &id)?;
    let share = (usage(&data) - u0) as f64 / t0.elapsed().as_nanos() as f64;
    assert!(share <= 0.30, "busy loop got {:.0}% CPU", share * 100.0);
    assert!(share >= 0.03, "busy loop barely ran: {:.0}%", share * 100.0);
    assert!(
        data["cpu"]["throttling"]["throttledPeriods"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "no throttling reported: {data}"
    );

    // The stream: one stats event per interval, usage growing, no OOM.
    let events = EventStream::start(&rt, &id, "250ms")?;
    let evs = poll(Duration::from_secs(5), || {
        events.events().ok().filter(|e| e.len() >= 3)
    })
    .context("fewer than 3 stats events in 5s")?;
    let totals: Vec<u64> = evs
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "stats", "{e}");
            assert_eq!(e["id"], json!(id));
            usage(&e["data"])
        })
        .collect();
    assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
    Ok(())
}

#[test]
fn pause_freezes_and_resume_thaws() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-pause");
    let rt = Runtime::new()?;
    let id = unique("pause");
    let mut b = bundle_in(&cg)?;
    b.sh(COUNTER_SCRIPT);
    start_detached(&rt, &id, &b)?;
    check_pause_resume(&rt, &id, &b)?;
    assert_eq!(cg.read("freezer", "freezer.state")?, "THAWED");

    // A paused container can be deleted with --force (it is thawed to die).
    rt.ok(&["pause", &id])?;
    assert_eq!(cg.read("freezer", "freezer.state")?, "FROZEN");
    rt.ok(&["delete", "--force", &id])?;
    assert!(cg.existing_dirs().is_empty(), "{:?}", cg.existing_dirs());

    let err = fails(&rt, &["pause", "nope"])?;
    assert!(err.contains("container \"nope\" does not exist"), "{err}");
    Ok(())
}

#[test]
fn pause_and_update_refuse_stopped_container() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-stopped");
    let rt = Runtime::new()?;
    let id = unique("stopped");
    let mut b = bundle_in(&cg)?;
    b.sh("true");
    start_detached(&rt, &id, &b)?;
    rt.wait_status(&id, "stopped")?;
    for args in [
        vec!["pause", id.as_str()],
        vec!["update", "--pids-limit", "5", id.as_str()],
    ] {
        let err = fails(&rt, &args)?;
        assert!(err.contains("container not running"), "{args:?}: {err}");
    }
    let err = fails(&rt, &["resume", &id])?;
    assert!(err.contains("container not paused"), "{err}");
    let err = fails(&rt, &["events", "--stats", &id])?;
    assert!(err.contains("is not running"), "{err}");
    Ok(())
}

#[test]
fn update_changes_limits_live() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-update");
    let rt = Runtime::new()?;
    let id = unique("update");
    let mut b = bundle_in(&cg)?;
    set_resource(&mut b, "pids", json!({"limit": 50}));
    b.sh("sleep 600");
    start_detached(&rt, &id, &b)?;
    assert_eq!(cg.read("pids", "pids.max")?, "50");

    // runc's flags, with go-units sizes.
    rt.ok(&[
        "update",
        "--pids-limit",
        "20",
        "--memory",
        "64M",
        "--memory-swap",
        "128m",
        "--cpu-quota",
        "30000",
        "--cpu-period",
        "100000",
        "--cpu-share",
        "512",
        &id,
    ])?;
    assert_eq!(cg.read("pids", "pids.max")?, "20");
    assert_eq!(
        cg.read("memory", "memory.limit_in_bytes")?,
        (64 * MIB).to_string()
    );
    assert_eq!(
        cg.read("memory", "memory.memsw.limit_in_bytes")?,
        (128 * MIB).to_string()
    );
    assert_eq!(cg.read("cpu", "cpu.cfs_quota_us")?, "30000");
    assert_eq!(cg.read("cpu", "cpu.shares")?, "512");
    let data = stats(&rt, &id)?;
    assert_eq!(data["pids"]["limit"], json!(20));
    assert_eq!(data["memory"]["usage"]["limit"], json!(64 * MIB));

    // containerd: --resources=- with LinuxResources JSON on stdin; zero = unchanged.
    let out = update_stdin(
        &rt,
        &id,
        r#"{"memory":{"limit":50331648,"swap":0},"cpu":{"shares":0,"quota":0},"pids":{"limit":30}}"#,
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cg.read("pids", "pids.max")?, "30");
    assert_eq!(
        cg.read("memory", "memory.limit_in_bytes")?,
        (48 * MIB).to_string()
    );
    assert_eq!(cg.read("cpu", "cpu.shares")?, "512", "zero means unchanged");
    let data = stats(&rt, &id)?;
    assert_eq!(data["pids"]["limit"], json!(30));
    assert_eq!(data["memory"]["usage"]["limit"], json!(48 * MIB));

    // podman: --resources=FILE.
    let file = rt.root.path().join("res.json");
    std::fs::write(&file, r#"{"pids":{"limit":-1},"cpu":{"cpus":"0"}}"#)?;
    rt.ok(&[
        "update",
        &format!("--resources={}", file.display()),
        "--pids-limit",
        "3", // ignored when --resources is given, as in runc
        &id,
    ])?;
    assert_eq!(cg.read("pids", "pids.max")?, "max");
    assert_eq!(cg.read("cpuset", "cpuset.cpus")?, "0");
    assert!(stats(&rt, &id)?["pids"].get("limit").is_none());

    // The merged limits are recorded for later updates.
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        rt.root.path().join(&id).join("resources.json"),
    )?)?;
    assert_eq!(rec["memory"]["limit"], json!(48 * MIB));
    assert_eq!(rec["memory"]["swap"], json!(128 * MIB));
    assert_eq!(rec["cpu"]["quota"], json!(30000));
    assert_eq!(rec["cpu"]["shares"], json!(512));
    assert_eq!(rec["cpu"]["cpus"], json!("0"));
    assert_eq!(rec["pids"]["limit"], json!(-1));
    Ok(())
}

#[test]
fn update_rejects_bad_input_and_leaves_container_untouched() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-badupd");
    let rt = Runtime::new()?;
    let id = unique("badupd");
    let mut b = bundle_in(&cg)?;
    set_resource(&mut b, "pids", json!({"limit": 50}));
    b.sh("sleep 600");
    start_detached(&rt, &id, &b)?;
    let untouched = |rt: &Runtime| -> Result<()> {
        assert_eq!(cg.read("pids", "pids.max")?, "50");
        assert_eq!(
            cg.read("memory", "memory.limit_in_bytes")?.parse::<u64>()?,
            i64::MAX as u64 & !4095,
            "memory limit changed"
        );
        assert_eq!(rt.status(&id)?, "running");
        Ok(())
    };

    let cases: &[(&str, &str)] = &[
        ("{\"pids\": {\"limit\": 7", "invalid resources JSON"),
        (
            "{\"pids\": {\"limit\": \"seven\"}}",
            "invalid resources JSON",
        ),
        // A hybrid host: runc's v1 manager refuses `unified` with this wording.
        (
            r#"{"pids":{"limit":7},"memory":{"limit":10485760},"unified":{"memory.max":"1"}}"#,
            "invalid configuration: cannot use unified on cgroup v1",
        ),
        (
            r#"{"pids":{"limit":7},"hugepageLimits":[{"pageSize":"3MB","limit":0}]}"#,
            "page size \"3MB\" is not supported",
        ),
        (
            r#"{"pids":{"limit":7},"unified":{"../x":"1"}}"#,
            "cannot use unified on cgroup v1",
        ),
        // The kernel would take the memory limit, then refuse the quota.
        (
            r#"{"memory":{"limit":67108864},"cpu":{"quota":500}}"#,
            "invalid cpu quota 500",
        ),
    ];
    for (json, want) in cases {
        let out = update_stdin(&rt, &id, json)?;
        let err = format!("{}{}", String::from_utf8_lossy(&out.stderr), rt.log_text());
        assert!(!out.status.success(), "{json} accepted");
        assert!(err.contains(want), "{json}: want {want:?} in {err}");
        untouched(&rt)?;
    }
    for (args, want) in [
        (vec!["--memory", "lots"], "invalid value for memory"),
        (
            vec!["--pids-limit", "ten"],
            "invalid value \"ten\" for flag -pids-limit",
        ),
        (vec!["--cpu-quota", "1.5"], "invalid value for cpu-quota"),
        (vec!["--l3-cache-schema", "L3:0=f"], "Intel RDT/CAT"),
        (vec!["--mem-bw-schema", "MB:0=50"], "Intel RDT/MBA"),
    ] {
        let mut full = vec!["update"];
        full.extend(args.iter().copied());
        full.push(&id);
        let err = fails(&rt, &full)?;
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        untouched(&rt)?;
    }
    let err = fails(&rt, &["update", "--resources", "/nonexistent.json", &id])?;
    assert!(err.contains("/nonexistent.json"), "{err}");
    let err = fails(&rt, &["update", "--pids-limit", "5", "nope"])?;
    assert!(err.contains("container \"nope\" does not exist"), "{err}");
    // Kernel memory is accepted and ignored with a warning, like runc.
    rt.ok(&["update", "--kernel-memory", "10M", &id])?;
    assert!(rt.log_text().contains("Kernel memory settings are ignored"));
    untouched(&rt)?;
    Ok(())
}

#[test]
fn delete_removes_cgroup_from_every_hierarchy() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let cg = CgroupGuard::new("berth-del");
    let rt = Runtime::new()?;
    let id = unique("del");
    let mut b = bundle_in(&cg)?;
    set_resource(&mut b, "memory", json!({"limit": 64 * MIB}));
    b.sh("sleep 600 & sleep 600");
    start_detached(&rt, &id, &b)?;
    let dirs = cg.existing_dirs();
    for h in ["memory", "pids", "freezer", "cpu", "devices", "unified"] {
        assert!(
            dirs.contains(&cg.dir(h)),
            "no {h} cgroup while running: {dirs:?}"
        );
    }
    let err = fails(&rt, &["delete", &id])?;
    assert!(err.contains("is not stopped"), "{err}");
    rt.ok(&["delete", "--force", &id])?;
    assert!(
        cg.existing_dirs().is_empty(),
        "left behind: {:?}",
        cg.existing_dirs()
    );
    assert!(!rt.root.path().join(&id).exists());
    Ok(())
}

/// A `berth run` child killed on drop, so a failing test does not leave it running.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn wait(&mut self, limit: Duration) -> Result<i32> {
        let st = poll(limit, || self.0.try_wait().ok().flatten()).context("run did not exit")?;
        Ok(st.code().unwrap_or(-1))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_running(rt: &Runtime, id: &str) -> Result<()> {
    poll(Duration::from_secs(10), || {
        rt.state(id)
            .ok()
            .filter(|s| s["status"] == "running")
            .map(|_| ())
    })
    .with_context(|| format!("container {id} never ran: {}", rt.log_text()))
}
