//! The engine against scripted agents on threads: what each agent answers to each request
//! is a function of the decoded Msg, so orderings a broker may produce (notifications
//! overtaking responses, silence, errors) are tested without one.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender as ChanSender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpevisor_usp::errors::{UspError, PERMISSION_DENIED};
use cpevisor_usp::proto::get_resp::{RequestedPathResult, ResolvedPathResult};
use cpevisor_usp::proto::operate_resp::OperationResult;
use cpevisor_usp::proto::response::RespType;
use cpevisor_usp::proto::{request, AddResp, GetResp, Msg, OperateResp, Record};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits};

use super::controller::Controller;
use super::types::{Inbound, Op, Sender};

const CTL: &str = "self::ctl";

type Script = dyn Fn(&str, &Msg) -> Vec<Msg> + Send + Sync;
/// What the controller published: (topic, Msg).
type Published = Arc<Mutex<Vec<(String, Msg)>>>;

/// A controller whose agents are answered by `script(agent, request)`; also returns every
/// (topic, Msg) the controller published.
fn rig(script: Arc<Script>) -> (Controller, Published) {
    let (in_tx, in_rx) = sync_channel::<Inbound>(1024);
    let (out_tx, out_rx) = channel::<(String, Vec<u8>)>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let out_tx: Mutex<ChanSender<(String, Vec<u8>)>> = Mutex::new(out_tx);
    let send: Sender = Box::new(move |topic: &str, bytes: Vec<u8>| {
        out_tx
            .lock()
            .unwrap()
            .send((topic.to_string(), bytes))
            .map_err(|e| e.to_string())
    });
    let seen = log.clone();
    std::thread::spawn(move || fake_agents(out_rx, in_tx, script, seen));
    (Controller::new(CTL, "usp/agent/{id}", send, in_rx), log)
}

fn fake_agents(
    out_rx: Receiver<(String, Vec<u8>)>,
    in_tx: SyncSender<Inbound>,
    script: Arc<Script>,
    log: Published,
) {
    let limits = Limits::default();
    for (topic, bytes) in out_rx {
        let agent = topic.strip_prefix("usp/agent/").unwrap().to_string();
        let rec = decode_record(&bytes, &agent, &limits).unwrap();
        assert_eq!(rec.from_id, CTL);
        let msg = decode_msg(rec.no_session_payload().unwrap(), &limits).unwrap();
        log.lock().unwrap().push((topic.clone(), msg.clone()));
        for reply in script(&agent, &msg) {
            let r = Record::no_session_msg(CTL, agent.clone(), &reply);
            let inb = Inbound {
                payload: encode_record(&r, &limits).unwrap(),
                response_topic: Some(format!("usp/agent/{agent}")),
            };
            if in_tx.send(inb).is_err() {
                return;
            }
        }
    }
}

fn operate_of(m: &Msg) -> Option<&cpevisor_usp::proto::Operate> {
    match m.request_body()? {
        request::ReqType::Operate(o) => Some(o),
        _ => None,
    }
}

fn ok_add(m: &Msg) -> Option<Msg> {
    matches!(m.request_body()?, request::ReqType::Add(_))
        .then(|| Msg::response(m.msg_id(), RespType::AddResp(AddResp::default())))
}

fn get_resp(m: &Msg, rows: &[(&str, &str, &str)]) -> Msg {
    let resolved = rows
        .iter()
        .map(|(obj, k, v)| ResolvedPathResult {
            resolved_path: obj.to_string(),
            result_params: BTreeMap::from([(k.to_string(), v.to_string())]),
        })
        .collect();
    Msg::response(
        m.msg_id(),
        RespType::GetResp(GetResp {
            req_path_results: vec![RequestedPathResult {
                requested_path: "x".into(),
                err_code: 0,
                err_msg: String::new(),
                resolved_path_results: resolved,
            }],
        }),
    )
}

/// A synchronous command's OperateResp: done, no output.
fn operated(m: &Msg, o: &cpevisor_usp::proto::Operate) -> Msg {
    Msg::response(
        m.msg_id(),
        RespType::OperateResp(OperateResp {
            operation_results: vec![OperationResult::sync(
                o.command.clone(),
                Ok(BTreeMap::new()),
            )],
        }),
    )
}

