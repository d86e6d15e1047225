//! Downloads over HTTPS from a real TLS server on loopback (python `ssl`) with a CA and server
//! certificate made by the `openssl` CLI.

mod common;

use std::fs;
use std::time::Duration;

use common::{list_files, make_test_pki, Scratch, Server};
use cpevisor_agent::fault::FaultCode;
use cpevisor_agent::fetch::{fetch, FetchOptions};
use cpevisor_agent::store::{Digest, Store};

fn opts(ca: Option<&std::path::Path>, digest: Digest) -> FetchOptions {
    FetchOptions {
        expected_sha256: Some(digest),
        extra_ca_file: ca.map(|p| p.to_path_buf()),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(20),
        ..FetchOptions::default()
    }
}

fn serve(tmp: &Scratch, extra: &[&str]) -> (Server, std::path::PathBuf, Digest) {
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    fs::write(www.join("app.cpkg"), &body).unwrap();
    let (ca, cert, key) = make_test_pki(tmp.path(), "good");
    let mut args = vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    (
        Server::range(&www, &tmp.path().join("log"), &args),
        ca,
        Digest::of(&body),
    )
}

#[test]
fn https_with_the_test_ca_by_ip_and_by_name() {
    let tmp = Scratch::new("https-good");
    let (server, ca, digest) = serve(&tmp, &[]);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let dest = store.downloads_dir().join(format!("{host}.cpkg"));
        let got = fetch(
            &server.url("https", host, "app.cpkg"),
            &dest,
            &opts(Some(&ca), digest),
            &mut |_, _| {},
        )
        .unwrap_or_else(|f| panic!("{host}: {f}"));
        assert_eq!(got.sha256, digest);
    }
}

#[test]
fn https_resumes_after_a_dropped_connection() {
    let tmp = Scratch::new("https-resume");
    let (server, ca, digest) = serve(&tmp, &["--drop-after", "100000"]);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let dest = store.downloads_dir().join("app.cpkg");
    let got = fetch(
        &server.url("https", "127.0.0.1", "app.cpkg"),
        &dest,
        &opts(Some(&ca), digest),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(got.sha256, digest);
    assert!(
        server.requests().iter().any(|r| r.contains("range=bytes=")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn untrusted_certificates_are_7033() {
    let tmp = Scratch::new("https-untrusted");
    let (server, _good_ca, digest) = serve(&tmp, &[]);
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let (other_ca, _, _) = make_test_pki(&other, "other");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let url = server.url("https", "127.0.0.1", "app.cpkg");
    for ca in [None, Some(other_ca.as_path())] {
        let before = list_files(store.root());
        let err = fetch(
            &url,
            &store.downloads_dir().join("app.cpkg"),
            &opts(ca, digest),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert_eq!(err.code, FaultCode::DownloadFailure, "{}", err.message);
        assert!(err.message.contains("certificate"), "{}", err.message);
        assert_eq!(list_files(store.root()), before);
    }
}

#[test]
fn unusable_ca_file_is_7004() {
    let tmp = Scratch::new("https-badca");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let bad = tmp.path().join("bad.pem");
    fs::write(&bad, b"not a certificate").unwrap();
    let err = fetch(
        "https://127.0.0.1:9/x",
        &store.downloads_dir().join("x"),
        &opts(Some(&bad), Digest::of(b"")),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(err.code, FaultCode::InvalidArguments, "{}", err.message);
    assert!(list_files(store.root()).is_empty());
}

/// The agent has no built-in roots: a server with a public certificate is trusted through the
/// firmware's CA bundle, whose entries webpki cannot use are skipped, not fatal.
#[test]
fn https_trusts_the_firmware_ca_bundle_without_a_ca_file() {
    let tmp = Scratch::new("https-bundle");
    let (server, ca, digest) = serve(&tmp, &[]);
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let (other_ca, _, _) = make_test_pki(&other, "other");
    let bundle = tmp.path().join("ca-certificates.crt");
    let mut pem = fs::read(&other_ca).unwrap();
    pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    pem.extend_from_slice(&fs::read(&ca).unwrap());
    fs::write(&bundle, pem).unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let got = fetch(
        &server.url("https", "localhost", "app.cpkg"),
        &store.downloads_dir().join("app.cpkg"),
        &FetchOptions {
            system_ca_bundle: bundle,
            ..opts(None, digest)
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(got.sha256, digest);
}

/// Neither a bundle nor a ca_file: refused before connecting, saying where trust comes from.
#[test]
fn no_trusted_ca_at_all_is_7033_naming_the_bundle_and_ca_file() {
    let tmp = Scratch::new("https-notrust");
    let (server, _ca, digest) = serve(&tmp, &[]);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let missing = tmp.path().join("no-bundle.crt");
    let err = fetch(
        &server.url("https", "127.0.0.1", "app.cpkg"),
        &store.downloads_dir().join("app.cpkg"),
        &FetchOptions {
            system_ca_bundle: missing.clone(),
            ..opts(None, digest)
        },
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(err.code, FaultCode::DownloadFailure, "{}", err.message);
    assert!(
        err.message.contains(&missing.display().to_string()) && err.message.contains("ca_file"),
        "{}",
        err.message
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(list_files(store.root()).is_empty());
}
