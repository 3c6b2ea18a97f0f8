//! A berth-build store in a temporary directory and the commands that
//! drive it (`berth-build --root STORE --runtime RUNTIME ...`).

use super::{builder_bin, step_runtime, Buildd, Busybox};
use crate::containerd::unmount_under;
use crate::harness::TempDir;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A store (`<dir>/store`) and room for contexts in a temporary directory.
/// On drop, even when the test failed: every working container of the
/// store is removed, whatever is still mounted below the directory is
/// detached, then the directory is removed.
pub struct BuildEnv {
    // Dropped after `Drop::drop` has cleaned up: removes the directory.
    dir: TempDir,
    runtime: PathBuf,
    /// Global flags every command gets after `--runtime`.
    flags: Vec<OsString>,
}

impl Drop for BuildEnv {
    fn drop(&mut self) {
        if let Ok(o) = self.cmd(&["containers", "-q"]).output() {
            for n in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.cmd(&["rm", n]).output();
            }
        }
        unmount_under(self.dir.path());
    }
}

impl BuildEnv {
    /// A fresh store in a temporary directory named after `prefix`; RUN
    /// steps use [`step_runtime`].
    pub fn new(prefix: &str) -> BuildEnv {
        let dir = TempDir::new(prefix).unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        BuildEnv {
            dir,
            runtime: step_runtime(),
            flags: Vec::new(),
        }
    }

    /// The same with `runtime` as the OCI runtime (`--runtime`).
    pub fn with_runtime(mut self, runtime: PathBuf) -> BuildEnv {
        self.runtime = runtime;
        self
    }

    /// The same with more global flags for every command (`--config DIR`,
    /// `--registries-config FILE`, ...).
    pub fn with_flags<I, S>(mut self, flags: I) -> BuildEnv
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// The temporary directory (the store is its `store`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store (`--root`).
    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// The OCI runtime the store's steps and containers use.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// `berth-build --root STORE --runtime RUNTIME [FLAGS] ARGS`, stdin from
    /// /dev/null (a test that feeds it sets its own).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(builder_bin("berth-build"));
        c.arg("--root")
            .arg(self.store())
            .arg("--runtime")
            .arg(&self.runtime)
            .args(&self.flags)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs [`BuildEnv::cmd`] to its end, whatever its status.
    pub fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs it, asserting success (stdout and stderr in the message);
    /// returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_err(args).0
    }

    /// Like [`BuildEnv::ok`], returning stdout and stderr.
    pub fn ok_err(&self, args: &[&str]) -> (String, String) {
        expect_ok("berth-build", args, &self.out(args), "")
    }

    /// Runs it, asserting failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(
            !o.status.success(),
            "berth-build {args:?} must fail ({}):\n{}",
            o.status,
            text(&o)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A context `<dir>/name` with busybox.tar (`rootfs`, built in
    /// `<dir>/name-rootfs`) and `dockerfile` as its Dockerfile.
    pub fn context_with(&self, name: &str, dockerfile: &str, rootfs: &Busybox) -> PathBuf {
        let ctx = self.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        rootfs.write_tar(
            &ctx.join("busybox.tar"),
            &self.path().join(format!("{name}-rootfs")),
        );
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
    }

    /// [`BuildEnv::context_with`] a [`Busybox::new`] tree of `applets`.
    pub fn context(&self, name: &str, dockerfile: &str, applets: &[&str]) -> PathBuf {
        self.context_with(name, dockerfile, &Busybox::new(applets))
    }

    /// `build --progress plain EXTRA CTX` to its end, whatever its status.
    pub fn build_out(&self, ctx: &Path, extra: &[&str]) -> Output {
        self.out(&build_args(ctx, extra))
    }

    /// `build --progress plain EXTRA CTX`, asserting success; returns
    /// (stdout trimmed: the digest, the progress log on stderr).
    pub fn build(&self, ctx: &Path, extra: &[&str]) -> (String, String) {
        let (out, err) = self.ok_err(&build_args(ctx, extra));
        (out.trim().to_string(), err)
    }

    /// berth-buildd serving this store with its runtime, on
    /// `<dir>/buildd.sock`, its output in `<dir>/buildd.log`; killed on
    /// drop (drop it before the store: declare it after).
    pub fn buildd(&self) -> Buildd {
        Buildd::start(
            &self.path().join("buildd.sock"),
            &self.store(),
            &self.runtime,
            &[],
            Some(&self.path().join("buildd.log")),
        )
    }

    /// The store's index.json.
    pub fn index(&self) -> String {
        std::fs::read_to_string(self.store().join("index.json")).unwrap()
    }
}

/// `build --progress plain EXTRA CTX`.
fn build_args<'a>(ctx: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    args
}

/// Asserts that `o`, the output of `what ARGS`, is a success, with its
/// status, stdout, stderr and `more` in the message; returns (stdout,
/// stderr).
pub fn expect_ok(what: &str, args: &[&str], o: &Output, more: &str) -> (String, String) {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "{what} {args:?} failed ({}):\nstdout: {out}\nstderr: {err}{more}",
        o.status
    );
    (out, err)
}

/// A command's stdout then stderr, as text (for messages and matching).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Declares a test file's own store type: `struct NAME(BuildEnv)` that
/// derefs to [`BuildEnv`], so the file adds the methods only it needs
/// (its contexts, its readers) and keeps every shared one, cleanup
/// included.
#[macro_export]
macro_rules! build_env_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        struct $name($crate::builder::BuildEnv);

        impl ::std::ops::Deref for $name {
            type Target = $crate::builder::BuildEnv;
            fn deref(&self) -> &$crate::builder::BuildEnv {
                &self.0
            }
        }
    };
}
