//! OCI `linux.seccomp` profile → classic-BPF filters (compiled with `seccompiler`).
//!
//! # How an OCI profile maps onto seccompiler filters
//! A `seccompiler::SeccompFilter` has one match action and one mismatch action, while an
//! OCI profile mixes actions and errno values. The kernel runs *every* installed filter
//! and keeps the result with the highest precedence
//! (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW); among results of
//! equal precedence the most recently installed filter wins. So one profile becomes:
//! * a **default filter**: every (syscall, conditions) some rule mentions → ALLOW,
//!   anything else → `defaultAction` (omitted when `defaultAction` is ALLOW);
//! * one **action filter** per distinct non-ALLOW (action, errno/msg): its rules → that
//!   action, anything else → ALLOW.
//!
//! Resulting semantics (documented choices, checked against libseccomp/runc):
//! * a syscall no rule matches gets `defaultAction`, as with libseccomp;
//! * a rule whose action equals `defaultAction` (same errno) is skipped, like runc does
//!   (libseccomp refuses such rules);
//! * when several rules match one call, the most severe action wins; between two
//!   matching rules of the same action with different errno values, the rule that comes
//!   first in the profile wins (its filter is installed last, so the kernel sees it first);
//! * several entries for the same name are OR'ed; the conditions of one entry are AND'ed,
//!   except that when one entry compares the same argument twice each condition becomes a
//!   separate rule (OR), exactly like runc (libseccomp cannot AND two conditions on one arg);
//! * conditions compare all 64 bits (32 for i386), like libseccomp;
//! * errno defaults to EPERM (`defaultErrnoRet`/`errnoRet` absent); SCMP_ACT_TRACE uses
//!   the same value as the tracer's message number, as runc does; SCMP_ACT_KILL is
//!   KILL_THREAD (libseccomp's meaning);
//! * names unknown to an architecture are skipped for it (libseccomp/runc do the same).
//!
//! Every installed program also filters the `seccomp(2)` calls that install the programs
//! after it, so the program that may deny `seccomp` is installed last (ties between equal
//! actions then follow install order rather than profile order for the syscalls that
//! program matches). A profile that denies `seccomp` through two different programs
//! (e.g. a non-ALLOW default without an unconditional ALLOW for `seccomp`, plus an
//! ERRNO rule conditioned on `seccomp`'s arguments) is rejected with a clear error.
//!
//! # Architectures
//! The native architecture is always filtered. On x86_64, when the profile lists
//! SCMP_ARCH_X86 (Docker/containerd/podman defaults do), i386 syscalls (32-bit processes,
//! `int 0x80`) are filtered too, with the i386 numbering and 32-bit argument comparisons
//! like libseccomp: seccompiler only emits native programs, so i386 programs are built
//! with i386 numbers and their arch check is retargeted. A gate program installed first
//! kills the process for every other ABI — what libseccomp does for an ABI its filter
//! does not cover: i386 when not listed, and x32 always (x32 shares AUDIT_ARCH_X86_64 but
//! sets bit 30 in the number, which seccompiler does not check, so x32 calls would slip
//! past action programs whose mismatch is ALLOW; x32 is disabled on nearly all kernels,
//! so listing SCMP_ARCH_X32 is accepted but not filtered by number). On aarch64,
//! seccompiler's own arch check kills 32-bit ARM syscalls (SCMP_ARCH_ARM not filtered).
//!
//! # SCMP_ACT_NOTIFY
//! All notify rules (of every filtered ABI) go into one program, since only one filter
//! in a stack may have a listener: it is installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER`
//! and [`CompiledSeccomp::install`] returns the listener fd, which [`notify`] hands to
//! the agent at `listenerPath` the way runc does. seccompiler has no notify action: the
//! program is built with a placeholder action whose returns are then rewritten to
//! `SECCOMP_RET_USER_NOTIF`. Like runc, the default action may not be NOTIFY; nor may
//! `sendmsg` be notified, since the process that installs the filter needs it to pass
//! the listener on (runc forbids `write` for the same reason).

pub mod notify;
mod syscalls;

use std::collections::BTreeMap;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Actions `compile` accepts; `berth features` reports exactly this list.
pub const SUPPORTED_ACTIONS: &[LinuxSeccompAction] = &[
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActNotify,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActTrap,
];

/// Argument comparison operators `compile` accepts (all of the OCI spec's).
pub const SUPPORTED_OPERATORS: &[LinuxSeccompOperator] = &[
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
    LinuxSeccompOperator::ScmpCmpNe,
];

/// Filter flags `install` knows how to pass to the kernel.
pub const KNOWN_FLAGS: &[LinuxSeccompFilterFlag] = &[
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
];

/// Errno used when a profile asks for SCMP_ACT_ERRNO/TRACE without a value (runc's default).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// seccompiler's `sock_filter` is handed to the kernel as `libc::sock_filter`.
const _: () = assert!(
    std::mem::size_of::<seccompiler::sock_filter>() == std::mem::size_of::<libc::sock_filter>()
);

/// The architectures whose syscalls the compiled filters check by number, native first
/// (the others only when the profile lists them).
pub fn filtered_archs() -> &'static [Arch] {
    if cfg!(target_arch = "x86_64") {
        &[Arch::ScmpArchX86_64, Arch::ScmpArchX86]
    } else if cfg!(target_arch = "aarch64") {
        &[Arch::ScmpArchAarch64]
    } else {
        &[]
    }
}

/// The known flags this kernel accepts. Probes like libseccomp: `seccomp(SET_MODE_FILTER,
/// flag, NULL)` fails with EFAULT once the flag passed validation and EINVAL otherwise.
pub fn supported_flags() -> Vec<LinuxSeccompFilterFlag> {
    KNOWN_FLAGS
        .iter()
        .copied()
        .filter(|flag| {
            // SAFETY: a NULL program is never dereferenced; the kernel rejects it with EFAULT.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flag_bits(*flag),
                    std::ptr::null::<libc::sock_fprog>(),
                )
            };
            rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
        })
        .collect()
}

fn flag_bits(flag: LinuxSeccompFilterFlag) -> libc::c_ulong {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    }
}

/// A profile compiled to BPF, ready to be installed (possibly after pivot_root, since no
/// file needs to be read any more).
#[derive(Debug, Clone)]
pub struct CompiledSeccomp {
    /// Programs in install order.
    programs: Vec<BpfProgram>,
    /// `SECCOMP_FILTER_FLAG_*` bits passed with every program.
    flags: libc::c_ulong,
    /// Index in `programs` of the SCMP_ACT_NOTIFY program, installed with a listener.
    listener: Option<usize>,
}

