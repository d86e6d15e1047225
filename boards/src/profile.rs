//! The shape of a board profile (`boards/<name>.toml`), as serde types.
//!
//! Unknown fields are rejected everywhere so that a typo never silently falls back to a default.
//! Facts that depend on the architecture (Rust targets, Debian architecture, QEMU binary, whether
//! KVM exists, which interrupt controllers exist) live on [`Arch`] so validation and callers
//! agree on them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A board profile. See `boards/qemu-virt-a53.toml` for an annotated example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Profile name; equals the file stem (`qemu-virt-a53` for `qemu-virt-a53.toml`).
    pub name: String,
    /// One line for people choosing a board (`QEMU virt, 4x Cortex-A53, GICv3`).
    pub description: String,
    /// `emulated` boards run under QEMU and need `[kernel]` and `[qemu]`; `hardware` boards are
    /// real devices described from their datasheets.
    pub kind: BoardKind,
    /// System on chip, for people reading the profile (`MT7986A`); not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc: Option<String>,
    /// How apps are isolated on this board.
    pub isolation: Isolation,
    /// Which interrupt controller the SoC has; must be one this arch offers.
    pub interrupt_controller: InterruptController,
    /// Serial console device name without `/dev/` (`ttyAMA0`, `ttyS0`).
    pub serial: String,
    /// The CPU: architecture, Rust and Debian names, model and cores.
    pub cpu: Cpu,
    /// RAM and flash, and how the RAM is split between the host and apps.
    pub memory: Memory,
    /// The Debian kernel the firmware uses; required for emulated boards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// How QEMU emulates the board; required for emulated boards, absent on hardware boards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<Qemu>,
    /// The router's two sides, where the board has them: apps' port mappings and DNS
    /// interception listen there (the agent's `wan_interface` and `lan_interface`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// A router's internet and home sides, as OpenWrt names them: the WAN interface, and the LAN
/// bridge with its ports and the router's address on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The internet side (`eth0`, `wan`).
    pub wan: String,
    /// The home side: the LAN bridge (`br-lan`), which the firmware creates.
    pub lan: String,
    /// The LAN ports the firmware puts into the bridge (`eth1`; `lan1`..`lan4` on a DSA
    /// switch). On an emulated board each is a NIC of its own on a QEMU user network that
    /// stands in for the home, its host side the LAN client.
    #[serde(default)]
    pub lan_ports: Vec<String>,
    /// The router's address on the LAN, with its prefix (`192.168.1.1/24`).
    pub lan_address: String,
    /// The LAN addresses the agent gives apps of network mode `bridged`, first and last
    /// included (`192.168.1.200-192.168.1.249`): inside `lan_address`'s subnet, clear of the
    /// router's address (and of the LAN's DHCP pool, which the profile does not know). None:
    /// no bridged apps on this board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_range: Option<String>,
}

impl Network {
    /// `lan_address` as an address and a prefix length (8 to 30: a home network with room for
    /// the router and a client), or why it is not one.
    pub fn lan_address(&self) -> Result<(std::net::Ipv4Addr, u8), String> {
        parse_lan_address(&self.lan_address)
    }

    /// `app_range` as its first and last address, checked against `lan_address`; None when
    /// the profile has none.
    pub fn app_range(&self) -> Result<Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>, String> {
        let Some(range) = &self.app_range else {
            return Ok(None);
        };
        let (router, prefix) = self.lan_address()?;
        parse_app_range(range, router, prefix).map(Some)
    }
}

/// A router's LAN address with its prefix (`192.168.1.1/24`, prefix 8 to 30: a home network
/// with room for the router and a client), or why it is not one. The agent's `lan_address`
/// follows the same rule.
pub fn parse_lan_address(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let bad =
        || format!("`{text}` is not an IPv4 address with a prefix of 8 to 30 (192.168.1.1/24)");
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    let host = u32::from(addr) & (u32::MAX >> prefix);
    if host == 0 || host == u32::MAX >> prefix {
        return Err(format!(
            "`{text}`: the network or broadcast address, not a host's"
        ));
    }
    Ok((addr, prefix))
}

