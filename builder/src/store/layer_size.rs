//! A layer's content size as Docker reports it: what `docker images` sums
//! into an image's SIZE and `docker history` shows per layer.
//!
//! Docker's overlay2 driver unpacks a layer tar into the layer's own `diff`
//! directory (whiteouts become 0/0 character devices, opaque markers become
//! an xattr) and takes `pkg/directory.Size` of it: the `st_size` of every
//! entry that is not a directory and not empty, each inode once (a hard
//! link counts once; a symlink counts its target's length). The same is
//! computed here from the tar itself, following what unpacking would leave
//! behind (a later entry replaces an earlier one at the same path).
//!
//! The result is kept per layer blob in `layer-sizes/<blob-hex>` (a decimal
//! number). A layer berth writes (build steps, `commit`, `import`) is
//! measured while its tar is streamed ([`StreamSizer`]); any other layer
//! (loaded, pulled, or in a store older than this record) is measured once,
//! by reading it back, the first time an image using it enters the index or
//! is listed, so `images` never reads a layer twice.
use super::Store;
use crate::digest::hex_part;
use crate::fsutil::replace_file;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use tar::EntryType;

/// The directory of the per-layer sizes, below the store root.
pub(super) const DIR: &str = "layer-sizes";

/// Docker's opaque-directory marker (an xattr on the directory once
/// unpacked: no entry of its own).
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Docker's content size of the (uncompressed) layer tar `r`.
pub fn content_size(r: impl Read) -> Result<u64> {
    // Path -> inode number, and each inode's size: what the unpacked
    // directory would hold. Directories are kept (as `None`) so that a
    // file replacing one drops what was below it.
    let mut paths: BTreeMap<PathBuf, Option<usize>> = BTreeMap::new();
    let mut inodes: Vec<u64> = Vec::new();
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().context("reading layer")? {
        let e = e.context("reading layer entry")?;
        let Ok(path) = crate::layer::unpack::clean_name(&e.path_bytes()) else {
            // Unpacking refuses such a name; it adds nothing.
            continue;
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let h = e.header();
        let (path, size) = match name.as_deref() {
            Some(OPAQUE) => continue,
            Some(n) if n.starts_with(WHITEOUT_PREFIX) => {
                // Unpacked as a 0/0 character device named after the
                // deleted entry: present, size 0.
                (path.with_file_name(&n[WHITEOUT_PREFIX.len()..]), 0)
            }
            _ => match h.entry_type() {
                EntryType::Directory => {
                    // A directory over a non-directory replaces it; over a
                    // directory it merges.
                    if paths.get(&path).is_some_and(Option::is_some) {
                        paths.remove(&path);
                    }
                    paths.insert(path, None);
                    continue;
                }
                EntryType::Link => {
                    let target = e
                        .link_name_bytes()
                        .and_then(|t| crate::layer::unpack::clean_name(&t).ok());
                    let inode = target.and_then(|t| paths.get(&t).copied().flatten());
                    if let Some(inode) = inode {
                        replace(&mut paths, path, Some(inode));
                    }
                    continue;
                }
                EntryType::Symlink => (path, e.link_name_bytes().map_or(0, |t| t.len() as u64)),
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    (path, h.size().context("layer entry size")?)
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => (path, 0),
                // PAX/GNU metadata headers are folded into their entry by
                // the reader; anything else is not unpacked.
                _ => continue,
            },
        };
        inodes.push(size);
        replace(&mut paths, path, Some(inodes.len() - 1));
    }
    let live: BTreeSet<usize> = paths.values().flatten().copied().collect();
    Ok(live
        .into_iter()
        .map(|i| inodes[i])
        .fold(0u64, u64::saturating_add))
}

/// Puts `path` in the tree as `inode`, dropping whatever it replaces (a
/// directory's content too).
fn replace(paths: &mut BTreeMap<PathBuf, Option<usize>>, path: PathBuf, inode: Option<usize>) {
    if let Some(None) = paths.get(&path) {
        let below: Vec<PathBuf> = paths
            .range(path.clone()..)
            .take_while(|(p, _)| p.starts_with(&path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            paths.remove(&p);
        }
    }
    paths.insert(path, inode);
}

/// Measures a layer tar while it is written: the chunks handed to `feed`
/// are parsed by [`content_size`] on a helper thread, overlapping with the
/// compression of the same stream.
pub struct StreamSizer {
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<Result<u64>>>,
}

impl StreamSizer {
    pub fn new() -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(16);
        let worker = std::thread::spawn(move || {
            let mut r = ChannelReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            let size = content_size(&mut r);
            // Whatever follows the end of the archive (or follows a parse
            // error) is drained, so the writer never blocks on a full channel.
            for _ in r.rx.iter() {}
            size
        });
        StreamSizer {
            tx: Some(tx),
            worker: Some(worker),
        }
    }

    /// The next bytes of the tar stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(tx) = &self.tx {
            // A gone worker has failed: `finish` reports it.
            if tx.send(chunk.to_vec()).is_err() {
                self.tx = None;
            }
        }
    }

    /// The content size of everything fed.
    pub fn finish(mut self) -> Result<u64> {
        drop(self.tx.take());
        self.worker
            .take()
            .context("layer size already taken")?
            .join()
            .map_err(|_| anyhow::anyhow!("layer size worker panicked"))?
    }
}

