//! The berth runtime core against the busybox bundle: every assertion is
//! made from inside a real container.

use anyhow::Result;
use berth_integration::harness::*;
use serde_json::{json, Value};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;

fn cmd_output(
    rt: &Runtime,
    id: &str,
    b: &mut Bundle,
    script: &str,
) -> Result<(i32, String, String)> {
    b.sh(script);
    rt.run(id, b)
}

#[test]
fn run_returns_exit_status_and_cleans_up() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let id = unique("exit");
    let (code, _, err) = cmd_output(&rt, &id, &mut b, "exit 3")?;
    assert_eq!(code, 3, "stderr: {err}");
    assert!(!rt.root.path().join(&id).exists(), "state dir left behind");
    assert!(!cgroup_exists(&id), "cgroup left behind");
    Ok(())
}

#[test]
fn hostname_pid1_env_cwd() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["hostname"] = json!("berth-test");
    b.config["process"]["env"] = json!(["PATH=/bin:/sbin", "FOO=bar baz"]);
    b.config["process"]["cwd"] = json!("/tmp");
    let (code, out, err) = cmd_output(
        &rt,
        &unique("ident"),
        &mut b,
        "hostname; echo $$; echo \"$FOO\"; pwd; echo $HOME",
    )?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "berth-test\n1\nbar baz\n/tmp\n/root\n");
    Ok(())
}

#[test]
fn mounts_masked_and_readonly_paths() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let (code, out, err) = cmd_output(
        &rt,
        &unique("mounts"),
        &mut b,
        "cat /proc/self/mountinfo; echo ---; cat /proc/timer_list | wc -c; (echo x > /proc/sys/kernel/domainname) 2>&1; ls -l /dev/null; readlink /dev/fd; readlink /dev/ptmx",
    )?;
    assert_eq!(code, 0, "{err}");
    let (mountinfo, rest) = out.split_once("---\n").expect("separator");
    let find = |target: &str| {
        mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .map(str::to_string)
    };
    let proc_line = find("/proc").expect("/proc mounted");
    assert!(proc_line.contains(" - proc "), "{proc_line}");
    let pts = find("/dev/pts").expect("/dev/pts mounted");
    assert!(pts.contains("nosuid") && pts.contains("noexec"), "{pts}");
    let sys = find("/sys").expect("/sys mounted");
    assert!(
        sys.split(' ').nth(5).unwrap_or("").starts_with("ro"),
        "sysfs should be ro: {sys}"
    );
    let proc_sys = find("/proc/sys").expect("/proc/sys readonly bind");
    assert!(
        proc_sys.split(' ').nth(5).unwrap_or("").starts_with("ro"),
        "{proc_sys}"
    );
    assert!(
        find("/proc/timer_list").is_some(),
        "/proc/timer_list masked"
    );
    let mut rest = rest.lines();
    assert_eq!(
        rest.next(),
        Some("0"),
        "masked /proc/timer_list must read empty"
    );
    assert!(rest.next().unwrap_or("").contains("Read-only file system"));
    let devnull = rest.next().unwrap_or("");
    assert!(
        devnull.starts_with("crw-rw-rw-") && devnull.contains("1,   3"),
        "{devnull}"
    );
    assert_eq!(rest.next(), Some("/proc/self/fd"));
    assert_eq!(rest.next(), Some("pts/ptmx"));
    Ok(())
}

