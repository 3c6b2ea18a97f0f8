//! A private containerd 1.6 with its CRI plugin, configured like a Kubernetes node whose
//! RuntimeClass handlers run pods with berth: its own root, state, sockets, CNI config,
//! runtime state roots and pod cgroup parent under a temp dir. When the standard CNI
//! plugins are installed, pods that do not use the host network get a private bridge
//! network. The guard removes every task, stops the daemon and the shims it started,
//! unmounts what CRI mounted (sandbox shm, rootfs), removes the pod cgroups and the
//! bridge, even when the test fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::{unique, TempDir};

/// The containerd namespace CRI keeps its containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// One `containerd.runtimes.NAME` entry: a RuntimeClass handler.
pub struct RuntimeHandler {
    /// The handler name (RuntimeClass `handler`).
    pub name: String,
    /// Absolute path of the OCI runtime the shim runs (runc Options `BinaryName`).
    pub binary: PathBuf,
    /// Absolute path of a shim v2 binary (`runtime_path`); None uses the stock runc shim.
    pub shim: Option<PathBuf>,
}

/// Where Debian (containernetworking-plugins) and upstream install the CNI plugins.
const CNI_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// A bridge network for pods (CNI `bridge` + `host-local`), private to one node.
pub struct PodNetwork {
    /// Host bridge (also the pods' gateway), removed on drop.
    pub bridge: String,
    /// The pods' /24, e.g. "10.213.7.0/24".
    pub subnet: String,
    /// The bridge's address in `subnet`.
    pub gateway: String,
    plugin_dir: PathBuf,
}

impl PodNetwork {
    /// A network whose bridge name derives from our pid and whose 10.213.X.0/24 is not
    /// on the host yet, so parallel test processes do not collide; None when the CNI
    /// plugins are not installed.
    fn new() -> Option<PodNetwork> {
        let plugin_dir = CNI_PLUGIN_DIRS.iter().map(PathBuf::from).find(|d| {
            ["bridge", "host-local", "loopback"]
                .iter()
                .all(|p| d.join(p).is_file())
        })?;
        let pid = std::process::id();
        let octet = free_subnet_octet(pid)?;
        Some(PodNetwork {
            bridge: format!("bcri{}", pid % 100_000),
            subnet: format!("10.213.{octet}.0/24"),
            gateway: format!("10.213.{octet}.1"),
            plugin_dir,
        })
    }

    /// The conflist; host-local keeps its leases in `ipam_dir`, and there is no masquerade
    /// or port mapping so the host's firewall is left alone.
    fn conflist(&self, ipam_dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "berth-cri",
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                    "dataDir": ipam_dir,
                },
            }],
        })
        .to_string()
    }
}

/// X for a 10.213.X.0/24 no host interface has an address in, starting from our pid.
fn free_subnet_octet(pid: u32) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .ok()?;
    let addrs = String::from_utf8_lossy(&out.stdout);
    (0..250)
        .map(|i| (pid + i) % 250 + 1)
        .find(|x| !addrs.contains(&format!(" 10.213.{x}.")))
}

