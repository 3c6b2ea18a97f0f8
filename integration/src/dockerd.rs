//! A private Docker 20.10 daemon (Debian's docker.io, with BuildKit) for
//! tests that compare berth-build with Docker itself: its own data root,
//! exec root, pid file and socket under a temp dir, no iptables and no
//! bridge, never the system's daemon. The guard stops it (and the
//! containerd it manages) and removes every mount and directory it made,
//! even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::{terminate, TempDir};

/// Debian's docker client, matching the daemon's API version. Another
/// `docker` earlier in PATH (a newer client without buildx) would not speak
/// to this daemon the same way, so /usr/bin's is preferred.
pub fn docker_client() -> Option<PathBuf> {
    ["/usr/bin/docker", "/usr/local/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub fn dockerd_bin() -> Option<PathBuf> {
    ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub struct Dockerd {
    child: Option<Child>,
    pub socket: PathBuf,
    client: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    /// Starts the daemon; `None` when docker.io is not installed (the caller
    /// decides whether that is a skip or, under CI, a failure).
    pub fn start() -> Result<Option<Dockerd>> {
        let (Some(daemon), Some(client)) = (dockerd_bin(), docker_client()) else {
            return Ok(None);
        };
        // Short paths: the socket path must fit in sun_path, and the
        // managed containerd puts its own sockets under the exec root.
        let dir = TempDir::new("dkd")?;
        let d = dir.path();
        let socket = d.join("d.sock");
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = Command::new(daemon)
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
            ])
            .arg(format!("--config-file={}", write_config(d)?.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut me = Dockerd {
            child: Some(child),
            socket,
            client,
            dir,
        };
        me.wait_ready()?;
        Ok(Some(me))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("dockerd exited ({st}) while starting:\n{}", self.log());
                }
            }
            if self.socket.exists() {
                let o = self.docker().arg("version").output()?;
                if o.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("dockerd did not become ready in 60 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A `docker` command talking to this daemon, BuildKit on.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(&self.client);
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env("DOCKER_CLI_HINTS", "false");
        c
    }

    /// Runs `docker ARGS`, failing with its stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> Result<Output> {
        let o = self
            .docker()
            .args(args)
            .output()
            .with_context(|| format!("docker {args:?}"))?;
        if !o.status.success() {
            bail!(
                "docker {args:?} failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(o)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn write_config(d: &Path) -> Result<PathBuf> {
    let p = d.join("daemon.json");
    // No registry mirrors, no live restore, no userland proxy: nothing that
    // would reach beyond this test's directory.
    std::fs::write(
        &p,
        br#"{"features": {"buildkit": true}, "userland-proxy": false, "live-restore": false}"#,
    )?;
    Ok(p)
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (a build leaves none, a `docker run` might).
        if let Ok(o) = self.docker().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = self.docker().args(["rm", "-f", id]).output();
            }
        }
        if let Some(mut c) = self.child.take() {
            // SIGTERM lets dockerd stop its managed containerd and unmount.
            terminate(&mut c, Duration::from_secs(20));
        }
        // A managed containerd (or shim) that outlived its parent: anything
        // whose command line names our directory.
        // (With the trailing slash: /tmp/dkd-1/ is not /tmp/dkd-14/.)
        let root = format!("{}/", self.dir.path().display());
        for pid in processes_mentioning(&root) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Anything still mounted under our dirs (overlay2 layers, netns
        // files, the exec root's shm) must go before the directory can.
        crate::containerd::unmount_under(self.dir.path());
    }
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    crate::builder::processes_matching(|words| words.iter().any(|w| w.contains(needle)))
        .into_iter()
        .filter(|&pid| pid != me)
        .collect()
}
