//! Every emulated board boots its firmware to the ready marker, has the right CPU, serves a TCP
//! port that the host reaches through the forward, and powers off. On the default board a
//! cross-built `cpevisor-vmm` opens the board's /dev/kvm and creates a VM.
//!
//! These boot real Debian kernels under QEMU; they need the firmware from `make firmware`, so
//! they are `#[ignore]`d for a plain `cargo test` and run by `make test` (`--include-ignored`).

use cpevisor_e2e::agent::without_kernel_messages;
use cpevisor_e2e::{BoardVm, BootOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
const WEB_PORT: u16 = 8080;

/// `uname -m` each board's kernel reports.
fn machine_of(board: &str) -> &'static str {
    match board {
        "qemu-virt-a53" | "qemu-virt-a53-gicv2" => "aarch64",
        "qemu-virt-a15" => "armv7l",
        "qemu-malta-mipsel" => "mips",
        "qemu-malta-mips64el" => "mips64",
        "qemu-q35-x86_64" => "x86_64",
        other => panic!("no expectation for board {other}"),
    }
}

/// GET / from the host through the board's forwarded port, retrying while the server starts.
fn http_get(port: u16) -> Result<String, String> {
    let deadline = Instant::now() + BoardVm::scaled(Duration::from_secs(30));
    let mut last = String::new();
    while Instant::now() < deadline {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let _ = s.write_all(b"GET /index.html HTTP/1.0\r\nHost: board\r\n\r\n");
                let mut body = String::new();
                match s.read_to_string(&mut body) {
                    Ok(_) if !body.is_empty() => return Ok(body),
                    Ok(_) => last = "empty reply".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no HTTP answer on 127.0.0.1:{port}: {last}"))
}

fn boots_serves_and_powers_off(board: &str) {
    let opts = BootOptions {
        forward: vec![WEB_PORT],
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts).unwrap();
    let ready = vm.wait_ready(BOOT).unwrap();
    assert!(
        ready.contains(&format!("board={board}")),
        "ready line names another board: {ready}"
    );

    // A kernel message (eth0's link coming up) can land in the command's output on the console.
    let machine = without_kernel_messages(&vm.run_ok("uname -m", CMD).unwrap());
    assert_eq!(machine.trim(), machine_of(board), "{board}: wrong CPU");

    // A file with a per-run token, served by busybox httpd inside the board, fetched from the
    // host through QEMU's port forward: proves the board's network and the harness forward.
    let token = format!("cpevisor-{}-{}", std::process::id(), board);
    vm.run_ok(
        &format!(
            "mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && httpd -p {WEB_PORT} -h /tmp/www"
        ),
        CMD,
    )
    .unwrap();
    let port = vm.host_port(WEB_PORT).unwrap();
    let reply = http_get(port).unwrap();
    assert!(reply.starts_with("HTTP/1."), "{board}: not HTTP: {reply}");
    assert!(reply.contains(&token), "{board}: wrong body: {reply}");

    vm.send_line("poweroff -f").unwrap();
    let code = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(code, 0, "{board}: QEMU exit status after poweroff");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_virt_a53() {
    boots_serves_and_powers_off("qemu-virt-a53");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_virt_a53_gicv2() {
    boots_serves_and_powers_off("qemu-virt-a53-gicv2");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_virt_a15() {
    boots_serves_and_powers_off("qemu-virt-a15");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_malta_mipsel() {
    boots_serves_and_powers_off("qemu-malta-mipsel");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_malta_mips64el() {
    boots_serves_and_powers_off("qemu-malta-mips64el");
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_q35_x86_64() {
    boots_serves_and_powers_off("qemu-q35-x86_64");
}

/// The cross-built aarch64 `cpevisor-vmm` in the firmware opens the board's /dev/kvm (the board
/// runs with `virtualization=on`, so its kernel starts at EL2), creates a VM and reports the API.
#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make test`"]
fn qemu_virt_a53_kvm_from_cross_built_vmm() {
    let mut vm = BoardVm::boot("qemu-virt-a53", &BootOptions::default()).unwrap();
    vm.wait_ready(BOOT).unwrap();
    let out = vm
        .run_ok("ls -l /dev/kvm && cpevisor-vmm kvm-info", CMD)
        .unwrap();
    // KVM_GET_API_VERSION has been 12 since Linux 2.6.22; anything else means we read garbage.
    assert!(out.contains("KVM API version: 12"), "{out}");
    assert!(out.contains("VM created"), "{out}");
}