/// A range of LAN addresses for bridged apps, `first-last` (both included), checked against
/// the router's `router` address on its /`prefix`: both ends hosts of that subnet (not its
/// network or broadcast address), first <= last, the router's address not among them.
pub fn parse_app_range(
    text: &str,
    router: std::net::Ipv4Addr,
    prefix: u8,
) -> Result<(std::net::Ipv4Addr, std::net::Ipv4Addr), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not first-last (192.168.1.200-192.168.1.249)"))?;
    let parse = |t: &str| {
        t.trim()
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("`{text}`: `{t}` is not an IPv4 address"))
    };
    let (first, last) = (parse(a)?, parse(b)?);
    let mask = u32::MAX << (32 - u32::from(prefix));
    let net = u32::from(router) & mask;
    for end in [first, last] {
        let host = u32::from(end) & !mask;
        if u32::from(end) & mask != net || host == 0 || host == !mask {
            return Err(format!(
                "`{text}`: {end} is not a host address of the LAN {}/{prefix}",
                std::net::Ipv4Addr::from(net)
            ));
        }
    }
    if u32::from(first) > u32::from(last) {
        return Err(format!("`{text}`: {first} comes after {last}"));
    }
    if (u32::from(first)..=u32::from(last)).contains(&u32::from(router)) {
        return Err(format!("`{text}` holds the router's own address {router}"));
    }
    Ok((first, last))
}

/// Whether a profile describes an emulated board or a real device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardKind {
    /// Runs under QEMU; needs `[kernel]` and `[qemu]`.
    Emulated,
    /// A real router or set-top box, described from its datasheet.
    Hardware,
}

/// How the agent isolates apps on a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One microVM per app through `/dev/kvm` (cpevisor-vmm).
    Kvm,
    /// Namespaces + cgroups + seccomp, for CPUs without hardware virtualization.
    Jail,
}

/// The SoC's interrupt controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptController {
    /// ARM GICv2 (GIC-400, Qualcomm QGIC2): no MSI, so guests use virtio-mmio.
    Gicv2,
    /// ARM GICv3/v4 (GIC-500, GIC-600).
    Gicv3,
    /// x86 local APIC + I/O APIC.
    Apic,
    /// MIPS Global Interrupt Controller (MT7621, interAptiv/1004K systems).
    MipsGic,
    /// The MIPS CPU's own interrupt lines, with SoC controllers cascaded on them (ath79, Malta).
    MipsCpuIntc,
}

/// A CPU architecture the project builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit ARM (Cortex-A53 and later): KVM, microVM apps.
    Aarch64,
    /// 32-bit ARM with hard float (Cortex-A7/A9/A15): jail apps.
    Armv7,
    /// Big-endian 32-bit MIPS (ath79 SoCs). Debian stopped building it after buster, so there
    /// is no emulated board or Debian kernel for it; hardware profiles only.
    Mips,
    /// Little-endian 32-bit MIPS (MT7621, Malta 24Kc): jail apps.
    Mipsel,
    /// Little-endian 64-bit MIPS (Octeon, Malta 5Kc): jail apps.
    Mips64el,
    /// 64-bit x86: KVM, microVM apps.
    X86_64,
}

impl Arch {
    /// Every architecture, in the order tables list them.
    pub const ALL: [Arch; 6] = [
        Arch::Aarch64,
        Arch::Armv7,
        Arch::Mips,
        Arch::Mipsel,
        Arch::Mips64el,
        Arch::X86_64,
    ];

