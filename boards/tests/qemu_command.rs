//! The QEMU command built from a profile, and the `cpevisor-board` tool that prints it.

mod common;

use common::{replace_line, scratch_dir, shipped_dir, shipped_text, write};
use cpevisor_boards::{shell_join, Board, BoardError, DEFAULT_BOARD};
use std::path::Path;
use std::process::Command;

fn default_board() -> Board {
    Board::by_name_in(&shipped_dir(), DEFAULT_BOARD).unwrap()
}

#[test]
fn default_board_command_line() {
    let argv = default_board()
        .qemu_command(
            Path::new("/cache/vmlinuz"),
            Path::new("/out/initramfs.cpio.gz"),
            "quiet rdinit=/init",
            &[(2222, 22), (18080, 8080)],
            &[],
        )
        .unwrap();
    let expected = [
        "qemu-system-aarch64",
        "-nographic",
        "-no-reboot",
        "-machine",
        "virt,virtualization=on,gic-version=3",
        "-cpu",
        "cortex-a53",
        "-smp",
        "2",
        "-m",
        "512",
        "-kernel",
        "/cache/vmlinuz",
        "-initrd",
        "/out/initramfs.cpio.gz",
        "-append",
        "console=ttyAMA0 panic=-1 quiet rdinit=/init",
        "-netdev",
        "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:18080-:8080",
        "-netdev",
        "user,id=lan0,net=192.168.1.0/24,host=192.168.1.2",
        // virtio-mmio slots are handed out from the top: the LAN port listed first, so the
        // WAN's NIC gets the lowest address and is eth0.
        "-device",
        "virtio-net-device,netdev=lan0",
        "-device",
        "virtio-net-device,netdev=n0",
    ];
    assert_eq!(argv, expected);
}

#[test]
fn no_forwards_and_no_extra_append() {
    let argv = default_board()
        .qemu_command(Path::new("k"), Path::new("i"), "  ", &[], &[])
        .unwrap();
    let append = argv.iter().position(|a| a == "-append").unwrap();
    assert_eq!(argv[append + 1], "console=ttyAMA0 panic=-1");
    let netdev = argv.iter().position(|a| a == "-netdev").unwrap();
    assert_eq!(argv[netdev + 1], "user,id=n0");
}

#[test]
fn each_emulated_board_uses_its_serial_and_nic() {
    for (name, console, nic) in [
        (
            "qemu-malta-mipsel",
            "console=ttyS0",
            "pcnet,romfile=,netdev=n0",
        ),
        (
            "qemu-q35-x86_64",
            "console=ttyS0",
            "virtio-net-pci,romfile=,netdev=n0",
        ),
        (
            "qemu-virt-a15",
            "console=ttyAMA0",
            "virtio-net-device,netdev=n0",
        ),
    ] {
        let board = Board::by_name_in(&shipped_dir(), name).unwrap();
        let argv = board
            .qemu_command(Path::new("k"), Path::new("i"), "", &[], &[])
            .unwrap();
        assert_eq!(argv[0], board.cpu.arch.qemu_binary(), "{name}");
        assert!(
            argv.iter().any(|a| a.starts_with(console)),
            "{name}: {argv:?}"
        );
        assert!(argv.iter().any(|a| a == nic), "{name}: {argv:?}");
    }
}

#[test]
fn hardware_board_has_no_qemu_command() {
    let board = Board::by_name_in(&shipped_dir(), "bpi-r3").unwrap();
    let err = board
        .qemu_command(Path::new("k"), Path::new("i"), "", &[], &[])
        .unwrap_err();
    assert!(matches!(err, BoardError::NotEmulated { .. }), "{err:?}");
    assert!(err.to_string().contains("bpi-r3"));
}

#[test]
fn bad_arguments_are_refused() {
    let board = default_board();
    let k = Path::new("k");
    let i = Path::new("i");
    assert!(board.qemu_command(k, i, "a\nb", &[], &[]).is_err());
    assert!(board
        .qemu_command(k, i, &"x".repeat(5000), &[], &[])
        .is_err());
    assert!(board.qemu_command(k, i, "", &[(0, 22)], &[]).is_err());
    assert!(board.qemu_command(k, i, "", &[(22, 0)], &[]).is_err());
    assert!(board
        .qemu_command(k, i, "", &[(2222, 22), (2222, 80)], &[])
        .is_err());
    assert!(board.qemu_command(Path::new(""), i, "", &[], &[]).is_err());
}

#[test]
fn shell_join_round_trips_through_sh() {
    let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$HOME", "", "x,y=z"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(shell_join(&argv))
        .output()
        .expect("run sh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a b|it's|$HOME||x,y=z|"
    );
}

