//! Checks that a well-typed profile also makes sense: the fields agree with the architecture,
//! the memory split fits in RAM, and an emulated board carries what is needed to boot it.

use crate::error::BoardError;
use crate::profile::{
    Arch, Board, BoardKind, InterruptController, Isolation, Kernel, Network, Qemu,
};
use std::path::Path;

/// Upper bounds on list sizes and numbers, so a mistyped profile fails instead of building
/// absurd commands.
const MAX_NAME_LEN: usize = 64;
const MAX_TEXT_LEN: usize = 512;
const MAX_CORES: u32 = 256;
const MAX_RAM_MIB: u32 = 1 << 20;
const MAX_MODULES: usize = 64;
const MAX_EXTRA_ARGS: usize = 64;

/// Validates `board`, naming `file` and the offending field path in the error.
pub fn validate(board: &Board, file: &Path) -> Result<(), BoardError> {
    let err = |field: &str, message: String| BoardError::field(file, field, message);

    check_name(&board.name).map_err(|m| err("name", m))?;
    check_text(&board.description).map_err(|m| err("description", m))?;
    if let Some(soc) = &board.soc {
        check_word(soc).map_err(|m| err("soc", m))?;
    }
    check_serial(&board.serial).map_err(|m| err("serial", m))?;

    let arch = board.cpu.arch;
    if !arch
        .rust_targets()
        .contains(&board.cpu.rust_target.as_str())
    {
        return Err(err(
            "cpu.rust_target",
            format!(
                "`{}` does not build for cpu.arch {arch} (expected one of: {})",
                board.cpu.rust_target,
                arch.rust_targets().join(", ")
            ),
        ));
    }
    if board.cpu.debian_arch != arch.debian_arch() {
        return Err(err(
            "cpu.debian_arch",
            format!(
                "`{}` does not match cpu.arch {arch} (expected `{}`)",
                board.cpu.debian_arch,
                arch.debian_arch()
            ),
        ));
    }
    check_word(&board.cpu.model).map_err(|m| err("cpu.model", m))?;
    if board.cpu.cores == 0 || board.cpu.cores > MAX_CORES {
        return Err(err(
            "cpu.cores",
            format!("{} is out of range 1..={MAX_CORES}", board.cpu.cores),
        ));
    }

    check_memory(board).map_err(|(field, m)| err(field, m))?;
    if let Some(network) = &board.network {
        check_network(network).map_err(|(field, m)| err(&format!("network.{field}"), m))?;
    }

    if board.isolation == Isolation::Kvm && !arch.has_kvm() {
        return Err(err(
            "isolation",
            format!("kvm is not available on {arch} (Linux has no KVM there); use `jail`"),
        ));
    }
    if !arch
        .interrupt_controllers()
        .contains(&board.interrupt_controller)
    {
        let valid: Vec<&str> = arch
            .interrupt_controllers()
            .iter()
            .map(|ic| ic.as_str())
            .collect();
        return Err(err(
            "interrupt_controller",
            format!(
                "{} does not exist on {arch} (valid: {})",
                board.interrupt_controller,
                valid.join(", ")
            ),
        ));
    }

    match board.kind {
        BoardKind::Emulated => {
            let kernel = board.kernel.as_ref().ok_or_else(|| {
                err(
                    "kernel",
                    "missing section: emulated boards need [kernel]".into(),
                )
            })?;
            let qemu = board.qemu.as_ref().ok_or_else(|| {
                err(
                    "qemu",
                    "missing section: emulated boards need [qemu]".into(),
                )
            })?;
            check_qemu(board, qemu).map_err(|(field, m)| err(&format!("qemu.{field}"), m))?;
            check_kernel(arch, kernel).map_err(|(field, m)| err(&format!("kernel.{field}"), m))?;
        }
        BoardKind::Hardware => {
            if board.qemu.is_some() {
                return Err(err(
                    "qemu",
                    "a hardware board has no [qemu] section (make it kind = \"emulated\")".into(),
                ));
            }
            if let Some(kernel) = &board.kernel {
                check_kernel(arch, kernel)
                    .map_err(|(field, m)| err(&format!("kernel.{field}"), m))?;
            }
        }
    }
    Ok(())
}