/// The `[plugins."io.containerd.grpc.v1.cri"]` table for `handlers`. `runtime_root` gives
/// each handler's runc Options `Root` (the shim appends the namespace); the first handler
/// is the default. CNI plugins come from `cni_bin_dir`, configs from `cni_conf_dir`.
pub fn cri_config(
    sandbox_image: &str,
    handlers: &[RuntimeHandler],
    runtime_root: impl Fn(&str) -> PathBuf,
    cni_bin_dir: &Path,
    cni_conf_dir: &Path,
) -> String {
    const CRI: &str = r#"plugins."io.containerd.grpc.v1.cri""#;
    let default = handlers.first().map(|h| h.name.as_str()).unwrap_or("runc");
    let mut s = format!(
        r#"[{CRI}]
  sandbox_image = "{sandbox_image}"
  disable_cgroup = false
  disable_apparmor = true
  restrict_oom_score_adj = {restrict_oom}
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{CRI}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
[{CRI}.containerd]
  snapshotter = "native"
  default_runtime_name = "{default}"
"#,
        cni_bin = cni_bin_dir.display(),
        cni_conf = cni_conf_dir.display(),
        restrict_oom = !has_cap_sys_resource(),
    );
    for h in handlers {
        let name = &h.name;
        // CRI decodes `options` as runc Options only for this runtime_type, so a custom
        // shim keeps it and is selected by runtime_path instead.
        let _ = writeln!(
            s,
            r#"[{CRI}.containerd.runtimes.{name}]
  runtime_type = "io.containerd.runc.v2""#
        );
        if let Some(shim) = &h.shim {
            let _ = writeln!(s, r#"  runtime_path = "{}""#, shim.display());
        }
        let _ = writeln!(
            s,
            r#"[{CRI}.containerd.runtimes.{name}.options]
  BinaryName = "{binary}"
  Root = "{root}"
  SystemdCgroup = false"#,
            binary = h.binary.display(),
            root = runtime_root(name).display(),
        );
    }
    s
}

/// Whether we may lower oom_score_adj. CRI gives sandboxes -998; without
/// CAP_SYS_RESOURCE the kernel refuses that (EACCES) to runc and berth alike, so CRI must
/// then clamp scores to its own (`restrict_oom_score_adj`, as for rootless nodes).
pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// containerd with CRI enabled, owned by one test.
pub struct CriNode {
    child: Option<Child>,
    /// containerd's gRPC socket: the CRI endpoint a kubelet would use.
    pub socket: PathBuf,
    cgroup_parent: String,
    network: Option<PodNetwork>,
    dir: TempDir,
}

impl CriNode {
    /// Starts containerd with CRI configured for `handlers`, pulling nothing: the
    /// `sandbox_image` must be imported with [`CriNode::import`] before the first pod.
    pub fn start(sandbox_image: &str, handlers: &[RuntimeHandler]) -> Result<CriNode> {
        let dir = TempDir::new("cri")?;
        let d = dir.path().to_path_buf();
        let socket = d.join("containerd.sock");
        for sub in ["cni/bin", "cni/net.d", "cni/ipam", "logs"] {
            std::fs::create_dir_all(d.join(sub)).with_context(|| format!("mkdir {sub}"))?;
        }
        let network = PodNetwork::new();
        let cni_bin = match &network {
            Some(net) => {
                let conf = d.join("cni/net.d/10-berth-cri.conflist");
                std::fs::write(&conf, net.conflist(&d.join("cni/ipam")))
                    .with_context(|| format!("write {}", conf.display()))?;
                net.plugin_dir.clone()
            }
            None => d.join("cni/bin"),
        };
        let roots = d.join("runtime-roots");
        let cri = cri_config(
            sandbox_image,
            handlers,
            |name| roots.join(name),
            &cni_bin,
            &d.join("cni/net.d"),
        );
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
{cri}"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            d = d.display(),
        );
        std::fs::write(d.join("config.toml"), config).context("write containerd config")?;
        let mut node = CriNode {
            child: None,
            socket,
            cgroup_parent: format!("/{}", unique("berth-cri")),
            network,
            dir,
        };
        node.spawn_daemon()?;
        Ok(node)
    }

    /// Starts containerd on our config (appending to its log) and waits for its API.
    fn spawn_daemon(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .context("containerd log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd (is the containerd package installed?)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Restarts containerd as a node upgrade would: running pods keep their shims, and the
    /// new daemon must reconnect to them.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon();
        self.spawn_daemon()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("containerd exited early ({status}):\n{}", self.log_tail(60));
                }
            }
            if self.socket.exists() && self.ctr(&["version"])?.status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("containerd did not come up:\n{}", self.log_tail(60))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where pods write container logs (PodSandboxConfig `log_directory` goes below it).
    pub fn log_root(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// The pod network, when the CNI plugins are installed.
    pub fn pod_network(&self) -> Option<&PodNetwork> {
        self.network.as_ref()
    }

    /// The cgroupfs parent for pods (kubelet's `/kubepods/...`), removed on drop.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The state root berth uses for `handler`'s containers in CRI's namespace.
    pub fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir
            .path()
            .join("runtime-roots")
            .join(handler)
            .join(CRI_NAMESPACE)
    }

    /// The task bundles shims work in, one `<id>/` per task (config.json, berth's
    /// log.json).
    pub fn task_bundles(&self) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(CRI_NAMESPACE)
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// `ctr` against this daemon in CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(CRI_NAMESPACE)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run ctr {args:?}"))
    }

    /// Imports a docker-archive into CRI's namespace, unpacked for CRI's snapshotter.
    pub fn import(&self, archive: &Path) -> Result<()> {
        let a = archive.to_string_lossy();
        let out = self.ctr(&["images", "import", "--snapshotter", "native", &a])?;
        if !out.status.success() {
            bail!(
                "ctr images import {a} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Best effort: kill and delete whatever tasks and containers the test left.
    fn remove_all(&self) {
        crate::containerd::remove_all_tasks(|args| self.ctr(args));
    }

    /// Stops containerd: SIGTERM so it closes its databases, SIGKILL after 5 s.
    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::harness::terminate(&mut child, Duration::from_secs(5));
        }
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        self.remove_all();
        self.stop_daemon();
        // Shims outlive containerd when a task could not be deleted; ours are the ones
        // told to call back to our socket.
        for pid in pids_with_arg(&self.socket.to_string_lossy()) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        remove_cgroup_tree(&self.cgroup_parent);
        if let Some(net) = &self.network {
            // CNI DEL removed the veths; the bridge is left to whoever made the network.
            let _ = Command::new("ip")
                .args(["link", "delete", &net.bridge])
                .stderr(Stdio::null())
                .status();
        }
        unmount_under(self.dir.path());
    }
}

