//! Task events, forwarded to containerd in the order they were queued.
//!
//! RPC handlers and the exit path queue events while holding the container lock, and one
//! thread forwards them, so `/tasks/start` always precedes that task's `/tasks/exit` and
//! no RPC waits on containerd's event service.

use std::sync::mpsc::{self, Sender};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{error, Context};

pub type Event = Box<dyn MessageDyn + Send>;

#[derive(Clone)]
pub struct EventQueue {
    tx: Sender<(&'static str, Event)>,
}

impl EventQueue {
    pub fn start(publisher: RemotePublisher, namespace: String) -> EventQueue {
        let (tx, rx) = mpsc::channel::<(&'static str, Event)>();
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, event)
                    {
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
