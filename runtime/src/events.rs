//! `events`: resource usage and OOM notifications as JSON lines, shaped like runc's
//! types.Event (`{"type":"stats","id":ID,"data":{...}}`, `{"type":"oom","id":ID}`).
//!
//! `--stats` prints one stats event and exits. Otherwise a stats event is printed every
//! `--interval` and an oom event as soon as the kernel reports an OOM kill; the stream
//! ends (exit 0) when the container's init exits. The wait multiplexes the cgroup's OOM
//! watcher and a pidfd of init in one poll, so neither event is delayed by the other.

use crate::state::{self, ContainerState, Status};
use anyhow::{bail, Context, Result};
use berth_cgroups::{Cgroup, OomWatcher, Stats};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// runc's types.Event.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Stats>,
}

/// Without a pidfd we fall back to polling init's liveness this often.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

pub fn events(root: &Path, id: &str, interval: &str, stats_only: bool) -> Result<()> {
    let st = state::load(root, id)?;
    let interval = parse_go_duration(interval)
        .with_context(|| format!("invalid value {interval:?} for flag -interval"))?;
    if interval.is_zero() {
        bail!("duration interval must be greater than 0");
    }
    if state::status(root, &st) == Status::Stopped {
        bail!("container with id {id} is not running");
    }
    let cg = st
        .cgroup
        .as_ref()
        .with_context(|| format!("container {id} has no cgroup: no statistics available"))?;
    let mut out = std::io::stdout().lock();
    if stats_only {
        let stats = cg.stats().context("collect container stats")?;
        return emit(&mut out, "stats", id, Some(&stats));
    }
    stream(&mut out, &st, cg, interval)
}

fn stream(
    out: &mut impl Write,
    st: &ContainerState,
    cg: &Cgroup,
    interval: Duration,
) -> Result<()> {
    let id = st.id.as_str();
    // A cgroup without the memory controller (e.g. v2 with memory not delegated) has no
    // OOM notifications; stats still flow.
    let mut oom = match cg.oom_watcher() {
        Ok(w) => Some(w),
        Err(e) => {
            crate::logging::warn(&format!("no OOM notifications: {e:#}"));
            None
        }
    };
    let pidfd = pidfd_open(st.init_pid);
    // The pid may have been reused between load and pidfd_open: check it is still ours.
    if !state::init_alive(st) {
        return drain_oom(out, id, oom.as_mut());
    }
    let mut next_stats = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if now >= next_stats {
            // Like runc, a failed collection is logged and the stream goes on.
            match cg.stats() {
                Ok(s) => emit(out, "stats", id, Some(&s))?,
                Err(e) => crate::logging::error(&format!("{e:#}")),
            }
            next_stats += interval;
            if next_stats <= now {
                next_stats = now + interval;
            }
            continue;
        }
        let mut wait = next_stats - now;
        if pidfd.is_none() {
            wait = wait.min(LIVENESS_POLL);
        }
        let mut fds = Vec::with_capacity(2);
        if let Some(w) = &oom {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("poll container events: {}", e.desc()),
        }
        drop(fds);
        if let Some(w) = oom.as_mut() {
            if w.wait(Some(Duration::ZERO))? {
                emit(out, "oom", id, None)?;
            }
        }
        if !state::init_alive(st) {
            return drain_oom(out, id, oom.as_mut());
        }
    }
}

/// The kernel reports an OOM kill before the victim dies, so a kill that stopped the
/// container is already pending here: report it before ending the stream.
fn drain_oom(out: &mut impl Write, id: &str, oom: Option<&mut OomWatcher>) -> Result<()> {
    if let Some(w) = oom {
        if w.wait(Some(Duration::ZERO)).unwrap_or(false) {
            emit(out, "oom", id, None)?;
        }
    }
    Ok(())
}

fn emit(out: &mut impl Write, kind: &str, id: &str, data: Option<&Stats>) -> Result<()> {
    let line = serde_json::to_string(&Event { kind, id, data })?;
    writeln!(out, "{line}").context("write event")?;
    out.flush().context("write event")
}

/// A pidfd for `pid`, readable once the process exits. None if the kernel lacks pidfds.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Go's time.ParseDuration: a sequence of decimal numbers with units
/// (ns, us, µs, ms, s, m, h), e.g. "5s", "1.5m", "1h2m3s"; "0" alone is allowed.
pub fn parse_go_duration(s: &str) -> Result<Duration> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        bail!("negative duration {s:?}");
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        bail!("invalid duration {s:?}");
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .ok()
            .filter(|_| !num.is_empty() && num != ".")
            .with_context(|| format!("invalid duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => bail!("missing unit in duration {s:?}"),
            u => bail!("unknown unit {u:?} in duration {s:?}"),
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(parse_go_duration("5s").unwrap(), ms(5000));
        assert_eq!(parse_go_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_go_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_go_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_go_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "5x", "-1s", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_json_matches_runc() {
        let e = Event {
            kind: "oom",
            id: "c1",
            data: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"oom","id":"c1"}"#
        );
        let stats = Stats::default();
        let v: serde_json::Value = serde_json::to_value(Event {
            kind: "stats",
            id: "c1",
            data: Some(&stats),
        })
        .unwrap();
        assert_eq!(v["type"], "stats");
        for key in ["cpu", "memory", "pids", "blkio", "hugetlb", "intel_rdt"] {
            assert!(v["data"].get(key).is_some(), "data.{key} missing: {v}");
        }
    }
}
