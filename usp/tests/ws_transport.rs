//! WebSocket client and server against each other (TLS with client certificates, and plain),
//! and the server against hand-made bad input over raw TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cpevisor_usp::broker::Pki;
use cpevisor_usp::ws::frame::{self, Frame};
use cpevisor_usp::ws::{self, WsConfig, WsConnection, WsError};

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpevisor-usp-ws-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A one-connection server: accepts, runs `serve` on the result, returns what it returns.
fn serve_once<T: Send + 'static>(
    tls: Option<Arc<rustls::ServerConfig>>,
    config: WsConfig,
    serve: impl FnOnce(Result<WsConnection, WsError>) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        serve(ws::accept(tcp, tls.as_ref(), &config))
    });
    (port, handle)
}

/// Echoes messages until the connection ends; returns how it ended.
fn echo(conn: Result<WsConnection, WsError>) -> (Option<cpevisor_usp::tls::PeerIdentity>, WsError) {
    let mut conn = conn.expect("server handshake");
    loop {
        match conn.reader.recv() {
            Ok(m) => conn.writer.send(&m).unwrap(),
            Err(e) => return (conn.peer, e),
        }
    }
}

#[test]
fn round_trip_over_mutual_tls_with_the_peer_identity() {
    let dir = test_dir("tls");
    let pki = Pki::new(&dir).unwrap();
    let (port, server) = serve_once(
        Some(pki.server_tls(true).unwrap()),
        WsConfig::default(),
        echo,
    );

    let me = pki.identity("controller-1").unwrap();
    let tls = pki.client_tls(Some(&me)).unwrap();
    let mut conn = ws::connect(
        "127.0.0.1",
        port,
        "/usp",
        Some((&tls, "127.0.0.1")),
        &WsConfig::default(),
    )
    .unwrap();
    assert_eq!(
        conn.peer.as_ref().unwrap().common_name.as_deref(),
        Some("127.0.0.1")
    );
    for size in [0, 1, 125, 126, 65_535, 65_536, 300_000] {
        let message: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        conn.writer.send(&message).unwrap();
        conn.writer.ping(b"are you there").unwrap(); // the pong is consumed by recv
        assert_eq!(conn.reader.recv().unwrap(), message, "size {size}");
    }
    conn.writer.close(frame::CLOSE_NORMAL, "done").unwrap();
    match conn.reader.recv() {
        Err(WsError::Closed { code: 1000, .. }) => {}
        other => panic!("expected the echoed close, got {other:?}"),
    }
    let (peer, end) = server.join().unwrap();
    let peer = peer.expect("client certificate identity");
    assert_eq!(peer.common_name.as_deref(), Some("controller-1"));
    assert_eq!(peer.uris, ["urn:bbf:usp:id:controller-1"]);
    assert!(
        matches!(end, WsError::Closed { code: 1000, ref reason } if reason == "done"),
        "{end:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_clients_without_a_trusted_certificate_are_refused() {
    let dir = test_dir("tls-refused");
    let pki = Pki::new(&dir).unwrap();
    for identity in [None, Some(pki.foreign_identity("intruder").unwrap())] {
        let (port, server) = serve_once(
            Some(pki.server_tls(true).unwrap()),
            WsConfig::default(),
            |c| c.err().map(|e| e.to_string()),
        );
        let tls = pki.client_tls(identity.as_ref()).unwrap();
        // With TLS 1.3 the client may learn of the refusal only on its first read.
        let outcome = ws::connect(
            "127.0.0.1",
            port,
            "/usp",
            Some((&tls, "127.0.0.1")),
            &WsConfig::default(),
        )
        .and_then(|mut c| c.reader.recv());
        assert!(outcome.is_err(), "client with {identity:?} got through");
        let server_error = server.join().unwrap().expect("server accepted the client");
        eprintln!("refused {:?}: {server_error}", identity.map(|i| i.cert));
        assert!(server_error.contains("TLS"), "{server_error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw TCP client that has done a correct handshake (or tried `request`).
fn raw_client(port: u16, request: &str) -> (BufReader<TcpStream>, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut input = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    (input, head)
}

fn good_request() -> String {
    ws::handshake::request("127.0.0.1", 1, "/usp", "dGhlIHNhbXBsZSBub25jZQ==")
}

fn read_frame(input: &mut BufReader<TcpStream>) -> Frame {
    frame::read(input, false, 1 << 20).unwrap()
}

fn expect_close(input: &mut BufReader<TcpStream>, code: u16) {
    let f = read_frame(input);
    assert_eq!(f.opcode, frame::OP_CLOSE);
    assert_eq!(frame::parse_close(&f.payload).unwrap().0, code);
    // And then the server hangs up.
    let mut rest = Vec::new();
    let _ = input.read_to_end(&mut rest);
}

#[test]
fn fragments_are_reassembled_and_pings_answered_in_between() {
    let (port, server) = serve_once(None, WsConfig::default(), echo);
    let (mut input, head) = raw_client(port, &good_request());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mask = Some([1, 2, 3, 4]);
    let mut tcp = input.get_ref().try_clone().unwrap();
    tcp.write_all(&frame::encode(false, frame::OP_BINARY, b"frag", mask))
        .unwrap();
    tcp.write_all(&frame::encode(true, frame::OP_PING, b"p", mask))
        .unwrap();
    tcp.write_all(&frame::encode(false, frame::OP_CONTINUATION, b"ment", mask))
        .unwrap();
    tcp.write_all(&frame::encode(true, frame::OP_CONTINUATION, b"ed", mask))
        .unwrap();
    let pong = read_frame(&mut input);
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (frame::OP_PONG, &b"p"[..])
    );
    let echoed = read_frame(&mut input);
    assert_eq!(
        (echoed.opcode, echoed.payload.as_slice()),
        (frame::OP_BINARY, &b"fragmented"[..])
    );
    tcp.write_all(&frame::encode(
        true,
        frame::OP_CLOSE,
        &frame::close_payload(1001, ""),
        mask,
    ))
    .unwrap();
    expect_close(&mut input, 1001);
    assert!(matches!(
        server.join().unwrap().1,
        WsError::Closed { code: 1001, .. }
    ));
}

#[test]
fn bad_handshakes_are_refused() {
    let cases = [
        (
            good_request().replace("Sec-WebSocket-Protocol: v1.usp\r\n", ""),
            "400",
        ),
        (good_request().replace("v1.usp", "v1.stomp"), "400"),
        (good_request().replace("Version: 13", "Version: 7"), "426"),
        (good_request().replace("GET", "PUT"), "405"),
        ("GARBAGE\r\n\r\n".to_string(), "400"),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000)),
            "400",
        ),
    ];
    for (request, status) in cases {
        let (port, server) = serve_once(None, WsConfig::default(), |c| {
            c.err().map(|e| e.to_string())
        });
        let (_, head) = raw_client(port, &request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:.80}: {head}"
        );
        let error = server
            .join()
            .unwrap()
            .expect("server accepted a bad handshake");
        eprintln!("{status}: {error}");
    }

    // Our client refuses a server that does not agree to v1.usp.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut input = BufReader::new(tcp);
        let head = ws::handshake::read_head(&mut input, 8192).unwrap();
        let key = head.get("Sec-WebSocket-Key").unwrap().to_owned();
        let answer = ws::handshake::response(&key).replace("v1.usp", "v2.other");
        input.get_mut().write_all(answer.as_bytes()).unwrap();
    });
    let e = ws::connect("127.0.0.1", port, "/usp", None, &WsConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("v1.usp"), "{e}");
    fake.join().unwrap();
}

