//! OCI platform (`os/arch[/variant]`) and the automatic platform build args.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `linux/amd64`, `linux/arm/v7`, or a bare architecture (`arm64`,
    /// OS `linux`). Architecture aliases are normalised like containerd does.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(format!(
                    "invalid platform {s:?}: expected os/arch[/variant]"
                ))
            }
        };
        if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        let arch_lower = arch.to_ascii_lowercase();
        let (arch, default_variant) = normalize_arch(&arch_lower);
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture: arch.to_string(),
            variant: variant
                .map(str::to_string)
                .or(default_variant.map(str::to_string)),
        })
    }

    /// The platform this process runs on.
    pub fn host() -> Platform {
        let (arch, variant) = normalize_arch(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// `TARGETPLATFORM`-style args with the given prefix (`TARGET`/`BUILD`).
    pub(crate) fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.architecture.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }
}

/// Maps Rust/uname architecture names to OCI names and default variants.
fn normalize_arch(arch: &str) -> (&str, Option<&'static str>) {
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64", None),
        "aarch64" | "arm64" => ("arm64", None),
        "armhf" | "armv7l" | "armv7" => ("arm", Some("v7")),
        "armel" | "armv6l" | "armv6" => ("arm", Some("v6")),
        "arm" => ("arm", Some("v7")),
        "i386" | "i686" | "x86" | "386" => ("386", None),
        "powerpc64" | "ppc64le" => ("ppc64le", None),
        other => (other, None),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v6").unwrap().variant.as_deref(),
            Some("v6")
        );
        assert_eq!(
            Platform::parse("linux/armhf").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.is_empty());
    }
}
