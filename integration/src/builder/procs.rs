//! Processes and mounts a test looks for to prove nothing was left behind.

use std::path::Path;

/// Pids of processes whose command line (words joined by spaces) is
/// exactly `cmdline`.
pub fn processes_with(cmdline: &str) -> Vec<i32> {
    processes_matching(|words| words.join(" ") == cmdline)
}

/// Pids of processes whose command line (as words) passes `pred`.
pub fn processes_matching(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        if pred(&words) {
            out.push(pid);
        }
    }
    out
}

/// Mount points at or below `dir` (by whole path components), from this
/// process's mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    crate::harness::mount_points_under(dir).unwrap()
}
