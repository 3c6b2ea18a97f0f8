//! Tests that really mount. Each container test forks a child that unshares
//! its own mount (and pid, cgroup, ipc) namespaces and forks again so the
//! grandchild is pid 1 there; mounts die with those namespaces, so the host
//! is never touched. The grandchild writes a report into the temp dir and
//! exits (never returning into the test harness); the parent asserts on the
//! exit status and report, then checks the host for leftovers.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{major, minor};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};
use oci_spec::runtime::{
    LinuxDeviceBuilder, LinuxDeviceType, LinuxNamespaceType, Mount, MountBuilder, Spec,
};

use super::mountinfo::{self, MountInfo};
use super::paths::{self, Last, Missing};
use super::{enter, finalize, open_in_root, prepare, resolve_in_root, RootfsContext};

/// A temp dir removed on drop; anything still mounted below it (there
/// should be nothing: mounts live in the child's namespace) is detached
/// first so removal can never recurse into a mounted host directory.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-rootfs-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&p).expect("create temp dir");
        // canonical: the rootfs handed to the runtime is canonical
        TempDir(fs::canonicalize(&p).expect("canonicalize temp dir"))
    }

    fn mounts_below(&self) -> Vec<PathBuf> {
        mountinfo::read_self()
            .expect("read host mountinfo")
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|mp| mp.starts_with(&self.0))
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        for mp in self.mounts_below().into_iter().rev() {
            let _ = umount2(&mp, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A busybox rootfs like an image would have: /bin/busybox plus applets.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "opt"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir in rootfs");
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "ls", "test", "touch", "stat"] {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(rootfs.join("etc/hostname"), "berth\n").expect("write hostname");
    rootfs
}

fn mount(dest: &str, typ: Option<&str>, source: &Path, options: &[&str]) -> Mount {
    let mut b = MountBuilder::default()
        .destination(dest)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    if let Some(t) = typ {
        b = b.typ(t);
    }
    b.build().expect("valid mount")
}

/// Collects check results inside the container and writes them out.
struct Checks {
    out: File,
    failures: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Display) {
        if !ok {
            self.failures += 1;
        }
        let _ = writeln!(self.out, "{} {}", if ok { "ok  " } else { "FAIL" }, what);
    }
}

/// How the container under test is isolated.
#[derive(Default)]
struct Isolation {
    /// Unshare a cgroup namespace too.
    cgroupns: bool,
    /// Run in a new user namespace (identity-mapped). The path gets a
    /// nosuid,nodev tmpfs first, whose flags are then locked inside.
    userns_locked_src: Option<PathBuf>,
}

/// Runs `body` as pid 1 of fresh mount/pid/ipc (and cgroup/user when
/// asked) namespaces. Returns the exit code (0 = all checks passed) and the
/// report.
fn run_isolated(
    report: &Path,
    iso: Isolation,
    body: impl FnOnce(&mut Checks) -> anyhow::Result<()>,
) -> (i32, String) {
    let out = File::create(report).expect("create report");
    // SAFETY: the child only does namespace/mount syscalls and file writes
    // before leaving through _exit; it never returns into the harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let mut checks = Checks { out, failures: 0 };
                match &iso.userns_locked_src {
                    None => container(&mut checks, iso.cgroupns, body),
                    Some(src) => via_userns(&mut checks, src, iso.cgroupns, body),
                }
            }))
            .unwrap_or(6);
            // SAFETY: leave the forked copy of the test process immediately.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).expect("waitpid");
            let code = match status {
                WaitStatus::Exited(_, c) => c,
                other => panic!("test child ended with {:?}", other),
            };
            (code, fs::read_to_string(report).unwrap_or_default())
        }
    }
}

/// Unshares the container namespaces and runs `body` in a child that is
/// pid 1 of the new pid namespace; returns that child's exit code.
fn container(
    checks: &mut Checks,
    cgroupns: bool,
    body: impl FnOnce(&mut Checks) -> anyhow::Result<()>,
) -> i32 {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC;
    if cgroupns {
        flags |= CloneFlags::CLONE_NEWCGROUP;
    }
    if let Err(e) = unshare(flags) {
        checks.check(false, format!("unshare: {}", e));
        return 3;
    }
    // SAFETY: see run_isolated.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            if let Err(e) = body(checks) {
                checks.check(false, format!("error: {:#}", e));
            }
            i32::from(checks.failures > 0)
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => c,
            other => {
                checks.check(false, format!("container init ended with {:?}", other));
                4
            }
        },
        Err(e) => {
            checks.check(false, format!("fork: {}", e));
            5
        }
    }
}

