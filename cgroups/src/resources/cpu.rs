//! cpu and cpuset: v1 cpu.shares/cfs_*/rt_*, v2 cpu.weight/cpu.max; cpuset.cpus/mems.

use std::path::Path;

use anyhow::{bail, Result};
use oci_spec::runtime::LinuxCpu;

use crate::fsutil::{self, write};
use crate::{Cgroup, Loc};

/// cpu.shares (v1, 2..262144) → cpu.weight (v2, 1..10000), as runc converts.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
}

pub(super) fn apply(cg: &Cgroup, c: &LinuxCpu) -> Result<()> {
    let needs_cpu = c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some();
    if needs_cpu {
        match cg.locate("cpu")? {
            Loc::V1(dir) => cpu_v1(&dir, c)?,
            Loc::V2(dir) => cpu_v2(&dir, c)?,
        }
    }
    if c.cpus().is_some() || c.mems().is_some() {
        let dir = match cg.locate("cpuset")? {
            Loc::V1(d) | Loc::V2(d) => d,
        };
        // Same file names in v1 and v2. Empty means "inherit": leave it.
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    Ok(())
}

/// Writes a (period, value) pair where the kernel validates the combination at each write:
/// if writing the period first fails, the other order is tried.
fn write_pair(period: (&Path, Option<String>), value: (&Path, Option<String>)) -> Result<()> {
    match (period, value) {
        ((pf, Some(p)), (vf, Some(v))) => {
            if write(pf, &p).is_err() {
                write(vf, &v)?;
                write(pf, &p)?;
            } else {
                write(vf, &v)?;
            }
        }
        ((pf, Some(p)), (_, None)) => write(pf, &p)?,
        ((_, None), (vf, Some(v))) => write(vf, &v)?,
        ((_, None), (_, None)) => {}
    }
    Ok(())
}

fn cpu_v1(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(s) = c.shares() {
        write(&dir.join("cpu.shares"), &s.to_string())?;
    }
    write_pair(
        (
            &dir.join("cpu.cfs_period_us"),
            c.period().filter(|p| *p != 0).map(|p| p.to_string()),
        ),
        (
            &dir.join("cpu.cfs_quota_us"),
            c.quota().filter(|q| *q != 0).map(|q| q.to_string()),
        ),
    )?;
    if let Some(b) = c.burst() {
        write(&dir.join("cpu.cfs_burst_us"), &b.to_string())?;
    }
    write_pair(
        (
            &dir.join("cpu.rt_period_us"),
            c.realtime_period()
                .filter(|p| *p != 0)
                .map(|p| p.to_string()),
        ),
        (
            &dir.join("cpu.rt_runtime_us"),
            c.realtime_runtime().map(|r| r.to_string()),
        ),
    )?;
    if let Some(i) = c.idle() {
        write(&dir.join("cpu.idle"), &i.to_string())?;
    }
    Ok(())
}

fn cpu_v2(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if c.realtime_runtime().is_some_and(|r| r != 0) || c.realtime_period().is_some_and(|p| p != 0) {
        bail!(
            "realtime cpu limits (realtimeRuntime/realtimePeriod) are not supported on cgroup v2"
        );
    }
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        write(&dir.join("cpu.weight"), &shares_to_weight(s).to_string())?;
    }
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    if quota.is_some() || period.is_some() {
        let max_file = dir.join("cpu.max");
        // cpu.max holds both numbers: keep the current quota when only the period changes.
        let quota_str = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => fsutil::read(&max_file)?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_string(),
        };
        let value = match period {
            Some(p) => format!("{quota_str} {p}"),
            None => quota_str,
        };
        write(&max_file, &value)?;
    }
    if let Some(b) = c.burst() {
        write(&dir.join("cpu.max.burst"), &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        write(&dir.join("cpu.idle"), &i.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_conversion_matches_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262144), 10000);
    }
}
