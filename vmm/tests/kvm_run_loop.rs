//! The vCPU run loop through the library API: port and MMIO exits dispatched through
//! `devices::bus::Bus` to a recording device, guest-visible read values, HLT as power-off, and
//! pause/resume/stop of a spinning guest.
#![cfg(target_arch = "x86_64")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpevisor_vmm::arch::x86_64::regs;
use cpevisor_vmm::devices::bus::{Bus, SharedDevice};
use cpevisor_vmm::devices::BusDevice;
use cpevisor_vmm::vstate::memory::create_guest_memory;
use cpevisor_vmm::vstate::vcpu::{start_vcpus, stop_vcpus, Buses, RunState, VcpuControl, VmEvent};
use cpevisor_vmm::vstate::vm::Vm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CODE_ADDR: u64 = 0x10_0000;
const MMIO_BASE: u64 = 0xd000_0000;
const PORT: u64 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Read(u64, usize),
    Write(u64, Vec<u8>),
}

/// Logs every access; reads return `fill` repeated.
struct Recorder {
    log: Arc<Mutex<Vec<Access>>>,
    fill: u8,
}

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::Read(offset, data.len()));
        data.fill(self.fill);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::Write(offset, data.to_vec()));
    }
}

struct Guest {
    _vm: Vm,
    _mem: GuestMemoryMmap,
    control: Arc<VcpuControl>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// A one-vCPU VM in long mode, no interrupt controller, running `code` at 1 MiB.
fn boot(code: &[u8], buses: Buses) -> Guest {
    let mem = create_guest_memory(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let vm = Vm::new().unwrap();
    vm.fd().set_tss_address(0xfffb_d000).unwrap();
    vm.register_memory(&mem).unwrap();
    let vcpu = vm.fd().create_vcpu(0).unwrap();
    regs::write_boot_tables(&mem).unwrap();
    mem.write_slice(code, GuestAddress(CODE_ADDR)).unwrap();
    regs::setup_long_mode_sregs(&vcpu).unwrap();
    regs::setup_regs(&vcpu, CODE_ADDR, 0).unwrap();
    let control = VcpuControl::new(1).unwrap();
    let handles = start_vcpus(vec![vcpu], Arc::new(buses), control.clone()).unwrap();
    Guest {
        _vm: vm,
        _mem: mem,
        control,
        handles,
    }
}

fn wait_event(c: &VcpuControl) -> VmEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = c.event() {
            return e;
        }
        assert!(Instant::now() < deadline, "guest never stopped");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn port_and_mmio_exits_reach_the_bus() {
    let code: &[u8] = &[
        0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
        0xb0, 0x42, // mov al, 0x42
        0xee, // out dx, al
        0xec, // in al, dx            (device answers 0x99)
        0xbb, 0x00, 0x00, 0x00, 0xd0, // mov ebx, 0xd0000000
        0x88, 0x03, // mov [rbx], al   (writes 0x99)
        0x8b, 0x43, 0x04, // mov eax, [rbx + 4]  (device answers 0x77777777)
        0x89, 0x43, 0x08, // mov [rbx + 8], eax
        0x8b, 0x83, 0x00, 0x10, 0x00, 0x00, // mov eax, [rbx + 0x1000] (unmapped: zeros)
        0x89, 0x43, 0x0c, // mov [rbx + 12], eax
        0xf4, // hlt
    ];
    let pio_log = Arc::new(Mutex::new(Vec::new()));
    let mmio_log = Arc::new(Mutex::new(Vec::new()));
    let mut pio = Bus::new();
    let d: SharedDevice = Arc::new(Mutex::new(Recorder {
        log: pio_log.clone(),
        fill: 0x99,
    }));
    pio.insert(d, PORT, 1).unwrap();
    let mut mmio = Bus::new();
    let d: SharedDevice = Arc::new(Mutex::new(Recorder {
        log: mmio_log.clone(),
        fill: 0x77,
    }));
    mmio.insert(d, MMIO_BASE, 0x100).unwrap();

    let g = boot(code, Buses { mmio, pio });
    assert_eq!(wait_event(&g.control), VmEvent::PowerOff);
    stop_vcpus(&g.control, g.handles);

    assert_eq!(
        *pio_log.lock().unwrap(),
        vec![Access::Write(0, vec![0x42]), Access::Read(0, 1)]
    );
    assert_eq!(
        *mmio_log.lock().unwrap(),
        vec![
            Access::Write(0, vec![0x99]),
            Access::Read(4, 4),
            Access::Write(8, vec![0x77; 4]),
            // The read at +0x1000 hit no device and returned zeros, written back here.
            Access::Write(12, vec![0; 4]),
        ]
    );
}

#[test]
fn pause_parks_a_spinning_guest_and_stop_ends_it() {
    // Counts forever: out 0x80 with an incrementing al.
    let code: &[u8] = &[
        0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
        0xee, // L: out dx, al
        0xfe, 0xc0, // inc al
        0xeb, 0xfb, // jmp L
    ];
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut pio = Bus::new();
    let d: SharedDevice = Arc::new(Mutex::new(Recorder {
        log: log.clone(),
        fill: 0,
    }));
    pio.insert(d, PORT, 1).unwrap();
    let g = boot(
        code,
        Buses {
            mmio: Bus::new(),
            pio,
        },
    );
    let count = || log.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() < 100 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(g.control.pause(), RunState::Paused);
    let frozen = count();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(), frozen, "vCPU ran while paused");
    assert_eq!(g.control.resume(), RunState::Running);
    while count() <= frozen {
        assert!(Instant::now() < deadline, "vCPU did not resume");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(g.control.event(), None);
    stop_vcpus(&g.control, g.handles);
    assert_eq!(g.control.event(), Some(VmEvent::Stopped));
    assert_eq!(g.control.state(), RunState::Stopping);
    // Resume after stop does not restart anything.
    assert_eq!(g.control.resume(), RunState::Stopping);
    assert_eq!(g.control.pause(), RunState::Stopping);
}
