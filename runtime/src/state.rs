//! Persistent container state under `<root>/<id>/` and runc's status rules.
//!
//! Layout of a container directory:
//! - `state.json`: [`ContainerState`], written atomically (tmp + rename)
//! - `config.json`: the spec the container was created from (exec and
//!   delete need its process defaults, seccomp profile and hooks)
//! - `exec.fifo`: exists from create until start; init blocks reading it
//! - `creating.json`: [`Pending`], the cgroup and init pid of a container
//!   being created (all there is of one whose `create` was killed)
//!
//! The directory itself is flock'd by every command that read-modifies the
//! container (no lock file: one file create less per container).

use anyhow::{bail, Context, Result};
use berth_cgroups::Cgroup;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const OCI_VERSION: &str = "1.0.2";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// Written by `create` before it makes cgroups or processes, removed with
/// the directory: what `delete --force` needs to clean up after a `create`
/// that was killed before state.json existed.
pub const PENDING_FILE: &str = "creating.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What berth remembers about a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub init_pid: i32,
    /// `starttime` of the init process (field 22 of /proc/pid/stat): tells
    /// our init apart from an unrelated process that reused its pid.
    pub init_start_time: u64,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Option<Cgroup>,
    #[serde(default)]
    pub rootless: bool,
}

/// The OCI / runc `state` JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

/// A container under construction: enough to find and remove its
/// processes and cgroups when `create` dies half-way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub cgroup: Option<Cgroup>,
    /// 0 until init is cloned.
    pub init_pid: i32,
    pub init_start_time: u64,
}

pub fn save_pending(dir: &Path, pending: &Pending) -> Result<()> {
    let tmp = dir.join(".creating.json.tmp");
    fs::write(&tmp, serde_json::to_vec(pending)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, dir.join(PENDING_FILE)).context("rename creating.json into place")
}

/// The pending record of a half-made container, if it has a readable one.
pub fn load_pending(dir: &Path) -> Option<Pending> {
    serde_json::from_slice(&fs::read(dir.join(PENDING_FILE)).ok()?).ok()
}

/// The state given to hooks on stdin (runtime-spec "State").
pub fn hook_state(state: &ContainerState, status: Status, pid: i32) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": state.id,
        "status": status.as_str(),
        "pid": pid,
        "bundle": state.bundle,
    });
    if !state.annotations.is_empty() {
        v["annotations"] = serde_json::json!(state.annotations);
    }
    v
}

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if !ok {
        bail!("invalid container id format: {id:?}");
    }
    Ok(())
}

pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Held for the life of a command that changes a container.
pub struct StateLock {
    _lock: Option<Flock<File>>,
}

pub fn lock(dir: &Path) -> Result<StateLock> {
    let file = File::open(dir).with_context(|| format!("open {} for locking", dir.display()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("lock {}", dir.display()))?;
    Ok(StateLock { _lock: Some(lock) })
}

/// [`lock`] without waiting: None while another command holds it. A
/// directory that vanished meanwhile counts as lockable (returns a lock on
/// nothing) so callers re-check it.
pub fn try_lock(dir: &Path) -> Result<Option<StateLock>> {
    let file = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(StateLock { _lock: None }))
        }
        Err(e) => return Err(e).with_context(|| format!("open {} for locking", dir.display())),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(StateLock { _lock: Some(lock) })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", dir.display())),
    }
}

/// Load a container's state; errors say "does not exist" the way containerd expects.
pub fn load(root: &Path, id: &str) -> Result<ContainerState> {
    validate_id(id)?;
    let path = container_dir(root, id).join(STATE_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("container \"{id}\" does not exist")
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    serde_json::from_slice(&data).with_context(|| format!("parse {}", path.display()))
}

pub fn save(root: &Path, state: &ContainerState) -> Result<()> {
    let dir = container_dir(root, &state.id);
    let tmp = dir.join(".state.json.tmp");
    let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(state)?)?;
    // No fsync: state lives in /run (tmpfs) and only needs to be atomic for
    // concurrent readers, which the rename gives.
    fs::rename(&tmp, dir.join(STATE_FILE)).context("rename state.json into place")?;
    Ok(())
}

pub fn load_spec(root: &Path, id: &str) -> Result<oci_spec::runtime::Spec> {
    let path = container_dir(root, id).join(CONFIG_FILE);
    let data = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    crate::bundle::parse_config(&data)
        .map(|(spec, _)| spec)
        .with_context(|| format!("parse {}", path.display()))
}

/// Field 22 (`starttime`) and field 3 (`state`) of /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let data = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and ')': parse after the last ')'.
    let rest = &data[data.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After ')' come fields 3.. ; starttime is field 22 → index 19 here.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Is the recorded init process still the live init of this container?
pub fn init_alive(state: &ContainerState) -> bool {
    if state.init_pid <= 0 {
        return false;
    }
    match proc_stat(state.init_pid) {
        Some((s, start)) => start == state.init_start_time && s != 'Z' && s != 'X',
        None => false,
    }
}

/// The container's processes: its cgroup's members; without a cgroup
/// (rootless, none could be made) every process in init's pid namespace,
/// or just init when it shares ours.
pub fn processes(state: &ContainerState) -> Result<Vec<i32>> {
    if let Some(cg) = &state.cgroup {
        return if cg.exists() {
            cg.pids()
        } else {
            Ok(Vec::new())
        };
    }
    if !init_alive(state) {
        return Ok(Vec::new());
    }
    let pid_ns = |pid: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| (m.dev(), m.ino()))
    };
    let theirs = pid_ns(&state.init_pid.to_string())
        .with_context(|| format!("pid namespace of init {}", state.init_pid))?;
    if pid_ns("self").is_ok_and(|ours| ours == theirs) {
        return Ok(vec![state.init_pid]);
    }
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .context("read /proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| pid_ns(&pid.to_string()).is_ok_and(|ns| ns == theirs))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// runc's status derivation: stopped if init is gone, created while the
/// exec fifo exists, paused if the cgroup is frozen, else running.
pub fn status(root: &Path, state: &ContainerState) -> Status {
    if !init_alive(state) {
        return Status::Stopped;
    }
    if container_dir(root, &state.id).join(EXEC_FIFO).exists() {
        return Status::Created;
    }
    if let Some(cg) = &state.cgroup {
        if cg.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
    }
    Status::Running
}

pub fn oci_state(root: &Path, state: &ContainerState) -> OciState {
    let status = status(root, state);
    OciState {
        oci_version: OCI_VERSION.to_string(),
        id: state.id.clone(),
        pid: if status == Status::Stopped {
            0
        } else {
            state.init_pid
        },
        status: status.as_str().to_string(),
        bundle: state.bundle.display().to_string(),
        rootfs: state.rootfs.display().to_string(),
        created: state.created.clone(),
        annotations: state.annotations.clone(),
        owner: state.owner.clone(),
    }
}

/// Ids of all containers under root (directories holding a state.json).
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e).with_context(|| format!("read {}", root.display())),
    };
    for entry in entries.flatten() {
        if entry.path().join(STATE_FILE).is_file() {
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn proc_stat_of_self() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(start > 0);
    }

    #[test]
    fn missing_container_says_does_not_exist() {
        let dir = std::env::temp_dir().join(format!("berth-state-test-{}", std::process::id()));
        let err = load(&dir, "nope").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
