//! sha256 digests in OCI form (`sha256:<hex>`) and writers that hash what passes through.
use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

/// Returns `sha256:<hex>` of `data`.
pub fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Returns the hex part of an OCI digest after checking it is a well-formed sha256 digest,
/// so it can be used as a file name without path tricks.
pub fn hex_part(digest: &str) -> Result<&str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?}: only sha256 is supported");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        bail!("malformed digest {digest:?}");
    }
    Ok(hex)
}

/// A writer that forwards everything to `inner` while hashing and counting it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer, the `sha256:` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Incremental hash used for cache keys: fields are length-prefixed so that
/// ("ab","c") and ("a","bc") never collide.
#[derive(Clone, Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(kind: &str) -> Self {
        let mut h = Self(Sha256::new());
        h.field(kind.as_bytes());
        h
    }

    pub fn field(&mut self, data: &[u8]) -> &mut Self {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(s.as_bytes())
    }

    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_part_rejects_bad_digests() {
        assert!(hex_part("sha256:../../etc").is_err());
        assert!(hex_part("md5:00").is_err());
        let d = sha256_of(b"x");
        assert_eq!(hex_part(&d).unwrap().len(), 64);
    }

    #[test]
    fn hashing_writer_matches_one_shot() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d, sha256_of(b"hello world"));
    }

    #[test]
    fn key_fields_are_length_prefixed() {
        let mut a = KeyHasher::new("k");
        a.str("ab").str("c");
        let mut b = KeyHasher::new("k");
        b.str("a").str("bc");
        assert_ne!(a.finish(), b.finish());
    }
}
