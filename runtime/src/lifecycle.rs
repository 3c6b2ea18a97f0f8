//! `start`, `state`, `list`, `kill`, `delete`, `ps`: commands that act on an
//! existing container through its state directory.

use crate::hooks;
use crate::signals;
use crate::state::{self, ContainerState, Status};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Release a created container's init: write to exec.fifo, then poststart hooks.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let st = state::load(root, id)?;
    start_loaded(root, &st, None)
}

/// [`start`] for a caller that already holds the state (and maybe the
/// spec), as `run` does: saves re-reading and re-parsing them.
pub fn start_loaded(root: &Path, st: &ContainerState, spec: Option<&Spec>) -> Result<()> {
    let id = st.id.as_str();
    let dir = state::container_dir(root, id);
    let _lock = state::lock(&dir)?;
    match state::status(root, st) {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Running => bail!("cannot start an already running container"),
        s => bail!("cannot start a container in the {} state", s.as_str()),
    }
    let poststart = poststart_hooks(root, st, spec);
    let fifo = dir.join(state::EXEC_FIFO);
    let f = std::fs::OpenOptions::new()
        .write(true)
        // Without a reader, O_NONBLOCK makes open fail (ENXIO) instead of hanging.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .with_context(|| format!("container init is not waiting on {}", fifo.display()))?;
    use std::io::Write;
    (&f).write_all(b"0")
        .context("signal container init to start")?;
    std::fs::remove_file(&fifo).context("remove exec.fifo")?;
    crate::logging::debug(&format!("init {} released through exec.fifo", st.init_pid));
    // Poststart hooks must see the user process started; without any there
    // is nothing to wait for (runc's start does not wait either).
    // A startContainer hook failure makes init exit with the error on the
    // container's stderr; it is indistinguishable here from a process that
    // exited quickly, so start itself still succeeds (as with runc).
    if let Some(hooks) = poststart {
        wait_for_exec(&f);
        drop(f);
        let hs = state::hook_state(st, Status::Running, st.init_pid);
        if let Err(e) = hooks::run_all(hooks::Kind::Poststart, &hooks, &hs) {
            crate::logging::warn(&format!("{e:#}"));
        }
        crate::logging::debug("poststart hooks run");
    }
    Ok(())
}

/// Init keeps its end of exec.fifo open until execve closes it (O_CLOEXEC);
/// our write end reports POLLERR once no reader is left. Only then has the
/// user process started, which poststart hooks must come after.
fn wait_for_exec(fifo: &std::fs::File) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_)
                if !fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)) =>
            {
                continue
            }
            _ => return,
        }
    }
}

/// The spec's poststart hooks, if it has any. Their failures are warnings:
/// the runtime-spec says the lifecycle goes on.
fn poststart_hooks(
    root: &Path,
    st: &ContainerState,
    spec: Option<&Spec>,
) -> Option<Vec<oci_spec::runtime::Hook>> {
    let hooks = |s: &Spec| s.hooks().as_ref().and_then(|h| h.poststart().clone());
    let found = match spec {
        Some(s) => hooks(s),
        None => state::load_spec(root, &st.id).ok().as_ref().and_then(hooks),
    };
    found.filter(|h| !h.is_empty())
}

pub fn print_state(root: &Path, id: &str) -> Result<()> {
    let st = state::load(root, id)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&state::oci_state(root, &st))?
    );
    Ok(())
}

pub fn list(root: &Path, format: &str, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    for id in state::list_ids(root)? {
        if let Ok(st) = state::load(root, &id) {
            let mut oci = state::oci_state(root, &st);
            // As runc: `list` names the owner of the state directory
            // (`state` leaves it empty).
            oci.owner = state_dir_owner(&state::container_dir(root, &id));
            states.push(oci);
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        // runc encodes its nil slice: `null` when there are no containers.
        "json" if states.is_empty() => println!("null"),
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            let rows: Vec<[String; 6]> = states
                .iter()
                .map(|s| {
                    [
                        s.id.clone(),
                        s.pid.to_string(),
                        s.status.clone(),
                        s.bundle.clone(),
                        s.created.clone(),
                        s.owner.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
                    &rows
                )
            );
        }
        other => bail!("invalid format option {other:?}: must be table or json"),
    }
    Ok(())
}

/// User name owning `dir`, or `#uid` when it has none (runc's fallback).
fn state_dir_owner(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
        Ok(Some(user)) => user.name,
        _ => format!("#{}", meta.uid()),
    }
}

/// Columns padded like the Go tabwriter runc uses (minwidth 12, padding 3).
fn table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    const MIN_WIDTH: usize = 12;
    const PADDING: usize = 3;
    let mut widths = header.map(|h| (h.len() + PADDING).max(MIN_WIDTH));
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len() + PADDING);
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

