//! `cpevisor-vmm` end to end inside the emulated boards (KVM inside QEMU: aarch64 with GICv3 and
//! GICv2, x86_64 q35 with nested SVM): the board downloads guest images from the host, the VMM
//! boots the `status` sample app on the stock Debian kernel or the minimal guest kernel, the
//! board fetches the app's status page over virtio-net (its body carries the per-run token from
//! the virtio-blk disk), asks the app to power off (PSCI SYSTEM_OFF on arm64, the ACPI sleep
//! control register on x86), and the VMM exits 0. Bad input: a missing tap is refused with a
//! message naming it and no control socket left behind. Stopping: SIGTERM presses the guest's
//! power button (aarch64 gpio-keys on a PL061, x86 ACPI GED + PNP0C0C) and the app powers off
//! cleanly (exit 0); an app that ignores the button is stopped at the deadline (exit 5).
//!
//! They need `make firmware` (and `make guest-kernels` for the minimal kernel), so they are
//! `#[ignore]`d for a plain `cargo test` and run by `make e2e`.

use cpevisor_e2e::console::BOARD_STALLED;
use cpevisor_e2e::microvm::{
    create_tap, fetch_images, parse_graceful_stop_ms, GuestImages, HttpServer, VmmLaunch, VmmRun,
    BOARD_DIR, GUEST_ADDR, GUEST_STALLED,
};
use cpevisor_e2e::{BoardVm, BootOptions};
use cpevisor_rootfs::guest::{GuestArch, GuestKernel};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
/// Nested Linux under TCG is slow: the stock kernel loads ten modules before the app starts.
const APP_READY: Duration = Duration::from_secs(300);

/// A token unique to this run and test, so a stale disk or page can never pass.
fn token(board: &str, kernel: &GuestKernel) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{board}-{}-{}-{nanos}", kernel.name(), std::process::id())
}

/// Appends a line to `target/e2e-logs/vmm-figures.txt`: `make e2e` captures the output of
/// passing tests, and the figures are wanted from every run.
fn record_figures(line: &str) {
    use std::io::Write;
    let dir = cpevisor_e2e::workspace_root().join("target/e2e-logs");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("vmm-figures.txt"))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Boots `board`, fetches the images into it and creates tap0; returns the board and images.
fn board_with_images(board: &str, kernel: GuestKernel) -> (BoardVm, GuestImages) {
    let arch = cpevisor_boards::Board::by_name(board).unwrap().cpu.arch;
    let arch = GuestArch::parse(arch.as_str()).unwrap();
    let images = GuestImages::build(arch, kernel.clone(), &token(board, &kernel)).unwrap();
    let server = HttpServer::serve(&images.dir).unwrap();
    let mut vm = BoardVm::boot(board, &BootOptions::default()).unwrap();
    vm.wait_ready(BOOT).unwrap();
    let took = fetch_images(&mut vm, &images, &server).unwrap();
    println!("{board}: images fetched and checked in {took:.1?}");
    create_tap(&mut vm, "tap0").unwrap();
    (vm, images)
}

/// Fresh boards a test gets after its board's own kernel stalled.
const STALL_RETRIES: u32 = 2;

/// Runs one board test; where it failed because the board's own kernel stalled (a soft lockup or
/// an RCU stall in the board, which is the emulation's, not cpevisor's), runs it again on a
/// fresh board, at most `STALL_RETRIES` times, and says so. Seen in CI: the q35 board's kernel
/// livelocked in KVM_RUN delivering the nested guest's APIC timer under TCG-emulated SVM; and
/// (2026-12-07) the q35 board stalling 25 s into its own boot, before any guest, on two boards
/// in a row while the other q35 tests passed; and (CI13) a q35 board's second guest of the same
/// boot not ready after 300 s. Also retried: a guest that stalled with its VMM still running
/// ([`GUEST_STALLED`]). Any other failure, or one stall too many, fails the test.
fn again_if_the_board_stalls(what: &str, test: impl Fn()) {
    for retry in 0..=STALL_RETRIES {
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&test)) else {
            return;
        };
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let Some(at) = message
            .find(BOARD_STALLED)
            .or_else(|| message.find(GUEST_STALLED))
        else {
            std::panic::resume_unwind(payload);
        };
        if retry == STALL_RETRIES {
            std::panic::resume_unwind(payload);
        }
        let stall: String = message[at..].chars().take(200).collect();
        println!("{what}: failed on a stalled board ({stall}); again on a fresh board");
    }
}

