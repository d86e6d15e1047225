//! The board part of `make bench`: `qemu-virt-a53` booted with the bench overlay appended to its
//! firmware (`scripts/bench-overlay.sh`), `/bench/board.sh` run for cpevisor-vmm, for
//! cpevisor-vmm jailed (`"jail"` in its VM description, as the agent starts it) and for
//! qemu-system-aarch64 in the same board, its `BENCH-RESULT` lines turned into figures. Two
//! guests: the sample app as its package carries it (`APP_GUEST`: the `vmm.*` figures) and a
//! stock Debian kernel guest (`STOCK_GUEST`: `vmm.stock_guest.*`, and the jail's cost).

use super::stats::{median, round_to};
use super::Figure;
use crate::vm::{BoardVm, BootOptions};
use std::path::Path;
use std::time::Duration;

/// The board the microVM bench boots.
pub const BOARD: &str = "qemu-virt-a53";
/// Board RAM: QEMU, its libraries and two guest images live in the board's rootfs (RAM).
pub const BOARD_MEMORY_MIB: u32 = 1024;
/// Guest boots per monitor by default; figures are their medians.
pub const DEFAULT_RUNS: u32 = 3;
/// Upper bound for `CPEVISOR_BENCH_RUNS` (each run is tens of seconds of emulated board time).
pub const MAX_RUNS: u32 = 15;
/// The peer as the figures name it.
pub const PEER: &str = "qemu-system-aarch64 -accel kvm";
/// The peer of the `vmm.confined.*` figures: the same VMM without its jail.
pub const UNCONFINED_PEER: &str = "cpevisor-vmm unconfined";
/// A guest `/bench/board.sh` boots under each monitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guest {
    /// board.sh's name for it (its third argument).
    pub arg: &'static str,
    /// Its memory in MiB: the size of the guest RAM mapping board.sh looks for.
    pub mib: u32,
    /// Prefix of its `vmm.*` figures.
    pub prefix: &'static str,
    /// What it is, for the figures' notes.
    pub what: &'static str,
}

/// The sample app `status` as its package carries it, with the devices and command line the
/// agent gives it: issue 11's `vmm.start_to_ready_ms` and `density.app_pss_kib`.
pub const APP_GUEST: Guest = Guest {
    arg: "app",
    mib: 16,
    prefix: "vmm.",
    what: "the sample app `status` as its package carries it: the minimal guest kernel, its \
           erofs root read-only + its ext2 disk (virtio-blk), virtio-net on a tap, virtio-rng, \
           virtio-balloon (free page reporting), 16 MiB, 1 vCPU, `quiet`, the agent's command \
           line (console ttyS0 for cpevisor-vmm, ttyAMA0 for QEMU's virt machine); ready = its \
           APP-READY console line (HTTP up)",
};

/// Debian's stock arm64 kernel with a busybox initramfs that prints a marker at once.
pub const STOCK_GUEST: Guest = Guest {
    arg: "stock",
    mib: 64,
    prefix: "vmm.stock_guest.",
    what: "stock Debian arm64 Image + busybox initramfs, 64 MiB, 1 vCPU, `quiet`; ready = its \
           BENCH-MARKER console line",
};

/// Longest result line accepted from the board (a garbled console cannot grow one without bound).
const MAX_RESULT_LINE: usize = 1024;