#[test]
fn tmpfs_options_and_readonly_root() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["root"]["readonly"] = json!(true);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({
            "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1770"]
        }));
    let (code, out, err) = cmd_output(
        &rt,
        &unique("tmpfs"),
        &mut b,
        "touch /rootfile 2>&1; grep ' /scratch ' /proc/self/mountinfo; stat -c %a /scratch; df -k /scratch | tail -1",
    )?;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Read-only file system"), "{out}");
    assert!(
        lines[1].contains("nosuid") && lines[1].contains("nodev") && lines[1].contains("noexec"),
        "{out}"
    );
    assert_eq!(lines[2], "1770");
    assert!(
        lines[3].split_whitespace().nth(1) == Some("1024"),
        "size=1m: {out}"
    );
    Ok(())
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn capabilities_as_root() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let (code, out, err) = cmd_output(&rt, &unique("caps"), &mut b, "cat /proc/self/status")?;
    assert_eq!(code, 0, "{err}");
    // runc's default spec: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE.
    let want = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    assert_eq!(status_field(&out, "CapBnd"), want);
    assert_eq!(status_field(&out, "CapPrm"), want);
    assert_eq!(status_field(&out, "CapEff"), want);
    assert_eq!(status_field(&out, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    Ok(())
}

#[test]
fn user_groups_rlimits_and_ambient_caps() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    // A non-root process keeps capabilities across exec only through the
    // ambient set, which needs them inheritable too.
    b.config["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    b.config["process"]["capabilities"]["ambient"] = json!(["CAP_KILL"]);
    let (code, out, err) = cmd_output(
        &rt,
        &unique("user"),
        &mut b,
        "cat /proc/self/status; echo ---; ulimit -n; ulimit -Hn; id",
    )?;
    assert_eq!(code, 0, "{err}");
    let (status, rest) = out.split_once("---\n").expect("separator");
    let bounding = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    let kill_only = format!("{:016x}", 1u64 << 5);
    assert_eq!(status_field(status, "CapBnd"), bounding);
    assert_eq!(status_field(status, "CapAmb"), kill_only);
    assert_eq!(status_field(status, "CapEff"), kill_only);
    assert_eq!(status_field(status, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(status, "Gid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(status, "Groups"), "10 20");
    let mut rest = rest.lines();
    assert_eq!(rest.next(), Some("256"));
    assert_eq!(rest.next(), Some("512"));
    assert!(rest.next().unwrap_or("").starts_with("uid=1000 gid=1000"));
    Ok(())
}

#[test]
fn lifecycle_create_start_state_kill_delete() -> Result<()> {
    let rt = Runtime::new()?;
    // runc prints its nil slice when there is nothing to list.
    assert_eq!(rt.ok(&["list", "--format", "json"])?.trim(), "null");
    let mut b = Bundle::busybox()?;
    b.sh("sleep 1000");
    b.config["annotations"] = json!({"org.example": "x"});
    let id = unique("life");
    let pid_file = rt.root.path().join("init.pid");
    b.write()?;
    rt.ok(&[
        "create",
        "--bundle",
        &b.path().display().to_string(),
        "--pid-file",
        &pid_file.display().to_string(),
        &id,
    ])?;
    let st = rt.state(&id)?;
    assert_eq!(st["status"], "created");
    assert_eq!(
        st["ociVersion"].as_str().map(|v| v.starts_with("1.")),
        Some(true)
    );
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b.path().display().to_string());
    assert_eq!(st["annotations"]["org.example"], "x");
    let pid: i64 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    assert_eq!(st["pid"].as_i64(), Some(pid));
    // Duplicate id is refused and does not disturb the existing container.
    let dup = rt.output(&["create", "--bundle", &b.path().display().to_string(), &id])?;
    assert!(!dup.status.success());
    assert!(
        rt.log_text().contains("container with id exists"),
        "{}",
        rt.log_text()
    );
    assert_eq!(rt.status(&id)?, "created");

    rt.ok(&["start", &id])?;
    assert_eq!(rt.status(&id)?, "running");
    let again = rt.output(&["start", &id])?;
    assert!(!again.status.success(), "second start must fail");

    let list: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])?)?;
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "running");
    // `list` names the state directory's owner; `state` leaves it empty.
    assert_eq!(list[0]["owner"], "root");
    assert_eq!(rt.state(&id)?["owner"], "");
    assert!(rt.ok(&["list", "-q"])?.contains(&id));

    let del = rt.output(&["delete", &id])?;
    assert!(
        !del.status.success(),
        "delete of running container without --force"
    );
    assert!(rt.log_text().contains("is not stopped"));

    rt.ok(&["kill", &id, "KILL"])?;
    rt.wait_status(&id, "stopped")?;
    assert_eq!(rt.state(&id)?["pid"], 0);
    let k = rt.output(&["kill", &id, "9"])?;
    assert!(!k.status.success());
    assert!(rt.log_text().contains("container not running"));
    rt.ok(&["delete", &id])?;
    assert!(!rt.root.path().join(&id).exists());
    assert!(!cgroup_exists(&id));
    Ok(())
}

