//! berth-build against real registries: Debian's `docker-registry`
//! (distribution 2.8) started by each test on 127.0.0.1 with its own config
//! and storage, plain http or TLS (self-signed CA) with htpasswd Basic auth;
//! skopeo as the other client.
//!
//! A missing peer (docker-registry, skopeo, openssl, htpasswd, curl) skips
//! the test with `SKIP:`, except under CI=true where it fails it.
use berth_integration::builder::{
    run_bundle, step_runtime as runtime, BuildEnv, Buildd, Busybox, Podman, PODMAN_RUN_OPTS,
};
use berth_integration::harness::{berth_bin, unique, TempDir};
use berth_integration::require;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `curl -X PUT` of `file`'s bytes to `url` as `content_type`; asserts success.
fn curl_put(url: &str, content_type: &str, file: &Path) {
    run(Command::new("curl")
        .args(["-fsS", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url));
}

/// A docker-registry process with its own config and storage; killed and
/// removed on drop, whatever the test's outcome.
struct Registry {
    child: Child,
    dir: TempDir,
    host: String,
    tls: bool,
}

impl Registry {
    /// Plain http, no auth.
    fn plain() -> Registry {
        Self::start(false)
    }

    /// https with a fresh self-signed CA (`ca.crt` in its dir) and htpasswd
    /// Basic auth for `berth` / `s3cret`.
    fn tls_with_auth() -> Registry {
        Self::start(true)
    }

    fn start(tls: bool) -> Registry {
        let dir = TempDir::new("berth-registry").unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let d = dir.path();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            d.join("data").display()
        );
        if tls {
            make_certs(d);
            let htpasswd = run(Command::new("htpasswd").args(["-Bbn", "berth", "s3cret"])).stdout;
            std::fs::write(d.join("htpasswd"), htpasswd).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display(),
                d.join("htpasswd").display()
            ));
        }
        std::fs::write(d.join("config.yml"), cfg).unwrap();
        let child = Self::spawn(d);
        let mut r = Registry {
            child,
            dir,
            host,
            tls,
        };
        r.wait_ready();
        r
    }

    fn spawn(d: &Path) -> Child {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(d.join("registry.log"))
            .unwrap();
        Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.host).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "docker-registry exited ({st}): {}",
                    std::fs::read_to_string(self.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the registry (as a crash would); its storage stays.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address and storage.
    fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The registry's storage file for blob `digest`.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Whether blob `digest` is linked into repository `repo`: its link
    /// file (what makes a HEAD of the blob answer 200) holds the digest.
    fn linked(&self, repo: &str, digest: &str) -> bool {
        let link = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_layers/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .join("link");
        std::fs::read_to_string(link).is_ok_and(|s| s == digest)
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(d: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(d).args(args));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

berth_integration::build_env_newtype!(
    /// One "machine": a store, a Docker config dir and a registries config.
    Env
);

impl Env {
    fn new() -> Env {
        let env = BuildEnv::new("berth-reg-env");
        let (docker, registries) = (
            env.path().join("docker"),
            env.path().join("registries.toml"),
        );
        let env = Env(env.with_flags([
            "--config".into(),
            docker.into_os_string(),
            "--registries-config".into(),
            registries.into_os_string(),
        ]));
        for d in ["docker", "certs.d"] {
            std::fs::create_dir_all(env.path().join(d)).unwrap();
        }
        env.write_registries("");
        env
    }

    fn docker_config(&self) -> PathBuf {
        self.path().join("docker/config.json")
    }

    fn write_registries(&self, extra: &str) {
        std::fs::write(
            self.path().join("registries.toml"),
            format!(
                "certs_dir = {:?}\n{extra}",
                self.path().join("certs.d").display().to_string()
            ),
        )
        .unwrap();
    }

    /// Trusts `reg`'s CA as certs.d/<host>/ca.crt.
    fn trust(&self, reg: &Registry) {
        let d = self.path().join("certs.d").join(&reg.host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(reg.ca(), d.join("ca.crt")).unwrap();
    }

    /// Runs berth-build, asserts success; returns trimmed stdout and stderr.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let (out, err) = self.ok_err(args);
        (out.trim().to_string(), err)
    }

    fn login(&self, reg: &Registry, user: &str, password: &str) -> Output {
        self.login_to(&reg.host, user, password)
    }

    fn login_to(&self, host: &str, user: &str, password: &str) -> Output {
        let mut c = self.cmd(&["login", "-u", user, "--password-stdin", host]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }

    /// A build context: a busybox root filesystem tar and `dockerfile`.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let rootfs = Busybox {
            group: None,
            ..Busybox::new(&["sh", "echo", "cat", "ls", "true", "id"])
        };
        self.context_with(name, dockerfile, &rootfs)
    }

    /// A context with the same busybox.tar as `other` (a tar carries mtimes:
    /// two machines share a context by copying it, as from a repository).
    fn context_like(&self, other: &Path, dockerfile: &str) -> PathBuf {
        let ctx = self.path().join(unique("ctx"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(other.join("busybox.tar"), ctx.join("busybox.tar")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
    }

    fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.store().join("index.json")).unwrap()).unwrap()
    }

    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.store().join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Writes a bundle of `image` and runs it with the runtime; returns stdout.
    fn run_image(&self, image: &str) -> String {
        let b = self.path().join(unique("bundle"));
        self.ok(&["bundle", image, b.to_str().unwrap()]);
        run_bundle(&runtime(), &b, &unique("berth-reg"))
    }
}

const APP: &str =
    "FROM scratch\nADD busybox.tar /\nRUN echo pulled-and-ran > /msg\nCMD [\"cat\", \"/msg\"]\n";

#[test]
fn plain_http_round_trip_push_pull_bundle_run() {
    require!("docker-registry");
    let reg = Registry::plain();
    let a = Env::new();
    let ctx = a.context("app", APP);
    let name = format!("{}/team/app:v1", reg.host);
    let (built, _) = a.build(&ctx, &["-t", &name]);

    let (pushed, log) = a.ok(&["push", "--progress", "plain", &name]);
    assert_eq!(pushed, built, "push keeps the stored digest");
    assert!(log.contains("uploading"), "{log}");
    // Again: every blob is found by HEAD, nothing is sent.
    let (_, log) = a.ok(&["push", "--progress", "plain", &name]);
    assert!(log.contains("(0 blobs, 0B uploaded)"), "{log}");
    assert!(!log.contains("uploading"), "{log}");
    // Another repository of the same registry: blobs are mounted, not sent.
    let other = format!("{}/other/app:v2", reg.host);
    let (d2, log) = a.ok(&["push", "--progress", "plain", &name, &other]);
    assert_eq!(d2, built);
    assert!(log.contains("mounted from team/app"), "{log}");

    // A fresh store ("another machine") pulls it and runs it.
    let b = Env::new();
    let (pulled, log) = b.ok(&["pull", "--progress", "plain", &name]);
    assert_eq!(pulled, built);
    assert!(log.contains("downloading"), "{log}");
    assert_eq!(b.run_image(&name), "pulled-and-ran");
    // A second pull finds every blob in the store.
    let (_, log) = b.ok(&["pull", "--progress", "plain", &name]);
    assert!(log.contains("(0 blobs, 0B downloaded)"), "{log}");

    // FROM pulls a missing base; FROM name@digest pins it.
    let c = Env::new();
    let child_ctx = c.context(
        "child",
        &format!("FROM {name}\nRUN cat /msg > /copy\nCMD [\"cat\", \"/copy\"]\n"),
    );
    let (_, log) = c.build(&child_ctx, &["-t", "child"]);
    assert!(log.contains(&format!("pulling base image {name}")), "{log}");
    assert_eq!(c.run_image("child"), "pulled-and-ran");
    let d = Env::new();
    let pinned = format!("{}/other/app@{built}", reg.host);
    let ctx = d.context(
        "pinned",
        &format!("FROM {pinned}\nCMD [\"cat\", \"/msg\"]\n"),
    );
    let (_, log) = d.build(&ctx, &["-t", "pinned"]);
    assert!(
        log.contains(&format!("base image {pinned} is {built}")),
        "{log}"
    );
    // --pull re-resolves a tag: after the tag moves, the build follows it.
    let ctx2 = a.context(
        "app2",
        "FROM scratch\nADD busybox.tar /\nRUN echo moved > /msg\nCMD [\"cat\", \"/msg\"]\n",
    );
    let (moved, _) = a.build(&ctx2, &["-t", &name]);
    a.ok(&["push", &name]);
    let (_, log) = c.build(&child_ctx, &["-t", "child"]);
    assert!(
        !log.contains("pulling base image"),
        "without --pull the store's copy is used: {log}"
    );
    let (_, log) = c.build(&child_ctx, &["--pull", "-t", "child"]);
    assert!(
        log.contains(&format!("base image {name} is {moved}")),
        "{log}"
    );
    assert_eq!(c.run_image("child"), "moved");
}

#[test]
fn tls_registry_with_basic_auth_and_a_bad_password() {
    require!("docker-registry", "openssl", "htpasswd");
    let reg = Registry::tls_with_auth();
    let a = Env::new();
    let ctx = a.context("app", APP);
    let name = format!("{}/secure/app:v1", reg.host);
    let (built, _) = a.build(&ctx, &["-t", &name]);

    // Without the CA the server is not trusted.
    let err = a.fail(&["push", &name]);
    assert!(err.contains(&reg.host), "{err}");
    a.trust(&reg);

    // Anonymous push: 401 naming the registry.
    let err = a.fail(&["push", &name]);
    assert!(
        err.contains("401 Unauthorized") && err.contains(&reg.host),
        "{err}"
    );

    // A wrong password is refused by login and not saved.
    let o = a.login(&reg, "berth", "wrong");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("401 Unauthorized") && err.contains(&reg.host),
        "{err}"
    );
    assert!(
        !a.docker_config().exists(),
        "nothing saved for a refused login"
    );

    let o = a.login(&reg, "berth", "s3cret");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(a.docker_config())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let cfg: Value = serde_json::from_slice(&std::fs::read(a.docker_config()).unwrap()).unwrap();
    assert!(cfg["auths"][&reg.host]["auth"].is_string(), "{cfg}");

    let (pushed, _) = a.ok(&["push", &name]);
    assert_eq!(pushed, built);

    // Another machine with a wrong password in its config: a clear 401 and
    // nothing enters its store.
    let b = Env::new();
    b.trust(&reg);
    std::fs::write(
        b.docker_config(),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YmVydGg6d3Jvbmc="}}}}}}"#,
            reg.host
        ),
    )
    .unwrap();
    let err = b.fail(&["pull", &name]);
    assert!(
        err.contains("401 Unauthorized") && err.contains(&reg.host),
        "{err}"
    );
    assert_eq!(b.index()["manifests"].as_array().unwrap().len(), 0);
    assert_eq!(b.blob_count(), 0, "no blob of a refused pull is stored");
    // With the right one, the pull works and the image runs.
    let o = b.login(&reg, "berth", "s3cret");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pulled, _) = b.ok(&["pull", &name]);
    assert_eq!(pulled, built);
    assert_eq!(b.run_image(&name), "pulled-and-ran");

    b.ok(&["logout", &reg.host]);
    let cfg: Value = serde_json::from_slice(&std::fs::read(b.docker_config()).unwrap()).unwrap();
    assert!(cfg["auths"].get(&reg.host).is_none(), "{cfg}");
    let err = b.fail(&["logout", &reg.host]);
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn skopeo_reads_what_berth_pushed_and_berth_builds_from_what_skopeo_pushed() {
    require!("docker-registry", "skopeo");
    let reg = Registry::plain();
    let a = Env::new();
    let ctx = a.context("app", APP);
    let name = format!("{}/interop/berth:v1", reg.host);
    let (built, _) = a.build(&ctx, &["-t", &name]);
    a.ok(&["push", &name]);
    let o = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["Digest"],
        built.as_str(),
        "skopeo sees the same manifest digest"
    );
    // skopeo copies it whole (verifying every blob) into an OCI layout.
    let layout = a.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", layout.display()),
    ]));

    // skopeo pushes a docker archive (Docker schema 2 media types) ...
    let archive = a.path().join("app.docker.tar");
    a.ok(&["save", &name, "-o", archive.to_str().unwrap()]);
    let sk = format!("{}/interop/skopeo:v1", reg.host);
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{sk}"),
    ]));
    let o = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{sk}"),
    ]));
    let raw: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{raw}"
    );
    // ... and a fresh berth store builds FROM it.
    let b = Env::new();
    let ctx = b.context(
        "from-skopeo",
        &format!("FROM {sk}\nRUN cat /msg > /again\nCMD [\"cat\", \"/again\"]\n"),
    );
    let (_, log) = b.build(&ctx, &["-t", "from-skopeo"]);
    assert!(log.contains(&format!("pulling base image {sk}")), "{log}");
    assert_eq!(b.run_image("from-skopeo"), "pulled-and-ran");
    // The pulled Docker manifest keeps its digest when berth pushes it on.
    let (pulled, _) = b.ok(&["pull", &sk]);
    let moved = format!("{}/interop/again:v1", reg.host);
    let (pushed, _) = b.ok(&["push", &sk, &moved]);
    assert_eq!(pushed, pulled);
}

