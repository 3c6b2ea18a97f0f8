//! Process attributes, namespaces joined by path, time namespaces, devices,
//! sysctls, --no-pivot and foreground terminals — asserted from inside.

use anyhow::Result;
use berth_integration::harness::*;
use serde_json::json;

fn run_sh(rt: &Runtime, b: &mut Bundle, script: &str) -> Result<(i32, String, String)> {
    b.sh(script);
    rt.run(&unique("proc"), b)
}

#[test]
fn oom_score_personality_scheduler_ioprio() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["process"]["oomScoreAdj"] = json!(500);
    b.config["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    // /proc/self/stat field 41 is the scheduling policy (3 = SCHED_BATCH), 19 is nice.
    let (code, out, err) = run_sh(
        &rt,
        &mut b,
        "cat /proc/self/oom_score_adj; uname -m; cut -d' ' -f19,41 /proc/self/stat; ionice -p $$",
    )?;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "500");
    assert!(matches!(lines[1], "i686" | "i386"), "{out}");
    assert_eq!(lines[2], "5 3", "{out}");
    assert!(lines[3].contains("idle"), "{out}");
    Ok(())
}

#[test]
fn sysctl_and_domainname() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["domainname"] = json!("example.org");
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel/msgmax": "12345"});
    let (code, out, err) = run_sh(
        &rt,
        &mut b,
        "cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax",
    )?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "example.org\n1\n12345\n");
    Ok(())
}

/// A sysctl is written from inside the container: one that belongs to no
/// namespace of the container's own would change the host, so it is
/// refused before anything is made (runc's rules and wording).
#[test]
fn sysctls_outside_the_containers_namespaces_are_refused() -> Result<()> {
    let rt = Runtime::new()?;
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness")?;
    let cases = [
        (
            "network",
            json!({"net.ipv4.ip_forward": "1"}),
            "is not allowed in the host's network namespace",
        ),
        (
            "ipc",
            json!({"kernel.shmmax": "1000000"}),
            "is not allowed in the host's ipc namespace",
        ),
        (
            "",
            json!({"vm.swappiness": "7"}),
            "is not in a separate kernel namespace",
        ),
        (
            "",
            json!({"kernel.hostname": "x"}),
            "conflicts with the OCI \\\"hostname\\\" field",
        ),
    ];
    for (drop_ns, sysctl, want) in cases {
        let mut b = Bundle::busybox()?;
        b.args(&["true"]);
        b.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != drop_ns);
        b.config["linux"]["sysctl"] = sysctl.clone();
        let id = unique("sysctl");
        let (code, _, _) = rt.run(&id, &b)?;
        assert_eq!(code, 1, "{sysctl} accepted");
        let log = rt.log_text();
        assert!(log.contains(want), "{sysctl}: {log}");
        assert!(!rt.root.path().join(&id).exists(), "state dir left behind");
        assert!(!cgroup_exists(&id), "cgroup left behind");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness")?,
        swappiness
    );
    Ok(())
}

/// What runc tolerates with a warning: a relative mount destination (taken
/// from the container's `/`, runtime-spec 1.1) and capability names it
/// does not know (dropped), also in exec's --process file.
#[test]
fn relative_mount_destination_and_unknown_capabilities_warn_like_runc() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "mnt/rel", "type": "tmpfs", "source": "tmpfs"}));
    b.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .expect("bounding")
        .push(json!("CAP_FROM_THE_FUTURE"));
    b.sh("grep -c ' /mnt/rel ' /proc/self/mountinfo; sleep 1000");
    let id = unique("tolerant");
    b.write()?;
    rt.ok(&[
        "run",
        "-d",
        "--bundle",
        &b.path().display().to_string(),
        &id,
    ])?;
    let log = rt.log_text();
    assert!(
        log.contains("mount destination \\\"mnt/rel\\\" is not absolute: taken as /mnt/rel"),
        "{log}"
    );
    assert!(
        log.contains("ignoring unknown or unavailable capabilities: [CAP_FROM_THE_FUTURE]"),
        "{log}"
    );
    assert!(log.contains("\"level\":\"warning\""), "{log}");
    let mut process = b.config["process"].clone();
    process["args"] = json!(["grep", "-c", " /mnt/rel ", "/proc/self/mountinfo"]);
    let process_file = rt.root.path().join("process.json");
    std::fs::write(&process_file, serde_json::to_vec(&process)?)?;
    let out = rt.ok(&[
        "exec",
        "--process",
        &process_file.display().to_string(),
        &id,
    ])?;
    assert_eq!(out, "1\n");
    rt.ok(&["delete", "--force", &id])?;
    Ok(())
}

#[test]
fn time_namespace_offsets() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 31_536_000, "nanosecs": 0}});
    let (code, out, err) = run_sh(&rt, &mut b, "cut -d. -f1 /proc/uptime")?;
    assert_eq!(code, 0, "{err}");
    let uptime: u64 = out.trim().parse()?;
    assert!(
        uptime >= 31_536_000,
        "uptime {uptime} lacks the boottime offset"
    );
    Ok(())
}

