//! Package servers that drip: one byte at a time, each well within the per-read timeout. A
//! download and the head probe are cut at their deadline / minimum rate with a fault naming
//! the URL and the bound, and while one drips no lock is held: an operation on another DU
//! completes at once. The deadlines are configured small so that this runs in seconds.

#[path = "common/agentd.rs"]
mod agentd;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_agent::fault::FaultCode;
use cpevisor_agent::fetch::{fetch, fetch_head, FetchOptions, TransferLimits};
use serde_json::json;

/// What the drip server drips: the head probe (a `Range` request) or the download.
#[derive(Clone, Copy, PartialEq)]
enum Drip {
    Probe,
    Download,
}

/// A server on loopback that answers the requests of kind `drip` with a 200 and then one body
/// byte every `every` (for at most 20 s), and the others with a 404. Counts the dripping
/// connections it accepted.
struct DripServer {
    port: u16,
    dripping: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl DripServer {
    fn start(drip: Drip, every: Duration) -> DripServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dripping = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (dripping.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let (d, s) = (d.clone(), s.clone());
                std::thread::spawn(move || serve(conn, drip, every, &d, &s));
            }
        });
        DripServer {
            port,
            dripping,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/slow.cpkg", self.port)
    }

    /// Waits until a dripping response is under way.
    fn wait_dripping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.dripping.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "nothing came to drip on");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DripServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, drip: Drip, every: Duration, n: &AtomicU32, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ranged = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.to_ascii_lowercase().starts_with("range:") {
            ranged = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let kind = if ranged { Drip::Probe } else { Drip::Download };
    if kind != drip {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    n.fetch_add(1, Ordering::Relaxed);
    if conn
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        .is_err()
    {
        return;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        if conn.write_all(b"x").is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

/// Bounds small enough for a test: 2 s floor, at least 512 bytes/s over every 1 s.
fn small_limits() -> TransferLimits {
    TransferLimits {
        deadline: Duration::from_secs(2),
        deadline_per_mib: Duration::from_millis(100),
        min_rate_bps: 512,
        rate_window: Duration::from_secs(1),
    }
}

#[test]
fn a_dripping_download_is_cut_at_its_minimum_rate() {
    let server = DripServer::start(Drip::Download, Duration::from_millis(200));
    let dir = std::env::temp_dir().join(format!("cpv-drip-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let opts = FetchOptions {
        io_timeout: Duration::from_secs(30),
        limits: small_limits(),
        ..FetchOptions::default()
    };
    let t0 = Instant::now();
    let err = fetch(&server.url(), &dir.join("slow.cpkg"), &opts, &mut |_, _| {}).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.code, FaultCode::DownloadFailure, "{}", err.message);
    assert!(err.message.contains(&server.url()), "{}", err.message);
    assert!(
        err.message.contains("too slow") && err.message.contains("512 bytes/s"),
        "{}",
        err.message
    );
    // Cut at the end of the first 1 s window, far from the 30 s per-read timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // Without a minimum rate, the overall deadline (2 s floor + 0.1 s per MiB) cuts it.
    let opts = FetchOptions {
        limits: TransferLimits {
            min_rate_bps: 0,
            ..small_limits()
        },
        ..opts
    };
    let t0 = Instant::now();
    let err = fetch(&server.url(), &dir.join("slow.cpkg"), &opts, &mut |_, _| {}).unwrap_err();
    let took = t0.elapsed();
    assert!(
        err.message
            .contains("download not complete within its deadline of 2000 ms"),
        "{}",
        err.message
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dripping_head_probe_is_cut_too() {
    let server = DripServer::start(Drip::Probe, Duration::from_millis(200));
    let opts = FetchOptions {
        io_timeout: Duration::from_secs(30),
        limits: small_limits(),
        ..FetchOptions::default()
    };
    let t0 = Instant::now();
    let err = fetch_head(&server.url(), &opts, 64 << 10).unwrap_err();
    assert!(
        err.message.contains("head probe too slow") && err.message.contains(&server.url()),
        "{}",
        err.message
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A world whose agent has small download limits, with app `other` installed.
fn world_with_other(tag: &str) -> (World, String) {
    let mut w = World::new(tag);
    w.write_config_patched(json!({
        // The probe is cut by its deadline (2.5 s), the download by the minimum rate (its
        // first 3 s window): long enough to run another operation meanwhile.
        "download_limits": {"deadline_ms": 6000, "deadline_ms_per_mib": 100,
                            "min_rate_bytes_per_s": 512, "rate_window_ms": 3000,
                            "probe_deadline_ms": 2500},
    }));
    let other = w.publish(&App::new("other", "1.0"), "other.cpkg");
    w.start_daemon(None);
    let du = w.ctl_json(&["install", &other]).expect("install other");
    (w, du["uuid"].as_str().unwrap().to_string())
}

/// Installs from the drip server in the background; meanwhile, uninstalling another DU must
/// complete promptly, and the install must fail on the bound with a fault naming it.
fn drip_does_not_block_other_operations(drip: Drip, expect: &str) {
    let (w, other) = world_with_other(match drip {
        Drip::Probe => "drip-probe",
        Drip::Download => "drip-dl",
    });
    let server = DripServer::start(drip, Duration::from_millis(300));
    let url = server.url();
    let w = Arc::new(w);
    let t0 = Instant::now();
    let installer = {
        let (w, url) = (w.clone(), url.clone());
        std::thread::spawn(move || w.ctl_json(&["install", &url]))
    };
    server.wait_dripping();
    let t1 = Instant::now();
    w.ctl_json(&["uninstall", &other])
        .expect("uninstall of another DU");
    let uninstall_took = t1.elapsed();
    assert!(
        uninstall_took < Duration::from_secs(2),
        "uninstall waited {uninstall_took:?} behind the dripping install"
    );
    assert!(
        !installer.is_finished(),
        "the dripping install ended before the uninstall could be tried"
    );
    let (code, msg) = installer.join().unwrap().unwrap_err();
    let install_took = t0.elapsed();
    assert_eq!(code, 7033, "{msg}");
    assert!(msg.contains(&url) && msg.contains(expect), "{msg}");
    // Limits: a 3 s window, 2.5 s for the probe; far less than the minutes a drip held an
    // install before.
    assert!(install_took < Duration::from_secs(8), "{install_took:?}");
    assert!(w.list()["deployment_units"].as_array().unwrap().is_empty());
    if drip == Drip::Download {
        // The download started (its journal was written): the operation ends with its event.
        let evs = w.du_events();
        assert_eq!(evs.last().unwrap()["current_state"], "Failed", "{evs:?}");
    }
}

#[test]
fn a_dripping_download_holds_no_lock() {
    drip_does_not_block_other_operations(Drip::Download, "download too slow");
}

#[test]
fn a_dripping_head_probe_holds_no_lock() {
    drip_does_not_block_other_operations(
        Drip::Probe,
        "head probe not complete within its deadline of 2500 ms",
    );
}

/// Without the lock, operations on the SAME DU (or the same URL) are still kept apart: while an
/// update of `other` drips, uninstalling `other` and installing from that URL again are
/// refused at once with 7229; once the update failed, the DU is intact and free again.
#[test]
fn operations_on_the_same_du_are_refused_while_one_drips() {
    let (w, other) = world_with_other("drip-same");
    let server = DripServer::start(Drip::Download, Duration::from_millis(300));
    let url = server.url();
    let w = Arc::new(w);
    let updater = {
        let (w, other, url) = (w.clone(), other.clone(), url.clone());
        std::thread::spawn(move || w.ctl_json(&["update", &other, &url]))
    };
    server.wait_dripping();
    let t0 = Instant::now();
    let (code, msg) = w.ctl_json(&["uninstall", &other]).unwrap_err();
    assert_eq!(code, 7229, "{msg}");
    assert!(msg.contains("Updating"), "{msg}");
    let (code, msg) = w.ctl_json(&["install", &url]).unwrap_err();
    assert_eq!(code, 7229, "{msg}");
    assert!(msg.contains("being downloaded"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(!updater.is_finished(), "the update ended too early to test");
    let (code, msg) = updater.join().unwrap().unwrap_err();
    assert_eq!(code, 7033, "{msg}");
    let du = &w.list()["deployment_units"][0];
    assert_eq!(du["version"], "1.0");
    assert_eq!(du["status"], "Installed");
    w.ctl_json(&["uninstall", &other])
        .expect("uninstall after the update");
}
