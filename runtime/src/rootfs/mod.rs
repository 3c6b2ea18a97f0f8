//! Container root filesystem setup (OCI runtime-spec config.md "mounts",
//! config-linux.md "rootfsPropagation", "devices", "maskedPaths",
//! "readonlyPaths", "/dev symbolic links").
//!
//! Called from the container init in three steps: [`prepare`] inside the new
//! mount namespace (before createContainer hooks), [`enter`] (after them),
//! then [`finalize`] once `/` is the container root (after sysctls and the
//! console, before the process is executed).

mod cgroup;
mod devices;
pub(crate) mod fdmount;
mod finalize;
pub(crate) mod hostns;
mod lookup;
mod mountinfo;
mod mounts;
mod options;
mod paths;
mod pivot;
pub mod sources;
#[cfg(test)]
mod tests;

use std::path::Path;

use anyhow::Result;

pub use devices::bind_console;
pub use finalize::finalize;
// Safe in-root resolution for callers outside this module (hooks, exec cwd).
#[allow(unused_imports)]
pub use paths::{open_in_root, resolve_in_root};

/// Everything the rootfs setup needs to know about the container.
pub struct RootfsContext<'a> {
    pub spec: &'a oci_spec::runtime::Spec,
    /// Absolute, canonical host path of the rootfs.
    pub rootfs: &'a Path,
    /// Absolute bundle directory; relative bind sources resolve against it.
    pub bundle: &'a Path,
    /// --no-pivot: MS_MOVE the rootfs onto / and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container has its own user namespace: mknod is impossible and
    /// device nodes are bind-mounted from the host.
    pub in_user_ns: bool,
    /// Bind sources the runtime opened for init (see `sources`).
    pub bind_sources: &'a sources::BindSources,
}

/// Sets up the mount tree inside the rootfs: propagation, the rootfs bind,
/// every spec mount in order, then devices and /dev symlinks.
/// `enter_cgroups` (idempotent) runs before the first cgroupfs mount, whose
/// view depends on the cgroups and cgroup namespace init is in, and at the
/// latest before the devices are made.
pub fn prepare(ctx: &RootfsContext, enter_cgroups: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    if hostns::shares_host_mount_ns(ctx.spec) {
        hostns::bind_rootfs(ctx)?;
    } else {
        pivot::prepare_root(ctx)?;
    }
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        if matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")) {
            enter_cgroups()?;
        }
        mounts::mount_entry(ctx, m, ctx.bind_sources.take(i).as_ref())?;
    }
    // Before anything of the container runs (createContainer hooks).
    ctx.bind_sources.close_rest();
    enter_cgroups()?;
    if devices::needs_setup_dev(ctx.spec) {
        let dev = devices::open_dev(ctx)?;
        devices::create_devices(ctx, &dev)?;
        devices::create_symlinks(ctx, &dev)?;
        devices::setup_ptmx(ctx, &dev)?;
    }
    Ok(())
}

/// Switches `/` to the rootfs: pivot_root (or --no-pivot's move) in the
/// container's mount namespace, a chroot without one (see `hostns`).
pub fn enter(ctx: &RootfsContext) -> Result<()> {
    if hostns::shares_host_mount_ns(ctx.spec) {
        return hostns::chroot_into(ctx.rootfs);
    }
    pivot::enter(ctx)
}
