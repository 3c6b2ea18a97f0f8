//! The container's first process, from clone() to execve().
//!
//! berth does not re-exec itself for init (unlike runc): the cloned child
//! already has the parsed spec in memory, which saves an exec and a JSON
//! parse per container. It talks to its parent over [`Channel`] until
//! it is fully set up, then blocks on `exec.fifo` until `berth start`.
//!
//! Being a clone, init starts with every fd berth had open (state-dir lock,
//! cgroup directories, the parent's end of the channel). In the container's
//! namespaces any of them would lead back to the host, as a cwd of
//! `/proc/self/fd/N` or through `/proc/1/fd/N` (CVE-2024-21626): init is
//! born non-dumpable, closes all but what it needs at once and everything
//! but the channel and the fifo before it enters the cwd, which must then
//! lie inside its root ([`prepare_process`], shared with `exec`).

use crate::console;
use crate::hooks;
use crate::namespaces::{self, Plan};
use crate::process::{self, CapSets};
use crate::rootfs::{self, RootfsContext};
use crate::seccomp::CompiledSeccomp;
use crate::sync::{Channel, Msg};
use anyhow::{bail, Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Everything init needs, borrowed from the parent's memory (init is a
/// clone() of it).
pub struct InitContext<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub plan: &'a Plan,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Namespaces to join by path, other than user and pid (joined before clone).
    pub joins: &'a [(LinuxNamespaceType, File)],
    pub chan: &'a Channel,
    /// Read end of exec.fifo (O_NONBLOCK): readable once `start` writes.
    pub fifo: RawFd,
    pub console_socket: Option<RawFd>,
    /// Who gets the pty master over `console_socket`.
    pub console_peer: console::Peer,
    /// The parent sends the bind mount sources it opened for us after
    /// `Continue` (see rootfs::sources).
    pub bind_sources_from_parent: bool,
    pub seccomp: Option<&'a CompiledSeccomp>,
    /// Set when init must join its v1 cgroups itself (see cgroup_join).
    pub placement: Option<&'a crate::cgroup_join::Placement>,
    /// `create` clones init itself: init dies with it (PR_SET_PDEATHSIG)
    /// until the container is created. Not when an intermediate process
    /// clones init (it exits at once); init then notices a dead `create`
    /// by EOF on the sync channel.
    pub die_with_parent: bool,
    /// An unprivileged parent writes init's id maps through
    /// `/proc/<pid>/uid_map`, which it may only open while init is
    /// dumpable: init turns non-dumpable once the maps are written.
    pub dumpable_until_mapped: bool,
}

/// Run init; never returns. Errors go to the parent while it listens.
pub fn run(ctx: &InitContext) -> ! {
    let result = setup(ctx);
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // Mounts made in the host's namespace (no mount namespace) do not go
    // away with init: take them off again.
    rootfs::hostns::undo_after_failure(ctx.rootfs);
    // An error before the parent's `Continue` (a spec check, an early
    // mount): the parent is still on its way to send it and would fail on
    // our closed channel ("send sync message: EPIPE") instead of reading
    // the error. Take the message first (EOF if the parent is gone).
    if !CONTINUED.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = ctx.chan.recv();
    }
    // Likewise the bind sources the parent sends right after `Continue`.
    if ctx.bind_sources_from_parent && !SOURCES_TAKEN.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = rootfs::sources::receive(ctx.chan);
    }
    let msg = format!("{err:#}");
    if ctx.chan.send(&Msg::Error(msg.clone())).is_err() {
        eprintln!("berth init: {msg}");
    }
    // SAFETY: leave without running the parent's atexit/destructors.
    unsafe { libc::_exit(1) }
}

