//! Small file helpers for cgroupfs whose errors name the file and the value,
//! e.g. `write "100" to /sys/fs/cgroup/memory/x/memory.limit_in_bytes: Device or resource busy`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// Human description of an io::Error without Rust's "(os error N)" suffix.
pub(crate) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Writes `value` to an existing cgroup file with a single write(2).
/// Never creates the file: a missing file means the kernel lacks the knob.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value)
        .map_err(|e| anyhow!("write {:?} to {}: {}", value, path.display(), describe(&e)))
}

pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("read {}: {}", path.display(), describe(&e)))
}

/// Reads a single-value file; "max" (v2 unlimited) maps to u64::MAX.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let s = read(path)?;
    parse_u64(s.trim()).with_context(|| format!("parse {}", path.display()))
}

pub(crate) fn parse_u64(s: &str) -> Result<u64> {
    if s == "max" {
        return Ok(u64::MAX);
    }
    s.parse::<u64>()
        .map_err(|e| anyhow!("invalid number {:?}: {}", s, e))
}

/// Parses "key value" lines (memory.stat, cpu.stat, memory.events, ...).
pub(crate) fn read_flat_keyed(path: &Path) -> Result<Vec<(String, u64)>> {
    let s = read(path)?;
    let mut out = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = parse_u64(v) {
                out.push((k.to_string(), v));
            }
        }
    }
    Ok(out)
}

/// Looks up one key of a flat-keyed file; Ok(None) if the key is absent.
pub(crate) fn read_keyed_value(path: &Path, key: &str) -> Result<Option<u64>> {
    Ok(read_flat_keyed(path)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}