/// Like [`container`] but inside a new user namespace whose id maps are
/// written from outside (only a process privileged in the parent
/// namespace may map every id).
fn via_userns(
    checks: &mut Checks,
    locked_src: &Path,
    cgroupns: bool,
    body: impl FnOnce(&mut Checks) -> anyhow::Result<()>,
) -> i32 {
    let setup = || -> anyhow::Result<(File, File, File, File)> {
        unshare(CloneFlags::CLONE_NEWNS)?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )?;
        nix::mount::mount(
            Some("tmpfs"),
            locked_src,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=64k"),
        )?;
        fs::write(locked_src.join("inside"), "locked")?;
        let (r1, w1) = pipe()?;
        let (r2, w2) = pipe()?;
        Ok((r1.into(), w1.into(), r2.into(), w2.into()))
    };
    let (mut ready_r, mut ready_w, mut go_r, mut go_w) = match setup() {
        Ok(p) => p,
        Err(e) => {
            checks.check(false, format!("userns setup: {:#}", e));
            return 7;
        }
    };
    let mut byte = [0u8; 1];
    // SAFETY: see run_isolated.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((ready_r, go_w));
            let entered = unshare(CloneFlags::CLONE_NEWUSER)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(ready_w.write_all(b"u")?))
                .and_then(|()| Ok(go_r.read_exact(&mut byte)?));
            if let Err(e) = entered {
                checks.check(false, format!("enter user namespace: {:#}", e));
                return 8;
            }
            container(checks, cgroupns, body)
        }
        Ok(ForkResult::Parent { child }) => {
            drop((ready_w, go_r));
            let mapped = ready_r
                .read_exact(&mut byte)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    for map in ["uid_map", "gid_map"] {
                        fs::write(format!("/proc/{}/{}", child, map), "0 0 4294967295\n")?;
                    }
                    Ok(go_w.write_all(b"g")?)
                });
            if let Err(e) = mapped {
                checks.check(false, format!("write id maps: {:#}", e));
            }
            drop(go_w);
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => c,
                other => {
                    checks.check(false, format!("userns child ended with {:?}", other));
                    9
                }
            }
        }
        Err(e) => {
            checks.check(false, format!("fork: {}", e));
            5
        }
    }
}

/// Topmost mount at `mp` in the current namespace.
fn mount_at<'a>(ms: &'a [MountInfo], mp: &str) -> Option<&'a MountInfo> {
    ms.iter().rev().find(|m| m.mount_point == Path::new(mp))
}

fn has_opt(ms: &[MountInfo], mp: &str, opt: &str) -> bool {
    mount_at(ms, mp).is_some_and(|m| m.has_mount_option(opt) || m.has_super_option(opt))
}

fn is_char_dev(p: &str, maj: u64, min: u64) -> bool {
    fs::metadata(p).is_ok_and(|md| {
        md.file_type().is_char_device() && major(md.rdev()) == maj && minor(md.rdev()) == min
    })
}

fn link_is(p: &str, target: &str) -> bool {
    fs::read_link(p).is_ok_and(|t| t == Path::new(target))
}

fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The context most tests use: pivot_root, no user namespace, no bind
/// sources opened by the host (leaked: a test's context lives as long as it).
fn plain_ctx<'a>(spec: &'a Spec, rootfs: &'a Path, bundle: &'a Path) -> RootfsContext<'a> {
    RootfsContext {
        spec,
        rootfs,
        bundle,
        no_pivot: false,
        in_user_ns: false,
        bind_sources: Box::leak(Box::default()),
    }
}

