//! What the MQTT and WebSocket sessions share: the handle the daemon holds ([`Session`]: a
//! thread owning one endpoint and its connection, stopped on `stop` or drop), the counters
//! both keep ([`SessionStats`]), and when their loops ask the data model for notifications
//! (`Wakeup`). The MTPs themselves are in `mqtt` and `websocket`; `usp::start` picks one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a loop waits for traffic before it looks at the agent's events.
pub(super) const TICK: Duration = Duration::from_millis(100);
/// Even without events, the data model is polled this often (completions of commands that
/// published no event, objects that changed behind the event log's back).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Stack of a session's threads.
pub(super) const THREAD_STACK: usize = 256 * 1024;

/// What a session did, for logs, tests and the fleet figures. (Behind a mutex: 32-bit MIPS
/// has no 64-bit atomics.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Records received (PUBLISHes on our topic, WebSocket binary messages).
    pub received: u64,
    /// Records handed to the transport for sending.
    pub sent: u64,
    /// Records the transport refused (queue full, too large), with no known topic, or for a
    /// controller not on this connection.
    pub send_dropped: u64,
    /// Received messages with a foreign Content Type.
    pub ignored: u64,
    /// Connections made to the broker or controller (the first and every reconnect).
    pub connects: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters(Mutex<SessionStats>);

impl Counters {
    pub(super) fn bump(&self, f: impl FnOnce(&mut SessionStats)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn get(&self) -> SessionStats {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The data model reads the agent's events itself; these only say that it is worth asking
/// for notifications. A loop asks when an event arrived, or when it has not asked for
/// [`IDLE_POLL`].
pub(super) struct Wakeup {
    agent_events: Receiver<(u64, crate::model::Event)>,
    last_poll: Instant,
}

impl Wakeup {
    pub(super) fn new(agent_events: Receiver<(u64, crate::model::Event)>) -> Wakeup {
        Wakeup {
            agent_events,
            last_poll: Instant::now(),
        }
    }

    /// Whether an agent event arrived since the last look (drains them).
    pub(super) fn woke(&mut self) -> bool {
        self.agent_events.try_iter().count() > 0
    }

    /// Whether to poll now: an event arrived, or the idle interval passed.
    pub(super) fn due(&mut self) -> bool {
        self.woke() || self.last_poll.elapsed() >= IDLE_POLL
    }

    /// The data model was just polled.
    pub(super) fn polled(&mut self) {
        self.last_poll = Instant::now();
    }
}

/// A running session: a thread owning the endpoint and its connection.
pub struct Session {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Counters>,
}

impl Session {
    /// Starts `run` on a thread named `name`; it must return soon after `stop` is set.
    pub(super) fn spawn(
        name: &str,
        stop: Arc<AtomicBool>,
        stats: Arc<Counters>,
        run: impl FnOnce() + Send + 'static,
    ) -> Result<Session, String> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .stack_size(THREAD_STACK)
            .spawn(run)
            .map_err(|e| format!("cannot start the USP session thread: {e}"))?;
        Ok(Session {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// A copy of the counts so far.
    pub fn stats(&self) -> SessionStats {
        self.stats.get()
    }

    /// Disconnects (MQTT DISCONNECT, WebSocket close) and ends the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.halt();
    }
}
