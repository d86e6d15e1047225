//! Notifications: the agent's events and the model's changes turned into what subscriptions
//! ask for (Event, ValueChange, ObjectCreation, ObjectDeletion, OperationComplete), plus
//! `Boot!` and OnBoardRequest when the agent connects.

use std::collections::BTreeMap;

use cpevisor_usp::errors::UspError;
use cpevisor_usp::path::{Leaf, Path};

use super::model::{
    b, instance_paths, push_dropping_oldest, unique_keys, DataModel, RECENTLY_GONE,
};
use super::tree::{self, Tree};
use super::types::Completion;
use crate::model::{DuStateChange, Event};

/// The body of a USP Notify message, one per notification type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyBody {
    /// An `Event` notification (`DUStateChange!`, `Boot!`).
    Event {
        /// Path of the object that emitted it.
        obj_path: String,
        /// Event name with its `!`.
        event_name: String,
        /// Its arguments by name.
        params: BTreeMap<String, String>,
    },
    /// A `ValueChange` notification.
    ValueChange {
        /// Full path of the parameter that changed.
        param_path: String,
        /// Its new value.
        param_value: String,
    },
    /// An `ObjectCreation` notification.
    ObjectCreation {
        /// Path of the new instance.
        obj_path: String,
        /// Its unique keys and their values.
        unique_keys: BTreeMap<String, String>,
    },
    /// An `ObjectDeletion` notification.
    ObjectDeletion {
        /// Path of the removed instance.
        obj_path: String,
    },
    /// An `OperationComplete` notification of an asynchronous command.
    OperationComplete {
        /// Path of the object the command ran on.
        obj_path: String,
        /// Command name with its parentheses.
        command_name: String,
        /// The `command_key` the controller gave with the Operate.
        command_key: String,
        /// Output arguments, or the command's failure.
        result: Result<BTreeMap<String, String>, UspError>,
    },
    /// The `OnBoardRequest` notification sent when the agent first connects.
    OnBoardRequest {
        /// `DeviceInfo.ManufacturerOUI`.
        oui: String,
        /// `DeviceInfo.ProductClass`.
        product_class: String,
        /// `DeviceInfo.SerialNumber`.
        serial_number: String,
        /// USP versions the agent supports, comma-separated.
        agent_supported_protocol_versions: String,
    },
}

/// One Notify to send: to a controller's endpoint ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Endpoint ID of the subscribing controller.
    pub to: String,
    /// The subscription's `ID`.
    pub subscription_id: String,
    /// The subscription's `NotifRetry`: the controller must answer with a NotifyResp.
    pub send_resp: bool,
    /// What is notified.
    pub body: NotifyBody,
}

/// What a subscription's ReferenceList entry covers, resolved against the current tree.
fn covers(tree: &Tree, reference: &str, kind: &NotifyBody) -> bool {
    let Ok(path) = Path::parse(reference) else {
        return false;
    };
    if tree::schema_of(&path).is_err() {
        return false;
    }
    let objs = tree.resolve(&path);
    match (kind, &path.leaf) {
        (
            NotifyBody::Event {
                obj_path,
                event_name,
                ..
            },
            Leaf::Event(e),
        ) => e == event_name.trim_end_matches('!') && objs.iter().any(|o| &o.path == obj_path),
        (NotifyBody::ValueChange { param_path, .. }, Leaf::Param(p)) => {
            objs.iter().any(|o| format!("{}{p}", o.path) == *param_path)
        }
        (NotifyBody::ValueChange { param_path, .. }, Leaf::Object) => {
            objs.iter().any(|o| param_path.starts_with(&o.path))
        }
        (NotifyBody::ObjectCreation { obj_path, .. }, Leaf::Object)
        | (NotifyBody::ObjectDeletion { obj_path }, Leaf::Object) => {
            objs.iter().any(|o| obj_path.starts_with(&o.path))
        }
        (
            NotifyBody::OperationComplete {
                obj_path,
                command_name,
                ..
            },
            Leaf::Command(c),
        ) => command_name.trim_end_matches("()") == c && objs.iter().any(|o| &o.path == obj_path),
        (NotifyBody::OperationComplete { obj_path, .. }, Leaf::Object) => {
            objs.iter().any(|o| obj_path.starts_with(&o.path))
        }
        _ => false,
    }
}

