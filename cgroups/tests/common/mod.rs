//! Shared helpers for the root-only cgroup tests: unique names and cleanup guards.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_cgroups::Cgroup;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A hierarchy-absolute cgroup path unique to this process and call.
pub fn unique_path(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("/berth-test-{}-{tag}-{n}", std::process::id())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Owns a test cgroup and the processes put into it; on drop (also on panic) kills the
/// processes, thaws and removes the cgroup.
pub struct Guard {
    pub cg: Cgroup,
    pub children: Vec<Child>,
}

impl Guard {
    pub fn new(tag: &str) -> Guard {
        let cg = Cgroup::resolve(Some(&unique_path(tag)), "unused").expect("resolve");
        cg.create().expect("create");
        Guard {
            cg,
            children: Vec::new(),
        }
    }

    /// Starts `sh -c script` with stdin piped; the script should `read` a line first so it
    /// only proceeds once it is inside the cgroup.
    pub fn spawn_sh(&mut self, script: &str) -> u32 {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub fn spawn_sleeper(&mut self) -> i32 {
        let child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        // Also catch grandchildren we did not spawn directly.
        if let Ok(pids) = self.cg.pids() {
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.cg.destroy() {
            eprintln!("cleanup of {:?} failed: {e:#}", self.cg.path());
        }
    }
}

/// Single-letter process state from /proc/<pid>/stat.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(") ")?.1;
    after.chars().next()
}

pub fn read_trim(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Line-oriented control of a spawned `sh` child: release it and read what it prints.
pub fn release(child: &mut Child) {
    use std::io::Write;
    let stdin = child.stdin.as_mut().expect("child stdin piped");
    stdin.write_all(b"go\n").expect("write to child");
    stdin.flush().expect("flush child stdin");
}

pub fn read_line(child: &mut Child) -> String {
    use std::io::Read;
    let out = child.stdout.as_mut().expect("child stdout piped");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).expect("read child stdout") == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

pub fn resources(json: &str) -> oci_spec::runtime::LinuxResources {
    serde_json::from_str(json).expect("valid LinuxResources JSON")
}