/// `start eu-9` on agent `os::a`.
fn start_eu_9(ctl: &mut Controller) -> Vec<super::types::Outcome> {
    ctl.run(
        &["os::a".to_string()],
        &Op::Start { eu: "eu-9".into() },
        Duration::from_secs(5),
    )
}

fn du_event(uuid: &str) -> Msg {
    Msg::notify_event(
        "n-du",
        "self::ctl-du",
        false,
        "Device.SoftwareModules.",
        "DUStateChange!",
        BTreeMap::from([
            ("UUID".to_string(), uuid.to_string()),
            ("CurrentState".to_string(), "Installed".to_string()),
        ]),
    )
}

#[test]
fn install_on_many_agents_with_completion_overtaking_the_response() {
    let script: Arc<Script> = Arc::new(|agent: &str, m: &Msg| {
        if let Some(r) = ok_add(m) {
            return vec![r];
        }
        let Some(o) = operate_of(m) else {
            return vec![];
        };
        assert_eq!(o.command, "Device.SoftwareModules.InstallDU()");
        assert_eq!(o.input_args["URL"], "http://h/a.cpkg");
        assert!(
            !o.input_args.contains_key("ExecutionEnvRef"),
            "empty args are left out"
        );
        assert_eq!(
            o.input_args["X_CPEVISOR_NetworkConfig"],
            r#"{"mode":"none"}"#
        );
        let uuid = format!("uuid-{agent}");
        let done = Msg::operation_complete(
            "n-oc",
            "self::ctl-opc",
            false,
            "Device.SoftwareModules.",
            "InstallDU()",
            o.command_key.clone(),
            Ok(BTreeMap::from([("UUID".to_string(), uuid.clone())])),
        );
        let resp = Msg::response(
            m.msg_id(),
            RespType::OperateResp(OperateResp {
                operation_results: vec![OperationResult::started(
                    o.command.clone(),
                    "Device.LocalAgent.Request.1.",
                )],
            }),
        );
        vec![done, resp, du_event(&uuid)]
    });
    let (mut ctl, log) = rig(script);
    let agents: Vec<String> = (0..20).map(|i| format!("os::a{i}")).collect();
    let op = Op::Install {
        url: "http://h/a.cpkg".into(),
        env: None,
        network: Some(r#"{"mode":"none"}"#.into()),
    };
    let out = ctl.run(&agents, &op, Duration::from_secs(10));
    assert_eq!(out.len(), 20);
    for o in &out {
        assert!(o.ok, "{o:?}");
        let uuid = format!("uuid-{}", o.agent);
        assert!(
            o.rows.contains(&("UUID".to_string(), uuid.clone())),
            "{o:?}"
        );
        assert!(o
            .events
            .iter()
            .any(|e| e.kind == "DUStateChange!" && e.params["UUID"] == uuid));
    }
    // Per agent: the subscriptions, then the command; every topic is the agent's own.
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 40);
    assert!(log.iter().all(|(t, _)| t.starts_with("usp/agent/os::a")));
    assert_eq!(ctl.stats().sent, 40);
    assert_eq!(ctl.stats().received, 80);
}

#[test]
fn refusals_silence_and_missing_objects() {
    let script: Arc<Script> = Arc::new(|agent: &str, m: &Msg| {
        let deny = Msg::from_usp_error(
            m.msg_id(),
            &UspError::new(PERMISSION_DENIED, "ReadOnly controllers may not"),
        );
        match (agent, m.request_body()) {
            ("os::ro", _) => vec![deny],
            ("os::mute", Some(request::ReqType::Add(_))) => vec![ok_add(m).unwrap()],
            ("os::mute", _) => vec![],
            (_, Some(request::ReqType::Get(_))) => vec![get_resp(
                m,
                &[("Device.SoftwareModules.DeploymentUnit.1.", "UUID", "other")],
            )],
            _ => vec![],
        }
    });
    let (mut ctl, _) = rig(script);
    let agents = ["os::ro", "os::mute", "os::nodu"].map(String::from);
    let op = Op::Uninstall { du: "u-1".into() };
    let out = ctl.run(&agents, &op, Duration::from_millis(800));
    let by = |a: &str| out.iter().find(|o| o.agent == a).unwrap();
    assert_eq!(by("os::ro").fault.as_ref().unwrap().code, PERMISSION_DENIED);
    let mute = by("os::mute");
    assert!(!mute.ok);
    assert!(
        mute.fault.as_ref().unwrap().message.contains("timed out"),
        "{mute:?}"
    );
    let nodu = by("os::nodu");
    assert_eq!(nodu.fault.as_ref().unwrap().code, 7016);
    assert!(nodu.fault.as_ref().unwrap().message.contains("UUID u-1"));
    assert!(out.iter().all(|o| !o.ok));
}

