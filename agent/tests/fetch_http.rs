//! Downloads against real HTTP servers on loopback: `python3 -m http.server` and
//! `common/serve.py` (Range, dropped connections). Every failure asserts its fault code and
//! that the store holds no stray file afterwards.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{list_files, test_key, write_app_dir, Scratch, Server};
use cpevisor_agent::fault::{Fault, FaultCode};
use cpevisor_agent::fetch::{discard_download, fetch, part_path, FetchOptions, Fetched};
use cpevisor_agent::package::{pack_dir, verify_package, LayerKind, PackageCaps, TrustedKey};
use cpevisor_agent::store::{Digest, Store};

fn quick() -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(20),
        ..FetchOptions::default()
    }
}

/// Serves a fresh package from `www/`; returns (store, www dir, package digest).
fn setup(tmp: &Scratch, kernel_len: usize) -> (Store, std::path::PathBuf, Digest) {
    let app = tmp.path().join("app");
    write_app_dir(&app, kernel_len);
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    pack_dir(&app, &test_key(1), &www.join("hello.cpkg")).unwrap();
    let digest = Digest::of(&fs::read(www.join("hello.cpkg")).unwrap());
    let store = Store::open(&tmp.path().join("state")).unwrap();
    (store, www, digest)
}

fn fetch_into(store: &Store, url: &str, opts: &FetchOptions) -> Result<Fetched, Fault> {
    fetch(
        url,
        &store.downloads_dir().join("hello.cpkg"),
        opts,
        &mut |_, _| {},
    )
}

fn assert_fails_clean(store: &Store, url: &str, opts: &FetchOptions, code: FaultCode) -> String {
    let before = list_files(store.root());
    let err = fetch_into(store, url, opts).unwrap_err();
    assert_eq!(err.code, code, "{}", err.message);
    assert_eq!(
        list_files(store.root()),
        before,
        "stray files after: {}",
        err.message
    );
    err.message
}

#[test]
fn install_round_trip_from_the_stock_python_server() {
    let tmp = Scratch::new("fetch-roundtrip");
    let (store, www, digest) = setup(&tmp, 300_000);
    let server = Server::stock(&www);
    let opts = FetchOptions {
        expected_sha256: Some(digest),
        ..quick()
    };
    let mut reports = Vec::new();
    let got = fetch(
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &store.downloads_dir().join("hello.cpkg"),
        &opts,
        &mut |n, total| reports.push((n, total)),
    )
    .unwrap();
    assert_eq!(got.sha256, digest);
    assert_eq!(reports.first(), Some(&(0, Some(got.size))));
    assert_eq!(reports.last(), Some(&(got.size, Some(got.size))));
    assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));

    let trusted = vec![TrustedKey::from_bytes(test_key(1).public_key()).unwrap()];
    let pkg = verify_package(&got.path, &trusted, &PackageCaps::default()).unwrap();
    let unpacked = pkg.unpack(&store).unwrap();
    let kernel = fs::read(unpacked.layer_path(&store, LayerKind::Kernel).unwrap()).unwrap();
    assert_eq!(kernel.len(), 300_000);
    assert!(!part_path(&got.path).exists());
}

#[test]
fn wrong_expected_digest_is_7035() {
    let tmp = Scratch::new("fetch-digest");
    let (store, www, _) = setup(&tmp, 1000);
    let server = Server::stock(&www);
    let opts = FetchOptions {
        expected_sha256: Some(Digest::of(b"something else")),
        ..quick()
    };
    let msg = assert_fails_clean(
        &store,
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &opts,
        FaultCode::CorruptData,
    );
    assert!(msg.contains("expected sha256:"), "{msg}");
}

#[test]
fn credentials_in_the_url_are_7004_before_any_connection() {
    let tmp = Scratch::new("fetch-creds");
    let (store, www, _) = setup(&tmp, 1000);
    let server = Server::range(&www, &tmp.path().join("log"), &[]);
    let url = format!("http://admin:secret@127.0.0.1:{}/hello.cpkg", server.port);
    let msg = assert_fails_clean(&store, &url, &quick(), FaultCode::InvalidArguments);
    assert!(msg.contains("user:password"), "{msg}");
    assert!(
        !msg.contains("secret"),
        "the password leaked into the message: {msg}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        server.requests().is_empty(),
        "a request was sent: {:?}",
        server.requests()
    );
}

#[test]
fn unreachable_server_is_7033() {
    let tmp = Scratch::new("fetch-unreachable");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let msg = assert_fails_clean(
        &store,
        &format!("http://127.0.0.1:{port}/x.cpkg"),
        &quick(),
        FaultCode::DownloadFailure,
    );
    assert!(msg.contains("refused"), "{msg}");
    let msg = assert_fails_clean(
        &store,
        "http://no-such-host.invalid/x.cpkg",
        &FetchOptions {
            max_attempts: 1,
            ..quick()
        },
        FaultCode::DownloadFailure,
    );
    assert!(msg.contains("no-such-host.invalid"), "{msg}");
}

#[test]
fn http_error_status_is_7033() {
    let tmp = Scratch::new("fetch-404");
    let (store, www, _) = setup(&tmp, 1000);
    let server = Server::stock(&www);
    let msg = assert_fails_clean(
        &store,
        &server.url("http", "127.0.0.1", "missing.cpkg"),
        &quick(),
        FaultCode::DownloadFailure,
    );
    assert!(msg.contains("HTTP 404"), "{msg}");
}

