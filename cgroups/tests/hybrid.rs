//! Real cgroup tests on a hybrid host (v1 controllers + cgroup2 at /sys/fs/cgroup/unified).
//! They need root; on hosts with another layout they are skipped with a message.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use berth_cgroups::{detect_mode, Cgroup, CgroupMode};
use common::{proc_state, read_line, read_trim, release, resources, Guard};
use nix::sys::signal::Signal;

fn hybrid_root() -> bool {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    match detect_mode() {
        Ok(CgroupMode::Hybrid) => true,
        other => {
            eprintln!("skipped: host cgroup layout is {other:?}, not hybrid");
            false
        }
    }
}

fn v1(g: &Guard, ctrl: &str, file: &str) -> String {
    read_trim(&g.cg.v1_dir(ctrl).expect("v1 controller dir").join(file))
}

#[test]
fn lifecycle_pids_freeze_destroy() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("life");
    let dirs = g.cg.dirs();
    assert!(dirs.len() >= 2, "v1 dirs plus unified: {dirs:?}");
    for d in &dirs {
        assert!(d.is_dir(), "{} created", d.display());
    }
    assert!(g.cg.exists());
    let unified =
        g.cg.unified_dir()
            .expect("hybrid has a unified dir")
            .to_path_buf();
    assert!(unified.starts_with("/sys/fs/cgroup/unified"));

    let pid = g.spawn_sleeper();
    g.cg.add_pid(pid).unwrap();
    assert_eq!(g.cg.pids().unwrap(), vec![pid]);
    // The process joined every hierarchy, the unified one included.
    for d in &dirs {
        let procs = read_trim(&d.join("cgroup.procs"));
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} in {}",
            d.display()
        );
    }

    // The runtime stores the cgroup in state.json and reloads it later.
    let json = serde_json::to_string(&g.cg).unwrap();
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g.cg);

    assert!(!g.cg.is_frozen().unwrap());
    back.freeze().unwrap();
    assert!(g.cg.is_frozen().unwrap());
    assert_eq!(v1(&g, "freezer", "freezer.state"), "FROZEN");
    // A frozen task sleeps in the refrigerator: not runnable.
    let st = proc_state(pid).expect("child alive");
    assert_ne!(st, 'R', "frozen child must not be running");
    back.thaw().unwrap();
    assert!(!g.cg.is_frozen().unwrap());
    assert_eq!(v1(&g, "freezer", "freezer.state"), "THAWED");

    // A process in a sub-cgroup (e.g. made by systemd inside the container) is listed too,
    // and destroy removes sub-cgroups first.
    let sub = g.cg.v1_dir("freezer").unwrap().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let pid2 = g.spawn_sleeper();
    std::fs::write(sub.join("cgroup.procs"), pid2.to_string()).unwrap();
    let mut want = vec![pid, pid2];
    want.sort();
    assert_eq!(g.cg.pids().unwrap(), want);

    for c in &mut g.children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    g.cg.destroy().unwrap();
    assert!(!sub.exists());
    assert!(!g.cg.exists());
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    // Idempotent.
    g.cg.destroy().unwrap();
}

