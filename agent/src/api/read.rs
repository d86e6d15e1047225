//! Reading the protocol's lines: [`Request`] (tagged by `op`) and [`ReplyLine`] (a progress or a
//! final line), straight from serde_json. Derived, they would be serde's internally tagged and
//! untagged enums, which buffer the line in serde's `Content` and read every field a second time
//! from it (27 KiB of mipsel code for `Request` alone; docs/flash.md, section 10). The JSON is
//! unchanged; serializing stays derived (it does not buffer).

use std::fmt;

use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Progress, ReplyLine, Request};
use crate::fault::Fault;
use crate::objects::{fill, left_over, required, required_value};

/// Every op, as `op` names it.
const OPS: &[&str] = &[
    "install",
    "update",
    "uninstall",
    "list",
    "status",
    "start",
    "stop",
    "restart",
    "logs",
    "events",
    "reset",
    "set_env_enable",
];

/// Every field of every op: `op` and the fields of [`Given`].
const FIELDS: &[&str] = &[
    "op",
    "url",
    "digest",
    "env",
    "network",
    "uuid",
    "keep_data",
    "id",
    "eu",
    "after",
    "enable",
];

/// The fields a request line gave, before its op says which belong. A field that is a plain
/// value in one op and may be `null` in another (`url`, `env`) keeps the `null`, so that the op
/// that requires it can refuse it.
#[derive(Default)]
struct Given {
    url: Option<Option<String>>,
    digest: Option<Option<String>>,
    env: Option<Option<String>>,
    network: Option<Option<String>>,
    uuid: Option<String>,
    keep_data: Option<bool>,
    id: Option<String>,
    eu: Option<String>,
    after: Option<u64>,
    enable: Option<bool>,
}

impl Given {
    /// The request `op` names, taking its fields; a field left over belongs to another op.
    fn into_request<E: Error>(mut self, op: &str) -> Result<Request, E> {
        let request = match op {
            "install" => Request::Install {
                url: required_value(self.url.take(), "url")?,
                digest: self.digest.take().flatten(),
                env: self.env.take().flatten(),
                network: self.network.take().flatten(),
            },
            "update" => Request::Update {
                uuid: required(self.uuid.take(), "uuid")?,
                url: self.url.take().flatten(),
                network: self.network.take().flatten(),
            },
            "uninstall" => Request::Uninstall {
                uuid: required(self.uuid.take(), "uuid")?,
                keep_data: self.keep_data.take().unwrap_or(false),
            },
            "list" => Request::List {},
            "status" => Request::Status {
                id: required(self.id.take(), "id")?,
            },
            "start" | "stop" | "restart" | "logs" => {
                let eu = required(self.eu.take(), "eu")?;
                match op {
                    "start" => Request::Start { eu },
                    "stop" => Request::Stop { eu },
                    "restart" => Request::Restart { eu },
                    _ => Request::Logs { eu },
                }
            }
            "events" => Request::Events {
                after: self.after.take().unwrap_or(0),
            },
            "reset" => Request::Reset {
                env: required_value(self.env.take(), "env")?,
            },
            "set_env_enable" => Request::SetEnvEnable {
                env: required_value(self.env.take(), "env")?,
                enable: required(self.enable.take(), "enable")?,
            },
            other => return Err(E::unknown_variant(other, OPS)),
        };
        match self.left_over() {
            Some(name) => Err(E::custom(format_args!(
                "field `{name}` does not belong to op `{op}`"
            ))),
            None => Ok(request),
        }
    }

    fn left_over(&self) -> Option<&'static str> {
        left_over(&[
            ("url", self.url.is_some()),
            ("digest", self.digest.is_some()),
            ("env", self.env.is_some()),
            ("network", self.network.is_some()),
            ("uuid", self.uuid.is_some()),
            ("keep_data", self.keep_data.is_some()),
            ("id", self.id.is_some()),
            ("eu", self.eu.is_some()),
            ("after", self.after.is_some()),
            ("enable", self.enable.is_some()),
        ])
    }
}