/// The whole app lifecycle on one board with one kernel, ended by the guest's own power-off
/// (the app's /cgi-bin/poweroff: PSCI SYSTEM_OFF on arm64, ACPI S5 on x86).
fn app_serves_and_powers_off(board: &str, kernel: GuestKernel) {
    app_lifecycle(board, kernel, &VmmLaunch::default())
}

fn app_lifecycle(board: &str, kernel: GuestKernel, launch: &VmmLaunch) {
    again_if_the_board_stalls(&format!("{board}/{}", kernel.name()), || {
        app_lifecycle_once(board, kernel.clone(), launch)
    });
}

fn app_lifecycle_once(board: &str, kernel: GuestKernel, launch: &VmmLaunch) {
    let (mut vm, images) = board_with_images(board, kernel.clone());
    let started = Instant::now();
    let run = VmmRun::start(&mut vm, launch).unwrap();
    let figures = run.wait_app_ready(&mut vm, APP_READY).unwrap_or_else(|e| {
        panic!("{board}/{}: app not ready: {e}", kernel.name());
    });
    let seen_after = started.elapsed();
    let logs = run.logs(&mut vm).unwrap();
    // The guest's own clock at init start and at ready: kernel time versus app start-up time.
    let guest_uptimes: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split_once(" uptime=").filter(|_| l.starts_with("APP-")))
        .map(|(_, t)| t.trim())
        .collect();
    let boot_ready = match figures.boot_ready_ms {
        Some(ms) => format!("{ms:.3} ms"),
        None => "not signalled".to_string(),
    };
    let line = format!(
        "{board} {} kernel: first instruction {:.3} ms, boot-ready {boot_ready} after VMM start \
         (APP-READY seen by the test after {:.1?}; guest uptime at init, ready: {:?} s)",
        kernel.name(),
        figures.first_instruction_ms,
        seen_after,
        guest_uptimes
    );
    println!("{line}");
    record_figures(&line);
    // Every guest signals through its MMIO page (/dev/mem), x86 included.
    match figures.boot_ready_ms {
        Some(ms) => assert!(figures.first_instruction_ms < ms),
        None => panic!("{board}: no boot-ready signal:\n{logs}"),
    }
    // The VMM falls back to a vGICv2 only where the board's GIC has no v3.
    let fell_back = logs.contains("using GICv2");
    assert_eq!(
        fell_back,
        board.ends_with("gicv2"),
        "{board}: wrong vGIC choice:\n{logs}"
    );

    // From the board, over tap0 -> virtio-net: the page carries the token read from virtio-blk.
    let page = vm
        .run_ok(
            // Not `wget -T`: busybox 1.35's wget segfaults with -T when following the
            // /status -> /status/ redirect. `timeout` bounds it instead.
            &format!("timeout 20 wget -q -O- http://{GUEST_ADDR}/status"),
            CMD,
        )
        .unwrap();
    if !page.contains(&format!("data={}", images.token)) {
        let logs = run.logs(&mut vm).unwrap_or_default();
        panic!(
            "{board}: status page lacks the disk's token {}:\n{page}\n{logs}",
            images.token
        );
    }
    assert!(page.contains("hostname=status-app"), "{page}");
    assert!(page.contains("uptime_s="), "{page}");

    // The reply may or may not arrive before the guest goes down: the exit status counts.
    let _ = vm.run(
        &format!("timeout 10 wget -q -O- http://{GUEST_ADDR}/cgi-bin/poweroff"),
        CMD,
    );
    let code = run.wait_exit(&mut vm, Duration::from_secs(60));
    let logs = run.logs(&mut vm).unwrap_or_default();
    assert_eq!(code, Ok(0), "{board}: VMM exit status at the end:\n{logs}");
    assert!(logs.contains("guest power-off"), "{logs}");
    let left = vm
        .run_ok(&format!("ls {BOARD_DIR}/vmm.sock 2>&1 || true"), CMD)
        .unwrap();
    assert!(
        left.contains("No such file"),
        "control socket left behind: {left}"
    );
}