/// Whether init has received the parent's `Continue` (see [`run`]). Init
/// is a single-threaded clone: the flag is its own.
static CONTINUED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether init has taken the bind sources the parent sends (see [`run`]).
static SOURCES_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Entering the container's cgroups and creating its cgroup namespace (whose
/// root is the cgroup we are in at that moment). When init places itself
/// (see cgroup_join) this happens as late as possible, right before the
/// first cgroupfs mount, so the parent creates and configures the cgroups
/// while init mounts: the parent's `Continue` says they are ready.
struct CgroupEntry<'c, 'a> {
    ctx: &'c InitContext<'a>,
    host_pid: Option<i32>,
    entered: bool,
}

impl CgroupEntry<'_, '_> {
    /// Waits (once) for the parent's `Continue`, which carries our host pid.
    fn wait_for_parent(&mut self) -> Result<i32> {
        if let Some(pid) = self.host_pid {
            return Ok(pid);
        }
        let pid = match self.ctx.chan.recv()? {
            Some(Msg::Continue { host_pid }) => host_pid,
            Some(other) => bail!("unexpected message from parent: {other:?}"),
            None => bail!("parent went away during create"),
        };
        self.host_pid = Some(pid);
        CONTINUED.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(pid)
    }

    fn enter(&mut self) -> Result<()> {
        if self.entered {
            return Ok(());
        }
        self.wait_for_parent()?;
        if let Some(p) = self.ctx.placement {
            crate::cgroup_join::join_v1_self(p)?;
        }
        if self.ctx.plan.creates(LinuxNamespaceType::Cgroup) {
            unshare(CloneFlags::CLONE_NEWCGROUP).context("create cgroup namespace")?;
        }
        self.entered = true;
        Ok(())
    }
}

/// First thing after clone: tie init's life to `create`'s, hide its /proc
/// entries from the container and drop every fd it inherited from the
/// parent but does not need: the state-dir lock, cgroup dirs, the parent's
/// end of the sync channel (holding it, init would never see EOF when
/// `create` dies), log and console fds.
fn contain_at_birth(ctx: &InitContext) -> Result<()> {
    if ctx.die_with_parent {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("set parent-death signal");
        }
    }
    if !ctx.dumpable_until_mapped {
        process::set_dumpable(false)?;
    }
    let mut keep = vec![ctx.chan.as_raw_fd(), ctx.fifo];
    keep.extend(ctx.console_socket);
    keep.extend(ctx.joins.iter().map(|(_, f)| f.as_raw_fd()));
    process::close_fds_except(first_unpreserved_fd(ctx.preserve_fds), &keep)?;
    // The parent may have died before the prctl took effect (getppid()
    // cannot tell: it is 0 in a new pid namespace). With its end of the
    // channel closed here, our end hangs up if it is gone.
    if ctx.chan.peer_gone()? {
        bail!("berth create exited while the container was being created");
    }
    Ok(())
}

/// Lowest fd that is neither stdio nor one of the caller's --preserve-fds.
pub fn first_unpreserved_fd(preserve_fds: u32) -> RawFd {
    3 + RawFd::try_from(preserve_fds).unwrap_or(RawFd::MAX - 3)
}

/// After `Ready`: wait for `create` to save the container's state. EOF
/// means `create` died (or failed) first: leave instead of waiting on
/// exec.fifo for ever. Then stop dying with `create`, which now exits.
fn wait_for_created(ctx: &InitContext) -> Result<()> {
    match ctx.chan.recv()? {
        Some(Msg::Created) => {}
        Some(other) => bail!("unexpected message from parent: {other:?}"),
        None => bail!("berth create exited before the container was created"),
    }
    if ctx.die_with_parent {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("clear parent-death signal");
        }
    }
    // `create` waits for this before it exits, or its exit could still
    // deliver the signal.
    ctx.chan.send(&Msg::Detached)
}

