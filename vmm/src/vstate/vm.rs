//! The KVM VM: `/dev/kvm`, the VM fd, guest memory slots and interrupt lines.

use std::fmt;
use std::io;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::IrqLine;

/// Why the KVM VM could not be created or set up.
#[derive(Debug)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    OpenKvm(kvm_ioctls::Error),
    /// KVM's API version is not 12 (the value found).
    ApiVersion(i32),
    /// KVM_CREATE_VM failed.
    CreateVm(kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed for this slot.
    MemorySlot(u32, kvm_ioctls::Error),
    /// More memory regions than KVM has slots (regions, slots).
    TooManySlots(usize, usize),
    /// An interrupt line could not be set up.
    Irq(String),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::OpenKvm(e) => write!(f, "cannot open /dev/kvm: {e}"),
            VmError::ApiVersion(v) => write!(f, "KVM API version {v}, expected 12"),
            VmError::CreateVm(e) => write!(f, "KVM_CREATE_VM failed: {e}"),
            VmError::MemorySlot(s, e) => write!(f, "KVM_SET_USER_MEMORY_REGION slot {s}: {e}"),
            VmError::TooManySlots(n, max) => {
                write!(f, "{n} memory regions but KVM offers only {max} slots")
            }
            VmError::Irq(s) => write!(f, "interrupt setup: {s}"),
        }
    }
}

impl std::error::Error for VmError {}

/// A KVM VM: the /dev/kvm handle and the VM file descriptor.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm, checks its API version, creates a VM.
    pub fn new() -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(VmError::ApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Vm { kvm, fd })
    }

    /// The /dev/kvm handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Registers every guest memory region as a KVM slot. Call this before creating the in-kernel
    /// interrupt controller: on some hosts a slot registered afterwards costs 50x more.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        let max = self.kvm.get_nr_memslots();
        if mem.num_regions() > max {
            return Err(VmError::TooManySlots(mem.num_regions(), max));
        }
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmError::Irq(format!("memory region has no host address: {e}")))?;
            let desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the caller keeps alive for
            // as long as the VM exists (the builder holds both in the same `Vmm`); slots are
            // distinct and the regions do not overlap (checked by GuestMemoryMmap).
            unsafe { self.fd.set_user_memory_region(desc) }
                .map_err(|e| VmError::MemorySlot(slot, e))?;
        }
        Ok(())
    }

    /// An interrupt line backed by an irqfd on `gsi` (SPI number on arm64, IRQ pin on x86).
    /// Needs the in-kernel interrupt controller.
    pub fn irq_line(&self, gsi: u32) -> Result<EventFdIrq, VmError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::Irq(e.to_string()))?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|e| VmError::Irq(format!("KVM_IRQFD gsi {gsi}: {e}")))?;
        Ok(EventFdIrq { evt, gsi })
    }
}

/// Raises an edge on a GSI through a KVM irqfd: a write to an eventfd, no ioctl from device code.
pub struct EventFdIrq {
    evt: EventFd,
    gsi: u32,
}

impl EventFdIrq {
    /// The line's GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl IrqLine for EventFdIrq {
    fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }
}