/// The VMM's stop request as the guest's power button, on one board: the app watches the button,
/// and SIGTERM ends in its clean power-off (httpd stopped, data disk unmounted, exit 0); then an
/// app told to ignore the button (`cpevisor.power_button=ignore`) is stopped at the deadline
/// (exit 5). Both VMMs run in the same board boot.
fn power_button_stops_the_app(board: &str, kernel: GuestKernel) {
    again_if_the_board_stalls(&format!("{board}/{}", kernel.name()), || {
        power_button_once(board, kernel.clone())
    });
}

fn power_button_once(board: &str, kernel: GuestKernel) {
    let (mut vm, _images) = board_with_images(board, kernel.clone());
    let name = kernel.name();

    // Generous: the test is about the path; the time it takes is `make bench`'s figure.
    let watching = VmmLaunch {
        shutdown_timeout_ms: Some(120_000),
        ..Default::default()
    };
    let run = VmmRun::start(&mut vm, &watching).unwrap();
    run.wait_app_ready(&mut vm, APP_READY)
        .unwrap_or_else(|e| panic!("{board}/{name}: app not ready: {e}"));
    let logs = run.logs(&mut vm).unwrap_or_default();
    assert!(
        run.console_has(&mut vm, "APP-POWER-BUTTON state=watching")
            .unwrap(),
        "{board}/{name}: the app found no power button:\n{logs}"
    );
    let (code, took_ms) = run
        .terminate_and_time(&mut vm, Duration::from_secs(180))
        .unwrap();
    let logs = run.logs(&mut vm).unwrap_or_default();
    assert_eq!(code, 0, "{board}/{name}: exit after SIGTERM:\n{logs}");
    assert!(
        logs.contains("shutdown: power button pressed (signal SIGTERM)"),
        "{logs}"
    );
    assert!(logs.contains("exit: guest power-off (code 0)"), "{logs}");
    for marker in [
        "APP-SHUTDOWN reason=power-button",
        "APP-DISK state=unmounted",
    ] {
        assert!(
            run.console_has(&mut vm, marker).unwrap(),
            "{board}/{name}: no {marker:?} on the console:\n{logs}"
        );
    }
    let pressed_to_off = parse_graceful_stop_ms(&logs)
        .unwrap_or_else(|| panic!("no graceful stop figure in the log:\n{logs}"));
    let line = format!(
        "{board} {name} kernel: SIGTERM to VMM exit {took_ms} ms (board clock), power button to \
         guest power-off {pressed_to_off} ms (VMM log)"
    );
    println!("{line}");
    record_figures(&line);

    let ignoring = VmmLaunch {
        extra_cmdline: "cpevisor.power_button=ignore".into(),
        shutdown_timeout_ms: Some(3000),
        ..Default::default()
    };
    let run = VmmRun::start(&mut vm, &ignoring).unwrap();
    run.wait_app_ready(&mut vm, APP_READY)
        .unwrap_or_else(|e| panic!("{board}/{name}: app not ready: {e}"));
    assert!(run
        .console_has(&mut vm, "APP-POWER-BUTTON state=ignored")
        .unwrap());
    let (code, _) = run
        .terminate_and_time(&mut vm, Duration::from_secs(120))
        .unwrap();
    let logs = run.logs(&mut vm).unwrap_or_default();
    assert_eq!(code, 5, "{board}/{name}: exit at the deadline:\n{logs}");
    assert!(
        logs.contains("shutdown: guest did not power off within 3000 ms, stopping"),
        "{logs}"
    );
    assert!(!run.console_has(&mut vm, "APP-SHUTDOWN").unwrap(), "{logs}");
    let left = vm
        .run_ok(&format!("ls {BOARD_DIR}/vmm.sock 2>&1 || true"), CMD)
        .unwrap();
    assert!(
        left.contains("No such file"),
        "control socket left behind: {left}"
    );
}

