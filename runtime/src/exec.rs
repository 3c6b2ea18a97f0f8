//! `berth exec`: start a new process inside a running container, joining
//! its namespaces and cgroup and applying the same confinement as init.

use crate::cgroup_join::{self, Placement, SubCgroups};
use crate::cli::ExecArgs;
use crate::create::write_pid_file;
use crate::init::prepare_process;
use crate::intermediate;
use crate::namespaces::{self, Plan};
use crate::state::{self, Status};
use crate::sync::{self, Msg};
use crate::{console, foreground, seccomp};
use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Namespace types in the order they are joined: user first (it decides
/// what the others may do), mount last but one so paths resolve until then.
const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

pub fn exec(root: &Path, a: &ExecArgs) -> Result<i32> {
    let st = state::load(root, &a.id)?;
    let init = InitHandle::pin(&st)?;
    exec_pinned(root, a, &st, &init).map_err(|e| {
        // Init died while we were joining it: whatever step noticed it
        // (a vanished /proc/<pid>/ns entry, the child dying with the pid
        // namespace), the caller's answer is runc's.
        if init.exiting() {
            e.context(STOPPED)
        } else {
            e
        }
    })
}

const STOPPED: &str = "cannot exec in a stopped container";

/// A pidfd on the container's init, checked to be that init (same start
/// time) once it is open: its pid cannot be reused while we hold it, and it
/// tells whether init has exited since.
struct InitHandle {
    pidfd: Option<OwnedFd>,
}

impl InitHandle {
    fn pin(st: &state::ContainerState) -> Result<InitHandle> {
        if st.init_pid <= 0 {
            return Ok(InitHandle { pidfd: None });
        }
        // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, st.init_pid, 0) };
        if fd < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => bail!(STOPPED),
                // pidfd_open missing (kernel < 5.3): the status check alone decides.
                _ => Ok(InitHandle { pidfd: None }),
            };
        }
        // SAFETY: fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if !state::init_alive(st) {
            bail!(STOPPED);
        }
        Ok(InitHandle { pidfd: Some(pidfd) })
    }

    /// Has init exited since it was pinned? (A pidfd polls readable then.)
    fn exited(&self) -> bool {
        self.exited_within(nix::poll::PollTimeout::ZERO)
    }

    /// [`Self::exited`], allowing an exit in progress to finish: a dying
    /// init has dropped its namespaces (their /proc entries are gone) a
    /// moment before its pidfd reports the exit.
    fn exiting(&self) -> bool {
        self.exited_within(nix::poll::PollTimeout::from(200u16))
    }

    fn exited_within(&self, timeout: nix::poll::PollTimeout) -> bool {
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        loop {
            match nix::poll::poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(n) => return n > 0,
                Err(_) => return false,
            }
        }
    }
}

