//! `export` (a container's root filesystem as one tar) and `import` (Docker's
//! `import`: a root filesystem tar as a one-layer image with an empty config
//! and the history entry `Imported from <source>`).
use crate::image::{History, ImageConfig};
use crate::layer::{diff::write_layer, open_decompressed, unpack, Compression, UnpackMode};
use crate::store::Store;
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;

/// Writes the tree at `root` (the mounted container root) to `dest`, via a
/// temporary file beside it so a failed export leaves no partial archive.
pub fn export(root: &Path, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let (f, _) = crate::layer::diff::write_tar(root, tmp.as_file(), None)
        .context("writing the root filesystem tar")?;
    f.sync_all().context("syncing the archive")?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Imports `archive`; `source` names it in the default history comment
/// (`Imported from <source>`) and in errors.
pub fn import(
    store: &Store,
    archive: &Path,
    source: &str,
    image: Option<&str>,
    message: Option<String>,
    changes: &[String],
) -> Result<String> {
    if let Some(t) = image {
        crate::store::canonical_tag(t).with_context(|| format!("image name {t:?}"))?;
    }
    let work = store.temp_dir("import-")?;
    let tree = work.path().join("tree");
    fs::create_dir(&tree).context("creating the import tree")?;
    // Unpacked safely (names cleaned, links kept inside) and written again
    // as a normalized layer, like every other layer of the store.
    unpack(open_decompressed(archive)?, &tree, UnpackMode::Overlay)
        .with_context(|| format!("unpacking {source}"))?;
    let layer = write_layer(store, &tree, Compression::Gzip, None)?;
    let created = super::now();
    let mut config = ImageConfig::default();
    // Docker's import starts from an empty config (no Env).
    config.config.env.clear();
    for c in changes {
        super::change::apply(&mut config.config, c)?;
    }
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(layer.diff_id);
    config.history.push(History {
        created: Some(created),
        comment: Some(
            message
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("Imported from {source}")),
        ),
        ..Default::default()
    });
    let tags: Vec<String> = image.map(|t| vec![t.to_string()]).unwrap_or_default();
    Ok(store
        .commit_image(&config, vec![layer.descriptor], &tags)?
        .digest)
}
