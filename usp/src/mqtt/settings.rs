//! The MQTT connection settings both ends of USP read from their JSON files, declared once: the
//! agent's `--usp` file and the controller's `--config` file both name the broker, the TLS
//! material, who we are and our topic, with the same rules (port 8883 with TLS, else 1883; a
//! client certificate goes with its key and needs TLS) and the same conversion into an
//! [`MqttConfig`].
//!
//! The settings' fields sit flat in each file's object, beside the file's own. Read in one
//! place, [`SettingsReader::field`], two ways:
//! - a file read by hand (the agent's, on the device) hands each key it does not own to a
//!   [`SettingsReader`], straight from serde_json;
//! - a derived file struct embeds [`MqttSettings`] with `#[serde(flatten)]` (the controller's,
//!   on the host). serde's `deny_unknown_fields` does not combine with `flatten`; instead an
//!   [`UnknownFields`] field, flattened after the settings, receives whatever no struct declared
//!   and refuses it while the file is parsed (serde's flatten takes each declared field out of
//!   the buffer before the next flattened field sees it). `flatten` buffers the whole object in
//!   serde's `Content` and reads every field a second time from it: code the device does not
//!   carry.
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

use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::client::MqttConfig;

/// The MQTT-over-TLS port, the default when `ca_file` is set.
pub const TLS_PORT: u16 = 8883;
/// The plain MQTT port, the default without TLS.
pub const PLAIN_PORT: u16 = 1883;
/// Longest broker host name (a DNS name).
const MAX_HOST_LEN: usize = 253;

/// Where the broker is, how we authenticate, who we are and where we listen. Every field may be
/// left out (the defaults below); [`MqttSettings::validate`] says which are needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttSettings {
    /// MQTT broker host name or address.
    pub broker_host: String,
    /// Broker port; default 8883 when `ca_file` is set (TLS), else 1883 ([`Self::port`]).
    pub broker_port: Option<u16>,
    /// The CA that signed the broker's certificate, our only trust anchor. Absent: plain TCP
    /// (only for a broker on loopback or a private link).
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain (PEM), presented to the broker; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Our client key (PEM), with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry; default: `broker_host`.
    pub server_name: Option<String>,
    /// Our USP endpoint ID.
    pub endpoint_id: String,
    /// The topic we subscribe to; each side has its own default ([`Self::topic_or`]).
    pub topic: Option<String>,
}

impl MqttSettings {
    /// The settings' field names in a file, as [`SettingsReader::field`] reads them.
    pub const FIELDS: &'static [&'static str] = &[
        "broker_host",
        "broker_port",
        "ca_file",
        "cert_file",
        "key_file",
        "server_name",
        "endpoint_id",
        "topic",
    ];

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

/// The settings of a file, read from its object one field at a time: the file's reader hands it
/// each key that is not its own.
#[derive(Debug, Default)]
pub struct SettingsReader {
    settings: MqttSettings,
    /// Bit i: `MqttSettings::FIELDS[i]` was read.
    seen: u16,
}

impl SettingsReader {
    /// Reads the value of field `name` when it is one of the settings' (true), refusing one
    /// given twice; false, with the value left unread, for any other name.
    pub fn field<'de, A: MapAccess<'de>>(
        &mut self,
        name: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        let Some(i) = MqttSettings::FIELDS.iter().position(|f| *f == name) else {
            return Ok(false);
        };
        if self.seen & (1 << i) != 0 {
            return Err(A::Error::duplicate_field(MqttSettings::FIELDS[i]));
        }
        self.seen |= 1 << i;
        let s = &mut self.settings;
        match name {
            "broker_host" => s.broker_host = map.next_value()?,
            "broker_port" => s.broker_port = map.next_value()?,
            "ca_file" => s.ca_file = map.next_value()?,
            "cert_file" => s.cert_file = map.next_value()?,
            "key_file" => s.key_file = map.next_value()?,
            "server_name" => s.server_name = map.next_value()?,
            "endpoint_id" => s.endpoint_id = map.next_value()?,
            "topic" => s.topic = map.next_value()?,
            _ => return Err(A::Error::custom(format_args!("no reader for `{name}`"))),
        }
        Ok(true)
    }

