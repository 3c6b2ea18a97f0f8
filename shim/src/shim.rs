//! The shim binary's lifecycle: `start` (spawn the server, print its address), `delete`
//! (clean up after a dead shim) and serving the task API until Shutdown.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{spawn, warn, Config, Error, ExitSignal, Flags, Shim, StartOpts};

use crate::berth::{self, Berth};
use crate::events::EventQueue;
use crate::rootfs;
use crate::service::{RuntimeRecord, Service, RUNTIME_FILE};

pub struct BerthShim {
    id: String,
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

impl BerthShim {
    /// A shim that was killed could not remove its ttrpc socket: do it for it, from the
    /// address `start` recorded in the bundle.
    fn remove_dead_socket(&self) {
        let Ok(address) = std::fs::read_to_string(self.bundle.join("address")) else {
            return;
        };
        let path = Path::new(address.trim().trim_start_matches("unix://"));
        let is_socket = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if is_socket {
            if let Err(e) = std::fs::remove_file(path) {
                warn!("remove {}: {e}", path.display());
            }
        }
    }
}

impl Shim for BerthShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        // containerd runs the shim with the bundle as cwd; `delete` may also pass -bundle.
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        BerthShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // One shim per container: group by the container id.
        let grouping = opts.id.clone();
        let (_pid, address) = spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let record: Option<RuntimeRecord> = std::fs::read(self.bundle.join(RUNTIME_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (binary, root) = match record {
            Some(r) => (r.binary, r.root),
            None => (
                berth::find_binary("").map_err(|e| Error::Other(format!("{e:#}")))?,
                berth::default_root(&self.namespace),
            ),
        };
        let berth = Berth {
            binary,
            root,
            log: self.bundle.join("log.json"),
        };
        // Nothing to force-delete when berth has no state left (the usual case: containerd
        // runs this after every shim exit, even a clean one); skipping saves a berth run.
        let has_state = berth.root.join(&self.id).exists();
        let deleted = if has_state {
            berth.delete(&self.id, true)
        } else {
            Ok(())
        };
        if let Err(e) = deleted {
            let msg = format!("{e:#}");
            if !msg.contains("does not exist") {
                return Err(Error::Other(format!(
                    "berth delete --force {}: {msg}",
                    self.id
                )));
            }
        }
        rootfs::unmount(&self.bundle.join("rootfs"));
        self.remove_dead_socket();
        Ok(DeleteResponse {
            // The task was killed with SIGKILL (128 + 9), as containerd-shim-runc-v2 reports.
            exit_status: 137,
            exited_at: Some(Timestamp::now()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        // bootstrap already required TTRPC_ADDRESS to build `publisher`.
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let events = EventQueue::start(&address, publisher, self.namespace.clone());
        Service::new(events, self.namespace.clone(), Arc::clone(&self.exit))
    }
}
