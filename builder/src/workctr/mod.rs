//! Working containers, buildah's model: `from IMAGE` makes a named container
//! whose root is an overlay over the image's unpacked layers (the store's
//! snapshots) with a private upper directory; `run` starts processes in it
//! with the OCI runtime, `commit` turns the upper directory into one new
//! layer, `rm` removes everything it made.
//!
//! On disk, `<store>/containers/<name>/`: `state.json` (the image it came
//! from, its layers and config), `upper/`, `work/`, `merged/` (the overlay,
//! mounted only while an operation needs it) and `lock` (held for the
//! duration of each operation on the container).
pub mod archive;
pub mod bundle;
pub mod change;
pub mod cli;
pub mod commit;
pub mod copy;
pub mod diff;
pub mod mountpoint;
pub mod remote;
pub mod run;
pub mod terminal;
pub mod terminal_stdio;

use crate::image::{Descriptor, ImageConfig};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{umount2, MntFlags};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// What `from` recorded about a working container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The image name as given to `from`, and the manifest it resolved to.
    pub image: String,
    pub image_digest: String,
    /// The image's layers, bottom first, and their diff ids.
    pub layers: Vec<Descriptor>,
    pub config: ImageConfig,
    pub created: String,
    /// The command of the latest `run` (Docker's commit records the
    /// container's command as the history entry's `created_by`).
    #[serde(default)]
    pub last_command: Vec<String>,
}

/// An opened working container, its lock held until dropped.
pub struct Container {
    pub dir: PathBuf,
    pub state: State,
    _lock: Flock<File>,
}

/// Directory of all working containers of `store`.
pub fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

/// A container name that is not allowed (the caller's mistake).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// No working container has this name.
#[derive(Debug, thiserror::Error)]
#[error("no working container named {0:?}")]
pub struct NoSuchContainer(pub String);

/// The name is taken.
#[derive(Debug, thiserror::Error)]
#[error("a working container named {0:?} already exists")]
pub struct NameInUse(pub String);

/// Names are used as directory names and in runtime container ids.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(InvalidName(format!(
            "invalid container name {name:?}: want [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters"
        ))
        .into());
    }
    Ok(())
}

impl Container {
    /// Opens the container `name`, waiting for other operations on it.
    pub fn open(store: &Store, name: &str) -> Result<Self> {
        check_name(name)?;
        let dir = containers_dir(store).join(name);
        let lock = lock_file(&dir.join("lock")).map_err(|_| NoSuchContainer(name.to_string()))?;
        let state: State = serde_json::from_slice(
            &fs::read(dir.join("state.json")).map_err(|_| NoSuchContainer(name.to_string()))?,
        )
        .with_context(|| format!("parsing {}/state.json", dir.display()))?;
        Ok(Self {
            dir,
            state,
            _lock: lock,
        })
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn save(&self) -> Result<()> {
        write_state(&self.dir, &self.state)
    }

    /// The container's id with the OCI runtime.
    pub fn runtime_id(&self) -> String {
        runtime_id(&self.state.name)
    }

    /// The image's layers as overlay lower directories, bottom first
    /// (unpacked again from their blobs if a prune removed them).
    pub fn lowers(&self, store: &Store) -> Result<Vec<PathBuf>> {
        self.state
            .layers
            .iter()
            .zip(&self.state.config.rootfs.diff_ids)
            .map(|(l, d)| crate::snapshot::ensure_layer(store, &l.digest, d))
            .collect()
    }

    /// Mounts the container's root at `merged/`; unmounted when the
    /// returned guard drops.
    pub fn mount(&self, store: &Store) -> Result<Mounted> {
        let merged = self.dir.join("merged");
        // A crashed operation may have left it mounted.
        crate::snapshot::unmount_stale(&self.dir);
        let mut lower: Vec<PathBuf> = self.lowers(store)?;
        if lower.is_empty() {
            lower.push(self.dir.join("empty"));
        }
        lower.reverse();
        // overlayfs's `volatile` marks the work dir as unusable for a later
        // mount (work/incompat/volatile); the work dir holds nothing that
        // outlives a mount, so each mount gets a fresh one.
        let work = self.dir.join("work");
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
        }
        fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;
        crate::snapshot::overlay::Overlay {
            lowers: &lower,
            upper: &self.upper(),
            work: &work,
        }
        .mount(&merged)
        .with_context(|| format!("mounting the root of {}", self.state.name))?;
        Ok(Mounted { path: merged })
    }
}

/// A mounted container root, detached on drop.
pub struct Mounted {
    pub path: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

pub fn runtime_id(name: &str) -> String {
    format!("berth-work-{name}")
}

fn lock_file(path: &Path) -> Result<Flock<File>> {
    let f = File::options()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, dir.join("state.json")).context("saving the container state")
}

