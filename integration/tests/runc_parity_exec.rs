//! Process and exec behaviours a runc drop-in must share (issue 10 items 8,
//! 11, 12, 14, 16, 17 and delete of a container in a shared cgroup), each
//! scenario run through runc 1.1.5 (the reference) and berth in the same
//! test and compared.

mod confinement_common;

use anyhow::{Context, Result};
use berth_integration::harness::*;
use confinement_common::{hierarchies, CgroupGuard};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Both runtimes, reference first, each with a state root of its own.
fn runtimes() -> Result<[(&'static str, Runtime); 2]> {
    Ok([("runc", Runtime::runc()?), ("berth", Runtime::new()?)])
}

fn bundle_path(b: &Bundle) -> String {
    b.path().display().to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A busybox container running `sleep 1000` in the background.
fn sleeping(rt: &Runtime, b: &mut Bundle, id: &str) -> Result<()> {
    b.args(&["sleep", "1000"]);
    b.write()?;
    rt.ok(&["run", "-d", "--bundle", &bundle_path(b), id])?;
    Ok(())
}

#[test]
fn cwd_only_root_may_enter_works_for_another_user() -> Result<()> {
    // /root is 0700 root:root; the process runs as uid 42. runc enters the
    // cwd while still privileged, then drops to the user.
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        let root_dir = b.rootfs().join("root");
        std::fs::create_dir_all(&root_dir)?;
        std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o700))?;
        b.config["process"]["cwd"] = json!("/root");
        b.config["process"]["user"] = json!({"uid": 42, "gid": 42});
        b.sh("pwd; id -u; ls . >/dev/null 2>&1 && echo listed || echo not-listed");
        let (c, out, err) = rt.run(&unique("cwdpriv"), &b)?;
        assert_eq!(c, 0, "{name}: run failed: {err}{}", rt.log_text());
        // The same through exec (--cwd, --user) into a running container.
        let mut b2 = Bundle::busybox()?;
        let root_dir = b2.rootfs().join("root");
        std::fs::create_dir_all(&root_dir)?;
        std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o700))?;
        let id = unique("cwdexec");
        sleeping(&rt, &mut b2, &id)?;
        let o = rt.output(&["exec", "--cwd", "/root", "--user", "42:42", &id, "pwd"])?;
        rt.ok(&["delete", "--force", &id])?;
        got.push((name, out, code(&o), stdout(&o)));
    }
    // The user is in /root but, as itself, may not read it.
    assert_eq!(got[0].1, "/root\n42\nnot-listed\n", "runc: {got:?}");
    assert_eq!(got[0].2, 0, "runc exec: {got:?}");
    assert_eq!(got[1].1, got[0].1, "run: berth vs runc: {got:?}");
    assert_eq!(
        (got[1].2, &got[1].3),
        (got[0].2, &got[0].3),
        "exec: {got:?}"
    );
    Ok(())
}

/// Removes sub-cgroups (before the CgroupGuard removes the container's).
struct SubCgroupGuard(Vec<PathBuf>);

impl Drop for SubCgroupGuard {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Makes `<cgroup>/<sub>` in every hierarchy (cpuset gets its parent's cpus and mems).
fn make_sub_cgroups(cg: &CgroupGuard, sub: &str) -> Result<SubCgroupGuard> {
    let mut made = Vec::new();
    for h in hierarchies() {
        let parent = h.join(&cg.name);
        if !parent.is_dir() {
            continue;
        }
        let dir = parent.join(sub);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        made.push(dir.clone());
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                std::fs::write(dir.join(f), v.trim())?;
            }
        }
    }
    Ok(SubCgroupGuard(made))
}

/// `/proc/self/cgroup` of an exec'd process with the container's cgroup name
/// replaced, sorted: comparable between runtimes.
fn exec_cgroups(rt: &Runtime, id: &str, cg: &CgroupGuard, flags: &[&str]) -> Result<(i32, String)> {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[id, "cat", "/proc/self/cgroup"]);
    let o = rt.output(&args)?;
    let mut lines: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.replace(&cg.name, "<cg>"))
        .collect();
    lines.sort();
    Ok((code(&o), lines.join("\n")))
}

