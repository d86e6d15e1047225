//! Wires a `VmConfig` into a running VM: checks -> control socket -> guest memory -> KVM VM ->
//! interrupt controller and vCPUs -> devices -> kernel and boot data -> vCPU threads, then runs
//! the event loop until the guest or the host ends the VM.
//!
//! Order matters: everything a user can get wrong is checked before KVM is opened; guest memory is
//! registered before the in-kernel interrupt controller exists (registering after costs 50x on
//! some hosts); the control socket is claimed first so a second VMM on the same path fails fast.

use std::fmt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::{self, DeviceMap};
use crate::config::{ConfigError, VmConfig};
use crate::confine::StartGate;
use crate::control::{ControlServer, VmControl};
use crate::devices::boot_signal::{BootReady, BootSignal};
use crate::devices::bus::{Bus, SharedDevice};
use crate::devices::serial::{InputState, Serial};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::VirtioDevice;
use crate::devices::IrqLine;
use crate::exit_code;
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::{start_vcpus_with, stop_vcpus, BeforeRun, Buses, VcpuControl, VmEvent};
use crate::vstate::vm::Vm;

/// Why the VM could not be built; decides the exit code.
#[derive(Debug)]
pub enum BuildError {
    /// The user's input is wrong; nothing was started (exit 2).
    Config(ConfigError),
    /// The host could not run the VM: KVM, memory, devices (exit 1).
    Host(String),
}

impl BuildError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Config(_) => exit_code::CONFIG_ERROR,
            BuildError::Host(_) => exit_code::HOST_ERROR,
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => write!(f, "{e}"),
            BuildError::Host(e) => write!(f, "{e}"),
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

fn host<E: fmt::Display>(context: &str) -> impl FnOnce(E) -> BuildError + '_ {
    move |e| BuildError::Host(format!("{context}: {e}"))
}

/// The exit code for how the VM ended.
pub fn exit_code_for(event: &VmEvent) -> i32 {
    match event {
        VmEvent::PowerOff | VmEvent::Stopped => exit_code::OK,
        VmEvent::Reset => exit_code::GUEST_REBOOT,
        VmEvent::Crash(_) => exit_code::GUEST_CRASH,
    }
}

/// Interrupt line for raw test guests, which run without an interrupt controller and poll.
struct NoIrq;

impl IrqLine for NoIrq {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device the event loop serves when its fd is readable.
enum Pollable {
    SerialInput(Arc<Mutex<Serial>>),
    /// Edge-triggered: the transport reads the tap until it would block or the guest has no
    /// buffers; the guest adding buffers re-runs it from the vCPU's notify exit.
    NetRx(Arc<Mutex<MmioTransport>>),
    #[cfg(target_arch = "x86_64")]
    Reset(Arc<crate::devices::i8042::ExitRequest>),
    /// The ACPI sleep control (power-off) and reset registers.
    #[cfg(target_arch = "x86_64")]
    AcpiPower(Arc<crate::devices::acpi_pm::SystemRequest>),
}

/// A built VM, vCPUs running.
pub struct Vmm {
    guest_mib: u64,
    start: Instant,
    vcpus: Arc<VcpuControl>,
    handles: Vec<JoinHandle<()>>,
    boot_ready: BootReady,
    control: Option<ControlServer>,
    pollables: Vec<(RawFd, Pollable)>,
    // Kept alive for the VM's lifetime; dropped after the vCPU threads are joined.
    _buses: Arc<Buses>,
    _irqchip: Option<arch::IrqChip>,
    _mem: GuestMemoryMmap,
    _vm: Vm,
}

/// Every check that needs no KVM: the config's own, the kernel header, the vCPU ceiling.
pub fn check_config(cfg: &VmConfig) -> Result<(), ConfigError> {
    cfg.validate()?;
    if let Some(jail) = &cfg.jail {
        jail.validate()?;
    }
    arch::check_kernel(cfg.kernel_format, &cfg.kernel)?;
    if u64::from(cfg.vcpus) > arch::max_vcpus() {
        return Err(ConfigError::invalid(
            "vcpus",
            format!(
                "{} is more than this architecture's {}",
                cfg.vcpus,
                arch::max_vcpus()
            ),
        ));
    }
    Ok(())
}

/// Opens the virtio backends in `device_map` order: disks, nets, rng. Errors name the entry.
fn open_virtio_devices(cfg: &VmConfig) -> Result<Vec<Box<dyn VirtioDevice>>, BuildError> {
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let setup = |what: String| {
        move |e: crate::devices::virtio::SetupError| {
            BuildError::Config(ConfigError::invalid(what, e.to_string()))
        }
    };
    for (i, d) in cfg.disks.iter().enumerate() {
        let blk = Block::new(&d.path, d.read_only).map_err(setup(format!("disks[{i}]")))?;
        out.push(Box::new(blk));
    }
    for (i, n) in cfg.nets.iter().enumerate() {
        let tap = Tap::open(&n.tap).map_err(setup(format!("nets[{i}]")))?;
        let mac = n.mac.map_or_else(|| default_mac(i), |m| m.0);
        out.push(Box::new(Net::new(Box::new(tap), mac)));
    }
    if cfg.rng {
        out.push(Box::new(Rng::new().map_err(setup("rng".into()))?));
    }
    Ok(out)
}

/// A locally administered MAC that differs between VMM processes and between a VM's NICs.
fn default_mac(index: usize) -> [u8; 6] {
    let pid = std::process::id().to_be_bytes();
    [0x02, 0xcf, pid[1], pid[2], pid[3], index as u8]
}

fn shared<D: crate::devices::BusDevice + 'static>(d: D) -> (Arc<Mutex<D>>, SharedDevice) {
    let a = Arc::new(Mutex::new(d));
    let s: SharedDevice = a.clone();
    (a, s)
}

