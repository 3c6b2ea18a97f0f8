//! Layer creation from an overlayfs upper directory: overlay whiteouts become
//! OCI whiteouts, entries are sorted, hardlinks deduped, and the tar is hashed
//! (diff_id) and compressed and hashed again (blob digest) in a single pass.
use super::tarw::TarWriter;
use super::Compression;
use crate::chunked::ChunkedWriter;
use crate::digest::HashingWriter;
use crate::image::Descriptor;
use crate::store::Store;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// A stored layer: its blob descriptor and uncompressed digest.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// True when `dir` has no entries (the step changed nothing).
pub fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_none())
}

/// Writes the layer for `upper` into the store and returns it. The tar is
/// produced and hashed (diff_id) on this thread while another thread
/// compresses and hashes the stream (blob digest): the two halves overlap.
pub fn write_layer(
    store: &Store,
    upper: &Path,
    compression: Compression,
    epoch: Option<i64>,
) -> Result<LayerInfo> {
    let blob = store.blob_writer()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    // Docker's content size of the layer, measured from the same stream
    // (what `images` shows; see store::layer_size).
    let mut sizer = crate::store::StreamSizer::new();
    let compressor = std::thread::spawn(move || -> Result<Compressed> {
        match compression {
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
                for chunk in rx {
                    sizer.feed(&chunk);
                    gz.write_all(&chunk).context("compressing layer")?;
                }
                Ok((gz.finish().context("finishing gzip stream")?, sizer))
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(blob, 3).context("starting zstd")?;
                for chunk in rx {
                    sizer.feed(&chunk);
                    z.write_all(&chunk).context("compressing layer")?;
                }
                Ok((z.finish().context("finishing zstd stream")?, sizer))
            }
        }
    });
    let produced = write_tar(
        upper,
        // The tar stream goes to the compressor thread in large chunks.
        ChunkedWriter::new(CHUNK, move |chunk| {
            tx.send(chunk).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "layer compressor stopped")
            })
        }),
        epoch,
    )
    .and_then(|(mut sender, diff_id)| {
        sender.flush().context("sending the last chunk")?;
        Ok(diff_id)
    });
    // The sender is dropped by now, so the compressor sees the end of the stream.
    let blob = compressor
        .join()
        .map_err(|_| anyhow::anyhow!("layer compressor panicked"))?;
    let diff_id = produced?;
    let (blob, sizer) = blob?;
    let (digest, size) = blob.commit(None)?;
    // Derived data: if the measure failed, the first listing measures again.
    if let Ok(n) = sizer.finish() {
        let _ = store.record_layer_size(&digest, n);
    }
    Ok(LayerInfo {
        descriptor: Descriptor {
            media_type: compression.media_type().into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        },
        diff_id,
    })
}

/// The compressor thread's result: the blob and the layer's content size.
type Compressed = (crate::store::BlobWriter, crate::store::StreamSizer);

const CHUNK: usize = 256 << 10;

/// Writes the tar of `upper` into `out`, returning `out` and the tar's digest.
pub fn write_tar<W: Write>(upper: &Path, out: W, epoch: Option<i64>) -> Result<(W, String)> {
    let mut tw = TarWriter::new(HashingWriter::new(out), epoch);
    let mut links = HashMap::new();
    walk(&mut tw, upper, "", &mut links)?;
    let (out, diff_id, _) = tw.finish()?.finish();
    Ok((out, diff_id))
}

fn walk<W: Write>(
    tw: &mut TarWriter<W>,
    dir: &Path,
    prefix: &str,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let rel = format!("{prefix}{name}");
        let m = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            tw.append_empty(&format!("{prefix}{WHITEOUT_PREFIX}{name}"), &m)?;
            continue;
        }
        if ft.is_dir() {
            tw.append_path(&rel, &path, &m)?;
            let opaque = matches!(xattr::get(&path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y");
            if opaque {
                tw.append_empty(&format!("{rel}/{OPAQUE_WHITEOUT}"), &m)?;
            }
            walk(tw, &path, &format!("{rel}/"), links)?;
            continue;
        }
        if ft.is_file() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = links.get(&key) {
                tw.append_hardlink(&rel, first, &m)?;
                continue;
            }
            links.insert(key, rel.clone());
        }
        tw.append_path(&rel, &path, &m)?;
    }
    Ok(())
}
