//! The DSDT: the devices a guest cannot discover by itself. Under `\_SB`: the console UART
//! (`PNP0501`, so a hardware-reduced guest, which has no legacy PIC, routes its IRQ through the
//! I/O APIC) and one `LNRO0005` device per virtio-mmio transport (how Linux's `virtio_mmio`
//! driver finds them through ACPI: a Memory32Fixed window and an edge-triggered interrupt).
//! The power button: a Generic Event Device (`ACPI0013`, `GED_`) whose `_EVT` reads its event
//! register and notifies `PWRB` (`PNP0C0C`, Linux's `button` driver) with 0x80 (see
//! `devices::ged`). At the root: `\_S5`, the sleep type the guest writes to the sleep control
//! register to power off.

use super::aml::{self, AmlError};
use crate::arch::types::DeviceSlot;

/// The ACPI id Linux's virtio_mmio driver matches.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// 16550A-compatible COM port.
pub const SERIAL_HID: &str = "PNP0501";
/// Generic Event Device and power button device ids.
pub const GED_HID: &str = "ACPI0013";
/// ACPI hardware id of the power button device.
pub const POWER_BUTTON_HID: &str = "PNP0C0C";
/// Notify value for a button press ("status change", ACPI 6.5 4.8.3.1).
pub const NOTIFY_BUTTON_PRESSED: u64 = 0x80;
/// DSDT revision 2: AML integers are 64 bits wide.
pub const DSDT_REVISION: u8 = 2;
/// At most this many virtio devices get a DSDT node (names VR00..VRFF).
pub const MAX_VIRTIO: usize = 256;

/// The device name of virtio transport `index`.
pub fn virtio_name(index: usize) -> String {
    format!("VR{index:02X}")
}

fn serial_device(serial: &DeviceSlot) -> Result<Vec<u8>, AmlError> {
    let port = u16::try_from(serial.addr).map_err(|_| {
        AmlError(format!(
            "serial port {:#x} is not a 16-bit port",
            serial.addr
        ))
    })?;
    let len = u8::try_from(serial.len)
        .map_err(|_| AmlError(format!("serial port range of {} bytes", serial.len)))?;
    let irq = u8::try_from(serial.irq)
        .map_err(|_| AmlError(format!("serial IRQ {} is not an ISA IRQ", serial.irq)))?;
    let crs = aml::resource_template(&[aml::io(port, port, 0, len), aml::irq_no_flags(irq)?])?;
    let body = [
        aml::name("_HID", &aml::dword(aml::eisa_id(SERIAL_HID)?))?,
        aml::name("_UID", &aml::integer(0))?,
        aml::name("_CRS", &crs)?,
    ]
    .concat();
    aml::device("COM1", &body)
}

fn virtio_device(index: usize, slot: &DeviceSlot) -> Result<Vec<u8>, AmlError> {
    let what = virtio_name(index);
    let base = u32::try_from(slot.addr)
        .map_err(|_| AmlError(format!("{what}: window {:#x} is above 4 GiB", slot.addr)))?;
    let len = u32::try_from(slot.len)
        .map_err(|_| AmlError(format!("{what}: window of {:#x} bytes", slot.len)))?;
    let crs = aml::resource_template(&[
        aml::memory32_fixed(true, base, len),
        aml::interrupt(true, false, slot.irq),
    ])?;
    let body = [
        aml::name("_HID", &aml::string(VIRTIO_MMIO_HID)?)?,
        aml::name("_UID", &aml::integer(index as u64))?,
        // Cache-coherent DMA (x86 always is; Linux asks on every architecture).
        aml::name("_CCA", &aml::integer(1))?,
        aml::name("_CRS", &crs)?,
    ]
    .concat();
    aml::device(&what, &body)
}

/// `GED_`: its interrupt, its event register as field `GDAT` of an I/O region, and `_EVT`:
/// `Local0 = GDAT; If (Local0 & power button) { Notify(\_SB.PWRB, 0x80) }`.
fn ged_device(slot: &DeviceSlot) -> Result<Vec<u8>, AmlError> {
    use crate::devices::ged;
    let port = u16::try_from(slot.addr)
        .map_err(|_| AmlError(format!("GED port {:#x} is not a 16-bit port", slot.addr)))?;
    let crs = aml::resource_template(&[aml::interrupt(true, false, slot.irq)])?;
    let evt = [
        aml::store(&aml::name_string("GDAT")?, &aml::LOCAL0),
        aml::if_then(
            &aml::and(&aml::LOCAL0, &aml::integer(ged::EVENT_POWER_BUTTON.into())),
            &aml::notify("\\_SB_.PWRB", NOTIFY_BUTTON_PRESSED)?,
        )?,
    ]
    .concat();
    let body = [
        aml::name("_HID", &aml::string(GED_HID)?)?,
        aml::name("_UID", &aml::integer(0))?,
        aml::name("_CRS", &crs)?,
        aml::operation_region(
            "GDST",
            aml::RegionSpace::SystemIo,
            u64::from(port) + ged::EVENT_REG,
            ged::LEN,
        )?,
        aml::field("GDST", &[("GDAT", 8)])?,
        // Serialized: two interrupts' _EVT runs must not interleave their read-and-clear.
        aml::method("_EVT", 1, true, &evt)?,
    ]
    .concat();
    aml::device("GED_", &body)
}

fn power_button_device() -> Result<Vec<u8>, AmlError> {
    let body = [
        aml::name("_HID", &aml::dword(aml::eisa_id(POWER_BUTTON_HID)?))?,
        aml::name("_UID", &aml::integer(0))?,
    ]
    .concat();
    aml::device("PWRB", &body)
}

/// The DSDT's AML body (without the table header).
pub fn aml_body(
    serial: &DeviceSlot,
    power_button: &DeviceSlot,
    virtio: &[DeviceSlot],
    s5_sleep_type: u8,
) -> Result<Vec<u8>, AmlError> {
    if virtio.len() > MAX_VIRTIO {
        return Err(AmlError(format!(
            "{} virtio devices, at most {MAX_VIRTIO}",
            virtio.len()
        )));
    }
    let mut sb = serial_device(serial)?;
    sb.extend(power_button_device()?);
    sb.extend(ged_device(power_button)?);
    for (i, slot) in virtio.iter().enumerate() {
        sb.extend(virtio_device(i, slot)?);
    }
    let mut body = aml::scope("\\_SB_", &sb)?;
    let s5 = u64::from(s5_sleep_type);
    body.extend(aml::name(
        "\\_S5_",
        &aml::package(&[aml::integer(s5), aml::integer(s5)])?,
    )?);
    Ok(body)
}
