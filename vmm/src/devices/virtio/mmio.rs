//! virtio-mmio transport, version 2 (modern only).
//!
//! The register window is `MMIO_WINDOW_SIZE` (0x200) bytes: transport registers below 0x100
//! (32-bit accesses only), device configuration space from 0x100. Queue settings are kept
//! here raw and handed to `virtio-queue` only when the driver sets QueueReady, where they are
//! checked (size a power of two within the maximum, rings aligned and inside guest memory).
//! Any protocol violation marks the device failed: Status gets DEVICE_NEEDS_RESET, a
//! configuration interrupt is raised, and the device does nothing more until the driver
//! resets it by writing 0 to Status.

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{ActiveQueues, DeviceError, VirtioDevice, VirtioInterrupt, FEATURE_VERSION_1};
use crate::devices::{BusDevice, IrqLine};

/// "virt", little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// virtio-mmio version 2 (virtio 1.x, no legacy).
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest: "CPEV".
pub const MMIO_VENDOR: u32 = 0x5645_5043;
/// Start of the device configuration space inside the window.
pub const CONFIG_SPACE_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;

/// Driver-side settings of one queue, as written to the registers.
#[derive(Clone, Copy)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: VirtioInterrupt,
    status: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    queues: Vec<QueueConfig>,
    config_generation: u32,
    activated: bool,
    failed: bool,
}

fn set_low(value: &mut u64, low: u32) {
    *value = (*value & !0xffff_ffff) | u64::from(low);
}

fn set_high(value: &mut u64, high: u32) {
    *value = (*value & 0xffff_ffff) | (u64::from(high) << 32);
}

