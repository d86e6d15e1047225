//! TR-369 R-MQTT.8/9/11: with no configured ClientId the client sends an empty one, keeps the
//! Assigned Client Identifier of the server's CONNACK, and uses it on every later connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cpevisor_usp::mqtt::{Event, MqttClient, MqttConfig};

fn read_packet(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).unwrap();
    let first = b[0];
    let mut len = 0usize;
    for i in 0..4 {
        tcp.read_exact(&mut b).unwrap();
        len |= ((b[0] & 0x7F) as usize) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).unwrap();
    (first, body)
}

/// A variable byte integer at `at`: (value, bytes used).
fn varint(body: &[u8], at: usize) -> (usize, usize) {
    let (mut v, mut n) = (0usize, 0usize);
    loop {
        let b = body[at + n];
        v |= ((b & 0x7F) as usize) << (7 * n);
        n += 1;
        if b & 0x80 == 0 {
            return (v, n);
        }
    }
}

/// The Client Identifier of an MQTT 5 CONNECT body.
fn client_id(body: &[u8]) -> String {
    // Protocol name "MQTT" (2 + 4), level, flags, keep alive (2): 10 bytes, then properties.
    assert_eq!(&body[..7], b"\0\x04MQTT\x05");
    let (props, n) = varint(body, 10);
    let at = 10 + n + props;
    let len = u16::from_be_bytes([body[at], body[at + 1]]) as usize;
    String::from_utf8(body[at + 2..at + 2 + len].to_vec()).unwrap()
}

#[test]
fn an_assigned_client_identifier_is_kept_for_later_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for n in 0..2 {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (first, body) = read_packet(&mut tcp);
            assert_eq!(first, 0x10, "CONNECT");
            seen.push(client_id(&body));
            if n == 0 {
                // CONNACK: Success, properties: Assigned Client Identifier "srv-42".
                let id = b"srv-42";
                let mut ack = vec![0x20, 3 + 3 + id.len() as u8, 0, 0, 3 + id.len() as u8];
                ack.extend_from_slice(&[0x12, 0, id.len() as u8]);
                ack.extend_from_slice(id);
                tcp.write_all(&ack).unwrap();
                // End the connection: the client reconnects.
            } else {
                tcp.write_all(&[0x20, 3, 0, 0, 0]).unwrap();
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest);
            }
        }
        seen
    });
    let mut config = MqttConfig::new("127.0.0.1", port, "");
    config.backoff.min = Duration::from_millis(50);
    config.backoff.max = Duration::from_millis(200);
    config.backoff.seed = Some(1);
    let (client, events) = MqttClient::start(config).unwrap();
    let mut connects = 0;
    while connects < 2 {
        match events
            .recv_timeout(Duration::from_secs(10))
            .expect("an event")
        {
            Event::Connected {
                assigned_client_id, ..
            } => {
                connects += 1;
                if connects == 1 {
                    assert_eq!(assigned_client_id.as_deref(), Some("srv-42"));
                }
            }
            Event::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(client);
    assert_eq!(server.join().unwrap(), ["", "srv-42"]);
}
