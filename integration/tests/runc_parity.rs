//! Behaviours a runc drop-in must share, checked by running the same scenario
//! through runc 1.1.5 (the reference) and berth in the same test and comparing
//! what the container and the caller see.

mod confinement_common;

use anyhow::{bail, Context, Result};
use berth_integration::harness::*;
use confinement_common::{hierarchies, CgroupGuard};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Both runtimes, reference first, each with a state root of its own.
fn runtimes() -> Result<[(&'static str, Runtime); 2]> {
    Ok([("runc", Runtime::runc()?), ("berth", Runtime::new()?)])
}

fn bundle_path(b: &Bundle) -> String {
    b.path().display().to_string()
}

/// Foreground run of `script` in a fresh busybox bundle changed by `edit`;
/// returns (exit code, stdout).
fn run_script(
    rt: &Runtime,
    id: &str,
    script: &str,
    edit: impl Fn(&mut Bundle),
) -> Result<(i32, String)> {
    let mut b = Bundle::busybox()?;
    b.sh(script);
    edit(&mut b);
    let (code, out, err) = rt.run(id, &b)?;
    if code != 0 && out.is_empty() {
        bail!("{id}: exit {code}: {err}{}", rt.log_text());
    }
    Ok((code, out))
}

#[test]
fn kill_with_signal_zero_checks_liveness() -> Result<()> {
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        b.args(&["sleep", "100"]);
        b.write()?;
        let id = unique("kill0");
        rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), &id])?;
        rt.ok(&["kill", &id, "0"])
            .with_context(|| format!("{name}: kill 0 of a running container"))?;
        rt.ok(&["kill", "--all", &id, "0"])
            .with_context(|| format!("{name}: kill --all 0 of a running container"))?;
        assert_eq!(rt.status(&id)?, "running", "{name}: signal 0 must not kill");
        rt.ok(&["kill", &id, "KILL"])?;
        rt.wait_status(&id, "stopped")?;
        let out = rt.output(&["kill", &id, "0"])?;
        assert!(
            !out.status.success(),
            "{name}: kill 0 of a stopped container"
        );
        assert!(
            rt.log_text().contains("container not running"),
            "{name}: {}",
            rt.log_text()
        );
        rt.ok(&["delete", &id])?;
    }
    Ok(())
}

/// A hook that appends "<its name> <its working directory>" to `out`.
fn cwd_hook(script: &Path, name: &str) -> Value {
    json!({"path": script, "args": ["hook", name]})
}

#[test]
fn hooks_run_in_the_directories_runc_uses() -> Result<()> {
    let tmp = TempDir::new("hook-cwd")?;
    let out = tmp.path().join("out");
    let script = tmp.path().join("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $(pwd)\" >> {}\n", out.display()),
    )?;
    Command::new("chmod").arg("+x").arg(&script).status()?;
    let mut seen = Vec::new();
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        b.args(&["true"]);
        let hooks: serde_json::Map<String, Value> = [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ]
        .iter()
        .map(|k| (k.to_string(), json!([cwd_hook(&script, k)])))
        .collect();
        b.config["hooks"] = Value::Object(hooks);
        b.write()?;
        let id = unique("hookcwd");
        let _ = std::fs::remove_file(&out);
        // The caller stands somewhere else than the bundle, as containerd does.
        let in_root = |args: &[&str]| -> Result<()> {
            let o = rt.cmd(args).current_dir("/").output()?;
            if !o.status.success() {
                bail!(
                    "{name} {args:?}: {}{}",
                    String::from_utf8_lossy(&o.stderr),
                    rt.log_text()
                );
            }
            Ok(())
        };
        let create = rt
            .cmd(&["create", "--bundle", &bundle_path(&b), &id])
            .current_dir("/")
            .stdout(std::fs::File::create(tmp.path().join("create.out"))?)
            .stderr(std::fs::File::create(tmp.path().join("create.err"))?)
            .status()?;
        if !create.success() {
            bail!("{name} create: {}", rt.log_text());
        }
        in_root(&["start", &id])?;
        rt.wait_status(&id, "stopped")?;
        in_root(&["delete", &id])?;
        let bundle = std::fs::canonicalize(b.path())?;
        let lines =
            std::fs::read_to_string(&out)?.replace(&bundle.display().to_string(), "<bundle>");
        seen.push((name, lines));
    }
    assert_eq!(
        seen[1].1, seen[0].1,
        "hook working directories differ (berth vs runc)"
    );
    assert!(
        seen[0].1.contains("createContainer <bundle>/rootfs"),
        "{}",
        seen[0].1
    );
    Ok(())
}