#[test]
fn default_spec_container_is_set_up_and_isolated() {
    let tmp = TempDir::new("full");
    let bundle = tmp.0.join("bundle");
    fs::create_dir_all(bundle.join("data")).expect("mkdir data");
    fs::write(bundle.join("data/marker"), "from-bundle").expect("write marker");
    fs::write(bundle.join("file.txt"), "bound-file").expect("write file");
    let rootfs = busybox_rootfs(&tmp.0);
    // An image-planted symlink pointing at the host's /etc.
    symlink("/etc", rootfs.join("evil")).expect("evil symlink");
    fs::write(rootfs.join("opt/seed"), "seed").expect("write seed");
    fs::create_dir_all(rootfs.join("secret")).expect("mkdir secret");
    fs::write(rootfs.join("secret/key"), "hidden").expect("write secret");
    let escape = format!("berth-escape-{}", std::process::id());

    let mut spec = Spec::default();
    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    mounts.push(mount(
        &format!("/evil/{}", escape),
        Some("bind"),
        Path::new("data"),
        &["rbind", "ro", "nosuid"],
    ));
    mounts.push(mount(
        "/etc/bound",
        None,
        Path::new("file.txt"),
        &["bind", "ro"],
    ));
    mounts.push(mount(
        "/opt",
        Some("tmpfs"),
        Path::new("tmpfs"),
        &["tmpcopyup", "size=1m", "mode=750", "nodev"],
    ));
    // Recursive options: a tree of two tmpfs, then a recursive ro view of it
    // (the source is the rootfs's host path, where the tree is mounted).
    let outer = rootfs.join("mnt/outer");
    mounts.push(mount("/mnt/outer", Some("tmpfs"), Path::new("tmpfs"), &[]));
    mounts.push(mount(
        "/mnt/outer/inner",
        Some("tmpfs"),
        Path::new("tmpfs"),
        &[],
    ));
    mounts.push(mount(
        "/mnt/view",
        None,
        &outer,
        &["rbind", "rro", "rnosuid"],
    ));
    let fuse = LinuxDeviceBuilder::default()
        .path("/dev/fuse")
        .typ(LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .file_mode(0o600u32)
        .uid(1000u32)
        .gid(1001u32)
        .build()
        .expect("device");
    if let Some(l) = spec.linux_mut().as_mut() {
        l.set_devices(Some(vec![fuse]));
        // This kernel may lack some default masked paths (/proc/kcore):
        // add ones that surely exist, plus a missing one to be ignored.
        for p in ["/etc/hostname", "/secret", "/does/not/exist"] {
            l.masked_paths_mut()
                .get_or_insert_with(Vec::new)
                .push(p.to_string());
        }
        l.readonly_paths_mut()
            .get_or_insert_with(Vec::new)
            .push("/proc/uptime".to_string());
    }
    let host_kcore = Path::new("/proc/kcore").exists();
    let cgroup2 = host_is_cgroup2();

    let (code, report) = run_isolated(
        &tmp.0.join("report"),
        Isolation {
            cgroupns: true,
            ..Default::default()
        },
        |c| {
            let ctx = plain_ctx(&spec, &rootfs, &bundle);
            prepare(&ctx, &mut || Ok(()))?;
            enter(&ctx)?;
            finalize(&ctx)?;
            let ms = mountinfo::read_self()?;

            c.check(has_opt(&ms, "/", "ro"), "root.readonly: / is ro");
            c.check(
                !Path::new(&bundle).exists(),
                "host tree is gone after pivot_root",
            );
            c.check(
                mount_at(&ms, "/proc").is_some_and(|m| m.fstype == "proc"),
                "proc mounted at /proc",
            );
            c.check(
                Path::new("/proc/1").exists() && std::process::id() == 1,
                "proc of the new pid ns",
            );
            c.check(
                has_opt(&ms, "/proc/sys", "ro"),
                "readonlyPaths: /proc/sys is ro",
            );
            c.check(
                has_opt(&ms, "/proc/uptime", "ro"),
                "readonlyPaths: file /proc/uptime is ro",
            );
            if host_kcore {
                c.check(
                    is_char_dev("/proc/kcore", 1, 3),
                    "maskedPaths: /proc/kcore is /dev/null",
                );
            }
            c.check(
                is_char_dev("/proc/keys", 1, 3),
                "maskedPaths: file /proc/keys is /dev/null",
            );
            c.check(
                is_char_dev("/etc/hostname", 1, 3),
                "maskedPaths: rootfs file masked",
            );
            c.check(
                mount_at(&ms, "/secret")
                    .is_some_and(|m| m.fstype == "tmpfs" && m.has_mount_option("ro"))
                    && fs::read_dir("/secret").is_ok_and(|mut d| d.next().is_none()),
                "maskedPaths: rootfs dir hidden by an empty ro tmpfs",
            );
            c.check(
                fs::read_to_string("/proc/timer_list").map_or(true, |s| s.is_empty()),
                "maskedPaths: /proc/timer_list reads empty",
            );
            if Path::new("/sys/firmware").exists() {
                c.check(
                    mount_at(&ms, "/sys/firmware")
                        .is_some_and(|m| m.fstype == "tmpfs" && m.has_mount_option("ro")),
                    "maskedPaths: /sys/firmware is a ro tmpfs",
                );
            }
            c.check(
                has_opt(&ms, "/dev", "size=65536k"),
                "/dev tmpfs size honoured",
            );
            c.check(has_opt(&ms, "/dev", "nosuid"), "/dev tmpfs nosuid");
            c.check(
                fs::metadata("/dev/shm").is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o1777),
                "/dev/shm mode=1777",
            );
            c.check(has_opt(&ms, "/dev/shm", "noexec"), "/dev/shm noexec");
            c.check(
                mount_at(&ms, "/dev/pts")
                    .is_some_and(|m| m.fstype == "devpts" && m.has_super_option("ptmxmode=666")),
                "devpts with ptmxmode=0666",
            );
            c.check(
                mount_at(&ms, "/dev/mqueue").is_some_and(|m| m.fstype == "mqueue"),
                "mqueue mounted",
            );
            c.check(
                mount_at(&ms, "/sys")
                    .is_some_and(|m| m.fstype == "sysfs" && m.has_mount_option("ro")),
                "sysfs ro",
            );
            if cgroup2 {
                c.check(
                    mount_at(&ms, "/sys/fs/cgroup").is_some_and(|m| m.fstype == "cgroup2"),
                    "cgroup2 at /sys/fs/cgroup",
                );
            } else {
                c.check(
                    mount_at(&ms, "/sys/fs/cgroup")
                        .is_some_and(|m| m.fstype == "tmpfs" && m.has_mount_option("ro")),
                    "cgroup v1: ro tmpfs at /sys/fs/cgroup",
                );
                c.check(
                    mount_at(&ms, "/sys/fs/cgroup/memory").is_some_and(|m| {
                        m.fstype == "cgroup" && m.has_mount_option("ro") && m.root == Path::new("/")
                    }),
                    "cgroup v1: memory hierarchy rooted at the namespace's cgroup",
                );
                c.check(
                    fs::read_to_string("/proc/self/cgroup")
                        .is_ok_and(|s| s.lines().all(|l| l.ends_with(":/"))),
                    "cgroup namespace root",
                );
            }
            for (dev, maj, min) in [
                ("null", 1, 3),
                ("zero", 1, 5),
                ("full", 1, 7),
                ("random", 1, 8),
                ("urandom", 1, 9),
                ("tty", 5, 0),
            ] {
                let p = format!("/dev/{}", dev);
                c.check(
                    is_char_dev(&p, maj, min),
                    format!("{} is char {}:{}", p, maj, min),
                );
                c.check(
                    fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o666),
                    format!("{} mode 0666", p),
                );
            }
            c.check(
                is_char_dev("/dev/fuse", 10, 229)
                    && fs::metadata("/dev/fuse").is_ok_and(|m| {
                        m.mode() & 0o7777 == 0o600 && m.uid() == 1000 && m.gid() == 1001
                    }),
                "linux.devices: /dev/fuse 10:229 0600 1000:1001",
            );
            c.check(link_is("/dev/fd", "/proc/self/fd"), "/dev/fd symlink");
            c.check(
                link_is("/dev/stdin", "/proc/self/fd/0"),
                "/dev/stdin symlink",
            );
            c.check(
                link_is("/dev/stdout", "/proc/self/fd/1"),
                "/dev/stdout symlink",
            );
            c.check(
                link_is("/dev/stderr", "/proc/self/fd/2"),
                "/dev/stderr symlink",
            );
            c.check(
                link_is("/dev/core", "/proc/kcore") == host_kcore,
                "/dev/core only when the host has /proc/kcore",
            );
            c.check(link_is("/dev/ptmx", "pts/ptmx"), "/dev/ptmx -> pts/ptmx");

            let esc = format!("/etc/{}", escape);
            c.check(
                fs::read_to_string(format!("{}/marker", esc)).is_ok_and(|s| s == "from-bundle"),
                "symlinked mount target resolved inside the rootfs",
            );
            c.check(
                has_opt(&ms, &esc, "ro") && has_opt(&ms, &esc, "nosuid"),
                "bind mount ro,nosuid",
            );
            c.check(
                fs::read_to_string("/etc/bound").is_ok_and(|s| s == "bound-file")
                    && has_opt(&ms, "/etc/bound", "ro"),
                "file bind mount (relative source) ro",
            );
            c.check(
                fs::read_to_string("/opt/seed").is_ok_and(|s| s == "seed"),
                "tmpcopyup copied the covered contents",
            );
            c.check(
                has_opt(&ms, "/opt", "size=1024k")
                    && has_opt(&ms, "/opt", "mode=750")
                    && has_opt(&ms, "/opt", "nodev"),
                "tmpfs size/mode/nodev honoured",
            );
            c.check(fs::write("/written", "x").is_err(), "root is not writable");
            for mp in ["/mnt/view", "/mnt/view/inner"] {
                c.check(
                    has_opt(&ms, mp, "ro") && has_opt(&ms, mp, "nosuid"),
                    format!("rro,rnosuid reach {}", mp),
                );
            }
            c.check(
                !has_opt(&ms, "/mnt/outer/inner", "ro")
                    && fs::write("/mnt/outer/inner/f", "x").is_ok(),
                "recursive options leave the source tree writable",
            );
            let status = Command::new("/bin/busybox")
                .args([
                    "sh",
                    "-c",
                    "test -c /dev/null && test -L /dev/fd && ls /bin >/dev/null",
                ])
                .status();
            c.check(
                status.is_ok_and(|s| s.success()),
                "busybox sh runs in the container",
            );
            Ok(())
        },
    );
    assert_eq!(code, 0, "container checks failed:\n{}", report);
    assert!(!report.contains("FAIL"), "{}", report);
    assert!(
        !Path::new("/etc").join(&escape).exists(),
        "mount target escaped the rootfs onto the host"
    );
    assert!(
        rootfs.join("etc").join(&escape).is_dir(),
        "target created inside the rootfs"
    );
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn no_pivot_without_cgroupns_binds_own_cgroups() {
    let tmp = TempDir::new("nopivot");
    let bundle = tmp.0.join("bundle");
    fs::create_dir_all(&bundle).expect("mkdir bundle");
    let rootfs = busybox_rootfs(&tmp.0);
    let mut spec = Spec::default();
    if let Some(root) = spec.root_mut().as_mut() {
        root.set_readonly(Some(false));
    }
    if let Some(l) = spec.linux_mut().as_mut() {
        l.set_rootfs_propagation(Some("private".to_string()));
        if let Some(ns) = l.namespaces_mut().as_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
    }
    // The memory cgroup path of this process, as the container should see it.
    let host_memory = fs::read_to_string("/proc/self/cgroup")
        .expect("read cgroup")
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    let cgroup2 = host_is_cgroup2();

    let (code, report) = run_isolated(&tmp.0.join("report"), Isolation::default(), |c| {
        let ctx = RootfsContext {
            no_pivot: true,
            ..plain_ctx(&spec, &rootfs, &bundle)
        };
        prepare(&ctx, &mut || Ok(()))?;
        // A handle on the host root, to look behind the chroot afterwards.
        let host_root = File::open("/")?;
        enter(&ctx)?;
        finalize(&ctx)?;
        let ms = mountinfo::read_self()?;
        c.check(
            Path::new("/bin/busybox").exists(),
            "chrooted into the rootfs",
        );
        let behind =
            |p: &str| PathBuf::from(format!("/proc/self/fd/{}/{}", host_root.as_raw_fd(), p));
        c.check(
            behind("etc").is_dir(),
            "host root still reachable through the fd",
        );
        c.check(
            !behind("proc/self").exists() && !behind("sys/kernel").exists(),
            "host proc and sysfs detached before chroot",
        );
        c.check(fs::write("/written", "x").is_ok(), "root stays writable");
        c.check(
            mount_at(&ms, "/").is_some_and(|m| {
                !m.optional
                    .iter()
                    .any(|o| o.starts_with("master:") || o.starts_with("shared:"))
            }),
            "rootfsPropagation private applied to /",
        );
        if let (false, Some(p)) = (cgroup2, &host_memory) {
            c.check(
                mount_at(&ms, "/sys/fs/cgroup/memory")
                    .is_some_and(|m| m.root == Path::new(p) && m.has_mount_option("ro")),
                format!("memory cgroup bound from the host at {}", p),
            );
        }
        c.check(is_char_dev("/dev/null", 1, 3), "/dev/null without pivot");
        Ok(())
    });
    assert_eq!(code, 0, "container checks failed:\n{}", report);
    assert_eq!(
        fs::read_to_string(rootfs.join("written")).ok().as_deref(),
        Some("x")
    );
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn user_namespace_binds_devices_and_sysfs_and_keeps_locked_flags() {
    let tmp = TempDir::new("userns");
    let bundle = tmp.0.join("bundle");
    let locked = tmp.0.join("locked");
    fs::create_dir_all(&bundle).expect("mkdir bundle");
    fs::create_dir_all(&locked).expect("mkdir locked");
    let rootfs = busybox_rootfs(&tmp.0);
    let mut spec = Spec::default();
    spec.mounts_mut().get_or_insert_with(Vec::new).push(mount(
        "/locked",
        Some("bind"),
        &locked,
        &["bind", "ro"],
    ));
    if let Some(l) = spec.linux_mut().as_mut() {
        l.masked_paths_mut()
            .get_or_insert_with(Vec::new)
            .push("/etc/hostname".to_string());
    }
    let iso = Isolation {
        cgroupns: true,
        userns_locked_src: Some(locked.clone()),
    };
    let (code, report) = run_isolated(&tmp.0.join("report"), iso, |c| {
        let ctx = RootfsContext {
            in_user_ns: true,
            ..plain_ctx(&spec, &rootfs, &bundle)
        };
        prepare(&ctx, &mut || Ok(()))?;
        enter(&ctx)?;
        finalize(&ctx)?;
        let ms = mountinfo::read_self()?;
        c.check(
            fs::read_to_string("/proc/self/uid_map")
                .is_ok_and(|m| m.split_whitespace().eq(["0", "0", "4294967295"])),
            "running in the identity-mapped user namespace",
        );
        for (dev, maj, min) in [("null", 1, 3), ("zero", 1, 5), ("tty", 5, 0)] {
            let p = format!("/dev/{}", dev);
            c.check(
                is_char_dev(&p, maj, min) && mount_at(&ms, &p).is_some(),
                format!("{} bind-mounted from the host", p),
            );
        }
        c.check(
            mount_at(&ms, "/sys").is_some_and(|m| m.fstype == "sysfs" && m.has_mount_option("ro")),
            "sysfs: recursive bind of /sys, ro",
        );
        c.check(
            has_opt(&ms, "/locked", "ro")
                && has_opt(&ms, "/locked", "nosuid")
                && has_opt(&ms, "/locked", "nodev"),
            "ro bind keeps the source's locked nosuid,nodev",
        );
        c.check(
            fs::read_to_string("/locked/inside").is_ok_and(|s| s == "locked"),
            "locked source content visible",
        );
        c.check(
            is_char_dev("/etc/hostname", 1, 3),
            "masked with the bound /dev/null",
        );
        c.check(has_opt(&ms, "/", "ro"), "root read-only");
        c.check(has_opt(&ms, "/proc/sys", "ro"), "/proc/sys read-only");
        Ok(())
    });
    assert_eq!(code, 0, "container checks failed:\n{}", report);
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn without_dev_mount_devices_go_to_rootfs_dev_and_missing_paths_are_skipped() {
    let tmp = TempDir::new("nodev");
    let rootfs = busybox_rootfs(&tmp.0);
    let mut spec = Spec::default();
    spec.set_mounts(Some(Vec::new()));
    let (code, report) = run_isolated(&tmp.0.join("report"), Isolation::default(), |c| {
        let ctx = plain_ctx(&spec, &rootfs, &tmp.0);
        prepare(&ctx, &mut || Ok(()))?;
        enter(&ctx)?;
        // No /proc: every default masked/readonly path is missing.
        finalize(&ctx)?;
        c.check(is_char_dev("/dev/null", 1, 3), "/dev/null created");
        c.check(
            fs::symlink_metadata("/dev/ptmx").is_err(),
            "no /dev/ptmx without devpts",
        );
        c.check(link_is("/dev/fd", "/proc/self/fd"), "/dev/fd symlink");
        Ok(())
    });
    assert_eq!(code, 0, "container checks failed:\n{}", report);
    let md = fs::metadata(rootfs.join("dev/null")).expect("rootfs/dev/null");
    assert!(md.file_type().is_char_device() && md.rdev() == nix::sys::stat::makedev(1, 3));
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn failed_mount_names_type_target_and_rootfs() {
    let tmp = TempDir::new("err");
    let rootfs = busybox_rootfs(&tmp.0);
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![mount(
        "/x",
        Some("nosuchfs"),
        Path::new("none"),
        &[],
    )]));
    let (code, report) = run_isolated(&tmp.0.join("report"), Isolation::default(), |_| {
        let ctx = plain_ctx(&spec, &rootfs, &tmp.0);
        prepare(&ctx, &mut || Ok(()))
    });
    assert_eq!(code, 1, "{}", report);
    let want = format!(
        "mount \"nosuchfs\" on \"/x\" (rootfs {}): No such device",
        rootfs.display()
    );
    assert!(
        report.contains(&want),
        "report {:?} lacks {:?}",
        report,
        want
    );
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn proc_is_never_mounted_through_a_symlink() {
    let tmp = TempDir::new("procsym");
    let rootfs = busybox_rootfs(&tmp.0);
    fs::remove_dir(rootfs.join("proc")).expect("rmdir proc");
    symlink("/etc", rootfs.join("proc")).expect("proc symlink");
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![mount(
        "/proc",
        Some("proc"),
        Path::new("proc"),
        &[],
    )]));
    let (code, report) = run_isolated(&tmp.0.join("report"), Isolation::default(), |_| {
        let ctx = plain_ctx(&spec, &rootfs, &tmp.0);
        prepare(&ctx, &mut || Ok(()))
    });
    assert_eq!(code, 1, "{}", report);
    assert!(
        report.contains("must be mounted on an ordinary directory"),
        "{}",
        report
    );
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}

