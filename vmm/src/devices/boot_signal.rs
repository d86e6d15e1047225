//! Boot-ready signal: the guest's way of saying "my app is up".
//!
//! The guest writes any value to a fixed address; the first write logs, on the VMM's stderr,
//! `boot-ready: <ms> ms since VMM start` (milliseconds with three decimals, measured from the
//! process start instant the VMM passes in) and makes the figure readable through
//! [`BootReady`] (control socket status, benchmarks). Later writes are ignored.
//!
//! Addresses (fixed: guests hard-code them):
//! - x86_64: MMIO page at [`X86_MMIO_ADDR`] = 0xcfff_f000 (just below the virtio-mmio window,
//!   above RAM), any width 1 to 8 at offset 0. From a Linux guest: `devmem 0xcffff000 8 1`.
//!   The I/O port [`X86_PORT`] = 0x3f0 (one byte) works too, for kernels with /dev/port:
//!   `printf '\001' | dd of=/dev/port bs=1 seek=1008 count=1`. Both reach the same device.
//! - aarch64: MMIO page at [`AARCH64_MMIO_ADDR`] = 0x0902_0000 (next to the serial port and
//!   the RTC in the VMM's device area, `arch/aarch64/layout.rs`), any width 1 to 8 at offset
//!   0. From a Linux guest: `devmem 0x09020000 8 1` (busybox).
//!
//! Whoever started the VMM learns of it through `ready_fd` in the VM description (an inherited
//! pipe's write end): the first signal writes one byte there and closes it. That channel, not
//! the stderr line, is what a supervisor trusts: the guest's console shares the VMM's output
//! and can print any text, but only the device itself writes to the pipe.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::BusDevice;
use crate::config::error::ConfigError;

/// x86 port the guest writes to.
pub const X86_PORT: u64 = 0x3f0;
/// Port range length on x86.
pub const X86_PORT_LEN: u64 = 1;
/// x86_64 guest-physical address the guest writes to (no /dev/port needed, only /dev/mem).
pub const X86_MMIO_ADDR: u64 = 0xcfff_f000;
/// MMIO window length on x86_64 (one page).
pub const X86_MMIO_LEN: u64 = 0x1000;
/// aarch64 guest-physical address the guest writes to.
pub const AARCH64_MMIO_ADDR: u64 = 0x0902_0000;
/// MMIO window length on aarch64 (one page, so no other device shares it).
pub const AARCH64_MMIO_LEN: u64 = 0x1000;

const NOT_READY: u64 = u64::MAX;

/// Read side of the signal: cheap to clone, shareable with the control socket thread.
#[derive(Clone)]
pub struct BootReady {
    ready_us: Arc<AtomicU64>,
}

impl BootReady {
    /// Microseconds from VMM start to the guest's signal, once it came.
    pub fn ready_us(&self) -> Option<u64> {
        match self.ready_us.load(Ordering::Acquire) {
            NOT_READY => None,
            us => Some(us),
        }
    }

    /// Milliseconds from VMM start to the guest's signal, once it came.
    pub fn ready_ms(&self) -> Option<f64> {
        self.ready_us().map(|us| us as f64 / 1000.0)
    }
}

/// Checks that `fd` can be the readiness pipe: above stderr, open, a pipe or socket, writable.
/// Called while validating the config, before the VMM opens anything of its own, so the number
/// cannot name one of the VMM's own descriptors.
pub fn check_ready_fd(fd: RawFd) -> Result<(), ConfigError> {
    let bad = |why: String| ConfigError::invalid("ready_fd", format!("{fd}: {why}"));
    if fd <= 2 {
        return Err(bad("must be an inherited descriptor above 2".into()));
    }
    // SAFETY: fstat writes into a zeroed stat owned by this frame; no descriptor changes hands.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(bad(format!("{}", std::io::Error::last_os_error())));
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
        return Err(bad("not a pipe or socket".into()));
    }
    // SAFETY: F_GETFL reads the descriptor's status flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(bad("not open for writing".into()));
    }
    Ok(())
}

/// The device.
pub struct BootSignal {
    vmm_start: Instant,
    ready: BootReady,
    /// The readiness pipe, until the first signal (taken, written and closed then).
    notify: Mutex<Option<File>>,
}

