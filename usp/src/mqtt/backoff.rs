//! Reconnect back-off with jitter, after TR-369's retry rule: attempt n waits a random time in
//! [min * k^(n-1), min * k^n], both ends capped at `max`. Spreading the waits keeps a fleet of
//! agents from reconnecting in lock-step after a broker restart.

use std::io::Read;
use std::time::Duration;

/// Reconnect back-off settings (TR-369's retry parameters); the default waits 1 s .. 60 s,
/// doubling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait's lower end (TR-369 MinimumWaitInterval).
    pub min: Duration,
    /// No wait is longer than this.
    pub max: Duration,
    /// Growth per attempt in thousandths (TR-369 IntervalMultiplier; 2000 doubles).
    pub multiplier_permille: u32,
    /// Jitter seed; `None` seeds from /dev/urandom (tests fix it for repeatable waits).
    pub seed: Option<u64>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier_permille: 2000,
            seed: None,
        }
    }
}

/// A small PRNG (SplitMix64): jitter needs spread, not secrecy.
pub struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn urandom_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    // No /dev/urandom (a bare initramfs): the clock and our pid still differ per device.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl Backoff {
    /// Checks the settings; the text names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.min.is_zero() || self.min > self.max {
            return Err(format!(
                "back-off minimum {:?} must be above 0 and at most the maximum {:?}",
                self.min, self.max
            ));
        }
        if !(1000..=10_000).contains(&self.multiplier_permille) {
            return Err(format!(
                "back-off multiplier {} must be 1000..=10000 (thousandths)",
                self.multiplier_permille
            ));
        }
        Ok(())
    }

    /// A jitter source for `delay`, from `seed` when set.
    pub fn rng(&self) -> Jitter {
        Jitter(self.seed.unwrap_or_else(urandom_seed))
    }

    /// The lower and upper end of attempt `n`'s wait (n >= 1), both capped at `max`.
    pub fn range(&self, attempt: u32) -> (Duration, Duration) {
        let k = f64::from(self.multiplier_permille) / 1000.0;
        let n = attempt.clamp(1, 64) as i32;
        let max = self.max.as_secs_f64();
        let low = (self.min.as_secs_f64() * k.powi(n - 1)).min(max);
        let high = (self.min.as_secs_f64() * k.powi(n)).min(max);
        (Duration::from_secs_f64(low), Duration::from_secs_f64(high))
    }

    /// Attempt `n`'s wait: uniform in `range(n)`.
    pub fn delay(&self, attempt: u32, rng: &mut Jitter) -> Duration {
        let (low, high) = self.range(attempt);
        let span = (high - low).as_millis() as u64;
        let extra = if span == 0 {
            0
        } else {
            rng.next() % (span + 1)
        };
        low + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_grow_and_cap() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(10),
            ..Backoff::default()
        };
        let secs = |n| {
            let (l, h) = b.range(n);
            (l.as_secs(), h.as_secs())
        };
        assert_eq!(secs(1), (1, 2));
        assert_eq!(secs(2), (2, 4));
        assert_eq!(secs(3), (4, 8));
        assert_eq!(secs(4), (8, 10));
        assert_eq!(secs(50), (10, 10));
        assert_eq!(secs(u32::MAX), (10, 10));
    }

    #[test]
    fn delays_stay_in_range_and_spread() {
        let b = Backoff {
            seed: Some(7),
            ..Backoff::default()
        };
        let mut rng = b.rng();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.delay(3, &mut rng);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 100, "jitter barely varies: {}", seen.len());
    }

    #[test]
    fn bad_settings_are_refused() {
        for min in [Duration::ZERO, Duration::from_secs(120)] {
            let b = Backoff {
                min,
                ..Backoff::default()
            };
            assert!(b.check().unwrap_err().contains("minimum"));
        }
        let b = Backoff {
            multiplier_permille: 999,
            ..Backoff::default()
        };
        assert!(b.check().unwrap_err().contains("multiplier"));
    }
}
