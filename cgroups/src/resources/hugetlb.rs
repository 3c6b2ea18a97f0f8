//! hugetlb: v1 hugetlb.<size>.limit_in_bytes, v2 hugetlb.<size>.max (plus rsvd variants).

use std::path::Path;

use anyhow::{bail, Result};
use oci_spec::runtime::LinuxHugepageLimit;

use super::v2_limit;
use crate::fsutil::{self, write};
use crate::{Cgroup, Loc};

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

pub(super) fn apply(cg: &Cgroup, limits: &[LinuxHugepageLimit]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1048576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }
}
