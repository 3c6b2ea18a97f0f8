//! OCI hooks: run each with the container state on stdin, its own args and
//! env, and a timeout; report failures with the hook's output.
//!
//! Working directory, as runc's: prestart, createRuntime and poststart hooks
//! run in the bundle directory, createContainer hooks in the container's
//! rootfs (the caller passes it: only init knows it), startContainer hooks
//! where the container process is, poststop hooks where the caller is.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Hook;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which lifecycle point a hook list belongs to (for messages).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

/// Run `hooks` in order; stop at the first failure. Hooks that runc runs in
/// the bundle directory get the `bundle` of `state` as their working directory.
/// Whether the spec has prestart or createRuntime hooks, which the parent
/// runs while init waits (init and parent both ask, so that without any
/// they skip that round trip).
pub fn has_create_runtime_hooks(spec: &oci_spec::runtime::Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        #[allow(deprecated)]
        let pre = h.prestart().as_ref().is_some_and(|v| !v.is_empty());
        pre || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
    })
}

pub fn run_all(kind: Kind, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    let bundle = match kind {
        Kind::Prestart | Kind::CreateRuntime | Kind::Poststart => {
            state.get("bundle").and_then(|b| b.as_str()).map(Path::new)
        }
        Kind::CreateContainer | Kind::StartContainer | Kind::Poststop => None,
    };
    run_all_in(kind, hooks, state, bundle)
}

/// Run `hooks` in order in `dir` (the caller's cwd when `None`); stop at the
/// first failure.
pub fn run_all_in(
    kind: Kind,
    hooks: &[Hook],
    state: &serde_json::Value,
    dir: Option<&Path>,
) -> Result<()> {
    let input = serde_json::to_vec(state)?;
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input, dir).with_context(|| {
            format!(
                "error running {} hook #{i} ({})",
                kind.name(),
                hook.path().display()
            )
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &[u8], dir: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new(hook.path());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    match hook.args() {
        Some(args) if !args.is_empty() => {
            cmd.arg0(&args[0]).args(&args[1..]);
        }
        _ => {}
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("start hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading its stdin: EPIPE is not an error.
        let _ = stdin.write_all(state);
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collector = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for hook")? {
            break status;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                bail!("timeout after {} seconds", hook.timeout().unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = collector.join().unwrap_or_default();
    if !status.success() {
        bail!("{status}, output: {}", output.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".to_string(), script.to_string()])
            .env(vec!["FOO=bar".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hook_gets_state_and_env() {
        let dir = std::env::temp_dir().join(format!("berth-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hook(
            &format!("cat > {0}; echo \" $FOO\" >> {0}", out.display()),
            None,
        );
        run_all(Kind::Poststart, &[h], &serde_json::json!({"id": "x"})).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, "{\"id\":\"x\"} bar\n");
    }

    #[test]
    fn bundle_hooks_run_in_the_bundle() {
        let dir = std::env::temp_dir().join(format!("berth-hook-cwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let state = serde_json::json!({"id": "x", "bundle": dir});
        let h = hook(&format!("pwd >> {}", out.display()), None);
        run_all(Kind::CreateRuntime, std::slice::from_ref(&h), &state).unwrap();
        run_all(Kind::Poststart, std::slice::from_ref(&h), &state).unwrap();
        run_all_in(Kind::CreateContainer, &[h], &state, Some(Path::new("/"))).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let d = dir.display();
        assert_eq!(got, format!("{d}\n{d}\n/\n"));
    }

    #[test]
    fn failing_hook_reports_output() {
        let err = run_all(
            Kind::Prestart,
            &[hook("echo boom >&2; exit 3", None)],
            &serde_json::json!({}),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("prestart hook #0") && msg.contains("boom"),
            "{msg}"
        );
    }

    #[test]
    fn hook_timeout_kills() {
        let start = Instant::now();
        let err = run_all(
            Kind::Poststop,
            &[hook("sleep 10", Some(1))],
            &serde_json::json!({}),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("timeout"));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
