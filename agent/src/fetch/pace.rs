//! Bounds on how long a transfer may take: an overall deadline and a minimum average rate,
//! enforced on the socket itself (below TLS), so that a server that drips one byte at a time,
//! into the response head, the TLS handshake or the body, cannot hold a download (or the head
//! probe) open beyond them. A per-read timeout alone does not do that: each byte resets it.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits a download or probe runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Longest a whole transfer may take, however small (the floor of the deadline).
    pub deadline: Duration,
    /// The deadline grows by this much per MiB of the size the server announces.
    pub deadline_per_mib: Duration,
    /// Least bytes per second, averaged over each `rate_window` (0: no minimum).
    pub min_rate_bps: u64,
    /// The window the minimum rate is averaged over.
    pub rate_window: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            deadline: Duration::from_secs(300),
            deadline_per_mib: Duration::from_secs(30),
            min_rate_bps: 1024,
            rate_window: Duration::from_secs(30),
        }
    }
}

impl TransferLimits {
    /// The deadline for a transfer of `size` bytes: the floor, or `deadline_per_mib` per
    /// started MiB when that is longer.
    pub fn deadline_for(&self, size: u64) -> Duration {
        let mib = u32::try_from(size.div_ceil(1 << 20)).unwrap_or(u32::MAX);
        self.deadline.max(self.deadline_per_mib.saturating_mul(mib))
    }
}

/// Why a transfer was cut: it took too long or went too slowly. Carried inside an
/// `io::Error` (kind TimedOut) so the layers above can tell it from a plain timeout: it is
/// final, reconnecting does not help.
#[derive(Debug)]
pub struct TooSlow(pub String);

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for TooSlow {}

pub fn too_slow(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, TooSlow(msg))
}

/// Whether `e` is a deadline or minimum-rate cut.
pub fn is_too_slow(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooSlow>())
}

/// One transfer's clock, shared by all its connections (retries do not restart it).
#[derive(Debug)]
pub struct Pace {
    start: Instant,
    deadline: Mutex<Instant>,
    limits: TransferLimits,
    /// What the error messages call the transfer (e.g. "download", "head probe").
    what: &'static str,
}

impl Pace {
    pub fn new(limits: TransferLimits, what: &'static str) -> Arc<Pace> {
        let start = Instant::now();
        Arc::new(Pace {
            start,
            deadline: Mutex::new(start + limits.deadline),
            limits,
            what,
        })
    }