#[test]
fn exec_cgroup_joins_sub_cgroups_and_refuses_escapes() -> Result<()> {
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        let cg = CgroupGuard::new("execsub");
        let mut b = Bundle::busybox()?;
        b.config["linux"]["cgroupsPath"] = json!(cg.cgroups_path());
        let id = unique("execsub");
        sleeping(&rt, &mut b, &id)?;
        let _subs = make_sub_cgroups(&cg, "sub")?;
        // A sibling of the container's cgroup: where `..` would lead.
        let sibling = CgroupGuard::new("execsub-sibling");
        for h in hierarchies() {
            std::fs::create_dir_all(h.join(&sibling.name))?;
        }
        let mut seen = Vec::new();
        for flags in [
            vec!["--cgroup", "sub"],
            vec!["--cgroup", "memory:sub"],
            vec!["--cgroup", "cpu,pids:sub", "--cgroup", "memory:"],
        ] {
            let (c, out) = exec_cgroups(&rt, &id, &cg, &flags)?;
            assert_eq!(c, 0, "{name} {flags:?}: {}", rt.log_text());
            seen.push(out);
        }
        let escape = format!("sub/../../{}", sibling.name);
        for bad in ["../x", "/../x", escape.as_str(), "memory:../x"] {
            let o = rt.output(&["exec", "--cgroup", bad, &id, "true"])?;
            assert_eq!(code(&o), 255, "{name}: --cgroup {bad} was accepted");
            assert!(
                rt.log_text().contains("is not a sub cgroup path"),
                "{name} {bad}: {}",
                rt.log_text()
            );
        }
        let o = rt.output(&["exec", "--cgroup", "nosuch:sub", &id, "true"])?;
        assert_eq!(code(&o), 255, "{name}: unknown controller accepted");
        // Nothing reached the sibling.
        for h in hierarchies() {
            let procs = std::fs::read_to_string(h.join(&sibling.name).join("cgroup.procs"))?;
            assert!(
                procs.trim().is_empty(),
                "{name}: a process escaped to {}",
                h.display()
            );
        }
        rt.ok(&["delete", "--force", &id])?;
        got.push((name, seen));
    }
    let runc = &got[0].1;
    assert!(
        runc[0].lines().all(|l| l.ends_with("/<cg>/sub")),
        "runc --cgroup sub: {}",
        runc[0]
    );
    assert!(runc[1].contains(":memory:/<cg>/sub"), "runc: {}", runc[1]);
    assert_eq!(got[1].1, got[0].1, "berth vs runc");
    Ok(())
}

#[test]
fn exec_racing_the_end_of_init_says_the_container_is_stopped() -> Result<()> {
    // Init is killed while exec joins it: exec must fail as runc's callers
    // expect for a stopped container (exit 255, "cannot exec in a stopped
    // container"), not with whatever step noticed first (a vanished
    // /proc/<pid>/ns entry). runc itself loses this race with a message of
    // its nsexec ("error executing setns process"), so only berth is held to it.
    let rt = Runtime::new()?;
    let mut stray = Vec::new();
    for i in 0..40 {
        let mut b = Bundle::busybox()?;
        let id = unique("execrace");
        sleeping(&rt, &mut b, &id)?;
        let killer = rt
            .cmd(&["kill", &id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_micros(500 * (i as u64 % 7)));
        }
        let _ = std::fs::remove_file(&rt.log);
        let o = rt.output(&["exec", &id, "true"])?;
        let mut killer = killer;
        killer.wait()?;
        // 0: exec won; 137: the process was killed with its container.
        if !matches!(code(&o), 0 | 137) {
            let log = rt.log_text();
            if code(&o) != 255 || !log.contains("cannot exec in a stopped container") {
                stray.push((code(&o), log));
            }
        }
        rt.ok(&["delete", "--force", &id])?;
    }
    assert!(stray.is_empty(), "exec against a dying init: {stray:#?}");
    Ok(())
}

