//! Unit tests of tests/src/bench/board.rs: result lines, figures, the session's order.

use super::*;

const VMM_LINE: &str = "BENCH-RESULT monitor=vmm run=2 rc=0 first_entry_us=4210 ready_us=912345 \
    rss_kib=12000 pss_kib=11000 guest_rss_kib=10900 guest_pss_kib=10800 guest_found=1 \
    self_first_ms=3.412 self_ready_ms=812.345 ";

#[test]
fn parses_a_vmm_line() {
    let r = parse_result_line(VMM_LINE).unwrap();
    assert_eq!(r.monitor, "vmm");
    assert_eq!(r.run, 2);
    assert_eq!(r.rc, Some(0));
    assert_eq!(r.first_entry_us, Some(4210.0));
    assert_eq!(r.overhead_rss_kib(), Some(1100.0));
    assert_eq!(r.overhead_pss_kib(), Some(200.0));
    assert_eq!(r.self_ready_ms, Some(812.345));
    assert_eq!(r.guest_uptime_ms, None);
    assert_eq!(r.guest_huge_kib, 0);
    let app = parse_result_line(&format!(
        "{VMM_LINE} guest_uptime_s=4.52 guest_huge_kib=8192"
    ))
    .unwrap();
    assert_eq!(app.guest_uptime_ms, Some(4520.0));
    assert_eq!(app.guest_huge_kib, 8192);
    let e = parse_result_line(&format!("{VMM_LINE} guest_uptime_s=4.5s")).unwrap_err();
    assert!(e.contains("guest_uptime_s"), "{e}");
}

#[test]
fn missing_times_and_mapping_are_absent_not_zero() {
    let r = parse_result_line(
        "BENCH-RESULT monitor=qemu run=1 rc=0 first_entry_us=-1 ready_us=3100000 rss_kib=50000 pss_kib=40000 guest_rss_kib=0 guest_pss_kib=0 guest_found=0",
    )
    .unwrap();
    assert_eq!(r.first_entry_us, None);
    assert_eq!(r.ready_us, Some(3_100_000.0));
    assert_eq!(r.overhead_rss_kib(), None);
    assert_eq!(r.self_first_ms, None);
}

#[test]
fn bad_lines_are_named_errors() {
    for (line, needle) in [
        ("BENCH-RESULT monitor=vmm rss_kib=lots", "rss_kib"),
        (
            "BENCH-RESULT monitor=vmm guest_huge_kib=-2",
            "guest_huge_kib",
        ),
        ("BENCH-RESULT run=1", "no monitor"),
        ("BENCH-RESULT monitor=vmm oops", "not key=value"),
        (
            "BENCH-RESULT monitor=vmm run=1 error=no-exec-event",
            "no-exec-event",
        ),
        ("hello", "not a BENCH-RESULT"),
    ] {
        let e = parse_result_line(line).unwrap_err();
        assert!(e.contains(needle), "{line}: {e}");
    }
    let long = format!("BENCH-RESULT monitor=vmm {}", "x=1 ".repeat(400));
    assert!(parse_result_line(&long).unwrap_err().contains("at most"));
}

#[test]
fn console_output_with_noise_and_errors() {
    let out = format!(
        "sh /bench/board.sh vmm 3\n[  12.3] random kernel line\n{VMM_LINE}\nBENCH-ERROR monitor=vmm run=3 reason=no-marker rc=1\nBENCH-RESULT monitor=vmm run=x\n"
    );
    let (runs, errors) = parse_results(&out);
    assert_eq!(runs.len(), 1);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("no-marker"));
}

fn run(monitor: &str, entry: Option<f64>, ready: f64, rss: u64) -> Run {
    Run {
        monitor: monitor.into(),
        first_entry_us: entry,
        ready_us: Some(ready),
        rss_kib: rss,
        pss_kib: rss,
        guest_rss_kib: 10_000,
        guest_pss_kib: 10_000,
        guest_found: true,
        self_first_ms: Some(2.0),
        guest_uptime_ms: Some(ready / 2000.0),
        ..Default::default()
    }
}