impl CompiledSeccomp {
    /// Installs the filters on the calling thread (all threads with TSYNC). The kernel
    /// requires no_new_privs or CAP_SYS_ADMIN; the caller orders that like runc does.
    /// Returns the listener fd (close-on-exec) when the profile has SCMP_ACT_NOTIFY
    /// rules: until someone answers on it, notified calls block.
    pub fn install(&self) -> Result<Option<OwnedFd>> {
        let mut listener = None;
        for (i, program) in self.programs.iter().enumerate() {
            let len = u16::try_from(program.len())
                .map_err(|_| anyhow!("seccomp: filter {i} has {} instructions", program.len()))?;
            let fprog = libc::sock_fprog {
                len,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            let with_listener = self.listener == Some(i);
            let mut flags = self.flags;
            if with_listener {
                flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
                if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
                    // The kernel refuses TSYNC with NEW_LISTENER unless a failed sync is
                    // reported as ESRCH (the return value is the fd, not a thread id).
                    flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
                }
            }
            // SAFETY: `fprog` points at a live program with the layout the kernel expects
            // (size checked above); the kernel copies it before returning.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flags,
                    &fprog as *const libc::sock_fprog,
                )
            };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                let hint = if err.raw_os_error() == Some(libc::EACCES) {
                    " (needs no_new_privs or CAP_SYS_ADMIN)"
                } else {
                    ""
                };
                bail!("seccomp: installing filter {i} (flags {flags:#x}): {err}{hint}");
            }
            if with_listener {
                let fd = RawFd::try_from(rc)
                    .map_err(|_| anyhow!("seccomp: listener fd {rc} out of range"))?;
                // SAFETY: with NEW_LISTENER the kernel returns a fresh fd we now own.
                listener = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            } else if rc > 0 {
                bail!("seccomp: TSYNC failed: thread {rc} could not be synchronized");
            }
        }
        Ok(listener)
    }

    /// Whether `install` returns a listener fd that must reach the agent.
    #[cfg(test)]
    fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// Number of BPF programs `install` loads for the profile itself (without the gate).
    #[cfg(test)]
    fn program_count(&self) -> usize {
        self.programs.len() - usize::from(abi_gate(&[]).is_some())
    }
}

/// What the kernel should do for a call: an action plus its data (errno / trace message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Trace(u32),
    Log,
    /// SCMP_ACT_NOTIFY: the call waits for the agent holding the listener fd.
    Notify,
}

impl Verdict {
    fn new(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Self> {
        let data = errno.unwrap_or(DEFAULT_ERRNO);
        Ok(match action {
            LinuxSeccompAction::ScmpActAllow => Verdict::Allow,
            LinuxSeccompAction::ScmpActErrno => Verdict::Errno(data),
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                Verdict::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => Verdict::KillProcess,
            LinuxSeccompAction::ScmpActTrap => Verdict::Trap,
            LinuxSeccompAction::ScmpActTrace => Verdict::Trace(data),
            LinuxSeccompAction::ScmpActLog => Verdict::Log,
            LinuxSeccompAction::ScmpActNotify => Verdict::Notify,
        })
    }

    fn action(self) -> SeccompAction {
        match self {
            Verdict::Allow => SeccompAction::Allow,
            Verdict::Errno(e) => SeccompAction::Errno(e),
            Verdict::KillThread => SeccompAction::KillThread,
            Verdict::KillProcess => SeccompAction::KillProcess,
            Verdict::Trap => SeccompAction::Trap,
            Verdict::Trace(m) => SeccompAction::Trace(m),
            Verdict::Log => SeccompAction::Log,
            // Rewritten to SECCOMP_RET_USER_NOTIF by `to_user_notif`.
            Verdict::Notify => NOTIFY_PLACEHOLDER,
        }
    }
}

/// The action a notify program is built with before `to_user_notif` rewrites its
/// returns: TRAP never appears in a notify program otherwise (its mismatch action is
/// ALLOW and seccompiler's arch check returns KILL_PROCESS).
const NOTIFY_PLACEHOLDER: SeccompAction = SeccompAction::Trap;

/// When a syscall matches: always, or when any of the rules (AND of conditions) holds.
#[derive(Debug, Clone)]
enum Matcher {
    Always,
    AnyOf(Vec<SeccompRule>),
}

/// Syscall number → matcher, merging entries for the same number with OR.
#[derive(Debug, Default)]
struct RuleSet(BTreeMap<i64, Matcher>);

impl RuleSet {
    fn add(&mut self, nr: i64, matcher: &Matcher) {
        let merged = match (self.0.remove(&nr), matcher) {
            (None, m) => m.clone(),
            (Some(Matcher::Always), _) | (_, Matcher::Always) => Matcher::Always,
            (Some(Matcher::AnyOf(mut old)), Matcher::AnyOf(new)) => {
                old.extend(new.iter().cloned());
                Matcher::AnyOf(old)
            }
        };
        self.0.insert(nr, merged);
    }

    /// seccompiler's form: an empty rule list means "match on the number alone".
    fn into_rules(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, m)| match m {
                Matcher::Always => (nr, Vec::new()),
                Matcher::AnyOf(rules) => (nr, rules),
            })
            .collect()
    }
}

/// Compiles `profile` for the native architecture (plus i386 on x86_64 when the profile
/// lists SCMP_ARCH_X86). Errors read "seccomp: ..." and need no extra context.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledSeccomp> {
    check_notify(profile)?;
    if filtered_archs().is_empty() {
        bail!(
            "seccomp: no syscall table for architecture {}",
            std::env::consts::ARCH
        );
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow!("seccomp: unsupported architecture: {e}"))?;
    let default = Verdict::new(profile.default_action(), profile.default_errno_ret())?;

    let extra = extra_abis(profile);
    let gate = abi_gate(&extra);
    // With a gate ruling on arches, each program only judges its own ABI.
    let gated = gate.is_some();
    let mut programs: Vec<BpfProgram> = gate.into_iter().collect();
    // (ABI, its notify program): merged into one program below.
    let mut notify: Vec<(Abi, BpfProgram)> = Vec::new();
    for &abi in &extra {
        // Foreign-ABI programs never see the native seccomp(2) calls that install the
        // rest, so they can go first, in the order abi_programs chose.
        let (abi_progs, abi_notify) = abi_programs(profile, default, abi, arch, true)?;
        for (program, _) in abi_progs {
            programs.push(program);
        }
        notify.extend(abi_notify.map(|(p, _)| (abi, p)));
    }
    let (mut native, native_notify) = abi_programs(profile, default, Abi::Native, arch, gated)?;
    let notify_blocks_seccomp = native_notify.as_ref().is_some_and(|(_, b)| *b);
    notify.extend(native_notify.map(|(p, _)| (Abi::Native, p)));
    // Each installed program also filters the seccomp(2) calls installing the next ones,
    // so the (single) program that may deny `seccomp` has to go last.
    let blockers = native.iter().filter(|(_, blocks)| *blocks).count();
    match blockers {
        0 => {}
        1 => native.sort_by_key(|(_, blocks)| *blocks), // stable: keeps the tie order
        _ => bail!(
            "seccomp: the profile denies the seccomp syscall with more than one action; \
             berth loads one BPF program per action and could not install them all"
        ),
    }
    if notify_blocks_seccomp && blockers > 0 {
        // A notified `seccomp` would wait for an agent that gets the listener only
        // once every program is installed.
        bail!(
            "seccomp: SCMP_ACT_NOTIFY on the seccomp syscall cannot be combined with \
             another action denying it"
        );
    }
    let notify_at = programs.len() + native.len() - blockers;
    for (program, _) in native {
        programs.push(program);
    }
    let listener = match merge_by_arch(notify) {
        Some(program) => {
            // Before the program that may deny `seccomp`; last when it notifies
            // `seccomp` itself (then no program follows it).
            programs.insert(notify_at, program);
            Some(notify_at)
        }
        None => None,
    };
    if programs.is_empty() {
        // An allow-everything profile still installs a filter, so the process is in
        // seccomp mode 2 as with runc (and the flags take effect).
        programs.push(build(
            RuleSet::default(),
            SeccompAction::Allow,
            SeccompAction::KillProcess,
            arch,
        )?);
    }

    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= flag_bits(*flag);
    }
    Ok(CompiledSeccomp {
        programs,
        flags,
        listener,
    })
}

