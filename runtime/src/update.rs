//! `update`: change the resource limits of a live container, like `runc update`.
//!
//! Input is either a LinuxResources JSON document (`--resources FILE`, `-` = stdin;
//! containerd and podman use this) or runc's individual flags. As in runc, only the
//! fields runc's update understands are used (memory limit/reservation/swap, cpu
//! shares/quota/period/realtime/cpus/mems, blockIO weight, pids limit, unified), a zero
//! or empty value means "leave unchanged", and devices are never touched. berth also
//! accepts `hugepageLimits` (CRI sends them). Kernel memory is ignored with a warning.
//!
//! Every controller, file and hugepage size the request needs is checked before the first
//! write, so a request this host cannot satisfy fails with the reason and leaves the
//! container as it was.
//!
//! The limits in force are recorded in `<root>/<id>/resources.json` (the create-time
//! `linux.resources` merged with every later update), so successive updates merge and
//! callers can read what was applied; config.json stays the spec the container was
//! created from.

use crate::cli::UpdateArgs;
use crate::state::{self, Status};
use anyhow::{anyhow, bail, Context, Result};
use berth_cgroups::Cgroup;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxMemoryBuilder, LinuxPids,
    LinuxResources,
};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Limits in force after the last update (see the module docs).
pub const RESOURCES_FILE: &str = "resources.json";

pub fn update(root: &Path, args: &UpdateArgs) -> Result<()> {
    let st = state::load(root, &args.id)?;
    let requested = request(args)?;
    let delta = normalize(&requested)?;
    if args.l3_cache_schema.is_some() {
        bail!("Intel RDT/CAT: l3 cache schema is not enabled (berth does not manage Intel RDT)");
    }
    if args.mem_bw_schema.is_some() {
        bail!(
            "Intel RDT/MBA: memory bandwidth schema is not enabled (berth does not manage Intel RDT)"
        );
    }
    let dir = state::container_dir(root, &args.id);
    let _lock = state::lock(&dir)?;
    if state::status(root, &st) == Status::Stopped {
        bail!("container not running");
    }
    let cg = st
        .cgroup
        .as_ref()
        .with_context(|| format!("container {} has no cgroup to update", args.id))?;
    validate(cg, &delta)?;
    // Everything that can fail without side effects goes before the first cgroup write.
    let mut current = current_resources(root, &args.id)?;
    merge(&mut current, &delta)?;
    cg.update(&delta)
        .with_context(|| format!("update resources of container {}", args.id))?;
    save_resources(&dir, &current)
}

/// The raw request: the JSON document, or one built from the flags.
fn request(args: &UpdateArgs) -> Result<LinuxResources> {
    if let Some(src) = &args.resources {
        let data = if src == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("read resources from stdin")?;
            buf
        } else {
            std::fs::read(src).with_context(|| format!("open {src}"))?
        };
        let what = if src == "-" { "stdin" } else { src.as_str() };
        return serde_json::from_slice(&data)
            .with_context(|| format!("invalid resources JSON from {what}"));
    }
    from_flags(args)
}

fn from_flags(a: &UpdateArgs) -> Result<LinuxResources> {
    let mut res = LinuxResources::default();
    res.set_memory(Some(memory(MemoryFields {
        limit: opt(&a.memory, "memory", parse_memory)?,
        reservation: opt(&a.memory_reservation, "memory-reservation", parse_memory)?,
        swap: opt(&a.memory_swap, "memory-swap", parse_memory)?,
        kernel: opt(&a.kernel_memory, "kernel-memory", parse_memory)?,
        kernel_tcp: opt(&a.kernel_memory_tcp, "kernel-memory-tcp", parse_memory)?,
    })?));

    let mut cpu = LinuxCpu::default();
    cpu.set_shares(opt(&a.cpu_share, "cpu-share", parse_num)?);
    cpu.set_quota(opt(&a.cpu_quota, "cpu-quota", parse_num)?);
    cpu.set_period(opt(&a.cpu_period, "cpu-period", parse_num)?);
    cpu.set_realtime_runtime(opt(&a.cpu_rt_runtime, "cpu-rt-runtime", parse_num)?);
    cpu.set_realtime_period(opt(&a.cpu_rt_period, "cpu-rt-period", parse_num)?);
    cpu.set_cpus(a.cpuset_cpus.clone());
    cpu.set_mems(a.cpuset_mems.clone());
    res.set_cpu(Some(cpu));

    if let Some(w) = int_flag(&a.blkio_weight, "blkio-weight")? {
        let w = u16::try_from(w)
            .map_err(|_| anyhow!("invalid blkio weight {w}: must be between 10 and 1000"))?;
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        res.set_block_io(Some(b));
    }
    if let Some(limit) = int_flag(&a.pids_limit, "pids-limit")? {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        res.set_pids(Some(p));
    }
    Ok(res)
}

