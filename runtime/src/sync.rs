//! Messages between berth (parent) and the container init it spawned, over
//! a SOCK_SEQPACKET socketpair: one datagram per message, so no framing, and
//! a closed peer reads as EOF (init died) instead of hanging.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
    /// init/exec'd process → parent: the seccomp listener fd is attached
    /// (SCM_RIGHTS); hand it to the agent at `listenerPath`.
    SeccompListener,
    /// parent → init/exec'd process: the agent has the listener.
    SeccompListenerDone,
    /// parent → init, after `Continue`: the source of bind mount number
    /// `mount` in the spec, opened by the parent (SCM_RIGHTS; see
    /// rootfs::sources).
    BindSource { mount: usize },
    /// parent → init: every bind source has been sent.
    BindSourcesSent,
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

    /// Send `msg` with `fd` attached (SCM_RIGHTS).
    pub fn send_with_fd(&self, msg: &Msg, fd: BorrowedFd) -> Result<()> {
        let data = serde_json::to_vec(msg)?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&data)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .context("send sync message with fd")?;
        Ok(())
    }

    /// Receive one message; `None` when the peer is gone.
    pub fn recv(&self) -> Result<Option<Msg>> {
        // A stray fd is closed here: only `recv_with_fd` callers expect one.
        Ok(self.recv_with_fd()?.map(|(msg, _)| msg))
    }

    /// Receive one message and the fd attached to it, if any (close-on-exec).
    pub fn recv_with_fd(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        // Sized to the datagram rather than to the largest possible one:
        // zeroing (and faulting in) 64 KiB per message cost more than the
        // extra peek.
        let Some(len) = self.next_len()? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len.max(1)];
        loop {
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let (n, fd) = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fd = None;
                    for c in m.cmsgs().context("read sync control message")? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: the kernel just installed this fd for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    (m.bytes, fd)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
                Err(e) => return Err(e).context("receive sync message"),
            };
            if n == 0 {
                return Ok(None);
            }
            let msg = serde_json::from_slice(&buf[..n]).context("decode sync message")?;
            return Ok(Some((msg, fd)));
        }
    }

    /// The length of the next datagram, waiting for it (`None`: the peer is
    /// gone). Peeks without room for control data, so no descriptor
    /// attached to it is installed here.
    fn next_len(&self) -> Result<Option<usize>> {
        loop {
            match recv(
                self.fd.as_raw_fd(),
                &mut [],
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Ok(n) => return Ok(Some(n)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
                Err(e) => return Err(e).context("receive sync message"),
            }
        }
    }

    /// Like `expect`, while answering `SeccompListener` messages on the way:
    /// `serve` gets each listener fd, and the peer a `SeccompListenerDone`.
    pub fn expect_serving(
        &self,
        want: Msg,
        mut serve: impl FnMut(OwnedFd) -> Result<()>,
    ) -> Result<()> {
        loop {
            match self.recv_with_fd()? {
                Some((Msg::SeccompListener, Some(fd))) => {
                    serve(fd)?;
                    self.send(&Msg::SeccompListenerDone)?;
                }
                Some((Msg::SeccompListener, None)) => {
                    bail!("seccomp listener message without a file descriptor")
                }
                Some((m, _)) if m == want => return Ok(()),
                Some((Msg::Error(e), _)) => bail!("{e}"),
                Some((other, _)) => {
                    bail!("unexpected message from peer: {other:?} (wanted {want:?})")
                }
                None => bail!("container init exited unexpectedly (wanted {want:?})"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn expect_serving_hands_over_attached_fds() {
        let (a, b) = pair().unwrap();
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send_with_fd(&Msg::SeccompListener, x.as_fd()).unwrap();
        a.send(&Msg::Ready).unwrap();
        let mut served = Vec::new();
        b.expect_serving(Msg::Ready, |fd| {
            served.push(fd);
            Ok(())
        })
        .unwrap();
        assert_eq!(served.len(), 1);
        // The peer was told the listener is with the agent.
        assert_eq!(a.recv().unwrap(), Some(Msg::SeccompListenerDone));

        // A listener message without its fd is an error, as is the peer's own error.
        a.send(&Msg::SeccompListener).unwrap();
        let err = b.expect_serving(Msg::Ready, |_| Ok(())).unwrap_err();
        assert!(
            err.to_string().contains("without a file descriptor"),
            "{err}"
        );
        a.send(&Msg::Error("boom".into())).unwrap();
        let err = b.expect_serving(Msg::Ready, |_| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn messages_of_any_size_arrive_whole_with_their_fd() {
        let (a, b) = pair().unwrap();
        let long = "x".repeat(100 * 1024);
        a.send(&Msg::Error(long.clone())).unwrap();
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send_with_fd(&Msg::BindSource { mount: 7 }, x.as_fd())
            .unwrap();
        assert_eq!(b.recv().unwrap(), Some(Msg::Error(long)));
        let (msg, fd) = b.recv_with_fd().unwrap().unwrap();
        assert_eq!(msg, Msg::BindSource { mount: 7 });
        assert!(fd.is_some(), "the attached fd arrived once, after the peek");
        drop(a);
        assert_eq!(b.recv_with_fd().unwrap().map(|(m, _)| m), None);
    }
}
