//! ADD from http(s) URLs: streamed into a temp file while hashing, verified
//! against `--checksum` when given.
use crate::digest::HashingWriter;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Download {
    pub path: PathBuf,
    pub file_name: String,
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Downloads `url` into `dir`.
pub fn download(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Download> {
    let resp = ureq::get(url)
        .timeout(std::time::Duration::from_secs(300))
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let file_name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .unwrap_or("download")
        .to_string();
    let path = dir.join("download");
    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = HashingWriter::new(std::io::BufWriter::new(f));
    std::io::copy(&mut resp.into_reader(), &mut w).with_context(|| format!("reading {url}"))?;
    let (mut buf, digest, _) = w.finish();
    buf.flush().context("writing download")?;
    if let Some(want) = checksum {
        if want != digest {
            bail!("digest mismatch for {url}: expected {want}, got {digest}");
        }
    }
    Ok(Download { path, file_name })
}
