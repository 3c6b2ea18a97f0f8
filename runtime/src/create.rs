//! `berth create`: the parent side of container creation.
//!
//! Order of events (parent ⇄ init over the sync channel):
//! 1. validate the bundle, claim `<root>/<id>` (mkdir is the duplicate-id
//!    check), record the cgroup in `creating.json` (see below)
//! 2. make exec.fifo, compile seccomp, create the unified cgroup directory
//!    (everything when init cannot place itself: see step 4)
//! 3. turn non-dumpable (init inherits it), clone init into its new
//!    namespaces (via an intermediate process when a user or pid namespace
//!    must be joined first, or a time ns created), record its pid; init
//!    closes every fd it does not need and dies with us (see init.rs)
//! 4. while init mounts its rootfs: save config.json, create and configure
//!    the cgroups, write id maps, send `Continue`; init joins its v1
//!    cgroups before its first cgroupfs mount. In a user namespace init
//!    waits for `Continue` before any mount, and then for the bind
//!    sources we opened for it as host root (rootfs::sources)
//! 5. init finishes the mounts, asks for prestart/createRuntime hooks
//! 6. init runs createContainer hooks, pivots, finishes setup, says `Ready`
//! 7. save state.json and the pid file, send `Created`; init stops dying
//!    with us and says `Detached`. Any failure undoes 1–6.
//!
//! If this process is killed half-way, init notices (parent-death signal,
//! or EOF on the channel) and exits, and `delete --force` finds the
//! cgroups and init through `creating.json` (lifecycle::delete).

use crate::bundle::{self, Bundle, TimeOffset};
use crate::cgroup_join::{self, Placement};
use crate::cli::CreateArgs;
use crate::hooks;
use crate::init::{self, InitContext};
use crate::intermediate;
use crate::namespaces::{self, Plan};
use crate::seccomp;
use crate::state::{self, ContainerState, Status};
use crate::sync::{self, Msg};
use crate::{console, device_rules};
use anyhow::{bail, Context, Result};
use berth_cgroups::Cgroup;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub struct CreateOptions<'a> {
    pub root: &'a Path,
    pub args: &'a CreateArgs,
    /// A console socket fd to use instead of connecting to args.console_socket
    /// (foreground `run` with a terminal).
    pub console_fd: Option<RawFd>,
    /// runc's rootless mode: a cgroup that may not be created is skipped
    /// when no limit needs it, and device rules are left to the user
    /// namespace (which cannot create device nodes anyway).
    pub rootless: bool,
}

pub struct Created {
    pub state: ContainerState,
    pub spec: Spec,
}

