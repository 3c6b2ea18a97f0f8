//! Cache keys of build steps: the one place that decides what a step's key
//! hashes, and in which order. The executor ([`super::stage`]) and
//! `build --print` ([`super::plan_json`], which runs the same stage code
//! without executing anything) both get their keys from here, so a printed
//! key is the key the build looks up.
//!
//! A key is a [`KeyHasher`] over length-prefixed fields; every field is also
//! recorded under a name ([`Key::inputs`]) so a user can see which input
//! changed. Layer steps chain on their parent's *key* (not on the layer
//! digest the parent produced), so every key of a build is known before
//! anything runs, except where an input is content nobody has yet (see
//! [`super::plan_json`]).
use crate::digest::KeyHasher;
use serde_json::{json, Map, Value};

/// Version of what filesystem steps produce, part of every step's cache key:
/// results of a step changed meaning (every step is a layer, WORKDIR owned
/// by USER, directory sources copy their contents), and entries cached by
/// older berth versions must not be reused.
const STEP_FORMAT: &str = "step-format-2";

/// A step's key being assembled: the hash and its named inputs.
pub(crate) struct StepKey {
    hasher: KeyHasher,
    inputs: Map<String, Value>,
}

/// A finished key: the digest the store is looked up with, and what it hashed.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub digest: String,
    pub inputs: Map<String, Value>,
}

impl StepKey {
    fn new(kind: &str) -> Self {
        let mut inputs = Map::new();
        inputs.insert("kind".into(), json!(kind));
        Self {
            hasher: KeyHasher::new(kind),
            inputs,
        }
    }

    /// Hashes `value` as one field, recorded under `name`.
    fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.hasher.str(value);
        self.inputs.insert(name.into(), json!(value));
        self
    }

    /// Hashes each value as a field of its own, recorded as a list.
    fn list(&mut self, name: &str, values: &[String]) -> &mut Self {
        for v in values {
            self.hasher.str(v);
        }
        self.inputs.insert(name.into(), json!(values));
        self
    }

    /// Hashes the values of `fields` in order and appends them, as one
    /// object, to the list `name`.
    fn group(&mut self, name: &str, fields: &[(&str, String)]) -> &mut Self {
        let mut obj = Map::new();
        for (k, v) in fields {
            self.hasher.str(v);
            obj.insert((*k).into(), json!(v));
        }
        let list = self
            .inputs
            .entry(name.to_string())
            .or_insert_with(|| json!([]));
        if let Value::Array(a) = list {
            a.push(Value::Object(obj));
        }
        self
    }

    /// A layer step's key: its own inputs, the step format, the platform
    /// and (unless `COPY --link`, which is independent of what is below it)
    /// the parent step's key.
    pub fn finish_layer(mut self, link: bool, platform: &str, parent: &str) -> Key {
        self.field("step_format", STEP_FORMAT);
        self.field("platform", platform);
        if link {
            self.inputs.insert("parent".into(), json!("(none: --link)"));
        } else {
            self.field("parent", parent);
        }
        Key {
            digest: self.hasher.finish(),
            inputs: self.inputs,
        }
    }

    /// The inputs of a layer step whose parent key is not known yet
    /// (`build --print` before the parent can be keyed): the parent is null.
    pub fn inputs_without_parent(mut self, link: bool, platform: &str) -> Map<String, Value> {
        if link {
            return self.finish_layer(true, platform, "").inputs;
        }
        self.field("step_format", STEP_FORMAT);
        self.field("platform", platform);
        self.inputs.insert("parent".into(), Value::Null);
        self.inputs
    }

    fn finish(self) -> Key {
        Key {
            digest: self.hasher.finish(),
            inputs: self.inputs,
        }
    }
}

/// The key of `FROM scratch`.
pub(crate) fn scratch(platform: &str) -> Key {
    let mut k = StepKey::new("scratch");
    k.field("platform", platform);
    k.finish()
}

/// The key of `FROM <image>`: the image's manifest digest in the store.
pub(crate) fn image(manifest_digest: &str, platform: &str) -> Key {
    let mut k = StepKey::new("image");
    k.field("manifest_digest", manifest_digest)
        .field("platform", platform);
    k.finish()
}

/// WORKDIR: the absolute directory and the USER who owns what it creates.
pub(crate) fn workdir(dir: &str, user: &str) -> StepKey {
    let mut k = StepKey::new("workdir");
    k.field("path", dir).field("user", user);
    k
}

/// What a RUN step's key covers.
pub(crate) struct RunInputs<'a> {
    /// The command as executed (shell form wrapped in the SHELL).
    pub args: &'a [String],
    /// The environment in effect (image Env and ARG values), not proxies.
    pub env: &'a [String],
    pub user: &'a str,
    pub cwd: &'a str,
    /// The `--mount`s as resolved: secrets by id, never their contents.
    pub mounts: &'a str,
    pub network_host: bool,
    /// `(from, key)` of each `--mount=from=`: that stage's key or image's digest.
    pub mount_sources: &'a [(String, String)],
}

