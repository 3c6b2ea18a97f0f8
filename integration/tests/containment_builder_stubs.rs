//! RUN's /etc/hosts and /etc/resolv.conf mount stubs (and their parent
//! /etc, when the image has none) are removed after the step — inside the
//! root only. A step that swaps the /etc holding the stubs for a symlink to
//! a host directory must not get that directory's files or the directory
//! itself removed (CVE-2024-23652's class), performed against the real
//! berth-build binary with a canary outside every root.
//!
//! RUN steps use berth ($BERTH_BIN) when set, else runc.
use berth_integration::builder::{text, BuildEnv, Busybox};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A busybox root with nothing but /bin (no /etc): the runtime must create
/// /etc for the network files' mount points.
fn bin_only_tar(dest: &Path, scratch: &Path) {
    Busybox {
        dirs: &["bin"],
        passwd: None,
        group: None,
        modes: &[],
        tar_flags: &["--numeric-owner", "--owner=0", "--group=0"],
        ..Busybox::new(&["sh", "mv", "ln", "true", "cat"])
    }
    .write_tar(dest, scratch);
}

#[test]
fn network_file_stubs_are_not_removed_through_a_swapped_etc() {
    let env = BuildEnv::new("bb-stubs");
    // The canary: a host directory shaped like the stubs (empty files named
    // hosts and resolv.conf), which a teardown that followed the symlink
    // would delete, then the directory itself once empty.
    let host = env.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    for f in ["hosts", "resolv.conf"] {
        std::fs::write(host.join(f), b"").unwrap();
    }
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = env.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    bin_only_tar(&ctx.join("bin.tar"), &env.path().join("rootfs"));
    // /etc exists only in the step's own upper layer (the runtime made it
    // for the stubs), so overlayfs lets the step rename it.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD bin.tar /\nRUN cat /etc/hosts && mv /etc /etc2 && ln -s {} /etc\n",
            host.display()
        ),
    )
    .unwrap();
    let o = env.out(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "stubs/etc",
        ctx.to_str().unwrap(),
    ]);
    let out = text(&o);
    for f in ["hosts", "resolv.conf"] {
        assert!(
            host.join(f).exists(),
            "stub teardown deleted the host's {f}: {out}"
        );
    }
    assert!(o.status.success(), "{out}");
    // The step saw BuildKit's hosts file while it ran.
    assert!(
        out.contains("127.0.0.1\tlocalhost buildkitsandbox"),
        "{out}"
    );
}
