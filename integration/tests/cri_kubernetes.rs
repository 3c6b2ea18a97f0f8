//! The Kubernetes path: containerd 1.6's CRI plugin runs pods with berth as a RuntimeClass
//! handler, driven over CRI v1 gRPC the way the kubelet drives it (sandbox, container,
//! exec, stats, resource update, graceful stop, removal). Two handlers are exercised:
//! `berth` (the stock containerd-shim-runc-v2 with BinaryName = berth) and `berth-shim`
//! (containerd-shim-berth-v2 via runtime_path), the latter only when its binary is built.
//! Pods use the host network, so no CNI plugin is involved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use berth_integration::containerd_cri::{CriNode, RuntimeHandler};
use berth_integration::harness::{berth_bin, busybox_fixture, unique, TempDir};
use berth_integration::image::write_docker_archive;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatsRequest,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest,
    Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxState, PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, SecurityProfile, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

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

type Runtime = RuntimeServiceClient<Channel>;

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
        eprintln!(
            "SKIP handler berth-shim: {} is not built (cargo build --workspace --bins)",
            shim.display()
        );
    }
    Ok(v)
}

/// A CRI client channel over containerd's unix socket (the URI is a placeholder).
async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("connect to containerd's CRI socket")
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

/// The container's memory cgroup limit, read on the host through its pid.
fn memory_limit_of(pid: i64) -> Result<(String, i64)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_owned())
        })
        .with_context(|| format!("no memory cgroup for pid {pid}:\n{cgroups}"))?;
    let file = Path::new("/sys/fs/cgroup/memory")
        .join(path.trim_start_matches('/'))
        .join("memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&file)
        .with_context(|| format!("read {}", file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parse {}", file.display()))?;
    Ok((path, limit))
}

/// Everything that helps explain a failure: berth's log.json of every task bundle and
/// containerd's log tail.
fn diagnostics(node: &CriNode) -> String {
    let mut s = String::new();
    let tasks = node
        .dir()
        .join("state/io.containerd.runtime.v2.task/k8s.io");
    if let Ok(entries) = std::fs::read_dir(&tasks) {
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
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    let handlers = handlers()?;
    let images = TempDir::new("cri-img")?;
    let rootfs = busybox_fixture().join("rootfs");
    let pause = images.path().join("pause.tar");
    let app = images.path().join("busybox.tar");
    write_docker_archive(&rootfs, PAUSE_IMAGE, &["sleep", "3600"], &pause)?;
    write_docker_archive(&rootfs, APP_IMAGE, &["sh"], &app)?;

    let node = CriNode::start(PAUSE_IMAGE, &handlers)?;
    // No registry: the images a kubelet would pull are imported up front.
    node.import(&pause)?;
    node.import(&app)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = rt.block_on(async {
        let channel = connect(&node.socket).await?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);
        node_checks(&mut runtime, &mut images).await?;
        for h in &handlers {
            pod_lifecycle(&node, &mut runtime, &h.name)
                .await
                .with_context(|| format!("RuntimeClass handler {}", h.name))?;
            eprintln!("RuntimeClass handler {}: pod lifecycle passed", h.name);
            privileged_pod(&node, &mut runtime, &h.name)
                .await
                .with_context(|| format!("RuntimeClass handler {}, privileged pod", h.name))?;
            eprintln!("RuntimeClass handler {}: privileged pod passed", h.name);
            network_pod(&node, &mut runtime, &h.name)
                .await
                .with_context(|| format!("RuntimeClass handler {}, pod network", h.name))?;
            eprintln!("RuntimeClass handler {}: pod-network pod passed", h.name);
        }
        anyhow::Ok(())
    });
    if let Err(e) = &result {
        eprintln!("{e:#}\n{}", diagnostics(&node));
    }
    result
}

/// What the kubelet asks first: the runtime's version and readiness, and the images.
async fn node_checks(
    runtime: &mut Runtime,
    images: &mut ImageServiceClient<Channel>,
) -> Result<()> {
    let v = runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .context("Version")?
        .into_inner();
    ensure!(v.runtime_name == "containerd", "Version: {v:?}");
    ensure!(v.runtime_api_version.starts_with("v1"), "Version: {v:?}");

    let status = runtime
        .status(StatusRequest { verbose: false })
        .await
        .context("Status")?
        .into_inner();
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    ensure!(
        conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status),
        "runtime not ready: {conditions:?}"
    );

    for image in [PAUSE_IMAGE, APP_IMAGE] {
        let st = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .with_context(|| format!("ImageStatus {image}"))?
            .into_inner();
        ensure!(st.image.is_some(), "CRI does not see image {image}");
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

async fn exec(runtime: &mut Runtime, id: &str, cmd: &[&str]) -> Result<(String, String, i32)> {
    exec_with_timeout(runtime, id, cmd, 10).await
}

async fn exec_with_timeout(
    runtime: &mut Runtime,
    id: &str,
    cmd: &[&str],
    timeout_secs: i64,
) -> Result<(String, String, i32)> {
    let r = runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: strings(cmd),
            timeout: timeout_secs,
        })
        .await
        .with_context(|| format!("ExecSync {cmd:?}"))?
        .into_inner();
    Ok((
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
        r.exit_code,
    ))
}

async fn container_state(runtime: &mut Runtime, id: &str) -> Result<(ContainerState, i32)> {
    let st = runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .context("ContainerStatus")?
        .into_inner()
        .status
        .context("ContainerStatus without status")?;
    Ok((st.state(), st.exit_code))
}

/// One pod through its whole life on `handler`, checking berth's side at each step.
async fn pod_lifecycle(node: &CriNode, runtime: &mut Runtime, handler: &str) -> Result<()> {
    let root = node.runtime_root(handler);
    let sandbox_config = pod_config(node, handler);
    let pod = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let (status, sandbox_pid) =
        berth_state(&root, &pod).context("berth does not know the sandbox")?;
    ensure!(status == "running", "berth says the sandbox is {status}");
    let ready = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner()
        .status
        .context("PodSandboxStatus without status")?;
    ensure!(ready.state() == PodSandboxState::SandboxReady, "{ready:?}");

    let config = app_config(&sandbox_config);
    let id = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    ensure!(
        container_state(runtime, &id).await?.0 == ContainerState::ContainerCreated,
        "container not CREATED after CreateContainer"
    );
    runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer")?;
    ensure!(
        container_state(runtime, &id).await?.0 == ContainerState::ContainerRunning,
        "container not RUNNING after StartContainer"
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

    exec_checks(runtime, &id).await?;
    namespace_checks(sandbox_pid, pid)?;
    resource_checks(runtime, &id, pid, &sandbox_config).await?;
    wait_for_log(&sandbox_config, "app/0.log", &["started"]).await?;

    let listed = runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .context("ListContainers")?
        .into_inner()
        .containers;
    ensure!(
        listed.len() == 1
            && listed[0].id == id
            && listed[0].state() == ContainerState::ContainerRunning,
        "ListContainers: {listed:?}"
    );

    run_to_exit(runtime, &pod, &sandbox_config).await?;

    // Graceful stop: SIGTERM reaches the shell's trap well before the 10 s grace period.
    let started = Instant::now();
    runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .context("StopContainer")?;
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "StopContainer waited {:?}: SIGTERM was not delivered",
        started.elapsed()
    );
    let (state, code) = container_state(runtime, &id).await?;
    ensure!(
        state == ContainerState::ContainerExited && code == 0,
        "after StopContainer: {state:?} exit {code}"
    );
    runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("RemoveContainer")?;
    ensure!(
        berth_state(&root, &id).is_err(),
        "berth still has container {id} after RemoveContainer"
    );

    runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .context("StopPodSandbox")?;
    let stopped = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus after stop")?
        .into_inner()
        .status
        .context("PodSandboxStatus without status")?;
    ensure!(
        stopped.state() == PodSandboxState::SandboxNotready,
        "{stopped:?}"
    );
    runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .context("RemovePodSandbox")?;
    let listed = berth(&root, &["list", "--quiet"])?;
    ensure!(
        listed.trim().is_empty(),
        "berth still lists containers after RemovePodSandbox:\n{listed}"
    );
    Ok(())
}

/// ExecSync as liveness probes use it: output, exit codes, env and seccomp of the exec.
async fn exec_checks(runtime: &mut Runtime, id: &str) -> Result<()> {
    let r = exec(runtime, id, &["echo", "hi"]).await?;
    ensure!(r == ("hi\n".into(), String::new(), 0), "echo hi: {r:?}");
    let r = exec(runtime, id, &["sh", "-c", "echo oops >&2; exit 3"]).await?;
    ensure!(r == (String::new(), "oops\n".into(), 3), "exit 3: {r:?}");
    let r = exec(runtime, id, &["sh", "-c", "echo $GREETING"]).await?;
    ensure!(r.0 == "hello\n", "env in exec: {r:?}");
    let r = exec(runtime, id, &["cat", "/proc/sys/kernel/shm_rmid_forced"]).await?;
    ensure!(r.0 == "1\n", "pod sysctl not applied: {r:?}");
    // The opposite of the privileged pod: masked /proc/timer_list, no host devices.
    let r = exec(runtime, id, &["sh", "-c", PRIVILEGED_PROBE]).await?;
    ensure!(r.2 != 0, "unprivileged container sees host devices: {r:?}");
    let r = exec(runtime, id, &["sh", "-c", "test -c /proc/timer_list"]).await?;
    ensure!(r.2 == 0, "/proc/timer_list is not masked: {r:?}");
    let r = exec(
        runtime,
        id,
        &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"],
    )
    .await?;
    ensure!(
        r.2 != 0 && r.1.contains("Read-only file system"),
        "/proc/sys is not read-only: {r:?}"
    );
    // Mode 2 = filter: containerd's default profile reached the exec'd process.
    let r = exec(runtime, id, &["grep", "^Seccomp:", "/proc/self/status"]).await?;
    ensure!(
        r.0.split_whitespace().nth(1) == Some("2"),
        "RuntimeDefault seccomp not applied: {r:?}"
    );

    // A probe that overruns its timeout fails, and its process is killed (SIGKILL to the
    // exec'd pid through the shim) rather than left behind in the container.
    let started = Instant::now();
    let r = exec_with_timeout(runtime, id, &["sleep", "30"], 1).await;
    ensure!(r.is_err(), "ExecSync past its timeout succeeded: {r:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "ExecSync timeout took {:?}",
        started.elapsed()
    );
    let list = "for p in /proc/[0-9]*; do tr '\\000' ' ' < $p/cmdline; echo; done";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (procs, _, _) = exec(runtime, id, &["sh", "-c", list]).await?;
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
    runtime: &mut Runtime,
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
    ensure!(limit == 64 * MIB, "memory limit {limit}, want 64 MiB");

    runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 96 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("UpdateContainerResources")?;
    let (_, limit) = memory_limit_of(pid)?;
    ensure!(limit == 96 * MIB, "memory limit after update {limit}");

    let stats = runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .context("ContainerStats")?
        .into_inner()
        .stats
        .context("ContainerStats without stats")?;
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
            text.lines()
                .any(|l| l.ends_with(&format!(" stdout F {want}")))
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
async fn run_to_exit(
    runtime: &mut Runtime,
    pod: &str,
    sandbox_config: &PodSandboxConfig,
) -> Result<()> {
    let mut config = app_config(sandbox_config);
    config.metadata = Some(ContainerMetadata {
        name: "once".into(),
        attempt: 0,
    });
    config.args = vec![
        "id -u; id -G; touch /probe 2>/dev/null && echo writable || echo read-only; exit 7".into(),
    ];
    config.log_path = "once/0.log".into();
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000];
        sc.readonly_rootfs = true;
    }
    let id = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .context("CreateContainer once")?
        .into_inner()
        .container_id;
    runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (state, code) = loop {
        let (state, code) = container_state(runtime, &id).await?;
        if state == ContainerState::ContainerExited || Instant::now() > deadline {
            break (state, code);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        state == ContainerState::ContainerExited && code == 7,
        "run-to-exit container: {state:?} exit {code}"
    );
    wait_for_log(
        sandbox_config,
        "once/0.log",
        &["1000", "2000 3000", "read-only"],
    )
    .await?;
    runtime
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .context("RemoveContainer once")?;
    Ok(())
}

/// A privileged pod (node agents, CSI/CNI daemonsets): CRI hands berth every host device,
/// all capabilities, a writable /sys and no masked paths or seccomp.
async fn privileged_pod(node: &CriNode, runtime: &mut Runtime, handler: &str) -> Result<()> {
    let mut sandbox_config = pod_config(node, handler);
    if let Some(sc) = sandbox_config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    let pod = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .context("RunPodSandbox (privileged)")?
        .into_inner()
        .pod_sandbox_id;
    let mut config = app_config(&sandbox_config);
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
        sc.seccomp = None;
    }
    let id = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .context("CreateContainer (privileged)")?
        .into_inner()
        .container_id;
    runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer (privileged)")?;
    let (caps, _, _) = exec(runtime, &id, &["grep", "^CapEff:", "/proc/self/status"]).await?;
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
    let r = exec(runtime, &id, &["sh", "-c", PRIVILEGED_PROBE]).await?;
    ensure!(
        r.2 == 0,
        "privileged container lacks host devices or is masked: {r:?}"
    );
    let r = exec(runtime, &id, &["mount"]).await?;
    ensure!(
        r.0.lines().any(|l| l.contains(" on /sys type sysfs (rw")),
        "/sys is not writable in a privileged container:\n{}",
        r.0
    );
    runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .context("StopPodSandbox (privileged)")?;
    runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .context("RemovePodSandbox (privileged)")?;
    Ok(())
}

