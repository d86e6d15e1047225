//! Answers to the controller's requests: each response or error moves its job to the next
//! phase or ends it.

use std::time::Instant;

use cpevisor_usp::errors::UspError;
use cpevisor_usp::proto::operate_resp::operation_result::OperationResp;
use cpevisor_usp::proto::response::RespType;
use cpevisor_usp::proto::Msg;

use super::controller::Controller;
use super::types::{instance_of, phase_name, Job, Notice, Op, Phase, STATUS_POLL};

impl Controller {
    pub(super) fn on_answer(&mut self, agent: &str, job: &mut Job, msg: &Msg) {
        // The OperationComplete overtook the OperateResp and already ended the job.
        if matches!(job.phase, Phase::AwaitNotice { .. } | Phase::Done) {
            if let Some(RespType::OperateResp(o)) = msg.response_body() {
                if let Some(OperationResp::ReqObjPath(p)) = o
                    .operation_results
                    .first()
                    .and_then(|r| r.operation_resp.as_ref())
                {
                    job.outcome.rows.insert(0, ("Request".into(), p.clone()));
                }
            }
            return;
        }
        if let Some(e) = msg.error_body() {
            let mut text = e.err_msg.clone();
            for pe in e.param_errs.iter().take(4) {
                text.push_str(&format!(
                    "; {}: {} {}",
                    pe.param_path, pe.err_code, pe.err_msg
                ));
            }
            // A refused subscription (e.g. a read-only role) does not stop the request itself:
            // the agent then answers the request with its own error.
            if job.phase == Phase::Subscribe {
                self.main_request(agent, job);
                return;
            }
            if let Phase::AwaitStatus { .. } = job.phase {
                return;
            }
            Self::fail(job, UspError::new(e.err_code, text));
            return;
        }
        let Some(resp) = msg.response_body() else {
            return;
        };
        match (&job.phase.clone(), resp) {
            (Phase::Lookup, RespType::GetResp(g)) => {
                let Some((table, key, name)) = job.op.lookup() else {
                    return;
                };
                let found = g
                    .req_path_results
                    .iter()
                    .flat_map(|r| r.resolved_path_results.iter())
                    .find(|r| r.result_params.get(key).map(String::as_str) == Some(name))
                    .map(|r| r.resolved_path.clone());
                match found {
                    Some(path) => {
                        job.target = Some(path);
                        self.after_lookup(agent, job);
                    }
                    None => Self::fail(
                        job,
                        UspError::new(
                            cpevisor_usp::errors::OBJECT_DOES_NOT_EXIST,
                            format!("no {table} with {key} {name}"),
                        ),
                    ),
                }
            }
            (Phase::Subscribe, RespType::AddResp(_)) => self.main_request(agent, job),
            (Phase::Request, RespType::OperateResp(o)) => {
                let Some(r) = o.operation_results.first() else {
                    Self::fail(job, UspError::new(0, "OperateResp without a result"));
                    return;
                };
                match &r.operation_resp {
                    Some(OperationResp::ReqObjPath(p)) => {
                        job.outcome.rows.push(("Request".into(), p.clone()));
                        // The OperationComplete may have overtaken the response.
                        let done = job.outcome.events.iter().any(|e| {
                            e.kind == "OperationComplete"
                                && e.params.get("command_key") == Some(&job.command_key)
                        });
                        if !done {
                            job.phase = Phase::AwaitComplete;
                        }
                        if done {
                            self.replay_completion(job);
                        }
                    }
                    Some(OperationResp::ReqOutputArgs(a)) => {
                        job.outcome
                            .rows
                            .extend(a.output_args.iter().map(|(k, v)| (k.clone(), v.clone())));
                        match &job.op {
                            Op::Start { .. } | Op::Stop { .. } => {
                                let want = if matches!(job.op, Op::Start { .. }) {
                                    "Active"
                                } else {
                                    "Idle"
                                };
                                let status_path = format!(
                                    "{}Status",
                                    instance_of(job.target.as_deref().unwrap_or(""), &job.op)
                                );
                                let reached = job.outcome.events.iter().any(|e| {
                                    e.kind == "ValueChange"
                                        && e.path == status_path
                                        && e.params.get("value").map(String::as_str) == Some(want)
                                });
                                if reached {
                                    job.outcome.rows.push((status_path, want.to_string()));
                                    Self::succeed(job);
                                } else {
                                    job.phase = Phase::AwaitStatus {
                                        status_path,
                                        want: want.to_string(),
                                        next_poll: Instant::now() + STATUS_POLL,
                                    };
                                }
                            }
                            _ => Self::succeed(job),
                        }
                    }
                    Some(OperationResp::CmdFailure(f)) => {
                        Self::fail(job, UspError::new(f.err_code, f.err_msg.clone()))
                    }
                    None => Self::fail(job, UspError::new(0, "OperateResp without a result")),
                }
            }
            (Phase::Request, RespType::GetResp(g)) => {
                for r in &g.req_path_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.requested_path, r.err_msg),
                        ));
                    }
                    for rp in &r.resolved_path_results {
                        for (k, v) in &rp.result_params {
                            job.outcome
                                .rows
                                .push((format!("{}{k}", rp.resolved_path), v.clone()));
                        }
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::GetInstancesResp(g)) => {
                for r in &g.req_path_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.requested_path, r.err_msg),
                        ));
                    }
                    for c in &r.curr_insts {
                        let keys: Vec<String> = c
                            .unique_keys
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        job.outcome
                            .rows
                            .push((c.instantiated_obj_path.clone(), keys.join(",")));
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::GetSupportedDmResp(g)) => {
                for r in &g.req_obj_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.req_obj_path, r.err_msg),
                        ));
                    }
                    for o in &r.supported_objs {
                        let p = &o.supported_obj_path;
                        job.outcome.rows.push((p.clone(), "object".into()));
                        for c in &o.supported_commands {
                            job.outcome.rows.push((
                                format!("{p}{}", c.command_name),
                                format!("command({})", c.input_arg_names.join(",")),
                            ));
                        }
                        for e in &o.supported_events {
                            job.outcome.rows.push((
                                format!("{p}{}", e.event_name),
                                format!("event({})", e.arg_names.join(",")),
                            ));
                        }
                        for prm in &o.supported_params {
                            job.outcome
                                .rows
                                .push((format!("{p}{}", prm.param_name), "param".into()));
                        }
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::SetResp(s)) => {
                use cpevisor_usp::proto::set_resp::updated_object_result::operation_status::OperStatus;
                for r in &s.updated_obj_results {
                    match r.oper_status.as_ref().and_then(|s| s.oper_status.as_ref()) {
                        Some(OperStatus::OperSuccess(ok)) => {
                            for i in &ok.updated_inst_results {
                                for (k, v) in &i.updated_params {
                                    job.outcome
                                        .rows
                                        .push((format!("{}{k}", i.affected_path), v.clone()));
                                }
                                if let Some(pe) = i.param_errs.first() {
                                    job.outcome.fault.get_or_insert(UspError::new(
                                        pe.err_code,
                                        format!("{}{}: {}", i.affected_path, pe.param, pe.err_msg),
                                    ));
                                }
                            }
                        }
                        Some(OperStatus::OperFailure(f)) => {
                            job.outcome.fault.get_or_insert(UspError::new(
                                f.err_code,
                                format!("{}: {}", r.requested_path, f.err_msg),
                            ));
                        }
                        None => {}
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (
                Phase::AwaitStatus {
                    status_path, want, ..
                },
                RespType::GetResp(g),
            ) => {
                let now = g
                    .req_path_results
                    .iter()
                    .flat_map(|r| r.resolved_path_results.iter())
                    .flat_map(|r| r.result_params.values())
                    .next()
                    .cloned();
                if now.as_deref() == Some(want.as_str()) {
                    // The poll can see the new Status before the agent's ValueChange for it
                    // arrives: the operator's report should carry that too.
                    job.outcome.rows.push((status_path.clone(), want.clone()));
                    job.outcome.ok = true;
                    let notice = Notice::ValueChange {
                        path: status_path.clone(),
                        value: want.clone(),
                    };
                    Self::await_notice(job, notice);
                }
            }
            (phase, other) => Self::fail(
                job,
                UspError::new(
                    0,
                    format!(
                        "unexpected {:?} while {}",
                        other.msg_type(),
                        phase_name(phase)
                    ),
                ),
            ),
        }
    }

    /// Ends a job whose OperationComplete arrived before the OperateResp.
    pub(super) fn replay_completion(&mut self, job: &mut Job) {
        let Some(e) = job
            .outcome
            .events
            .iter()
            .find(|e| {
                e.kind == "OperationComplete"
                    && e.params.get("command_key") == Some(&job.command_key)
            })
            .cloned()
        else {
            return;
        };
        match e.params.get("err_code") {
            Some(code) => Self::completed(
                job,
                Err(UspError::new(
                    code.parse().unwrap_or(0),
                    e.params.get("err_msg").cloned().unwrap_or_default(),
                )),
            ),
            None => {
                job.outcome.rows.extend(
                    e.params
                        .iter()
                        .filter(|(k, _)| k.as_str() != "command_key")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                Self::completed(job, Ok(()));
            }
        }
    }
}
