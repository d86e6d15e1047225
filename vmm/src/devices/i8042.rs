//! Minimal i8042 keyboard controller (x86 guests), there for one job: the guest's reset.
//!
//! Ports 0x60 (data) and 0x64 (status/command); map both with one 5-byte range at 0x60
//! (offset 0 = data, offset 4 = command). Writing command 0xFE (pulse the reset line) sets the
//! shared `ExitRequest`, which the VMM watches through its eventfd. The controller answers the
//! handful of commands Linux's i8042 driver sends while probing (read/write the configuration
//! byte, self-test, port tests) so the probe ends at once instead of timing out. The AUX
//! (mouse) port answers its loop-back and interface tests with failures, so Linux decides at
//! once that there is no mouse or multiplexer. There is no keyboard behind it and no IRQ 1:
//! boot x86 guests with `i8042.dumbkbd` (or `i8042.nokbd`), else the keyboard probe waits for
//! answers that never come (about 0.4 s).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::BusDevice;

/// Base port of the range and its length (0x60..=0x64).
pub const I8042_PORT_BASE: u64 = 0x60;
/// Ports 0x60..0x65 (data at 0x60, command/status at 0x64).
pub const I8042_PORT_LEN: u64 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_KBD_PORT_TEST: u8 = 0xAB;
const CMD_AUX_PORT_TEST: u8 = 0xA9;
const CMD_AUX_LOOP: u8 = 0xD3;
const CMD_AUX_WRITE: u8 = 0xD4;
const CMD_READ_OUTPUT_PORT: u8 = 0xD0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xD1;
const CMD_RESET_CPU: u8 = 0xFE;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// AUX interface test result "clock line stuck low": no usable mouse port.
const AUX_PORT_TEST_FAILED: u8 = 0x01;
/// What the AUX loop-back returns instead of the echo: never a value Linux sends (0x5a, 0xf0,
/// 0x56, 0xa4), so its mux and AUX checks fail at once.
const AUX_LOOP_NO_ECHO: u8 = 0x00;
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// "System flag": set after a successful self-test, as on real hardware.
const STATUS_SYSTEM: u8 = 0x04;
/// The output byte came from the AUX port; Linux checks it before reading a loop-back answer
/// (and would otherwise leave the byte behind to corrupt its next command).
const STATUS_AUX_DATA: u8 = 0x20;
/// The A20 line is on and the reset line idle.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

/// A request from the guest that the VMM stop running it. Shared between the device (which
/// sets it) and the VMM's event loop (which polls `as_raw_fd()` for readability).
pub struct ExitRequest {
    reset: AtomicBool,
    event: EventFd,
}

impl ExitRequest {
    /// No request pending, eventfd unsignalled.
    pub fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(ExitRequest {
            reset: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK)?,
        }))
    }

    /// Records a guest reset request and wakes the event loop.
    pub fn request_reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        if let Err(e) = self.event.write(1) {
            // The flag is set regardless; a VMM checking it after each vCPU exit still sees it.
            crate::log(&format!("i8042: cannot signal reset request: {e}"));
        }
    }

    /// Whether the guest asked for a reset.
    pub fn reset_requested(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }

    /// Readable once a request is pending.
    pub fn as_raw_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// Consumes the eventfd's count (the flag stays set): call after waking on the fd.
    pub fn acknowledge(&self) {
        let _ = self.event.read();
    }
}

impl crate::devices::PlatformRequests for ExitRequest {
    fn event_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn take_request(&self) -> Option<crate::devices::PlatformRequest> {
        self.acknowledge();
        self.reset_requested()
            .then_some(crate::devices::PlatformRequest::Reset)
    }
}

/// What the next data-port write means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PendingWrite {
    None,
    Config,
    OutputPort,
    AuxLoop,
    AuxDevice,
}

/// The controller.
pub struct I8042 {
    exit: Arc<ExitRequest>,
    config: u8,
    output_port: u8,
    output: Option<u8>,
    output_from_aux: bool,
    status_system: bool,
    pending_write: PendingWrite,
}

impl I8042 {
    /// The controller, reporting resets to `exit`.
    pub fn new(exit: Arc<ExitRequest>) -> Self {
        I8042 {
            exit,
            config: 0,
            output_port: OUTPUT_PORT_DEFAULT,
            output: None,
            output_from_aux: false,
            status_system: false,
            pending_write: PendingWrite::None,
        }
    }

    fn status(&self) -> u8 {
        let mut status = 0;
        if self.output.is_some() {
            status |= STATUS_OUTPUT_FULL;
            if self.output_from_aux {
                status |= STATUS_AUX_DATA;
            }
        }
        if self.status_system {
            status |= STATUS_SYSTEM;
        }
        status
    }

