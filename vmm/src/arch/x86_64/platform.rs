//! The x86_64 platform devices on their buses: the 16550 UART and the boot signal (port and
//! MMIO page), ACPI power management, the i8042 (reset only) and the ACPI Generic Event Device
//! as the power button.

use std::sync::Arc;

use super::layout::{ACPI_PM_PORT, ACPI_PM_PORT_LEN, BOOT_SIGNAL_MMIO, BOOT_SIGNAL_MMIO_LEN};
use crate::arch::types::{ArchError, Platform, PlatformSetup};
use crate::devices::acpi_pm::{AcpiPm, SystemRequest};
use crate::devices::bus::shared;
use crate::devices::ged::{Ged, GedButton, GedDevice};
use crate::devices::i8042::{ExitRequest, I8042, I8042_PORT_BASE, I8042_PORT_LEN};

/// See [`crate::arch::attach_platform_devices`].
pub fn attach_platform_devices(setup: PlatformSetup) -> Result<Platform, ArchError> {
    let PlatformSetup {
        buses,
        devices,
        serial,
        boot_signal,
        button_irq,
    } = setup;
    let s = &devices.serial;
    let b = &devices.boot_signal;
    buses.pio.insert(serial, s.addr, s.len)?;
    // One boot signal, two doors: the port for guests with /dev/port, the MMIO page for
    // guests with only /dev/mem (busybox `devmem`).
    buses.pio.insert(boot_signal.clone(), b.addr, b.len)?;
    buses
        .mmio
        .insert(boot_signal, BOOT_SIGNAL_MMIO, BOOT_SIGNAL_MMIO_LEN)?;
    let power = SystemRequest::new().map_err(|e| ArchError::new("ACPI power management", e))?;
    let (_, dev) = shared(AcpiPm::new(power.clone()));
    buses.pio.insert(dev, ACPI_PM_PORT, ACPI_PM_PORT_LEN)?;
    let exit = ExitRequest::new().map_err(|e| ArchError::new("i8042", e))?;
    let (_, dev) = shared(I8042::new(exit.clone()));
    buses.pio.insert(dev, I8042_PORT_BASE, I8042_PORT_LEN)?;
    let ged = Ged::new(button_irq);
    let p = &devices.power_button;
    let (_, dev) = shared(GedDevice(ged.clone()));
    buses.pio.insert(dev, p.addr, p.len)?;
    Ok(Platform {
        power_button: Arc::new(GedButton(ged)),
        requests: vec![power, exit],
    })
}
