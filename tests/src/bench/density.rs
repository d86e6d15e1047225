//! `density.*` figures (docs/density.md): what one microVM costs the board, from the board
//! bench's runs (tests/src/bench/board.rs) of the same guest under cpevisor-vmm and under
//! `qemu-system-aarch64 -accel kvm`.

use super::board::{Run, PEER};
use super::stats::{median, round_to};
use super::Figure;

/// `density.app_pss_kib`: the monitor's whole PSS (its own pages plus the guest RAM the guest
/// touched, which stays resident without a balloon), median per run, beside QEMU's. This is
/// what one app costs the board beyond the host page cache its files share.
pub fn figures(vmm: &[Run], qemu: &[Run], setting: &str) -> Vec<Figure> {
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
         resident) while the guest idles after its marker; {setting}"
    );
    let mut f = Figure::new("density.app_pss_kib", value, "KiB");
    let note = match median(&theirs) {
        Some(pv) => {
            f = f.with_peer(PEER, pv);
            note
        }
        None => format!("{note}; peer absent: QEMU gave no value in any run"),
    };
    vec![f.with_note(note).with_samples(ours, theirs)]
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let figs = figures(&vmm, &qemu, "s");
        assert_eq!(figs.len(), 1);
        let f = &figs[0];
        assert_eq!(f.name, "density.app_pss_kib");
        // The run whose guest mapping was not found is left out, not counted as 99 MB.
        assert_eq!(f.value, 29_000.0);
        assert_eq!(f.peer, Some((PEER.to_string(), 62_000.0)));
        assert!(figures(&[run(1, false)], &qemu, "s").is_empty());
        let alone = figures(&vmm, &[], "s");
        assert!(alone[0].note.as_deref().unwrap().contains("peer absent"));
    }
}
