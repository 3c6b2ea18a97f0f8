//! Builds a one-layer docker-archive image (`docker save` format) from a rootfs directory,
//! so containerd (`ctr images import`) and podman (`podman load`) can run the busybox
//! fixture without a registry.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

fn hex_sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The layer: an uncompressed tar of `rootfs` (symlinks kept as links, owner root).
fn layer_tar(rootfs: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", rootfs)
        .with_context(|| format!("tar {}", rootfs.display()))?;
    b.into_inner().context("finish layer tar")
}

fn append(b: &mut tar::Builder<File>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
        .with_context(|| format!("add {name} to image archive"))
}

/// Writes `dest` as a docker-archive holding `rootfs` tagged `reference`
/// (e.g. "docker.io/library/busybox:latest"), whose default command is `cmd`.
pub fn write_docker_archive(
    rootfs: &Path,
    reference: &str,
    cmd: &[&str],
    dest: &Path,
) -> Result<()> {
    let layer = layer_tar(rootfs)?;
    let diff_id = hex_sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "berth integration test"}],
    }))?;
    let config_id = hex_sha256(&config);
    let layer_path = format!("{diff_id}/layer.tar");
    let config_path = format!("{config_id}.json");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_path,
        "RepoTags": [reference],
        "Layers": [layer_path],
    }]))?;
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    let repositories = serde_json::to_vec(&json!({ repo: { tag: diff_id } }))?;

    let file = File::create(dest).with_context(|| format!("create {}", dest.display()))?;
    let mut b = tar::Builder::new(file);
    append(&mut b, &layer_path, &layer)?;
    append(&mut b, &config_path, &config)?;
    append(&mut b, "manifest.json", &manifest)?;
    append(&mut b, "repositories", &repositories)?;
    let mut f = b.into_inner().context("finish image archive")?;
    f.flush().context("flush image archive")?;
    Ok(())
}
