//! `density.*` figures (docs/density.md): what one microVM costs the board, from the board
//! bench's runs (tests/src/bench/board.rs) of the same guest under cpevisor-vmm and under
//! `qemu-system-aarch64 -accel kvm`: the sample app's guest (`density.app_pss_kib`) and the
//! stock kernel guest (`density.stock_guest_pss_kib`).

use super::board::{Guest, Run, APP_GUEST, BOARD, PEER};
use super::stats::{median, round_to};
use super::Figure;
use crate::many_apps::ManyApps;

/// `density.app_pss_kib` (`guest` = `APP_GUEST`) or `density.stock_guest_pss_kib`: the
/// monitor's whole PSS (its own pages plus the guest RAM the guest touched and has not given
/// back), median per run, beside QEMU's. This is what one app costs the board beyond the host
/// page cache its files share.
pub fn figures(guest: &Guest, vmm: &[Run], qemu: &[Run]) -> Vec<Figure> {
    let pss = |runs: &[Run]| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.guest_found)
            .map(|r| round_to(r.pss_kib as f64, 1))
            .collect()
    };
    let (ours, theirs) = (pss(vmm), pss(qemu));
    let Some(value) = median(&ours) else {
        return Vec::new();
    };
    let note = format!(
        "PSS of the monitor process from /proc/PID/smaps (its own pages + guest RAM \
         resident) while the guest idles, 5 s after its ready line (what it freed while booting has been given back where the balloon reports free pages); {BOARD} board, guest: {}",
        guest.what
    );
    let name = if guest == &APP_GUEST {
        "density.app_pss_kib"
    } else {
        "density.stock_guest_pss_kib"
    };
    let mut f = Figure::new(name, value, "KiB");
    let note = match median(&theirs) {
        Some(pv) => {
            f = f.with_peer(PEER, pv);
            note
        }
        None => format!("{note}; peer absent: QEMU gave no value in any run"),
    };
    vec![f.with_note(note).with_samples(ours, theirs)]
}

