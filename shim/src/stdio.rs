//! A task's stdio: containerd's fifos wired to the process, directly or through a pty.
//!
//! Without a terminal, stdout/stderr fifos are handed to the process as-is (no copy
//! threads, no shim memory); stdin goes through a pipe so CloseIO can deliver EOF.
//! With a terminal, berth sends the pty master over a console socket and two threads copy
//! between the master and the fifos.

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::berth::ChildStdio;

/// Fifo paths containerd gave for one process.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Shim-side ends of a running process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// pty master, kept for TIOCSWINSZ.
    console: Option<File>,
    /// Where stdin bytes go; None after CloseIO (dropping the pipe gives the process EOF).
    stdin_sink: Arc<Mutex<Option<File>>>,
    /// Signalled when the pty output copy finished, so exit is reported after all output.
    output_done: Option<Receiver<()>>,
}

/// A console socket waiting for berth to send the pty master.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Short path: bundle paths can exceed sun_path's 108 bytes.
        let path = std::env::temp_dir().join(format!(
            "berth-shim-{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the master berth sent. Called after create/exec returned, so the connection
    /// is already queued: never block.
    fn receive(&self) -> Result<File> {
        self.listener
            .set_nonblocking(true)
            .context("console socket nonblocking")?;
        let (conn, _) = self
            .listener
            .accept()
            .context("berth did not connect to the console socket")?;
        conn.set_nonblocking(false)
            .context("console connection blocking")?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("receive pty master")?;
        for c in msg.cmsgs().context("read control messages")? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us and nothing else owns it.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        bail!("console socket peer sent no file descriptor")
    }
}

/// Opens a fifo for writing without waiting for a reader: open O_RDWR (never blocks on
/// Linux), reopen write-only through /proc, drop the read-write fd so the reader still gets
/// EOF once every writer is gone.
fn open_fifo_writer(path: &str) -> Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("open fifo {path}"))?;
    let wo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", rw.as_raw_fd()))
        .with_context(|| format!("reopen fifo {path} write-only"))?;
    Ok(wo)
}

/// Opens where containerd wants output: a fifo (plain path) or, for `ctr run --log-uri
/// file:///...`, a file appended to (both fds of a task share it, so lines interleave).
fn open_output(uri: &str) -> Result<File> {
    if let Some(path) = uri.strip_prefix("file://") {
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        return OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("open log file {path}"));
    }
    if uri.starts_with("binary://") {
        bail!("binary:// log URIs are not supported by containerd-shim-berth-v2");
    }
    open_fifo_writer(uri)
}

fn output_stdio(uri: &str) -> Result<Stdio> {
    if uri.is_empty() {
        return Ok(Stdio::null());
    }
    Ok(Stdio::from(open_output(uri)?))
}

/// Copies the stdin fifo into the sink until EOF or CloseIO. Opening the fifo blocks until
/// the client opens its end, so this runs on its own thread.
fn spawn_stdin_copy(path: String, sink: Arc<Mutex<Option<File>>>) -> Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let Ok(mut fifo) = File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 4096];
            loop {
                let n = match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut guard = match sink.lock() {
                    Ok(g) => g,
                    Err(_) => break,
                };
                let written = guard.as_mut().map(|f| f.write_all(&buf[..n]).is_ok());
                if written != Some(true) {
                    break;
                }
            }
            if let Ok(mut guard) = sink.lock() {
                *guard = None;
            }
        })
        .context("spawn stdin copy thread")?;
    Ok(())
}

/// Stdio prepared before create/exec; `finish` completes the wiring once berth returned.
pub struct PendingIo {
    pub console: Option<ConsoleSocket>,
    paths: StdioPaths,
    io: ProcessIo,
}

