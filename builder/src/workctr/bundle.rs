//! `bundle` with the overrides of `run` (`-e -v -w -u -h -t`): applied to
//! the bundle's config.json after the backend wrote it (a `-v` source may
//! be a directory or a single file, its mount point made in the rootfs), plus the image's
//! VOLUME entries as anonymous volumes: directories created beside the
//! rootfs (`volumes/<n>`), filled with what the image has at that path (as
//! Docker fills a new volume), bind-mounted read-write. Prints the exact
//! `berth run` line that starts it.
use super::run::{merged_env, parse_volume, Overrides};
use crate::image::ImageConfig;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::os::fd::AsFd;
use std::path::Path;

/// Rewrites `dir/config.json` for `image` with `o`; returns the command line.
pub fn finish(dir: &Path, image: &ImageConfig, o: &Overrides) -> Result<String> {
    let path = dir.join("config.json");
    let mut spec: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let rootfs = dir.join("rootfs");
    let c = &image.config;
    let user = crate::exec::user::resolve_user(&rootfs, o.user.as_deref().unwrap_or(&c.user))?;
    if o.user.is_some() {
        spec["process"]["user"] = json!({
            "uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids,
        });
    }
    // The image's Env with PATH/HOME defaults, the overrides, and TERM as
    // the plain bundle has it.
    let mut env = merged_env(&c.env, &o.env, &user.home)?;
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    spec["process"]["env"] = json!(env);
    if let Some(w) = &o.workdir {
        if !w.starts_with('/') {
            anyhow::bail!("-w {w:?}: the working directory must be absolute");
        }
        spec["process"]["cwd"] = json!(w);
    }
    if let Some(h) = &o.hostname {
        spec["hostname"] = json!(h);
    }
    spec["process"]["terminal"] = json!(o.tty);
    let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    let root_fd = crate::fsutil::safe::open_root(&rootfs)?;
    for v in &o.volumes {
        let v = parse_volume(v)?;
        let mut opts = vec!["rbind"];
        if v.readonly {
            opts.push("ro");
        }
        // The runtime binds the source when the bundle runs; its mount point
        // is made here, in the bundle's own rootfs, by fd (a file for a file
        // source, as Docker makes it), and the runtime gets the destination
        // resolved inside the rootfs, free of the image's symlinks.
        let dir = std::fs::metadata(&v.source)
            .with_context(|| {
                format!(
                    "bind source path {} does not exist (create it first)",
                    v.source.display()
                )
            })?
            .is_dir();
        let point = super::mountpoint::prepare(root_fd.as_fd(), &v.target, dir)
            .with_context(|| format!("volume {}", v.target))?;
        mounts.push(json!({
            "destination": point.dest, "type": "bind", "source": v.source, "options": opts,
        }));
    }
    // Anonymous volumes for VOLUME entries the caller did not mount.
    let vols_dir = dir.join("volumes");
    for (i, target) in c.volumes.keys().enumerate() {
        if mounts.iter().any(|m| m["destination"] == json!(target)) {
            continue;
        }
        std::fs::create_dir_all(&vols_dir)
            .with_context(|| format!("creating {}", vols_dir.display()))?;
        let vol = vols_dir.join(i.to_string());
        if vol.exists() {
            std::fs::remove_dir_all(&vol).with_context(|| format!("clearing {}", vol.display()))?;
        }
        // The image's content at the path, read inside the rootfs by fd.
        if super::copy::from_container_keep_owner(&rootfs, target, &vol).is_err() || !vol.is_dir() {
            let _ = std::fs::remove_file(&vol);
            std::fs::create_dir_all(&vol).with_context(|| format!("creating {}", vol.display()))?;
        }
        let abs = vol
            .canonicalize()
            .with_context(|| format!("resolving {}", vol.display()))?;
        mounts.push(json!({
            "destination": target, "type": "bind", "source": abs, "options": ["rbind"],
        }));
    }
    spec["mounts"] = Value::Array(mounts);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let abs_dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let id = super::id_chars(
        &abs_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "berth".into()),
    );
    Ok(format!(
        "berth run --bundle {} {id}",
        shell_quote(&abs_dir.to_string_lossy())
    ))
}

/// Quotes `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