/// Board names become file names and appear on kernel command lines: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !plain || name.starts_with('-') {
        return Err(format!(
            "`{name}` is not a board name (1-{MAX_NAME_LEN} of a-z, 0-9, '-', '_', not starting with '-')"
        ));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(format!("longer than {MAX_TEXT_LEN} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// A short single token-ish value (model names, SoC names).
fn check_word(text: &str) -> Result<(), String> {
    check_text(text)?;
    if text.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} bytes"));
    }
    Ok(())
}

fn check_serial(serial: &str) -> Result<(), String> {
    let rest = serial.strip_prefix("tty").unwrap_or("");
    let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    let valid = serial.len() <= 16
        && !letters.is_empty()
        && letters.len() < rest.len()
        && letters.chars().all(|c| c.is_ascii_alphabetic());
    if !valid {
        return Err(format!(
            "`{serial}` is not a serial device name like ttyS0 or ttyAMA0"
        ));
    }
    Ok(())
}

fn check_memory(board: &Board) -> Result<(), (&'static str, String)> {
    let m = &board.memory;
    if m.ram_mib == 0 || m.ram_mib > MAX_RAM_MIB {
        return Err((
            "memory.ram_mib",
            format!("{} MiB is out of range 1..={MAX_RAM_MIB}", m.ram_mib),
        ));
    }
    if m.flash_mib == 0 {
        return Err(("memory.flash_mib", "must be at least 1 MiB".into()));
    }
    if m.host_reserved_mib == 0 {
        return Err(("memory.host_reserved_mib", "must be at least 1 MiB".into()));
    }
    if m.app_budget_mib == 0 {
        return Err(("memory.app_budget_mib", "must be at least 1 MiB".into()));
    }
    if m.host_reserved_mib > m.ram_mib {
        return Err((
            "memory.host_reserved_mib",
            format!(
                "{} MiB exceeds memory.ram_mib {} MiB",
                m.host_reserved_mib, m.ram_mib
            ),
        ));
    }
    // u64: two u32 values cannot overflow it.
    if u64::from(m.host_reserved_mib) + u64::from(m.app_budget_mib) > u64::from(m.ram_mib) {
        return Err((
            "memory.app_budget_mib",
            format!(
                "{} MiB exceeds the {} MiB left of memory.ram_mib {} MiB after memory.host_reserved_mib {} MiB",
                m.app_budget_mib,
                m.ram_mib - m.host_reserved_mib,
                m.ram_mib,
                m.host_reserved_mib
            ),
        ));
    }
    Ok(())
}

/// Most LAN ports a profile lists (a DSA switch has 4 to 8).
const MAX_LAN_PORTS: usize = 16;

fn check_network(network: &Network) -> Result<(), (String, String)> {
    let ifname = |field: String, name: &str| {
        check_ifname(name).map_err(|m| (field, format!("`{name}`: {m}")))
    };
    ifname("wan".into(), &network.wan)?;
    ifname("lan".into(), &network.lan)?;
    if network.wan == network.lan {
        return Err((
            "lan".into(),
            format!("`{}` is also the wan side", network.lan),
        ));
    }
    if network.lan_ports.len() > MAX_LAN_PORTS {
        return Err((
            "lan_ports".into(),
            format!("{} ports, at most {MAX_LAN_PORTS}", network.lan_ports.len()),
        ));
    }
    for (i, port) in network.lan_ports.iter().enumerate() {
        ifname(format!("lan_ports[{i}]"), port)?;
        if *port == network.wan || *port == network.lan || network.lan_ports[..i].contains(port) {
            return Err((
                format!("lan_ports[{i}]"),
                format!("`{port}` is named twice (as wan, lan or another port)"),
            ));
        }
    }
    network
        .lan_address()
        .map_err(|m| ("lan_address".into(), m))?;
    network.app_range().map_err(|m| ("app_range".into(), m))?;
    Ok(())
}

/// Linux interface names as the agent accepts them (the types crate's `IfName` rule: 1-15 of
/// `[A-Za-z0-9._-]`), checked here without the dependency.
fn check_ifname(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name.is_empty() || name.len() > 15 || !plain || name == "." || name == ".." {
        return Err("not an interface name (1-15 of A-Z, a-z, 0-9, '.', '_', '-')".into());
    }
    Ok(())
}