/// Builds the stdio for berth plus the shim-side state for `paths`.
pub fn prepare(paths: &StdioPaths) -> Result<(ChildStdio, PendingIo)> {
    let mut pending = PendingIo {
        console: None,
        paths: paths.clone(),
        io: ProcessIo::default(),
    };
    if paths.terminal {
        pending.console = Some(ConsoleSocket::new()?);
        return Ok((ChildStdio::null(), pending));
    }
    let stdin = if paths.stdin.is_empty() {
        Stdio::null()
    } else {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("stdin pipe")?;
        *lock(&pending.io.stdin_sink) = Some(File::from(w));
        Stdio::from(File::from(r))
    };
    let stdout = output_stdio(&paths.stdout)?;
    let stderr = output_stdio(&paths.stderr)?;
    Ok((
        ChildStdio {
            stdin,
            stdout,
            stderr,
        },
        pending,
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PendingIo {
    /// Starts copying once the process exists (its stdio is in place).
    pub fn finish(mut self) -> Result<ProcessIo> {
        if let Some(sock) = self.console.take() {
            let master = sock.receive()?;
            if !self.paths.stdout.is_empty() {
                let out = open_output(&self.paths.stdout)?;
                let reader = master.try_clone().context("dup pty master")?;
                self.io.output_done = Some(spawn_output_copy(reader, out)?);
            }
            if !self.paths.stdin.is_empty() {
                *lock(&self.io.stdin_sink) = Some(master.try_clone().context("dup pty master")?);
            }
            self.io.console = Some(master);
        }
        if !self.paths.stdin.is_empty() {
            spawn_stdin_copy(self.paths.stdin.clone(), self.io.stdin_sink.clone())?;
        }
        Ok(self.io)
    }
}

fn spawn_output_copy(mut master: File, mut out: File) -> Result<Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pty-out".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 8192];
            // The master reads EIO once every slave fd is closed: that is the end of output.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = tx.send(());
        })
        .context("spawn pty copy thread")?;
    Ok(rx)
}

impl ProcessIo {
    /// ResizePty: TIOCSWINSZ on the master.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(console) = &self.console else {
            bail!("process has no terminal");
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(height).context("terminal height")?,
            ws_col: u16::try_from(width).context("terminal width")?,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that outlives the call.
        let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("TIOCSWINSZ");
        }
        Ok(())
    }

    /// CloseIO with stdin: the process sees EOF (pipe) or the copy stops (pty).
    pub fn close_stdin(&self) {
        *lock(&self.stdin_sink) = None;
    }

    /// Takes the "all output copied" signal for the exit path.
    pub fn take_output_done(&mut self) -> Option<Receiver<()>> {
        self.output_done.take()
    }

    /// Releases the pty after exit.
    pub fn close(&mut self) {
        self.console = None;
        self.close_stdin();
    }
}

/// Waits (bounded: a leftover process may hold the pty slave) for output to drain.
pub fn wait_output(done: Option<Receiver<()>>) {
    if let Some(rx) = done {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(name: &str) -> String {
        let p = std::env::temp_dir().join(format!("berth-shim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn fifo_writer_opens_without_reader_and_reader_sees_eof_after_drop() {
        let path = fifo("out");
        // No reader yet: must not block.
        let mut w = open_fifo_writer(&path).unwrap();
        let mut r = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        w.write_all(b"hello").unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn stdin_is_copied_and_close_io_delivers_eof() {
        let path = fifo("in");
        let paths = StdioPaths {
            stdin: path.clone(),
            ..Default::default()
        };
        let (child, pending) = prepare(&paths).unwrap();
        let io = pending.finish().unwrap();
        // What the process would read: the pipe behind its stdin.
        let cat = std::process::Command::new("cat")
            .stdin(child.stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut client = OpenOptions::new().write(true).open(&path).unwrap();
        client.write_all(b"typed\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        io.close_stdin();
        let out = cat.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"typed\n");
        drop(client);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn file_uris_append_and_binary_uris_are_refused() {
        let dir = std::env::temp_dir().join(format!("berth-shim-uri-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = dir.join("sub/task.log");
        let uri = format!("file://{}", log.display());
        open_output(&uri).unwrap().write_all(b"one\n").unwrap();
        open_output(&uri).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert!(open_output("binary:///usr/bin/logger").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resize_without_terminal_is_an_error() {
        assert!(ProcessIo::default().resize(80, 24).is_err());
    }
}