impl Default for StreamSizer {
    fn default() -> Self {
        Self::new()
    }
}

/// The chunks of a channel as one byte stream.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => (self.cur, self.pos) = (c, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Store {
    /// Records the content size of the layer blob `blob`, measured while it
    /// was written (see [`StreamSizer`]).
    pub fn record_layer_size(&self, blob: &str, size: u64) -> Result<()> {
        std::fs::create_dir_all(self.root.join(DIR))
            .context("creating the layer sizes directory")?;
        replace_file(&self.layer_size_path(blob)?, size.to_string().as_bytes())
    }

    fn layer_size_path(&self, blob: &str) -> Result<PathBuf> {
        Ok(self.root.join(DIR).join(hex_part(blob)?))
    }

    /// Docker's content size of the layer blob `blob` (compressed or not),
    /// from its recorded value or measured once and recorded.
    pub fn layer_content_size(&self, blob: &str) -> Result<u64> {
        let path = self.layer_size_path(blob)?;
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Ok(n) = s.trim().parse() {
                return Ok(n);
            }
        }
        let size =
            measure(&self.blob_path(blob)?).with_context(|| format!("measuring layer {blob}"))?;
        // Derived data: a lost record is measured again.
        self.record_layer_size(blob, size)?;
        Ok(size)
    }
}

fn measure(blob: &Path) -> Result<u64> {
    content_size(crate::layer::open_decompressed(blob)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, len: usize) {
        let data = vec![b'x'; len];
        b.append(&header(path, EntryType::Regular, len as u64), &data[..])
            .unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, target: &str) {
        let mut h = header(path, kind, 0);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn counts_like_overlay2_directory_size() {
        let tar = layer(|b| {
            b.append(&header("etc/", EntryType::Directory, 0), std::io::empty())
                .unwrap();
            file(b, "etc/a", 100);
            // A hard link is the same inode: counted once.
            link(b, "etc/b", EntryType::Link, "etc/a");
            // A symlink's size is its target's length.
            link(b, "etc/s", EntryType::Symlink, "a-target");
            // Whiteouts and opaque markers: nothing.
            file(b, "etc/.wh.gone", 0);
            file(b, "etc/.wh..wh..opq", 0);
            // A later entry replaces an earlier one.
            file(b, "over", 7);
            file(b, "over", 3);
            // A file over a directory drops what was below it.
            b.append(&header("d/", EntryType::Directory, 0), std::io::empty())
                .unwrap();
            file(b, "d/inner", 50);
            file(b, "d", 2);
            file(b, "empty", 0);
        });
        assert_eq!(content_size(&tar[..]).unwrap(), 100 + 8 + 3 + 2);
        // A hard link keeps its inode alive when its first name is replaced.
        let tar = layer(|b| {
            file(b, "a", 10);
            link(b, "b", EntryType::Link, "a");
            file(b, "a", 4);
        });
        assert_eq!(content_size(&tar[..]).unwrap(), 14);
    }

    #[test]
    fn written_layers_are_measured_while_streamed() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let up = tempfile::tempdir().unwrap();
        std::fs::create_dir(up.path().join("d")).unwrap();
        std::fs::write(up.path().join("d/f"), vec![b'x'; 5000]).unwrap();
        std::fs::hard_link(up.path().join("d/f"), up.path().join("d/g")).unwrap();
        std::os::unix::fs::symlink("d/f", up.path().join("s")).unwrap();
        for c in [
            crate::layer::Compression::Gzip,
            crate::layer::Compression::Zstd,
        ] {
            let l = crate::layer::write_layer(&store, up.path(), c, None).unwrap();
            let digest = &l.descriptor.digest;
            // Recorded by the writer, before anything lists the image.
            let recorded = std::fs::read_to_string(store.layer_size_path(digest).unwrap());
            assert_eq!(recorded.unwrap(), "5003");
            // The same as reading the layer back.
            assert_eq!(measure(&store.blob_path(digest).unwrap()).unwrap(), 5003);
        }
    }

    #[test]
    fn streamed_measure_matches_and_never_blocks_the_writer() {
        let tar = layer(|b| {
            file(b, "big", 3 << 20);
            link(b, "s", EntryType::Symlink, "big");
        });
        let mut sizer = StreamSizer::new();
        for chunk in tar.chunks(4096) {
            sizer.feed(chunk);
        }
        // Trailing bytes past the end of the archive are drained.
        for _ in 0..64 {
            sizer.feed(&[0u8; 8192]);
        }
        assert_eq!(sizer.finish().unwrap(), (3 << 20) + 3);
        // Garbage: an error, and feeding it never blocks.
        let mut sizer = StreamSizer::new();
        for _ in 0..64 {
            sizer.feed(&[b'x'; 8192]);
        }
        assert!(sizer.finish().is_err());
    }
}