#[test]
fn proc_submounts_are_refused() {
    use super::mounts::check_proc_mount;
    assert!(check_proc_mount(Path::new("/proc"), None, "proc").is_ok());
    assert!(check_proc_mount(Path::new("/proc/cpuinfo"), None, "bind").is_ok());
    assert!(check_proc_mount(Path::new("/sys/x"), None, "tmpfs").is_ok());
    let e = check_proc_mount(Path::new("/proc/sys/kernel"), None, "tmpfs").expect_err("refused");
    assert!(e.to_string().contains("inside /proc"), "{}", e);
    let e = check_proc_mount(Path::new("/proc"), None, "tmpfs").expect_err("refused");
    assert!(e.to_string().contains("not of type proc"), "{}", e);
    assert!(check_proc_mount(Path::new("/proc"), Some(Path::new("/proc")), "bind").is_ok());
}

#[test]
fn clean_is_lexical_and_absolute() {
    assert_eq!(
        paths::clean(Path::new("a/../../b//c/./")),
        PathBuf::from("/b/c")
    );
    assert_eq!(paths::clean(Path::new("/../..")), PathBuf::from("/"));
    assert_eq!(
        paths::clean(Path::new("/dev/pts/")),
        PathBuf::from("/dev/pts")
    );
}

/// root/{etc/passwd, abs -> /etc, rel -> ../../../etc, loop -> loop,
/// dangling -> /made/here, chain -> rel/passwd}
fn symlink_maze(root: &Path) {
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/passwd"), "inside").expect("write");
    symlink("/etc", root.join("abs")).expect("symlink");
    symlink("../../../etc", root.join("rel")).expect("symlink");
    symlink("loop", root.join("loop")).expect("symlink");
    symlink("/made/here", root.join("dangling")).expect("symlink");
    symlink("rel/passwd", root.join("chain")).expect("symlink");
}

