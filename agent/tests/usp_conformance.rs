//! TR-369 MQTT binding rows of issue 12, against a scripted MQTT 5 server on loopback (so the
//! test sees the exact packets): R-MQTT.13 (CONNECT carries the User Property
//! `usp-endpoint-id`, agent and controller), R-MTP.6/R-MTP.8 (after connecting and after every
//! reconnect the agent's first Record is an MQTTConnect Record), R-NOT.6a over MQTT (an
//! unanswered OnBoardRequest is sent again after a reconnect), R-MQTT.27a (Content Type
//! `application/vnd.bbf.usp.msg` is a USP Record, agent and controller; another one is not).
//! And R-MTP.6 for the WebSocket MTP: a scripted WebSocket server sees a WebSocketConnect
//! Record first on every connection.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/usp.rs"]
mod usp_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::World;
use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::usp::dm::DataModel;
use cpevisor_agent::usp::endpoint::Endpoint;
use cpevisor_agent::usp::file::UspFile;
use cpevisor_agent::usp::retry::RetryPolicy;
use cpevisor_agent::usp::{self, mqtt};
use cpevisor_usp::mqtt::codec::{self, Incoming, Publish};
use cpevisor_usp::proto::mqtt_connect_record::MqttVersion;
use cpevisor_usp::proto::{get_resp, notify, request, response, GetResp, Msg, Record};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits, RecordContent};
use serde_json::json;
use usp_common::{only, row};

const AGENT: &str = "os::cpe-conf-1";
const CTL: &str = "self::conf-ctl";
const AGENT_TOPIC: &str = "usp/agent/os::cpe-conf-1";
const CTL_TOPIC: &str = "usp/controller/self::conf-ctl";
const MIME: &str = "application/vnd.bbf.usp.msg";

// ---- a scripted MQTT 5 server: one connection at a time --------------------------------

fn varint(b: &[u8], at: &mut usize) -> usize {
    let mut v = 0usize;
    for i in 0..4 {
        let x = b[*at];
        *at += 1;
        v |= ((x & 0x7F) as usize) << (7 * i);
        if x & 0x80 == 0 {
            break;
        }
    }
    v
}

fn str_at(b: &[u8], at: &mut usize) -> String {
    let n = u16::from_be_bytes([b[*at], b[*at + 1]]) as usize;
    let s = String::from_utf8(b[*at + 2..*at + 2 + n].to_vec()).unwrap();
    *at += 2 + n;
    s
}

/// The User Properties of a CONNECT body (3.1.2.11).
fn connect_user_properties(body: &[u8]) -> Vec<(String, String)> {
    let mut at = 0;
    assert_eq!(str_at(body, &mut at), "MQTT");
    assert_eq!(body[at], 5, "MQTT 5");
    at += 1 + 1 + 2; // level, flags, keep alive
    let len = varint(body, &mut at);
    let end = at + len;
    let mut out = Vec::new();
    while at < end {
        let id = body[at];
        at += 1;
        match id {
            0x11 | 0x27 => at += 4,
            0x21 | 0x22 => at += 2,
            0x17 | 0x19 => at += 1,
            0x15 => {
                str_at(body, &mut at);
            }
            0x26 => {
                let n = str_at(body, &mut at);
                let v = str_at(body, &mut at);
                out.push((n, v));
            }
            other => panic!("unexpected CONNECT property {other:#x}"),
        }
    }
    out
}

struct Conn {
    tcp: TcpStream,
}

