//! The in-process backend: engine and store in this process.
use super::{Backend, ImageRow, RegistryAccess};
use crate::engine::{build, BuildOptions};
use crate::exec::run::Runtime;
use crate::export::{self, Format};
use crate::progress::Progress;
use crate::registry::{PullOutcome, PushOutcome, TransferProgress};
use crate::store::{DiskUsage, HistoryRow, PruneReport, Store};
use anyhow::{Context, Result};
use std::path::Path;

pub struct Embedded {
    pub store: Store,
    pub runtime: Option<std::path::PathBuf>,
    pub access: RegistryAccess,
}

impl Embedded {
    pub fn new(root: &Path, runtime: Option<&Path>, access: RegistryAccess) -> Result<Self> {
        Ok(Self {
            store: Store::open(root)?,
            runtime: runtime.map(Path::to_path_buf),
            access,
        })
    }
}

impl Backend for Embedded {
    fn build(&self, opts: &BuildOptions, progress: &dyn Progress) -> Result<String> {
        let mut opts = opts.clone();
        opts.runtime = Runtime::locate(self.runtime.as_deref(), self.store.root().join("runtime"))?;
        opts.registry = Some(self.access.registry()?);
        Ok(build(&self.store, &opts, progress)?.descriptor.digest)
    }

    fn plan(&self, opts: &BuildOptions) -> Result<String> {
        crate::engine::plan_json(opts, &self.store)
    }

    fn images(&self) -> Result<Vec<ImageRow>> {
        Ok(self
            .store
            .image_summaries()?
            .into_iter()
            .map(|i| ImageRow {
                tags: i.tags,
                digest: i.digest,
                id: i.id,
                size: i.size,
                unpacked_size: i.unpacked_size,
                created: i.created,
            })
            .collect())
    }

    fn inspect(&self, name: &str) -> Result<(String, String, String)> {
        let img = self.store.resolve(name)?;
        Ok((
            img.descriptor.digest.clone(),
            String::from_utf8(self.store.read_blob(&img.descriptor.digest)?)
                .context("manifest is not UTF-8")?,
            String::from_utf8(self.store.read_blob(&img.manifest.config.digest)?)
                .context("config is not UTF-8")?,
        ))
    }

    fn tag(&self, src: &str, dst: &str) -> Result<()> {
        self.store.tag(src, dst)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.store.remove(name)
    }

    fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        self.store.history(name)
    }

    fn save(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()> {
        let img = self.store.resolve(name)?;
        let mut tags = export::export_names(&self.store, name, &img)?;
        for n in also {
            for t in export::export_names(&self.store, n, &img)? {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
        export::export(&self.store, &img, &tags, format, dest)
    }

    fn load(&self, src: &Path) -> Result<Vec<(String, String)>> {
        let f = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        export::import(&self.store, std::io::BufReader::new(f))
    }

    fn disk_usage(&self) -> Result<DiskUsage> {
        self.store.disk_usage()
    }

    fn prune(&self) -> Result<PruneReport> {
        self.store.prune()
    }

    fn bundle(&self, name: &str, dir: &Path) -> Result<()> {
        crate::bundle::write_bundle(&self.store, name, dir)
    }

    fn export_dir(&self, name: &str, also: &[String], format: Format, dest: &Path) -> Result<()> {
        self.save(name, also, format, dest)
    }

    fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PullOutcome> {
        let mut reg = self.access.registry()?;
        if let Some(p) = platform {
            reg.platform = crate::registry::PlatformSpec::parse(p)?;
        }
        crate::registry::pull(&self.store, &reg, reference, progress)
    }

    fn push(
        &self,
        image: &str,
        dest: Option<&str>,
        progress: &dyn TransferProgress,
    ) -> Result<PushOutcome> {
        let reg = self.access.registry()?;
        crate::registry::push(&self.store, &reg, image, dest, progress)
    }
}
