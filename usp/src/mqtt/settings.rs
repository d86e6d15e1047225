//! The MQTT connection settings both ends of USP read from their JSON files, declared once: the
//! agent's `--usp` file and the controller's `--config` file both name the broker, the TLS
//! material, who we are and our topic, with the same rules (port 8883 with TLS, else 1883; a
//! client certificate goes with its key and needs TLS) and the same conversion into an
//! [`MqttConfig`].
//!
//! Each file's struct embeds [`MqttSettings`] with `#[serde(flatten)]`, so the JSON stays flat
//! and unchanged. serde's `deny_unknown_fields` does not combine with `flatten`; instead an
//! [`UnknownFields`] field, flattened after the settings, receives whatever no struct declared
//! and refuses it while the file is parsed (serde's flatten takes each declared field out of
//! the buffer before the next flattened field sees it).
//!
//! ```
//! use cpevisor_usp::mqtt::settings::{MqttSettings, UnknownFields};
//!
//! #[derive(serde::Deserialize)]
//! struct File {
//!     #[serde(flatten)]
//!     mqtt: MqttSettings,
//!     #[serde(default)]
//!     keep_alive_s: u16,
//!     #[serde(flatten)]
//!     _unknown: UnknownFields,
//! }
//!
//! let f: File = serde_json::from_str(r#"{"broker_host": "b", "keep_alive_s": 5}"#).unwrap();
//! assert_eq!((f.mqtt.port(), f.keep_alive_s), (1883, 5));
//! let err = serde_json::from_str::<File>(r#"{"broker_host": "b", "bogus": 1}"#);
//! assert!(err.err().unwrap().to_string().contains("unknown field `bogus`"));
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::client::MqttConfig;

/// The MQTT-over-TLS port, the default when `ca_file` is set.
pub const TLS_PORT: u16 = 8883;
/// The plain MQTT port, the default without TLS.
pub const PLAIN_PORT: u16 = 1883;
/// Longest broker host name (a DNS name).
const MAX_HOST_LEN: usize = 253;

/// Where the broker is, how we authenticate, who we are and where we listen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MqttSettings {
    /// MQTT broker host name or address.
    #[serde(default)]
    pub broker_host: String,
    /// Broker port; default 8883 when `ca_file` is set (TLS), else 1883 ([`Self::port`]).
    #[serde(default)]
    pub broker_port: Option<u16>,
    /// The CA that signed the broker's certificate, our only trust anchor. Absent: plain TCP
    /// (only for a broker on loopback or a private link).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain (PEM), presented to the broker; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Our client key (PEM), with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry; default: `broker_host`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Our USP endpoint ID.
    #[serde(default)]
    pub endpoint_id: String,
    /// The topic we subscribe to; each side has its own default ([`Self::topic_or`]).
    #[serde(default)]
    pub topic: Option<String>,
}

impl MqttSettings {
    /// The broker port: `broker_port`, else 8883 with TLS (`ca_file`), else 1883.
    pub fn port(&self) -> u16 {
        self.broker_port.unwrap_or(if self.ca_file.is_some() {
            TLS_PORT
        } else {
            PLAIN_PORT
        })
    }

    /// The name the broker's certificate must carry: `server_name`, else `broker_host`.
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.broker_host.clone())
    }

    /// Our topic: `topic`, else `<prefix>/<endpoint_id>` (`usp/agent`, `usp/controller`).
    pub fn topic_or(&self, prefix: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{prefix}/{}", self.endpoint_id))
    }

    /// Checks the fields against each other: the broker host (required unless the caller
    /// uses another MTP), a port that is not 0, a client certificate with its key and with TLS.
    /// The endpoint ID and the topics are each side's to check (they differ in defaults).
    pub fn validate(&self, broker_required: bool) -> Result<(), String> {
        if (broker_required && self.broker_host.is_empty()) || self.broker_host.len() > MAX_HOST_LEN
        {
            return Err(format!("broker_host must be 1..{MAX_HOST_LEN} bytes"));
        }
        if self.broker_port == Some(0) {
            return Err("broker_port must not be 0".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("cert_file and key_file go together".into());
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err("a client certificate needs TLS: set ca_file".into());
        }
        Ok(())
    }

    /// The TLS client configuration: `ca_file` as the only trust anchor, our certificate when
    /// configured, `server_name` the name the peer's certificate must carry. None without
    /// `ca_file` (plain TCP). Also what an agent's WebSocket MTP uses, with its own name.
    pub fn tls(
        &self,
        server_name: String,
    ) -> Result<Option<(Arc<rustls::ClientConfig>, String)>, String> {
        let Some(ca) = &self.ca_file else {
            return Ok(None);
        };
        let cert = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let config = crate::tls::client_config(ca, cert).map_err(|e| e.to_string())?;
        Ok(Some((config, server_name)))
    }

    /// The MQTT client configuration: the broker at [`Self::port`], TLS as [`Self::tls`] says,
    /// `client_id`, our endpoint ID in the CONNECT properties, subscribed to `topic`. The
    /// caller adds what is its own (keep-alive, queue sizes, session expiry, back-off).
    pub fn mqtt_config(&self, client_id: String, topic: String) -> Result<MqttConfig, String> {
        let mut m = MqttConfig::new(&self.broker_host, self.port(), client_id)
            .with_usp_endpoint_id(&self.endpoint_id);
        m.tls = self.tls(self.server_name())?;
        m.subscriptions = vec![topic];
        Ok(m)
    }
}