#[test]
fn manifest_list_picks_the_platform() {
    require!("docker-registry", "curl");
    let reg = Registry::plain();
    let a = Env::new();
    let one = format!("{}/multi/app:one", reg.host);
    let two = format!("{}/multi/app:two", reg.host);
    let (d1, _) = a.build(
        &a.context(
            "one",
            "FROM scratch\nADD busybox.tar /\nRUN echo one > /msg\n",
        ),
        &["-t", &one],
    );
    let (d2, _) = a.build(
        &a.context(
            "two",
            "FROM scratch\nADD busybox.tar /\nRUN echo two > /msg\n",
        ),
        &["-t", &two],
    );
    a.ok(&["push", &one]);
    a.ok(&["push", &two]);
    let size = |d: &str| {
        std::fs::metadata(
            a.store()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
        .len()
    };
    // A Docker manifest list: "one" claims linux/arm64/v8, "two" linux/amd64.
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d1, "size": size(&d1),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d2, "size": size(&d2),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    });
    let file = a.path().join("list.json");
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    curl_put(
        &reg.url("/v2/multi/app/manifests/list"),
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &file,
    );
    let list_ref = format!("{}/multi/app:list", reg.host);
    let b = Env::new();
    let (got, log) = b.ok(&["pull", "--progress", "plain", &list_ref]);
    assert_eq!(got, d2, "linux/amd64 chosen by default: {log}");
    let c = Env::new();
    let (got, _) = c.ok(&["pull", "--platform", "linux/arm64/v8", &list_ref]);
    assert_eq!(got, d1);
    let err = c.fail(&["pull", "--platform", "linux/s390x", &list_ref]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
}

