//! The Record layer of the endpoint: who we are, the connect Records each MTP sends first,
//! decoding a received Record, checking its sender (a configured, enabled controller with the
//! transport identity its config names) and encoding the reply.

use std::collections::HashSet;

use cpevisor_usp::errors::*;
use cpevisor_usp::proto::{Msg, Record};
use cpevisor_usp::record::{
    decode_msg, decode_record, encode_record, error_reply, Limits, RecordContent,
};

use crate::usp::dm::{Caller, DataModel};
use crate::usp::retry::{Pending, Retries, RetryPolicy};

/// A Record to send: (destination endpoint ID, encoded Record).
pub type Outgoing = (String, Vec<u8>);

/// USP versions this agent speaks (GetSupportedProtocol, OnBoardRequest).
pub const SUPPORTED_VERSIONS: &str = "1.3,1.4";
/// How many distinct unknown senders are remembered for log-once purposes.
const MAX_REMEMBERED_STRANGERS: usize = 64;

/// The agent's USP endpoint: checks each Record and message, answers through the data model and
/// keeps the notification retries.
pub struct Endpoint {
    pub(super) dm: DataModel,
    pub(super) limits: Limits,
    pub(super) next_msg: u64,
    pub(super) logged_foreign: bool,
    pub(super) logged_strangers: HashSet<String>,
    /// Notifications sent with send_resp, until their NotifyResp (R-NOT.1, R-NOT.6a).
    pub(super) retries: Retries,
    /// MQTT: a controller without `identity` counts only on the bare topic (no peer identity).
    pub(super) unnamed_on_bare_topic_only: bool,
}

impl Endpoint {
    /// An endpoint over `dm`, with the default Record limits and no notification pending.
    pub fn new(dm: DataModel) -> Endpoint {
        Endpoint {
            dm,
            limits: Limits::default(),
            next_msg: 0,
            logged_foreign: false,
            logged_strangers: HashSet::new(),
            retries: Retries::default(),
            unnamed_on_bare_topic_only: false,
        }
    }

    /// MQTT, where the identity is a topic suffix: else a client that may write its own
    /// `<topic>/<CN>` could put an identity-less controller's EndpointID in `from_id`.
    pub fn bind_unnamed_controllers_to_bare_topic(&mut self) {
        self.unnamed_on_bare_topic_only = true;
    }