#[test]
fn linux_devices_do_not_bypass_the_device_cgroup() -> Result<()> {
    // /dev/kmsg is created by linux.devices but resources.devices denies
    // everything (runc's default spec): opening it for writing (no syslog
    // permission check on that path) must fail with EPERM from the device cgroup.
    let script = "(: > /dev/kmsg) 2>/dev/null && echo opened || echo denied";
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        let (_, out) = run_script(&rt, &unique("kmsg"), script, |b| {
            b.config["linux"]["devices"] = json!([{
                "path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o644
            }]);
            b.config["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
        })?;
        got.push((name, out.trim().to_string()));
    }
    assert_eq!(got[0].1, "denied", "runc: {got:?}");
    assert_eq!(got[1].1, got[0].1, "{got:?}");
    Ok(())
}

/// A static program that makes the raw syscall numbered argv[1] and prints
/// "<return value> <errno>".
fn syscall_probe(dir: &Path) -> Result<std::path::PathBuf> {
    let src = dir.join("probe.c");
    std::fs::write(
        &src,
        "#include <errno.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         int main(int argc, char **argv) {\n\
           long r = syscall(atol(argv[1]));\n\
           printf(\"%ld %d\\n\", r, r < 0 ? errno : 0);\n\
           return 0;\n\
         }\n",
    )?;
    let bin = dir.join("probe");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .context("gcc (static) for the syscall probe")?;
    if !status.success() {
        bail!("compiling the syscall probe failed");
    }
    Ok(bin)
}

/// Default-deny profile allowing every syscall name containers-common's
/// profile knows (so glibc and both runtimes work), native arch listed.
fn allow_known_profile() -> Result<Value> {
    let docker: Value = serde_json::from_slice(
        &std::fs::read("/usr/share/containers/seccomp.json")
            .context("containers-common's seccomp.json (scripts/deps.sh installs it)")?,
    )?;
    let mut names: Vec<String> = docker["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    let arch = match std::env::consts::ARCH {
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_X86_64",
    };
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": [arch],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    }))
}

#[test]
fn syscalls_unknown_to_the_profile_get_enosys() -> Result<()> {
    let tmp = TempDir::new("enosys")?;
    let probe = syscall_probe(tmp.path())?;
    let profile = allow_known_profile()?;
    let mut got = Vec::new();
    for (name, rt) in runtimes()? {
        // 1000: newer than any syscall the profile names; 248 (add_key on
        // x86_64): known but not allowed, so the default action (EPERM) applies.
        let (_, out) = run_script(&rt, &unique("enosys"), "/probe 1000; /probe 248", |b| {
            std::fs::copy(&probe, b.rootfs().join("probe")).expect("copy probe");
            b.config["linux"]["seccomp"] = profile.clone();
        })?;
        got.push((name, out));
    }
    if cfg!(target_arch = "x86_64") {
        assert_eq!(got[0].1, "-1 38\n-1 1\n", "runc: {got:?}");
    }
    assert_eq!(got[1].1, got[0].1, "berth vs runc: {got:?}");
    Ok(())
}

