//! Block I/O: v1 blkio.* (CFQ or BFQ weights, throttle), v2 io.weight/io.bfq.weight/io.max.

use std::path::Path;

use anyhow::Result;
use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use crate::fsutil::write;
use crate::{Cgroup, CgroupMode, Loc};

/// blkio.weight (v1, 10..1000) → io.weight (v2, 1..10000), as runc converts.
pub(crate) fn blkio_weight_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10) * 9999) / 990
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

pub(super) fn apply(cg: &Cgroup, b: &LinuxBlockIo) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }
}
