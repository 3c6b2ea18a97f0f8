//! Build progress events, shared by the embedded engine, the daemon (which
//! streams them over gRPC) and the client UIs.
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A step begins (`message` is empty).
    Started,
    /// A step was satisfied from the cache.
    Cached,
    /// A step ran; `message` says why it was not cached.
    Completed,
    /// One line of output of a RUN step.
    Log,
    /// General information (e.g. resolved base image).
    Info,
    /// The build failed; `message` is the error.
    Error,
    /// The build finished; `image_digest` is set.
    Done,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Stage name (or index) the event belongs to.
    pub stage: String,
    /// 1-based step number within the whole build, 0 for build-level events.
    pub step: u32,
    /// The instruction as written.
    pub instruction: String,
    pub message: String,
    pub image_digest: String,
    pub seconds: f64,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            stage: String::new(),
            step: 0,
            instruction: String::new(),
            message: String::new(),
            image_digest: String::new(),
            seconds: 0.0,
        }
    }
}

/// Receives events; implementations must be thread-safe (stages run in parallel).
pub trait Progress: Send + Sync {
    fn event(&self, e: Event);
}

/// Discards everything.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event) {}
}

/// Collects events in memory (tests, the daemon's buffer).
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Progress for Recorder {
    fn event(&self, e: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl<F: Fn(Event) + Send + Sync> Progress for F {
    fn event(&self, e: Event) {
        self(e)
    }
}

/// One plain-text line for an event, as `--progress plain` prints it.
pub fn plain_line(e: &Event) -> Option<String> {
    let tag = if e.step > 0 {
        format!("#{} [{}] ", e.step, e.stage)
    } else {
        String::new()
    };
    Some(match e.kind {
        EventKind::Started => format!("{tag}{}", e.instruction),
        EventKind::Cached => format!("{tag}CACHED"),
        EventKind::Completed if e.message.is_empty() => format!("{tag}DONE {:.3}s", e.seconds),
        EventKind::Completed => format!("{tag}DONE {:.3}s ({})", e.seconds, e.message),
        EventKind::Log => format!("{tag}{}", e.message),
        EventKind::Info => format!("{tag}{}", e.message),
        EventKind::Error => format!("{tag}ERROR: {}", e.message),
        EventKind::Done => format!("writing image {} done", e.image_digest),
    })
}