/// `run -d` that may hang (it did, into a frozen cgroup): killed after `limit`.
/// Returns whether it succeeded.
fn run_detached_within(rt: &Runtime, b: &Bundle, id: &str, limit: Duration) -> Result<bool> {
    b.write()?;
    let mut child = rt
        .cmd(&["run", "-d", "--bundle", &bundle_path(b), id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("run -d {id} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn frozen_cgroup_is_refused() -> Result<()> {
    for (name, rt) in runtimes()? {
        let cg = CgroupGuard::new("frozen");
        let freezer = cg.dir("freezer");
        std::fs::create_dir_all(&freezer)?;
        std::fs::write(freezer.join("freezer.state"), "FROZEN")?;
        let mut b = Bundle::busybox()?;
        b.args(&["true"]);
        b.config["linux"]["cgroupsPath"] = json!(cg.cgroups_path());
        let ok = run_detached_within(&rt, &b, &unique("frozen"), Duration::from_secs(20))?;
        assert!(!ok, "{name}: run -d into a frozen cgroup succeeded");
        assert!(
            rt.log_text()
                .contains("container's cgroup unexpectedly frozen"),
            "{name}: {}",
            rt.log_text()
        );
        // The refused container leaves the cgroup it found where it was.
        assert!(freezer.is_dir(), "{name} removed a cgroup it did not make");
    }
    Ok(())
}

#[test]
fn non_empty_cgroup_is_reported() -> Result<()> {
    for (name, rt) in runtimes()? {
        let cg = CgroupGuard::new("shared");
        // Another workload already lives in the cgroup, in every hierarchy.
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
        let id = unique("shared");
        let ok = run_detached_within(&rt, &b, &id, Duration::from_secs(20))?;
        let _ = other.kill();
        let _ = other.wait();
        assert!(ok, "{name}: run -d failed: {}", rt.log_text());
        assert!(
            rt.log_text()
                .contains("container's cgroup is not empty: 1 process(es) found"),
            "{name}: {}",
            rt.log_text()
        );
    }
    Ok(())
}

#[test]
fn unified_resources_need_a_pure_v2_host() -> Result<()> {
    // On a v1 or hybrid host runc refuses `unified` even for a controller the
    // hybrid's v2 tree holds (hugetlb here); on a pure v2 host both accept it.
    let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for (name, rt) in runtimes()? {
        let cg = CgroupGuard::new("unified");
        let mut b = Bundle::busybox()?;
        b.args(&["true"]);
        b.config["linux"]["cgroupsPath"] = json!(cg.cgroups_path());
        b.config["linux"]["resources"]["unified"] = json!({"hugetlb.2MB.max": "4194304"});
        let (code, _, _) = rt.run(&unique("unified"), &b)?;
        if pure_v2 {
            assert_eq!(code, 0, "{name}: {}", rt.log_text());
        } else {
            assert_ne!(code, 0, "{name} accepted unified on a hybrid host");
            assert!(
                rt.log_text()
                    .contains("invalid configuration: cannot use unified on cgroup v1"),
                "{name}: {}",
                rt.log_text()
            );
        }
    }
    Ok(())
}

#[test]
fn exec_failures_exit_255_and_process_status_passes_through() -> Result<()> {
    for (name, rt) in runtimes()? {
        let code =
            |args: &[&str]| -> Result<i32> { Ok(rt.output(args)?.status.code().unwrap_or(-1)) };
        assert_eq!(code(&["exec", "no-such-container", "true"])?, 255, "{name}");
        assert!(
            rt.log_text().contains("exec failed: "),
            "{name}: {}",
            rt.log_text()
        );
        assert!(
            rt.log_text().contains("does not exist"),
            "{name}: {}",
            rt.log_text()
        );

        let mut b = Bundle::busybox()?;
        b.args(&["sleep", "100"]);
        b.write()?;
        let id = unique("exec255");
        rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), &id])?;
        assert_eq!(code(&["exec", &id, "sh", "-c", "exit 7"])?, 7, "{name}");
        assert_eq!(code(&["exec", &id, "/no/such/binary"])?, 255, "{name}");
        assert_eq!(
            code(&["exec", "--pid-file", "/no/such/dir/pid", &id, "true"])?,
            255,
            "{name}"
        );
        rt.ok(&["pause", &id])?;
        assert_eq!(code(&["exec", &id, "true"])?, 255, "{name}: paused");
        rt.ok(&["resume", &id])?;
        rt.ok(&["kill", &id, "KILL"])?;
        rt.wait_status(&id, "stopped")?;
        assert_eq!(code(&["exec", &id, "true"])?, 255, "{name}: stopped");
        rt.ok(&["delete", &id])?;
    }
    Ok(())
}

#[test]
fn log_file_is_created_and_debug_reaches_it_for_every_command() -> Result<()> {
    for (name, rt) in runtimes()? {
        let mut b = Bundle::busybox()?;
        b.args(&["sleep", "100"]);
        b.write()?;
        let id = unique("debuglog");
        rt.ok(&["run", "-d", "--bundle", &bundle_path(&b), &id])?;
        // A quiet, successful command still creates its --log file.
        let quiet = rt.root.path().join("quiet.log");
        let out = Command::new(&rt.bin)
            .arg("--root")
            .arg(rt.root.path())
            .arg("--log")
            .arg(&quiet)
            .args(["state", &id])
            .output()?;
        assert!(out.status.success(), "{name} state");
        assert!(quiet.exists(), "{name}: --log not created by state");
        // exec --debug writes debug lines to its log.
        let debug_log = rt.root.path().join("exec-debug.log");
        let out = Command::new(&rt.bin)
            .arg("--root")
            .arg(rt.root.path())
            .arg("--debug")
            .arg("--log")
            .arg(&debug_log)
            .args(["--log-format", "json", "exec", &id, "true"])
            .output()?;
        assert!(out.status.success(), "{name} exec --debug");
        let text = std::fs::read_to_string(&debug_log)
            .with_context(|| format!("{name}: exec --debug wrote no log"))?;
        assert!(
            text.lines().any(|l| l.contains("\"level\":\"debug\"")),
            "{name}: no debug line from exec: {text}"
        );
        rt.ok(&["delete", "--force", &id])?;
    }
    Ok(())
}
