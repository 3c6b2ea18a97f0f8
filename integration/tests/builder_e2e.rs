//! End-to-end tests of berth-build / berth-buildd: builds with RUN steps
//! executed by berth ($BERTH_BIN) or runc, the build cache and its miss
//! reasons, outputs checked with real clients (skopeo, umoci, podman, ctr,
//! buildah), bundles run by the runtime, and hostile input.
//!
//! A test whose external tool is missing says `SKIP: <reason>` and returns,
//! except under CI=true, where it fails (scripts/deps.sh installs them all).
use berth_integration::builder::{builder_bin, step_runtime as runtime, BuildEnv, Busybox};
use berth_integration::harness::unique;
use berth_integration::require;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A store plus helpers to run berth-build against it.
/// The applets the busybox root filesystem of every context has.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "mkdir", "true", "id", "env", "chmod", "touch", "uname", "stat",
    "wc", "hostname", "pwd", "rm",
];

/// A store in a temporary directory (cleaned up on drop).
fn new_env() -> BuildEnv {
    BuildEnv::new("bb-e2e")
}

/// A context dir with busybox.tar (static busybox rootfs with a nobody
/// user) and `dockerfile`.
fn context(env: &BuildEnv, name: &str, dockerfile: &str) -> PathBuf {
    let rootfs = Busybox {
        passwd: Some("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        group: Some("root:x:0:\nnogroup:x:65534:\n"),
        ..Busybox::new(APPLETS)
    };
    env.context_with(name, dockerfile, &rootfs)
}

const SIMPLE: &str = "FROM scratch
ADD busybox.tar /
ENV GREETING=hello
RUN echo \"$GREETING from RUN\" > /greeting && cat /greeting
WORKDIR /app
COPY src/ /app/src/
CMD [\"cat\", \"/greeting\"]
";

fn simple_ctx(env: &BuildEnv) -> PathBuf {
    let ctx = context(env, "simple", SIMPLE);
    std::fs::create_dir_all(ctx.join("src/lib")).unwrap();
    std::fs::write(ctx.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    std::fs::write(ctx.join("src/lib/util.c"), "int util;\n").unwrap();
    std::fs::write(ctx.join("src/scratch.tmp"), "ignored\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "# editor files\n**/*.tmp\n").unwrap();
    ctx
}

/// True when an `images` listing has a line for `repo` `tag`.
fn lists(images: &str, repo: &str, tag: &str) -> bool {
    images
        .lines()
        .any(|l| l.split_whitespace().take(2).eq([repo, tag]))
}

fn steps_with(log: &str, word: &str) -> usize {
    log.lines().filter(|l| l.contains(word)).count()
}

#[test]
fn build_run_and_cache_explain_misses() {
    let env = new_env();
    let ctx = simple_ctx(&env);
    let (d1, log1) = env.build(&ctx, &["-t", "simple"]);
    assert!(d1.starts_with("sha256:"), "{d1}");
    assert!(
        log1.contains("hello from RUN"),
        "RUN output is streamed:\n{log1}"
    );
    assert_eq!(steps_with(&log1, "CACHED"), 0);

    // Unchanged rebuild: every filesystem step cached, identical image.
    let (d2, log2) = env.build(&ctx, &["-t", "simple"]);
    assert_eq!(steps_with(&log2, "CACHED"), 4, "{log2}");
    assert_eq!(d1, d2, "a fully cached rebuild yields the same image");

    // mtime-only change: still cached.
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    std::fs::File::options()
        .write(true)
        .open(ctx.join("src/main.c"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let (_, log3) = env.build(&ctx, &["-t", "simple"]);
    assert_eq!(
        steps_with(&log3, "CACHED"),
        4,
        "mtime must not bust the cache:\n{log3}"
    );

    // Content change: COPY misses and says which file.
    std::fs::write(ctx.join("src/lib/util.c"), "int util = 1;\n").unwrap();
    let (d4, log4) = env.build(&ctx, &["-t", "simple"]);
    assert_ne!(d4, d1);
    assert_eq!(steps_with(&log4, "CACHED"), 3, "{log4}");
    assert!(
        log4.contains("cache miss: COPY src/ /app/src/: content of src/lib/util.c changed"),
        "{log4}"
    );

    // Mode change also misses.
    std::fs::set_permissions(
        ctx.join("src/main.c"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (_, log5) = env.build(&ctx, &["-t", "simple"]);
    assert!(log5.contains("content of src/main.c changed"), "{log5}");

    // --no-cache runs everything.
    let (_, log6) = env.build(&ctx, &["-t", "simple", "--no-cache"]);
    assert_eq!(steps_with(&log6, "CACHED"), 0);
    assert!(log6.contains("--no-cache"), "{log6}");

    // ENV change before RUN: RUN misses because its environment changed.
    std::fs::write(
        ctx.join("Dockerfile"),
        SIMPLE.replace("GREETING=hello", "GREETING=bonjour"),
    )
    .unwrap();
    let (_, log7) = env.build(&ctx, &["-t", "simple"]);
    assert!(log7.contains("bonjour from RUN"), "{log7}");
    assert!(log7.contains("environment changed"), "{log7}");
    assert!(log7.contains("WORKDIR: parent step changed"), "{log7}");

    // Config and history look like BuildKit's.
    let (out, _) = env.ok_err(&["inspect", "simple"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let cfg = &v["Config"];
    assert_eq!(
        cfg["config"]["Cmd"],
        serde_json::json!(["cat", "/greeting"])
    );
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    let hist: Vec<&str> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert!(
        hist.contains(
            &"RUN /bin/sh -c echo \"$GREETING from RUN\" > /greeting && cat /greeting # buildkit"
        ),
        "{hist:?}"
    );
    let empty: Vec<bool> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(empty, vec![false, true, false, false, false, true]);
}

#[test]
fn bundle_runs_with_the_runtime() {
    let env = new_env();
    let ctx = context(&env,
        "bundle",
        "FROM scratch\nADD busybox.tar /\nRUN echo built > /built\nUSER nobody\nWORKDIR /tmp\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo $(cat /built) as $(id -u) in $(pwd)\"]\n",
    );
    env.build(&ctx, &["-t", "bundle-test"]);
    let b = env.path().join("bundle");
    env.ok_err(&["bundle", "bundle-test", b.to_str().unwrap()]);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["user"]["uid"], 65534);
    assert_eq!(cfg["process"]["cwd"], "/tmp");
    let id = unique("bb-bundle");
    let out = Command::new(runtime())
        .args(["run", "--bundle"])
        .arg(&b)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new(runtime())
        .args(["delete", "--force", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "built as 65534 in /tmp");
}

#[test]
fn multistage_target_build_args_and_metadata() {
    let env = new_env();
    let df = "ARG BASE=scratch
FROM ${BASE} AS base
ADD busybox.tar /
ONBUILD RUN echo triggered > /onbuild

FROM base AS builder
ARG WHO=nobody
RUN echo \"made by $WHO\" > /artifact

FROM base AS other
RUN echo other > /other

FROM scratch AS final
COPY --from=builder /artifact /artifact
COPY --from=base --chmod=750 /bin/busybox /bin/
COPY --link --exclude=*.md --chown=7:8 docs/ /docs/
LABEL org.example.k=v
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s CMD [\"/bin/busybox\", \"true\"]
CMD [\"/artifact\"]
ENTRYPOINT [\"/bin/busybox\", \"cat\"]
";
    let ctx = context(&env, "multi", df);
    std::fs::create_dir_all(ctx.join("docs")).unwrap();
    std::fs::write(ctx.join("docs/a.txt"), "a\n").unwrap();
    std::fs::write(ctx.join("docs/b.md"), "b\n").unwrap();
    let (_, log) = env.build(&ctx, &["-t", "multi", "--build-arg", "WHO=berth"]);
    assert!(!log.contains("[other]"), "unneeded stage was built:\n{log}");
    let (out, _) = env.ok_err(&["inspect", "multi"]);
    let cfg = &serde_json::from_str::<Value>(&out).unwrap()["Config"]["config"];
    assert_eq!(cfg["Labels"]["org.example.k"], "v");
    assert!(
        cfg["ExposedPorts"].get("8080/tcp").is_some()
            && cfg["ExposedPorts"].get("53/udp").is_some()
    );
    assert!(cfg["Volumes"].get("/data").is_some());
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/bin/busybox", "true"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000u64);
    // CMD set in this stage survives the later ENTRYPOINT.
    assert_eq!(cfg["Cmd"], serde_json::json!(["/artifact"]));
    let local = env.path().join("local");
    env.build(
        &ctx,
        &[
            "-t",
            "multi",
            "--build-arg",
            "WHO=berth",
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(local.join("artifact")).unwrap(),
        "made by berth\n"
    );
    assert_eq!(
        std::fs::metadata(local.join("bin/busybox")).unwrap().mode() & 0o7777,
        0o750
    );
    let a = std::fs::metadata(local.join("docs/a.txt")).unwrap();
    assert_eq!((a.uid(), a.gid()), (7, 8));
    assert!(!local.join("docs/b.md").exists(), "--exclude was ignored");
    // ONBUILD ran in the child stage (builder), not in base itself.
    let (_, _) = env.ok_err(&["bundle", "multi", env.path().join("b").to_str().unwrap()]);

    // --target builds an intermediate stage; the trigger ran there.
    let tl = env.path().join("target-local");
    env.build(
        &ctx,
        &[
            "-t",
            "multi-builder",
            "--target",
            "builder",
            "-o",
            &format!("type=local,dest={}", tl.display()),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(tl.join("onbuild")).unwrap(),
        "triggered\n"
    );
    assert_eq!(
        std::fs::read_to_string(tl.join("artifact")).unwrap(),
        "made by nobody\n"
    );
    let (hist, _) = env.ok_err(&["history", "multi-builder"]);
    assert!(hist.contains("ARG WHO=nobody"), "{hist}");

    // ENTRYPOINT resets a CMD inherited from the base.
    let ctx2 = context(
        &env,
        "ep",
        "FROM scratch\nADD busybox.tar /\nCMD [\"sh\"]\n",
    );
    env.build(&ctx2, &["-t", "ep-base"]);
    std::fs::write(
        ctx2.join("Dockerfile"),
        "FROM ep-base\nENTRYPOINT [\"/bin/echo\"]\n",
    )
    .unwrap();
    env.build(&ctx2, &["-t", "ep-child"]);
    let (out, _) = env.ok_err(&["inspect", "ep-child"]);
    let cfg = &serde_json::from_str::<Value>(&out).unwrap()["Config"]["config"];
    assert!(cfg.get("Cmd").is_none(), "{cfg}");
}

#[test]
fn run_mounts_and_add_sources() {
    let env = new_env();
    // A tiny HTTP server for ADD <url>.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = b"downloaded\n";
            let _ = std::io::Write::write_all(
                &mut s,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = std::io::Write::write_all(&mut s, body);
        }
    });
    let sum = {
        let o = Command::new("sh")
            .args(["-c", "printf 'downloaded\\n' | sha256sum"])
            .output()
            .unwrap();
        format!(
            "sha256:{}",
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap()
        )
    };
    let df = format!(
        "FROM scratch
ADD busybox.tar /
ADD --checksum={sum} http://127.0.0.1:{port}/files/data.txt /dl/
ADD extra.tar.gz /extracted/
COPY <<EOF /etc/motd
hello heredoc
EOF
RUN --mount=type=cache,target=/cache echo x >> /cache/count && wc -l < /cache/count > /cache-count
RUN --mount=type=tmpfs,target=/scratch touch /scratch/file && ls /scratch > /tmpfs-seen
RUN --mount=type=secret,id=token cat /run/secrets/token > /leaked-on-purpose
RUN --mount=type=bind,source=bindme.txt,target=/mnt/b.txt cat /mnt/b.txt > /bound
RUN --network=none cat /proc/net/dev | wc -l > /netdevs
"
    );
    let ctx = context(&env, "mounts", &df);
    std::fs::write(ctx.join("bindme.txt"), "bound content\n").unwrap();
    let xt = env.path().join("xt");
    std::fs::create_dir_all(xt.join("sub")).unwrap();
    std::fs::write(xt.join("sub/inner.txt"), "inner\n").unwrap();
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&xt)
        .arg("-czf")
        .arg(ctx.join("extra.tar.gz"))
        .arg(".")
        .status()
        .unwrap()
        .success());
    let secret = env.path().join("secret");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let local = env.path().join("out");
    env.build(
        &ctx,
        &[
            "--secret",
            &format!("id=token,src={}", secret.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    );
    let read = |p: &str| std::fs::read_to_string(local.join(p)).unwrap();
    assert_eq!(read("dl/data.txt"), "downloaded\n");
    assert_eq!(read("extracted/sub/inner.txt"), "inner\n");
    assert_eq!(read("etc/motd"), "hello heredoc\n");
    assert_eq!(read("cache-count").trim(), "1");
    assert_eq!(read("tmpfs-seen").trim(), "file");
    assert!(
        !local.join("scratch/file").exists(),
        "tmpfs content must not land in the layer"
    );
    assert!(
        !local.join("cache").exists()
            || std::fs::read_dir(local.join("cache")).unwrap().count() == 0
    );
    assert_eq!(read("leaked-on-purpose"), "s3cr3t\n");
    assert!(
        !local.join("run/secrets").exists(),
        "secret mount point must not land in the layer"
    );
    assert_eq!(read("bound"), "bound content\n");
    // Only the loopback device in a fresh network namespace (2 header lines + lo).
    assert_eq!(read("netdevs").trim(), "3");

    // Wrong checksum: clear error.
    let bad = context(
        &env,
        "badsum",
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} http://127.0.0.1:{port}/x /x\n",
            "0".repeat(64)
        ),
    );
    let o = env.out(&["build", "--progress", "plain", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("digest mismatch"));
    server.join().unwrap();
}

#[test]
fn bad_input_leaves_store_untouched() {
    let env = new_env();
    let ctx = simple_ctx(&env);
    env.build(&ctx, &["-t", "keep"]);
    let index_before = env.index();
    // evil.tar: an entry named ../escaped; evil-link.tar: a symlink to a
    // host directory followed by a file written through it.
    let evil_dir = env.path().join("evil");
    std::fs::create_dir_all(&evil_dir).unwrap();
    std::fs::write(evil_dir.join("escaped"), "x").unwrap();
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link_src = env.path().join("linksrc");
    std::fs::create_dir_all(&link_src).unwrap();
    std::os::unix::fs::symlink(&outside, link_src.join("evil")).unwrap();
    std::fs::write(link_src.join("payload"), "pwned").unwrap();

    let cases: Vec<(&str, &str)> = vec![
        ("FROM scratch\nRUNN echo\n", "unknown instruction"),
        ("FROM scratch\nCOPY missing.txt /\n", "not found"),
        ("FROM scratch\nADD evil.tar /\n", "refusing"),
        ("FROM scratch\nADD evil-link.tar /\n", "symlink"),
        ("FROM no-such-image\n", "not in the store"),
    ];
    for (i, (df, want)) in cases.into_iter().enumerate() {
        let c = env.path().join(format!("bad{i}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("Dockerfile"), df).unwrap();
        let st = Command::new("tar")
            .arg("-C")
            .arg(&evil_dir)
            .arg("-cf")
            .arg(c.join("evil.tar"))
            .args(["--transform", "s,^escaped,../escaped,", "escaped"])
            .status()
            .unwrap();
        assert!(st.success());
        let st = Command::new("tar")
            .arg("-C")
            .arg(&link_src)
            .arg("-cf")
            .arg(c.join("evil-link.tar"))
            .args(["--transform", "s,^payload,evil/payload,", "evil", "payload"])
            .status()
            .unwrap();
        assert!(st.success());
        let o = env.out(&[
            "build",
            "--progress",
            "plain",
            "-t",
            "bad",
            c.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{df} should fail");
        assert!(
            err.contains(want),
            "{df}: error should mention {want:?}:\n{err}"
        );
        assert_eq!(
            env.index(),
            index_before,
            "store index changed by a failed build"
        );
    }
    assert!(!env.path().join("escaped").exists());
    assert!(
        !outside.join("payload").exists(),
        "a hostile tar wrote outside the root"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.store().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "work dirs left behind: {leftovers:?}");
}

#[test]
fn outputs_load_in_real_clients() {
    require!("skopeo");
    require!("umoci");
    let env = new_env();
    let ctx = simple_ctx(&env);
    let oci = env.path().join("oci");
    let oci_tar = env.path().join("img-oci.tar");
    let docker_tar = env.path().join("img-docker.tar");
    let (digest, _) = env.build(
        &ctx,
        &[
            "-t",
            "e2e/simple:v1",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "-o",
            &format!("type=oci,dest={}", oci_tar.display()),
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
        ],
    );
    let skopeo = |r: String| {
        let o = Command::new("skopeo")
            .arg("inspect")
            .arg(&r)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo inspect {r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let v = skopeo(format!("oci:{}:e2e/simple:v1", oci.display()));
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4);
    let v = skopeo(format!("docker-archive:{}", docker_tar.display()));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(&docker_tar)
        .arg("manifest.json")
        .output()
        .unwrap();
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["e2e/simple:v1"]));
    skopeo(format!("oci-archive:{}", oci_tar.display()));

    let unpacked = env.path().join("umoci-bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:e2e/simple:v1", oci.display()))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(unpacked.join("rootfs/greeting")).unwrap(),
        "hello from RUN\n"
    );
    assert!(unpacked.join("rootfs/app/src/lib/util.c").exists());
    assert!(
        !unpacked.join("rootfs/app/src/scratch.tmp").exists(),
        ".dockerignore was not applied"
    );

    // zstd layers on request (umoci can't read them; skopeo can).
    let ociz = env.path().join("oci-zstd");
    env.build(
        &ctx,
        &[
            "-t",
            "e2e/zstd",
            "--no-cache",
            "--compression",
            "zstd",
            "-o",
            &format!("type=oci,dest={}", ociz.display()),
        ],
    );
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}", ociz.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = String::from_utf8_lossy(&o.stdout);
    assert_eq!(raw.matches("tar+zstd").count(), 4, "{raw}");
    let copy = env.path().join("skopeo-copy");
    let o = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}", ociz.display()))
        .arg(format!("dir:{}", copy.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Round trips through save/load into fresh stores.
    let env2 = new_env();
    env2.ok_err(&["load", "-i", docker_tar.to_str().unwrap()]);
    let (images, _) = env2.ok_err(&["images"]);
    // `images` prints Docker's REPOSITORY and TAG columns.
    assert!(lists(&images, "e2e/simple", "v1"), "{images}");
    let env3 = new_env();
    env3.ok_err(&["load", "-i", oci_tar.to_str().unwrap()]);
    let (out, _) = env3.ok_err(&["inspect", "e2e/simple:v1"]);
    assert!(out.contains(&digest));
}

#[test]
fn podman_loads_and_runs_the_image() {
    require!("podman");
    let env = new_env();
    let ctx = simple_ctx(&env);
    let tag = unique("berth-e2e").to_lowercase();
    let tar = env.path().join("podman.tar");
    env.build(
        &ctx,
        &[
            "-t",
            &tag,
            "-o",
            &format!("type=docker,dest={}", tar.display()),
        ],
    );
    struct Rmi(String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
        }
    }
    let o = Command::new("podman")
        .arg("load")
        .arg("-i")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _rmi = Rmi(format!("localhost/{tag}:latest"));
    let o = Command::new("podman")
        .args(["run", "--rm", "--network", "none", "--runtime"])
        .arg(runtime())
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(format!("localhost/{tag}:latest"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello from RUN");
}

#[test]
fn containerd_imports_the_archives() {
    require!("containerd");
    require!("ctr");
    let env = new_env();
    let ctx = simple_ctx(&env);
    let docker_tar = env.path().join("ctr-docker.tar");
    let oci_tar = env.path().join("ctr-oci.tar");
    env.build(
        &ctx,
        &[
            "-t",
            "ctr/simple:v1",
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            "-o",
            &format!("type=oci,dest={}", oci_tar.display()),
        ],
    );
    let d = env.path().join("containerd");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("config.toml"),
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .unwrap();
    let sock = d.join("c.sock");
    struct Daemon(Child, PathBuf);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            for sub in ["state", "root"] {
                let _ = Command::new("umount")
                    .arg("-R")
                    .arg(self.1.join(sub))
                    .output();
            }
        }
    }
    let child = Command::new("containerd")
        .arg("--config")
        .arg(d.join("config.toml"))
        .arg("--root")
        .arg(d.join("root"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child, d.clone());
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (tar, extra) in [
        (&docker_tar, vec![]),
        (&oci_tar, vec!["--base-name", "ctr/oci"]),
    ] {
        let o = Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(["images", "import"])
            .args(&extra)
            .arg(tar)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new("ctr")
        .arg("-a")
        .arg(&sock)
        .args(["images", "ls", "-q"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(list.contains("ctr/simple:v1"), "{list}");
}

/// "mode uid:gid size link" per path below `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let link = std::fs::read_link(&p)
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let size = if m.is_file() { m.len() } else { 0 };
            out.insert(
                rel,
                format!("{:o} {}:{} {size} {link}", m.mode(), m.uid(), m.gid()),
            );
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn same_result_as_buildah() {
    require!("buildah");
    require!("skopeo");
    require!("umoci");
    let env = new_env();
    let ctx = simple_ctx(&env);
    let ours = env.path().join("ours");
    env.build(
        &ctx,
        &[
            "-t",
            "cmp",
            "-o",
            &format!("type=local,dest={}", ours.display()),
        ],
    );
    let (out, _) = env.ok_err(&["inspect", "cmp"]);
    let our_cfg = serde_json::from_str::<Value>(&out).unwrap()["Config"]["config"].clone();

    let tag = unique("berth-cmp").to_lowercase();
    struct Rmi(String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            let _ = Command::new("buildah")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let o = Command::new("buildah")
        .args(["bud", "--runtime"])
        .arg(runtime())
        .args(["-t", &tag])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "buildah bud: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _rmi = Rmi(tag.clone());
    let oci = env.path().join("buildah-oci");
    let o = Command::new("buildah")
        .args(["push", &tag])
        .arg(format!("oci:{}:cmp", oci.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:cmp", oci.display()))
        .output()
        .unwrap();
    let theirs_cfg = serde_json::from_slice::<Value>(&o.stdout).unwrap()["config"].clone();
    for k in ["Env", "Cmd", "WorkingDir", "Entrypoint", "User"] {
        assert_eq!(
            our_cfg.get(k),
            theirs_cfg.get(k),
            "config field {k} differs"
        );
    }
    let unpacked = env.path().join("buildah-rootfs");
    let o = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:cmp", oci.display()))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (tree(&ours), tree(&unpacked));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    // buildah leaves the mount points of its RUN containers in the layer.
    // BuildKit and berth keep the runtime's dev/proc/sys too but remove the
    // stubs of their own binds (run, hostname, hosts, resolv.conf): those may
    // only exist on buildah's side.
    let buildah_stubs = [
        "dev",
        "proc",
        "sys",
        "run",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
    ];
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .filter(|k| a.contains_key(*k) || !buildah_stubs.contains(&k.as_str()))
        .map(|k| format!("{k}: ours={:?} buildah={:?}", a.get(k), b.get(k)))
        .collect();
    assert!(diff.is_empty(), "file trees differ:\n{}", diff.join("\n"));
}

#[test]
fn daemon_serves_builds_over_grpc() {
    let env = new_env();
    let ctx = simple_ctx(&env);
    let d = env.buildd();
    let addr = d.addr();
    let remote = |args: &[&str]| d.ok_err(args);
    let (digest, log) = remote(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "remote",
        ctx.to_str().unwrap(),
    ]);
    assert!(digest.trim().starts_with("sha256:"));
    assert!(log.contains("hello from RUN"), "{log}");
    let (_, log2) = remote(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "remote",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(steps_with(&log2, "CACHED"), 4, "{log2}");
    let (images, _) = remote(&["images"]);
    assert!(lists(&images, "remote", "latest"), "{images}");
    let (hist, _) = remote(&["history", "remote"]);
    assert!(hist.contains("COPY src/ /app/src/"), "{hist}");
    remote(&["tag", "remote", "remote:two"]);
    let tar = env.path().join("remote.tar");
    remote(&["save", "remote:two", "-o", tar.to_str().unwrap()]);
    let b = env.path().join("rb");
    remote(&["bundle", "remote", b.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/greeting")).unwrap(),
        "hello from RUN\n"
    );
    remote(&["rmi", "remote", "remote:two"]);
    remote(&["load", "-i", tar.to_str().unwrap()]);
    let (images, _) = remote(&["images"]);
    assert!(lists(&images, "remote", "two"), "{images}");
    let (df, _) = remote(&["df"]);
    assert!(df.contains("images:"), "{df}");
    let (pr, _) = remote(&["prune"]);
    assert!(pr.contains("removed"), "{pr}");
    // A failing build reports the engine's error once and exits non-zero.
    let bad = env.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("Dockerfile"), "FROM scratch\nCOPY nope /\n").unwrap();
    let o = Command::new(builder_bin("berth-build"))
        .arg("--addr")
        .arg(&addr)
        .args(["build", "--progress", "plain"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(
        err.matches("ERROR: line 2: COPY nope /").count(),
        1,
        "{err}"
    );
}

#[test]
fn killed_build_leaves_the_store_consistent() {
    let env = new_env();
    let ctx = simple_ctx(&env);
    env.build(&ctx, &["-t", "before"]);
    let index_before = env.index();
    /// Kills the orphaned RUN container the killed builder leaves behind.
    struct Reap(PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            let state = self.0.join("runtime");
            let o = Command::new(runtime())
                .arg("--root")
                .arg(&state)
                .args(["list", "-q"])
                .output();
            for id in o
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
            {
                let _ = Command::new(runtime())
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
    let _reap = Reap(env.store());
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD busybox.tar /\nRUN echo started > /dev/stderr; sleep 20\n",
    )
    .unwrap();
    let mut child = Command::new(builder_bin("berth-build"))
        .arg("--root")
        .arg(env.store())
        .arg("--runtime")
        .arg(runtime())
        .args(["build", "--progress", "plain", "-t", "after"])
        .arg(&ctx)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN container is up, then kill the builder outright.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("started"))),
        "RUN never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        env.index(),
        index_before,
        "index.json must only change when an image is complete"
    );
    // The next command cleans the dead build's work dirs and mounts, and builds fine.
    std::fs::write(ctx.join("Dockerfile"), SIMPLE).unwrap();
    let (_, log) = env.build(&ctx, &["-t", "before"]);
    assert_eq!(steps_with(&log, "CACHED"), 4, "{log}");
    let store = env.store().canonicalize().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(store.to_str().unwrap()))
        .collect();
    // The killed RUN container may still hold its rootfs; everything else is gone.
    assert!(leaked.len() <= 1, "mounts left under the store: {leaked:?}");
    let (images, _) = env.ok_err(&["images"]);
    assert!(!images.contains("after"), "{images}");
}

#[test]
fn independent_stages_run_in_parallel() {
    let env = new_env();
    let df = "FROM scratch AS base
ADD busybox.tar /

FROM base AS a
RUN sleep 1 && echo a > /a

FROM base AS b
RUN sleep 1 && echo b > /b

FROM scratch
COPY --from=a /a /a
COPY --from=b /b /b
";
    let ctx = context(&env, "par", df);
    let out = env.path().join("out");
    let started = std::time::Instant::now();
    let (_, log) = env.build(&ctx, &["-o", &format!("type=local,dest={}", out.display())]);
    let took = started.elapsed();
    assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(out.join("b")).unwrap(), "b\n");
    // Both RUN steps overlap: each starts before the other one finishes.
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{log}"))
    };
    let (a_start, b_start) = (pos("#4 [a] RUN sleep 1"), pos("#6 [b] RUN sleep 1"));
    let first_done = pos("#4 [a] DONE").min(pos("#6 [b] DONE"));
    assert!(
        a_start.max(b_start) < first_done,
        "stages ran one after the other ({took:?}):\n{log}"
    );
}

#[test]
fn tty_progress_shows_live_steps() {
    require!("script");
    let env = new_env();
    let ctx = context(
        &env,
        "tty",
        "FROM scratch\nADD busybox.tar /\nRUN echo hi-from-run\nCMD [\"sh\"]\n",
    );
    let cmdline = format!(
        "{} --root {} --runtime {} build --progress tty -t tty-test {}",
        builder_bin("berth-build").display(),
        env.store().display(),
        runtime().display(),
        ctx.display()
    );
    // script(1) gives berth-build a real terminal, as a person would have.
    let out = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Live redraws (erase-line escapes), each step by name, the RUN's output,
    // why each step missed the cache, and the final image.
    assert!(
        text.contains("\x1b[2K"),
        "no live redraw in tty mode: {text:?}"
    );
    for want in [
        "RUN echo hi-from-run",
        "hi-from-run",
        "cache miss",
        "writing image sha256:",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from tty progress: {text:?}"
        );
    }
}
