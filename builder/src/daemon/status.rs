//! How failures become gRPC statuses: the code a client can act on, and a
//! message that names nothing of the daemon's private directories.
//!
//! The codes are the contract documented at the top of
//! proto/proto/builder.proto: the caller's mistakes are INVALID_ARGUMENT,
//! missing images NOT_FOUND, a store that lost blobs of an image
//! FAILED_PRECONDITION, a failing build step UNKNOWN (as BuildKit), and
//! only the daemon's own faults INTERNAL.
use crate::dockerfile::ParseError;
use crate::image::TooLarge;
use crate::store::InvalidReference;
use std::path::Path;
use tonic::Status;

/// A failure of the caller's input: reported as INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Whether the error is the caller's fault.
fn is_invalid(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<InvalidReference>()
            || c.is::<TooLarge>()
            || c.is::<ParseError>()
            || c.is::<BadInput>()
    })
}

/// Whether a file the store should have is gone (a blob pruned or lost).
fn is_missing_file(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Status of a store call (lookup, inspect, tag, export, ...).
pub fn store_status(e: anyhow::Error, scrub: &Scrub) -> Status {
    let msg = scrub.apply(&format!("{e:#}"));
    if is_invalid(&e) {
        Status::invalid_argument(msg)
    } else if is_missing_file(&e) {
        Status::failed_precondition(msg)
    } else if msg.contains("not found") {
        Status::not_found(msg)
    } else {
        // The daemon's own fault: the operator needs it too.
        eprintln!("berth-buildd: internal error: {msg}");
        Status::internal(msg)
    }
}

/// Status that ends a failed build.
pub fn build_status(e: &anyhow::Error, scrub: &Scrub) -> Status {
    let msg = scrub.apply(&format!("{e:#}"));
    if is_invalid(e) {
        Status::invalid_argument(msg)
    } else {
        Status::unknown(msg)
    }
}

/// Rewrites the daemon's private paths in messages: each `(path, shown)`
/// pair replaces `path` (and what is below it) by `shown`.
#[derive(Debug, Clone, Default)]
pub struct Scrub(Vec<(String, String)>);

impl Scrub {
    /// Adds a replacement; longer (more specific) paths are replaced first.
    pub fn with(mut self, path: &Path, shown: &str) -> Self {
        let p = path.to_string_lossy().trim_end_matches('/').to_string();
        if !p.is_empty() {
            self.0.push((p, shown.to_string()));
            self.0.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
        self
    }

    pub fn apply(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for (p, shown) in &self.0 {
            // `<context>/a/b` shows as `a/b`: the path the Dockerfile used.
            if shown.is_empty() {
                out = out.replace(&format!("{p}/"), "");
            }
            out = out.replace(p.as_str(), shown);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_follow_the_contract() {
        let s = Scrub::default();
        let bad: anyhow::Error = crate::store::canonical_tag("../x").unwrap_err().into();
        let st = store_status(bad.context("tagging"), &s);
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(st.message().contains("invalid reference format"), "{st:?}");
        let big = crate::dockerfile::check_dockerfile_size(3 << 20)
            .map_err(anyhow::Error::from)
            .context("build")
            .unwrap_err();
        assert_eq!(store_status(big, &s).code(), tonic::Code::InvalidArgument);
        let missing = anyhow::anyhow!("image \"x\" not found");
        assert_eq!(store_status(missing, &s).code(), tonic::Code::NotFound);
        let lost = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading blob sha256:00");
        assert_eq!(
            store_status(lost, &s).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            store_status(anyhow::anyhow!("disk on fire"), &s).code(),
            tonic::Code::Internal
        );
        let step = anyhow::anyhow!("RUN exited with status 1");
        assert_eq!(build_status(&step, &s).code(), tonic::Code::Unknown);
        let input = anyhow::Error::from(BadInput("not a tar".into()));
        assert_eq!(
            build_status(&input, &s).code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn private_paths_are_rewritten() {
        let s = Scrub::default()
            .with(Path::new("/var/lib/berth/tmp/ctx-abc"), "<build>")
            .with(Path::new("/var/lib/berth/tmp/ctx-abc/context"), "");
        assert_eq!(
            s.apply("copying /var/lib/berth/tmp/ctx-abc/context/src/x: not found"),
            "copying src/x: not found"
        );
        assert_eq!(
            s.apply("writing /var/lib/berth/tmp/ctx-abc/Dockerfile"),
            "writing <build>/Dockerfile"
        );
    }
}
