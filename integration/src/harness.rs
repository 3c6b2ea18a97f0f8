//! Test harness shared by the integration tests: locate the binaries and
//! fixtures, make throwaway bundles and state roots, and clean up every
//! container, cgroup and temp dir even when a test fails.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The berth binary under test: $BERTH_BIN or target/debug/berth.
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

/// The busybox bundle made by `make fixtures`.
pub fn busybox_fixture() -> PathBuf {
    std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("fixtures"))
        .join("busybox")
}

/// This test cannot run here, for `why`. On a laptop it says so and the
/// caller returns; under CI (`CI=true`, as `.ci/run` runs, with every peer
/// installed by `make test`) a skip would be a pass that tested nothing, so
/// it fails instead.
pub fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIP: {why}");
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A temporary directory removed (recursively) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bundle with a private copy of the busybox rootfs and an editable config.
pub struct Bundle {
    pub dir: TempDir,
    pub config: Value,
}

impl Bundle {
    pub fn busybox() -> Result<Bundle> {
        let fixture = busybox_fixture();
        if !fixture.join("rootfs/bin/busybox").exists() {
            bail!(
                "busybox fixture missing at {} (run `make fixtures`)",
                fixture.display()
            );
        }
        let dir = TempDir::new("berth-bundle")?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(fixture.join("rootfs"))
            .arg(dir.path().join("rootfs"))
            .status()?;
        if !status.success() {
            bail!("copy busybox rootfs failed");
        }
        let config: Value = serde_json::from_slice(&std::fs::read(fixture.join("config.json"))?)?;
        let mut b = Bundle { dir, config };
        // Tests run without a terminal unless they ask for one.
        b.config["process"]["terminal"] = Value::Bool(false);
        Ok(b)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] =
            args.iter().map(|s| Value::String(s.to_string())).collect();
        self
    }

    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn write(&self) -> Result<()> {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config)?,
        )?;
        Ok(())
    }
}

/// A berth state root of its own; deletes every container left in it on drop.
pub struct Runtime {
    pub root: TempDir,
    pub log: PathBuf,
    /// The runtime binary: berth, or runc for side-by-side comparisons.
    pub bin: PathBuf,
}

impl Runtime {
    pub fn new() -> Result<Runtime> {
        Self::with_binary(berth_bin())
    }

    /// runc (the reference runtime) from PATH, with a state root of its own,
    /// driven exactly like berth.
    pub fn runc() -> Result<Runtime> {
        let status = Command::new("runc")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .context("runc not found (scripts/deps.sh installs it)")?;
        if !status.success() {
            bail!("runc --version failed");
        }
        Self::with_binary(PathBuf::from("runc"))
    }

    fn with_binary(bin: PathBuf) -> Result<Runtime> {
        let root = TempDir::new("berth-root")?;
        let log = root.path().join("berth.log");
        Ok(Runtime { root, log, bin })
    }

    /// `<bin> --root R --log L --log-format json ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c.arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        c.args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Run berth and collect its output. `create` and detached commands
    /// leave a container process holding berth's stdio (as with runc), so
    /// for them stdio goes to files instead of pipes that would never close.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let detaches =
            args.first() == Some(&"create") || args.contains(&"-d") || args.contains(&"--detach");
        if !detaches {
            return self
                .cmd(args)
                .output()
                .with_context(|| format!("run berth {args:?}"));
        }
        let n = unique("stdio");
        let (out_path, err_path) = (
            self.root.path().join(format!("{n}.out")),
            self.root.path().join(format!("{n}.err")),
        );
        let status = self
            .cmd(args)
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .status()
            .with_context(|| format!("run berth {args:?}"))?;
        let stdout = std::fs::read(&out_path)?;
        let stderr = std::fs::read(&err_path)?;
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "berth {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn state(&self, id: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.ok(&["state", id])?)?)
    }

    pub fn status(&self, id: &str) -> Result<String> {
        Ok(self.state(id)?["status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Foreground `run` with the bundle; returns (exit code, stdout, stderr).
    pub fn run(&self, id: &str, bundle: &Bundle) -> Result<(i32, String, String)> {
        bundle.write()?;
        let out = self.output(&["run", "--bundle", &bundle.path().display().to_string(), id])?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    pub fn create(&self, id: &str, bundle: &Bundle) -> Result<()> {
        bundle.write()?;
        self.ok(&[
            "create",
            "--bundle",
            &bundle.path().display().to_string(),
            id,
        ])?;
        Ok(())
    }

    /// Poll until the container reaches `want` (or time out).
    pub fn wait_status(&self, id: &str, want: &str) -> Result<()> {
        for _ in 0..500 {
            if self.status(id)? == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        bail!("container {id} never reached {want}")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.root.path()) {
            // Files are stdio captures; directories are containers.
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let _ = self.cmd(&["delete", "--force", &id]).output();
                }
            }
        }
    }
}

/// All lines of /proc/self/mountinfo mentioning `needle` (leak checks).
pub fn host_mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Mount points at or below `dir` in this process's mountinfo, by whole path
/// components: /tmp/x-1 is not a parent of another test's /tmp/x-14.
pub fn mount_points_under(dir: &Path) -> std::io::Result<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    let below = format!("{dir}/");
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == dir || p.starts_with(&below))
        .map(str::to_string)
        .collect())
}

/// Whether any cgroup directory named `name` exists in any hierarchy.
pub fn cgroup_exists(name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return false;
    };
    entries.flatten().any(|h| find_dir(&h.path(), name, 3))
}

fn find_dir(dir: &Path, name: &str, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        p.is_dir() && !p.is_symlink() && (e.file_name() == name || find_dir(&p, name, depth - 1))
    })
}

/// Stop a daemon: SIGTERM (so it can close its databases), SIGKILL after `grace`.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}
