//! Client-streamed uploads (image archives, root filesystem tars, trees for
//! `cp`) spooled into a file in the store's tmp/, under the daemon's
//! `--max-import-size` cap.

use crate::store::{Store, WorkDir};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// What the first message of a client stream must carry (`take` finds it;
/// `what` names it): an empty stream or another first message is
/// INVALID_ARGUMENT ("the first message must carry WHAT").
pub async fn first_message<T, O>(
    stream: &mut Streaming<T>,
    what: &str,
    take: impl FnOnce(T) -> Option<O>,
) -> Result<O, Status> {
    stream
        .message()
        .await?
        .and_then(take)
        .ok_or_else(|| Status::invalid_argument(format!("the first message must carry {what}")))
}

/// [`spool`] into `file` in a new temp dir of `store` named `prefix…`:
/// the dir (removed when dropped, on any return) and the file's path.
pub async fn spool_into_temp<T>(
    store: &Store,
    prefix: &str,
    file: &str,
    stream: &mut Streaming<T>,
    max: u64,
    what: &str,
    chunk: impl FnMut(T) -> Option<Vec<u8>>,
) -> Result<(WorkDir, PathBuf), Status> {
    let tmp = store
        .temp_dir(prefix)
        .map_err(|e| Status::internal(format!("{e:#}")))?;
    let path = tmp.path().join(file);
    spool(stream, &path, max, what, chunk).await?;
    Ok((tmp, path))
}