fn notif_type(body: &NotifyBody) -> &'static str {
    match body {
        NotifyBody::Event { .. } => "Event",
        NotifyBody::ValueChange { .. } => "ValueChange",
        NotifyBody::ObjectCreation { .. } => "ObjectCreation",
        NotifyBody::ObjectDeletion { .. } => "ObjectDeletion",
        NotifyBody::OperationComplete { .. } => "OperationComplete",
        NotifyBody::OnBoardRequest { .. } => "",
    }
}

impl DataModel {
    /// Fans `body` out to every enabled subscription that covers it.
    fn deliver(&self, tree: &Tree, body: NotifyBody, out: &mut Vec<Notification>) {
        let ty = notif_type(&body);
        for s in &self.subs {
            if !s.enable || s.notif_type != ty {
                continue;
            }
            // A persisted subscription of a controller since removed from the config: its
            // recipient would not be allowed to talk to us, so it hears nothing either.
            if !self
                .cfg
                .controllers
                .iter()
                .any(|c| c.endpoint_id == s.recipient)
                || !self.controller_enabled(&s.recipient)
            {
                continue;
            }
            if !s.reference_list.iter().any(|r| covers(tree, r, &body)) {
                continue;
            }
            out.push(Notification {
                to: s.recipient.clone(),
                subscription_id: s.id.clone(),
                send_resp: false,
                body: body.clone(),
            });
        }
    }

    /// Everything to notify since the last call: finished commands, the agent's events, objects
    /// created and deleted.
    pub fn poll(&mut self) -> Vec<Notification> {
        let completions: Vec<Completion> = self.completions_rx.try_iter().collect();
        let events: Vec<Event> = self.events_rx.try_iter().map(|(_, e)| e).collect();
        if completions.is_empty() && events.is_empty() && !std::mem::take(&mut self.touched) {
            // Nothing happened: the model can only have changed through the agent's events
            // or a controller's request, so an idle poll costs no snapshot.
            return Vec::new();
        }
        let mut bodies = Vec::new();
        for c in completions {
            self.requests.retain(|r| r.instance != c.request);
            bodies.push(self.completion_body(c));
        }
        let live_eus: Vec<String> = if events.is_empty() {
            Vec::new()
        } else {
            self.agent
                .snapshot()
                .execution_units
                .into_iter()
                .map(|u| u.eu_id)
                .collect()
        };
        for e in events {
            match e {
                Event::DuStateChange(d) => bodies.push(self.du_state_change(&d)),
                Event::EuValueChange(v) => {
                    // A live EU gets its number now; one already gone keeps its last one.
                    let n = if live_eus.contains(&v.eu_id) {
                        Some(self.store.number("ExecutionUnit", &v.eu_id))
                    } else {
                        self.known_number("ExecutionUnit", &v.eu_id)
                    };
                    if let Some(n) = n {
                        bodies.push(NotifyBody::ValueChange {
                            param_path: format!("Device.SoftwareModules.ExecutionUnit.{n}.Status"),
                            param_value: format!("{:?}", v.status),
                        });
                    }
                }
            }
        }
        let tree = self.materialize();
        let now = instance_paths(&tree);
        for created in now.difference(&self.known) {
            let o = tree.get(created).expect("from this tree");
            bodies.push(NotifyBody::ObjectCreation {
                obj_path: created.clone(),
                unique_keys: unique_keys(o).into_iter().collect(),
            });
        }
        for deleted in self.known.difference(&now) {
            bodies.push(NotifyBody::ObjectDeletion {
                obj_path: deleted.clone(),
            });
        }
        self.known = now;
        bodies.extend(self.value_changes(&tree));
        let mut out = Vec::new();
        for b in bodies {
            self.deliver(&tree, b, &mut out);
        }
        // Numbers of objects gone are forgotten (never reused: the counters stay).
        self.forget_gone(&tree);
        out
    }

