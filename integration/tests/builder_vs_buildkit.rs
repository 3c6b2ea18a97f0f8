//! berth-build against BuildKit, live (issue 12): every case builds the same
//! Dockerfile and context with Docker 20.10's BuildKit (a private dockerd,
//! `docker build --network=none`) and with berth-build (RUN steps through
//! berth when $BERTH_BIN is set, else runc), then compares what `docker
//! save` and `berth-build save` write: the config fields a user or tool
//! reads, the history (`created_by`, `empty_layer`, `comment`), the number
//! of layers and every layer's entries (type, path, mode, owner, link
//! target, size of regular files; mtimes are not compared). All differences
//! of all cases are reported together, as a diff, before the test fails.
//!
//! One daemon serves the whole file (startup is the slow part), so this is
//! one test looping over a table of cases.
use berth_integration::builder::{tar_entry, BuildEnv, Busybox, SavedImage};
use berth_integration::dockerd::Dockerd;
use berth_integration::harness::skip;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A build case: a Dockerfile and the extra files of its context (the
/// context always holds `busybox.tar`, a small busybox root filesystem
/// without /dev, /proc or /sys).
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    files: &'static [(&'static str, Content)],
}

#[derive(Clone, Copy)]
enum Content {
    /// A regular file with this text.
    Text(&'static str),
    /// A hard link to another context file.
    HardLink(&'static str),
    /// A tar of the named context directory (which is then removed).
    TarOf(&'static str),
    /// A symbolic link with this target.
    Symlink(&'static str),
    /// An executable file with this text.
    Exec(&'static str),
}

const CASES: &[Case] = &[
    Case {
        name: "metadata",
        dockerfile: r#"FROM scratch
ADD busybox.tar /
ENV A=1 B="two words" C=$A
ARG V=3
LABEL l=1 "m n"="o p" v=$V
EXPOSE 80 53/udp 7000-7001
WORKDIR /app
USER 1000:1000
CMD ["sh", "-c", "echo hi"]
ENTRYPOINT ["/bin/sh", "-c"]
SHELL ["/bin/sh", "-e", "-c"]
HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD ["true"]
ONBUILD RUN echo triggered
STOPSIGNAL SIGTERM
VOLUME /data ["/other"]
RUN echo $V > /tmp/v
"#,
        files: &[],
    },
    Case {
        name: "shell-forms",
        dockerfile: r#"FROM scratch
ADD busybox.tar /
CMD echo shell form
ENTRYPOINT echo entry
HEALTHCHECK CMD echo ok
MAINTAINER someone <a@b.c>
"#,
        files: &[],
    },
    Case {
        name: "run-changes-files",
        dockerfile: r#"FROM scratch
ADD busybox.tar /
RUN mkdir -p /d/e && echo hi > /d/f && chmod 0700 /d/e && ln -s f /d/l && chmod 4755 /d/f
RUN rm /etc/group && touch /bin/newfile && chmod 0600 /etc/passwd && mkdir /tmp/sub
RUN rm -rf /d && mkdir /d && echo again > /d/g
"#,
        files: &[],
    },
    Case {
        name: "noop-run",
        dockerfile: "FROM scratch\nADD busybox.tar /\nRUN true\nRUN true\n",
        files: &[],
    },
    Case {
        name: "run-sees-network-files",
        dockerfile: "FROM scratch\nADD busybox.tar /\n\
                     RUN cat /etc/hosts /etc/resolv.conf > /net && hostname > /hn && \
                     stat -c '%n %a %F' /dev/shm /dev/pts /dev/mqueue /proc /sys > /mnt\n",
        files: &[],
    },
    Case {
        name: "run-mount-stubs",
        dockerfile: "FROM scratch\nADD busybox.tar /\n\
                     RUN --mount=type=tmpfs,target=/tmp/t touch /tmp/t/x\n\
                     RUN --mount=type=bind,source=f,target=/etc/f cat /etc/f > /copied\n\
                     RUN --mount=type=cache,target=/root/cache echo c > /root/cache/c\n\
                     RUN --mount=type=tmpfs,target=/opt/deep/t true\n",
        files: &[("f", Content::Text("f\n"))],
    },
    Case {
        name: "run-without-etc",
        dockerfile: "FROM scratch AS full\nADD busybox.tar /\n\
                     FROM scratch\nCOPY --from=full /bin /bin\nRUN true\n",
        files: &[],
    },
    Case {
        name: "run-as-user",
        dockerfile: "FROM scratch\nADD busybox.tar /\nUSER app\nWORKDIR /home/app/work\n\
                     RUN touch x && mkdir y\nUSER root\nRUN true\n",
        files: &[],
    },
    Case {
        name: "workdir-existing",
        dockerfile: "FROM scratch\nADD busybox.tar /\nWORKDIR /tmp\nWORKDIR /etc\n\
                     WORKDIR rel/../new\nRUN pwd > /pwd\n",
        files: &[],
    },
    Case {
        name: "copy-add-flags",
        dockerfile: "FROM scratch\nADD busybox.tar /\nRUN mkdir -p /dst && chmod 0700 /dst\n\
                     COPY --chown=1000:1000 f /f1\nCOPY --chown=app f /f2\n\
                     COPY --chmod=0600 dir /dst/\nCOPY --chmod=0640 dir /new/\n\
                     ADD --chown=1:2 sub.tar /x/deep/\nCOPY hl /hl/\nADD f /added\n\
                     COPY f dir/a /many/\n",
        files: &[
            ("f", Content::Text("f\n")),
            ("dir/a", Content::Text("a\n")),
            ("dir/sub/b", Content::Text("bb\n")),
            ("t/in/t1", Content::Text("t\n")),
            ("sub.tar", Content::TarOf("t")),
            ("hl/f1", Content::Text("h\n")),
            ("hl/f2", Content::HardLink("hl/f1")),
        ],
    },
    Case {
        name: "copy-shapes",
        dockerfile: "FROM scratch\nADD busybox.tar /\nCOPY tree /tree\nCOPY tree/ /tree2/\n\
                     COPY tree/run.sh tree/data /flat/\nCOPY tree/link /single-link\n\
                     COPY tree/run.sh /bin/renamed\nCOPY tree /etc/\n",
        files: &[
            ("tree/data", Content::Text("data\n")),
            ("tree/run.sh", Content::Exec("#!/bin/sh\necho run\n")),
            ("tree/link", Content::Symlink("data")),
            ("tree/sub/dangling", Content::Symlink("/nowhere")),
            ("tree/sub/deeper/x", Content::Text("x\n")),
        ],
    },
    Case {
        name: "inherited-config",
        dockerfile: "FROM scratch AS base\nADD busybox.tar /\nCMD [\"base\"]\nENV X=1 Y=1\n\
                     LABEL a=b keep=1\nEXPOSE 80\nVOLUME /v\nUSER app\nWORKDIR /w\n\
                     HEALTHCHECK CMD true\nSTOPSIGNAL SIGINT\nONBUILD ENV T=1\n\
                     FROM base\nENTRYPOINT [\"/bin/sh\"]\nENV X=2\nLABEL a=c\nEXPOSE 81/udp\n\
                     HEALTHCHECK NONE\nUSER root\nRUN id -u > /id\n",
        files: &[],
    },
    Case {
        name: "multi-stage",
        dockerfile: "FROM scratch AS base\nADD busybox.tar /\nRUN echo hi > /x && mkdir /xd\n\
                     FROM scratch AS other\nCOPY --from=base /x /y\n\
                     FROM base\nCOPY --from=other /y /z\nCOPY --from=0 /xd /xd2/\n\
                     COPY --from=base /bin/busybox /opt/\n",
        files: &[],
    },
    // FROM the image the "metadata" case built (each tool's own store):
    // inherited config, history and layers, and its ONBUILD trigger.
    Case {
        name: "from-built-image",
        dockerfile: "FROM vs/metadata\nUSER root\nRUN echo child > /child\nCMD [\"child\"]\n",
        files: &[],
    },
    Case {
        name: "arg-env-precedence",
        dockerfile: "FROM scratch\nADD busybox.tar /\nENV A=env1\nARG A=arg1\n\
                     RUN echo \"A=$A\" > /a1\nENV W=$A\nARG B=argb\nENV B=envb\n\
                     RUN echo \"B=$B\" > /b1\nARG C\nENV C=envc\nARG C\nRUN echo \"C=$C\" > /c1\n\
                     ENV D=envd\nARG D\nRUN echo \"D=$D\" > /d1\nARG E=e1\nARG E=e2\n\
                     RUN echo \"E=$E\" > /e1\n",
        files: &[],
    },
    Case {
        name: "global-args",
        dockerfile:
            "ARG BASE=scratch\nARG G=global\nFROM ${BASE} AS b\nADD busybox.tar /\n\
                     ARG G\nRUN echo \"$G\" > /g\nFROM b\nARG G=local\nENV E=$G\nRUN echo $E > /e\n",
        files: &[],
    },
];

/// Where Docker 20.10's BuildKit (v0.8) and current BuildKit disagree,
/// berth follows current BuildKit; these differences, exactly, are expected
/// (any other, or one of these disappearing, fails the test).
const NEWER_BUILDKIT: &[(&str, &str, &str)] = &[
    (
        "run-without-etc",
        "layer[1] etc: only BuildKit: d 0755 0:0",
        // executor/stubs.go MountStubsCleaner: current BuildKit also
        // removes the missing parents it had to create for a mount stub
        // (here the /etc made for /etc/hosts), when they are left empty.
        "MountStubsCleaner removes empty parents of mount stubs",
    ),
    // executor/stubs.go MountStubsCleaner: Docker 20.10's skipped every
    // directory stub (it removed only stubs of size 0, and a directory's
    // size never is); current BuildKit removes a directory stub when it is
    // empty, and the missing parents it created with it.
    (
        "run-mount-stubs",
        "layer[1] tmp/t: only BuildKit: d 0755 0:0",
        "MountStubsCleaner removes empty directory stubs",
    ),
    (
        "run-mount-stubs",
        "layer[3] root/cache: only BuildKit: d 0755 0:0",
        "MountStubsCleaner removes empty directory stubs",
    ),
    (
        "run-mount-stubs",
        "layer[4] opt: only BuildKit: d 0755 0:0",
        "MountStubsCleaner removes empty parents of mount stubs",
    ),
    (
        "run-mount-stubs",
        "layer[4] opt/deep: only BuildKit: d 0755 0:0",
        "MountStubsCleaner removes empty parents of mount stubs",
    ),
    (
        "run-mount-stubs",
        "layer[4] opt/deep/t: only BuildKit: d 0755 0:0",
        "MountStubsCleaner removes empty directory stubs",
    ),
    (
        "global-args",
        "history[1]:\n  - \"ARG G\" empty_layer=true comment=\"buildkit.dockerfile.v0\"\n  \
         + \"ARG G=global\" empty_layer=true comment=\"buildkit.dockerfile.v0\"",
        // frontend/dockerfile/dockerfile2llb/convert.go dispatchArg: a
        // valueless ARG that inherits a global ARG shows the value.
        "dispatchArg shows the inherited global value",
    ),
];

/// One entry of a layer tar, with the fields compared.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    /// Regular files only.
    size: Option<u64>,
    /// sha256 of a regular file's content (first 12 hex digits).
    content: Option<String>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(c) = &self.content {
            write!(f, " sha256={c}")?;
        }
        if let Some(l) = &self.link {
            write!(f, " -> {l}")?;
        }
        Ok(())
    }
}

/// What is compared of an image.
struct Image {
    config: Value,
    history: Vec<(String, bool, String)>,
    layers: Vec<BTreeMap<String, Entry>>,
}

const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
];

/// Reads a `docker save`-style archive (both tools write one) unpacked in `dir`.
fn read_archive(archive: &Path, dir: &Path) -> Image {
    let saved = SavedImage::unpack(archive, dir);
    let history = saved.config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
                h["comment"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let layers = saved.layers.iter().map(|l| list_layer(l)).collect();
    Image {
        config: saved.config["config"].clone(),
        history,
        layers,
    }
}

/// A layer's entries by normalized path (`a/b`, no `./`, no trailing `/`).
fn list_layer(path: &Path) -> BTreeMap<String, Entry> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let tool = match raw.get(..4) {
        Some([0x1f, 0x8b, ..]) => Some("gzip"),
        Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("zstd"),
        _ => None,
    };
    if let Some(tool) = tool {
        let o = Command::new(tool).args(["-dc"]).arg(path).output().unwrap();
        assert!(o.status.success(), "{tool} -dc {}", path.display());
        raw = o.stdout;
    }
    let norm = |p: &str| p.trim_start_matches("./").trim_end_matches('/').to_string();
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(raw.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        let name = norm(&e.path().unwrap().to_string_lossy());
        if name.is_empty() || name == "." {
            continue;
        }
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => '-',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected tar entry type {other:?} for {name}"),
        };
        let content = (kind == '-').then(|| {
            use sha2::Digest;
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            format!("{:x}", sha2::Sha256::digest(&data))[..12].to_string()
        });
        let h = e.header();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .map(|l| if kind == 'h' { norm(&l) } else { l });
        out.insert(
            name,
            Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link,
                size: (kind == '-').then(|| h.size().unwrap()),
                content,
            },
        );
    }
    out
}

