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
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    let below = format!("{dir}/");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == dir || p.starts_with(&below))
        .map(str::to_string)
        .collect()
}
