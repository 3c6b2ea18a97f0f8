//! Layers: turning an overlayfs upper directory into a deterministic,
//! compressed tar blob (`diff`), and unpacking layer tars safely (`unpack`).
pub mod diff;
pub mod tarw;
pub mod unpack;

pub use diff::{write_layer, LayerInfo};
pub use unpack::{unpack, UnpackMode};

use anyhow::{bail, Result};

/// Layer compression for new blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            other => bail!("unknown compression {other:?} (want gzip or zstd)"),
        }
    }
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Gzip => crate::image::MEDIA_LAYER_GZIP,
            Self::Zstd => crate::image::MEDIA_LAYER_ZSTD,
        }
    }
}

/// Opens a layer blob for reading, decompressing by sniffing the magic bytes
/// (media types from other tools are not always accurate).
pub fn open_decompressed(path: &std::path::Path) -> Result<Box<dyn std::io::Read>> {
    use anyhow::Context;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    decompressed(f)
}

/// [`open_decompressed`] for a file that is already open.
pub fn decompressed(f: std::fs::File) -> Result<Box<dyn std::io::Read>> {
    use anyhow::Context;
    use std::io::{BufRead, BufReader};
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().context("reading layer header")?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).context("starting zstd decoder")?)
    } else {
        Box::new(r)
    })
}

#[cfg(test)]
mod tests;
