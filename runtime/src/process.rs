//! The last steps before the user's process runs, shared by container init
//! and `exec`: rlimits, priorities, identity, capabilities, no_new_privs,
//! fd hygiene, PATH lookup and execve.

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxPersonality, LinuxPersonalityDomain, PosixRlimit, Process,
};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for rl in rlimits {
        let resource = rlimit_resource(&format!("{:?}", rl.typ()))?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "set rlimit {:?} to soft {} hard {}",
                    rl.typ(),
                    rl.soft(),
                    rl.hard()
                )
            });
        }
    }
    Ok(())
}

/// Map oci-spec's `RlimitNofile` style names to the kernel resource.
fn rlimit_resource(debug_name: &str) -> Result<libc::__rlimit_resource_t> {
    Ok(match debug_name {
        "RlimitCpu" => libc::RLIMIT_CPU,
        "RlimitFsize" => libc::RLIMIT_FSIZE,
        "RlimitData" => libc::RLIMIT_DATA,
        "RlimitStack" => libc::RLIMIT_STACK,
        "RlimitCore" => libc::RLIMIT_CORE,
        "RlimitRss" => libc::RLIMIT_RSS,
        "RlimitNproc" => libc::RLIMIT_NPROC,
        "RlimitNofile" => libc::RLIMIT_NOFILE,
        "RlimitMemlock" => libc::RLIMIT_MEMLOCK,
        "RlimitAs" => libc::RLIMIT_AS,
        "RlimitLocks" => libc::RLIMIT_LOCKS,
        "RlimitSigpending" => libc::RLIMIT_SIGPENDING,
        "RlimitMsgqueue" => libc::RLIMIT_MSGQUEUE,
        "RlimitNice" => libc::RLIMIT_NICE,
        "RlimitRtprio" => libc::RLIMIT_RTPRIO,
        "RlimitRttime" => libc::RLIMIT_RTTIME,
        other => bail!("unknown rlimit type {other}"),
    })
}

pub fn set_io_priority(process: &Process) -> Result<()> {
    let Some(io) = process.io_priority() else {
        return Ok(());
    };
    let class: i64 = match format!("{:?}", io.class()).as_str() {
        "IoprioClassRt" => 1,
        "IoprioClassBe" => 2,
        "IoprioClassIdle" => 3,
        other => bail!("unknown ioPriority class {other}"),
    };
    let value = (class << 13) | io.priority();
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value).
    if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, value) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set ioPriority");
    }
    Ok(())
}

#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

pub fn set_scheduler(process: &Process) -> Result<()> {
    let Some(s) = process.scheduler() else {
        return Ok(());
    };
    let policy = match format!("{:?}", s.policy()).as_str() {
        "SchedOther" => 0,
        "SchedFifo" => 1,
        "SchedRr" => 2,
        "SchedBatch" => 3,
        "SchedIso" => 4,
        "SchedIdle" => 5,
        "SchedDeadline" => 6,
        other => bail!("unknown scheduler policy {other}"),
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match format!("{f:?}").as_str() {
            "SchedFlagResetOnFork" => 0x01,
            "SchedFlagReclaim" => 0x02,
            "SchedFlagDlOverrun" => 0x04,
            "SchedFlagKeepPolicy" => 0x08,
            "SchedFlagKeepParams" => 0x10,
            "SchedFlagUtilClampMin" => 0x20,
            "SchedFlagUtilClampMax" => 0x40,
            other => bail!("unknown scheduler flag {other}"),
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy,
        sched_flags: flags,
        sched_nice: s.nice().unwrap_or(0),
        sched_priority: s.priority().unwrap_or(0) as u32,
        sched_runtime: s.runtime().unwrap_or(0),
        sched_deadline: s.deadline().unwrap_or(0),
        sched_period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr(0 = self, attr, 0) reads our struct.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set scheduler");
    }
    Ok(())
}

pub fn set_personality(p: &LinuxPersonality) -> Result<()> {
    let domain = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality takes a plain integer.
    if unsafe { libc::personality(domain) } == -1 {
        return Err(std::io::Error::last_os_error()).context("set personality");
    }
    Ok(())
}

/// Highest capability the running kernel knows; caps above it can't be set.
/// Asked of the kernel (PR_CAPBSET_READ fails past the last capability), not
/// read from /proc/sys/kernel/cap_last_cap: inside the container /proc may
/// be the image's own files, and a lower number there would leave the rest
/// of the bounding set in place. Probed once: it cannot change while we
/// run, and every capability set (five of them, plus the bounding-set drop)
/// asks.
fn last_cap() -> u8 {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        let known = |n: u8| {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(n), 0, 0, 0) >= 0 }
        };
        // Known capabilities are 0..=last: bisect for the boundary (six
        // calls rather than one per capability).
        let (mut lo, mut hi) = (0u8, 64u8); // lo known (or 0), hi not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if known(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    })
}