/// From one many-apps run (tests/src/many_apps.rs), microVM apps: `density.microvm_apps`, how
/// many copies of the sample app the board's agent admitted before refusing one and that then
/// all answered at once; `density.many_app_pss_kib`, the median PSS of their VMMs; and
/// `density.board_kib_per_app`, what the board's used memory (MemTotal - MemAvailable) grew by,
/// per app. No peer here (QEMU has no agent to install apps with): the QEMU ratio for the same
/// guest is `density.app_pss_kib`'s, from the board bench.
/// Jail apps: the same as `density.jail_apps`, `density.jail_app_pss_kib` (the jailed httpd's
/// PSS), `density.jail_app_memory_kib` (each app's cgroup `memory.current`, median: the app,
/// its jail's runner and init, and the kernel memory charged to them) and
/// `density.jail_board_kib_per_app`.
pub fn many_figures(run: &ManyApps, budget_mib: u32) -> Vec<Figure> {
    let n = run.apps.len();
    let refused = match &run.refusal {
        Some(f) => format!("the next was refused with {} ({})", f.code, f.message),
        None => "none was refused".to_string(),
    };
    let (kind, prefix, what) = if run.jail {
        (
            "jail app (busybox httpd)",
            "density.jail_",
            "the jailed httpd",
        )
    } else {
        (
            "app (minimal kernel, 1 vCPU)",
            "density.many_",
            "each app's VMM (its pages + guest RAM resident)",
        )
    };
    let setting = format!(
        "{} (app budget {budget_mib} MiB), copies of the sample {kind} declaring {} MiB, \
         installed one after another: {n} admitted, {refused}",
        run.board, run.declared_mib
    );
    let count = if run.jail {
        "density.jail_apps"
    } else {
        "density.microvm_apps"
    };
    let mut figures = vec![
        Figure::new(count, run.answered as f64, "apps").with_note(format!(
            "{setting}; {} of them answered /status at once",
            run.answered
        )),
    ];
    let pss: Vec<f64> = run.apps.iter().map(|a| a.pss_kib as f64).collect();
    if let Some(m) = median(&pss) {
        figures.push(
            Figure::new(format!("{prefix}app_pss_kib"), m, "KiB")
                .with_note(format!("{setting}; PSS of {what}, median"))
                .with_samples(pss, Vec::new()),
        );
    }
    if run.jail {
        let current: Vec<f64> = run
            .apps
            .iter()
            .map(|a| a.memory_in_use_kib as f64)
            .collect();
        if let Some(m) = median(&current) {
            figures.push(
                Figure::new("density.jail_app_memory_kib", m, "KiB")
                    .with_note(format!(
                        "{setting}; each app's cgroup memory.current (MemoryInUse), median"
                    ))
                    .with_samples(current, Vec::new()),
            );
        }
    }
    let used = |m: &[(String, u64)]| -> Option<u64> {
        let get = |k: &str| m.iter().find(|(name, _)| name == k).map(|(_, v)| *v);
        Some(get("MemTotal")?.saturating_sub(get("MemAvailable")?))
    };
    if let (Some(before), Some(after), true) =
        (used(&run.board_before), used(&run.board_after), n > 0)
    {
        let name = if run.jail {
            "density.jail_board_kib_per_app"
        } else {
            "density.board_kib_per_app"
        };
        figures.push(
            Figure::new(
                name,
                round_to(after.saturating_sub(before) as f64 / n as f64, 1),
                "KiB",
            )
            .with_note(format!(
                "{setting}; the board's MemTotal - MemAvailable after the last app answered \
                 minus before the first install ({before} KiB), divided by the apps"
            )),
        );
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::board::STOCK_GUEST;
    use crate::many_apps::AppCost;
    use std::time::Duration;

    #[test]
    fn many_apps_figures_count_the_answering_apps_and_the_board_growth() {
        let app = |pss| AppCost {
            eu_id: "eu-1".into(),
            addr: "10.100.0.6".into(),
            pid: 300,
            memory_in_use_kib: 12_000,
            pss_kib: pss,
            install_to_active: Duration::from_secs(8),
        };
        let meminfo = |avail| {
            vec![
                ("MemTotal".to_string(), 480_000),
                ("MemAvailable".to_string(), avail),
            ]
        };
        let mut run = ManyApps {
            board: "qemu-virt-a53",
            jail: false,
            declared_mib: 16,
            apps: vec![app(12_000), app(13_000), app(12_500)],
            refusal: Some(cpevisor_usp::errors::UspError::new(7227, "no memory left")),
            answered: 2,
            board_before: meminfo(450_000),
            board_after: meminfo(408_000),
        };
        let figs = many_figures(&run, 384);
        assert_eq!(figs[0].name, "density.microvm_apps");
        // Admitted is not enough: only the apps that answered count.
        assert_eq!(figs[0].value, 2.0);
        assert!(figs[0].note.as_deref().unwrap().contains("7227"));
        assert_eq!(figs[1].name, "density.many_app_pss_kib");
        assert_eq!(figs[1].value, 12_500.0);
        assert_eq!(figs[2].name, "density.board_kib_per_app");
        assert_eq!(figs[2].value, 14_000.0);
        assert_eq!(figs.len(), 3);
        // The same run as jail apps: its own names, and each app's memory.current.
        run.board = "qemu-malta-mipsel";
        run.jail = true;
        run.apps[1].memory_in_use_kib = 1_800;
        run.apps[2].memory_in_use_kib = 1_700;
        let names: Vec<String> = many_figures(&run, 128)
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "density.jail_apps",
                "density.jail_app_pss_kib",
                "density.jail_app_memory_kib",
                "density.jail_board_kib_per_app"
            ]
        );
        let figs = many_figures(&run, 128);
        assert_eq!(figs[2].value, 1_800.0);
        assert!(figs[0]
            .note
            .as_deref()
            .unwrap()
            .contains("qemu-malta-mipsel"));
    }

    fn run(pss: u64, found: bool) -> Run {
        Run {
            pss_kib: pss,
            guest_pss_kib: pss / 2,
            guest_found: found,
            ..Default::default()
        }
    }

    #[test]
    fn app_pss_is_the_median_whole_pss_beside_qemu() {
        let vmm = [run(30_000, true), run(28_000, true), run(99_000, false)];
        let qemu = [run(60_000, true), run(64_000, true)];
        let figs = figures(&APP_GUEST, &vmm, &qemu);
        assert_eq!(figs.len(), 1);
        let f = &figs[0];
        assert_eq!(f.name, "density.app_pss_kib");
        // The run whose guest mapping was not found is left out, not counted as 99 MB.
        assert_eq!(f.value, 29_000.0);
        assert_eq!(f.peer, Some((PEER.to_string(), 62_000.0)));
        assert!(figures(&APP_GUEST, &[run(1, false)], &qemu).is_empty());
        let alone = figures(&APP_GUEST, &vmm, &[]);
        assert!(alone[0].note.as_deref().unwrap().contains("peer absent"));
        // The stock kernel guest's runs under their own name.
        let stock = figures(&STOCK_GUEST, &vmm, &qemu);
        assert_eq!(stock[0].name, "density.stock_guest_pss_kib");
        assert!(stock[0].note.as_deref().unwrap().contains("stock Debian"));
    }
}