#[test]
fn figures_take_medians_and_leave_out_a_missing_peer() {
    let vmm = [
        run("vmm", Some(5000.0), 900_000.0, 11_000),
        run("vmm", Some(4000.0), 800_000.0, 11_500),
        run("vmm", Some(6000.0), 1_000_000.0, 11_200),
    ];
    let qemu = [
        run("qemu", None, 3_000_000.0, 40_000),
        run("qemu", None, 3_500_000.0, 44_000),
    ];
    let figs = figures(&APP_GUEST, &vmm, &qemu);
    let get = |n: &str| {
        figs.iter()
            .find(|f| f.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let rss = get("vmm.overhead_rss_kib");
    assert_eq!(rss.value, 1200.0);
    assert_eq!(rss.peer, Some((PEER.to_string(), 32_000.0)));
    let first = get("vmm.start_to_first_instruction_ms");
    assert_eq!(first.value, 5.0);
    assert!(first.peer.is_none());
    assert!(first.note.as_deref().unwrap().contains("peer absent"));
    assert_eq!(get("vmm.start_to_ready_ms").ratio(), Some(900.0 / 3250.0));
    assert_eq!(get("vmm.self_reported.first_instruction_ms").value, 2.0);
    assert!(figs
        .iter()
        .all(|f| f.name != "vmm.self_reported.boot_ready_ms"));
    assert!(get("vmm.start_to_ready_ms")
        .note
        .as_deref()
        .unwrap()
        .contains("APP-READY"));

    // The stock guest's runs: the same figures under names that say so, every one of them.
    let stock = figures(&STOCK_GUEST, &vmm, &qemu);
    let names: Vec<&str> = stock.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vmm.stock_guest.overhead_rss_kib",
            "vmm.stock_guest.overhead_pss_kib",
            "vmm.stock_guest.start_to_first_instruction_ms",
            "vmm.stock_guest.start_to_ready_ms",
            "vmm.stock_guest.guest_uptime_at_ready_ms",
            "vmm.stock_guest.self_reported.first_instruction_ms",
        ]
    );
    assert_eq!(stock[3].ratio(), Some(900.0 / 3250.0));
    // The guest's own clock at ready, in ms, beside QEMU's guest.
    let up = get("vmm.guest_uptime_at_ready_ms");
    assert_eq!((up.value, up.peer.as_ref().unwrap().1), (450.0, 1625.0));
    assert!(stock[3].note.as_deref().unwrap().contains("stock Debian"));

    // The jailed VMM beside the same VMM unconfined.
    let confined = [
        run("vmm-confined", Some(5500.0), 950_000.0, 11_300),
        run("vmm-confined", Some(4500.0), 850_000.0, 11_100),
    ];
    let figs = confined_figures(&confined, &vmm);
    let get = |n: &str| {
        figs.iter()
            .find(|f| f.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let rss = get("vmm.confined.overhead_rss_kib");
    assert_eq!(rss.value, 1200.0);
    assert_eq!(rss.peer, Some((UNCONFINED_PEER.to_string(), 1200.0)));
    assert_eq!(
        get("vmm.confined.start_to_ready_ms").ratio(),
        Some(900.0 / 900.0)
    );
    assert_eq!(get("vmm.confined.start_to_first_instruction_ms").value, 5.0);
    assert!(get("vmm.confined.overhead_pss_kib")
        .note
        .as_deref()
        .unwrap()
        .contains("jail"));
    assert!(figs.iter().all(|f| f.name.starts_with("vmm.confined.")));
}

#[test]
fn the_session_runs_each_guest_under_both_monitors_in_measured_order() {
    // `measure` fills `Measured` in this order: app under vmm, then QEMU, then the stock
    // guest under vmm, vmm-confined, QEMU.
    let order: Vec<(&str, &str)> = SESSION.iter().map(|(m, g)| (*m, g.arg)).collect();
    assert_eq!(
        order,
        [
            ("vmm", "app"),
            ("qemu", "app"),
            ("vmm", "stock"),
            ("vmm-confined", "stock"),
            ("qemu", "stock")
        ]
    );
    // board.sh finds the guest RAM mapping by its size: each guest's own.
    assert_eq!((APP_GUEST.mib, STOCK_GUEST.mib), (16, 64));
    assert_ne!(APP_GUEST.prefix, STOCK_GUEST.prefix);
}
