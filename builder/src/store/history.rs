//! `history`: an image's history entries as Docker lists them — newest
//! first, each with the size of the layer it made and, for the newest, the
//! image ID (older entries are `<missing>`, as for any image BuildKit built
//! or a registry gave: they have no image of their own).
use super::Store;
use crate::image::History;
use anyhow::Result;
use serde::Serialize;

/// One line of `history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// The image ID (config digest) on the newest row, `None` on the others.
    pub id: Option<String>,
    pub history: History,
    /// Bytes of content the step's layer adds as Docker counts them (see
    /// `layer_size.rs`: the unpacked size, not the compressed blob); 0 for
    /// empty layers.
    pub size: u64,
}

impl Store {
    /// The history of `name`, newest first, each non-empty entry paired with
    /// its layer in order.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let img = self.resolve(name)?;
        let mut layers = img.manifest.layers.iter();
        let mut rows = Vec::with_capacity(img.config.history.len());
        for h in &img.config.history {
            let size = if h.empty_layer {
                0
            } else {
                match layers.next() {
                    Some(l) => self.layer_content_size(&l.digest)?,
                    None => 0,
                }
            };
            rows.push(HistoryRow {
                id: None,
                history: h.clone(),
                size,
            });
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            top.id = Some(img.manifest.config.digest.clone());
        }
        Ok(rows)
    }
}