#[test]
fn unknown_id_errors_like_runc_in_json_log() -> Result<()> {
    let rt = Runtime::new()?;
    for args in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope", "9"],
        &["delete", "nope"],
    ] {
        let out = rt.output(args)?;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    let last_error = rt
        .log_text()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["level"] == "error")
        .expect("an error line");
    assert!(
        last_error["msg"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{last_error}"
    );
    assert!(last_error["time"].is_string());
    // delete --force of an unknown id succeeds (containerd relies on it).
    rt.ok(&["delete", "--force", "nope"])?;
    Ok(())
}

#[test]
fn bad_config_leaves_nothing_behind() -> Result<()> {
    let rt = Runtime::new()?;
    let b = Bundle::busybox()?;
    std::fs::write(b.path().join("config.json"), b"{ not json")?;
    let id = unique("bad");
    let out = rt.output(&["create", "--bundle", &b.path().display().to_string(), &id])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        rt.log_text().contains("invalid config.json"),
        "{}",
        rt.log_text()
    );
    assert!(!rt.root.path().join(&id).exists());

    // Valid JSON, but the cwd cannot be created (a missing one would be, as
    // runc does): fails inside init, all undone.
    let mut b2 = Bundle::busybox()?;
    b2.config["process"]["cwd"] = json!("/bin/busybox/sub");
    b2.write()?;
    let id2 = unique("badcwd");
    let out = rt.output(&["create", "--bundle", &b2.path().display().to_string(), &id2])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        rt.log_text().contains("/bin/busybox/sub"),
        "{}",
        rt.log_text()
    );
    assert!(!rt.root.path().join(&id2).exists());
    assert!(!cgroup_exists(&id2), "cgroup left behind");

    // A missing binary is reported at create time.
    let mut b3 = Bundle::busybox()?;
    b3.args(&["no-such-binary"]);
    b3.write()?;
    let id3 = unique("nobin");
    let out = rt.output(&["create", "--bundle", &b3.path().display().to_string(), &id3])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        rt.log_text().contains("executable file not found in $PATH"),
        "{}",
        rt.log_text()
    );
    assert!(!rt.root.path().join(&id3).exists());
    assert!(
        host_mounts_containing(&b3.rootfs().display().to_string()).is_empty(),
        "mount leaked"
    );
    Ok(())
}

#[test]
fn exec_into_running_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["hostname"] = json!("exec-host");
    b.sh("sleep 1000");
    let id = unique("exec");
    rt.create(&id, &b)?;
    rt.ok(&["start", &id])?;
    let out = rt.output(&[
        "exec",
        "-e",
        "X=1",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "hostname; pwd; echo $X; exit 7",
    ])?;
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-host\n/tmp\n1\n");
    // containerd's style: --process JSON, detached, pid file.
    let dir = TempDir::new("berth-exec")?;
    let process = json!({"args": ["sleep", "100"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let pf = dir.path().join("process.json");
    std::fs::write(&pf, process.to_string())?;
    let pid_file = dir.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--process",
        &pf.display().to_string(),
        "--detach",
        "--pid-file",
        &pid_file.display().to_string(),
        &id,
    ])?;
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])?)?;
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
    let table = rt.ok(&["ps", &id])?;
    assert!(table.contains("sleep 100"), "{table}");
    // --cap adds to bounding/effective/permitted; --user switches identity.
    let caps = rt.ok(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        &id,
        "grep",
        "CapEff",
        "/proc/self/status",
    ])?;
    let eff = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap_or(""), 16)?;
    assert!(eff & (1 << 21) != 0, "CAP_SYS_ADMIN missing: {caps}");
    assert_eq!(
        rt.ok(&["exec", "--user", "1000:1000", &id, "id", "-u"])?,
        "1000\n"
    );
    let missing = rt.output(&["exec", &id, "no-such-binary"])?;
    assert!(!missing.status.success());
    rt.ok(&["delete", "--force", &id])?;
    Ok(())
}

