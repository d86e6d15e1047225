//! Wires a `VmConfig` into a running VM: checks -> control socket -> guest memory -> KVM VM ->
//! interrupt controller and vCPUs -> devices -> kernel and boot data -> vCPU threads, then runs
//! the event loop until the guest or the host ends the VM.
//!
//! Order matters: everything a user can get wrong is checked before KVM is opened; guest memory is
//! registered before the in-kernel interrupt controller exists (registering after costs 50x on
//! some hosts); the control socket is claimed first so a second VMM on the same path fails fast.

use std::fmt;
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use crate::arch::{self, DeviceMap};
use crate::config::{ConfigError, VmConfig, VmConfigExt};
use crate::confine::StartGate;
use crate::control::ControlServer;
use crate::devices::boot_signal::{BootReady, BootSignal};
use crate::devices::bus::{Bus, SharedDevice};
use crate::devices::power_button::PowerButton;
use crate::devices::serial::Serial;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::VirtioDevice;
use crate::devices::IrqLine;
use crate::exit_code;
pub use crate::run_loop::stop_signal_fd;
use crate::run_loop::Pollable;
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::{start_vcpus_with, BeforeRun, Buses, VcpuControl, VmEvent};
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
        VmEvent::ShutdownForced(_) => exit_code::SHUTDOWN_FORCED,
    }
}

/// Interrupt line for raw test guests, which run without an interrupt controller and poll.
struct NoIrq;

impl IrqLine for NoIrq {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A built VM, vCPUs running; `run_loop` runs it.
pub struct Vmm {
    pub(crate) guest_mib: u64,
    pub(crate) start: Instant,
    pub(crate) vcpus: Arc<VcpuControl>,
    pub(crate) handles: Vec<JoinHandle<()>>,
    pub(crate) boot_ready: BootReady,
    pub(crate) control: Option<ControlServer>,
    pub(crate) pollables: Vec<(RawFd, Pollable)>,
    pub(crate) power_button: Arc<dyn PowerButton>,
    pub(crate) shutdown_timeout_ms: u32,
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
        crate::confine::check_jail(jail)?;
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
        let power_button = Self::attach_platform_devices(
            &mut buses,
            &devices,
            serial_dev,
            boot_dev,
            irq(devices.power_button.irq)?,
            &mut pollables,
        )?;

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
            power_button,
            shutdown_timeout_ms: cfg.shutdown_timeout_ms,
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
        button_irq: Arc<dyn IrqLine>,
        pollables: &mut Vec<(RawFd, Pollable)>,
    ) -> Result<Arc<dyn PowerButton>, BuildError> {
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
        use crate::devices::ged::{Ged, GedButton, GedDevice};
        let ged = Ged::new(button_irq);
        let p = &devices.power_button;
        let (_, dev) = shared(GedDevice(ged.clone()));
        buses
            .pio
            .insert(dev, p.addr, p.len)
            .map_err(host("device bus"))?;
        Ok(Arc::new(GedButton(ged)))
    }

    #[cfg(target_arch = "aarch64")]
    fn attach_platform_devices(
        buses: &mut Buses,
        devices: &DeviceMap,
        serial: SharedDevice,
        boot: SharedDevice,
        button_irq: Arc<dyn IrqLine>,
        _pollables: &mut Vec<(RawFd, Pollable)>,
    ) -> Result<Arc<dyn PowerButton>, BuildError> {
        use crate::devices::pl061::{Pl061, Pl061Button};
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
        let p = &devices.power_button;
        let (gpio, dev) = shared(Pl061::new(button_irq));
        buses
            .mmio
            .insert(dev, p.addr, p.len)
            .map_err(host("device bus"))?;
        Ok(Arc::new(Pl061Button(gpio)))
    }
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
        assert_eq!(exit_code_for(&VmEvent::ShutdownForced(10)), 5);
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
