//! The Kubernetes path: containerd 1.6's CRI plugin runs pods with berth as a RuntimeClass
//! handler, driven over CRI v1 gRPC the way the kubelet drives it (sandbox, container,
//! exec, stats, resource update, graceful stop, removal). Two handlers are exercised:
//! `berth` (the stock containerd-shim-runc-v2 with BinaryName = berth) and `berth-shim`
//! (containerd-shim-berth-v2 via runtime_path), the latter only when its binary is built.
//! Each handler runs a host-network pod, a privileged pod and, when the CNI plugins are
//! installed, a pod on a private bridge network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use anyhow::{bail, ensure, Context, Result};
use berth_integration::containerd_cri::{CriNode, RuntimeHandler};
use berth_integration::cri_client::Kubelet;
use berth_integration::harness::{berth_bin, busybox_fixture, skip, unique, TempDir};
use berth_integration::image::write_docker_archive;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, Device, ImageSpec, Int64Value,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxState, SecurityProfile,
};

/// CRI's `sandbox_image`: a pause-like busybox that just sleeps.
const PAUSE_IMAGE: &str = "docker.io/library/berth-pause:1";
const APP_IMAGE: &str = "docker.io/library/busybox:berth";
const MIB: i64 = 1024 * 1024;
/// The kubelet's `securitycontext` defaults for `procMount: Default`.
const KUBELET_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const KUBELET_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// Succeeds only where CRI's privileged mode applies: host devices, nothing masked.
const PRIVILEGED_PROBE: &str = "test -c /dev/kmsg && test -f /proc/timer_list";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Why this machine can't run the test, if it can't.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("containerd is not installed".into());
    }
    if !busybox_fixture().join("rootfs/bin/busybox").exists() {
        return Some("busybox fixture missing (make fixtures)".into());
    }
    None
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir()?.join(p))
}

/// The handlers to test: always `berth`; `berth-shim` when the shim binary exists.
fn handlers() -> Result<Vec<RuntimeHandler>> {
    let berth = absolute(berth_bin())?;
    let shim = berth.with_file_name("containerd-shim-berth-v2");
    let mut v = vec![RuntimeHandler {
        name: "berth".into(),
        binary: berth.clone(),
        shim: None,
    }];
    if shim.is_file() {
        v.push(RuntimeHandler {
            name: "berth-shim".into(),
            binary: berth,
            shim: Some(shim),
        });
    } else {
        skip(&format!(
            "handler berth-shim: {} is not built (cargo build --workspace --bins)",
            shim.display()
        ));
    }
    Ok(v)
}

/// `berth --root ROOT ARGS` → stdout, failing with berth's stderr.
fn berth(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(berth_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .with_context(|| format!("run berth {args:?}"))?;
    if !out.status.success() {
        bail!(
            "berth --root {} {args:?} failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// berth's own view of a container: (status, pid).
fn berth_state(root: &Path, id: &str) -> Result<(String, i64)> {
    let v: serde_json::Value = serde_json::from_str(&berth(root, &["state", id])?)
        .with_context(|| format!("parse berth state {id}"))?;
    let status = v["status"].as_str().unwrap_or_default().to_owned();
    Ok((status, v["pid"].as_i64().unwrap_or(0)))
}

/// A cgroup setting of the process `pid`, read on the host: (cgroup path, value). `v1` is
/// (controller, file) on a v1 hierarchy; `v2_file` is used when the controller is only on
/// the unified hierarchy. Values are the first field ("max 100000" → "max").
fn cgroup_value(pid: i64, v1: (&str, &str), v2_file: &str) -> Result<(String, String)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    let entry = |want: &dyn Fn(&str) -> bool| {
        cgroups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            want(ctrls).then(|| path.to_owned())
        })
    };
    let (controller, file) = v1;
    let (path, file) = match entry(&|c| c.split(',').any(|c| c == controller)) {
        Some(path) => (
            path.clone(),
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'))
                .join(file),
        ),
        None => {
            let path = entry(&|c| c.is_empty())
                .with_context(|| format!("no {controller} cgroup for pid {pid}:\n{cgroups}"))?;
            let file = Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join(v2_file);
            (path, file)
        }
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let value = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((path, value))
}

fn memory_limit_of(pid: i64) -> Result<(String, String)> {
    cgroup_value(pid, ("memory", "memory.limit_in_bytes"), "memory.max")
}

fn cpu_quota_of(pid: i64) -> Result<String> {
    Ok(cgroup_value(pid, ("cpu", "cpu.cfs_quota_us"), "cpu.max")?.1)
}

fn cpuset_of(pid: i64) -> Result<String> {
    Ok(cgroup_value(pid, ("cpuset", "cpuset.cpus"), "cpuset.cpus")?.1)
}

/// Everything that helps explain a failure: berth's log.json of every task bundle and
/// containerd's log tail.
fn diagnostics(node: &CriNode) -> String {
    let mut s = String::new();
    if let Ok(entries) = std::fs::read_dir(node.task_bundles()) {
        for e in entries.flatten() {
            let log = std::fs::read_to_string(e.path().join("log.json")).unwrap_or_default();
            s += &format!("--- {}/log.json ---\n{log}\n", e.path().display());
        }
    }
    s + "--- containerd log tail ---\n" + &node.log_tail(60)
}

#[test]
fn cri_runs_pods_with_berth_runtime_classes() -> Result<()> {
    if let Some(why) = skip_reason() {
        skip(&why);
        return Ok(());
    }
    let handlers = handlers()?;
    let images = TempDir::new("cri-img")?;
    let rootfs = busybox_fixture().join("rootfs");
    let pause = images.path().join("pause.tar");
    let app = images.path().join("busybox.tar");
    write_docker_archive(&rootfs, PAUSE_IMAGE, &["sleep", "3600"], &pause)?;
    write_docker_archive(&rootfs, APP_IMAGE, &["sh"], &app)?;

    let mut node = CriNode::start(PAUSE_IMAGE, &handlers)?;
    // No registry: the images a kubelet would pull are imported up front.
    node.import(&pause)?;
    node.import(&app)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let mut k = Kubelet::connect(&node.socket).await?;
        let result = all_scenarios(&mut node, &mut k, &handlers).await;
        if let Err(e) = &result {
            eprintln!("{e:#}\n{}", diagnostics(&node));
        }
        // Pods a failed scenario left behind: release their netns and CNI leases while
        // containerd is still there to do it.
        k.remove_all_pods().await;
        result
    })
}

