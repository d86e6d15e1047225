//! The aarch64 platform devices on the MMIO bus: the 16550 UART, the boot signal, the PL031
//! RTC and the PL061 GPIO controller whose line 3 is the power button (gpio-keys).

use std::sync::Arc;

use crate::arch::types::{ArchError, Platform, PlatformSetup};
use crate::devices::bus::shared;
use crate::devices::pl061::{Pl061, Pl061Button};
use crate::devices::rtc_pl031::RtcPl031;

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
    buses.mmio.insert(serial, s.addr, s.len)?;
    buses.mmio.insert(boot_signal, b.addr, b.len)?;
    if let Some(r) = &devices.rtc {
        let (_, dev) = shared(RtcPl031::new());
        buses.mmio.insert(dev, r.addr, r.len)?;
    }
    let p = &devices.power_button;
    let (gpio, dev) = shared(Pl061::new(button_irq));
    buses.mmio.insert(dev, p.addr, p.len)?;
    Ok(Platform {
        power_button: Arc::new(Pl061Button(gpio)),
        requests: Vec::new(),
    })
}