#[test]
fn tampered_blob_and_malformed_references_are_refused() {
    require!("docker-registry");
    let reg = Registry::plain();
    let a = Env::new();
    let name = format!("{}/tamper/app:v1", reg.host);
    let (built, _) = a.build(&a.context("app", APP), &["-t", &name]);
    a.ok(&["push", &name]);
    let (inspect, _) = a.ok(&["inspect", &name]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    let layers = v["Manifest"]["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Same size, other bytes: only the digest check can tell.
    let data = reg.blob_data(&last);
    let mut bytes = std::fs::read(&data).unwrap();
    for b in bytes.iter_mut().rev().take(16) {
        *b ^= 0xff;
    }
    std::fs::write(&data, bytes).unwrap();
    let b = Env::new();
    let err = b.fail(&["pull", &name]);
    assert!(err.contains(&last) && err.contains("verification"), "{err}");
    assert_eq!(
        b.index()["manifests"].as_array().unwrap().len(),
        0,
        "no image from a refused pull"
    );
    assert!(
        !b.store()
            .join("blobs/sha256")
            .join(last.trim_start_matches("sha256:"))
            .exists(),
        "the tampered blob never enters the store"
    );
    assert!(!built.is_empty());

    for bad in ["case/UPPER", "a//b", "x@sha256:1234", "host:port/x"] {
        let err = b.fail(&["pull", bad]);
        assert!(err.contains("invalid reference format"), "{bad}: {err}");
    }
}

/// berth-buildd on a socket of its own, with its own store and `env`'s
/// registries config, its output in buildd.log; killed and reaped on drop.
fn start_daemon(env: &Env) -> Buildd {
    let registries = env.path().join("registries.toml");
    Buildd::start(
        &env.path().join("buildd.sock"),
        &env.path().join("daemon-store"),
        env.runtime(),
        &["--registries-config", registries.to_str().unwrap()],
        Some(&env.path().join("buildd.log")),
    )
}

#[test]
fn daemon_pulls_pushes_and_builds_with_the_clients_credentials() {
    require!("docker-registry", "openssl", "htpasswd");
    let reg = Registry::tls_with_auth();
    let a = Env::new();
    a.trust(&reg);
    let name = format!("{}/daemon/app:v1", reg.host);
    let (built, _) = a.build(&a.context("app", APP), &["-t", &name]);
    let o = a.login(&reg, "berth", "s3cret");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    a.ok(&["push", &name]);

    // The daemon has no credentials of its own: the client sends them.
    let d = start_daemon(&a);
    let addr = d.addr();
    let (pulled, log) = a.ok(&["--addr", &addr, "pull", "--progress", "plain", &name]);
    assert_eq!(pulled, built);
    assert!(log.contains("downloading"), "progress is streamed: {log}");
    let moved = format!("{}/daemon/copy:v2", reg.host);
    let (pushed, log) = a.ok(&[
        "--addr",
        &addr,
        "push",
        "--progress",
        "plain",
        &name,
        &moved,
    ]);
    assert_eq!(pushed, built);
    assert!(log.contains("mounted from daemon/app"), "{log}");
    // FROM through the daemon, with the client's credentials.
    let ctx = a.context("child", &format!("FROM {moved}\nRUN cat /msg > /copy\n"));
    let (_, log) = a.ok(&[
        "--addr",
        &addr,
        "build",
        "--progress",
        "plain",
        "--pull",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        log.contains(&format!("pulling base image {moved}")),
        "{log}"
    );

    // Without credentials: UNAUTHENTICATED with the registry named.
    let b = Env::new();
    std::fs::copy(
        a.path().join("registries.toml"),
        b.path().join("registries.toml"),
    )
    .unwrap();
    let err = b.fail(&[
        "--addr",
        &addr,
        "pull",
        &format!("{}/daemon/app:v1", reg.host),
    ]);
    assert!(
        err.contains("401 Unauthorized") && err.contains(&reg.host),
        "{err}"
    );
    drop(d);
    let daemon_log = std::fs::read_to_string(a.path().join("buildd.log")).unwrap();
    assert!(
        !daemon_log.contains("s3cret"),
        "the daemon never logs a credential"
    );
}

#[test]
fn registry_cache_makes_a_fresh_store_hit_every_step() {
    require!("docker-registry");
    let reg = Registry::plain();
    let df = "FROM scratch\nADD busybox.tar /\nRUN echo one > /one\nRUN echo two > /two\nCMD [\"cat\", \"/two\"]\n";
    let cache = format!("type=registry,ref={}/cache/app:main", reg.host);
    // Machine A builds and exports its cache.
    let a = Env::new();
    let ctx_a = a.context("app", df);
    let (built, log) = a.build(&ctx_a, &["--cache-to", &cache]);
    assert!(log.contains("3 entries"), "{log}");
    let (inspect, _) = a.ok(&["inspect", &built]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    let layers: Vec<String> = v["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 3);

    // Machine B, a fresh store with the same context: every step is a
    // cache hit and the image digest is identical.
    let b = Env::new();
    let ctx_b = b.context_like(&ctx_a, df);
    let (rebuilt, log) = b.build(&ctx_b, &["--cache-from", &cache]);
    assert_eq!(rebuilt, built, "{log}");
    assert_eq!(log.matches("CACHED").count(), 3, "{log}");
    assert!(!log.contains("cache miss"), "{log}");
    assert_eq!(b.run_image(&rebuilt), "two");

    // Machine C changes the last step: the first two are reused, and the
    // layer of the changed step is never downloaded.
    let c = Env::new();
    let ctx_c = c.context_like(&ctx_a, &df.replace("echo two", "echo three"));
    let (_, log) = c.build(&ctx_c, &["--cache-from", &cache]);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    let blob = |d: &str| {
        c.store()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    assert!(blob(&layers[0]).exists() && blob(&layers[1]).exists());
    assert!(
        !blob(&layers[2]).exists(),
        "an unneeded layer was downloaded"
    );

    // A missing cache is reported, not fatal.
    let d = Env::new();
    let ctx_d = d.context_like(&ctx_a, df);
    let missing = format!("type=registry,ref={}/cache/none:x", reg.host);
    let (_, log) = d.build(&ctx_d, &["--cache-from", &missing]);
    assert!(log.contains("not imported"), "{log}");
    let err = d.fail(&[
        "build",
        "--cache-from",
        "type=local,src=/tmp",
        ctx_d.to_str().unwrap(),
    ]);
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn faults_registry_down_or_missing_blob_leave_the_store_consistent_and_retries_resume() {
    require!("docker-registry");
    let mut reg = Registry::plain();
    let a = Env::new();
    let name = format!("{}/faults/app:v1", reg.host);
    let (built, _) = a.build(
        &a.context(
            "app",
            "FROM scratch\nADD busybox.tar /\nRUN echo one > /one\nRUN echo two > /two\nCMD [\"cat\", \"/two\"]\n",
        ),
        &["-t", &name],
    );
    a.ok(&["push", &name]);
    let (inspect, _) = a.ok(&["inspect", &name]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    let last = v["Manifest"]["layers"].as_array().unwrap()[2]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // The registry is down: a clear error naming it, nothing stored.
    reg.stop();
    let b = Env::new();
    let err = b.fail(&["pull", &name]);
    assert!(
        err.contains(&reg.host) && err.to_lowercase().contains("connect"),
        "{err}"
    );
    assert_eq!(b.index()["manifests"].as_array().unwrap().len(), 0);
    assert_eq!(b.blob_count(), 0);
    let err = a.fail(&["push", &name, &format!("{}/faults/other:v1", reg.host)]);
    assert!(err.contains(&reg.host), "{err}");
    reg.restart();

    // One layer is unavailable mid-pull: the pull fails, no image appears,
    // the verified blobs it finished stay and the retry fetches only the rest.
    let data = reg.blob_data(&last);
    let saved = a.path().join("saved-layer");
    std::fs::rename(&data, &saved).unwrap();
    let err = b.fail(&["pull", &name]);
    assert!(err.contains(&last), "{err}");
    assert_eq!(
        b.index()["manifests"].as_array().unwrap().len(),
        0,
        "no image from a failed pull"
    );
    let partial = b.blob_count();
    assert!(partial >= 1, "finished blobs are kept for the retry");
    assert!(
        std::fs::read_dir(b.store().join("tmp")).unwrap().count() == 0,
        "no partial download is left behind"
    );
    std::fs::rename(&saved, &data).unwrap();
    let (pulled, log) = b.ok(&["pull", "--progress", "plain", &name]);
    assert_eq!(pulled, built);
    let downloaded = log.matches(": done").count();
    assert_eq!(
        downloaded + partial,
        4,
        "config + 3 layers, each fetched once: {log}"
    );
    assert!(
        log.contains(&format!("{}: downloading", &last[7..19])),
        "{log}"
    );
    assert_eq!(b.run_image(&name), "two");
}

#[test]
fn mirrors_are_tried_first_and_the_registry_after() {
    require!("docker-registry");
    let upstream = Registry::plain();
    let mirror = Registry::plain();
    let a = Env::new();
    // The mirror has "mirrored/app:v1" (pushed there under the upstream's
    // repository name), the upstream only "direct/app:v1".
    let (on_mirror, _) = a.build(&a.context("m", APP), &["-t", "m:v1"]);
    a.ok(&["push", "m:v1", &format!("{}/mirrored/app:v1", mirror.host)]);
    let (direct, _) = a.build(
        &a.context(
            "d",
            "FROM scratch\nADD busybox.tar /\nRUN echo direct > /msg\nCMD [\"cat\", \"/msg\"]\n",
        ),
        &["-t", "d:v1"],
    );
    a.ok(&["push", "d:v1", &format!("{}/direct/app:v1", upstream.host)]);

    let b = Env::new();
    b.write_registries(&format!(
        "[registry.\"{}\"]\nmirrors = [\"{}\"]\n",
        upstream.host, mirror.host
    ));
    let name = format!("{}/mirrored/app:v1", upstream.host);
    let (got, log) = b.ok(&["pull", "--progress", "plain", &name]);
    assert_eq!(got, on_mirror);
    assert!(
        log.contains(&format!("trying mirror {}", mirror.host)),
        "{log}"
    );
    // Stored under the name asked for, not the mirror's.
    assert_eq!(b.run_image(&name), "pulled-and-ran");
    // What the mirror lacks comes from the registry itself.
    let (got, _) = b.ok(&["pull", &format!("{}/direct/app:v1", upstream.host)]);
    assert_eq!(got, direct);
}

#[test]
fn copy_from_and_mount_from_a_registry_image_pull_it() {
    require!("docker-registry");
    let reg = Registry::plain();
    let a = Env::new();
    let name = format!("{}/parts/app:v1", reg.host);
    a.build(&a.context("app", APP), &["-t", &name]);
    a.ok(&["push", &name]);
    let b = Env::new();
    let ctx = b.context(
        "copy",
        &format!(
            "ARG SRC={name}\nFROM scratch\nARG SRC\nADD busybox.tar /\nCOPY --from=${{SRC}} /msg /copied\nRUN --mount=type=bind,from={name},target=/src cat /src/msg > /mounted\nCMD [\"cat\", \"/copied\", \"/mounted\"]\n"
        ),
    );
    let (_, log) = b.build(&ctx, &["-t", "parts"]);
    assert!(log.contains(&format!("pulling base image {name}")), "{log}");
    assert_eq!(b.run_image("parts"), "pulled-and-ran\npulled-and-ran");
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("sha256:{}", hex_string(&h.finalize()))
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A docker archive of an image with a small layer and a `big_mb` MiB
/// uncompressed one (berth keeps archive layers as they are, so the push
/// sends that many bytes).
fn big_archive(dir: &Path, big_mb: usize) -> PathBuf {
    let w = dir.join("archive");
    for d in ["small", "big"] {
        std::fs::create_dir_all(w.join(format!("{d}-root"))).unwrap();
    }
    std::fs::write(w.join("small-root/hello"), "hello\n").unwrap();
    run(Command::new("head")
        .args(["-c", &format!("{big_mb}M"), "/dev/urandom"])
        .stdout(std::fs::File::create(w.join("big-root/big")).unwrap()));
    for d in ["small", "big"] {
        run(Command::new("tar")
            .arg("-C")
            .arg(w.join(format!("{d}-root")))
            .args(["--numeric-owner", "-cf"])
            .arg(w.join(format!("{d}.tar")))
            .arg("."));
        std::fs::remove_dir_all(w.join(format!("{d}-root"))).unwrap();
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_file(&w.join("small.tar")), sha256_file(&w.join("big.tar"))]},
    });
    std::fs::write(w.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::write(
        w.join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["big:v1"],"Layers":["small.tar","big.tar"]}]"#,
    )
    .unwrap();
    let archive = dir.join("big.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&w)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "small.tar", "big.tar"]));
    std::fs::remove_dir_all(&w).unwrap();
    archive
}

/// Loads [`big_archive`] (`big:v1`, a `big_mb` MiB layer) into `env`: its
/// config digest and layer digests (small, big).
fn load_big(env: &Env, big_mb: usize) -> (String, Vec<String>) {
    let archive = big_archive(env.path(), big_mb);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let (inspect, _) = env.ok(&["inspect", "big:v1"]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    let digest = |d: &Value| d["digest"].as_str().unwrap().to_string();
    let layers = v["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(digest)
        .collect();
    (digest(&v["Manifest"]["config"]), layers)
}

#[test]
fn registry_stopped_mid_push_then_the_retry_sends_only_what_is_missing() {
    require!("docker-registry");
    let mut reg = Registry::plain();
    let a = Env::new();
    let (config, layers) = load_big(&a, 192);
    let (small, big) = (&layers[0], &layers[1]);
    let dest = format!("{}/big/app:v1", reg.host);

    // Push, and stop the registry once the small blobs are in but the big
    // one is still on its way.
    let push = a
        .cmd(&["push", "--progress", "plain", "big:v1", &dest])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Stored *and* linked into the repository, the link written in full:
    // docker-registry moves a blob's data into place before it writes the
    // repository's link file, and writes that file in place (created empty,
    // filled at commit). A registry killed in between answers the retry's
    // HEAD for that blob with an error, and the blob is uploaded again.
    while ![small, &config]
        .iter()
        .all(|d| reg.blob_data(d).exists() && reg.linked("big/app", d))
    {
        assert!(Instant::now() < deadline, "the small blobs never arrived");
        std::thread::sleep(Duration::from_millis(2));
    }
    reg.stop();
    let out = push.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the push cannot succeed with the registry gone: {err}"
    );
    assert!(
        !reg.blob_data(big).exists(),
        "the big layer finished before the registry was stopped (machine too fast for this test)"
    );
    assert!(err.contains(&reg.host), "{err}");

    // The retry sends only the big layer.
    reg.restart();
    let (pushed, log) = a.ok(&["push", "--progress", "plain", "big:v1", &dest]);
    assert!(
        log.contains(&format!("{}: already exists", &small[7..19])),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}: already exists", &config[7..19])),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}: uploading", &big[7..19])),
        "{log}"
    );
    assert!(log.contains("(1 blobs,"), "{log}");
    // And what arrived is the image, byte for byte.
    let b = Env::new();
    let (pulled, _) = b.ok(&["pull", &dest]);
    assert_eq!(pulled, pushed);
}

/// A registry killed while linking a blob into a repository can leave the
/// link file truncated; HEAD of that blob then answers 500 until it is
/// uploaded again. A push treats a server error to HEAD as "not there" and
/// uploads the blob, which repairs the repository, instead of failing.
#[test]
fn a_blob_the_registry_cannot_answer_for_is_uploaded_again() {
    require!("docker-registry");
    let reg = Registry::plain();
    let a = Env::new();
    let (_, layers) = load_big(&a, 1);
    let layer = layers[0].clone();
    let dest = format!("{}/broken/link:v1", reg.host);
    let (pushed, _) = a.ok(&["push", "big:v1", &dest]);
    let link = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/broken/link/_layers/sha256")
        .join(layer.trim_start_matches("sha256:"))
        .join("link");
    assert!(link.exists(), "no link at {}", link.display());
    std::fs::write(&link, "").unwrap();
    let head = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
        .arg(reg.url(&format!("/v2/broken/link/blobs/{layer}")))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head.stdout),
        "500",
        "the registry no longer answers 500 for a truncated link"
    );

    let (again, log) = a.ok(&["push", "--progress", "plain", "big:v1", &dest]);
    assert_eq!(again, pushed);
    assert!(
        log.contains(&format!("{}: uploading", &layer[7..19])),
        "{log}"
    );
    // Repaired: a fresh store pulls the image.
    let b = Env::new();
    let (pulled, _) = b.ok(&["pull", &dest]);
    assert_eq!(pulled, pushed);
}

/// Size of the largest file directly in `dir` (0 if none).
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn registry_stopped_mid_pull_then_the_retry_resumes_the_cut_blob() {
    require!("docker-registry");
    let mut reg = Registry::plain();
    let a = Env::new();
    let (_, layers) = load_big(&a, 192);
    let big = layers[1].clone();
    let dest = format!("{}/big/pull:v1", reg.host);
    let (pushed, _) = a.ok(&["push", "big:v1", &dest]);

    let b = Env::new();
    let pull = b
        .cmd(&["pull", "--progress", "plain", &dest])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the registry once 16 MiB of the big layer are down.
    let deadline = Instant::now() + Duration::from_secs(60);
    while largest_file(&b.store().join("tmp")) < 16 << 20 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
    reg.stop();
    let out = pull.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&reg.host) && err.contains("kept for a retry"),
        "{err}"
    );
    assert_eq!(
        b.index()["manifests"].as_array().unwrap().len(),
        0,
        "no image from a cut pull"
    );
    let kept = b.store().join("partial").join(&big[7..]);
    let kept_len = std::fs::metadata(&kept).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept_len >= 16 << 20,
        "the cut layer is kept: {kept_len} bytes"
    );

    reg.restart();
    let (pulled, log) = b.ok(&["pull", "--progress", "plain", &dest]);
    assert_eq!(pulled, pushed);
    assert!(
        log.contains(&format!("{}: resuming at", &big[7..19])),
        "{log}"
    );
    assert!(!kept.exists(), "the partial file is consumed");
}

