//! Image reference syntax check for FROM, as BuildKit's
//! `reference.ParseNormalizedNamed` applies it: a base that is not a stage
//! must be a valid reference, and its repository path must be lowercase
//! (`FROM MIDDLE` for a stage declared `AS middle` is an error, not that
//! stage: stage names are matched exactly).

/// Checks `name` (`[domain/]path[:tag][@digest]`); the error is the
/// distribution/reference library's wording.
pub fn check_reference(name: &str) -> Result<(), String> {
    const INVALID: &str = "invalid reference format";
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(INVALID.into());
        }
    }
    // A tag is a ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(INVALID.into());
        }
    }
    let mut comps: Vec<&str> = repo.split('/').collect();
    if comps.len() > 1 {
        let first = comps[0];
        if first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            if !first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            {
                return Err(INVALID.into());
            }
            comps.remove(0);
        }
    }
    if repo.is_empty() || repo.len() > 255 {
        return Err(INVALID.into());
    }
    for c in &comps {
        if c.chars().any(|ch| ch.is_ascii_uppercase()) {
            return Err(format!("{INVALID}: repository name must be lowercase"));
        }
        if !path_component_ok(c) {
            return Err(INVALID.into());
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
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
