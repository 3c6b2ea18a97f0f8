//! Translation of OCI `linux.resources` into cgroup file writes, per hierarchy version.
//! Only fields that are present are written, so the same code serves create-time apply and
//! live `update`. Conversions between v1 and v2 units follow runc.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxRdma,
    LinuxResources, LinuxThrottleDevice,
};

use crate::fsutil::{self, write};
use crate::{devices, CgroupMode};
use crate::{Cgroup, Loc};

pub(crate) fn apply(cg: &Cgroup, res: &LinuxResources) -> Result<()> {
    if let Some(m) = res.memory() {
        memory(cg, m)?;
    }
    if let Some(c) = res.cpu() {
        cpu(cg, c)?;
    }
    if let Some(p) = res.pids() {
        pids(cg, p.limit())?;
    }
    if let Some(b) = res.block_io() {
        blkio(cg, b)?;
    }
    if let Some(h) = res.hugepage_limits() {
        hugetlb(cg, h)?;
    }
    if let Some(n) = res.network() {
        network(cg, n)?;
    }
    if let Some(d) = res.devices() {
        devices::apply(cg, d)?;
    }
    if let Some(r) = res.rdma() {
        rdma(cg, r)?;
    }
    if let Some(u) = res.unified() {
        unified(cg, u)?;
    }
    Ok(())
}

/// cpu.shares (v1, 2..262144) → cpu.weight (v2, 1..10000), as runc converts.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
}

/// blkio.weight (v1, 10..1000) → io.weight (v2, 1..10000), as runc converts.
pub(crate) fn blkio_weight_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10) * 9999) / 990
}

/// OCI memory.swap is memory+swap (v1 memsw); v2's memory.swap.max is swap alone.
/// Returns None when nothing must be written (runc's "0 means unset").
pub(crate) fn swap_to_v2(swap: i64, limit: Option<i64>) -> Result<Option<i64>> {
    let memory = limit.unwrap_or(0);
    if memory == -1 && swap == 0 {
        return Ok(Some(-1));
    }
    if swap == -1 {
        return Ok(Some(-1));
    }
    if swap == 0 {
        return Ok(None);
    }
    if memory == 0 || memory == -1 {
        bail!("unable to set swap limit without memory limit");
    }
    if memory < 0 {
        bail!("invalid memory value: {memory}");
    }
    if swap < memory {
        bail!("memory+swap limit ({swap}) should be >= memory limit ({memory})");
    }
    Ok(Some(swap - memory))
}

/// v2 spells "unlimited" as "max".
fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

fn memory_is_set(m: &LinuxMemory) -> bool {
    m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.kernel().is_some()
        || m.kernel_tcp().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some()
}

fn memory(cg: &Cgroup, m: &LinuxMemory) -> Result<()> {
    if !memory_is_set(m) {
        return Ok(());
    }
    match cg.locate("memory")? {
        Loc::V1(dir) => memory_v1(&dir, m),
        Loc::V2(dir) => memory_v2(&dir, m),
    }
}

fn memory_v1(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let swap_file = dir.join("memory.memsw.limit_in_bytes");
    let mut swap = m.swap();
    // Unlimited memory with swap unspecified means unlimited swap too (runc semantics).
    if m.limit() == Some(-1) && swap.is_none() && swap_file.exists() {
        swap = Some(-1);
    }
    if swap.is_some() && !swap_file.exists() {
        bail!(
            "memory swap limit requested but {} does not exist (swap accounting disabled)",
            swap_file.display()
        );
    }
    match (m.limit(), swap) {
        (Some(limit), Some(swap)) => {
            // The kernel requires memory <= memsw at every step: raise memsw first when
            // growing, lower memory first when shrinking.
            let cur = fsutil::read_u64(&limit_file)?;
            if swap == -1 || cur < swap as u64 {
                write(&swap_file, &swap.to_string())?;
                write(&limit_file, &limit.to_string())?;
            } else {
                write(&limit_file, &limit.to_string())?;
                write(&swap_file, &swap.to_string())?;
            }
        }
        (Some(limit), None) => write(&limit_file, &limit.to_string())?,
        (None, Some(swap)) => write(&swap_file, &swap.to_string())?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation() {
        write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
    }
    if let Some(k) = m.kernel() {
        // Kernel memory limits are deprecated; kernels >= 6.1 reject them with ENOTSUPP.
        // runc >= 1.1 ignores the setting altogether; we apply it where it still works.
        let f = dir.join("memory.kmem.limit_in_bytes");
        if f.exists() {
            match fsutil::write_raw(&f, &k.to_string()) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(524)) => {}
                Err(e) => bail!(
                    "write {:?} to {}: {}",
                    k.to_string(),
                    f.display(),
                    fsutil::describe(&e)
                ),
            }
        }
    }
    if let Some(k) = m.kernel_tcp() {
        write(&dir.join("memory.kmem.tcp.limit_in_bytes"), &k.to_string())?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            bail!("invalid memory swappiness {s}: must be between 0 and 100");
        }
        write(&dir.join("memory.swappiness"), &s.to_string())?;
    }
    if let Some(d) = m.disable_oom_killer() {
        write(&dir.join("memory.oom_control"), if d { "1" } else { "0" })?;
    }
    Ok(())
}