/// A minimal registry in Python with Docker Hub's auth scheme: every
/// request needs a Bearer token that `/token` issues for Basic credentials
/// (`berth` / `t0ken-pass`); it serves one image (`fake/app:v1`) from a
/// berth store's blobs and, as `fake/app:big`, a 5 MiB manifest. It logs
/// each token request (scope, service) to `token.log`.
const FAKE_REGISTRY: &str = r#"
import base64, http.server, json, os, re, sys
blobs, port, manifest, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TOKEN = "berth-fake-token"
BASIC = "Basic " + base64.b64encode(b"berth:t0ken-pass").decode()
BIG = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                             "digest": "sha256:" + "0" * 64, "size": 2},
                  "layers": [], "annotations": {"pad": "x" * (5 << 20)}}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, data=b"", ctype="application/json", extra=()):
        self.send_response(code)
        for k, v in extra: self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD": self.wfile.write(data)
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        if self.path.startswith("/token"):
            with open(log, "a") as f: f.write(self.path + "\n")
            if self.headers.get("Authorization") != BASIC:
                return self.reply(401, b'{"details":"wrong credentials"}')
            return self.reply(200, json.dumps({"token": TOKEN, "expires_in": 300}).encode())
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', extra=[(
                "WWW-Authenticate",
                f'Bearer realm="http://127.0.0.1:{port}/token",service="fake-registry",scope="repository:fake/app:pull"')])
        if self.path == "/v2/": return self.reply(200, b"{}")
        m = re.fullmatch(r"/v2/fake/app/(manifests|blobs)/([^/]+)", self.path)
        if not m: return self.reply(404, b"{}")
        kind, ref = m.groups()
        if kind == "manifests" and ref == "big":
            return self.reply(200, BIG, "application/vnd.oci.image.manifest.v1+json")
        if kind == "manifests" and ref in ("v1", manifest):
            ref = manifest
        if not ref.startswith("sha256:"): return self.reply(404, b"{}")
        path = os.path.join(blobs, ref[7:])
        if not os.path.exists(path): return self.reply(404, b"{}")
        data = open(path, "rb").read()
        ctype = "application/vnd.oci.image.manifest.v1+json" if kind == "manifests" else "application/octet-stream"
        self.reply(200, data, ctype, [("Docker-Content-Digest", ref)])
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