#[test]
fn exec_process_file_needs_only_args_and_cwd() -> Result<()> {
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        let id = unique("procfile");
        sleeping(&rt, &mut b, &id)?;
        let dir = TempDir::new("procfile")?;
        let write = |n: &str, v: Value| -> Result<String> {
            let p = dir.path().join(n);
            std::fs::write(&p, v.to_string())?;
            Ok(p.display().to_string())
        };
        let minimal = write(
            "minimal.json",
            json!({"args": ["/bin/sh", "-c", "id -u; id -g; pwd"], "cwd": "/tmp"}),
        )?;
        let o = rt.output(&["exec", "--process", &minimal, &id])?;
        let ok = (code(&o), stdout(&o));
        let no_cwd = write("nocwd.json", json!({"args": ["/bin/sh", "-c", "true"]}))?;
        let _ = std::fs::remove_file(&rt.log);
        let o = rt.output(&["exec", "--process", &no_cwd, &id])?;
        let no_cwd = (
            code(&o),
            rt.log_text().contains("Cwd property must not be empty"),
        );
        let no_args = write("noargs.json", json!({"cwd": "/"}))?;
        let _ = std::fs::remove_file(&rt.log);
        let o = rt.output(&["exec", "--process", &no_args, &id])?;
        let no_args = (code(&o), rt.log_text().contains("args must not be empty"));
        rt.ok(&["delete", "--force", &id])?;
        got.push((name, ok, no_cwd, no_args));
    }
    assert_eq!(got[0].1, (0, "0\n0\n/tmp\n".to_string()), "runc: {got:?}");
    assert_eq!(got[0].2, (255, true), "runc: {got:?}");
    assert_eq!(got[0].3, (255, true), "runc: {got:?}");
    assert_eq!(
        (&got[1].1, &got[1].2, &got[1].3),
        (&got[0].1, &got[0].2, &got[0].3),
        "berth vs runc"
    );
    Ok(())
}

/// A bundle sharing every namespace with the host, without the fixture's
/// hostname; `edit` adjusts it further.
fn host_namespaces_bundle(script: &str) -> Result<Bundle> {
    let mut b = Bundle::busybox()?;
    b.sh(script);
    b.config["linux"]["namespaces"] = json!([]);
    if let Some(o) = b.config.as_object_mut() {
        o.remove("hostname");
    }
    if let Some(l) = b.config["linux"].as_object_mut() {
        l.remove("maskedPaths");
        l.remove("readonlyPaths");
    }
    Ok(b)
}

/// Lazily unmounts whatever a runtime left mounted under a bundle.
struct MountSweeper(PathBuf);