    /// The settings read; defaults for the fields not given.
    pub fn finish(self) -> MqttSettings {
        self.settings
    }
}

/// The settings alone or flattened into a derived file struct: the fields in
/// [`MqttSettings::FIELDS`] (a flattened struct is offered only those), others skipped.
impl<'de> Deserialize<'de> for MqttSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SettingsVisitor;
        impl<'de> Visitor<'de> for SettingsVisitor {
            type Value = MqttSettings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("MQTT settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MqttSettings, A::Error> {
                let mut r = SettingsReader::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !r.field(&key, &mut map)? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(r.finish())
            }
        }
        d.deserialize_struct("MqttSettings", MqttSettings::FIELDS, SettingsVisitor)
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

    const ALL: &str = r#"{"broker_host":"h","broker_port":1884,"ca_file":"/ca","cert_file":"/c",
        "key_file":"/k","server_name":"n","endpoint_id":"os::a","topic":"t"}"#;

    fn all() -> MqttSettings {
        MqttSettings {
            broker_host: "h".into(),
            broker_port: Some(1884),
            ca_file: Some("/ca".into()),
            cert_file: Some("/c".into()),
            key_file: Some("/k".into()),
            server_name: Some("n".into()),
            endpoint_id: "os::a".into(),
            topic: Some("t".into()),
        }
    }

    /// A file read by hand, as the agent reads its `--usp` file: `own` is its field, the rest
    /// goes to a SettingsReader, anything else is refused.
    fn by_hand(json: &str) -> Result<(MqttSettings, Option<u32>), String> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = (MqttSettings, Option<u32>);
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut r, mut own) = (SettingsReader::default(), None);
                while let Some(key) = map.next_key::<String>()? {
                    if key == "own" {
                        own = Some(map.next_value()?);
                    } else if !r.field(&key, &mut map)? {
                        return Err(A::Error::custom(format_args!("unknown field `{key}`")));
                    }
                }
                Ok((r.finish(), own))
            }
        }
        let mut de = serde_json::Deserializer::from_slice(json.as_bytes());
        de.deserialize_map(FileVisitor).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_reads_alone_flattened_and_by_hand() {
        let names: std::collections::BTreeSet<String> =
            serde_json::from_str::<BTreeMap<String, IgnoredAny>>(ALL)
                .unwrap()
                .into_keys()
                .collect();
        let fields = MqttSettings::FIELDS.iter().map(|f| f.to_string()).collect();
        assert_eq!(names, fields, "ALL has every field");
        assert_eq!(serde_json::from_str::<MqttSettings>(ALL).unwrap(), all());
        let file = ALL.replace('}', r#","own":7}"#);
        let o = parse(&file).unwrap();
        assert_eq!((o.mqtt, o.own), (all(), Some(7)));
        assert_eq!(by_hand(&file).unwrap(), (all(), Some(7)));
        assert_eq!(
            by_hand("{}").unwrap(),
            (MqttSettings::default(), None),
            "every field may be left out"
        );
        // Alone, other fields are skipped (the flattened form leaves them to UnknownFields).
        let alone: MqttSettings = serde_json::from_str(r#"{"topic":"t","other":[1]}"#).unwrap();
        assert_eq!(alone.topic.as_deref(), Some("t"));
    }

    #[test]
    fn by_hand_refuses_what_the_derived_reader_refused() {
        let e = |j: &str| by_hand(j).unwrap_err();
        assert!(e(r#"{"topic":"a","topic":"b"}"#).contains("duplicate field `topic`"));
        assert!(e(r#"{"broker_port":"x"}"#).contains("invalid type"));
        assert!(e(r#"{"broker_port":70000}"#).contains("invalid value"));
        assert!(e(r#"{"broker_host":null}"#).contains("invalid type"));
        assert!(e(r#"{"bogus":1}"#).contains("unknown field `bogus`"));
        // Optional fields may be null.
        let (s, _) = by_hand(r#"{"ca_file":null,"topic":null}"#).unwrap();
        assert_eq!(s, MqttSettings::default());
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
