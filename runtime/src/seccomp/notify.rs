//! SCMP_ACT_NOTIFY: getting the listener fd from the process that installs the filter
//! to the seccomp agent listening at `listenerPath`, as runc 1.1 does.
//!
//! The filter is installed by container init (or the process `exec` starts) inside the
//! container's mount namespace, where the host's `listenerPath` cannot be reached. So,
//! like runc, that process sends the fd to the runtime on the host over the sync channel
//! ([`install`]) and waits; the runtime connects to `listenerPath`, sends runc's
//! `ContainerProcessState` JSON with the fd attached in one message ([`Agent::hand_over`])
//! and says done. Both sides then close their copies: only the agent holds the listener.
//! If it goes away, notified calls fail with ENOSYS (the kernel's answer without a
//! listener).
//!
//! Until the agent has the fd, a notified call would block for ever; that is why the
//! hand-over happens right after the filter is installed, before anything else runs.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::Spec;

use super::CompiledSeccomp;
use crate::sync::{Channel, Msg};

/// The name of the listener in `fds` (runtime-spec's `SeccompFdName`).
const SECCOMP_FD_NAME: &str = "seccompFd";

/// Installs `filter` and, when it has a listener, passes the fd to the runtime over
/// `chan` and waits until the agent has it. Runs in the process being confined.
pub fn install(filter: &CompiledSeccomp, chan: &Channel) -> Result<()> {
    let Some(listener) = filter.install().context("install seccomp filter")? else {
        return Ok(());
    };
    chan.send_with_fd(&Msg::SeccompListener, listener.as_fd())
        .context("pass the seccomp listener to the runtime")?;
    // Ours is not needed any more (and must not leak into the container's process).
    drop(listener);
    chan.expect(Msg::SeccompListenerDone)
}

/// Hands `listener`, sent by process `pid`, to `agent` (see [`Agent::hand_over`]).
pub fn hand_over(
    agent: Option<&Agent>,
    listener: OwnedFd,
    pid: i32,
    state: serde_json::Value,
) -> Result<()> {
    // compile() refuses notify rules without listenerPath: this is a peer's bug.
    let agent = agent.context("got a seccomp listener but the profile has no listenerPath")?;
    agent.hand_over(listener, pid, state)
}

/// Where listener fds go: the profile's `listenerPath` and `listenerMetadata`.
#[derive(Debug, Clone)]
pub struct Agent {
    path: PathBuf,
    metadata: Option<String>,
}

impl Agent {
    /// The agent of `spec`'s seccomp profile, if it names one.
    pub fn from_spec(spec: &Spec) -> Option<Agent> {
        let seccomp = spec.linux().as_ref()?.seccomp().as_ref()?;
        Some(Agent {
            path: seccomp.listener_path().clone()?,
            metadata: seccomp.listener_metadata().clone(),
        })
    }

    /// Connects to the agent and sends runc's `ContainerProcessState` for process `pid`
    /// (`state`: the container's OCI state) with `listener` attached, in one message.
    pub fn hand_over(&self, listener: OwnedFd, pid: i32, state: serde_json::Value) -> Result<()> {
        let stream = UnixStream::connect(&self.path).with_context(|| {
            format!(
                "failed to connect with seccomp agent specified in the seccomp profile: {}",
                self.path.display()
            )
        })?;
        let body = serde_json::to_vec(&self.process_state(pid, state))?;
        let fds = [listener.as_raw_fd()];
        sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&body)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .with_context(|| format!("cannot send seccomp fd to {}", self.path.display()))?;
        Ok(())
    }

    /// runtime-spec's `ContainerProcessState`.
    fn process_state(&self, pid: i32, state: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": crate::state::OCI_VERSION,
            "fds": [SECCOMP_FD_NAME],
            "pid": pid,
            "state": state,
        });
        // omitempty, as in runtime-spec.
        if let Some(m) = self.metadata.as_deref().filter(|m| !m.is_empty()) {
            v["metadata"] = serde_json::json!(m);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn hand_over_sends_state_and_fd() {
        let dir = std::env::temp_dir().join(format!("berth-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixListener::bind(&path).unwrap();
        let agent = Agent {
            path: path.clone(),
            metadata: Some("meta".into()),
        };
        let (a, _b) = UnixStream::pair().unwrap();
        let state = serde_json::json!({"id": "c1", "status": "creating", "pid": 42});
        agent.hand_over(a.into(), 42, state.clone()).unwrap();
        let (conn, _) = server.accept().unwrap();
        let fd = crate::console::recv_fd(conn.as_raw_fd()).unwrap();
        assert!(fd.as_raw_fd() >= 0);
        drop(conn);

        // The JSON comes with the fd; read it again through a second hand-over.
        let (a, _b) = UnixStream::pair().unwrap();
        agent.hand_over(a.into(), 7, state.clone()).unwrap();
        let (conn, _) = server.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = nix::sys::socket::recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(got["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(got["pid"], 7);
        assert_eq!(got["metadata"], "meta");
        assert_eq!(got["state"], state);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_socket_is_a_clear_error() {
        let agent = Agent {
            path: "/nonexistent/berth-agent.sock".into(),
            metadata: None,
        };
        let (a, _b) = UnixStream::pair().unwrap();
        let err = format!(
            "{:#}",
            agent
                .hand_over(a.into(), 1, serde_json::json!({}))
                .unwrap_err()
        );
        assert!(
            err.contains("failed to connect with seccomp agent")
                && err.contains("/nonexistent/berth-agent.sock"),
            "{err}"
        );
    }
}
