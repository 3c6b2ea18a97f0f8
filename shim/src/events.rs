//! Task events, forwarded to containerd in the order they were queued.
//!
//! RPC handlers and the exit path queue events while holding the container lock, and one
//! thread forwards them, so `/tasks/start` always precedes that task's `/tasks/exit` and
//! no RPC waits on containerd's event service.
//!
//! Events are packed with spelled-out type names on the shim's own ttrpc connection
//! rather than through the crate's publisher, which builds the protobuf descriptors of
//! the task events only to learn those names (measured: ~60 KiB less RSS per shim).

use std::sync::mpsc::{self, Sender};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::ttrpc::Client;
use containerd_shim::protos::EventsClient;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{error, util};

pub type Event = Box<dyn MessageDyn + Send>;

/// The type name containerd's typeurl registry knows each task event topic's message by.
pub fn event_type(topic: &str) -> Option<&'static str> {
    Some(match topic {
        TASK_CREATE_EVENT_TOPIC => "containerd.events.TaskCreate",
        TASK_START_EVENT_TOPIC => "containerd.events.TaskStart",
        TASK_EXIT_EVENT_TOPIC => "containerd.events.TaskExit",
        TASK_DELETE_EVENT_TOPIC => "containerd.events.TaskDelete",
        TASK_OOM_EVENT_TOPIC => "containerd.events.TaskOOM",
        TASK_EXEC_ADDED_EVENT_TOPIC => "containerd.events.TaskExecAdded",
        TASK_EXEC_STARTED_EVENT_TOPIC => "containerd.events.TaskExecStarted",
        TASK_PAUSED_EVENT_TOPIC => "containerd.events.TaskPaused",
        TASK_RESUMED_EVENT_TOPIC => "containerd.events.TaskResumed",
        _ => return None,
    })
}

/// Where events go: our own connection, or the crate's publisher if we could not open one.
enum Sink {
    Own(EventsClient),
    Crate(RemotePublisher),
}

impl Sink {
    fn forward(&self, topic: &'static str, namespace: &str, event: Event) -> Result<(), String> {
        let client = match self {
            Sink::Own(c) => c,
            Sink::Crate(p) => {
                return p
                    .publish(Context::default(), topic, namespace, event)
                    .map_err(|e| e.to_string())
            }
        };
        let type_url = event_type(topic).ok_or_else(|| format!("no type for {topic}"))?;
        let message: &dyn MessageDyn = &*event;
        let envelope = Envelope {
            timestamp: Some(Timestamp::now()).into(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(Any {
                type_url: type_url.to_string(),
                value: message.write_to_bytes_dyn().map_err(|e| e.to_string())?,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let req = ForwardRequest {
            envelope: Some(envelope).into(),
            ..Default::default()
        };
        client
            .forward(Context::default(), &req)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[derive(Clone)]
pub struct EventQueue {
    tx: Sender<(&'static str, Event)>,
}

impl EventQueue {
    /// Starts the forwarding thread. `address` is containerd's TTRPC_ADDRESS; `fallback`
    /// (the crate's already connected publisher) is used if it cannot be dialled.
    pub fn start(address: &str, fallback: RemotePublisher, namespace: String) -> EventQueue {
        let sink = match util::connect(address).and_then(|fd| Ok(Client::new(fd)?)) {
            Ok(client) => {
                drop(fallback);
                Sink::Own(EventsClient::new(client))
            }
            Err(e) => {
                error!("connect {address} for events: {e}; using the default publisher");
                Sink::Crate(fallback)
            }
        };
        let (tx, rx) = mpsc::channel::<(&'static str, Event)>();
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = sink.forward(topic, &namespace, event) {
                        error!("publish {topic}: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            error!("spawn event thread: {e}");
        }
        EventQueue { tx }
    }

    pub fn send(&self, topic: &'static str, event: Event) {
        if self.tx.send((topic, event)).is_err() {
            error!("event thread gone, dropping {topic}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn event_types_match_the_protos() {
        let cases = [
            (TASK_CREATE_EVENT_TOPIC, TaskCreate::descriptor()),
            (TASK_START_EVENT_TOPIC, TaskStart::descriptor()),
            (TASK_EXIT_EVENT_TOPIC, TaskExit::descriptor()),
            (TASK_DELETE_EVENT_TOPIC, TaskDelete::descriptor()),
            (TASK_OOM_EVENT_TOPIC, TaskOOM::descriptor()),
            (TASK_EXEC_ADDED_EVENT_TOPIC, TaskExecAdded::descriptor()),
            (TASK_EXEC_STARTED_EVENT_TOPIC, TaskExecStarted::descriptor()),
            (TASK_PAUSED_EVENT_TOPIC, TaskPaused::descriptor()),
            (TASK_RESUMED_EVENT_TOPIC, TaskResumed::descriptor()),
        ];
        for (topic, descriptor) in cases {
            assert_eq!(event_type(topic), Some(descriptor.full_name()), "{topic}");
        }
        assert_eq!(event_type("/tasks/checkpointed"), None);
    }
}
