//! Terminal plumbing for interactive runs over gRPC: the client's raw mode
//! and window size, and the pseudo-terminal berth-buildd gives the runtime
//! (its controlling terminal, so the runtime's own foreground proxy sees the
//! size and gets SIGWINCH when the client resizes).
use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

/// A terminal size in character cells: (rows, cols).
pub type Size = (u16, u16);

/// The size of the terminal on `fd`, None if it is not one.
pub fn size(fd: BorrowedFd<'_>) -> Option<Size> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets the size of the terminal on `fd` (on a pty master: the kernel then
/// sends SIGWINCH to the foreground process group of the slave).
pub fn set_size(fd: BorrowedFd<'_>, (rows, cols): Size) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal pair (master, slave), both close-on-exec from the
/// start: the daemon runs other children concurrently, and a slave leaked
/// into one of them would keep the terminal open after the run.
pub fn open_pty(initial: Option<Size>) -> Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("opening a pseudo-terminal")?;
    nix::pty::grantpt(&master).context("grantpt")?;
    nix::pty::unlockpt(&master).context("unlockpt")?;
    // The slave by the master's fd, not by its /dev/pts path (TIOCGPTPEER,
    // Linux 4.13): nothing can swap the path in between.
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the pty slave");
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: into_raw_fd hands over the fd PtyMaster owned.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    if let Some(s) = initial.filter(|(r, c)| *r > 0 && *c > 0) {
        set_size(master.as_fd(), s).context("setting the terminal size")?;
    }
    Ok((master, slave))
}

/// The terminal's end-of-file character (VEOF, ^D unless changed).
pub fn eof_char(fd: BorrowedFd<'_>) -> u8 {
    termios::tcgetattr(fd)
        .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4)
}

/// Makes `cmd`'s stdin (a pty slave) its controlling terminal in a new
/// session, so the terminal's foreground process group is the child's and
/// a size change reaches it as SIGWINCH.
pub fn controlling_terminal_on_stdin(cmd: &mut Command) {
    // SAFETY: two async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The terminal settings to put back if the process panics (release builds
/// abort on panic, so no destructor would run).
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);

/// The local terminal in raw mode (bytes go to the remote process as typed,
/// ^C included) until dropped, or until a panic.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    pub fn enable(fd: BorrowedFd<'_>) -> Result<RawMode> {
        let saved = termios::tcgetattr(fd).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let raw_fd = fd.as_raw_fd();
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some((raw_fd, saved.clone()));
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).context("setting the terminal raw")?;
        Ok(RawMode { fd: raw_fd, saved })
    }
}

fn restore_saved() {
    if let Ok(mut s) = SAVED.try_lock() {
        if let Some((fd, t)) = s.take() {
            // SAFETY: the fd was valid while raw mode was on (stdin).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &t);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // SAFETY: RawMode is made from a live fd (stdin) that outlives it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_pair_carries_size_and_bytes() {
        use std::io::{Read, Write};
        let (master, slave) = open_pty(Some((33, 101))).unwrap();
        assert_eq!(size(slave.as_fd()), Some((33, 101)));
        set_size(master.as_fd(), (40, 120)).unwrap();
        assert_eq!(size(slave.as_fd()), Some((40, 120)));
        assert_eq!(eof_char(master.as_fd()), 4);
        let mut m = std::fs::File::from(master);
        let mut s = std::fs::File::from(slave);
        m.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        let fl = nix::fcntl::fcntl(m.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fl & libc::FD_CLOEXEC, 0, "master must be close-on-exec");
        let fl = nix::fcntl::fcntl(s.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fl & libc::FD_CLOEXEC, 0, "slave must be close-on-exec");
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let (_master, slave) = open_pty(None).unwrap();
        let before = termios::tcgetattr(slave.as_fd()).unwrap();
        {
            let _raw = RawMode::enable(slave.as_fd()).unwrap();
            let now = termios::tcgetattr(slave.as_fd()).unwrap();
            assert!(!now.local_flags.contains(termios::LocalFlags::ICANON));
        }
        let after = termios::tcgetattr(slave.as_fd()).unwrap();
        assert_eq!(before.local_flags, after.local_flags);
        assert_eq!(before.input_flags, after.input_flags);
    }
}