/// The LinuxMemory fields update deals with (oci-spec's LinuxMemory has no setters).
#[derive(Default)]
struct MemoryFields {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
    kernel: Option<i64>,
    kernel_tcp: Option<i64>,
}

fn memory(f: MemoryFields) -> Result<LinuxMemory> {
    let mut b = LinuxMemoryBuilder::default();
    if let Some(v) = f.limit {
        b = b.limit(v);
    }
    if let Some(v) = f.reservation {
        b = b.reservation(v);
    }
    if let Some(v) = f.swap {
        b = b.swap(v);
    }
    if let Some(v) = f.kernel {
        b = b.kernel(v);
    }
    if let Some(v) = f.kernel_tcp {
        b = b.kernel_tcp(v);
    }
    b.build().context("build memory resources")
}

fn opt<T>(v: &Option<String>, flag: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Option<T>> {
    v.as_deref()
        .map(|s| parse(s).map_err(|e| anyhow!("invalid value for {flag}: {e:#}")))
        .transpose()
}

/// A Go `cli.IntFlag` (pids-limit, blkio-weight), with urfave/cli's message.
fn int_flag(v: &Option<String>, flag: &str) -> Result<Option<i64>> {
    v.as_deref()
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| anyhow!("invalid value {s:?} for flag -{flag}: parse error"))
        })
        .transpose()
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(s.parse::<T>()?)
}

/// runc: "-1" means unlimited, anything else goes through go-units RAMInBytes.
fn parse_memory(s: &str) -> Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    ram_in_bytes(s)
}

/// go-units RAMInBytes: `<number>[ ][k|m|g|t|p][i][b]`, case-insensitive, powers of 1024,
/// fractional numbers allowed ("1.5g").
pub fn ram_in_bytes(s: &str) -> Result<i64> {
    let invalid = || anyhow!("invalid size: '{s}'");
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_len);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(invalid());
    }
    let value: f64 = num.parse().map_err(|_| invalid())?;
    let mut suffix = suffix
        .strip_prefix(' ')
        .unwrap_or(suffix)
        .to_ascii_lowercase();
    if suffix.ends_with('b') {
        suffix.pop();
    }
    if suffix.ends_with('i') {
        suffix.pop();
    }
    let mul: f64 = match suffix.as_str() {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(invalid()),
    };
    let bytes = value * mul;
    if bytes >= i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

/// Keeps only what runc's update applies, with zero/empty meaning "unchanged".
fn normalize(req: &LinuxResources) -> Result<LinuxResources> {
    let nz_i = |v: Option<i64>| v.filter(|v| *v != 0);
    let nz_u = |v: Option<u64>| v.filter(|v| *v != 0);
    let mut out = LinuxResources::default();
    if let Some(m) = req.memory() {
        if nz_i(m.kernel()).is_some() || nz_i(m.kernel_tcp()).is_some() {
            crate::logging::warn("Kernel memory settings are ignored and will be removed");
        }
        let mem = memory(MemoryFields {
            limit: nz_i(m.limit()),
            reservation: nz_i(m.reservation()),
            swap: nz_i(m.swap()),
            ..Default::default()
        })?;
        if mem != LinuxMemory::default() {
            out.set_memory(Some(mem));
        }
    }
    if let Some(c) = req.cpu() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(nz_u(c.shares()));
        cpu.set_quota(nz_i(c.quota()));
        cpu.set_period(nz_u(c.period()));
        cpu.set_realtime_runtime(nz_i(c.realtime_runtime()));
        cpu.set_realtime_period(nz_u(c.realtime_period()));
        cpu.set_cpus(c.cpus().clone().filter(|s| !s.is_empty()));
        cpu.set_mems(c.mems().clone().filter(|s| !s.is_empty()));
        if cpu != LinuxCpu::default() {
            out.set_cpu(Some(cpu));
        }
    }
    if let Some(w) = req.block_io().as_ref().and_then(|b| b.weight()) {
        if w != 0 {
            let mut b = LinuxBlockIo::default();
            b.set_weight(Some(w));
            out.set_block_io(Some(b));
        }
    }
    if let Some(p) = req.pids().filter(|p| p.limit() != 0) {
        out.set_pids(Some(p));
    }
    if let Some(h) = req.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
        out.set_hugepage_limits(Some(h.clone()));
    }
    if let Some(u) = req.unified().as_ref().filter(|u| !u.is_empty()) {
        out.set_unified(Some(u.clone()));
    }
    Ok(out)
}