/// One guest boot as `/bench/board.sh` reported it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Run {
    /// `cpevisor-vmm`, `cpevisor-vmm-confined` or `qemu`.
    pub monitor: String,
    /// The run's number, from 1.
    pub run: u32,
    /// The monitor's exit status after SIGTERM.
    pub rc: Option<i32>,
    /// Process start (exec) to the first vCPU entry into the guest, board clock.
    pub first_entry_us: Option<f64>,
    /// Process start to the guest's marker line read from the console pipe, board clock.
    pub ready_us: Option<f64>,
    /// The monitor's VmRSS in KiB, guest RAM included.
    pub rss_kib: u64,
    /// The monitor's Pss in KiB, guest RAM included.
    pub pss_kib: u64,
    /// Rss of the guest RAM mapping in KiB.
    pub guest_rss_kib: u64,
    /// Pss of the guest RAM mapping in KiB.
    pub guest_pss_kib: u64,
    /// Of the guest RAM resident, how much the board kernel holds as transparent huge pages
    /// (`AnonHugePages`): a guest touching one page of such a 2 MiB stretch makes all of it
    /// resident.
    pub guest_huge_kib: u64,
    /// Whether the guest RAM mapping was found in smaps (else the overheads are unknown).
    pub guest_found: bool,
    /// cpevisor-vmm's own log lines (ms since its `main`).
    pub self_first_ms: Option<f64>,
    /// Boot-ready in cpevisor-vmm's own log, ms since its `main`.
    pub self_ready_ms: Option<f64>,
    /// The guest's own uptime when it printed its ready line (ms; the app guest says it).
    pub guest_uptime_ms: Option<f64>,
}

impl Run {
    /// The monitor's own resident memory: VmRSS minus the guest RAM mapping.
    pub fn overhead_rss_kib(&self) -> Option<f64> {
        self.guest_found
            .then(|| self.rss_kib.saturating_sub(self.guest_rss_kib) as f64)
    }

    /// The monitor's own proportional memory: Pss minus the guest RAM mapping.
    pub fn overhead_pss_kib(&self) -> Option<f64> {
        self.guest_found
            .then(|| self.pss_kib.saturating_sub(self.guest_pss_kib) as f64)
    }
}

/// Guest boots per monitor: `CPEVISOR_BENCH_RUNS` (1..=15) or 3.
pub fn runs() -> Result<u32, String> {
    match std::env::var("CPEVISOR_BENCH_RUNS") {
        Err(_) => Ok(DEFAULT_RUNS),
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_RUNS).contains(&n) => Ok(n),
            _ => Err(format!(
                "CPEVISOR_BENCH_RUNS={text:?}: expected a whole number from 1 to {MAX_RUNS}"
            )),
        },
    }
}

/// Parses one `BENCH-RESULT key=value ...` line. Unknown keys are ignored (the script may grow);
/// a time of -1 means "not seen".
pub fn parse_result_line(line: &str) -> Result<Run, String> {
    if line.len() > MAX_RESULT_LINE {
        return Err(format!(
            "result line of {} bytes, at most {MAX_RESULT_LINE}",
            line.len()
        ));
    }
    let rest = line
        .trim()
        .strip_prefix("BENCH-RESULT ")
        .ok_or_else(|| format!("not a BENCH-RESULT line: {line:?}"))?;
    let mut run = Run::default();
    for word in rest.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("word {word:?} is not key=value in {line:?}"));
        };
        let bad = |what: &str| format!("{key}={value:?} is not {what} in {line:?}");
        let time = || -> Result<Option<f64>, String> {
            let v: f64 = value.parse().map_err(|_| bad("a number"))?;
            Ok((v.is_finite() && v >= 0.0).then_some(v))
        };
        let kib = || value.parse::<u64>().map_err(|_| bad("a KiB count"));
        match key {
            "monitor" => run.monitor = value.to_string(),
            "run" => run.run = value.parse().map_err(|_| bad("a run number"))?,
            "rc" => run.rc = value.parse().ok(),
            "first_entry_us" => run.first_entry_us = time()?,
            "ready_us" => run.ready_us = time()?,
            "self_first_ms" => run.self_first_ms = time()?,
            "self_ready_ms" => run.self_ready_ms = time()?,
            "guest_uptime_s" => run.guest_uptime_ms = time()?.map(|s| s * 1000.0),
            "rss_kib" => run.rss_kib = kib()?,
            "pss_kib" => run.pss_kib = kib()?,
            "guest_rss_kib" => run.guest_rss_kib = kib()?,
            "guest_pss_kib" => run.guest_pss_kib = kib()?,
            "guest_huge_kib" => run.guest_huge_kib = kib()?,
            "guest_found" => run.guest_found = value == "1",
            "error" => return Err(format!("board script: {value} in {line:?}")),
            _ => {}
        }
    }
    if run.monitor.is_empty() {
        return Err(format!("no monitor= in {line:?}"));
    }
    Ok(run)
}

