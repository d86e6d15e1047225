//! Notify requests sent with `send_resp` wait here for their NotifyResp and are sent again on
//! TR-369's schedule (R-NOT.1, R-NOT.2): retry n waits a random time in
//! [m·(k/1000)^(n-1), m·(k/1000)^n], n capped at 10, with m = 5 s and k = 2000 by default.
//! The OnBoardRequest is retried until the controller answers (R-NOT.6a). The table is bounded
//! (a controller that never answers cannot grow it) and lives in memory only: after a restart
//! the retry count starts at zero (R-NOT.4) and the data model sends a new OnBoardRequest.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many unanswered notifications are kept for retry; past this a new one is sent once.
pub const MAX_PENDING: usize = 32;
/// R-NOT.2: from the tenth retry on, the interval range stops growing.
const MAX_EXPONENT: i32 = 10;

/// The retry parameters of R-NOT.1 (Controller.{i}.USPNotifRetry*).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// m: the minimum wait interval.
    pub min_wait: Duration,
    /// k: the interval multiplier, in thousandths.
    pub multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_wait: Duration::from_secs(5),
            multiplier: 2000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based), drawn from R-NOT.1's range with `noise`
    /// in [0, 1).
    pub fn wait(&self, n: u32, noise: f64) -> Duration {
        let k = f64::from(self.multiplier.max(1000)) / 1000.0;
        let e = (n.max(1) as i32).min(MAX_EXPONENT);
        let lo = self.min_wait.as_secs_f64() * k.powi(e - 1);
        let hi = self.min_wait.as_secs_f64() * k.powi(e);
        Duration::from_secs_f64(lo + (hi - lo) * noise.clamp(0.0, 1.0))
    }
}

/// A notification waiting for its NotifyResp.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Endpoint ID of the controller it went to.
    pub to: String,
    /// The Notify's `msg_id`, which its NotifyResp carries back.
    pub msg_id: String,
    /// Whether this is the OnBoardRequest (answered: the controller is onboarded).
    pub onboard: bool,
    /// The encoded Record, sent again as it is.
    pub record: Vec<u8>,
    /// Retries sent so far.
    pub retries: u32,
    /// When the next retry is due.
    pub next_at: Instant,
}

/// The notifications waiting for their NotifyResp, at most `MAX_PENDING`.
#[derive(Debug, Default)]
pub struct Retries {
    /// The retry schedule (the controller's USPNotifRetry parameters).
    pub policy: RetryPolicy,
    /// Fixed at MAX_PENDING: the bound is the type's, and the table never reallocates.
    pending: heapless::Vec<Pending, MAX_PENDING>,
    seed: u64,
}

impl Retries {
    fn noise(&mut self) -> f64 {
        if self.seed == 0 {
            self.seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1;
        }
        // xorshift64: spreads retries of many agents; no cryptographic use.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Tracks a notification just sent; false when the table is full (it was sent once).
    pub fn track(&mut self, to: &str, msg_id: &str, onboard: bool, record: Vec<u8>) -> bool {
        if self.pending.is_full() {
            return false;
        }
        let noise = self.noise();
        let wait = self.policy.wait(1, noise);
        self.pending
            .push(Pending {
                to: to.to_string(),
                msg_id: msg_id.to_string(),
                onboard,
                record,
                retries: 0,
                next_at: Instant::now() + wait,
            })
            .is_ok()
    }

    /// The pending OnBoardRequest to `to`, if one is waiting.
    pub fn onboard_pending(&self, to: &str) -> bool {
        self.pending.iter().any(|p| p.onboard && p.to == to)
    }

    /// A NotifyResp from `from` for `msg_id`: the entry it answers, removed.
    pub fn answered(&mut self, from: &str, msg_id: &str) -> Option<Pending> {
        let i = self
            .pending
            .iter()
            .position(|p| p.to == from && p.msg_id == msg_id)?;
        Some(self.pending.remove(i))
    }

    /// The Records due again now, as (endpoint ID, Record) (each rescheduled on the next,
    /// longer, range).
    pub fn due(&mut self, now: Instant) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..self.pending.len() {
            if self.pending[i].next_at > now {
                continue;
            }
            let noise = self.noise();
            let p = &mut self.pending[i];
            p.retries = p.retries.saturating_add(1);
            p.next_at = now + self.policy.wait(p.retries + 1, noise);
            out.push((p.to.clone(), p.record.clone()));
        }
        out
    }

    /// After a reconnect: everything pending is sent again now (the broker may have lost it),
    /// keeping each entry's retry count.
    pub fn resend_all(&mut self, now: Instant) -> Vec<(String, Vec<u8>)> {
        for p in &mut self.pending {
            p.next_at = now;
        }
        self.due(now)
    }

    /// The notifications waiting, oldest first.
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_r_not_1_ranges() {
        let p = RetryPolicy::default();
        assert_eq!(p.wait(1, 0.0), Duration::from_secs(5));
        assert_eq!(p.wait(1, 1.0), Duration::from_secs(10));
        assert_eq!(p.wait(3, 0.0), Duration::from_secs(20));
        assert_eq!(p.wait(10, 1.0), Duration::from_secs(5120));
        assert_eq!(p.wait(25, 1.0), Duration::from_secs(5120), "R-NOT.2 cap");
    }

    #[test]
    fn bounded_and_answered() {
        let mut r = Retries::default();
        for i in 0..MAX_PENDING {
            assert!(r.track("c", &format!("m{i}"), false, vec![1]));
        }
        assert!(!r.track("c", "over", false, vec![1]));
        assert_eq!(
            r.pending().len(),
            MAX_PENDING,
            "the refused one is not kept"
        );
        assert!(!r.pending().iter().any(|p| p.msg_id == "over"));
        assert!(
            r.answered("other", "m0").is_none(),
            "only the addressee answers"
        );
        assert!(r.answered("c", "m0").is_some());
        assert_eq!(r.pending().len(), MAX_PENDING - 1);
        // A freed slot takes a new one again, and only one.
        assert!(r.track("c", "again", false, vec![1]));
        assert!(!r.track("c", "over", false, vec![1]));
    }
}
