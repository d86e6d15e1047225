//! The flattened device tree handed to an arm64 kernel in X0. Pure data: built from a
//! `FdtConfig`, so it is unit-tested on any host.

use vm_fdt::{Error as FdtError, FdtWriter};

use super::gic::GicVersion;
use super::layout::*;
use crate::arch::types::{BootSeeds, DeviceMap};

/// What the device tree describes.
pub struct FdtConfig<'a> {
    /// Guest RAM in bytes, from `layout::RAM_START`.
    pub mem_size: u64,
    /// MPIDR of each vCPU, in vCPU order.
    pub mpidrs: &'a [u64],
    /// The interrupt controller to describe.
    pub gic: GicVersion,
    /// `/chosen/bootargs`.
    pub cmdline: &'a str,
    /// Guest address and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The platform and virtio devices.
    pub devices: &'a DeviceMap,
    /// `/chosen/kaslr-seed` and `/chosen/rng-seed`: without them the kernel logs "KASLR
    /// disabled due to lack of seed" and every guest has the same layout.
    pub seeds: &'a BootSeeds,
}

const PHANDLE_GIC: u32 = 1;
const PHANDLE_APB_CLK: u32 = 2;
const PHANDLE_GPIO: u32 = 3;
/// KEY_POWER (include/uapi/linux/input-event-codes.h).
pub const KEY_POWER: u32 = 116;

// Interrupt specifier cells (dt-bindings/interrupt-controller/arm-gic.h).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// PPIs of the architected timer: secure phys, non-secure phys, virtual, hypervisor.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
const GIC_MAINTENANCE_PPI: u32 = 9;
/// The 16550's input clock as the 8250 OF driver expects to find it.
const SERIAL_CLOCK_HZ: u32 = 1_843_200;

/// Builds the flattened device tree blob for `cfg`.
pub fn create_fdt(cfg: &FdtConfig<'_>) -> Result<Vec<u8>, FdtError> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "cpevisor microVM")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

    let mem = fdt.begin_node(&format!("memory@{RAM_START:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[RAM_START, cfg.mem_size])?;
    fdt.end_node(mem)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in cfg.mpidrs {
        // Aff2..Aff0 identify the CPU; MT and U bits are not part of the address.
        let reg = (mpidr & 0x00ff_ffff) as u32;
        let cpu = fdt.begin_node(&format!("cpu@{reg:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u32("reg", reg)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", vec!["arm,psci-0.2".into(), "arm,psci".into()])?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cfg.cmdline)?;
    if let Some((start, size)) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    fdt.property_string(
        "stdout-path",
        &format!("/uart@{:x}", cfg.devices.serial.addr),
    )?;
    fdt.property_u64("kaslr-seed", cfg.seeds.kaslr)?;
    fdt.property("rng-seed", &cfg.seeds.rng)?;
    fdt.end_node(chosen)?;

    create_gic_node(&mut fdt, cfg)?;
    create_timer_node(&mut fdt, cfg)?;

    let clk = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", 24_000_000)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(PHANDLE_APB_CLK)?;
    fdt.end_node(clk)?;

    let d = &cfg.devices;
    let uart = fdt.begin_node(&format!("uart@{:x}", d.serial.addr))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[d.serial.addr, d.serial.len])?;
    fdt.property_u32("clock-frequency", SERIAL_CLOCK_HZ)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, d.serial.irq, IRQ_TYPE_EDGE_RISING])?;
    fdt.end_node(uart)?;

    if let Some(rtc) = &d.rtc {
        let n = fdt.begin_node(&format!("rtc@{:x}", rtc.addr))?;
        fdt.property_string_list(
            "compatible",
            vec!["arm,pl031".into(), "arm,primecell".into()],
        )?;
        fdt.property_array_u64("reg", &[rtc.addr, rtc.len])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, rtc.irq, IRQ_TYPE_LEVEL_HIGH])?;
        fdt.property_u32("clocks", PHANDLE_APB_CLK)?;
        fdt.property_string("clock-names", "apb_pclk")?;
        fdt.end_node(n)?;
    }

    create_power_button_nodes(&mut fdt, &d.power_button)?;

    for v in &d.virtio {
        let n = fdt.begin_node(&format!("virtio_mmio@{:x}", v.addr))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &[v.addr, v.len])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, v.irq, IRQ_TYPE_EDGE_RISING])?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(n)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