/// buildah's default name: `<image base name>-working-container[-N]`.
fn default_name(store: &Store, image: &str) -> String {
    let base = image
        .split('@')
        .next()
        .unwrap_or(image)
        .rsplit('/')
        .next()
        .unwrap_or(image);
    let base = base.split(':').next().unwrap_or(base);
    let base = id_chars(base);
    let base = if base.is_empty() || base.starts_with(['-', '.', '_']) {
        format!("w{base}")
    } else {
        base
    };
    let stem = format!("{base}-working-container");
    let dir = containers_dir(store);
    if !dir.join(&stem).exists() {
        return stem;
    }
    (1..)
        .map(|n| format!("{stem}-{n}"))
        .find(|n| !dir.join(n).exists())
        .unwrap_or(stem)
}

/// `from`: a new working container of `image`; returns its name.
pub fn create(store: &Store, image: &str, name: Option<&str>) -> Result<String> {
    let img = store.resolve(image)?;
    if img.manifest.layers.len() != img.config.rootfs.diff_ids.len() {
        bail!("image {image}: manifest and config disagree on the number of layers");
    }
    let all = containers_dir(store);
    fs::create_dir_all(&all).with_context(|| format!("creating {}", all.display()))?;
    // Serializes name choice and creation against other `from`s.
    let _guard = {
        let p = all.join(".lock");
        File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        lock_file(&p)?
    };
    let name = match name {
        Some(n) => n.to_string(),
        None => default_name(store, image),
    };
    check_name(&name)?;
    let dir = all.join(&name);
    if dir.exists() {
        return Err(NameInUse(name).into());
    }
    // Built in a temp dir and renamed: a half-made container never shows.
    let tmp = all.join(format!(".new-{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    for d in ["", "upper", "work", "merged", "empty"] {
        fs::create_dir(tmp.join(d)).with_context(|| format!("creating {}", tmp.display()))?;
    }
    File::create(tmp.join("lock")).context("creating the container lock")?;
    let state = State {
        name: name.clone(),
        image: image.to_string(),
        image_digest: img.descriptor.digest.clone(),
        layers: img.manifest.layers.clone(),
        config: img.config.clone(),
        created: now(),
        last_command: Vec::new(),
    };
    write_state(&tmp, &state)?;
    fs::rename(&tmp, &dir).with_context(|| format!("creating {}", dir.display()))?;
    // Unpack the layers now so `run` starts fast and a missing blob shows here.
    let c = Container::open(store, &name)?;
    if let Err(e) = c.lowers(store) {
        drop(c);
        let _ = remove(store, &name, None);
        return Err(e);
    }
    Ok(name)
}

/// All working containers, by name.
pub fn list(store: &Store) -> Result<Vec<State>> {
    let dir = containers_dir(store);
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in rd {
        let e = e.context("reading the containers directory")?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(data) = fs::read(e.path().join("state.json")) {
            if let Ok(s) = serde_json::from_slice::<State>(&data) {
                out.push(s);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Layer blobs and diff ids the working containers of `store` build on:
/// prune must keep them (see `Store::prune`).
pub fn in_use(
    store: &Store,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut blobs = std::collections::BTreeSet::new();
    let mut diff_ids = std::collections::BTreeSet::new();
    for s in list(store).unwrap_or_default() {
        blobs.extend(s.layers.iter().map(|l| l.digest.clone()));
        diff_ids.extend(s.config.rootfs.diff_ids.iter().cloned());
    }
    (blobs, diff_ids)
}

/// `rm`: deletes the container's runtime state, mounts and directory.
pub fn remove(store: &Store, name: &str, runtime: Option<&Path>) -> Result<()> {
    let c = Container::open(store, name)?;
    if let Some(rt) = runtime {
        // A `run` killed hard may have left the runtime's container behind.
        let _ = std::process::Command::new(rt)
            .arg("--root")
            .arg(store.root().join("runtime"))
            .args(["delete", "--force", &c.runtime_id()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    crate::snapshot::unmount_stale(&c.dir);
    // Renamed first so the name is free and nothing half-removed is listed.
    let all = containers_dir(store);
    let gone = all.join(format!(".rm-{name}-{}", std::process::id()));
    fs::rename(&c.dir, &gone).with_context(|| format!("removing {}", c.dir.display()))?;
    drop(c);
    fs::remove_dir_all(&gone).with_context(|| format!("removing {}", gone.display()))
}

/// RFC 3339 time with nanoseconds, as Docker writes `created`.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `s` with every character a container id or name cannot hold (anything
/// but ASCII letters, digits, `_`, `.` and `-`) replaced by `-`.
pub(crate) fn id_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}
