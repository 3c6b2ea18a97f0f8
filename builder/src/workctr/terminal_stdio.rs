//! The stdio of an interactive run in berth-buildd (RunInteractive): the
//! client's input written to the runtime's stdin, its output read back, and
//! with a terminal a pseudo-terminal whose slave is the runtime's stdin,
//! stdout, stderr and controlling terminal. berth's own foreground proxy
//! then carries it to the container's console (and resizes that on
//! SIGWINCH), exactly as when `berth run` is started from a shell.
use super::terminal::{self, Size};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the runtime's stdio comes from, and the daemon's ends of it.
pub struct Session {
    tty: bool,
    /// The pty master (tty only), shared with the resizer.
    master: Option<Arc<OwnedFd>>,
    /// The runtime's stdin, stdout, stderr until it is started.
    child: Option<[OwnedFd; 3]>,
    /// The daemon's end of stdin, until the writer takes it.
    stdin: Option<File>,
    /// The daemon's ends of the output, `true` for stderr.
    outputs: Vec<(bool, File)>,
}

/// Changes the terminal's size (the runtime gets SIGWINCH).
#[derive(Clone)]
pub struct Resizer(Arc<OwnedFd>);

impl Resizer {
    pub fn resize(&self, size: Size) {
        if size.0 > 0 && size.1 > 0 {
            let _ = terminal::set_size(self.0.as_fd(), size);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    // Close-on-exec: the daemon's other children must not hold them open.
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")
}

impl Session {
    /// Pipes, or with `tty` a pseudo-terminal of `size`.
    pub fn open(tty: bool, size: Option<Size>) -> Result<Session> {
        if tty {
            let (master, slave) = terminal::open_pty(size)?;
            let child = [slave.try_clone()?, slave.try_clone()?, slave];
            let stdin = File::from(master.try_clone()?);
            let output = File::from(master.try_clone()?);
            return Ok(Session {
                tty,
                master: Some(Arc::new(master)),
                child: Some(child),
                stdin: Some(stdin),
                outputs: vec![(false, output)],
            });
        }
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Session {
            tty,
            master: None,
            child: Some([in_r, out_w, err_w]),
            stdin: Some(File::from(in_w)),
            outputs: vec![(false, File::from(out_r)), (true, File::from(err_r))],
        })
    }

    pub fn tty(&self) -> bool {
        self.tty
    }

    pub fn resizer(&self) -> Option<Resizer> {
        self.master.clone().map(Resizer)
    }

    /// Writes what arrives on `input` to the runtime's stdin, in order,
    /// until `input` closes; then stdin ends: the pipe is closed, or a
    /// terminal gets its end-of-file character (closing the master would
    /// hang the terminal up instead).
    pub fn spawn_stdin(&mut self, mut input: tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let Some(mut w) = self.stdin.take() else {
            return;
        };
        let tty = self.tty;
        std::thread::spawn(move || {
            while let Some(data) = input.blocking_recv() {
                if w.write_all(&data).is_err() {
                    return; // the process is gone
                }
            }
            if tty {
                let eof = terminal::eof_char(w.as_fd());
                let _ = w.write_all(&[eof]);
            }
        });
    }

    /// Reads the output as it comes and hands each chunk to `sink` (`true`
    /// for stderr), until the runtime and everything holding its stdio is
    /// gone.
    pub fn spawn_output(
        &mut self,
        sink: impl Fn(bool, Vec<u8>) + Send + Clone + 'static,
    ) -> Readers {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let n = self.outputs.len();
        for (is_err, mut r) in self.outputs.drain(..) {
            let sink = sink.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                // A pty master reads EIO once no slave fd is left open.
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink(is_err, buf[..n].to_vec());
                }
                let _ = done.send(());
            });
        }
        Readers { done: done_rx, n }
    }

    /// Starts `cmd` (the runtime) on this stdio and waits for it: for
    /// [`super::run::RunIo::Custom`].
    pub fn start(&mut self, cmd: &mut Command) -> std::io::Result<ExitStatus> {
        let [i, o, e] = self
            .child
            .take()
            .ok_or_else(|| std::io::Error::other("the run's stdio was already used"))?;
        cmd.stdin(i).stdout(o).stderr(e);
        if self.tty {
            terminal::controlling_terminal_on_stdin(cmd);
        }
        let child = cmd.spawn();
        // `cmd` keeps its stdio until dropped: drop our copies now, so the
        // output ends when the runtime exits, not when `cmd` goes away.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        child?.wait()
    }
}

/// The output readers of a [`Session`].
pub struct Readers {
    done: std::sync::mpsc::Receiver<()>,
    n: usize,
}

impl Readers {
    /// Waits until all output is read, at most `timeout` (a process that
    /// escaped with the terminal must not hold up the exit code).
    pub fn wait(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for _ in 0..self.n {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Chunks = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

    fn collect(s: &mut Session) -> (Chunks, Readers) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let readers = s.spawn_output(move |e, d| g.lock().unwrap().push((e, d)));
        (got, readers)
    }

    #[test]
    fn pipes_carry_stdin_to_stdout_and_stderr_apart() {
        let mut s = Session::open(false, None).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        s.spawn_stdin(rx);
        let (got, readers) = collect(&mut s);
        tx.blocking_send(b"abc".to_vec()).unwrap();
        drop(tx);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        let st = s.start(&mut cmd).unwrap();
        assert_eq!(st.code(), Some(3));
        readers.wait(Duration::from_secs(5));
        let got = got.lock().unwrap();
        let out: Vec<u8> = got
            .iter()
            .filter(|c| !c.0)
            .flat_map(|c| c.1.clone())
            .collect();
        let err: Vec<u8> = got
            .iter()
            .filter(|c| c.0)
            .flat_map(|c| c.1.clone())
            .collect();
        assert_eq!(out, b"abc");
        assert_eq!(err, b"err\n");
    }

    #[test]
    fn terminal_is_the_controlling_one_with_its_size() {
        let mut s = Session::open(true, Some((31, 97))).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        s.spawn_stdin(rx);
        let (got, readers) = collect(&mut s);
        // `read` gets the line typed, then the end-of-file character ends
        // the next read (canonical mode), as ^D would.
        tx.blocking_send(b"typed\n".to_vec()).unwrap();
        drop(tx);
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "read l; echo \"got $l\"; stty size; tty >/dev/null && test -t 0 && \
             cat </dev/tty; echo eof; exit 5",
        ]);
        let st = s.start(&mut cmd).unwrap();
        assert_eq!(st.code(), Some(5));
        readers.wait(Duration::from_secs(5));
        let text: Vec<u8> = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.1.clone())
            .collect();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("got typed"), "{text:?}");
        assert!(text.contains("31 97"), "{text:?}");
        assert!(text.contains("eof"), "{text:?}");
        assert!(
            got.lock().unwrap().iter().all(|c| !c.0),
            "a terminal has no stderr"
        );
    }
}
