//! The local protocol between `cpevisorctl` and `cpevisord`: a Unix stream socket carrying
//! line-delimited JSON. One request line per connection; the daemon answers with zero or more
//! `{"progress":{"bytes":N,"total":M}}` lines (install/update) and one final line,
//! `{"ok":true,"result":...}` or `{"ok":false,"fault":{"code":7xxx,"message":"..."}}`.
//!
//! Bounded: a request line is at most 64 KiB, a client gets 10 s in total for everything the
//! daemon waits on it for (sending the request, reading progress and the reply), at most 16
//! connections are served at once (others get a fault and are closed). Only root and the
//! agent's uid may connect (socket mode 0600, SO_PEERCRED checked).

mod read;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::fault::Fault;

/// Largest request line the daemon reads, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest reply line a client accepts (a full list or a 64 KiB log, JSON-escaped).
pub const MAX_REPLY_BYTES: usize = 4 << 20;

/// One request line from `cpevisorctl`, tagged by `op` (snake_case), unknown fields refused.
/// Read by hand (`read.rs`): the derived reader of an internally tagged enum buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// InstallDU from a package URL.
    Install {
        /// Package URL (`http://` or `https://`).
        url: String,
        /// Expected `sha256:<hex>` of the downloaded package file; checked when given.
        digest: Option<String>,
        /// ExecEnv to install into; default: the first one configured.
        env: Option<String>,
        /// The operator's network section, JSON text in place of the package's (USP's
        /// `X_CPEVISOR_NetworkConfig`); default: the package's.
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Update of an installed DU.
    Update {
        /// UUID of the DU.
        uuid: String,
        /// Package URL; default: the URL the DU was installed from.
        url: Option<String>,
        /// A new network override (JSON text; `null`: back to the package's section);
        /// default: the override in force stays.
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Uninstall of a DU.
    Uninstall {
        /// UUID of the DU.
        uuid: String,
        /// Keep the app's data directory (its data disk) for a later install of the same DU.
        keep_data: bool,
    },
    /// ExecEnvs, DUs and EUs.
    List {},
    /// One DU (by UUID) with its EUs, or one EU (by EUID).
    Status {
        /// A DU's UUID or an EU's EUID.
        id: String,
    },
    /// SetRequestedState(Active) of an EU.
    Start {
        /// EUID of the unit (`eu-3`).
        eu: String,
    },
    /// SetRequestedState(Idle) of an EU.
    Stop {
        /// EUID of the unit.
        eu: String,
    },
    /// Stop, then start an EU.
    Restart {
        /// EUID of the unit.
        eu: String,
    },
    /// The recent output of an EU (its log ring).
    Logs {
        /// EUID of the unit.
        eu: String,
    },
    /// Events with a sequence number above `after`.
    Events {
        /// Sequence number of the last event the client has seen; 0 for all.
        after: u64,
    },
    /// ExecEnv.Reset(): uninstall everything in it.
    Reset {
        /// Name of the ExecEnv.
        env: String,
    },
    /// ExecEnv.Enable.
    SetEnvEnable {
        /// Name of the ExecEnv.
        env: String,
        /// New `Enable` value.
        enable: bool,
    },
}

/// Download progress of an install or update, sent while the package arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// Size the server announced; None when it gave none.
    pub total: Option<u64>,
}

/// One line from the daemon. Read by hand (`read.rs`): the derived reader of an untagged enum
/// buffers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyLine {
    /// A progress line (`{"progress":{...}}`), zero or more before the final line.
    Progress {
        /// How far the download is.
        progress: Progress,
    },
    /// The final line of every request.
    Done {
        /// Whether the request succeeded.
        ok: bool,
        /// The answer when `ok`: a DU, a list, a log, events (per request).
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        /// Why it failed when not `ok`.
        #[serde(skip_serializing_if = "Option::is_none")]
        fault: Option<Fault>,
    },
}

impl ReplyLine {
    /// The final line of a request that succeeded.
    pub fn ok(result: serde_json::Value) -> Self {
        ReplyLine::Done {
            ok: true,
            result: Some(result),
            fault: None,
        }
    }

    /// The final line of a request that failed.
    pub fn fault(f: Fault) -> Self {
        ReplyLine::Done {
            ok: false,
            result: None,
            fault: Some(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultCode;

    #[test]
    fn requests_parse_strictly() {
        let r: Request = serde_json::from_str(r#"{"op":"install","url":"http://h/x"}"#).unwrap();
        assert_eq!(
            r,
            Request::Install {
                url: "http://h/x".into(),
                digest: None,
                env: None,
                network: None,
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"install"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_flash"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"list","x":1}"#).is_err());
    }

    #[test]
    fn reply_lines_round_trip() {
        let p = ReplyLine::Progress {
            progress: Progress {
                bytes: 5,
                total: Some(10),
            },
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(s, r#"{"progress":{"bytes":5,"total":10}}"#);
        assert_eq!(serde_json::from_str::<ReplyLine>(&s).unwrap(), p);
        let f = ReplyLine::fault(Fault::new(FaultCode::InvalidArguments, "bad"));
        let s = serde_json::to_string(&f).unwrap();
        assert_eq!(s, r#"{"ok":false,"fault":{"code":7004,"message":"bad"}}"#);
        assert_eq!(serde_json::from_str::<ReplyLine>(&s).unwrap(), f);
    }
}
