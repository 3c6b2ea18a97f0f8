//! `commit`: one new layer from the container's upper directory (overlay
//! whiteouts become OCI whiteouts, see [`crate::layer::diff`]) on top of the
//! image it came from, with the history entry `docker commit` writes
//! (created_by = the container's command, author, comment = the message).
use super::Container;
use crate::image::History;
use crate::layer::{diff::write_layer, Compression};
use crate::store::Store;
use anyhow::{Context, Result};

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub message: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
}

/// Commits `c` as `image` (a tag; `None` keeps it untagged); returns the
/// manifest digest.
pub fn commit(
    store: &Store,
    c: &Container,
    image: Option<&str>,
    o: &CommitOptions,
) -> Result<String> {
    if let Some(t) = image {
        crate::store::canonical_tag(t).with_context(|| format!("image name {t:?}"))?;
    }
    // The upper directory is read while no overlay uses it.
    crate::snapshot::unmount_stale(&c.dir);
    let mut config = c.state.config.clone();
    for ch in &o.changes {
        super::change::apply(&mut config.config, ch)?;
    }
    let mut layers = c.state.layers.clone();
    let upper = c.upper();
    let empty = crate::layer::diff::is_empty_dir(&upper)?;
    if !empty {
        let layer = write_layer(store, &upper, Compression::Gzip, None)
            .with_context(|| format!("writing the layer of {}", c.state.name))?;
        config.rootfs.diff_ids.push(layer.diff_id);
        layers.push(layer.descriptor);
    }
    let created = super::now();
    let command = if c.state.last_command.is_empty() {
        let mut v = c.state.config.config.entrypoint.clone().unwrap_or_default();
        v.extend(c.state.config.config.cmd.clone().unwrap_or_default());
        v
    } else {
        c.state.last_command.clone()
    };
    config.history.push(History {
        created: Some(created.clone()),
        created_by: Some(command.join(" ")),
        author: o.author.clone().filter(|a| !a.is_empty()),
        comment: o.message.clone().filter(|m| !m.is_empty()),
        empty_layer: empty,
    });
    config.created = Some(created);
    if o.author.is_some() {
        config.author = o.author.clone().filter(|a| !a.is_empty());
    }
    let tags: Vec<String> = image.map(|t| vec![t.to_string()]).unwrap_or_default();
    Ok(store.commit_image(&config, layers, &tags)?.digest)
}
