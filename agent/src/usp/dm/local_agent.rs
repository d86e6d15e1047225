//! `Device.LocalAgent.`: our EndpointID, the configured controllers, the subscriptions (the
//! one table controllers may Add to and Delete from, with the rules its parameters follow), and
//! the asynchronous commands in flight.

use cpevisor_usp::errors::*;
use cpevisor_usp::path::Path;

use super::model::{b, DataModel};
use super::persist::Subscription;
use super::schema::{parse_bool, DEVICE};
use super::tree::{self, Seg, TreeBuilder};
use super::types::MAX_REFERENCES;

impl DataModel {
    /// Adds `Device.LocalAgent.` and its tables under `dev`.
    pub(super) fn local_agent(&mut self, t: &mut TreeBuilder, dev: &[Seg]) {
        let la_desc = DEVICE.child("LocalAgent").expect("schema");
        let la = t.object(
            Some(dev),
            la_desc,
            vec![
                ("EndpointID", self.cfg.endpoint_id.clone()),
                ("SupportedProtocols", "MQTT,WebSocket".to_string()),
                (
                    "ControllerNumberOfEntries",
                    self.cfg.controllers.len().to_string(),
                ),
                ("SubscriptionNumberOfEntries", self.subs.len().to_string()),
                ("RequestNumberOfEntries", self.requests.len().to_string()),
            ],
        );
        let c_desc = la_desc.child("Controller").expect("schema");
        let ct = t.table(&la, c_desc);
        for c in self.cfg.controllers.clone() {
            let n = self.store.number("Controller", &c.endpoint_id);
            t.instance(
                &ct,
                c_desc,
                n,
                &c.endpoint_id,
                vec![
                    ("EndpointID", c.endpoint_id.clone()),
                    ("Enable", b(self.controller_enabled(&c.endpoint_id))),
                    ("AssignedRole", c.role.as_str().to_string()),
                ],
            );
        }
        let s_desc = la_desc.child("Subscription").expect("schema");
        let st = t.table(&la, s_desc);
        for s in self.subs.clone() {
            let recipient = self.controller_path(&s.recipient);
            t.instance(
                &st,
                s_desc,
                s.instance,
                &s.instance.to_string(),
                vec![
                    ("Enable", b(s.enable)),
                    ("ID", s.id.clone()),
                    ("Recipient", recipient),
                    ("NotifType", s.notif_type.clone()),
                    ("ReferenceList", s.reference_list.join(",")),
                    ("Persistent", b(s.persistent)),
                    ("CreationDate", s.creation_date.clone()),
                ],
            );
        }
        let r_desc = la_desc.child("Request").expect("schema");
        let rt = t.table(&la, r_desc);
        for r in &self.requests {
            t.instance(
                &rt,
                r_desc,
                r.instance,
                &r.instance.to_string(),
                vec![
                    ("Originator", r.originator.clone()),
                    ("Command", r.command.clone()),
                    ("CommandKey", r.command_key.clone()),
                    ("Status", "Active".to_string()),
                ],
            );
        }
    }
}

/// Checks beyond the type: ReferenceList entries must be valid paths, bounded in number.
pub(super) fn check_sub_value(name: &str, value: &str) -> Result<(), UspError> {
    if name == "ReferenceList" {
        let refs: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if refs.len() > MAX_REFERENCES {
            return Err(UspError::new(
                INVALID_VALUE,
                format!("ReferenceList: more than {MAX_REFERENCES} paths"),
            ));
        }
        for r in refs {
            let p = Path::parse(r).map_err(|e| {
                UspError::new(INVALID_VALUE, format!("ReferenceList: {}", e.message))
            })?;
            tree::schema_of(&p).map_err(|e| {
                UspError::new(INVALID_VALUE, format!("ReferenceList: {}", e.message))
            })?;
        }
    }
    if name == "ID" && value.is_empty() {
        return Err(UspError::new(INVALID_VALUE, "ID: empty"));
    }
    Ok(())
}

pub(super) fn apply_sub_param(s: &mut Subscription, name: &str, value: &str) {
    match name {
        "Enable" => s.enable = parse_bool(value),
        "ID" => s.id = value.to_string(),
        "NotifType" => s.notif_type = value.to_string(),
        "ReferenceList" => {
            s.reference_list = value
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        }
        "Persistent" => s.persistent = parse_bool(value),
        _ => {}
    }
}
