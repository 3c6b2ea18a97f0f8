//! Build secrets (`--secret id=ID,src=PATH`, `RUN --mount=type=secret`):
//! read with BuildKit's per-secret cap, so a secret pointing at a huge file
//! or at `/dev/zero` fails the build instead of filling memory or the disk.
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// BuildKit's limit on one secret (`secrets.MaxSecretSize`): 500 KiB.
pub const MAX_SECRET_SIZE: usize = 500 * 1024;

/// Refuses secret contents over [`MAX_SECRET_SIZE`].
pub fn check_size(id: &str, len: usize) -> Result<()> {
    if len > MAX_SECRET_SIZE {
        bail!("secret {id} is too large: more than {MAX_SECRET_SIZE} bytes (500 KiB, as BuildKit)");
    }
    Ok(())
}

/// Reads the secret `id` from `path`, at most [`MAX_SECRET_SIZE`] bytes.
pub fn read(id: &str, path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading secret {id}"))?;
    let mut data = Vec::new();
    f.take(MAX_SECRET_SIZE as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading secret {id}"))?;
    check_size(id, data.len())?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_capped_at_500_kib() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        std::fs::write(&ok, vec![b'x'; MAX_SECRET_SIZE]).unwrap();
        assert_eq!(read("ok", &ok).unwrap().len(), MAX_SECRET_SIZE);
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_SIZE + 1]).unwrap();
        let e = read("big", &big).unwrap_err().to_string();
        assert!(e.contains("secret big is too large"), "{e}");
        // An endless source stops at the cap.
        let e = read("zero", Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
