//! podman 4 (via conmon) with `--runtime berth`: run, exec, pause/unpause, stop, rm, with a
//! private store (`--root`/`--runroot`/`--tmpdir` under a temp dir) and the busybox image
//! loaded from a docker-archive built by the test.

use std::process::Command;

use anyhow::Result;
use berth_integration::builder::{Podman, PODMAN_RUN_OPTS};
use berth_integration::harness::{busybox_fixture, skip};
use berth_integration::image::write_docker_archive;

const IMAGE: &str = "localhost/busybox:latest";

/// `podman inspect`'s status of container `name`.
fn status(pm: &Podman, name: &str) -> String {
    pm.ok(&["inspect", "--format", "{{.State.Status}}", name])
        .trim()
        .to_string()
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
    let pm = Podman::new("podman");
    let archive = pm.path().join("busybox.tar");
    write_docker_archive(&busybox_fixture().join("rootfs"), IMAGE, &["sh"], &archive)?;
    pm.ok(&["load", "--input", &archive.to_string_lossy()]);

    // Foreground run: output and exit status.
    let mut args = vec!["run", "--rm"];
    args.extend(PODMAN_RUN_OPTS);
    args.extend([IMAGE, "sh", "-c", "echo hi from podman; exit 3"]);
    let out = pm.out(&args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi from podman"));

    // Detached container, exec, pause/unpause, stop, rm.
    let mut args = vec!["run", "-d", "--name", "bg"];
    args.extend(PODMAN_RUN_OPTS);
    args.extend([IMAGE, "sleep", "1000"]);
    pm.ok(&args);
    assert_eq!(status(&pm, "bg"), "running");
    let out = pm.out(&["exec", "bg", "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("in-exec"));
    pm.ok(&["pause", "bg"]);
    assert_eq!(status(&pm, "bg"), "paused");
    pm.ok(&["unpause", "bg"]);
    assert_eq!(status(&pm, "bg"), "running");
    // sleep ignores SIGTERM as pid 1, so stop escalates to SIGKILL after the timeout.
    pm.ok(&["stop", "--time", "1", "bg"]);
    assert_eq!(status(&pm, "bg"), "exited");
    pm.ok(&["rm", "bg"]);
    let left = pm.ok(&["ps", "--all", "--quiet"]);
    assert!(left.trim().is_empty(), "{left}");
    Ok(())
}
