//! Process stop signals: SIGTERM, SIGINT and SIGHUP set a bit and write an eventfd, which the
//! event loop (`run_loop`) polls. Installed once, before the VM is built, so a signal during
//! setup ends in a clean stop instead of the default action.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The eventfd SIGTERM/SIGINT/SIGHUP write to (written from the signal handler).
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
/// Which stop signals arrived since the loop last looked: bit `signo`.
static PENDING_SIGNALS: AtomicU32 = AtomicU32::new(0);
const STOP_SIGNALS: [(libc::c_int, &str); 3] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
];

fn bit(sig: libc::c_int) -> u32 {
    1 << sig
}

/// The stop signals that arrived since the last [`take_pending`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StopSignals(u32);

impl StopSignals {
    /// The name of one of them (SIGTERM before SIGINT before SIGHUP), or None if none came.
    pub(crate) fn first(self) -> Option<&'static str> {
        STOP_SIGNALS
            .iter()
            .find(|(sig, _)| self.0 & bit(*sig) != 0)
            .map(|(_, name)| *name)
    }

    /// The first of SIGTERM or SIGINT among them: an operator's "now" (SIGHUP, a closed
    /// terminal, is not).
    pub(crate) fn first_urgent(self) -> Option<&'static str> {
        StopSignals(self.0 & !bit(libc::SIGHUP)).first()
    }
}

/// Takes the stop signals received since the last call and empties the eventfd.
pub(crate) fn take_pending() -> StopSignals {
    drain(STOP_FD.load(Ordering::Relaxed));
    StopSignals(PENDING_SIGNALS.swap(0, Ordering::SeqCst))
}

extern "C" fn on_stop_signal(sig: libc::c_int) {
    if (0..32).contains(&sig) {
        // Lock-free atomics are async-signal-safe.
        PENDING_SIGNALS.fetch_or(bit(sig), Ordering::SeqCst);
    }
    let fd = STOP_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; the buffer is a local of the right length.
        unsafe {
            libc::write(fd, one.as_ptr().cast(), one.len());
        }
    }
}

/// Installs the stop-signal handlers (once) and returns the eventfd they write to.
pub fn stop_signal_fd() -> std::io::Result<RawFd> {
    let fd = STOP_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        return Ok(fd);
    }
    let evt = EventFd::new(EFD_NONBLOCK)?;
    // The eventfd lives for the rest of the process: the handler may fire at any time.
    let raw = evt.as_raw_fd();
    std::mem::forget(evt);
    STOP_FD.store(raw, Ordering::Relaxed);
    for (sig, _) in STOP_SIGNALS {
        // SAFETY: a zeroed sigaction is valid; the handler only uses atomics and write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(raw)
}

fn drain(fd: RawFd) {
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 8];
    // SAFETY: reading into a local buffer of the given length from an fd we own.
    unsafe {
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sigs: &[libc::c_int]) -> StopSignals {
        StopSignals(sigs.iter().map(|&s| bit(s)).fold(0, |a, b| a | b))
    }

    #[test]
    fn signal_names_prefer_term_then_int_then_hup() {
        assert_eq!(of(&[]).first(), None);
        assert_eq!(of(&[libc::SIGHUP]).first(), Some("SIGHUP"));
        assert_eq!(of(&[libc::SIGHUP, libc::SIGINT]).first(), Some("SIGINT"));
        assert_eq!(of(&[libc::SIGINT, libc::SIGTERM]).first(), Some("SIGTERM"));
        assert_eq!(of(&[libc::SIGUSR1]).first(), None);
    }

    #[test]
    fn only_term_and_int_are_urgent() {
        assert_eq!(of(&[libc::SIGHUP]).first_urgent(), None);
        assert_eq!(
            of(&[libc::SIGHUP, libc::SIGINT]).first_urgent(),
            Some("SIGINT")
        );
        assert_eq!(of(&[libc::SIGTERM]).first_urgent(), Some("SIGTERM"));
    }
}
