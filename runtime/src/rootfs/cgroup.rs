//! The `cgroup` mount type: what the container sees at /sys/fs/cgroup.
//!
//! * cgroup v2 host: mount cgroup2 (the cgroup namespace makes the
//!   container's cgroup its root); if the kernel refuses (user namespace
//!   without cgroup namespace), bind the container's own cgroup directory.
//! * v1 / hybrid host: a tmpfs at the target, then one directory per host
//!   hierarchy (`cpu`, `memory`, `systemd`, `unified`, ...). With a cgroup
//!   namespace each is a fresh mount of that hierarchy (rooted at the
//!   container's cgroup); without one it is a bind of the container's cgroup
//!   directory from the host. Co-mounted controllers (`cpu,cpuacct`) get
//!   per-controller symlinks, as runc does.

use std::path::{Path, PathBuf};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use nix::unistd::symlinkat;
use oci_spec::runtime::LinuxNamespaceType;

use super::mountinfo::{self, MountInfo};
use super::mounts::{self, mount_err, sys_mount};
use super::options::{self, MountOptions};
use super::paths::{self, fd_path, Last};
use super::RootfsContext;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Flags runc forces on cgroup mounts and their tmpfs.
fn default_flags() -> MsFlags {
    MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
}

/// One line of /proc/self/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupEntry {
    /// Controllers (`cpu,cpuacct`, `name=systemd`); empty for cgroup v2.
    pub controllers: String,
    pub path: PathBuf,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let controllers = it.next()?.to_string();
            let path = PathBuf::from(it.next()?);
            Some(CgroupEntry { controllers, path })
        })
        .collect()
}

/// A hierarchy to expose in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Directory name under the target (host mount point's base name).
    pub name: String,
    /// cgroup v1 mount data (`cpu,cpuacct`, `name=systemd`); None for cgroup2.
    pub v1_data: Option<String>,
    /// Host directory of this process's cgroup in the hierarchy.
    pub host_dir: PathBuf,
}

/// Matches each /proc/self/cgroup entry with a host mount of its hierarchy
/// below /sys/fs/cgroup.
pub(crate) fn hierarchies(entries: &[CgroupEntry], mounts: &[MountInfo]) -> Vec<Hierarchy> {
    let cg_root = Path::new(CGROUP_ROOT);
    let mut out = Vec::new();
    for e in entries {
        let found = mounts.iter().find(|m| {
            m.mount_point.parent() == Some(cg_root)
                && if e.controllers.is_empty() {
                    m.fstype == "cgroup2"
                } else {
                    m.fstype == "cgroup" && e.controllers.split(',').all(|c| m.has_super_option(c))
                }
        });
        let Some(m) = found else { continue };
        let Some(name) = m.mount_point.file_name() else {
            continue;
        };
        // The mount may itself expose a sub-tree (m.root): the process's
        // directory is its path relative to that root.
        let rel = e.path.strip_prefix(&m.root).unwrap_or(&e.path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        out.push(Hierarchy {
            name: name.to_string_lossy().into_owned(),
            v1_data: (!e.controllers.is_empty()).then(|| e.controllers.clone()),
            host_dir: m.mount_point.join(rel),
        });
    }
    out
}

fn has_cgroupns(ctx: &RootfsContext) -> bool {
    ctx.spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup))
}

fn read_proc_cgroup() -> Result<Vec<CgroupEntry>> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    Ok(parse_proc_cgroup(&text))
}

pub(crate) fn mount_cgroup(ctx: &RootfsContext, dest: &Path, opts: &MountOptions) -> Result<()> {
    let (target, _) = mounts::mount_target(ctx, dest, None, "cgroup", Last::Dir)?;
    mounts::check_proc_target(ctx, &target, dest, None, "cgroup")?;
    let unified = statfs(CGROUP_ROOT)
        .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .with_context(|| format!("statfs {}", CGROUP_ROOT))?;
    if unified {
        mount_v2(ctx, dest, opts, target)
    } else {
        mount_v1(ctx, dest, opts, target)
    }
}

/// `target`: the checked mount target (see `mounts::mount_target`).
fn mount_v2(ctx: &RootfsContext, dest: &Path, opts: &MountOptions, target: OwnedFd) -> Result<()> {
    let flags = opts.flags | default_flags();
    match sys_mount(
        Some(Path::new("cgroup2")),
        &fd_path(&target),
        Some("cgroup2"),
        flags,
        Some(&opts.data_string()),
    ) {
        Ok(()) => {
            drop(target);
            mounts::apply_propagation(ctx.rootfs, dest, &opts.propagation)
        }
        Err(Errno::EPERM) | Err(Errno::EBUSY) => {
            drop(target);
            let own = read_proc_cgroup()?
                .into_iter()
                .find(|e| e.controllers.is_empty())
                .ok_or_else(|| anyhow!("no cgroup v2 entry in /proc/self/cgroup"))?;
            let rel = own
                .path
                .strip_prefix("/")
                .unwrap_or(&own.path)
                .to_path_buf();
            let mut bind_opts = opts.clone();
            bind_opts.flags |= MsFlags::MS_BIND | MsFlags::MS_REC | default_flags();
            mounts::bind(
                ctx,
                dest,
                &Path::new(CGROUP_ROOT).join(rel),
                None,
                &bind_opts,
            )
        }
        Err(e) => Err(mount_err("cgroup2", dest, ctx.rootfs, e)),
    }
}