#[test]
fn join_namespaces_by_path() -> Result<()> {
    let rt = Runtime::new()?;
    let mut a = Bundle::busybox()?;
    a.config["hostname"] = json!("host-a");
    a.sh("sleep 1000");
    let id_a = unique("nsa");
    rt.create(&id_a, &a)?;
    rt.ok(&["start", &id_a])?;
    let pid = rt.state(&id_a)?["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0);
    let net_a = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;

    let mut b = Bundle::busybox()?;
    b.config["hostname"] = serde_json::Value::Null;
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    for entry in ns.iter_mut() {
        let t = entry["type"].as_str().unwrap_or("").to_string();
        let file = match t.as_str() {
            "network" => "net",
            "uts" => "uts",
            "ipc" => "ipc",
            "pid" => "pid",
            _ => continue,
        };
        entry["path"] = json!(format!("/proc/{pid}/ns/{file}"));
    }
    let (code, out, err) = run_sh(
        &rt,
        &mut b,
        "hostname; readlink /proc/self/ns/net; cat /proc/1/cmdline | tr '\\0' ' '",
    )?;
    assert_eq!(code, 0, "{err} {}", rt.log_text());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "host-a");
    assert_eq!(lines[1], net_a.display().to_string());
    assert_eq!(
        lines[2].trim(),
        "sleep 1000",
        "pid 1 seen from the joined pid namespace"
    );
    rt.ok(&["delete", "--force", &id_a])?;
    Ok(())
}

#[test]
fn linux_devices_are_created_with_mode_and_owner() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["linux"]["devices"] = json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 384, "uid": 1000, "gid": 1000}
    ]);
    let (code, out, err) = run_sh(&rt, &mut b, "stat -c '%t %T %a %u %g' /dev/fuse")?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "a e5 600 1000 1000");
    Ok(())
}

#[test]
fn no_pivot_runs_with_chroot() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("cat /etc/passwd | head -1; ls /proc/1/root/bin/busybox");
    b.write()?;
    let id = unique("nopivot");
    let out = rt.output(&[
        "run",
        "--no-pivot",
        "--bundle",
        &b.path().display().to_string(),
        &id,
    ])?;
    assert!(out.status.success(), "{}", rt.log_text());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("root:x:0:0"), "{text}");
    assert!(text.contains("/proc/1/root/bin/busybox"), "{text}");
    Ok(())
}

#[test]
fn foreground_terminal_run_and_exec() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["process"]["terminal"] = json!(true);
    b.sh("test -t 0 && test -t 1 && echo run-has-tty; tty; exit 4");
    b.write()?;
    let id = unique("fgtty");
    let cmdline = format!(
        "{} --root {} run --bundle {} {}",
        berth_bin().display(),
        rt.root.path().display(),
        b.path().display(),
        id
    );
    // script(1) gives berth a real terminal, as a person at a shell would.
    let out = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run-has-tty"), "{text} {}", rt.log_text());
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");

    // exec -t into a running container, also through a terminal.
    let mut c = Bundle::busybox()?;
    c.sh("sleep 1000");
    let id2 = unique("fgexec");
    rt.create(&id2, &c)?;
    rt.ok(&["start", &id2])?;
    let cmdline = format!(
        "{} --root {} exec -t {} sh -c 'test -t 0 && echo exec-has-tty'",
        berth_bin().display(),
        rt.root.path().display(),
        id2
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exec-has-tty"), "{text} {}", rt.log_text());
    rt.ok(&["delete", "--force", &id2])?;
    Ok(())
}

#[test]
fn mount_targets_cannot_escape_rootfs_through_symlinks() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let host_dir = TempDir::new("berth-escape")?;
    // The image tries to point a mount target at a host directory.
    std::os::unix::fs::symlink(host_dir.path(), b.rootfs().join("evil"))?;
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({
            "destination": "/evil/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]
        }));
    // Inside, the symlink resolves within the rootfs: the tmpfs sits at the
    // container's own <host_dir>/x.
    let inner = format!("{}/x", host_dir.path().display());
    let script = format!(
        "touch /evil/x/marker && ls {inner}/marker && grep -c ' {inner} ' /proc/self/mountinfo"
    );
    let (code, out, err) = run_sh(&rt, &mut b, &script)?;
    assert_eq!(code, 0, "{err} {}", rt.log_text());
    assert_eq!(out, format!("{inner}/marker\n1\n"));
    assert!(
        !host_dir.path().join("x").exists(),
        "mount target was created on the host"
    );
    assert!(host_mounts_containing(&host_dir.path().display().to_string()).is_empty());
    Ok(())
}

