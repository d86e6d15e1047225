//! Notifications from agents: OperationComplete, `DUStateChange!` and ValueChange moving
//! jobs on, announcements (Boot!, OnBoardRequest) noted, NotifyResp sent when asked.

use std::collections::{BTreeMap, HashMap};

use cpevisor_usp::errors::UspError;
use cpevisor_usp::proto::notify::Notification;

use super::controller::Controller;
use super::types::{Job, Phase, SeenEvent, MAX_EVENTS_PER_AGENT};

impl Controller {
    pub(super) fn on_notification(
        &mut self,
        from: &str,
        note: &Notification,
        jobs: &mut HashMap<String, Job>,
    ) {
        let event = match note {
            Notification::Event(e) => SeenEvent {
                kind: e.event_name.clone(),
                path: e.obj_path.clone(),
                params: e.params.clone(),
            },
            Notification::ValueChange(v) => SeenEvent {
                kind: "ValueChange".into(),
                path: v.param_path.clone(),
                params: BTreeMap::from([("value".to_string(), v.param_value.clone())]),
            },
            Notification::ObjCreation(o) => SeenEvent {
                kind: "ObjectCreation".into(),
                path: o.obj_path.clone(),
                params: o.unique_keys.clone(),
            },
            Notification::ObjDeletion(o) => SeenEvent {
                kind: "ObjectDeletion".into(),
                path: o.obj_path.clone(),
                params: BTreeMap::new(),
            },
            Notification::OperComplete(c) => {
                use cpevisor_usp::proto::notify::operation_complete::OperationResp as R;
                let mut params = match &c.operation_resp {
                    Some(R::ReqOutputArgs(a)) => a.output_args.clone(),
                    Some(R::CmdFailure(f)) => BTreeMap::from([
                        ("err_code".to_string(), f.err_code.to_string()),
                        ("err_msg".to_string(), f.err_msg.clone()),
                    ]),
                    None => BTreeMap::new(),
                };
                params.insert("command_key".into(), c.command_key.clone());
                SeenEvent {
                    kind: "OperationComplete".into(),
                    path: format!("{}{}", c.obj_path, c.command_name),
                    params,
                }
            }
            Notification::OnBoardReq(o) => SeenEvent {
                kind: "OnBoardRequest".into(),
                path: String::new(),
                params: BTreeMap::from([
                    ("OUI".to_string(), o.oui.clone()),
                    ("ProductClass".to_string(), o.product_class.clone()),
                    ("SerialNumber".to_string(), o.serial_number.clone()),
                ]),
            },
        };
        if event.kind == "Boot!" || event.kind == "OnBoardRequest" {
            self.note_seen(from, &event.kind);
        }
        self.keep_event(from, &event);
        let Some(job) = jobs.get_mut(from) else {
            return;
        };
        if job.phase == Phase::Done {
            return;
        }
        if job.outcome.events.len() < MAX_EVENTS_PER_AGENT {
            job.outcome.events.push(event.clone());
        } else {
            job.outcome.events_dropped += 1;
        }
        match (&job.phase, note) {
            (_, Notification::OperComplete(c)) if c.command_key == job.command_key => {
                use cpevisor_usp::proto::notify::operation_complete::OperationResp as R;
                match &c.operation_resp {
                    Some(R::ReqOutputArgs(a)) => {
                        job.outcome
                            .rows
                            .extend(a.output_args.iter().map(|(k, v)| (k.clone(), v.clone())));
                        Self::completed(job, Ok(()));
                    }
                    Some(R::CmdFailure(f)) => {
                        Self::completed(job, Err(UspError::new(f.err_code, f.err_msg.clone())))
                    }
                    None => Self::fail(
                        job,
                        UspError::new(0, "OperationComplete without a result".to_string()),
                    ),
                }
            }
            (Phase::AwaitNotice { notice, .. }, _) if notice.is(&event) => {
                job.phase = Phase::Done;
            }
            (
                Phase::AwaitStatus {
                    status_path, want, ..
                },
                Notification::ValueChange(v),
            ) if &v.param_path == status_path && &v.param_value == want => {
                job.outcome
                    .rows
                    .push((v.param_path.clone(), v.param_value.clone()));
                Self::succeed(job);
            }
            _ => {}
        }
    }
}