#[test]
fn resolution_never_leaves_the_root() {
    let tmp = TempDir::new("paths");
    let root = tmp.0.clone();
    symlink_maze(&root);
    for p in [
        "/abs/passwd",
        "rel/passwd",
        "/chain",
        "../../abs/../etc/passwd",
    ] {
        assert_eq!(
            resolve_in_root(&root, Path::new(p)).expect("resolve"),
            root.join("etc/passwd"),
            "{}",
            p
        );
        for missing in [Missing::Fail, Missing::Lexical] {
            let r = paths::walk(&root, Path::new(p), missing).expect("walk");
            assert_eq!(r.rel, PathBuf::from("etc/passwd"), "{}", p);
        }
        let fd = open_in_root(&root, Path::new(p)).expect("open");
        let real = fs::read_link(paths::fd_path(&fd)).expect("readlink fd");
        assert_eq!(real, root.join("etc/passwd"), "{}", p);
    }
    assert_eq!(
        resolve_in_root(&root, Path::new("/dangling/x")).expect("resolve"),
        root.join("made/here/x")
    );
    assert_eq!(
        resolve_in_root(&root, Path::new("/")).expect("resolve"),
        root
    );
    assert!(open_in_root(&root, Path::new("/loop")).is_err());
    assert!(paths::walk(&root, Path::new("/loop"), Missing::Fail).is_err());
    assert!(open_in_root(&root, Path::new("/abs/shadow")).is_err());

    let fd = paths::create_in_root(&root, Path::new("/dangling/sub"), Last::File).expect("create");
    assert!(root.join("made/here/sub").is_file());
    assert!(!Path::new("/made").exists(), "created outside the root");
    drop(fd);
    paths::create_in_root(&root, Path::new("/abs/newdir/deeper"), Last::Dir).expect("create dir");
    assert!(root.join("etc/newdir/deeper").is_dir());
}

