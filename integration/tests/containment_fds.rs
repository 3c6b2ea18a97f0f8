//! Containment of the runtime's file descriptors (CVE-2024-21626 class)
//! and of a half-made container (issue 9, items 1, 5 and the runtime half
//! of 10).
//!
//! Every attack here tries to reach the host through an fd berth holds
//! while it sets a process up — as `process.cwd`, through `exec --cwd`,
//! through `/proc/<pid>/fd/N` of init or of an exec'd process — and reads
//! two canaries: a secret file in a temp dir on the host and the host's
//! `/etc/hostname` (the container gets a different one). Neither may ever
//! show up. Killing `create` at any point must leave nothing that
//! `delete --force` cannot remove.

use anyhow::{bail, Context, Result};
use berth_integration::harness::*;
use serde_json::json;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Enough `..` to reach `/` from any directory berth could leak (state
/// dir, cgroup dirs, bundle): inside the container it stays at its `/`.
const UP: &str = "../../../../../../../../../../../../../../../..";

/// A secret on the host, outside every rootfs, plus the host's hostname.
struct Canary {
    dir: TempDir,
    secret: String,
    host_hostname: String,
}

impl Canary {
    fn new() -> Result<Canary> {
        let dir = TempDir::new("berth-canary")?;
        let secret = format!("host-secret-{}", unique("canary"));
        std::fs::write(dir.path().join("secret"), &secret)?;
        let host_hostname = std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Canary {
            dir,
            secret,
            host_hostname,
        })
    }

    /// The secret's path relative to `/`.
    fn rel(&self) -> String {
        format!(
            "{}/secret",
            self.dir
                .path()
                .display()
                .to_string()
                .trim_start_matches('/')
        )
    }

    /// Shell that tries to read both canaries relative to `base` (a
    /// directory path, possibly "." for the cwd), printing marked lines,
    /// and to write a file next to the secret.
    fn probe(&self, base: &str) -> String {
        format!(
            "echo \"SECRET:$(cat {base}/{UP}/{rel} 2>/dev/null)\"; \
             echo \"HOSTNAME:$(cat {base}/{UP}/etc/hostname 2>/dev/null)\"; \
             echo pwned 2>/dev/null > {base}/{UP}/{written}; true",
            rel = self.rel(),
            written = self.rel().replace("/secret", "/written"),
        )
    }

    /// Fails if `text` shows either canary or the container wrote the host.
    fn assert_absent(&self, text: &str, what: &str) {
        assert!(
            !self.dir.path().join("written").exists(),
            "{what}: the container wrote into a host directory:\n{text}"
        );
        assert!(
            !text.contains(&self.secret),
            "{what}: the container read the host's secret file:\n{text}"
        );
        if !self.host_hostname.is_empty() {
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim() == format!("HOSTNAME:{}", self.host_hostname)),
                "{what}: the container read the host's /etc/hostname:\n{text}"
            );
        }
    }
}

/// A busybox bundle whose own /etc/hostname differs from the host's, so a
/// successful read of the host's is told apart from the container's.
fn bundle() -> Result<Bundle> {
    let b = Bundle::busybox()?;
    std::fs::write(b.rootfs().join("etc/hostname"), "inside-the-container\n")?;
    Ok(b)
}

/// A container left running (`sleep`), created and started.
fn running(rt: &Runtime, b: &mut Bundle) -> Result<String> {
    let id = unique("fds");
    b.args(&["sleep", "1000"]);
    rt.create(&id, b)?;
    rt.ok(&["start", &id])?;
    rt.wait_status(&id, "running")?;
    Ok(id)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `process.cwd = /proc/self/fd/N` under `run`: N = 5 was the state-dir
/// lock and 9 the unified cgroup directory. Whatever berth refuses or
/// runs, the process must never read the host.
#[test]
fn cwd_proc_self_fd_under_run_cannot_reach_host() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.sh(&canary.probe("."));
    for n in 3..=16 {
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        let (code, out, err) = rt.run(&unique("cwd"), &b)?;
        canary.assert_absent(&format!("{out}{err}"), &format!("run with cwd fd {n}"));
        if code == 0 {
            // Ran: then from a directory of the container.
            assert!(out.contains("SECRET:\n"), "cwd fd {n}: {out}");
        }
    }
    Ok(())
}