fn mount_v1(ctx: &RootfsContext, dest: &Path, opts: &MountOptions, target: OwnedFd) -> Result<()> {
    let hier = hierarchies(&read_proc_cgroup()?, &mountinfo::read_self()?);
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);

    sys_mount(
        Some(Path::new("tmpfs")),
        &fd_path(&target),
        Some("tmpfs"),
        default_flags(),
        Some("mode=755"),
    )
    .map_err(|e| mount_err("tmpfs (cgroup root)", dest, ctx.rootfs, e))?;
    drop(target);
    mounts::apply_propagation(ctx.rootfs, dest, &opts.propagation)?;

    // The tmpfs was just made and nothing else can reach it yet: its
    // entries are created relative to one descriptor of its root, with no
    // symlink to fear, instead of resolving every path from the rootfs.
    let root = paths::open_in_root(ctx.rootfs, dest)?;
    let cgroupns = has_cgroupns(ctx);
    for h in &hier {
        let sub = dest.join(&h.name);
        let dir = subdir(&root, &h.name)
            .with_context(|| format!("create {:?} (rootfs {})", sub, ctx.rootfs.display()))?;
        if cgroupns {
            let mut flags = default_flags();
            if ro {
                flags |= MsFlags::MS_RDONLY;
            }
            let (fstype, source, data) = match &h.v1_data {
                Some(d) => (
                    "cgroup",
                    d.strip_prefix("name=").unwrap_or("cgroup"),
                    d.as_str(),
                ),
                None => ("cgroup2", "cgroup2", ""),
            };
            sys_mount(
                Some(Path::new(source)),
                &fd_path(&dir),
                Some(fstype),
                flags,
                Some(data),
            )
            .map_err(|e| mount_err(&format!("cgroup {}", h.name), &sub, ctx.rootfs, e))?;
        } else {
            sys_mount(
                Some(&h.host_dir),
                &fd_path(&dir),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(|e| mount_err(&h.host_dir.to_string_lossy(), &sub, ctx.rootfs, e))?;
        }
        // cpu,cpuacct is also reachable as cpu and cpuacct.
        if let Some(data) = h.v1_data.as_deref().filter(|_| h.name.contains(',')) {
            for ctrl in data.split(',').filter(|c| !c.starts_with("name=")) {
                match symlinkat(h.name.as_str(), Some(root.as_raw_fd()), ctrl) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => bail!(
                        "symlink {:?} -> {:?} in {:?} (rootfs {}): {}",
                        ctrl,
                        h.name,
                        dest,
                        ctx.rootfs.display(),
                        e.desc()
                    ),
                }
            }
        }
    }
    seal(ctx, dest, &root, &hier, opts, ro)
}

/// mkdir + O_PATH open of `name` in the fresh cgroup tmpfs.
fn subdir(root: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(
        Some(root.as_raw_fd()),
        name,
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = nix::fcntl::openat(
        Some(root.as_raw_fd()),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the tmpfs and every hierarchy below it the cgroup mount's flags
/// (nosuid, nodev, noexec, and ro when asked) with one recursive
/// mount_setattr(2); kernels without it get a remount per mount.
fn seal(
    ctx: &RootfsContext,
    dest: &Path,
    root: &OwnedFd,
    hier: &[Hierarchy],
    opts: &MountOptions,
    ro: bool,
) -> Result<()> {
    let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    if ro {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    match mounts::set_tree_attrs(root, set, 0) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOSYS) => {}
        Err(e) => {
            return Err(anyhow!(
                "set cgroup mount flags on {:?} (rootfs {}): {}",
                dest,
                ctx.rootfs.display(),
                e.desc()
            ))
        }
    }
    if !has_cgroupns(ctx) {
        for h in hier {
            let flags = options::remount_flags(opts.flags | default_flags());
            mounts::remount_bind(ctx.rootfs, &dest.join(&h.name), flags)?;
        }
    }
    if ro {
        sys_mount(
            None,
            &fd_path(root),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | default_flags(),
            Some("mode=755"),
        )
        .map_err(|e| {
            mount_err(
                "tmpfs (cgroup root, read-only remount)",
                dest,
                ctx.rootfs,
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host_hierarchies() {
        let cg = parse_proc_cgroup("9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/x\n0::/u\n");
        let mi = mountinfo::parse(
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let h = hierarchies(&cg, &mi);
        let names: Vec<_> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["systemd", "memory", "cpu,cpuacct", "unified"]);
        assert_eq!(h[1].host_dir, PathBuf::from("/sys/fs/cgroup/memory/a/b"));
        assert_eq!(h[2].v1_data.as_deref(), Some("cpu,cpuacct"));
        assert_eq!(h[3].v1_data, None);
        assert_eq!(h[3].host_dir, PathBuf::from("/sys/fs/cgroup/unified/u"));
    }
}
