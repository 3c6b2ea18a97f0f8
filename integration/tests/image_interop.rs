//! Names, archives and defaults that interoperate (issue 13): Docker's
//! equivalent names, `images`/`history` as Docker prints them, archives
//! written by podman and `ctr images export` loaded with the same image IDs
//! and layers, RUN networked by default, every `-t` in a docker output, and
//! a listing into a closed pipe exiting quietly.
use berth_integration::builder::{have, BuildEnv, Buildd, Busybox};
use berth_integration::containerd::Containerd;
use berth_integration::harness::unique;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

berth_integration::build_env_newtype!(
    /// A store and a scratch dir, with berth-build run against the store
    /// (the shared [`BuildEnv`], plus this file's context and lookups).
    Env
);

impl Env {
    fn new() -> Env {
        Env(BuildEnv::new("interop"))
    }

    /// A context with a static busybox root filesystem and `dockerfile`.
    fn context(&self, dockerfile: &str) -> PathBuf {
        let rootfs = Busybox {
            dirs: &["bin", "etc", "tmp"],
            passwd: Some("root:x:0:0:root:/:/bin/sh\n"),
            group: None,
            ..Busybox::new(&["sh", "cat", "wc", "echo", "ls"])
        };
        self.context_with(&unique("ctx"), dockerfile, &rootfs)
    }

    /// `build --progress plain EXTRA CTX`; the digest it prints.
    fn build(&self, ctx: &Path, extra: &[&str]) -> String {
        self.0.build(ctx, extra).0
    }