fn memory_v2(dir: &Path, m: &LinuxMemory) -> Result<()> {
    // swappiness, kernel, kernelTCP and disableOOMKiller have no v2 equivalent; runc ignores
    // them there too.
    let swap_file = dir.join("memory.swap.max");
    let swap = match m.swap() {
        Some(s) => swap_to_v2(s, m.limit())?,
        None if m.limit() == Some(-1) => Some(-1),
        None => None,
    };
    if let Some(swap) = swap {
        if swap_file.exists() {
            write(&swap_file, &v2_limit(swap))?;
        } else if swap != -1 {
            bail!(
                "memory swap limit requested but {} does not exist (swap accounting disabled)",
                swap_file.display()
            );
        }
    }
    if let Some(limit) = m.limit() {
        write(&dir.join("memory.max"), &v2_limit(limit))?;
    }
    if let Some(r) = m.reservation() {
        write(&dir.join("memory.low"), &v2_limit(r))?;
    }
    Ok(())
}

fn cpu(cg: &Cgroup, c: &LinuxCpu) -> Result<()> {
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

fn pids(cg: &Cgroup, limit: i64) -> Result<()> {
    // 0 means "not set" in runc; negative means unlimited.
    if limit == 0 {
        return Ok(());
    }
    let dir = match cg.locate("pids")? {
        Loc::V1(d) | Loc::V2(d) => d,
    };
    write(&dir.join("pids.max"), &v2_limit(limit))
}

fn throttle_lists(
    b: &LinuxBlockIo,
) -> [(
    &'static str,
    &'static str,
    &Option<Vec<LinuxThrottleDevice>>,
); 4] {
    [
        (
            "blkio.throttle.read_bps_device",
            "rbps",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            "wbps",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            "riops",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            "wiops",
            b.throttle_write_iops_device(),
        ),
    ]
}

fn blkio_is_set(b: &LinuxBlockIo) -> bool {
    b.weight().is_some()
        || b.leaf_weight().is_some()
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || throttle_lists(b)
            .iter()
            .any(|(_, _, l)| l.as_ref().is_some_and(|v| !v.is_empty()))
}

fn blkio(cg: &Cgroup, b: &LinuxBlockIo) -> Result<()> {
    if !blkio_is_set(b) {
        return Ok(());
    }
    match cg.locate("blkio") {
        Ok(Loc::V1(dir)) => blkio_v1(&dir, b),
        // "blkio" is v1's name; v2 calls the controller "io".
        _ => match cg.locate("io") {
            Ok(Loc::V2(dir)) => io_v2(&dir, b),
            Ok(Loc::V1(_)) | Err(_) => Err(cg.unavailable(if cg.mode() == CgroupMode::V1 {
                "blkio"
            } else {
                "io"
            })),
        },
    }
}

fn blkio_v1(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    // CFQ exposes blkio.weight; with BFQ the knob is blkio.bfq.weight.
    let (weight_file, weight_dev_file) = if dir.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight() {
        write(&dir.join(weight_file), &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight() {
        write(&dir.join("blkio.leaf_weight"), &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            write(
                &dir.join(weight_dev_file),
                &format!("{}:{} {}", d.major(), d.minor(), w),
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            write(
                &dir.join("blkio.leaf_weight_device"),
                &format!("{}:{} {}", d.major(), d.minor(), w),
            )?;
        }
    }
    for (file, _, list) in throttle_lists(b) {
        for d in list.iter().flatten() {
            write(
                &dir.join(file),
                &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

fn io_v2(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    // BFQ takes the v1 weight range unchanged; io.weight needs conversion (runc does the same).
    let bfq = dir.join("io.bfq.weight");
    let weight_line = |w: u16| -> (std::path::PathBuf, u64) {
        if bfq.exists() {
            (bfq.clone(), u64::from(w))
        } else {
            (dir.join("io.weight"), blkio_weight_to_io_weight(w))
        }
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        let (file, v) = weight_line(w);
        write(&file, &v.to_string())?;
    }
    // leafWeight has no v2 equivalent (runc ignores it too).
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight().filter(|w| *w != 0) {
            let (file, v) = weight_line(w);
            write(&file, &format!("{}:{} {}", d.major(), d.minor(), v))?;
        }
    }
    for (_, key, list) in throttle_lists(b) {
        for d in list.iter().flatten() {
            // A rate of 0 removes the limit, as in v1.
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            write(
                &dir.join("io.max"),
                &format!("{}:{} {}={}", d.major(), d.minor(), key, rate),
            )?;
        }
    }
    Ok(())
}

/// Huge page sizes the kernel supports, in cgroup file naming ("2MB", "1GB").
pub(crate) fn hugepage_sizes() -> Result<Vec<String>> {
    let dir = Path::new("/sys/kernel/mm/hugepages");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("read dir {}: {}", dir.display(), fsutil::describe(&e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(page_size_name(kb));
        }
    }
    out.sort();
    Ok(out)
}

fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

fn hugetlb(cg: &Cgroup, limits: &[LinuxHugepageLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let loc = cg.locate("hugetlb")?;
    let sizes = hugepage_sizes()?;
    for l in limits {
        let size = l.page_size();
        if !sizes.iter().any(|s| s == size) {
            bail!(
                "hugepage size {size:?} is not supported by the kernel (supported: {})",
                sizes.join(", ")
            );
        }
        let (dir, file, rsvd, value) = match &loc {
            Loc::V1(d) => (
                d,
                format!("hugetlb.{size}.limit_in_bytes"),
                format!("hugetlb.{size}.rsvd.limit_in_bytes"),
                l.limit().to_string(),
            ),
            Loc::V2(d) => (
                d,
                format!("hugetlb.{size}.max"),
                format!("hugetlb.{size}.rsvd.max"),
                v2_limit(l.limit()),
            ),
        };
        write(&dir.join(file), &value)?;
        // Reservations are charged separately on newer kernels; limit them the same way
        // (runc does too) so mmap-time reservation cannot bypass the limit.
        let rsvd = dir.join(rsvd);
        if rsvd.exists() {
            write(&rsvd, &value)?;
        }
    }
    Ok(())
}

fn network(cg: &Cgroup, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        let dir = match cg.locate("net_cls")? {
            Loc::V1(d) | Loc::V2(d) => d,
        };
        write(&dir.join("net_cls.classid"), &id.to_string())?;
    }
    let prios = n.priorities().as_deref().unwrap_or_default();
    if !prios.is_empty() {
        let dir = match cg.locate("net_prio")? {
            Loc::V1(d) | Loc::V2(d) => d,
        };
        for p in prios {
            write(
                &dir.join("net_prio.ifpriomap"),
                &format!("{} {}", p.name(), p.priority()),
            )?;
        }
    }
    Ok(())
}

/// rdma.max has the same line format in v1 and v2: "<device> hca_handle=N hca_object=M".
fn rdma(cg: &Cgroup, limits: &HashMap<String, LinuxRdma>) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let dir = match cg.locate("rdma")? {
        Loc::V1(d) | Loc::V2(d) => d,
    };
    let mut devices: Vec<&String> = limits.keys().collect();
    devices.sort();
    for dev in devices {
        let l = &limits[dev];
        let num = |v: Option<u32>| v.map_or("max".to_string(), |n| n.to_string());
        write(
            &dir.join("rdma.max"),
            &format!(
                "{dev} hca_handle={} hca_object={}",
                num(l.hca_handles()),
                num(l.hca_objects())
            ),
        )?;
    }
    Ok(())
}

/// `unified`: raw v2 file writes. Keys are file names in the container's v2 cgroup.
fn unified(cg: &Cgroup, u: &HashMap<String, String>) -> Result<()> {
    if u.is_empty() {
        return Ok(());
    }
    let Some(dir) = cg.unified_dir() else {
        bail!("linux.resources.unified requires cgroup v2, but this host uses cgroup v1 only");
    };
    let available = crate::v2_available(dir)?;
    let mut keys: Vec<&String> = u.keys().collect();
    keys.sort();
    for k in keys {
        if k.contains('/') || k.starts_with('.') || k.is_empty() {
            bail!("invalid unified resource key {k:?}");
        }
        let controller = k.split('.').next().unwrap_or_default();
        if controller != "cgroup" && !available.iter().any(|c| c == controller) {
            return Err(anyhow!(
                "unified resource {k:?}: cgroup controller {controller:?} is not available (v2 unified hierarchy at {})",
                cg.unified_mount_display()
            ));
        }
        write(&dir.join(k), &u[k])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262144), 10000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_to_v2(0, Some(-1)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(-1, Some(100)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(0, Some(100)).unwrap(), None);
        assert_eq!(swap_to_v2(300, Some(100)).unwrap(), Some(200));
        assert!(swap_to_v2(50, Some(100)).is_err());
        assert!(swap_to_v2(50, None).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1048576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }
}
