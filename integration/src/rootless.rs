//! Running berth as an unprivileged user, the way rootless podman or a user
//! running runc by hand does. The tests use a uid with no passwd entry (so
//! `list` shows runc's `#uid` owner) and no rights on any cgroup of its own
//! unless a test delegates one.

use crate::harness::{unique, Bundle, Runtime, TempDir};
use anyhow::{Context, Result};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Not in /etc/passwd, owns nothing on the host.
pub const UID: u32 = 64123;

/// A state root (and log) the unprivileged user owns.
pub fn user_runtime() -> Result<Runtime> {
    let rt = Runtime::new()?;
    std::os::unix::fs::chown(rt.root.path(), Some(UID), Some(UID))?;
    Ok(rt)
}

/// `berth --root R --log L --log-format json ARGS` as the unprivileged user.
pub fn as_user(rt: &Runtime, args: &[&str]) -> Command {
    let mut c = rt.cmd(args);
    c.uid(UID).gid(UID).env_remove("XDG_RUNTIME_DIR");
    c
}

/// Output of a command whose stdio may be held by a container process
/// (create, detached exec): captured through files, not pipes.
pub fn output(mut cmd: Command, dir: &Path) -> Result<Output> {
    let (out_path, err_path) = (dir.join(unique("out")), dir.join(unique("err")));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .status()
        .context("run berth as the unprivileged user")?;
    let out = Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(out)
}

/// Runs `cmd` (berth as the user) and insists on success; returns stdout.
pub fn ok_cmd(rt: &Runtime, cmd: Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = output(cmd, rt.root.path())?;
    anyhow::ensure!(
        out.status.success(),
        "{shown} as uid {UID} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ok_cmd` of `berth ARGS` as the user.
pub fn ok(rt: &Runtime, args: &[&str]) -> Result<String> {
    ok_cmd(rt, as_user(rt, args))
}

/// The busybox rootfs with the config `berth spec --rootless` writes for
/// the unprivileged user (its own uid and gid mapped to root).
pub fn rootless_bundle(rt: &Runtime) -> Result<Bundle> {
    let mut b = Bundle::busybox()?;
    let spec_dir = TempDir::new("berth-rlspec")?;
    std::os::unix::fs::chown(spec_dir.path(), Some(UID), Some(UID))?;
    ok(
        rt,
        &[
            "spec",
            "--rootless",
            "--bundle",
            &spec_dir.path().display().to_string(),
        ],
    )?;
    b.config = serde_json::from_slice(&std::fs::read(spec_dir.path().join("config.json"))?)?;
    b.config["process"]["terminal"] = json!(false);
    anyhow::ensure!(
        b.config["linux"]["uidMappings"] == json!([{"containerID": 0, "hostID": UID, "size": 1}]),
        "unexpected rootless mappings: {}",
        b.config["linux"]["uidMappings"]
    );
    Ok(b)
}

/// `as_user`, started inside the cgroup whose `cgroup.procs` is given: the
/// way a user's processes already sit in the subtree systemd delegates to
/// them (moving into it needs root, so the move happens before the user
/// switch, in the child).
pub fn as_user_in_cgroup(rt: &Runtime, args: &[&str], procs: &Path) -> Result<Command> {
    let mut c = rt.cmd(args);
    c.env_remove("XDG_RUNTIME_DIR");
    let procs = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes())?;
    // SAFETY: only async-signal-safe syscalls between fork and exec, on
    // memory prepared before the fork.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(UID) != 0
                || libc::setuid(UID) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(c)
}