#[test]
fn silent_server_times_out_with_7033() {
    let tmp = Scratch::new("fetch-timeout");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never answers.
    let _holder = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(conns);
    });
    let opts = FetchOptions {
        io_timeout: Duration::from_millis(300),
        max_attempts: 2,
        ..quick()
    };
    let started = std::time::Instant::now();
    let msg = assert_fails_clean(
        &store,
        &format!("http://127.0.0.1:{port}/x"),
        &opts,
        FaultCode::DownloadFailure,
    );
    assert!(msg.contains("timed out"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn package_larger_than_the_cap_is_7005() {
    let tmp = Scratch::new("fetch-cap");
    let (store, www, _) = setup(&tmp, 100_000);
    let server = Server::stock(&www);
    let opts = FetchOptions {
        max_bytes: 50_000,
        ..quick()
    };
    let msg = assert_fails_clean(
        &store,
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &opts,
        FaultCode::ResourcesExceeded,
    );
    assert!(msg.contains("50000 byte cap"), "{msg}");
}

#[test]
fn resumes_with_range_after_the_server_drops_the_connection() {
    let tmp = Scratch::new("fetch-resume");
    let (store, www, digest) = setup(&tmp, 400_000);
    let server = Server::range(
        &www,
        &tmp.path().join("log"),
        &["--drop-after", "150000", "--drop-count", "1"],
    );
    let opts = FetchOptions {
        expected_sha256: Some(digest),
        ..quick()
    };
    let got = fetch_into(
        &store,
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &opts,
    )
    .unwrap();
    assert_eq!(got.sha256, digest);
    assert_eq!(got.attempts, 2);
    let log = server.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1], "GET /hello.cpkg range=bytes=150000-");
}

#[test]
fn server_that_ignores_range_restarts_from_zero() {
    let tmp = Scratch::new("fetch-norange");
    let (store, www, digest) = setup(&tmp, 200_000);
    let server = Server::range(
        &www,
        &tmp.path().join("log"),
        &["--drop-after", "70000", "--ignore-range"],
    );
    let opts = FetchOptions {
        expected_sha256: Some(digest),
        ..quick()
    };
    let got = fetch_into(
        &store,
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &opts,
    )
    .unwrap();
    assert_eq!(got.sha256, digest);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn truncated_downloads_fail_and_leave_nothing() {
    let tmp = Scratch::new("fetch-truncated");
    let (store, www, digest) = setup(&tmp, 100_000);
    // The link dies before any body byte, every time: 7033 after the bounded retries.
    let server = Server::range(
        &www,
        &tmp.path().join("log"),
        &["--drop-after", "0", "--drop-count", "-1"],
    );
    let msg = assert_fails_clean(
        &store,
        &server.url("http", "127.0.0.1", "hello.cpkg"),
        &quick(),
        FaultCode::DownloadFailure,
    );
    assert!(msg.contains("gave up after 3 attempts"), "{msg}");
    drop(server);

    // A server holding a truncated copy delivers it "completely": the digest catches it.
    let full = fs::read(www.join("hello.cpkg")).unwrap();
    fs::write(www.join("hello.cpkg"), &full[..full.len() / 2]).unwrap();
    let server = Server::stock(&www);
    let url = server.url("http", "127.0.0.1", "hello.cpkg");
    let opts = FetchOptions {
        expected_sha256: Some(digest),
        ..quick()
    };
    assert_fails_clean(&store, &url, &opts, FaultCode::CorruptData);
    // Without an expected digest the package check refuses it before anything is unpacked.
    let got = fetch_into(&store, &url, &quick()).unwrap();
    let trusted = vec![TrustedKey::from_bytes(test_key(1).public_key()).unwrap()];
    let err = verify_package(&got.path, &trusted, &PackageCaps::default()).unwrap_err();
    assert_eq!(err.code, FaultCode::CorruptData);
    assert!(store.list_blobs().unwrap().is_empty());
}

/// Child half of `resumes_after_a_crash_mid_download`: runs only when the parent sets the env.
#[test]
fn crash_child_fetch() {
    let (Ok(url), Ok(dest)) = (std::env::var("CHILD_URL"), std::env::var("CHILD_DEST")) else {
        return;
    };
    let _ = fetch(&url, Path::new(&dest), &quick(), &mut |_, _| {});
    panic!("the crash point was not reached");
}

#[test]
fn resumes_after_a_crash_mid_download() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = Scratch::new("fetch-crash");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..10u32 << 20).map(|i| (i % 253) as u8).collect();
    fs::write(www.join("big.bin"), &blob).unwrap();
    let server = Server::range(&www, &tmp.path().join("log"), &[]);
    let url = server.url("http", "127.0.0.1", "big.bin");
    let dest = store.downloads_dir().join("big.bin");

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_fetch",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CHILD_URL", &url)
        .env("CHILD_DEST", &dest)
        .env("CPEVISOR_CRASH_AT", "fetch.part:synced")
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child was not SIGKILLed at the crash point: {status:?}"
    );
    let left = fs::metadata(part_path(&dest)).unwrap().len();
    assert!(left >= 8 << 20, "part holds {left} bytes");

    let opts = FetchOptions {
        expected_sha256: Some(Digest::of(&blob)),
        ..quick()
    };
    let got = fetch(&url, &dest, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(got.resumed_from, left);
    assert_eq!(got.attempts, 1);
    assert_eq!(
        server.requests().last().unwrap(),
        &format!("GET /big.bin range=bytes={left}-")
    );
    assert_eq!(
        list_files(store.root()),
        vec!["downloads/big.bin".to_string()]
    );
    discard_download(&dest).unwrap();
    assert!(list_files(store.root()).is_empty());
}
