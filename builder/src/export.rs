//! Image outputs: OCI layout (directory or tar), docker-archive tar, local
//! directory (the flattened filesystem), and import of OCI/docker archives.
use crate::digest::hex_part;
use crate::fsutil::atomic_write;
use crate::image::{Descriptor, ImageConfig, Index, Manifest, ANNOTATION_REF_NAME, MEDIA_INDEX};
use crate::layer::{open_decompressed, unpack, UnpackMode};
use crate::store::{normalize_ref, ResolvedImage, Store};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

/// Output formats of `-o type=...` and `save --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
    Local,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oci" => Ok(Self::Oci),
            "docker" => Ok(Self::Docker),
            "local" => Ok(Self::Local),
            o => bail!("unknown output type {o:?} (want oci, docker or local)"),
        }
    }
}

/// Writes `img` (known under `tags`) to `dest` in `format`. For oci, a `dest`
/// ending in `.tar` gets a tar archive, anything else a directory.
pub fn export(
    store: &Store,
    img: &ResolvedImage,
    tags: &[String],
    format: Format,
    dest: &Path,
) -> Result<()> {
    match format {
        Format::Oci if dest.extension().is_some_and(|e| e == "tar") => {
            let f = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
            write_oci_tar(store, img, tags, f)?;
            Ok(())
        }
        Format::Oci => write_oci_dir(store, img, tags, dest),
        Format::Docker => {
            let f = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
            write_docker_tar(store, img, tags, f)?;
            Ok(())
        }
        Format::Local => write_local(store, img, dest),
    }
}

/// The names an export of `requested` records (docker `RepoTags`, OCI
/// `ref.name`): the requested name when it is a tag of the image, as
/// `docker save NAME` does — never the image's other tags, which a
/// `docker load` would move onto this image. A digest or ID records none.
pub fn export_names(store: &Store, requested: &str, img: &ResolvedImage) -> Result<Vec<String>> {
    if requested.starts_with("sha256:") || requested.contains('@') {
        return Ok(Vec::new());
    }
    let wanted = normalize_ref(requested);
    // The name as stored (`save busybox` of an image pulled as
    // `docker.io/library/busybox` records the stored name).
    let stored = store
        .images()?
        .into_iter()
        .filter(|i| i.descriptor.digest == img.descriptor.digest)
        .flat_map(|i| i.tags)
        .find(|t| t == &wanted || crate::store::same_name(t, &wanted));
    Ok(stored.into_iter().collect())
}

fn index_for(img: &ResolvedImage, tags: &[String]) -> Index {
    let mut manifests = Vec::new();
    let mut d = img.descriptor.clone();
    d.annotations.clear();
    if tags.is_empty() {
        manifests.push(d.clone());
    }
    for t in tags {
        let mut d = d.clone();
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), normalize_ref(t));
        manifests.push(d);
    }
    Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.into()),
        manifests,
    }
}

fn blob_list(img: &ResolvedImage) -> Vec<String> {
    let mut v = vec![
        img.descriptor.digest.clone(),
        img.manifest.config.digest.clone(),
    ];
    v.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
    v
}

/// An OCI image layout directory (merged into an existing one).
pub fn write_oci_dir(
    store: &Store,
    img: &ResolvedImage,
    tags: &[String],
    dest: &Path,
) -> Result<()> {
    let blobs = dest.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    for d in blob_list(img) {
        let to = blobs.join(hex_part(&d)?);
        if !to.exists() {
            let tmp = blobs.join(format!(".{}.tmp", hex_part(&d)?));
            fs::copy(store.blob_path(&d)?, &tmp).with_context(|| format!("copying blob {d}"))?;
            fs::rename(&tmp, &to)?;
        }
    }
    atomic_write(
        &dest.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut index = match fs::read(dest.join("index.json")) {
        Ok(data) => serde_json::from_slice::<Index>(&data).unwrap_or_default(),
        Err(_) => Index::default(),
    };
    let new = index_for(img, tags);
    let names: Vec<Option<&String>> = new
        .manifests
        .iter()
        .map(|d| d.annotations.get(ANNOTATION_REF_NAME))
        .collect();
    index
        .manifests
        .retain(|d| !names.contains(&d.annotations.get(ANNOTATION_REF_NAME)));
    index.manifests.extend(new.manifests);
    index.schema_version = 2;
    index.media_type = Some(MEDIA_INDEX.into());
    atomic_write(&dest.join("index.json"), &serde_json::to_vec(&index)?)
}

/// Appends `size` bytes of `data` as the regular file `name`: 0644, owned
/// by root, mtime 0 (archives of the same image are the same bytes).
fn append_regular<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl std::io::Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
        .with_context(|| format!("writing {name}"))
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    append_regular(b, name, data.len() as u64, data)
}

