//! The MQTT client against a scripted fake server: refusals, oversized and malformed packets,
//! a silent server, a full event channel and a full outgoing queue. Through all of it the
//! client keeps running and reconnects.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpevisor_usp::mqtt::{Event, MqttClient, MqttConfig, MqttError};

const CONNACK_OK: [u8; 5] = [0x20, 3, 0, 0, 0];
const PUBLISH_T_HI: [u8; 8] = [0x30, 6, 0, 1, b't', 0, b'h', b'i'];

/// Reads one packet's first byte and body.
fn read_packet(tcp: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b)?;
    let first = b[0];
    let mut len = 0usize;
    for i in 0..4 {
        tcp.read_exact(&mut b)?;
        len |= ((b[0] & 0x7F) as usize) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body)?;
    Ok((first, body))
}

/// A fake server running `script(connection number, socket)` for each of `connections`
/// connections; returns what each script returned.
fn fake_server<T: Send + 'static>(
    connections: usize,
    script: impl Fn(usize, TcpStream) -> T + Send + 'static,
) -> (u16, JoinHandle<Vec<T>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        (0..connections)
            .map(|n| {
                let (mut tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (first, _) = read_packet(&mut tcp).unwrap();
                assert_eq!(first, 0x10, "the client starts with CONNECT");
                script(n, tcp)
            })
            .collect()
    });
    (port, handle)
}

fn config(port: u16) -> MqttConfig {
    let mut config = MqttConfig::new("127.0.0.1", port, "fake-test");
    config.backoff.min = Duration::from_millis(100);
    config.backoff.max = Duration::from_millis(400);
    config.backoff.seed = Some(1);
    config.connect_timeout = Duration::from_secs(5);
    config
}

fn next_event(events: &Receiver<Event>) -> Event {
    events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event within 10 s")
}

fn expect_disconnect(events: &Receiver<Event>, needle: &str) {
    match next_event(events) {
        Event::Disconnected { reason, .. } => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Disconnected({needle}), got {other:?}"),
    }
}