/// One request line: an object with `op` anywhere in it, the fields of that op and no others.
impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = Request;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a request object with `op`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
                let mut op: Option<String> = None;
                let mut g = Given::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "op" => fill(&mut map, &mut op, "op")?,
                        "url" => fill(&mut map, &mut g.url, "url")?,
                        "digest" => fill(&mut map, &mut g.digest, "digest")?,
                        "env" => fill(&mut map, &mut g.env, "env")?,
                        "network" => fill(&mut map, &mut g.network, "network")?,
                        "uuid" => fill(&mut map, &mut g.uuid, "uuid")?,
                        "keep_data" => fill(&mut map, &mut g.keep_data, "keep_data")?,
                        "id" => fill(&mut map, &mut g.id, "id")?,
                        "eu" => fill(&mut map, &mut g.eu, "eu")?,
                        "after" => fill(&mut map, &mut g.after, "after")?,
                        "enable" => fill(&mut map, &mut g.enable, "enable")?,
                        other => return Err(A::Error::unknown_field(other, FIELDS)),
                    }
                }
                g.into_request(&required::<_, A::Error>(op, "op")?)
            }
        }
        d.deserialize_map(RequestVisitor)
    }
}

/// One line from the daemon: `progress` makes it a progress line (as the untagged enum read it
/// first), else it is the final line and needs `ok`. Fields neither has are skipped, so a newer
/// daemon may add some.
impl<'de> Deserialize<'de> for ReplyLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl<'de> Visitor<'de> for LineVisitor {
            type Value = ReplyLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a reply object with `progress` or `ok`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReplyLine, A::Error> {
                let mut progress: Option<Progress> = None;
                let mut ok: Option<bool> = None;
                let mut result: Option<Option<Value>> = None;
                let mut fault: Option<Option<Fault>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "progress" => fill(&mut map, &mut progress, "progress")?,
                        "ok" => fill(&mut map, &mut ok, "ok")?,
                        "result" => fill(&mut map, &mut result, "result")?,
                        "fault" => fill(&mut map, &mut fault, "fault")?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if let Some(progress) = progress {
                    return Ok(ReplyLine::Progress { progress });
                }
                let ok =
                    ok.ok_or_else(|| A::Error::custom("a reply line without `progress` or `ok`"))?;
                Ok(ReplyLine::Done {
                    ok,
                    result: result.flatten(),
                    fault: fault.flatten(),
                })
            }
        }
        d.deserialize_map(LineVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultCode;

    fn parse(json: &str) -> Result<Request, String> {
        serde_json::from_slice(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn every_request() -> Vec<Request> {
        let s = |v: &str| v.to_string();
        vec![
            Request::Install {
                url: s("https://h/p"),
                digest: Some(s("sha256:00")),
                env: Some(s("e")),
                network: Some(s("{}")),
            },
            Request::Install {
                url: s("http://h/p"),
                digest: None,
                env: None,
                network: None,
            },
            Request::Update {
                uuid: s("u"),
                url: Some(s("http://h/q")),
                network: Some(s("null")),
            },
            Request::Update {
                uuid: s("u"),
                url: None,
                network: None,
            },
            Request::Uninstall {
                uuid: s("u"),
                keep_data: true,
            },
            Request::List {},
            Request::Status { id: s("eu-1") },
            Request::Start { eu: s("eu-1") },
            Request::Stop { eu: s("eu-2") },
            Request::Restart { eu: s("eu-3") },
            Request::Logs { eu: s("eu-4") },
            Request::Events { after: 7 },
            Request::Reset { env: s("e") },
            Request::SetEnvEnable {
                env: s("e"),
                enable: false,
            },
        ]
    }

    #[test]
    fn every_request_round_trips_and_every_op_is_known() {
        let mut ops = Vec::new();
        for r in every_request() {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(parse(&line).unwrap(), r, "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            ops.push(v["op"].as_str().unwrap().to_string());
        }
        ops.dedup();
        assert_eq!(ops, OPS);
    }

    #[test]
    fn the_lines_cpevisorctl_sends_parse_in_any_order() {
        assert_eq!(
            parse(r#"{"uuid":"u","keep_data":true,"op":"uninstall"}"#).unwrap(),
            Request::Uninstall {
                uuid: "u".into(),
                keep_data: true
            }
        );
        // Optional fields may be null or absent; defaults apply.
        assert_eq!(
            parse(r#"{"op":"install","url":"http://h/x","digest":null,"env":null}"#).unwrap(),
            parse(r#"{"op":"install","url":"http://h/x"}"#).unwrap()
        );
        assert_eq!(
            parse(r#"{"op":"events"}"#).unwrap(),
            Request::Events { after: 0 }
        );
        assert_eq!(
            parse(r#"{"op":"uninstall","uuid":"u"}"#).unwrap(),
            Request::Uninstall {
                uuid: "u".into(),
                keep_data: false
            }
        );
    }

    #[test]
    fn a_field_of_another_op_is_refused_naming_it() {
        let cases = [
            (r#"{"op":"list","url":"http://h/x"}"#, "url", "list"),
            (
                r#"{"op":"install","url":"http://h/x","uuid":"u"}"#,
                "uuid",
                "install",
            ),
            (
                r#"{"op":"update","uuid":"u","digest":null}"#,
                "digest",
                "update",
            ),
            (
                r#"{"op":"reset","env":"e","enable":true}"#,
                "enable",
                "reset",
            ),
            (r#"{"op":"start","eu":"eu-1","id":"x"}"#, "id", "start"),
            (r#"{"op":"status","id":"x","eu":"eu-1"}"#, "eu", "status"),
            (
                r#"{"op":"events","keep_data":false}"#,
                "keep_data",
                "events",
            ),
            (
                r#"{"op":"uninstall","uuid":"u","after":1}"#,
                "after",
                "uninstall",
            ),
            (r#"{"op":"logs","eu":"e","env":"e"}"#, "env", "logs"),
            (
                r#"{"op":"status","id":"x","network":"{}"}"#,
                "network",
                "status",
            ),
        ];
        for (line, field, op) in cases {
            let e = parse(line).unwrap_err();
            assert!(
                e.contains(&format!("field `{field}` does not belong to op `{op}`")),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn missing_null_and_mistyped_fields_are_named() {
        let e = |line: &str| parse(line).unwrap_err();
        assert!(e(r#"{"op":"install"}"#).contains("missing field `url`"));
        assert!(e(r#"{"op":"update"}"#).contains("missing field `uuid`"));
        assert!(e(r#"{"op":"set_env_enable","env":"e"}"#).contains("missing field `enable`"));
        assert!(e(r#"{"url":"http://h/x"}"#).contains("missing field `op`"));
        // `env` may be null for install, not for reset; `url` likewise for update and install.
        assert!(e(r#"{"op":"reset","env":null}"#).contains("field `env` must not be null"));
        assert!(e(r#"{"op":"install","url":null}"#).contains("field `url` must not be null"));
        assert!(e(r#"{"op":"uninstall","uuid":"u","keep_data":null}"#).contains("invalid type"));
        assert!(e(r#"{"op":"events","after":"1"}"#).contains("invalid type"));
        assert!(e(r#"{"op":"start","eu":"a","eu":"b"}"#).contains("duplicate field `eu`"));
        assert!(e(r#"{"op":"list","op":"list"}"#).contains("duplicate field `op`"));
        assert!(e(r#"["list"]"#).contains("invalid type"));
    }

    #[test]
    fn unknown_ops_and_fields_are_named() {
        let e = parse(r#"{"op":"format_flash"}"#).unwrap_err();
        assert!(e.contains("unknown variant `format_flash`"), "{e}");
        let e = parse(r#"{"op":"list","x":1}"#).unwrap_err();
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = parse(r#"{"op":7}"#).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
    }

    fn line(json: &str) -> Result<ReplyLine, String> {
        serde_json::from_slice(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_reply_line_round_trips() {
        let lines = [
            ReplyLine::Progress {
                progress: Progress {
                    bytes: 1,
                    total: None,
                },
            },
            ReplyLine::ok(serde_json::json!({"uuid": "u", "eus": [1, 2]})),
            ReplyLine::ok(Value::Array(Vec::new())),
            ReplyLine::fault(Fault::new(FaultCode::InvalidArguments, "x")),
            ReplyLine::Done {
                ok: true,
                result: None,
                fault: None,
            },
        ];
        for l in lines {
            let s = serde_json::to_string(&l).unwrap();
            assert_eq!(line(&s).unwrap(), l, "{s}");
        }
    }

    #[test]
    fn reply_lines_read_as_the_untagged_enum_did() {
        // Unknown fields are skipped; progress wins over ok; null result and fault are absent.
        assert_eq!(
            line(r#"{"ok":true,"result":null,"fault":null,"later":{"x":[1]}}"#).unwrap(),
            ReplyLine::Done {
                ok: true,
                result: None,
                fault: None
            }
        );
        assert!(matches!(
            line(r#"{"ok":true,"progress":{"bytes":3,"total":9}}"#).unwrap(),
            ReplyLine::Progress { .. }
        ));
        let e = line(r#"{"result":1}"#).unwrap_err();
        assert!(e.contains("without `progress` or `ok`"), "{e}");
        assert!(line(r#"{"ok":"yes"}"#)
            .unwrap_err()
            .contains("invalid type"));
        assert!(line(r#"{"ok":true,"ok":false}"#)
            .unwrap_err()
            .contains("duplicate field `ok`"));
        assert!(line(r#"{"progress":{"total":9}}"#)
            .unwrap_err()
            .contains("missing field `bytes`"));
    }
}
