//! Runs one RUN step in an OCI container through a runc-compatible runtime:
//! writes a bundle (config.json) whose root is the step's overlay mount and
//! calls `<runtime> --root R run --bundle B <id>`, streaming output lines.
use super::user::ResolvedUser;
use crate::fsutil::safe;
use anyhow::{bail, Context, Result};
use nix::sys::stat::SFlag;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// Capabilities RUN steps get: exactly Docker's default set, which is also
/// what BuildKit grants (containerd's `defaultUnixCaps`), and nothing more
/// (no CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH, ...). Only the bounding,
/// effective and permitted sets are given: inheritable and ambient stay
/// empty, so a non-root RUN user holds none of them.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Where an extra RUN mount comes from. Sources are opened by fd when the
/// step starts (see [`super::mounts`]), never handed to the runtime as paths.
#[derive(Debug, Clone, PartialEq)]
pub enum MountSource {
    /// `path` resolved inside `root` (a context, another stage's root, the
    /// step's work dir for secrets) as if `root` were `/`. Read-write means
    /// a throwaway copy-on-write layer over the source.
    Bind {
        root: PathBuf,
        path: PathBuf,
        readonly: bool,
    },
    /// A persistent cache directory of the store, shared by steps.
    Cache {
        dir: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunMount {
    pub target: String,
    pub source: MountSource,
}

/// Everything the container process needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: ResolvedUser,
    pub cwd: String,
    pub network_host: bool,
    pub mounts: Vec<RunMount>,
}

/// A runc-compatible runtime binary and the state directory it uses.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub state_root: PathBuf,
}

impl Runtime {
    /// Picks the runtime: `explicit`, else `$BERTH_BUILD_RUNTIME`, else `berth`
    /// next to the current executable, else `berth` on PATH, else runc.
    pub fn locate(explicit: Option<&Path>, state_root: PathBuf) -> Result<Self> {
        let binary = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("BERTH_BUILD_RUNTIME") {
                Some(p) => PathBuf::from(p),
                None => find_default().context("no OCI runtime found: pass --runtime PATH")?,
            },
        };
        Ok(Self { binary, state_root })
    }

    /// Runs `req` with `rootfs` as root filesystem; `bundle` is an empty work
    /// directory. Output lines go to `on_line`.
    pub fn run(
        &self,
        rootfs: &Path,
        bundle: &Path,
        req: &RunRequest,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let staging = bundle.join("mounts");
        std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
        // Dropped (mounts detached) when this function returns, after the
        // runtime is gone and before the caller removes the work directory.
        let (sources, _staged) = super::mounts::stage(&req.mounts, &staging)?;
        let mut config = build_config(rootfs, req, &sources);
        // BuildKit confines every sandboxed RUN step with the engines' default
        // seccomp profile; so do we (see super::seccomp for where it comes from).
        if let Some(profile) = super::seccomp::run_step_profile(DEFAULT_CAPS)? {
            config["linux"]["seccomp"] = profile;
        }
        // BuildKit bind-mounts its own /etc/resolv.conf and /etc/hosts into
        // every RUN container (see super::netfiles).
        let hostname = config["hostname"].as_str().unwrap_or_default().to_string();
        let net = super::netfiles::mounts(bundle, &hostname, req.network_host)?;
        if let Some(m) = config["mounts"].as_array_mut() {
            m.extend(net);
        }
        let mut targets: Vec<&str> = super::netfiles::TARGETS.to_vec();
        targets.extend(req.mounts.iter().map(|m| m.target.as_str()));
        let stubs = missing_mount_points(rootfs, &targets);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config)?,
        )
        .context("writing RUN bundle config.json")?;
        std::fs::create_dir_all(&self.state_root)
            .with_context(|| format!("creating {}", self.state_root.display()))?;
        // The bundle's parent is a unique work dir: concurrent RUN steps
        // (parallel stages, other builds) must never share a container id.
        let unique = bundle
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = format!("berth-build-{unique}-{}", std::process::id()).replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "-",
        );
        let _cleanup = DeleteGuard {
            rt: self,
            id: id.clone(),
        };
        let mut child = no_inherited_fds(Command::new(&self.binary))
            .arg("--root")
            .arg(&self.state_root)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting OCI runtime {}", self.binary.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        for line in rx {
            on_line(&line);
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().context("waiting for the OCI runtime")?;
        remove_stubs(rootfs, &stubs);
        if !status.success() {
            bail!(
                "process {:?} did not complete successfully: exit code: {}",
                req.args.join(" "),
                status.code().unwrap_or(-1)
            );
        }
        Ok(())
    }
}