pub fn kill_container(root: &Path, id: &str, signal: Option<&str>, all: bool) -> Result<()> {
    let sig = signals::parse(signal.unwrap_or("SIGTERM"))?;
    let st = state::load(root, id)?;
    let status = state::status(root, &st);
    if status == Status::Stopped && !all {
        bail!("container not running");
    }
    if all {
        let pids = state::processes(&st)?;
        if pids.is_empty() && status == Status::Stopped {
            bail!("container not running");
        }
        for pid in pids {
            let _ = signals::send(pid, sig);
        }
        if status == Status::Paused && sig == libc::SIGKILL {
            if let Some(cg) = &st.cgroup {
                cg.thaw()?;
            }
        }
        return Ok(());
    }
    match signals::send(st.init_pid, sig) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ESRCH) => bail!("container not running"),
        Err(e) => Err(e).context("send signal to container init"),
    }
}

pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    state::validate_id(id)?;
    let dir = state::container_dir(root, id);
    let st = match state::load(root, id) {
        Ok(st) => st,
        Err(e) if dir.is_dir() && !dir.join(state::STATE_FILE).exists() => {
            // A create that died (or is still running) before state.json
            // existed: its processes and cgroups are in creating.json.
            return match remove_half_made(&dir, force)? {
                Some(st) => destroy(root, &st),
                None if force => Ok(()),
                None => Err(e),
            };
        }
        Err(_) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let _lock = state::lock(&dir)?;
    match state::status(root, &st) {
        Status::Stopped | Status::Created => {}
        _ if force => {}
        s => bail!(
            "cannot delete container {id} that is not stopped: {}",
            s.as_str()
        ),
    }
    destroy(root, &st)
}