#[test]
fn run_detached_keep_and_kill_all() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("sleep 1000 & sleep 1000 & wait");
    b.write()?;
    let bundle = b.path().display().to_string();
    let id = unique("detach");
    rt.ok(&["run", "-d", "--bundle", &bundle, &id])?;
    assert_eq!(rt.status(&id)?, "running");
    // The shell forks its two sleeps asynchronously: wait for all three.
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..200 {
        pids = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])?)?;
        if pids.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(pids.len(), 3, "{pids:?}");
    rt.ok(&["kill", "--all", &id, "KILL"])?;
    rt.wait_status(&id, "stopped")?;
    for pid in pids {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"));
        assert!(!alive, "pid {pid} survived kill --all");
    }
    rt.ok(&["delete", &id])?;

    // --keep: the stopped container stays until deleted.
    let mut k = Bundle::busybox()?;
    k.sh("umask; exit 0");
    k.config["process"]["user"]["umask"] = json!(0o027);
    let id2 = unique("keep");
    k.write()?;
    let out = rt.output(&[
        "run",
        "--keep",
        "--bundle",
        &k.path().display().to_string(),
        &id2,
    ])?;
    assert!(out.status.success(), "{}", rt.log_text());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0027\n");
    assert_eq!(rt.status(&id2)?, "stopped");
    rt.ok(&["delete", &id2])?;
    assert!(!rt.root.path().join(&id2).exists());
    Ok(())
}

/// CVE-2019-5736: while berth's code runs inside a container, /proc/<pid>/exe
/// must not lead back to a writable berth binary.
#[test]
fn init_runs_from_sealed_copy_or_read_only_binary() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("true");
    let id = unique("sealed");
    rt.create(&id, &b)?;
    let pid = rt.state(&id)?["pid"].as_i64().unwrap_or(0);
    // Either a read-only view of the binary (detached bind mount) or a
    // write-sealed memfd copy: reopening it for writing must stay impossible
    // even after the process is gone (so not merely ETXTBSY).
    let exe_path = format!("/proc/{pid}/exe");
    let read_only = nix::sys::statvfs::statvfs(exe_path.as_str())?
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    let sealed = std::fs::File::open(&exe_path).is_ok_and(|f| {
        use std::os::fd::AsRawFd;
        // SAFETY: F_GET_SEALS reads flags of our own fd.
        let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
        seals >= 0 && seals & libc::F_SEAL_WRITE != 0
    });
    assert!(
        read_only || sealed,
        "init runs from a writable berth binary"
    );
    // No mapping leads back to the binary either (/proc/<pid>/map_files).
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let bin = berth_bin().canonicalize()?;
    assert!(
        !maps.contains(&bin.display().to_string()),
        "init still maps {}:\n{maps}",
        bin.display()
    );
    assert!(
        host_mounts_containing(&berth_bin().display().to_string()).is_empty(),
        "the read-only view must not be visible in the host's mount table"
    );
    rt.ok(&["delete", "--force", &id])?;

    // A binary on a read-only mount needs no copy: it cannot be opened for writing.
    let dir = TempDir::new("berth-robin")?;
    let ro = dir.path().join("berth");
    std::fs::copy(berth_bin(), &ro)?;
    let st = std::process::Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&ro)
        .arg(&ro)
        .status()?;
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(ro.clone());
    let id2 = unique("robin");
    b.write()?;
    let out = std::process::Command::new(&ro)
        .arg("--root")
        .arg(rt.root.path())
        .args(["create", "--bundle", &b.path().display().to_string(), &id2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    assert!(out.success(), "{}", rt.log_text());
    let pid = rt.state(&id2)?["pid"].as_i64().unwrap_or(0);
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe"))?, ro);
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/exe"))
        .unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)),
        "{err}"
    );
    rt.ok(&["delete", "--force", &id2])?;
    Ok(())
}

#[test]
fn missing_cwd_is_created_like_runc() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["root"]["readonly"] = json!(true);
    b.config["process"]["cwd"] = json!("/work/sub");
    let (code, out, err) = run_sh(&rt, &mut b, "pwd; stat -c '%a %u' /work/sub")?;
    assert_eq!(code, 0, "{err} {}", rt.log_text());
    assert_eq!(out, "/work/sub\n755 0\n");
    Ok(())
}

/// Started through the dynamic loader (`ld.so berth ...`), /proc/self/exe is
/// ld.so: berth cannot protect its own binary then, and must say so instead
/// of creating anything (or crashing while re-mapping itself).
#[test]
fn running_through_the_dynamic_loader_is_refused_cleanly() -> Result<()> {
    let ld_so = std::path::Path::new("/lib64/ld-linux-x86-64.so.2");
    let dynamic = ld_so.exists()
        && std::process::Command::new(ld_so)
            .arg("--verify")
            .arg(berth_bin())
            .status()
            .is_ok_and(|s| s.success());
    if !dynamic {
        skip("berth is not a dynamically linked executable");
        return Ok(());
    }
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("true");
    b.write()?;
    let id = unique("ldso");
    let out = std::process::Command::new(ld_so)
        .arg(berth_bin())
        .arg("--root")
        .arg(rt.root.path())
        .args(["run", "--bundle", &b.path().display().to_string(), &id])
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not through the dynamic loader"), "{err}");
    assert!(!rt.root.path().join(&id).exists(), "state left behind");
    assert!(!cgroup_exists(&id), "cgroup left behind");
    Ok(())
}
