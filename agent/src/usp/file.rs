//! The agent's `--usp FILE`: which MTP (an MQTT broker, or a WebSocket to the controller), who
//! we are, who may manage us, and the rules every name in it must meet (MQTT topics, controller
//! identities). Parsing and validation only: the sessions in `mqtt` and `websocket` take a
//! validated [`UspFile`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpevisor_usp::mqtt::backoff::Backoff;
use cpevisor_usp::mqtt::{
    valid_topic, valid_topic_level, MqttConfig, MqttSettings, SettingsReader,
};
use cpevisor_usp::record::Limits;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::config::{ControllerConfig, DeviceInfoConfig, Role, UspConfig};
use super::dm::RebootHook;
use super::topic_auth::check_bare_topic_roles;
use crate::objects::{fill, required};

/// MQTT packet overhead allowed above the largest Record (fixed header, topic, properties).
const PACKET_OVERHEAD: u32 = 4096;

/// The agent's `--usp FILE`: where the broker is, who we are, who may manage us. The MQTT
/// settings are the usp crate's [`MqttSettings`], their fields flat beside ours; unknown
/// fields are refused. Read by hand (below), not with serde's `flatten`, which buffers the
/// file (docs/flash.md, section 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UspFile {
    /// The broker (`broker_host` not needed when `websocket` is given; port 8883 with
    /// `ca_file`, else 1883), our certificate, our endpoint ID (also the MQTT client id) and
    /// our topic (default `usp/agent/<endpoint_id>`). Without `ca_file`: plain TCP (only for a
    /// broker on loopback or a private link; the daemon logs a warning).
    pub mqtt: MqttSettings,
    /// The controllers that may manage this agent; a message from anyone else is refused.
    pub controllers: Vec<ControllerEntry>,
    /// What `Device.DeviceInfo.` reports (manufacturer, model, serial number).
    pub device_info: DeviceInfoConfig,
    /// MQTT keep-alive interval, seconds (default 60).
    pub keep_alive_s: u16,
    /// Largest Record accepted or sent (default 64 KiB).
    pub max_record_bytes: Option<usize>,
    /// What `Device.Reboot()` runs (argv); absent: the command is refused.
    pub reboot_command: Option<Vec<String>>,
    /// Present: the MTP is a WebSocket to the controller (the agent connects), not MQTT;
    /// `ca_file`, `cert_file`, `key_file` then apply to it.
    pub websocket: Option<WsTarget>,
}

/// The file's own fields by name, each read once straight from serde_json; every other name is
/// the settings' ([`SettingsReader`]) or refused.
impl<'de> Deserialize<'de> for UspFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = UspFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the usp config object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UspFile, A::Error> {
                let mut mqtt = SettingsReader::default();
                let mut controllers = None;
                let mut device_info = None;
                let mut keep_alive_s = None;
                let mut max_record_bytes: Option<Option<usize>> = None;
                let mut reboot_command: Option<Option<Vec<String>>> = None;
                let mut websocket: Option<Option<WsTarget>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "controllers" => fill(&mut map, &mut controllers, "controllers")?,
                        "device_info" => fill(&mut map, &mut device_info, "device_info")?,
                        "keep_alive_s" => fill(&mut map, &mut keep_alive_s, "keep_alive_s")?,
                        "max_record_bytes" => {
                            fill(&mut map, &mut max_record_bytes, "max_record_bytes")?
                        }
                        "reboot_command" => fill(&mut map, &mut reboot_command, "reboot_command")?,
                        "websocket" => fill(&mut map, &mut websocket, "websocket")?,
                        other => {
                            if !mqtt.field(other, &mut map)? {
                                return Err(A::Error::custom(format_args!(
                                    "unknown field `{other}`"
                                )));
                            }
                        }
                    }
                }
                Ok(UspFile {
                    mqtt: mqtt.finish(),
                    controllers: required(controllers, "controllers")?,
                    device_info: device_info.unwrap_or_default(),
                    keep_alive_s: keep_alive_s.unwrap_or_else(default_keep_alive),
                    max_record_bytes: max_record_bytes.flatten(),
                    reboot_command: reboot_command.flatten(),
                    websocket: websocket.flatten(),
                })
            }
        }
        d.deserialize_map(FileVisitor)
    }
}

