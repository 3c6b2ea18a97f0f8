//! Where blobs came from: `sources/<digest-hex>` lists the registry
//! repositories (`host/repository`) a blob was pulled from or pushed to, one
//! per line, as containerd's `containerd.io/distribution.source` labels. A
//! push to another repository of the same registry asks it to mount the
//! blob from one of them instead of uploading it again.
use super::Store;
use crate::digest::hex_part;
use crate::fsutil::replace_file;
use anyhow::Result;
use std::path::PathBuf;

/// Repositories remembered per blob; older ones are forgotten first.
const MAX_SOURCES: usize = 16;

impl Store {
    fn source_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("sources").join(hex_part(digest)?))
    }

    /// The repositories `digest` is known to be in, most recent first.
    pub fn sources(&self, digest: &str) -> Vec<String> {
        let Ok(path) = self.source_path(digest) else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records that `digest` is in `repository` (`host/path`).
    pub fn add_source(&self, digest: &str, repository: &str) -> Result<()> {
        let mut list = self.sources(digest);
        list.retain(|s| s != repository);
        list.insert(0, repository.to_string());
        list.truncate(MAX_SOURCES);
        let mut text = list.join("\n");
        text.push('\n');
        // A hint only: a lost file costs an upload, never correctness.
        replace_file(&self.source_path(digest)?, text.as_bytes())
    }
}
