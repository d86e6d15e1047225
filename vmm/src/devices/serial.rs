//! 16550A UART console, the same model on both architectures: x86 port I/O at 0x3f8 (IRQ 4),
//! aarch64 MMIO with a device-tree node `compatible = "ns16550a"` (register stride 1 byte).
//!
//! The register logic is vm-superio's `Serial`; this module adds the host side: where the
//! guest's output goes (stdout, a file, a Unix socket the VMM connects to, or nowhere) and
//! where input comes from (stdin or the same socket). Input is event driven: the VMM polls
//! `input_fd()` and calls `process_input()` when it is readable.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BusDevice, IrqLine};

/// Register window: eight byte-wide registers.
pub const SERIAL_REGISTER_COUNT: u64 = 8;
/// Input bytes held host-side while the guest's 64-byte FIFO is full. Beyond this, input is
/// dropped and counted, like a real UART's overrun: the guest is never able to make the VMM
/// buffer without bound, and the event loop never spins on an input it cannot take.
pub const INPUT_BUFFER_LIMIT: usize = 4096;
/// Bytes read from the input per `process_input` call.
const INPUT_READ_CHUNK: usize = 1024;
/// The guest-visible FIFO of a 16550A: the most `fill_fifo` ever hands over at once.
const UART_FIFO: usize = 64;

/// Where the console goes: the VM description's `console` (`cpevisor_types::vm::Console`).
pub use cpevisor_types::vm::Console as SerialBackend;

/// Why the console could not be set up.
#[derive(Debug)]
pub enum SerialError {
    /// The console file (`file:PATH`) could not be opened.
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The console socket (`socket:PATH`) could not be connected.
    ConnectSocket {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Setting up stdin/stdout for the console failed.
    Stdio(io::Error),
}

impl fmt::Display for SerialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialError::OpenFile { path, source } => {
                write!(f, "console file {}: {source}", path.display())
            }
            SerialError::ConnectSocket { path, source } => {
                write!(f, "console socket {}: {source}", path.display())
            }
            SerialError::Stdio(e) => write!(f, "console on stdin/stdout: {e}"),
        }
    }
}

impl std::error::Error for SerialError {}

/// What `process_input` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputState {
    /// The input is still open; keep polling `input_fd()`.
    Open,
    /// End of input or a read error: stop polling; `input_fd()` now returns None.
    Closed,
}

/// Adapts our interrupt line to vm-superio's trigger.
struct IrqTrigger(Arc<dyn IrqLine>);

impl vm_superio::Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

type Uart = vm_superio::Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

/// The console UART.
pub struct Serial {
    uart: Uart,
    input: Option<File>,
    /// Fixed at the limit and held inline (the console lives on the heap with its VM), so
    /// buffering input never allocates.
    pending: heapless::Deque<u8, INPUT_BUFFER_LIMIT>,
    dropped_input: u64,
}