impl Vmm {
    /// Builds the VM and starts its vCPUs.
    pub fn build(cfg: &VmConfig, start: Instant) -> Result<Vmm, BuildError> {
        check_config(cfg)?;
        let control = match &cfg.control_socket {
            Some(p) => Some(ControlServer::bind(p).map_err(|e| {
                BuildError::Config(ConfigError::invalid("control_socket", e.to_string()))
            })?),
            None => None,
        };

        let mem_bytes = cfg.memory_mib << 20;
        let mem =
            create_guest_memory(&arch::ram_regions(mem_bytes)).map_err(host("guest memory"))?;
        let vm = Vm::new().map_err(host("KVM"))?;
        let max = vm.kvm().get_max_vcpus();
        if usize::from(cfg.vcpus) > max {
            return Err(BuildError::Config(ConfigError::invalid(
                "vcpus",
                format!("{} is more than KVM's limit of {max}", cfg.vcpus),
            )));
        }
        arch::prepare_vm(&vm).map_err(host("VM setup"))?;
        vm.register_memory(&mem).map_err(host("guest memory"))?;

        // Raw test guests run without an interrupt controller, so HLT exits to the VMM.
        let use_irqchip = !cfg.kernel_format.is_raw();
        let n = u64::from(cfg.vcpus);
        let mut irqchip = None;
        if use_irqchip && arch::IRQCHIP_BEFORE_VCPUS {
            irqchip = Some(arch::create_irqchip(&vm, n).map_err(host("interrupt controller"))?);
        }
        let mut vcpu_fds: Vec<VcpuFd> = Vec::with_capacity(cfg.vcpus as usize);
        for id in 0..n {
            let fd = vm
                .fd()
                .create_vcpu(id)
                .map_err(host(&format!("KVM_CREATE_VCPU {id}")))?;
            arch::init_vcpu(&vm, &fd, id, n).map_err(host("vCPU init"))?;
            vcpu_fds.push(fd);
        }
        if use_irqchip && !arch::IRQCHIP_BEFORE_VCPUS {
            irqchip = Some(arch::create_irqchip(&vm, n).map_err(host("interrupt controller"))?);
        }

        let n_virtio = cfg.disks.len() + cfg.nets.len() + usize::from(cfg.rng);
        let devices = arch::device_map(n_virtio).map_err(host("device layout"))?;
        let irq = |gsi: u32| -> Result<Arc<dyn IrqLine>, BuildError> {
            if irqchip.is_some() {
                Ok(Arc::new(vm.irq_line(gsi).map_err(host("interrupt line"))?))
            } else {
                Ok(Arc::new(NoIrq))
            }
        };
        let mut buses = Buses {
            mmio: Bus::new(),
            pio: Bus::new(),
        };
        let mut pollables = Vec::new();
        let serial = Serial::new(&cfg.console, irq(devices.serial.irq)?)
            .map_err(|e| BuildError::Config(ConfigError::invalid("console", e.to_string())))?;
        let input_fd = serial.input_fd();
        let (serial, serial_dev) = shared(serial);
        if let Some(fd) = input_fd {
            pollables.push((fd, Pollable::SerialInput(serial)));
        }
        let mut boot = BootSignal::new(start);
        if let Some(fd) = cfg.ready_fd {
            boot = boot.notify_fd(fd);
        }
        let boot_ready = boot.handle();
        let (_, boot_dev) = shared(boot);
        Self::attach_platform_devices(&mut buses, &devices, serial_dev, boot_dev, &mut pollables)?;

        let virtio = open_virtio_devices(cfg)?;
        for (slot, device) in devices.virtio.iter().zip(virtio) {
            let transport = MmioTransport::new(mem.clone(), irq(slot.irq)?, device);
            let rx_fd = transport.rx_fd();
            let (transport, dev) = shared(transport);
            buses
                .mmio
                .insert(dev, slot.addr, slot.len)
                .map_err(host("device bus"))?;
            if let Some(fd) = rx_fd {
                pollables.push((fd, Pollable::NetRx(transport)));
            }
        }

        let kernel = arch::load_kernel(&mem, cfg).map_err(host("kernel"))?;
        let cmdline =
            arch::finalize_cmdline(&cfg.cmdline, &devices).map_err(host("kernel command line"))?;
        let boot_arg = arch::configure_system(
            &mem,
            &vcpu_fds,
            irqchip.as_ref(),
            &kernel,
            mem_bytes,
            &cmdline,
            &devices,
            cfg.kernel_format,
        )
        .map_err(host("boot data"))?;
        for (id, fd) in vcpu_fds.iter().enumerate() {
            arch::setup_boot_regs(
                &vm,
                fd,
                id as u64,
                n,
                &kernel,
                boot_arg,
                cfg.kernel_format,
                irqchip.is_some(),
            )
            .map_err(host("vCPU registers"))?;
        }

        let vcpus = VcpuControl::new(vcpu_fds.len()).map_err(host("vCPU control"))?;
        let mut control = control;
        // Everything the VM will use is open: a jailed VMM leaves the host's root, namespaces
        // and identity here, while still single-threaded (confine.rs).
        let jail_start = Instant::now();
        let gate = match &cfg.jail {
            Some(jail) => {
                crate::control::keep_rss_source().map_err(host("jail: /proc/self/smaps_rollup"))?;
                crate::confine::enter(jail).map_err(BuildError::Host)?;
                if let Some(c) = control.as_mut() {
                    c.leave_file_on_exit();
                }
                Some(Arc::new(StartGate::default()))
            }
            None => None,
        };
        let before_run = gate.clone().map(|gate| -> BeforeRun {
            Arc::new(move |_| {
                crate::seccomp::vcpu_thread()
                    .install_thread()
                    .map_err(|e| format!("jail: {e}"))?;
                match gate.wait() {
                    true => Ok(()),
                    false => Err("jail: the main thread could not be confined".into()),
                }
            })
        });
        let buses = Arc::new(buses);
        let handles = start_vcpus_with(vcpu_fds, buses.clone(), vcpus.clone(), before_run)
            .map_err(host("vCPU threads"))?;
        if let (Some(gate), Some(jail)) = (&gate, &cfg.jail) {
            let installed = crate::seccomp::main_thread().install_thread();
            gate.open(installed.is_ok());
            installed.map_err(host("jail: main thread"))?;
            crate::log(&format!(
                "jail: uid {} gid {}, empty root, no capabilities, seccomp on every thread ({:.3} ms)",
                jail.uid,
                jail.gid,
                jail_start.elapsed().as_secs_f64() * 1000.0
            ));
        }
        Ok(Vmm {
            guest_mib: cfg.memory_mib,
            start,
            vcpus,
            handles,
            boot_ready,
            control,
            pollables,
            _buses: buses,
            _irqchip: irqchip,
            _mem: mem,
            _vm: vm,
        })
    }