/// `Lookup` (cached parents, openat2 fast path) finds exactly what the
/// component walk finds, symlinks and all, and fails where it fails.
#[test]
fn lookup_agrees_with_the_walk() {
    let tmp = TempDir::new("lookup");
    let root = tmp.0.clone();
    symlink_maze(&root);
    fs::create_dir_all(root.join("proc/sys")).expect("mkdir");
    symlink("/etc/passwd", root.join("proc/keys")).expect("symlink");
    symlink("../../etc", root.join("proc/up")).expect("symlink");
    symlink("/missing/../etc", root.join("via_missing")).expect("symlink");
    let mut lookup = super::lookup::Lookup::new(&root).expect("lookup");
    let real = |fd: &std::os::fd::OwnedFd| fs::read_link(paths::fd_path(fd)).expect("readlink fd");
    for p in [
        "/proc/sys",
        "/proc/keys",
        "/proc/up",
        "/proc/up/passwd",
        "/abs/passwd",
        "/rel/passwd",
        "/chain",
        "/etc/passwd",
        "/via_missing/passwd",
        "/proc/nothing",
        "/nothing/here",
        "/dangling/x",
        "/",
    ] {
        let p = Path::new(p);
        let want = paths::walk(&root, p, Missing::Lexical).expect("walk").fd;
        let got = lookup.open(p).expect("lookup");
        assert_eq!(got.as_ref().map(real), want.as_ref().map(real), "{:?}", p);
        assert!(
            got.as_ref().is_none_or(|fd| real(fd).starts_with(&root)),
            "{:?} left the root",
            p
        );
    }
    // Found through symlinks, inside the root.
    let keys = lookup.open(Path::new("/proc/keys")).expect("lookup");
    assert_eq!(keys.as_ref().map(real), Some(root.join("etc/passwd")));
    for p in ["/loop", "/etc/passwd/x"] {
        let p = Path::new(p);
        assert!(paths::walk(&root, p, Missing::Lexical).is_err(), "{:?}", p);
        assert!(lookup.open(p).is_err(), "{:?}", p);
    }
    // A fresh lookup from the root sees the same.
    let fresh = lookup
        .open_fresh(Path::new("/proc/up/passwd"))
        .expect("fresh");
    assert_eq!(real(&fresh), root.join("etc/passwd"));
}