struct DeleteGuard<'a> {
    rt: &'a Runtime,
    id: String,
}

impl Drop for DeleteGuard<'_> {
    fn drop(&mut self) {
        let _ = no_inherited_fds(Command::new(&self.rt.binary))
            .arg("--root")
            .arg(&self.rt.state_root)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The runtime gets stdio and nothing else: every other fd of the builder
/// (store locks, context files, sockets, and fds the builder itself
/// inherited) is marked close-on-exec in the child just before exec, so a
/// RUN step can never reach one through `/proc/self/fd/N` (`WORKDIR
/// /proc/self/fd/N`, CVE-2024-21626). CLOSE_RANGE_CLOEXEC rather than
/// closing keeps std's own exec-error pipe working.
fn no_inherited_fds(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn find_default() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent()?.join("berth");
    if beside.is_file() {
        return Some(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["berth", "runc"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The OCI runtime config for a RUN step: runc's defaults plus Docker's
/// capabilities, the step's process, extra mounts and network mode.
/// `sources[i]` is the staged source of `req.mounts[i]` (see [`super::mounts`]).
pub fn build_config(rootfs: &Path, req: &RunRequest, sources: &[PathBuf]) -> Value {
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or(json!({}));
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    spec["ociVersion"] = json!("1.0.2");
    spec["hostname"] = json!("buildkitsandbox");
    spec["root"] = json!({ "path": rootfs, "readonly": false });
    spec["process"] = json!({
        "terminal": false,
        "user": {
            "uid": req.user.uid,
            "gid": req.user.gid,
            "additionalGids": req.user.additional_gids,
        },
        "args": req.args,
        "env": req.env,
        "cwd": req.cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
        "noNewPrivileges": false,
    });
    let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    for (m, src) in req.mounts.iter().zip(sources) {
        mounts.push(match &m.source {
            MountSource::Bind { readonly, .. } | MountSource::Cache { readonly, .. } => {
                // nosuid, nodev as on the staged source (see super::mounts),
                // repeated so the runtime's remount keeps them.
                let mut opts = vec!["rbind", "nosuid", "nodev"];
                if *readonly {
                    opts.push("ro");
                }
                json!({ "destination": m.target, "type": "bind", "source": src, "options": opts })
            }
            MountSource::Tmpfs { size } => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(s) = size {
                    opts.push(format!("size={s}"));
                }
                json!({ "destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts })
            }
        });
    }
    spec["mounts"] = Value::Array(mounts);
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        // The cgroup namespace needs a cgroup v2 unified mount to be useful;
        // on hybrid hosts runc handles it, but keep RUN steps close to BuildKit.
        ns.retain(|n| n["type"] != "cgroup" && !(req.network_host && n["type"] == "network"));
    }
    spec
}

/// Mount points the step's own mounts need that the rootfs lacks: the
/// runtime creates them (an empty file or directory, and any missing parent
/// directory) and they must not end up in the layer. As BuildKit's
/// MountStubsCleaner (executor/stubs.go), only /etc/resolv.conf, /etc/hosts
/// and the RUN's own mounts (`RUN --mount` targets) count: the runtime's
/// /dev, /proc and /sys stay in the layer, as in BuildKit's. For each
/// target, the missing path and each of its missing parents are listed,
/// deepest first, relative to `rootfs`.
///
/// The walk is made by fd inside the root and stops at a symlink (the
/// runtime resolves those inside the root itself; what it creates there is
/// left alone).
fn missing_mount_points(rootfs: &Path, targets: &[&str]) -> Vec<PathBuf> {
    let Ok(root) = safe::open_root(rootfs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dest in targets {
        let comps: Vec<&OsStr> = Path::new(dest)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut rel = PathBuf::new();
        let mut dir = None::<OwnedFd>;
        for (i, name) in comps.iter().enumerate() {
            rel.push(name);
            let cur = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
            match safe::stat_at(cur, name) {
                Ok(None) => {
                    // This one and everything below it will be created.
                    let mut missing = rel.clone();
                    let mut chain = vec![missing.clone()];
                    for deeper in &comps[i + 1..] {
                        missing.push(deeper);
                        chain.push(missing.clone());
                    }
                    chain.reverse();
                    out.extend(chain);
                    break;
                }
                Ok(Some(st)) if safe::kind(&st) == SFlag::S_IFDIR => {
                    match safe::open_subdir(cur, name) {
                        Ok(fd) => dir = Some(fd),
                        Err(_) => break,
                    }
                }
                _ => break,
            }
        }
    }
    out
}

/// Removes the mount stubs the runtime created, in the order listed: each
/// only while it is an empty directory or an empty regular file (what a
/// runtime creates), so anything the step put there is kept. Each stub is
/// looked up inside the root without following any symlink, so a step that
/// replaced a parent of a stub with a symlink (to a host directory) gets
/// nothing removed; a directory is removed by the kernel only if empty.
fn remove_stubs(rootfs: &Path, stubs: &[PathBuf]) {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    use std::os::fd::AsRawFd;
    let Ok(root) = safe::open_root(rootfs) else {
        return;
    };
    for s in stubs {
        let Ok((parent, name)) = safe::split(s) else {
            continue;
        };
        let Ok(dir) = safe::open_dir_nofollow(root.as_fd(), parent) else {
            continue;
        };
        let flag = match safe::stat_at(dir.as_fd(), name) {
            Ok(Some(st)) if safe::kind(&st) == SFlag::S_IFDIR => UnlinkatFlags::RemoveDir,
            Ok(Some(st)) if safe::kind(&st) == SFlag::S_IFREG && st.st_size == 0 => {
                UnlinkatFlags::NoRemoveDir
            }
            _ => continue,
        };
        // ENOTEMPTY: the step (or another stub) put something there.
        let _ = unlinkat(Some(dir.as_raw_fd()), name, flag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `true` as root in `/`, no network, no mounts.
    fn true_as_root() -> RunRequest {
        RunRequest {
            args: vec!["true".into()],
            env: vec![],
            user: ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                home: "/".into(),
            },
            cwd: "/".into(),
            network_host: false,
            mounts: vec![],
        }
    }

    #[test]
    fn config_has_process_mounts_and_network_mode() {
        let req = RunRequest {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            user: ResolvedUser {
                uid: 5,
                gid: 6,
                additional_gids: vec![7],
                home: "/".into(),
            },
            cwd: "/w".into(),
            network_host: false,
            mounts: vec![RunMount {
                target: "/cache".into(),
                source: MountSource::Tmpfs { size: None },
            }],
        };
        let c = build_config(Path::new("/r"), &req, &[PathBuf::new()]);
        assert_eq!(c["process"]["args"][2], "true");
        assert_eq!(c["process"]["user"]["uid"], 5);
        assert_eq!(c["root"]["path"], "/r");
        let ns: Vec<_> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].clone())
            .collect();
        assert!(ns.contains(&json!("network")));
        assert!(c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/cache"));
        let host = build_config(
            Path::new("/r"),
            &RunRequest {
                network_host: true,
                ..req
            },
            &[PathBuf::new()],
        );
        assert!(!host["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn run_steps_get_exactly_dockers_default_capabilities() {
        let docker = [
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "NET_RAW",
            "SYS_CHROOT",
            "MKNOD",
            "AUDIT_WRITE",
            "SETFCAP",
        ];
        let mut want: Vec<String> = docker.iter().map(|c| format!("CAP_{c}")).collect();
        want.sort();
        let req = true_as_root();
        let c = build_config(Path::new("/r"), &req, &[]);
        let caps = &c["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            let mut got: Vec<String> = caps[set]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, want, "{set}");
        }
        for set in ["inheritable", "ambient"] {
            assert!(caps[set].as_array().is_none_or(|a| a.is_empty()), "{set}");
        }
    }

    /// BuildKit's MountStubsCleaner: a missing target and its missing
    /// parents, deepest first; removed in that order while empty, so what
    /// the step wrote stays (with the directories holding it).
    #[test]
    fn mount_stubs_are_found_and_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/hosts"), b"image's own\n").unwrap();
        let targets = [
            "/etc/resolv.conf",
            "/etc/hosts",
            "/run/secrets/x",
            "/cache/a/b",
        ];
        let stubs = missing_mount_points(d.path(), &targets);
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            stubs,
            [
                p("etc/resolv.conf"),
                p("run/secrets/x"),
                p("run/secrets"),
                p("run"),
                p("cache/a/b"),
                p("cache/a"),
                p("cache"),
            ]
        );
        // What the runtime creates, and what the step adds.
        std::fs::write(d.path().join("etc/resolv.conf"), b"").unwrap();
        std::fs::create_dir_all(d.path().join("run/secrets")).unwrap();
        std::fs::write(d.path().join("run/secrets/x"), b"").unwrap();
        std::fs::write(d.path().join("run/real"), b"data").unwrap();
        std::fs::create_dir_all(d.path().join("cache/a/b")).unwrap();
        remove_stubs(d.path(), &stubs);
        assert!(!d.path().join("etc/resolv.conf").exists());
        assert!(d.path().join("etc/hosts").exists(), "not a stub");
        assert!(!d.path().join("run/secrets").exists());
        assert!(d.path().join("run/real").exists(), "real content is kept");
        assert!(!d.path().join("cache").exists());
    }

    /// The runtime's own mounts (/dev, /proc, /sys) are not stubs: BuildKit's
    /// layer keeps the directories the runtime created for them.
    #[test]
    fn runtime_mount_points_are_not_stubs() {
        let d = tempfile::tempdir().unwrap();
        let req = true_as_root();
        let cfg = build_config(d.path(), &req, &[]);
        let runtime_targets: Vec<&str> = cfg["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert!(runtime_targets.contains(&"/proc"), "{runtime_targets:?}");
        let mut targets = super::super::netfiles::TARGETS.to_vec();
        targets.extend(req.mounts.iter().map(|m| m.target.as_str()));
        let stubs = missing_mount_points(d.path(), &targets);
        assert_eq!(
            stubs,
            [
                PathBuf::from("etc/resolv.conf"),
                PathBuf::from("etc"),
                PathBuf::from("etc/hosts"),
                PathBuf::from("etc"),
            ]
        );
    }

    #[test]
    fn stub_removal_never_follows_a_replaced_parent() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("stub")).unwrap();
        std::fs::write(outside.path().join("stub/empty"), b"").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("x")).unwrap();
        let stubs = missing_mount_points(d.path(), &["/x/stub"]);
        assert_eq!(stubs, vec![PathBuf::from("x/stub")]);
        // The step swaps /x for a symlink to a host directory.
        std::fs::rename(d.path().join("x"), d.path().join("y")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("x")).unwrap();
        remove_stubs(d.path(), &stubs);
        assert!(outside.path().join("stub/empty").exists());
    }
}
