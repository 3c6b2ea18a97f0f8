//! Containment of the runtime's own mounts and procfs writes (issue 9,
//! items 2-4): hostile images and shared /dev trees try to get a volume
//! onto /proc, a procfs file onto /dev/console or a masked path, or make
//! sysctl / oom_score_adj writes land in a fake /proc; LSM fields that the
//! host cannot apply must be refused, not dropped.
//!
//! Every attack aims at a namespaced procfs file (the container's own
//! hostname or ip_forward), never at a host-global sysctl, and the host's
//! core_pattern and hostname are checked unchanged anyway.

use anyhow::{bail, Result};
use berth_integration::harness::*;
use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Host values a container escape through procfs would change.
struct HostCanary {
    core_pattern: String,
    hostname: String,
}

impl HostCanary {
    fn take() -> Result<HostCanary> {
        Ok(HostCanary {
            core_pattern: std::fs::read_to_string("/proc/sys/kernel/core_pattern")?,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")?,
        })
    }

    fn assert_unchanged(&self) -> Result<()> {
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/core_pattern")?,
            self.core_pattern,
            "host core_pattern changed"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/hostname")?,
            self.hostname,
            "host hostname changed"
        );
        Ok(())
    }
}

/// Nothing of a refused container may stay: no state, no mount, no cgroup.
fn assert_nothing_left(rt: &Runtime, b: &Bundle, id: &str) -> Result<()> {
    assert!(!cgroup_exists(id), "cgroup {id} left behind");
    let left: Vec<_> = std::fs::read_dir(rt.root.path())?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "containers left behind: {left:?}");
    let mounts = host_mounts_containing(&b.path().display().to_string());
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    Ok(())
}

fn mounts(b: &mut Bundle) -> &mut Vec<Value> {
    b.config["mounts"].as_array_mut().expect("mounts array")
}

/// Drops the config's own /dev mounts, so the image's /dev is used as it
/// is (a hostile or shared /dev).
fn use_image_dev(b: &mut Bundle) {
    mounts(b).retain(|m| {
        let d = m["destination"].as_str().unwrap_or_default();
        d != "/dev" && !d.starts_with("/dev/")
    });
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::os::unix::fs::symlink(target, link)?;
    Ok(())
}

#[test]
fn symlinked_volume_destination_cannot_cover_proc() -> Result<()> {
    let canary = HostCanary::take()?;
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    // The volume carries files a fake /proc would need for a sysctl write
    // to "succeed" into it.
    let vol = TempDir::new("berth-vol")?;
    std::fs::create_dir_all(vol.path().join("sys/net/ipv4"))?;
    std::fs::write(vol.path().join("sys/net/ipv4/ip_forward"), "0\n")?;
    std::fs::write(vol.path().join("canary"), "volume\n")?;
    symlink("/proc", &b.rootfs().join("myvol"))?;
    mounts(&mut b).push(json!({
        "destination": "/myvol", "type": "bind",
        "source": vol.path(), "options": ["rbind", "rw"]
    }));
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.sh("cat /proc/canary; stat -f -c %T /proc");
    let id = unique("myvol");
    let (code, out, err) = rt.run(&id, &b)?;
    assert_ne!(code, 0, "the volume was mounted: {out}");
    assert!(
        !out.contains("volume"),
        "the container saw the volume as /proc"
    );
    assert!(
        err.contains("\"/myvol\"") && err.contains("/proc"),
        "error must name the destination and /proc: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(vol.path().join("sys/net/ipv4/ip_forward"))?,
        "0\n",
        "the sysctl was written into the volume"
    );
    assert_nothing_left(&rt, &b, &id)?;
    canary.assert_unchanged()
}

#[test]
fn symlinked_destination_cannot_reach_proc_self() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let vol = TempDir::new("berth-vol")?;
    std::fs::write(vol.path().join("canary"), "volume\n")?;
    symlink("/proc/self", &b.rootfs().join("a"))?;
    mounts(&mut b).push(json!({
        "destination": "/a/attr", "type": "bind",
        "source": vol.path(), "options": ["rbind", "rw"]
    }));
    b.sh("cat /proc/1/attr/canary");
    let id = unique("attr");
    let (code, out, err) = rt.run(&id, &b)?;
    assert_ne!(code, 0, "a volume landed on /proc/1/attr: {out}");
    assert!(!out.contains("volume"));
    assert!(
        err.contains("\"/a/attr\"") && err.contains("inside /proc"),
        "error must name the destination: {err}"
    );
    assert_nothing_left(&rt, &b, &id)
}

