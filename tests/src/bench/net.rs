//! `net.*`: the DNS filter app (Debian's dnsmasq in a jail, rootfs/files/dns-filter/) serving the
//! LAN of the router board (qemu-malta-mipsel, [`crate::router`]) through cpevisor's rules,
//! beside the same dnsmasq binary run on the same board without cpevisor (no jail, no rules,
//! listening on the router's LAN address, port [`PEER_PORT`]), asked the same way: from the
//! host as the LAN client, through QEMU's user network. Both answer the blocked name from their
//! configuration, so the upstream is not involved.
//!
//! - `net.start_to_answer_ms`: from `cpevisorctl start` of the stopped app (its rules, its jail,
//!   dnsmasq's own start) to the first answer the LAN client gets; peer: from launching the
//!   plain dnsmasq to its first answer. Both include the console's round trip to the board and
//!   the command's return (the asking starts then, see [`start_to_answer`]).
//! - `net.answers_per_s`: answers per second with 16 queries in flight for 10 s; the ratio is
//!   what the jail and the DNAT path cost per packet (QEMU's user network and the emulated MIPS
//!   CPU bound both).

use super::stats::median;
use super::Figure;
use crate::agent::{install, Flash, HttpServer};
use crate::dns::{answers_per_second, first_answer, resolve};
use crate::router::{
    active_eu, app_root, boot_router, gateway_of, launch_dnsmasq, start_dnsmasq, BLOCKED, BOARD,
    FILTER_PACKAGE, ROUTER_LAN,
};
use crate::BoardVm;
use std::path::Path;
use std::time::{Duration, Instant};

/// The plain dnsmasq's port on the router's LAN address (not intercepted).
pub const PEER_PORT: u16 = 5353;
const RUNS: usize = 3;
const ANSWER: Duration = Duration::from_secs(120);
const LOAD: Duration = Duration::from_secs(10);
const WINDOW: usize = 16;

/// Times `start` (a board command) to the first answer from `server`. The host starts asking
/// once the command has returned, on both sides.
fn start_to_answer(
    vm: &mut BoardVm,
    server: &str,
    start: impl FnOnce(&mut BoardVm) -> Result<(), String>,
) -> Result<f64, String> {
    let t0 = Instant::now();
    start(vm)?;
    let took = first_answer(server, BLOCKED, t0, ANSWER)?;
    Ok(took.as_secs_f64() * 1000.0)
}

/// The `net.*` figures (needs `make firmware BOARDS=qemu-malta-mipsel`).
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    let dir = root.join("target/packages");
    if !dir.join(FILTER_PACKAGE).is_file() {
        return Err(format!(
            "{}/{FILTER_PACKAGE} is missing: `make firmware BOARDS=qemu-malta-mipsel` builds it",
            dir.display()
        ));
    }
    let server = HttpServer::serve(&dir)?;
    let flash = Flash::blank("net-bench", 256)?;
    let mut vm = boot_router(BOARD, &flash, vec![53, PEER_PORT], Vec::new())?;
    let url = format!("http://10.0.2.2:{}/{FILTER_PACKAGE}", server.port);
    install(&mut vm, &url, Duration::from_secs(900))?
        .outcome
        .map_err(|f| format!("install: {} {}", f.code, f.message))?;
    let eu = active_eu(&mut vm, "dns-filter")?;
    let app_dns = format!("127.0.0.1:{}", vm.lan_udp_port(53).unwrap_or(0));
    let peer_dns = format!("127.0.0.1:{}", vm.lan_udp_port(PEER_PORT).unwrap_or(0));
    resolve(&app_dns, BLOCKED, ANSWER)?;
    let root_dir = app_root(&mut vm, "usr/sbin/dnsmasq")?;
    let pid = crate::bench::jail::jail_pid(&mut vm, &eu, "dnsmasq")?;
    let gateway = gateway_of(&mut vm, pid)?;
    // The app's own answers to the blocked name (rootfs/files/dns-filter/dns-filter's), its
    // cache and forward limits, the upstream it would use.
    let peer_args = format!(
        "--no-resolv --server={gateway} --listen-address={ROUTER_LAN} --port={PEER_PORT} \
         --cache-size=1000 --dns-forward-max=150 --local-ttl=60 \
         --address=/{BLOCKED}/0.0.0.0 --address=/{BLOCKED}/:: --local=/{BLOCKED}/"
    );

    let (mut app_ms, mut peer_ms) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        vm.run_ok(&format!("cpevisorctl stop {eu}"), Duration::from_secs(120))?;
        let started = start_to_answer(&mut vm, &app_dns, |vm| {
            vm.run_ok(&format!("cpevisorctl start {eu}"), Duration::from_secs(120))
                .map(|_| ())
        });
        match started {
            Ok(ms) => app_ms.push(ms),
            Err(e) => {
                let addr = crate::bench::jail::jail_pid(&mut vm, &eu, "dnsmasq")
                    .and_then(|pid| crate::bench::jail::jail_address(&mut vm, pid))
                    .unwrap_or_default();
                let why = crate::router::diagnose(&mut vm, &app_dns, &addr);
                return Err(format!(
                    "{e}\n{why}\n{}",
                    crate::agent::app_logs(&mut vm, &eu)
                ));
            }
        }
        peer_ms.push(start_to_answer(&mut vm, &peer_dns, |vm| {
            launch_dnsmasq(vm, &root_dir, "peer-dns", &peer_args)
        })?);
        vm.run_ok(
            "kill $(cat /run/peer-dns.pid); sleep 1",
            Duration::from_secs(30),
        )?;
    }
    start_dnsmasq(&mut vm, &root_dir, "peer-dns", &peer_args)?;
    let app_qps = answers_per_second(&app_dns, BLOCKED, LOAD, WINDOW)?;
    let peer_qps = answers_per_second(&peer_dns, BLOCKED, LOAD, WINDOW)?;
    let note = "qemu-malta-mipsel (TCG), the host as the LAN client through QEMU's user network";
    figures.push(
        Figure::new(
            "net.start_to_answer_ms",
            median(&app_ms).unwrap_or(0.0),
            "ms",
        )
        .with_peer("dnsmasq without cpevisor", median(&peer_ms).unwrap_or(0.0))
        .with_samples(app_ms, peer_ms)
        .with_note(note),
    );
    figures.push(
        Figure::new("net.answers_per_s", app_qps, "1/s")
            .with_peer("dnsmasq without cpevisor", peer_qps)
            .with_note(format!("{note}; {WINDOW} queries in flight for {LOAD:?}")),
    );
    Ok(())
}
