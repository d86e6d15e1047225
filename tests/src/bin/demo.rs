//! `make demo`: boots the default emulated board with its console on this terminal and shows
//! what cpevisor does on it, step by step. Exits non-zero if any step fails.

use cpevisor_e2e::{BoardVm, BootOptions};
use std::time::Duration;

fn step(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn main() {
    let board = std::env::args()
        .nth(1)
        .unwrap_or_else(|| cpevisor_boards::DEFAULT_BOARD.to_string());
    if let Err(e) = demo(&board) {
        eprintln!("\ndemo failed: {e}");
        std::process::exit(1);
    }
    println!("\n\x1b[1mdemo finished: {board} booted, ready, and powered off cleanly\x1b[0m");
}

fn demo(board: &str) -> Result<(), String> {
    step(&format!(
        "booting {board} under QEMU (firmware from target/firmware/{board})"
    ));
    let opts = BootOptions {
        echo: true,
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts)?;
    let ready = vm.wait_ready(Duration::from_secs(240))?;
    step(&format!("board ready: {ready}"));

    let isolation = format!("{:?}", vm.board.isolation).to_lowercase();
    step(&format!("isolation backend on this board: {isolation}"));
    if isolation == "kvm" {
        step("the cross-built cpevisor-vmm talks to the board's /dev/kvm");
        vm.run_ok("cpevisor-vmm kvm-info", Duration::from_secs(60))?;
    }
    step("the agent's tool on the board");
    vm.run_ok("cpevisorctl --help | head -5", Duration::from_secs(60))?;

    step("powering the board off");
    vm.send_line("poweroff -f")?;
    match vm.wait_exit(Duration::from_secs(60))? {
        0 => Ok(()),
        c => Err(format!("QEMU exited with {c}")),
    }
}
