//! berth-buildd's API from a client that is not ours: Python's grpcio (on
//! gRPC's C core, installed from PyPI into a throwaway venv) with stubs
//! generated from proto/ by grpcio-tools inside the test. The C core sends
//! the unix socket path as the HTTP/2 `:authority`, which h2 rejects unless
//! the daemon relays it (builder/src/daemon/authority.rs).
//!
//! Needs python3 with venv (scripts/deps.sh installs python3-venv) and
//! access to PyPI.
use berth_integration::builder::{builder_bin, repo_root, BuildEnv, Buildd, Busybox};
use berth_integration::harness::{unique, TempDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The client, written to a temp dir by each test.
const CLIENT: &str = include_str!("grpc_clients/client.py");

/// A venv with grpcio and grpcio-tools, the client script and its stubs.
struct Python {
    dir: TempDir,
}

impl Python {
    fn new() -> Python {
        let dir = TempDir::new("grpc-py").unwrap();
        let venv = dir.path().join("venv");
        let run = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{c:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
            "grpcio-tools",
        ]));
        let stubs = dir.path().join("stubs");
        std::fs::create_dir(&stubs).unwrap();
        run(Command::new(venv.join("bin/python"))
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(repo_root().join("proto/proto"))
            .arg(format!("--python_out={}", stubs.display()))
            .arg(format!("--grpc_python_out={}", stubs.display()))
            .arg("builder.proto"));
        std::fs::write(dir.path().join("client.py"), CLIENT).unwrap();
        Python { dir }
    }

    /// Runs one client command; returns its JSON result line.
    fn call(&self, d: &Buildd, args: &[&str]) -> Value {
        let o = Command::new(self.dir.path().join("venv/bin/python"))
            .arg(self.dir.path().join("client.py"))
            .arg(d.socket())
            .arg(self.dir.path().join("stubs"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "client {args:?}: {stdout}{}\ndaemon: {}",
            String::from_utf8_lossy(&o.stderr),
            d.log()
        );
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("client {args:?}: {e}: {stdout}"))
    }
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_default()
}

/// A context: FROM scratch with a file to COPY.
fn copy_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx-copy");
    std::fs::create_dir_all(ctx.join("app")).unwrap();
    std::fs::write(ctx.join("app/hello.txt"), "hello from python\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY app/ /app/\nENV GREETING=hi\nCMD [\"/app/hello.txt\"]\n",
    )
    .unwrap();
    ctx
}

/// A context with a busybox root filesystem and `run` as a RUN step.
fn busybox_context(env: &BuildEnv, name: &str, run: &str) -> PathBuf {
    let rootfs = Busybox {
        dirs: &["bin", "etc", "tmp"],
        passwd: Some("root:x:0:0:root:/:/bin/sh\n"),
        group: None,
        ..Busybox::new(&["sh", "sleep", "echo", "false", "true"])
    };
    let dockerfile = format!("FROM scratch\nADD busybox.tar /\nRUN {run}\n");
    env.context_with(name, &dockerfile, &rootfs)
}

fn tags_in(list: &Value) -> Vec<String> {
    list["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["tags"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn python_grpcio_builds_lists_inspects_exports() {
    let env = BuildEnv::new("grpc-clients");
    let d = env.buildd();
    let py = Python::new();
    let ctx = copy_context(env.path());

    let v = py.call(&d, &["version"]);
    assert_eq!(code(&v), "OK", "{v}\n{}", d.log());
    assert_eq!(v["result"]["api_version"], "berth.builder.v1", "{v}");
    assert_eq!(v["result"]["os"], "linux", "{v}");
    let info = py.call(&d, &["info"]);
    assert_eq!(code(&info), "OK", "{info}");
    assert_eq!(
        Path::new(info["result"]["store_root"].as_str().unwrap()),
        env.store().as_path()
    );
    assert_eq!(info["result"]["default_compression"], "gzip", "{info}");

    let tag = unique("pyclient");
    let b = py.call(&d, &["build", ctx.to_str().unwrap(), &format!("{tag}:1")]);
    assert_eq!(code(&b), "OK", "{b}\n{}", d.log());
    let events = b["events"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "DONE", "{b}");
    let digest = last["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{b}");
    assert!(
        events.iter().all(|e| e["kind"] != "ERROR"),
        "no error event on success: {b}"
    );

    let list = py.call(&d, &["list"]);
    assert_eq!(code(&list), "OK", "{list}");
    let want = format!("{tag}:1");
    assert!(tags_in(&list).iter().any(|t| t.ends_with(&want)), "{list}");

    let ins = py.call(&d, &["inspect", &want]);
    assert_eq!(code(&ins), "OK", "{ins}");
    assert_eq!(ins["result"]["digest"], digest.as_str());
    assert_eq!(
        ins["result"]["config"]["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.as_str() == Some("GREETING=hi"))
            .count(),
        1,
        "{ins}"
    );
    let hist = py.call(&d, &["history", &want]);
    assert_eq!(code(&hist), "OK", "{hist}");
    assert!(hist.to_string().contains("COPY app/ /app/"), "{hist}");
    // Newest first, as `docker history`.
    let first = hist["result"][0]["created_by"].as_str().unwrap_or_default();
    assert!(first.contains("CMD"), "{hist}");

    // Export with the format unset: the documented default, docker.
    let tar = env.path().join("export.tar");
    let ex = py.call(&d, &["export", &want, "", tar.to_str().unwrap()]);
    assert_eq!(code(&ex), "OK", "{ex}");
    assert!(
        ex["result"]["largest_chunk"].as_u64().unwrap() <= 1 << 20,
        "{ex}"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut manifest = None;
    let mut files = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            manifest = Some(serde_json::from_str::<Value>(&s).unwrap());
        }
        files.push(p);
    }
    let manifest = manifest.unwrap_or_else(|| panic!("no manifest.json in {files:?}"));
    assert!(
        manifest.to_string().contains(&want),
        "docker archive names the image: {manifest}"
    );
    // An explicit oci export too.
    let oci = env.path().join("export-oci.tar");
    let ex = py.call(&d, &["export", &want, "oci", oci.to_str().unwrap()]);
    assert_eq!(code(&ex), "OK", "{ex}");
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&oci).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "index.json"), "{names:?}");

    // A store that lost a blob of the image: FAILED_PRECONDITION, and the
    // message does not show where the store is.
    let config_digest = ins["result"]["manifest"]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = env
        .store()
        .join("blobs/sha256")
        .join(config_digest.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).unwrap();
    let lost = py.call(&d, &["inspect", &want]);
    assert_eq!(code(&lost), "FAILED_PRECONDITION", "{lost}");
    assert!(
        !lost.to_string().contains(env.store().to_str().unwrap()),
        "no server paths: {lost}"
    );

    // The same daemon still serves our own client (it goes through the relay too).
    let o = Command::new(builder_bin("berth-build"))
        .arg("--addr")
        .arg(format!("unix://{}", d.socket().display()))
        .arg("images")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&tag));
}