async fn all_scenarios(
    node: &mut CriNode,
    k: &mut Kubelet,
    handlers: &[RuntimeHandler],
) -> Result<()> {
    node_checks(k).await?;
    for h in handlers {
        let name = h.name.as_str();
        pod_lifecycle(node, k, name)
            .await
            .with_context(|| format!("RuntimeClass handler {name}"))?;
        eprintln!("RuntimeClass handler {name}: pod lifecycle passed");
        privileged_pod(node, k, name)
            .await
            .with_context(|| format!("RuntimeClass handler {name}, privileged pod"))?;
        eprintln!("RuntimeClass handler {name}: privileged pod passed");
        network_pod(node, k, name)
            .await
            .with_context(|| format!("RuntimeClass handler {name}, pod network"))?;
        eprintln!("RuntimeClass handler {name}: pod-network pod passed");
        survives_containerd_restart(node, k, name)
            .await
            .with_context(|| format!("RuntimeClass handler {name}, containerd restart"))?;
        eprintln!("RuntimeClass handler {name}: containerd restart passed");
    }
    Ok(())
}

/// What the kubelet asks first: the runtime's version and readiness, and the images.
async fn node_checks(k: &mut Kubelet) -> Result<()> {
    let v = k.version().await?;
    ensure!(v.runtime_name == "containerd", "Version: {v:?}");
    ensure!(v.runtime_api_version.starts_with("v1"), "Version: {v:?}");
    ensure!(k.condition("RuntimeReady").await?, "runtime not ready");
    for image in [PAUSE_IMAGE, APP_IMAGE] {
        ensure!(k.has_image(image).await?, "CRI does not see image {image}");
    }
    Ok(())
}