struct FakeRegistry {
    child: Child,
    host: String,
    token_log: PathBuf,
}

impl FakeRegistry {
    fn start(dir: &Path, blobs: &Path, manifest: &str) -> FakeRegistry {
        let port = free_port();
        let script = dir.join("fake_registry.py");
        std::fs::write(&script, FAKE_REGISTRY).unwrap();
        let token_log = dir.join("token.log");
        let child = Command::new("python3")
            .arg(&script)
            .arg(blobs)
            .arg(port.to_string())
            .arg(manifest)
            .arg(&token_log)
            .spawn()
            .unwrap();
        let mut f = FakeRegistry {
            child,
            host: format!("127.0.0.1:{port}"),
            token_log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&f.host).is_err() {
            if let Ok(Some(st)) = f.child.try_wait() {
                panic!("the fake registry exited: {st}");
            }
            assert!(Instant::now() < deadline, "the fake registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bearer_token_auth_and_an_oversized_manifest() {
    require!("python3");
    let a = Env::new();
    let (built, _) = a.build(&a.context("app", APP), &["-t", "fake-src"]);
    let fake = FakeRegistry::start(a.path(), &a.store().join("blobs/sha256"), &built);
    let name = format!("{}/fake/app:v1", fake.host);

    // No credentials: the token server refuses, the error names the registry.
    let b = Env::new();
    let err = b.fail(&["pull", &name]);
    assert!(
        err.contains("401 Unauthorized") && err.contains(&fake.host),
        "{err}"
    );
    assert_eq!(b.blob_count(), 0);

    // login checks the password with the token server.
    let o = b.login_to(&fake.host, "berth", "wrong");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401 Unauthorized"));
    let o = b.login_to(&fake.host, "berth", "t0ken-pass");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&fake.token_log, "").unwrap();

    let (pulled, _) = b.ok(&["pull", &name]);
    assert_eq!(pulled, built);
    assert_eq!(b.run_image(&name), "pulled-and-ran");
    // Tokens are scoped to the repository and reused across requests.
    let log = std::fs::read_to_string(&fake.token_log).unwrap();
    let requests: Vec<&str> = log.lines().collect();
    assert!(!requests.is_empty(), "no token was requested");
    assert!(
        requests
            .iter()
            .all(|r| r.contains("scope=repository%3Afake%2Fapp%3Apull")
                && r.contains("service=fake-registry")),
        "{log}"
    );
    assert!(requests.len() <= 2, "the token is reused: {log}");

    // A manifest over 4 MiB is refused and nothing is stored.
    let c = Env::new();
    std::fs::copy(b.docker_config(), c.docker_config()).unwrap();
    let err = c.fail(&["pull", &format!("{}/fake/app:big", fake.host)]);
    assert!(err.contains("too large"), "{err}");
    assert_eq!(c.index()["manifests"].as_array().unwrap().len(), 0);
    assert_eq!(c.blob_count(), 0);
}

#[test]
fn podman_pulls_what_berth_pushed_and_runs_it_with_berth() {
    require!("docker-registry", "podman");
    let reg = Registry::plain();
    let a = Env::new();
    let name = format!("{}/podman/app:v1", reg.host);
    let (built, _) = a.build(&a.context("app", APP), &["-t", &name]);
    a.ok(&["push", &name]);
    let pm = Podman::new("berth-reg-podman");
    run(&mut pm.cmd(&["pull", "--tls-verify=false", &name]));
    let o = run(&mut pm.cmd(&["image", "inspect", "--format", "{{.Digest}}", &name]));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        built,
        "same manifest digest"
    );
    let mut args = vec!["run", "--rm"];
    args.extend(PODMAN_RUN_OPTS);
    args.push(&name);
    let o = run(&mut pm.cmd(&args));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "pulled-and-ran");
}

