//! Cgroup statistics in containerd's metrics types: `io.containerd.cgroups.v1.Metrics` on
//! v1 and hybrid hosts, `io.containerd.cgroups.v2.Metrics` on unified hosts (what
//! containerd-shim-runc-v2 reports, so `ctr task metrics` and CRI can decode them).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use berth_cgroups::{Cgroup, CgroupMode, MemoryEntry, Stats};
use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;

/// Type URLs containerd's typeurl registry knows the metrics by. Spelled out rather than
/// taken from the protobuf descriptors: building those descriptors costs each shim about
/// 200 KiB of heap for the lifetime of the process.
pub const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

/// Collects the cgroup's statistics packed the way containerd's typeurl expects.
pub fn collect(cg: &Cgroup) -> Result<Any> {
    let stats = cg.stats().context("read cgroup statistics")?;
    let oom_kills = cg.oom_kill_count().unwrap_or(0);
    if cg.mode() == CgroupMode::V2 {
        pack(V2_METRICS, &to_v2(&stats, oom_kills))
    } else {
        pack(V1_METRICS, &to_v1(&stats, oom_kills))
    }
}

fn pack<M: Message>(type_url: &str, m: &M) -> Result<Any> {
    Ok(Any {
        type_url: type_url.to_string(),
        value: m.write_to_bytes().context("encode metrics")?,
        ..Default::default()
    })
}

fn raw(map: &BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

fn v1_entry(e: &MemoryEntry) -> v1::MemoryEntry {
    v1::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
        ..Default::default()
    }
}