#[test]
fn mounts_on_proc_itself_still_need_procfs_and_allowed_files_still_work() -> Result<()> {
    // The rule applied to the resolved path must not break what runc
    // allows: an lxcfs-style bind over /proc/uptime through a symlinked
    // destination that resolves to it.
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    let dir = TempDir::new("berth-uptime")?;
    std::fs::write(dir.path().join("uptime"), "4242.00 1.00\n")?;
    symlink("/proc/uptime", &b.rootfs().join("up"))?;
    mounts(&mut b).push(json!({
        "destination": "/up", "type": "bind",
        "source": dir.path().join("uptime"), "options": ["bind", "ro"]
    }));
    b.sh("cat /proc/uptime; stat -f -c %T /proc");
    let (code, out, err) = rt.run(&unique("uptime"), &b)?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "4242.00 1.00\nproc\n");
    Ok(())
}

#[test]
fn sysctl_and_oom_score_adj_reach_the_real_procfs() -> Result<()> {
    let canary = HostCanary::take()?;
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    // No procfs at /proc: the image's fake one stays, with files where the
    // runtime's writes would go. A real procfs is mounted elsewhere to look.
    mounts(&mut b).retain(|m| m["destination"] != "/proc");
    mounts(&mut b).push(json!({"destination": "/realproc", "type": "proc", "source": "proc"}));
    let fake = b.rootfs().join("proc");
    std::fs::create_dir_all(fake.join("sys/net/ipv4"))?;
    std::fs::write(fake.join("sys/net/ipv4/ip_forward"), "0\n")?;
    std::fs::create_dir_all(fake.join("1"))?;
    std::fs::write(fake.join("1/oom_score_adj"), "0\n")?;
    symlink("1", &fake.join("self"))?;
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.config["process"]["oomScoreAdj"] = json!(321);
    b.sh("cat /realproc/sys/net/ipv4/ip_forward /realproc/self/oom_score_adj");
    let (code, out, err) = rt.run(&unique("fakeproc"), &b)?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1\n321\n", "the writes did not reach the real procfs");
    assert_eq!(
        std::fs::read_to_string(fake.join("sys/net/ipv4/ip_forward"))?,
        "0\n"
    );
    assert_eq!(
        std::fs::read_to_string(fake.join("1/oom_score_adj"))?,
        "0\n"
    );
    canary.assert_unchanged()
}

/// In a user namespace without a procfs of its own the kernel refuses a
/// private procfs instance, and the fallback, the container's /proc, is the
/// image's fake: the sysctl must be refused, not written into the fake.
#[test]
fn sysctl_into_a_fake_proc_is_refused_when_no_real_one_is_at_hand() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    mounts(&mut b).retain(|m| {
        let d = m["destination"].as_str().unwrap_or_default();
        d != "/proc" && !d.starts_with("/sys")
    });
    let ns = b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    ns.push(json!({"type": "user"}));
    let ids = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    b.config["linux"]["uidMappings"] = ids.clone();
    b.config["linux"]["gidMappings"] = ids;
    let fake = b.rootfs().join("proc");
    std::fs::create_dir_all(fake.join("sys/net/ipv4"))?;
    std::fs::write(fake.join("sys/net/ipv4/ip_forward"), "0\n")?;
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.sh("true");
    let id = unique("fakeproc-userns");
    let (code, _, err) = rt.run(&id, &b)?;
    assert_ne!(code, 0, "a sysctl was written into the image's fake /proc");
    assert!(
        err.contains("write sysctls") && err.contains("not on procfs"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(fake.join("sys/net/ipv4/ip_forward"))?,
        "0\n"
    );
    assert_nothing_left(&rt, &b, &id)
}

/// The kernel's last capability decides how much of the bounding set is
/// dropped: read from the image's fake /proc/sys/kernel/cap_last_cap ("0")
/// it kept every capability but CAP_CHOWN there, which the container's root
/// regains at its next execve (or through an image binary's file caps).
#[test]
fn a_fake_cap_last_cap_does_not_keep_the_bounding_set() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    mounts(&mut b).retain(|m| m["destination"] != "/proc");
    mounts(&mut b).push(json!({"destination": "/realproc", "type": "proc", "source": "proc"}));
    let fake = b.rootfs().join("proc/sys/kernel");
    std::fs::create_dir_all(&fake)?;
    std::fs::write(fake.join("cap_last_cap"), "0\n")?;
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = caps.clone();
    }
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.sh("grep -E '^Cap(Bnd|Eff)' /realproc/self/status");
    let (code, out, err) = rt.run(&unique("caplast"), &b)?;
    assert_eq!(code, 0, "{err}");
    // AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10) and nothing else.
    assert_eq!(
        out, "CapEff:\t0000000020000420\nCapBnd:\t0000000020000420\n",
        "the bounding set kept capabilities the config does not grant"
    );
    Ok(())
}

