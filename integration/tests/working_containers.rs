//! Working containers (buildah's model) in `berth-build`, walked the way the
//! Docker tutorial does: build an image, `from`, `run` a change, `commit -m
//! -a`, `diff`, `history`, `bundle` + `berth run`, and `save` → `podman
//! load` → `podman run --runtime berth`. Also `cp` against hostile symlinks
//! (a canary on the host must stay untouched), `export`/`import`, and `rm`
//! leaving nothing behind.
use berth_integration::builder::{
    builder_bin, mounts_under, run_bundle, BuildEnv, Busybox, Podman, PODMAN_RUN_OPTS,
};
use berth_integration::harness::{berth_bin, unique};
use serde_json::Value;
use std::process::{Command, Stdio};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "mkdir", "true", "id", "env", "rm", "hostname", "pwd", "chown",
];

/// A store whose working containers run with berth; cleaned up on drop.
fn new_env() -> BuildEnv {
    BuildEnv::new("bb-work").with_runtime(berth_bin())
}

/// Builds an image `tag` from busybox (with /proc, /dev, /sys and a
/// nobody user) with `extra` Dockerfile lines.
fn build(env: &BuildEnv, tag: &str, extra: &str) {
    let rootfs = Busybox {
        dirs: &["bin", "etc", "tmp", "root", "proc", "dev", "sys"],
        passwd: Some("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        group: Some("root:x:0:\nnogroup:x:65534:\n"),
        ..Busybox::new(APPLETS)
    };
    let dockerfile = format!("FROM scratch\nADD busybox.tar /\n{extra}");
    let ctx = env.context_with(&unique("ctx"), &dockerfile, &rootfs);
    env.build(&ctx, &["-t", tag]);
}

const BASE: &str = "RUN echo old > /etc/motd && echo bye > /etc/gone\nCMD [\"cat\", \"/hello\"]\n";

#[test]
fn tutorial_from_run_commit_diff_history_bundle_podman() {
    let env = new_env();
    build(&env, "tut-base", BASE);

    // from / containers
    let name = env.ok(&["from", "tut-base", "--name", "tut"]);
    assert_eq!(name.trim(), "tut");
    assert!(env.ok(&["containers"]).contains("tut"));
    // The default name is buildah's.
    let dflt = env.ok(&["from", "tut-base"]);
    assert_eq!(dflt.trim(), "tut-base-working-container");
    env.ok(&["rm", "tut-base-working-container"]);

    // run: a change, the overrides, and the exit status passed through.
    env.ok(&[
        "run",
        "tut",
        "-e",
        "WHO=world",
        "--",
        "sh",
        "-c",
        "echo hello $WHO > /hello && echo new > /etc/motd && rm /etc/gone",
    ]);
    let o = env.out(&["run", "tut", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen = env.ok(&[
        "run",
        "tut",
        "-w",
        "/work/dir",
        "-u",
        "nobody",
        "-h",
        "tuthost",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "echo $(pwd) $(id -u) $(hostname)",
    ]);
    assert_eq!(seen.trim(), "/work/dir 65534 tuthost");
    let host_dir = env.path().join("vol");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("in"), "from host").unwrap();
    let v = format!("{}:/mnt/vol:ro", host_dir.display());
    assert_eq!(
        env.ok(&["run", "tut", "-v", &v, "--", "cat", "/mnt/vol/in"])
            .trim(),
        "from host"
    );
    // A read-only volume stays read-only.
    let o = env.out(&[
        "run",
        "tut",
        "-v",
        &v,
        "--",
        "sh",
        "-c",
        "echo x > /mnt/vol/in",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(host_dir.join("in")).unwrap(),
        "from host"
    );
    // The -w directory is a change of the container; undo it for a clean diff.
    env.ok(&["run", "tut", "--", "rm", "-r", "/work"]);
    // The last run's command is what Docker's commit records.
    env.ok(&["run", "tut", "--", "sh", "-c", "echo hello world > /hello"]);

    // diff: Docker's A/C/D list.
    let diff = env.ok(&["diff", "tut"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in ["C /etc", "D /etc/gone", "C /etc/motd", "A /hello"] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{diff}");
    }
    assert!(
        !diff.contains("/mnt") && !diff.contains("/work"),
        "runtime mount points leaked into the diff:\n{diff}"
    );

    // commit -m -a
    let digest = env.ok(&[
        "commit",
        "tut",
        "tut-image",
        "-m",
        "add hello",
        "-a",
        "Tut Author <tut@example.com>",
    ]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let inspect: Value = serde_json::from_str(&env.ok(&["inspect", "tut-image"])).unwrap();
    let config = &inspect["Config"];
    assert_eq!(config["author"], "Tut Author <tut@example.com>");
    let history = config["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["comment"], "add hello");
    assert_eq!(last["author"], "Tut Author <tut@example.com>");
    assert_eq!(last["created_by"], "sh -c echo hello world > /hello");
    assert!(last.get("empty_layer").is_none());
    let base: Value = serde_json::from_str(&env.ok(&["inspect", "tut-base"])).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        base["Config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len()
            + 1,
        "one new layer"
    );
    // history shows the commit
    let hist = env.ok(&["history", "--no-trunc", "tut-image"]);
    assert!(hist.contains("sh -c echo hello world > /hello"), "{hist}");

    // bundle + berth run sees the change (and the deletion).
    let b = env.path().join("bundle");
    env.ok(&["bundle", "tut-image", b.to_str().unwrap()]);
    assert!(!b.join("rootfs/etc/gone").exists());
    let out = run_bundle(&berth_bin(), &b, &unique("tut-bundle"));
    assert_eq!(out, "hello world");

    // save → podman load → podman run --runtime berth
    let tar = env.path().join("tut.tar");
    env.ok(&["save", "tut-image", "-o", tar.to_str().unwrap()]);
    let pm = Podman::new("bb-work-podman");
    pm.ok(&["load", "--input", tar.to_str().unwrap()]);
    let mut args = vec!["run", "--rm"];
    args.extend(PODMAN_RUN_OPTS);
    args.extend([
        "tut-image",
        "sh",
        "-c",
        "cat /hello /etc/motd; test -e /etc/gone || echo gone",
    ]);
    let got = pm.ok(&args);
    assert_eq!(got.trim(), "hello world\nnew\ngone");

    // rm: snapshot, mounts, state: nothing left.
    env.ok(&["rm", "tut"]);
    assert!(env.ok(&["containers", "-q"]).trim().is_empty());
    let left: Vec<_> = std::fs::read_dir(env.store().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(mounts_under(&env.store()).is_empty());
    let st = Command::new(berth_bin())
        .arg("--root")
        .arg(env.store().join("runtime"))
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&st.stdout);
    assert!(!listed.contains("berth-work-tut"), "{listed}");
}

#[test]
fn cp_never_leaves_the_container_root() {
    let env = new_env();
    build(&env, "cp-base", "");
    env.ok(&["from", "cp-base", "--name", "cpc"]);
    // Host canaries the container tries to reach through its symlinks.
    let canary_dir = env.path().join("canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    let canary = canary_dir.join("secret");
    std::fs::write(&canary, "host secret").unwrap();
    let script = format!(
        "ln -s {d} /etc/escape && ln -s {f} /etc/leak && ln -s ../../../../../../..{d} /etc/dotdot",
        d = canary_dir.display(),
        f = canary.display()
    );
    env.ok(&["run", "cpc", "--", "sh", "-c", &script]);

    // Into the container through a symlinked directory: resolved inside the
    // root (where that path does not exist), never on the host.
    let src = env.path().join("payload");
    std::fs::write(&src, "payload").unwrap();
    for dest in ["cpc:/etc/escape/planted", "cpc:/etc/dotdot/planted"] {
        let _ = env.out(&["cp", src.to_str().unwrap(), dest]);
        assert!(
            !canary_dir.join("planted").exists(),
            "cp {dest} wrote on the host"
        );
    }
    // Onto a symlink to a host file: the link is replaced, the file untouched.
    env.ok(&["cp", src.to_str().unwrap(), "cpc:/etc/leak"]);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host secret");
    assert_eq!(
        env.ok(&["run", "cpc", "--", "cat", "/etc/leak"]).trim(),
        "payload"
    );
    // Out of the container through a symlink: the host file is never read.
    env.ok(&[
        "run",
        "cpc",
        "--",
        "sh",
        "-c",
        &format!("rm /etc/leak && ln -s {} /etc/leak", canary.display()),
    ]);
    let out = env.path().join("out");
    let _ = env.out(&["cp", "cpc:/etc/leak", out.to_str().unwrap()]);
    assert!(
        std::fs::read_to_string(&out).map_or(true, |s| s != "host secret"),
        "cp read a host file through a container symlink"
    );

    // Ordinary copies both ways, directories included.
    let tree = env.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep").unwrap();
    env.ok(&["cp", tree.to_str().unwrap(), "cpc:/opt"]);
    assert_eq!(
        env.ok(&["run", "cpc", "--", "cat", "/opt/sub/f"]).trim(),
        "deep"
    );
    let back = env.path().join("back");
    env.ok(&["cp", "cpc:/opt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("sub/f")).unwrap(), "deep");

    // export → import: the copy made above is in the imported image.
    let rootfs = env.path().join("rootfs.tar");
    env.ok(&["export", "cpc", "-o", rootfs.to_str().unwrap()]);
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("opt/sub/f"));
    env.ok(&[
        "import",
        rootfs.to_str().unwrap(),
        "imported",
        "--change",
        "CMD cat /opt/sub/f",
    ]);
    let inspect: Value = serde_json::from_str(&env.ok(&["inspect", "imported"])).unwrap();
    let cfg = &inspect["Config"];
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(
        cfg["history"][0]["comment"],
        format!("Imported from {}", rootfs.display())
    );
    assert_eq!(cfg["config"]["Cmd"][2], "cat /opt/sub/f");
    env.ok(&["from", "imported", "--name", "imp"]);
    assert_eq!(
        env.ok(&["run", "imp", "--", "cat", "/opt/sub/f"]).trim(),
        "deep"
    );
}

#[test]
fn bundle_takes_run_overrides_and_makes_anonymous_volumes() {
    let env = new_env();
    build(&env,
        "vol-image",
        "RUN mkdir /data && echo seed > /data/seed && chown 65534:65534 /data\nVOLUME /data\nCMD [\"sh\", \"-c\", \"echo $X $(pwd) $(id -u) $(hostname) $(cat /data/seed /mnt/in); echo out > /data/new\"]\n",
    );
    let host = env.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "hostfile").unwrap();
    let b = env.path().join("b");
    let v = format!("{}:/mnt:ro", host.display());
    let line = env.ok(&[
        "bundle",
        "vol-image",
        b.to_str().unwrap(),
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "-h",
        "bhost",
        "-v",
        &v,
    ]);
    let line = line.trim();
    let abs = b.canonicalize().unwrap();
    assert_eq!(line, format!("berth run --bundle {} b", abs.display()));
    // The printed line, with this test's berth binary and a unique id.
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    assert_eq!(words[0], "berth");
    let id = unique("bvol");
    *words.last_mut().unwrap() = id.clone();
    let out = Command::new(berth_bin())
        .args(&words[1..])
        .output()
        .unwrap();
    let _ = Command::new(berth_bin())
        .args(["delete", "--force", &id])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 /tmp 65534 bhost seed hostfile"
    );
    // The anonymous volume lives beside the rootfs, seeded from the image.
    assert_eq!(
        std::fs::read_to_string(b.join("volumes/0/seed")).unwrap(),
        "seed\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("volumes/0/new")).unwrap(),
        "out\n"
    );
    assert!(!b.join("rootfs/data/new").exists());
}

#[test]
fn working_containers_over_grpc() {
    let env = new_env();
    build(&env, "grpc-base", BASE);
    let d = env.buildd();
    let remote = |args: &[&str]| d.out(args);
    let ok = |args: &[&str]| d.ok(args);
    assert_eq!(ok(&["from", "grpc-base", "--name", "rc"]).trim(), "rc");
    assert!(ok(&["containers", "-q"]).lines().any(|l| l == "rc"));
    let o = remote(&[
        "run",
        "rc",
        "-e",
        "W=x",
        "--",
        "sh",
        "-c",
        "echo out $W; echo err >&2; echo hi > /hello; rm /etc/gone; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out x\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let diff = ok(&["diff", "rc"]);
    assert!(diff.lines().any(|l| l == "A /hello"), "{diff}");
    assert!(diff.lines().any(|l| l == "D /etc/gone"), "{diff}");
    let digest = ok(&["commit", "rc", "grpc-image", "-m", "over grpc", "-a", "me"]);
    assert!(digest.trim().starts_with("sha256:"));
    let inspect: Value = serde_json::from_str(&ok(&["inspect", "grpc-image"])).unwrap();
    let last = inspect["Config"]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["comment"], "over grpc");
    assert_eq!(last["author"], "me");
    let tar = env.path().join("rc.tar");
    ok(&["export", "rc", "-o", tar.to_str().unwrap()]);
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout)
        .lines()
        .any(|l| l == "hello"));
    // import over gRPC: the exported root comes back as a one-layer image.
    ok(&[
        "import",
        tar.to_str().unwrap(),
        "grpc-imported",
        "--change",
        "ENV I=1",
    ]);
    let inspect: Value = serde_json::from_str(&ok(&["inspect", "grpc-imported"])).unwrap();
    let cfg = &inspect["Config"];
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(
        cfg["history"][0]["comment"],
        format!("Imported from {}", tar.display())
    );
    ok(&["from", "grpc-imported", "--name", "ri"]);
    assert_eq!(
        ok(&["run", "ri", "--", "sh", "-c", "cat /hello; echo $I"]),
        "hi\n1\n"
    );
    ok(&["rm", "ri"]);
    // cp over gRPC, both ways, never through a container symlink to the host.
    let canary_dir = env.path().join("grpc-canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    std::fs::write(canary_dir.join("secret"), "host").unwrap();
    let link = format!(
        "ln -s {d} /esc && ln -s {d}/secret /leak",
        d = canary_dir.display()
    );
    ok(&["run", "rc", "--", "sh", "-c", &link]);
    let tree = env.path().join("gtree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep").unwrap();
    ok(&["cp", tree.to_str().unwrap(), "rc:/opt"]);
    assert_eq!(ok(&["run", "rc", "--", "cat", "/opt/sub/f"]), "deep");
    let back = env.path().join("gback");
    ok(&["cp", "rc:/opt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("sub/f")).unwrap(), "deep");
    let file = tree.join("sub/f");
    let _ = remote(&["cp", file.to_str().unwrap(), "rc:/esc/planted"]);
    assert!(!canary_dir.join("planted").exists());
    ok(&["cp", file.to_str().unwrap(), "rc:/leak"]);
    assert_eq!(
        std::fs::read_to_string(canary_dir.join("secret")).unwrap(),
        "host"
    );
    let out = env.path().join("gleak");
    let _ = remote(&["cp", "rc:/esc/secret", out.to_str().unwrap()]);
    assert!(!out.exists());
    // Unknown names are NOT_FOUND, bad ones refused, with no store path shown.
    let o = remote(&["diff", "nope"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no working container named"),
        "{err}"
    );
    let o = remote(&["from", "grpc-base", "--name", "../x"]);
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains(env.store().to_str().unwrap()));
    ok(&["rm", "rc"]);
    assert!(ok(&["containers", "-q"]).trim().is_empty());
    assert!(mounts_under(&env.store()).is_empty());
}

#[test]
fn run_t_gives_a_real_terminal() {
    let env = new_env();
    build(&env, "tty-base", "");
    env.ok(&["from", "tty-base", "--name", "ttyc"]);
    // Without -t: pipes.
    let o = env.out(&["run", "ttyc", "--", "sh", "-c", "test -t 0 || echo no-tty"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no-tty");
    // With -t under a pty (script(1)): the process gets a terminal of its own.
    let cmd = format!(
        "{} --root {} --runtime {} run -t ttyc -- sh -c 'test -t 0 && test -t 1 && echo has-tty; exit 4'",
        builder_bin("berth-build").display(),
        env.store().display(),
        berth_bin().display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("has-tty"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn prune_keeps_what_working_containers_use() {
    let env = new_env();
    build(&env, "prune-base", BASE);
    env.ok(&["from", "prune-base", "--name", "pc"]);
    // The image goes away and the store is pruned: the container's layers stay.
    env.ok(&["rmi", "prune-base"]);
    env.ok(&["prune"]);
    assert_eq!(
        env.ok(&["run", "pc", "--", "cat", "/etc/motd"]).trim(),
        "old"
    );
    env.ok(&["run", "pc", "--", "sh", "-c", "echo kept > /kept"]);
    env.ok(&["commit", "pc", "pruned-image"]);
    env.ok(&["rm", "pc"]);
    env.ok(&["from", "pruned-image", "--name", "pc2"]);
    assert_eq!(env.ok(&["run", "pc2", "--", "cat", "/kept"]).trim(), "kept");
}