/// The image service of containerd's CRI socket (the kubelet's PullImage).
async fn cri_images(
    socket: &Path,
) -> k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    k8s_cri::v1::image_service_client::ImageServiceClient::new(channel)
}

#[test]
fn kubernetes_cri_pulls_what_berth_pushed_and_a_berth_pod_runs_it() {
    use berth_integration::containerd_cri::{CriNode, RuntimeHandler};
    use berth_integration::cri_client::Kubelet;
    use k8s_cri::v1::{
        ContainerConfig, ContainerMetadata, ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
        PodSandboxMetadata, PullImageRequest,
    };
    require!("docker-registry", "containerd");
    let fixture = berth_integration::harness::busybox_fixture().join("rootfs");
    if !fixture.join("bin/busybox").exists() {
        berth_integration::harness::skip("busybox fixture missing (make fixtures)");
        return;
    }
    let reg = Registry::plain();
    let a = Env::new();
    let name = format!("{}/k8s/app:v1", reg.host);
    let (built, _) = a.build(&a.context("app", APP), &["-t", &name]);
    a.ok(&["push", &name]);

    // Only the sandbox (pause) image is imported; the app comes from the registry.
    let pause_ref = "docker.io/library/berth-pause:1";
    let pause = a.path().join("pause.tar");
    berth_integration::image::write_docker_archive(&fixture, pause_ref, &["sleep", "3600"], &pause)
        .unwrap();
    let handlers = vec![RuntimeHandler {
        name: "berth".into(),
        binary: berth_bin().canonicalize().unwrap(),
        shim: None,
    }];
    let node = CriNode::start(pause_ref, &handlers).unwrap();
    node.import(&pause).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = rt.block_on(async {
        let mut images = cri_images(&node.socket).await;
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .expect("PullImage");
        let st = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner();
        let repo_digests = st.image.map(|i| i.repo_digests).unwrap_or_default();
        assert!(
            repo_digests.contains(&format!("{}/k8s/app@{built}", reg.host)),
            "containerd has the manifest berth pushed: {repo_digests:?}"
        );

        let mut k = Kubelet::connect(&node.socket).await.unwrap();
        let uid = unique("uid");
        let log_dir = node.log_root().join(format!("default_registry_{uid}"));
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "registry".into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: log_dir.to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", node.cgroup_parent()),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let result = async {
            let pod = k.run_pod(&sandbox, "berth").await?;
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                log_path: "app/0.log".into(),
                ..Default::default()
            };
            let id = k.run(&pod, config, &sandbox).await?;
            let code = k.wait_exited(&id, Duration::from_secs(20)).await?;
            anyhow::ensure!(code == 0, "the pod's container exited {code}");
            Ok(std::fs::read_to_string(log_dir.join("app/0.log"))?)
        }
        .await;
        k.remove_all_pods().await;
        result
    });
    let log = log.unwrap_or_else(|e| panic!("{e:#}\n{}", node.log_tail(40)));
    assert!(log.contains("pulled-and-ran"), "{log}");
}

