//! The DSDT: the devices a guest cannot discover by itself. Under `\_SB`: the console UART
//! (`PNP0501`, so a hardware-reduced guest, which has no legacy PIC, routes its IRQ through the
//! I/O APIC) and one `LNRO0005` device per virtio-mmio transport (how Linux's `virtio_mmio`
//! driver finds them through ACPI: a Memory32Fixed window and an edge-triggered interrupt).
//! At the root: `\_S5`, the sleep type the guest writes to the sleep control register to power
//! off.

use super::aml::{self, AmlError};
use crate::arch::DeviceSlot;

/// The ACPI id Linux's virtio_mmio driver matches.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// 16550A-compatible COM port.
pub const SERIAL_HID: &str = "PNP0501";
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

/// The DSDT's AML body (without the table header).
pub fn aml_body(
    serial: &DeviceSlot,
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
