//! Image references: Docker's grammar (distribution/reference) for the
//! names stored in `org.opencontainers.image.ref.name`, and the rule that
//! keeps names and digests apart.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component ( "/" path-component )*
//! domain     := host [ ":" port ]          host: DNS-ish labels or [IPv6]
//! path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex (32+ chars)
//! ```
//!
//! A name can never be a path (no `..`, no empty component, no leading `/`)
//! and a tag can never look like a digest: `sha256:<hex>` and 64-hex bare
//! ids always mean the content with that digest, so a stored name of that
//! form would let one image pose as another.
use anyhow::Result;

/// Docker's limit on the length of a repository name.
const NAME_MAX: usize = 255;
/// Docker's limit on the length of a tag.
const TAG_MAX: usize = 128;

/// A malformed or forbidden reference. Kept as a type so the daemon can
/// answer INVALID_ARGUMENT rather than INTERNAL.
#[derive(Debug, thiserror::Error)]
#[error("invalid reference format: {reason}: {input:?}")]
pub struct InvalidReference {
    pub input: String,
    pub reason: &'static str,
}

fn invalid(input: &str, reason: &'static str) -> InvalidReference {
    InvalidReference {
        input: input.to_string(),
        reason,
    }
}

/// A parsed reference. `domain` is kept as written (berth does not add
/// `docker.io/library/`: stored names are what the user typed, plus `:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: Option<String>,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Parses `s` with Docker's reference grammar.
pub fn parse_reference(s: &str) -> Result<Reference, InvalidReference> {
    if s.is_empty() {
        return Err(invalid(s, "empty reference"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            if !is_digest(d) {
                return Err(invalid(s, "malformed digest"));
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    // The tag is after the last ':' that follows the last '/'; a ':' before
    // a '/' belongs to the domain's port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(invalid(s, "malformed tag"));
        }
    }
    if name.is_empty() {
        return Err(invalid(s, "empty repository name"));
    }
    if name.len() > NAME_MAX {
        return Err(invalid(s, "repository name longer than 255 characters"));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // Like Docker, the first component is a domain only when more follow and
    // it looks like a host: it has a '.' or a port, is localhost, or is an
    // IPv6 literal.
    let domain = if components.len() > 1 && looks_like_domain(components[0]) {
        let d = components.remove(0);
        if !is_domain(d) {
            return Err(invalid(s, "malformed domain"));
        }
        Some(d.to_string())
    } else {
        None
    };
    for c in &components {
        if !is_path_component(c) {
            return Err(invalid(
                s,
                "repository path components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
            ));
        }
    }
    Ok(Reference {
        domain,
        path: components.join("/"),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// Checks that `name` may be stored as an image name: a valid reference
/// with no digest, that does not look like a digest or an image id.
pub fn validate_tag_name(name: &str) -> Result<Reference, InvalidReference> {
    if looks_like_content_address(name) {
        return Err(invalid(
            name,
            "a name cannot have the form of a digest or an image id (those always mean the content with that digest)",
        ));
    }
    let r = parse_reference(name)?;
    if r.digest.is_some() {
        return Err(invalid(name, "a name to tag with cannot contain a digest"));
    }
    // `sha256:<hex>` parses as repository "sha256", tag "<hex>". Lookups
    // read anything starting with `sha256:` as a digest (prefix), so a
    // repository named "sha256" could never be reached by name: reserve it,
    // along with any `<algorithm>:<hex of digest length>` and 64-hex
    // repository names (Docker's rule for image ids).
    if r.domain.is_none() && !r.path.contains('/') {
        let digest_like = r.tag.as_deref().is_some_and(|t| is_hex(t) && t.len() >= 32)
            && is_algorithm_name(&r.path);
        if digest_like || r.path == "sha256" {
            return Err(invalid(
                name,
                "a name cannot have the form of a digest (those always mean the content with that digest)",
            ));
        }
        if r.path.len() == 64 && is_hex(&r.path) {
            return Err(invalid(
                name,
                "a repository name cannot be 64 hexadecimal characters (that is an image id)",
            ));
        }
    }
    Ok(r)
}

/// Adds `:latest` when a name has neither tag nor digest. Content addresses
/// (`sha256:...`, `name@sha256:...`) are returned unchanged.
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

/// Normalizes and validates a name given to `build -t`, `tag` or found in
/// an archive; returns the form stored in the index.
pub fn canonical_tag(name: &str) -> Result<String, InvalidReference> {
    let n = normalize_ref(name);
    validate_tag_name(&n)?;
    Ok(n)
}

/// Docker's fully qualified form of a name (`busybox` →
/// `docker.io/library/busybox:latest`, `index.docker.io/x/y` →
/// `docker.io/x/y:latest`), used to decide whether two names mean the same
/// image. `None` for content addresses and malformed names. Stored names are
/// kept as written; lookups compare these forms.
pub fn docker_full_name(name: &str) -> Option<String> {
    if looks_like_content_address(name) {
        return None;
    }
    let r = parse_reference(name).ok()?;
    if r.digest.is_some() {
        return None;
    }
    let domain = match r.domain.as_deref() {
        None | Some("docker.io" | "index.docker.io" | "registry-1.docker.io") => "docker.io",
        Some(d) => d,
    };
    let path = if domain == "docker.io" && !r.path.contains('/') {
        format!("library/{}", r.path)
    } else {
        r.path.clone()
    };
    let tag = r.tag.as_deref().unwrap_or("latest");
    Some(format!("{domain}/{path}:{tag}"))
}

/// True when `a` and `b` name the same image in Docker's eyes
/// (`busybox` ≡ `busybox:latest` ≡ `docker.io/library/busybox:latest`).
pub fn same_name(a: &str, b: &str) -> bool {
    a == b
        || match (docker_full_name(a), docker_full_name(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
}

/// True for `algo:hex` with a hex part of at least 32 characters (how a
/// digest looks) or a bare 64-hex id: forms lookups treat as content.
pub fn looks_like_content_address(s: &str) -> bool {
    if s.len() == 64 && is_hex(s) {
        return true;
    }
    match s.split_once(':') {
        Some((algo, hex)) => is_algorithm_name(algo) && hex.len() >= 32 && is_hex(hex),
        None => false,
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `algorithm := component ( [+._-] component )*`, component `[a-z0-9]+`.
fn is_algorithm_name(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn is_digest(s: &str) -> bool {
    match s.split_once(':') {
        Some((algo, hex)) => {
            is_algorithm_name(algo)
                && hex.len() >= 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && (algo != "sha256" || hex.len() == 64)
        }
        None => false,
    }
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn is_path_component(c: &str) -> bool {
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

fn looks_like_domain(c: &str) -> bool {
    // `..` and `.x` are never hosts; they fail as path components instead,
    // with the clearer message.
    if c.starts_with('.') {
        return false;
    }
    c.contains('.')
        || c.contains(':')
        || c == "localhost"
        || c.starts_with('[')
        || c.bytes().any(|b| b.is_ascii_uppercase())
}

/// `host [":" port]`, host being dot-separated labels
/// (`[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`) or a bracketed IPv6 address.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.is_empty() {
        return d.starts_with('[');
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "fe3154c6539f13ed5d311a2a210e961576396cf091a691cf382643842b5a9d01";

    #[test]
    fn docker_equivalent_names() {
        for n in [
            "busybox",
            "busybox:latest",
            "library/busybox",
            "docker.io/busybox",
            "docker.io/library/busybox:latest",
            "index.docker.io/library/busybox",
        ] {
            assert_eq!(
                docker_full_name(n).as_deref(),
                Some("docker.io/library/busybox:latest"),
                "{n}"
            );
            assert!(same_name(n, "busybox"), "{n}");
        }
        assert_eq!(
            docker_full_name("localhost:5000/app").as_deref(),
            Some("localhost:5000/app:latest")
        );
        assert!(!same_name("busybox:1.36", "busybox"));
        assert!(!same_name("localhost/busybox", "busybox"));
        assert!(!same_name("quay.io/busybox", "docker.io/busybox"));
        assert!(!same_name("team/busybox", "busybox"));
        assert!(docker_full_name(&format!("sha256:{HEX64}")).is_none());
        assert!(docker_full_name(&format!("busybox@sha256:{HEX64}")).is_none());
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_ref("hello"), "hello:latest");
        assert_eq!(
            normalize_ref("localhost:5000/a/b"),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(normalize_ref("a:v1"), "a:v1");
        assert_eq!(normalize_ref("a@sha256:00"), "a@sha256:00");
    }

    #[test]
    fn accepts_docker_names() {
        for ok in [
            "hello:latest",
            "busybox",
            "library/busybox:1.36",
            "docker.io/library/busybox:latest",
            "localhost:5000/a/b:v1.2",
            "localhost/a",
            "my-registry.example.com:443/team/app_x:v_1",
            "a__b/c---d/e.f:TAG_ok-1.0",
            "Registry.Example.COM/x:y",
            "[::1]:5000/app:v1",
            "[fe80::1]/app",
            "sha256",
            "sha256:latest",
            "abcd:v1",
            "ubuntu@sha256:fe3154c6539f13ed5d311a2a210e961576396cf091a691cf382643842b5a9d01",
        ] {
            assert!(parse_reference(ok).is_ok(), "{ok} should parse");
        }
        let r = parse_reference("localhost:5000/a/b:v1").unwrap();
        assert_eq!(r.domain.as_deref(), Some("localhost:5000"));
        assert_eq!(r.path, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.name(), "localhost:5000/a/b");
        let r = parse_reference(&format!("x/y:t@sha256:{HEX64}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest, Some(format!("sha256:{HEX64}")));
    }

    #[test]
    fn rejects_paths_and_malformed_names() {
        for bad in [
            "",
            "../../../../etc/passwd:latest",
            "../x",
            "./x",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "Bad:tag",
            "UPPER",
            "a:",
            "a b:c",
            "a:-tag",
            "a:.tag",
            "a:t/x",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a.-b",
            "a@sha256:short",
            "a@md5",
            "host:port/x",
            "host:99999999/x",
            "[zz]/x",
            "a\0b",
            "a\nb",
        ] {
            let e = parse_reference(bad);
            assert!(e.is_err(), "{bad:?} should be refused, got {e:?}");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(parse_reference(&long_tag).is_err());
        assert!(parse_reference(&format!("a:{}", "t".repeat(128))).is_ok());
        let long_name = "a/".repeat(128) + "a";
        assert!(parse_reference(&long_name).is_err());
        let msg = parse_reference("../x").unwrap_err().to_string();
        assert!(msg.starts_with("invalid reference format: "), "{msg}");
    }

    #[test]
    fn names_never_look_like_digests() {
        for bad in [
            format!("sha256:{HEX64}"),
            format!("sha256:{}", &HEX64[..32]),
            format!("sha512:{HEX64}{HEX64}"),
            HEX64.to_string(),
            format!("{HEX64}:latest"),
            format!("x@sha256:{HEX64}"),
        ] {
            assert!(validate_tag_name(&bad).is_err(), "{bad} must be refused");
            assert!(canonical_tag(&bad).is_err(), "{bad} must be refused");
        }
        // "sha256" is reserved: lookups read `sha256:...` as a digest.
        assert!(canonical_tag("sha256:v1").is_err());
        assert!(canonical_tag("sha256").is_err());
        // Short hex tags stay legal.
        assert!(canonical_tag("app:abcdef").is_ok());
        assert!(canonical_tag("node:20").is_ok());
        assert!(canonical_tag("sha512:v1").is_ok());
        assert!(canonical_tag("abcd").is_ok());
        assert_eq!(canonical_tag("app").unwrap(), "app:latest");
        assert!(looks_like_content_address(&format!("sha256:{HEX64}")));
        assert!(looks_like_content_address(HEX64));
        assert!(!looks_like_content_address("sha256:abcd"));
    }
}