#[test]
fn credentials_through_a_docker_credential_helper() {
    require!("docker-registry", "openssl", "htpasswd");
    let reg = Registry::tls_with_auth();
    let a = Env::new();
    a.trust(&reg);
    // docker-credential-berthtest keeps credentials in a file of its own.
    let bin = a.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vault = a.path().join("vault.json");
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            r#"#!/usr/bin/env python3
import json, os, sys
vault = {vault:?}
data = json.load(open(vault)) if os.path.exists(vault) else {{}}
verb = sys.argv[1]
if verb == "store":
    c = json.load(sys.stdin)
    data[c["ServerURL"]] = {{"Username": c["Username"], "Secret": c["Secret"]}}
    json.dump(data, open(vault, "w"))
elif verb == "get":
    server = sys.stdin.read().strip()
    if server not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps(dict(ServerURL=server, **data[server])))
elif verb == "erase":
    server = sys.stdin.read().strip()
    if data.pop(server, None) is None: sys.exit(1)
    json.dump(data, open(vault, "w"))
"#,
            vault = vault.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(a.docker_config(), r#"{"credsStore":"berthtest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_path = |args: &[&str]| {
        let mut c = a.cmd(args);
        c.env("PATH", &path);
        c
    };

    let mut login = with_path(&["login", "-u", "berth", "--password-stdin", &reg.host]);
    login
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "s3cret").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The secret is in the helper's store, not in config.json.
    let cfg = std::fs::read_to_string(a.docker_config()).unwrap();
    assert!(!cfg.contains("\"auth\""), "{cfg}");
    assert!(std::fs::read_to_string(&vault).unwrap().contains("s3cret"));

    let name = format!("{}/helper/app:v1", reg.host);
    let (built, _) = a.build(&a.context("app", APP), &["-t", &name]);
    let o = run(&mut with_path(&["push", &name]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), built);
    // Without the helper on PATH there is no credential: it came from the helper.
    let err = a.fail(&["pull", &name]);
    assert!(err.contains("docker-credential-berthtest"), "{err}");

    run(&mut with_path(&["logout", &reg.host]));
    assert!(!std::fs::read_to_string(&vault).unwrap().contains("s3cret"));
}