/// runc's rules for SCMP_ACT_NOTIFY, plus berth's own: the process that installs the
/// filter passes the listener to its parent with `sendmsg`, which must not wait for it.
fn check_notify(profile: &LinuxSeccomp) -> Result<()> {
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        bail!("seccomp: SCMP_ACT_NOTIFY cannot be used as default action");
    }
    let notified: Vec<&String> = profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
        .flat_map(|s| s.names().iter())
        .collect();
    if notified.iter().any(|n| *n == "sendmsg") {
        bail!(
            "seccomp: SCMP_ACT_NOTIFY cannot be used for the sendmsg syscall \
             (berth passes the listener fd on with it)"
        );
    }
    if !notified.is_empty() && profile.listener_path().is_none() {
        bail!("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath");
    }
    Ok(())
}

/// One program running `programs` (each retargeted to its ABI) by the arch of the
/// call: `LD arch; JEQ <abi>, +1; JA past; <program>` for all but the last, which
/// takes what is left. JA has a 32-bit offset, so any program length fits.
fn merge_by_arch(mut programs: Vec<(Abi, BpfProgram)>) -> Option<BpfProgram> {
    use bpf::*;
    let (_, last) = programs.pop()?;
    let mut merged = Vec::new();
    for (abi, program) in programs {
        merged.push(stmt(BPF_LD | BPF_W | BPF_ABS, ARCH));
        merged.push(jump(BPF_JMP | BPF_JEQ | BPF_K, audit_arch(abi), 1, 0));
        // Program lengths are far below u32::MAX (the kernel caps them at 4096).
        merged.push(stmt(BPF_JMP | BPF_JA, program.len() as u32));
        merged.extend(program);
    }
    merged.extend(last);
    Some(merged)
}

/// Rewrites the placeholder returns of a notify program to SECCOMP_RET_USER_NOTIF.
fn to_user_notif(mut program: BpfProgram) -> Result<BpfProgram> {
    use bpf::*;
    let placeholder = libc::SECCOMP_RET_TRAP;
    let mut rewritten = 0;
    for insn in program.iter_mut() {
        if u32::from(insn.code) == BPF_RET | BPF_K && insn.k == placeholder {
            insn.k = libc::SECCOMP_RET_USER_NOTIF;
            rewritten += 1;
        }
    }
    if rewritten == 0 {
        bail!("seccomp: unexpected seccompiler program: no notify return to rewrite");
    }
    Ok(program)
}

/// A syscall ABI the filters check by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// The architecture berth runs on (x86_64 or aarch64).
    Native,
    /// 32-bit x86 processes and `int 0x80` calls on an x86_64 host (SCMP_ARCH_X86).
    I386,
}

impl Abi {
    fn number(self, name: &str) -> Option<i64> {
        match self {
            Abi::Native => syscalls::number(name),
            Abi::I386 => syscalls::i386(name),
        }
    }

    /// libseccomp compares 64-bit arguments on 64-bit ABIs and 32 bits on 32-bit ones.
    fn arg_len(self) -> SeccompCmpArgLen {
        match self {
            Abi::Native => SeccompCmpArgLen::Qword,
            Abi::I386 => SeccompCmpArgLen::Dword,
        }
    }
}

/// ABIs filtered besides the native one: i386 on x86_64 hosts when the profile lists
/// SCMP_ARCH_X86 (as Docker/containerd/podman default profiles do).
fn extra_abis(profile: &LinuxSeccomp) -> Vec<Abi> {
    let lists = |a: Arch| profile.architectures().iter().flatten().any(|x| *x == a);
    if cfg!(target_arch = "x86_64") && lists(Arch::ScmpArchX86) {
        vec![Abi::I386]
    } else {
        Vec::new()
    }
}

/// The profile's programs for one ABI in install order, each with whether it may deny
/// (or, for the notify program, hold up) the native `seccomp` syscall; the notify
/// program comes apart, as `compile` merges those of all ABIs. `gated`: an ABI gate is
/// installed, so each program only judges its own ABI (see `retarget`).
#[allow(clippy::type_complexity)]
fn abi_programs(
    profile: &LinuxSeccomp,
    default: Verdict,
    abi: Abi,
    arch: TargetArch,
    gated: bool,
) -> Result<(Vec<(BpfProgram, bool)>, Option<(BpfProgram, bool)>)> {
    let finish = |program: BpfProgram| -> Result<BpfProgram> {
        if gated {
            retarget(program, abi)
        } else {
            Ok(program)
        }
    };
    let mut matched = RuleSet::default();
    // Non-ALLOW verdicts in order of first appearance in the profile.
    let mut by_verdict: Vec<(Verdict, RuleSet)> = Vec::new();
    for (i, entry) in profile.syscalls().iter().flatten().enumerate() {
        let verdict = Verdict::new(entry.action(), entry.errno_ret())?;
        if verdict == default {
            continue;
        }
        let args = entry.args().as_deref().unwrap_or_default();
        let Some(matcher) = matcher_for(args, abi.arg_len())
            .with_context(|| format!("seccomp: syscalls[{i}] {:?}", entry.names()))?
        else {
            continue; // conditions that can never hold
        };
        let numbers: Vec<i64> = entry.names().iter().filter_map(|n| abi.number(n)).collect();
        for &nr in &numbers {
            matched.add(nr, &matcher);
        }
        if verdict != Verdict::Allow {
            let pos = match by_verdict.iter().position(|(v, _)| *v == verdict) {
                Some(pos) => pos,
                None => {
                    by_verdict.push((verdict, RuleSet::default()));
                    by_verdict.len() - 1
                }
            };
            for &nr in &numbers {
                by_verdict[pos].1.add(nr, &matcher);
            }
        }
    }

    let seccomp_nr = (abi == Abi::Native)
        .then(|| syscalls::number("seccomp"))
        .flatten();
    // (program, may block the `seccomp` syscall that installs the programs after it)
    let mut programs: Vec<(BpfProgram, bool)> = Vec::with_capacity(by_verdict.len() + 1);
    if default != Verdict::Allow {
        // The default program lets `seccomp` through only when a rule allows it
        // unconditionally.
        let allowed = matches!(
            seccomp_nr.and_then(|nr| matched.0.get(&nr)),
            Some(Matcher::Always)
        );
        let blocks = abi == Abi::Native && !allowed && default != Verdict::Log;
        let program = finish(build(
            matched,
            default.action(),
            SeccompAction::Allow,
            arch,
        )?)?;
        let program = match enosys_threshold(profile, default, abi) {
            Some(last) => with_enosys_stub(program, abi, last),
            None => program,
        };
        programs.push((program, blocks));
    }
    let mut notify = None;
    // Reverse order: the first verdict in the profile is installed last and so is the
    // one the kernel keeps when two verdicts of equal precedence both match.
    for (verdict, set) in by_verdict.into_iter().rev() {
        if set.0.is_empty() {
            continue; // only names unknown on this architecture
        }
        let blocks =
            verdict != Verdict::Log && seccomp_nr.is_some_and(|nr| set.0.contains_key(&nr));
        let program = finish(build(set, SeccompAction::Allow, verdict.action(), arch)?)?;
        if verdict == Verdict::Notify {
            notify = Some((to_user_notif(program)?, blocks));
        } else {
            programs.push((program, blocks));
        }
    }
    Ok((programs, notify))
}