    /// The retry schedule of notifications sent with send_resp (R-NOT.1's m and k).
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.retries.policy = policy;
    }

    /// The WebSocket Connect Record R-MTP.6 asks for after every (re)connect, to the controller
    /// on the other end (`peer`, when its handshake named it) or to each enabled controller.
    pub fn websocket_connect_records(&self, peer: Option<&str>) -> Vec<Outgoing> {
        let own = self.endpoint_id();
        self.dm
            .config()
            .controllers
            .iter()
            .filter(|c| peer.is_none_or(|p| p == c.endpoint_id))
            .filter(|c| self.dm.controller_enabled(&c.endpoint_id))
            .filter_map(|c| {
                let rec = Record::websocket_connect(&c.endpoint_id, own);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (c.endpoint_id.clone(), b))
            })
            .collect()
    }

    /// Notifications waiting for their NotifyResp.
    pub fn pending_notifications(&self) -> &[Pending] {
        self.retries.pending()
    }

    /// The MQTT Connect Records R-MTP.6 asks for after every (re)connect: one to each enabled
    /// controller, naming the topic we subscribed to. Sent before any other Record (R-MTP.8).
    pub fn mqtt_connect_records(&self, subscribed_topic: &str) -> Vec<Outgoing> {
        use cpevisor_usp::proto::mqtt_connect_record::MqttVersion;
        let own = self.endpoint_id();
        self.dm
            .config()
            .controllers
            .iter()
            .filter(|c| self.dm.controller_enabled(&c.endpoint_id))
            .filter_map(|c| {
                let rec =
                    Record::mqtt_connect(&c.endpoint_id, own, MqttVersion::V5, subscribed_topic);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (c.endpoint_id.clone(), b))
            })
            .collect()
    }

    /// Our endpoint ID.
    pub fn endpoint_id(&self) -> &str {
        &self.dm.config().endpoint_id
    }

    /// The data model, to change or notify from.
    pub fn data_model(&mut self) -> &mut DataModel {
        &mut self.dm
    }

    pub(super) fn msg_id(&mut self, what: &str) -> String {
        self.next_msg += 1;
        format!("cpv-{what}-{}", self.next_msg)
    }

    /// Encodes `msg` for `to`; a reply too large for the limits becomes a 7005 Error.
    pub(super) fn record(&self, to: &str, msg: &Msg) -> Option<Outgoing> {
        let own = self.endpoint_id();
        let rec = Record::no_session_msg(to, own, msg);
        match encode_record(&rec, &self.limits) {
            Ok(b) => Some((to.to_string(), b)),
            Err(e) => {
                crate::log_warn!("usp: reply to {to} dropped: {e}");
                let err = Msg::from_usp_error(msg.msg_id(), &e);
                let rec = Record::no_session_msg(to, own, &err);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (to.to_string(), b))
            }
        }
    }

    /// The configured controller that sent a Record, checked against the transport identity.
    fn caller(&mut self, from_id: &str, peer_identity: Option<&str>) -> Option<Caller> {
        let c = self
            .dm
            .config()
            .controllers
            .iter()
            .find(|c| c.endpoint_id == from_id)
            .cloned();
        let ok = match &c {
            Some(c) => {
                let identity_ok = match c.identity.as_deref() {
                    Some(want) => peer_identity == Some(want),
                    None => peer_identity.is_none() || !self.unnamed_on_bare_topic_only,
                };
                identity_ok && self.dm.controller_enabled(&c.endpoint_id)
            }
            None => false,
        };
        if !ok {
            if self.logged_strangers.len() < MAX_REMEMBERED_STRANGERS
                && self.logged_strangers.insert(from_id.to_string())
            {
                crate::log_warn!(
                    "usp: ignoring records from {from_id:?} (identity {peer_identity:?}): not a \
                     configured controller with that identity"
                );
            }
            return None;
        }
        let c = c.expect("checked");
        Some(Caller {
            endpoint_id: c.endpoint_id,
            role: c.role,
        })
    }

    /// Handles one received Record; returns the Records to send back (none, or one reply).
    /// `peer_identity` is what the transport authenticated (the client certificate's CN).
    pub fn handle_record(&mut self, bytes: &[u8], peer_identity: Option<&str>) -> Vec<Outgoing> {
        let own = self.endpoint_id().to_string();
        let record = match decode_record(bytes, &own, &self.limits) {
            Ok(r) => r,
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let Some(caller) = self.caller(&record.from_id, peer_identity) else {
            return Vec::new();
        };
        let payload = match record.content() {
            Ok(RecordContent::Msg(p)) => p,
            Ok(_) => return Vec::new(), // Connect and Disconnect Records need no answer.
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let msg = match decode_msg(payload, &self.limits) {
            Ok(m) => m,
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let reply = self.dispatch(&caller, &msg);
        reply
            .and_then(|m| self.record(&caller.endpoint_id, &m))
            .into_iter()
            .collect()
    }

    /// The Error Record R-MTP.5 asks for, sent only to a configured controller; a Record for
    /// another endpoint is dropped (logged once).
    fn refuse_record(
        &mut self,
        bytes: &[u8],
        peer_identity: Option<&str>,
        e: &UspError,
    ) -> Vec<Outgoing> {
        let own = self.endpoint_id().to_string();
        let Some(reply) = error_reply(bytes, &own, &self.limits, e) else {
            if e.message.contains("is not this endpoint") {
                if !self.logged_foreign {
                    self.logged_foreign = true;
                    crate::log_warn!("usp: dropping a record for another endpoint: {e}");
                }
            } else {
                crate::log_debug!("usp: record ignored: {e}");
            }
            return Vec::new();
        };
        if self.caller(&reply.to_id, peer_identity).is_none() {
            return Vec::new();
        }
        match encode_record(&reply, &self.limits) {
            Ok(b) => vec![(reply.to_id.clone(), b)],
            Err(_) => Vec::new(),
        }
    }
}
