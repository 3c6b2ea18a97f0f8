//! Pull and push progress on the terminal: one indicatif bar per blob, as
//! docker and skopeo show them, or one line per finished blob with
//! `--progress plain` (CI logs).
use crate::registry::{TransferEvent, TransferKind, TransferProgress};
use crate::ui::Mode;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// The renderer for `mode` (auto = bars when stderr is a terminal).
pub fn renderer(mode: Mode) -> Box<dyn TransferProgress> {
    let tty = match mode {
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Plain => false,
        Mode::Tty => true,
    };
    if tty {
        Box::new(Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        })
    } else {
        Box::new(|e: TransferEvent| {
            if let Some(line) = e.plain_line() {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        })
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, id: &str, total: u64) -> ProgressBar {
        let mut bars = match self.bars.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        bars.entry(id.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template(
                    "{prefix:12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                b.set_style(style);
                b.set_prefix(id.to_string());
                b
            })
            .clone()
    }
}

impl TransferProgress for Bars {
    fn event(&self, e: TransferEvent) {
        match e.kind {
            TransferKind::Resolved | TransferKind::Info => {
                let _ = self.multi.println(&e.message);
            }
            TransferKind::Started => {
                self.bar(&e.id, e.total);
            }
            TransferKind::Progress => self.bar(&e.id, e.total).set_position(e.current),
            TransferKind::Done => {
                let b = self.bar(&e.id, e.total);
                b.set_position(e.total);
                b.finish_with_message("done");
            }
            TransferKind::Exists => self
                .bar(&e.id, e.total)
                .finish_with_message("already exists"),
            TransferKind::Mounted => self
                .bar(&e.id, e.total)
                .finish_with_message(format!("mounted {}", e.message)),
        }
    }
}