impl BootSignal {
    /// `vmm_start`: the instant the VMM process started (taken first thing in `main`).
    pub fn new(vmm_start: Instant) -> Self {
        BootSignal {
            vmm_start,
            ready: BootReady {
                ready_us: Arc::new(AtomicU64::new(NOT_READY)),
            },
            notify: Mutex::new(None),
        }
    }

    /// Adopts the readiness pipe `fd` (checked by `check_ready_fd`, inherited and owned by
    /// nobody else in this process): the first signal writes one byte to it and closes it.
    pub fn notify_fd(self, fd: RawFd) -> Self {
        // SAFETY: the VM description hands this inherited descriptor to the VMM alone and
        // nothing else in the process wraps it (the config check ran before any open, and it
        // was kept through `confine::close_inherited`).
        let file = unsafe { File::from_raw_fd(fd) };
        // The VMM execs nothing, but a descriptor leaking into a helper would keep the
        // supervisor from ever seeing EOF.
        // SAFETY: F_SETFD changes the descriptor's flags only.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        *self.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        self
    }

    /// A handle to read the figure from elsewhere.
    pub fn handle(&self) -> BootReady {
        self.ready.clone()
    }

    fn signal(&self) {
        // Saturate below the sentinel: a VMM running for 584 000 years is not a concern, but
        // the conversion must not wrap.
        let us = u64::try_from(self.vmm_start.elapsed().as_micros())
            .unwrap_or(NOT_READY - 1)
            .min(NOT_READY - 1);
        if self
            .ready
            .ready_us
            .compare_exchange(NOT_READY, us, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Unprefixed, exactly as documented: benchmarks and tests match the line start.
            eprintln!(
                "boot-ready: {}.{:03} ms since VMM start",
                us / 1000,
                us % 1000
            );
            let pipe = self.notify.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut pipe) = pipe {
                // A supervisor that went away (EPIPE) is no reason to stop the guest.
                let _ = pipe.write_all(b"R");
            }
        }
    }
}

impl BusDevice for BootSignal {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && (1..=8).contains(&data.len()) {
            self.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn first_write_records_time_since_start() {
        let start = Instant::now() - Duration::from_millis(250);
        let mut dev = BootSignal::new(start);
        let handle = dev.handle();
        assert_eq!(handle.ready_us(), None);
        dev.write(4, &[1]); // wrong offset: ignored
        dev.write(0, &[]); // empty: ignored
        assert_eq!(handle.ready_us(), None);
        dev.write(0, &[1]);
        let first = handle.ready_us().unwrap();
        assert!((250_000..10_000_000).contains(&first), "{first} us");
        assert!(handle.ready_ms().unwrap() >= 250.0);
        std::thread::sleep(Duration::from_millis(2));
        dev.write(0, &[1, 2, 3, 4]);
        assert_eq!(
            handle.ready_us(),
            Some(first),
            "later writes do not move the figure"
        );
    }

    fn pipe() -> (File, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors; the read end is wrapped right away and the
        // write end is handed to the device under test, which owns it from then on.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: as above.
        (unsafe { File::from_raw_fd(fds[0]) }, fds[1])
    }

    #[test]
    fn the_readiness_pipe_gets_one_byte_then_eof() {
        use std::io::Read;
        let (mut r, w) = pipe();
        check_ready_fd(w).unwrap();
        let e = check_ready_fd(r.as_raw_fd()).unwrap_err();
        assert!(e.why.contains("not open for writing"), "{e}");
        let mut dev = BootSignal::new(Instant::now()).notify_fd(w);
        dev.write(0, &[1]);
        dev.write(0, &[1]);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"R", "one byte, then the write end is closed");
    }

    #[test]
    fn the_readiness_fd_must_be_a_writable_pipe_above_stderr() {
        for fd in [-1, 0, 2] {
            assert_eq!(check_ready_fd(fd).unwrap_err().what, "ready_fd");
        }
        let f = File::open("/proc/self/status").unwrap();
        let e = check_ready_fd(f.as_raw_fd()).unwrap_err();
        assert!(e.why.contains("not a pipe"), "{e}");
        assert!(check_ready_fd(1_000_000).is_err(), "a closed descriptor");
    }
}