/// Every result line in the board's output; other lines are ignored, `BENCH-ERROR` lines and
/// unparsable result lines are returned as errors.
pub fn parse_results(output: &str) -> (Vec<Run>, Vec<String>) {
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.starts_with("BENCH-RESULT ") {
            match parse_result_line(line) {
                Ok(r) => runs.push(r),
                Err(e) => errors.push(e),
            }
        } else if line.starts_with("BENCH-ERROR ") {
            errors.push(line.chars().take(MAX_RESULT_LINE).collect());
        }
    }
    (runs, errors)
}

/// What one board session gave.
#[derive(Debug, Default)]
pub struct Measured {
    /// cpevisor-vmm runs of `APP_GUEST`.
    pub app_vmm: Vec<Run>,
    /// qemu-system-aarch64 -accel kvm runs of `APP_GUEST`.
    pub app_qemu: Vec<Run>,
    /// cpevisor-vmm runs of `STOCK_GUEST` without the jail.
    pub vmm: Vec<Run>,
    /// cpevisor-vmm with `"jail"`: namespaces, unprivileged uid, seccomp (board.sh vmm-confined),
    /// `STOCK_GUEST`.
    pub vmm_confined: Vec<Run>,
    /// qemu-system-aarch64 -accel kvm runs of `STOCK_GUEST`.
    pub qemu: Vec<Run>,
    /// (VmRSS, Pss) in KiB of the `cpevisord` the firmware started, idle with nothing installed.
    pub agent_idle_kib: Option<(u64, u64)>,
    /// Failed runs, odd exits, unparsable lines: each makes `make bench` exit non-zero.
    pub problems: Vec<String>,
}

/// Boots the board with `initrd` (firmware + overlay), runs each monitor `runs` times on each
/// guest, powers the board off.
pub fn measure(initrd: &Path, runs: u32) -> Result<Measured, String> {
    let opts = BootOptions {
        initrd_override: Some(initrd.to_path_buf()),
        memory_override: Some(BOARD_MEMORY_MIB),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts)?;
    // The overlay is ~100 MB for the board kernel to unpack under TCG.
    vm.wait_ready(Duration::from_secs(300))?;
    let mut problems = Vec::new();
    let agent_idle_kib = match agent_idle(&mut vm) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("agent idle memory: {e}"));
            None
        }
    };
    let mut per_monitor = Vec::new();
    for (monitor, guest) in SESSION {
        // A failing run still prints its line; the exit status only says one failed.
        let (_, out) = vm.run(
            &format!("sh /bench/board.sh {monitor} {runs} {}", guest.arg),
            // The script gives each boot 120 s of board time to reach its marker.
            Duration::from_secs(60 + 150 * u64::from(runs)),
        )?;
        let (runs, errors) = parse_results(&out);
        let monitor = format!("{monitor} ({} guest)", guest.arg);
        for r in &runs {
            println!(
                "bench: {monitor} run {}: first entry {} ms, ready {} ms (guest uptime {} ms), guest RAM rss {} KiB ({} in huge pages), overhead rss {} KiB pss {} KiB (rc {:?})",
                r.run,
                show_ms(r.first_entry_us),
                show_ms(r.ready_us),
                r.guest_uptime_ms.map_or("?".into(), |v| format!("{v:.0}")),
                r.guest_rss_kib,
                r.guest_huge_kib,
                r.overhead_rss_kib().map_or("?".into(), |v| v.to_string()),
                r.overhead_pss_kib().map_or("?".into(), |v| v.to_string()),
                r.rc
            );
            if !r.guest_found {
                problems.push(format!(
                    "{monitor} run {}: no {} MiB guest RAM mapping in smaps",
                    r.run, guest.mib
                ));
            }
        }
        problems.extend(errors.into_iter().map(|e| format!("{monitor}: {e}")));
        if runs.is_empty() {
            problems.push(format!("{monitor}: no result; board output:\n{out}"));
        }
        per_monitor.push(runs);
    }
    let _ = vm.send_line("poweroff -f");
    let _ = vm.wait_exit(Duration::from_secs(30));
    let mut per_monitor = per_monitor.into_iter();
    let mut next = || per_monitor.next().unwrap_or_default();
    Ok(Measured {
        app_vmm: next(),
        app_qemu: next(),
        vmm: next(),
        vmm_confined: next(),
        qemu: next(),
        agent_idle_kib,
        problems,
    })
}