/// Parse cap names, ignoring ones this kernel (or the caps crate) doesn't
/// know — as runc does, so specs written for newer kernels still run.
pub fn parse_caps<'a>(names: impl IntoIterator<Item = &'a String>) -> CapsHashSet {
    let last = last_cap();
    names
        .into_iter()
        .filter_map(|n| n.parse::<Capability>().ok())
        .filter(|c| c.index() <= last)
        .collect()
}

fn oci_caps(set: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    let names: Vec<String> = set
        .iter()
        .flatten()
        .map(|c| {
            let s = c.to_string();
            if s.starts_with("CAP_") {
                s
            } else {
                format!("CAP_{s}")
            }
        })
        .collect();
    parse_caps(names.iter())
}

/// The five capability sets of a process, resolved against this kernel.
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapSets {
    pub fn from_spec(c: &Option<LinuxCapabilities>) -> CapSets {
        match c {
            Some(c) => CapSets {
                bounding: oci_caps(c.bounding()),
                effective: oci_caps(c.effective()),
                permitted: oci_caps(c.permitted()),
                inheritable: oci_caps(c.inheritable()),
                ambient: oci_caps(c.ambient()),
            },
            None => CapSets {
                bounding: CapsHashSet::new(),
                effective: CapsHashSet::new(),
                permitted: CapsHashSet::new(),
                inheritable: CapsHashSet::new(),
                ambient: CapsHashSet::new(),
            },
        }
    }
}

/// Drop what is not in the bounding set; must run while still privileged.
pub fn drop_bounding(c: &CapSets) -> Result<()> {
    let last = last_cap();
    for cap in caps::all() {
        if cap.index() <= last && !c.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("drop {cap} from bounding set"))?;
        }
    }
    Ok(())
}

/// Become the spec's user, keeping capabilities across the uid change so
/// [`apply_caps`] can then set exactly the spec's sets.
pub fn change_user(
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
    setgroups_allowed: bool,
) -> Result<()> {
    // SAFETY: plain prctl flags.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if setgroups_allowed {
        let groups: Vec<Gid> = additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).context("setgroups")?;
    } else if !additional_gids.is_empty() {
        bail!("cannot set additional gids: setgroups is denied in this user namespace");
    }
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).with_context(|| format!("setresgid {gid}"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).with_context(|| format!("setresuid {uid}"))?;
    // SAFETY: plain prctl flags.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// Set inheritable, effective, permitted, then ambient — an order in which
/// each capset(2) call is allowed by the previous state.
pub fn apply_caps(c: &CapSets) -> Result<()> {
    caps::set(None, CapSet::Inheritable, &c.inheritable).context("set inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &c.effective).context("set effective capabilities")?;
    caps::set(None, CapSet::Permitted, &c.permitted).context("set permitted capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clear ambient capabilities")?;
    // The kernel only allows ambient caps that are also permitted and
    // inheritable; runc's default spec lists ambient caps without
    // inheritable ones, and runc skips those silently — so do we.
    for cap in c
        .ambient
        .iter()
        .filter(|c2| c.permitted.contains(c2) && c.inheritable.contains(c2))
    {
        caps::raise(None, CapSet::Ambient, *cap).with_context(|| format!("raise ambient {cap}"))?;
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: plain prctl flags.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set no_new_privs");
    }
    Ok(())
}

/// Close every fd numbered `first` or above except those in `keep`.
///
/// Close-on-exec is not enough (CVE-2024-21626): until the final execve a
/// leaked directory fd (state dir, cgroup dir, ...) is reachable as
/// `/proc/self/fd/N` — as a `process.cwd`, or through `/proc/<pid>/fd/N`
/// from another process in the container — and leads out of the rootfs.
pub fn close_fds_except(first: RawFd, keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&k| k >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = first;
    for k in keep.iter().copied().chain(std::iter::once(RawFd::MAX)) {
        if k > lo && !close_range(lo, k - 1) {
            return close_fds_by_listing(first, &keep);
        }
        lo = k.saturating_add(1);
    }
    Ok(())
}

/// close_range(2) of [lo, hi]; false when the kernel lacks it (pre-5.9).
fn close_range(lo: RawFd, hi: RawFd) -> bool {
    // SAFETY: close_range only closes entries of our own fd table; the fds
    // closed are ones nothing in this process will use again.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            lo as libc::c_uint,
            hi as libc::c_uint,
            0,
        ) == 0
    }
}

