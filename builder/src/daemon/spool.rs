//! Client-streamed uploads (image archives, root filesystem tars, trees for
//! `cp`) spooled into a file in the store's tmp/, under the daemon's
//! `--max-import-size` cap.

use std::io::Write;
use std::path::Path;
use tonic::{Status, Streaming};

/// Writes the data `chunk` takes out of each message into `path` until the
/// stream ends; a message that carries no chunk (`None`: options sent again)
/// is INVALID_ARGUMENT. More than `max` bytes is RESOURCE_EXHAUSTED naming
/// `what`; the caller's temp dir, dropped on return, takes the partial file
/// with it.
pub async fn spool<T>(
    stream: &mut Streaming<T>,
    path: &Path,
    max: u64,
    what: &str,
    mut chunk: impl FnMut(T) -> Option<Vec<u8>>,
) -> Result<(), Status> {
    let mut f = std::fs::File::create(path).map_err(|e| Status::internal(e.to_string()))?;
    let mut received: u64 = 0;
    while let Some(m) = stream.message().await? {
        let data =
            chunk(m).ok_or_else(|| Status::invalid_argument("options may only come first"))?;
        received += data.len() as u64;
        if received > max {
            return Err(Status::resource_exhausted(format!(
                "{what} is too large: more than {max} bytes (berth-buildd --max-import-size)"
            )));
        }
        f.write_all(&data)
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    Ok(())
}