/// What `measure` runs, in this order (the order of `Measured`'s run lists).
const SESSION: [(&str, Guest); 5] = [
    ("vmm", APP_GUEST),
    ("qemu", APP_GUEST),
    ("vmm", STOCK_GUEST),
    ("vmm-confined", STOCK_GUEST),
    ("qemu", STOCK_GUEST),
];

/// The firmware's own `cpevisord` (aarch64, static), idle with nothing installed: Rss and Pss.
/// Both come from smaps_rollup, which walks the page tables: the board's 6.1 kernel still keeps
/// split per-thread RSS counters, and `VmRSS` in /proc/PID/status read 8 KiB for this
/// multi-threaded daemon (with Pss 1821 KiB, which cannot exceed Rss).
fn agent_idle(vm: &mut BoardVm) -> Result<(u64, u64), String> {
    let out = vm.run_ok(
        "sleep 2; p=$(pidof cpevisord) && \
         awk '/^Rss:/ {r=$2} /^Pss:/ {s=$2} END {print \"AGENT-MEM\", r, s}' /proc/$p/smaps_rollup",
        Duration::from_secs(60),
    )?;
    // Kernel messages may interleave on the console: take the tagged line only.
    let kib: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("AGENT-MEM "))
        .flat_map(|rest| rest.split_whitespace().map(|v| v.parse().ok()))
        .collect::<Option<Vec<u64>>>()
        .unwrap_or_default();
    match kib[..] {
        [rss, pss] if rss > 0 && pss <= rss => Ok((rss, pss)),
        _ => Err(format!(
            "cannot read cpevisord's Rss/Pss in the board:\n{out}"
        )),
    }
}

/// `agent.idle_rss_kib` / `agent.idle_pss_kib` from the board's own agent.
pub fn agent_figures(rss: u64, pss: u64) -> Vec<Figure> {
    let note = format!(
        "the static aarch64 cpevisord started by the firmware's init in the {BOARD} board, \
         idle with nothing installed, read 2 s after the board was ready"
    );
    vec![
        Figure::new("agent.idle_rss_kib", rss as f64, "KiB")
            .with_note(format!("Rss from /proc/PID/smaps_rollup; {note}")),
        Figure::new("agent.idle_pss_kib", pss as f64, "KiB")
            .with_note(format!("Pss from /proc/PID/smaps_rollup; {note}")),
    ]
}

fn show_ms(us: Option<f64>) -> String {
    us.map_or("?".into(), |v| format!("{:.1}", v / 1000.0))
}

const TIME_METHOD: &str = "board clock (tracefs, mono): from the monitor's sched_process_exec";
const MEMORY_METHOD: &str =
    "/proc/PID/smaps in the board while the guest idles, 5 s after its marker: \
     total minus the guest RAM mapping (anonymous rw-p, exactly the guest size)";

type Metric = fn(&Run) -> Option<f64>;

/// The figures of one guest: medians of cpevisor-vmm's runs, named `<guest.prefix><metric>`,
/// beside QEMU's medians where QEMU gave one.
pub fn figures(guest: &Guest, vmm: &[Run], qemu: &[Run]) -> Vec<Figure> {
    let setting = format!(
        "{BOARD} board (-m {BOARD_MEMORY_MIB}), guest: {}; median of {} runs ({} for QEMU)",
        guest.what,
        vmm.len(),
        qemu.len()
    );
    let mut out = compare(guest.prefix, vmm, qemu, PEER, "QEMU", &setting);
    let self_rows: [(&str, Metric, &str); 2] = [
        (
            "self_reported.first_instruction_ms",
            |r| r.self_first_ms,
            "cpevisor-vmm's own log line (ms since its main) when vCPU 0 enters KVM_RUN; QEMU logs no such time",
        ),
        (
            "self_reported.boot_ready_ms",
            |r| r.self_ready_ms,
            "cpevisor-vmm's boot-ready line (guest writes its boot-signal device; ms since main); QEMU has no such device",
        ),
    ];
    for (name, metric, note) in self_rows {
        let ours: Vec<f64> = vmm
            .iter()
            .filter_map(metric)
            .map(|v| round_to(v, 1))
            .collect();
        if let Some(value) = median(&ours) {
            out.push(
                Figure::new(format!("{}{name}", guest.prefix), value, "ms")
                    .with_note(format!("{note}; {setting}"))
                    .with_samples(ours, Vec::new()),
            );
        }
    }
    out
}