fn setup(ctx: &InitContext) -> Result<std::convert::Infallible> {
    contain_at_birth(ctx)?;
    // The parent blocks signals to forward them (run); the container must not inherit that.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("reset signal mask")?;
    let mut cgroups = CgroupEntry {
        ctx,
        host_pid: None,
        entered: false,
    };
    if ctx.placement.is_none() {
        // The parent moves us into our cgroups and writes our id maps first.
        cgroups.wait_for_parent()?;
    }
    if ctx.dumpable_until_mapped {
        // The maps are written (Continue came after them).
        cgroups.wait_for_parent()?;
        process::set_dumpable(false)?;
    }
    let spec = ctx.spec;
    let process = spec
        .process()
        .as_ref()
        .context("config.json has no process")?;

    // Created, or joined by the intermediate that cloned us: either way we
    // are nobody there until we take uid 0 (mounts would fail EOVERFLOW).
    if ctx.plan.has(LinuxNamespaceType::User) {
        become_root_in_userns();
    }
    for (t, f) in ctx.joins {
        namespaces::join(*t, f)?;
    }
    if ctx.placement.is_none() {
        cgroups.enter()?;
    }
    nix::unistd::setsid().context("setsid")?;
    if !ctx.no_new_keyring {
        join_session_keyring(ctx.id);
    }
    set_hostnames(ctx)?;

    // Without a mount namespace, runc's rules (rootfs::hostns): the mounts
    // are made in the host's namespace and the process chroots.
    rootfs::hostns::check_spec(spec)?;
    let bind_sources = if ctx.bind_sources_from_parent {
        cgroups.wait_for_parent()?;
        SOURCES_TAKEN.store(true, std::sync::atomic::Ordering::SeqCst);
        rootfs::sources::receive(ctx.chan)?
    } else {
        Default::default()
    };
    let rctx = RootfsContext {
        spec,
        rootfs: ctx.rootfs,
        bundle: ctx.bundle,
        no_pivot: ctx.no_pivot,
        in_user_ns: ctx.plan.has(LinuxNamespaceType::User),
        bind_sources: &bind_sources,
    };
    rootfs::prepare(&rctx, &mut || cgroups.enter())?;
    cgroups.enter()?;
    let host_pid = cgroups.wait_for_parent()?;

    // prestart + createRuntime hooks run in the parent (runtime namespace).
    if hooks::has_create_runtime_hooks(spec) {
        ctx.chan.send(&Msg::RunCreateRuntimeHooks)?;
        ctx.chan.expect(Msg::HooksDone)?;
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    let state = hook_state(ctx, host_pid, "creating");
    if let Some(h) = hooks.create_container() {
        // runc runs them in the container's rootfs (still reachable by its host path:
        // the pivot comes after).
        hooks::run_all_in(hooks::Kind::CreateContainer, h, &state, Some(ctx.rootfs))?;
    }

    rootfs::enter(&rctx)?;
    if process.terminal().unwrap_or(false) {
        setup_terminal(ctx, process)?;
    }
    write_sysctls(spec)?;
    rootfs::finalize(&rctx)?;
    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().clone()) {
        process::set_personality(&p)?;
    }

    // Installs the seccomp filter too, so startContainer hooks run confined (as runc).
    let prepared = prepare_process(
        process,
        ctx.seccomp,
        ctx.chan,
        ctx.preserve_fds,
        ctx.plan,
        &[ctx.chan.as_raw_fd(), ctx.fifo],
    )?;

    ctx.chan.send(&Msg::Ready)?;
    wait_for_created(ctx)?;
    wait_for_start(ctx.fifo)?;

    if let Some(h) = hooks.start_container() {
        hooks::run_all(
            hooks::Kind::StartContainer,
            h,
            &hook_state(ctx, host_pid, "created"),
        )?;
    }
    prepared.exec()
}

fn hook_state(ctx: &InitContext, pid: i32, status: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "id": ctx.id,
        "status": status,
        "pid": pid,
        "bundle": ctx.bundle,
    });
    if let Some(a) = ctx.spec.annotations() {
        if !a.is_empty() {
            v["annotations"] = serde_json::json!(a);
        }
    }
    v
}