/// Receives the pty master `create` sends over a console socket.
struct ConsoleSocket {
    _dir: TempDir,
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<ConsoleSocket> {
        let dir = TempDir::new("berth-console")?;
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    /// The master, or None when `creator` exits without sending one.
    fn master(&self, creator: &mut std::process::Child) -> Result<Option<OwnedFd>> {
        let conn = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if creator.try_wait()?.is_some() {
                        return Ok(None);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )?;
        for c in msg.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the fd was just received for us.
                    return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        bail!("console socket message without a descriptor")
    }
}

/// `create` with a terminal; returns whether it succeeded (and the master
/// if one was sent), with the log text.
fn create_with_terminal(
    rt: &Runtime,
    b: &Bundle,
    id: &str,
) -> Result<(bool, Option<OwnedFd>, String)> {
    b.write()?;
    let sock = ConsoleSocket::new()?;
    let mut creator = rt
        .cmd(&[
            "create",
            "--bundle",
            &b.path().display().to_string(),
            "--console-socket",
            &sock.path.display().to_string(),
            id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let master = sock.master(&mut creator)?;
    let status = creator.wait()?;
    Ok((status.success(), master, rt.log_text()))
}

fn read_until_eof(master: OwnedFd) -> String {
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut chunk = [0u8; 256];
    // EIO once the last slave holder exits.
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    text
}

/// A hostile /dev (the image's own): /dev/ptmx leads to a devpts mounted
/// elsewhere, so the pty's name "/dev/pts/0" is free for the image to
/// point at a procfs file. Looked up by path, that file became the
/// container's /dev/console and stdio (CVE-2025-52565).
#[test]
fn console_is_the_pty_itself_not_what_dev_pts_names() -> Result<()> {
    let canary = HostCanary::take()?;
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    use_image_dev(&mut b);
    mounts(&mut b).push(json!({
        "destination": "/dev/xpts", "type": "devpts", "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    }));
    let dev = b.rootfs().join("dev");
    symlink("xpts/ptmx", &dev.join("ptmx"))?;
    // Namespaced (the container has its own UTS namespace), so even the
    // unfixed runtime changes nothing on the host.
    symlink("/proc/sys/kernel/hostname", &dev.join("pts/0"))?;
    let out = TempDir::new("berth-out")?;
    mounts(&mut b).push(json!({
        "destination": "/out", "type": "bind", "source": out.path(), "options": ["rbind", "rw"]
    }));
    b.config["hostname"] = json!("console-canary");
    b.config["process"]["terminal"] = json!(true);
    b.sh("stat -f -c %T /dev/console > /out/console_fs; \
         test -t 0 && test -t 1 && echo yes > /out/stdio_is_tty; \
         hostname > /out/hostname; echo done");
    let id = unique("console");
    let (ok, master, log) = create_with_terminal(&rt, &b, &id)?;
    assert!(ok, "create failed: {log}");
    let master = master.expect("pty master sent");
    rt.ok(&["start", &id])?;
    let text = read_until_eof(master);
    assert!(text.contains("done"), "{text:?}");
    let read = |n: &str| std::fs::read_to_string(out.path().join(n)).unwrap_or_default();
    assert_eq!(
        read("console_fs"),
        "devpts\n",
        "/dev/console is not the pty"
    );
    assert_eq!(read("stdio_is_tty"), "yes\n");
    assert_eq!(read("hostname"), "console-canary\n");
    rt.ok(&["delete", "--force", &id])?;
    canary.assert_unchanged()
}

/// /dev/console itself planted as a symlink into procfs: refused, nothing
/// mounted over the procfs file and nothing left.
#[test]
fn console_target_that_is_a_symlink_is_refused() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    use_image_dev(&mut b);
    mounts(&mut b).push(json!({
        "destination": "/dev/pts", "type": "devpts", "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    }));
    symlink("/proc/sys/kernel/hostname", &b.rootfs().join("dev/console"))?;
    b.config["process"]["terminal"] = json!(true);
    b.sh("echo ran");
    let id = unique("consolelink");
    let (ok, _master, log) = create_with_terminal(&rt, &b, &id)?;
    assert!(!ok, "a symlinked /dev/console was mounted through");
    assert!(log.contains("/dev/console"), "{log}");
    assert_nothing_left(&rt, &b, &id)
}

/// CVE-2025-31133: the image's /dev/null is a symlink to a writable procfs
/// file; masking binds "/dev/null" over masked paths, which then expose
/// that file read-write. The CVE aims at /proc/sysrq-trigger or (without a
/// read-only /proc/sys) core_pattern; here the target is the container's
/// own pid 1 `comm`, writable and harmless, outside the read-only /proc/sys.
#[test]
fn masked_paths_are_masked_with_the_real_null_device() -> Result<()> {
    let canary = HostCanary::take()?;
    let rt = Runtime::new()?;
    let mut b = Bundle::busybox()?;
    use_image_dev(&mut b);
    symlink("/proc/1/comm", &b.rootfs().join("dev/null"))?;
    b.config["linux"]["maskedPaths"] = json!(["/proc/timer_list", "/proc/keys"]);
    // `; true` keeps sh as pid 1 (no exec of the last command).
    b.sh("echo pwned > /proc/timer_list; echo pwned > /proc/keys; cat /proc/timer_list /proc/keys /proc/1/comm; true");
    let id = unique("mask");
    let (code, out, err) = rt.run(&id, &b)?;
    assert!(
        !out.contains("pwned"),
        "a masked path exposed a procfs file: {out}"
    );
    if code == 0 {
        assert_eq!(out, "sh\n");
    } else {
        assert!(err.contains("/dev/null"), "{err}");
    }
    assert_nothing_left(&rt, &b, &id)?;
    canary.assert_unchanged()?;

    // A sound /dev still gets its masks, with the null device.
    let mut b = Bundle::busybox()?;
    b.config["linux"]["maskedPaths"] = json!(["/proc/timer_list", "/proc/acpi"]);
    b.sh("stat -c '%F %t:%T' /proc/timer_list; stat -f -c %T /proc/acpi; ls -A /proc/acpi | wc -l");
    let (code, out, err) = rt.run(&unique("mask-ok"), &b)?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "character special file 1:3\ntmpfs\n0\n");
    Ok(())
}

fn host_apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").is_dir()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
}

fn host_selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

#[test]
fn lsm_fields_are_applied_or_refused_never_dropped() -> Result<()> {
    let rt = Runtime::new()?;
    let features: Value = serde_json::from_str(&rt.ok(&["features"])?)?;
    assert_eq!(
        features["linux"]["apparmor"]["enabled"],
        json!(host_apparmor_enabled()),
        "features must report AppArmor as it is on this host"
    );
    assert_eq!(
        features["linux"]["selinux"]["enabled"],
        json!(host_selinux_enabled()),
        "features must report SELinux as it is on this host"
    );

    // AppArmor profile.
    let mut b = Bundle::busybox()?;
    b.config["process"]["apparmorProfile"] = json!("berth-no-such-profile");
    b.sh("cat /proc/self/attr/current");
    let id = unique("aa");
    let (code, out, err) = rt.run(&id, &b)?;
    assert_ne!(code, 0, "an AppArmor profile was silently dropped: {out}");
    if !host_apparmor_enabled() {
        assert!(
            err.contains("apparmor profile \"berth-no-such-profile\" specified but AppArmor is not enabled on this system"),
            "{err}"
        );
    }
    assert_nothing_left(&rt, &b, &id)?;

    // SELinux process label and mount label.
    if !host_selinux_enabled() {
        let mut b = Bundle::busybox()?;
        b.config["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
        b.sh("true");
        let id = unique("se");
        let (code, _, err) = rt.run(&id, &b)?;
        assert_ne!(code, 0);
        assert!(
            err.contains("selinux label is specified in config, but selinux is disabled"),
            "{err}"
        );
        assert_nothing_left(&rt, &b, &id)?;

        let mut b = Bundle::busybox()?;
        b.config["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0");
        b.sh("true");
        let id = unique("ml");
        let (code, _, err) = rt.run(&id, &b)?;
        assert_ne!(code, 0);
        assert!(err.contains("linux.mountLabel"), "{err}");
        assert_nothing_left(&rt, &b, &id)?;
    }

    // exec: --apparmor and a process.json profile are refused the same way.
    if !host_apparmor_enabled() {
        let mut b = Bundle::busybox()?;
        b.sh("sleep 100");
        let id = unique("aa-exec");
        rt.create(&id, &b)?;
        let out = rt.output(&["exec", "--apparmor", "berth-no-such-profile", &id, "true"])?;
        assert!(!out.status.success(), "exec --apparmor was ignored");
        assert!(String::from_utf8_lossy(&out.stderr).contains("AppArmor is not enabled"));
        let mut p = b.config["process"].clone();
        p["args"] = json!(["true"]);
        p["apparmorProfile"] = json!("berth-no-such-profile");
        let pj = b.path().join("process.json");
        std::fs::write(&pj, serde_json::to_vec(&p)?)?;
        let out = rt.output(&["exec", "--process", &pj.display().to_string(), &id])?;
        assert!(
            !out.status.success(),
            "process.json apparmorProfile was ignored"
        );
        rt.ok(&["delete", "--force", &id])?;
    }
    Ok(())
}
