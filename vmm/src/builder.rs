//! Wires a `VmConfig` into a running VM: checks -> control socket -> guest memory -> KVM VM ->
//! interrupt controller and vCPUs -> devices -> kernel and boot data -> jail -> vCPU threads.
//! Construction only: `run_loop` runs the built [`Vmm`], `signals` handles the stop signals,
//! and everything architecture-specific goes through the `arch` seam.
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

use crate::arch::{self, BootSetup, PlatformSetup, VcpuBoot};
use crate::config::{ConfigError, VmConfig, VmConfigExt};
use crate::confine::StartGate;
use crate::control::ControlServer;
use crate::devices::boot_signal::{BootReady, BootSignal};
use crate::devices::bus::{shared, Bus};
use crate::devices::power_button::PowerButton;
use crate::devices::serial::Serial;
use crate::devices::virtio::balloon::{Balloon, BalloonHandle, BalloonOptions};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::VirtioDevice;
use crate::devices::{IrqLine, PlatformRequests};
use crate::exit_code;
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::{start_vcpus_with, BeforeRun, Buses, VcpuControl};
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
    /// The process exit code for this failure (`exit_code::CONFIG_ERROR` or `HOST_ERROR`).
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

/// Interrupt line for raw test guests, which run without an interrupt controller and poll.
struct NoIrq;