/// A masked directory covers what the masks after it look for below it:
/// the parent `finalize` resolved before that mount is not reused.
#[test]
fn masks_below_a_masked_directory_see_the_mask() {
    let tmp = TempDir::new("maskorder");
    let rootfs = busybox_rootfs(&tmp.0);
    fs::create_dir_all(rootfs.join("opt/a")).expect("mkdir");
    for f in ["f", "g"] {
        fs::write(rootfs.join("opt/a").join(f), "secret").expect("write");
    }
    let mut spec = Spec::default();
    spec.set_mounts(Some(Vec::new()));
    if let Some(l) = spec.linux_mut() {
        l.set_masked_paths(Some(vec![
            "/opt/a/f".to_string(),
            "/opt/a".to_string(),
            "/opt/a/g".to_string(),
        ]));
        l.set_readonly_paths(Some(Vec::new()));
    }
    let (code, report) = run_isolated(&tmp.0.join("report"), Isolation::default(), |c| {
        let ctx = plain_ctx(&spec, &rootfs, &tmp.0);
        prepare(&ctx, &mut || Ok(()))?;
        enter(&ctx)?;
        finalize(&ctx)?;
        let entries = fs::read_dir("/opt/a")
            .map(|d| d.count())
            .unwrap_or(usize::MAX);
        c.check(entries == 0, "/opt/a is an empty mask");
        c.check(
            fs::symlink_metadata("/opt/a/g").is_err(),
            "/opt/a/g is hidden by the mask",
        );
        Ok(())
    });
    assert_eq!(code, 0, "container checks failed:\n{}", report);
    assert!(tmp.mounts_below().is_empty(), "mounts leaked to the host");
}