/// The largest syscall number the profile names for `abi` when calls above it must
/// fail with ENOSYS rather than get `defaultAction`, as runc's patched filters do:
/// a syscall newer than anything the profile knows is one the profile cannot have
/// meant to deny, and ENOSYS lets libc fall back to an older call (EPERM would not).
/// runc applies this only to architectures the profile lists, only when the default
/// action denies (not ALLOW, LOG or TRACE), and not when it already is ENOSYS.
fn enosys_threshold(profile: &LinuxSeccomp, default: Verdict, abi: Abi) -> Option<u32> {
    const ENOSYS: u32 = libc::ENOSYS as u32;
    if matches!(
        default,
        Verdict::Allow | Verdict::Log | Verdict::Trace(_) | Verdict::Errno(ENOSYS)
    ) {
        return None;
    }
    let listed = |a: Arch| profile.architectures().iter().flatten().any(|x| *x == a);
    let abi_listed = match abi {
        Abi::Native if cfg!(target_arch = "aarch64") => listed(Arch::ScmpArchAarch64),
        Abi::Native => listed(Arch::ScmpArchX86_64),
        Abi::I386 => listed(Arch::ScmpArchX86),
    };
    if !abi_listed {
        return None;
    }
    profile
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|entry| entry.names().iter())
        .filter_map(|name| abi.number(name))
        .max()
        .and_then(|nr| u32::try_from(nr).ok())
}

/// Prepends to `program` a check that answers ENOSYS for syscalls of `abi` numbered
/// above `last`; everything else (other arches, x32 calls, known numbers) falls
/// through to the program unchanged. BPF jumps are relative, so the program is
/// valid behind any prefix.
fn with_enosys_stub(program: BpfProgram, abi: Abi, last: u32) -> BpfProgram {
    use bpf::*;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let x32_check = abi == Abi::Native && cfg!(target_arch = "x86_64");
    let mut stub = vec![stmt(BPF_LD | BPF_W | BPF_ABS, ARCH)];
    // Skips to the program: past the NR load, the optional x32 test, JGT and RET.
    let to_program = if x32_check { 4 } else { 3 };
    stub.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        audit_arch(abi),
        0,
        to_program,
    ));
    stub.push(stmt(BPF_LD | BPF_W | BPF_ABS, NR));
    if x32_check {
        // x32 numbers carry bit 30: the ABI gate rules on them.
        stub.push(jump(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 2, 0));
    }
    stub.push(jump(BPF_JMP | BPF_JGT | BPF_K, last, 0, 1));
    stub.push(stmt(BPF_RET | BPF_K, enosys));
    stub.extend(program);
    stub
}

/// Hand-written classic BPF for what seccompiler cannot express: arch dispatch.
mod bpf {
    pub use libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W,
    };
    /// Unconditional jump by `k` (not exported by libc).
    pub const BPF_JA: u32 = 0x00;
    use seccompiler::sock_filter;

    /// Offsets in `struct seccomp_data { int nr; __u32 arch; ... }`.
    pub const NR: u32 = 0;
    pub const ARCH: u32 = 4;

    pub fn stmt(code: u32, k: u32) -> sock_filter {
        jump(code, k, 0, 0)
    }

    pub fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            // BPF opcodes fit in 16 bits.
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
}

/// The AUDIT_ARCH value (oci-spec's `Arch` discriminants are the libseccomp/audit values).
fn audit_arch(abi: Abi) -> u32 {
    match abi {
        Abi::Native if cfg!(target_arch = "aarch64") => Arch::ScmpArchAarch64 as u32,
        Abi::Native => Arch::ScmpArchX86_64 as u32,
        Abi::I386 => Arch::ScmpArchX86 as u32,
    }
}

/// seccompiler starts every program with `LD arch; JEQ <native>, 1, 0; RET KILL_PROCESS`.
/// Behind the gate, a program checks the arch of its ABI and lets other arches through
/// (the gate rules on those). Refuses if seccompiler's prologue ever changes.
fn retarget(mut program: BpfProgram, abi: Abi) -> Result<BpfProgram> {
    use bpf::*;
    let prologue = [
        stmt(BPF_LD | BPF_W | BPF_ABS, ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, audit_arch(Abi::Native), 1, 0),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if program.get(..3) != Some(&prologue[..]) {
        bail!("seccomp: unexpected seccompiler program prologue; cannot filter {abi:?}");
    }
    program[1].k = audit_arch(abi);
    program[2].k = libc::SECCOMP_RET_ALLOW;
    Ok(program)
}

/// Installed first on x86_64: kills the process for x32-ABI syscalls (same AUDIT_ARCH as
/// x86_64, bit 30 set in the number; seccompiler does not check it, so they would slip
/// past every action program) and for any arch that is neither native nor in `extra`
/// — what libseccomp does for an ABI its filter does not cover.
fn abi_gate(extra: &[Abi]) -> Option<BpfProgram> {
    use bpf::*;
    if !cfg!(target_arch = "x86_64") {
        // seccompiler's own prologue already kills foreign arches.
        return None;
    }
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let mut gate = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, audit_arch(Abi::Native), 0, 4),
        stmt(BPF_LD | BPF_W | BPF_ABS, NR),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    for &abi in extra {
        gate.push(jump(BPF_JMP | BPF_JEQ | BPF_K, audit_arch(abi), 0, 1));
        gate.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    }
    gate.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS));
    Some(gate)
}

fn build(
    set: RuleSet,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(set.into_rules(), mismatch, on_match.clone(), arch)
        .map_err(|e| anyhow!("seccomp: building filter for {on_match:?}: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| anyhow!("seccomp: compiling filter: {e}"))
}

/// The matcher for one profile entry; `None` when its conditions can never hold.
fn matcher_for(args: &[LinuxSeccompArg], len: SeccompCmpArgLen) -> Result<Option<Matcher>> {
    if args.is_empty() {
        return Ok(Some(Matcher::Always));
    }
    let conditions = args
        .iter()
        .map(|a| condition(a, len.clone()))
        .collect::<Result<Vec<Option<SeccompCondition>>>>()?;
    let mut per_index = [0usize; 6];
    for arg in args {
        per_index[arg.index()] += 1; // index validated by `condition`
    }
    let rules = if per_index.iter().any(|&n| n > 1) {
        // runc: the same argument compared twice → each condition is its own rule.
        conditions
            .into_iter()
            .flatten()
            .map(|c| SeccompRule::new(vec![c]))
            .collect::<Result<Vec<_>, _>>()
    } else {
        match conditions.into_iter().collect::<Option<Vec<_>>>() {
            Some(all) => SeccompRule::new(all).map(|r| vec![r]),
            None => Ok(Vec::new()),
        }
    }
    .map_err(|e| anyhow!("invalid rule: {e}"))?;
    Ok((!rules.is_empty()).then_some(Matcher::AnyOf(rules)))
}

/// One argument comparison; `None` when it can never be true (MASKED_EQ whose expected
/// value has bits outside the mask, which seccompiler would otherwise mask away).
fn condition(arg: &LinuxSeccompArg, len: SeccompCmpArgLen) -> Result<Option<SeccompCondition>> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| anyhow!("argument index {} out of range 0..=5", arg.index()))?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // OCI/libseccomp: (arg & value) == valueTwo.
            let (mask, want) = (arg.value(), arg.value_two().unwrap_or(0));
            if want & !mask != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), want)
        }
    };
    SeccompCondition::new(index, len, op, value)
        .map(Some)
        .map_err(|e| anyhow!("invalid condition: {e}"))
}