impl MmioTransport {
    /// `irq`: the device's interrupt line (one SPI on aarch64, one GSI on x86).
    pub fn new(mem: GuestMemoryMmap, irq: Arc<dyn IrqLine>, device: Box<dyn VirtioDevice>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueConfig::new(max))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt: VirtioInterrupt::new(irq),
            status: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            queues,
            config_generation: 0,
            activated: false,
            failed: false,
        }
    }

    /// The virtio device id behind this transport.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The Status register as the driver sees it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device is marked failed (DEVICE_NEEDS_RESET) after a protocol violation.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Number of virtqueues the device has.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Whether the driver set DRIVER_OK and the device is running.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The host fd to poll for device input (net: the tap), fixed for the device's lifetime.
    pub fn rx_fd(&self) -> Option<RawFd> {
        self.device.rx_fd()
    }

    /// Call when `rx_fd()` is readable. A no-op before activation or once failed.
    pub fn process_rx(&mut self) {
        if !self.activated || self.failed {
            return;
        }
        if let Err(e) = self.device.process_rx() {
            self.fail(&e);
        }
    }

    fn fail(&mut self, why: &DeviceError) {
        if !self.failed {
            crate::log(&format!(
                "virtio-mmio (device type {}): marking device failed: {why}",
                self.device.device_type()
            ));
        }
        self.failed = true;
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.interrupt.signal_config();
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.failed = false;
        self.status = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.clear();
    }

    /// Builds a checked `virtio-queue` queue from the driver's settings.
    fn build_queue(&self, index: usize) -> Result<Queue, DeviceError> {
        let cfg = self.queues[index];
        let bad = |what: String| DeviceError::Protocol(format!("queue {index}: {what}"));
        let mut queue = Queue::new(cfg.max_size).map_err(|e| bad(e.to_string()))?;
        queue
            .try_set_size(cfg.size)
            .map_err(|_| bad(format!("size {} (max {})", cfg.size, cfg.max_size)))?;
        queue
            .try_set_desc_table_address(GuestAddress(cfg.desc))
            .map_err(|_| bad(format!("descriptor table {:#x} misaligned", cfg.desc)))?;
        queue
            .try_set_avail_ring_address(GuestAddress(cfg.avail))
            .map_err(|_| bad(format!("available ring {:#x} misaligned", cfg.avail)))?;
        queue
            .try_set_used_ring_address(GuestAddress(cfg.used))
            .map_err(|_| bad(format!("used ring {:#x} misaligned", cfg.used)))?;
        queue.set_ready(true);
        if !queue.is_valid(&self.mem) {
            return Err(bad(format!(
                "rings desc {:#x} avail {:#x} used {:#x} (size {}) not inside guest memory",
                cfg.desc, cfg.avail, cfg.used, cfg.size
            )));
        }
        Ok(queue)
    }

    fn set_queue_ready(&mut self, ready: bool) {
        let index = self.queue_select as usize;
        if index >= self.queues.len() {
            return;
        }
        if !ready {
            self.queues[index].ready = false;
            return;
        }
        match self.build_queue(index) {
            Ok(_) => self.queues[index].ready = true,
            Err(e) => self.fail(&e),
        }
    }

    fn activate(&mut self) {
        let in_use = self.device.queues_in_use().min(self.queues.len());
        let mut queues = Vec::with_capacity(in_use);
        for index in 0..in_use {
            if !self.queues[index].ready {
                return self.fail(&DeviceError::Protocol(format!(
                    "DRIVER_OK with queue {index} not ready"
                )));
            }
            match self.build_queue(index) {
                Ok(q) => queues.push(q),
                Err(e) => return self.fail(&e),
            }
        }
        let active = ActiveQueues {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(active) {
            Ok(()) => self.activated = true,
            Err(e) => self.fail(&e),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if self.failed {
            // Only a reset brings a failed device back; keep NEEDS_RESET visible, accept the
            // driver's FAILED bit.
            self.status |= value & VIRTIO_CONFIG_S_FAILED;
            return;
        }
        let old = self.status;
        // The driver only ever adds bits (3.1.1); anything else is ignored.
        if value & old != old {
            return;
        }
        let added = value & !old;
        let mut new = value;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & FEATURE_VERSION_1 != 0
                && old & VIRTIO_CONFIG_S_DRIVER != 0;
            if ok {
                self.device.ack_features(self.driver_features);
            } else {
                // Leaving FEATURES_OK clear tells the driver the subset was refused.
                new &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        let needed =
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.status = new;
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if new & needed != needed {
                self.status &= !VIRTIO_CONFIG_S_DRIVER_OK;
                return self.fail(&DeviceError::Protocol(
                    "DRIVER_OK before FEATURES_OK".to_string(),
                ));
            }
            self.activate();
        }
    }

    fn notify(&mut self, index: u32) {
        if !self.activated || self.failed {
            return;
        }
        let index = index as usize;
        if index >= self.queues.len() {
            return self.fail(&DeviceError::Protocol(format!(
                "notify for queue {index}, device has {}",
                self.queues.len()
            )));
        }
        if let Err(e) = self.device.process_queue(index) {
            self.fail(&e);
        }
    }

    fn read_register(&mut self, offset: u32) -> u32 {
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => MMIO_VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size.into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready.into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // No shared memory regions: their length reads as all ones.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        let driver_ok = self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0;
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            // Features are fixed once FEATURES_OK is set.
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_select {
                    0 => set_low(&mut self.driver_features, value),
                    1 => set_high(&mut self.driver_features, value),
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            VIRTIO_MMIO_QUEUE_READY if !driver_ok => self.set_queue_ready(value == 1),
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if !driver_ok =>
            {
                let Some(q) = self.selected_queue() else {
                    return;
                };
                // A live queue's settings must not change under the device (4.2.3.2).
                if q.ready {
                    return;
                }
                match offset {
                    VIRTIO_MMIO_QUEUE_NUM => q.size = value.min(u32::from(u16::MAX)) as u16,
                    VIRTIO_MMIO_QUEUE_DESC_LOW => set_low(&mut q.desc, value),
                    VIRTIO_MMIO_QUEUE_DESC_HIGH => set_high(&mut q.desc, value),
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_low(&mut q.avail, value),
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_high(&mut q.avail, value),
                    VIRTIO_MMIO_QUEUE_USED_LOW => set_low(&mut q.used, value),
                    _ => set_high(&mut q.used, value),
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.acknowledge(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => {}
        }
    }
}

fn fits_window(offset: u64, len: usize) -> bool {
    offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= super::MMIO_WINDOW_SIZE)
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE_OFFSET {
            if fits_window(offset, data.len()) {
                self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            }
            return;
        }
        if data.len() == 4 && offset.is_multiple_of(4) {
            let value = self.read_register(offset as u32);
            data.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            if fits_window(offset, data.len()) {
                self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
                self.config_generation = self.config_generation.wrapping_add(1);
            }
            return;
        }
        if let (true, Ok(bytes)) = (offset.is_multiple_of(4), <[u8; 4]>::try_from(data)) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::testing::*;
    use crate::devices::virtio::INTERRUPT_CONFIG;

    fn rng_driver() -> Driver {
        Driver::new(Box::new(Rng::new().unwrap()))
    }

    const DRIVER: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

    #[test]
    fn identifies_itself() {
        let d = rng_driver();
        assert_eq!(d.read32(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
        assert_eq!(d.read32(VIRTIO_MMIO_VERSION), 2);
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), 4);
        assert_eq!(d.read32(VIRTIO_MMIO_VENDOR_ID), MMIO_VENDOR);
        d.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            d.read32(VIRTIO_MMIO_DEVICE_FEATURES),
            1,
            "VERSION_1 is bit 32"
        );
        d.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_FEATURES), 0);
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 9);
        assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no such queue");
        // Narrow and unaligned register accesses read as zero and are ignored.
        let mut narrow = [0xffu8; 2];
        d.transport.lock().unwrap().read(0, &mut narrow);
        assert_eq!(narrow, [0, 0]);
        let mut word = [0xffu8; 4];
        d.transport.lock().unwrap().read(2, &mut word);
        assert_eq!(word, [0; 4]);
        d.transport.lock().unwrap().write(0x70, &[1, 0]);
        assert_eq!(d.status(), 0);
        // Past the window: nothing, no panic.
        d.transport.lock().unwrap().read(u64::MAX - 1, &mut word);
        d.transport.lock().unwrap().write(u64::MAX - 1, &word);
    }

    #[test]
    fn refuses_feature_sets_it_did_not_offer() {
        let d = rng_driver();
        d.write32(VIRTIO_MMIO_STATUS, DRIVER);
        // Legacy driver: no VERSION_1.
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        d.write32(VIRTIO_MMIO_STATUS, DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        // A bit the device never offered.
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 1);
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 1 << 5);
        d.write32(VIRTIO_MMIO_STATUS, DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        // The offered set is accepted.
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        d.write32(VIRTIO_MMIO_STATUS, DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_ne!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        // DRIVER_OK with no queue configured: failed, not activated.
        d.write32(
            VIRTIO_MMIO_STATUS,
            DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
        );
        assert!(d.failed());
        assert!(!d.transport.lock().unwrap().is_activated());
    }

    #[test]
    fn driver_ok_before_features_ok_fails() {
        let d = rng_driver();
        d.write32(VIRTIO_MMIO_STATUS, DRIVER);
        d.write32(VIRTIO_MMIO_STATUS, DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
        assert!(d.failed());
        assert!(!d.transport.lock().unwrap().is_activated());
    }

    /// Queue settings that are invalid or point outside guest memory are caught at QueueReady.
    #[test]
    fn bad_queue_settings_fail_at_queue_ready() {
        let cases: Vec<(&str, Ring)> = vec![
            (
                "descriptor table outside memory",
                Ring {
                    desc: MEM_END,
                    ..Ring::at(0x1_0000, 64)
                },
            ),
            (
                "available ring in the hole",
                Ring {
                    avail: HOLE + 0x10,
                    ..Ring::at(0x1_0000, 64)
                },
            ),
            (
                "used ring straddling the end",
                Ring {
                    used: MEM_END - 16,
                    ..Ring::at(0x1_0000, 64)
                },
            ),
            (
                "used ring misaligned",
                Ring {
                    used: 0x1_2002,
                    ..Ring::at(0x1_0000, 64)
                },
            ),
            ("size not a power of two", Ring::at(0x1_0000, 48)),
            ("size above the maximum", Ring::at(0x1_0000, 128)),
            ("size zero", Ring::at(0x1_0000, 0)),
            (
                "64-bit address beyond memory",
                Ring {
                    desc: 1 << 40,
                    ..Ring::at(0x1_0000, 64)
                },
            ),
        ];
        for (name, ring) in cases {
            let mut d = rng_driver();
            let before = snapshot(&d.mem);
            d.init_with(vec![ring], crate::devices::virtio::FEATURE_VERSION_1);
            assert!(d.failed(), "{name}: must fail");
            assert_ne!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS) & INTERRUPT_CONFIG, 0);
            assert_eq!(
                d.read32(VIRTIO_MMIO_QUEUE_READY),
                0,
                "{name}: queue not ready"
            );
            assert!(!d.transport.lock().unwrap().is_activated(), "{name}");
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
        }
    }

    #[test]
    fn reset_recovers_a_failed_device() {
        let mut d = rng_driver();
        d.init();
        d.write32(VIRTIO_MMIO_QUEUE_NOTIFY, 3); // no such queue
        assert!(d.failed());
        // Status writes other than 0 cannot clear the failure.
        d.write32(VIRTIO_MMIO_STATUS, DRIVER);
        assert!(d.failed());
        d.write32(VIRTIO_MMIO_INTERRUPT_ACK, INTERRUPT_CONFIG);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        d.write32(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(d.status(), 0);
        assert!(!d.transport.lock().unwrap().is_failed());
        d.init();
        d.post(0, &[(0x4_0000, 32, true)]);
        d.notify(0);
        assert_eq!(d.used_elem(0, 0).1, 32);
        assert_ne!(
            d.read32(VIRTIO_MMIO_INTERRUPT_STATUS) & 1,
            0,
            "used-ring interrupt"
        );
    }

    #[test]
    fn live_queue_settings_cannot_change() {
        let mut d = rng_driver();
        d.init();
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        d.write32(VIRTIO_MMIO_QUEUE_DESC_LOW, 0xdead_0000);
        d.write32(VIRTIO_MMIO_QUEUE_NUM, 2);
        d.post(0, &[(0x4_0000, 8, true)]);
        d.notify(0);
        assert!(!d.failed());
        assert_eq!(d.used_elem(0, 0).1, 8);
    }

    #[test]
    fn notify_before_activation_is_ignored() {
        let d = rng_driver();
        let before = snapshot(&d.mem);
        d.write32(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(!d.failed());
        assert_only_changed(&before, &snapshot(&d.mem), &[]);
    }
}