    /// Sets the deadline for a transfer of `size` bytes (once the server said how big).
    pub fn size_known(&self, size: u64) {
        let d = self.start + self.limits.deadline_for(size);
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time left, or the error that says the deadline passed.
    pub fn remaining(&self) -> io::Result<Duration> {
        let now = Instant::now();
        let deadline = self.deadline();
        if now >= deadline {
            return Err(too_slow(format!(
                "{} not complete within its deadline of {} ms",
                self.what,
                deadline.duration_since(self.start).as_millis()
            )));
        }
        Ok(deadline - now)
    }
}

/// A TCP connection that enforces its transfer's `Pace` on every read and write.
pub struct Guarded {
    tcp: TcpStream,
    pace: Arc<Pace>,
    io_timeout: Duration,
    window_start: Instant,
    window_bytes: u64,
}

/// Timeouts of 0 mean "block forever" to the kernel: never ask for less than this.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl Guarded {
    pub fn new(tcp: TcpStream, pace: Arc<Pace>, io_timeout: Duration) -> Guarded {
        Guarded {
            tcp,
            pace,
            io_timeout,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Closes the current rate window when it is over: too few bytes in it is an error.
    fn check_rate(&mut self, now: Instant) -> io::Result<()> {
        let limits = &self.pace.limits;
        if limits.min_rate_bps == 0 || now < self.window_start + limits.rate_window {
            return Ok(());
        }
        let elapsed = now.duration_since(self.window_start);
        let need = u128::from(limits.min_rate_bps) * elapsed.as_millis() / 1000;
        if u128::from(self.window_bytes) < need {
            return Err(too_slow(format!(
                "{} too slow: {} bytes in {} ms, under the minimum of {} bytes/s",
                self.pace.what,
                self.window_bytes,
                elapsed.as_millis(),
                limits.min_rate_bps
            )));
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }

    /// How long the next socket call may block: the per-call timeout, cut to what is left of
    /// the deadline and of the rate window.
    fn wait(&mut self) -> io::Result<Duration> {
        let left = self.pace.remaining()?;
        self.check_rate(Instant::now())?;
        let mut wait = self.io_timeout.min(left);
        if self.pace.limits.min_rate_bps > 0 {
            let window_end = self.window_start + self.pace.limits.rate_window;
            wait = wait.min(window_end.saturating_duration_since(Instant::now()));
        }
        Ok(wait.max(MIN_WAIT))
    }

    /// Whether a timed-out call stopped at our own bound (deadline or window end), not at the
    /// per-call timeout.
    fn at_own_bound(&self) -> bool {
        let now = Instant::now();
        let window_over = self.pace.limits.min_rate_bps > 0
            && now >= self.window_start + self.pace.limits.rate_window;
        now >= self.pace.deadline() || window_over
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for Guarded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let wait = self.wait()?;
            self.tcp.set_read_timeout(Some(wait))?;
            match self.tcp.read(buf) {
                Ok(n) => {
                    self.window_bytes += n as u64;
                    return Ok(n);
                }
                // Our bound, not the server's silence per se: go round, which either reports
                // the deadline / rate or opens the next window.
                Err(e) if timed_out(&e) && self.at_own_bound() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Guarded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let wait = self.wait()?;
            self.tcp.set_write_timeout(Some(wait))?;
            match self.tcp.write(buf) {
                Err(e) if timed_out(&e) && self.at_own_bound() => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn deadline_scales_with_size_above_its_floor() {
        let l = TransferLimits {
            deadline: Duration::from_secs(60),
            deadline_per_mib: Duration::from_secs(10),
            min_rate_bps: 1024,
            rate_window: Duration::from_secs(30),
        };
        assert_eq!(l.deadline_for(0), Duration::from_secs(60));
        assert_eq!(l.deadline_for(5 << 20), Duration::from_secs(60));
        assert_eq!(l.deadline_for((10 << 20) + 1), Duration::from_secs(110));
        assert_eq!(
            l.deadline_for(u64::MAX),
            Duration::from_secs(10).saturating_mul(u32::MAX)
        );
    }

    /// A peer that sends one byte every 100 ms is cut at the end of the first rate window,
    /// although no single read ever waits long.
    #[test]
    fn a_drip_is_cut_by_the_minimum_rate() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for _ in 0..40 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let limits = TransferLimits {
            deadline: Duration::from_secs(30),
            deadline_per_mib: Duration::ZERO,
            min_rate_bps: 100,
            rate_window: Duration::from_millis(500),
        };
        let pace = Pace::new(limits, "test transfer");
        let mut g = Guarded::new(
            TcpStream::connect(addr).unwrap(),
            pace,
            Duration::from_secs(30),
        );
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        let err = loop {
            match g.read(&mut buf) {
                Ok(0) => panic!("the peer closed first"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(is_too_slow(&err), "{err}");
        assert!(
            err.to_string().contains("under the minimum of 100 bytes/s"),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(g);
        server.join().unwrap();
    }

    /// A silent peer is cut at the deadline, not at the (longer) per-read timeout.
    #[test]
    fn silence_is_cut_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = TransferLimits {
            deadline: Duration::from_millis(300),
            deadline_per_mib: Duration::ZERO,
            min_rate_bps: 0,
            rate_window: Duration::from_secs(30),
        };
        let mut g = Guarded::new(
            TcpStream::connect(addr).unwrap(),
            Pace::new(limits, "head probe"),
            Duration::from_secs(30),
        );
        let t0 = Instant::now();
        let err = g.read(&mut [0u8; 4]).unwrap_err();
        assert!(is_too_slow(&err), "{err}");
        assert!(
            err.to_string().contains("head probe not complete within"),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(listener);
    }
}
