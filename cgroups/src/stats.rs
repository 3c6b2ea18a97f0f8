//! Resource usage in the JSON shape of runc's `events --stats` "data" object
//! (runc types/events.go as of 1.1): field names and omitempty rules match so that
//! containerd and other consumers decode it unchanged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, read_flat_keyed, read_keyed_value, read_u64};
use crate::{Cgroup, Loc};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub cpuset: CpusetStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    pub hugetlb: BTreeMap<String, HugetlbStats>,
    pub intel_rdt: IntelRdtStats,
    /// Filled by the runtime from the container's network namespace, not by cgroups.
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    #[serde(default)]
    pub usage: CpuUsage,
    #[serde(default)]
    pub throttling: Throttling,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    #[serde(default)]
    pub kernel: u64,
    #[serde(default)]
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// runc reports cpuset configuration flags; we only fill the cpu/mem lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpusetStats {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    #[serde(default)]
    pub cpu_exclusive: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    #[serde(default)]
    pub mem_hardwall: u64,
    #[serde(default)]
    pub mem_exclusive: u64,
    #[serde(default)]
    pub memory_migrate: u64,
    #[serde(default)]
    pub memory_spread_page: u64,
    #[serde(default)]
    pub memory_spread_slab: u64,
    #[serde(default)]
    pub memory_pressure: u64,
    #[serde(default)]
    pub sched_load_balance: u64,
    #[serde(default)]
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    #[serde(default)]
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    #[serde(default)]
    pub usage: MemoryEntry,
    #[serde(default)]
    pub swap: MemoryEntry,
    #[serde(default)]
    pub kernel: MemoryEntry,
    #[serde(default, rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PidsStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited, as in runc.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioStats {
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioQueueRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioServiceTimeRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioWaitTimeRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioMergedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioTimeRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "sectorsRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HugetlbStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

/// Intel RDT is not managed by berth; kept so the JSON has runc's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntelRdtStats {}

/// Nanoseconds per USER_HZ tick (cpuacct.stat is in ticks).
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    1_000_000_000 / hz
}

pub(crate) fn collect(cg: &Cgroup) -> Result<Stats> {
    let mut s = Stats::default();
    // A controller missing on this host simply contributes no numbers, like runc.
    if let Ok(Loc::V1(dir)) = cg.locate("cpuacct") {
        cpuacct_v1(&dir, &mut s.cpu)?;
    }
    match cg.locate("cpu") {
        Ok(Loc::V1(dir)) => throttling_v1(&dir, &mut s.cpu)?,
        Ok(Loc::V2(dir)) => cpu_v2(&dir, &mut s.cpu)?,
        Err(_) => {
            // cpu.stat is a core v2 file (usage without the cpu controller enabled).
            if let (Some(dir), None) = (cg.unified_dir(), cg.v1_dir("cpuacct")) {
                if dir.join("cpu.stat").exists() {
                    cpu_v2(dir, &mut s.cpu)?;
                }
            }
        }
    }
    if let Ok(loc) = cg.locate("cpuset") {
        let dir = match &loc {
            Loc::V1(d) | Loc::V2(d) => d,
        };
        cpuset(dir, &loc, &mut s.cpuset);
    }
    match cg.locate("memory") {
        Ok(Loc::V1(dir)) => memory_v1(&dir, &mut s.memory)?,
        Ok(Loc::V2(dir)) => memory_v2(&dir, &mut s.memory)?,
        Err(_) => {}
    }
    if let Ok(loc) = cg.locate("pids") {
        let dir = match &loc {
            Loc::V1(d) | Loc::V2(d) => d,
        };
        s.pids.current = read_u64(&dir.join("pids.current"))?;
        let max = read_u64(&dir.join("pids.max"))?;
        s.pids.limit = if max == u64::MAX { 0 } else { max };
    }
    match cg.locate("blkio") {
        Ok(Loc::V1(dir)) => blkio_v1(&dir, &mut s.blkio)?,
        _ => {
            if let Ok(Loc::V2(dir)) = cg.locate("io") {
                io_v2(&dir, &mut s.blkio)?;
            }
        }
    }
    if let Ok(loc) = cg.locate("hugetlb") {
        for size in crate::resources::hugepage_sizes()? {
            let h = match &loc {
                Loc::V1(d) => HugetlbStats {
                    usage: read_u64(&d.join(format!("hugetlb.{size}.usage_in_bytes")))?,
                    max: read_u64(&d.join(format!("hugetlb.{size}.max_usage_in_bytes")))?,
                    failcnt: read_u64(&d.join(format!("hugetlb.{size}.failcnt")))?,
                },
                Loc::V2(d) => HugetlbStats {
                    usage: read_u64(&d.join(format!("hugetlb.{size}.current")))?,
                    max: 0,
                    failcnt: read_keyed_value(&d.join(format!("hugetlb.{size}.events")), "max")?
                        .unwrap_or(0),
                },
            };
            s.hugetlb.insert(size, h);
        }
    }
    Ok(s)
}