/// Flattened last into a settings file's struct, it receives the fields no struct declared and
/// refuses the file when there is one (`unknown field `name``), as `deny_unknown_fields`
/// would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnknownFields;

impl<'de> Deserialize<'de> for UnknownFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rest = BTreeMap::<String, IgnoredAny>::deserialize(d)?;
        match rest.keys().next() {
            Some(name) => Err(D::Error::custom(format!("unknown field `{name}`"))),
            None => Ok(UnknownFields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(flatten)]
        mqtt: MqttSettings,
        #[serde(default)]
        own: Option<u32>,
        #[serde(flatten)]
        _unknown: UnknownFields,
    }

    fn parse(json: &str) -> Result<Outer, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn flat_fields_parse_and_unknown_ones_are_refused() {
        let o = parse(
            r#"{"broker_host":"h","broker_port":1884,"ca_file":"/ca","own":7,
                "endpoint_id":"os::a","topic":"t","server_name":"n"}"#,
        )
        .unwrap();
        assert_eq!(o.own, Some(7));
        assert_eq!(o.mqtt.broker_host, "h");
        assert_eq!(o.mqtt.port(), 1884);
        assert_eq!(o.mqtt.server_name(), "n");
        assert_eq!(o.mqtt.topic_or("usp/agent"), "t");
        assert!(parse(r#"{"broker_host":"h","bogus":1}"#)
            .unwrap_err()
            .contains("unknown field `bogus`"));
        assert!(parse(r#"{"broker_port":"x"}"#).is_err());
    }

    #[test]
    fn defaults() {
        let mut s = MqttSettings {
            broker_host: "h".into(),
            endpoint_id: "self::c".into(),
            ..MqttSettings::default()
        };
        assert_eq!(s.port(), PLAIN_PORT);
        assert_eq!(s.server_name(), "h");
        assert_eq!(s.topic_or("usp/controller"), "usp/controller/self::c");
        s.ca_file = Some("/ca".into());
        assert_eq!(s.port(), TLS_PORT);
        let m = MqttSettings {
            ca_file: None,
            ..s.clone()
        }
        .mqtt_config("cid".into(), "t".into())
        .unwrap();
        assert_eq!((m.port, m.client_id.as_str()), (PLAIN_PORT, "cid"));
        assert!(m.tls.is_none());
        assert_eq!(m.subscriptions, vec!["t".to_string()]);
        // A CA that cannot be read fails the conversion, not the connection.
        assert!(s.mqtt_config("cid".into(), "t".into()).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let ok = MqttSettings {
            broker_host: "h".into(),
            ..MqttSettings::default()
        };
        assert!(ok.validate(true).is_ok());
        let bad = |s: MqttSettings, required: bool| s.validate(required).unwrap_err();
        assert!(bad(MqttSettings::default(), true).contains("broker_host"));
        assert!(MqttSettings::default().validate(false).is_ok());
        let port0 = MqttSettings {
            broker_port: Some(0),
            ..ok.clone()
        };
        assert!(bad(port0, true).contains("broker_port"));
        let cert = MqttSettings {
            cert_file: Some("/c".into()),
            ..ok.clone()
        };
        assert!(bad(cert.clone(), true).contains("go together"));
        let no_ca = MqttSettings {
            key_file: Some("/k".into()),
            ..cert
        };
        assert!(bad(no_ca, true).contains("needs TLS"));
    }
}
