//! Helpers shared by the confinement tests: containers in a known cgroup, a guard that
//! removes that cgroup from every hierarchy whatever happens, and small readers.

#![allow(dead_code)] // each test binary uses a different subset

use anyhow::{bail, Context, Result};
use berth_integration::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Every cgroup hierarchy mount directly under /sys/fs/cgroup (or the root itself when it
/// is cgroup2), so a cgroup named by an absolute cgroupsPath can be located.
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|e| {
            e.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// A container cgroup at the absolute cgroupsPath `/<name>`; removed from every hierarchy
/// on drop (after killing anything left in it), even when the test failed half-way.
pub struct CgroupGuard {
    pub name: String,
}

impl CgroupGuard {
    pub fn new(prefix: &str) -> CgroupGuard {
        CgroupGuard {
            name: unique(prefix),
        }
    }

    pub fn cgroups_path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The container's directory in `hierarchy` ("memory", "pids", "unified", ... or ""
    /// for the root of a pure v2 mount).
    pub fn dir(&self, hierarchy: &str) -> PathBuf {
        Path::new(CGROUP_ROOT).join(hierarchy).join(&self.name)
    }

    pub fn existing_dirs(&self) -> Vec<PathBuf> {
        hierarchies()
            .into_iter()
            .map(|h| h.join(&self.name))
            .filter(|d| d.is_dir())
            .collect()
    }

    pub fn read(&self, hierarchy: &str, file: &str) -> Result<String> {
        let p = self.dir(hierarchy).join(file);
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("read {}", p.display()))?
            .trim()
            .to_string())
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for dir in self.existing_dirs() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        }
        for dir in self.existing_dirs() {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A busybox bundle whose container lives in the guard's cgroup.
pub fn bundle_in(cg: &CgroupGuard) -> Result<Bundle> {
    let mut b = Bundle::busybox()?;
    b.config["linux"]["cgroupsPath"] = json!(cg.cgroups_path());
    // Counters and markers are files the host reads/writes in the rootfs.
    b.config["root"]["readonly"] = json!(false);
    Ok(b)
}

/// Sets `linux.resources.<key>` (keeping the device rules the fixture has).
pub fn set_resource(b: &mut Bundle, key: &str, value: Value) {
    b.config["linux"]["resources"][key] = value;
}

/// create + start, leaving the container running in the background.
pub fn start_detached(rt: &Runtime, id: &str, b: &Bundle) -> Result<()> {
    rt.create(id, b)?;
    rt.ok(&["start", id])?;
    Ok(())
}

/// `events --stats` → the "data" object, checking the envelope is runc's.
pub fn stats(rt: &Runtime, id: &str) -> Result<Value> {
    let out = rt.ok(&["events", "--stats", id])?;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != 1 {
        bail!("events --stats printed {} lines: {out}", lines.len());
    }
    let ev: Value = serde_json::from_str(lines[0]).context("parse stats event")?;
    if ev["type"] != "stats" || ev["id"] != id {
        bail!("unexpected stats envelope: {ev}");
    }
    Ok(ev["data"].clone())
}

/// Runs berth expecting failure; returns stderr + the log (where the error record goes).
pub fn fails(rt: &Runtime, args: &[&str]) -> Result<String> {
    let out = rt.output(args)?;
    if out.status.success() {
        bail!("berth {args:?} unexpectedly succeeded");
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    ))
}

/// `berth update --resources - ID` with `json` on stdin.
pub fn update_stdin(rt: &Runtime, id: &str, json: &str) -> Result<std::process::Output> {
    use std::io::Write;
    let mut child = rt
        .cmd(&["update", "--resources", "-", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn berth update")?;
    child
        .stdin
        .take()
        .context("update stdin")?
        .write_all(json.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// A background `berth events` stream writing to a file; killed on drop if still running.
pub struct EventStream {
    child: Child,
    pub out: PathBuf,
}

impl EventStream {
    pub fn start(rt: &Runtime, id: &str, interval: &str) -> Result<EventStream> {
        let out = rt.root.path().join(unique("events.out"));
        let child = rt
            .cmd(&["events", "--interval", interval, id])
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null())
            .spawn()
            .context("spawn berth events")?;
        Ok(EventStream { child, out })
    }

    /// Waits for the stream to end on its own; returns its exit code and events.
    pub fn wait(&mut self, limit: Duration) -> Result<(i32, Vec<Value>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status.code().unwrap_or(-1), self.events()?));
            }
            if Instant::now() > deadline {
                bail!("events did not exit within {limit:?}: {:?}", self.events()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn events(&self) -> Result<Vec<Value>> {
        std::fs::read_to_string(&self.out)?
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?}")))
            .collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns Some or `limit` passes.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counter a `counter_script` container keeps writing into its rootfs.
pub fn read_counter(b: &Bundle) -> Option<u64> {
    std::fs::read_to_string(b.rootfs().join("tmp/cnt"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A shell loop that bumps /tmp/cnt as fast as it can.
pub const COUNTER_SCRIPT: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/cnt.new; mv /tmp/cnt.new /tmp/cnt; done";

/// Pause/resume with a counter: frozen means the counter stands still, thawed means it moves.
pub fn check_pause_resume(rt: &Runtime, id: &str, b: &Bundle) -> Result<()> {
    poll(Duration::from_secs(5), || read_counter(b)).context("counter never started")?;
    rt.ok(&["pause", id])?;
    assert_eq!(rt.status(id)?, "paused");
    let frozen = read_counter(b).context("counter unreadable while paused")?;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        read_counter(b),
        Some(frozen),
        "counter advanced while paused"
    );
    let err = fails(rt, &["pause", id])?;
    assert!(err.contains("container not running"), "{err}");
    rt.ok(&["resume", id])?;
    assert_eq!(rt.status(id)?, "running");
    let moved = poll(Duration::from_secs(5), || {
        read_counter(b).filter(|v| *v > frozen)
    });
    assert!(moved.is_some(), "counter did not advance after resume");
    let err = fails(rt, &["resume", id])?;
    assert!(err.contains("container not paused"), "{err}");
    Ok(())
}