/// Converts a Docker/containers-common profile (`names`, `archMap`, `includes`/`excludes`)
/// into the OCI form, resolving includes/excludes for `caps` and the native arch the way
/// podman does. Only tests need it: the runtime receives profiles already in OCI form.
#[cfg(test)]
pub(crate) mod docker {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Profile {
        default_action: LinuxSeccompAction,
        default_errno_ret: Option<u32>,
        #[serde(default)]
        arch_map: Vec<ArchMap>,
        #[serde(default)]
        architectures: Vec<Arch>,
        #[serde(default)]
        flags: Vec<LinuxSeccompFilterFlag>,
        #[serde(default)]
        syscalls: Vec<Syscall>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ArchMap {
        architecture: Arch,
        #[serde(default)]
        sub_architectures: Vec<Arch>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Syscall {
        name: Option<String>,
        #[serde(default)]
        names: Vec<String>,
        action: LinuxSeccompAction,
        errno_ret: Option<u32>,
        args: Option<Vec<LinuxSeccompArg>>,
        #[serde(default)]
        includes: Filter,
        #[serde(default)]
        excludes: Filter,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Filter {
        #[serde(default)]
        caps: Vec<String>,
        #[serde(default)]
        arches: Vec<String>,
    }

    /// Go's name for the native arch, as used in `includes.arches`.
    fn go_arch() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    }

    pub(crate) fn from_docker_profile(json: &str, caps: &[String]) -> Result<LinuxSeccomp> {
        let p: Profile = serde_json::from_str(json).context("parsing docker seccomp profile")?;
        let native = filtered_archs().first().copied();
        let mut archs = p.architectures;
        for m in p.arch_map.iter().filter(|m| Some(m.architecture) == native) {
            archs.push(m.architecture);
            archs.extend(m.sub_architectures.iter().copied());
        }
        let arch = go_arch();
        let has = |c: &String| caps.contains(c);
        let mut syscalls = Vec::new();
        for s in p.syscalls {
            let excluded =
                s.excludes.arches.iter().any(|a| a == arch) || s.excludes.caps.iter().any(has);
            let included = (s.includes.arches.is_empty()
                || s.includes.arches.iter().any(|a| a == arch))
                && s.includes.caps.iter().all(has);
            if excluded || !included {
                continue;
            }
            let mut names = s.names;
            names.extend(s.name);
            let mut b = oci_spec::runtime::LinuxSyscallBuilder::default()
                .names(names)
                .action(s.action);
            if let Some(e) = s.errno_ret {
                b = b.errno_ret(e);
            }
            if let Some(a) = s.args {
                b = b.args(a);
            }
            syscalls.push(b.build()?);
        }
        let mut b = oci_spec::runtime::LinuxSeccompBuilder::default()
            .default_action(p.default_action)
            .architectures(archs)
            .flags(p.flags)
            .syscalls(syscalls);
        if let Some(e) = p.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        Ok(b.build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};
    use std::os::fd::AsRawFd;

    /// How a forked child that installed the filter and ran one probe ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The probe's errno (0 = the syscall succeeded).
        Errno(i32),
        Signal(i32),
    }

    /// Forks; the child sets no_new_privs, installs `filter` and runs `probe` (raw
    /// syscalls only: the parent is multi-threaded), exiting with the errno it saw.
    fn probe(filter: &CompiledSeccomp, probe: impl FnOnce() -> libc::c_long) -> Outcome {
        // SAFETY: the child of this multi-threaded process only makes raw syscalls
        // before _exit (install allocates nothing unless it fails, and then the child
        // exits at once with code 200).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(201);
                }
                if filter.install().is_err() {
                    libc::_exit(200);
                }
                let rc = probe();
                let code = if rc < 0 { *libc::__errno_location() } else { 0 };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        if libc::WIFSIGNALED(status) {
            Outcome::Signal(libc::WTERMSIG(status))
        } else {
            let code = libc::WEXITSTATUS(status);
            assert!(code < 200, "child could not install the filter ({code})");
            Outcome::Errno(code)
        }
    }

    fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscallBuilder {
        let b = LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(action);
        match errno {
            Some(e) => b.errno_ret(e),
            None => b,
        }
    }

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64, two: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value)
            .value_two(two)
            .build()
            .unwrap()
    }

    fn profile(
        default: LinuxSeccompAction,
        rules: Vec<oci_spec::runtime::LinuxSyscall>,
    ) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .syscalls(rules)
            .build()
            .unwrap()
    }

    fn getcwd() -> libc::c_long {
        let mut buf = [0u8; 256];
        unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) }
    }

    fn mkdir_bad() -> libc::c_long {
        // NULL path: EFAULT when the filter lets it through.
        unsafe { libc::syscall(libc::SYS_mkdir, std::ptr::null::<u8>(), 0o755) }
    }

    fn personality(p: u64) -> libc::c_long {
        unsafe { libc::syscall(libc::SYS_personality, p) }
    }

    fn native_arch() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::ScmpArchAarch64
        } else {
            Arch::ScmpArchX86_64
        }
    }

    /// Allows only what the probing child needs to exit.
    fn deny_by_default(default: LinuxSeccompAction, archs: Vec<Arch>) -> LinuxSeccomp {
        let mut p = profile(
            default,
            vec![rule(
                &["exit", "exit_group"],
                LinuxSeccompAction::ScmpActAllow,
                None,
            )
            .build()
            .unwrap()],
        );
        p.set_architectures(Some(archs));
        p
    }

    fn syscall_1000() -> libc::c_long {
        unsafe { libc::syscall(1000) }
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        use LinuxSeccompAction::*;
        let f = compile(&deny_by_default(ScmpActErrno, vec![native_arch()])).unwrap();
        assert_eq!(probe(&f, syscall_1000), Outcome::Errno(libc::ENOSYS));
        // Known numbers below the largest one named still get the default action.
        assert_eq!(probe(&f, getcwd), Outcome::Errno(libc::EPERM));

        // Also under a killing default: ENOSYS, not death.
        let f = compile(&deny_by_default(ScmpActKillProcess, vec![native_arch()])).unwrap();
        assert_eq!(probe(&f, syscall_1000), Outcome::Errno(libc::ENOSYS));
        assert_eq!(probe(&f, getcwd), Outcome::Signal(libc::SIGSYS));
    }

    #[test]
    fn enosys_only_where_runc_patches() {
        use LinuxSeccompAction::*;
        // Architecture not listed: runc has nothing to patch, the default applies.
        let f = compile(&deny_by_default(ScmpActErrno, Vec::new())).unwrap();
        assert_eq!(probe(&f, syscall_1000), Outcome::Errno(libc::EPERM));
        // A permissive default (LOG) is left alone: the call reaches the kernel.
        let f = compile(&deny_by_default(ScmpActLog, vec![native_arch()])).unwrap();
        assert_eq!(probe(&f, syscall_1000), Outcome::Errno(libc::ENOSYS));
        assert_eq!(probe(&f, getcwd), Outcome::Errno(0));
    }

    #[test]
    fn errno_rules_on_allow_default() {
        use LinuxSeccompAction::*;
        let p = profile(
            ScmpActAllow,
            vec![
                rule(&["getcwd"], ScmpActErrno, None).build().unwrap(),
                rule(&["mkdir", "no_such_syscall"], ScmpActErrno, Some(42))
                    .build()
                    .unwrap(),
            ],
        );
        let f = compile(&p).unwrap();
        assert_eq!(f.program_count(), 2);
        assert_eq!(probe(&f, getcwd), Outcome::Errno(libc::EPERM));
        assert_eq!(probe(&f, mkdir_bad), Outcome::Errno(42));
        assert_eq!(
            probe(&f, || unsafe { libc::syscall(libc::SYS_getpid) }),
            Outcome::Errno(0)
        );
    }

    #[test]
    fn conditions_and_default_errno() {
        use LinuxSeccompAction::*;
        use LinuxSeccompOperator::*;
        let mut p = profile(
            ScmpActErrno,
            vec![
                rule(&["personality"], ScmpActAllow, None)
                    .args(vec![arg(0, ScmpCmpEq, 0xffff_ffff, 0)])
                    .build()
                    .unwrap(),
                // (arg0 & 0xff) == 0x08 — also allowed.
                rule(&["personality"], ScmpActAllow, None)
                    .args(vec![arg(0, ScmpCmpMaskedEq, 0xff, 0x08)])
                    .build()
                    .unwrap(),
                // Never true (expected bits outside the mask): must not allow anything.
                rule(&["personality"], ScmpActAllow, None)
                    .args(vec![arg(0, ScmpCmpMaskedEq, 0x0f, 0x100)])
                    .build()
                    .unwrap(),
                rule(&["exit", "exit_group", "getpid"], ScmpActAllow, None)
                    .build()
                    .unwrap(),
            ],
        );
        p.set_default_errno_ret(Some(libc::ENOSYS as u32));
        let f = compile(&p).unwrap();
        assert_eq!(probe(&f, || personality(0xffff_ffff)), Outcome::Errno(0));
        assert_eq!(probe(&f, || personality(0x0100_0008)), Outcome::Errno(0));
        assert_eq!(
            probe(&f, || personality(0x100)),
            Outcome::Errno(libc::ENOSYS)
        );
        // Upper 32 bits count, as with libseccomp on 64-bit.
        assert_eq!(
            probe(&f, || personality(0x1_ffff_ffff)),
            Outcome::Errno(libc::ENOSYS)
        );
        assert_eq!(probe(&f, getcwd), Outcome::Errno(libc::ENOSYS));
    }

    #[test]
    fn same_argument_twice_is_or_like_runc() {
        use LinuxSeccompAction::*;
        use LinuxSeccompOperator::*;
        let p = profile(
            ScmpActAllow,
            vec![rule(&["personality"], ScmpActErrno, Some(7))
                .args(vec![arg(0, ScmpCmpEq, 0x10, 0), arg(0, ScmpCmpEq, 0x20, 0)])
                .build()
                .unwrap()],
        );
        let f = compile(&p).unwrap();
        assert_eq!(probe(&f, || personality(0x10)), Outcome::Errno(7));
        assert_eq!(probe(&f, || personality(0x20)), Outcome::Errno(7));
        assert_eq!(probe(&f, || personality(0xffff_ffff)), Outcome::Errno(0));
    }

    #[test]
    fn different_args_are_and() {
        use LinuxSeccompAction::*;
        use LinuxSeccompOperator::*;
        // kill(pid > 0 AND sig == 0) → ERRNO 9; other combinations reach the kernel.
        let p = profile(
            ScmpActAllow,
            vec![rule(&["kill"], ScmpActErrno, Some(9))
                .args(vec![arg(0, ScmpCmpGt, 0, 0), arg(1, ScmpCmpEq, 0, 0)])
                .build()
                .unwrap()],
        );
        let f = compile(&p).unwrap();
        let me = std::process::id() as libc::c_long;
        assert_eq!(
            probe(&f, || unsafe { libc::syscall(libc::SYS_kill, me, 0) }),
            Outcome::Errno(9)
        );
        // sig 9999 is invalid → the kernel's own EINVAL proves the call got through.
        assert_eq!(
            probe(&f, || unsafe { libc::syscall(libc::SYS_kill, me, 9999) }),
            Outcome::Errno(libc::EINVAL)
        );
    }

    #[test]
    fn precedence_between_rules() {
        use LinuxSeccompAction::*;
        let p = profile(
            ScmpActKillProcess,
            vec![
                rule(&["getcwd"], ScmpActErrno, Some(11)).build().unwrap(),
                rule(&["getcwd"], ScmpActErrno, Some(12)).build().unwrap(),
                rule(&["getcwd", "mkdir", "getpid"], ScmpActAllow, None)
                    .build()
                    .unwrap(),
                rule(&["mkdir"], ScmpActTrap, None).build().unwrap(),
                rule(&["exit", "exit_group", "prctl"], ScmpActAllow, None)
                    .build()
                    .unwrap(),
            ],
        );
        let f = compile(&p).unwrap();
        // Most severe matching action wins; equal actions: first rule in the profile wins.
        assert_eq!(probe(&f, getcwd), Outcome::Errno(11));
        assert_eq!(probe(&f, mkdir_bad), Outcome::Signal(libc::SIGSYS));
        assert_eq!(
            probe(&f, || unsafe { libc::syscall(libc::SYS_getpid) }),
            Outcome::Errno(0)
        );
        // Not listed → default action.
        assert_eq!(
            probe(&f, || unsafe { libc::syscall(libc::SYS_getppid) }),
            Outcome::Signal(libc::SIGSYS)
        );
    }

    #[test]
    fn every_supported_action() {
        use LinuxSeccompAction::*;
        let p = profile(
            ScmpActAllow,
            vec![
                rule(&["getcwd"], ScmpActLog, None).build().unwrap(),
                rule(&["getppid"], ScmpActTrace, None).build().unwrap(),
                rule(&["getuid"], ScmpActKill, None).build().unwrap(),
                rule(&["getgid"], ScmpActKillThread, None).build().unwrap(),
                rule(&["geteuid"], ScmpActKillProcess, None)
                    .build()
                    .unwrap(),
                rule(&["getegid"], ScmpActTrap, None).build().unwrap(),
            ],
        );
        let f = compile(&p).unwrap();
        let call = |nr: libc::c_long| move || unsafe { libc::syscall(nr) };
        // LOG lets the call through.
        assert_eq!(probe(&f, getcwd), Outcome::Errno(0));
        // TRACE without a tracer: the kernel answers ENOSYS.
        assert_eq!(
            probe(&f, call(libc::SYS_getppid)),
            Outcome::Errno(libc::ENOSYS)
        );
        for nr in [
            libc::SYS_getuid,
            libc::SYS_getgid,
            libc::SYS_geteuid,
            libc::SYS_getegid,
        ] {
            assert_eq!(
                probe(&f, call(nr)),
                Outcome::Signal(libc::SIGSYS),
                "syscall {nr}"
            );
        }
    }

    #[test]
    fn profile_denying_seccomp_itself() {
        use LinuxSeccompAction::*;
        use LinuxSeccompOperator::*;
        // Denying `seccomp` is fine when one program does it: that one is loaded last.
        let p = profile(
            ScmpActAllow,
            vec![
                rule(&["seccomp"], ScmpActErrno, Some(5)).build().unwrap(),
                rule(&["getcwd"], ScmpActErrno, Some(6)).build().unwrap(),
            ],
        );
        let f = compile(&p).unwrap();
        assert_eq!(f.program_count(), 2);
        assert_eq!(probe(&f, getcwd), Outcome::Errno(6));
        let seccomp = || unsafe { libc::syscall(libc::SYS_seccomp, 0, 0, 0) };
        assert_eq!(probe(&f, seccomp), Outcome::Errno(5));

        // Two programs that may deny it cannot all be loaded: refuse at compile time.
        let p = profile(
            ScmpActErrno,
            vec![rule(&["seccomp"], ScmpActErrno, Some(5))
                .args(vec![arg(0, ScmpCmpEq, 1, 0)])
                .build()
                .unwrap()],
        );
        let err = compile(&p).unwrap_err().to_string();
        assert!(err.contains("more than one action"), "{err}");
    }

    /// A raw i386 syscall through `int 0x80` (32-bit arguments), reported like
    /// `libc::syscall`: -1 with errno set on failure.
    #[cfg(target_arch = "x86_64")]
    fn int80(nr: u32, arg0: u32) -> libc::c_long {
        let ret: i32;
        // SAFETY: int 0x80 runs one i386 syscall; the ones the tests use only take
        // integers, and the kernel preserves every register but eax.
        unsafe {
            // rbx is reserved by LLVM: swap the argument in and out around the call.
            std::arch::asm!(
                "xchg {arg:r}, rbx",
                "int 0x80",
                "xchg {arg:r}, rbx",
                arg = inout(reg) u64::from(arg0) => _,
                inlateout("eax") nr as i32 => ret,
                options(nostack),
            );
            if ret < 0 {
                *libc::__errno_location() = -ret;
                return -1;
            }
        }
        libc::c_long::from(ret)
    }

    #[cfg(target_arch = "x86_64")]
    const I386_GETPID: u32 = 20;
    #[cfg(target_arch = "x86_64")]
    const I386_GETPPID: u32 = 64;
    #[cfg(target_arch = "x86_64")]
    const I386_PERSONALITY: u32 = 136;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_syscalls_use_their_own_numbers_when_listed() {
        use LinuxSeccompAction::*;
        let mut p = profile(
            ScmpActAllow,
            vec![rule(&["getpid"], ScmpActErrno, Some(13)).build().unwrap()],
        );
        // Not listed: any i386 syscall kills the process, as libseccomp's bad-arch action.
        let f = compile(&p).unwrap();
        assert_eq!(
            probe(&f, || int80(I386_GETPPID, 0)),
            Outcome::Signal(libc::SIGSYS)
        );

        p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
        let f = compile(&p).unwrap();
        let native = || unsafe { libc::syscall(libc::SYS_getpid) };
        assert_eq!(probe(&f, native), Outcome::Errno(13));
        assert_eq!(probe(&f, || int80(I386_GETPID, 0)), Outcome::Errno(13));
        // i386 getppid is 64, which is x86_64's semget: must not be confused.
        assert_eq!(probe(&f, || int80(I386_GETPPID, 0)), Outcome::Errno(0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn containers_common_profile_filters_i386() {
        let p = containers_profile(&["CAP_CHOWN"]);
        let f = compile(&p).unwrap();
        assert_eq!(probe(&f, || int80(I386_GETPID, 0)), Outcome::Errno(0));
        assert_eq!(
            probe(&f, || int80(I386_PERSONALITY, 0xffff_ffff)),
            Outcome::Errno(0)
        );
        assert_eq!(
            probe(&f, || int80(I386_PERSONALITY, 0x1234)),
            Outcome::Errno(libc::ENOSYS)
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_cannot_bypass_a_denylist() {
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(&["getpid"], LinuxSeccompAction::ScmpActErrno, None)
                .build()
                .unwrap()],
        );
        let f = compile(&p).unwrap();
        let native = || unsafe { libc::syscall(libc::SYS_getpid) };
        assert_eq!(probe(&f, native), Outcome::Errno(libc::EPERM));
        let x32 = || unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
        assert_eq!(probe(&f, x32), Outcome::Signal(libc::SIGSYS));
    }

    #[test]
    fn allow_all_still_installs_a_filter() {
        let p = profile(LinuxSeccompAction::ScmpActAllow, vec![]);
        let f = compile(&p).unwrap();
        assert!(!f.programs.is_empty());
        let mode = || {
            // PR_GET_SECCOMP returns 2 in filter mode.
            unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) as libc::c_long - 2 }
        };
        // -1 (rc - 2 < 0) would map to an errno; 0 means mode 2.
        assert_eq!(probe(&f, mode), Outcome::Errno(0));
    }

    #[test]
    fn rejects_bad_index_and_notify_misuse() {
        use LinuxSeccompAction::*;
        let p = profile(
            ScmpActAllow,
            vec![rule(&["getcwd"], ScmpActErrno, None)
                .args(vec![arg(6, LinuxSeccompOperator::ScmpCmpEq, 0, 0)])
                .build()
                .unwrap()],
        );
        let err = format!("{:#}", compile(&p).unwrap_err());
        assert!(err.contains("argument index 6"), "{err}");

        // Notify rules need an agent to go to.
        let p = profile(
            ScmpActAllow,
            vec![rule(&["getcwd"], ScmpActNotify, None).build().unwrap()],
        );
        let err = compile(&p).unwrap_err().to_string();
        assert!(err.contains("listenerPath"), "{err}");

        let mut p = profile(
            ScmpActAllow,
            vec![rule(&["sendmsg", "getcwd"], ScmpActNotify, None)
                .build()
                .unwrap()],
        );
        p.set_listener_path(Some("/run/x.sock".into()));
        let err = compile(&p).unwrap_err().to_string();
        assert!(err.contains("sendmsg"), "{err}");

        let mut p = profile(ScmpActNotify, vec![]);
        p.set_listener_path(Some("/run/x.sock".into()));
        let err = compile(&p).unwrap_err().to_string();
        assert_eq!(
            err,
            "seccomp: SCMP_ACT_NOTIFY cannot be used as default action"
        );

        // A listenerPath without notify rules is accepted (runc ignores it too).
        let mut p = profile(ScmpActAllow, vec![]);
        p.set_listener_path(Some("/run/x.sock".into()));
        assert!(!compile(&p).unwrap().has_listener());
    }

    /// Like `probe`, with a supervisor: the child sends the listener fd over a socketpair
    /// and the parent answers every notification with `answer` as errno. Returns the
    /// outcome and the syscall numbers (with their arch) the parent was asked about.
    fn probe_notified(
        filter: &CompiledSeccomp,
        answer: i32,
        probe: impl FnOnce() -> libc::c_long,
    ) -> (Outcome, Vec<(u32, i32)>) {
        let mut sv = [0; 2];
        // SAFETY: socketpair writes two fds into sv.
        let rc =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, sv.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: as in `probe`; the child only makes raw syscalls with stack buffers.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe {
                libc::close(sv[0]);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(201);
                }
                let fd = match filter.install() {
                    Ok(Some(fd)) => fd,
                    _ => libc::_exit(200),
                };
                if send_fd_raw(sv[1], fd.as_raw_fd()) < 0 {
                    libc::_exit(202);
                }
                libc::close(fd.as_raw_fd());
                std::mem::forget(fd);
                let rc = probe();
                let code = if rc < 0 { *libc::__errno_location() } else { 0 };
                libc::_exit(code);
            }
        }
        // SAFETY: our end of the pair, owned from here on.
        let ours = unsafe { OwnedFd::from_raw_fd(sv[0]) };
        unsafe { libc::close(sv[1]) };
        let listener = crate::console::recv_fd(ours.as_raw_fd()).expect("listener fd");
        let mut seen = Vec::new();
        loop {
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on the stack.
            let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            assert!(n > 0, "no notification and no exit within 10s");
            if pfd.revents & libc::POLLIN == 0 {
                break; // POLLHUP: the filtered process is gone
            }
            // SAFETY: seccomp_notif is plain data; the kernel fills it in.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            if unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut req,
                )
            } != 0
            {
                continue; // the call was interrupted meanwhile
            }
            seen.push((req.data.arch, req.data.nr));
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: -answer,
                flags: 0,
            };
            // SAFETY: the response struct lives on the stack for the call.
            unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    &mut resp,
                )
            };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let outcome = if libc::WIFSIGNALED(status) {
            Outcome::Signal(libc::WTERMSIG(status))
        } else {
            let code = libc::WEXITSTATUS(status);
            assert!(code < 200, "child could not install the filter ({code})");
            Outcome::Errno(code)
        };
        (outcome, seen)
    }

    /// sendmsg(SCM_RIGHTS) with stack buffers only (for the forked child).
    unsafe fn send_fd_raw(sock: RawFd, fd: RawFd) -> isize {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        #[repr(C)]
        struct Cmsg {
            hdr: libc::cmsghdr,
            fd: RawFd,
            _pad: u32,
        }
        let mut cmsg: Cmsg = std::mem::zeroed();
        cmsg.hdr.cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        cmsg.hdr.cmsg_level = libc::SOL_SOCKET;
        cmsg.hdr.cmsg_type = libc::SCM_RIGHTS;
        cmsg.fd = fd;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = (&mut cmsg as *mut Cmsg).cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        libc::sendmsg(sock, &msg, 0)
    }

    #[test]
    fn notify_rules_reach_the_listener() {
        use LinuxSeccompAction::*;
        let mut p = profile(
            ScmpActAllow,
            vec![
                rule(&["getcwd"], ScmpActNotify, None).build().unwrap(),
                rule(&["getppid"], ScmpActErrno, Some(13)).build().unwrap(),
                // KILL outranks NOTIFY when both match.
                rule(&["getuid"], ScmpActNotify, None).build().unwrap(),
                rule(&["getuid"], ScmpActKillProcess, None).build().unwrap(),
            ],
        );
        p.set_listener_path(Some("/run/agent.sock".into()));
        let f = compile(&p).unwrap();
        assert!(f.has_listener());
        let (out, seen) = probe_notified(&f, 77, getcwd);
        assert_eq!(out, Outcome::Errno(77));
        assert_eq!(
            seen,
            vec![(audit_arch(Abi::Native), libc::SYS_getcwd as i32)]
        );
        let (out, seen) = probe_notified(&f, 77, || unsafe { libc::syscall(libc::SYS_getppid) });
        assert_eq!((out, seen), (Outcome::Errno(13), vec![]));
        let (out, seen) = probe_notified(&f, 77, || unsafe { libc::syscall(libc::SYS_getuid) });
        assert_eq!((out, seen), (Outcome::Signal(libc::SIGSYS), vec![]));
        let (out, seen) = probe_notified(&f, 77, || unsafe { libc::syscall(libc::SYS_getpid) });
        assert_eq!((out, seen), (Outcome::Errno(0), vec![]));
    }

    #[test]
    fn notify_with_a_denying_default_and_tsync() {
        use LinuxSeccompAction::*;
        // Only notify rules besides what the child needs, under ERRNO, with TSYNC (which
        // needs TSYNC_ESRCH next to NEW_LISTENER).
        let mut p = deny_by_default(ScmpActErrno, vec![native_arch()]);
        let mut rules = p.syscalls().clone().unwrap();
        rules.push(rule(&["mkdir"], ScmpActNotify, None).build().unwrap());
        rules.push(
            rule(&["close", "munmap", "sendmsg"], ScmpActAllow, None)
                .build()
                .unwrap(),
        );
        p.set_syscalls(Some(rules));
        p.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagTsync]));
        p.set_listener_path(Some("/run/agent.sock".into()));
        let f = compile(&p).unwrap();
        let (out, seen) = probe_notified(&f, 5, mkdir_bad);
        assert_eq!(out, Outcome::Errno(5));
        assert_eq!(seen.len(), 1);
        let (out, seen) = probe_notified(&f, 5, getcwd);
        assert_eq!((out, seen), (Outcome::Errno(libc::EPERM), vec![]));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn notify_covers_i386_in_the_same_program() {
        use LinuxSeccompAction::*;
        let mut p = profile(
            ScmpActAllow,
            vec![
                rule(&["getpid"], ScmpActNotify, None).build().unwrap(),
                rule(&["getppid"], ScmpActErrno, Some(9)).build().unwrap(),
            ],
        );
        p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
        p.set_listener_path(Some("/run/agent.sock".into()));
        let f = compile(&p).unwrap();
        let (out, seen) = probe_notified(&f, 21, || int80(I386_GETPID, 0));
        assert_eq!(out, Outcome::Errno(21));
        assert_eq!(seen, vec![(audit_arch(Abi::I386), I386_GETPID as i32)]);
        let (out, seen) = probe_notified(&f, 21, || unsafe { libc::syscall(libc::SYS_getpid) });
        assert_eq!(out, Outcome::Errno(21));
        assert_eq!(
            seen,
            vec![(audit_arch(Abi::Native), libc::SYS_getpid as i32)]
        );
        // i386 getppid (64) is x86_64's semget: neither notified nor confused.
        let (out, seen) = probe_notified(&f, 21, || int80(I386_GETPPID, 0));
        assert_eq!((out, seen), (Outcome::Errno(9), vec![]));
    }

    #[test]
    fn flags_are_passed_to_the_kernel() {
        let supported = supported_flags();
        assert!(supported.contains(&LinuxSeccompFilterFlag::SeccompFilterFlagTsync));
        let mut p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(&["getcwd"], LinuxSeccompAction::ScmpActErrno, None)
                .build()
                .unwrap()],
        );
        p.set_flags(Some(supported));
        let f = compile(&p).unwrap();
        assert_eq!(probe(&f, getcwd), Outcome::Errno(libc::EPERM));
    }

    const CONTAINERS_PROFILE: &str = "/usr/share/containers/seccomp.json";

    fn containers_profile(caps: &[&str]) -> LinuxSeccomp {
        let json = std::fs::read_to_string(CONTAINERS_PROFILE)
            .expect("seccomp.json missing: install golang-github-containers-common");
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        docker::from_docker_profile(&json, &caps).unwrap()
    }

    #[test]
    fn containers_common_profile() {
        let p = containers_profile(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let n = p
            .syscalls()
            .as_ref()
            .map_or(0, |s| s.iter().map(|s| s.names().len()).sum());
        assert!(n > 350, "only {n} names");
        let f = compile(&p).unwrap();

        // Explicitly denied with errno 1.
        let vmsplice =
            || unsafe { libc::syscall(libc::SYS_vmsplice, -1, std::ptr::null::<u8>(), 0, 0) };
        assert_eq!(probe(&f, vmsplice), Outcome::Errno(libc::EPERM));
        // Needs CAP_SYS_ADMIN, which this cap set lacks.
        let setns = || unsafe { libc::syscall(libc::SYS_setns, -1, 0) };
        assert_eq!(probe(&f, setns), Outcome::Errno(libc::EPERM));
        // Not in the profile → defaultErrnoRet (ENOSYS).
        let add_key = || unsafe { libc::syscall(libc::SYS_add_key, 0, 0, 0, 0, 0) };
        assert_eq!(probe(&f, add_key), Outcome::Errno(libc::ENOSYS));
        // Allowed: the kernel's own answers come back.
        assert_eq!(probe(&f, getcwd), Outcome::Errno(0));
        assert_eq!(probe(&f, mkdir_bad), Outcome::Errno(libc::EFAULT));
        // personality: only the listed values pass.
        assert_eq!(probe(&f, || personality(0xffff_ffff)), Outcome::Errno(0));
        assert_eq!(
            probe(&f, || personality(0x1234)),
            Outcome::Errno(libc::ENOSYS)
        );
        // socket(AF_NETLINK, *, NETLINK_AUDIT) → EINVAL without CAP_AUDIT_WRITE.
        let audit =
            || unsafe { libc::syscall(libc::SYS_socket, libc::AF_NETLINK, libc::SOCK_RAW, 9) };
        assert_eq!(probe(&f, audit), Outcome::Errno(libc::EINVAL));
        let unix =
            || unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert_eq!(probe(&f, unix), Outcome::Errno(0));
    }

    #[test]
    fn containers_common_profile_with_sys_admin() {
        let p = containers_profile(&["CAP_SYS_ADMIN", "CAP_AUDIT_WRITE"]);
        let f = compile(&p).unwrap();
        // Now reaches the kernel: bad fd.
        let setns = || unsafe { libc::syscall(libc::SYS_setns, -1, 0) };
        assert_eq!(probe(&f, setns), Outcome::Errno(libc::EBADF));
    }
}
