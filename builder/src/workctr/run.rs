//! `run`: one process in a working container through the OCI runtime, with
//! the caller's stdio (or a real terminal with `-t`), its exit status passed
//! through. The container's root is the overlay mount; the config is the one
//! RUN steps get (Docker's capabilities and seccomp profile) with the
//! caller's overrides.
use super::{Container, Mounted};
use crate::exec::run::{build_config, MountSource, RunMount, RunRequest, Runtime, DEFAULT_CAPS};
use crate::fsutil::safe;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The overrides `run` and `bundle` share (`-e -v -w -u -h -t`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub env: Vec<String>,
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
}

/// A `-v SRC:DST[:ro|rw]` volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
}

pub fn parse_volume(spec: &str) -> Result<Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("bad volume {spec:?}: want SRC:DST[:ro|rw]"),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        bail!("bad volume {spec:?}: source and destination must be absolute paths");
    }
    Ok(Volume {
        source: PathBuf::from(src),
        target: dst.to_string(),
        readonly: ro,
    })
}

/// The image's Env with Docker's defaults and the `-e` overrides applied
/// (`-e KEY` alone takes KEY from the caller's environment, as Docker does).
pub fn merged_env(image_env: &[String], overrides: &[String], home: &str) -> Result<Vec<String>> {
    let mut cfg = crate::image::RunConfig {
        env: image_env.to_vec(),
        ..Default::default()
    };
    if cfg.env_get("PATH").is_none() {
        cfg.env_set("PATH", crate::image::DEFAULT_PATH);
    }
    if cfg.env_get("HOME").is_none() {
        cfg.env_set("HOME", home);
    }
    for e in overrides {
        match e.split_once('=') {
            Some(("", _)) => bail!("bad -e {e:?}: empty name"),
            Some((k, v)) => cfg.env_set(k, v),
            None => {
                if let Ok(v) = std::env::var(e) {
                    cfg.env_set(e, &v)
                }
            }
        }
    }
    Ok(cfg.env)
}

/// Network of a `run`: like RUN steps and buildah, networked (the host's)
/// unless `none` is asked for.
pub fn parse_network(s: &str) -> Result<bool> {
    match s {
        "host" | "default" => Ok(true),
        "none" => Ok(false),
        o => bail!("unknown --network {o:?} (none or host)"),
    }
}

/// Where a run's stdio goes.
pub enum RunIo<'a> {
    /// The caller's own stdin/stdout/stderr (the CLI).
    Inherit,
    /// stdin empty; output chunks handed over as they come, `true` for
    /// stderr (the daemon). No terminal.
    Capture(&'a mut dyn FnMut(bool, Vec<u8>)),
    /// The caller hands the runtime its stdio, starts it and waits for it
    /// (the daemon's interactive runs). With `terminal` the process gets a
    /// terminal, so `start` must give the runtime a controlling one.
    Custom {
        terminal: bool,
        start: &'a mut dyn FnMut(&mut Command) -> std::io::Result<std::process::ExitStatus>,
    },
}