pub fn to_v1(s: &Stats, oom_kills: u64) -> v1::Metrics {
    let r = &s.memory.raw;
    let memory = v1::MemoryStat {
        cache: s.memory.cache,
        rss: raw(r, "rss"),
        rss_huge: raw(r, "rss_huge"),
        mapped_file: raw(r, "mapped_file"),
        dirty: raw(r, "dirty"),
        writeback: raw(r, "writeback"),
        pg_pg_in: raw(r, "pgpgin"),
        pg_pg_out: raw(r, "pgpgout"),
        pg_fault: raw(r, "pgfault"),
        pg_maj_fault: raw(r, "pgmajfault"),
        inactive_anon: raw(r, "inactive_anon"),
        active_anon: raw(r, "active_anon"),
        inactive_file: raw(r, "inactive_file"),
        active_file: raw(r, "active_file"),
        unevictable: raw(r, "unevictable"),
        hierarchical_memory_limit: raw(r, "hierarchical_memory_limit"),
        hierarchical_swap_limit: raw(r, "hierarchical_memsw_limit"),
        total_cache: raw(r, "total_cache"),
        total_rss: raw(r, "total_rss"),
        total_rss_huge: raw(r, "total_rss_huge"),
        total_mapped_file: raw(r, "total_mapped_file"),
        total_dirty: raw(r, "total_dirty"),
        total_writeback: raw(r, "total_writeback"),
        total_pg_pg_in: raw(r, "total_pgpgin"),
        total_pg_pg_out: raw(r, "total_pgpgout"),
        total_pg_fault: raw(r, "total_pgfault"),
        total_pg_maj_fault: raw(r, "total_pgmajfault"),
        total_inactive_anon: raw(r, "total_inactive_anon"),
        total_active_anon: raw(r, "total_active_anon"),
        total_inactive_file: raw(r, "total_inactive_file"),
        total_active_file: raw(r, "total_active_file"),
        total_unevictable: raw(r, "total_unevictable"),
        usage: Some(v1_entry(&s.memory.usage)).into(),
        swap: Some(v1_entry(&s.memory.swap)).into(),
        kernel: Some(v1_entry(&s.memory.kernel)).into(),
        kernel_tcp: Some(v1_entry(&s.memory.kernel_tcp)).into(),
        ..Default::default()
    };
    let cpu = v1::CPUStat {
        usage: Some(v1::CPUUsage {
            total: s.cpu.usage.total,
            kernel: s.cpu.usage.kernel,
            user: s.cpu.usage.user,
            per_cpu: s.cpu.usage.percpu.clone(),
            ..Default::default()
        })
        .into(),
        throttling: Some(v1::Throttle {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let blk = |entries: &[berth_cgroups::BlkioEntry]| -> Vec<v1::BlkIOEntry> {
        entries
            .iter()
            .map(|e| v1::BlkIOEntry {
                op: e.op.clone(),
                major: e.major,
                minor: e.minor,
                value: e.value,
                ..Default::default()
            })
            .collect()
    };
    let b = &s.blkio;
    let blkio = v1::BlkIOStat {
        io_service_bytes_recursive: blk(&b.io_service_bytes_recursive),
        io_serviced_recursive: blk(&b.io_serviced_recursive),
        io_queued_recursive: blk(&b.io_queued_recursive),
        io_service_time_recursive: blk(&b.io_service_time_recursive),
        io_wait_time_recursive: blk(&b.io_wait_time_recursive),
        io_merged_recursive: blk(&b.io_merged_recursive),
        io_time_recursive: blk(&b.io_time_recursive),
        sectors_recursive: blk(&b.sectors_recursive),
        ..Default::default()
    };
    v1::Metrics {
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(size, h)| v1::HugetlbStat {
                usage: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        pids: Some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(cpu).into(),
        memory: Some(memory).into(),
        blkio: Some(blkio).into(),
        memory_oom_control: Some(v1::MemoryOomControl {
            oom_kill: oom_kills,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

pub fn to_v2(s: &Stats, oom_kills: u64) -> v2::Metrics {
    let r = &s.memory.raw;
    let memory = v2::MemoryStat {
        anon: raw(r, "anon"),
        file: raw(r, "file"),
        kernel_stack: raw(r, "kernel_stack"),
        slab: raw(r, "slab"),
        sock: raw(r, "sock"),
        shmem: raw(r, "shmem"),
        file_mapped: raw(r, "file_mapped"),
        file_dirty: raw(r, "file_dirty"),
        file_writeback: raw(r, "file_writeback"),
        anon_thp: raw(r, "anon_thp"),
        inactive_anon: raw(r, "inactive_anon"),
        active_anon: raw(r, "active_anon"),
        inactive_file: raw(r, "inactive_file"),
        active_file: raw(r, "active_file"),
        unevictable: raw(r, "unevictable"),
        slab_reclaimable: raw(r, "slab_reclaimable"),
        slab_unreclaimable: raw(r, "slab_unreclaimable"),
        pgfault: raw(r, "pgfault"),
        pgmajfault: raw(r, "pgmajfault"),
        workingset_refault: raw(r, "workingset_refault"),
        workingset_activate: raw(r, "workingset_activate"),
        workingset_nodereclaim: raw(r, "workingset_nodereclaim"),
        pgrefill: raw(r, "pgrefill"),
        pgscan: raw(r, "pgscan"),
        pgsteal: raw(r, "pgsteal"),
        pgactivate: raw(r, "pgactivate"),
        pgdeactivate: raw(r, "pgdeactivate"),
        pglazyfree: raw(r, "pglazyfree"),
        pglazyfreed: raw(r, "pglazyfreed"),
        thp_fault_alloc: raw(r, "thp_fault_alloc"),
        thp_collapse_alloc: raw(r, "thp_collapse_alloc"),
        usage: s.memory.usage.usage,
        usage_limit: s.memory.usage.limit,
        max_usage: s.memory.usage.max,
        swap_usage: s.memory.swap.usage,
        swap_limit: s.memory.swap.limit,
        swap_max_usage: s.memory.swap.max,
        ..Default::default()
    };
    let cpu = v2::CPUStat {
        usage_usec: s.cpu.usage.total / 1000,
        user_usec: s.cpu.usage.user / 1000,
        system_usec: s.cpu.usage.kernel / 1000,
        nr_periods: s.cpu.throttling.periods,
        nr_throttled: s.cpu.throttling.throttled_periods,
        throttled_usec: s.cpu.throttling.throttled_time / 1000,
        ..Default::default()
    };
    // io.stat is one line per device; berth reports it as blkio-style (device, op) entries.
    let mut io: BTreeMap<(u64, u64), v2::IOEntry> = BTreeMap::new();
    for (entries, bytes) in [
        (&s.blkio.io_service_bytes_recursive, true),
        (&s.blkio.io_serviced_recursive, false),
    ] {
        for e in entries {
            let entry = io.entry((e.major, e.minor)).or_insert_with(|| v2::IOEntry {
                major: e.major,
                minor: e.minor,
                ..Default::default()
            });
            match (e.op.to_ascii_lowercase().as_str(), bytes) {
                ("read", true) => entry.rbytes = e.value,
                ("write", true) => entry.wbytes = e.value,
                ("read", false) => entry.rios = e.value,
                ("write", false) => entry.wios = e.value,
                _ => {}
            }
        }
    }
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(cpu).into(),
        memory: Some(memory).into(),
        io: Some(v2::IOStat {
            usage: io.into_values().collect(),
            ..Default::default()
        })
        .into(),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(size, h)| v2::HugeTlbStat {
                current: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        memory_events: Some(v2::MemoryEvents {
            oom_kill: oom_kills,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn v1_maps_raw_memory_keys_and_cpu() {
        let mut s = Stats::default();
        s.memory.raw.insert("rss".into(), 4096);
        s.memory.raw.insert("total_pgfault".into(), 7);
        s.memory.usage.usage = 1 << 20;
        s.cpu.usage.total = 5_000;
        s.pids.current = 3;
        let m = to_v1(&s, 2);
        assert_eq!(m.memory.rss, 4096);
        assert_eq!(m.memory.total_pg_fault, 7);
        assert_eq!(m.memory.usage.usage, 1 << 20);
        assert_eq!(m.cpu.usage.total, 5_000);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert_eq!(v1::Metrics::descriptor().full_name(), V1_METRICS);
    }

    #[test]
    fn v2_folds_blkio_entries_per_device() {
        let mut s = Stats::default();
        let e = |op: &str, value| berth_cgroups::BlkioEntry {
            major: 8,
            minor: 0,
            op: op.into(),
            value,
        };
        s.blkio.io_service_bytes_recursive = vec![e("Read", 10), e("Write", 20)];
        s.blkio.io_serviced_recursive = vec![e("Read", 1), e("Write", 2)];
        s.cpu.usage.total = 3_000_000;
        let m = to_v2(&s, 0);
        assert_eq!(m.io.usage.len(), 1);
        let d = &m.io.usage[0];
        assert_eq!((d.rbytes, d.wbytes, d.rios, d.wios), (10, 20, 1, 2));
        assert_eq!(m.cpu.usage_usec, 3_000);
        assert_eq!(v2::Metrics::descriptor().full_name(), V2_METRICS);
    }
}