/// The power button as on QEMU's virt board: a PL061 GPIO controller and a `gpio-keys` node
/// whose `poweroff` key is line `POWER_BUTTON_LINE`, active high (Linux: gpio-keys + PL061).
fn create_power_button_nodes(
    fdt: &mut FdtWriter,
    gpio: &crate::arch::types::DeviceSlot,
) -> Result<(), FdtError> {
    use crate::devices::pl061::POWER_BUTTON_LINE;
    let n = fdt.begin_node(&format!("pl061@{:x}", gpio.addr))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl061".into(), "arm,primecell".into()],
    )?;
    fdt.property_array_u64("reg", &[gpio.addr, gpio.len])?;
    // Edge: the model raises one edge per rise of its output (see devices::pl061).
    fdt.property_array_u32("interrupts", &[GIC_SPI, gpio.irq, IRQ_TYPE_EDGE_RISING])?;
    fdt.property_null("gpio-controller")?;
    fdt.property_u32("#gpio-cells", 2)?;
    fdt.property_u32("clocks", PHANDLE_APB_CLK)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.property_phandle(PHANDLE_GPIO)?;
    fdt.end_node(n)?;

    let keys = fdt.begin_node("gpio-keys")?;
    fdt.property_string("compatible", "gpio-keys")?;
    let key = fdt.begin_node("poweroff")?;
    fdt.property_string("label", "GPIO Key Poweroff")?;
    fdt.property_u32("linux,code", KEY_POWER)?;
    // <&gpio line flags>: flags 0 = GPIO_ACTIVE_HIGH
    fdt.property_array_u32("gpios", &[PHANDLE_GPIO, u32::from(POWER_BUTTON_LINE), 0])?;
    fdt.end_node(key)?;
    fdt.end_node(keys)
}

fn create_gic_node(fdt: &mut FdtWriter, cfg: &FdtConfig<'_>) -> Result<(), FdtError> {
    let gic = fdt.begin_node(&format!("intc@{GIC_DIST_BASE:x}"))?;
    match cfg.gic {
        GicVersion::V3 => {
            fdt.property_string("compatible", "arm,gic-v3")?;
            fdt.property_array_u64(
                "reg",
                &[
                    GIC_DIST_BASE,
                    GIC_DIST_SIZE,
                    GICV3_REDIST_BASE,
                    GICV3_REDIST_SIZE_PER_CPU * cfg.mpidrs.len() as u64,
                ],
            )?;
        }
        GicVersion::V2 => {
            fdt.property_string("compatible", "arm,cortex-a15-gic")?;
            fdt.property_array_u64(
                "reg",
                &[GIC_DIST_BASE, 0x1000, GICV2_CPU_BASE, GICV2_CPU_SIZE],
            )?;
        }
    }
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_array_u32(
        "interrupts",
        &[GIC_PPI, GIC_MAINTENANCE_PPI, IRQ_TYPE_LEVEL_HIGH],
    )?;
    fdt.property_phandle(PHANDLE_GIC)?;
    fdt.end_node(gic)
}

