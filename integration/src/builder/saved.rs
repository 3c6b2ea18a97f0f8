//! An image read back from a docker-archive (`berth-build save`,
//! `docker save`, `build -o type=docker`).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The first image of an unpacked docker-archive.
pub struct SavedImage {
    /// The config blob as the archive stores it.
    pub config_bytes: String,
    /// The same, parsed.
    pub config: Value,
    /// The layer files in the archive's order (in the unpacked directory).
    pub layers: Vec<PathBuf>,
    /// The archive's manifest.json entry for the image.
    pub manifest: Value,
}

impl SavedImage {
    /// Unpacks `archive` into `dir` (created) and reads its first image.
    pub fn unpack(archive: &Path, dir: &Path) -> SavedImage {
        std::fs::create_dir_all(dir).unwrap();
        tar::Archive::new(std::fs::File::open(archive).unwrap())
            .unpack(dir)
            .unwrap();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let m = manifest[0].clone();
        let config_bytes =
            std::fs::read_to_string(dir.join(m["Config"].as_str().unwrap())).unwrap();
        let config: Value = serde_json::from_str(&config_bytes).unwrap();
        let layers = m["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| dir.join(l.as_str().unwrap()))
            .collect();
        SavedImage {
            config_bytes,
            config,
            layers,
            manifest: m,
        }
    }
}