fn exec_pinned(
    root: &Path,
    a: &ExecArgs,
    st: &state::ContainerState,
    init: &InitHandle,
) -> Result<i32> {
    match state::status(root, st) {
        Status::Running | Status::Created => {}
        Status::Paused if a.ignore_paused => {}
        Status::Paused => {
            bail!("cannot exec in a paused container (use --ignore-paused to override)")
        }
        Status::Stopped => bail!(STOPPED),
        Status::Creating => bail!("cannot exec in a container that is being created"),
    }
    let spec = state::load_spec(root, &a.id)?;
    let process = build_process(&spec, a)?;
    crate::lsm::validate_process(&process)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && a.detach && a.console_socket.is_none() {
        bail!("cannot allocate tty if berth will detach without setting console socket");
    }
    if !terminal && a.console_socket.is_some() {
        bail!("cannot use console socket if berth will not detach or allocate tty");
    }
    let sub_cgroups = SubCgroups::parse(&a.cgroup)?;
    if sub_cgroups != SubCgroups::None && st.cgroup.is_none() {
        bail!("--cgroup given but the container has no cgroup");
    }
    let plan = Plan::from_spec(&spec)?;
    let ns_files = open_container_namespaces(st.init_pid, &plan)?;
    let shared_root = open_shared_root(st.init_pid, &plan)?;
    // Opened while init was alive (pinned): they are its namespaces, not
    // those of a process that took over its pid.
    if init.exited() {
        bail!(STOPPED);
    }
    crate::logging::debug(&format!(
        "joining the namespaces of init {}: {}",
        st.init_pid,
        describe_joins(st.init_pid, &ns_files)
    ));
    let compiled = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };
    let mask = if a.detach {
        None
    } else {
        Some(foreground::block_signals()?)
    };
    let console_stream = match &a.console_socket {
        Some(p) if terminal => Some(console::connect(p)?),
        _ => None,
    };
    let (ours, theirs) = if terminal && console_stream.is_none() {
        let (x, y) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair for terminal")?;
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    let console_fd: Option<RawFd> = console_stream
        .as_ref()
        .map(|s| s.as_raw_fd())
        .or(theirs.as_ref().map(|s| s.as_raw_fd()));
    // Without --console-socket the master comes to our foreground proxy.
    let console_peer = if console_stream.is_some() {
        console::Peer::ConsoleSocket
    } else {
        console::Peer::Foreground
    };

    let (parent_chan, child_chan) = sync::pair()?;
    // The process is born in the container's pid namespace: it must be
    // non-dumpable from its first instant (it inherits this flag), or a
    // process of the container could open /proc/<pid>/fd/N and walk out
    // through one of the fds it inherited from us before they are closed.
    crate::process::set_dumpable(false)?;
    // What the process does once it exists: drop every inherited fd it does
    // not need (the parent's end of the channel, cgroup dirs, ...), join
    // the remaining namespaces (`joined` are entered already) and its v1
    // cgroups, set itself up, exec.
    let child_main = |joined: &[LinuxNamespaceType], placement: Option<&Placement>| {
        let rest: Vec<(LinuxNamespaceType, &File)> = ns_files
            .iter()
            .filter(|(t, _)| *t != LinuxNamespaceType::Pid && !joined.contains(t))
            .map(|(t, f)| (*t, f))
            .collect();
        let mut keep: Vec<RawFd> = rest.iter().map(|(_, f)| f.as_raw_fd()).collect();
        keep.push(child_chan.as_raw_fd());
        keep.extend(console_fd);
        keep.extend(shared_root.as_ref().map(|f| f.as_raw_fd()));
        let contained = crate::process::close_fds_except(
            crate::init::first_unpreserved_fd(a.preserve_fds),
            &keep,
        )
        .and_then(|()| placement.map_or(Ok(()), cgroup_join::join_v1_self));
        let result = match contained {
            // Failed before the parent's `Continue`: take it first, or the
            // parent, still about to send it, would see only our closed
            // channel (EPIPE) instead of this error.
            Err(e) => {
                let _ = child_chan.recv();
                Err(e)
            }
            Ok(()) => child(
                &child_chan,
                Entry {
                    namespaces: &rest,
                    shared_root: shared_root.as_ref(),
                },
                &process,
                &plan,
                compiled.as_ref(),
                console_fd.map(|fd| (fd, console_peer)),
                a.preserve_fds,
            ),
        };
        let err = match result {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let _ = child_chan.send(&Msg::Error(format!("{err:#}")));
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(127) }
    };
    let user_ns = ns_files
        .iter()
        .find(|(t, _)| *t == LinuxNamespaceType::User);
    let joined_pid_ns = ns_files.iter().find(|(t, _)| *t == LinuxNamespaceType::Pid);
    // `needs_unified`: the unified directory the process still has to be
    // moved to (clone3 could not place it there).
    let (pid, needs_unified) = match user_ns {
        // Without host privileges the container's pid namespace can only be
        // joined from inside its user namespace, which berth could never
        // leave again: an intermediate joins both (see intermediate.rs).
        Some((_, user_f)) if !nix::unistd::Uid::effective().is_root() => {
            if mask.is_some() {
                // The process is reparented to us when the intermediate exits.
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            }
            let enter = || -> Result<()> {
                namespaces::join(LinuxNamespaceType::User, user_f)?;
                if let Some((_, f)) = joined_pid_ns {
                    namespaces::join(LinuxNamespaceType::Pid, f)?;
                }
                Ok(())
            };
            let pid = intermediate::spawn(
                CloneFlags::empty(),
                enter,
                || child_main(&[LinuxNamespaceType::User], None),
                &child_chan,
                &parent_chan,
            )?;
            if let Some(cg) = &st.cgroup {
                Placement::with_sub(cg, &sub_cgroups)?.add_pid(pid)?;
            }
            (pid, None)
        }
        _ => {
            // Joining the pid namespace only affects children: do it here,
            // then fork, then switch back (threads can't be created while our
            // children's pid namespace differs from ours, and the terminal
            // proxy needs them).
            let own_pid_ns = File::open("/proc/self/ns/pid").context("open /proc/self/ns/pid")?;
            if let Some((_, f)) = joined_pid_ns {
                namespaces::join(LinuxNamespaceType::Pid, f)?;
            }
            // The child joins the container's cgroups at birth (v2) or by
            // moving itself (v1), avoiding a slow cgroup migration (see
            // cgroup_join).
            let placement = match &st.cgroup {
                Some(cg) => Some(Placement::with_sub(cg, &sub_cgroups)?),
                None => None,
            };
            let spawned = match cgroup_join::clone_placed(CloneFlags::empty(), placement.as_ref())?
            {
                None => {
                    child_main(&[], placement.as_ref());
                    unreachable!("the exec'd process's setup execs or exits")
                }
                Some(child) => child,
            };
            if joined_pid_ns.is_some() {
                namespaces::join(LinuxNamespaceType::Pid, &own_pid_ns)?;
            }
            let unified = placement
                .as_ref()
                .and_then(|p| p.unified_dir())
                .filter(|_| spawned.needs_unified)
                .map(Path::to_path_buf);
            (spawned.pid, unified)
        }
    };
    crate::logging::debug(&format!("process {pid} cloned"));
    drop(child_chan);
    drop(theirs);
    drop(console_stream);
    let abort = |e: anyhow::Error| -> anyhow::Error {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        e
    };
    if let Some(dir) = needs_unified {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("write {pid} to {}", procs.display()))
            .map_err(abort)?;
    }
    parent_chan
        .send(&Msg::Continue { host_pid: pid })
        .map_err(abort)?;
    let agent = crate::seccomp::notify::Agent::from_spec(&spec);
    parent_chan
        .expect_serving(Msg::Ready, |listener| {
            // runc: the container's state (init's pid, running) for the exec'd `pid`.
            let state = state::hook_state(st, Status::Running, st.init_pid);
            crate::seccomp::notify::hand_over(agent.as_ref(), listener, pid, state)
        })
        .map_err(abort)?;
    // The channel is close-on-exec: EOF means execve succeeded.
    match parent_chan.recv() {
        Ok(None) => {}
        Ok(Some(Msg::Error(e))) => return Err(abort(anyhow::anyhow!("{e}"))),
        Ok(Some(m)) => return Err(abort(anyhow::anyhow!("unexpected message {m:?}"))),
        Err(e) => return Err(abort(e)),
    }
    crate::logging::debug(&format!(
        "process {pid} executed {:?}",
        process.args().as_deref().unwrap_or_default()
    ));
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    let Some(mask) = mask else {
        return Ok(0);
    };
    let terminal = match ours {
        Some(sock) => Some(foreground::proxy_terminal(console::recv_fd(
            sock.as_raw_fd(),
        )?)?),
        None => None,
    };
    let code = foreground::supervise(pid, &mask, terminal)?;
    crate::logging::debug(&format!("process exited (pid {pid}, status {code})"));
    Ok(code)
}

