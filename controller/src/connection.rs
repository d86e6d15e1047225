//! A connected controller: the engine plus the transport behind it, the MQTT broker or the
//! WebSocket server agents connect to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cpevisor_usp::mqtt::codec::Publish;
use cpevisor_usp::mqtt::{
    is_usp_content_type, Event as MqttEvent, MqttClient, MqttConfig, MqttError, USP_CONTENT_TYPE,
};

use super::cli::WsListen;
use super::config::CtlConfig;
use super::engine::{self, Controller, Inbound};
use super::ws_server;

/// How long to wait for the broker's CONNACK and our subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a publish may wait for room in the client's queue before it counts as failed.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

/// The shared subscription group of `serve` replicas (MQTT 5 `$share/<group>/<topic>`): the
/// broker hands each message on the controller's topic to one of them.
pub const SHARE_GROUP: &str = "cpevisor-serve";

/// Replica `name`'s own topic under the controller's `topic`: the Response Topic of its
/// requests (agents answer there) and where the others forward its agents' messages.
pub fn replica_topic(topic: &str, name: &str) -> String {
    format!("{topic}/replica/{name}")
}

/// Who handles an agent's messages: the replica to forward them to (by name) when another
/// one than this; None: this one (or nobody holds the agent's shard now).
pub type Owner = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How a `serve` replica shares the controller's topic with the others.
pub struct ReplicaRoute {
    /// Its name (one topic level).
    pub name: String,
    /// Where an agent's messages go.
    pub owner: Owner,
    /// Raised while no other replica holds a shard: nothing to forward, so messages are not
    /// decoded twice.
    pub alone: Arc<AtomicBool>,
    /// With a persistent session, the client ID is `<endpoint id>-<name>` (each replica its
    /// own session); otherwise the endpoint ID, as a single controller's (its session found
    /// again by the next run).
    pub named_session: bool,
}

/// A connected controller: the engine plus the MQTT client behind it.
pub struct Connection {
    /// The engine that runs the jobs over this connection.
    pub controller: Controller,
    client: Option<Arc<MqttClient>>,
    /// Set when agents connect to us over WebSocket instead.
    server: Option<ws_server::WsServer>,
}

impl Connection {
    /// Connects and subscribes to our topic; fails if the broker does not accept us within
    /// `CONNECT_TIMEOUT` (a refused certificate, a wrong CA, nothing listening).
    pub fn open(config: &CtlConfig) -> Result<Connection, String> {
        Connection::open_with(config.mqtt_config()?, config)
    }

    /// Like `open`, with an MQTT client configuration the caller made (tests, a broker without
    /// TLS).
    pub fn open_with(mqtt: MqttConfig, config: &CtlConfig) -> Result<Connection, String> {
        Connection::open_routed(mqtt, config, None)
    }

    /// Connects as one `serve` replica among several: the controller's topic as a shared
    /// subscription (each agent message reaches one replica, which forwards it to the
    /// replica holding the agent's shard), and the replica's own topic for the answers to its
    /// requests and what the others forward.
    pub fn open_replica(config: &CtlConfig, route: ReplicaRoute) -> Result<Connection, String> {
        let mut mqtt = config.mqtt_config()?;
        let topic = config.topic();
        mqtt.subscriptions = vec![
            format!("$share/{SHARE_GROUP}/{topic}"),
            replica_topic(&topic, &route.name),
        ];
        // Replicas of one persistent controller each keep a session of their own.
        if config.session_expiry_s > 0 && route.named_session {
            mqtt.client_id = format!("{}-{}", config.mqtt.endpoint_id, route.name);
        }
        Connection::open_routed(mqtt, config, Some(route))
    }

