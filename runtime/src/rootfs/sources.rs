//! Bind mount sources opened by the runtime on the host's behalf, for a
//! container in a user namespace (runc's mount source fds).
//!
//! In its user namespace, init is root only over what the namespace owns:
//! it cannot search a host directory closed to other users (a source under
//! a 0700 directory, EACCES) although host root, who asked for the mount,
//! can. So `create`, still host root, opens every bind source itself, from
//! inside init's mount namespace (a thread joins it, so the descriptor is
//! of a mount init may clone: `open_tree` only clones mounts of the
//! caller's own namespace), and hands the descriptors to init over the sync
//! channel. Init clones the source from the descriptor and moves the copy
//! onto the target it resolved in the rootfs (see `mounts::bind`): no path
//! is looked up twice, nothing is looked up by init.
//!
//! The descriptors are `O_PATH`: they give no access to the contents, and
//! init closes them as soon as the mounts are made, before any container
//! code can run.
//!
//! Why not a detached copy (`open_tree(OPEN_TREE_CLONE)`) made in the
//! host's own namespace: moved into the container's, it would carry none
//! of the locks the kernel puts on mounts a less privileged namespace
//! inherits, and root in the container could remount the host's
//! `nosuid`/`nodev`/`noexec`/`ro` mount without them (checked by a test).
//! Opened in init's namespace, the source is that namespace's locked copy
//! and its clone stays locked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::options;
use crate::namespaces::Plan;
use crate::sync::{Channel, Msg};

/// Source descriptors by index in the spec's `mounts`, each taken (and
/// closed after its mount) by the mount that uses it.
#[derive(Default)]
pub struct BindSources(RefCell<HashMap<usize, OwnedFd>>);

impl BindSources {
    pub(crate) fn take(&self, mount: usize) -> Option<OwnedFd> {
        self.0.borrow_mut().remove(&mount)
    }

    /// Closes whatever no mount took.
    pub(crate) fn close_rest(&self) {
        self.0.borrow_mut().clear();
    }
}

/// Whether the parent opens the bind sources for init: the container has
/// a user namespace and a mount namespace of its own, and the parent is
/// host root (an unprivileged parent could neither join init's mount
/// namespace nor open more than init itself can).
pub fn opened_by_parent(plan: &Plan) -> bool {
    plan.has(LinuxNamespaceType::User)
        && plan.creates(LinuxNamespaceType::Mount)
        && nix::unistd::Uid::effective().is_root()
}

/// The spec's bind mounts (not remounts), as (index, source, destination),
/// relative sources taken from the bundle as `mounts::bind` does.
fn bind_entries(spec: &Spec, bundle: &Path) -> Vec<(usize, PathBuf, PathBuf)> {
    spec.mounts()
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, m)| {
            let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
            let is_bind = m.typ().as_deref() == Some("bind") || opts.is_bind();
            if !is_bind || opts.flags.contains(MsFlags::MS_REMOUNT) {
                return None;
            }
            let source = m.source().as_deref()?;
            let source = if source.is_absolute() {
                source.to_path_buf()
            } else {
                bundle.join(source)
            };
            Some((i, source, m.destination().clone()))
        })
        .collect()
}

/// Opens every bind source of `spec` inside the mount namespace of init
/// (`pid`), with this process's (host) privileges.
pub fn open_for_init(pid: i32, spec: &Spec, bundle: &Path) -> Result<Vec<(usize, OwnedFd)>> {
    let entries = bind_entries(spec, bundle);
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let mnt_ns = File::open(&ns_path).with_context(|| format!("open {ns_path}"))?;
    // setns(CLONE_NEWNS) needs a filesystem context of our own: a thread
    // that unshares it joins init's namespace and leaves the rest of this
    // process where it is. The thread ends with the opens.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<(usize, OwnedFd)>> {
            nix::sched::unshare(CloneFlags::CLONE_FS)
                .context("unshare the filesystem context to open bind sources")?;
            nix::sched::setns(mnt_ns.as_fd(), CloneFlags::CLONE_NEWNS)
                .context("join the container's mount namespace to open bind sources")?;
            entries
                .iter()
                .map(|(i, source, dest)| {
                    open_path(source)
                        .with_context(|| format!("bind mount source {:?} for {:?}", source, dest))
                        .map(|fd| (*i, fd))
                })
                .collect()
        })
        .join()
        .map_err(|_| anyhow!("the thread opening bind sources panicked"))?
    })
}

/// O_PATH, following symlinks as mount(2) follows them in a source.
fn open_path(p: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: fresh descriptor from open(2), owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Parent → init: one message per source with its descriptor attached,
/// then the end of the list.
pub fn send(chan: &Channel, sources: &[(usize, OwnedFd)]) -> Result<()> {
    for (mount, fd) in sources {
        chan.send_with_fd(&Msg::BindSource { mount: *mount }, fd.as_fd())
            .context("send a bind mount source to init")?;
    }
    chan.send(&Msg::BindSourcesSent)
}

/// Init: the sources [`send`] sent.
pub fn receive(chan: &Channel) -> Result<BindSources> {
    let mut out = HashMap::new();
    loop {
        match chan.recv_with_fd()? {
            Some((Msg::BindSource { mount }, Some(fd))) => {
                out.insert(mount, fd);
            }
            Some((Msg::BindSource { mount }, None)) => {
                bail!("bind mount source {mount} arrived without its descriptor")
            }
            Some((Msg::BindSourcesSent, _)) => return Ok(BindSources(RefCell::new(out))),
            Some((other, _)) => bail!("unexpected message from parent: {other:?}"),
            None => bail!("parent went away while sending bind mount sources"),
        }
    }
}