/// Processes whose command line has `arg` as one of its arguments.
fn pids_with_arg(arg: &str) -> Vec<nix::unistd::Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|a| a == arg.as_bytes())
                .then_some(nix::unistd::Pid::from_raw(pid))
        })
        .collect()
}

/// Mount points of every cgroup hierarchy (v1 controllers and the unified one).
fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// Kills what is left in `parent` (relative to each hierarchy's root) and removes its
/// cgroups, deepest first, in every hierarchy.
fn remove_cgroup_tree(parent: &str) {
    let rel = parent.trim_start_matches('/');
    for mount in cgroup_mounts() {
        let top = mount.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_config_selects_the_berth_shim_by_runtime_path_and_keeps_runc_options() {
        let handlers = [
            RuntimeHandler {
                name: "berth".into(),
                binary: "/b/berth".into(),
                shim: None,
            },
            RuntimeHandler {
                name: "berth-shim".into(),
                binary: "/b/berth".into(),
                shim: Some("/b/containerd-shim-berth-v2".into()),
            },
        ];
        let toml = cri_config(
            "docker.io/library/pause:1",
            &handlers,
            |name| Path::new("/roots").join(name),
            Path::new("/cni/bin"),
            Path::new("/cni/net.d"),
        );
        let table = |name: &str| {
            let head = format!("containerd.runtimes.{name}]\n");
            let start = toml
                .find(&head)
                .map(|i| i + head.len())
                .unwrap_or(toml.len());
            let rest = &toml[start..];
            rest[..rest.find("[plugins").unwrap_or(rest.len())].to_owned()
        };
        // Both keep the runc runtime type: CRI only decodes runc Options for it.
        for name in ["berth", "berth-shim"] {
            assert!(table(name).contains(r#"runtime_type = "io.containerd.runc.v2""#));
            let options = table(&format!("{name}.options"));
            assert!(options.contains(r#"BinaryName = "/b/berth""#), "{options}");
            assert!(options.contains(&format!(r#"Root = "/roots/{name}""#)));
            assert!(options.contains("SystemdCgroup = false"));
        }
        assert!(!table("berth").contains("runtime_path"));
        assert!(table("berth-shim").contains(r#"runtime_path = "/b/containerd-shim-berth-v2""#));
        assert!(toml.contains(r#"default_runtime_name = "berth""#));
        assert!(toml.contains(r#"sandbox_image = "docker.io/library/pause:1""#));
        assert!(toml.contains("disable_cgroup = false"));
    }
}