#[test]
fn start_follows_the_value_change_and_answers_notifies() {
    let script: Arc<Script> = Arc::new(|_: &str, m: &Msg| {
        if let Some(r) = ok_add(m) {
            // An announcement that wants an answer arrives meanwhile.
            let mut notify = Msg::notify_event(
                "boot-1",
                "self::ctl-boot",
                true,
                "Device.",
                "Boot!",
                BTreeMap::new(),
            );
            notify.header.as_mut().unwrap().msg_id = "boot-1".into();
            return vec![r, notify];
        }
        match m.request_body() {
            Some(request::ReqType::Get(_)) => vec![get_resp(
                m,
                &[("Device.SoftwareModules.ExecutionUnit.4.", "EUID", "eu-9")],
            )],
            Some(request::ReqType::Operate(o)) => {
                assert_eq!(
                    o.command,
                    "Device.SoftwareModules.ExecutionUnit.4.SetRequestedState()"
                );
                assert_eq!(o.input_args["RequestedState"], "Active");
                vec![
                    operated(m, o),
                    Msg::notify_value_change(
                        "vc-1",
                        "self::ctl-vc",
                        false,
                        "Device.SoftwareModules.ExecutionUnit.4.Status",
                        "Starting",
                    ),
                    Msg::notify_value_change(
                        "vc-2",
                        "self::ctl-vc",
                        false,
                        "Device.SoftwareModules.ExecutionUnit.4.Status",
                        "Active",
                    ),
                ]
            }
            _ => vec![],
        }
    });
    let (mut ctl, log) = rig(script);
    let out = start_eu_9(&mut ctl);
    assert!(out[0].ok, "{:?}", out[0]);
    assert!(out[0].rows.contains(&(
        "Device.SoftwareModules.ExecutionUnit.4.Status".to_string(),
        "Active".to_string()
    )));
    assert_eq!(ctl.seen()["os::a"].how, "Boot!");
    // The Boot! asked for a response: a NotifyResp with its msg_id went back.
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap();
    assert!(log.iter().any(|(_, m)| m.msg_id() == "boot-1"
        && matches!(m.response_body(), Some(RespType::NotifyResp(_)))));
}

#[test]
fn a_status_poll_that_overtakes_the_value_change_still_reports_it() {
    const STATUS: &str = "Device.SoftwareModules.ExecutionUnit.4.Status";
    let script: Arc<Script> = Arc::new(|_: &str, m: &Msg| {
        if let Some(r) = ok_add(m) {
            return vec![r];
        }
        match m.request_body() {
            // The poll of the Status sees Active; the agent's ValueChange comes just after.
            Some(request::ReqType::Get(g)) if g.param_paths == [STATUS] => vec![
                get_resp(
                    m,
                    &[(
                        "Device.SoftwareModules.ExecutionUnit.4.",
                        "Status",
                        "Active",
                    )],
                ),
                Msg::notify_value_change("vc-1", "self::ctl-vc", false, STATUS, "Active"),
            ],
            Some(request::ReqType::Get(_)) => vec![get_resp(
                m,
                &[("Device.SoftwareModules.ExecutionUnit.4.", "EUID", "eu-9")],
            )],
            Some(request::ReqType::Operate(o)) => vec![operated(m, o)],
            _ => vec![],
        }
    });
    let (mut ctl, _) = rig(script);
    let out = start_eu_9(&mut ctl);
    assert!(out[0].ok, "{:?}", out[0]);
    assert!(out[0]
        .rows
        .contains(&(STATUS.to_string(), "Active".to_string())));
    assert!(
        out[0]
            .events
            .iter()
            .any(|e| e.kind == "ValueChange" && e.path == STATUS && e.params["value"] == "Active"),
        "{:?}",
        out[0].events
    );
}