fn read_u64_list(path: &Path) -> Result<Vec<u64>> {
    fsutil::read(path)?
        .split_whitespace()
        .map(fsutil::parse_u64)
        .collect()
}

fn cpuacct_v1(dir: &Path, cpu: &mut CpuStats) -> Result<()> {
    cpu.usage.total = read_u64(&dir.join("cpuacct.usage"))?;
    cpu.usage.percpu = read_u64_list(&dir.join("cpuacct.usage_percpu"))?;
    // Absent on old kernels.
    if dir.join("cpuacct.usage_percpu_sys").exists() {
        cpu.usage.percpu_kernel = read_u64_list(&dir.join("cpuacct.usage_percpu_sys"))?;
        cpu.usage.percpu_user = read_u64_list(&dir.join("cpuacct.usage_percpu_user"))?;
    }
    let tick = ns_per_tick();
    for (k, v) in read_flat_keyed(&dir.join("cpuacct.stat"))? {
        match k.as_str() {
            "user" => cpu.usage.user = v * tick,
            "system" => cpu.usage.kernel = v * tick,
            _ => {}
        }
    }
    Ok(())
}

fn throttling_v1(dir: &Path, cpu: &mut CpuStats) -> Result<()> {
    for (k, v) in read_flat_keyed(&dir.join("cpu.stat"))? {
        match k.as_str() {
            "nr_periods" => cpu.throttling.periods = v,
            "nr_throttled" => cpu.throttling.throttled_periods = v,
            "throttled_time" => cpu.throttling.throttled_time = v,
            _ => {}
        }
    }
    Ok(())
}

fn cpu_v2(dir: &Path, cpu: &mut CpuStats) -> Result<()> {
    for (k, v) in read_flat_keyed(&dir.join("cpu.stat"))? {
        match k.as_str() {
            "usage_usec" => cpu.usage.total = v * 1000,
            "user_usec" => cpu.usage.user = v * 1000,
            "system_usec" => cpu.usage.kernel = v * 1000,
            "nr_periods" => cpu.throttling.periods = v,
            "nr_throttled" => cpu.throttling.throttled_periods = v,
            "throttled_usec" => cpu.throttling.throttled_time = v * 1000,
            _ => {}
        }
    }
    Ok(())
}

/// Parses a cpuset list such as "0-3,7".
fn parse_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            out.extend(a..=b);
        }
    }
    out
}

fn cpuset(dir: &Path, loc: &Loc, out: &mut CpusetStats) {
    let (cpus, mems) = match loc {
        Loc::V1(_) => ("cpuset.cpus", "cpuset.mems"),
        Loc::V2(_) => ("cpuset.cpus.effective", "cpuset.mems.effective"),
    };
    out.cpus = parse_list(&fsutil::read(&dir.join(cpus)).unwrap_or_default());
    out.mems = parse_list(&fsutil::read(&dir.join(mems)).unwrap_or_default());
}

fn v1_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry> {
    let f = |name: &str| dir.join(format!("{prefix}.{name}"));
    if !f("usage_in_bytes").exists() {
        return Ok(MemoryEntry::default());
    }
    Ok(MemoryEntry {
        limit: read_u64(&f("limit_in_bytes"))?,
        usage: read_u64(&f("usage_in_bytes"))?,
        max: read_u64(&f("max_usage_in_bytes"))?,
        failcnt: read_u64(&f("failcnt"))?,
    })
}

fn memory_v1(dir: &Path, m: &mut MemoryStats) -> Result<()> {
    m.raw = read_flat_keyed(&dir.join("memory.stat"))?
        .into_iter()
        .collect();
    m.cache = m.raw.get("cache").copied().unwrap_or(0);
    m.usage = v1_entry(dir, "memory")?;
    m.swap = v1_entry(dir, "memory.memsw")?;
    m.kernel = v1_entry(dir, "memory.kmem")?;
    m.kernel_tcp = v1_entry(dir, "memory.kmem.tcp")?;
    Ok(())
}

