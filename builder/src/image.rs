//! OCI image types (index, manifest, config) with Docker's config extensions
//! (Healthcheck, OnBuild, Shell, ArgsEscaped) that the OCI spec leaves out.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Largest image config berth writes or reads: 4 MiB, the limit
/// containers/image (podman, skopeo, CRI-O) applies to config blobs, so an
/// image berth produces stays usable there. Real configs are kilobytes; the
/// cap keeps a hostile Dockerfile or archive from making every later read of
/// the image cost hundreds of megabytes.
pub const MAX_CONFIG_SIZE: u64 = 4 << 20;
/// Largest manifest or index: 4 MiB, the Docker registry's and
/// containers/image's limit on manifest bodies.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest docker-archive `manifest.json`: 1 MiB, as containers/image.
pub const MAX_ARCHIVE_MANIFEST_SIZE: u64 = 1 << 20;

/// A blob, file or stream over one of berth's size limits.
#[derive(Debug, thiserror::Error)]
#[error("{what} is too large: {size} bytes, the limit is {limit} bytes")]
pub struct TooLarge {
    pub what: String,
    pub size: u64,
    pub limit: u64,
}

/// Fails with [`TooLarge`] when `size` exceeds `limit`.
pub fn check_size(what: impl Into<String>, size: u64, limit: u64) -> Result<(), TooLarge> {
    if size > limit {
        return Err(TooLarge {
            what: what.into(),
            size,
            limit,
        });
    }
    Ok(())
}

/// Reads a whole file of at most `limit` bytes (checked on the open file,
/// then enforced while reading, so a file growing meanwhile is caught too).
pub fn read_limited(path: &std::path::Path, what: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    check_size(what, len, limit)?;
    let mut data = Vec::with_capacity(len as usize);
    f.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    check_size(what, data.len() as u64, limit)?;
    Ok(data)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    /// CPU variant (`v7` for linux/arm/v7), as image indexes give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Healthcheck {
    #[serde(
        rename = "Test",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(
        rename = "Interval",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub interval: i64,
    #[serde(
        rename = "Timeout",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: i64,
    #[serde(
        rename = "StartPeriod",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: i64,
    #[serde(
        rename = "StartInterval",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: i64,
    #[serde(
        rename = "Retries",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Reads `null` as the type's default: Docker writes `"Volumes": null`,
/// `"OnBuild": null` and the like in configs (`docker save`), and such an
/// image must load like one without the key.
/// JSON as Go's encoding/json writes it (what BuildKit's configs are):
/// `<`, `>`, `&`, U+2028 and U+2029 inside strings are `\u` escapes. Those
/// characters only occur inside strings in JSON, so escaping them in
/// serde_json's output changes no value.
pub fn to_go_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let text = serde_json::to_string(value)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out.into_bytes())
}

fn empty_as_null<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.collect_seq(v)
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The `config` object of an image configuration, with Docker's field names.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RunConfig {
    #[serde(
        rename = "User",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    // Healthcheck, ArgsEscaped, OnBuild, Shell: the order of BuildKit's
    // ImageConfig, whose OnBuild has no omitempty (`"OnBuild": null`).
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        rename = "ArgsEscaped",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub args_escaped: bool,
    #[serde(
        rename = "OnBuild",
        default,
        deserialize_with = "null_as_default",
        serialize_with = "empty_as_null"
    )]
    pub on_build: Vec<String>,
    #[serde(
        rename = "Shell",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

impl RunConfig {
    /// Value of `key` in Env, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// Sets `key=value` in Env, replacing an existing entry in place (Docker keeps order).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split('=').next() == Some(key))
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// Fields in name order: BuildKit writes the top level of a config from a
/// map, so its keys come sorted.
pub struct ImageConfig {
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: RunConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    pub os: String,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Default for ImageConfig {
    /// The image FROM scratch starts with: no layers, the host platform and
    /// Docker's default PATH.
    fn default() -> Self {
        let mut config = RunConfig::default();
        config.env_set("PATH", DEFAULT_PATH);
        Self {
            created: None,
            author: None,
            architecture: host_arch().into(),
            os: "linux".into(),
            variant: None,
            config,
            rootfs: RootFs::default(),
            history: Vec::new(),
        }
    }
}

/// PATH set by BuildKit for FROM scratch stages.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// GOARCH-style name of the host architecture, as image configs use.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)), ChainID(0) = DiffID(0).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => crate::digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = RunConfig::default();
        c.env_set("A", "1");
        c.env_set("B", "2");
        c.env_set("A", "3");
        assert_eq!(c.env, vec!["A=3", "B=2"]);
        assert_eq!(c.env_get("B"), Some("2"));
        assert_eq!(c.env_get("C"), None);
    }