fn append_file<W: Write>(b: &mut tar::Builder<W>, name: &str, path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    append_regular(b, name, len, f)
}

pub fn write_oci_tar<W: Write>(
    store: &Store,
    img: &ResolvedImage,
    tags: &[String],
    w: W,
) -> Result<W> {
    let mut b = tar::Builder::new(w);
    append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for d in blob_list(img) {
        append_file(
            &mut b,
            &format!("blobs/sha256/{}", hex_part(&d)?),
            &store.blob_path(&d)?,
        )?;
    }
    append_bytes(
        &mut b,
        "index.json",
        &serde_json::to_vec(&index_for(img, tags))?,
    )?;
    b.into_inner().context("finishing archive")
}

#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// docker-archive: `manifest.json` + `repositories` + config + uncompressed
/// layer tars named by their diff_id (what `docker load`/`podman load` read).
pub fn write_docker_tar<W: Write>(
    store: &Store,
    img: &ResolvedImage,
    tags: &[String],
    w: W,
) -> Result<W> {
    let mut b = tar::Builder::new(w);
    let cfg_hex = hex_part(&img.manifest.config.digest)?.to_string();
    append_file(
        &mut b,
        &format!("blobs/sha256/{cfg_hex}"),
        &store.blob_path(&img.manifest.config.digest)?,
    )?;
    let mut layers = Vec::new();
    for (l, diff_id) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids) {
        let name = format!("blobs/sha256/{}", hex_part(diff_id)?);
        if !layers.contains(&name) {
            // Decompress to a temp file: tar headers need the size up front.
            let mut tmp = tempfile::tempfile_in(store.root().join("tmp")).context("temp file")?;
            let n = std::io::copy(
                &mut open_decompressed(&store.blob_path(&l.digest)?)?,
                &mut tmp,
            )?;
            std::io::Seek::rewind(&mut tmp)?;
            append_regular(&mut b, &name, n, &mut tmp)?;
        }
        layers.push(name);
    }
    let repo_tags: Vec<String> = tags.iter().map(|t| normalize_ref(t)).collect();
    let manifest = vec![DockerManifestEntry {
        config: format!("blobs/sha256/{cfg_hex}"),
        repo_tags: Some(repo_tags.clone()),
        layers: layers.clone(),
    }];
    append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest)?)?;
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let top = img
        .config
        .rootfs
        .diff_ids
        .last()
        .map(|d| hex_part(d).map(String::from))
        .transpose()?;
    for t in &repo_tags {
        if let (Some((repo, tag)), Some(top)) = (t.rsplit_once(':'), &top) {
            repos
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), top.clone());
        }
    }
    append_bytes(&mut b, "repositories", &serde_json::to_vec(&repos)?)?;
    b.into_inner().context("finishing archive")
}

/// The image's filesystem, all layers applied, into `dest`.
pub fn write_local(store: &Store, img: &ResolvedImage, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for l in &img.manifest.layers {
        unpack(
            open_decompressed(&store.blob_path(&l.digest)?)?,
            dest,
            UnpackMode::Apply,
        )
        .with_context(|| format!("unpacking layer {}", l.digest))?;
    }
    Ok(())
}

/// Imports an OCI-layout or docker-archive tar; returns (name, manifest digest) pairs.
pub fn import(store: &Store, archive: impl Read) -> Result<Vec<(String, String)>> {
    let dir = store.temp_dir("import-")?;
    unpack(archive, dir.path(), UnpackMode::Apply).context("unpacking archive")?;
    // Members are read by path below: no symlink out, no FIFO, no device.
    crate::fsutil::safe::plain_tree(dir.path()).context("checking archive")?;
    if dir.path().join("index.json").exists() {
        import_oci(store, dir.path())
    } else if dir.path().join("manifest.json").exists() {
        import_docker(store, dir.path())
    } else {
        bail!("archive is neither an OCI layout nor a docker archive")
    }
}

fn put_file_blob(store: &Store, path: &Path, expected: Option<&str>) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut w = store.blob_writer()?;
    std::io::copy(&mut f, &mut w).with_context(|| format!("reading {}", path.display()))?;
    w.commit(expected)
}

/// containerd's `ctr images export` puts the full name here and only the
/// tag in `org.opencontainers.image.ref.name`.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The name an OCI layout gives an index entry: containerd's full name when
/// present (its ref.name is a bare tag), else the OCI ref.name.
fn oci_entry_name(d: &Descriptor) -> Option<&String> {
    d.annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
}