/// "ipc namespace (/proc/N/ns/ipc), ..." for the debug log, as runc names them.
fn describe_joins(pid: i32, ns_files: &[(LinuxNamespaceType, File)]) -> String {
    if ns_files.is_empty() {
        return "none (all shared with the host)".to_string();
    }
    ns_files
        .iter()
        .map(|(t, _)| {
            let name = namespaces::proc_name(*t);
            format!("{name} namespace (/proc/{pid}/ns/{name})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The process to run: `--process` JSON, or the container's process with
/// the command line's overrides (what runc does).
fn build_process(spec: &Spec, a: &ExecArgs) -> Result<Process> {
    if let Some(path) = &a.process {
        let data =
            std::fs::read(path).with_context(|| format!("read process spec {}", path.display()))?;
        let p: Process = serde_json::from_slice(&data)
            .map(|mut doc: serde_json::Value| {
                crate::bundle::drop_unknown_capabilities(&mut doc);
                default_process_fields(&mut doc);
                doc
            })
            .and_then(serde_json::from_value)
            .with_context(|| format!("invalid process spec {}", path.display()))?;
        if p.args().as_ref().is_none_or(|v| v.is_empty()) {
            bail!("args must not be empty");
        }
        if p.cwd().as_os_str().is_empty() {
            bail!("Cwd property must not be empty");
        }
        crate::logging::debug(&format!("process spec read from {}", path.display()));
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("exec args cannot be empty");
    }
    let mut p = spec
        .process()
        .clone()
        .context("container config has no process")?;
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.into());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let user = p.user_mut();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("invalid --user {u:?}: uid must be numeric"))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .with_context(|| format!("invalid --user {u:?}: gid must be numeric"))?,
            );
        }
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    // runc's --apparmor / --process-label (checked by lsm::validate_process).
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &a.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if !a.cap.is_empty() {
        // runc adds --cap capabilities to the bounding, effective and permitted sets.
        let added = a
            .cap
            .iter()
            .map(|name| {
                name.trim_start_matches("CAP_")
                    .parse::<oci_spec::runtime::Capability>()
                    .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let with_added = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(added.iter().copied());
            Some(s)
        };
        let (bounding, effective, permitted) = (
            with_added(caps.bounding()),
            with_added(caps.effective()),
            with_added(caps.permitted()),
        );
        caps.set_bounding(bounding);
        caps.set_effective(effective);
        caps.set_permitted(permitted);
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// The runtime-spec schema requires only `args` and `cwd` of a process
/// (runc reads the rest as zero values): a missing `user` is uid 0, gid 0.
/// A missing `cwd` is left empty for the caller to refuse with runc's words.
fn default_process_fields(doc: &mut serde_json::Value) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    if obj.get("user").is_none_or(serde_json::Value::is_null) {
        obj.insert("user".into(), serde_json::json!({"uid": 0, "gid": 0}));
    }
    if obj.get("cwd").is_none_or(serde_json::Value::is_null) {
        obj.insert("cwd".into(), serde_json::json!(""));
    }
}

/// A container without a mount namespace has no namespace to give the new
/// process its root: init is chrooted into the rootfs (rootfs::hostns).
/// The new process must not run at the host's `/` (runc refuses such an
/// exec with "ns paths are empty"): it enters init's root, opened here
/// while init is pinned (see [`InitHandle`]).
fn open_shared_root(pid: i32, plan: &Plan) -> Result<Option<OwnedFd>> {
    if plan.has(LinuxNamespaceType::Mount) {
        return Ok(None);
    }
    let path = format!("/proc/{pid}/root");
    let fd = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {path}"))?;
    // SAFETY: fresh fd we own.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// chroot into init's root (an fd from [`open_shared_root`]), then `/`.
fn enter_root_of_init(root: &OwnedFd) -> Result<()> {
    nix::unistd::fchdir(root.as_raw_fd()).context("enter the container's root")?;
    nix::unistd::chroot(".").context("chroot into the container's root")?;
    nix::unistd::chdir("/").context("chdir / in the container's root")
}

/// `/proc/<init>/ns/*` for every namespace the container has, skipping ones
/// identical to ours (setns into the same user ns fails with EINVAL).
fn open_container_namespaces(pid: i32, plan: &Plan) -> Result<Vec<(LinuxNamespaceType, File)>> {
    let mut out = Vec::new();
    for t in JOIN_ORDER {
        if !plan.has(t) {
            continue;
        }
        let name = namespaces::proc_name(t);
        let theirs = format!("/proc/{pid}/ns/{name}");
        let f = File::open(&theirs).with_context(|| format!("open {theirs}"))?;
        let same = match (
            f.metadata(),
            std::fs::metadata(format!("/proc/self/ns/{name}")),
        ) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            out.push((t, f));
        }
    }
    Ok(out)
}

/// What the exec'd process enters before it sets itself up: the
/// container's namespaces it has not joined yet and, for a container
/// without a mount namespace, init's root (see [`open_shared_root`]).
struct Entry<'a> {
    namespaces: &'a [(LinuxNamespaceType, &'a File)],
    shared_root: Option<&'a OwnedFd>,
}

fn child(
    chan: &sync::Channel,
    entry: Entry,
    process: &Process,
    plan: &Plan,
    seccomp: Option<&seccomp::CompiledSeccomp>,
    console: Option<(RawFd, console::Peer)>,
    preserve_fds: u32,
) -> Result<std::convert::Infallible> {
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .context("reset signal mask")?;
    match chan.recv()? {
        Some(Msg::Continue { .. }) => {}
        other => bail!("unexpected message from parent: {other:?}"),
    }
    for (t, f) in entry.namespaces {
        namespaces::join(*t, f)?;
    }
    if let Some(root) = entry.shared_root {
        enter_root_of_init(root)?;
    }
    nix::unistd::setsid().context("setsid")?;
    if process.terminal().unwrap_or(false) {
        let (sock, peer) = console.context("terminal requested without console socket")?;
        let slave = console::hand_over_pty(sock, process, peer)?;
        console::attach_slave(slave)?;
    }
    let prepared = prepare_process(
        process,
        seccomp,
        chan,
        preserve_fds,
        plan,
        &[chan.as_raw_fd()],
    )?;
    chan.send(&Msg::Ready)?;
    prepared.exec()
}