/// Undoes a half-made container unless disarmed.
struct Rollback {
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    /// The rootfs, when init mounts it in the host's mount namespace (the
    /// spec has none of its own): its mounts outlive init.
    host_rootfs: Option<PathBuf>,
    armed: bool,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if let Some(rootfs) = &self.host_rootfs {
            if let Err(e) = crate::rootfs::hostns::release_rootfs(rootfs) {
                crate::logging::warn(&format!("cleanup: {e:#}"));
            }
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                crate::logging::warn(&format!("cleanup: remove cgroup: {e:#}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn create(opts: &CreateOptions) -> Result<Created> {
    let args = opts.args;
    state::validate_id(&args.id)?;
    let Bundle {
        dir: bundle_dir,
        spec,
        raw_config,
        rootfs,
        time_offsets,
    } = bundle::load(&args.bundle)?;
    crate::logging::debug("bundle loaded");
    let plan = Plan::from_spec(&spec)?;
    let process = spec
        .process()
        .as_ref()
        .context("config.json has no process")?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.console_socket.is_none() && opts.console_fd.is_none() {
        bail!("cannot allocate tty if berth will detach without setting console socket");
    }
    if !terminal && args.console_socket.is_some() {
        bail!("cannot use console socket if berth will not detach or allocate tty");
    }

    std::fs::create_dir_all(opts.root)
        .with_context(|| format!("create state root {}", opts.root.display()))?;
    let dir = state::container_dir(opts.root, &args.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id exists: {}", args.id)
        }
        Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
    }
    let mut rollback = Rollback {
        dir: dir.clone(),
        cgroup: None,
        pid: None,
        host_rootfs: None,
        armed: true,
    };
    let _lock = state::lock(&dir)?;

    let linux = spec
        .linux()
        .as_ref()
        .context("config.json has no linux section")?;
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .and_then(|p| p.to_str().map(str::to_string));
    let resolved = Cgroup::resolve(cgroups_path.as_deref(), &args.id)?;
    // runc's checks on a cgroup that already exists, made before the rollback owns it
    // (a refused container must not remove somebody else's cgroup).
    let already_there = resolved.check_before_use()?;
    if already_there > 0 {
        crate::logging::warn(&format!(
            "container's cgroup is not empty: {already_there} process(es) found"
        ));
    }
    rollback.cgroup = Some(resolved.clone());
    // If this process is killed from here on, `delete --force` finds the
    // cgroups (and below, init) through this record: state.json comes last.
    let mut pending = state::Pending {
        cgroup: Some(resolved.clone()),
        init_pid: 0,
        init_start_time: 0,
    };
    state::save_pending(&dir, &pending)?;
    let (user_join_wanted, pid_join_wanted) = (
        plan.join
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User),
        plan.join.iter().any(|(t, _)| *t == LinuxNamespaceType::Pid),
    );
    // Init joins its cgroups itself, cheaply (see cgroup_join), unless it
    // is in a new user namespace (no rights on the host's cgroup files) or
    // is cloned by an intermediate process. Then the parent creates and
    // configures the v1 cgroups while init sets up its mounts (init joins
    // them right before it mounts cgroupfs): only the unified directory
    // has to exist before the clone.
    let self_placing = !plan.creates(LinuxNamespaceType::User)
        && !user_join_wanted
        && !pid_join_wanted
        && !plan.creates(LinuxNamespaceType::Time);
    let made = if self_placing {
        resolved.create_unified()
    } else {
        configure_cgroup(&resolved, &spec, opts.rootless)
    };
    let cgroup = match made {
        Ok(()) => Some(resolved),
        Err(e) if opts.rootless && e.is::<berth_cgroups::NoPermission>() => {
            refuse_limits_without_cgroup(&spec, &e)?;
            crate::logging::debug(&format!("rootless: no cgroup ({e})"));
            None
        }
        Err(e) => return Err(e),
    };
    rollback.cgroup = cgroup.clone();
    let fifo_path = dir.join(state::EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622)).context("create exec.fifo")?;
    let fifo = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("open exec.fifo")?;
    // SAFETY: fifo is a fresh fd we own.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };

    let compiled = match linux.seccomp() {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };
    let console_stream = match (&args.console_socket, terminal, opts.console_fd) {
        (_, true, Some(_)) => None,
        (Some(p), true, None) => Some(console::connect(p)?),
        _ => None,
    };
    let console_socket = opts
        .console_fd
        .or(console_stream.as_ref().map(|s| s.as_raw_fd()));

    let joins_all = namespaces::open_joins(&plan.join)?;
    let early = |t| joins_all.iter().find(|(k, _)| *k == t).map(|(_, f)| f);
    let user_join = early(LinuxNamespaceType::User);
    let pid_join = early(LinuxNamespaceType::Pid);
    let late_joins: Vec<(LinuxNamespaceType, File)> = joins_all
        .iter()
        .filter(|(t, _)| !matches!(t, LinuxNamespaceType::User | LinuxNamespaceType::Pid))
        .map(|(t, f)| Ok((*t, f.try_clone()?)))
        .collect::<std::io::Result<_>>()
        .context("duplicate namespace fd")?;

