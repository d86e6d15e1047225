//! TR-369 1.3+ WebSocket clients name themselves in the request URI (`?eid=`, R-WS.10b) and send
//! no `bbf-usp-protocol` extension: the server side must still learn the Endpoint ID, and must
//! not answer with an extension that was not offered (RFC 6455 9.1).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cpevisor_usp::ws::{self, WsConfig};

#[test]
fn a_server_learns_the_endpoint_id_from_the_request_uri() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let config = WsConfig {
            endpoint_id: Some("self::ctl".into()),
            ..WsConfig::default()
        };
        ws::accept(tcp, None, &config).map(|c| c.peer_endpoint_id)
    });
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /usp?eid=os%3A%3A012345-CPE%252F1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v1.usp\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let mut reader = BufReader::new(tcp);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        answer.push_str(&line);
    }
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(!answer.contains("Sec-WebSocket-Extensions"), "{answer}");
    let eid = server.join().unwrap().expect("handshake accepted");
    assert_eq!(eid.as_deref(), Some("os::012345-CPE%2F1"));
}