#[test]
fn oversized_messages_are_refused_with_1009() {
    let config = WsConfig {
        max_message: 1000,
        ..WsConfig::default()
    };
    // One big frame, from our own client.
    let (port, server) = serve_once(None, config.clone(), echo);
    let mut conn = ws::connect("127.0.0.1", port, "/usp", None, &WsConfig::default()).unwrap();
    conn.writer.send(&[0u8; 1000]).unwrap();
    assert_eq!(conn.reader.recv().unwrap().len(), 1000);
    conn.writer.send(&[0u8; 1001]).unwrap();
    match conn.reader.recv() {
        Err(WsError::Closed { code: 1009, .. }) => {}
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert!(matches!(
        server.join().unwrap().1,
        WsError::Protocol { code: 1009, .. }
    ));

    // Fragments that add up to too much; the frame header alone claims 2^62 bytes next.
    for tail in [
        frame::encode(true, frame::OP_CONTINUATION, &[0u8; 600], Some([9; 4])),
        vec![0x80, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0],
    ] {
        let (port, server) = serve_once(None, config.clone(), echo);
        let (mut input, _) = raw_client(port, &good_request());
        let mut tcp = input.get_ref().try_clone().unwrap();
        tcp.write_all(&frame::encode(
            false,
            frame::OP_BINARY,
            &[0u8; 600],
            Some([9; 4]),
        ))
        .unwrap();
        tcp.write_all(&tail).unwrap();
        expect_close(&mut input, 1009);
        assert!(matches!(
            server.join().unwrap().1,
            WsError::Protocol { code: 1009, .. }
        ));
    }
}

#[test]
fn protocol_violations_close_the_connection() {
    let unmasked = frame::encode(true, frame::OP_BINARY, b"x", None);
    let text = frame::encode(true, frame::OP_TEXT, b"hello", Some([1; 4]));
    let stray = frame::encode(true, frame::OP_CONTINUATION, b"x", Some([1; 4]));
    let rsv = {
        let mut f = frame::encode(true, frame::OP_BINARY, b"x", Some([1; 4]));
        f[0] |= 0x40;
        f
    };
    for (bytes, code) in [(unmasked, 1002), (text, 1003), (stray, 1002), (rsv, 1002)] {
        let (port, server) = serve_once(None, WsConfig::default(), echo);
        let (mut input, _) = raw_client(port, &good_request());
        input
            .get_ref()
            .try_clone()
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        expect_close(&mut input, code);
        let (_, end) = server.join().unwrap();
        assert!(
            matches!(end, WsError::Protocol { code: c, .. } if c == code),
            "{end:?}"
        );
    }
}

#[test]
fn a_dropped_connection_is_an_error_not_a_hang() {
    let (port, server) = serve_once(None, WsConfig::default(), echo);
    let (input, _) = raw_client(port, &good_request());
    // Half a frame, then gone.
    input
        .get_ref()
        .try_clone()
        .unwrap()
        .write_all(&[0x82, 0x85, 1])
        .unwrap();
    drop(input);
    assert!(matches!(server.join().unwrap().1, WsError::Io(_)));
}

#[test]
fn silent_peers_time_out_in_the_handshake() {
    let dir = test_dir("silent");
    let pki = Pki::new(&dir).unwrap();
    let config = WsConfig {
        handshake_timeout: Duration::from_millis(500),
        ..WsConfig::default()
    };
    // A client that connects and says nothing, over TLS and over plain TCP.
    for tls in [Some(pki.server_tls(true).unwrap()), None] {
        let (port, server) = serve_once(tls, config.clone(), |c| c.err().map(|e| e.to_string()));
        let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let t = std::time::Instant::now();
        let error = server
            .join()
            .unwrap()
            .expect("a silent client was accepted");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{:?}: {error}",
            t.elapsed()
        );
        drop(silent);
    }
    // A server that accepts and says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = pki.client_tls(Some(&pki.identity("c").unwrap())).unwrap();
    let t = std::time::Instant::now();
    let outcome = ws::connect("127.0.0.1", port, "/", Some((&tls, "127.0.0.1")), &config);
    assert!(outcome.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpoint_ids_are_exchanged_in_the_handshake() {
    let server_config = WsConfig {
        endpoint_id: Some("os::012345-CPE0001".into()),
        ..WsConfig::default()
    };
    let (port, server) = serve_once(None, server_config, |c| {
        let mut conn = c.unwrap();
        let seen = conn.peer_endpoint_id.clone();
        let _ = conn.reader.recv();
        seen
    });
    let client_config = WsConfig {
        endpoint_id: Some("self::controller-1".into()),
        ..WsConfig::default()
    };
    let conn = ws::connect("127.0.0.1", port, "/usp", None, &client_config).unwrap();
    assert_eq!(conn.peer_endpoint_id.as_deref(), Some("os::012345-CPE0001"));
    conn.writer.close(frame::CLOSE_NORMAL, "").unwrap();
    assert_eq!(
        server.join().unwrap().as_deref(),
        Some("self::controller-1")
    );

    // A client without an Endpoint ID gets none back; a bad one is refused before sending.
    let (port, server) = serve_once(
        None,
        WsConfig {
            endpoint_id: Some("os::x".into()),
            ..WsConfig::default()
        },
        |c| c.unwrap().peer_endpoint_id,
    );
    let conn = ws::connect("127.0.0.1", port, "/usp", None, &WsConfig::default()).unwrap();
    assert_eq!(conn.peer_endpoint_id, None);
    assert_eq!(server.join().unwrap(), None);
    let bad = WsConfig {
        endpoint_id: Some("has \"quotes\"".into()),
        ..WsConfig::default()
    };
    assert!(matches!(
        ws::connect("127.0.0.1", port, "/usp", None, &bad),
        Err(WsError::Handshake(_))
    ));
}

#[test]
fn both_directions_at_once_over_tls_do_not_deadlock() {
    let dir = test_dir("duplex");
    let pki = Pki::new(&dir).unwrap();
    let (port, server) = serve_once(
        Some(pki.server_tls(true).unwrap()),
        WsConfig::default(),
        echo,
    );
    let tls = pki.client_tls(Some(&pki.identity("c").unwrap())).unwrap();
    let mut conn = ws::connect(
        "127.0.0.1",
        port,
        "/",
        Some((&tls, "127.0.0.1")),
        &WsConfig::default(),
    )
    .unwrap();
    // The writer pushes far more than the socket buffers hold while this thread reads.
    const MESSAGES: usize = 24;
    let writer = conn.writer.clone();
    let sending = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            writer.send(&vec![i as u8; 512 * 1024]).unwrap();
        }
    });
    let t = std::time::Instant::now();
    for i in 0..MESSAGES {
        let m = conn.reader.recv().unwrap();
        assert_eq!((m.len(), m[0]), (512 * 1024, i as u8));
    }
    sending.join().unwrap();
    eprintln!("{MESSAGES} x 512 KiB echoed over TLS in {:?}", t.elapsed());
    conn.writer.close(frame::CLOSE_NORMAL, "").unwrap();
    assert!(matches!(conn.reader.recv(), Err(WsError::Closed { .. })));
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
