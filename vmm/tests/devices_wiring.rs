//! The device wiring as `devices/mod.rs` documents it, through the crate's public API only:
//! devices on buses, a guest driving them by address, and a register fuzz over every window.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpevisor_vmm::devices::boot_signal::{self, BootSignal};
use cpevisor_vmm::devices::bus::Bus;
use cpevisor_vmm::devices::i8042::{ExitRequest, I8042, I8042_PORT_BASE, I8042_PORT_LEN};
use cpevisor_vmm::devices::rtc_pl031::{RtcPl031, RTC_WINDOW_SIZE};
use cpevisor_vmm::devices::serial::Serial;
use cpevisor_vmm::devices::virtio::mmio::MmioTransport;
use cpevisor_vmm::devices::virtio::rng::Rng;
use cpevisor_vmm::devices::virtio::MMIO_WINDOW_SIZE;
use cpevisor_vmm::devices::IrqLine;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Default)]
struct Irq(AtomicUsize);
impl IrqLine for Irq {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SERIAL_PORT: u64 = 0x3f8;
const VIRTIO_BASE: u64 = 0xd000_0000;
const RTC_BASE: u64 = 0x0901_0000;

struct Machine {
    pio: Bus,
    mmio: Bus,
    mem: GuestMemoryMmap,
    console: Captured,
    exit: Arc<ExitRequest>,
    ready: boot_signal::BootReady,
    rng: Arc<Mutex<MmioTransport>>,
}

fn machine() -> Machine {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let console = Captured::default();
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let serial = Serial::with_io(Box::new(console.clone()), None, Arc::new(Irq::default()));
    pio.insert(Arc::new(Mutex::new(serial)), SERIAL_PORT, 8)
        .unwrap();
    let exit = ExitRequest::new().unwrap();
    pio.insert(
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
        I8042_PORT_BASE,
        I8042_PORT_LEN,
    )
    .unwrap();
    let boot = BootSignal::new(Instant::now() - Duration::from_millis(5));
    let ready = boot.handle();
    pio.insert(
        Arc::new(Mutex::new(boot)),
        boot_signal::X86_PORT,
        boot_signal::X86_PORT_LEN,
    )
    .unwrap();
    mmio.insert(
        Arc::new(Mutex::new(RtcPl031::new())),
        RTC_BASE,
        RTC_WINDOW_SIZE,
    )
    .unwrap();
    let rng = Arc::new(Mutex::new(MmioTransport::new(
        mem.clone(),
        Arc::new(Irq::default()),
        Box::new(Rng::new().unwrap()),
    )));
    mmio.insert(rng.clone(), VIRTIO_BASE, MMIO_WINDOW_SIZE)
        .unwrap();
    Machine {
        pio,
        mmio,
        mem,
        console,
        exit,
        ready,
        rng,
    }
}

fn w32(bus: &Bus, addr: u64, v: u32) {
    assert!(bus.write(addr, &v.to_le_bytes()));
}

fn r32(bus: &Bus, addr: u64) -> u32 {
    let mut d = [0u8; 4];
    assert!(bus.read(addr, &mut d));
    u32::from_le_bytes(d)
}

#[test]
fn a_guest_uses_every_device_by_address() {
    let m = machine();
    for b in b"ok\n" {
        assert!(m.pio.write(SERIAL_PORT, &[*b]));
    }
    assert_eq!(&*m.console.0.lock().unwrap(), b"ok\n");

    assert_eq!(m.ready.ready_us(), None);
    assert!(m.pio.write(boot_signal::X86_PORT, &[1]));
    assert!(m.ready.ready_ms().unwrap() >= 5.0);

    assert!(!m.exit.reset_requested());
    assert!(m.pio.write(0x64, &[0xfe]));
    assert!(m.exit.reset_requested());

    // The guest finds a virtio device, negotiates and gets random bytes.
    assert_eq!(r32(&m.mmio, VIRTIO_BASE), 0x7472_6976);
    assert_eq!(r32(&m.mmio, VIRTIO_BASE + 8), 4);
    w32(&m.mmio, VIRTIO_BASE + 0x70, 1 | 2);
    w32(&m.mmio, VIRTIO_BASE + 0x24, 1);
    w32(&m.mmio, VIRTIO_BASE + 0x20, 1);
    w32(&m.mmio, VIRTIO_BASE + 0x70, 1 | 2 | 8);
    assert_eq!(r32(&m.mmio, VIRTIO_BASE + 0x70) & 8, 8, "FEATURES_OK kept");
    let (desc, avail, used) = (0x1_0000u64, 0x1_1000u64, 0x1_2000u64);
    w32(&m.mmio, VIRTIO_BASE + 0x30, 0);
    w32(&m.mmio, VIRTIO_BASE + 0x38, 8);
    w32(&m.mmio, VIRTIO_BASE + 0x80, desc as u32);
    w32(&m.mmio, VIRTIO_BASE + 0x90, avail as u32);
    w32(&m.mmio, VIRTIO_BASE + 0xa0, used as u32);
    w32(&m.mmio, VIRTIO_BASE + 0x44, 1);
    w32(&m.mmio, VIRTIO_BASE + 0x70, 1 | 2 | 8 | 4);
    assert!(m.rng.lock().unwrap().is_activated());
    // One writable 64-byte buffer at 0x2_0000.
    m.mem.write_obj(0x2_0000u64, GuestAddress(desc)).unwrap();
    m.mem.write_obj(64u32, GuestAddress(desc + 8)).unwrap();
    m.mem.write_obj(2u16, GuestAddress(desc + 12)).unwrap();
    m.mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap();
    m.mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
    w32(&m.mmio, VIRTIO_BASE + 0x50, 0);
    let used_idx: u16 = m.mem.read_obj(GuestAddress(used + 2)).unwrap();
    let used_len: u32 = m.mem.read_obj(GuestAddress(used + 8)).unwrap();
    assert_eq!((used_idx, used_len), (1, 64));
    assert_eq!(
        r32(&m.mmio, VIRTIO_BASE + 0x60) & 1,
        1,
        "used-ring interrupt"
    );

    // Unmapped addresses are the caller's business.
    assert!(!m.mmio.write(VIRTIO_BASE + MMIO_WINDOW_SIZE, &[0; 4]));
    assert!(!m.pio.read(0x3f0 + 1, &mut [0u8]));
}

/// Random accesses of every width to every window (and just past them) never panic. Guest
/// memory is all zeros (no request is ever available), so no device may write any of it.
#[test]
fn register_fuzz_never_panics() {
    let m = machine();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let windows = [
        (&m.pio, SERIAL_PORT, 8u64),
        (&m.pio, I8042_PORT_BASE, I8042_PORT_LEN),
        (&m.pio, boot_signal::X86_PORT, 1),
        (&m.mmio, RTC_BASE, RTC_WINDOW_SIZE),
        (&m.mmio, VIRTIO_BASE, MMIO_WINDOW_SIZE),
    ];
    for _ in 0..200_000 {
        let r = next();
        let (bus, base, len) = windows[(r % windows.len() as u64) as usize];
        let offset = (r >> 8) % (len + 8);
        let width = [1usize, 2, 4, 8, 3][((r >> 40) % 5) as usize];
        let value = next().to_le_bytes();
        if r >> 63 == 1 {
            bus.write(base + offset, &value[..width]);
        } else {
            let mut buf = [0u8; 8];
            bus.read(base + offset, &mut buf[..width]);
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    m.mem.read_slice(&mut buf, GuestAddress(0)).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "guest memory written");
    // Whatever state the fuzz left the transport in, a reset brings it back.
    w32(&m.mmio, VIRTIO_BASE + 0x70, 0);
    assert_eq!(r32(&m.mmio, VIRTIO_BASE + 0x70), 0);
    assert!(!m.rng.lock().unwrap().is_failed());
}
