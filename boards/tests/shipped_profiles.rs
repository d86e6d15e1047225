//! Every profile shipped in `boards/` loads, and the key facts other crates rely on hold.

mod common;

use common::shipped_dir;
use cpevisor_boards::{
    list_boards_in, load_all_in, Arch, Board, BoardKind, InterruptController, Isolation,
    DEFAULT_BOARD,
};

const EMULATED: [&str; 6] = [
    "qemu-virt-a53",
    "qemu-virt-a53-gicv2",
    "qemu-virt-a15",
    "qemu-malta-mipsel",
    "qemu-malta-mips64el",
    "qemu-q35-x86_64",
];

#[test]
fn every_shipped_profile_loads() {
    let (boards, errors) = load_all_in(&shipped_dir());
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(messages.is_empty(), "bad shipped profiles: {messages:#?}");
    assert!(boards.len() >= 13, "only {} profiles", boards.len());
    let hardware = boards
        .iter()
        .filter(|b| b.kind == BoardKind::Hardware)
        .count();
    assert!(hardware >= 6, "only {hardware} hardware boards");
}

#[test]
fn the_emulated_boards_exist_with_kernel_and_qemu_sections() {
    let names = list_boards_in(&shipped_dir());
    for name in EMULATED {
        assert!(names.iter().any(|n| n == name), "{name} missing");
        let board = Board::by_name_in(&shipped_dir(), name).unwrap();
        assert!(board.is_emulated(), "{name}");
        let kernel = board.kernel.as_ref().expect("kernel section");
        assert!(!kernel.modules.is_empty(), "{name}: no NIC module");
        let qemu = board.qemu.as_ref().expect("qemu section");
        assert_eq!(qemu.binary, board.cpu.arch.qemu_binary());
    }
}

#[test]
fn tool_files_are_not_listed_as_boards() {
    let names = list_boards_in(&shipped_dir());
    assert!(!names.iter().any(|n| n == "Cargo"), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn default_board_is_aarch64_kvm_gicv3() {
    let board = Board::by_name_in(&shipped_dir(), DEFAULT_BOARD).unwrap();
    assert_eq!(board.cpu.arch, Arch::Aarch64);
    assert_eq!(board.cpu.rust_target, "aarch64-unknown-linux-musl");
    assert_eq!(board.cpu.debian_arch, "arm64");
    assert_eq!(board.isolation, Isolation::Kvm);
    assert_eq!(board.interrupt_controller, InterruptController::Gicv3);
    assert_eq!(board.serial, "ttyAMA0");
    assert_eq!(board.memory.ram_mib, 512);
    assert_eq!(board.kernel.as_ref().unwrap().flavour, "arm64");
    let qemu = board.qemu.as_ref().unwrap();
    assert!(qemu.machine.contains("virtualization=on"));
    assert_eq!(qemu.cpu, "cortex-a53");
}

#[test]
fn no_board_claims_kvm_where_linux_has_none() {
    let (boards, _) = load_all_in(&shipped_dir());
    for board in boards {
        if board.isolation == Isolation::Kvm {
            assert!(board.cpu.arch.has_kvm(), "{}", board.name);
        }
        let m = &board.memory;
        assert!(
            m.host_reserved_mib + m.app_budget_mib <= m.ram_mib,
            "{}",
            board.name
        );
    }
}

#[test]
fn field_lookup_by_dotted_path() {
    let board = Board::by_name_in(&shipped_dir(), DEFAULT_BOARD).unwrap();
    assert_eq!(board.get("cpu.arch").unwrap(), "aarch64");
    assert_eq!(board.get("memory.ram_mib").unwrap(), 512);
    assert_eq!(board.get("kernel.modules.0").unwrap(), "virtio_mmio");
    assert!(board.get("kernel.modules.99").is_none());
    assert!(board.get("memory.nope").is_none());
    let flat = board.flatten();
    assert!(flat
        .iter()
        .any(|(k, v)| k == "qemu.machine" && v == "virt,virtualization=on,gic-version=3"));
}

#[test]
fn unknown_board_name_lists_the_available_ones() {
    let err = Board::by_name_in(&shipped_dir(), "no-such-board").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no-such-board"), "{text}");
    assert!(text.contains(DEFAULT_BOARD), "{text}");
    // A name that would leave the directory is refused, not resolved.
    assert!(Board::by_name_in(&shipped_dir(), "../boards/qemu-virt-a53").is_err());
}