/// A pod on the pod network (the common case): CRI makes the netns and runs CNI, berth
/// joins that netns by path and sets the pod's hostname in its own UTS namespace.
async fn network_pod(node: &CriNode, runtime: &mut Runtime, handler: &str) -> Result<()> {
    let Some(net) = node.pod_network() else {
        eprintln!("SKIP pod-network pod: CNI plugins (containernetworking-plugins) missing");
        return Ok(());
    };
    let mut sandbox_config = pod_config(node, handler);
    sandbox_config.hostname = format!("net-{handler}");
    if let Some(ns) = sandbox_config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Pod.into();
    }
    // Network sysctls are only allowed (and only meaningful) in the pod's own netns.
    if let Some(l) = sandbox_config.linux.as_mut() {
        l.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    }
    let pod = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .context("RunPodSandbox (pod network)")?
        .into_inner()
        .pod_sandbox_id;
    let status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus (pod network)")?
        .into_inner()
        .status
        .context("PodSandboxStatus without status")?;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    let prefix = net.subnet.trim_end_matches("0/24");
    ensure!(
        ip.starts_with(prefix),
        "pod IP {ip:?} not in {}",
        net.subnet
    );

    let id = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(app_config(&sandbox_config)),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .context("CreateContainer (pod network)")?
        .into_inner()
        .container_id;
    runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer (pod network)")?;
    let r = exec(runtime, &id, &["hostname"]).await?;
    ensure!(r.0.trim() == sandbox_config.hostname, "hostname: {r:?}");
    let r = exec(runtime, &id, &["ip", "-4", "-o", "addr", "show", "eth0"]).await?;
    ensure!(r.0.contains(&format!(" {ip}/")), "eth0 lacks {ip}: {r:?}");
    let r = exec(
        runtime,
        &id,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    )
    .await?;
    ensure!(r.0 == "80\n", "pod net sysctl not applied: {r:?}");
    let r = exec(runtime, &id, &["ping", "-c", "1", "-W", "3", &net.gateway]).await?;
    ensure!(
        r.2 == 0,
        "gateway {} unreachable from the pod: {r:?}",
        net.gateway
    );

    runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .context("StopPodSandbox (pod network)")?;
    runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .context("RemovePodSandbox (pod network)")?;
    Ok(())
}
