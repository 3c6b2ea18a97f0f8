//! `berth-build bundle IMAGE DIR`: an OCI runtime bundle from a stored image —
//! `rootfs/` with all layers applied and a `config.json` built from the image
//! config on top of runc's default spec (mounts, namespaces, capabilities).
use crate::exec::user::resolve_user;
use crate::export::write_local;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

pub fn write_bundle(store: &Store, image: &str, dir: &Path) -> Result<()> {
    let img = store.resolve(image)?;
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        bail!("{} already exists", rootfs.display());
    }
    write_local(store, &img, &rootfs)?;
    write_config(&img.config, image, dir)
}

/// Writes `dir/config.json` for `config`, resolving the user in `dir/rootfs`.
pub fn write_config(config: &crate::image::ImageConfig, image: &str, dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    let c = &config.config;
    let mut args: Vec<String> = c.entrypoint.clone().unwrap_or_default();
    args.extend(c.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        bail!("image {image} has neither ENTRYPOINT nor CMD: nothing to run");
    }
    let user = resolve_user(&rootfs, &c.user)?;
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", crate::image::DEFAULT_PATH));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = if c.working_dir.is_empty() {
        "/".to_string()
    } else {
        c.working_dir.clone()
    };
    let mut spec: Value =
        serde_json::to_value(oci_spec::runtime::Spec::default()).context("default spec")?;
    spec["ociVersion"] = json!("1.0.2");
    spec["hostname"] = json!("berth");
    spec["root"] = json!({ "path": "rootfs", "readonly": false });
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(env);
    spec["process"]["cwd"] = json!(cwd);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["user"] = json!({
        "uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids,
    });
    let mut annotations = serde_json::Map::new();
    for (k, v) in &c.labels {
        annotations.insert(k.clone(), json!(v));
    }
    if !c.stop_signal.is_empty() {
        annotations.insert(
            "org.opencontainers.image.stopSignal".into(),
            json!(c.stop_signal),
        );
    }
    spec["annotations"] = Value::Object(annotations);
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}/config.json", dir.display()))?;
    Ok(())
}