#[test]
fn limits_update_and_stats() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("limits");
    let res = resources(
        r#"{
        "memory": {"limit": 67108864, "reservation": 33554432, "swappiness": 10},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 20},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]
    }"#,
    );
    g.cg.apply(&res).unwrap();
    assert_eq!(v1(&g, "memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(v1(&g, "memory", "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(v1(&g, "memory", "memory.swappiness"), "10");
    assert_eq!(v1(&g, "cpu", "cpu.shares"), "512");
    assert_eq!(v1(&g, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(v1(&g, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(v1(&g, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(v1(&g, "pids", "pids.max"), "20");
    assert_eq!(v1(&g, "devices", "devices.list"), "c 1:3 rwm");
    // hugetlb is only in the unified hierarchy on this host.
    let unified = g.cg.unified_dir().unwrap().to_path_buf();
    assert_eq!(read_trim(&unified.join("hugetlb.2MB.max")), "4194304");

    // A shell that keeps ~4 MB in a variable so the cgroup is charged for it.
    let pid = g.spawn_sh(
        "read x; v=$(head -c 4000000 /dev/zero | tr '\\0' a); echo ready; exec sleep 1000",
    );
    g.cg.add_pid(pid as i32).unwrap();
    release(&mut g.children[0]);
    assert_eq!(read_line(&mut g.children[0]), "ready");

    g.cg.update(&resources(
        r#"{"memory": {"limit": 134217728}, "pids": {"limit": 30}, "cpu": {"quota": 20000}}"#,
    ))
    .unwrap();
    assert_eq!(v1(&g, "memory", "memory.limit_in_bytes"), "134217728");
    assert_eq!(v1(&g, "pids", "pids.max"), "30");
    assert_eq!(v1(&g, "cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(v1(&g, "cpu", "cpu.shares"), "512", "untouched by update");

    let s = g.cg.stats().unwrap();
    assert!(
        s.memory.usage.usage > 0,
        "memory usage {:?}",
        s.memory.usage
    );
    assert_eq!(s.memory.usage.limit, 134217728);
    assert!(!s.memory.raw.is_empty());
    assert!(s.pids.current >= 1, "pids {:?}", s.pids);
    assert_eq!(s.pids.limit, 30);
    assert!(s.cpu.usage.total > 0, "cpu {:?}", s.cpu.usage);
    assert!(s.hugetlb.contains_key("2MB"));
    let v = serde_json::to_value(&s).unwrap();
    assert!(v["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(v["cpu"]["usage"]["percpu"].is_array());
}

#[test]
fn unavailable_controllers_are_named() {
    if !hybrid_root() {
        return;
    }
    let g = Guard::new("unavail");
    // net_cls is neither mounted as v1 nor in the unified hierarchy here.
    if g.cg.v1_dir("net_cls").is_none() {
        let e =
            g.cg.apply(&resources(r#"{"network": {"classID": 42}}"#))
                .unwrap_err();
        assert!(
            format!("{e:#}").contains("cgroup controller \"net_cls\" is not available"),
            "{e:#}"
        );
    }
    let e =
        g.cg.apply(&resources(r#"{"unified": {"memory.max": "100"}}"#))
            .unwrap_err();
    // runc's v1 manager (v1 and hybrid hosts) refuses `unified` outright.
    assert!(
        format!("{e:#}").contains("invalid configuration: cannot use unified on cgroup v1"),
        "{e:#}"
    );
    let e =
        g.cg.apply(&resources(r#"{"unified": {"hugetlb.2MB.max": "0"}}"#))
            .unwrap_err();
    assert!(
        format!("{e:#}").contains("cannot use unified on cgroup v1"),
        "even for a controller of the hybrid's v2 tree: {e:#}"
    );
    if g.cg.v1_dir("rdma").is_none() {
        let e =
            g.cg.apply(&resources(
                r#"{"rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}}}"#,
            ))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("cgroup controller \"rdma\" is not available"),
            "{e:#}"
        );
    }
    // Errors carry file and value.
    let e =
        g.cg.apply(&resources(r#"{"cpu": {"cpus": "999"}}"#))
            .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("write \"999\" to /sys/fs/cgroup/cpuset/") && msg.contains("cpuset.cpus"),
        "{msg}"
    );
}

#[test]
fn pids_limit_makes_fork_fail() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("pids");
    g.cg.apply(&resources(r#"{"pids": {"limit": 5}}"#)).unwrap();
    // The inner shell exits when a fork fails; its sleeps keep nothing of ours open.
    let pid = g.spawn_sh(
        "read x; sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 1000 </dev/null >/dev/null 2>&1 & done' 2>/dev/null; echo started; exec sleep 1000",
    );
    g.cg.add_pid(pid as i32).unwrap();
    release(&mut g.children[0]);
    assert_eq!(read_line(&mut g.children[0]), "started");
    // Outer sh + inner sh + 3 sleeps hit the limit; the inner sh then gave up and exited.
    let pids = g.cg.pids().unwrap();
    assert_eq!(pids.len(), 4, "outer sh + 3 sleeps remain: {pids:?}");
    let events = v1(&g, "pids", "pids.events");
    let failed: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "a fork was refused by the limit: {events}");
    assert_eq!(g.cg.stats().unwrap().pids.current, 4);
}

#[test]
fn oom_kill_is_counted_and_watched() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("oom");
    let swap = Path::new(g.cg.v1_dir("memory").unwrap()).join("memory.memsw.limit_in_bytes");
    let json = if swap.exists() {
        r#"{"memory": {"limit": 16777216, "swap": 16777216}}"#
    } else {
        r#"{"memory": {"limit": 16777216}}"#
    };
    g.cg.apply(&resources(json)).unwrap();
    assert_eq!(g.cg.oom_kill_count().unwrap(), 0);
    let mut watcher = g.cg.oom_watcher().unwrap();
    assert!(!watcher.wait(Some(Duration::from_millis(50))).unwrap());

    // dd touches its whole 64 MiB buffer.
    let pid = g.spawn_sh("read x; exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    g.cg.add_pid(pid as i32).unwrap();
    release(&mut g.children[0]);
    let status = g.children[0].wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by the OOM killer: {status:?}"
    );
    assert!(watcher.wait(Some(Duration::from_secs(5))).unwrap());
    assert!(g.cg.oom_kill_count().unwrap() >= 1);
}

#[test]
fn signal_all_reaches_every_process_and_keeps_pause_state() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("signal");
    let pid = g.spawn_sh("read x; sleep 1000 & sleep 1000 & echo started; wait");
    g.cg.add_pid(pid as i32).unwrap();
    release(&mut g.children[0]);
    assert_eq!(read_line(&mut g.children[0]), "started");
    assert_eq!(g.cg.pids().unwrap().len(), 3);

    // SIGSTOP on a paused container leaves it paused.
    g.cg.freeze().unwrap();
    g.cg.signal_all(Signal::SIGSTOP).unwrap();
    assert!(g.cg.is_frozen().unwrap());
    g.cg.thaw().unwrap();
    // The pending SIGSTOP is delivered once thawed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for p in g.cg.pids().unwrap() {
        while proc_state(p) != Some('T') {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {p} not stopped: {:?}",
                proc_state(p)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    g.cg.signal_all(Signal::SIGKILL).unwrap();
    let status = g.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !g.cg.pids().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn default_path_is_relative_to_own_cgroup() {
    if !hybrid_root() {
        return;
    }
    let id = common::unique_path("default");
    let id = id.trim_start_matches('/');
    let cg = Cgroup::resolve(None, id).unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_mem = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("memory line in /proc/self/cgroup");
    let want = Path::new("/sys/fs/cgroup/memory")
        .join(own_mem.trim_start_matches('/'))
        .join(id);
    assert_eq!(cg.v1_dir("memory"), Some(want.as_path()));
    assert_eq!(cg.path(), id);
    cg.create().unwrap();
    let guard = Guard {
        cg: cg.clone(),
        children: Vec::new(),
    };
    assert!(want.is_dir());
    drop(guard);
    assert!(!want.exists());
    assert!(!cg.exists());
}

/// "MAJ:MIN" of a real disk (not loop/zram), for throttle tests.
fn real_disk() -> Option<(u64, u64)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("zram") || name.starts_with("ram") {
            continue;
        }
        let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
        let (maj, min) = dev.trim().split_once(':')?;
        found.push((maj.parse().ok()?, min.parse().ok()?));
    }
    found.sort();
    found.into_iter().next()
}

#[test]
fn blkio_throttle() {
    if !hybrid_root() {
        return;
    }
    let Some((major, minor)) = real_disk() else {
        eprintln!("skipped: no real block device");
        return;
    };
    let g = Guard::new("blkio");
    g.cg.apply(&resources(&format!(
        r#"{{"blockIO": {{
            "throttleReadBpsDevice": [{{"major": {major}, "minor": {minor}, "rate": 1048576}}],
            "throttleWriteIopsDevice": [{{"major": {major}, "minor": {minor}, "rate": 100}}]
        }}}}"#
    )))
    .unwrap();
    assert_eq!(
        v1(&g, "blkio", "blkio.throttle.read_bps_device"),
        format!("{major}:{minor} 1048576")
    );
    assert_eq!(
        v1(&g, "blkio", "blkio.throttle.write_iops_device"),
        format!("{major}:{minor} 100")
    );
    // Rate 0 lifts the limit.
    g.cg.update(&resources(&format!(
        r#"{{"blockIO": {{"throttleReadBpsDevice": [{{"major": {major}, "minor": {minor}, "rate": 0}}]}}}}"#
    )))
    .unwrap();
    assert_eq!(v1(&g, "blkio", "blkio.throttle.read_bps_device"), "");
}

#[test]
fn v1_device_rules_are_enforced() {
    if !hybrid_root() {
        return;
    }
    let mut g = Guard::new("devices");
    g.cg.apply(&resources(
        r#"{"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}
        ]}"#,
    ))
    .unwrap();
    assert_eq!(v1(&g, "devices", "devices.list"), "c 1:3 rw");
    let pid = g.spawn_sh(
        "read x; \
         if echo x >/dev/null; then echo null-ok; else echo null-denied; fi; \
         if head -c1 /dev/urandom >/dev/null 2>&1; then echo urandom-ok; else echo urandom-denied; fi",
    );
    g.cg.add_pid(pid as i32).unwrap();
    release(&mut g.children[0]);
    assert_eq!(read_line(&mut g.children[0]), "null-ok");
    assert_eq!(read_line(&mut g.children[0]), "urandom-denied");
}

#[test]
fn memory_and_swap_are_written_in_a_valid_order() {
    if !hybrid_root() {
        return;
    }
    let g = Guard::new("swap");
    if !g
        .cg
        .v1_dir("memory")
        .unwrap()
        .join("memory.memsw.limit_in_bytes")
        .exists()
    {
        eprintln!("skipped: no swap accounting");
        return;
    }
    let set = |limit: i64, swap: i64| {
        g.cg.update(&resources(&format!(
            r#"{{"memory": {{"limit": {limit}, "swap": {swap}}}}}"#
        )))
        .unwrap();
        assert_eq!(v1(&g, "memory", "memory.limit_in_bytes"), limit.to_string());
        assert_eq!(
            v1(&g, "memory", "memory.memsw.limit_in_bytes"),
            swap.to_string()
        );
    };
    // Growing needs memsw raised first, shrinking needs memory lowered first.
    set(64 << 20, 128 << 20);
    set(256 << 20, 512 << 20);
    set(32 << 20, 32 << 20);
    // Unlimited memory without swap given means unlimited swap too.
    g.cg.update(&resources(r#"{"memory": {"limit": -1}}"#))
        .unwrap();
    let unlimited = v1(&g, "memory", "memory.memsw.limit_in_bytes");
    assert_eq!(v1(&g, "memory", "memory.limit_in_bytes"), unlimited);
    assert!(unlimited.parse::<u64>().unwrap() > 1 << 60);
    // A limit below memsw that the kernel rejects names file and value.
    let e =
        g.cg.update(&resources(
            r#"{"memory": {"limit": 1073741824, "swap": 536870912}}"#,
        ))
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("write \"") && msg.contains("memory."), "{msg}");
}