#[test]
fn a_refused_connection_is_reported_and_retried() {
    let (port, server) = fake_server(2, |n, mut tcp| {
        if n == 0 {
            // CONNACK 0x87 Not authorized, with a reason string.
            tcp.write_all(&[0x20, 9, 0, 0x87, 6, 0x1F, 0, 3, b'n', b'o', b'!'])
                .unwrap();
        } else {
            tcp.write_all(&CONNACK_OK).unwrap();
            tcp.write_all(&PUBLISH_T_HI).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let (client, events) = MqttClient::start(config(port)).unwrap();
    expect_disconnect(&events, "Not authorized (0x87): no!");
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    assert!(matches!(next_event(&events), Event::Message(m) if m.payload == b"hi"));
    drop(client);
    server.join().unwrap();
}

#[test]
fn an_oversized_packet_from_the_server_ends_the_connection_not_the_client() {
    let (port, server) = fake_server(2, |n, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        if n == 0 {
            // A PUBLISH header claiming 10 MB; nothing follows.
            tcp.write_all(&[0x30, 0x80, 0xAD, 0xE2, 0x04]).unwrap();
            // The client tells us why it hangs up: DISCONNECT 0x95 Packet too large.
            read_packet(&mut tcp).unwrap()
        } else {
            tcp.write_all(&PUBLISH_T_HI).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            (0, vec![])
        }
    });
    let mut config = config(port);
    config.max_packet_size = 1 << 20;
    let (client, events) = MqttClient::start(config).unwrap();
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    expect_disconnect(&events, "exceeds the maximum packet size 1048576");
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    assert!(matches!(next_event(&events), Event::Message(m) if m.payload == b"hi"));
    drop(client);
    let scripts = server.join().unwrap();
    assert_eq!(scripts[0], (0xE0, vec![0x95]));
}

#[test]
fn malformed_packets_end_the_connection_with_0x81() {
    let bad: Vec<Vec<u8>> = vec![
        vec![0x30, 4, 0, 2, 0xC3, 0x28],          // topic not UTF-8
        vec![0x30, 7, 0, 1, b't', 3, 0x23, 0, 1], // topic alias we did not allow
        vec![0x20, 3, 0, 0, 0],                   // a second CONNACK
        vec![0xD0, 1, 0],                         // PINGRESP with a body
        vec![0x30, 5, 0, 9, b't', 0, b'x'],       // string longer than the packet
    ];
    let count = bad.len();
    let (port, server) = fake_server(count, move |n, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        tcp.write_all(&bad[n]).unwrap();
        // Whatever the client says before hanging up.
        read_packet(&mut tcp).ok()
    });
    let (client, events) = MqttClient::start(config(port)).unwrap();
    for _ in 0..count {
        assert!(matches!(next_event(&events), Event::Connected { .. }));
        match next_event(&events) {
            Event::Disconnected { reason, .. } => eprintln!("{reason}"),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    drop(client);
    for (n, said) in server.join().unwrap().into_iter().enumerate() {
        // A second CONNACK is well-formed but out of place: the client just hangs up.
        if n != 2 {
            assert_eq!(said, Some((0xE0, vec![0x81])), "case {n}");
        }
    }
}

#[test]
fn a_silent_server_is_detected_by_keep_alive() {
    let (port, server) = fake_server(1, |_, mut tcp| {
        // Server Keep Alive 1 s, then never answer.
        tcp.write_all(&[0x20, 6, 0, 0, 3, 0x13, 0, 1]).unwrap();
        let first = read_packet(&mut tcp).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        first
    });
    let (client, events) = MqttClient::start(config(port)).unwrap();
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    let t = Instant::now();
    expect_disconnect(&events, "connection lost");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_millis(2500),
        "dead connection noticed after {waited:?}, expected ~1.5 s"
    );
    drop(client);
    assert_eq!(
        server.join().unwrap()[0],
        (0xC0, vec![]),
        "PINGREQ expected"
    );
}

#[test]
fn a_full_event_channel_drops_and_counts_messages() {
    let (port, server) = fake_server(1, |_, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        for _ in 0..10 {
            tcp.write_all(&PUBLISH_T_HI).unwrap();
        }
        // A QoS 1 message is acknowledged even when it is dropped.
        tcp.write_all(&[0x32, 8, 0, 1, b't', 0, 7, 0, b'h', b'i'])
            .unwrap();
        let ack = read_packet(&mut tcp).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        ack
    });
    let mut config = config(port);
    config.incoming_capacity = 2;
    let (client, events) = MqttClient::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.stats().received < 11 {
        assert!(Instant::now() < deadline, "{:?}", client.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = client.stats();
    assert_eq!(stats.incoming_dropped, 10, "{stats:?}"); // Connected + 1 message fit
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    assert!(matches!(next_event(&events), Event::Message(_)));
    assert_eq!(server.join().unwrap()[0], (0x40, vec![0, 7]));
    drop(client);
}

#[test]
fn publications_wait_in_a_bounded_queue_while_disconnected() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config(port);
    config.outgoing_capacity = 2;
    let (client, events) = MqttClient::start(config).unwrap();
    expect_disconnect(&events, "connect to 127.0.0.1");
    client.publish("t", b"1", None, None).unwrap();
    client.publish("t", b"2", None, None).unwrap();
    assert_eq!(
        client.publish("t", b"3", None, None),
        Err(MqttError::QueueFull { capacity: 2 })
    );
    assert!(matches!(client.subscribe(""), Err(MqttError::Invalid(_))));
    assert!(matches!(
        client.publish("a/+", b"x", None, None),
        Err(MqttError::Invalid(_))
    ));
    // Shutting down while disconnected returns promptly.
    let t = Instant::now();
    client.shutdown();
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn garbage_instead_of_connack_is_an_error() {
    let (port, server) = fake_server(1, |_, mut tcp| {
        tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    let (client, events) = MqttClient::start(config(port)).unwrap();
    expect_disconnect(&events, "CONNACK");
    drop(client);
    server.join().unwrap();
}

#[test]
fn unacknowledged_qos1_publications_are_resent_after_a_reconnect() {
    let (port, server) = fake_server(2, |n, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        let publish = read_packet(&mut tcp).unwrap();
        if n == 1 {
            // Acknowledge this time, then see that nothing more comes.
            let id = [publish.1[3], publish.1[4]];
            tcp.write_all(&[0x40, 2, id[0], id[1]]).unwrap();
            tcp.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            assert!(read_packet(&mut tcp).is_err(), "nothing after the PUBACK");
        }
        publish // the first connection drops without PUBACK
    });
    let (client, events) = MqttClient::start(config(port)).unwrap();
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    client.publish("t", b"once", None, None).unwrap();
    expect_disconnect(&events, "connection lost");
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    let sent = server.join().unwrap();
    let (first, again) = (&sent[0], &sent[1]);
    assert_eq!(first.0, 0x32, "QoS 1 PUBLISH");
    assert_eq!(again.0, 0x3A, "the resend carries DUP");
    assert_eq!(first.1, again.1, "same packet identifier and payload");
    drop(client);
}

#[test]
fn a_refused_subscription_is_reported() {
    // TR-369 R-MQTT.17: subscribed to nothing, a USP endpoint publishes no Record and
    // disconnects. The first connection's only SUBSCRIBE is refused: the next packet is
    // DISCONNECT, not the queued PUBLISH. The retry's is granted: then the PUBLISH goes out.
    let (port, server) = fake_server(2, |n, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        let (first, body) = read_packet(&mut tcp).unwrap();
        assert_eq!(first, 0x82, "SUBSCRIBE");
        // SUBACK: same packet id, no properties, 0x87 Not authorized (then 0x01 granted).
        let code = if n == 0 { 0x87 } else { 0x01 };
        tcp.write_all(&[0x90, 4, body[0], body[1], 0, code])
            .unwrap();
        read_packet(&mut tcp).unwrap().0
    });
    let mut config = config(port);
    config.subscriptions = vec!["usp/agent/x".into()];
    let (client, events) = MqttClient::start(config).unwrap();
    client.publish("t", b"hi", None, None).unwrap();
    assert_eq!(
        next_event(&events),
        Event::SubscribeRefused {
            filter: "usp/agent/x".into(),
            reason_code: 0x87
        }
    );
    expect_disconnect(&events, "refused every subscription");
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    let next = server.join().unwrap();
    assert_eq!(
        next[0], 0xE0,
        "DISCONNECT, not a PUBLISH, after the refusal"
    );
    assert_eq!(next[1] & 0xF0, 0x30, "a PUBLISH once subscribed");
    drop(client);
}

#[test]
fn host_names_go_through_the_configured_resolver() {
    use std::net::SocketAddr;
    use std::sync::Arc;
    let (port, server) = fake_server(1, |_, mut tcp| {
        tcp.write_all(&CONNACK_OK).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    let resolver = cpevisor_usp::tls::Resolver(Arc::new(|host: &str, port: u16| match host {
        "broker.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        other => Err(format!("{other}: no such host")),
    }));
    let mut good = config(port);
    good.host = "broker.test".into();
    good.resolver = Some(resolver.clone());
    let (client, events) = MqttClient::start(good).unwrap();
    assert!(matches!(next_event(&events), Event::Connected { .. }));
    drop(client);
    server.join().unwrap();

    let mut bad = config(port);
    bad.host = "elsewhere.test".into();
    bad.resolver = Some(resolver);
    let (client, events) = MqttClient::start(bad).unwrap();
    expect_disconnect(
        &events,
        "resolve elsewhere.test: elsewhere.test: no such host",
    );
    drop(client);
}