fn pod_config(node: &CriNode, handler: &str) -> PodSandboxConfig {
    let uid = unique("uid");
    // Like the kubelet: host network, pod-shared IPC, a per-pod cgroup and log dir.
    let namespaces = NamespaceOption {
        network: NamespaceMode::Node.into(),
        pid: NamespaceMode::Container.into(),
        ipc: NamespaceMode::Pod.into(),
        ..Default::default()
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("pod-{handler}"),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: node
            .log_root()
            .join(format!("default_pod-{handler}_{uid}"))
            .to_string_lossy()
            .into_owned(),
        labels: HashMap::from([("app".into(), "berth-cri".into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", node.cgroup_parent()),
            // A "safe" sysctl in the pod's own IPC namespace; CRI puts pod sysctls in
            // every container's spec.
            sysctls: HashMap::from([("kernel.shm_rmid_forced".into(), "1".into())]),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn app_config(sandbox: &PodSandboxConfig) -> ContainerConfig {
    let namespaces = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: APP_IMAGE.into(),
            ..Default::default()
        }),
        // Exits 0 on SIGTERM so a graceful StopContainer is observable.
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo started; trap 'exit 0' TERM; while :; do sleep 1; done".into()],
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }],
        log_path: "app/0.log".into(),
        linux: Some(LinuxContainerConfig {
            // A burstable pod's values as the kubelet computes them.
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 * MIB,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: namespaces,
                // The kubelet's SeccompDefault: containerd's RuntimeDefault profile.
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault.into(),
                    localhost_ref: String::new(),
                }),
                // CRI takes these from the request (an empty list masks nothing), so send
                // the kubelet's defaults for the Default procMount.
                masked_paths: strings(KUBELET_MASKED_PATHS),
                readonly_paths: strings(KUBELET_READONLY_PATHS),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// One pod through its whole life on `handler`, checking berth's side at each step.
async fn pod_lifecycle(node: &CriNode, k: &mut Kubelet, handler: &str) -> Result<()> {
    let root = node.runtime_root(handler);
    let sandbox = pod_config(node, handler);
    let pod = k.run_pod(&sandbox, handler).await?;
    let (status, sandbox_pid) =
        berth_state(&root, &pod).context("berth does not know the sandbox")?;
    ensure!(status == "running", "berth says the sandbox is {status}");
    let ready = k.pod_status(&pod).await?;
    ensure!(ready.state() == PodSandboxState::SandboxReady, "{ready:?}");

    let mut config = app_config(&sandbox);
    // Device-plugin style devices: one as is, one under another name.
    let device = |container: &str, host: &str, permissions: &str| Device {
        container_path: container.into(),
        host_path: host.into(),
        permissions: permissions.into(),
    };
    config.devices = vec![
        device("/dev/fuse", "/dev/fuse", "rwm"),
        device("/dev/berth-null", "/dev/null", "rw"),
    ];
    let id = k.create(&pod, config, &sandbox).await?;
    let state = k.status(&id).await?.state();
    ensure!(
        state == ContainerState::ContainerCreated,
        "created: {state:?}"
    );
    k.start(&id).await?;
    let state = k.status(&id).await?.state();
    ensure!(
        state == ContainerState::ContainerRunning,
        "started: {state:?}"
    );
    let (status, pid) = berth_state(&root, &id).context("berth does not know the container")?;
    ensure!(
        status == "running" && pid > 0,
        "berth state {status} pid {pid}"
    );
    let listed = berth(&root, &["list", "--quiet"])?;
    ensure!(
        listed.lines().any(|l| l == id) && listed.lines().any(|l| l == pod),
        "berth list lacks the pod's containers:\n{listed}"
    );

    exec_checks(k, &id).await?;
    namespace_checks(sandbox_pid, pid)?;
    resource_checks(k, &id, pid, &sandbox).await?;
    wait_for_log(&sandbox, "app/0.log", &["started"]).await?;
    let listed = k.list(&pod).await?;
    ensure!(
        listed.len() == 1
            && listed[0].id == id
            && listed[0].state() == ContainerState::ContainerRunning,
        "ListContainers: {listed:?}"
    );

    run_to_exit(k, &pod, &sandbox).await?;
    tty_hardened(k, &pod, &sandbox).await?;
    oom_killed(k, &pod, &sandbox).await?;
    volume_checks(node, k, &pod, &sandbox).await?;

    // Graceful stop: SIGTERM reaches the shell's trap well before the 10 s grace period.
    let started = Instant::now();
    k.stop(&id, 10).await?;
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "StopContainer waited {:?}: SIGTERM was not delivered",
        started.elapsed()
    );
    let st = k.status(&id).await?;
    ensure!(
        st.state() == ContainerState::ContainerExited && st.exit_code == 0,
        "after StopContainer: {:?} exit {}",
        st.state(),
        st.exit_code
    );
    k.remove(&id).await?;
    ensure!(
        berth_state(&root, &id).is_err(),
        "berth still has container {id} after RemoveContainer"
    );

    k.stop_pod(&pod).await?;
    let stopped = k.pod_status(&pod).await?;
    ensure!(
        stopped.state() == PodSandboxState::SandboxNotready,
        "{stopped:?}"
    );
    k.remove_pod(&pod).await?;
    let listed = berth(&root, &["list", "--quiet"])?;
    ensure!(
        listed.trim().is_empty(),
        "berth still lists containers after RemovePodSandbox:\n{listed}"
    );
    Ok(())
}

/// ExecSync as probes use it, and what the exec'd process sees of the container's setup:
/// env, pod sysctls, masked and read-only paths, seccomp; a probe past its timeout.
async fn exec_checks(k: &mut Kubelet, id: &str) -> Result<()> {
    let r = k.exec(id, &["echo", "hi"]).await?;
    ensure!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code) == ("hi\n", "", 0),
        "echo hi: {r:?}"
    );
    let r = k.exec(id, &["sh", "-c", "echo oops >&2; exit 3"]).await?;
    ensure!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code) == ("", "oops\n", 3),
        "exit 3: {r:?}"
    );
    let r = k
        .exec(
            id,
            &[
                "sh",
                "-c",
                "exec 3<>/dev/fuse && echo fuse-ok; echo x > /dev/berth-null && echo null-ok",
            ],
        )
        .await?;
    ensure!(r.stdout == "fuse-ok\nnull-ok\n", "devices: {r:?}");
    let r = k.exec(id, &["sh", "-c", "echo $GREETING"]).await?;
    ensure!(r.stdout == "hello\n", "env in exec: {r:?}");
    let r = k
        .exec(id, &["cat", "/proc/sys/kernel/shm_rmid_forced"])
        .await?;
    ensure!(r.stdout == "1\n", "pod sysctl not applied: {r:?}");
    // The opposite of the privileged pod: masked /proc/timer_list, no host devices.
    let r = k.exec(id, &["sh", "-c", PRIVILEGED_PROBE]).await?;
    ensure!(
        r.exit_code != 0,
        "unprivileged container sees host devices: {r:?}"
    );
    let r = k
        .exec(id, &["sh", "-c", "test -c /proc/timer_list"])
        .await?;
    ensure!(r.exit_code == 0, "/proc/timer_list is not masked: {r:?}");
    let r = k
        .exec(id, &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"])
        .await?;
    ensure!(
        r.exit_code != 0 && r.stderr.contains("Read-only file system"),
        "/proc/sys is not read-only: {r:?}"
    );
    // Mode 2 = filter: containerd's default profile reached the exec'd process.
    let r = k
        .exec(id, &["grep", "^Seccomp:", "/proc/self/status"])
        .await?;
    ensure!(
        r.stdout.split_whitespace().nth(1) == Some("2"),
        "RuntimeDefault seccomp not applied: {r:?}"
    );

    // Output larger than any pipe buffer comes back whole.
    let r = k
        .exec(
            id,
            &["sh", "-c", "head -c 1000000 /dev/zero | tr '\\000' a"],
        )
        .await?;
    ensure!(
        r.stdout.len() == 1_000_000 && r.stdout.bytes().all(|b| b == b'a'),
        "large exec output: {} bytes",
        r.stdout.len()
    );
    // Liveness and readiness probes run concurrently: parallel ExecSyncs each get their
    // own output and exit code.
    let probes: Vec<_> = (0..8)
        .map(|i| {
            let mut k = k.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let script = format!("echo probe-{i}; exit {i}");
                k.exec(&id, &["sh", "-c", &script]).await
            })
        })
        .collect();
    for (i, probe) in probes.into_iter().enumerate() {
        let r = probe.await.context("probe task")??;
        ensure!(
            r.stdout == format!("probe-{i}\n") && r.exit_code == i as i32,
            "concurrent probe {i}: {r:?}"
        );
    }

    // A probe that overruns its timeout fails, and its process is killed (SIGKILL to the
    // exec'd pid through the shim) rather than left behind in the container.
    let started = Instant::now();
    let r = k.exec_with_timeout(id, &["sleep", "30"], 1).await;
    ensure!(r.is_err(), "ExecSync past its timeout succeeded: {r:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "ExecSync timeout took {:?}",
        started.elapsed()
    );
    let list = "for p in /proc/[0-9]*; do tr '\\000' ' ' < $p/cmdline; echo; done";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = k.exec(id, &["sh", "-c", list]).await?.stdout;
        // The listing must see the container's own main process to mean anything.
        ensure!(procs.contains("trap"), "process listing failed:\n{procs}");
        if !procs.lines().any(|l| l.starts_with("sleep 30")) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "timed-out exec still running:\n{procs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The kubelet's resources reach the cgroup berth made, live updates too, and stats flow.