/// A tap that does not exist: exit 2, the message names it, no control socket left.
fn missing_tap_is_refused(vm: &mut BoardVm) {
    let launch = VmmLaunch {
        tap: "tapnope9".into(),
        ..Default::default()
    };
    let out = vm
        .run_ok(
            &format!(
                "{} </dev/null; echo VMM-EXIT=$?; ls {BOARD_DIR}/vmm.sock 2>&1; true",
                launch.command()
            ),
            CMD,
        )
        .unwrap();
    assert!(
        out.contains("VMM-EXIT=2"),
        "missing tap: not exit 2:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("error") && l.contains("tapnope9")),
        "missing tap: no error naming the tap:\n{out}"
    );
    assert!(
        out.contains("No such file"),
        "control socket left behind:\n{out}"
    );
    assert!(
        !vm.run_ok("ip link show tapnope9 2>&1 || true", CMD)
            .unwrap()
            .contains("tapnope9:"),
        "the VMM created the tap it was refused"
    );
}

#[test]
#[ignore = "boots an emulated board and a microVM in it: needs `make firmware`; run by `make e2e`"]
fn qemu_virt_a53_stock_kernel() {
    app_serves_and_powers_off("qemu-virt-a53", GuestKernel::Stock);
}

#[test]
#[ignore = "boots an emulated board and a microVM in it: needs `make firmware`; run by `make e2e`"]
fn qemu_virt_a53_gicv2_stock_kernel() {
    app_serves_and_powers_off("qemu-virt-a53-gicv2", GuestKernel::Stock);
}

#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_virt_a53_minimal_kernel() {
    app_serves_and_powers_off("qemu-virt-a53", GuestKernel::Minimal);
}

#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_virt_a53_gicv2_minimal_kernel() {
    app_serves_and_powers_off("qemu-virt-a53-gicv2", GuestKernel::Minimal);
}

#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_virt_a53_minimal_kernel_power_button() {
    power_button_stops_the_app("qemu-virt-a53", GuestKernel::Minimal);
}

/// The stock Debian arm64 kernel: gpio_keys and evdev as modules from its package (PL061 is
/// built in).
#[test]
#[ignore = "boots an emulated board and a microVM in it: needs `make firmware`; run by `make e2e`"]
fn qemu_virt_a53_stock_kernel_power_button() {
    power_button_stops_the_app("qemu-virt-a53", GuestKernel::Stock);
}

#[test]
#[ignore = "boots an emulated board: needs `make firmware`; run by `make e2e`"]
fn qemu_virt_a53_missing_tap_is_refused() {
    let (mut vm, _images) = board_with_images("qemu-virt-a53", GuestKernel::Stock);
    missing_tap_is_refused(&mut vm);
}

/// x86_64 nested in the emulated q35 board (KVM on emulated SVM) with the minimal kernel: ACPI
/// (hardware-reduced) gives it the virtio-mmio devices through the DSDT and powers it off
/// through the FADT's sleep control register.
#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_q35_x86_64_minimal_kernel() {
    app_serves_and_powers_off("qemu-q35-x86_64", GuestKernel::Minimal);
}

/// x86_64 in q35 with the minimal kernel: the power button through the DSDT's Generic Event
/// Device (`_EVT` notifies the PNP0C0C button; Linux's evged + button drivers).
#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_q35_x86_64_minimal_kernel_power_button() {
    power_button_stops_the_app("qemu-q35-x86_64", GuestKernel::Minimal);
}