/// The same under create + start (fd 3 was the state directory). The
/// process writes what it read into the rootfs, where the test reads it.
#[test]
fn cwd_proc_self_fd_under_create_start_cannot_reach_host() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.config["root"]["readonly"] = json!(false);
    b.sh(&format!("{{ {}; }} > /result 2>&1", canary.probe(".")));
    let result = b.rootfs().join("result");
    for n in 3..=16 {
        let _ = std::fs::remove_file(&result);
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        b.write()?;
        let id = unique("cwd");
        let bundle = b.path().display().to_string();
        let out = rt.output(&["create", "--bundle", &bundle, &id])?;
        canary.assert_absent(&text(&out), &format!("create with cwd fd {n}"));
        if !out.status.success() {
            continue;
        }
        rt.ok(&["start", &id])?;
        rt.wait_status(&id, "stopped")?;
        let got = std::fs::read_to_string(&result).unwrap_or_default();
        canary.assert_absent(&got, &format!("create+start with cwd fd {n}"));
        rt.ok(&["delete", &id])?;
    }
    Ok(())
}

/// `exec --cwd /proc/self/fd/N` into a running container (12 was the
/// unified cgroup directory the exec'd process inherited).
#[test]
fn exec_cwd_proc_self_fd_cannot_reach_host() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    let id = running(&rt, &mut b)?;
    for n in 3..=20 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = rt.output(&["exec", "--cwd", &cwd, &id, "sh", "-c", &canary.probe(".")])?;
        canary.assert_absent(&text(&out), &format!("exec --cwd {cwd}"));
    }
    Ok(())
}

/// While a container is only created its init is still berth: a process
/// exec'd into it must not reach the host through /proc/1/fd/N (fd 3 was
/// the state directory; exec.fifo lives there too). Init is non-dumpable,
/// so even its fd links cannot be read.
#[test]
fn exec_into_created_container_cannot_walk_out_through_init_fds() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    let id = unique("created");
    b.args(&["sleep", "1000"]);
    rt.create(&id, &b)?;
    assert_eq!(rt.status(&id)?, "created");
    let mut script = String::new();
    for n in 0..=20 {
        script.push_str(&canary.probe(&format!("/proc/1/fd/{n}")));
        script.push_str("; ");
    }
    // Readable links would mean init's fds are open to the container.
    script.push_str("for f in /proc/1/fd/*; do readlink $f && echo LINK-READ; done; true");
    let out = rt.output(&["exec", &id, "sh", "-c", &script])?;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    canary.assert_absent(&all, "exec into a created container via /proc/1/fd");
    assert!(
        !all.contains("LINK-READ"),
        "init's fds are reachable from the container:\n{all}"
    );
    // Still created, and it starts normally after the attempt.
    assert_eq!(rt.status(&id)?, "created");
    rt.ok(&["start", &id])?;
    rt.wait_status(&id, "running")?;
    Ok(())
}