/// Is `controller` usable for this cgroup (v1 hierarchy, or delegated in the v2 leaf)?
fn available(cg: &Cgroup, controller: &str) -> bool {
    cg.v1_dir(controller).is_some() || v2_controllers(cg).iter().any(|c| c == controller)
}

fn v2_controllers(cg: &Cgroup) -> Vec<String> {
    cg.unified_dir()
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn require(cg: &Cgroup, controller: &str, why: &str) -> Result<()> {
    if available(cg, controller) {
        return Ok(());
    }
    let v1 = if cg.mode() == berth_cgroups::CgroupMode::V2 {
        "cgroup v2 only host"
    } else {
        "not mounted as cgroup v1"
    };
    bail!(
        "cannot update {why}: cgroup controller {controller:?} is not available for this container \
         ({v1}; cgroup v2 controllers of {}: [{}])",
        cg.path(),
        v2_controllers(cg).join(" ")
    )
}

/// Values the kernel would reject with EINVAL, checked up front so that no earlier part
/// of the request is applied before a later one fails.
fn validate_values(d: &LinuxResources) -> Result<()> {
    if let Some(c) = d.cpu() {
        if let Some(q) = c.quota().filter(|q| *q > 0 && *q < 1000) {
            bail!("invalid cpu quota {q}: must be at least 1000 (usecs) or -1 for unlimited");
        }
        if let Some(p) = c.period().filter(|p| !(1000..=1_000_000).contains(p)) {
            bail!("invalid cpu period {p}: must be between 1000 and 1000000 (usecs)");
        }
    }
    if let Some(w) = d.block_io().as_ref().and_then(|b| b.weight()) {
        if !(10..=1000).contains(&w) {
            bail!("invalid blkio weight {w}: must be between 10 and 1000");
        }
    }
    if let Some(m) = d.memory() {
        for (name, v) in [
            ("memory", m.limit()),
            ("memory reservation", m.reservation()),
            ("memory+swap", m.swap()),
        ] {
            if let Some(v) = v.filter(|v| *v < -1) {
                bail!("invalid {name} limit {v}: must be positive or -1 for unlimited");
            }
        }
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                bail!("memory+swap limit ({swap}) should be >= memory limit ({limit})");
            }
        }
    }
    Ok(())
}

/// Checks everything the host must provide before anything is written.
fn validate(cg: &Cgroup, d: &LinuxResources) -> Result<()> {
    validate_values(d)?;
    if let Some(m) = d.memory() {
        require(cg, "memory", "memory limits")?;
        if m.swap().is_some() {
            let swap_file = match cg.v1_dir("memory") {
                Some(dir) => dir.join("memory.memsw.limit_in_bytes"),
                None => cg
                    .unified_dir()
                    .map(|d| d.join("memory.swap.max"))
                    .unwrap_or_default(),
            };
            if !swap_file.exists() {
                bail!(
                    "cannot update memory swap limit: {} does not exist (swap accounting disabled)",
                    swap_file.display()
                );
            }
        }
    }
    if let Some(c) = d.cpu() {
        let needs_cpu = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_runtime().is_some()
            || c.realtime_period().is_some();
        if needs_cpu {
            require(cg, "cpu", "cpu limits")?;
        }
        let realtime = c.realtime_runtime().is_some() || c.realtime_period().is_some();
        if realtime && cg.v1_dir("cpu").is_none() {
            bail!("cannot update realtime cpu limits: not supported on cgroup v2");
        }
        if c.cpus().is_some() || c.mems().is_some() {
            require(cg, "cpuset", "cpuset cpus/mems")?;
        }
    }
    if d.block_io().is_some() && !available(cg, "blkio") {
        require(cg, "io", "blkio weight")?;
    }
    if d.pids().is_some() {
        require(cg, "pids", "pids limit")?;
    }
    if let Some(limits) = d.hugepage_limits() {
        require(cg, "hugetlb", "hugepage limits")?;
        let sizes = hugepage_sizes()?;
        for l in limits {
            if !sizes.iter().any(|s| s == l.page_size()) {
                bail!(
                    "cannot update hugepage limit: page size {:?} is not supported by the kernel (supported: {})",
                    l.page_size(),
                    sizes.join(", ")
                );
            }
        }
    }
    if let Some(u) = d.unified() {
        validate_unified(cg, u)?;
    }
    Ok(())
}