    /// The name used in profiles, paths and bench keys (`aarch64`, `mipsel`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::Mips => "mips",
            Arch::Mipsel => "mipsel",
            Arch::Mips64el => "mips64el",
            Arch::X86_64 => "x86_64",
        }
    }

    /// Rust targets that produce binaries for this arch: the musl one the project builds
    /// (`make cross`; OpenWrt's C library) first, then glibc's.
    pub fn rust_targets(self) -> &'static [&'static str] {
        match self {
            Arch::Aarch64 => &["aarch64-unknown-linux-musl", "aarch64-unknown-linux-gnu"],
            Arch::Armv7 => &[
                "armv7-unknown-linux-musleabihf",
                "armv7-unknown-linux-gnueabihf",
            ],
            Arch::Mips => &["mips-unknown-linux-musl", "mips-unknown-linux-gnu"],
            Arch::Mipsel => &["mipsel-unknown-linux-musl", "mipsel-unknown-linux-gnu"],
            Arch::Mips64el => &[
                "mips64el-unknown-linux-muslabi64",
                "mips64el-unknown-linux-gnuabi64",
            ],
            Arch::X86_64 => &["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"],
        }
    }

    /// Debian's name for the architecture (kernel and busybox packages; `mips` only up to
    /// Debian 10).
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
            Arch::Mips => "mips",
            Arch::Mipsel => "mipsel",
            Arch::Mips64el => "mips64el",
            Arch::X86_64 => "amd64",
        }
    }

    /// Debian bookworm kernel flavours built for this arch.
    pub fn debian_kernel_flavours(self) -> &'static [&'static str] {
        match self {
            Arch::Aarch64 => &["arm64", "cloud-arm64", "rt-arm64"],
            Arch::Armv7 => &["armmp", "armmp-lpae", "rt-armmp"],
            Arch::Mips => &[],
            Arch::Mipsel => &["4kc-malta", "mips32r2el", "octeon", "loongson-3"],
            Arch::Mips64el => &["5kc-malta", "mips64r2el", "octeon", "loongson-3"],
            Arch::X86_64 => &["amd64", "cloud-amd64", "rt-amd64"],
        }
    }

    /// The QEMU system emulator for this arch.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Armv7 => "qemu-system-arm",
            Arch::Mips => "qemu-system-mips",
            Arch::Mipsel => "qemu-system-mipsel",
            Arch::Mips64el => "qemu-system-mips64el",
            Arch::X86_64 => "qemu-system-x86_64",
        }
    }

    /// Whether Linux offers KVM on this arch. 32-bit ARM KVM was removed in Linux 5.7, and the
    /// router MIPS cores (24Kc/74Kc/1004Kc) have no virtualization extension.
    pub fn has_kvm(self) -> bool {
        matches!(self, Arch::Aarch64 | Arch::X86_64)
    }

    /// The interrupt controllers a profile of this arch may name.
    pub fn interrupt_controllers(self) -> &'static [InterruptController] {
        use InterruptController::*;
        match self {
            Arch::Aarch64 | Arch::Armv7 => &[Gicv2, Gicv3],
            Arch::Mips | Arch::Mipsel | Arch::Mips64el => &[MipsGic, MipsCpuIntc],
            Arch::X86_64 => &[Apic],
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InterruptController {
    /// The name used in profiles (`gicv3`, `mips-cpu-intc`).
    pub fn as_str(self) -> &'static str {
        match self {
            InterruptController::Gicv2 => "gicv2",
            InterruptController::Gicv3 => "gicv3",
            InterruptController::Apic => "apic",
            InterruptController::MipsGic => "mips-gic",
            InterruptController::MipsCpuIntc => "mips-cpu-intc",
        }
    }
}

impl fmt::Display for InterruptController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Kvm => "kvm",
            Isolation::Jail => "jail",
        })
    }
}

/// The board's CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Architecture; must match `rust_target` and `debian_arch`.
    pub arch: Arch,
    /// Rust target triple of the binaries for this board (one of `Arch::rust_targets`).
    pub rust_target: String,
    /// Debian architecture name (`Arch::debian_arch`).
    pub debian_arch: String,
    /// CPU model as the vendor names it (`cortex-a53`, `1004Kc`).
    pub model: String,
    /// Logical CPUs Linux sees.
    pub cores: u32,
}

/// The board's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// RAM in MiB.
    pub ram_mib: u32,
    /// Flash (or eMMC) in MiB for the whole system.
    pub flash_mib: u32,
    /// RAM kept for the kernel, firmware services, the agent and page cache.
    pub host_reserved_mib: u32,
    /// RAM the agent may admit apps into; `host_reserved_mib + app_budget_mib <= ram_mib`.
    pub app_budget_mib: u32,
}

/// The Debian kernel an emulated board's firmware boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Debian kernel flavour (`arm64`, `armmp`, `4kc-malta`, `5kc-malta`, `amd64`).
    pub flavour: String,
    /// Modules the firmware loads at boot, in this order (dependencies are resolved by the
    /// firmware builder from `modules.dep`).
    pub modules: Vec<String>,
}

/// How QEMU emulates the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// QEMU system emulator (`Arch::qemu_binary`).
    pub binary: String,
    /// `-machine` value, options included (`virt,virtualization=on,gic-version=3`).
    pub machine: String,
    /// `-cpu` value (`cortex-a53`, `24Kf`).
    pub cpu: String,
    /// `-smp` value: vCPUs of the emulated board.
    pub smp: u32,
    /// `-m` value in MiB; equals `memory.ram_mib`.
    pub memory_mib: u32,
    /// NIC device model put on the user-mode netdev (`virtio-net-device`, `pcnet`), options
    /// allowed after a comma.
    pub nic: String,
    /// Further arguments appended verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
}