pub(crate) fn run(i: &RunInputs<'_>) -> StepKey {
    let mut k = StepKey::new("run");
    k.list("command", i.args);
    // A marker field between the command and the environment, so the two
    // lists never run into each other.
    k.hasher.str("env");
    k.list("env", i.env)
        .field("user", i.user)
        .field("workdir", i.cwd)
        .field("mounts", i.mounts)
        .field("network", if i.network_host { "host" } else { "none" });
    // A bind mount from another stage or image depends on its content:
    // that stage's key or the image's digest is hashed (not its name).
    let mut sources = Vec::new();
    for (from, key) in i.mount_sources {
        k.hasher.str(key);
        sources.push(json!({ "from": from, "key": key }));
    }
    if !sources.is_empty() {
        k.inputs
            .insert("mount_sources".into(), Value::Array(sources));
    }
    k
}

/// One COPY/ADD source as its key sees it.
pub(crate) enum SourceInput<'a> {
    /// Bytes of a heredoc or a downloaded URL, under their file name.
    Data {
        name: &'a str,
        digest: &'a str,
        mode: u32,
    },
    /// A selected path of the context or of a `--from` source, with the
    /// content digest of what is copied from it (see `exec::copy::hash_selected`).
    Path {
        rel: &'a str,
        digest: &'a str,
        is_dir: bool,
    },
}

/// What a COPY/ADD step's key covers besides its sources.
pub(crate) struct CopyInputs<'a> {
    pub add: bool,
    pub dest: &'a str,
    pub chown: &'a str,
    pub chmod: Option<u32>,
    pub excludes: &'a [String],
    pub from: &'a str,
    pub link: bool,
}

pub(crate) fn copy(sources: &[SourceInput<'_>], i: &CopyInputs<'_>) -> StepKey {
    let mut k = StepKey::new(if i.add { "add" } else { "copy" });
    for s in sources {
        match s {
            SourceInput::Data { name, digest, mode } => k.group(
                "sources",
                &[
                    ("name", name.to_string()),
                    ("content_digest", digest.to_string()),
                    ("mode", mode.to_string()),
                ],
            ),
            SourceInput::Path {
                rel,
                digest,
                is_dir,
            } => k.group(
                "sources",
                &[
                    ("path", rel.to_string()),
                    ("content_digest", digest.to_string()),
                    ("dir", is_dir.to_string()),
                ],
            ),
        };
    }
    k.inputs.entry("sources").or_insert_with(|| json!([]));
    k.field("destination", i.dest)
        .field("chown", i.chown)
        .field("chmod", &format!("{:?}", i.chmod))
        .field("excludes", &format!("{:?}", i.excludes))
        .field("from", i.from)
        .field("link", &i.link.to_string());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are the very bytes berth hashed before this module existed:
    /// entries already in users' stores stay valid.
    #[test]
    fn keys_hash_what_they_always_hashed() {
        let p = "linux/amd64";
        assert_eq!(
            scratch(p).digest,
            KeyHasher::new("scratch").str(p).clone().finish()
        );
        assert_eq!(
            image("sha256:ab", p).digest,
            KeyHasher::new("image")
                .str("sha256:ab")
                .str(p)
                .clone()
                .finish()
        );
        let parent = "sha256:parent";
        let args = vec!["/bin/sh".to_string(), "-c".into(), "true".into()];
        let env = vec!["A=1".to_string()];
        let sources = vec![("s".to_string(), "sha256:s".to_string())];
        let got = run(&RunInputs {
            args: &args,
            env: &env,
            user: "app",
            cwd: "/w",
            mounts: "[]",
            network_host: false,
            mount_sources: &sources,
        })
        .finish_layer(false, p, parent);
        let mut want = KeyHasher::new("run");
        for a in &args {
            want.str(a);
        }
        want.str("env")
            .str("A=1")
            .str("app")
            .str("/w")
            .str("[]")
            .str("none");
        want.str("sha256:s").str(STEP_FORMAT).str(p).str(parent);
        assert_eq!(got.digest, want.finish());
        assert_eq!(got.inputs["env"], json!(["A=1"]));
        assert_eq!(got.inputs["parent"], json!(parent));
        assert_eq!(got.inputs["mount_sources"][0]["from"], json!("s"));

        let got = copy(
            &[
                SourceInput::Path {
                    rel: "a.txt",
                    digest: "sha256:a",
                    is_dir: false,
                },
                SourceInput::Data {
                    name: "h",
                    digest: "sha256:h",
                    mode: 0o644,
                },
            ],
            &CopyInputs {
                add: false,
                dest: "/d/",
                chown: "",
                chmod: Some(0o600),
                excludes: &[],
                from: "",
                link: true,
            },
        )
        .finish_layer(true, p, parent);
        let mut want = KeyHasher::new("copy");
        want.str("a.txt").str("sha256:a").str("false");
        want.str("h").str("sha256:h").str("420");
        want.str("/d/")
            .str("")
            .str("Some(384)")
            .str("[]")
            .str("")
            .str("true");
        want.str(STEP_FORMAT).str(p);
        assert_eq!(got.digest, want.finish());
        assert_eq!(
            got.inputs["sources"][0]["content_digest"],
            json!("sha256:a")
        );
        assert_eq!(got.inputs["parent"], json!("(none: --link)"));

        let got = workdir("/w", "app").finish_layer(false, p, parent);
        let mut want = KeyHasher::new("workdir");
        want.str("/w")
            .str("app")
            .str(STEP_FORMAT)
            .str(p)
            .str(parent);
        assert_eq!(got.digest, want.finish());
    }
}