/// Runs `args` in container `c`; returns the exit code to pass on.
pub fn run(
    store: &Store,
    c: &mut Container,
    runtime: &Runtime,
    args: &[String],
    o: &Overrides,
    network_host: bool,
    io: RunIo<'_>,
) -> Result<i32> {
    if args.is_empty() {
        bail!("run needs a command");
    }
    let root = c.mount(store)?;
    let cfg = &c.state.config.config;
    let user = crate::exec::user::resolve_user(&root.path, o.user.as_deref().unwrap_or(&cfg.user))?;
    let env = merged_env(&cfg.env, &o.env, &user.home)?;
    let cwd = match &o.workdir {
        Some(w) => w.clone(),
        None if cfg.working_dir.is_empty() => "/".into(),
        None => cfg.working_dir.clone(),
    };
    if !cwd.starts_with('/') {
        bail!("working directory {cwd:?} must be absolute");
    }
    // Docker and buildah create a missing working directory; inside the
    // root by fd, refusing symlinks on the way.
    let root_fd = safe::open_root(&root.path)?;
    safe::mkdir_all_in_root(root_fd.as_fd(), Path::new(&cwd), 0o755)
        .with_context(|| format!("working directory {cwd}"))?;
    let mut mounts = Vec::new();
    for v in &o.volumes {
        let v = parse_volume(v)?;
        mounts.push(RunMount {
            target: v.target,
            source: MountSource::Cache {
                dir: v.source,
                readonly: v.readonly,
            },
        });
    }
    let mut req = RunRequest {
        args: args.to_vec(),
        env,
        user,
        cwd,
        network_host,
        mounts,
    };
    let bundle = c.dir.join(format!("bundle-{}", std::process::id()));
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle).ok();
    }
    std::fs::create_dir(&bundle).with_context(|| format!("creating {}", bundle.display()))?;
    let _bundle_guard = RemoveDir(bundle.clone());
    let staging = bundle.join("mounts");
    std::fs::create_dir(&staging).context("creating the mount staging directory")?;
    // Each volume source (a directory or a file: Docker binds both) is
    // opened once and bind-mounted from its fd onto a private staging point
    // of the same type.
    let (sources, _staged) = crate::exec::mounts::stage(&req.mounts, &staging)?;
    // Mount points, made inside the root by fd before the runtime sees a
    // path (a symlinked destination resolves inside the root, as Docker
    // resolves it); the runtime gets the resolved path, and what is made
    // here is removed again after the run.
    let mut made = Stubs {
        root: &root,
        paths: Vec::new(),
    };
    for (m, src) in req.mounts.iter_mut().zip(&sources) {
        // The staging point is ours (in the private bundle directory).
        let dir = std::fs::symlink_metadata(src)
            .with_context(|| format!("volume {}", m.target))?
            .is_dir();
        let point = super::mountpoint::prepare(root_fd.as_fd(), &m.target, dir)
            .with_context(|| format!("volume {}", m.target))?;
        made.paths.extend(point.created);
        m.target = point.dest;
    }
    let mut config = build_config(&root.path, &req, &sources);
    config["hostname"] = json!(o.hostname.clone().unwrap_or_else(|| c.state.name.clone()));
    config["process"]["terminal"] = json!(match &io {
        RunIo::Inherit => o.tty,
        RunIo::Capture(_) => false,
        RunIo::Custom { terminal, .. } => *terminal,
    });
    if let Some(profile) = crate::exec::seccomp::run_step_profile(DEFAULT_CAPS)? {
        config["linux"]["seccomp"] = profile;
    }
    made.paths.extend(missing_mount_points(&root, &config));
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )
    .context("writing config.json")?;
    std::fs::create_dir_all(&runtime.state_root)
        .with_context(|| format!("creating {}", runtime.state_root.display()))?;
    let id = c.runtime_id();
    let mut cmd = Command::new(&runtime.binary);
    cmd.arg("--root")
        .arg(&runtime.state_root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    // Only stdio reaches the runtime (see exec::run: CVE-2024-21626).
    // SAFETY: one async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = match io {
        RunIo::Inherit => cmd.status(),
        RunIo::Capture(sink) => capture_output(&mut cmd, sink),
        RunIo::Custom { start, .. } => start(&mut cmd),
    }
    .with_context(|| format!("running OCI runtime {}", runtime.binary.display()));
    let _ = Command::new(&runtime.binary)
        .arg("--root")
        .arg(&runtime.state_root)
        .args(["delete", "--force", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    drop(made);
    let status = status?;
    c.state.last_command = args.to_vec();
    c.save()?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Runs `cmd` with stdin empty, handing stdout/stderr chunks to `sink`.
fn capture_output(
    cmd: &mut Command,
    sink: &mut dyn FnMut(bool, Vec<u8>),
) -> std::io::Result<std::process::ExitStatus> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    let mut readers = Vec::new();
    let streams: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (false, child.stdout.take().map(|s| Box::new(s) as _)),
        (true, child.stderr.take().map(|s| Box::new(s) as _)),
    ];
    for (is_err, stream) in streams {
        let Some(mut stream) = stream else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || tx.send((is_err, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for (is_err, chunk) in rx {
        sink(is_err, chunk);
    }
    for r in readers {
        let _ = r.join();
    }
    child.wait()
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mount points made for one run, removed (if still hollow) on drop, also
/// when the run fails before the runtime started.
struct Stubs<'a> {
    root: &'a Mounted,
    paths: Vec<PathBuf>,
}

impl Drop for Stubs<'_> {
    fn drop(&mut self) {
        remove_stubs(self.root, &self.paths);
    }
}

/// Mount points the runtime will have to create (their topmost missing
/// component): they are the runtime's, not the container's changes, and are
/// removed again after the run so `diff` and `commit` never see them.
fn missing_mount_points(root: &Mounted, config: &Value) -> Vec<PathBuf> {
    let Ok(fd) = safe::open_root(&root.path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in config["mounts"].as_array().into_iter().flatten() {
        let Some(dest) = m["destination"].as_str() else {
            continue;
        };
        let mut rel = PathBuf::new();
        for comp in Path::new(dest).components() {
            let std::path::Component::Normal(n) = comp else {
                continue;
            };
            let parent = match safe::open_dir_nofollow(fd.as_fd(), &rel) {
                Ok(p) => p,
                Err(_) => break,
            };
            rel.push(n);
            match safe::stat_at(parent.as_fd(), n) {
                Ok(None) => {
                    if !out.contains(&rel) {
                        out.push(rel.clone());
                    }
                    break;
                }
                Ok(Some(_)) => {}
                Err(_) => break,
            }
        }
    }
    out
}

/// Removes what the runtime created for `stubs`, only if it still holds
/// nothing but empty directories and empty files (the mount points of
/// nested mounts), never anything the process wrote there.
fn remove_stubs(root: &Mounted, stubs: &[PathBuf]) {
    let Ok(fd) = safe::open_root(&root.path) else {
        return;
    };
    for rel in stubs {
        let Ok((parent, name)) = safe::split(rel) else {
            continue;
        };
        let Ok(dir) = safe::open_dir_nofollow(fd.as_fd(), parent) else {
            continue;
        };
        if hollow(dir.as_fd(), name, 0) {
            let _ = safe::remove_at(dir.as_fd(), name);
        }
    }
}

fn hollow(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr, depth: u32) -> bool {
    use nix::sys::stat::SFlag;
    let Ok(Some(st)) = safe::stat_at(dir, name) else {
        return false;
    };
    match safe::kind(&st) {
        SFlag::S_IFREG => st.st_size == 0,
        SFlag::S_IFDIR if depth < 64 => safe::open_subdir(dir, name)
            .ok()
            .and_then(|d| {
                let names = safe::list_dir(d.as_fd()).ok()?;
                Some(names.iter().all(|n| hollow(d.as_fd(), n, depth + 1)))
            })
            .unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_like_docker() {
        assert_eq!(
            parse_volume("/a:/b:ro").unwrap(),
            Volume {
                source: "/a".into(),
                target: "/b".into(),
                readonly: true
            }
        );
        assert!(!parse_volume("/a:/b").unwrap().readonly);
        assert!(parse_volume("a:/b").is_err());
        assert!(parse_volume("/a:/b:x").is_err());
    }

    #[test]
    fn env_overrides_replace_in_place() {
        let env = merged_env(&["A=1".into(), "B=2".into()], &["A=3".into()], "/root").unwrap();
        assert_eq!(env[0], "A=3");
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(env.contains(&"HOME=/root".to_string()));
    }
}