/// One controller allowed to manage this agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerEntry {
    /// The controller's USP endpoint ID.
    pub endpoint_id: String,
    /// Where notifications go (default `usp/controller/<endpoint_id>`); replies go to the
    /// Response Topic of each request.
    #[serde(default)]
    pub topic: Option<String>,
    /// What it may do (`AssignedRole`).
    pub role: Role,
    /// The identity the broker authenticated this controller as (its client certificate's CN,
    /// mosquitto `use_identity_as_username`). When set, its Records count only when they arrive
    /// on `<our topic>/<identity>`, a topic the broker's ACL lets no one else write
    /// (`broker::usp_acl`, `IdentitySubTopic`). Unset (standard TR-369 controllers): its
    /// Records count only on our bare topic, which the ACL lets only the listed controllers
    /// write (`AgentTopic`); all controllers without `identity` must then have one role
    /// (`topic_auth`).
    #[serde(default)]
    pub identity: Option<String>,
}

fn default_keep_alive() -> u16 {
    60
}

/// Largest `--usp` file read.
const MAX_FILE: u64 = 64 * 1024;
/// Largest accepted max_record_bytes: the agent's memory budget is a few MiB.
const MAX_RECORD_CEILING: usize = 1 << 20;

impl UspFile {
    /// Reads and validates the file; the error names the file and the field.
    pub fn load(path: &Path) -> Result<UspFile, String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_FILE {
            return Err(format!(
                "usp config {}: larger than {MAX_FILE} bytes",
                path.display()
            ));
        }
        let f: UspFile = serde_json::from_slice(text.as_bytes())
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        f.validate()
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        Ok(f)
    }

    /// Checks every name and bound: topics, endpoint IDs, controller identities, the MTP choice.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ws) = &self.websocket {
            ws.validate()?;
        }
        self.mqtt.validate(self.websocket.is_none())?;
        if !valid_topic(&self.topic()) {
            return Err(format!(
                "topic {:?}: not a valid MQTT topic name",
                self.topic()
            ));
        }
        for c in &self.controllers {
            let t = controller_topic(c);
            if !valid_topic(&t) {
                return Err(format!(
                    "controller {}: topic {t:?} is not a valid MQTT topic name",
                    c.endpoint_id
                ));
            }
            if let Some(id) = &c.identity {
                if !valid_topic_level(id) {
                    return Err(format!(
                        "controller {}: identity {id:?} must be one MQTT topic level \
                         (1-256 bytes, no '/', '+', '#' or U+0000)",
                        c.endpoint_id
                    ));
                }
            }
        }
        if let Some(n) = self.max_record_bytes {
            if !(1024..=MAX_RECORD_CEILING).contains(&n) {
                return Err(format!(
                    "max_record_bytes {n}: must be 1024..={MAX_RECORD_CEILING}"
                ));
            }
        }
        if let Some(cmd) = &self.reboot_command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err("reboot_command: give the program and its arguments".into());
            }
        }
        let usp = self.usp_config();
        usp.validate().map_err(|e| e.to_string())?;
        if self.websocket.is_none() {
            check_bare_topic_roles(&self.topic(), &usp.controllers)?;
        }
        Ok(())
    }

    /// The topic we subscribe to: `topic`, or `usp/agent/<endpoint_id>`.
    pub fn topic(&self) -> String {
        self.mqtt.topic_or("usp/agent")
    }

    /// The data model's view: endpoint ID, controllers with roles and topics, DeviceInfo.
    /// MQTT gives the agent no controller certificate (the broker is its TLS peer): a
    /// controller's identity is the topic suffix the broker's ACL binds to its certificate.
    pub fn usp_config(&self) -> UspConfig {
        UspConfig {
            endpoint_id: self.mqtt.endpoint_id.clone(),
            controllers: self
                .controllers
                .iter()
                .map(|c| ControllerConfig {
                    endpoint_id: c.endpoint_id.clone(),
                    role: c.role,
                    identity: c.identity.clone(),
                    reply_to: Some(controller_topic(c)),
                })
                .collect(),
            device_info: self.device_info.clone(),
        }
    }

    /// Record bounds: `max_record_bytes` or the default, and the default for the rest.
    pub fn limits(&self) -> Limits {
        Limits {
            max_record_bytes: self
                .max_record_bytes
                .unwrap_or(Limits::default().max_record_bytes),
            ..Limits::default()
        }
    }

    /// The MQTT client configuration: TLS with our certificate when configured, client id =
    /// endpoint ID, packets bounded by the largest Record.
    pub fn mqtt_config(&self) -> Result<MqttConfig, String> {
        let mut m = self
            .mqtt
            .mqtt_config(self.mqtt.endpoint_id.clone(), self.topic())?;
        m.keep_alive = Duration::from_secs(u64::from(self.keep_alive_s));
        m.max_packet_size = self.limits().max_record_bytes as u32 + PACKET_OVERHEAD;
        Ok(m)
    }

    /// `Device.Reboot()`: runs `reboot_command`, or refuses.
    pub fn reboot_hook(&self) -> RebootHook {
        let cmd = self.reboot_command.clone();
        Arc::new(move || match &cmd {
            Some(argv) => std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .map_err(|e| format!("{}: {e}", argv[0]))
                .and_then(|st| {
                    if st.success() {
                        Ok(())
                    } else {
                        Err(format!("{} exited with {st}", argv[0]))
                    }
                }),
            None => Err("this agent has no reboot_command configured".into()),
        })
    }
}