    fn forget_gone(&mut self, tree: &Tree) {
        for table in ["ExecEnv", "DeploymentUnit", "ExecutionUnit", "Controller"] {
            let live: Vec<&str> = tree
                .objs
                .iter()
                .filter(|o| o.desc.name == table && o.instance().is_some())
                .map(|o| o.key.as_str())
                .collect();
            for (key, n) in self.store.retain(table, &live) {
                push_dropping_oldest(&mut self.recently_gone, (table.to_string(), key, n));
            }
        }
        let live_dus: Vec<String> = tree
            .objs
            .iter()
            .filter(|o| o.desc.name == "DeploymentUnit" && o.instance().is_some())
            .map(|o| o.key.clone())
            .collect();
        // Gone DUs stay until their DUStateChange! names their EUs (or the map grows too big).
        if self.du_eus.len() > 2 * RECENTLY_GONE {
            self.du_eus.retain(|k, _| live_dus.contains(k));
        }
        if let Err(f) = self.store.save_if_changed() {
            crate::log_warn!("usp: instance numbers not saved: {f}");
        }
    }

    fn completion_body(&mut self, c: Completion) -> NotifyBody {
        if c.command_name == "Reboot()" && c.result.is_err() {
            // No reboot happened: the next Boot! must not claim this one.
            self.store.data.reboot_command_key = None;
            if let Err(f) = self.store.save_if_changed() {
                crate::log_warn!("usp: reboot state not saved: {f}");
            }
        }
        let result = match c.result {
            Err(f) => Err(f.into()),
            Ok(None) => Ok(BTreeMap::new()),
            Ok(Some(du)) => match &c.want_uuid {
                Some(want) if *want != du.uuid => {
                    // The package is not the DU the controller asked for: take it back out.
                    let undo = self.agent.uninstall(&du.uuid, false);
                    Err(UspError::new(
                        7004,
                        format!(
                            "the package's UUID is {} but {want} was requested{}",
                            du.uuid,
                            match undo {
                                Ok(()) => "; uninstalled again".to_string(),
                                Err(f) => format!("; removing it failed: {}", f.message),
                            }
                        ),
                    ))
                }
                _ => {
                    let n = self.store.number("DeploymentUnit", &du.uuid);
                    Ok(BTreeMap::from([
                        (
                            "DeploymentUnitRef".to_string(),
                            format!("Device.SoftwareModules.DeploymentUnit.{n}"),
                        ),
                        ("UUID".to_string(), du.uuid.clone()),
                        ("Version".to_string(), du.version.clone()),
                    ]))
                }
            },
        };
        NotifyBody::OperationComplete {
            obj_path: c.obj_path,
            command_name: c.command_name,
            command_key: c.command_key,
            result,
        }
    }

