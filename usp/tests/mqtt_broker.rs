//! The MQTT client against a real mosquitto with TLS and client certificates made by the test.

use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cpevisor_usp::broker::{BrokerOptions, TestBroker};
use cpevisor_usp::mqtt::{Event, Message, MqttClient, MqttConfig, MqttError, USP_CONTENT_TYPE};

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpevisor-usp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Waits for the first event `pick` accepts, failing with the events seen on the way.
fn wait_for<T>(
    events: &Receiver<Event>,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
                seen.push(event);
            }
            Err(_) => panic!("no {what} within {timeout:?}; saw {seen:#?}"),
        }
    }
}

fn connected(events: &Receiver<Event>) {
    wait_for(events, Duration::from_secs(15), "Connected", |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
}

fn message(events: &Receiver<Event>, timeout: Duration) -> Message {
    wait_for(events, timeout, "message", |e| match e {
        Event::Message(m) => Some(m.clone()),
        _ => None,
    })
}

fn disconnected_reason(events: &Receiver<Event>) -> String {
    wait_for(
        events,
        Duration::from_secs(15),
        "Disconnected",
        |e| match e {
            Event::Disconnected { reason, .. } => Some(reason.clone()),
            Event::Connected { .. } => panic!("connected, but should have been refused"),
            _ => None,
        },
    )
}

#[test]
fn controller_and_agent_exchange_records_over_mutual_tls() {
    let dir = test_dir("exchange");
    let broker = TestBroker::start(&dir).unwrap();

    let mut agent_config = broker.mqtt_config("agent-1", "os::agent-1").unwrap();
    agent_config.subscriptions = vec!["usp/agent/os::agent-1".into()];
    let (agent, agent_events) = MqttClient::start(agent_config).unwrap();
    let mut ctl_config = broker
        .mqtt_config("controller", "self::controller")
        .unwrap();
    ctl_config.subscriptions = vec!["usp/controller".into()];
    let (controller, ctl_events) = MqttClient::start(ctl_config).unwrap();
    connected(&agent_events);
    connected(&ctl_events);
    assert!(agent.is_connected() && controller.is_connected());

    controller
        .publish(
            "usp/agent/os::agent-1",
            b"\x0a\x031.3 request",
            Some("usp/controller"),
            Some(USP_CONTENT_TYPE),
        )
        .unwrap();
    let request = message(&agent_events, Duration::from_secs(10));
    assert_eq!(request.topic, "usp/agent/os::agent-1");
    assert_eq!(request.payload, b"\x0a\x031.3 request");
    assert_eq!(request.content_type.as_deref(), Some(USP_CONTENT_TYPE));
    assert_eq!(request.response_topic.as_deref(), Some("usp/controller"));

    // The agent answers where the request said.
    agent
        .publish(
            request.response_topic.as_deref().unwrap(),
            b"response",
            Some("usp/agent/os::agent-1"),
            Some(USP_CONTENT_TYPE),
        )
        .unwrap();
    let response = message(&ctl_events, Duration::from_secs(10));
    assert_eq!(response.payload, b"response");
    assert_eq!(
        response.response_topic.as_deref(),
        Some("usp/agent/os::agent-1")
    );

    // Correlation data and QoS 0 pass too.
    controller
        .publish_with(cpevisor_usp::mqtt::codec::Publish {
            topic: "usp/agent/os::agent-1".into(),
            qos: 0,
            correlation_data: Some(vec![1, 2, 3]),
            payload: b"q0".to_vec(),
            ..Default::default()
        })
        .unwrap();
    let m = message(&agent_events, Duration::from_secs(10));
    assert_eq!(
        (m.payload.as_slice(), m.correlation_data),
        (&b"q0"[..], Some(vec![1, 2, 3]))
    );

    let stats = agent.stats();
    assert_eq!(
        (stats.received, stats.published, stats.incoming_dropped),
        (2, 1, 0)
    );
    agent.shutdown();
    controller.shutdown();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clients_without_a_trusted_certificate_are_refused() {
    let dir = test_dir("refused");
    let broker = TestBroker::start(&dir).unwrap();

    // No client certificate at all.
    let mut config = MqttConfig::new(broker.host(), broker.port(), "anonymous");
    config.tls = Some((broker.client_tls(None).unwrap(), broker.host().into()));
    let (client, events) = MqttClient::start(config).unwrap();
    let reason = disconnected_reason(&events);
    assert!(!client.is_connected());
    drop(client);
    eprintln!("no certificate: {reason}");

    // A certificate from a CA the broker does not trust.
    let foreign = broker.foreign_identity("intruder").unwrap();
    let mut config = MqttConfig::new(broker.host(), broker.port(), "intruder");
    config.tls = Some((
        broker.client_tls(Some(&foreign)).unwrap(),
        broker.host().into(),
    ));
    let (client, events) = MqttClient::start(config).unwrap();
    let reason = disconnected_reason(&events);
    assert!(!client.is_connected());
    eprintln!("foreign CA: {reason}");
    drop(client);

    // A server we cannot verify: our CA file is the foreign one.
    let me = broker.identity("agent-2").unwrap();
    let tls =
        cpevisor_usp::tls::client_config(&dir.join("foreign/ca.pem"), Some((&me.cert, &me.key)))
            .unwrap();
    let mut config = MqttConfig::new(broker.host(), broker.port(), "agent-2");
    config.tls = Some((tls, broker.host().into()));
    let (client, events) = MqttClient::start(config).unwrap();
    let reason = disconnected_reason(&events);
    assert!(
        reason.contains("certificate") || reason.contains("Certificate"),
        "{reason}"
    );
    drop(client);

    // The broker is unharmed: a good client still gets in.
    let (good, events) =
        MqttClient::start(broker.mqtt_config("agent-3", "agent-3").unwrap()).unwrap();
    connected(&events);
    drop(good);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oversized_publications_are_refused_by_our_codec() {
    let dir = test_dir("oversized");
    let options = BrokerOptions {
        max_packet_size: 10_000,
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(&dir, &options).unwrap();
    let mut config = broker.mqtt_config("agent-4", "agent-4").unwrap();
    config.subscriptions = vec!["t/agent-4".into()];
    config.max_packet_size = 50_000;
    let (receiver, events) = MqttClient::start(config).unwrap();
    connected(&events);
    let mut config = broker.mqtt_config("controller", "controller").unwrap();
    config.max_packet_size = 50_000;
    let (client, sender_events) = MqttClient::start(config).unwrap();
    connected(&sender_events);

    // The broker's CONNACK announced 10000 bytes: we refuse before sending.
    match client.publish("t/agent-4", &vec![0u8; 20_000], None, None) {
        Err(MqttError::TooLarge { max: 10_000, .. }) => {}
        other => panic!("expected TooLarge under the broker's limit, got {other:?}"),
    }
    // Within limits still works, and the connection survived the refusal.
    client
        .publish("t/agent-4", &[7u8; 9_000], None, None)
        .unwrap();
    assert_eq!(
        message(&events, Duration::from_secs(10)).payload.len(),
        9_000
    );
    drop(client);
    drop(receiver);

    // Our own limit applies to what we send as well.
    let mut config = broker.mqtt_config("agent-5", "agent-5").unwrap();
    config.max_packet_size = 1_000;
    let (client, events) = MqttClient::start(config).unwrap();
    connected(&events);
    assert!(matches!(
        client.publish("t/x", &[0u8; 2_000], None, None),
        Err(MqttError::TooLarge { max: 1_000, .. })
    ));
    drop(client);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_client_reconnects_with_back_off_and_subscribes_again() {
    let dir = test_dir("reconnect");
    let mut broker = TestBroker::start(&dir).unwrap();
    let mut config = broker.mqtt_config("agent-6", "agent-6").unwrap();
    config.subscriptions = vec!["usp/agent/agent-6".into()];
    config.keep_alive = Duration::from_secs(5);
    config.backoff.min = Duration::from_millis(300);
    config.backoff.max = Duration::from_secs(2);
    let (agent, agent_events) = MqttClient::start(config).unwrap();
    connected(&agent_events);

    broker.stop();
    let mut waits = Vec::new();
    let down_at = Instant::now();
    // While the broker is down, every attempt fails and the waits grow (capped at 2 s).
    while waits.len() < 4 {
        wait_for(
            &agent_events,
            Duration::from_secs(15),
            "Disconnected",
            |e| match e {
                Event::Disconnected { retry_in, .. } => {
                    waits.push(*retry_in);
                    Some(())
                }
                _ => None,
            },
        );
    }
    eprintln!("back-off waits while the broker was down: {waits:?}");
    assert!(waits[0] >= Duration::from_millis(300) && waits[0] <= Duration::from_millis(600));
    assert!(waits[2] >= Duration::from_millis(1_200), "{waits:?}");
    assert!(
        waits.iter().all(|w| *w <= Duration::from_secs(2)),
        "{waits:?}"
    );
    assert!(!agent.is_connected());

    // A publication made while down waits in the queue.
    agent
        .publish("usp/agent/agent-6", b"queued", None, None)
        .unwrap();

    broker.restart().unwrap();
    connected(&agent_events);
    eprintln!(
        "reconnected {:?} after the broker went down",
        down_at.elapsed()
    );
    // The queued publication went out once connected, to our own (re-made) subscription...
    // mosquitto does not echo it back (No Local), so check it through a second client.
    let mut ctl_config = broker.mqtt_config("controller", "controller").unwrap();
    ctl_config.subscriptions = vec!["usp/controller".into()];
    let (controller, ctl_events) = MqttClient::start(ctl_config).unwrap();
    connected(&ctl_events);
    controller
        .publish(
            "usp/agent/agent-6",
            b"after restart",
            Some("usp/controller"),
            Some(USP_CONTENT_TYPE),
        )
        .unwrap();
    let m = message(&agent_events, Duration::from_secs(10));
    assert_eq!(m.payload, b"after restart");
    let stats = agent.stats();
    assert_eq!(stats.connects, 2, "{stats:?}");
    assert!(stats.disconnects >= 4, "{stats:?}");
    drop(agent);
    drop(controller);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn subscriptions_made_and_dropped_while_connected() {
    let dir = test_dir("subscribe");
    let broker = TestBroker::start(&dir).unwrap();
    let (agent, agent_events) =
        MqttClient::start(broker.mqtt_config("agent-7", "agent-7").unwrap()).unwrap();
    let (controller, ctl_events) =
        MqttClient::start(broker.mqtt_config("controller", "controller").unwrap()).unwrap();
    connected(&agent_events);
    connected(&ctl_events);

    agent.subscribe("usp/agent/agent-7/#").unwrap();
    // The SUBACK is not reported; publish until the subscription is in place.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        controller
            .publish("usp/agent/agent-7/x", b"late", None, None)
            .unwrap();
        if let Ok(Event::Message(m)) = agent_events.recv_timeout(Duration::from_millis(200)) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "runtime subscription never took effect"
        );
    };
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("usp/agent/agent-7/x", &b"late"[..])
    );

    agent.unsubscribe("usp/agent/agent-7/#").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    while agent_events.try_recv().is_ok() {} // messages sent before the UNSUBACK
    controller
        .publish("usp/agent/agent-7/x", b"gone", None, None)
        .unwrap();
    assert!(
        agent_events
            .recv_timeout(Duration::from_millis(700))
            .is_err(),
        "a message arrived after unsubscribing"
    );

    // A filter MQTT does not allow never reaches the broker.
    for bad in ["a/#/b", "a/b#", "a+/b"] {
        assert!(
            matches!(agent.subscribe(bad), Err(MqttError::Invalid(_))),
            "{bad}"
        );
    }
    assert!(agent.is_connected());
    drop(agent);
    drop(controller);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broker_tunables_and_the_plain_listener_apply() {
    let dir = test_dir("tunables");
    let options = BrokerOptions {
        max_connections: 2,
        message_size_limit: 100,
        plain_listener: true,
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(&dir, &options).unwrap();
    let plain = broker.plain_port().expect("plain listener");
    let mut config = MqttConfig::new(broker.host(), plain, "plain-receiver");
    config.subscriptions = vec!["t".into()];
    let (receiver, receiver_events) = MqttClient::start(config).unwrap();
    connected(&receiver_events);
    let (sender, sender_events) =
        MqttClient::start(MqttConfig::new(broker.host(), plain, "plain-sender")).unwrap();
    connected(&sender_events);

    // message_size_limit: a 200-byte payload is dropped by the broker, 50 bytes pass.
    sender.publish("t", &[1u8; 200], None, None).unwrap();
    sender.publish("t", &[2u8; 50], None, None).unwrap();
    let m = message(&receiver_events, Duration::from_secs(10));
    assert_eq!(m.payload, [2u8; 50]);

    // max_connections 2 (per listener): a third client is turned away.
    let mut third = MqttConfig::new(broker.host(), plain, "third");
    third.backoff.min = Duration::from_millis(200);
    let (third, third_events) = MqttClient::start(third).unwrap();
    let reason = disconnected_reason(&third_events);
    eprintln!("third connection: {reason}");
    drop(third);
    drop(sender);
    drop(receiver);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// MQTT 5 shared subscriptions, as `serve` replicas use them (`$share/<group>/<topic>`): each
/// message on the topic reaches exactly one member of the group, with its real topic name;
/// a plain subscription beside them still gets every one.
#[test]
fn a_shared_subscription_hands_each_message_to_one_member() {
    let dir = test_dir("shared");
    let broker = TestBroker::start(&dir).unwrap();
    let members: Vec<_> = (0..3)
        .map(|i| {
            let mut c = broker
                .mqtt_config("self::controller", &format!("self::controller-r{i}"))
                .unwrap();
            c.subscriptions = vec!["$share/replicas/usp/controller/self::controller".into()];
            let (client, events) = MqttClient::start(c).unwrap();
            connected(&events);
            (client, events)
        })
        .collect();
    let mut plain = broker.mqtt_config("watcher", "self::watcher").unwrap();
    plain.subscriptions = vec!["usp/controller/self::controller".into()];
    let (_watcher, watcher_events) = MqttClient::start(plain).unwrap();
    connected(&watcher_events);
    let mut agent = broker.mqtt_config("agent-1", "os::agent-1").unwrap();
    agent.subscriptions = vec![];
    let (agent, agent_events) = MqttClient::start(agent).unwrap();
    connected(&agent_events);
    const N: usize = 30;
    for i in 0..N {
        let body = format!("note {i}");
        agent
            .publish(
                "usp/controller/self::controller",
                body.as_bytes(),
                None,
                Some(USP_CONTENT_TYPE),
            )
            .unwrap();
    }
    for _ in 0..N {
        let m = message(&watcher_events, Duration::from_secs(10));
        assert_eq!(m.topic, "usp/controller/self::controller");
    }
    // Every message went to one member: N in all, none twice, and quiet after.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < N && Instant::now() < deadline {
        for (_, events) in &members {
            while let Ok(Event::Message(m)) = events.recv_timeout(Duration::from_millis(20)) {
                assert_eq!(m.topic, "usp/controller/self::controller");
                got.push(String::from_utf8(m.payload).unwrap());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for (_, events) in &members {
        while let Ok(e) = events.try_recv() {
            if let Event::Message(m) = e {
                got.push(String::from_utf8(m.payload).unwrap());
            }
        }
    }
    got.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("note {i}")).collect();
    want.sort();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under the generated USP ACL, `serve` replicas (one controller certificate, a client ID
/// each) read the controller's topic through a shared subscription and their own replica
/// topics; an agent answers on a replica topic, and a replica forwards to another's.
#[test]
fn the_usp_acl_lets_controller_replicas_share_and_answer_on_replica_topics() {
    use cpevisor_usp::broker::{AclController, ControllerTopic};
    let dir = test_dir("acl-replicas");
    let options = BrokerOptions {
        usp_acl: true,
        acl_controllers: vec![AclController::new(
            "self::controller",
            ControllerTopic::AgentTopic,
        )],
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(&dir, &options).unwrap();
    let topic = "usp/controller/self::controller";
    let replica = |i: usize| {
        let mut c = broker
            .mqtt_config("self::controller", &format!("self::controller-r{i}"))
            .unwrap();
        c.subscriptions = vec![
            format!("$share/cpevisor-serve/{topic}"),
            format!("{topic}/replica/r{i}"),
        ];
        let (client, events) = MqttClient::start(c).unwrap();
        connected(&events);
        (client, events)
    };
    let (r0, r0_events) = replica(0);
    let mut agent = broker.mqtt_config("os::agent-1", "os::agent-1").unwrap();
    agent.subscriptions = vec!["usp/agent/os::agent-1".into()];
    let (agent, agent_events) = MqttClient::start(agent).unwrap();
    connected(&agent_events);
    // Alone in the group, r0 gets the agent's notification by the shared subscription.
    agent
        .publish(topic, b"boot", None, Some(USP_CONTENT_TYPE))
        .unwrap();
    let m = message(&r0_events, Duration::from_secs(10));
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic, &b"boot"[..])
    );
    // r0 asks the agent with its replica topic as the Response Topic; the answer comes there.
    let r0_topic = format!("{topic}/replica/r0");
    r0.publish(
        "usp/agent/os::agent-1",
        b"get",
        Some(&r0_topic),
        Some(USP_CONTENT_TYPE),
    )
    .unwrap();
    let req = message(&agent_events, Duration::from_secs(10));
    agent
        .publish(
            req.response_topic.as_deref().unwrap(),
            b"answer",
            None,
            Some(USP_CONTENT_TYPE),
        )
        .unwrap();
    let m = message(&r0_events, Duration::from_secs(10));
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (r0_topic.as_str(), &b"answer"[..])
    );
    // r1 forwards to r0's topic.
    let (r1, _r1_events) = replica(1);
    r1.publish(&r0_topic, b"forwarded", None, Some(USP_CONTENT_TYPE))
        .unwrap();
    let m = message(&r0_events, Duration::from_secs(10));
    assert_eq!(m.payload, b"forwarded");
    let _ = std::fs::remove_dir_all(&dir);
}