    fn open_routed(
        mqtt: MqttConfig,
        config: &CtlConfig,
        route: Option<ReplicaRoute>,
    ) -> Result<Connection, String> {
        let broker = format!("{}:{}", mqtt.host, mqtt.port);
        let (client, events) = MqttClient::start(mqtt).map_err(|e| format!("mqtt: {e}"))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut last = String::from("no answer");
        // A persistent session delivers what the broker kept as soon as it accepts us, even
        // before our SUBACK: keep those for the engine.
        let mut early = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("broker {broker}: cannot connect ({last})"))?;
            match events.recv_timeout(left) {
                Ok(MqttEvent::Connected { .. }) => break,
                Ok(MqttEvent::Disconnected { reason, .. }) => last = reason,
                Ok(MqttEvent::SubscribeRefused {
                    filter,
                    reason_code,
                }) => {
                    return Err(format!(
                        "broker {broker} refused our subscription to {filter} ({})",
                        cpevisor_usp::mqtt::codec::reason_name(reason_code)
                    ))
                }
                Ok(MqttEvent::Message(m)) => {
                    if early.len() < 4096 {
                        early.push(m)
                    }
                }
                Err(_) => return Err(format!("broker {broker}: cannot connect ({last})")),
            }
        }
        let client = Arc::new(client);
        let (tx, rx) = mpsc::sync_channel::<Inbound>(4096);
        let own_topic = config.topic();
        let reply_topic = match &route {
            Some(r) => replica_topic(&own_topic, &r.name),
            None => own_topic.clone(),
        };
        let forwarder = client.clone();
        let (shared_topic, own_id) = (own_topic.clone(), config.mqtt.endpoint_id.clone());
        // Moves messages from the client's event channel to the engine's; ends with either.
        std::thread::Builder::new()
            .name("usp-ctl-rx".into())
            .spawn(move || {
                let early = early.into_iter().map(MqttEvent::Message);
                for ev in early.chain(events) {
                    if let MqttEvent::Message(m) = ev {
                        if !is_usp_content_type(m.content_type.as_deref()) {
                            continue;
                        }
                        // Only what came by the shared topic moves on, once: what was
                        // forwarded to us stays here even if the shard moved meanwhile.
                        let shared = m.topic == shared_topic;
                        if let Some(r) = route
                            .as_ref()
                            .filter(|r| shared && !r.alone.load(Ordering::Relaxed))
                        {
                            if let Some(to) = owner_of(&m.payload, &own_id, &r.owner) {
                                let fwd = Publish {
                                    topic: replica_topic(&shared_topic, &to),
                                    qos: 1,
                                    content_type: m.content_type.clone(),
                                    response_topic: m.response_topic.clone(),
                                    payload: m.payload,
                                    ..Publish::default()
                                };
                                // Lost with the broker: the agent's next message or the
                                // owner's sweep makes up for it.
                                let _ = forwarder.publish_with(fwd);
                                continue;
                            }
                        }
                        let inb = Inbound {
                            payload: m.payload,
                            response_topic: m.response_topic,
                        };
                        if tx.send(inb).is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?;
        let publisher = client.clone();
        let identity = config.identity.clone();
        let send: engine::Sender = Box::new(move |topic: &str, bytes: Vec<u8>| {
            let topic = match &identity {
                Some(id) => format!("{topic}/{id}"),
                None => topic.to_string(),
            };
            let topic = topic.as_str();
            let deadline = Instant::now() + QUEUE_WAIT;
            loop {
                match publisher.publish(topic, &bytes, Some(&reply_topic), Some(USP_CONTENT_TYPE)) {
                    Ok(()) => return Ok(()),
                    // Back-pressure: the queue drains as the broker acknowledges.
                    Err(MqttError::QueueFull { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let controller = Controller::new(&config.mqtt.endpoint_id, &config.agent_topic(), send, rx);
        Ok(Connection {
            controller,
            client: Some(client),
            server: None,
        })
    }

    /// Listens for agents' WebSockets as `ws` says; the engine addresses agents by
    /// Endpoint ID, each on its own connection.
    pub fn open_ws(ws: &WsListen, config: &CtlConfig) -> Result<Connection, String> {
        let tls = match (&ws.cert, &config.mqtt.ca_file) {
            (Some((cert, key)), Some(ca)) => Some(
                cpevisor_usp::tls::server_config(cert, key, Some(ca)).map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let (tx, rx) = mpsc::sync_channel::<Inbound>(4096);
        let server = ws_server::WsServer::start(&ws.addr, tls, &config.mqtt.endpoint_id, tx)?;
        let controller = Controller::new(&config.mqtt.endpoint_id, "{id}", server.sender(), rx);
        Ok(Connection {
            controller,
            client: None,
            server: Some(server),
        })
    }

    /// With a WebSocket server: waits until each of `agents` has connected (or `deadline`).
    pub fn wait_for_agents(&self, agents: &[String], deadline: Instant) {
        if let Some(s) = &self.server {
            s.wait_for(agents, deadline);
        }
    }

    /// Waits (up to `wait`) until everything queued has been handed to the broker.
    pub fn flush(&self, wait: Duration) {
        // WebSocket sends are written before they return: nothing to wait for.
        let Some(client) = &self.client else { return };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && client.stats().published < self.controller.stats().sent {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The replica to forward a Record to (`owner` of its sender); None for one that does not
/// decode (the engine counts and drops it).
fn owner_of(payload: &[u8], own_id: &str, owner: &Owner) -> Option<String> {
    let limits = cpevisor_usp::record::Limits::default();
    let record = cpevisor_usp::record::decode_record(payload, own_id, &limits).ok()?;
    owner(&record.from_id)
}
