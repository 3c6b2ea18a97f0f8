//! `berth-build images` SIZE is Docker's: images built by berth-build (with
//! hard links, symlinks, deletions and an opaque directory in their layers),
//! saved as docker-archives and loaded into a private Docker 20.10 daemon,
//! show the same SIZE in `berth-build images` as in `docker images`, and the
//! byte counts (`berth-build history -H=false`, per layer and summed) equal
//! `docker history --human=false` and `docker image inspect -f {{.Size}}`.
use berth_integration::builder::{tar_dir, BuildEnv, Busybox};
use berth_integration::dockerd::Dockerd;
use berth_integration::harness::skip;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Builds `tag` from `dockerfile` in a context with the tree below.
fn build(env: &BuildEnv, tag: &str, dockerfile: &str) {
    let ctx = env.path().join(format!("ctx-{tag}"));
    std::fs::create_dir_all(&ctx).unwrap();
    busybox_tar(
        &ctx.join("busybox.tar"),
        &env.path().join(format!("{tag}-rootfs")),
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    env.build(&ctx, &["-t", tag]);
}

/// A busybox root filesystem tar with a hard link and a symlink of its own.
fn busybox_tar(dest: &Path, scratch: &Path) {
    let rootfs = Busybox {
        dirs: &["bin", "etc/conf.d", "tmp", "root", "proc", "dev", "sys"],
        ..Busybox::new(&["sh", "ln", "rm", "mkdir", "echo", "cat", "true"])
    };
    rootfs.populate(scratch);
    std::fs::hard_link(scratch.join("bin/busybox"), scratch.join("bin/bb-hard")).unwrap();
    std::fs::write(scratch.join("etc/conf.d/a"), "a".repeat(3000)).unwrap();
    std::fs::write(scratch.join("etc/empty"), "").unwrap();
    tar_dir(scratch, dest, rootfs.tar_flags);
}

fn column(table: &str, name: &str) -> Vec<String> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let start = header
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {table}"));
    let end = header[start..].find("   ").and_then(|gap| {
        let from = start + gap;
        header[from..].find(|c: char| c != ' ').map(|p| from + p)
    });
    lines
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            let e = end.unwrap_or(chars.len()).min(chars.len());
            let s = start.min(e);
            chars[s..e].iter().collect::<String>().trim().to_string()
        })
        .collect()
}

#[test]
fn images_size_matches_docker() {
    let env = BuildEnv::new("bb-size");
    let images: [(&str, &str); 3] = [
        // Hard links: in the ADDed tar and made by RUN (a copied-up file
        // linked twice): each inode counts once.
        (
            "size-links",
            "FROM scratch\nADD busybox.tar /\nRUN ln /bin/busybox /bin/hl && echo hello > /f && ln /f /g && ln /f /h\n",
        ),
        // Symlinks count their target's length.
        (
            "size-symlinks",
            "FROM scratch\nADD busybox.tar /\nRUN ln -s /a/rather/long/target/that/does/not/exist /dangling && ln -s busybox /bin/again\n",
        ),
        // Deletions (whiteouts) and a directory replaced (opaque): 0 bytes
        // each; only the new file counts.
        (
            "size-whiteouts",
            "FROM scratch\nADD busybox.tar /\nRUN rm /etc/group /bin/bb-hard && rm -rf /etc/conf.d && mkdir /etc/conf.d && echo new > /etc/conf.d/b\nENV X=1\n",
        ),
    ];
    for (tag, df) in images {
        build(&env, tag, df);
    }
    let dockerd = match Dockerd::start() {
        Ok(Some(d)) => d,
        Ok(None) => return skip("docker.io (dockerd) is not installed"),
        Err(e) => panic!("starting dockerd: {e:#}"),
    };
    for (tag, _) in images {
        let archive: PathBuf = env.path().join(format!("{tag}.tar"));
        env.ok(&["save", "-o", archive.to_str().unwrap(), tag]);
        dockerd
            .ok(&["load", "-i", archive.to_str().unwrap()])
            .unwrap();
    }
    // Docker's side: SIZE by REPOSITORY, per-layer and total bytes.
    let out = dockerd.ok(&["images"]).unwrap();
    let docker_images = String::from_utf8_lossy(&out.stdout).into_owned();
    let docker: BTreeMap<String, String> = column(&docker_images, "REPOSITORY")
        .into_iter()
        .zip(column(&docker_images, "SIZE"))
        .collect();
    let mut docker_bytes: BTreeMap<&str, (Vec<u64>, u64)> = BTreeMap::new();
    for (tag, _) in images {
        let out = dockerd
            .ok(&["history", "--human=false", "--format", "{{.Size}}", tag])
            .unwrap();
        let layers: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let out = dockerd
            .ok(&["image", "inspect", "-f", "{{.Size}}", tag])
            .unwrap();
        let total: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(total > 0);
        docker_bytes.insert(tag, (layers, total));
    }
    // Twice: with the sizes measured while the layers were written, then as
    // a store that never recorded them (each layer read back once).
    for pass in ["streamed", "read back"] {
        if pass == "read back" {
            for side in ["layer-sizes", "summaries"] {
                let d = env.store().join(side);
                std::fs::remove_dir_all(&d).unwrap();
                std::fs::create_dir(&d).unwrap();
            }
        }
        let berth_images = env.ok(&["images"]);
        let berth: BTreeMap<String, String> = column(&berth_images, "REPOSITORY")
            .into_iter()
            .zip(column(&berth_images, "SIZE"))
            .collect();
        eprintln!("{pass}: berth-build images:\n{berth_images}\ndocker images:\n{docker_images}");
        for (tag, _) in images {
            let b = berth
                .get(tag)
                .unwrap_or_else(|| panic!("{tag} not in\n{berth_images}"));
            let d = docker
                .get(tag)
                .unwrap_or_else(|| panic!("{tag} not in\n{docker_images}"));
            assert_eq!(
                b, d,
                "{pass}: SIZE of {tag}:\nberth:\n{berth_images}\ndocker:\n{docker_images}"
            );
            // Bytes: per history entry and summed.
            let berth_history = env.ok(&["history", "-H=false", tag]);
            let berth_sizes: Vec<u64> = column(&berth_history, "SIZE")
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{s:?} in\n{berth_history}"))
                })
                .collect();
            eprintln!("{pass}: {tag}: layer sizes {berth_sizes:?}");
            let (layers, total) = &docker_bytes[tag];
            assert_eq!(&berth_sizes, layers, "{pass}: layer sizes of {tag}");
            assert_eq!(berth_sizes.iter().sum::<u64>(), *total, "{pass}: {tag}");
        }
    }
}
