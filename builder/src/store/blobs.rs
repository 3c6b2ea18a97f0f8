//! Content-addressed blobs under `blobs/sha256/`.
use super::Store;
use crate::digest::{hex_part, sha256_of, HashingWriter};
use crate::fsutil::sync_dir;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

impl Store {
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_part(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Stores `data` and returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<String> {
        let digest = sha256_of(data);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).context("writing blob")?;
        w.commit(Some(&digest))?;
        Ok(digest)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        fs::read(&p).with_context(|| format!("reading blob {digest}"))
    }

    /// Reads a blob of at most `limit` bytes; larger ones fail with
    /// [`crate::image::TooLarge`] before anything is read.
    pub fn read_blob_limited(&self, digest: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        crate::image::read_limited(&p, &format!("{what} {digest}"), limit)
            .with_context(|| format!("reading blob {digest}"))
    }

    /// Parses a JSON blob of at most `limit` bytes.
    pub fn read_json_limited<T: DeserializeOwned>(
        &self,
        digest: &str,
        what: &str,
        limit: u64,
    ) -> Result<T> {
        let data = self.read_blob_limited(digest, what, limit)?;
        serde_json::from_slice(&data).with_context(|| format!("parsing blob {digest}"))
    }

    pub fn read_json<T: DeserializeOwned>(&self, digest: &str) -> Result<T> {
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).with_context(|| format!("parsing blob {digest}"))
    }

    /// fsyncs `blobs/sha256/` so that every committed blob's name is durable.
    pub fn sync_blob_dir(&self) -> Result<()> {
        sync_dir(&self.root.join("blobs/sha256"))
    }

    /// A writer for a blob of not yet known digest; `commit` moves it into place.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.root.join("tmp"))
            .context("creating a temporary blob")?;
        let file = tmp.reopen().context("opening temporary blob")?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
        })
    }
}

impl Store {
    /// Where an interrupted download of `digest` is kept for a retry
    /// (`partial/<hex>`; removed by `prune`).
    fn partial_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("partial").join(hex_part(digest)?))
    }

    /// A writer already holding the kept partial download of `digest` (if
    /// there is one shorter than `size`), and how many bytes it holds. The
    /// partial bytes pass through the writer's hash like new ones, so the
    /// digest check at `commit` covers the whole blob; the kept file is
    /// removed either way.
    pub fn resume_writer(&self, digest: &str, size: u64) -> Result<Option<(BlobWriter, u64)>> {
        let path = self.partial_path(digest)?;
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let resumed = if len > 0 && len < size {
            let mut w = self.blob_writer()?;
            let n = std::io::copy(&mut f, &mut w).context("reading a partial download")?;
            Some((w, n))
        } else {
            None
        };
        drop(f);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        Ok(resumed)
    }
}

/// A blob being written. Dropping it without `commit` deletes the temp file.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    inner: HashingWriter<BufWriter<File>>,
}

impl BlobWriter {
    /// fsyncs the blob and renames it to its digest. With `expected`, a
    /// mismatching digest is an error (used for imports and downloads).
    /// Returns (digest, size).
    pub fn commit(self, expected: Option<&str>) -> Result<(String, u64)> {
        let (buf, digest, size) = self.inner.finish();
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .context("flushing blob")?;
        file.sync_all().context("fsync blob")?;
        if let Some(want) = expected {
            if want != digest {
                bail!("digest mismatch: expected {want}, got {digest}");
            }
        }
        let dest = self.store.blob_path(&digest)?;
        self.tmp
            .persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("moving blob into {}", dest.display()))?;
        // The directory entry is made durable once, by `sync_blob_dir`,
        // before anything durable (index.json) refers to the blob.
        Ok((digest, size))
    }
}

impl BlobWriter {
    /// Keeps what was written as the partial download of `digest`, for
    /// [`Store::resume_writer`]. Returns the bytes kept.
    pub fn keep_partial(self, digest: &str) -> Result<u64> {
        let (buf, _, size) = self.inner.finish();
        buf.into_inner()
            .map_err(|e| e.into_error())
            .context("flushing a partial download")?;
        let dest = self.store.partial_path(digest)?;
        fs::create_dir_all(self.store.root.join("partial")).context("creating partial/")?;
        self.tmp
            .persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("keeping {}", dest.display()))?;
        Ok(size)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