    #[cfg(target_arch = "x86_64")]
    fn attach_platform_devices(
        buses: &mut Buses,
        devices: &DeviceMap,
        serial: SharedDevice,
        boot: SharedDevice,
        pollables: &mut Vec<(RawFd, Pollable)>,
    ) -> Result<(), BuildError> {
        use crate::arch::x86_64::layout::{
            ACPI_PM_PORT, ACPI_PM_PORT_LEN, BOOT_SIGNAL_MMIO, BOOT_SIGNAL_MMIO_LEN,
        };
        use crate::devices::acpi_pm::{AcpiPm, SystemRequest};
        use crate::devices::i8042::{ExitRequest, I8042, I8042_PORT_BASE, I8042_PORT_LEN};
        let s = &devices.serial;
        let b = &devices.boot_signal;
        buses
            .pio
            .insert(serial, s.addr, s.len)
            .map_err(host("device bus"))?;
        // One boot signal, two doors: the port for guests with /dev/port, the MMIO page for
        // guests with only /dev/mem (busybox `devmem`).
        buses
            .pio
            .insert(boot.clone(), b.addr, b.len)
            .map_err(host("device bus"))?;
        buses
            .mmio
            .insert(boot, BOOT_SIGNAL_MMIO, BOOT_SIGNAL_MMIO_LEN)
            .map_err(host("device bus"))?;
        let power = SystemRequest::new().map_err(host("ACPI power management"))?;
        let (_, dev) = shared(AcpiPm::new(power.clone()));
        buses
            .pio
            .insert(dev, ACPI_PM_PORT, ACPI_PM_PORT_LEN)
            .map_err(host("device bus"))?;
        pollables.push((power.as_raw_fd(), Pollable::AcpiPower(power)));
        let exit = ExitRequest::new().map_err(host("i8042"))?;
        let (_, dev) = shared(I8042::new(exit.clone()));
        buses
            .pio
            .insert(dev, I8042_PORT_BASE, I8042_PORT_LEN)
            .map_err(host("device bus"))?;
        pollables.push((exit.as_raw_fd(), Pollable::Reset(exit)));
        Ok(())
    }

