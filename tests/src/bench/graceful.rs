//! `vmm.graceful_stop_ms`: from the stop request (SIGTERM to cpevisor-vmm) to the VMM's exit
//! after the guest's own power-off, beside the immediate stop (`--shutdown-timeout 0`, the VMM's
//! behaviour before the power button) of the same guest.
//!
//! Setting: the `qemu-virt-a53` board with its ordinary firmware (`make firmware`), the `status`
//! sample app on the minimal guest kernel (`make guest-kernels`): on KEY_POWER its init stops
//! httpd, unmounts its data disk and powers off. Both times are taken in the board by the same
//! shell loop (/proc/uptime before the `kill` and once the VMM is gone: 10 ms resolution,
//! 10 ms polls). The VMM's own figure, power button to the guest's power-off, is reported as
//! `vmm.self_reported.graceful_stop_ms`.

use super::stats::{median, round_to};
use super::Figure;
use crate::microvm::{
    create_tap, fetch_images, parse_graceful_stop_ms, GuestImages, HttpServer, VmmLaunch, VmmRun,
};
use crate::vm::{BoardVm, BootOptions};
use cpevisor_rootfs::guest::{GuestArch, GuestKernel};
use std::time::Duration;

/// The board the stop bench boots.
pub const BOARD: &str = "qemu-virt-a53";
/// The peer figure's name: the VMM told to stop at once.
pub const PEER: &str = "immediate stop (shutdown 0)";
const BOOT: Duration = Duration::from_secs(240);
const APP_READY: Duration = Duration::from_secs(300);
const STOP: Duration = Duration::from_secs(120);

/// One stop: the VMM's exit status, SIGTERM to exit on the board clock, and (graceful stops)
/// the VMM's power button to power-off time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    /// The VMM's exit status (0 clean power-off, 5 forced).
    pub code: i32,
    /// SIGTERM to the VMM's exit, board clock, ms.
    pub board_ms: f64,
    /// The VMM's own log: power button to the guest's power-off, ms.
    pub self_ms: Option<f64>,
}

/// Boots the board and stops the app `runs` times each way.
pub fn measure(runs: u32) -> Result<(Vec<Stop>, Vec<Stop>), String> {
    let images = GuestImages::build(GuestArch::Aarch64, GuestKernel::Minimal, "bench-graceful")?;
    let server = HttpServer::serve(&images.dir)?;
    let mut vm = BoardVm::boot(BOARD, &BootOptions::default())?;
    vm.wait_ready(BOOT)?;
    fetch_images(&mut vm, &images, &server)?;
    create_tap(&mut vm, "tap0")?;
    let graceful = VmmLaunch {
        // Far beyond a clean stop: a forced one shows as exit 5, not as a fast figure.
        shutdown_timeout_ms: Some(60_000),
        ..Default::default()
    };
    let immediate = VmmLaunch {
        shutdown_timeout_ms: Some(0),
        ..Default::default()
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for n in 1..=runs {
        for (launch, out) in [(&graceful, &mut ours), (&immediate, &mut theirs)] {
            let run = VmmRun::start(&mut vm, launch)?;
            run.wait_app_ready(&mut vm, APP_READY)?;
            let (code, board_ms) = run.terminate_and_time(&mut vm, STOP)?;
            let logs = run.logs(&mut vm)?;
            let stop = Stop {
                code,
                board_ms,
                self_ms: parse_graceful_stop_ms(&logs),
            };
            println!(
                "bench: stop run {n} (shutdown timeout {:?} ms): exit {code}, SIGTERM to exit {board_ms} ms, button to power-off {:?} ms",
                launch.shutdown_timeout_ms, stop.self_ms
            );
            out.push(stop);
        }
    }
    let _ = vm.send_line("poweroff -f");
    let _ = vm.wait_exit(Duration::from_secs(30));
    Ok((ours, theirs))
}

/// The figures from the runs that ended as they should (graceful: exit 0 with the VMM's
/// power-off line; immediate: exit 0); an error names the runs that did not.
pub fn figures(graceful: &[Stop], immediate: &[Stop]) -> Result<Vec<Figure>, String> {
    let bad: Vec<String> = graceful
        .iter()
        .filter(|s| s.code != 0 || s.self_ms.is_none())
        .chain(immediate.iter().filter(|s| s.code != 0))
        .map(|s| format!("{s:?}"))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "stops that did not end cleanly: {}",
            bad.join(", ")
        ));
    }
    let ours: Vec<f64> = graceful.iter().map(|s| s.board_ms).collect();
    let theirs: Vec<f64> = immediate.iter().map(|s| s.board_ms).collect();
    let own: Vec<f64> = graceful
        .iter()
        .filter_map(|s| s.self_ms)
        .map(|v| round_to(v, 1))
        .collect();
    let (Some(value), Some(peer), Some(own_value)) = (median(&ours), median(&theirs), median(&own))
    else {
        return Err("no stop was measured".into());
    };
    let setting = format!(
        "{BOARD} board, status sample app on the minimal guest kernel (64 MiB, 2 vCPUs), nested \
         KVM under TCG; median of {} runs each",
        ours.len()
    );
    Ok(vec![
        Figure::new("vmm.graceful_stop_ms", value, "ms")
            .with_peer(PEER, peer)
            .with_note(format!(
                "SIGTERM to cpevisor-vmm until it exits after the guest's own power-off (power \
                 button, the app stops httpd and unmounts its disk, poweroff -f); peer: the same \
                 with --shutdown-timeout 0 (stop at once); board clock, /proc/uptime (10 ms); \
                 {setting}"
            ))
            .with_samples(ours, theirs),
        Figure::new("vmm.self_reported.graceful_stop_ms", own_value, "ms")
            .with_note(format!(
                "cpevisor-vmm's log line `shutdown: guest powered off after <ms> ms` (power \
                 button pressed to the guest's PSCI SYSTEM_OFF); {setting}"
            ))
            .with_samples(own, Vec::new()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(code: i32, board_ms: f64, self_ms: Option<f64>) -> Stop {
        Stop {
            code,
            board_ms,
            self_ms,
        }
    }

    #[test]
    fn medians_with_the_immediate_stop_as_peer() {
        let g = [
            stop(0, 900.0, Some(850.0)),
            stop(0, 1200.0, Some(1100.0)),
            stop(0, 1000.0, Some(990.0)),
        ];
        let i = [
            stop(0, 40.0, None),
            stop(0, 20.0, None),
            stop(0, 30.0, None),
        ];
        let f = figures(&g, &i).unwrap();
        assert_eq!(f[0].name, "vmm.graceful_stop_ms");
        assert_eq!(f[0].value, 1000.0);
        assert_eq!(f[0].peer, Some((PEER.to_string(), 30.0)));
        assert_eq!(f[1].name, "vmm.self_reported.graceful_stop_ms");
        assert_eq!(f[1].value, 990.0);
    }

    #[test]
    fn a_forced_or_failed_stop_is_an_error_not_a_figure() {
        let ok = [stop(0, 900.0, Some(850.0))];
        let forced = [stop(5, 60000.0, None)];
        let e = figures(&forced, &[stop(0, 20.0, None)]).unwrap_err();
        assert!(e.contains("code: 5"), "{e}");
        assert!(figures(&ok, &[stop(1, 20.0, None)]).is_err());
        assert!(figures(&[], &[]).is_err());
    }
}
