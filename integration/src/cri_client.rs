//! A kubelet-shaped CRI v1 client over containerd's unix socket: the calls the kubelet
//! makes to run a pod, each failing with the RPC's name as context.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStats, ContainerStatsRequest,
    ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, LinuxContainerResources, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxStatus, PodSandboxStatusRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest, VersionRequest,
    VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// What ExecSync returned.
#[derive(Debug, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Cheap to clone: clones share one HTTP/2 connection, so concurrent calls (probes)
/// run in parallel like the kubelet's workers.
#[derive(Clone)]
pub struct Kubelet {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Kubelet {
    /// Connects to the CRI endpoint at `socket` (the URI is a placeholder for tonic).
    pub async fn connect(socket: &Path) -> Result<Kubelet> {
        let path = socket.to_path_buf();
        let channel =
            Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .with_context(|| format!("connect to the CRI socket {}", socket.display()))?;
        Ok(Kubelet {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub async fn version(&mut self) -> Result<VersionResponse> {
        let req = VersionRequest {
            version: "v1".into(),
        };
        Ok(self
            .runtime
            .version(req)
            .await
            .context("Version")?
            .into_inner())
    }

    /// Whether the runtime reports the condition `kind` (e.g. "RuntimeReady") as true.
    pub async fn condition(&mut self, kind: &str) -> Result<bool> {
        let status = self
            .runtime
            .status(StatusRequest { verbose: false })
            .await
            .context("Status")?
            .into_inner();
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.r#type == kind && c.status))
    }

    pub async fn has_image(&mut self, image: &str) -> Result<bool> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let st = self
            .images
            .image_status(req)
            .await
            .with_context(|| format!("ImageStatus {image}"))?
            .into_inner();
        Ok(st.image.is_some())
    }

    /// RunPodSandbox with the RuntimeClass `handler`; returns the sandbox id.
    pub async fn run_pod(&mut self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        Ok(self
            .runtime
            .run_pod_sandbox(req)
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn pod_status(&mut self, pod: &str) -> Result<PodSandboxStatus> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        };
        self.runtime
            .pod_sandbox_status(req)
            .await
            .context("PodSandboxStatus")?
            .into_inner()
            .status
            .context("PodSandboxStatus without status")
    }

    pub async fn stop_pod(&mut self, pod: &str) -> Result<()> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.runtime
            .stop_pod_sandbox(req)
            .await
            .context("StopPodSandbox")?;
        Ok(())
    }

    pub async fn remove_pod(&mut self, pod: &str) -> Result<()> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.runtime
            .remove_pod_sandbox(req)
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }

    /// Best effort, as the kubelet does for pods it no longer wants: stop and remove every
    /// sandbox (which releases CNI networks and netns mounts before containerd goes away).
    pub async fn remove_all_pods(&mut self) {
        let Ok(list) = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
        else {
            return;
        };
        for pod in list.into_inner().items {
            let _ = self.stop_pod(&pod.id).await;
            let _ = self.remove_pod(&pod.id).await;
        }
    }

    /// CreateContainer in `pod`; returns the container id.
    pub async fn create(
        &mut self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        };
        Ok(self
            .runtime
            .create_container(req)
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id)
    }

    pub async fn start(&mut self, id: &str) -> Result<()> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.runtime
            .start_container(req)
            .await
            .context("StartContainer")?;
        Ok(())
    }

    /// CreateContainer then StartContainer.
    pub async fn run(
        &mut self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String> {
        let id = self.create(pod, config, sandbox).await?;
        self.start(&id).await?;
        Ok(id)
    }

    pub async fn status(&mut self, id: &str) -> Result<ContainerStatus> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.runtime
            .container_status(req)
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without status")
    }

    /// Polls ContainerStatus until the container exited; returns its exit code.
    pub async fn wait_exited(&mut self, id: &str, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(id).await?;
            if st.state() == ContainerState::ContainerExited {
                return Ok(st.exit_code);
            }
            if Instant::now() > deadline {
                bail!("container {id} still {:?} after {timeout:?}", st.state());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The containers of `pod`.
    pub async fn list(&mut self, pod: &str) -> Result<Vec<k8s_cri::v1::Container>> {
        let req = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        };
        Ok(self
            .runtime
            .list_containers(req)
            .await
            .context("ListContainers")?
            .into_inner()
            .containers)
    }

    /// ExecSync with the kubelet's probe timeout.
    pub async fn exec(&mut self, id: &str, cmd: &[&str]) -> Result<ExecResult> {
        self.exec_with_timeout(id, cmd, 10).await
    }

    pub async fn exec_with_timeout(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecResult> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        let r = self
            .runtime
            .exec_sync(req)
            .await
            .with_context(|| format!("ExecSync {cmd:?}"))?
            .into_inner();
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            exit_code: r.exit_code,
        })
    }

    pub async fn update(&mut self, id: &str, resources: LinuxContainerResources) -> Result<()> {
        let req = UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(resources),
            ..Default::default()
        };
        self.runtime
            .update_container_resources(req)
            .await
            .context("UpdateContainerResources")?;
        Ok(())
    }

    pub async fn stats(&mut self, id: &str) -> Result<ContainerStats> {
        let req = ContainerStatsRequest {
            container_id: id.into(),
        };
        self.runtime
            .container_stats(req)
            .await
            .context("ContainerStats")?
            .into_inner()
            .stats
            .context("ContainerStats without stats")
    }

    /// StopContainer: SIGTERM, then SIGKILL after `grace_secs`.
    pub async fn stop(&mut self, id: &str, grace_secs: i64) -> Result<()> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout: grace_secs,
        };
        self.runtime
            .stop_container(req)
            .await
            .context("StopContainer")?;
        Ok(())
    }

    pub async fn remove(&mut self, id: &str) -> Result<()> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.runtime
            .remove_container(req)
            .await
            .context("RemoveContainer")?;
        Ok(())
    }
}