/// In a fresh user namespace we hold all capabilities but are "nobody"
/// until we take uid/gid 0 (if the maps give us one).
fn become_root_in_userns() {
    let root_u = nix::unistd::Uid::from_raw(0);
    let root_g = nix::unistd::Gid::from_raw(0);
    let _ = nix::unistd::setresgid(root_g, root_g, root_g);
    let _ = nix::unistd::setresuid(root_u, root_u, root_u);
}

/// A private session keyring, so containers don't share the host's keys.
fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    if let Ok(name) = std::ffi::CString::new(format!("_ses.{id}")) {
        // SAFETY: keyctl(JOIN_SESSION_KEYRING, name); failure (e.g. quota) is tolerated as in runc.
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    }
}

fn set_hostnames(ctx: &InitContext) -> Result<()> {
    let has_uts = ctx.plan.has(LinuxNamespaceType::Uts);
    if let Some(h) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !has_uts {
            bail!("unable to set hostname without a private UTS namespace");
        }
        nix::unistd::sethostname(h).with_context(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = ctx.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        if !has_uts {
            bail!("unable to set domainname without a private UTS namespace");
        }
        // SAFETY: setdomainname reads len bytes from d.
        if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("set domainname {d:?}"));
        }
    }
    Ok(())
}

fn write_sysctls(spec: &Spec) -> Result<()> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    let procfs = crate::procfs::ProcFs::open().context("write sysctls")?;
    let mut keys: Vec<_> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        if key.contains("..") || key.starts_with('/') {
            bail!("invalid sysctl key {key:?}");
        }
        // sysctl(8) accepts both "net.ipv4.ip_forward" and "net/ipv4/ip_forward".
        let rel = if key.contains('/') {
            key.clone()
        } else {
            key.replace('.', "/")
        };
        // Through a verified procfs: the container's /proc may be anything.
        procfs
            .write(&Path::new("sys").join(rel), &sysctl[key])
            .with_context(|| format!("write sysctl {key}={}", sysctl[key]))?;
    }
    Ok(())
}

/// Make a pty in the container, give the master to the console socket and
/// make the slave our stdio, controlling terminal and /dev/console.
fn setup_terminal(ctx: &InitContext, process: &Process) -> Result<()> {
    let sock = ctx
        .console_socket
        .context("process.terminal is set but no console socket was given")?;
    let slave = console::hand_over_pty(sock, process, ctx.console_peer)?;
    rootfs::bind_console(&slave)?;
    console::attach_slave(slave)
}

/// Block until `berth start` writes to exec.fifo.
fn wait_for_start(fifo: RawFd) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::BorrowedFd;
    // SAFETY: fifo stays open for this function's duration.
    let bfd = unsafe { BorrowedFd::borrow_raw(fifo) };
    loop {
        let mut fds = [PollFd::new(bfd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("wait on exec.fifo"),
            Ok(_) => {}
        }
        let mut b = [0u8; 1];
        match nix::unistd::read(fifo, &mut b) {
            Ok(1) => break,
            Ok(_) => bail!("exec.fifo closed without a start signal"),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("read exec.fifo"),
        }
    }
    // The fd stays open (close-on-exec): `berth start` waits for it to
    // close, which tells it the process was exec'd (for poststart hooks).
    Ok(())
}

/// A process ready to exec: identity, caps, limits and seccomp applied; the binary found.
pub struct Prepared {
    path: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<String>,
}

impl Prepared {
    pub fn exec(self) -> Result<std::convert::Infallible> {
        process::exec(&self.path, &self.args, &self.env)
    }
}