/// A process of the container races `berth exec`: it scans /proc for a
/// process still named "berth" (the runtime side of an exec, in the
/// container's pid namespace until its execve) and tries to open its
/// fds. That side is non-dumpable from birth, so it never can.
#[test]
fn racing_reader_cannot_open_exec_runtime_fds() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.config["root"]["readonly"] = json!(false);
    // The runtime side keeps the binary's name (comm: at most 15 bytes)
    // until its execve.
    let comm: String = berth_bin()
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .context("berth binary has no file name")?;
    let reader = format!(
        "while [ ! -e /stop ]; do \
           for d in /proc/[0-9]*; do \
             read -r c < $d/comm || continue; \
             [ \"$c\" = {comm} ] || continue; \
             echo \"SEEN $d\" >> /found; \
             for f in $d/fd/*; do \
               case $f in */fd/[012]) continue;; esac; \
               [ -e \"$f\" ] || continue; \
               echo \"OPENED $f\" >> /found; \
               read -r l < \"$f/{UP}/{rel}\" && echo \"LEAK $l\" >> /found; \
             done; \
           done 2>/dev/null; \
         done",
        rel = canary.rel(),
    );
    b.sh(&reader);
    let id = unique("race");
    rt.create(&id, &b)?;
    rt.ok(&["start", &id])?;
    rt.wait_status(&id, "running")?;
    let found = b.rootfs().join("found");
    let seen = |found: &Path| {
        std::fs::read_to_string(found)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("SEEN"))
            .count()
    };
    // Only fds beyond stdio count: once the exec'd program (`true`) runs
    // it is dumpable again and holds just 0, 1 and 2 — a reader that saw
    // the name "berth" a moment earlier may list those legitimately.
    // Until its capabilities are dropped the runtime side is out of reach
    // anyway (the kernel wants the reader's capabilities to cover its
    // own); the window that matters lies between that and execve, where
    // the PATH lookup happens. A long PATH of missing directories widens
    // it to a few milliseconds, as a hostile exec request could.
    let path: Vec<String> = (0..3000).map(|i| format!("/no/such/dir/{i}")).collect();
    let path = format!("PATH={}:/bin", path.join(":"));
    // Bounded: enough execs for the reader to catch the runtime side many
    // times (it does within a few dozen on an idle machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut execs = 0;
    while execs < 300 && seen(&found) < 400 && Instant::now() < deadline {
        rt.ok(&["exec", "--env", &path, &id, "true"])?;
        execs += 1;
    }
    std::fs::write(b.rootfs().join("stop"), "")?;
    let report = std::fs::read_to_string(&found).unwrap_or_default();
    canary.assert_absent(&report, "racing reader");
    assert!(
        !report.contains("OPENED"),
        "a container process opened the exec runtime's fds:\n{report}"
    );
    assert!(
        seen(&found) > 0,
        "the reader never saw the runtime side of {execs} execs: the race was not exercised"
    );
    Ok(())
}

/// The user's process is dumpable again after the final execve (as with
/// runc): `ps` and the container's own tools keep working, and it holds
/// no fd beyond stdio.
#[test]
fn final_process_is_dumpable_and_holds_only_stdio() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    let id = running(&rt, &mut b)?;
    let out = rt.ok(&["exec", &id, "ls", "/proc/1/fd"])?;
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "init's fds after exec: {out}");
    // Readable links: init (now the user's process) is dumpable again.
    let out = rt.ok(&["exec", &id, "readlink", "/proc/1/fd/0"])?;
    assert_eq!(out.trim(), "/dev/null");
    let ps: serde_json::Value = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])?)?;
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    Ok(())
}