    let (parent_chan, child_chan) = sync::pair()?;
    let placement = match &cgroup {
        Some(cg) if self_placing => Some(Placement::new(cg)?),
        _ => None,
    };
    let direct_clone =
        user_join.is_none() && pid_join.is_none() && !plan.creates(LinuxNamespaceType::Time);
    // Only root can write the id maps of a non-dumpable process.
    let dumpable_until_mapped =
        plan.creates(LinuxNamespaceType::User) && !nix::unistd::Uid::effective().is_root();
    if !dumpable_until_mapped {
        // Inherited by init at clone: no instant in which a process already
        // in a joined namespace could open init's /proc/<pid>/fd.
        crate::process::set_dumpable(false)?;
    }
    let sources_by_parent = crate::rootfs::sources::opened_by_parent(&plan);
    let ctx = InitContext {
        id: &args.id,
        spec: &spec,
        plan: &plan,
        rootfs: &rootfs,
        bundle: &bundle_dir,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: args.preserve_fds,
        joins: &late_joins,
        chan: &child_chan,
        fifo: fifo.as_raw_fd(),
        console_socket,
        // `run` in the foreground passes its own socket (see run.rs).
        console_peer: if opts.console_fd.is_some() {
            console::Peer::Foreground
        } else {
            console::Peer::ConsoleSocket
        },
        bind_sources_from_parent: sources_by_parent,
        seccomp: compiled.as_ref(),
        placement: placement.as_ref(),
        die_with_parent: direct_clone,
        dumpable_until_mapped,
    };
    let (pid, placed) = spawn_init(
        &ctx,
        &parent_chan,
        &plan,
        user_join,
        pid_join,
        &time_offsets,
    )?;
    rollback.pid = Some(pid);
    if crate::rootfs::hostns::shares_host_mount_ns(&spec) {
        rollback.host_rootfs = Some(rootfs.clone());
    }
    drop(child_chan);
    pending.init_pid = pid;
    pending.init_start_time = state::proc_stat(pid).map_or(0, |(_, t)| t);
    state::save_pending(&dir, &pending)?;
    drop(fifo);
    drop(console_stream);

    // Init does not need these: done while it sets up its mounts.
    std::fs::write(dir.join(state::CONFIG_FILE), &raw_config)
        .context("save config.json in state dir")?;
    if let Some(cg) = &cgroup {
        if self_placing {
            configure_cgroup(cg, &spec, opts.rootless)?;
        }
        match placed {
            Placed::Fully => {}
            Placed::ExceptUnified => {
                if let Some(dir) = cg.unified_dir() {
                    let procs = dir.join("cgroup.procs");
                    std::fs::write(&procs, pid.to_string())
                        .with_context(|| format!("write {pid} to {}", procs.display()))?;
                }
            }
            Placed::NotAtAll => cg.add_pid(pid)?,
        }
    }
    if plan.creates(LinuxNamespaceType::User) {
        write_id_maps(pid, linux.uid_mappings(), linux.gid_mappings())?;
    }
    // Host root opens the bind sources init may not reach from its user
    // namespace (rootfs::sources); init closes them after its mounts.
    let bind_sources = if sources_by_parent {
        crate::rootfs::sources::open_for_init(pid, &spec, &bundle_dir)?
    } else {
        Vec::new()
    };
    parent_chan.send(&Msg::Continue { host_pid: pid })?;
    if sources_by_parent {
        crate::rootfs::sources::send(&parent_chan, &bind_sources)?;
        drop(bind_sources);
    }
    crate::logging::debug(&format!("init cloned (pid {pid})"));
    let runtime_hooks = hooks::has_create_runtime_hooks(&spec);
    if runtime_hooks {
        parent_chan.expect(Msg::RunCreateRuntimeHooks)?;
        crate::logging::debug("rootfs prepared");
    }