impl Serial {
    /// Builds the console for `backend`, raising `irq` for the guest.
    pub fn new(backend: &SerialBackend, irq: Arc<dyn IrqLine>) -> Result<Self, SerialError> {
        let (out, input): (Box<dyn Write + Send>, Option<File>) = match backend {
            SerialBackend::Stdio => {
                // A duplicate of fd 0 read with plain read(2): std's buffered Stdin could keep
                // bytes in its own buffer where readiness polling cannot see them.
                let stdin = io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(SerialError::Stdio)?;
                (Box::new(io::stdout()), Some(File::from(stdin)))
            }
            SerialBackend::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SerialError::OpenFile {
                        path: path.clone(),
                        source,
                    })?;
                (Box::new(file), None)
            }
            SerialBackend::Socket(path) => {
                let (out, input) = connect_socket(path)?;
                (Box::new(out), Some(input))
            }
            SerialBackend::Null => (Box::new(io::sink()), None),
        };
        Ok(Self::with_io(out, input, irq))
    }

    /// Builds the console from an output sink and an optional input (any readable fd: a pipe,
    /// a socket, a tty).
    pub fn with_io(out: Box<dyn Write + Send>, input: Option<File>, irq: Arc<dyn IrqLine>) -> Self {
        Serial {
            uart: vm_superio::Serial::new(IrqTrigger(irq), out),
            input,
            pending: heapless::Deque::new(),
            dropped_input: 0,
        }
    }

    /// The fd to poll for readability, while input is open.
    pub fn input_fd(&self) -> Option<RawFd> {
        self.input.as_ref().map(|f| f.as_raw_fd())
    }

    /// Reads what the input has (call when `input_fd()` is readable) and hands it to the guest.
    /// Never blocks when called on readiness; reads at most one chunk per call.
    pub fn process_input(&mut self) -> InputState {
        let Some(input) = self.input.as_mut() else {
            return InputState::Closed;
        };
        let mut chunk = [0u8; INPUT_READ_CHUNK];
        let n = match input.read(&mut chunk) {
            Ok(0) => {
                self.input = None;
                return InputState::Closed;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return InputState::Open,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return InputState::Open,
            Err(e) => {
                crate::log(&format!("serial: console input closed: {e}"));
                self.input = None;
                return InputState::Closed;
            }
        };
        let mut kept = 0;
        for &b in &chunk[..n] {
            if self.pending.push_back(b).is_err() {
                break;
            }
            kept += 1;
        }
        self.dropped_input += (n - kept) as u64;
        self.fill_fifo();
        InputState::Open
    }

    /// Input bytes dropped because the guest did not read them fast enough.
    pub fn dropped_input(&self) -> u64 {
        self.dropped_input
    }

    /// Moves pending input into the UART's FIFO as far as it has room.
    fn fill_fifo(&mut self) {
        let room = self
            .uart
            .fifo_capacity()
            .min(self.pending.len())
            .min(UART_FIFO);
        if room == 0 {
            return;
        }
        let (front, back) = self.pending.as_slices();
        // Staged on the stack when the ring wraps: this runs on every guest read of the data
        // register, so it must not allocate.
        let mut staged = [0u8; UART_FIFO];
        let chunk: &[u8] = if front.len() >= room {
            &front[..room]
        } else {
            staged[..front.len()].copy_from_slice(front);
            staged[front.len()..room].copy_from_slice(&back[..room - front.len()]);
            &staged[..room]
        };
        match self.uart.enqueue_raw_bytes(chunk) {
            Ok(taken) => {
                for _ in 0..taken {
                    self.pending.pop_front();
                }
            }
            Err(e) => crate::log(&format!("serial: cannot deliver input: {e}")),
        }
    }
}