impl Conn {
    /// Waits (until `deadline`) for the next client and reads its CONNECT.
    fn accept(listener: &TcpListener, deadline: Instant) -> (Conn, Vec<(String, String)>) {
        listener.set_nonblocking(true).unwrap();
        let tcp = loop {
            match listener.accept() {
                Ok((t, _)) => break t,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no client connected");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut c = Conn { tcp };
        let (first, body) = c.read().expect("CONNECT");
        assert_eq!(first, 0x10, "the client starts with CONNECT");
        let props = connect_user_properties(&body);
        c.tcp.write_all(&[0x20, 3, 0, 0, 0]).unwrap(); // CONNACK, Success
        (c, props)
    }

    fn read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut b = [0u8; 1];
        self.tcp.read_exact(&mut b)?;
        let first = b[0];
        let mut len = 0usize;
        for i in 0..4 {
            self.tcp.read_exact(&mut b)?;
            len |= ((b[0] & 0x7F) as usize) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.tcp.read_exact(&mut body)?;
        Ok((first, body))
    }

    /// Answers SUBSCRIBE and PINGREQ, acknowledges QoS 1; returns the next PUBLISH (None when
    /// the client hung up).
    fn next_publish(&mut self) -> Option<Publish> {
        loop {
            let (first, body) = self.read().ok()?;
            match first >> 4 {
                8 => {
                    // SUBSCRIBE: one filter per packet; grant QoS 1.
                    self.tcp
                        .write_all(&[0x90, 4, body[0], body[1], 0, 1])
                        .unwrap();
                }
                12 => self.tcp.write_all(&[0xD0, 0]).unwrap(),
                3 => {
                    let Incoming::Publish(p) = codec::decode(first, &body).unwrap() else {
                        unreachable!()
                    };
                    if let Some(id) = p.packet_id {
                        let [a, b] = id.to_be_bytes();
                        self.tcp.write_all(&[0x40, 2, a, b]).unwrap();
                    }
                    return Some(p);
                }
                14 => return None, // DISCONNECT
                _ => {}
            }
        }
    }

    fn publish(&mut self, topic: &str, content_type: Option<&str>, reply_to: &str, rec: &Record) {
        let p = Publish {
            topic: topic.into(),
            content_type: content_type.map(String::from),
            response_topic: Some(reply_to.into()),
            payload: encode_record(rec, &Limits::default()).unwrap(),
            ..Publish::default()
        };
        let bytes = codec::encode_publish(&p, 1 << 20).unwrap();
        self.tcp.write_all(&bytes).unwrap();
    }
}

fn usp_file(w: &World, port: u16) -> PathBuf {
    let path = w.root.join("usp.json");
    let v = json!({
        "broker_host": "127.0.0.1", "broker_port": port, "endpoint_id": AGENT,
        "controllers": [{"endpoint_id": CTL, "role": "FullAccess"}],
        "device_info": {"manufacturer": "Example Networks", "manufacturer_oui": "012345",
                        "model_name": "test-board", "product_class": "HomeGateway",
                        "serial_number": "0001"},
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

/// The Record an agent published to the controller.
fn agent_record(p: &Publish) -> Record {
    assert_eq!(p.topic, CTL_TOPIC);
    assert_eq!(p.content_type.as_deref(), Some("usp.msg"), "R-MQTT.27");
    decode_record(&p.payload, CTL, &Limits::default()).expect("record")
}

fn assert_mqtt_connect(p: &Publish, when: &str) {
    let rec = agent_record(p);
    match rec.content() {
        Ok(RecordContent::MqttConnect {
            version,
            subscribed_topic,
        }) => {
            assert_eq!(version, MqttVersion::V5);
            assert_eq!(subscribed_topic, AGENT_TOPIC);
        }
        other => panic!("{when}: the first Record is not an MQTTConnect Record: {other:?}"),
    }
}

fn msg_of(p: &Publish) -> Msg {
    let rec = agent_record(p);
    decode_msg(
        rec.no_session_payload().expect("no-session"),
        &Limits::default(),
    )
    .unwrap()
}

fn is_onboard(m: &Msg) -> bool {
    matches!(m.request_body(), Some(request::ReqType::Notify(n))
        if matches!(n.notification, Some(notify::Notification::OnBoardReq(_))))
}

#[test]
fn agent_connect_record_endpoint_id_property_and_usp_mime_type() {
    let w = World::new("usp-conf-agent");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = UspFile::load(&usp_file(&w, listener.local_addr().unwrap().port())).unwrap();
    let cfg = AgentConfig::load(&w.config).expect("config");
    let agent = Arc::new(Agent::open(&w.state, cfg).expect("agent"));
    let state = w.root.join("usp-state");
    std::fs::create_dir_all(&state).unwrap();
    // Retries every few hundred ms, so that some wait in the client's queue while the broker
    // is away and the reconnect shows that the MQTTConnect Record still comes first.
    let dm =
        DataModel::open(agent.clone(), file.usp_config(), &state, file.reboot_hook()).expect("dm");
    let mut ep = Endpoint::new(dm);
    ep.set_retry_policy(RetryPolicy {
        min_wait: Duration::from_millis(100),
        multiplier: 1500,
    });
    let session =
        mqtt::start(ep, agent.clone(), file.mqtt_config().unwrap(), file.topic()).expect("session");
    let deadline = Instant::now() + Duration::from_secs(30);

    // First connection: CONNECT names us (R-MQTT.13); MQTTConnect first, then OnBoardRequest.
    let (mut c, props) = Conn::accept(&listener, deadline);
    assert!(
        props.contains(&("usp-endpoint-id".into(), AGENT.into())),
        "R-MQTT.13: {props:?}"
    );
    let first = c.next_publish().expect("a Record");
    assert_mqtt_connect(&first, "first connect");
    let onboard = msg_of(&c.next_publish().expect("OnBoardRequest"));
    assert!(is_onboard(&onboard), "{onboard:?}");

    // R-MQTT.27a: a Get with the registered MIME type is answered; one with another Content
    // Type is not a USP Record (ignored: the first answer is the MIME one's).
    let get = |id: &str| {
        Record::no_session_msg(
            AGENT,
            CTL,
            &Msg::get(id, ["Device.DeviceInfo.Manufacturer"], 0),
        )
    };
    c.publish(AGENT_TOPIC, Some("text/plain"), CTL_TOPIC, &get("plain"));
    c.publish(AGENT_TOPIC, Some(MIME), CTL_TOPIC, &get("mime"));
    let reply = loop {
        let m = msg_of(&c.next_publish().expect("a reply"));
        if !is_onboard(&m) {
            break m; // (a retried OnBoardRequest may come first)
        }
    };
    assert_eq!(reply.msg_id(), "mime", "{reply:?}");
    let Some(response::RespType::GetResp(r)) = reply.response_body() else {
        panic!("not a GetResp: {reply:?}")
    };
    assert_eq!(
        r.req_path_results[0].resolved_path_results[0].result_params["Manufacturer"],
        "Example Networks"
    );

    // The broker goes away: after the reconnect, CONNECT names us again, the first Record is
    // again MQTTConnect (R-MTP.6 "after every reconnect"), ahead of the retries queued while
    // disconnected (R-MTP.8), and the unanswered OnBoardRequest is sent again with its msg_id
    // (R-NOT.6a).
    drop(c);
    let sent = session.stats().sent;
    while session.stats().sent < sent + 2 {
        assert!(Instant::now() < deadline, "no retries queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut c, props) = Conn::accept(&listener, deadline);
    assert!(props.contains(&("usp-endpoint-id".into(), AGENT.into())));
    assert_mqtt_connect(&c.next_publish().expect("a Record"), "reconnect");
    let again = msg_of(&c.next_publish().expect("OnBoardRequest again"));
    assert!(is_onboard(&again), "{again:?}");
    assert_eq!(again.msg_id(), onboard.msg_id());

    session.stop();
    agent.shutdown();
}

#[test]
fn controller_connect_names_it_and_takes_the_usp_mime_type() {
    let w = World::new("usp-conf-ctl");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = w.root.join("ctl.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "broker_host": "127.0.0.1", "broker_port": port, "endpoint_id": CTL,
        }))
        .unwrap(),
    )
    .unwrap();
    let run = std::thread::spawn(move || {
        usp_common::usp(
            &cfg,
            &[
                "--agent",
                AGENT,
                "--timeout",
                "10",
                "get",
                "Device.DeviceInfo.Manufacturer",
            ],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut c, props) = Conn::accept(&listener, deadline);
    assert!(
        props.contains(&("usp-endpoint-id".into(), CTL.into())),
        "R-MQTT.13: {props:?}"
    );
    // Play the agent: answer its Get with the registered MIME type as Content Type.
    let p = c.next_publish().expect("the controller's Get");
    assert_eq!(p.topic, AGENT_TOPIC);
    let rec = decode_record(&p.payload, AGENT, &Limits::default()).unwrap();
    let get = decode_msg(rec.no_session_payload().unwrap(), &Limits::default()).unwrap();
    let Some(request::ReqType::Get(g)) = get.request_body() else {
        panic!("not a Get: {get:?}")
    };
    let resp = Msg::response(
        get.msg_id(),
        response::RespType::GetResp(GetResp {
            req_path_results: vec![get_resp::RequestedPathResult {
                requested_path: g.param_paths[0].clone(),
                err_code: 0,
                err_msg: String::new(),
                resolved_path_results: vec![get_resp::ResolvedPathResult {
                    resolved_path: "Device.DeviceInfo.".into(),
                    result_params: [("Manufacturer".to_string(), "Example".to_string())].into(),
                }],
            }],
        }),
    );
    let reply_to = p.response_topic.clone().unwrap_or_else(|| CTL_TOPIC.into());
    c.publish(
        &reply_to,
        Some(MIME),
        AGENT_TOPIC,
        &Record::no_session_msg(CTL, AGENT, &resp),
    );
    while c.next_publish().is_some() {}
    let (code, v, err) = run.join().unwrap();
    assert_eq!(code, 0, "R-MQTT.27a: the answer was taken: {v} {err}");
    assert_eq!(row(only(&v), "Manufacturer"), Some("Example"), "{v}");
}

#[test]
fn agent_websocket_connect_record_first_on_every_connection() {
    use cpevisor_usp::ws::{self, WsConfig};
    let w = World::new("usp-conf-ws");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = w.root.join("usp-ws.json");
    let v = json!({
        "endpoint_id": AGENT,
        "websocket": {"host": "127.0.0.1", "port": port, "path": "/usp",
                      "retry_min_ms": 100, "retry_max_ms": 500},
        "controllers": [{"endpoint_id": CTL, "role": "FullAccess"}],
        "device_info": {"manufacturer": "Example Networks", "manufacturer_oui": "012345",
                        "model_name": "test-board", "product_class": "HomeGateway",
                        "serial_number": "0001"},
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let file = UspFile::load(&path).unwrap();
    let agent = Arc::new(Agent::open(&w.state, AgentConfig::load(&w.config).unwrap()).unwrap());
    let state = w.root.join("usp-state");
    std::fs::create_dir_all(&state).unwrap();
    let session = usp::start(agent.clone(), &file, &state).expect("session");
    let deadline = Instant::now() + Duration::from_secs(30);
    let config = WsConfig {
        endpoint_id: Some(CTL.into()),
        ..WsConfig::default()
    };
    let mut onboard_id = None;
    for round in ["first connect", "reconnect"] {
        listener.set_nonblocking(true).unwrap();
        let tcp = loop {
            match listener.accept() {
                Ok((t, _)) => break t,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "{round}: no connection");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        tcp.set_nonblocking(false).unwrap();
        let mut conn = ws::accept(tcp, None, &config).expect("handshake");
        conn.reader
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let first = decode_record(&conn.reader.recv().unwrap(), CTL, &Limits::default()).unwrap();
        assert!(
            matches!(first.content(), Ok(RecordContent::WebSocketConnect)),
            "{round}: the first Record is not a WebSocketConnect Record: {first:?}"
        );
        let next = decode_record(&conn.reader.recv().unwrap(), CTL, &Limits::default()).unwrap();
        let m = decode_msg(next.no_session_payload().unwrap(), &Limits::default()).unwrap();
        assert!(is_onboard(&m), "{round}: {m:?}");
        // Unanswered, so the same OnBoardRequest again after the reconnect (R-NOT.6a).
        let id = onboard_id.get_or_insert_with(|| m.msg_id().to_string());
        assert_eq!(m.msg_id(), id);
        conn.writer.abort();
    }
    session.stop();
    agent.shutdown();
}
