//! Translation of OCI `linux.resources` into cgroup file writes, per hierarchy version.
//! Only fields that are present are written, so the same code serves create-time apply and
//! live `update`. Conversions between v1 and v2 units follow runc. One submodule per
//! controller family; the small ones (pids, network, rdma, unified) live here.

mod blkio;
mod cpu;
mod hugetlb;
mod memory;

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{LinuxNetwork, LinuxRdma, LinuxResources};

use crate::devices;
use crate::fsutil::write;
use crate::{Cgroup, Loc};

pub(crate) use hugetlb::hugepage_sizes;

pub(crate) fn apply(cg: &Cgroup, res: &LinuxResources) -> Result<()> {
    if let Some(m) = res.memory() {
        memory::apply(cg, m)?;
    }
    if let Some(c) = res.cpu() {
        cpu::apply(cg, c)?;
    }
    if let Some(p) = res.pids() {
        pids(cg, p.limit())?;
    }
    if let Some(b) = res.block_io() {
        blkio::apply(cg, b)?;
    }
    if let Some(h) = res.hugepage_limits() {
        hugetlb::apply(cg, h)?;
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
/// v2 spells "unlimited" as "max".
pub(super) fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
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
/// Only on a pure v2 host, as runc: its v1 manager (used for v1 *and* hybrid hosts)
/// refuses any `unified` entry, even for a controller the hybrid's v2 tree holds, with
/// this wording, which callers match.
fn unified(cg: &Cgroup, u: &HashMap<String, String>) -> Result<()> {
    if u.is_empty() {
        return Ok(());
    }
    let dir = match (cg.mode(), cg.unified_dir()) {
        (crate::CgroupMode::V2, Some(dir)) => dir,
        _ => bail!("invalid configuration: cannot use unified on cgroup v1"),
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