fn connect_socket(path: &Path) -> Result<(UnixStream, File), SerialError> {
    let err = |source| SerialError::ConnectSocket {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(err)?;
    let input = stream.try_clone().map_err(err)?;
    Ok((stream, File::from(std::os::fd::OwnedFd::from(input))))
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 1 || offset >= SERIAL_REGISTER_COUNT {
            return;
        }
        data[0] = self.uart.read(offset as u8);
        if offset == 0 {
            // The guest may just have drained the FIFO: top it up from the host-side buffer.
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= SERIAL_REGISTER_COUNT {
            return;
        }
        // Output errors (a closed socket, a full disk) lose the byte but must not stop the
        // guest; vm-superio already raised the THR-empty interrupt.
        let _ = self.uart.write(offset as u8, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountingIrq(AtomicUsize);
    impl IrqLine for CountingIrq {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 1;

    fn read_reg(serial: &mut Serial, offset: u64) -> u8 {
        let mut b = [0u8];
        serial.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn guest_output_reaches_the_sink() {
        let buf = SharedBuf::default();
        let mut serial = Serial::with_io(
            Box::new(buf.clone()),
            None,
            Arc::new(CountingIrq::default()),
        );
        for b in b"hello\n" {
            serial.write(0, &[*b]);
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"hello\n");
        // Wrong widths and offsets are ignored.
        serial.write(0, b"xy");
        serial.write(9, b"z");
        assert_eq!(&*buf.0.lock().unwrap(), b"hello\n");
        let mut wide = [0xffu8; 2];
        serial.read(0, &mut wide);
        assert_eq!(wide, [0, 0]);
    }

    #[test]
    fn input_is_delivered_bounded_and_refilled() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        // Non-blocking so the test can call process_input without readiness polling.
        guest_side.set_nonblocking(true).unwrap();
        let irq = Arc::new(CountingIrq::default());
        let mut serial = Serial::with_io(
            Box::new(io::sink()),
            Some(File::from(std::os::fd::OwnedFd::from(guest_side))),
            irq.clone(),
        );
        serial.write(IER, &[1]); // enable the received-data interrupt
        let before = irq.0.load(Ordering::SeqCst);

        // More than the FIFO plus the host-side limit: the excess is dropped, never buffered.
        let total = INPUT_BUFFER_LIMIT + 64 + 1000;
        let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        host.write_all(&sent).unwrap();
        for _ in 0..20 {
            assert_eq!(serial.process_input(), InputState::Open);
        }
        assert_eq!(serial.pending.len(), INPUT_BUFFER_LIMIT);
        assert_eq!(serial.dropped_input(), 1000);
        assert!(
            irq.0.load(Ordering::SeqCst) > before,
            "guest was interrupted"
        );

        // The guest reads bytes in order, the FIFO is refilled from the pending buffer.
        let mut got = Vec::new();
        while read_reg(&mut serial, LSR) & LSR_DATA_READY != 0 {
            got.push(read_reg(&mut serial, 0));
        }
        assert_eq!(got.len(), INPUT_BUFFER_LIMIT + 64);
        assert_eq!(got[..], sent[..got.len()]);

        drop(host);
        assert_eq!(serial.process_input(), InputState::Closed);
        assert_eq!(serial.input_fd(), None);
    }

    #[test]
    fn input_that_wraps_the_ring_arrives_in_order() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        guest_side.set_nonblocking(true).unwrap();
        let mut serial = Serial::with_io(
            Box::new(io::sink()),
            Some(File::from(std::os::fd::OwnedFd::from(guest_side))),
            Arc::new(CountingIrq::default()),
        );
        let mut pump = |serial: &mut Serial, bytes: &[u8], pending: usize| {
            host.write_all(bytes).unwrap();
            loop {
                assert_eq!(serial.process_input(), InputState::Open);
                if serial.pending.len() >= pending {
                    break;
                }
            }
        };
        let drain = |serial: &mut Serial, got: &mut Vec<u8>| {
            while read_reg(serial, LSR) & LSR_DATA_READY != 0 {
                got.push(read_reg(serial, 0));
            }
        };
        let sent: Vec<u8> = (0..INPUT_BUFFER_LIMIT + 64)
            .map(|i| (i % 253) as u8)
            .collect();
        // Every byte passes through the ring: after LIMIT - 10 bytes, all read by the guest, the
        // ring is empty with its head 10 bytes before the end of its storage.
        let (first, second) = sent.split_at(INPUT_BUFFER_LIMIT - 10);
        pump(&mut serial, first, INPUT_BUFFER_LIMIT - 10 - 64);
        let mut got = Vec::new();
        drain(&mut serial, &mut got);
        // The next 74 bytes wrap around the storage's end and fill the empty FIFO in one go.
        pump(&mut serial, second, 10);
        drain(&mut serial, &mut got);
        assert_eq!(serial.dropped_input(), 0);
        assert_eq!(got, sent);
    }

    #[test]
    fn socket_backend_carries_both_directions() {
        let dir = std::env::temp_dir().join(format!("cpevisor-serial-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixListener::bind(&dir).unwrap();
        let mut serial = Serial::new(
            &SerialBackend::Socket(dir.clone()),
            Arc::new(CountingIrq::default()),
        )
        .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        serial.write(0, b"o");
        let mut b = [0u8];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"o");
        peer.write_all(b"i").unwrap();
        assert!(serial.input_fd().is_some());
        assert_eq!(serial.process_input(), InputState::Open);
        assert_eq!(read_reg(&mut serial, 0), b'i');
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn file_backend_appends_and_null_discards() {
        let path =
            std::env::temp_dir().join(format!("cpevisor-console-{}.log", std::process::id()));
        std::fs::write(&path, b"old\n").unwrap();
        let irq: Arc<dyn IrqLine> = Arc::new(CountingIrq::default());
        let mut serial = Serial::new(&SerialBackend::File(path.clone()), irq.clone()).unwrap();
        assert_eq!(serial.input_fd(), None);
        assert_eq!(serial.process_input(), InputState::Closed);
        for b in b"new\n" {
            serial.write(0, &[*b]);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old\nnew\n");
        std::fs::remove_file(&path).unwrap();

        let mut null = Serial::new(&SerialBackend::Null, irq.clone()).unwrap();
        null.write(0, b"x");
        assert_eq!(null.input_fd(), None);

        let bad = std::env::temp_dir().join("cpevisor-no-such-dir/console.log");
        let err = Serial::new(&SerialBackend::File(bad), irq).err().unwrap();
        assert!(err.to_string().contains("cpevisor-no-such-dir"), "{err}");
    }

    #[test]
    fn missing_socket_is_a_clear_error() {
        let path = std::env::temp_dir().join("cpevisor-serial-no-such-socket");
        let err = Serial::new(
            &SerialBackend::Socket(path.clone()),
            Arc::new(CountingIrq::default()),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}