    let mut st = ContainerState {
        id: args.id.clone(),
        bundle: bundle_dir.clone(),
        rootfs: rootfs.clone(),
        init_pid: pid,
        init_start_time: 0,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        owner: String::new(),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cgroup,
        rootless: opts.rootless,
    };
    let hook_state = state::hook_state(&st, Status::Creating, pid);
    if runtime_hooks {
        if let Some(h) = spec.hooks() {
            #[allow(deprecated)]
            if let Some(pre) = h.prestart() {
                hooks::run_all(hooks::Kind::Prestart, pre, &hook_state)?;
            }
            if let Some(cr) = h.create_runtime() {
                hooks::run_all(hooks::Kind::CreateRuntime, cr, &hook_state)?;
            }
        }
        parent_chan.send(&Msg::HooksDone)?;
    }
    let agent = seccomp::notify::Agent::from_spec(&spec);
    parent_chan.expect_serving(Msg::Ready, |listener| {
        seccomp::notify::hand_over(agent.as_ref(), listener, pid, hook_state.clone())
    })?;
    crate::logging::debug("init ready");

    st.init_start_time = state::proc_stat(pid)
        .map(|(_, t)| t)
        .context("container init exited during create")?;
    state::save(opts.root, &st)?;
    if let Some(p) = &args.pid_file {
        write_pid_file(p, pid)?;
    }
    if let Some(p) = &args.pidfd_socket {
        send_pidfd(p, pid)?;
    }
    // Init stops dying with us only now (see init::wait_for_created).
    parent_chan
        .send(&Msg::Created)
        .context("container init exited during create")?;
    parent_chan.expect(Msg::Detached)?;
    rollback.armed = false;
    crate::logging::debug(&format!("created container {} (init pid {pid})", st.id));
    Ok(Created { state: st, spec })
}

/// Creates the cgroup in every hierarchy and applies the spec's limits.
/// Rootless, device rules are left out (as runc does): an unprivileged
/// user can neither load a device eBPF program nor make device nodes.
fn configure_cgroup(cgroup: &Cgroup, spec: &Spec, rootless: bool) -> Result<()> {
    cgroup.create()?;
    let mut resources = device_rules::effective_resources(spec);
    if rootless {
        resources.set_devices(None);
    }
    cgroup.apply(&resources)?;
    crate::logging::debug("cgroup configured");
    Ok(())
}

/// Without a cgroup no limit can be applied: refuse a spec that sets any
/// (device rules aside), naming them, rather than run it unconfined.
fn refuse_limits_without_cgroup(spec: &Spec, why: &anyhow::Error) -> Result<()> {
    let set = limits_needing_cgroup(spec);
    if !set.is_empty() {
        bail!(
            "rootless container cannot apply its {} limits without a cgroup: {why} \
             (delegate a cgroup to this user or drop the limits)",
            set.join(", ")
        );
    }
    Ok(())
}

/// The linux.resources sections, other than devices, that the spec sets.
fn limits_needing_cgroup(spec: &Spec) -> Vec<String> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let Some(Ok(serde_json::Value::Object(fields))) = resources.map(serde_json::to_value) else {
        return Vec::new();
    };
    let empty = |v: &serde_json::Value| match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.values().all(serde_json::Value::is_null),
        _ => false,
    };
    fields
        .into_iter()
        .filter(|(k, v)| k != "devices" && !empty(v))
        .map(|(k, _)| k)
        .collect()
}

/// How much of the cgroup placement init did by itself.
enum Placed {
    Fully,
    ExceptUnified,
    NotAtAll,
}

