//! Client-side progress display: `plain` prints one line per event (CI logs);
//! `tty` shows live step lines with spinners (indicatif) and prints logs above.
use crate::progress::{plain_line, Event, EventKind, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Plain,
    Tty,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "plain" => Ok(Self::Plain),
            "tty" => Ok(Self::Tty),
            o => anyhow::bail!("unknown progress mode {o:?} (auto, plain or tty)"),
        }
    }
}

/// Makes the renderer for `mode` (auto = tty when stderr is a terminal).
pub fn renderer(mode: Mode) -> Box<dyn Progress> {
    let tty = match mode {
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Plain => false,
        Mode::Tty => true,
    };
    if tty {
        Box::new(Tty::new())
    } else {
        Box::new(Plain)
    }
}

pub struct Plain;

impl Progress for Plain {
    fn event(&self, e: Event) {
        if let Some(line) = plain_line(&e) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

pub struct Tty {
    multi: MultiProgress,
    bars: Mutex<HashMap<u32, ProgressBar>>,
}

impl Tty {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Tty {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Tty {
    fn event(&self, e: Event) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match e.kind {
            EventKind::Started => {
                let pb = self.multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.blue} {prefix:.bold} {msg} {elapsed:.dim}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_prefix(format!("[{} {}]", e.stage, e.step));
                pb.set_message(e.instruction.clone());
                pb.enable_steady_tick(Duration::from_millis(100));
                bars.insert(e.step, pb);
            }
            EventKind::Cached | EventKind::Completed => {
                if let Some(pb) = bars.remove(&e.step) {
                    let tail = match e.kind {
                        EventKind::Cached => " CACHED".to_string(),
                        _ if e.message.is_empty() => format!(" {:.2}s", e.seconds),
                        _ => format!(" {:.2}s ({})", e.seconds, e.message),
                    };
                    pb.set_style(
                        ProgressStyle::with_template("✔ {prefix:.bold} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.finish_with_message(format!("{}{tail}", pb.message()));
                }
            }
            EventKind::Log | EventKind::Info => {
                let _ = self
                    .multi
                    .println(format!("  [{} {}] {}", e.stage, e.step, e.message));
            }
            EventKind::Error => {
                for (_, pb) in bars.drain() {
                    pb.abandon();
                }
                let _ = self.multi.println(format!("ERROR: {}", e.message));
            }
            EventKind::Done => {
                let _ = self.multi.println(format!(
                    "writing image {} done ({:.2}s)",
                    e.image_digest, e.seconds
                ));
            }
        }
    }
}
