//! podman with a private store and berth as its runtime: where the builder
//! tests hand their images to a peer (`save` → `podman load`, push →
//! `podman pull`) and run them with berth.

use super::expect_ok;
use crate::containerd::unmount_under;
use crate::harness::{berth_bin, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `podman run` flags every test's container needs here: no network,
/// and ulimits below the VM's hard nproc limit (podman's default is above).
pub const PODMAN_RUN_OPTS: [&str; 6] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// podman rooted in a temporary directory (vfs storage, cgroupfs manager,
/// file events), `--runtime` the test's berth. On drop, even when the test
/// failed: its containers are removed, mounts below the directory
/// detached, the cgroups podman parks conmon in removed (when empty), then
/// the directory.
pub struct Podman {
    // Removed last, after `Drop::drop`.
    dir: TempDir,
    runtime: PathBuf,
}

impl Podman {
    /// A private podman in a temporary directory named after `prefix`.
    pub fn new(prefix: &str) -> Podman {
        Podman {
            dir: TempDir::new(prefix).unwrap(),
            runtime: berth_bin().canonicalize().unwrap(),
        }
    }

    /// The temporary directory podman keeps its store and state in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `podman --root … --runroot … --tmpdir … --runtime BERTH ARGS`,
    /// stdin from /dev/null.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
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
            ])
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs [`Podman::cmd`] to its end, whatever its status.
    pub fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs it, asserting success (stdout and stderr in the message);
    /// returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_ok("podman", args, &self.out(args), "").0
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.out(&["rm", "--all", "--force", "--time", "0"]);
        unmount_under(self.dir.path());
        remove_conmon_cgroups();
    }
}

/// podman (cgroupfs manager) parks conmon in `libpod_parent/conmon` in
/// every hierarchy and never removes it. rmdir only succeeds on empty
/// cgroups, so one in use stays.
pub fn remove_conmon_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let parent = h.path().join("libpod_parent");
        let _ = std::fs::remove_dir(parent.join("conmon"));
        let _ = std::fs::remove_dir(&parent);
    }
}
