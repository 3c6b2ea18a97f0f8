//! The daemon's listening socket, created with its final owner and mode
//! before anyone can reach it.
//!
//! Connecting to berth-buildd is root on the host (a build runs RUN steps
//! as root, binds context directories, writes the store), as with
//! docker.sock and buildkitd. So the socket is `0660 <euid>:<group>`
//! whatever the umask and the mode of its directory: it is bound inside a
//! fresh 0700 directory next to the final path (where no one else can
//! reach it), chowned and chmodded there, checked, and only then renamed
//! into place. There is no moment at which the final path is a socket with
//! looser permissions.
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Mode of the socket: owner and group read/write, nothing for others.
pub const SOCKET_MODE: u32 = 0o660;

/// Resolves `--group`: a group name or a numeric gid.
pub fn parse_group(spec: &str) -> Result<u32> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(spec)
        .with_context(|| format!("looking up group {spec:?}"))?
    {
        Some(g) => Ok(g.gid.as_raw()),
        None => bail!("group {spec:?} does not exist"),
    }
}

/// Binds a unix socket at `path`, owned by this process's euid and `gid`,
/// mode 0660. An existing socket at `path` (a stale one) is replaced
/// atomically; anything else there is left alone and reported.
pub fn bind(path: &Path, gid: u32) -> Result<UnixListener> {
    let name = path
        .file_name()
        .with_context(|| format!("socket path {} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories made here are 0755 even under umask 000: a writable
    // directory would let others move the socket away and put theirs there.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => bail!(
            "{} exists and is not a socket: refusing to replace it",
            path.display()
        ),
        _ => {}
    }
    // tempfile creates the directory 0700 (the umask can only take bits away).
    let private = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempdir_in(dir)
        .with_context(|| format!("creating a private directory in {}", dir.display()))?;
    let staged = private.path().join("sock");
    let listener =
        UnixListener::bind(&staged).with_context(|| format!("binding {}", staged.display()))?;
    let uid = nix::unistd::geteuid();
    // Nobody else can reach `staged` (its directory is ours and 0700), so
    // acting on the path here is not racy.
    nix::unistd::chown(&staged, Some(uid), Some(nix::unistd::Gid::from_raw(gid)))
        .with_context(|| format!("chown {} to {}:{gid}", staged.display(), uid))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {:o} {}", SOCKET_MODE, staged.display()))?;
    let m =
        std::fs::symlink_metadata(&staged).with_context(|| format!("stat {}", staged.display()))?;
    if !m.file_type().is_socket()
        || m.mode() & 0o7777 != SOCKET_MODE
        || m.uid() != uid.as_raw()
        || m.gid() != gid
    {
        bail!(
            "{} came out as mode {:o} {}:{}, not {:o} {}:{gid}",
            staged.display(),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            SOCKET_MODE,
            uid
        );
    }
    std::fs::rename(&staged, path)
        .with_context(|| format!("moving the socket to {}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_is_0660_in_a_world_writable_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = d.path().join("b.sock");
        // A stale socket is replaced.
        drop(UnixListener::bind(&path).unwrap());
        // (The umask is process-wide, so the integration test runs the
        // daemon under umask 000; here the directory is 0777.)
        let gid = nix::unistd::getegid().as_raw();
        let _l = bind(&path, gid).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, SOCKET_MODE);
        assert_eq!(m.gid(), gid);
        // The private staging directory is gone.
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        std::fs::write(&path, "keep").unwrap();
        assert!(bind(&path, 0).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(parse_group("0").unwrap(), 0);
        assert_eq!(parse_group("root").unwrap(), 0);
        assert!(parse_group("no-such-group-berth").is_err());
    }
}
