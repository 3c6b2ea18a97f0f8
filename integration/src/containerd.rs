//! A private containerd 1.6 daemon for a test: its own root, state, sockets and opt dir
//! under a temp dir, a PATH that finds the shim and berth, and a guard that removes every
//! task and container, stops the daemon and deletes the dirs even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::{berth_bin, unique, TempDir};

/// Directory holding the workspace binaries (berth and containerd-shim-berth-v2).
pub fn bin_dir() -> PathBuf {
    let berth = berth_bin();
    let berth = if berth.is_absolute() {
        berth
    } else {
        std::env::current_dir().unwrap_or_default().join(berth)
    };
    berth
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The shim under test, next to berth (`cargo build --workspace --bins`).
pub fn shim_bin() -> PathBuf {
    bin_dir().join("containerd-shim-berth-v2")
}

/// PATH with the workspace binaries first, so containerd finds `containerd-shim-berth-v2`
/// and the shim finds `berth`.
pub fn path_with_bins() -> String {
    let old = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    format!("{}:{old}", bin_dir().display())
}

pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub namespace: String,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd; `extra_config` is appended to the generated config.toml (CRI
    /// sections), and CRI stays disabled unless `cri` is set.
    pub fn start(cri: bool, extra_config: &str) -> Result<Containerd> {
        let dir = TempDir::new("ctrd")?;
        let d = dir.path();
        let socket = d.join("c.sock");
        let disabled = if cri {
            r#"["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]"#
        } else {
            r#"["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]"#
        };
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = {disabled}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
{extra_config}
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            d = d.display(),
        );
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .env("PATH", path_with_bins())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd")?;
        let mut c = Containerd {
            child: Some(child),
            socket,
            namespace: unique("berth").replace('-', "_"),
            dir,
        };
        c.wait_ready()?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("containerd exited early ({status}):\n{}", self.log());
                }
            }
            if self.socket.exists() && self.ctr(&["version"]).map(|o| o.status.success())? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("containerd did not come up:\n{}", self.log())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this daemon and namespace; stdin is /dev/null.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .env("PATH", path_with_bins())
            .stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_cmd(args)
            .output()
            .with_context(|| format!("run ctr {args:?}"))
    }

    /// Runs ctr and fails (with its output and containerd's log tail) unless it succeeded.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args)?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed ({}): {}{}\n--- containerd log tail ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 40)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports a docker-archive with the native snapshotter (no overlay mounts to leak).
    pub fn import(&self, archive: &Path) -> Result<()> {
        let a = archive.to_string_lossy();
        self.ctr_ok(&["images", "import", "--snapshotter", "native", &a])
            .map(drop)
    }

    /// Best effort: kill and delete every task and container in our namespace.
    fn remove_all(&self) {
        remove_all_tasks(|args| self.ctr(args));
    }
}

/// Best effort, through `ctr` (bound to one containerd and namespace): kill
/// every task, delete it (retrying while its shim winds down) and its container.
pub fn remove_all_tasks(ctr: impl Fn(&[&str]) -> Result<Output>) {
    let Ok(list) = ctr(&["containers", "list", "--quiet"]) else {
        return;
    };
    for id in String::from_utf8_lossy(&list.stdout).lines() {
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let _ = ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", id]);
        for _ in 0..50 {
            let deleted = ctr(&["tasks", "delete", "--force", id]);
            if deleted.map(|o| o.status.success()).unwrap_or(false) {
                break;
            }
            let gone = ctr(&["tasks", "list", "--quiet"])
                .map(|o| {
                    !String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l.trim() == id)
                })
                .unwrap_or(true);
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = ctr(&["containers", "delete", id]);
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        if let Some(mut child) = self.child.take() {
            crate::harness::terminate(&mut child, Duration::from_secs(5));
        }
        // Anything still mounted under our dirs (a bundle rootfs after a crash) must go
        // before the temp dir is removed.
        unmount_under(self.dir.path());
        // The runtimes' per-namespace state roots (emptied by delete) outlive the daemon.
        for runtime in ["berth", "runc"] {
            let _ = std::fs::remove_dir(
                Path::new("/run/containerd")
                    .join(runtime)
                    .join(&self.namespace),
            );
        }
        remove_namespace_cgroups(&self.namespace);
    }
}

/// ctr puts containers in cgroup `/<namespace>/<id>`; runtimes remove the container's
/// cgroup but not the namespace's parent, in every hierarchy. rmdir only removes empty ones.
fn remove_namespace_cgroups(namespace: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let _ = std::fs::remove_dir(h.path().join(namespace));
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    // Deepest first, so a parent is never busy with a child still on it.
    let mut points = crate::harness::mount_points_under(dir).unwrap_or_default();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
