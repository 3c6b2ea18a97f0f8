//! Image reference syntax check for FROM, as BuildKit's
//! `reference.ParseNormalizedNamed` applies it: a base that is not a stage
//! must be a valid reference, and its repository path must be lowercase
//! (`FROM MIDDLE` for a stage declared `AS middle` is an error, not that
//! stage: stage names are matched exactly).

/// Checks `name` (`[domain/]path[:tag][@digest]`) with the store's reference
/// grammar; the error is the distribution/reference library's wording, which
/// BuildKit passes on: a name that would parse lowercased gets "repository
/// name must be lowercase", as that library decides it.
pub fn check_reference(name: &str) -> Result<(), String> {
    use crate::store::parse_reference;
    const INVALID: &str = "invalid reference format";
    match parse_reference(name) {
        Ok(_) => Ok(()),
        Err(_) if parse_reference(&name.to_ascii_lowercase()).is_ok() => {
            Err(format!("{INVALID}: repository name must be lowercase"))
        }
        Err(_) => Err(INVALID.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_buildkit_parses_them() {
        for ok in [
            "alpine",
            "alpine:3.19",
            "library/alpine:Latest",
            "Registry.Example.com:5000/team/app:v1",
            "localhost/app",
            "a__b/c-d/e.f_g",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        // Docker 20.10's BuildKit: `FROM MIDDLE` (stage `AS middle`) fails with
        // `failed to parse stage name "MIDDLE": invalid reference format:
        // repository name must be lowercase`.
        assert_eq!(
            check_reference("MIDDLE").unwrap_err(),
            "invalid reference format: repository name must be lowercase"
        );
        assert!(check_reference("team/App").is_err());
        for bad in ["a//b", "-a", "a:", "a:-x", "a@sha256:12", "a b", "a..b", ""] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }
}