fn create_timer_node(fdt: &mut FdtWriter, cfg: &FdtConfig<'_>) -> Result<(), FdtError> {
    // GICv2 PPI specifiers carry a mask of the CPUs the PPI is wired to; GICv3 ignores it.
    let cpu_mask = match cfg.gic {
        GicVersion::V2 => ((1u32 << cfg.mpidrs.len().min(8)) - 1) << 8,
        GicVersion::V3 => 0,
    };
    let mut irqs = Vec::with_capacity(12);
    for ppi in TIMER_PPIS {
        irqs.extend_from_slice(&[GIC_PPI, ppi, cpu_mask | IRQ_TYPE_LEVEL_HIGH]);
    }
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    fdt.property_array_u32("interrupts", &irqs)?;
    fdt.end_node(timer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::types::DeviceSlot;

    fn devices() -> DeviceMap {
        DeviceMap {
            serial: DeviceSlot {
                addr: SERIAL_BASE,
                len: DEVICE_WINDOW,
                irq: SERIAL_SPI,
            },
            rtc: Some(DeviceSlot {
                addr: RTC_BASE,
                len: DEVICE_WINDOW,
                irq: RTC_SPI,
            }),
            boot_signal: DeviceSlot {
                addr: BOOT_SIGNAL_BASE,
                len: DEVICE_WINDOW,
                irq: 0,
            },
            power_button: DeviceSlot {
                addr: GPIO_BASE,
                len: DEVICE_WINDOW,
                irq: GPIO_SPI,
            },
            virtio: vec![DeviceSlot {
                addr: VIRTIO_MMIO_BASE,
                len: 0x200,
                irq: VIRTIO_FIRST_SPI,
            }],
        }
    }

    /// Finds `needle` in the blob: the FDT stores node names and string values verbatim.
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// The value of property `prop` of the top-level node `node`, read back from the blob.
    fn property(blob: &[u8], node: &str, prop: &str) -> Option<Vec<u8>> {
        node_property(blob, &[node], prop)
    }

    #[test]
    fn every_device_tree_carries_fresh_kaslr_and_rng_seeds() {
        let d = devices();
        let blob = || {
            let seeds = BootSeeds::generate().unwrap();
            create_fdt(&FdtConfig {
                mem_size: 64 << 20,
                mpidrs: &[0],
                gic: GicVersion::V3,
                cmdline: "",
                initrd: None,
                devices: &d,
                seeds: &seeds,
            })
            .unwrap()
        };
        let (a, b) = (blob(), blob());
        let kaslr = |blob: &[u8]| property(blob, "chosen", "kaslr-seed").expect("kaslr-seed");
        let rng = |blob: &[u8]| property(blob, "chosen", "rng-seed").expect("rng-seed");
        assert_eq!(kaslr(&a).len(), 8);
        assert_ne!(kaslr(&a), vec![0; 8]);
        assert_ne!(kaslr(&a), kaslr(&b), "two guests got the same KASLR seed");
        assert_eq!(rng(&a).len(), crate::arch::RNG_SEED_LEN);
        assert_ne!(rng(&a), vec![0; crate::arch::RNG_SEED_LEN]);
        assert_ne!(rng(&a), rng(&b), "two guests got the same RNG seed");
        // The reader finds what is there, not anything: bootargs is the given command line.
        assert_eq!(property(&a, "chosen", "bootargs").unwrap(), b"\0");
    }

    /// The value of property `prop` of the node at `path` (e.g. `["gpio-keys", "poweroff"]`),
    /// read back by walking the blob's structure block (FDT_BEGIN_NODE 1, END_NODE 2, PROP 3,
    /// NOP 4, END 9).
    fn node_property(blob: &[u8], path: &[&str], prop: &str) -> Option<Vec<u8>> {
        let be32 = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap());
        let (structs, strings) = (be32(8) as usize, be32(12) as usize);
        let (mut at, mut cur) = (structs, Vec::<String>::new());
        loop {
            let token = be32(at);
            at += 4;
            match token {
                1 => {
                    let end = at + blob[at..].iter().position(|&b| b == 0).unwrap();
                    cur.push(String::from_utf8(blob[at..end].to_vec()).unwrap());
                    at = (end + 1).next_multiple_of(4);
                }
                2 => {
                    cur.pop();
                }
                3 => {
                    let (len, name_off) = (be32(at) as usize, be32(at + 4) as usize);
                    let name_at = strings + name_off;
                    let name_end = name_at + blob[name_at..].iter().position(|&b| b == 0).unwrap();
                    if cur.len() == path.len() + 1
                        && cur[1..].iter().zip(path).all(|(a, b)| a == b)
                        && &blob[name_at..name_end] == prop.as_bytes()
                    {
                        return Some(blob[at + 8..at + 8 + len].to_vec());
                    }
                    at = (at + 8 + len).next_multiple_of(4);
                }
                4 => {}
                _ => return None,
            }
        }
    }

    fn be32s(v: &[u8]) -> Vec<u32> {
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn the_power_button_is_a_gpio_key_on_the_pl061() {
        let d = devices();
        let seeds = BootSeeds::generate().unwrap();
        let blob = create_fdt(&FdtConfig {
            mem_size: 64 << 20,
            mpidrs: &[0],
            gic: GicVersion::V3,
            cmdline: "",
            initrd: None,
            devices: &d,
            seeds: &seeds,
        })
        .unwrap();
        let gpio = "pl061@9030000";
        let p = |path: &[&str], prop| node_property(&blob, path, prop);
        assert_eq!(
            p(&[gpio], "compatible").unwrap(),
            b"arm,pl061\0arm,primecell\0"
        );
        assert_eq!(
            be32s(&p(&[gpio], "reg").unwrap()),
            [0, GPIO_BASE as u32, 0, 0x1000]
        );
        assert_eq!(
            be32s(&p(&[gpio], "interrupts").unwrap()),
            [GIC_SPI, GPIO_SPI, IRQ_TYPE_EDGE_RISING]
        );
        assert!(p(&[gpio], "gpio-controller").is_some());
        assert_eq!(be32s(&p(&[gpio], "#gpio-cells").unwrap()), [2]);
        assert_eq!(p(&[gpio], "clock-names").unwrap(), b"apb_pclk\0");
        let phandle = be32s(&p(&[gpio], "phandle").unwrap())[0];
        let key = ["gpio-keys", "poweroff"];
        assert_eq!(p(&["gpio-keys"], "compatible").unwrap(), b"gpio-keys\0");
        assert_eq!(be32s(&p(&key, "linux,code").unwrap()), [116]);
        assert_eq!(
            be32s(&p(&key, "gpios").unwrap()),
            [
                phandle,
                u32::from(crate::devices::pl061::POWER_BUTTON_LINE),
                0
            ]
        );
        // No other node claims the GPIO's SPI or window.
        const {
            assert!(GPIO_SPI != SERIAL_SPI && GPIO_SPI != RTC_SPI && GPIO_SPI < VIRTIO_FIRST_SPI);
            assert!(
                GPIO_BASE >= BOOT_SIGNAL_BASE + DEVICE_WINDOW
                    && GPIO_BASE + DEVICE_WINDOW <= VIRTIO_MMIO_BASE
            );
        }
    }

    #[test]
    fn fdt_has_the_nodes_linux_needs() {
        let d = devices();
        let seeds = BootSeeds::generate().unwrap();
        for gic in [GicVersion::V3, GicVersion::V2] {
            let blob = create_fdt(&FdtConfig {
                mem_size: 64 << 20,
                mpidrs: &[0, 1],
                gic,
                cmdline: "console=ttyS0 quiet",
                initrd: Some((0x8400_0000, 0x1000)),
                devices: &d,
                seeds: &seeds,
            })
            .unwrap();
            assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
            assert!(blob.len() as u64 <= FDT_MAX_SIZE);
            for s in [
                &b"memory@80000000"[..],
                b"cpu@1\0",
                b"arm,psci-0.2",
                b"arm,armv8-timer",
                b"ns16550a",
                b"arm,pl031",
                b"virtio_mmio@a000000",
                b"console=ttyS0 quiet",
                b"linux,initrd-start",
                b"/uart@9000000",
            ] {
                assert!(
                    contains(&blob, s),
                    "{gic:?}: missing {}",
                    String::from_utf8_lossy(s)
                );
            }
            let want: &[u8] = match gic {
                GicVersion::V3 => b"arm,gic-v3",
                GicVersion::V2 => b"arm,cortex-a15-gic",
            };
            assert!(contains(&blob, want));
        }
    }
}