/// [`close_fds_except`] for kernels without close_range: list, then close
/// (closing while reading /proc/self/fd would skip entries).
fn close_fds_by_listing(first: RawFd, keep: &[RawFd]) -> Result<()> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context("list /proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: as in close_range; EBADF (the listing's own fd) is harmless.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// `--preserve-fds N` hands fds 3..3+N to the container: each must be open
/// before berth opens anything, or one of berth's own fds (the state-dir
/// lock, a cgroup directory) would take the free number and be handed to
/// the container as if the caller had passed it. runc fails the same way.
pub fn check_preserved_fds(preserve_fds: u32) -> Result<()> {
    for fd in 3..crate::init::first_unpreserved_fd(preserve_fds) {
        // SAFETY: F_GETFD only reads the flags of an fd number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("--preserve-fds={preserve_fds}: fd {fd} is not open");
        }
    }
    Ok(())
}

/// PR_SET_DUMPABLE. A non-dumpable process's `/proc/<pid>/fd`, `/cwd`,
/// `/root`, `/mem` ... can only be opened with CAP_SYS_PTRACE over the
/// user namespace its memory was created in — the host's for a clone of
/// berth — so processes of the container cannot reach the runtime's fds.
/// The final execve makes the user's process dumpable again (as usual).
pub fn set_dumpable(dumpable: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set dumpable flag");
    }
    Ok(())
}

/// Refuse a working directory outside our root: chdir through a leaked fd
/// or magic link leaves cwd outside the container's mount tree, which
/// getcwd(2) reports as "(unreachable)..." rather than an absolute path.
pub fn verify_cwd_in_root() -> Result<()> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the raw syscall (not glibc's wrapper, which hides the
    // "(unreachable)" prefix behind ENOENT) writes at most buf.len() bytes.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        // ENOENT: the directory was removed after chdir; ERANGE: too long
        // to name. Neither says the cwd is outside our root: refuse anyway,
        // as runc does, rather than run from a directory we cannot place.
        return Err(err).context(
            "current working directory could not be determined -- possible container breakout detected",
        );
    }
    if buf.first() != Some(&b'/') {
        bail!("current working directory is outside of container mount namespace root -- possible container breakout detected");
    }
    Ok(())
}

/// Mark every fd from `first` up close-on-exec, so nothing berth inherited
/// (or opened) leaks into the container beyond stdio + preserved fds.
pub fn cloexec_from(first: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags in our own table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Pre-5.11 kernels: walk /proc/self/fd.
    for entry in std::fs::read_dir("/proc/self/fd").context("list /proc/self/fd")? {
        let fd: i32 = match entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        {
            Some(fd) => fd,
            None => continue,
        };
        if fd >= first as i32 {
            // SAFETY: setting FD_CLOEXEC on an fd number; harmless if closed.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Value of `key` in a KEY=VALUE list.
pub fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Find `name` the way execvp would, but with the container's PATH.
pub fn find_executable(name: &str, env: &[String]) -> Result<PathBuf> {
    if name.is_empty() {
        bail!("process args must not be empty");
    }
    if name.contains('/') {
        let p = Path::new(name);
        return match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(p.to_path_buf()),
            Ok(_) => bail!("exec: {name:?}: is a directory"),
            Err(e) => bail!("exec: {name:?}: {e}"),
        };
    }
    let path = env_get(env, "PATH").unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    bail!("exec: {name:?}: executable file not found in $PATH")
}

/// HOME from the container's /etc/passwd when the spec did not set it.
pub fn ensure_home(env: &mut Vec<String>, uid: u32) {
    if env_get(env, "HOME").is_some() {
        return;
    }
    let home = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".to_string());
    env.push(format!("HOME={home}"));
}

fn cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).with_context(|| format!("argument contains NUL: {s:?}"))
        })
        .collect()
}

/// Replace this process with the user's program.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> Result<std::convert::Infallible> {
    let p = CString::new(path.as_os_str().as_encoded_bytes())
        .context("executable path contains NUL")?;
    let argv = cstrings(args)?;
    let envp = cstrings(env)?;
    nix::unistd::execve(&p, &argv, &envp).with_context(|| format!("exec {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_cap_is_the_kernels() {
        // The kernel's own count (the test runs on the host, whose /proc is real).
        let want: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(last_cap(), want);
    }

    #[test]
    fn env_lookup() {
        let env = vec!["PATH=/x".to_string(), "PATHX=1".to_string()];
        assert_eq!(env_get(&env, "PATH"), Some("/x"));
        assert_eq!(env_get(&env, "PAT"), None);
    }

    #[test]
    fn finds_sh_on_path() {
        let env = vec![format!("PATH=/nonexistent:{DEFAULT_PATH}")];
        assert!(find_executable("sh", &env).unwrap().ends_with("sh"));
        let err = find_executable("no-such-binary-xyz", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("executable file not found in $PATH"), "{err}");
    }

    #[test]
    fn unknown_caps_are_ignored() {
        let names = ["CAP_CHOWN".to_string(), "CAP_NOT_A_CAP".to_string()];
        let set = parse_caps(names.iter());
        assert_eq!(set.len(), 1);
        assert!(set.contains(&Capability::CAP_CHOWN));
    }
}
