//! Issue 9, items 11–13, against the real berth-build / berth-buildd:
//! the daemon's socket (who may connect), image names versus digests, and
//! the limits that keep one hostile Dockerfile, context or archive from
//! exhausting the host (plus Docker's 127 layers, which overlay's one-page
//! mount data used to refuse).
use berth_integration::builder::{builder_bin, BuildEnv, Buildd, Busybox};
use berth_integration::harness::{unique, Runtime};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

berth_integration::build_env_newtype!(
    /// A store in a temp dir and berth-build run against it (embedded engine).
    Env
);

impl Env {
    fn new() -> Env {
        Env(BuildEnv::new("bb-store"))
    }

    /// Runs berth-build, asserting success; returns stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "berth-build {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A context dir holding `files` and `dockerfile`.
    fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let ctx = self.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        for (f, data) in files {
            std::fs::write(ctx.join(f), data).unwrap();
        }
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
    }

    /// Builds `ctx` as `tag`; returns the digest.
    fn build(&self, ctx: &Path, tag: &str) -> String {
        self.0.build(ctx, &["-t", tag]).0
    }

    fn manifest_digest(&self, name: &str) -> String {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    }
}

/// Starts berth-buildd under umask 000 with `extra` flags and waits for
/// the socket, checking every state of the socket path it sees on the
/// way: the first moment it exists it must already be 0660. Killed and
/// reaped on drop.
fn start_daemon(env: &Env, socket: &Path, extra: &[&str]) -> Buildd {
    let mut cmd = Buildd::command(socket, &env.store(), env.runtime());
    cmd.args(extra);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    // A stale socket left at the path is not the daemon's.
    // (An inode number can be reused after unlink: compare ctime too.)
    let id = |m: &std::fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
    let stale = std::fs::symlink_metadata(socket).ok().map(|m| id(&m));
    let mut d = Buildd::spawn(cmd, socket);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(m) = std::fs::symlink_metadata(socket)
            .ok()
            .filter(|m| Some(id(m)) != stale)
        {
            assert!(m.file_type().is_socket());
            assert_eq!(
                m.mode() & 0o7777,
                0o660,
                "the socket must never be reachable with wider permissions"
            );
            break;
        }
        if let Ok(Some(st)) = d.child().try_wait() {
            panic!("berth-buildd exited before listening: {st}");
        }
        assert!(Instant::now() < deadline, "berth-buildd did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    d
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// A one-file layer tar and its diff_id hex.
fn tiny_layer() -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let data = b"hello\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "hello", &data[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let d = sha256_hex(&layer);
    (layer, d)
}

/// An image config for `diff_id`, padded with a label of `pad` bytes.
fn config(diff_id: &str, pad: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"], "Labels": {"pad": "x".repeat(pad)}},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap()
}

/// docker-archive (`docker save` layout) with `repo_tags` and a config
/// padded by `pad` bytes.
fn docker_archive(dest: &Path, repo_tags: &[&str], pad: usize) {
    let (layer, diff_id) = tiny_layer();
    let cfg = config(&diff_id, pad);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let manifest = serde_json::to_vec(&json!([{
        "Config": cfg_name,
        "RepoTags": repo_tags,
        "Layers": [format!("{diff_id}/layer.tar")],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    append(&mut b, &format!("{diff_id}/layer.tar"), &layer);
    append(&mut b, &cfg_name, &cfg);
    append(&mut b, "manifest.json", &manifest);
    b.into_inner().unwrap();
}

/// OCI layout archive whose index names the image `ref_name`.
fn oci_archive(dest: &Path, ref_name: &str) {
    let (layer, diff_id) = tiny_layer();
    let cfg = config(&diff_id, 0);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&cfg)), "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{diff_id}"), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha256_hex(&manifest)),
                       "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": ref_name}}],
    }))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    append(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in [&layer, &cfg, &manifest] {
        append(&mut b, &format!("blobs/sha256/{}", sha256_hex(blob)), blob);
    }
    append(&mut b, "index.json", &index);
    b.into_inner().unwrap();
}

/// Two images A and B differing in one file (COPY only: no runtime needed).
fn two_images(env: &Env) -> (String, String) {
    let a = env.context("ctx-a", "FROM scratch\nCOPY f /f\n", &[("f", b"A\n")]);
    let b = env.context("ctx-b", "FROM scratch\nCOPY f /f\n", &[("f", b"B\n")]);
    env.build(&a, "img-a");
    env.build(&b, "img-b");
    (env.manifest_digest("img-a"), env.manifest_digest("img-b"))
}