fn tool(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpevisor-board"))
        .args(args)
        .env("CPEVISOR_BOARDS_DIR", dir)
        .output()
        .expect("run cpevisor-board");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tool_list_get_show_and_check() {
    let dir = shipped_dir();
    let (code, out, _) = tool(&dir, &["list"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == DEFAULT_BOARD), "{out}");

    let (code, out, _) = tool(&dir, &["get", DEFAULT_BOARD, "cpu.rust_target"]);
    assert_eq!((code, out.as_str()), (0, "aarch64-unknown-linux-musl\n"));
    let (code, out, _) = tool(&dir, &["get", DEFAULT_BOARD, "kernel.modules"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "virtio_mmio virtio_net virtio_blk tun bridge crc32c_generic nf_tables \
             nft_chain_nat nft_nat nft_masq nft_ct nft_fib_inet nf_conntrack_netlink\n"
        )
    );
    let (code, _, err) = tool(&dir, &["get", DEFAULT_BOARD, "memory.nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("memory.nope"), "{err}");

    let (code, out, _) = tool(&dir, &["show", DEFAULT_BOARD, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["memory"]["ram_mib"], 512);
    let (code, out, _) = tool(&dir, &["show", DEFAULT_BOARD]);
    assert_eq!(code, 0);
    assert!(out.contains("isolation = kvm\n"), "{out}");

    let (code, out, _) = tool(&dir, &["check"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok   qemu-q35-x86_64"), "{out}");

    let (code, out, _) = tool(&dir, &["table"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("| bpi-r3 | hardware | MT7986A (cortex-a53) | aarch64 | 4 | 2048 |"),
        "{out}"
    );
    let (code, _, err) = tool(&dir, &["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"), "{err}");
}

#[test]
fn tool_qemu_cmd_prints_a_quoted_command() {
    let (code, out, err) = tool(
        &shipped_dir(),
        &[
            "qemu-cmd",
            DEFAULT_BOARD,
            "--kernel",
            "/k dir/vmlinuz",
            "--initrd",
            "/i",
            "--append",
            "quiet",
            "--fwd",
            "2222:22",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("qemu-system-aarch64 -nographic -no-reboot "),
        "{out}"
    );
    assert!(out.contains(" -kernel '/k dir/vmlinuz' "), "{out}");
    assert!(
        out.contains(" -append 'console=ttyAMA0 panic=-1 quiet' "),
        "{out}"
    );
    assert!(out.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{out}");

    let (code, _, err) = tool(
        &shipped_dir(),
        &[
            "qemu-cmd",
            DEFAULT_BOARD,
            "--kernel",
            "k",
            "--initrd",
            "i",
            "--fwd",
            "22",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("HOST:GUEST"), "{err}");
    let (code, _, err) = tool(
        &shipped_dir(),
        &["qemu-cmd", DEFAULT_BOARD, "--initrd", "i"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--kernel"), "{err}");
}

#[test]
fn tool_check_names_the_bad_profile() {
    let dir = scratch_dir("check");
    write(&dir, "qemu-virt-a53.toml", &shipped_text("qemu-virt-a53"));
    let bad = replace_line(
        &shipped_text("qemu-virt-a15"),
        "arch =",
        "arch = \"riscv64\"",
    );
    write(&dir, "qemu-virt-a15.toml", &bad);
    let (code, out, err) = tool(&dir, &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("ok   qemu-virt-a53"), "{out}");
    assert!(err.contains("qemu-virt-a15.toml: cpu.arch: "), "{err}");

    let empty = scratch_dir("empty");
    let (code, _, err) = tool(&empty, &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("no board profiles"), "{err}");
}

#[test]
fn a_router_board_gets_a_lan_nic_whose_host_is_the_lan_client() {
    let board = Board::by_name_in(&shipped_dir(), "qemu-malta-mipsel").unwrap();
    let argv = board
        .qemu_command(
            Path::new("k"),
            Path::new("i"),
            "",
            &[(2222, 22)],
            &[(5353, 53)],
        )
        .unwrap();
    let joined = argv.join(" ");
    assert!(
        joined.contains(
            "-netdev user,id=lan0,net=192.168.1.0/24,host=192.168.1.2,\
             hostfwd=udp:127.0.0.1:5353-192.168.1.1:53 \
             -device pcnet,romfile=,netdev=n0 -device pcnet,romfile=,netdev=lan0"
        ),
        "{joined}"
    );
    // The WAN side is as before; a board without LAN ports has nothing to forward to.
    assert!(
        joined.contains("user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22"),
        "{joined}"
    );
    let err = Board::by_name_in(&shipped_dir(), "qemu-q35-x86_64")
        .unwrap()
        .qemu_command(Path::new("k"), Path::new("i"), "", &[], &[(5353, 53)])
        .unwrap_err();
    assert!(err.to_string().contains("no LAN port"), "{err}");
    assert!(board
        .qemu_command(Path::new("k"), Path::new("i"), "", &[], &[(0, 53)])
        .is_err());
}
