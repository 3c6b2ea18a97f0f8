//! Terminals: the container side makes a pty inside the container's devpts
//! and hands the master to whoever listens on `--console-socket` (containerd,
//! conmon, or berth's own foreground `run`/`exec`) via SCM_RIGHTS.
//!
//! The slave side is only ever used through the descriptor the master gives
//! out (`TIOCGPTPEER`), never by its `/dev/pts/N` path: with a shared or
//! hostile /dev that path can be swapped for a symlink to a host procfs
//! file, which would then become the process's stdio or be bind-mounted at
//! /dev/console (CVE-2025-52565).
//!
//! As runc: the slave belongs to the process's uid (its gid stays the one
//! devpts gave it, `gid=5` in the usual config), and when the peer is
//! berth's own foreground `run`/`exec` the pty does no newline translation
//! (ONLCR off) while the caller's terminal keeps its output processing, so
//! the bytes a process writes reach a pipe unchanged and a terminal
//! translates them once.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path)
        .with_context(|| format!("connect to console socket {}", path.display()))
}

/// Send `fd` over the unix socket `sock`, with `name` as the payload.
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let iov = [IoSlice::new(name.as_bytes())];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None)
        .context("send pty master over console socket")?;
    Ok(())
}

/// Receive one fd sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .context("receive pty master")?;
    for c in msg.cmsgs().context("read control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    bail!("console socket peer sent no file descriptor")
}

pub struct Pty {
    pub master: OwnedFd,
    /// The slave, opened by the master (TIOCGPTPEER).
    pub slave: OwnedFd,
    /// The slave's name, for the console socket's peer only.
    pub slave_path: String,
}

/// Allocate a pty through the container's /dev/ptmx (call after pivot_root).
pub fn open_pty(size: Option<(u16, u16)>) -> Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx in the container")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let slave_path = ptsname_r(&master).context("ptsname")?;
    if let Some((rows, cols)) = size {
        set_size(master.as_raw_fd(), rows, cols)?;
    }
    let slave = open_peer(master.as_raw_fd())?;
    // SAFETY: PtyMaster owns a valid fd; we take ownership of it.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// TIOCGPTPEER: the master opens its own slave, so no path in the
/// container's /dev is involved; it also fails on anything but a pty master,
/// which proves /dev/ptmx gave us one.
fn open_peer(master: RawFd) -> Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("open the pty slave from its master (TIOCGPTPEER)");
    }
    // SAFETY: fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Who receives the pty master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A `--console-socket` listener (containerd, conmon, ...): it gets
    /// the terminal as the kernel sets it up.
    ConsoleSocket,
    /// berth's own foreground `run`/`exec`, which proxies the terminal to
    /// its caller's: newline translation is left to the caller's terminal.
    Foreground,
}

/// Allocate a pty sized per process.consoleSize, give the slave to the
/// process's user, send the master over the console socket `sock` (then
/// closed) and return the slave.
pub fn hand_over_pty(
    sock: RawFd,
    process: &oci_spec::runtime::Process,
    peer: Peer,
) -> Result<OwnedFd> {
    let size = process
        .console_size()
        .map(|b| (b.height() as u16, b.width() as u16));
    let pty = open_pty(size)?;
    if peer == Peer::Foreground {
        // Before the master leaves: the process cannot have written yet.
        clear_onlcr(pty.master.as_fd())?;
    }
    give_to_user(&pty.slave, process.user().uid())?;
    send_fd(sock, pty.master.as_raw_fd(), &pty.slave_path)?;
    drop(pty.master);
    let _ = nix::unistd::close(sock);
    Ok(pty.slave)
}

/// runc's ClearONLCR: no `\n` → `\r\n` on output. Termios requests on a
/// pty master act on its slave, whose settings the process sees.
fn clear_onlcr(master: BorrowedFd) -> Result<()> {
    use nix::sys::termios::{tcgetattr, tcsetattr, OutputFlags, SetArg};
    let mut t = tcgetattr(master).context("read pty settings")?;
    t.output_flags.remove(OutputFlags::ONLCR);
    tcsetattr(master, SetArg::TCSANOW, &t).context("clear ONLCR on the pty")
}

/// The process's terminal must be its own (runc's fixStdioPermissions):
/// only the uid changes, through the descriptor, never by path; the gid
/// devpts gave the slave stays.
fn give_to_user(slave: &OwnedFd, uid: u32) -> Result<()> {
    chown_uid(slave.as_fd(), uid).context("give the pty slave to the process's user")
}

/// runc's fixStdioPermissions for the rest of stdio, before the process
/// drops root: a pipe or socket it got from its caller becomes its user's,
/// so that it can reopen it (`/dev/stdout`, `/proc/self/fd/1`) once it is
/// that user. Unlike runc, only those anonymous kernel objects: a file,
/// directory, FIFO or device of the host given as stdio (`run -d > log`) is
/// not chowned, as that would hand a host file to the container's user.
pub fn give_stdio_to_user(uid: u32) -> Result<()> {
    use nix::sys::statfs::FsType;
    const PIPEFS_MAGIC: FsType = FsType(0x5049_5045);
    const SOCKFS_MAGIC: FsType = FsType(0x534F_434B);
    for fd in 0..3 {
        // SAFETY: stdio stays open for this function; only borrowed.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(fs) = nix::sys::statfs::fstatfs(fd) else {
            continue; // closed
        };
        let magic = fs.filesystem_type();
        if magic == PIPEFS_MAGIC || magic == SOCKFS_MAGIC {
            chown_uid(fd, uid).with_context(|| {
                format!("give stdio fd {} to the process's user", fd.as_raw_fd())
            })?;
        }
    }
    Ok(())
}

/// fchown to `uid`, the gid unchanged; nothing when it is `uid`'s already.
/// As runc, a uid or gid the user namespace does not map (EINVAL), an owner
/// it may not change (EPERM) or a read-only filesystem (EROFS) leave it as
/// it is.
fn chown_uid(fd: BorrowedFd, uid: u32) -> Result<()> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat")?;
    if st.st_uid == uid {
        return Ok(());
    }
    match nix::unistd::fchown(fd.as_raw_fd(), Some(nix::unistd::Uid::from_raw(uid)), None) {
        Ok(()) | Err(Errno::EINVAL | Errno::EPERM | Errno::EROFS) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("fchown to uid {uid}")),
    }
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error()).context("set terminal size");
    }
    Ok(())
}

pub fn get_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into the winsize struct we own.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Make the pty slave the process's stdio and controlling terminal.
/// The caller must already be a session leader (setsid).
pub fn attach_slave(slave: OwnedFd) -> Result<()> {
    for target in 0..3 {
        if slave.as_raw_fd() != target {
            nix::unistd::dup2(slave.as_raw_fd(), target).context("dup pty slave onto stdio")?;
        } else {
            // dup2 would have cleared close-on-exec; do it by hand.
            nix::fcntl::fcntl(
                target,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .context("keep pty slave open across exec")?;
        }
    }
    // SAFETY: TIOCSCTTY with arg 0 on our own session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("set controlling terminal");
    }
    if slave.as_raw_fd() <= 2 {
        // It is one of our stdio descriptors now: keep it open.
        let _ = slave.into_raw_fd();
    }
    Ok(())
}

/// Host side of a foreground terminal: raw mode on our stdin while the
/// container runs, restored on drop.
pub struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub fn enable() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, OutputFlags, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            // Output processing stays on, as in runc (containerd/console's
            // SetRaw): the container's pty does no translation (see
            // hand_over_pty), so this terminal does it, once.
            raw.output_flags.insert(OutputFlags::OPOST);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
