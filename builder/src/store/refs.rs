//! Image reference names as stored in `org.opencontainers.image.ref.name`.
use anyhow::{bail, Result};

/// Adds `:latest` when a name has no tag (the part after the last `/` has no `:`).
/// Digests are returned unchanged.
pub fn normalize_ref(name: &str) -> String {
    if name.starts_with("sha256:") || name.contains('@') {
        return name.to_string();
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Accepts Docker-style names: lowercase path components, optional registry
/// host with port, and a tag of `[A-Za-z0-9_.-]{1,128}`.
pub fn validate_ref(name: &str) -> Result<()> {
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, "latest"),
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        });
    if !tag_ok || !repo_ok {
        bail!("invalid image reference {name:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates() {
        assert_eq!(normalize_ref("hello"), "hello:latest");
        assert_eq!(
            normalize_ref("localhost:5000/a/b"),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(normalize_ref("a:v1"), "a:v1");
        assert!(validate_ref("hello:latest").is_ok());
        assert!(validate_ref("localhost:5000/a/b:v1.2").is_ok());
        assert!(validate_ref("Bad:tag").is_err());
        assert!(validate_ref("a:").is_err());
        assert!(validate_ref("a b:c").is_err());
    }
}