impl IrqLine for NoIrq {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device the event loop serves when its fd is readable.
pub(crate) enum Pollable {
    SerialInput(Arc<Mutex<Serial>>),
    /// Edge-triggered: the transport reads the tap until it would block or the guest has no
    /// buffers; the guest adding buffers re-runs it from the vCPU's notify exit.
    NetRx(Arc<Mutex<MmioTransport>>),
    /// A device through which the guest asks for power-off or reset.
    Platform(Arc<dyn PlatformRequests>),
}

/// A built VM, vCPUs running; `run_loop` runs it (`Vmm::run`).
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
    /// The virtio-balloon's control handle, when the VM has one.
    pub(crate) balloon: Option<BalloonHandle>,
    /// A stop signal that arrived while the VM was being built, before any vCPU ran: the run
    /// loop stops at once, as no guest driver could see a power button yet. Signals from the
    /// moment the vCPUs start press the button.
    pub(crate) stopped_before_start: Option<&'static str>,
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

/// The number of virtio devices `cfg` asks for.
fn virtio_count(cfg: &VmConfig) -> usize {
    cfg.disks.len() + cfg.nets.len() + usize::from(cfg.rng) + usize::from(cfg.balloon.is_some())
}

/// The virtio devices, and the balloon's handle when there is one.
type VirtioDevices = (Vec<Box<dyn VirtioDevice>>, Option<BalloonHandle>);

/// Opens the virtio backends in `device_map` order: disks, nets, rng, balloon. Errors name the
/// entry.
fn open_virtio_devices(cfg: &VmConfig) -> Result<VirtioDevices, BuildError> {
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
    let mut handle = None;
    if let Some(b) = cfg.balloon {
        let balloon = Balloon::new(BalloonOptions {
            deflate_on_oom: b.deflate_on_oom,
            free_page_reporting: b.free_page_reporting,
            target_mib: b.target_mib,
        });
        handle = Some(balloon.handle());
        out.push(Box::new(balloon));
    }
    Ok((out, handle))
}

/// A locally administered MAC that differs between VMM processes and between a VM's NICs.
fn default_mac(index: usize) -> [u8; 6] {
    let pid = std::process::id().to_be_bytes();
    [0x02, 0xcf, pid[1], pid[2], pid[3], index as u8]
}

impl Vmm {
    /// Builds the VM and starts its vCPUs.
    pub fn build(cfg: &VmConfig, start: Instant) -> Result<Vmm, BuildError> {
        check_config(cfg)?;
        let mut control = match &cfg.control_socket {
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

        let (vcpu_fds, irqchip) = create_vcpus(&vm, cfg)?;

        let devices = arch::device_map(virtio_count(cfg)).map_err(host("device layout"))?;
        let attached = attach_devices(cfg, start, &vm, &mem, irqchip.is_some(), &devices)?;
        load_and_configure_boot(cfg, &vm, &mem, &vcpu_fds, irqchip.as_ref(), &devices)?;

        let vcpus = VcpuControl::new(vcpu_fds.len()).map_err(host("vCPU control"))?;
        let buses = Arc::new(attached.buses);
        let stopped_before_start = crate::signals::take_pending().first();
        let handles = confine_and_start(cfg, control.as_mut(), vcpu_fds, &buses, &vcpus)?;
        Ok(Vmm {
            guest_mib: cfg.memory_mib,
            start,
            vcpus,
            handles,
            boot_ready: attached.boot_ready,
            control,
            pollables: attached.pollables,
            power_button: attached.power_button,
            shutdown_timeout_ms: cfg.shutdown_timeout_ms,
            balloon: attached.balloon,
            stopped_before_start,
            _buses: buses,
            _irqchip: irqchip,
            _mem: mem,
            _vm: vm,
        })
    }
}

/// The devices as the run loop and the vCPUs need them.
struct AttachedDevices {
    buses: Buses,
    pollables: Vec<(RawFd, Pollable)>,
    boot_ready: BootReady,
    power_button: Arc<dyn PowerButton>,
    balloon: Option<BalloonHandle>,
}

/// Creates the console, boot signal, platform and virtio devices and puts them on the buses at
/// their `devices` slots. Without an interrupt controller (raw test guests) their interrupts
/// go nowhere.
fn attach_devices(
    cfg: &VmConfig,
    start: Instant,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    has_irqchip: bool,
    devices: &arch::DeviceMap,
) -> Result<AttachedDevices, BuildError> {
    let irq = |gsi: u32| -> Result<Arc<dyn IrqLine>, BuildError> {
        if has_irqchip {
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
    let platform = arch::attach_platform_devices(PlatformSetup {
        buses: &mut buses,
        devices,
        serial: serial_dev,
        boot_signal: boot_dev,
        button_irq: irq(devices.power_button.irq)?,
    })
    .map_err(|e| BuildError::Host(e.0))?;
    for source in platform.requests {
        pollables.push((source.event_fd(), Pollable::Platform(source)));
    }

    let (virtio, balloon) = open_virtio_devices(cfg)?;
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
    Ok(AttachedDevices {
        buses,
        pollables,
        boot_ready,
        power_button: platform.power_button,
        balloon,
    })
}

/// Creates the vCPUs and, unless the guest is raw test code, the interrupt controller, in the
/// order the architecture needs.
fn create_vcpus(
    vm: &Vm,
    cfg: &VmConfig,
) -> Result<(Vec<VcpuFd>, Option<arch::IrqChip>), BuildError> {
    // Raw test guests run without an interrupt controller, so HLT exits to the VMM.
    let use_irqchip = !cfg.kernel_format.is_raw();
    let n = u64::from(cfg.vcpus);
    let mut irqchip = None;
    if use_irqchip && arch::IRQCHIP_BEFORE_VCPUS {
        irqchip = Some(arch::create_irqchip(vm, n).map_err(host("interrupt controller"))?);
    }
    let mut vcpu_fds: Vec<VcpuFd> = Vec::with_capacity(cfg.vcpus as usize);
    for id in 0..n {
        let fd = vm
            .fd()
            .create_vcpu(id)
            .map_err(host(&format!("KVM_CREATE_VCPU {id}")))?;
        arch::init_vcpu(vm, &fd, id, n).map_err(host("vCPU init"))?;
        vcpu_fds.push(fd);
    }
    if use_irqchip && !arch::IRQCHIP_BEFORE_VCPUS {
        irqchip = Some(arch::create_irqchip(vm, n).map_err(host("interrupt controller"))?);
    }
    Ok((vcpu_fds, irqchip))
}

/// Loads the kernel and initrd, writes the boot data and sets every vCPU's boot registers.
fn load_and_configure_boot(
    cfg: &VmConfig,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    vcpu_fds: &[VcpuFd],
    irqchip: Option<&arch::IrqChip>,
    devices: &arch::DeviceMap,
) -> Result<(), BuildError> {
    let kernel = arch::load_kernel(mem, cfg).map_err(host("kernel"))?;
    let cmdline =
        arch::finalize_cmdline(&cfg.cmdline, devices).map_err(host("kernel command line"))?;
    let boot_arg = arch::configure_system(&BootSetup {
        mem,
        vcpus: vcpu_fds,
        irqchip,
        kernel: &kernel,
        mem_bytes: cfg.memory_mib << 20,
        cmdline: &cmdline,
        devices,
        format: cfg.kernel_format,
    })
    .map_err(host("boot data"))?;
    for (id, vcpu) in vcpu_fds.iter().enumerate() {
        arch::setup_vcpu(&VcpuBoot {
            vm,
            vcpu,
            id: id as u64,
            count: vcpu_fds.len() as u64,
            kernel: &kernel,
            boot_arg,
            format: cfg.kernel_format,
            has_irqchip: irqchip.is_some(),
        })
        .map_err(host("vCPU registers"))?;
    }
    Ok(())
}

/// Enters the jail (when configured) and starts the vCPU threads. Everything the VM will use
/// is open by now: a jailed VMM leaves the host's root, namespaces and identity here, while
/// still single-threaded (confine.rs); each vCPU thread installs its filter and waits until the
/// main thread has its own.
fn confine_and_start(
    cfg: &VmConfig,
    control: Option<&mut ControlServer>,
    vcpu_fds: Vec<VcpuFd>,
    buses: &Arc<Buses>,
    vcpus: &Arc<VcpuControl>,
) -> Result<Vec<JoinHandle<()>>, BuildError> {
    let jail_start = Instant::now();
    let gate = match &cfg.jail {
        Some(jail) => {
            crate::control::keep_rss_source().map_err(host("jail: /proc/self/smaps_rollup"))?;
            crate::confine::enter(jail).map_err(BuildError::Host)?;
            if let Some(c) = control {
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
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_map_to_their_exit_codes() {
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