/// The flags of every tar this file writes.
const TAR_FLAGS: &[&str] = &["--numeric-owner", "--owner=0", "--group=0"];

/// A minimal busybox root filesystem (no /dev, /proc, /sys) with an `app`
/// user (1000:1000), as builder_fidelity.rs uses, and /root 0700.
fn busybox_tar(dest: &Path, scratch: &Path) {
    Busybox {
        passwd: Some("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
        group: Some("root:x:0:\napp:x:1000:\n"),
        modes: &[("tmp", 0o1777), ("root", 0o700)],
        tar_flags: TAR_FLAGS,
        ..Busybox::new(&[
            "sh", "echo", "cat", "ls", "mkdir", "true", "env", "chmod", "touch", "grep", "rm",
            "ln", "pwd", "stat", "hostname", "id",
        ])
    }
    .write_tar(dest, scratch);
}

fn make_context(case: &Case, work: &Path) -> PathBuf {
    let ctx = work.join(case.name);
    std::fs::create_dir_all(&ctx).unwrap();
    busybox_tar(
        &ctx.join("busybox.tar"),
        &work.join(format!("{}-rootfs", case.name)),
    );
    std::fs::write(ctx.join("Dockerfile"), case.dockerfile).unwrap();
    let mut tarred = Vec::new();
    for (name, content) in case.files {
        let p = ctx.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match content {
            Content::Text(t) => std::fs::write(&p, t).unwrap(),
            Content::HardLink(target) => std::fs::hard_link(ctx.join(target), &p).unwrap(),
            Content::Symlink(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
            Content::Exec(t) => {
                std::fs::write(&p, t).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Content::TarOf(dir) => {
                let src = ctx.join(dir);
                let entries: Vec<String> = std::fs::read_dir(&src)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                for e in entries {
                    tar_entry(&src, &e, &p, TAR_FLAGS);
                }
                tarred.push(src);
            }
        }
    }
    for d in tarred {
        std::fs::remove_dir_all(d).unwrap();
    }
    // Same modes whatever the umask of the test run.
    let st = Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    ctx
}

fn build_with_buildkit(d: &Dockerd, ctx: &Path, tag: &str, out: &Path) {
    d.ok(&[
        "build",
        "--network=none",
        "-q",
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("{e:#}"));
    d.ok(&["save", "-o", out.to_str().unwrap(), tag])
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn build_with_berth(env: &BuildEnv, ctx: &Path, tag: &str, out: &Path) {
    env.build(ctx, &["-t", tag]);
    env.ok(&["save", "-o", out.to_str().unwrap(), tag]);
}

/// `null` and a missing key mean the same to every consumer of a config.
fn field(v: &Value, k: &str) -> Value {
    v.get(k).cloned().unwrap_or(Value::Null)
}

fn is_whiteout(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with(".wh."))
}

/// The differences between BuildKit's image (`want`) and berth's (`got`),
/// as readable lines (`-` BuildKit, `+` berth).
fn compare(want: &Image, got: &Image) -> Vec<String> {
    let mut d = Vec::new();
    for k in CONFIG_FIELDS {
        let (w, g) = (field(&want.config, k), field(&got.config, k));
        if w != g {
            d.push(format!("config.{k}:\n  - {w}\n  + {g}"));
        }
    }
    let n = want.history.len().max(got.history.len());
    for i in 0..n {
        let (w, g) = (want.history.get(i), got.history.get(i));
        if w != g {
            let show = |h: Option<&(String, bool, String)>| match h {
                Some((c, e, m)) => format!("{c:?} empty_layer={e} comment={m:?}"),
                None => "(none)".into(),
            };
            d.push(format!("history[{i}]:\n  - {}\n  + {}", show(w), show(g)));
        }
    }
    if want.layers.len() != got.layers.len() {
        d.push(format!(
            "layer count: - {} + {}",
            want.layers.len(),
            got.layers.len()
        ));
    }
    for (i, (w, g)) in want.layers.iter().zip(&got.layers).enumerate() {
        let mut names: Vec<&String> = w.keys().chain(g.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            match (w.get(name), g.get(name)) {
                (Some(a), Some(b)) if a == b => {}
                // A whiteout's mode means nothing. Docker's layer store
                // writes 0600 (moby pkg/archive's overlay whiteout
                // converter) when `docker save` regenerates the tar;
                // containerd's differ, which buildkitd uses, writes 0, as
                // berth does (the overlay whiteout's own mode).
                (Some(a), Some(b))
                    if is_whiteout(name)
                        && Entry {
                            mode: b.mode,
                            ..a.clone()
                        } == *b => {}
                (Some(a), Some(b)) => d.push(format!("layer[{i}] {name}:\n  - {a}\n  + {b}")),
                (Some(a), None) => d.push(format!("layer[{i}] {name}: only BuildKit: {a}")),
                (None, Some(b)) => d.push(format!("layer[{i}] {name}: only berth: {b}")),
                (None, None) => {}
            }
        }
    }
    d
}

#[test]
fn berth_build_gives_the_image_buildkit_gives() {
    let dockerd = match Dockerd::start() {
        Ok(Some(d)) => d,
        Ok(None) => return skip("docker.io (dockerd) is not installed"),
        Err(e) => panic!("starting dockerd: {e:#}"),
    };
    let work = BuildEnv::new("bb-vs-bk");
    // One case by name while investigating (from-built-image also needs
    // metadata's image: run that case first or all of them).
    let only = std::env::var("BERTH_VS_BUILDKIT_CASE").ok();
    let mut report = Vec::new();
    for case in CASES {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let ctx = make_context(case, work.path());
        let tag = format!("vs/{}", case.name);
        let bk_tar = work.path().join(format!("{}-buildkit.tar", case.name));
        let berth_tar = work.path().join(format!("{}-berth.tar", case.name));
        build_with_buildkit(&dockerd, &ctx, &tag, &bk_tar);
        build_with_berth(&work, &ctx, &tag, &berth_tar);
        let want = read_archive(&bk_tar, &work.path().join(format!("{}-bk.d", case.name)));
        let got = read_archive(
            &berth_tar,
            &work.path().join(format!("{}-berth.d", case.name)),
        );
        let mut diffs = compare(&want, &got);
        for (c, known, why) in NEWER_BUILDKIT.iter().filter(|k| k.0 == case.name) {
            let before = diffs.len();
            diffs.retain(|d| d != known);
            if diffs.len() == before {
                diffs.push(format!(
                    "expected difference ({why}) not seen in case {c}: update NEWER_BUILDKIT:\n{known}"
                ));
            }
        }
        if !diffs.is_empty() {
            report.push(format!(
                "== case {} (- BuildKit, + berth)\n{}",
                case.name,
                diffs.join("\n")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "berth-build differs from BuildKit:\n{}",
        report.join("\n")
    );
}
