//! Published events: a bounded in-RAM ring (readable through the API) plus subscribers (the USP
//! layer later). Subscribers get a bounded channel; a subscriber that does not keep up loses
//! events rather than stalling the agent.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

use crate::model::Event;
use crate::supervise::lock;

/// Events kept in RAM for `since` (older ones are dropped).
pub const EVENT_RING_CAPACITY: usize = 256;
const SUBSCRIBER_QUEUE: usize = 64;

/// The agent's published events: a bounded ring plus subscriber channels.
pub struct EventLog {
    inner: Mutex<Inner>,
}

struct Inner {
    next_seq: u64,
    ring: VecDeque<(u64, Event)>,
    subscribers: Vec<SyncSender<(u64, Event)>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log; numbering starts at 1.
    pub fn new() -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ring: VecDeque::with_capacity(16),
                subscribers: Vec::new(),
            }),
        }
    }

    /// Numbers and keeps `event`, hands it to every subscriber, and returns its number.
    pub fn publish(&self, event: Event) -> u64 {
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.ring.len() == EVENT_RING_CAPACITY {
            inner.ring.pop_front();
        }
        inner.ring.push_back((seq, event.clone()));
        inner
            .subscribers
            .retain(|s| match s.try_send((seq, event.clone())) {
                Ok(()) | Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Disconnected(_)) => false,
            });
        seq
    }

    /// Events with a sequence number above `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<(u64, Event)> {
        lock(&self.inner)
            .ring
            .iter()
            .filter(|(s, _)| *s > after)
            .cloned()
            .collect()
    }

    /// A channel that receives every event published from now on; a full channel loses events.
    pub fn subscribe(&self) -> Receiver<(u64, Event)> {
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        lock(&self.inner).subscribers.push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EuStatus, EuValueChange, ExecutionFaultCode};

    fn ev(i: usize) -> Event {
        Event::EuValueChange(EuValueChange {
            eu_id: format!("eu-{i}"),
            status: EuStatus::Idle,
            execution_fault_code: ExecutionFaultCode::NoFault,
            execution_fault_message: String::new(),
            time: String::new(),
        })
    }

    #[test]
    fn ring_is_bounded_and_numbered() {
        let log = EventLog::new();
        let rx = log.subscribe();
        for i in 0..EVENT_RING_CAPACITY + 10 {
            log.publish(ev(i));
        }
        let all = log.since(0);
        assert_eq!(all.len(), EVENT_RING_CAPACITY);
        assert_eq!(all[0].0, 11);
        assert_eq!(log.since(all.last().unwrap().0).len(), 0);
        // The subscriber kept the first SUBSCRIBER_QUEUE and dropped the rest.
        assert_eq!(rx.try_iter().count(), SUBSCRIBER_QUEUE);
    }
}