#[test]
fn python_grpcio_sees_status_codes_and_failed_builds() {
    let env = BuildEnv::new("grpc-clients");
    let d = env.buildd();
    let py = Python::new();
    let store = env.store().to_string_lossy().into_owned();

    // A failing RUN: ERROR event, then a non-OK status; nothing tagged.
    let ctx = busybox_context(&env, "ctx-fail", "echo about to fail && false");
    let tag = unique("pyfail");
    let b = py.call(&d, &["build", ctx.to_str().unwrap(), &tag]);
    assert_ne!(code(&b), "OK", "{b}");
    assert_eq!(code(&b), "UNKNOWN", "{b}");
    let events = b["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["kind"], "ERROR", "{b}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "LOG" && e["message"] == "about to fail"),
        "{b}"
    );
    assert!(!b.to_string().contains(&store), "no server paths: {b}");
    assert!(!tags_in(&py.call(&d, &["list"]))
        .iter()
        .any(|t| t.contains(&tag)));

    // COPY of a file the context lacks: the message names it as the
    // Dockerfile does, not by the daemon's temporary directory.
    let ctx = env.path().join("ctx-missing");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY nothere.txt /\n").unwrap();
    let b = py.call(&d, &["build", ctx.to_str().unwrap(), ""]);
    assert_ne!(code(&b), "OK", "{b}");
    assert!(
        b["details"].as_str().unwrap().contains("nothere.txt"),
        "{b}"
    );
    assert!(!b.to_string().contains(&store), "no server paths: {b}");
    assert!(!b.to_string().contains("/tmp/"), "no server paths: {b}");

    // Bad names are INVALID_ARGUMENT, missing images NOT_FOUND.
    let ctx = copy_context(env.path());
    let b = py.call(&d, &["build", ctx.to_str().unwrap(), "Bad/../Name"]);
    assert_eq!(code(&b), "INVALID_ARGUMENT", "{b}");
    let ins = py.call(&d, &["inspect", "no-such-image:1"]);
    assert_eq!(code(&ins), "NOT_FOUND", "{ins}");
    assert!(!ins.to_string().contains(&store), "no server paths: {ins}");
    let t = py.call(&d, &["tag", "no-such-image:1", "x:1"]);
    assert_eq!(code(&t), "NOT_FOUND", "{t}");
    let ex = py.call(&d, &["export", "no-such-image:1", "tarball", "/dev/null"]);
    assert_eq!(code(&ex), "INVALID_ARGUMENT", "{ex}");

    // A client deadline that passes during RUN: the RUN is stopped (it
    // would sleep 60 s) and the build tags nothing.
    let ctx = busybox_context(&env, "ctx-slow", "sleep 60");
    let tag = unique("pyslow");
    let b = py.call(&d, &["build", ctx.to_str().unwrap(), &tag, "1.5"]);
    assert_eq!(code(&b), "DEADLINE_EXCEEDED", "{b}");
    let t = Instant::now();
    while !d.log().contains("build stopped, the client went away") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the RUN was not stopped: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = py.call(&d, &["list"]);
    assert!(
        !tags_in(&list).iter().any(|t| t.contains(&tag)),
        "a build whose client went away is not tagged: {list}"
    );
}

#[test]
fn berth_build_version_and_info_ask_the_daemon() {
    let env = BuildEnv::new("grpc-clients");
    let d = env.buildd();
    let addr = format!("unix://{}", d.socket().display());
    let run = |args: &[&str]| {
        let o = Command::new(builder_bin("berth-build"))
            .arg("--addr")
            .arg(&addr)
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let v = run(&["version"]);
    assert!(
        v.contains("Client:") && v.contains("Server (berth-buildd at"),
        "{v}"
    );
    assert_eq!(v.matches("API version: berth.builder.v1").count(), 2, "{v}");
    let i = run(&["info"]);
    assert!(
        i.contains(&format!("Store:               {}", env.store().display())),
        "{i}"
    );
    assert!(
        i.contains(&format!("Runtime:             {}", env.runtime().display())),
        "{i}"
    );
}