async fn resource_checks(
    k: &mut Kubelet,
    id: &str,
    pid: i64,
    sandbox: &PodSandboxConfig,
) -> Result<()> {
    let parent = sandbox
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let (cgroup, limit) = memory_limit_of(pid)?;
    ensure!(
        cgroup.starts_with(&parent),
        "container cgroup {cgroup} is not under the pod's {parent}"
    );
    ensure!(
        limit == (64 * MIB).to_string(),
        "memory limit {limit}, want 64 MiB"
    );
    let quota = cpu_quota_of(pid)?;
    ensure!(quota == "50000", "cpu quota {quota}, want 50000");

    // In-place resize, as the kubelet does it: a smaller CPU quota, more memory, and a
    // cpuset (static CPU manager policy).
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 25_000,
        cpu_shares: 256,
        memory_limit_in_bytes: 96 * MIB,
        cpuset_cpus: "0".into(),
        ..Default::default()
    };
    k.update(id, resources).await?;
    let (_, limit) = memory_limit_of(pid)?;
    ensure!(
        limit == (96 * MIB).to_string(),
        "memory limit after update {limit}"
    );
    let quota = cpu_quota_of(pid)?;
    ensure!(quota == "25000", "cpu quota after update {quota}");
    let cpus = cpuset_of(pid)?;
    ensure!(cpus == "0", "cpuset after update {cpus:?}");

    let stats = k.stats(id).await?;
    let memory = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    ensure!(
        memory.is_some_and(|m| m > 0),
        "no memory usage in stats: {stats:?}"
    );
    Ok(())
}

