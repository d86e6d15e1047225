//! Each kind of bad profile is refused with an error naming the file and the field.

mod common;

use common::{remove_line, remove_section, replace_line, scratch_dir, shipped_text, write};
use cpevisor_boards::{Board, BoardError};

/// Loads `text` from a file named `bad-board.toml` and returns the error text, checking that
/// it names the file and starts the message with `field: `.
fn load_error(text: &str, field: &str) -> String {
    let dir = scratch_dir("bad");
    let path = write(&dir, "bad-board.toml", text);
    let err = match Board::load(&path) {
        Ok(board) => panic!("profile for field `{field}` loaded: {board:?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(
        message.contains("bad-board.toml: "),
        "no file name in: {message}"
    );
    assert!(
        message.contains(&format!(".toml: {field}: ")),
        "no field `{field}` in: {message}"
    );
    message
}

fn a53() -> String {
    shipped_text("qemu-virt-a53")
}

fn a15() -> String {
    shipped_text("qemu-virt-a15")
}

#[test]
fn unknown_arch() {
    let text = replace_line(&a53(), "arch =", "arch = \"sparc\"");
    let msg = load_error(&text, "cpu.arch");
    assert!(msg.contains("sparc"), "{msg}");
}

#[test]
fn rust_target_not_matching_arch() {
    let text = replace_line(
        &a53(),
        "rust_target =",
        "rust_target = \"mipsel-unknown-linux-musl\"",
    );
    let msg = load_error(&text, "cpu.rust_target");
    assert!(msg.contains("aarch64-unknown-linux-musl"), "{msg}");
}

#[test]
fn debian_arch_not_matching_arch() {
    let text = replace_line(&a53(), "debian_arch =", "debian_arch = \"armhf\"");
    let msg = load_error(&text, "cpu.debian_arch");
    assert!(msg.contains("arm64"), "{msg}");
}

#[test]
fn app_budget_larger_than_ram() {
    let text = replace_line(&a53(), "app_budget_mib =", "app_budget_mib = 600");
    let msg = load_error(&text, "memory.app_budget_mib");
    assert!(msg.contains("600 MiB"), "{msg}");
}

#[test]
fn host_reserved_plus_budget_larger_than_ram() {
    // Each fits alone; together they do not.
    let text = replace_line(&a53(), "host_reserved_mib =", "host_reserved_mib = 300");
    load_error(&text, "memory.app_budget_mib");
}

#[test]
fn host_reserved_larger_than_ram() {
    let text = replace_line(&a53(), "host_reserved_mib =", "host_reserved_mib = 4096");
    load_error(&text, "memory.host_reserved_mib");
}

#[test]
fn kvm_on_armv7() {
    let text = replace_line(&a15(), "isolation =", "isolation = \"kvm\"");
    let msg = load_error(&text, "isolation");
    assert!(msg.contains("armv7"), "{msg}");
}

#[test]
fn kvm_on_mips() {
    let text = replace_line(
        &shipped_text("mt7621-edgerouter-x"),
        "isolation =",
        "isolation = \"kvm\"",
    );
    load_error(&text, "isolation");
}

#[test]
fn interrupt_controller_of_another_arch() {
    let text = replace_line(
        &a53(),
        "interrupt_controller =",
        "interrupt_controller = \"apic\"",
    );
    let msg = load_error(&text, "interrupt_controller");
    assert!(msg.contains("gicv2, gicv3"), "{msg}");
    let text = replace_line(
        &shipped_text("qemu-q35-x86_64"),
        "interrupt_controller =",
        "interrupt_controller = \"mips-gic\"",
    );
    load_error(&text, "interrupt_controller");
}

#[test]
fn unknown_interrupt_controller() {
    let text = replace_line(
        &a53(),
        "interrupt_controller =",
        "interrupt_controller = \"gicv5\"",
    );
    load_error(&text, "interrupt_controller");
}

#[test]
fn emulated_board_without_qemu_section() {
    let text = remove_section(&a53(), "qemu");
    let msg = load_error(&text, "qemu");
    assert!(msg.contains("emulated"), "{msg}");
}

#[test]
fn emulated_board_without_kernel_section() {
    let text = remove_section(&a53(), "kernel");
    load_error(&text, "kernel");
}

#[test]
fn hardware_board_with_qemu_section() {
    let text = replace_line(&a53(), "kind =", "kind = \"hardware\"");
    load_error(&text, "qemu");
}

#[test]
fn missing_field_in_a_section() {
    let text = remove_line(&a53(), "ram_mib =");
    let msg = load_error(&text, "memory.ram_mib");
    assert!(msg.contains("missing field"), "{msg}");
}

#[test]
fn missing_top_level_field() {
    let text = remove_line(&a53(), "serial =");
    let msg = load_error(&text, "serial");
    assert!(msg.contains("missing field"), "{msg}");
}

#[test]
fn missing_section() {
    let text = remove_section(&a53(), "memory");
    load_error(&text, "memory");
}

#[test]
fn wrong_type_string_for_number() {
    let text = replace_line(&a53(), "ram_mib =", "ram_mib = \"512\"");
    let msg = load_error(&text, "memory.ram_mib");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn wrong_type_negative_count() {
    let text = replace_line(&a53(), "cores =", "cores = -2");
    load_error(&text, "cpu.cores");
}

#[test]
fn wrong_type_number_larger_than_field() {
    let text = replace_line(&a53(), "flash_mib =", "flash_mib = 99999999999");
    load_error(&text, "memory.flash_mib");
}

#[test]
fn wrong_type_inside_a_list() {
    let text = replace_line(&a53(), "modules =", "modules = [\"virtio_mmio\", 3]");
    load_error(&text, "kernel.modules[1]");
}

#[test]
fn wrong_type_table_for_string() {
    let text = replace_line(&a53(), "serial =", "serial = { device = \"ttyAMA0\" }");
    load_error(&text, "serial");
}

#[test]
fn unknown_top_level_field() {
    let text = replace_line(&a53(), "kind =", "kind = \"emulated\"\ncolour = \"red\"");
    let msg = load_error(&text, "colour");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn unknown_field_in_a_section() {
    let text = replace_line(&a53(), "ram_mib =", "ram_mib = 512\nswap_mib = 64");
    let msg = load_error(&text, "memory.swap_mib");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn zero_ram() {
    let text = replace_line(&a53(), "ram_mib =", "ram_mib = 0");
    load_error(&text, "memory.ram_mib");
}

#[test]
fn qemu_smp_differs_from_cores() {
    let text = replace_line(&a53(), "smp =", "smp = 4");
    load_error(&text, "qemu.smp");
}

#[test]
fn qemu_memory_differs_from_ram() {
    let text = replace_line(&a53(), "memory_mib =", "memory_mib = 1024");
    load_error(&text, "qemu.memory_mib");
}

#[test]
fn qemu_binary_of_another_arch() {
    let text = replace_line(&a53(), "binary =", "binary = \"qemu-system-arm\"");
    load_error(&text, "qemu.binary");
}

#[test]
fn qemu_gic_version_differs_from_interrupt_controller() {
    let text = replace_line(
        &a53(),
        "machine =",
        "machine = \"virt,virtualization=on,gic-version=2\"",
    );
    let msg = load_error(&text, "qemu.machine");
    assert!(msg.contains("gicv2"), "{msg}");
}

#[test]
fn kvm_board_without_virtualization_on() {
    let text = replace_line(&a53(), "machine =", "machine = \"virt,gic-version=3\"");
    let msg = load_error(&text, "qemu.machine");
    assert!(msg.contains("virtualization=on"), "{msg}");
}

#[test]
fn kernel_flavour_of_another_arch() {
    let text = replace_line(&a53(), "flavour =", "flavour = \"armmp\"");
    load_error(&text, "kernel.flavour");
}

#[test]
fn bad_module_name() {
    let text = replace_line(
        &a53(),
        "modules =",
        "modules = [\"virtio_net\", \"../evil\"]",
    );
    load_error(&text, "kernel.modules[1]");
}

#[test]
fn bad_serial_device() {
    let text = replace_line(&a53(), "serial =", "serial = \"/dev/ttyAMA0\"");
    load_error(&text, "serial");
}

#[test]
fn bad_board_name() {
    let text = replace_line(&a53(), "name =", "name = \"Bad Name\"");
    load_error(&text, "name");
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let text = replace_line(&a53(), "cores =", "cores = = 2");
    let dir = scratch_dir("syntax");
    let path = write(&dir, "broken.toml", &text);
    let err = Board::load(&path).unwrap_err();
    let line = text
        .lines()
        .position(|l| l.starts_with("cores = = 2"))
        .unwrap()
        + 1;
    match &err {
        BoardError::Syntax { line: l, .. } => assert_eq!(*l, line),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("broken.toml: line "), "{msg}");
}

#[test]
fn file_name_must_match_profile_name_when_loaded_by_name() {
    let dir = scratch_dir("rename");
    write(&dir, "other-board.toml", &a53());
    let msg = Board::by_name_in(&dir, "other-board")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("other-board.toml: name: "), "{msg}");
    // Loaded by path (as an installed /etc/cpevisor/board.toml is), any file name is fine.
    let board = Board::load(dir.join("other-board.toml")).unwrap();
    assert_eq!(board.name, "qemu-virt-a53");
}

#[test]
fn oversized_file_is_refused() {
    let mut text = a53();
    text.push_str(&"# padding\n".repeat(10_000));
    let dir = scratch_dir("big");
    let path = write(&dir, "huge.toml", &text);
    let msg = Board::load(&path).unwrap_err().to_string();
    assert!(msg.contains("huge.toml"), "{msg}");
    assert!(msg.contains("larger than"), "{msg}");
}

#[test]
fn missing_file_names_the_file() {
    let dir = scratch_dir("missing");
    let msg = Board::load(dir.join("absent.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent.toml"), "{msg}");
}

#[test]
fn bad_router_networks() {
    let malta = shipped_text("qemu-malta-mipsel");
    for (line, replacement, field, says) in [
        ("wan =", "wan = \"eth0/1\"", "network.wan", "interface name"),
        (
            "lan =",
            "lan = \"eth0\"",
            "network.lan",
            "also the wan side",
        ),
        (
            "lan_ports =",
            "lan_ports = [\"eth1\", \"eth1\"]",
            "network.lan_ports[1]",
            "named twice",
        ),
        (
            "lan_address =",
            "lan_address = \"192.168.1.1\"",
            "network.lan_address",
            "prefix",
        ),
        (
            "lan_address =",
            "lan_address = \"192.168.1.0/24\"",
            "network.lan_address",
            "network or broadcast",
        ),
        (
            "app_range =",
            "app_range = \"192.168.2.200-192.168.2.249\"",
            "network.app_range",
            "not a host address of the LAN 192.168.1.0/24",
        ),
        (
            "app_range =",
            "app_range = \"192.168.1.1-192.168.1.20\"",
            "network.app_range",
            "router's own address 192.168.1.1",
        ),
        (
            "app_range =",
            "app_range = \"192.168.1.249-192.168.1.200\"",
            "network.app_range",
            "comes after",
        ),
        (
            "app_range =",
            "app_range = \"192.168.1.200\"",
            "network.app_range",
            "first-last",
        ),
    ] {
        let msg = load_error(&replace_line(&malta, line, replacement), field);
        assert!(msg.contains(says), "{msg}");
    }
}
