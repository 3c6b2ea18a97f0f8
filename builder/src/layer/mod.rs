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

/// Opens a layer blob (or an ADD archive) for reading, decompressing by
/// sniffing the magic bytes as BuildKit's DetectCompression does: gzip,
/// zstd, bzip2, xz, else plain (media types from other tools are not always
/// accurate, and an archive's name says nothing).
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
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(r))
    } else {
        Box::new(r)
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod decompress_tests {
    use std::io::{Read, Write};

    /// Each compression BuildKit detects for ADD (gzip, zstd, bzip2, xz) is
    /// undone by content, whatever the file's name.
    #[test]
    fn every_compression_is_detected_by_content() {
        let plain = b"ustar-ish payload, repeated: ".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [
            ("p", &plain),
            ("g", &gz),
            ("z", &zst),
            ("b", &bz),
            ("x", &xz),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            let mut out = Vec::new();
            super::open_decompressed(&path)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain, "{name}");
        }
    }
}