#[test]
fn signals_are_forwarded_in_foreground_run() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done");
    let status = signal_foreground_run(&rt, &b, libc::SIGTERM)?;
    assert_eq!(status.code(), Some(42));
    Ok(())
}

/// Foreground `run` of `b` (whose process prints "ready" first), then
/// `sig` sent to berth; returns berth's exit status.
fn signal_foreground_run(rt: &Runtime, b: &Bundle, sig: i32) -> Result<std::process::ExitStatus> {
    b.write()?;
    let mut child = rt
        .cmd(&[
            "run",
            "--bundle",
            &b.path().display().to_string(),
            &unique("sig"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    Ok(child.wait()?)
}

/// Real-time signals (SIGRTMIN+3 stops a systemd container under podman):
/// `kill` takes them by number and by name, foreground `run` forwards them,
/// and a process they kill gives the shell's 128+N exit status.
#[test]
fn real_time_signals_by_number_and_name() -> Result<()> {
    let rt = Runtime::new()?;
    let rtmin = libc::SIGRTMIN();
    let mut b = Bundle::busybox()?;
    // Each trapped signal leaves a mark in the rootfs (seen from the host).
    b.config["root"]["readonly"] = json!(false);
    b.sh(&format!(
        "trap 'echo {n} >> /rt' {n}; trap 'echo {m} >> /rt' {m}; \
         trap 'exit 0' TERM; while true; do sleep 0.05; done",
        n = rtmin + 3,
        m = rtmin + 4
    ));
    let id = unique("rt");
    rt.create(&id, &b)?;
    rt.ok(&["start", &id])?;
    let marks = b.rootfs().join("rt");
    let wait_marks = |want: &str| -> Result<()> {
        for _ in 0..200 {
            if std::fs::read_to_string(&marks).unwrap_or_default() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        anyhow::bail!(
            "marks {:?}, want {want:?}",
            std::fs::read_to_string(&marks).unwrap_or_default()
        )
    };
    // The trap must be set before the first signal arrives.
    std::thread::sleep(std::time::Duration::from_millis(200));
    rt.ok(&["kill", &id, &(rtmin + 3).to_string()])?;
    wait_marks(&format!("{}\n", rtmin + 3))?;
    rt.ok(&["kill", &id, "SIGRTMIN+4"])?;
    wait_marks(&format!("{}\n{}\n", rtmin + 3, rtmin + 4))?;
    rt.ok(&["kill", "--all", &id, "RTMIN+3"])?;
    wait_marks(&format!("{}\n{}\n{}\n", rtmin + 3, rtmin + 4, rtmin + 3))?;
    let bad = rt.output(&["kill", &id, "RTMAX+1"])?;
    assert_eq!(bad.status.code(), Some(1));
    rt.ok(&["delete", "--force", &id])?;

    // Without a pid namespace the process is no namespace init: an
    // unhandled real-time signal forwarded by `run` kills it.
    let mut b = Bundle::busybox()?;
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "pid");
    b.sh("echo ready; exec sleep 1000");
    let status = signal_foreground_run(&rt, &b, rtmin + 5)?;
    assert_eq!(status.code(), Some(128 + rtmin + 5));
    Ok(())
}

#[test]
fn inherited_fds_are_closed_unless_preserved() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("ls /proc/self/fd | sort -n | tr '\\n' ' '");
    b.write()?;
    let run = |preserve: &str| -> Result<String> {
        let mut c = rt.cmd(&[
            "run",
            "--preserve-fds",
            preserve,
            "--bundle",
            &b.path().display().to_string(),
            &unique("fds"),
        ]);
        // SAFETY: dup2 in the child before exec; hands berth fds 3 and 7.
        unsafe {
            c.pre_exec(|| {
                libc::dup2(2, 3);
                libc::dup2(2, 7);
                Ok(())
            });
        }
        let out = c.output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // ls opens one fd of its own (3) for the directory.
    assert_eq!(run("0")?, "0 1 2 3 ");
    let preserved = run("1")?;
    assert!(
        preserved.starts_with("0 1 2 3 4 ") && !preserved.contains(" 7 "),
        "{preserved}"
    );
    Ok(())
}

#[test]
fn hooks_run_in_order_with_state() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let logdir = TempDir::new("berth-hooks")?;
    let log = logdir.path().join("log");
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo \"{name} $s\" >> {}", log.display())]});
    // startContainer runs inside the container: it logs through a bind mount.
    b.config["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/hooklog", "type": "bind", "source": logdir.path(), "options": ["rbind", "rw"]
    }));
    b.config["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "read s; echo \"startContainer $s\" >> /hooklog/log"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")],
    });
    let id = unique("hooks");
    let (code, _, err) = cmd_output(&rt, &id, &mut b, "true")?;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&log)?;
    let names: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for line in text.lines() {
        let state: Value = serde_json::from_str(line.split_once(' ').map(|x| x.1).unwrap_or("{}"))?;
        assert_eq!(state["id"], id.as_str(), "{line}");
        assert!(state["pid"].is_number(), "{line}");
    }
    // A failing createRuntime hook fails create and undoes it.
    let mut b2 = Bundle::busybox()?;
    b2.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    let id2 = unique("hookfail");
    let (code, _, _) = cmd_output(&rt, &id2, &mut b2, "true")?;
    assert_eq!(code, 1);
    assert!(
        rt.log_text().contains("createRuntime hook"),
        "{}",
        rt.log_text()
    );
    assert!(!rt.root.path().join(&id2).exists());
    Ok(())
}