#[test]
fn a_registry_cache_that_lies_about_a_layer_gives_a_miss() {
    require!("docker-registry", "curl");
    let reg = Registry::plain();
    let df = "FROM scratch\nADD busybox.tar /\nRUN echo one > /one\nCMD [\"cat\", \"/one\"]\n";
    let cache = format!("{}/cache/lie:main", reg.host);
    let a = Env::new();
    let ctx_a = a.context("app", df);
    let (built, _) = a.build(
        &ctx_a,
        &["--cache-to", &format!("type=registry,ref={cache}")],
    );

    // Rewrite the cache: every entry's diff_id becomes a wrong one.
    let o = run(Command::new("curl").args([
        "-fsS",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &reg.url("/v2/cache/lie/manifests/main"),
    ]));
    let mut manifest: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cfg_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let o = run(Command::new("curl").args([
        "-fsS",
        &reg.url(&format!("/v2/cache/lie/blobs/{cfg_digest}")),
    ]));
    let mut cfg: Value = serde_json::from_slice(&o.stdout).unwrap();
    let wrong = format!("sha256:{}", "1".repeat(64));
    for e in cfg["entries"].as_object_mut().unwrap().values_mut() {
        if e["layer"].is_object() {
            e["layer"]["diff_id"] = wrong.clone().into();
        }
    }
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_file = a.path().join("lying-cache.json");
    std::fs::write(&cfg_file, &cfg_bytes).unwrap();
    let new_digest = sha256_file(&cfg_file);
    // Monolithic upload: POST for a session, PUT the bytes with their digest.
    let o = run(Command::new("curl").args([
        "-fsS",
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &reg.url("/v2/cache/lie/blobs/uploads/"),
    ]));
    let headers = String::from_utf8_lossy(&o.stdout).into_owned();
    let location = headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Location: {headers}"));
    let location = if location.starts_with('/') {
        reg.url(&location)
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    curl_put(
        &format!("{location}{sep}digest={new_digest}"),
        "application/octet-stream",
        &cfg_file,
    );
    manifest["config"]["digest"] = new_digest.into();
    manifest["config"]["size"] = cfg_bytes.len().into();
    let m_file = a.path().join("lying-manifest.json");
    std::fs::write(&m_file, serde_json::to_vec(&manifest).unwrap()).unwrap();
    curl_put(
        &reg.url("/v2/cache/lie/manifests/main"),
        "application/vnd.oci.image.manifest.v1+json",
        &m_file,
    );

    // A fresh store trusts nothing it cannot check: every step runs, and
    // the image is the right one (its layers are the ones built).
    let b = Env::new();
    let ctx_b = b.context_like(&ctx_a, df);
    let (rebuilt, log) = b.build(
        &ctx_b,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert_eq!(log.matches("CACHED").count(), 0, "{log}");
    let (inspect, _) = b.ok(&["inspect", &rebuilt]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    let diff_ids = v["Config"]["rootfs"]["diff_ids"].as_array().unwrap();
    assert!(
        diff_ids.iter().all(|d| d != &Value::from(wrong.clone())),
        "{inspect}"
    );
    let (orig, _) = a.ok(&["inspect", &built]);
    let o: Value = serde_json::from_str(&orig).unwrap();
    // ADD is reproducible (RUN output carries the time it ran).
    assert_eq!(
        o["Config"]["rootfs"]["diff_ids"][0],
        v["Config"]["rootfs"]["diff_ids"][0]
    );
    assert_eq!(b.run_image(&rebuilt), "one");
}
