//! Messages between berth (parent) and the container init it spawned, over
//! a SOCK_SEQPACKET socketpair: one datagram per message, so no framing, and
//! a closed peer reads as EOF (init died) instead of hanging.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// parent → init: cgroup joined and id maps written; carry on. Tells
    /// init its pid as the host sees it (hooks' state needs it).
    Continue { host_pid: i32 },
    /// init → parent: mounts done; run prestart + createRuntime hooks now.
    RunCreateRuntimeHooks,
    /// parent → init: createRuntime hooks succeeded.
    HooksDone,
    /// init → parent: fully set up, now blocked on exec.fifo (or, for
    /// exec/run, about to exec the process).
    Ready,
    /// parent → init: state.json is saved, the container exists. Until
    /// then init dies with its parent (see init::contain_at_birth); after
    /// it, init outlives `create` and waits for `start`.
    Created,
    /// init → parent: parent-death signal cleared; `create` may exit now
    /// without taking init with it.
    Detached,
    /// init → parent: setup failed; the text is the user-facing error.
    Error(String),
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair for init sync")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let data = serde_json::to_vec(msg)?;
        send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL).context("send sync message")?;
        Ok(())
    }

    /// True when the other end is closed (checked without waiting).
    pub fn peer_gone(&self) -> Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::empty())];
        loop {
            match poll(&mut fds, PollTimeout::ZERO) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll sync channel"),
                Ok(_) => break,
            }
        }
        Ok(fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)))
    }

    /// Receive one message; `None` when the peer is gone.
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map(Some)
                        .context("decode sync message")
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
                Err(e) => return Err(e).context("receive sync message"),
            }
        }
    }

    /// Receive and insist on `want`; an `Error` from the peer becomes ours.
    pub fn expect(&self, want: Msg) -> Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Msg::Error(e)) => bail!("{e}"),
            Some(other) => bail!("unexpected message from peer: {other:?} (wanted {want:?})"),
            None => bail!("container init exited unexpectedly (wanted {want:?})"),
        }
    }
}