impl Drop for MountSweeper {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// `run` of `b`; runc's run goes through a private copy of our mount
/// namespace (unshare -m) because it leaves its mounts behind, and on a
/// host whose `/` is shared it would make `/` a slave.
fn run_in_host_namespaces(name: &str, rt: &Runtime, id: &str, b: &Bundle) -> Result<Output> {
    b.write()?;
    let mut c = if name == "runc" {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private"]).arg(&rt.bin);
        c
    } else {
        Command::new(&rt.bin)
    };
    c.arg("--root")
        .arg(rt.root.path())
        .arg("--log")
        .arg(&rt.log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(b.path())
        .arg(id)
        .stdin(Stdio::null());
    c.output().with_context(|| format!("{name} run"))
}

#[test]
fn no_mount_namespace_runs_chrooted_as_runc_does() -> Result<()> {
    let own_mnt_ns = std::fs::read_link("/proc/self/ns/mnt")?;
    let root_line = |text: &str| {
        text.lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .map(str::to_string)
    };
    let host_root_before = root_line(&std::fs::read_to_string("/proc/self/mountinfo")?);
    let script = "test -x /bin/busybox && echo busybox-root; pwd; readlink /proc/self/ns/mnt";
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        let b = host_namespaces_bundle(script)?;
        let _sweep = MountSweeper(b.rootfs());
        let o = run_in_host_namespaces(name, &rt, &unique("nomntns"), &b)?;
        assert_eq!(
            code(&o),
            0,
            "{name}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            rt.log_text()
        );
        let out = stdout(&o);
        let mut lines = out.lines();
        let seen = format!(
            "{}\n{}",
            lines.next().unwrap_or(""),
            lines.next().unwrap_or("")
        );
        let mnt_ns = lines.next().unwrap_or("").to_string();
        if name == "berth" {
            // Really the host's mount namespace, and nothing left in it.
            assert_eq!(
                Path::new(&mnt_ns),
                own_mnt_ns,
                "berth: process not in the host's mount namespace"
            );
            let left = host_mounts_containing(&b.path().display().to_string());
            assert!(left.is_empty(), "berth left mounts on the host: {left:#?}");
            let after = root_line(&std::fs::read_to_string("/proc/self/mountinfo")?);
            assert_eq!(after, host_root_before, "berth changed the host's / mount");
        }
        got.push((name, seen));
    }
    assert_eq!(got[0].1, "busybox-root\n/", "runc: {got:?}");
    assert_eq!(got[1].1, got[0].1, "berth vs runc: {got:?}");

    // berth only: runc refuses exec into such a container ("ns paths are
    // empty"); berth's exec'd process must see the container's root, never
    // the host's. And a create that fails after init's mounts (pid file in
    // a missing directory) takes them away again.
    let rt = Runtime::new()?;
    let canary = TempDir::new("nomntns-canary")?;
    let mut b = host_namespaces_bundle("true")?;
    let _sweep = MountSweeper(b.rootfs());
    b.args(&["sleep", "1000"]);
    b.write()?;
    let id = unique("nomntns-exec");
    rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), &id])?;
    let probe = format!(
        "test -x /bin/busybox && echo busybox-root; test -e {} && echo host-visible; pwd",
        canary.path().display()
    );
    let o = rt.output(&["exec", &id, "sh", "-c", &probe])?;
    rt.ok(&["delete", "--force", &id])?;
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "busybox-root\n/\n".to_string()),
        "exec without a mount namespace: {}",
        rt.log_text()
    );
    let o = rt.output(&[
        "run",
        "-d",
        "--pid-file",
        "/no/such/dir/pid",
        "--bundle",
        &bundle_path(&b),
        &unique("nomntns-fail"),
    ])?;
    assert_ne!(code(&o), 0, "run with an unwritable pid file succeeded");
    let left = host_mounts_containing(&b.path().display().to_string());
    assert!(left.is_empty(), "a failed create left mounts: {left:#?}");

    // What runc refuses without the namespaces, berth refuses with its words.
    for (what, edit, msg) in [
        (
            "maskedPaths",
            json!({"maskedPaths": ["/proc/kcore"]}),
            "unable to restrict sys entries without a private MNT namespace",
        ),
        (
            "hostname",
            json!({"hostname": "h"}),
            "unable to set hostname without a private UTS namespace",
        ),
    ] {
        for (name, rt) in runtimes()? {
            let mut b = host_namespaces_bundle("true")?;
            let _sweep = MountSweeper(b.rootfs());
            if what == "hostname" {
                b.config["hostname"] = edit["hostname"].clone();
            } else {
                b.config["linux"]["maskedPaths"] = edit["maskedPaths"].clone();
            }
            let o = run_in_host_namespaces(name, &rt, &unique("nomntns-bad"), &b)?;
            assert_ne!(code(&o), 0, "{name}: {what} accepted without its namespace");
            assert!(
                rt.log_text().contains(msg),
                "{name} {what}: {}",
                rt.log_text()
            );
            if name == "berth" {
                let left = host_mounts_containing(&b.path().display().to_string());
                assert!(
                    left.is_empty(),
                    "berth left mounts after refusing {what}: {left:#?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn exec_debug_logs_its_phases() -> Result<()> {
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        let id = unique("execdebug");
        sleeping(&rt, &mut b, &id)?;
        let log = rt.root.path().join("exec-debug.log");
        let o = Command::new(&rt.bin)
            .arg("--root")
            .arg(rt.root.path())
            .arg("--debug")
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "exec", &id, "true"])
            .stdin(Stdio::null())
            .output()?;
        rt.ok(&["delete", "--force", &id])?;
        assert_eq!(code(&o), 0, "{name} exec --debug");
        let text = std::fs::read_to_string(&log)?;
        let debug: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["level"] == "debug")
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .collect();
        // The namespaces joined, and how the process ended.
        assert!(
            debug.iter().any(|m| m.contains("ipc namespace")),
            "{name}: no namespace join logged: {debug:#?}"
        );
        assert!(
            debug.iter().any(|m| m.contains("process exited")),
            "{name}: no process exit logged: {debug:#?}"
        );
    }
    Ok(())
}