    #[cfg(target_arch = "aarch64")]
    fn attach_platform_devices(
        buses: &mut Buses,
        devices: &DeviceMap,
        serial: SharedDevice,
        boot: SharedDevice,
        _pollables: &mut Vec<(RawFd, Pollable)>,
    ) -> Result<(), BuildError> {
        use crate::devices::rtc_pl031::RtcPl031;
        let s = &devices.serial;
        let b = &devices.boot_signal;
        buses
            .mmio
            .insert(serial, s.addr, s.len)
            .map_err(host("device bus"))?;
        buses
            .mmio
            .insert(boot, b.addr, b.len)
            .map_err(host("device bus"))?;
        if let Some(r) = &devices.rtc {
            let (_, dev) = shared(RtcPl031::new());
            buses
                .mmio
                .insert(dev, r.addr, r.len)
                .map_err(host("device bus"))?;
        }
        Ok(())
    }

    /// Serves devices, signals and the control socket until the VM ends; returns why it ended.
    pub fn run(mut self) -> VmEvent {
        let event = match self.event_loop() {
            Ok(ev) => ev,
            Err(e) => VmEvent::Crash(format!("event loop: {e}")),
        };
        stop_vcpus(&self.vcpus, std::mem::take(&mut self.handles));
        event
    }

