//! The minimal busybox root filesystem the builder tests put in their
//! contexts (`FROM scratch` + `ADD busybox.tar /`): the host's static
//! /bin/busybox, the applets a test needs as symlinks, passwd/group.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// What goes into the tree: every field has the default most tests use
/// (see [`Busybox::new`]); tests that need another tree change a field.
#[derive(Clone, Debug)]
pub struct Busybox<'a> {
    /// Directories created (parents included) before anything else.
    pub dirs: &'a [&'a str],
    /// Applets linked to `busybox` in /bin.
    pub applets: &'a [&'a str],
    /// /etc/passwd, if any.
    pub passwd: Option<&'a str>,
    /// /etc/group, if any.
    pub group: Option<&'a str>,
    /// Modes set last, by path relative to the root.
    pub modes: &'a [(&'a str, u32)],
    /// Flags for `tar -c` besides `-C scratch -cf dest .`.
    pub tar_flags: &'a [&'a str],
}

impl<'a> Busybox<'a> {
    /// /bin, /etc, /tmp (1777) and /root; `applets` in /bin; root in
    /// passwd and group; the tar with numeric owners.
    pub fn new(applets: &'a [&'a str]) -> Busybox<'a> {
        Busybox {
            dirs: &["bin", "etc", "tmp", "root"],
            applets,
            passwd: Some("root:x:0:0:root:/root:/bin/sh\n"),
            group: Some("root:x:0:\n"),
            modes: &[("tmp", 0o1777)],
            tar_flags: &["--numeric-owner"],
        }
    }

    /// Writes the tree into `scratch` (created), without tarring it, for
    /// tests that add entries of their own before [`tar_dir`].
    pub fn populate(&self, scratch: &Path) {
        for d in self.dirs.iter().chain(["bin"].iter()) {
            std::fs::create_dir_all(scratch.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", scratch.join("bin/busybox")).unwrap();
        for applet in self.applets {
            std::os::unix::fs::symlink("busybox", scratch.join("bin").join(applet)).unwrap();
        }
        for (file, content) in [("etc/passwd", self.passwd), ("etc/group", self.group)] {
            if let Some(content) = content {
                std::fs::create_dir_all(scratch.join("etc")).unwrap();
                std::fs::write(scratch.join(file), content).unwrap();
            }
        }
        for (path, mode) in self.modes {
            std::fs::set_permissions(scratch.join(path), std::fs::Permissions::from_mode(*mode))
                .unwrap();
        }
    }

    /// Writes the tree into `scratch` and its tar to `dest`.
    pub fn write_tar(&self, dest: &Path, scratch: &Path) {
        self.populate(scratch);
        tar_dir(scratch, dest, self.tar_flags);
    }
}

/// The tar most builder tests use: [`Busybox::new`] with these applets.
pub fn busybox_tar(dest: &Path, scratch: &Path, applets: &[&str]) {
    Busybox::new(applets).write_tar(dest, scratch);
}

/// `tar -C scratch FLAGS -cf dest .` with GNU tar; panics if tar fails.
pub fn tar_dir(scratch: &Path, dest: &Path, flags: &[&str]) {
    tar_entry(scratch, ".", dest, flags);
}

/// `tar -C dir FLAGS -cf dest entry`: one entry of `dir` (and what is
/// below it) with GNU tar; panics if tar fails.
pub fn tar_entry(dir: &Path, entry: &str, dest: &Path, flags: &[&str]) {
    let o = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(flags)
        .arg("-cf")
        .arg(dest)
        .arg(entry)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -C {} -cf {} {entry}: {}",
        dir.display(),
        dest.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}