fn controller_topic(c: &ControllerEntry) -> String {
    c.topic
        .clone()
        .unwrap_or_else(|| format!("usp/controller/{}", c.endpoint_id))
}

/// The `websocket` object of the `--usp` file: where the controller's WebSocket server is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsTarget {
    /// Host name or address of the controller's WebSocket server.
    pub host: String,
    /// Its port (default 443).
    #[serde(default = "default_ws_port")]
    pub port: u16,
    /// The HTTP path of the WebSocket upgrade (default `/usp`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The name the controller's certificate must carry (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Reconnect back-off (TR-369 SessionRetryMinimumWaitInterval, doubling per attempt up
    /// to the maximum), in milliseconds: defaults 1000 and 60000.
    #[serde(default)]
    pub retry_min_ms: Option<u64>,
    /// See `retry_min_ms`.
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
}

fn default_ws_port() -> u16 {
    443
}

fn default_path() -> String {
    "/usp".into()
}

impl WsTarget {
    /// Checks the host, path and back-off bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() || self.host.len() > 253 {
            return Err("websocket.host must be 1..253 bytes".into());
        }
        if self.port == 0 {
            return Err("websocket.port must not be 0".into());
        }
        if !self.path.starts_with('/')
            || self.path.len() > 1024
            || self.path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(format!(
                "websocket.path {:?}: must start with '/', without spaces or control characters",
                self.path
            ));
        }
        self.backoff()
            .check()
            .map_err(|e| format!("websocket retry: {e}"))
    }

    /// The reconnect back-off: the configured bounds or the defaults.
    pub fn backoff(&self) -> Backoff {
        let d = Backoff::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        Backoff {
            min: ms(self.retry_min_ms, d.min),
            max: ms(self.retry_max_ms, d.max),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> Result<UspFile, String> {
        let f: UspFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    #[test]
    fn defaults_and_topics() {
        let f = file(
            r#"{"broker_host":"10.0.2.2","endpoint_id":"os::cpe-1",
                "controllers":[{"endpoint_id":"self::ctl","role":"FullAccess"},
                               {"endpoint_id":"self::ro","topic":"ops/ro","role":"ReadOnly",
                                "identity":"ro"}]}"#,
        )
        .unwrap();
        // Without ca_file the default port is plain MQTT's; with it, MQTT over TLS.
        assert_eq!(f.mqtt.port(), 1883);
        assert_eq!(f.topic(), "usp/agent/os::cpe-1");
        let cfg = f.usp_config();
        assert_eq!(
            cfg.controllers[0].reply_to.as_deref(),
            Some("usp/controller/self::ctl")
        );
        assert_eq!(cfg.controllers[1].reply_to.as_deref(), Some("ops/ro"));
        assert_eq!(cfg.controllers[0].identity, None);
        assert_eq!(cfg.controllers[1].identity.as_deref(), Some("ro"));
        let m = f.mqtt_config().unwrap();
        assert!(m.tls.is_none());
        assert_eq!(m.client_id, "os::cpe-1");
        assert_eq!(m.subscriptions, vec!["usp/agent/os::cpe-1".to_string()]);
        assert_eq!(m.max_packet_size, 64 * 1024 + PACKET_OVERHEAD);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let base = r#""broker_host":"h","endpoint_id":"os::a","controllers":[]"#;
        let err = |extra: &str| file(&format!("{{{base}{extra}}}")).unwrap_err();
        assert!(err(r#","topic":"usp/+/x""#).contains("not a valid MQTT topic"));
        assert!(err(r#","cert_file":"/c""#).contains("go together"));
        assert!(err(r#","cert_file":"/c","key_file":"/k""#).contains("needs TLS"));
        assert!(err(r#","max_record_bytes":10"#).contains("max_record_bytes"));
        assert!(err(r#","broker_port":0"#).contains("broker_port"));
        assert!(err(r#","reboot_command":[]"#).contains("reboot_command"));
        assert!(err(r#","bogus":1"#).contains("unknown field"));
        let dup = file(
            r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[
                {"endpoint_id":"c","role":"FullAccess"},{"endpoint_id":"c","role":"ReadOnly"}]}"#,
        )
        .unwrap_err();
        assert!(dup.contains("listed twice"), "{dup}");
        // A read-only controller beside a full-access one on the bare topic could act as it.
        let mixed = r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[
                {"endpoint_id":"acs","role":"FullAccess"},{"endpoint_id":"ro","role":"ReadOnly"}
                IDENT]}"#;
        let err = file(&mixed.replace("IDENT", "")).unwrap_err();
        assert!(err.contains("ro could act as acs"), "{err}");
        let ro_sub = mixed.replace(r#""ReadOnly"}"#, r#""ReadOnly","identity":"ro-cn"}"#);
        assert!(file(&ro_sub.replace("IDENT", "")).is_ok());
    }

    fn raw(json: &str) -> Result<UspFile, String> {
        serde_json::from_slice(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_is_read_in_any_order() {
        let f = raw(r#"{"websocket":{"host":"ctl","port":8443},"topic":"usp/a",
            "max_record_bytes":4096,"reboot_command":["/sbin/reboot","-f"],"keep_alive_s":30,
            "device_info":{"serial_number":"S1"},"endpoint_id":"os::a","broker_host":"h",
            "broker_port":1884,"ca_file":"/ca","cert_file":"/c","key_file":"/k",
            "server_name":"n","controllers":[{"endpoint_id":"c","role":"ReadOnly"}]}"#)
        .unwrap();
        let expected = UspFile {
            mqtt: MqttSettings {
                broker_host: "h".into(),
                broker_port: Some(1884),
                ca_file: Some("/ca".into()),
                cert_file: Some("/c".into()),
                key_file: Some("/k".into()),
                server_name: Some("n".into()),
                endpoint_id: "os::a".into(),
                topic: Some("usp/a".into()),
            },
            controllers: vec![ControllerEntry {
                endpoint_id: "c".into(),
                topic: None,
                role: Role::ReadOnly,
                identity: None,
            }],
            device_info: DeviceInfoConfig {
                serial_number: "S1".into(),
                ..DeviceInfoConfig::default()
            },
            keep_alive_s: 30,
            max_record_bytes: Some(4096),
            reboot_command: Some(vec!["/sbin/reboot".into(), "-f".into()]),
            websocket: Some(WsTarget {
                host: "ctl".into(),
                port: 8443,
                path: "/usp".into(),
                server_name: None,
                retry_min_ms: None,
                retry_max_ms: None,
            }),
        };
        assert_eq!(f, expected);
        // The defaults, and null where the field is optional.
        let f = raw(
            r#"{"controllers":[],"max_record_bytes":null,"websocket":null,
            "reboot_command":null,"topic":null}"#,
        )
        .unwrap();
        assert_eq!(
            (
                f.keep_alive_s,
                f.max_record_bytes,
                f.reboot_command,
                f.websocket
            ),
            (60, None, None, None)
        );
        assert_eq!(f.mqtt, MqttSettings::default());
        assert_eq!(f.device_info, DeviceInfoConfig::default());
    }

    #[test]
    fn bad_fields_are_named() {
        let e = |j: &str| raw(j).unwrap_err();
        assert!(e(r#"{"broker_host":"h"}"#).contains("missing field `controllers`"));
        assert!(e(r#"{"controllers":[],"bogus":1}"#).contains("unknown field `bogus`"));
        let dup = e(r#"{"controllers":[],"keep_alive_s":1,"keep_alive_s":2}"#);
        assert!(dup.contains("duplicate field `keep_alive_s`"), "{dup}");
        let dup = e(r#"{"controllers":[],"endpoint_id":"a","endpoint_id":"b"}"#);
        assert!(dup.contains("duplicate field `endpoint_id`"), "{dup}");
        assert!(e(r#"{"controllers":[],"keep_alive_s":null}"#).contains("invalid type"));
        assert!(e(r#"{"controllers":[],"broker_port":"x"}"#).contains("invalid type"));
        let nested = e(r#"{"controllers":[{"endpoint_id":"c","role":"ReadOnly","x":1}]}"#);
        assert!(nested.contains("unknown field `x`"), "{nested}");
        assert!(e(r#"[]"#).contains("invalid type"));
    }

    #[test]
    fn reboot_refused_without_a_command() {
        let f = file(r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[]}"#).unwrap();
        assert!((f.reboot_hook())()
            .unwrap_err()
            .contains("no reboot_command"));
        let f = file(
            r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[],
                "reboot_command":["/bin/false"]}"#,
        )
        .unwrap();
        assert!((f.reboot_hook())().unwrap_err().contains("exited"));
    }

    #[test]
    fn targets_are_checked() {
        let t: WsTarget = serde_json::from_str(r#"{"host":"10.0.2.2"}"#).unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/usp"));
        assert!(t.validate().is_ok());
        let bad = |j: &str| {
            serde_json::from_str::<WsTarget>(j)
                .map_err(|e| e.to_string())
                .and_then(|t| t.validate())
                .unwrap_err()
        };
        assert!(bad(r#"{"host":""}"#).contains("host"));
        assert!(bad(r#"{"host":"h","port":0}"#).contains("port"));
        assert!(bad(r#"{"host":"h","path":"usp"}"#).contains("path"));
        assert!(bad(r#"{"host":"h","path":"/a b"}"#).contains("path"));
        assert!(bad(r#"{"host":"h","bogus":1}"#).contains("unknown field"));
        assert!(bad(r#"{"host":"h","retry_min_ms":0}"#).contains("retry"));
        assert!(bad(r#"{"host":"h","retry_min_ms":5000,"retry_max_ms":10}"#).contains("retry"));
        let t: WsTarget =
            serde_json::from_str(r#"{"host":"h","retry_min_ms":200,"retry_max_ms":500}"#).unwrap();
        let b = t.backoff();
        assert_eq!(
            (b.min, b.max),
            (Duration::from_millis(200), Duration::from_millis(500))
        );
    }
}