/// CRI copied each of `lines` from the container's stdout into its kubelet-format log
/// (`<RFC3339 time> stdout F <line>`).
async fn wait_for_log(sandbox: &PodSandboxConfig, log_path: &str, lines: &[&str]) -> Result<()> {
    let log = Path::new(&sandbox.log_directory).join(log_path);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let logged = |want: &&str| {
            // A terminal's output ends lines with \r\n.
            text.lines().any(|l| {
                l.trim_end_matches('\r')
                    .ends_with(&format!(" stdout F {want}"))
            })
        };
        if lines.iter().all(logged) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} lacks the container's output:\n{text}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Host networking and pod-shared IPC: berth joined the sandbox's IPC namespace by path and
/// stayed in the host's network namespace, while the pid namespace is the container's own.
fn namespace_checks(sandbox_pid: i64, pid: i64) -> Result<()> {
    let ns = |pid: &str, kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .with_context(|| format!("readlink /proc/{pid}/ns/{kind}"))
    };
    let (sandbox, app) = (sandbox_pid.to_string(), pid.to_string());
    ensure!(
        ns(&app, "ipc")? == ns(&sandbox, "ipc")?,
        "container does not share the pod's IPC namespace"
    );
    ensure!(
        ns(&app, "net")? == ns("self", "net")?,
        "host-network container is not in the host's network namespace"
    );
    ensure!(
        ns(&app, "pid")? != ns(&sandbox, "pid")?,
        "container shares the sandbox's pid namespace despite NamespaceMode::Container"
    );
    Ok(())
}

/// A container that runs to completion as a non-root user on a read-only rootfs: the
/// kubelet sees its exit code (for restart decisions) and its output in the log.
async fn run_to_exit(k: &mut Kubelet, pod: &str, sandbox: &PodSandboxConfig) -> Result<()> {
    let mut config = app_config(sandbox);
    config.metadata = Some(ContainerMetadata {
        name: "once".into(),
        attempt: 0,
    });
    config.args = vec![
        "id -u; id -G; touch /probe 2>/dev/null && echo writable || echo read-only; exit 7".into(),
    ];
    config.log_path = "once/0.log".into();
    if let Some(sc) = container_security(&mut config) {
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000];
        sc.readonly_rootfs = true;
    }
    let id = k.run(pod, config, sandbox).await?;
    let code = k.wait_exited(&id, Duration::from_secs(10)).await?;
    ensure!(code == 7, "run-to-exit container exited {code}, want 7");
    wait_for_log(sandbox, "once/0.log", &["1000", "2000 3000", "read-only"]).await?;
    k.remove(&id).await
}

fn container_security(config: &mut ContainerConfig) -> Option<&mut LinuxContainerSecurityContext> {
    config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
}

fn sandbox_security(config: &mut PodSandboxConfig) -> Option<&mut LinuxSandboxSecurityContext> {
    config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
}

