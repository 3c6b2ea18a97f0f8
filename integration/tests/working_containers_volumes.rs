//! `-v SRC:DST[:ro|rw]` with a single file as the source (Docker binds
//! files as well as directories), in `berth-build run` (embedded and over
//! gRPC) and in `bundle -v` + `berth run`: read-write binds reach the host
//! file, `:ro` binds are really read-only, a bind over an image's file
//! leaves the image's file alone (nothing in `diff`), and a destination
//! that is a symlink in the image pointing out of the root never reaches a
//! canary on the host.
use berth_integration::builder::{expect_ok, tar_dir, BuildEnv, Busybox};
use berth_integration::harness::{berth_bin, unique};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A store whose working containers run with berth; cleaned up on drop.
fn new_env() -> BuildEnv {
    BuildEnv::new("bb-work").with_runtime(berth_bin())
}

/// Builds `tag`: busybox plus an image file `/etc/imgfile` and a symlink
/// `/etc/evil` whose target, taken on the host, is `canary`.
fn build(env: &BuildEnv, tag: &str, canary: &Path) {
    let ctx = env.path().join(unique("ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    let scratch = env.path().join(unique("rootfs"));
    let rootfs = Busybox {
        dirs: &["bin", "etc", "tmp", "root", "proc", "dev", "sys"],
        ..Busybox::new(&["sh", "echo", "cat", "ls", "rm", "true"])
    };
    rootfs.populate(&scratch);
    std::os::unix::fs::symlink(
        format!("/../../../../../..{}", canary.display()),
        scratch.join("etc/evil"),
    )
    .unwrap();
    tar_dir(&scratch, &ctx.join("busybox.tar"), rootfs.tar_flags);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD busybox.tar /\nRUN echo image > /etc/imgfile\nCMD [\"sh\"]\n",
    )
    .unwrap();
    env.build(&ctx, &["-t", tag]);
}

fn check(args: &[&str], o: Output) -> String {
    expect_ok("berth-build", args, &o, "").0
}

/// The cases every way of running shares; `run` runs `args` in container
/// `c` and returns (exit code, stdout, stderr).
fn file_volume_cases(
    env: &BuildEnv,
    tag: &str,
    canary: &Path,
    run: &dyn Fn(&str, &[&str]) -> Output,
    ok: &dyn Fn(&[&str]) -> String,
) {
    let name = format!("{tag}-c");
    assert_eq!(ok(&["from", tag, "--name", &name]).trim(), name);
    let host = env.path().join(format!("{tag}-hostfile"));
    std::fs::write(&host, "host\n").unwrap();
    let h = host.display();
    // `sh -c script` in the container with volume `v`.
    let sh_with = |v: &str, script: &str| run(&name, &["-v", v, "--", "sh", "-c", script]);

    // Read-write: the container appends, the host sees it; the missing
    // destination is created for the run and gone afterwards.
    let v = format!("{h}:/etc/f");
    let o = sh_with(&v, "cat /etc/f; echo more >> /etc/f");
    assert_eq!(check(&["run"], o), "host\n");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\nmore\n");

    // Read-only: the write fails, the host file is untouched.
    let v = format!("{h}:/etc/f:ro");
    let o = sh_with(&v, "cat /etc/f; echo x >> /etc/f");
    assert_ne!(
        o.status.code(),
        Some(0),
        "writing a :ro file bind succeeded"
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "host\nmore\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\nmore\n");

    // Over a file of the image: the host's content shows; the image file is
    // unchanged after the run and `diff` lists nothing.
    let v = format!("{h}:/etc/imgfile");
    let o = sh_with(&v, "cat /etc/imgfile; echo w >> /etc/imgfile");
    assert_eq!(check(&["run"], o), "host\nmore\n");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\nmore\nw\n");
    let o = run(&name, &["--", "cat", "/etc/imgfile"]);
    assert_eq!(check(&["run"], o), "image\n");
    assert_only_copied_up_dirs(&ok(&["diff", &name]));

    // A destination that is a symlink out of the root: the bind lands inside
    // the root (where the link points, taken in the root), never on the host.
    let v = format!("{h}:/etc/evil");
    let o = sh_with(&v, "cat /etc/evil; echo pwned >> /etc/evil");
    assert_eq!(check(&["run"], o), "host\nmore\nw\n");
    assert_eq!(std::fs::read_to_string(canary).unwrap(), "canary\n");
    assert_only_copied_up_dirs(&ok(&["diff", &name]));

    // A missing source is refused with a clear message.
    let v = format!("{}:/etc/x", env.path().join("no-such-file").display());
    let o = run(&name, &["-v", &v, "--", "true"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not exist"), "{err}");
    ok(&["rm", &name]);
}

/// `diff` after the binds: no mount point and no bound file is a change.
/// The image's directories that held a mount point for a while (`/etc`,
/// and `/tmp` on the way to the symlink's target) stay copied up in the
/// container's layer, as they do for the runtime's own mount points.
fn assert_only_copied_up_dirs(diff: &str) {
    for l in diff.lines() {
        assert!(
            l == "C /etc" || l == "C /tmp",
            "diff after file binds: {diff}"
        );
    }
}

fn canary(env: &BuildEnv) -> PathBuf {
    let dir = env.path().join("canary-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("canary");
    std::fs::write(&c, "canary\n").unwrap();
    c
}

#[test]
fn file_volumes_in_run() {
    let env = new_env();
    let canary = canary(&env);
    build(&env, "fv", &canary);
    let run = |name: &str, args: &[&str]| {
        let mut a = vec!["run", name];
        a.extend_from_slice(args);
        env.out(&a)
    };
    file_volume_cases(&env, "fv", &canary, &run, &|a| env.ok(a));
}

#[test]
fn file_volumes_over_grpc() {
    let env = new_env();
    let canary = canary(&env);
    build(&env, "gv", &canary);
    let d = env.buildd();
    let remote = |args: &[&str]| d.out(args);
    let run = |name: &str, args: &[&str]| {
        let mut a = vec!["run", name];
        a.extend_from_slice(args);
        remote(&a)
    };
    file_volume_cases(&env, "gv", &canary, &run, &|a| check(a, remote(a)));
}

#[test]
fn bundle_with_a_file_volume_runs_with_berth() {
    let env = new_env();
    let canary = canary(&env);
    build(&env, "bv", &canary);
    let host = env.path().join("bundle-hostfile");
    std::fs::write(&host, "from host\n").unwrap();
    for (dest, ro) in [
        ("/etc/conf", false),
        ("/etc/imgfile", true),
        ("/etc/evil", false),
    ] {
        let b = env.path().join(unique("b"));
        let v = format!("{}:{dest}{}", host.display(), if ro { ":ro" } else { "" });
        let line = env.ok(&["bundle", "bv", b.to_str().unwrap(), "-v", &v]);
        let mut words: Vec<String> = line.trim().split(' ').map(str::to_string).collect();
        assert_eq!(words[0], "berth", "{line}");
        let id = unique("bfv");
        *words.last_mut().unwrap() = id.clone();
        let script = format!("cat {dest}; echo added >> {dest}");
        // The bundle's process is the image's CMD: run the check through
        // the config instead.
        let cfg_path = b.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        cfg["process"]["terminal"] = serde_json::json!(false);
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let before = std::fs::read_to_string(&host).unwrap();
        let out = Command::new(berth_bin())
            .args(&words[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = Command::new(berth_bin())
            .args(["delete", "--force", &id])
            .output();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            before,
            "{dest}: {err}"
        );
        let after = std::fs::read_to_string(&host).unwrap();
        if ro {
            assert!(
                !out.status.success(),
                "{dest}: a :ro file bind was writable"
            );
            assert_eq!(after, before);
            // The image's file in the bundle's rootfs is untouched.
            assert_eq!(
                std::fs::read_to_string(b.join("rootfs/etc/imgfile")).unwrap(),
                "image\n"
            );
        } else {
            assert!(out.status.success(), "{dest}: {err}");
            assert_eq!(after, format!("{before}added\n"));
        }
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "canary\n");
    }
}