#[test]
fn tags_are_references_and_never_stand_in_for_digests() {
    let env = Env::new();
    let (a, b) = two_images(&env);
    assert_ne!(a, b);
    let before = env.index();

    // The attack: tag B with A's digest, or with a path.
    for bad in [
        a.as_str(),
        &a["sha256:".len()..],
        "../../../../etc/passwd:latest",
        "/abs:latest",
        "UPPER:latest",
    ] {
        let err = env.fail(&["tag", "img-b", bad]);
        assert!(err.contains("invalid reference format"), "{bad}: {err}");
    }
    let ctx = env.path().join("ctx-b");
    let err = env.fail(&["build", "-t", "../../x", ctx.to_str().unwrap()]);
    assert!(err.contains("invalid reference format"), "{err}");
    assert_eq!(env.index(), before, "refused names leave the index alone");

    // Archives cannot bring such names in either, and refusing them stores nothing.
    let dock = env.path().join("bad-docker.tar");
    docker_archive(&dock, &["../../../../etc/passwd:latest"], 0);
    let err = env.fail(&["load", "-i", dock.to_str().unwrap()]);
    assert!(err.contains("invalid reference format"), "{err}");
    let oci = env.path().join("bad-oci.tar");
    oci_archive(&oci, &a);
    let err = env.fail(&["load", "-i", oci.to_str().unwrap()]);
    assert!(err.contains("invalid reference format"), "{err}");
    assert_eq!(env.index(), before);

    // A digest-shaped name already in the index (written by an older berth)
    // does not capture lookups by digest: inspect and FROM by A's digest
    // get A's content.
    let mut index: Value = serde_json::from_str(&before).unwrap();
    let forged = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == b.as_str())
        .unwrap()
        .clone();
    let mut forged = forged;
    forged["annotations"]["org.opencontainers.image.ref.name"] = json!(a);
    index["manifests"].as_array_mut().unwrap().insert(0, forged);
    std::fs::write(
        env.store().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    assert_eq!(env.manifest_digest(&a), a);
    assert_eq!(env.manifest_digest(&a["sha256:".len()..]), a);
    assert_eq!(env.manifest_digest(&format!("img-a@{a}")), a);
    let from = env.context("ctx-from", &format!("FROM {a}\n"), &[]);
    env.build(&from, "from-a");
    let layers = |name: &str| -> Value {
        let v: Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
        v["Manifest"]["layers"].clone()
    };
    assert_eq!(layers("from-a"), layers("img-a"), "FROM by digest is A");
    assert_ne!(layers("from-a"), layers("img-b"));
}

#[test]
fn buildd_socket_is_0660_root_and_unreachable_for_others() {
    let env = Env::new();
    let socket = world_writable_socket_dir(&env).join("buildd.sock");
    // A stale socket from a crashed daemon is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let d = start_daemon(&env, &socket, &[]);
    let m = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 0, 0o660));
    let leftovers: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 1, "no staging directory left behind");

    // Root can use it; an unprivileged user cannot even connect.
    let o = d.out(&["images"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = client_as(&d, 65534, 65534);
    assert!(
        !o.status.success(),
        "nobody must not reach buildd: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ermission denied") || err.contains("EACCES") || err.contains("transport"),
        "{err}"
    );
}

#[test]
fn buildd_socket_group_is_configurable() {
    let env = Env::new();
    // Directories the daemon makes for its socket are 0755 even under umask 000.
    let socket = env.path().join("made/by/buildd/buildd.sock");
    let d = start_daemon(&env, &socket, &["--group", "65534"]);
    for dir in ["made", "made/by", "made/by/buildd"] {
        let m = std::fs::metadata(env.path().join(dir)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755, "{dir}");
    }
    let m = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 65534, 0o660));
    // A member of the group gets in; anyone else does not.
    let o = client_as(&d, 65534, 65534);
    assert!(o.status.success(), "{}", text(&o));
    let o = client_as(&d, 65533, 65533);
    assert!(!o.status.success(), "{}", text(&o));
}

