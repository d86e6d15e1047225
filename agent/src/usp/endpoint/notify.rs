//! Notify Records out: what the data model's subscriptions produced, sent with send_resp
//! when the subscription asks for it and then retried until the NotifyResp (`retry`).

use cpevisor_usp::proto::Msg;

use crate::usp::dm::{Notification, NotifyBody};

use super::record::{Endpoint, Outgoing};

impl Endpoint {
    fn notify_records(&mut self, notes: Vec<Notification>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for n in notes {
            let onboard = matches!(n.body, NotifyBody::OnBoardRequest { .. });
            if onboard && self.retries.onboard_pending(&n.to) {
                continue; // the one already sent is retried (and was resent on reconnect)
            }
            let id = self.msg_id("notify");
            let sent_id = id.clone();
            let msg = match n.body {
                NotifyBody::Event {
                    obj_path,
                    event_name,
                    params,
                } => Msg::notify_event(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    event_name,
                    params,
                ),
                NotifyBody::ValueChange {
                    param_path,
                    param_value,
                } => Msg::notify_value_change(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    param_path,
                    param_value,
                ),
                NotifyBody::ObjectCreation {
                    obj_path,
                    unique_keys,
                } => Msg::notify_object_creation(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    unique_keys,
                ),
                NotifyBody::ObjectDeletion { obj_path } => {
                    Msg::notify_object_deletion(id, n.subscription_id, n.send_resp, obj_path)
                }
                NotifyBody::OperationComplete {
                    obj_path,
                    command_name,
                    command_key,
                    result,
                } => Msg::operation_complete(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    command_name,
                    command_key,
                    result,
                ),
                NotifyBody::OnBoardRequest {
                    oui,
                    product_class,
                    serial_number,
                    agent_supported_protocol_versions,
                } => Msg::on_board_request(
                    id,
                    oui,
                    product_class,
                    serial_number,
                    agent_supported_protocol_versions,
                ),
            };
            let Some(rec) = self.record(&n.to, &msg) else {
                continue;
            };
            if n.send_resp && !self.retries.track(&n.to, &sent_id, onboard, rec.1.clone()) {
                crate::log_warn!(
                    "usp: {} notifications await a NotifyResp; {sent_id} to {} is sent once",
                    crate::usp::retry::MAX_PENDING,
                    n.to
                );
            }
            out.push(rec);
        }
        out
    }

    /// Notify Records for what happened since the last call (call it often, or when the
    /// agent's events wake the transport loop).
    pub fn notifications(&mut self) -> Vec<Outgoing> {
        let notes = self.dm.poll();
        let mut out = self.notify_records(notes);
        out.extend(self.retries.due(std::time::Instant::now()));
        out
    }

    /// Notify Records to send when the transport has (re)connected: `Boot!` once per start,
    /// the OnBoardRequest to each controller until it answers one, and every notification
    /// still waiting for its NotifyResp (the broker may have lost it).
    pub fn on_connect(&mut self) -> Vec<Outgoing> {
        let mut out = self.retries.resend_all(std::time::Instant::now());
        let notes = self.dm.on_connect();
        out.extend(self.notify_records(notes));
        out
    }
}