#[test]
fn user_namespace_with_mappings() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // The rootfs must be owned by the mapped root to be usable.
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .status()?;
    assert!(status.success());
    let (code, out, err) = cmd_output(
        &rt,
        &unique("userns"),
        &mut b,
        "cat /proc/self/uid_map; id -u",
    )?;
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    assert_eq!(lines.next(), Some("0"));
    Ok(())
}

#[test]
fn terminal_through_console_socket() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.config["process"]["terminal"] = json!(true);
    b.sh("test -t 0 && test -t 1 && echo is-a-tty; tty");
    let dir = TempDir::new("berth-console")?;
    let sock_path = dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path)?;
    let id = unique("tty");
    b.write()?;
    let creator = rt
        .cmd(&[
            "create",
            "--bundle",
            &b.path().display().to_string(),
            "--console-socket",
            &sock_path.display().to_string(),
            &id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )?;
    let mut master = None;
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the fd was just received for us.
            master = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    let master = master.expect("pty master received");
    let out = creator.wait_with_output()?;
    assert!(out.status.success(), "{}", rt.log_text());
    rt.ok(&["start", &id])?;
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut chunk = [0u8; 256];
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        if text.contains("/dev/") {
            break;
        }
    }
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(
        text.contains("/dev/pts/0") || text.contains("/dev/console"),
        "{text:?}"
    );
    rt.ok(&["delete", "--force", &id])?;
    Ok(())
}