fn is_index_media(media: &str) -> bool {
    media == MEDIA_INDEX || media == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The host platform's manifest in a nested image index (what containerd
/// exports for a pulled multi-platform image), or its only manifest.
fn choose_platform(index: &Index) -> Result<Descriptor> {
    let arch = crate::image::host_arch();
    let ours: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    match (ours.first(), index.manifests.as_slice()) {
        (Some(d), _) => Ok((*d).clone()),
        (None, [only]) => Ok(only.clone()),
        _ => bail!("the archive's image index has no linux/{arch} manifest"),
    }
}

fn import_oci(store: &Store, dir: &Path) -> Result<Vec<(String, String)>> {
    use crate::image::{read_limited, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
    let index: Index = serde_json::from_slice(&read_limited(
        &dir.join("index.json"),
        "index.json",
        MAX_MANIFEST_SIZE,
    )?)
    .context("parsing index.json")?;
    // Every name is checked before anything is stored.
    for d in &index.manifests {
        if let Some(n) = oci_entry_name(d) {
            crate::store::canonical_tag(n).context("index.json names an image")?;
        }
    }
    let blob = |digest: &str| -> Result<std::path::PathBuf> {
        Ok(dir.join("blobs/sha256").join(hex_part(digest)?))
    };
    let mut out = Vec::new();
    for entry in &index.manifests {
        let mut bytes = read_limited(&blob(&entry.digest)?, "manifest", MAX_MANIFEST_SIZE)?;
        let mut d = entry.clone();
        // A nested index (multi-platform image): the store keeps the
        // host's manifest, as a pull does.
        let nested = is_index_media(&d.media_type)
            || serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .is_some_and(|v| v.get("manifests").is_some() && v.get("layers").is_none());
        if nested {
            let inner: Index =
                serde_json::from_slice(&bytes).context("parsing nested image index")?;
            let chosen = choose_platform(&inner)?;
            bytes = read_limited(&blob(&chosen.digest)?, "manifest", MAX_MANIFEST_SIZE)?;
            d = chosen;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).context("parsing manifest")?;
        crate::image::check_size(
            format!("image config {}", manifest.config.digest),
            fs::metadata(blob(&manifest.config.digest)?)
                .context("image config blob")?
                .len(),
            MAX_CONFIG_SIZE,
        )?;
        for l in &manifest.layers {
            put_file_blob(store, &blob(&l.digest)?, Some(&l.digest))?;
        }
        put_file_blob(
            store,
            &blob(&manifest.config.digest)?,
            Some(&manifest.config.digest),
        )?;
        put_file_blob(store, &blob(&d.digest)?, Some(&d.digest))?;
        let tags: Vec<String> = oci_entry_name(entry).cloned().into_iter().collect();
        d.annotations.clear();
        store.add_to_index(&d, &tags)?;
        out.push((tags.first().cloned().unwrap_or_default(), d.digest.clone()));
    }
    Ok(out)
}

fn import_docker(store: &Store, dir: &Path) -> Result<Vec<(String, String)>> {
    use crate::image::{read_limited, MAX_ARCHIVE_MANIFEST_SIZE, MAX_CONFIG_SIZE};
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&read_limited(
        &dir.join("manifest.json"),
        "manifest.json",
        MAX_ARCHIVE_MANIFEST_SIZE,
    )?)
    .context("parsing manifest.json")?;
    // Every name is checked before anything is stored.
    for e in &entries {
        for t in e.repo_tags.iter().flatten() {
            crate::store::canonical_tag(t).context("manifest.json RepoTags")?;
        }
    }
    let mut out = Vec::new();
    for e in entries {
        let safe = |p: &str| -> Result<std::path::PathBuf> {
            let clean = crate::layer::unpack::clean_name(p.as_bytes())?;
            Ok(dir.join(clean))
        };
        let cfg_bytes = read_limited(&safe(&e.config)?, "image config", MAX_CONFIG_SIZE)
            .context("reading image config")?;
        let config: ImageConfig =
            serde_json::from_slice(&cfg_bytes).context("parsing image config")?;
        let mut layers = Vec::new();
        for (i, l) in e.layers.iter().enumerate() {
            // Layers may be compressed or not; keep the bytes, label by content.
            let path = safe(l)?;
            let mut head = [0u8; 4];
            let n = File::open(&path)?.read(&mut head)?;
            let media = if n >= 2 && head[..2] == [0x1f, 0x8b] {
                crate::image::MEDIA_LAYER_GZIP
            } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
                crate::image::MEDIA_LAYER_ZSTD
            } else {
                crate::image::MEDIA_LAYER_TAR
            };
            let (digest, size) = put_file_blob(store, &path, None)?;
            if media == crate::image::MEDIA_LAYER_TAR
                && config.rootfs.diff_ids.get(i) != Some(&digest)
            {
                bail!(
                    "layer {l} does not match diff_id {:?}",
                    config.rootfs.diff_ids.get(i)
                );
            }
            layers.push(Descriptor {
                media_type: media.into(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        let tags = e.repo_tags.unwrap_or_default();
        // The config as written: its digest is the image ID Docker shows.
        let desc = store.commit_image_bytes(&cfg_bytes, &config, layers, &tags)?;
        // One line per name, as `docker load` prints them.
        if tags.is_empty() {
            out.push((String::new(), desc.digest.clone()));
        }
        for t in tags {
            out.push((t, desc.digest.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            append_bytes(&mut b, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A layer tar holding one file.
    fn layer() -> Vec<u8> {
        tar_of(&[("hello", b"hi\n")])
    }

    #[test]
    fn docker_archives_keep_config_bytes_nulls_and_every_name() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let l = layer();
        let diff = sha256_of(&l);
        // As `docker save` writes it: nulls, container_config, Go's spacing.
        let cfg = format!(
            r#"{{"architecture":"amd64","config":{{"Env":["PATH=/bin"],"Cmd":["sh"],"OnBuild":null,"Volumes":null,"Labels":null,"Entrypoint":null}},"container_config":{{"Hostname":"","Cmd":null,"OnBuild":null}},"created":"2020-01-01T00:00:00Z","history":[{{"created":"2020-01-01T00:00:00Z","created_by":"ADD x /"}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
        );
        let cfg_digest = sha256_of(cfg.as_bytes());
        let manifest = format!(
            r#"[{{"Config":"{}.json","RepoTags":["busybox:latest","docker.io/library/busybox:1.36"],"Layers":["abc/layer.tar"]}}]"#,
            &cfg_digest[7..]
        );
        let archive = tar_of(&[
            (&format!("{}.json", &cfg_digest[7..]), cfg.as_bytes()),
            ("abc/layer.tar", &l),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let loaded = import(&store, archive.as_slice()).unwrap();
        let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["busybox:latest", "docker.io/library/busybox:1.36"]);
        let img = store.resolve("busybox").unwrap();
        // Same config bytes, so the same image ID Docker shows.
        assert_eq!(img.manifest.config.digest, cfg_digest);
        assert_eq!(
            store.resolve("busybox:1.36").unwrap().descriptor.digest,
            img.descriptor.digest
        );
        // The uncompressed layer is stored as it came: digest = diff_id.
        assert_eq!(img.manifest.layers[0].digest, diff);
        let ids: Vec<String> = store
            .image_summaries()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [cfg_digest]);
    }

    #[test]
    fn ctr_exports_load_under_the_containerd_name_and_host_platform() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let l = layer();
        let diff = sha256_of(&l);
        let arch = crate::image::host_arch();
        let cfg = format!(
            r#"{{"architecture":"{arch}","config":{{}},"os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
        );
        let cfg_d = sha256_of(cfg.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cfg_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":"{diff}","size":{}}}]}}"#,
            cfg.len(),
            l.len()
        );
        let man_d = sha256_of(manifest.as_bytes());
        // A multi-platform index whose other platform's blobs are absent,
        // as `ctr images export` writes for a pulled image.
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{}","size":1,"platform":{{"architecture":"other","os":"linux"}}}},{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{man_d}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
            "0".repeat(64),
            manifest.len()
        );
        let list_d = sha256_of(list.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","digest":"{list_d}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/web:v1","org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            list.len()
        );
        let blob = |d: &str| format!("blobs/sha256/{}", &d[7..]);
        let archive = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&blob(&list_d), list.as_bytes()),
            (&blob(&man_d), manifest.as_bytes()),
            (&blob(&cfg_d), cfg.as_bytes()),
            (&blob(&diff), &l),
        ]);
        let loaded = import(&store, archive.as_slice()).unwrap();
        assert_eq!(
            loaded,
            [("docker.io/library/web:v1".to_string(), man_d.clone())]
        );
        let img = store.resolve("web:v1").unwrap();
        assert_eq!(img.descriptor.digest, man_d);
        assert_eq!(img.manifest.config.digest, cfg_d);
        // "v1" alone is not taken as a name.
        assert!(store.resolve("v1").is_err());
    }
}