/// A privileged pod (node agents, CSI/CNI daemonsets): CRI hands berth every host device,
/// all capabilities, a writable /sys and no masked paths or seccomp; it shares the host's
/// pid, IPC and network namespaces like a node agent; a Bidirectional
/// volume (rshared, as CSI drivers use) carries a mount made in the container to the host.
async fn privileged_pod(node: &CriNode, k: &mut Kubelet, handler: &str) -> Result<()> {
    let mut sandbox = pod_config(node, handler);
    if let Some(sc) = sandbox_security(&mut sandbox) {
        sc.privileged = true;
        // A node agent: hostPID and hostIPC as well as hostNetwork.
        if let Some(ns) = sc.namespace_options.as_mut() {
            ns.pid = NamespaceMode::Node.into();
            ns.ipc = NamespaceMode::Node.into();
        }
    }
    // With hostIPC an IPC sysctl would change the node: the kubelet rejects
    // such a pod, and berth (like runc) refuses the spec.
    if let Some(linux) = sandbox.linux.as_mut() {
        linux.sysctls.clear();
    }
    let pod = k.run_pod(&sandbox, handler).await?;
    let mut config = app_config(&sandbox);
    if let Some(sc) = container_security(&mut config) {
        sc.privileged = true;
        sc.seccomp = None;
    }
    let shared = shared_dir(node)?;
    std::fs::create_dir_all(shared.join("sub"))?;
    config.mounts = vec![Mount {
        container_path: "/bidir".into(),
        host_path: shared.to_string_lossy().into_owned(),
        propagation: MountPropagation::PropagationBidirectional.into(),
        ..Default::default()
    }];
    let id = k.run(&pod, config, &sandbox).await?;
    let (_, pid) = berth_state(&node.runtime_root(handler), &id)?;
    for kind in ["pid", "ipc", "net"] {
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}"));
        ensure!(
            ns(&pid.to_string())? == ns("self")?,
            "node-agent container is not in the host's {kind} namespace"
        );
    }
    let r = k
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /bidir/sub && echo from-pod > /bidir/sub/m",
            ],
        )
        .await?;
    ensure!(r.exit_code == 0, "mount in the privileged container: {r:?}");
    let seen = std::fs::read_to_string(shared.join("sub/m")).unwrap_or_default();
    let _ = nix::mount::umount2(&shared.join("sub"), nix::mount::MntFlags::MNT_DETACH);
    ensure!(
        seen == "from-pod\n",
        "container mount did not propagate to the host: {seen:?}"
    );
    let caps = k
        .exec(&id, &["grep", "^CapEff:", "/proc/self/status"])
        .await?
        .stdout;
    let host_caps = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .map(str::to_owned)
        .unwrap_or_default();
    ensure!(
        caps.trim() == host_caps.trim(),
        "privileged exec caps {caps:?}, host {host_caps:?}"
    );
    // Host devices are there and /proc/timer_list is not masked (masked files are /dev/null).
    let r = k.exec(&id, &["sh", "-c", PRIVILEGED_PROBE]).await?;
    ensure!(
        r.exit_code == 0,
        "privileged container lacks host devices or is masked: {r:?}"
    );
    let mounts = k.exec(&id, &["mount"]).await?.stdout;
    ensure!(
        mounts
            .lines()
            .any(|l| l.contains(" on /sys type sysfs (rw")),
        "/sys is not writable in a privileged container:\n{mounts}"
    );
    k.stop_pod(&pod).await?;
    k.remove_pod(&pod).await
}

/// A pod on the pod network (the common case): CRI makes the netns and runs CNI, berth
/// joins that netns by path, applies the pod's net sysctl there and sets its hostname.
/// The pod also shares one process namespace (`shareProcessNamespace: true`).
async fn network_pod(node: &CriNode, k: &mut Kubelet, handler: &str) -> Result<()> {
    let Some(net) = node.pod_network() else {
        skip("pod-network pod: CNI plugins (containernetworking-plugins) missing");
        return Ok(());
    };
    let mut sandbox = pod_config(node, handler);
    sandbox.hostname = format!("net-{handler}");
    if let Some(ns) = sandbox_security(&mut sandbox).and_then(|s| s.namespace_options.as_mut()) {
        ns.network = NamespaceMode::Pod.into();
        ns.pid = NamespaceMode::Pod.into();
    }
    // Network sysctls are only allowed (and only meaningful) in the pod's own netns.
    if let Some(l) = sandbox.linux.as_mut() {
        l.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    }
    let pod = k.run_pod(&sandbox, handler).await?;
    let ip = k
        .pod_status(&pod)
        .await?
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let prefix = net.subnet.trim_end_matches("0/24");
    ensure!(
        ip.starts_with(prefix),
        "pod IP {ip:?} not in {}",
        net.subnet
    );

    let id = k.run(&pod, app_config(&sandbox), &sandbox).await?;
    let root = node.runtime_root(handler);
    let pid_ns = |id: &str| -> Result<PathBuf> {
        let (_, pid) = berth_state(&root, id)?;
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).context("read pid namespace")
    };
    ensure!(
        pid_ns(&id)? == pid_ns(&pod)?,
        "container is not in the pod's shared pid namespace"
    );
    let r = k.exec(&id, &["hostname"]).await?;
    ensure!(r.stdout.trim() == sandbox.hostname, "hostname: {r:?}");
    let r = k
        .exec(&id, &["ip", "-4", "-o", "addr", "show", "eth0"])
        .await?;
    ensure!(
        r.stdout.contains(&format!(" {ip}/")),
        "eth0 lacks {ip}: {r:?}"
    );
    let r = k
        .exec(
            &id,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        )
        .await?;
    ensure!(r.stdout == "80\n", "pod net sysctl not applied: {r:?}");
    let r = k
        .exec(&id, &["ping", "-c", "1", "-W", "3", &net.gateway])
        .await?;
    ensure!(
        r.exit_code == 0,
        "gateway {} unreachable from the pod: {r:?}",
        net.gateway
    );
    k.stop_pod(&pod).await?;
    k.remove_pod(&pod).await
}