/// The stock Debian amd64 kernel (virtio-mmio as modules, no command-line devices): it finds
/// the disk and the NIC only through the VMM's DSDT (`LNRO0005`). Its bzImage asks for 64 MiB
/// (`init_size`) above the 16 MiB load address to decompress into, so 64 MiB of guest RAM are
/// too few (measured: the decompressor dies and the VMM ends with a reset, code 3).
#[test]
#[ignore = "boots an emulated board and a microVM in it: needs `make firmware`; run by `make e2e`"]
fn qemu_q35_x86_64_stock_kernel() {
    let launch = VmmLaunch {
        memory_mib: 192,
        ..Default::default()
    };
    app_lifecycle("qemu-q35-x86_64", GuestKernel::Stock, &launch);
}

/// A guest kernel panic on x86 (no init: `rdinit=` names a missing file, `panic=-1` reboots at
/// once) restarts the machine (Linux tries the FADT reset register first): the VMM ends with the
/// reboot code 3 and removes its control socket.
#[test]
#[ignore = "needs `make firmware` and the minimal guest kernel (`make guest-kernels`); run by `make e2e`"]
fn qemu_q35_x86_64_guest_panic_is_a_reboot() {
    let board = "qemu-q35-x86_64";
    let (mut vm, _images) = board_with_images(board, GuestKernel::Minimal);
    let launch = VmmLaunch {
        extra_cmdline: "rdinit=/no-such-init".into(),
        ..Default::default()
    };
    let run = VmmRun::start(&mut vm, &launch).unwrap();
    let code = run.wait_exit(&mut vm, APP_READY);
    let logs = run.logs(&mut vm).unwrap_or_default();
    assert_eq!(
        code,
        Ok(3),
        "{board}: VMM exit status after a panic:\n{logs}"
    );
    assert!(logs.contains("exit: guest reset (code 3)"), "{logs}");
    assert!(logs.contains("Kernel panic"), "{logs}");
    let left = vm
        .run_ok(&format!("ls {BOARD_DIR}/vmm.sock 2>&1 || true"), CMD)
        .unwrap();
    assert!(
        left.contains("No such file"),
        "control socket left behind: {left}"
    );
}

/// The retry above: once after a stall, never after another failure, never twice.
#[test]
fn a_stalled_board_is_retried_and_other_failures_are_not() {
    use std::cell::Cell;
    let stalled =
        || panic!("app not ready: timed out; {BOARD_STALLED}: watchdog: BUG: soft lockup");
    let runs = Cell::new(0);
    again_if_the_board_stalls("stall then pass", || {
        runs.set(runs.get() + 1);
        if runs.get() <= STALL_RETRIES {
            stalled();
        }
    });
    assert_eq!(runs.get(), STALL_RETRIES + 1);

    // A guest that hung under the emulation with its VMM still running: the same.
    let runs = Cell::new(0);
    again_if_the_board_stalls("guest stall then pass", || {
        runs.set(runs.get() + 1);
        if runs.get() == 1 {
            panic!("app not ready: no APP-READY in 300 s ({GUEST_STALLED}: its VMM still runs)");
        }
    });
    assert_eq!(runs.get(), 2);

    let runs = Cell::new(0);
    let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        again_if_the_board_stalls("other failure", || {
            runs.set(runs.get() + 1);
            panic!("app not ready: timed out");
        })
    }));
    assert!(other.is_err());
    assert_eq!(
        runs.get(),
        1,
        "a failure that is not a stall is not retried"
    );

    let runs = Cell::new(0);
    let always = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        again_if_the_board_stalls("stalls every time", || {
            runs.set(runs.get() + 1);
            stalled();
        })
    }));
    assert!(always.is_err());
    assert_eq!(
        runs.get(),
        STALL_RETRIES + 1,
        "one stall past the retries fails the test"
    );
}