    #[test]
    fn chain_id_follows_the_spec() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(c[1], crate::digest::sha256_of(b"sha256:a sha256:b"));
    }

    /// A config as Docker 20.10 writes it in `docker save` (BuildKit build),
    /// plus the other nulls Docker's container config carries.
    #[test]
    fn docker_nulls_load_as_empty() {
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["true"],"WorkingDir":"/","ArgsEscaped":true,"OnBuild":null},"created":"2026-12-04T15:09:11.148746544Z","history":[{"created":"2026-12-04T15:09:11.148746544Z","created_by":"ADD busybox.tar / # buildkit","comment":"buildkit.dockerfile.v0"},{"created":"2026-12-04T15:09:11.148746544Z","created_by":"CMD [\"true\"]","comment":"buildkit.dockerfile.v0","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:fe5c8c2172c20605cc04469e8f4c55bb9d8166f4bc7b8f609024f9dfd65495ae"]}}"#,
        )
        .unwrap();
        assert!(cfg.config.on_build.is_empty());
        assert_eq!(cfg.config.working_dir, "/");
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"User":null,"Env":null,"Cmd":null,"Entrypoint":null,"Volumes":null,"ExposedPorts":null,"WorkingDir":null,"Labels":null,"OnBuild":null,"Shell":null,"StopSignal":null,"Healthcheck":null,"ArgsEscaped":null},"rootfs":{"type":"layers","diff_ids":null},"history":null}"#,
        )
        .unwrap();
        assert!(cfg.config.volumes.is_empty() && cfg.config.labels.is_empty());
        assert!(cfg.rootfs.diff_ids.is_empty() && cfg.history.is_empty());
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert!(cfg.config.env.is_empty());
    }

    /// Byte for byte what Docker 20.10's BuildKit wrote for `FROM scratch`,
    /// `ADD busybox.tar /`, `CMD ["true"]` (`docker save`).
    #[test]
    fn config_bytes_as_buildkit() {
        let buildkit = r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["true"],"WorkingDir":"/","ArgsEscaped":true,"OnBuild":null},"created":"2026-12-04T15:09:11.148746544Z","history":[{"created":"2026-12-04T15:09:11.148746544Z","created_by":"ADD busybox.tar / # buildkit","comment":"buildkit.dockerfile.v0"},{"created":"2026-12-04T15:09:11.148746544Z","created_by":"CMD [\"true\"]","comment":"buildkit.dockerfile.v0","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:fe5c8c2172c20605cc04469e8f4c55bb9d8166f4bc7b8f609024f9dfd65495ae"]}}"#;
        let cfg: ImageConfig = serde_json::from_str(buildkit).unwrap();
        assert_eq!(
            String::from_utf8(to_go_json(&cfg).unwrap()).unwrap(),
            buildkit
        );
        // Go's HTML-safe escapes (BuildKit: `RUN ... \u0026\u0026 ...`).
        let v = serde_json::json!({"created_by": "a && b > c <d>\u{2028}"});
        let go = String::from_utf8(to_go_json(&v).unwrap()).unwrap();
        assert_eq!(
            go,
            r#"{"created_by":"a \u0026\u0026 b \u003e c \u003cd\u003e\u2028"}"#
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&go).unwrap(), v);
        let c = RunConfig {
            healthcheck: Some(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }),
            args_escaped: true,
            on_build: vec!["RUN x".into()],
            shell: vec!["/bin/sh".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"Healthcheck":{"Test":["NONE"]},"ArgsEscaped":true,"OnBuild":["RUN x"],"Shell":["/bin/sh"]}"#
        );
    }

    #[test]
    fn config_serializes_with_docker_names() {
        let mut cfg = ImageConfig::default();
        cfg.config.cmd = Some(vec!["sh".into()]);
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["config"]["Cmd"][0], "sh");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert!(v["config"].get("Entrypoint").is_none());
    }
}