/// A container over its memory limit: the kernel OOM-kills it in the cgroup berth set up,
/// and the kubelet sees exit 137 with reason OOMKilled (the shim's OOM event).
async fn oom_killed(k: &mut Kubelet, pod: &str, sandbox: &PodSandboxConfig) -> Result<()> {
    let mut config = app_config(sandbox);
    config.metadata = Some(ContainerMetadata {
        name: "hog".into(),
        attempt: 0,
    });
    // The pause lets the shim start watching the cgroup for OOM before the allocation.
    config.args = vec!["sleep 1; x=$(head -c 256m /dev/zero | tr '\\000' a); echo survived".into()];
    config.log_path = "hog/0.log".into();
    if let Some(r) = config.linux.as_mut().and_then(|l| l.resources.as_mut()) {
        r.memory_limit_in_bytes = 16 * MIB;
    }
    let id = k.run(pod, config, sandbox).await?;
    let code = k.wait_exited(&id, Duration::from_secs(30)).await?;
    let st = k.status(&id).await?;
    ensure!(
        code == 137 && st.reason == "OOMKilled",
        "memory hog: exit {code}, reason {:?}",
        st.reason
    );
    k.remove(&id).await
}

/// containerd restarts (node upgrade) under a running pod: the new daemon reconnects to the
/// shim, CRI still reports the container running on the same berth process, and exec and
/// a graceful stop still work.
async fn survives_containerd_restart(
    node: &mut CriNode,
    k: &mut Kubelet,
    handler: &str,
) -> Result<()> {
    let root = node.runtime_root(handler);
    let sandbox = pod_config(node, handler);
    let pod = k.run_pod(&sandbox, handler).await?;
    let id = k.run(&pod, app_config(&sandbox), &sandbox).await?;
    let (_, pid) = berth_state(&root, &id)?;

    node.restart()?;
    // The old connection died with the daemon; a kubelet redials.
    *k = Kubelet::connect(&node.socket).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k.condition("RuntimeReady").await.unwrap_or(false) {
        ensure!(Instant::now() < deadline, "CRI not ready after restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let state = k.status(&id).await?.state();
    ensure!(
        state == ContainerState::ContainerRunning,
        "after restart: {state:?}"
    );
    let (status, pid_after) = berth_state(&root, &id)?;
    ensure!(
        status == "running" && pid_after == pid,
        "berth after restart: {status} pid {pid_after} (was {pid})"
    );
    let r = k.exec(&id, &["echo", "still here"]).await?;
    ensure!(r.stdout == "still here\n", "exec after restart: {r:?}");
    k.stop(&id, 10).await?;
    let st = k.status(&id).await?;
    ensure!(
        st.state() == ContainerState::ContainerExited && st.exit_code == 0,
        "stop after restart: {:?} exit {}",
        st.state(),
        st.exit_code
    );
    k.remove(&id).await?;
    k.stop_pod(&pod).await?;
    k.remove_pod(&pod).await
}

/// The kubelet's volumes: an emptyDir (rw bind), a configMap (ro bind), the termination
/// log (a file bind) and a HostToContainer mount (rslave; the kubelet makes its source
/// shared): a mount made on the host after the container started shows up inside it.
async fn volume_checks(
    node: &CriNode,
    k: &mut Kubelet,
    pod: &str,
    sandbox: &PodSandboxConfig,
) -> Result<()> {
    let vols = node.dir().join(unique("volumes"));
    let (data, config_dir) = (vols.join("data"), vols.join("config"));
    let shared = shared_dir(node)?;
    for d in [&data, &config_dir, &shared.join("sub")] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    std::fs::write(config_dir.join("key"), "value")?;
    let termination_log = vols.join("termination-log");
    std::fs::write(&termination_log, "")?;

    let mut config = app_config(sandbox);
    config.metadata = Some(ContainerMetadata {
        name: "volumes".into(),
        attempt: 0,
    });
    config.log_path = "volumes/0.log".into();
    let bind =
        |container: &str, host: &Path, readonly: bool, propagation: MountPropagation| Mount {
            container_path: container.into(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            propagation: propagation.into(),
            ..Default::default()
        };
    config.mounts = vec![
        bind("/data", &data, false, MountPropagation::PropagationPrivate),
        bind(
            "/config",
            &config_dir,
            true,
            MountPropagation::PropagationPrivate,
        ),
        bind(
            "/dev/termination-log",
            &termination_log,
            false,
            MountPropagation::PropagationPrivate,
        ),
        bind(
            "/hostmnt",
            &shared,
            true,
            MountPropagation::PropagationHostToContainer,
        ),
    ];
    let id = k.run(pod, config, sandbox).await?;

    let r = k
        .exec(
            &id,
            &["sh", "-c", "echo hello > /data/out && cat /config/key"],
        )
        .await?;
    ensure!(r.stdout == "value", "volume reads: {r:?}");
    let out = std::fs::read_to_string(data.join("out")).context("emptyDir write")?;
    ensure!(out == "hello\n", "emptyDir content on the host: {out:?}");
    let r = k.exec(&id, &["sh", "-c", "echo x > /config/new"]).await?;
    ensure!(
        r.exit_code != 0 && r.stderr.contains("Read-only file system"),
        "read-only volume is writable: {r:?}"
    );
    k.exec(&id, &["sh", "-c", "echo done > /dev/termination-log"])
        .await?;
    let msg = std::fs::read_to_string(&termination_log)?;
    ensure!(msg == "done\n", "termination log on the host: {msg:?}");

    // Propagation host → container: mount after the container started.
    let sub = shared.join("sub");
    mount(
        Some(Path::new("tmpfs")),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
    )?;
    std::fs::write(sub.join("marker"), "propagated")?;
    let r = k.exec(&id, &["cat", "/hostmnt/sub/marker"]).await?;
    let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
    ensure!(
        r.stdout == "propagated",
        "host mount did not propagate into the container: {r:?}"
    );

    k.stop(&id, 10).await?;
    k.remove(&id).await
}

/// A fresh directory on its own shared mount, as the kubelet makes /var/lib/kubelet: CRI
/// refuses HostToContainer and Bidirectional volumes from private mounts. The node guard
/// unmounts everything under its dir.
fn shared_dir(node: &CriNode) -> Result<PathBuf> {
    let dir = node.dir().join(unique("shared"));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    mount(Some(&dir), &dir, None, MsFlags::MS_BIND)?;
    mount(None, &dir, None, MsFlags::MS_SHARED)?;
    Ok(dir)
}

fn mount(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags) -> Result<()> {
    nix::mount::mount(src, target, fstype, flags, None::<&str>)
        .with_context(|| format!("mount {src:?} on {} ({flags:?})", target.display()))
}

/// `kubectl run -it`-style container (a terminal from the console socket) with a
/// workingDir and a restricted security context.
async fn tty_hardened(k: &mut Kubelet, pod: &str, sandbox: &PodSandboxConfig) -> Result<()> {
    let mut config = app_config(sandbox);
    config.metadata = Some(ContainerMetadata {
        name: "tty".into(),
        attempt: 0,
    });
    config.tty = true;
    // A workingDir the image lacks: created by the runtime, as runc does.
    config.working_dir = "/work/sub".into();
    config.args = vec![concat!(
        "tty; pwd; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; ",
        "mkdir /blocked 2>/dev/null || echo mkdir-denied"
    )
    .into()];
    // A Localhost seccomp profile (docker format, as the kubelet hands containerd).
    let profile = Path::new(&sandbox.log_directory).join("no-mkdir.json");
    std::fs::create_dir_all(&sandbox.log_directory).context("pod log dir")?;
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .context("write seccomp profile")?;
    if let Some(sc) = container_security(&mut config) {
        sc.seccomp = Some(SecurityProfile {
            profile_type: ProfileType::Localhost.into(),
            localhost_ref: profile.to_string_lossy().into_owned(),
        });
        // A hardened pod: drop ALL, add back one, allowPrivilegeEscalation: false.
        sc.capabilities = Some(Capability {
            add_capabilities: strings(&["NET_BIND_SERVICE"]),
            drop_capabilities: strings(&["ALL"]),
            ..Default::default()
        });
        sc.no_new_privs = true;
    }
    config.log_path = "tty/0.log".into();
    let id = k.run(pod, config, sandbox).await?;
    let code = k.wait_exited(&id, Duration::from_secs(10)).await?;
    ensure!(code == 0, "tty container exited {code}");
    wait_for_log(
        sandbox,
        "tty/0.log",
        &[
            "/dev/pts/0",
            "/work/sub",
            "CapEff:\t0000000000000400",
            "NoNewPrivs:\t1",
            "mkdir-denied",
        ],
    )
    .await?;
    k.remove(&id).await
}
