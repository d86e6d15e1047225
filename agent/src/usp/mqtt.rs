//! One USP endpoint on one MQTT connection (TR-369 "MQTT Binding"): the agent subscribes to its
//! own topic, hands each received Record to [`Endpoint::handle_record`] and publishes the reply
//! to the request's Response Topic (else the controller's configured topic), with Content Type
//! `usp.msg` and its own topic as Response Topic. Notifications (`Boot!` and OnBoardRequest on
//! connect, then `DUStateChange!`, OperationComplete, ValueChange, ...) go to the controller's
//! topic. The MQTT client reconnects by itself (capped, jittered back-off); its queues are
//! bounded and what does not fit is dropped and counted here.
//!
//! The daemon gets here through `usp::start` and its `--usp FILE`; tests run their own endpoint
//! over it with [`start`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;

use cpevisor_usp::mqtt::codec::Publish;
use cpevisor_usp::mqtt::{
    is_usp_content_type, Event as MqttEvent, MqttClient, MqttConfig, USP_CONTENT_TYPE,
};

use super::endpoint::Endpoint;
use super::session::{Counters, Session, Wakeup, TICK};
use super::topic_auth::check_bare_topic_roles;
use crate::lifecycle::Agent;
use cpevisor_usp::mqtt::valid_topic;

/// Most reply topics learned from requests of controllers that have no configured topic.
const MAX_LEARNED_TOPICS: usize = 64;

