//! Fleet scale: one controller reaches 200 agent sessions (one process, each its own MQTT
//! session, client certificate and Endpoint ID) through one mosquitto, and each answers.

use std::time::{Duration, Instant};

use cpevisor_usp::broker::{BrokerOptions, TestBroker};
use cpevisor_usp::mqtt::{Event, MqttClient, USP_CONTENT_TYPE};

const AGENTS: usize = 200;

fn recv_matching(
    events: &std::sync::mpsc::Receiver<Event>,
    deadline: Instant,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<Event>,
) -> Event {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} before the deadline"));
        if let Some(e) = pick(event) {
            return e;
        }
    }
}

#[test]
fn one_controller_reaches_200_agent_sessions() {
    let dir = std::env::temp_dir().join(format!("cpevisor-usp-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = BrokerOptions {
        max_connections: (AGENTS + 10) as i64,
        ..BrokerOptions::default()
    };
    let mut broker = TestBroker::start_with(&dir, &options).unwrap();

    let t = Instant::now();
    let mut configs = Vec::new();
    for i in 0..AGENTS {
        let id = format!("os::fleet-{i:03}");
        let mut config = broker.mqtt_config(&format!("fleet-{i:03}"), &id).unwrap();
        config.subscriptions = vec![format!("usp/agent/{id}")];
        config.incoming_capacity = 4;
        config.outgoing_capacity = 4;
        configs.push((id, config));
    }
    eprintln!("{AGENTS} client certificates made in {:?}", t.elapsed());

    let rss_before = rss_kib();
    let t = Instant::now();
    let agents: Vec<_> = configs
        .into_iter()
        .map(|(id, config)| {
            let (client, events) = MqttClient::start(config).unwrap();
            (id, client, events)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, _, events) in &agents {
        recv_matching(events, deadline, &format!("Connected for {id}"), |e| {
            matches!(e, Event::Connected { .. }).then_some(e)
        });
    }
    let connect_time = t.elapsed();
    let rss_after = rss_kib();
    eprintln!(
        "{AGENTS} sessions connected (TLS, client certificates, subscribed) in {connect_time:?}"
    );

    let mut ctl_config = broker
        .mqtt_config("controller", "self::controller")
        .unwrap();
    ctl_config.subscriptions = vec!["usp/controller".into()];
    ctl_config.incoming_capacity = AGENTS * 2;
    ctl_config.outgoing_capacity = AGENTS * 2;
    let (controller, ctl_events) = MqttClient::start(ctl_config).unwrap();
    recv_matching(&ctl_events, deadline, "controller Connected", |e| {
        matches!(e, Event::Connected { .. }).then_some(e)
    });

    let t = Instant::now();
    for (id, _, _) in &agents {
        let record = format!("install app on {id}");
        controller
            .publish(
                &format!("usp/agent/{id}"),
                record.as_bytes(),
                Some("usp/controller"),
                Some(USP_CONTENT_TYPE),
            )
            .unwrap();
    }
    // Every agent gets exactly its own request and answers on the Response Topic.
    for (id, client, events) in &agents {
        let Event::Message(m) =
            recv_matching(events, deadline, &format!("request for {id}"), |e| {
                matches!(e, Event::Message(_)).then_some(e)
            })
        else {
            unreachable!()
        };
        assert_eq!(m.payload, format!("install app on {id}").as_bytes());
        assert_eq!(m.content_type.as_deref(), Some(USP_CONTENT_TYPE));
        let to = m.response_topic.expect("request carries a response topic");
        client
            .publish(
                &to,
                format!("done {id}").as_bytes(),
                None,
                Some(USP_CONTENT_TYPE),
            )
            .unwrap();
    }
    let mut answered = std::collections::HashSet::new();
    while answered.len() < AGENTS {
        let Event::Message(m) = recv_matching(&ctl_events, deadline, "answers", |e| {
            matches!(e, Event::Message(_)).then_some(e)
        }) else {
            unreachable!()
        };
        assert!(answered.insert(m.payload), "duplicate answer");
    }
    let round_trip = t.elapsed();
    eprintln!("{AGENTS} requests delivered and answered in {round_trip:?}");
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!(
            "process RSS {before} KiB -> {after} KiB with {AGENTS} TLS sessions: ~{} KiB each \
             ({build} build, two threads per session)",
            after.saturating_sub(before) / AGENTS as u64
        );
    }
    let stats = controller.stats();
    assert_eq!(
        (stats.published, stats.received, stats.incoming_dropped),
        (AGENTS as u64, AGENTS as u64, 0)
    );

    // The broker restarts (a crash, an upgrade): every session comes back by itself, the
    // jittered back-off spreading the reconnects instead of a thundering herd.
    broker.restart().unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(60);
    let mut back_at = Vec::new();
    let mut waiting: Vec<usize> = (0..AGENTS).collect();
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} sessions not back after a minute",
            waiting.len()
        );
        // `is_connected` is the authority: state events may be dropped from a full channel.
        waiting.retain(|&i| {
            let back = agents[i].1.stats().connects == 2 && agents[i].1.is_connected();
            if back {
                back_at.push(t.elapsed());
            }
            !back
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    back_at.sort();
    eprintln!(
        "after a broker restart all {AGENTS} sessions were back in {:?} (first {:?}, median {:?})",
        back_at[AGENTS - 1],
        back_at[0],
        back_at[AGENTS / 2]
    );
    // And they work: one more request each.
    for (id, _, events) in &agents {
        while events.try_recv().is_ok() {}
        controller
            .publish(&format!("usp/agent/{id}"), b"again", None, None)
            .unwrap();
    }
    for (id, _, events) in &agents {
        recv_matching(events, deadline, &format!("second request for {id}"), |e| {
            matches!(&e, Event::Message(m) if m.payload == b"again").then_some(e)
        });
    }

    drop(controller);
    let t = Instant::now();
    drop(agents);
    eprintln!("{AGENTS} sessions closed in {:?}", t.elapsed());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The process's resident memory (smaps_rollup counts threaded processes right).
fn rss_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = text.lines().find(|l| l.starts_with("Rss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