/// Clone init. Joining a user or pid namespace, or creating a time
/// namespace, has to happen in the process that clones init (they apply to
/// children), so that is done by a short-lived intermediate.
fn spawn_init(
    ctx: &InitContext,
    parent_chan: &sync::Channel,
    plan: &Plan,
    user_join: Option<&File>,
    pid_join: Option<&File>,
    time_offsets: &[TimeOffset],
) -> Result<(i32, Placed)> {
    let flags = plan.clone_flags();
    let new_time = plan.creates(LinuxNamespaceType::Time);
    if user_join.is_none() && pid_join.is_none() && !new_time {
        return match cgroup_join::clone_placed(flags, ctx.placement)? {
            None => init::run(ctx),
            Some(child) if ctx.placement.is_none() => Ok((child.pid, Placed::NotAtAll)),
            Some(child) if child.needs_unified => Ok((child.pid, Placed::ExceptUnified)),
            Some(child) => Ok((child.pid, Placed::Fully)),
        };
    }
    let enter = || -> Result<()> {
        if let Some(f) = user_join {
            namespaces::join(LinuxNamespaceType::User, f)?;
        }
        if let Some(f) = pid_join {
            namespaces::join(LinuxNamespaceType::Pid, f)?;
        }
        if new_time {
            nix::sched::unshare(namespaces::clone_flag(LinuxNamespaceType::Time))
                .context("create time namespace")?;
            write_time_offsets(time_offsets)?;
        }
        Ok(())
    };
    let pid = intermediate::spawn(flags, enter, || init::run(ctx), ctx.chan, parent_chan)?;
    Ok((pid, Placed::NotAtAll))
}

fn write_time_offsets(offsets: &[TimeOffset]) -> Result<()> {
    let text: String = offsets
        .iter()
        .map(|o| format!("{} {} {}\n", o.clock, o.secs, o.nanos))
        .collect();
    if text.is_empty() {
        return Ok(());
    }
    crate::procfs::ProcFs::open()?
        .write_self("timens_offsets", &text)
        .with_context(|| format!("write time namespace offsets {text:?}"))
}

/// Writes init's uid and gid maps. Root writes them directly. Another
/// user may map only its own ids, so (as runc) a map of exactly its own uid
/// or gid is written directly (setgroups denied first, as the kernel
/// requires for gid_map), and any other map goes through the setuid helpers
/// newuidmap/newgidmap, which check /etc/subuid and /etc/subgid.
fn write_id_maps(
    pid: i32,
    uids: &Option<Vec<LinuxIdMapping>>,
    gids: &Option<Vec<LinuxIdMapping>>,
) -> Result<()> {
    let uids = uids.as_deref().unwrap_or_default();
    let gids = gids.as_deref().unwrap_or_default();
    if nix::unistd::Uid::effective().is_root() {
        write_map(pid, "uid_map", uids)?;
        return write_map(pid, "gid_map", gids);
    }
    // Exactly one entry: the caller's own id.
    let own = |maps: &[LinuxIdMapping], id: u32| match maps {
        [m] => m.host_id() == id && m.size() == 1,
        _ => false,
    };
    if own(uids, nix::unistd::Uid::effective().as_raw()) {
        write_map(pid, "uid_map", uids)?;
    } else {
        map_with_helper(pid, "newuidmap", uids)?;
    }
    if own(gids, nix::unistd::Gid::effective().as_raw()) {
        crate::procfs::ProcFs::open()?
            .write(Path::new(&format!("{pid}/setgroups")), "deny")
            .context("deny setgroups before writing an unprivileged gid_map")?;
        write_map(pid, "gid_map", gids)?;
    } else {
        map_with_helper(pid, "newgidmap", gids)?;
    }
    Ok(())
}

fn write_map(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Ok(());
    }
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    crate::procfs::ProcFs::open()?
        .write(Path::new(&format!("{pid}/{file}")), &text)
        .with_context(|| format!("write {file} {text:?}"))
}

/// `newuidmap PID c h s [c h s ...]` (or newgidmap) from the uidmap package.
fn map_with_helper(pid: i32, helper: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd.output().with_context(|| {
        format!("run {helper} (install the uidmap package) to map ids other than your own")
    })?;
    if !out.status.success() {
        bail!(
            "{helper} {pid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Atomic write (tmp + rename) so a reader never sees a partial pid.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let tmp = abs.with_file_name(format!(
        ".{}.tmp",
        abs.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, &abs).with_context(|| format!("rename pid file to {}", abs.display()))
}

fn send_pidfd(socket: &Path, pid: i32) -> Result<()> {
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let stream = console::connect(socket)?;
    console::send_fd(stream.as_raw_fd(), fd.as_raw_fd(), "pidfd")
}