/// Runs `endpoint` over a client made from `mqtt` (whose subscriptions must include
/// `own_topic`). Controllers' topics come from the endpoint's configuration.
pub fn start(
    endpoint: Endpoint,
    agent: Arc<Agent>,
    mut mqtt: MqttConfig,
    own_topic: String,
) -> Result<Session, String> {
    if !valid_topic(&own_topic) {
        return Err(format!(
            "topic {own_topic:?} is not a valid MQTT topic name"
        ));
    }
    // Our topic, and one level below it: `<own_topic>/<identity>` for controllers whose
    // identity the broker binds to their topic suffix.
    for t in [own_topic.clone(), format!("{own_topic}/+")] {
        if !mqtt.subscriptions.contains(&t) {
            mqtt.subscriptions.push(t);
        }
    }
    let mut ep = endpoint;
    check_bare_topic_roles(&own_topic, &ep.data_model().config().controllers)?;
    ep.bind_unnamed_controllers_to_bare_topic();
    let configured: HashMap<String, String> = ep
        .data_model()
        .config()
        .controllers
        .iter()
        .filter_map(|c| Some((c.endpoint_id.clone(), c.reply_to.clone()?)))
        .collect();
    // R-MTP.6/R-MTP.8: every connection starts with an MQTTConnect Record to each enabled
    // controller we have a topic for, ahead of anything queued while disconnected; the
    // client sends it (as its greeting) so nothing can overtake it.
    mqtt.greeting = ep
        .mqtt_connect_records(&own_topic)
        .into_iter()
        .filter_map(|(to, payload)| {
            Some(Publish {
                topic: configured.get(&to)?.clone(),
                qos: 1,
                content_type: Some(USP_CONTENT_TYPE.into()),
                response_topic: Some(own_topic.clone()),
                payload,
                ..Publish::default()
            })
        })
        .collect();
    // Subscribe before connecting: no agent event is missed between start and the loop.
    let agent_events = agent.events().subscribe();
    let (client, events) = MqttClient::start(mqtt).map_err(|e| format!("mqtt: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Counters::default());
    let mut runner = Runner {
        endpoint: ep,
        client,
        events,
        wakeup: Wakeup::new(agent_events),
        own_topic,
        routes: Routes {
            configured,
            learned: HashMap::new(),
        },
        stop: stop.clone(),
        stats: stats.clone(),
    };
    Session::spawn("usp-session", stop, stats, move || runner.run())
}

/// The sender identity a topic carries: `x` for `<own_topic>/x`, None for our bare topic.
fn topic_identity<'a>(own_topic: &str, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(own_topic)?
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Where Records for an endpoint ID go.
struct Routes {
    configured: HashMap<String, String>,
    learned: HashMap<String, String>,
}

impl Routes {
    fn topic(&self, to: &str) -> Option<&String> {
        self.configured.get(to).or_else(|| self.learned.get(to))
    }
}

struct Runner {
    endpoint: Endpoint,
    client: MqttClient,
    events: Receiver<MqttEvent>,
    wakeup: Wakeup,
    own_topic: String,
    routes: Routes,
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
}

impl Runner {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            match self.events.recv_timeout(TICK) {
                Ok(MqttEvent::Connected { .. }) => {
                    self.stats.bump(|s| s.connects += 1);
                    crate::log_info!("usp: connected, listening on {}", self.own_topic);
                    // The client already sent the MQTTConnect Records (its greeting).
                    let out = self.endpoint.on_connect();
                    self.send_all(out, None);
                }
                Ok(MqttEvent::Disconnected { reason, retry_in }) => {
                    crate::log_warn!(
                        "usp: broker connection lost ({reason}); retry in {retry_in:?}"
                    );
                }
                Ok(MqttEvent::SubscribeRefused {
                    filter,
                    reason_code,
                }) => {
                    crate::log_error!(
                        "usp: the broker refused our subscription to {filter} ({}): controllers \
                         cannot reach this agent",
                        cpevisor_usp::mqtt::codec::reason_name(reason_code)
                    );
                }
                Ok(MqttEvent::Message(m)) => {
                    self.stats.bump(|s| s.received += 1);
                    // `usp.msg` or the registered MIME type (R-MQTT.27a); MQTT 3.1.1 peers
                    // cannot send any.
                    if !is_usp_content_type(m.content_type.as_deref()) {
                        self.stats.bump(|s| s.ignored += 1);
                        crate::log_debug!(
                            "usp: ignoring a message with Content Type {:?}",
                            m.content_type
                        );
                        continue;
                    }
                    let reply_topic = m.response_topic.filter(|t| valid_topic(t));
                    let identity = topic_identity(&self.own_topic, &m.topic);
                    let out = self.endpoint.handle_record(&m.payload, identity);
                    self.send_all(out, reply_topic.as_deref());
                    // A request may have changed what subscribers watch.
                    let notes = self.endpoint.notifications();
                    self.send_all(notes, None);
                    self.wakeup.polled();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.wakeup.due() {
                let notes = self.endpoint.notifications();
                self.send_all(notes, None);
                self.wakeup.polled();
            }
        }
    }

    /// Publishes Records; a reply goes to `reply_topic` when the request named one (and its
    /// sender's topic is then remembered for notifications if none is configured).
    fn send_all(&mut self, out: Vec<(String, Vec<u8>)>, reply_topic: Option<&str>) {
        for (to, bytes) in out {
            let topic = match reply_topic {
                Some(t) => {
                    if !self.routes.configured.contains_key(&to)
                        && (self.routes.learned.len() < MAX_LEARNED_TOPICS
                            || self.routes.learned.contains_key(&to))
                    {
                        self.routes.learned.insert(to.clone(), t.to_string());
                    }
                    t.to_string()
                }
                None => match self.routes.topic(&to) {
                    Some(t) => t.clone(),
                    None => {
                        self.stats.bump(|s| s.send_dropped += 1);
                        crate::log_warn!("usp: no topic known for {to}: record dropped");
                        continue;
                    }
                },
            };
            match self.client.publish(
                &topic,
                &bytes,
                Some(&self.own_topic),
                Some(USP_CONTENT_TYPE),
            ) {
                Ok(()) => self.stats.bump(|s| s.sent += 1),
                Err(e) => {
                    self.stats.bump(|s| s.send_dropped += 1);
                    crate::log_warn!("usp: record to {to} on {topic} dropped: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_suffix_is_the_identity() {
        let own = "usp/agent/os::cpe-1";
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/ops"), Some("ops"));
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-10/ops"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/a/b"), None);
    }
}
