//! Per-registry connection settings, in one TOML file (default
//! `/etc/berth/registries.toml`, `--registries-config` to change it):
//!
//! ```toml
//! # Directory of per-host CA certificates, as containerd and Docker lay
//! # them out: <certs_dir>/<host[:port]>/ca.crt (default /etc/berth/certs.d).
//! certs_dir = "/etc/berth/certs.d"
//!
//! [registry."localhost:5000"]
//! insecure = true                      # plain http
//!
//! [registry."docker.io"]
//! mirrors = ["mirror.internal:5000"]   # tried in order before the registry, for pulls
//!
//! [registry."registry.internal"]
//! ca = "/etc/ssl/internal-ca.pem"      # instead of certs.d/registry.internal/ca.crt
//! ```
//!
//! Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) are plain http
//! unless they have a CA certificate, as Docker's default insecure range.
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/berth/registries.toml";
pub const DEFAULT_CERTS_DIR: &str = "/etc/berth/certs.d";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    #[serde(default)]
    pub certs_dir: Option<PathBuf>,
    #[serde(default)]
    pub registry: BTreeMap<String, HostConfig>,
}

impl HostsConfig {
    /// Loads the file at `path`; when `path` is the default and missing, the
    /// config is empty (every registry over https with the system roots).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut cfg: HostsConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.registry = cfg
            .registry
            .into_iter()
            .map(|(k, v)| (super::auth::normalize_host(&k), v))
            .collect();
        Ok(cfg)
    }

    fn host(&self, host: &str) -> Option<&HostConfig> {
        self.registry.get(host)
    }

    /// The PEM CA certificate file `host` is verified with, if any.
    pub fn ca_file(&self, host: &str) -> Option<PathBuf> {
        if let Some(ca) = self.host(host).and_then(|h| h.ca.clone()) {
            return Some(ca);
        }
        let dir = self
            .certs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIR));
        // A host name with a path separator never names a directory here.
        if host.contains('/') || host.starts_with('.') {
            return None;
        }
        let p = dir.join(host).join("ca.crt");
        p.is_file().then_some(p)
    }

    /// Whether `host` is spoken to over plain http.
    pub fn insecure(&self, host: &str) -> bool {
        if let Some(v) = self.host(host).and_then(|h| h.insecure) {
            return v;
        }
        is_loopback(host) && self.ca_file(host).is_none()
    }

    /// Hosts to try, in order, when pulling from `host`: its mirrors, then itself.
    pub fn pull_hosts(&self, host: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .host(host)
            .map(|h| {
                h.mirrors
                    .iter()
                    .map(|m| super::auth::normalize_host(m))
                    .collect()
            })
            .unwrap_or_default();
        out.push(host.to_string());
        out
    }

    /// Every host a client might talk to that has an explicit setting.
    pub fn known_hosts(&self) -> impl Iterator<Item = &String> {
        self.registry
            .iter()
            .flat_map(|(k, v)| std::iter::once(k).chain(v.mirrors.iter()))
    }
}

/// `localhost`, `127.x.y.z`, `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs.d");
        std::fs::create_dir_all(certs.join("127.0.0.1:5443")).unwrap();
        std::fs::write(certs.join("127.0.0.1:5443/ca.crt"), "pem").unwrap();
        let file = dir.path().join("registries.toml");
        std::fs::write(
            &file,
            format!(
                "certs_dir = {:?}\n[registry.\"Reg.Example.com\"]\ninsecure = true\n[registry.\"docker.io\"]\nmirrors = [\"mirror:5000\"]\n",
                certs.display().to_string()
            ),
        )
        .unwrap();
        let c = HostsConfig::load(Some(&file)).unwrap();
        assert!(c.insecure("reg.example.com"));
        assert!(!c.insecure("docker.io"));
        assert!(c.insecure("localhost:5000"));
        assert!(c.insecure("127.0.0.1:5000"));
        assert!(!c.insecure("127.0.0.1:5443"), "a CA means https");
        assert_eq!(
            c.ca_file("127.0.0.1:5443"),
            Some(certs.join("127.0.0.1:5443/ca.crt"))
        );
        assert_eq!(c.pull_hosts("docker.io"), vec!["mirror:5000", "docker.io"]);
        assert_eq!(c.pull_hosts("quay.io"), vec!["quay.io"]);
        std::fs::write(&file, "[registry.x]\ninsecur = true\n").unwrap();
        let e = HostsConfig::load(Some(&file)).unwrap_err();
        assert!(format!("{e:#}").contains("insecur"), "{e:#}");
        assert!(HostsConfig::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn loopback() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
