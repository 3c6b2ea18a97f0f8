//! `berth run`: create + start, then (unless detached) supervise the
//! container process and delete the container when it exits.

use crate::cli::RunArgs;
use crate::create::{self, CreateOptions};
use crate::{console, foreground, lifecycle};
use anyhow::{Context, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::os::fd::AsRawFd;
use std::path::Path;

pub fn run(root: &Path, args: &RunArgs, rootless: bool) -> Result<i32> {
    if !args.no_subreaper {
        // Orphans in the container (and init, if an intermediate cloned it)
        // get reparented to us, so we can reap them.
        // SAFETY: plain prctl flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mask = if args.create.detach {
        None
    } else {
        Some(foreground::block_signals()?)
    };
    // A foreground terminal without a console socket: we are the socket's peer.
    let (ours, theirs) = if !args.create.detach && args.create.console_socket.is_none() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair for terminal")?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let created = create::create(&CreateOptions {
        root,
        args: &args.create,
        console_fd: theirs.as_ref().map(|s| s.as_raw_fd()),
        rootless,
    })?;
    drop(theirs);
    if let Err(e) = lifecycle::start_loaded(root, &created.state, Some(&created.spec)) {
        let _ = lifecycle::destroy_loaded(root, &created.state, Some(&created.spec));
        return Err(e);
    }
    crate::logging::debug("started");
    let Some(mask) = mask else {
        return Ok(0);
    };
    let terminal = if created
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
    {
        let sock = ours.context("terminal requested but no console socket pair")?;
        Some(foreground::proxy_terminal(console::recv_fd(
            sock.as_raw_fd(),
        )?)?)
    } else {
        None
    };
    let code = foreground::supervise(created.state.init_pid, &mask, terminal)?;
    crate::logging::debug(&format!("process exited with {code}"));
    if !args.keep {
        lifecycle::destroy_loaded(root, &created.state, Some(&created.spec))?;
    }
    Ok(code)
}
