//! USP over WebSocket end to end: a real `cpevisord --usp` whose file names a `websocket`
//! controller, and `cpevisor-controller --ws-listen` as the WebSocket server, with TLS both ways
//! (certificates from the test PKI, no broker): DeviceInfo, an install from a loopback HTTP
//! server with OperationComplete and `DUStateChange!`, a read-only controller refused with
//! 7006, a controller whose certificate is not the identity configured for it ignored, and the
//! agent coming back on its own after the controller went away.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_usp::broker::Pki;
use cpevisor_usp::ws::{self, WsConfig, WsError};
use serde_json::{json, Value};
use usp_common::{events, only, row};

const AGENT: &str = "os::cpe-ws-1";
const CTL_ID: &str = "self::ctl";
const RO_ID: &str = "self::ro";
/// Configured with an identity the test's server certificate (CN 127.0.0.1) does not carry.
const OTHER_ID: &str = "self::other";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cpevisor-controller --ws-listen 127.0.0.1:PORT ... --json ARGS` as controller `id`:
/// (exit code, parsed stdout, stderr).
fn usp(pki: &Pki, port: u16, id: &str, args: &[&str]) -> (i32, Value, String) {
    let server = pki.server();
    let listen = format!("127.0.0.1:{port}");
    let mut all: Vec<std::ffi::OsString> = ["--id", id, "--ws-listen", &listen, "--ws-cert"]
        .iter()
        .map(Into::into)
        .collect();
    all.push(server.cert.clone().into());
    all.push("--ws-key".into());
    all.push(server.key.clone().into());
    all.push("--ca".into());
    all.push(pki.ca().into());
    all.extend(["--agent", AGENT, "--json"].iter().map(Into::into));
    all.extend(args.iter().map(Into::into));
    usp_common::run_ctl(all)
}

fn write_usp_file(path: &Path, pki: &Pki, port: u16) {
    let agent_id = pki.identity(AGENT).unwrap();
    let v = json!({
        "endpoint_id": AGENT,
        "ca_file": pki.ca(), "cert_file": agent_id.cert, "key_file": agent_id.key,
        // A short back-off: every CLI run is a controller that starts and goes away.
        "websocket": {"host": "127.0.0.1", "port": port, "path": "/usp",
                      "retry_min_ms": 100, "retry_max_ms": 400},
        "controllers": [
            {"endpoint_id": CTL_ID, "role": "FullAccess", "identity": "127.0.0.1"},
            {"endpoint_id": RO_ID, "role": "ReadOnly", "identity": "127.0.0.1"},
            {"endpoint_id": OTHER_ID, "role": "FullAccess", "identity": "ctl.example"},
        ],
        "device_info": {"manufacturer": "Example Networks", "model_name": "ws-board"},
    });
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn controller_serves_an_agent_over_websocket() {
    let mut world = World::new("usp-ws");
    let pki = Pki::new(&world.root.join("pki")).expect("openssl test PKI");
    let port = free_port();
    let usp_file = world.root.join("usp.json");
    write_usp_file(&usp_file, &pki, port);
    world.wrap = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("exec \"$0\" \"$@\" --usp {}", usp_file.display()),
    ];
    world.start_daemon(None);

    // DeviceInfo: the agent connects to the controller once it listens.
    let (code, v, err) = usp(
        &pki,
        port,
        CTL_ID,
        &["--timeout", "20", "get", "Device.DeviceInfo."],
    );
    assert_eq!(code, 0, "{v} {err}\nlog:\n{}", world.daemon_log());
    let r = only(&v);
    assert_eq!(row(r, "Manufacturer"), Some("Example Networks"), "{r}");
    assert_eq!(row(r, "ModelName"), Some("ws-board"), "{r}");
    assert!(row(r, "SoftwareVersion").is_some_and(|s| !s.is_empty()));

    // Install from loopback HTTP: OperateResp, then DUStateChange! and OperationComplete.
    let url = world.publish(&App::new("hello", "1.0"), "hello-1.0.cpkg");
    let (code, v, err) = usp(&pki, port, CTL_ID, &["--timeout", "60", "install", &url]);
    assert_eq!(code, 0, "{v} {err}\nlog:\n{}", world.daemon_log());
    let r = only(&v);
    let uuid = row(r, "UUID").expect("UUID output").to_string();
    assert!(
        events(r, "DUStateChange!")
            .iter()
            .any(|e| e["params"]["CurrentState"] == "Installed"
                && e["params"]["UUID"] == uuid.as_str()),
        "{r}"
    );
    assert_eq!(events(r, "OperationComplete").len(), 1, "{r}");
    assert_eq!(
        world.list()["deployment_units"].as_array().map(Vec::len),
        Some(1)
    );

    // Read-only: Get works, an Operate is refused with 7006 and nothing changes.
    let (code, v, err) = usp(
        &pki,
        port,
        RO_ID,
        &["--timeout", "20", "get", "Device.LocalAgent.EndpointID"],
    );
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(row(only(&v), "EndpointID"), Some(AGENT));
    let (code, v, _) = usp(&pki, port, RO_ID, &["--timeout", "20", "uninstall", &uuid]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(only(&v)["fault"]["code"], 7006, "{v}");
    assert_eq!(
        world.list()["deployment_units"].as_array().map(Vec::len),
        Some(1)
    );

    // A controller whose certificate is not its configured identity gets no answer at all.
    let (code, v, _) = usp(
        &pki,
        port,
        OTHER_ID,
        &["--timeout", "4", "get", "Device.DeviceInfo."],
    );
    assert_eq!(code, 1, "{v}");
    // Code 0: the controller's own timeout, not an answer from the agent.
    assert_eq!(only(&v)["fault"]["code"], 0, "{v}");
    assert!(row(only(&v), "Manufacturer").is_none(), "{v}");

    // The controller was away for a while: the agent retried and comes back by itself.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (code, v, err) = usp(
        &pki,
        port,
        CTL_ID,
        &["--timeout", "20", "get", "Device.DeviceInfo.ModelName"],
    );
    assert_eq!(code, 0, "{v} {err}\nlog:\n{}", world.daemon_log());
    assert_eq!(row(only(&v), "ModelName"), Some("ws-board"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = world.daemon_log();
    assert!(log.contains("WebSocket lost"), "{log}");
    assert!(
        log.contains(&format!("ignoring records from \"{OTHER_ID}\"")),
        "{log}"
    );
    assert!(log.matches("open (controller").count() >= 5, "{log}");

    world.stop_daemon();
}

/// The controller takes only agents with a certificate from its CA whose Endpoint ID is the
/// one they announce.
#[test]
fn the_controller_refuses_agents_it_cannot_identify() {
    let world = World::new("usp-ws-refuse");
    let pki = Pki::new(&world.root.join("pki")).expect("openssl test PKI");
    let port = free_port();
    let server = pki.server();
    let mut ctl = Command::new(usp_common::controller())
        .args(["--id", CTL_ID, "--ws-listen", &format!("127.0.0.1:{port}")])
        .arg("--ws-cert")
        .arg(&server.cert)
        .arg("--ws-key")
        .arg(&server.key)
        .arg("--ca")
        .arg(pki.ca())
        .args(["--agent", "os::never", "--timeout", "15", "get", "Device."])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cpevisor-controller");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the controller never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = |eid: &str| WsConfig {
        endpoint_id: Some(eid.into()),
        handshake_timeout: Duration::from_secs(5),
        ..WsConfig::default()
    };
    let open = |tls: std::sync::Arc<rustls::ClientConfig>, eid: &str| {
        ws::connect(
            "127.0.0.1",
            port,
            "/usp",
            Some((&tls, "127.0.0.1")),
            &config(eid),
        )
    };
    // No client certificate, or one from a CA nobody trusts: no WebSocket at all.
    assert!(open(pki.client_tls(None).unwrap(), "os::anon").is_err());
    let foreign = pki.foreign_identity("os::stranger").unwrap();
    let foreign_tls = cpevisor_usp::tls::client_config(
        &pki.ca(),
        Some((foreign.cert.as_path(), foreign.key.as_path())),
    )
    .unwrap();
    assert!(open(foreign_tls, "os::stranger").is_err());
    // A good certificate announcing someone else's Endpoint ID: closed with 1008.
    let mallory = pki.identity("os::mallory").unwrap();
    let mut conn = open(pki.client_tls(Some(&mallory)).unwrap(), "os::never").expect("handshake");
    match conn.reader.recv() {
        Err(WsError::Closed { code, .. }) => assert_eq!(code, 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }
    // The same certificate with its own ID is taken (and then kept open).
    let mut conn = open(pki.client_tls(Some(&mallory)).unwrap(), "os::mallory").expect("ok");
    conn.reader
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(matches!(conn.reader.recv(), Err(WsError::Io(_))));
    let _ = ctl.kill();
    let _ = ctl.wait();
}
