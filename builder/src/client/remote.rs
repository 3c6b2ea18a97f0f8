//! The gRPC backend: talks to berth-buildd.
use super::{Backend, ImageRow};
use crate::engine::BuildOptions;
use crate::export::Format;
use crate::image::History;
use crate::progress::Progress;
use crate::store::{DiskUsage, PruneReport};
use anyhow::{bail, Result};
use std::path::Path;

pub struct Remote {
    addr: String,
}

impl Remote {
    pub fn connect(addr: &str) -> Result<Self> {
        bail!("daemon mode ({addr}) is not available in this build yet")
    }
}

impl Backend for Remote {
    fn build(&self, _: &BuildOptions, _: &dyn Progress) -> Result<String> {
        bail!("{}", self.addr)
    }
    fn images(&self) -> Result<Vec<ImageRow>> {
        bail!("{}", self.addr)
    }
    fn inspect(&self, _: &str) -> Result<(String, String, String)> {
        bail!("{}", self.addr)
    }
    fn tag(&self, _: &str, _: &str) -> Result<()> {
        bail!("{}", self.addr)
    }
    fn remove(&self, _: &str) -> Result<()> {
        bail!("{}", self.addr)
    }
    fn history(&self, _: &str) -> Result<Vec<History>> {
        bail!("{}", self.addr)
    }
    fn save(&self, _: &str, _: Format, _: &Path) -> Result<()> {
        bail!("{}", self.addr)
    }
    fn load(&self, _: &Path) -> Result<Vec<(String, String)>> {
        bail!("{}", self.addr)
    }
    fn disk_usage(&self) -> Result<DiskUsage> {
        bail!("{}", self.addr)
    }
    fn prune(&self) -> Result<PruneReport> {
        bail!("{}", self.addr)
    }
    fn bundle(&self, _: &str, _: &Path) -> Result<()> {
        bail!("{}", self.addr)
    }
    fn export_dir(&self, _: &str, _: Format, _: &Path) -> Result<()> {
        bail!("{}", self.addr)
    }
}