/// Cleans up after a `create` that was killed before it saved state.json:
/// kills init and every process in the container's cgroups (in each
/// hierarchy: a half-placed init may be in only some of them), removes the
/// cgroups and the directory. Without `force` a create still in progress
/// (it holds the directory's lock) is left alone. Returns the state if the
/// create turned out to finish meanwhile: the caller deletes it as usual.
fn remove_half_made(dir: &Path, force: bool) -> Result<Option<ContainerState>> {
    let pending = state::load_pending(dir);
    let lock = match state::try_lock(dir)? {
        Some(lock) => lock,
        None if !force => return Ok(None),
        None => {
            // Killing init makes a live `create` fail and roll back; wait
            // (bounded) for it to let go of the directory.
            if let Some(p) = &pending {
                kill_pending(p);
            }
            match wait_for_lock(dir, Duration::from_secs(10))? {
                Some(lock) => lock,
                None => bail!("container is still being created: {}", dir.display()),
            }
        }
    };
    if !dir.is_dir() {
        return Ok(None); // the create's own rollback removed it
    }
    if dir.join(state::STATE_FILE).exists() {
        drop(lock);
        let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let root = dir.parent().unwrap_or(Path::new("/"));
        return state::load(root, id).map(Some);
    }
    if let Some(p) = &pending {
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill_pending(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(cg) = &p.cgroup {
            cg.destroy()
                .context("remove cgroup of half-created container")?;
        }
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    Ok(None)
}

/// SIGKILLs the recorded init (if it is still that process) and every
/// live member of the pending container's cgroups; true if any was found.
fn kill_pending(p: &state::Pending) -> bool {
    let mut pids = p.cgroup.as_ref().map(cgroup_members).unwrap_or_default();
    if p.init_pid > 0
        && state::proc_stat(p.init_pid)
            .is_some_and(|(s, start)| start == p.init_start_time && s != 'Z' && s != 'X')
    {
        pids.push(p.init_pid);
    }
    let mut found = false;
    for pid in pids {
        if state::proc_stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X') {
            found = true;
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    found
}

/// Every process in the cgroup's directories of all hierarchies, nested
/// cgroups included.
fn cgroup_members(cg: &berth_cgroups::Cgroup) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for d in cg.dirs() {
        walk(&d, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn wait_for_lock(dir: &Path, limit: Duration) -> Result<Option<state::StateLock>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(lock) = state::try_lock(dir)? {
            return Ok(Some(lock));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill everything left, remove the cgroup, run poststop hooks, drop state.
pub fn destroy(root: &Path, st: &ContainerState) -> Result<()> {
    destroy_loaded(root, st, state::load_spec(root, &st.id).ok().as_ref())
}

/// [`destroy`] with the spec already in hand (`run`).
pub fn destroy_loaded(root: &Path, st: &ContainerState, spec: Option<&Spec>) -> Result<()> {
    // When init of a container with its own pid namespace has exited, the
    // kernel has already killed everything else in it: nothing to hunt.
    let all_gone = spec.is_some_and(owns_pid_namespace) && !state::init_alive(st);
    if !all_gone {
        stop_everything(st);
        crate::logging::debug("the container's processes are gone");
    }
    if let Some(cg) = &st.cgroup {
        remove_cgroup(cg)?;
        crate::logging::debug("cgroup removed");
    }
    // Without a mount namespace init's mounts live in the host's
    // namespace: take them away with the container (runc leaves them).
    if spec.is_some_and(crate::rootfs::hostns::shares_host_mount_ns) {
        crate::rootfs::hostns::release_rootfs(&st.rootfs)
            .context("release the rootfs mounts made in the host's mount namespace")?;
        crate::logging::debug("rootfs mounts released from the host's mount namespace");
    }
    if let Some(h) = spec
        .as_ref()
        .and_then(|s| s.hooks().as_ref())
        .and_then(|h| h.poststop().clone())
    {
        let hs = state::hook_state(st, Status::Stopped, 0);
        if let Err(e) = hooks::run_all(hooks::Kind::Poststop, &h, &hs) {
            crate::logging::warn(&format!("{e:#}"));
        }
    }
    let dir = state::container_dir(root, &st.id);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))
}

/// Removes the container's cgroup. One that still holds processes after the
/// container's own are gone is shared with another workload (its
/// cgroupsPath names a cgroup somebody else uses): as runc, each directory
/// is tried once, what stays busy is logged ("Failed to remove cgroup") and
/// the delete succeeds, instead of waiting for processes that are not ours.
fn remove_cgroup(cg: &berth_cgroups::Cgroup) -> Result<()> {
    // Exiting processes (zombies) may still be listed for a moment: the
    // cgroup is not shared because of them, and destroy() waits them out.
    let live_members = cg.pids().map_or(0, |pids| {
        pids.into_iter()
            .filter(|p| state::proc_stat(*p).is_some_and(|(s, _)| s != 'Z' && s != 'X'))
            .count()
    });
    if !cg.exists() || live_members == 0 {
        return cg.destroy().context("remove container cgroup");
    }
    for dir in cg.dirs() {
        if let Err(e) = remove_dir_once(&dir) {
            crate::logging::error(&format!("Failed to remove cgroup: {e:#}"));
        }
    }
    Ok(())
}

/// rmdir a cgroup and its sub-cgroups (deepest first), without retrying.
fn remove_dir_once(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dir_once(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("rmdir {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The spec creates a pid namespace (rather than joining one or none).
fn owns_pid_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid
                    && n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())
            })
        })
}

/// SIGKILL every process of the container (thawing it if frozen) and wait
/// until they are gone.
fn stop_everything(st: &ContainerState) {
    for pid in state::processes(st).unwrap_or_default() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if let Some(cg) = st.cgroup.as_ref().filter(|cg| cg.exists()) {
        if cg.is_frozen().unwrap_or(false) {
            let _ = cg.thaw();
        }
    }
    if state::init_alive(st) {
        let _ = kill(Pid::from_raw(st.init_pid), Signal::SIGKILL);
    }
    wait_gone(st, Duration::from_secs(10));
}

/// Wait until init and every cgroup member is gone (they may be reaped by
/// someone else, e.g. the shim, so we poll instead of waitpid).
fn wait_gone(st: &ContainerState, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(200);
    loop {
        // Reap it ourselves if it is our child (foreground run).
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(st.init_pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        let members = state::processes(st)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| state::proc_stat(*p).is_some_and(|(s, _)| s != 'Z'))
            .count();
        if !state::init_alive(st) && members == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub fn ps(root: &Path, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let st = state::load(root, id)?;
    let pids = state::processes(&st)?;
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids)?);
            Ok(())
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !out.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_col = header
                .split_whitespace()
                .position(|c| c == "PID")
                .context("couldn't find PID field in ps output")?;
            println!("{header}");
            for line in lines {
                let pid: Option<i32> = line
                    .split_whitespace()
                    .nth(pid_col)
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        other => bail!("invalid format option {other:?}: must be table or json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_as_runc_list_does() {
        let t = table(
            &["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            &[[
                "r1".into(),
                "26642".into(),
                "created".into(),
                "/tmp/b1".into(),
                "2026-11-30T03:26:26.234439222Z".into(),
                "root".into(),
            ]],
        );
        // What runc 1.1.5's `list` printed for the same container.
        let runc = "ID          PID         STATUS      BUNDLE      CREATED                          OWNER\n\
                    r1          26642       created     /tmp/b1     2026-11-30T03:26:26.234439222Z   root\n";
        assert_eq!(t, runc);
    }
}