#[test]
fn delete_in_a_shared_cgroup_reports_and_succeeds() -> Result<()> {
    for (name, rt) in runtimes()? {
        let cg = CgroupGuard::new("shareddel");
        // Another workload lives in the cgroup, in every hierarchy.
        let mut other = Command::new("sleep").arg("100").spawn()?;
        for h in hierarchies() {
            let dir = h.join(&cg.name);
            if std::fs::create_dir_all(&dir).is_ok() {
                let _ = std::fs::write(dir.join("cgroup.procs"), other.id().to_string());
            }
        }
        let mut b = Bundle::busybox()?;
        b.args(&["true"]);
        b.config["linux"]["cgroupsPath"] = json!(cg.cgroups_path());
        b.write()?;
        let id = unique("shareddel");
        let result = (|| -> Result<(i32, Duration)> {
            rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), &id])?;
            rt.wait_status(&id, "stopped")?;
            let started = Instant::now();
            let o = rt.output(&["delete", &id])?;
            Ok((code(&o), started.elapsed()))
        })();
        let alive = other.try_wait()?.is_none();
        let _ = other.kill();
        let _ = other.wait();
        let (c, took) = result?;
        assert_eq!(c, 0, "{name}: delete failed: {}", rt.log_text());
        assert!(
            took < Duration::from_secs(3),
            "{name}: delete took {took:?}"
        );
        assert!(
            rt.log_text().contains("Failed to remove cgroup"),
            "{name}: {}",
            rt.log_text()
        );
        assert!(alive, "{name}: delete killed the other workload");
        assert!(
            rt.output(&["state", &id])?.status.code() != Some(0),
            "{name}: container still listed"
        );
    }
    Ok(())
}

#[test]
fn early_init_errors_are_reported_not_epipe() -> Result<()> {
    // init refuses the hostname before it has the parent's `Continue` (and,
    // in a user namespace, the bind sources the parent sends after it): the
    // parent must still read init's error, not fail on the closed channel.
    for userns in [false, true] {
        for (name, rt) in runtimes()? {
            let mut b = Bundle::busybox()?;
            b.args(&["true"]);
            b.config["hostname"] = json!("h");
            if userns {
                b.config["linux"]["namespaces"] =
                    json!([{"type": "user"}, {"type": "mount"}, {"type": "pid"}]);
                let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                b.config["linux"]["uidMappings"] = map.clone();
                b.config["linux"]["gidMappings"] = map;
                b.config["mounts"]
                    .as_array_mut()
                    .context("mounts")?
                    .push(json!({"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}));
            } else {
                b.config["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "pid"}]);
            }
            let tries = if name == "runc" { 1 } else { 40 };
            for _ in 0..tries {
                let _ = std::fs::remove_file(&rt.log);
                let (c, _, _) = rt.run(&unique("early"), &b)?;
                assert_ne!(c, 0, "{name}: hostname without a UTS namespace accepted");
                assert!(
                    rt.log_text()
                        .contains("unable to set hostname without a private UTS namespace"),
                    "{name} (user namespace: {userns}): {}",
                    rt.log_text()
                );
            }
        }
    }
    Ok(())
}
