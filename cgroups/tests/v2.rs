//! cgroup v2 tests. This host is hybrid, so the test re-runs this test binary in a private
//! mount namespace with cgroup2 mounted on /sys/fs/cgroup (the unified hierarchy, which here
//! only has the hugetlb controller) and checks the helper test's result via its exit status.

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

use berth_cgroups::{detect_mode, Cgroup, CgroupMode};
use common::{read_line, read_trim, release, resources, Guard};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;

const CHILD_ENV: &str = "BERTH_CGROUPS_V2_CHILD";

#[test]
fn v2_in_private_mount_namespace() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "v2_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: the closure only makes raw syscalls (paths are short, nix copies them onto
    // the stack), which is allowed between fork and exec.
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
    let child = cmd.spawn().unwrap();
    let child_pid = child.id();
    let out = child.wait_with_output().unwrap();
    // The child cleans up after itself even when it fails; this catches a child that died
    // abruptly. Its cgroups live in the unified hierarchy, visible here under /unified.
    remove_leftovers(child_pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "v2 child failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("test v2_child ... ok"),
        "the helper test really ran: {stdout}"
    );
}

fn remove_leftovers(child_pid: u32) {
    let prefix = format!("berth-test-{child_pid}-");
    // Hybrid hosts show the unified hierarchy under /unified; v2 hosts at the top.
    let entries = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            eprintln!("removing leftover cgroup {name}");
            if let Ok(cg) = Cgroup::resolve(Some(&format!("/{name}")), "unused") {
                let _ = cg.destroy();
            }
        }
    }
}

/// Runs only inside `v2_in_private_mount_namespace`'s child.
#[test]
#[ignore = "helper: run by v2_in_private_mount_namespace inside a private mount namespace"]
fn v2_child() {
    assert_eq!(
        std::env::var(CHILD_ENV).as_deref(),
        Ok("1"),
        "run via v2_in_private_mount_namespace"
    );
    assert_eq!(detect_mode().unwrap(), CgroupMode::V2);
    let mut g = Guard::new("v2");
    let dir = g.cg.unified_dir().unwrap().to_path_buf();
    assert!(
        dir.to_string_lossy()
            .starts_with("/sys/fs/cgroup/berth-test-"),
        "{}",
        dir.display()
    );
    assert_eq!(
        g.cg.dirs(),
        vec![dir.clone()],
        "no v1 hierarchies in v2 mode"
    );
    assert!(dir.is_dir());

    let pid = g.spawn_sleeper();
    g.cg.add_pid(pid).unwrap();
    assert_eq!(g.cg.pids().unwrap(), vec![pid]);

    g.cg.freeze().unwrap();
    assert!(g.cg.is_frozen().unwrap());
    assert!(read_trim(&dir.join("cgroup.events")).contains("frozen 1"));
    g.cg.thaw().unwrap();
    assert!(!g.cg.is_frozen().unwrap());
    assert!(read_trim(&dir.join("cgroup.events")).contains("frozen 0"));

    // On this project's hybrid VM the unified hierarchy only has hugetlb; on a real v2 host
    // memory is there too, so check whichever applies.
    let available = read_trim(&dir.join("cgroup.controllers"));
    let has = |c: &str| available.split_whitespace().any(|x| x == c);
    let huge_2m = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    if has("hugetlb") && huge_2m {
        g.cg.apply(&resources(
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}"#,
        ))
        .unwrap();
        assert_eq!(read_trim(&dir.join("hugetlb.2MB.max")), "4194304");
        g.cg.update(&resources(
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]}"#,
        ))
        .unwrap();
        assert_eq!(read_trim(&dir.join("hugetlb.2MB.max")), "max");
        g.cg.apply(&resources(r#"{"unified": {"hugetlb.2MB.max": "0"}}"#))
            .unwrap();
        assert_eq!(read_trim(&dir.join("hugetlb.2MB.max")), "0");
        let s = g.cg.stats().unwrap();
        assert!(s.hugetlb.contains_key("2MB"));
    }
    let mem = g.cg.apply(&resources(r#"{"memory": {"limit": 16777216}}"#));
    if has("memory") {
        mem.unwrap();
        assert_eq!(read_trim(&dir.join("memory.max")), "16777216");
        assert!(g.cg.oom_watcher().is_ok());
    } else {
        assert_eq!(
            format!("{:#}", mem.unwrap_err()),
            "cgroup controller \"memory\" is not available (v2 unified hierarchy at /sys/fs/cgroup)"
        );
        assert!(g.cg.oom_watcher().is_err());
    }

    // Device filter via eBPF: /dev/null (1:3) allowed, /dev/urandom (1:9) denied...
    g.cg.apply(&resources(
        r#"{"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}
        ]}"#,
    ))
    .unwrap();
    let probe = "read x; \
        if echo x >/dev/null; then echo null-ok; else echo null-denied; fi; \
        if head -c1 /dev/urandom >/dev/null 2>&1; then echo urandom-ok; else echo urandom-denied; fi";
    let run_probe = |g: &mut Guard| -> (String, String) {
        let pid = g.spawn_sh(probe);
        g.cg.add_pid(pid as i32).unwrap();
        let idx = g.children.len() - 1;
        release(&mut g.children[idx]);
        let a = read_line(&mut g.children[idx]);
        let b = read_line(&mut g.children[idx]);
        (a, b)
    };
    assert_eq!(
        run_probe(&mut g),
        ("null-ok".to_string(), "urandom-denied".to_string())
    );
    // ...then an update replaces (not adds to) the program: urandom becomes readable.
    g.cg.update(&resources(
        r#"{"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "rw"}
        ]}"#,
    ))
    .unwrap();
    assert_eq!(
        run_probe(&mut g),
        ("null-ok".to_string(), "urandom-ok".to_string())
    );

    // SIGKILL through cgroup.kill takes every process, the sleeper included.
    g.cg.signal_all(Signal::SIGKILL).unwrap();
    let status = g.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(9), "sleeper killed: {status:?}");
    for c in &mut g.children {
        c.wait().unwrap();
    }
    g.cg.destroy().unwrap();
    assert!(!dir.exists());
    assert!(!g.cg.exists());
}