    fn event_loop(&mut self) -> std::io::Result<VmEvent> {
        const TOKEN_VM_EVENT: u64 = 1;
        const TOKEN_STOP_SIGNAL: u64 = 2;
        const TOKEN_POLLABLE: u64 = 1 << 32;
        const TOKEN_CONTROL: u64 = 2 << 32;
        let epoll = Epoll::new()?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(self.vcpus.event_fd().as_raw_fd(), TOKEN_VM_EVENT)?;
        let stop_fd = stop_signal_fd()?;
        add(stop_fd, TOKEN_STOP_SIGNAL)?;
        for (i, (fd, p)) in self.pollables.iter().enumerate() {
            let set = match p {
                Pollable::NetRx(_) => EventSet::IN | EventSet::EDGE_TRIGGERED,
                _ => EventSet::IN,
            };
            let r = epoll.ctl(
                ControlOperation::Add,
                *fd,
                EpollEvent::new(set, TOKEN_POLLABLE + i as u64),
            );
            match r {
                Ok(()) => {}
                // Regular files and /dev/null (a console input redirected from them) cannot be
                // polled: there is no input to wait for then.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
        }
        let mut control_fds: Vec<RawFd> = Vec::new();
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            if let Some(server) = &self.control {
                sync_control_fds(&epoll, server, &mut control_fds, TOKEN_CONTROL);
            }
            if let Some(ev) = self.vcpus.event() {
                return Ok(ev);
            }
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                let token = ev.data();
                match token {
                    TOKEN_VM_EVENT => {}
                    TOKEN_STOP_SIGNAL => {
                        drain(stop_fd);
                        crate::log("stop requested by signal");
                        self.vcpus.report(VmEvent::Stopped);
                    }
                    t if t >= TOKEN_CONTROL => {
                        let fd = (t - TOKEN_CONTROL) as RawFd;
                        let view = ControlView {
                            vcpus: &self.vcpus,
                            start: self.start,
                            guest_mib: self.guest_mib,
                            boot_ready: &self.boot_ready,
                        };
                        if let Some(server) = self.control.as_mut() {
                            server.on_readable(fd, &view);
                        }
                    }
                    t if t >= TOKEN_POLLABLE => {
                        let i = (t - TOKEN_POLLABLE) as usize;
                        self.serve_pollable(i, &epoll);
                    }
                    _ => {}
                }
            }
        }
    }

    fn serve_pollable(&mut self, i: usize, epoll: &Epoll) {
        let Some((fd, p)) = self.pollables.get(i) else {
            return;
        };
        match p {
            Pollable::SerialInput(serial) => {
                let state = serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process_input();
                if state == InputState::Closed {
                    let _ = epoll.ctl(ControlOperation::Delete, *fd, EpollEvent::default());
                }
            }
            Pollable::NetRx(t) => t.lock().unwrap_or_else(|e| e.into_inner()).process_rx(),
            #[cfg(target_arch = "x86_64")]
            Pollable::Reset(exit) => {
                exit.acknowledge();
                if exit.reset_requested() {
                    self.vcpus.report(VmEvent::Reset);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Pollable::AcpiPower(request) => {
                use crate::devices::acpi_pm::Request;
                request.acknowledge();
                match request.requested() {
                    Some(Request::PowerOff) => self.vcpus.report(VmEvent::PowerOff),
                    Some(Request::Reset) => self.vcpus.report(VmEvent::Reset),
                    None => {}
                }
            }
        }
    }
}

/// Keeps the epoll set in step with the control server's fds. Adding every current fd (EEXIST
/// ignored) also covers an fd number reused by a new client after an old one closed.
fn sync_control_fds(epoll: &Epoll, server: &ControlServer, known: &mut Vec<RawFd>, base: u64) {
    let now = server.fds();
    for fd in known.iter().filter(|fd| !now.contains(fd)) {
        let _ = epoll.ctl(ControlOperation::Delete, *fd, EpollEvent::default());
    }
    for &fd in &now {
        let _ = epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, base + fd as u64),
        );
    }
    *known = now;
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reading into a local buffer of the given length from an fd we own.
    unsafe {
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    }
}

struct ControlView<'a> {
    vcpus: &'a VcpuControl,
    start: Instant,
    guest_mib: u64,
    boot_ready: &'a BootReady,
}

impl VmControl for ControlView<'_> {
    fn state(&self) -> &'static str {
        self.vcpus.state().as_str()
    }
    fn uptime_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn guest_memory_mib(&self) -> u64 {
        self.guest_mib
    }
    fn boot_ready_ms(&self) -> Option<f64> {
        self.boot_ready.ready_ms()
    }
    fn pause(&self) -> &'static str {
        self.vcpus.pause().as_str()
    }
    fn resume(&self) -> &'static str {
        self.vcpus.resume().as_str()
    }
    fn stop(&self) {
        crate::log("stop requested on the control socket");
        self.vcpus.report(VmEvent::Stopped);
    }
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    fn test_forbidden_syscall(&self, thread: &str) -> Result<i64, String> {
        match thread {
            "main" => Ok(crate::confine::forbidden_syscall()),
            "vcpu" => {
                self.vcpus.test_forbidden_syscall();
                Ok(0)
            }
            other => Err(format!("thread '{other}': expected main or vcpu")),
        }
    }
}

/// The eventfd SIGTERM/SIGINT/SIGHUP write to (written from the signal handler).
static STOP_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
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
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only calls write(2).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(exit_code_for(&VmEvent::PowerOff), 0);
        assert_eq!(exit_code_for(&VmEvent::Stopped), 0);
        assert_eq!(exit_code_for(&VmEvent::Reset), 3);
        assert_eq!(exit_code_for(&VmEvent::Crash("x".into())), 4);
        let cfg = BuildError::Config(ConfigError::invalid("a", "b"));
        assert_eq!(cfg.exit_code(), 2);
        assert_eq!(BuildError::Host("h".into()).exit_code(), 1);
    }

    #[test]
    fn default_macs_are_local_unicast_and_distinct() {
        let a = default_mac(0);
        let b = default_mac(1);
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(a, b);
    }
}
