//! Registry credentials in Docker's `config.json` format, so that `docker
//! login`, `podman login --authfile`, skopeo and berth share one file:
//!
//! ```json
//! { "auths": { "host:port": { "auth": "base64(user:password)" } },
//!   "credsStore": "pass", "credHelpers": { "host": "ecr-login" } }
//! ```
//!
//! `credHelpers[host]`, then `credsStore`, name a `docker-credential-<name>`
//! program speaking Docker's credential-helper protocol (`get`, `store`,
//! `erase` with the server on stdin). The file lives in `--config DIR`,
//! `$DOCKER_CONFIG` or `~/.docker`, and is always written with mode 0600.
//!
//! Secrets never reach a log: [`Credential`]'s `Debug` hides them.
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user name and a password or identity token for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The Docker config directory: `--config`, else `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker")
}

/// The key a registry host has in `auths`: Docker Hub keeps its historical
/// URL, every other registry its `host[:port]`.
pub fn auth_key(host: &str) -> String {
    if is_docker_hub(host) {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://host:port/v1/` → `host:port`: how Docker matches `auths` keys
/// written by older clients.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// A parsed `config.json` and where it came from.
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Loads `<dir>/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let doc = match std::fs::read(&path) {
            Ok(data) => match serde_json::from_slice::<Value>(&data)
                .with_context(|| format!("parsing {}", path.display()))?
            {
                Value::Object(m) => m,
                _ => bail!("{}: not a JSON object", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { path, doc })
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.doc.get("auths").and_then(Value::as_object)
    }

    /// The credential helper for `host`, if any (`credHelpers` first).
    fn helper_for(&self, host: &str) -> Option<String> {
        let by_host = self
            .doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| {
                        key_host(k) == host || (is_docker_hub(host) && is_docker_hub(key_host(k)))
                    })
                    .and_then(|(_, v)| v.as_str().map(str::to_string))
            });
        by_host.or_else(|| {
            self.doc
                .get("credsStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
    }

    /// Credentials for `host`: a helper's if one is configured and knows the
    /// host, else the inline `auths` entry, else none (anonymous).
    pub fn get(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(helper) = self.helper_for(host) {
            if let Some(c) = helper_get(&helper, &auth_key(host))? {
                return Ok(Some(c));
            }
        }
        let Some(auths) = self.auths() else {
            return Ok(None);
        };
        let entry = auths.iter().find(|(k, _)| {
            key_host(k) == host || (is_docker_hub(host) && is_docker_hub(key_host(k)))
        });
        let Some((key, entry)) = entry else {
            return Ok(None);
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            if auth.is_empty() {
                return Ok(None);
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .with_context(|| {
                    format!("{}: auths[{key:?}].auth is not base64", self.path.display())
                })?;
            let text = String::from_utf8(raw).with_context(|| {
                format!("{}: auths[{key:?}].auth is not UTF-8", self.path.display())
            })?;
            let (user, pass) = text.split_once(':').with_context(|| {
                format!(
                    "{}: auths[{key:?}].auth is not user:password",
                    self.path.display()
                )
            })?;
            return Ok(Some(Credential {
                username: user.to_string(),
                secret: pass.to_string(),
            }));
        }
        // Docker also accepts separate fields (and identitytoken for OAuth).
        let field = |n: &str| entry.get(n).and_then(Value::as_str).map(str::to_string);
        match (
            field("username"),
            field("password").or_else(|| field("identitytoken")),
        ) {
            (Some(u), Some(p)) => Ok(Some(Credential {
                username: u,
                secret: p,
            })),
            _ => Ok(None),
        }
    }

    /// Every host this config holds credentials for (inline or by helper).
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .auths()
            .map(|m| m.keys().map(|k| normalize_host(key_host(k))).collect())
            .unwrap_or_default();
        if let Some(m) = self.doc.get("credHelpers").and_then(Value::as_object) {
            out.extend(m.keys().map(|k| normalize_host(key_host(k))));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Records credentials for `host`: in the helper when one is configured
    /// (the file then keeps an empty `auths` entry, as Docker does), else
    /// inline, base64-encoded.
    pub fn store(&mut self, host: &str, cred: &Credential) -> Result<()> {
        let key = auth_key(host);
        let mut entry = Map::new();
        if let Some(helper) = self.helper_for(host) {
            helper_store(&helper, &key, cred)?;
        } else {
            let raw = format!("{}:{}", cred.username, cred.secret);
            entry.insert(
                "auth".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
            );
        }
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(auths) = auths else {
            bail!("{}: \"auths\" is not an object", self.path.display());
        };
        auths.retain(|k, _| {
            !(key_host(k) == host || (is_docker_hub(host) && is_docker_hub(key_host(k))))
        });
        auths.insert(key, Value::Object(entry));
        self.save()
    }

    /// Forgets `host`'s credentials (helper and file). Returns whether any existed.
    pub fn erase(&mut self, host: &str) -> Result<bool> {
        let mut found = false;
        if let Some(helper) = self.helper_for(host) {
            found |= helper_erase(&helper, &auth_key(host))?;
        }
        if let Some(Value::Object(auths)) = self.doc.get_mut("auths") {
            let before = auths.len();
            auths.retain(|k, _| {
                !(key_host(k) == host || (is_docker_hub(host) && is_docker_hub(key_host(k))))
            });
            found |= auths.len() != before;
        }
        self.save()?;
        Ok(found)
    }

    /// Writes the file atomically with mode 0600 (it holds secrets): a
    /// temporary file created 0600 in the same directory, then renamed.
    fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let data = serde_json::to_vec_pretty(&Value::Object(self.doc.clone()))
            .context("serializing config.json")?;
        let tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let mut f = tmp.as_file();
        f.write_all(&data).context("writing config.json")?;
        f.sync_all().context("fsync config.json")?;
        tmp.persist(&self.path)
            .map_err(|e| e.error)
            .with_context(|| format!("writing {}", self.path.display()))?;
        // A pre-existing file keeps no wider mode than 0600 either.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", self.path.display()))?;
        Ok(())
    }
}

/// `Registry.Example.com:443` and `registry.example.com:443` are one host.
pub fn normalize_host(h: &str) -> String {
    let h = h.to_ascii_lowercase();
    if is_docker_hub(&h) {
        "docker.io".to_string()
    } else {
        h
    }
}

fn helper_program(name: &str) -> Result<String> {
    // A helper name is a suffix, never a path.
    if name.is_empty() || name.contains('/') {
        bail!("invalid credential helper name {name:?}");
    }
    Ok(format!("docker-credential-{name}"))
}

fn run_helper(name: &str, verb: &str, input: &[u8]) -> Result<(bool, Vec<u8>)> {
    let program = helper_program(name)?;
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("writing to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    Ok((out.status.success(), out.stdout))
}

fn helper_get(name: &str, server: &str) -> Result<Option<Credential>> {
    let (ok, out) = run_helper(name, "get", server.as_bytes())?;
    if !ok {
        // "credentials not found in native keychain": anonymous, as Docker.
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out)
        .with_context(|| format!("docker-credential-{name} get: output is not JSON"))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: user.to_string(),
        secret: secret.to_string(),
    }))
}

fn helper_store(name: &str, server: &str, cred: &Credential) -> Result<()> {
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": cred.username,
        "Secret": cred.secret,
    });
    let (ok, _) = run_helper(name, "store", input.to_string().as_bytes())?;
    if !ok {
        bail!("docker-credential-{name} store failed for {server}");
    }
    Ok(())
}

fn helper_erase(name: &str, server: &str) -> Result<bool> {
    let (ok, _) = run_helper(name, "erase", server.as_bytes())?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_inline_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = DockerConfig::load(dir.path()).unwrap();
        assert!(c.get("localhost:5000").unwrap().is_none());
        let cred = Credential {
            username: "alice".into(),
            secret: "s3:cr3t".into(),
        };
        c.store("localhost:5000", &cred).unwrap();
        let path = dir.path().join("config.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            raw["auths"]["localhost:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:s3:cr3t")
        );
        let c = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(c.get("localhost:5000").unwrap(), Some(cred));
        assert!(!format!("{:?}", c.get("localhost:5000").unwrap()).contains("s3:cr3t"));
        let mut c = DockerConfig::load(dir.path()).unwrap();
        assert!(c.erase("localhost:5000").unwrap());
        assert!(c.get("localhost:5000").unwrap().is_none());
        assert!(!c.erase("localhost:5000").unwrap());
    }

    #[test]
    fn reads_docker_written_keys_and_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"https://reg.example.com/v2/":{{"auth":"{auth}"}}}},"psFormat":"x"}}"#
            ),
        )
        .unwrap();
        let mut c = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(c.get("docker.io").unwrap().unwrap().username, "bob");
        assert_eq!(c.get("reg.example.com").unwrap().unwrap().secret, "pw");
        assert_eq!(c.hosts(), vec!["docker.io", "reg.example.com"]);
        c.store(
            "reg.example.com",
            &Credential {
                username: "carol".into(),
                secret: "x".into(),
            },
        )
        .unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(raw["psFormat"], "x");
        assert!(raw["auths"].get("https://reg.example.com/v2/").is_none());
        assert_eq!(c.get("reg.example.com").unwrap().unwrap().username, "carol");
    }

    #[test]
    fn credential_helper_protocol() {
        // A fake helper on PATH that answers `get` for one server.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-berthtest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = helped.example.com ]; then\n  echo '{\"ServerURL\":\"helped.example.com\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"helped.example.com":"berthtest"}}"#,
        )
        .unwrap();
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&old));
        // Only this test changes PATH, and it restores it.
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let c = DockerConfig::load(dir.path()).unwrap();
        let got = c.get("helped.example.com");
        std::env::set_var("PATH", old);
        let got = got.unwrap().unwrap();
        assert_eq!(got.username, "hu");
        assert_eq!(got.secret, "hs");
        assert!(c.get("other.example.com").unwrap().is_none());
    }
}