    fn inspect(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["inspect", name])).unwrap()
    }

    /// Builds [`SIMPLE`] as `name` with a docker-archive output
    /// (`berth.tar`): the archive and the image ID.
    fn docker_archive_of_simple(&self, name: &str) -> (PathBuf, String) {
        let ctx = self.context(SIMPLE);
        let tar = self.path().join("berth.tar");
        let out = format!("type=docker,dest={}", tar.display());
        self.build(&ctx, &["-t", name, "-o", &out]);
        (tar, self.config_digest(name))
    }

    /// The config digest of `name`: the image ID Docker and podman show.
    fn config_digest(&self, name: &str) -> String {
        self.inspect(name)["Manifest"]["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

const SIMPLE: &str = "FROM scratch
ADD busybox.tar /
RUN echo built > /built
CMD [\"cat\", \"/built\"]
";

/// The cells of a table line (columns are three or more spaces apart).
fn cells(l: &str) -> Vec<&str> {
    l.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn docker_names_images_and_history() {
    let env = Env::new();
    let ctx = env.context(SIMPLE);
    let short = unique("interop").to_lowercase();
    let long = format!("docker.io/library/{short}:latest");
    env.build(&ctx, &["-t", &long]);
    let id = env.config_digest(&long);
    // Every Docker-equivalent form finds it.
    for n in [
        short.as_str(),
        &format!("{short}:latest"),
        &format!("library/{short}"),
        &format!("docker.io/{short}"),
    ] {
        assert_eq!(env.config_digest(n), id, "{n}");
    }
    // `images`: Docker's columns, the familiar name, the config digest.
    let out = env.ok(&["images"]);
    let lines: Vec<Vec<&str>> = out.lines().map(cells).collect();
    assert_eq!(
        lines[0],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{out}"
    );
    assert_eq!(
        lines[1][..3],
        [short.as_str(), "latest", &id[7..19]],
        "{out}"
    );
    let q = env.ok(&["images", "-q", "--filter", &format!("reference={short}")]);
    assert_eq!(q, format!("{}\n", &id[7..19]));
    let q = env.ok(&[
        "images",
        "-q",
        "--no-trunc",
        "--filter",
        "reference=nothing*",
    ]);
    assert_eq!(q, "");
    let d = env.ok(&["images", "--digests"]);
    let digest = env.inspect(&short)["Digest"].as_str().unwrap().to_string();
    assert!(d.contains(&digest), "{d}");
    // Tagging with the short form of the same name moves it, no duplicate.
    env.ok(&["tag", &short, &format!("{short}:v2")]);
    let q = env.ok(&["images", "--filter", &format!("reference={short}:v2")]);
    assert_eq!(q.lines().count(), 2, "{q}");
    assert_eq!(env.ok(&["images", "-q", "--filter", "dangling=true"]), "");
    // `history`: newest first, Docker's columns, the image ID on top.
    let h = env.ok(&["history", &short]);
    let rows: Vec<Vec<&str>> = h.lines().map(cells).collect();
    assert_eq!(
        rows[0],
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        "{h}"
    );
    assert_eq!(rows[1][0], &id[7..19], "{h}");
    assert!(rows[1][2].starts_with("CMD [\"cat\" \"/built\"]"), "{h}");
    assert!(rows[2][2].starts_with("RUN /bin/sh -c echo built"), "{h}");
    assert_eq!(rows[2][0], "<missing>", "{h}");
    assert_eq!(rows[2][3], "6B", "{h}");
    // rmi by the long form removes the name stored short... and long.
    env.ok(&["rmi", &format!("docker.io/library/{short}:v2")]);
    env.ok(&["rmi", &short]);
    assert!(!env.out(&["inspect", &long]).status.success());
}

#[test]
fn listing_into_a_closed_pipe_exits_quietly() {
    let env = Env::new();
    let ctx = env.context(SIMPLE);
    for i in 0..3 {
        env.build(&ctx, &["-t", &format!("pipe/x:{i}")]);
    }
    for args in [&["images"][..], &["history", "pipe/x:0"][..]] {
        // The reader is gone before berth-build writes: every write is EPIPE.
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let o = env
            .cmd(args)
            .stdout(Stdio::from(w))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn every_tag_goes_into_a_docker_output() {
    let env = Env::new();
    let ctx = env.context(SIMPLE);
    let tar = env.path().join("tags.tar");
    env.build(
        &ctx,
        &[
            "-t",
            "multi/a:one",
            "-t",
            "multi/b",
            "-o",
            &format!("type=docker,dest={}", tar.display()),
        ],
    );
    let list = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("manifest.json")
        .output()
        .unwrap();
    let m: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        m[0]["RepoTags"],
        serde_json::json!(["multi/a:one", "multi/b:latest"]),
        "{m}"
    );
    // An OCI layout output records both too.
    let layout = env.path().join("layout");
    env.build(
        &ctx,
        &[
            "-t",
            "multi/a:one",
            "-t",
            "multi/b",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["multi/a:one", "multi/b:latest"]);
    // And a load gives both names back, one line each.
    let env2 = Env::new();
    let out = env2.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(
        env2.config_digest("multi/a:one"),
        env2.config_digest("multi/b")
    );
}

#[test]
fn run_is_networked_by_default_and_none_stays_available() {
    let env = Env::new();
    // /proc/net/dev lists the network namespace's interfaces: two header
    // lines and lo in an empty namespace, the host's interfaces otherwise.
    let ctx = env.context(
        "FROM scratch
ADD busybox.tar /
RUN cat /proc/net/dev | wc -l > /default
RUN --network=none cat /proc/net/dev | wc -l > /none
CMD [\"true\"]
",
    );
    let host_lines = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    assert!(host_lines > 3, "this host needs a non-loopback interface");
    env.build(&ctx, &["-t", "net/default"]);
    let dir = env.path().join("net-fs");
    env.ok(&["bundle", "net/default", dir.to_str().unwrap()]);
    let read = |f: &str| {
        std::fs::read_to_string(dir.join("rootfs").join(f))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(read("default"), host_lines);
    assert_eq!(read("none"), 3);
    // `--network none` makes it the default.
    let ctx = env.context(
        "FROM scratch
ADD busybox.tar /
RUN cat /proc/net/dev | wc -l > /default
CMD [\"true\"]
",
    );
    env.build(&ctx, &["--network", "none", "-t", "net/none"]);
    let dir = env.path().join("net-fs2");
    env.ok(&["bundle", "net/none", dir.to_str().unwrap()]);
    let n: usize = std::fs::read_to_string(dir.join("rootfs/default"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, 3);
}

/// podman sees the same image ID as berth; an archive podman writes with
/// two names loads with both, the same ID, and its layers as they are.
#[test]
fn podman_agrees_on_ids_names_and_layers() {
    assert!(
        have("podman"),
        "podman is needed (scripts/deps.sh installs it)"
    );
    let env = Env::new();
    let name = format!("docker.io/library/{}", unique("interop-p").to_lowercase());
    let (tar, id) = env.docker_archive_of_simple(&name);
    struct Rmi(Vec<String>);
    impl Drop for Rmi {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("podman").args(["rmi", "-f", n]).output();
            }
        }
    }
    let second = format!("{name}:second");
    let _rmi = Rmi(vec![format!("{name}:latest"), second.clone()]);
    let podman = |args: &[&str]| {
        let o = Command::new("podman").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    podman(&["load", "-i", tar.to_str().unwrap()]);
    let pid = podman(&["image", "inspect", "--format", "{{.ID}}", &name]);
    assert_eq!(format!("sha256:{}", pid.trim()), id);
    // berth's `images -q` prints what `podman images -q` prints.
    let pq = podman(&["images", "-q", "--filter", &format!("reference={name}")]);
    let bq = env.ok(&["images", "-q", "--filter", &format!("reference={name}")]);
    assert_eq!(pq.trim(), bq.trim());

    podman(&["tag", &name, &second]);
    let ptar = env.path().join("podman.tar");
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        ptar.to_str().unwrap(),
        &format!("{name}:latest"),
        &second,
    ]);
    let fresh = Env::new();
    let out = fresh.ok(&["load", "-i", ptar.to_str().unwrap()]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(fresh.config_digest(&name), id);
    assert_eq!(fresh.config_digest(&second), id);
    // Layers kept as they came (uncompressed tars): digest = diff_id.
    let i = fresh.inspect(&name);
    let layers: Vec<&str> = i["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let diff_ids: Vec<&str> = i["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(layers, diff_ids);
    // And a docker-format save of it carries the same ID and layers.
    let again = env.path().join("again.tar");
    fresh.ok(&["save", &second, "-o", again.to_str().unwrap()]);
    let m = Command::new("tar")
        .arg("-xOf")
        .arg(&again)
        .arg("manifest.json")
        .output()
        .unwrap();
    let m: Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", &id[7..]));
    assert_eq!(m[0]["RepoTags"], serde_json::json!([second]));
    let names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("blobs/sha256/{}", &d[7..]))
        .collect();
    assert_eq!(m[0]["Layers"], serde_json::json!(names));
}

/// `ctr images export` writes the name in `io.containerd.image.name` (its
/// ref.name is only the tag): berth loads it under the full name, same ID.
#[test]
fn containerd_export_loads_with_its_name() {
    assert!(
        have("containerd") && have("ctr"),
        "containerd and ctr are needed"
    );
    let env = Env::new();
    let name = format!(
        "docker.io/library/{}:v1",
        unique("interop-c").to_lowercase()
    );
    let (tar, id) = env.docker_archive_of_simple(&name);
    let ctrd = Containerd::start(false, "").unwrap();
    ctrd.import(&tar).unwrap();
    let exported = env.path().join("ctr-export.tar");
    ctrd.ctr_ok(&["images", "export", exported.to_str().unwrap(), &name])
        .unwrap();
    let fresh = Env::new();
    let out = fresh.ok(&["load", "-i", exported.to_str().unwrap()]);
    assert!(out.contains(&name), "{out}");
    assert_eq!(fresh.config_digest(&name), id);
    let short = name.trim_start_matches("docker.io/library/");
    let q = fresh.ok(&["images", "-q", "--filter", &format!("reference={short}")]);
    assert_eq!(q, format!("{}\n", &id[7..19]));
}

/// BuildKit's per-secret cap (500 KiB): a bigger secret fails the build,
/// embedded and through berth-buildd; one at the cap is mounted whole.
#[test]
fn secrets_are_capped_at_500_kib() {
    let env = Env::new();
    let ctx = env.context(
        "FROM scratch
ADD busybox.tar /
RUN --mount=type=secret,id=s wc -c < /run/secrets/s > /size
CMD [\"true\"]
",
    );
    let ok = env.path().join("ok.secret");
    std::fs::write(&ok, vec![b'x'; 500 * 1024]).unwrap();
    let big = env.path().join("big.secret");
    std::fs::write(&big, vec![b'x'; 500 * 1024 + 1]).unwrap();
    env.build(
        &ctx,
        &[
            "--secret",
            &format!("id=s,src={}", ok.display()),
            "-t",
            "sec/ok",
        ],
    );
    let dir = env.path().join("sec-fs");
    env.ok(&["bundle", "sec/ok", dir.to_str().unwrap()]);
    let size = std::fs::read_to_string(dir.join("rootfs/size")).unwrap();
    assert_eq!(size.trim(), (500 * 1024).to_string());
    let o = env.out(&[
        "build",
        "--progress",
        "plain",
        "--no-cache",
        "--secret",
        &format!("id=s,src={}", big.display()),
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("secret s is too large"), "{err}");
    // Through the daemon: refused before any step runs.
    let d = daemon(&env, &[]);
    let o = d.out(&[
        "build",
        "--progress",
        "plain",
        "--secret",
        &format!("id=s,src={}", big.display()),
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("too large"), "{err}");
}

/// berth-buildd's Import stream is capped (--max-import-size): an archive
/// over the cap is refused with nothing stored and no spool file left.
#[test]
fn import_stream_is_capped() {
    let env = Env::new();
    let ctx = env.context(SIMPLE);
    let tar = env.path().join("img.tar");
    env.build(
        &ctx,
        &[
            "-t",
            "cap/x",
            "-o",
            &format!("type=docker,dest={}", tar.display()),
        ],
    );
    let len = std::fs::metadata(&tar).unwrap().len();
    let fresh = Env::new();
    let d = daemon(&fresh, &["--max-import-size", &(len - 1).to_string()]);
    let o = d.out(&["load", "-i", tar.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("too large") && err.contains("--max-import-size"),
        "{err}"
    );
    assert!(!fresh.out(&["inspect", "cap/x"]).status.success());
    let spooled: Vec<_> = std::fs::read_dir(fresh.path().join("store/tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
        .collect();
    assert!(spooled.is_empty(), "{spooled:?}");
    drop(d);
    // At the cap it loads.
    let d = daemon(&fresh, &["--max-import-size", &len.to_string()]);
    let o = d.out(&["load", "-i", tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// berth-buildd on a private socket over `env`'s store with `extra`
/// flags; stopped with SIGTERM on drop.
fn daemon(env: &Env, extra: &[&str]) -> Buildd {
    let sock = env.path().join(unique("d")).with_extension("sock");
    Buildd::start(&sock, &env.store(), env.runtime(), extra, None).terminate_on_drop()
}

/// Through berth-buildd (the API), `images` and `history` give what the
/// embedded engine gives: config-digest IDs, history newest first with
/// layer sizes, Docker-equivalent names.
#[test]
fn the_api_lists_like_the_cli() {
    let env = Env::new();
    let ctx = env.context(SIMPLE);
    env.build(&ctx, &["-t", "docker.io/library/apilist"]);
    let d = daemon(&env, &[]);
    let text = |o: Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // CREATED is relative to now: compare every other column.
    let strip = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| {
                let mut c: Vec<String> = cells(l).into_iter().map(String::from).collect();
                c.retain(|x| !x.ends_with(" ago") && !x.starts_with("Less than"));
                c
            })
            .collect()
    };
    for args in [
        &["images"][..],
        &["images", "-q", "--no-trunc"][..],
        &["history", "apilist"][..],
        &["history", "--no-trunc", "docker.io/apilist:latest"][..],
    ] {
        let local = env.ok(args);
        let api = text(d.out(args));
        assert_eq!(strip(&api), strip(&local), "{args:?}");
    }
    let h = text(d.out(&["history", "-q", "apilist"]));
    let id = env.config_digest("apilist");
    assert_eq!(h, format!("{}\n<missing>\n<missing>\n", &id[7..19]));
}
