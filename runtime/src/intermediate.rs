//! Starting a container process through a short-lived intermediate.
//!
//! Some namespace changes only apply to the children of the process that
//! makes them (joining a pid namespace, creating a time namespace), and
//! some cannot be undone (joining a user namespace: without host privileges
//! there is no way back). berth itself must stay where it is, so a forked
//! intermediate makes those changes, clones the real process, reports its
//! pid and exits. The process is then reparented: to the caller if it is a
//! child subreaper (`run`, foreground `exec`), else to the host's init.

use crate::cgroup_join;
use crate::sync::{self, Msg};
use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use std::io::{Read, Write};

/// Forks an intermediate that runs `enter`, then clones (with `flags`) a
/// process that runs `child_main` (which execs or exits: it must not
/// return). Returns that process's pid. The intermediate reports a failure
/// of `enter` or of the clone on `child_chan`, where the caller's
/// `parent_chan` reads it.
pub fn spawn(
    flags: CloneFlags,
    enter: impl FnOnce() -> Result<()>,
    child_main: impl FnOnce(),
    child_chan: &sync::Channel,
    parent_chan: &sync::Channel,
) -> Result<i32> {
    let (mut rd, mut wr) = std::io::pipe().context("pipe for intermediate")?;
    let parent = nix::unistd::getpid();
    // SAFETY: berth is single-threaded here; the child only clones and exits.
    match unsafe { nix::unistd::fork() }.context("fork intermediate")? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let res = die_with(parent)
                .and_then(|()| enter())
                .and_then(|()| cgroup_join::clone_placed(flags, None));
            match res {
                Ok(None) => {
                    // Never returns: it execs the container process or exits.
                    child_main();
                    // SAFETY: leave without running destructors of the parent's state.
                    unsafe { libc::_exit(127) }
                }
                Ok(Some(child)) => {
                    let _ = wr.write_all(&child.pid.to_le_bytes());
                    // SAFETY: leave without running destructors of the parent's state.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    let _ = child_chan.send(&Msg::Error(format!("{e:#}")));
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = [0u8; 4];
            let got = rd.read_exact(&mut buf);
            let _ = nix::sys::wait::waitpid(child, None);
            if got.is_err() {
                // The intermediate reported its error on the sync channel.
                match parent_chan.recv() {
                    Ok(Some(Msg::Error(e))) => bail!("{e}"),
                    _ => bail!("intermediate process failed to start the container process"),
                }
            }
            Ok(i32::from_le_bytes(buf))
        }
    }
}

/// Die with the berth process that forked us: a killed `create` or `exec`
/// must not leave an intermediate behind (it holds the caller's end of
/// the sync channel, so its child would wait for a message for ever).
fn die_with(parent: nix::unistd::Pid) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("set parent-death signal");
    }
    if nix::unistd::getppid() != parent {
        bail!("berth exited while starting the container process");
    }
    Ok(())
}
