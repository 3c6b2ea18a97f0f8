//! podman 4 (via conmon) with `--runtime berth`: run, exec, pause/unpause, stop, rm, with a
//! private store (`--root`/`--runroot`/`--tmpdir` under a temp dir) and the busybox image
//! loaded from a docker-archive built by the test.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use berth_integration::containerd::unmount_under;
use berth_integration::harness::{berth_bin, busybox_fixture, skip, TempDir};
use berth_integration::image::write_docker_archive;

const IMAGE: &str = "localhost/busybox:latest";
const RUN_OPTS: [&str; 6] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

struct Podman {
    dir: TempDir,
    runtime: String,
}

impl Podman {
    fn new() -> Result<Podman> {
        let runtime = berth_bin()
            .canonicalize()
            .context("locate berth")?
            .to_string_lossy()
            .into_owned();
        Ok(Podman {
            dir: TempDir::new("podman")?,
            runtime,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
                &self.runtime,
            ])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        self.cmd(args)
            .output()
            .with_context(|| format!("run podman {args:?}"))
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self, name: &str) -> Result<String> {
        Ok(self
            .ok(&["inspect", "--format", "{{.State.Status}}", name])?
            .trim()
            .to_string())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        unmount_under(self.dir.path());
        remove_conmon_cgroups();
    }
}

/// podman (cgroupfs manager) parks conmon in `libpod_parent/conmon` in every hierarchy and
/// never removes it. rmdir only succeeds on empty cgroups, so one in use stays.
fn remove_conmon_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let parent = h.path().join("libpod_parent");
        let _ = std::fs::remove_dir(parent.join("conmon"));
        let _ = std::fs::remove_dir(&parent);
    }
}

#[test]
fn podman_runs_berth() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        skip("needs root");
        return Ok(());
    }
    if Command::new("podman").arg("--version").output().is_err() {
        skip("podman is not installed");
        return Ok(());
    }
    let pm = Podman::new()?;
    let archive = pm.dir.path().join("busybox.tar");
    write_docker_archive(&busybox_fixture().join("rootfs"), IMAGE, &["sh"], &archive)?;
    pm.ok(&["load", "--input", &archive.to_string_lossy()])?;

    // Foreground run: output and exit status.
    let mut args = vec!["run", "--rm"];
    args.extend(RUN_OPTS);
    args.extend([IMAGE, "sh", "-c", "echo hi from podman; exit 3"]);
    let out = pm.output(&args)?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi from podman"));

    // Detached container, exec, pause/unpause, stop, rm.
    let mut args = vec!["run", "-d", "--name", "bg"];
    args.extend(RUN_OPTS);
    args.extend([IMAGE, "sleep", "1000"]);
    pm.ok(&args)?;
    assert_eq!(pm.status("bg")?, "running");
    let out = pm.output(&["exec", "bg", "sh", "-c", "echo in-exec; exit 4"])?;
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("in-exec"));
    pm.ok(&["pause", "bg"])?;
    assert_eq!(pm.status("bg")?, "paused");
    pm.ok(&["unpause", "bg"])?;
    assert_eq!(pm.status("bg")?, "running");
    // sleep ignores SIGTERM as pid 1, so stop escalates to SIGKILL after the timeout.
    pm.ok(&["stop", "--time", "1", "bg"])?;
    assert_eq!(pm.status("bg")?, "exited");
    pm.ok(&["rm", "bg"])?;
    let left = pm.ok(&["ps", "--all", "--quiet"])?;
    assert!(left.trim().is_empty(), "{left}");
    Ok(())
}