/// Runs `berth ARGS` with a host directory as fd 3 and `--preserve-fds 1`.
fn output_with_host_dir_as_fd3(rt: &Runtime, dir: &Path, args: &[&str]) -> Result<String> {
    let host_dir = std::fs::File::open(dir)?;
    let raw = host_dir.as_raw_fd();
    let mut cmd = rt.cmd(args);
    let stdio = rt.root.path().join(unique("stdio"));
    cmd.stdout(std::fs::File::create(&stdio)?)
        .stderr(std::fs::File::create(stdio.with_extension("err"))?);
    // SAFETY: dup2 and fcntl are async-signal-safe. dup2 clears
    // close-on-exec on fd 3, except when the fd already is 3.
    unsafe {
        cmd.pre_exec(move || {
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().context("run berth")?;
    let mut all = std::fs::read_to_string(&stdio).unwrap_or_default();
    all.push_str(&std::fs::read_to_string(stdio.with_extension("err")).unwrap_or_default());
    let _ = std::fs::remove_file(&stdio);
    let _ = std::fs::remove_file(stdio.with_extension("err"));
    if status.success() {
        bail!("berth {args:?} with cwd outside the root succeeded:\n{all}");
    }
    Ok(all)
}

/// A cwd outside the container's root (here a host directory the caller
/// passed with --preserve-fds, entered through /proc/self/fd/3) is
/// refused after the chdir, as runc does, for init and for exec.
#[test]
fn cwd_outside_the_root_is_refused() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.sh(&canary.probe("."));
    b.config["process"]["cwd"] = json!("/proc/self/fd/3");
    b.write()?;
    let bundle = b.path().display().to_string();
    let id = unique("outside");
    let all = output_with_host_dir_as_fd3(
        &rt,
        canary.dir.path(),
        &["run", "--preserve-fds", "1", "--bundle", &bundle, &id],
    )?;
    canary.assert_absent(&all, "run with a preserved host dir as cwd");
    // (Init may already refuse to create the cwd inside the rootfs.)
    assert!(
        all.contains("possible container breakout detected") || all.contains("cwd"),
        "{all}"
    );

    b.config["process"]["cwd"] = json!("/");
    let id = running(&rt, &mut b)?;
    let all = output_with_host_dir_as_fd3(
        &rt,
        canary.dir.path(),
        &[
            "exec",
            "--preserve-fds",
            "1",
            "--cwd",
            "/proc/self/fd/3",
            &id,
            "sh",
            "-c",
            &canary.probe("."),
        ],
    )?;
    canary.assert_absent(&all, "exec with a preserved host dir as cwd");
    assert!(
        all.contains("possible container breakout detected"),
        "{all}"
    );
    Ok(())
}

/// `--preserve-fds N` while fewer fds are open: berth's own fds must not
/// take the free numbers and be handed to the container as "preserved".
#[test]
fn preserve_fds_beyond_the_open_ones_is_refused() -> Result<()> {
    let canary = Canary::new()?;
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.sh(&canary.probe("."));
    for n in 3..=10 {
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        b.write()?;
        let bundle = b.path().display().to_string();
        let id = unique("preserve");
        let mut cmd = rt.cmd(&["run", "--preserve-fds", "8", "--bundle", &bundle, &id]);
        // SAFETY: close_range is async-signal-safe; berth starts with only stdio.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let out = cmd.output()?;
        let all = text(&out);
        canary.assert_absent(&all, &format!("run --preserve-fds 8 with cwd fd {n}"));
        assert!(!out.status.success(), "cwd fd {n}: {all}");
        assert!(all.contains("fd 3 is not open"), "cwd fd {n}: {all}");
    }
    Ok(())
}

/// Live processes (not zombies) whose command line mentions `id`: init
/// and any intermediate are clones of `berth create ... ID`.
fn processes_mentioning(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(p.join("stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
            .unwrap_or(true);
        if !zombie && cmdline.split_whitespace().any(|w| w == id) {
            out.push(format!("{}: {cmdline}", p.display()));
        }
    }
    out
}

/// SIGKILL `berth create` at spread-out points (before, during and after
/// its hooks), then `delete --force`: no process, cgroup, mount or state
/// may be left, and init must not linger waiting for a dead parent.
#[test]
fn killed_create_leaves_nothing_after_delete_force() -> Result<()> {
    let rt = Runtime::new()?;
    let mut b = bundle()?;
    b.args(&["sleep", "1000"]);
    let bundle = b.path().display().to_string();
    let namespaces = b.config["linux"]["namespaces"].clone();
    for i in 0..24u64 {
        // Half with a slow createRuntime hook, so kills land inside it too;
        // every third with a time namespace, which an intermediate process
        // creates before it clones init (init's parent is then not create).
        b.config["hooks"] = if i % 2 == 1 {
            json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "0.03"]}]})
        } else {
            json!({})
        };
        b.config["linux"]["namespaces"] = namespaces.clone();
        if i % 3 == 2 {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .context("namespaces")?
                .push(json!({"type": "time"}));
        }
        b.write()?;
        let id = unique("killed");
        let mut create = rt
            .cmd(&["create", "--bundle", &bundle, &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // Spread over 0..46 ms in steps of 2 ms (a create takes ~10-40 ms).
        std::thread::sleep(Duration::from_millis((i * 7 % 24) * 2));
        let _ = create.kill();
        let _ = create.wait();
        rt.ok(&["delete", "--force", &id])
            .with_context(|| format!("delete --force after killing create #{i}"))?;
        let left = processes_mentioning(&id);
        assert!(left.is_empty(), "create #{i}: processes left: {left:?}");
        assert!(!cgroup_exists(&id), "create #{i}: cgroup {id} left");
        assert!(
            !rt.root.path().join(&id).exists(),
            "create #{i}: state dir left"
        );
        let mounts = host_mounts_containing(&bundle);
        assert!(mounts.is_empty(), "create #{i}: mounts left: {mounts:?}");
    }
    Ok(())
}