/// A directory anyone may write: only the socket's own mode protects it.
fn world_writable_socket_dir(env: &Env) -> PathBuf {
    let dir = env.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `berth-build images` against the daemon as uid:gid (no supplementary groups).
fn client_as(d: &Buildd, uid: u32, gid: u32) -> Output {
    Command::new(builder_bin("berth-build"))
        .arg("--addr")
        .arg(d.addr())
        .arg("images")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn buildd_refuses_bad_names_and_oversized_requests() {
    let env = Env::new();
    let (a, _) = two_images(&env);
    let socket = env.path().join("buildd.sock");
    let d = start_daemon(&env, &socket, &["--max-context-size", "1048576"]);

    // Names are refused over gRPC too.
    let o = d.out(&["tag", "img-b", &a]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid reference format"),
        "{}",
        text(&o)
    );

    // A context over --max-context-size is refused, and leaves nothing behind.
    let big = env.context(
        "ctx-big",
        "FROM scratch\nCOPY big /big\n",
        &[("big", &vec![7u8; 3 << 20])],
    );
    let o = d.out(&["build", "--progress", "plain", big.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("build context is too large"),
        "{}",
        text(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ctx_dirs = std::fs::read_dir(env.store().join("tmp"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ctx-")
            })
            .count();
        if ctx_dirs == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partial context stays in tmp/"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A Dockerfile over the cap is refused before the build starts.
    let small = env.context("ctx-small", "FROM scratch\n", &[]);
    let huge = env.path().join("Huge.Dockerfile");
    std::fs::write(&huge, huge_dockerfile()).unwrap();
    let started = Instant::now();
    let o = d.out(&[
        "build",
        "-f",
        huge.to_str().unwrap(),
        small.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too large"),
        "{}",
        text(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A 3 MiB Dockerfile (over the 2 MiB cap) that would otherwise build.
fn huge_dockerfile() -> String {
    let mut s = String::from("FROM scratch\n");
    let line = format!("# {}\n", "x".repeat(1000));
    while s.len() < 3 << 20 {
        s.push_str(&line);
    }
    s.push_str("LABEL a=b\n");
    s
}

#[test]
fn oversized_dockerfiles_and_configs_are_refused_and_listing_reads_no_config() {
    let env = Env::new();
    let ctx = env.context("ctx-huge", &huge_dockerfile(), &[]);
    let started = Instant::now();
    let err = env.fail(&["build", "-t", "huge", ctx.to_str().unwrap()]);
    assert!(err.contains("the Dockerfile is too large"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A config over 4 MiB in an archive is refused, nothing is indexed.
    let (a, _) = two_images(&env);
    let before = env.index();
    let fat = env.path().join("fat.tar");
    docker_archive(&fat, &["fat:latest"], 5 << 20);
    let err = env.fail(&["load", "-i", fat.to_str().unwrap()]);
    assert!(err.contains("too large"), "{err}");
    assert_eq!(env.index(), before);
    // Under the cap, the same archive loads.
    let thin = env.path().join("thin.tar");
    docker_archive(&thin, &["thin:latest"], 1 << 20);
    env.ok(&["load", "-i", thin.to_str().unwrap()]);

    // `images` lists from the index and per-image summaries: it works
    // without reading any config (here: A's config blob is destroyed).
    let v: Value = serde_json::from_str(&env.ok(&["inspect", &a])).unwrap();
    let cfg_digest = v["Manifest"]["config"]["digest"].as_str().unwrap();
    let cfg_path = env
        .store()
        .join("blobs/sha256")
        .join(&cfg_digest["sha256:".len()..]);
    std::fs::write(&cfg_path, b"not json").unwrap();
    let list = env.ok(&["images"]);
    // Docker's columns: REPOSITORY TAG ...
    let listed = |repo: &str| {
        list.lines()
            .any(|l| l.split_whitespace().take(2).eq([repo, "latest"]))
    };
    assert!(listed("img-a"), "{list}");
    assert!(listed("thin"), "{list}");
}

#[test]
fn builds_with_130_layers_then_runs_the_bundle() {
    let env = Env::new();
    let ctx = env.path().join("ctx-130");
    std::fs::create_dir_all(&ctx).unwrap();
    let rootfs = Busybox {
        dirs: &["bin", "etc", "tmp"],
        passwd: Some("root:x:0:0:root:/:/bin/sh\n"),
        modes: &[],
        ..Busybox::new(&["sh", "cat", "ls", "grep"])
    };
    rootfs.write_tar(&ctx.join("busybox.tar"), &env.path().join("rootfs"));
    let mut df = String::from("FROM scratch\nADD busybox.tar /\n");
    for i in 1..=130 {
        std::fs::write(ctx.join(format!("f{i}")), format!("layer {i}\n")).unwrap();
        df.push_str(&format!("COPY f{i} /f{i}\n"));
    }
    // A RUN on top of 131 layers: overlay with 131 lowers.
    df.push_str("RUN cat /f1 /f130 > /sum && ls / | grep -c '^f' >> /sum\n");
    df.push_str("CMD [\"cat\", \"/sum\"]\n");
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    env.build(&ctx, "many");
    let v: Value = serde_json::from_str(&env.ok(&["inspect", "many"])).unwrap();
    assert_eq!(v["Manifest"]["layers"].as_array().unwrap().len(), 132);

    let bundle = env.path().join("bundle");
    env.ok(&["bundle", "many", bundle.to_str().unwrap()]);
    let rt = Runtime::new().unwrap();
    let id = unique("many");
    let o = rt
        .output(&["run", "--bundle", bundle.to_str().unwrap(), &id])
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "layer 1\nlayer 130\n130\n"
    );
}
