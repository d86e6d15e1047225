//! The controller's connection settings (`--config FILE`, flags override) and what they make
//! of the MQTT client configuration.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cpevisor_usp::mqtt::MqttConfig;
use serde::{Deserialize, Serialize};

/// The controller's connection settings (`--config FILE`, flags override).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfig {
    /// MQTT broker host (`--broker`).
    #[serde(default)]
    pub broker_host: String,
    /// Broker port; default 8883 when `ca_file` is set (TLS), else 1883.
    #[serde(default)]
    pub broker_port: Option<u16>,
    /// CA of the broker's certificate; None: plain TCP.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Our client key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the broker's certificate must carry; default: the broker host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Our USP endpoint ID.
    #[serde(default)]
    pub endpoint_id: String,
    /// Our topic, where agents reply and notify; default `usp/controller/<endpoint_id>`.
    #[serde(default)]
    pub topic: Option<String>,
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
}

/// Largest config, agents or roster file read.
pub(super) const MAX_FILE: u64 = 1 << 20;

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
    if !over.broker_host.is_empty() {
        base.broker_host = over.broker_host;
    }
    if !over.endpoint_id.is_empty() {
        base.endpoint_id = over.endpoint_id;
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { base.$f = over.$f; } )* };
    }
    take!(
        broker_port,
        ca_file,
        cert_file,
        key_file,
        server_name,
        topic,
        agent_topic,
        identity
    );
}

impl CtlConfig {
    /// Our topic: `topic`, or `usp/controller/<endpoint_id>`.
    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("usp/controller/{}", self.endpoint_id))
    }

    /// The agent topic template: `agent_topic`, or `usp/agent/{id}`.
    pub fn agent_topic(&self) -> String {
        self.agent_topic
            .clone()
            .unwrap_or_else(|| "usp/agent/{id}".to_string())
    }

    pub(super) fn mqtt_config(&self) -> Result<MqttConfig, String> {
        let port = self
            .broker_port
            .unwrap_or(if self.ca_file.is_some() { 8883 } else { 1883 });
        // A clean session gets a client id of its own, so two runs at once do not take each
        // other's connection over; a persistent one must keep the same id to find its session.
        let client_id = if self.session_expiry_s == 0 {
            format!("{}-{}", self.endpoint_id, std::process::id())
        } else {
            self.endpoint_id.clone()
        };
        let mut m = MqttConfig::new(&self.broker_host, port, client_id)
            .with_usp_endpoint_id(&self.endpoint_id);
        if let Some(ca) = &self.ca_file {
            let cert = match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let tls = cpevisor_usp::tls::client_config(ca, cert).map_err(|e| e.to_string())?;
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| self.broker_host.clone());
            m.tls = Some((tls, name));
        }
        m.subscriptions = vec![self.topic()];
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
