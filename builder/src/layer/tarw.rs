//! Deterministic PAX tar writing: ustar headers with PAX records only where
//! needed, no user/group names, mtimes truncated to seconds and optionally
//! clamped to SOURCE_DATE_EPOCH, and only the `security.capability` xattr.
use anyhow::{Context, Result};
use std::fs::{File, Metadata};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use tar::{EntryType, Header};

/// The only xattr kept in layers (what BuildKit keeps too).
pub const KEPT_XATTR: &str = "security.capability";

/// Reads SOURCE_DATE_EPOCH from the environment, if set and valid.
pub fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    epoch: Option<i64>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W, epoch: Option<i64>) -> Self {
        Self {
            builder: tar::Builder::new(w),
            epoch,
        }
    }

    fn mtime(&self, m: &Metadata) -> u64 {
        let t = m.mtime();
        let t = match self.epoch {
            Some(e) if t > e => e,
            _ => t,
        };
        t.max(0) as u64
    }

    fn base_header(&self, m: &Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(self.mtime(m));
        h.set_size(0);
        h
    }

    /// Sets path and link name, moving either to PAX records when ustar can't hold it.
    fn write(
        &mut self,
        mut h: Header,
        name: &str,
        link: Option<&str>,
        xattrs: &[(String, Vec<u8>)],
        data: &mut dyn std::io::Read,
    ) -> Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if h.set_path(name).is_err() {
            pax.push(("path".into(), name.as_bytes().to_vec()));
            let short: String = name
                .chars()
                .rev()
                .take(90)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            h.set_path(short.trim_start_matches('/'))
                .with_context(|| format!("tar header for {name}"))?;
        }
        if let Some(l) = link {
            if h.set_link_name(l).is_err() {
                pax.push(("linkpath".into(), l.as_bytes().to_vec()));
                h.set_link_name("././@LongLink")
                    .context("tar link header")?;
            }
        }
        for (k, v) in xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .context("writing PAX header")?;
        }
        h.set_cksum();
        self.builder
            .append(&h, data)
            .with_context(|| format!("writing tar entry {name}"))
    }

    /// Appends the file at `src` (not following symlinks) under `name`.
    pub fn append_path(&mut self, name: &str, src: &Path, m: &Metadata) -> Result<()> {
        let ft = m.file_type();
        let xattrs = kept_xattrs(src);
        if ft.is_dir() {
            let h = self.base_header(m, EntryType::Directory);
            let dir_name = format!("{}/", name.trim_end_matches('/'));
            self.write(h, &dir_name, None, &xattrs, &mut std::io::empty())
        } else if ft.is_file() {
            let mut h = self.base_header(m, EntryType::Regular);
            h.set_size(m.len());
            let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
            // Bound the read to the size in the header even if the file grows.
            let mut r = std::io::Read::take(f, m.len());
            self.write(h, name, None, &xattrs, &mut r)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src)
                .with_context(|| format!("reading link {}", src.display()))?;
            let h = self.base_header(m, EntryType::Symlink);
            let t = target.to_string_lossy().into_owned();
            self.write(h, name, Some(&t), &[], &mut std::io::empty())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut h = self.base_header(m, kind);
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))
                .context("device major")?;
            h.set_device_minor(libc::minor(rdev))
                .context("device minor")?;
            self.write(h, name, None, &xattrs, &mut std::io::empty())
        } else if ft.is_fifo() {
            let h = self.base_header(m, EntryType::Fifo);
            self.write(h, name, None, &xattrs, &mut std::io::empty())
        } else {
            // Sockets can't be represented in a layer; Docker skips them too.
            Ok(())
        }
    }

    /// Appends a hardlink entry `name` pointing at the earlier entry `target`.
    pub fn append_hardlink(&mut self, name: &str, target: &str, m: &Metadata) -> Result<()> {
        let h = self.base_header(m, EntryType::Link);
        self.write(h, name, Some(target), &[], &mut std::io::empty())
    }

    /// Appends an empty regular file (used for whiteouts), with `m`'s ownership and mtime.
    pub fn append_empty(&mut self, name: &str, m: &Metadata) -> Result<()> {
        let h = self.base_header(m, EntryType::Regular);
        self.write(h, name, None, &[], &mut std::io::empty())
    }

    pub fn finish(self) -> Result<W> {
        self.builder.into_inner().context("finishing tar")
    }
}

fn kept_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    match xattr::get(path, KEPT_XATTR) {
        Ok(Some(v)) => vec![(KEPT_XATTR.to_string(), v)],
        _ => Vec::new(),
    }
}