    fn command(&mut self, cmd: u8) {
        self.pending_write = PendingWrite::None;
        self.output_from_aux = false;
        match cmd {
            CMD_READ_CONFIG => self.output = Some(self.config),
            CMD_WRITE_CONFIG => self.pending_write = PendingWrite::Config,
            CMD_SELF_TEST => {
                self.status_system = true;
                self.output = Some(SELF_TEST_OK);
            }
            CMD_KBD_PORT_TEST => self.output = Some(PORT_TEST_OK),
            CMD_AUX_PORT_TEST => self.output = Some(AUX_PORT_TEST_FAILED),
            CMD_AUX_LOOP => self.pending_write = PendingWrite::AuxLoop,
            CMD_AUX_WRITE => self.pending_write = PendingWrite::AuxDevice,
            CMD_READ_OUTPUT_PORT => self.output = Some(self.output_port),
            CMD_WRITE_OUTPUT_PORT => self.pending_write = PendingWrite::OutputPort,
            CMD_RESET_CPU => self.exit.request_reset(),
            // Enabling/disabling ports and the like need no answer; no keyboard is attached.
            _ => {}
        }
    }

    fn data_write(&mut self, value: u8) {
        match std::mem::replace(&mut self.pending_write, PendingWrite::None) {
            PendingWrite::Config => self.config = value,
            PendingWrite::OutputPort => {
                self.output_port = value;
                // Bit 0 low pulses the CPU reset line, the other way firmware resets.
                if value & 1 == 0 {
                    self.exit.request_reset();
                }
            }
            PendingWrite::AuxLoop => {
                self.output = Some(AUX_LOOP_NO_ECHO);
                self.output_from_aux = true;
            }
            // Bytes for the (absent) mouse and keyboard are dropped.
            PendingWrite::AuxDevice | PendingWrite::None => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 1 {
            return;
        }
        data[0] = match offset {
            DATA_OFFSET => self.output.take().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            DATA_OFFSET => self.data_write(data[0]),
            COMMAND_OFFSET => self.command(data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn platform_requests_report_the_reset() {
        use crate::devices::{PlatformRequest, PlatformRequests};
        let exit = ExitRequest::new().unwrap();
        assert_eq!(exit.take_request(), None);
        exit.request_reset();
        assert_eq!(exit.take_request(), Some(PlatformRequest::Reset));
    }

    #[test]
    fn reset_command_raises_the_exit_request() {
        let exit = ExitRequest::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        dev.write(COMMAND_OFFSET, &[0x20]);
        assert!(!exit.reset_requested());
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert!(exit.reset_requested());
        // The eventfd is readable: its counter is non-zero.
        assert_eq!(exit.event.read().unwrap(), 1);
        exit.acknowledge(); // nothing left: must not block or panic
        assert!(exit.reset_requested(), "acknowledging keeps the flag");
    }

    #[test]
    fn wide_writes_do_not_reset() {
        let exit = ExitRequest::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
        dev.write(3, &[CMD_RESET_CPU]);
        assert!(!exit.reset_requested());
    }

    #[test]
    fn answers_the_linux_probe_sequence() {
        let exit = ExitRequest::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 1);
        assert_eq!(read(&mut dev, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CONFIG]);
        dev.write(DATA_OFFSET, &[0x47]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CONFIG]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x47);
        // The AUX port looks absent: no echo, failed interface test, both answered at once.
        dev.write(COMMAND_OFFSET, &[CMD_AUX_LOOP]);
        dev.write(DATA_OFFSET, &[0x5a]);
        let status = read(&mut dev, COMMAND_OFFSET);
        assert_eq!(status & (STATUS_OUTPUT_FULL | STATUS_AUX_DATA), 0x21);
        assert_ne!(read(&mut dev, DATA_OFFSET), 0x5a);
        assert_eq!(
            read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL,
            0,
            "nothing left"
        );
        dev.write(COMMAND_OFFSET, &[CMD_AUX_PORT_TEST]);
        assert_eq!(read(&mut dev, DATA_OFFSET), AUX_PORT_TEST_FAILED);
        // A byte for the mouse is not taken as a configuration byte.
        dev.write(COMMAND_OFFSET, &[CMD_AUX_WRITE]);
        dev.write(DATA_OFFSET, &[0xff]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CONFIG]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x47);
        // Writing the output port with the reset bit low is also a reset.
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0x02]);
        assert!(exit.reset_requested());
    }
}