#[test]
fn concurrent_creates_of_one_id_yield_one_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    b.sh("sleep 100");
    b.write()?;
    let id = unique("race");
    let bundle = b.path().display().to_string();
    let children: Vec<_> = (0..4)
        .map(|_| {
            rt.cmd(&["create", "--bundle", &bundle, &id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let ok = children
        .into_iter()
        .map(|c| c.wait_with_output().map(|o| o.status.success()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|s| *s)
        .count();
    assert_eq!(ok, 1);
    assert_eq!(rt.status(&id)?, "created");
    rt.ok(&["delete", &id])?;
    Ok(())
}

#[test]
fn version_spec_and_features() -> Result<()> {
    let out = std::process::Command::new(berth_bin())
        .arg("--version")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("berth version "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("spec: 1.")), "{text}");
    let dir = TempDir::new("berth-spec")?;
    let st = std::process::Command::new(berth_bin())
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .status()?;
    assert!(st.success());
    let spec: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json"))?)?;
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    let again = std::process::Command::new(berth_bin())
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()?;
    assert!(!again.status.success());
    let f = std::process::Command::new(berth_bin())
        .arg("features")
        .output()?;
    let features: Value = serde_json::from_slice(&f.stdout)?;
    assert!(features["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.len() >= 7));
    assert!(features["mountOptions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|o| o == "rbind")));
    Ok(())
}

/// Init joins its cgroups late (while berth configures them it mounts the
/// rootfs) but always before it creates the cgroup namespace, whose root is
/// the cgroup init is in at that moment: inside, every hierarchy reads "/"
/// and the mounted cgroupfs shows the container's own cgroup.
#[test]
fn cgroup_namespace_is_rooted_at_the_container_cgroup() -> Result<()> {
    let rt = Runtime::new()?;
    let script = "cat /proc/self/cgroup; echo ---; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";

    let mut b = Bundle::busybox()?;
    b.config["linux"]["resources"]["pids"] = json!({"limit": 77});
    let mut with_ns = b.config["linux"]["namespaces"].clone();
    with_ns
        .as_array_mut()
        .expect("namespaces array")
        .push(json!({"type": "cgroup"}));
    b.config["linux"]["namespaces"] = with_ns;
    let (code, out, err) = cmd_output(&rt, &unique("cgns"), &mut b, script)?;
    assert_eq!(code, 0, "{err}");
    let (cgroups, pids_max) = out.split_once("---\n").expect("separator");
    assert!(!cgroups.is_empty());
    for line in cgroups.lines() {
        assert!(line.ends_with(":/"), "not rooted at the container: {line}");
    }
    // The cgroupfs mounted inside is the container's cgroup, limits applied.
    assert_eq!(pids_max.trim(), "77");

    // Without a cgroup namespace the host path of the cgroup shows.
    let mut b = Bundle::busybox()?;
    let id = unique("nocgns");
    let (code, out, err) = cmd_output(&rt, &id, &mut b, "cat /proc/self/cgroup")?;
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        assert!(line.ends_with(&format!("/{id}")), "{line}");
    }
    Ok(())
}

/// A new network namespace has only a loopback device, and the sysfs
/// mounted inside reflects it (sysfs must be mounted after joining it).
#[test]
fn new_network_namespace_has_only_loopback() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let (code, out, err) = cmd_output(
        &rt,
        &unique("netns"),
        &mut b,
        "readlink /proc/self/ns/net; ls /sys/class/net; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    )?;
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let inside = lines.next().unwrap_or_default().to_string();
    let host = std::fs::read_link("/proc/self/ns/net")?;
    assert_ne!(
        Path::new(&inside),
        host.as_path(),
        "container shares the host's network namespace"
    );
    let rest: Vec<&str> = lines.map(str::trim).collect();
    assert_eq!(rest, ["lo", "lo"], "{out}");
    Ok(())
}