    /// TR-181 `DUStateChange!` arguments.
    fn du_state_change(&mut self, d: &DuStateChange) -> NotifyBody {
        // A DU that exists after the operation gets its number now; a failed install has none.
        let du_live = self
            .agent
            .snapshot()
            .deployment_units
            .iter()
            .find(|u| u.uuid == d.uuid)
            .map(|u| u.execution_unit_list.clone());
        let number = match &du_live {
            Some(_) => Some(self.store.number("DeploymentUnit", &d.uuid)),
            None => self.known_number("DeploymentUnit", &d.uuid),
        };
        // EUs of a live DU get their numbers now; those of a removed one keep their last ones.
        let eu_numbers: Vec<Option<u32>> = match du_live {
            Some(eus) => eus
                .iter()
                .map(|id| Some(self.store.number("ExecutionUnit", id)))
                .collect(),
            None => self
                .du_eus
                .remove(&d.uuid)
                .unwrap_or_default()
                .iter()
                .map(|id| self.known_number("ExecutionUnit", id))
                .collect(),
        };
        let eu_refs: Vec<String> = eu_numbers
            .into_iter()
            .flatten()
            .map(|n| format!("Device.SoftwareModules.ExecutionUnit.{n}"))
            .collect();
        let (code, msg) = match &d.fault {
            Some(f) => (f.code.code(), f.message.clone()),
            None => (0, String::new()),
        };
        let params = BTreeMap::from([
            ("UUID".to_string(), d.uuid.clone()),
            (
                "DeploymentUnitRef".to_string(),
                number
                    .map(|n| format!("Device.SoftwareModules.DeploymentUnit.{n}"))
                    .unwrap_or_default(),
            ),
            ("Version".to_string(), d.version.clone()),
            ("CurrentState".to_string(), format!("{:?}", d.current_state)),
            ("Resolved".to_string(), b(d.resolved)),
            ("ExecutionUnitRefList".to_string(), eu_refs.join(",")),
            ("StartTime".to_string(), d.start_time.clone()),
            ("CompleteTime".to_string(), d.complete_time.clone()),
            (
                "OperationPerformed".to_string(),
                format!("{:?}", d.operation_performed),
            ),
            ("Fault.FaultCode".to_string(), code.to_string()),
            ("Fault.FaultString".to_string(), msg),
        ]);
        NotifyBody::Event {
            obj_path: "Device.SoftwareModules.".to_string(),
            event_name: "DUStateChange!".to_string(),
            params,
        }
    }

    /// Called when the transport (re)connects: `Boot!` once per agent start to the controllers
    /// subscribed to it, and OnBoardRequest to each controller that has not answered one yet
    /// (the endpoint keeps one per controller in flight and calls `mark_onboarded`).
    pub fn on_connect(&mut self) -> Vec<Notification> {
        let mut out = Vec::new();
        let tree = self.materialize();
        if !self.boot_sent {
            self.boot_sent = true;
            let key = self.store.data.reboot_command_key.take();
            let cause = if key.is_some() {
                "RemoteReboot"
            } else {
                "LocalReboot"
            };
            let body = NotifyBody::Event {
                obj_path: "Device.".to_string(),
                event_name: "Boot!".to_string(),
                params: BTreeMap::from([
                    ("CommandKey".to_string(), key.unwrap_or_default()),
                    ("Cause".to_string(), cause.to_string()),
                    ("FirmwareUpdated".to_string(), "false".to_string()),
                    ("ParameterMap".to_string(), "{}".to_string()),
                ]),
            };
            self.deliver(&tree, body, &mut out);
        }
        let di = self.cfg.device_info.clone();
        for c in self.cfg.controllers.clone() {
            if self.store.data.onboarded.contains(&c.endpoint_id)
                || !self.controller_enabled(&c.endpoint_id)
            {
                continue;
            }
            // Onboarded only when the NotifyResp arrives (R-NOT.6a): see `mark_onboarded`.
            out.push(Notification {
                to: c.endpoint_id.clone(),
                subscription_id: String::new(),
                send_resp: true,
                body: NotifyBody::OnBoardRequest {
                    oui: di.manufacturer_oui.clone(),
                    product_class: di.product_class.clone(),
                    serial_number: di.serial_number.clone(),
                    agent_supported_protocol_versions: cpevisor_usp::proto::USP_VERSION.to_string(),
                },
            });
        }
        if let Err(f) = self.store.save_if_changed() {
            crate::log_warn!("usp: boot state not saved: {f}");
        }
        out
    }

    /// `controller` answered its OnBoardRequest: it is not sent again, even after a restart.
    pub fn mark_onboarded(&mut self, controller: &str) {
        if self.store.data.onboarded.iter().any(|c| c == controller) {
            return;
        }
        self.store.data.onboarded.push(controller.to_string());
        if let Err(f) = self.store.save_if_changed() {
            crate::log_warn!("usp: onboarding of {controller} not saved: {f}");
        }
    }
}