/// Apply everything in `process` that must happen before exec, in runc's
/// order: limits and priorities while privileged; seccomp before dropping
/// CAP_SYS_ADMIN unless no_new_privs lets it go last; cwd (while privileged,
/// again after the user change if that was denied), bounding set, user,
/// capabilities, no_new_privs; fds marked close-on-exec. Like runc,
/// seccomp is in place when this returns (so startContainer hooks are
/// confined), and a SCMP_ACT_NOTIFY listener has reached the agent through
/// the runtime on `chan` (see seccomp::notify).
///
/// First of all every fd but stdio, the preserved ones and `keep` (what
/// the runtime side still needs until execve) is closed: nothing from the
/// host may be reachable through /proc/self/fd when the cwd is entered or
/// the process runs. After the chdir the cwd must lie inside our root.
pub fn prepare_process(
    process: &Process,
    seccomp: Option<&CompiledSeccomp>,
    chan: &Channel,
    preserve_fds: u32,
    plan: &Plan,
    keep: &[RawFd],
) -> Result<Prepared> {
    process::close_fds_except(first_unpreserved_fd(preserve_fds), keep)?;
    // While still privileged; takes effect at the execve.
    crate::lsm::apply_exec_labels(process)?;
    if let Some(rl) = process.rlimits() {
        process::set_rlimits(rl)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        crate::procfs::ProcFs::open()?
            .write_self("oom_score_adj", &adj.to_string())
            .with_context(|| format!("set oom_score_adj to {adj}"))?;
    }
    process::set_io_priority(process)?;
    process::set_scheduler(process)?;

    let nnp = process.no_new_privileges().unwrap_or(false);
    if !nnp {
        if let Some(f) = seccomp {
            crate::seccomp::notify::install(f, chan)?;
        }
    }
    let entered_cwd = enter_cwd_privileged(process.cwd())?;
    let caps = CapSets::from_spec(process.capabilities());
    process::drop_bounding(&caps)?;
    let user = process.user();
    let setgroups_allowed = !plan.has(LinuxNamespaceType::User) || setgroups_allowed();
    console::give_stdio_to_user(user.uid())?;
    process::change_user(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
        setgroups_allowed,
    )?;
    if !entered_cwd {
        enter_cwd(process.cwd())?;
    }
    process::apply_caps(&caps)?;
    if nnp {
        process::set_no_new_privs()?;
    }
    // SAFETY: umask only changes our own file-creation mask.
    unsafe { libc::umask(user.umask().unwrap_or(0o022) as libc::mode_t) };

    let mut env = process.env().clone().unwrap_or_default();
    process::ensure_home(&mut env, user.uid());
    let args = process.args().clone().unwrap_or_default();
    let first = args.first().context("process.args must not be empty")?;
    let path = process::find_executable(first, &env)?;
    process::cloexec_from(3 + preserve_fds)?;
    if nnp {
        // As late as runc: fewer calls run under the filter.
        if let Some(f) = seccomp {
            crate::seccomp::notify::install(f, chan)?;
        }
    }
    Ok(Prepared { path, args, env })
}

/// runc's first chdir, while still root with all capabilities: a cwd the
/// runtime may enter but the container user may not (`/root` 0700 for uid
/// 42) must still work. Returns false when permission was denied, so the
/// caller tries again as the container user (a cwd only that user may
/// enter, e.g. a volume chowned to it on root-squashing NFS). Every fd but
/// stdio, the preserved ones and the sync channel is closed already, so no
/// host directory is reachable through /proc/self/fd here.
fn enter_cwd_privileged(cwd: &Path) -> Result<bool> {
    if !cwd.is_absolute() {
        bail!("cwd {:?} set in config.json must be an absolute path", cwd);
    }
    match nix::unistd::chdir(cwd) {
        Ok(()) => {
            process::verify_cwd_in_root()?;
            Ok(true)
        }
        Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::EPERM) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("chdir to cwd ({:?}) set in config.json failed", cwd))
        }
    }
}

/// The second chdir, as the container user, after [`enter_cwd_privileged`]
/// was denied; the result must lie inside the root as well.
fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd)
        .with_context(|| format!("chdir to cwd ({:?}) set in config.json failed", cwd))?;
    process::verify_cwd_in_root()
}

fn setgroups_allowed() -> bool {
    // Through a verified procfs: a fake /proc saying "deny" would keep the
    // supplementary groups init inherited.
    crate::procfs::ProcFs::open()
        .and_then(|p| p.read_self("setgroups"))
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}