/// `vmm.confined.*`: the jailed VMM's medians beside the unconfined VMM's from the same board
/// session, so the ratio is the cost of the jail (namespaces, pivot_root, uid, seccomp).
pub fn confined_figures(confined: &[Run], vmm: &[Run]) -> Vec<Figure> {
    let setting = format!(
        "cpevisor-vmm with \"jail\": {{uid, gid}} in its VM description (as the agent starts it) \
         beside the same VMM without, same guest and board session: {BOARD} board \
         (-m {BOARD_MEMORY_MIB}), {}; median of {} runs ({} unconfined)",
        STOCK_GUEST.what,
        confined.len(),
        vmm.len()
    );
    compare(
        "vmm.confined.",
        confined,
        vmm,
        UNCONFINED_PEER,
        "the unconfined VMM",
        &setting,
    )
}

/// Overhead and start-up figures named `<prefix><metric>`: medians of `ours`, beside the medians
/// of `theirs` as `peer` where it gave a value.
fn compare(
    prefix: &str,
    ours: &[Run],
    theirs: &[Run],
    peer: &str,
    peer_label: &str,
    setting: &str,
) -> Vec<Figure> {
    let rows: [(&str, &str, Metric, f64, String); 5] = [
        (
            "overhead_rss_kib",
            "KiB",
            Run::overhead_rss_kib,
            1.0,
            format!("RSS beyond guest RAM; {MEMORY_METHOD}; {setting}"),
        ),
        (
            "overhead_pss_kib",
            "KiB",
            Run::overhead_pss_kib,
            1.0,
            format!("PSS beyond guest RAM; {MEMORY_METHOD}; {setting}"),
        ),
        (
            "start_to_first_instruction_ms",
            "ms",
            |r| r.first_entry_us,
            1e-3,
            format!("{TIME_METHOD} to the first kvm:kvm_entry (a vCPU entering the guest); {setting}"),
        ),
        (
            "start_to_ready_ms",
            "ms",
            |r| r.ready_us,
            1e-3,
            format!(
                "{TIME_METHOD} to a board-side watcher reading the guest's marker line from the monitor's console pipe (same method for both: QEMU has no boot-signal device); {setting}"
            ),
        ),
        (
            "guest_uptime_at_ready_ms",
            "ms",
            |r| r.guest_uptime_ms,
            1.0,
            format!(
                "the guest's own /proc/uptime in its ready line (kernel start to ready on the guest's clock: the guest's boot without the monitor's start); {setting}"
            ),
        ),
    ];
    let mut out = Vec::new();
    for (name, unit, metric, scale, note) in rows {
        let values = |runs: &[Run]| -> Vec<f64> {
            runs.iter()
                .filter_map(metric)
                .map(|v| round_to(v * scale, 1))
                .collect()
        };
        let (ours, theirs) = (values(ours), values(theirs));
        let Some(value) = median(&ours) else { continue };
        let mut f = Figure::new(format!("{prefix}{name}"), value, unit);
        let note = match median(&theirs) {
            Some(pv) => {
                f = f.with_peer(peer, pv);
                note
            }
            None => format!(
                "{note}; peer absent: {peer_label} gave no value in any run (see the bench output)"
            ),
        };
        out.push(f.with_note(note).with_samples(ours, theirs));
    }
    out
}

#[cfg(test)]
#[path = "board_tests.rs"]
mod tests;
