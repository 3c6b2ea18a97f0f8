//! Signals by number or name, real-time ones included: nix's `Signal` has
//! no SIGRTMIN+n, yet `podman stop` sends SIGRTMIN+3 to systemd containers
//! and containerd passes whatever number the image's StopSignal names.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::Signal;

/// A signal number from `9`, `KILL`, `SIGKILL`, `kill`, `RTMIN+3` or
/// `SIGRTMAX-1` (as runc accepts them). `0` is valid, as with kill(2) and
/// runc: it checks that the process exists without signalling it.
pub fn parse(s: &str) -> Result<i32> {
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if let Ok(n) = s.parse::<i32>() {
        if n < 0 || n > rtmax {
            bail!("invalid signal {s:?}");
        }
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str| -> Result<i32> {
        if rest.is_empty() {
            return Ok(0);
        }
        rest.parse::<i32>()
            .with_context(|| format!("unknown signal {s:?}"))
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        rtmin + offset(rest)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        rtmax + offset(rest)?
    } else {
        return format!("SIG{name}")
            .parse::<Signal>()
            .map(|sig| sig as i32)
            .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"));
    };
    if n < rtmin || n > rtmax {
        bail!("invalid signal {s:?}: real-time signals are {rtmin}..={rtmax}");
    }
    Ok(n)
}

/// kill(2) with a raw signal number.
pub fn send(pid: i32, sig: i32) -> nix::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    Errno::result(unsafe { libc::kill(pid, sig) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_real_time_signals() {
        assert_eq!(parse("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse("hup").unwrap(), libc::SIGHUP);
        assert_eq!(parse("SIGRTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
        assert_eq!(parse("rtmin").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse("RTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        assert_eq!(parse("37").unwrap(), 37);
        assert!(parse("NOPE").is_err());
        assert!(parse("999").is_err());
        assert_eq!(parse("0").unwrap(), 0);
        assert!(parse("-1").is_err());
        assert!(parse("RTMAX+1").is_err());
        assert!(parse("RTMIN+x").is_err());
    }
}
