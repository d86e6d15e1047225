//! The board's serial console as a growing transcript that tests can wait on.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Console output cap: a runaway guest cannot make the harness use unbounded memory.
const MAX_TRANSCRIPT: usize = 8 << 20;

#[derive(Default)]
struct State {
    text: String,
    /// Bytes dropped from the front once the cap was hit.
    dropped: usize,
    closed: bool,
}

/// Said in a timeout error when the board itself stopped making progress: its kernel reported a
/// stall ([`board_stalls`]) or it no longer answered its console (`BoardVm::run`). Tests that
/// retry a stalled board look for it.
pub const BOARD_STALLED: &str = "the board stalled";

/// How a console wait's timeout error begins.
pub const TIMED_OUT: &str = "timed out after";

/// The lines where a board's own kernel says it stopped making progress: a soft lockup (a CPU
/// stuck in the kernel for tens of seconds) or an RCU stall. Under TCG these come from the
/// emulation, not from cpevisor; a board that prints them may never answer its console again.
pub fn board_stalls(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| {
            [
                "soft lockup",
                "self-detected stall",
                "detected stalls on CPU",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect()
}

/// Shared transcript, filled by a reader thread.
#[derive(Clone, Default)]
pub struct Console {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Console {
    /// Starts a thread copying `source` into the transcript (and to `tee`, e.g. a log file).
    pub fn spawn_reader(
        &self,
        mut source: impl Read + Send + 'static,
        mut tee: Option<Box<dyn std::io::Write + Send>>,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(f) = tee.as_mut() {
                    let _ = f.write_all(&buf[..n]).and_then(|_| f.flush());
                }
                let (lock, cvar) = &*me.inner;
                let mut st = lock.lock().unwrap();
                // Serial consoles send \r\n; tests match on \n only.
                let chunk = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                st.text.push_str(&chunk);
                if st.text.len() > MAX_TRANSCRIPT {
                    let mut cut = st.text.len() - MAX_TRANSCRIPT / 2;
                    while !st.text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    st.text.drain(..cut);
                    st.dropped += cut;
                }
                cvar.notify_all();
            }
            let (lock, cvar) = &*me.inner;
            lock.lock().unwrap().closed = true;
            cvar.notify_all();
        })
    }

    /// Absolute position of the end of the transcript so far.
    pub fn position(&self) -> usize {
        let st = self.inner.0.lock().unwrap();
        st.dropped + st.text.len()
    }

    /// Waits until `needle` appears at or after absolute position `from`; returns the absolute
    /// position just past it and the text between `from` and the end of the needle.
    pub fn wait_for(
        &self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let mut st = lock.lock().unwrap();
        loop {
            let start = from.saturating_sub(st.dropped).min(st.text.len());
            if let Some(i) = st.text[start..].find(needle) {
                let end = start + i + needle.len();
                return Ok((st.dropped + end, st.text[start..end].to_string()));
            }
            if st.closed {
                return Err(format!(
                    "console closed before {needle:?} appeared; last output:\n{}",
                    tail(&st.text, 3000)
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                // A stalled board kernel's first report is often far above the tail: name it.
                let stalls = board_stalls(&st.text);
                let stalled = match stalls.first() {
                    Some(line) => {
                        format!("; {BOARD_STALLED}: its kernel reported {:?}", line.trim())
                    }
                    None => String::new(),
                };
                return Err(format!(
                    "{TIMED_OUT} {timeout:?} waiting for {needle:?}{stalled}; last output:\n{}",
                    tail(&st.text, 3000)
                ));
            }
            st = cvar.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// The whole transcript kept so far.
    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().text.clone()
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut cut = s.len().saturating_sub(n);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_markers_in_order_and_times_out() {
        let c = Console::default();
        let (r, mut w) = std::os::unix::net::UnixStream::pair().unwrap();
        c.spawn_reader(r, None);
        std::io::Write::write_all(&mut w, b"boot\r\nREADY one\r\nREADY two\r\n").unwrap();
        let (p, text) = c.wait_for("READY", 0, Duration::from_secs(5)).unwrap();
        assert!(text.ends_with("READY"));
        assert!(!text.contains('\r'));
        let (_, text2) = c.wait_for("READY", p, Duration::from_secs(5)).unwrap();
        assert_eq!(text2, " one\nREADY");
        let err = c
            .wait_for("never", 0, Duration::from_millis(50))
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        drop(w);
        let err = c.wait_for("never", 0, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("closed"), "{err}");
    }

    #[test]
    fn stalls_are_soft_lockups_and_rcu_stalls() {
        let console =
            "[  320.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [cpevisor-vmm:301]\n\
                       [  321.0] rcu: INFO: rcu_preempt self-detected stall on CPU\n\
                       [  322.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                       [  323.0] kvm_inject_apic_timer_irqs+0x27/0x70 [kvm]\n";
        assert_eq!(board_stalls(console).len(), 3);
        assert!(board_stalls("[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1\n").is_empty());
    }
}
