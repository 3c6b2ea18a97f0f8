//! runc-compatible logging.
//!
//! containerd (go-runc) passes `--log FILE --log-format json` and, when a
//! command fails, reads the last line whose `level` is `error` and matches
//! substrings of its `msg`. So every line we write is a logrus-style record
//! (`{"level":"error","msg":"...","time":"..."}`), appended with O_APPEND so
//! concurrent berth processes sharing one log file never interleave a line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Configure the process-wide logger from the global CLI flags. The `--log`
/// file is created now, as runc does for every command, so a caller that reads
/// it after a quiet success finds an empty file rather than none.
pub fn init(file: Option<PathBuf>, format: LogFormat, debug: bool) {
    if let Some(path) = &file {
        if let Err(e) = OpenOptions::new().create(true).append(true).open(path) {
            eprintln!("berth: cannot open log {}: {e}", path.display());
        }
    }
    let _ = LOGGER.set(Logger {
        file,
        format,
        debug,
    });
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Render one log record in the configured format (no trailing newline).
pub fn render(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => serde_json::json!({
            "level": level.as_str(),
            "msg": msg,
            "time": time,
        })
        .to_string(),
        LogFormat::Text => format!(
            "time=\"{}\" level={} msg={}",
            time,
            level.as_str(),
            serde_json::Value::String(msg.to_string())
        ),
    }
}

/// Write a record to the `--log` file (if any). Errors always reach stderr
/// too, because callers that pass no `--log` (podman's `state`, a person at
/// a shell) only see stderr.
pub fn log(level: Level, msg: &str) {
    let Some(logger) = LOGGER.get() else {
        if level >= Level::Warn {
            eprintln!("berth: {msg}");
        }
        return;
    };
    if level == Level::Debug && !logger.debug {
        return;
    }
    let line = render(logger.format, level, msg, &timestamp());
    let mut wrote_to_stderr = false;
    match &logger.file {
        Some(path) => {
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = opened {
                eprintln!("berth: cannot write log {}: {e}", path.display());
            }
        }
        None => {
            if level >= Level::Warn || logger.debug {
                eprintln!("{line}");
                wrote_to_stderr = true;
            }
        }
    }
    if level == Level::Error && !wrote_to_stderr {
        eprintln!("berth: {msg}");
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg);
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_logrus_keys() {
        let line = render(
            LogFormat::Json,
            Level::Error,
            "container \"x\" does not exist",
            "T",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert_eq!(v["time"], "T");
    }

    #[test]
    fn text_line_quotes_message() {
        let line = render(LogFormat::Text, Level::Warn, "a \"b\"", "T");
        assert_eq!(line, r#"time="T" level=warning msg="a \"b\"""#);
    }
}
