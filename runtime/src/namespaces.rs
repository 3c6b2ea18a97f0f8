//! Namespace bookkeeping: which to create, which to join, in what order.

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use std::fs::File;
use std::path::PathBuf;

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME (0x80) is only usable with unshare/clone3.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Name of the namespace file under /proc/<pid>/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The spec's namespaces split into ones to create and ones to join.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub create: Vec<LinuxNamespaceType>,
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Result<Plan> {
        let list: Vec<LinuxNamespace> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let mut plan = Plan::default();
        let mut seen = Vec::new();
        for ns in list {
            let t = ns.typ();
            if seen.contains(&t) {
                bail!("namespace {} is listed more than once", proc_name(t));
            }
            seen.push(t);
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push((t, p.clone())),
                _ => plan.create.push(t),
            }
        }
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.create.contains(&t)
    }

    pub fn joins(&self, t: LinuxNamespaceType) -> Option<&PathBuf> {
        self.join.iter().find(|(k, _)| *k == t).map(|(_, p)| p)
    }

    /// Has its own namespace of this type (new or joined)?
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.creates(t) || self.joins(t).is_some()
    }

    /// Flags for namespaces created by clone(). cgroup is unshared later,
    /// once init sits in its cgroup (so the cgroup ns is rooted there);
    /// time is unshared by the process that forks init.
    pub fn clone_flags(&self) -> CloneFlags {
        let mut flags = CloneFlags::empty();
        for t in &self.create {
            if !matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time) {
                flags |= clone_flag(*t);
            }
        }
        flags
    }
}

/// Open every path up front, so a bad path fails before anything is created.
pub fn open_joins(
    joins: &[(LinuxNamespaceType, PathBuf)],
) -> Result<Vec<(LinuxNamespaceType, File)>> {
    joins
        .iter()
        .map(|(t, p)| {
            let f = File::open(p).with_context(|| {
                format!("open {} namespace path {}", proc_name(*t), p.display())
            })?;
            Ok((*t, f))
        })
        .collect()
}

pub fn join(t: LinuxNamespaceType, f: &File) -> Result<()> {
    setns(f, clone_flag(t)).with_context(|| format!("join {} namespace", proc_name(t)))
}
