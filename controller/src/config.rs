//! The controller's connection settings (`--config FILE`, flags override) and what they make
//! of the MQTT client configuration.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use cpevisor_usp::mqtt::{MqttConfig, MqttSettings, UnknownFields};
use serde::Deserialize;

/// The controller's connection settings (`--config FILE`, flags override). The MQTT settings
/// are the usp crate's [`MqttSettings`], flattened (the JSON stays flat); unknown fields are
/// refused by [`UnknownFields`], flattened last, since serde's `deny_unknown_fields` does not
/// combine with `flatten`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CtlConfig {
    /// The broker (`--broker`; port 8883 with `ca_file`, else 1883), the CA (`--ca`), our
    /// certificate (`--cert`, `--key`), our endpoint ID (`--id`) and our topic (`--topic`),
    /// where agents reply and notify: default `usp/controller/<endpoint_id>`.
    #[serde(flatten)]
    pub mqtt: MqttSettings,
    /// Template of an agent's topic, `{id}` for its endpoint ID; default `usp/agent/{id}`.
    #[serde(default)]
    pub agent_topic: Option<String>,
    /// Our identity as the broker authenticates it (the client certificate's CN). When set,
    /// requests go to `<agent topic>/<identity>`, the sub-topic the broker's ACL lets only us
    /// write, and agents configured with that identity accept nothing else as us.
    #[serde(default)]
    pub identity: Option<String>,
    /// Above 0: a persistent MQTT session, so announcements made while we were away are kept
    /// by the broker for the next run.
    #[serde(default)]
    pub session_expiry_s: u32,
    /// `serve` only: where its HTTP API and dashboard listen (`--http`).
    #[serde(default)]
    pub http: Option<String>,
    /// `serve` only: the API's token file (`--api-token-file`).
    #[serde(default)]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Refuses any field not declared above or in [`MqttSettings`].
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Largest config, agents or roster file read.
pub(super) const MAX_FILE: u64 = 1 << 20;

/// A duration flag in seconds (fractions allowed) within `min..=86400`; the error names the flag.
pub(super) fn parse_secs(flag: &str, v: &str, min: f64) -> Result<Duration, String> {
    let n: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: {v:?} is not a number of seconds"))?;
    if !(min..=86_400.0).contains(&n) {
        return Err(format!("{flag}: {v} is outside {min}..86400 seconds"));
    }
    Ok(Duration::from_secs_f64(n))
}

pub(super) fn read_bounded(path: &Path, what: &str) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "{what} {}: larger than {MAX_FILE} bytes",
            path.display()
        ));
    }
    Ok(text)
}

pub(super) fn merge(base: &mut CtlConfig, over: CtlConfig) {
    macro_rules! take {
        ($b:expr, $o:expr; $($f:ident),*) => { $( if $o.$f.is_some() { $b.$f = $o.$f; } )* };
    }
    let (b, o) = (&mut base.mqtt, over.mqtt);
    if !o.broker_host.is_empty() {
        b.broker_host = o.broker_host;
    }
    if !o.endpoint_id.is_empty() {
        b.endpoint_id = o.endpoint_id;
    }
    take!(b, o; broker_port, ca_file, cert_file, key_file, server_name, topic);
    take!(base, over; agent_topic, identity);
}

impl CtlConfig {
    /// Our topic: `topic`, or `usp/controller/<endpoint_id>`.
    pub fn topic(&self) -> String {
        self.mqtt.topic_or("usp/controller")
    }

    /// The agent topic template: `agent_topic`, or `usp/agent/{id}`.
    pub fn agent_topic(&self) -> String {
        self.agent_topic
            .clone()
            .unwrap_or_else(|| "usp/agent/{id}".to_string())
    }

    pub(super) fn mqtt_config(&self) -> Result<MqttConfig, String> {
        let id = &self.mqtt.endpoint_id;
        // A clean session gets a client id of its own, so two runs at once do not take each
        // other's connection over; a persistent one must keep the same id to find its session.
        let client_id = if self.session_expiry_s == 0 {
            format!("{id}-{}", std::process::id())
        } else {
            id.clone()
        };
        let mut m = self.mqtt.mqtt_config(client_id, self.topic())?;
        m.session_expiry_s = self.session_expiry_s;
        // A fleet answers at once: room for every agent's replies and our requests.
        m.incoming_capacity = 4096;
        m.outgoing_capacity = 4096;
        m.receive_maximum = 256;
        // One connection attempt per run: a refused client should fail, not back off.
        m.backoff.min = Duration::from_millis(500);
        m.backoff.max = Duration::from_secs(2);
        Ok(m)
    }
}

pub(super) fn check_endpoint(ep: &str) -> Result<(), String> {
    if ep.is_empty() || ep.len() > 256 || ep.chars().any(|c| c.is_control() || c == ' ') {
        Err(format!(
            "endpoint ID {ep:?}: must be 1..256 printable bytes without spaces"
        ))
    } else {
        Ok(())
    }
}