fn check_kernel(arch: Arch, kernel: &Kernel) -> Result<(), (String, String)> {
    if !arch
        .debian_kernel_flavours()
        .contains(&kernel.flavour.as_str())
    {
        return Err((
            "flavour".into(),
            format!(
                "`{}` is not a Debian kernel flavour for {arch} (known: {})",
                kernel.flavour,
                arch.debian_kernel_flavours().join(", ")
            ),
        ));
    }
    if kernel.modules.len() > MAX_MODULES {
        return Err((
            "modules".into(),
            format!(
                "{} modules listed, at most {MAX_MODULES}",
                kernel.modules.len()
            ),
        ));
    }
    for (i, module) in kernel.modules.iter().enumerate() {
        let plain = module
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if module.is_empty() || module.len() > MAX_NAME_LEN || !plain {
            return Err((
                format!("modules[{i}]"),
                format!("`{module}` is not a kernel module name (a-z, 0-9, '_', '-')"),
            ));
        }
        if kernel.modules[..i].contains(module) {
            return Err((
                format!("modules[{i}]"),
                format!("`{module}` is listed twice"),
            ));
        }
    }
    Ok(())
}

fn check_qemu(board: &Board, qemu: &Qemu) -> Result<(), (String, String)> {
    let arch = board.cpu.arch;
    let bad = |field: &str, m: String| Err((field.to_string(), m));
    if qemu.binary != arch.qemu_binary() {
        return bad(
            "binary",
            format!(
                "`{}` does not emulate cpu.arch {arch} (expected `{}`)",
                qemu.binary,
                arch.qemu_binary()
            ),
        );
    }
    for (field, value) in [
        ("machine", &qemu.machine),
        ("cpu", &qemu.cpu),
        ("nic", &qemu.nic),
    ] {
        if value.is_empty() || value.len() > MAX_TEXT_LEN || value.chars().any(char::is_whitespace)
        {
            return bad(
                field,
                format!("`{value}` must be one non-empty word without spaces"),
            );
        }
    }
    if qemu.smp != board.cpu.cores {
        return bad(
            "smp",
            format!(
                "{} differs from cpu.cores {}: the emulated board must match its profile",
                qemu.smp, board.cpu.cores
            ),
        );
    }
    if qemu.memory_mib != board.memory.ram_mib {
        return bad(
            "memory_mib",
            format!(
                "{} differs from memory.ram_mib {}: the emulated board must match its profile",
                qemu.memory_mib, board.memory.ram_mib
            ),
        );
    }
    if qemu.extra_args.len() > MAX_EXTRA_ARGS {
        return bad(
            "extra_args",
            format!(
                "{} arguments, at most {MAX_EXTRA_ARGS}",
                qemu.extra_args.len()
            ),
        );
    }
    for (i, arg) in qemu.extra_args.iter().enumerate() {
        if arg.is_empty() || arg.len() > MAX_TEXT_LEN || arg.chars().any(char::is_control) {
            return Err((
                format!("extra_args[{i}]"),
                format!("`{arg}` is empty, too long or has control characters"),
            ));
        }
    }

    let (machine_type, options) = split_machine(&qemu.machine);
    if machine_type == "virt" && matches!(arch, Arch::Aarch64 | Arch::Armv7) {
        // QEMU's virt board defaults to a GICv2 unless told otherwise.
        let gic = match options.iter().find(|(k, _)| *k == "gic-version") {
            None => InterruptController::Gicv2,
            Some((_, "2")) => InterruptController::Gicv2,
            Some((_, "3")) => InterruptController::Gicv3,
            Some((_, other)) => {
                return bad(
                    "machine",
                    format!("gic-version={other} is not pinned to 2 or 3, so interrupt_controller cannot be checked"),
                )
            }
        };
        if gic != board.interrupt_controller {
            return bad(
                "machine",
                format!(
                    "`{}` gives a {gic}, but interrupt_controller is {}",
                    qemu.machine, board.interrupt_controller
                ),
            );
        }
        if board.isolation == Isolation::Kvm
            && !options
                .iter()
                .any(|(k, v)| *k == "virtualization" && matches!(*v, "on" | "true" | "yes"))
        {
            return bad(
                "machine",
                format!(
                    "`{}` lacks virtualization=on, so the board's kernel gets no EL2 and no KVM for isolation = \"kvm\"",
                    qemu.machine
                ),
            );
        }
    }
    Ok(())
}

/// Splits `virt,virtualization=on,gic-version=3` into `virt` and its `key=value` options.
fn split_machine(machine: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = machine.split(',');
    let machine_type = parts.next().unwrap_or("");
    let options = parts
        .map(|opt| opt.split_once('=').unwrap_or((opt, "on")))
        .collect();
    (machine_type, options)
}