fn memory_v2(dir: &Path, m: &mut MemoryStats) -> Result<()> {
    m.raw = read_flat_keyed(&dir.join("memory.stat"))?
        .into_iter()
        .collect();
    m.cache = m.raw.get("file").copied().unwrap_or(0);
    let usage = read_u64(&dir.join("memory.current"))?;
    let limit = read_u64(&dir.join("memory.max"))?;
    let events: HashMap<String, u64> = read_flat_keyed(&dir.join("memory.events"))?
        .into_iter()
        .collect();
    m.usage = MemoryEntry {
        limit,
        usage,
        max: if dir.join("memory.peak").exists() {
            read_u64(&dir.join("memory.peak"))?
        } else {
            0
        },
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // v1's memsw counts memory+swap; report the same sum so consumers see one meaning.
    if dir.join("memory.swap.current").exists() {
        let swap = read_u64(&dir.join("memory.swap.current"))?;
        let swap_max = read_u64(&dir.join("memory.swap.max"))?;
        m.swap = MemoryEntry {
            limit: swap_max.saturating_add(limit),
            usage: swap.saturating_add(usage),
            max: 0,
            failcnt: 0,
        };
    }
    Ok(())
}

/// Parses v1 blkio files: "MAJ:MIN Op value" lines ("Total x" lines are skipped).
fn blkio_entries(path: &Path) -> Result<Vec<BlkioEntry>> {
    let mut out = Vec::new();
    for line in fsutil::read(path)?.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some((maj, min)) = f.first().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (op, val) = match f.len() {
            3 => (f[1].to_string(), f[2]),
            2 => (String::new(), f[1]),
            _ => continue,
        };
        out.push(BlkioEntry {
            major: fsutil::parse_u64(maj)?,
            minor: fsutil::parse_u64(min)?,
            op,
            value: fsutil::parse_u64(val)?,
        });
    }
    Ok(out)
}

fn blkio_v1(dir: &Path, b: &mut BlkioStats) -> Result<()> {
    // Same preference as runc: CFQ files, then BFQ, then the throttle layer, which counts
    // I/O whatever the scheduler. A scheduler whose files only hold "Total 0" (it is not the
    // active one) is skipped.
    for prefix in ["blkio", "blkio.bfq", "blkio.throttle"] {
        let f = dir.join(format!("{prefix}.io_service_bytes_recursive"));
        if !f.exists() {
            continue;
        }
        let bytes = blkio_entries(&f)?;
        if bytes.is_empty() && prefix != "blkio.throttle" {
            continue;
        }
        b.io_service_bytes_recursive = bytes;
        b.io_serviced_recursive =
            blkio_entries(&dir.join(format!("{prefix}.io_serviced_recursive")))?;
        if prefix == "blkio" {
            let opt = |name: &str| -> Result<Vec<BlkioEntry>> {
                let p = dir.join(format!("blkio.{name}"));
                if p.exists() {
                    blkio_entries(&p)
                } else {
                    Ok(Vec::new())
                }
            };
            b.io_queued_recursive = opt("io_queued_recursive")?;
            b.io_service_time_recursive = opt("io_service_time_recursive")?;
            b.io_wait_time_recursive = opt("io_wait_time_recursive")?;
            b.io_merged_recursive = opt("io_merged_recursive")?;
            b.io_time_recursive = opt("time_recursive")?;
            b.sectors_recursive = opt("sectors_recursive")?;
        }
        break;
    }
    Ok(())
}

fn io_v2(dir: &Path, b: &mut BlkioStats) -> Result<()> {
    for line in fsutil::read(&dir.join("io.stat"))?.lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (major, minor) = (fsutil::parse_u64(maj)?, fsutil::parse_u64(min)?);
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = fsutil::parse_u64(v)?;
            let entry = |op: &str| BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            };
            match k {
                "rbytes" => b.io_service_bytes_recursive.push(entry("Read")),
                "wbytes" => b.io_service_bytes_recursive.push(entry("Write")),
                "rios" => b.io_serviced_recursive.push(entry("Read")),
                "wios" => b.io_serviced_recursive.push(entry("Write")),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_runc() {
        let mut s = Stats::default();
        s.memory.kernel_tcp.limit = 5;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 10,
        });
        s.cpu.throttling.throttled_periods = 2;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["memory"]["kernelTCP"]["limit"], 5);
        assert_eq!(v["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
        assert_eq!(v["cpu"]["throttling"]["throttledPeriods"], 2);
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert!(v["cpu"]["usage"].get("total").is_none());
        assert!(v["network_interfaces"].is_null());
        assert!(v["hugetlb"].is_object());
    }

    #[test]
    fn blkio_lines() {
        let dir = std::env::temp_dir().join(format!("berth-cg-blkio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x");
        std::fs::write(&f, "8:0 Read 4096\n8:0 Write 0\n8:16 1234\nTotal 4096\n").unwrap();
        let e = blkio_entries(&f);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = e.unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
        assert_eq!(e[2].op, "");
        assert_eq!(e[2].value, 1234);
    }

    #[test]
    fn cpuset_list() {
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert!(parse_list("").is_empty());
    }
}
