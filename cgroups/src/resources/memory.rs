//! memory: v1 memory.limit_in_bytes & co, v2 memory.max/low/swap.max.

use std::path::Path;

use anyhow::{bail, Result};
use oci_spec::runtime::LinuxMemory;

use super::v2_limit;
use crate::fsutil::{self, write};
use crate::{Cgroup, Loc};

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

fn memory_is_set(m: &LinuxMemory) -> bool {
    m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.kernel().is_some()
        || m.kernel_tcp().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some()
}

pub(super) fn apply(cg: &Cgroup, m: &LinuxMemory) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_to_v2(0, Some(-1)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(-1, Some(100)).unwrap(), Some(-1));
        assert_eq!(swap_to_v2(0, Some(100)).unwrap(), None);
        assert_eq!(swap_to_v2(300, Some(100)).unwrap(), Some(200));
        assert!(swap_to_v2(50, Some(100)).is_err());
        assert!(swap_to_v2(50, None).is_err());
    }
}