fn validate_unified(cg: &Cgroup, u: &HashMap<String, String>) -> Result<()> {
    // runc's v1 manager, which it uses on hybrid hosts too, refuses `unified` outright.
    let dir = match (cg.mode(), cg.unified_dir()) {
        (berth_cgroups::CgroupMode::V2, Some(dir)) => dir,
        _ => bail!("invalid configuration: cannot use unified on cgroup v1"),
    };
    let controllers = v2_controllers(cg);
    let mut keys: Vec<&String> = u.keys().collect();
    keys.sort();
    for k in keys {
        if k.is_empty() || k.contains('/') || k.starts_with('.') {
            bail!("cannot update unified resource {k:?}: invalid file name");
        }
        let controller = k.split('.').next().unwrap_or_default();
        if controller != "cgroup" && !controllers.iter().any(|c| c == controller) {
            bail!(
                "cannot update unified resource {k:?}: cgroup v2 controller {controller:?} is not available in {} (available: [{}])",
                dir.display(),
                controllers.join(" ")
            );
        }
        if !dir.join(k).exists() {
            bail!(
                "cannot update unified resource {k:?}: no such file in {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Huge page sizes the kernel supports, named as in cgroup files ("2MB", "1GB").
fn hugepage_sizes() -> Result<Vec<String>> {
    let dir = Path::new("/sys/kernel/mm/hugepages");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(page_size_name(kb))
        })
        .collect();
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

/// The limits in force: the last update's record, else the spec's `linux.resources`
/// (without device rules, which update never changes).
fn current_resources(root: &Path, id: &str) -> Result<LinuxResources> {
    let path = state::container_dir(root, id).join(RESOURCES_FILE);
    match std::fs::read(&path) {
        Ok(data) => {
            return serde_json::from_slice(&data)
                .with_context(|| format!("parse {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let spec = state::load_spec(root, id)?;
    let mut res = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    res.set_devices(None);
    Ok(res)
}

/// Overlays the fields set in `delta` onto `cur`.
fn merge(cur: &mut LinuxResources, delta: &LinuxResources) -> Result<()> {
    if let Some(d) = delta.memory() {
        // Field-wise overlay through JSON: LinuxMemory has no setters, and this keeps
        // fields update never sets (swappiness, disableOOMKiller...).
        let mut m = serde_json::to_value(cur.memory().unwrap_or_default())?;
        if let (Some(m), serde_json::Value::Object(d)) =
            (m.as_object_mut(), serde_json::to_value(d)?)
        {
            m.extend(d);
        }
        cur.set_memory(Some(serde_json::from_value(m)?));
    }
    if let Some(d) = delta.cpu() {
        let c = cur.cpu_mut().get_or_insert_with(LinuxCpu::default);
        if d.shares().is_some() {
            c.set_shares(d.shares());
        }
        if d.quota().is_some() {
            c.set_quota(d.quota());
        }
        if d.period().is_some() {
            c.set_period(d.period());
        }
        if d.realtime_runtime().is_some() {
            c.set_realtime_runtime(d.realtime_runtime());
        }
        if d.realtime_period().is_some() {
            c.set_realtime_period(d.realtime_period());
        }
        if d.cpus().is_some() {
            c.set_cpus(d.cpus().clone());
        }
        if d.mems().is_some() {
            c.set_mems(d.mems().clone());
        }
    }
    if let Some(w) = delta.block_io().as_ref().and_then(|b| b.weight()) {
        cur.block_io_mut()
            .get_or_insert_with(LinuxBlockIo::default)
            .set_weight(Some(w));
    }
    if let Some(p) = delta.pids() {
        cur.set_pids(Some(*p));
    }
    if let Some(limits) = delta.hugepage_limits() {
        let all = cur.hugepage_limits_mut().get_or_insert_with(Vec::new);
        for l in limits {
            all.retain(|x: &LinuxHugepageLimit| x.page_size() != l.page_size());
            all.push(l.clone());
        }
    }
    if let Some(u) = delta.unified() {
        let all = cur.unified_mut().get_or_insert_with(HashMap::new);
        all.extend(u.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(())
}

fn save_resources(dir: &Path, res: &LinuxResources) -> Result<()> {
    let tmp = dir.join(format!(".{RESOURCES_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(res)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(RESOURCES_FILE))
        .with_context(|| format!("rename {} into place", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_like_go_units() {
        assert_eq!(ram_in_bytes("1024").unwrap(), 1024);
        assert_eq!(ram_in_bytes("100M").unwrap(), 100 << 20);
        assert_eq!(ram_in_bytes("100m").unwrap(), 100 << 20);
        assert_eq!(ram_in_bytes("32MB").unwrap(), 32 << 20);
        assert_eq!(ram_in_bytes("32MiB").unwrap(), 32 << 20);
        assert_eq!(ram_in_bytes("1.5g").unwrap(), 3 << 29);
        assert_eq!(ram_in_bytes("2 k").unwrap(), 2048);
        for bad in ["", "-2", "abc", "10x", "1..5m", "m", ".5m"] {
            assert!(ram_in_bytes(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_memory("-1").unwrap(), -1);
    }

    #[test]
    fn zero_means_unchanged() {
        let req: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":0,"reservation":0,"swap":0},
                "cpu":{"shares":0,"quota":20000,"period":0,"cpus":""},
                "blockIO":{"weight":0},"pids":{"limit":0},
                "devices":[{"allow":true,"access":"rwm"}]}"#,
        )
        .unwrap();
        let d = normalize(&req).unwrap();
        assert!(d.memory().is_none());
        assert!(d.block_io().is_none());
        assert!(d.pids().is_none());
        assert!(d.devices().is_none(), "update never touches devices");
        let cpu = d.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(20000));
        assert_eq!(cpu.period(), None);
        assert_eq!(cpu.cpus(), &None);
    }

    #[test]
    fn flags_build_request() {
        let args = UpdateArgs {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            pids_limit: Some("10".into()),
            cpu_quota: Some("-1".into()),
            id: "x".into(),
            ..Default::default()
        };
        let d = normalize(&from_flags(&args).unwrap()).unwrap();
        let m = d.memory().as_ref().unwrap();
        assert_eq!(m.limit(), Some(64 << 20));
        assert_eq!(m.swap(), Some(-1));
        assert_eq!(d.pids().unwrap().limit(), 10);
        assert_eq!(d.cpu().as_ref().unwrap().quota(), Some(-1));
        let bad = UpdateArgs {
            pids_limit: Some("ten".into()),
            ..Default::default()
        };
        let err = format!("{:#}", from_flags(&bad).unwrap_err());
        assert!(err.contains("pids-limit"), "{err}");
    }

    #[test]
    fn values_the_kernel_rejects_are_refused_first() {
        let bad = [
            r#"{"cpu":{"quota":500}}"#,
            r#"{"cpu":{"period":100}}"#,
            r#"{"blockIO":{"weight":5}}"#,
            r#"{"memory":{"limit":-5}}"#,
            r#"{"memory":{"limit":2048,"swap":1024}}"#,
        ];
        for json in bad {
            let req: LinuxResources = serde_json::from_str(json).unwrap();
            assert!(
                validate_values(&normalize(&req).unwrap()).is_err(),
                "{json} accepted"
            );
        }
        let ok: LinuxResources = serde_json::from_str(
            r#"{"cpu":{"quota":-1,"period":100000},"memory":{"limit":-1,"swap":-1}}"#,
        )
        .unwrap();
        assert!(validate_values(&normalize(&ok).unwrap()).is_ok());
    }

    #[test]
    fn merge_keeps_untouched_fields() {
        let mut cur: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":100,"swap":200},"cpu":{"quota":1000,"period":100000},
                "hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
        )
        .unwrap();
        let delta: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":150},"pids":{"limit":7},
                "hugepageLimits":[{"pageSize":"2MB","limit":2097152}],
                "unified":{"hugetlb.2MB.max":"2097152"}}"#,
        )
        .unwrap();
        merge(&mut cur, &delta).unwrap();
        let m = cur.memory().as_ref().unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(150), Some(200)));
        assert_eq!(cur.cpu().as_ref().unwrap().quota(), Some(1000));
        assert_eq!(cur.pids().unwrap().limit(), 7);
        let h = cur.hugepage_limits().as_ref().unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].limit(), 2097152);
        assert_eq!(cur.unified().as_ref().unwrap().len(), 1);
    }
}
