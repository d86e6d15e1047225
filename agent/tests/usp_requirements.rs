//! TR-369 1.4 requirements checked for usp/CONFORMANCE.md that no other test shows: search
//! expressions as the specification writes them (R-ARC.9a whitespace, `~=`, typed constants),
//! unique keys that stay unique under Set (R-KEY.2), GetSupportedDM's element paths and flags,
//! ValueChange for any referenced parameter (R-NOT.0, TR-181 Subscription), and the controller's
//! NotifyResp (R-NOT.8, R-NOT.10).

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/mod.rs"]
mod common;

use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentd::World;
use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::usp::config::{ControllerConfig, DeviceInfoConfig, Role, UspConfig};
use cpevisor_agent::usp::dm::{DataModel, RebootHook};
use cpevisor_agent::usp::endpoint::Endpoint;
use cpevisor_controller::engine::{Controller, Inbound, Sender};
use cpevisor_usp::proto::get_supported_dm_resp::RequestedObjectResult;
use cpevisor_usp::proto::{
    add, notify, request, response, set, GetResp, GetSupportedDm, Msg, Record,
};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits};

const AGENT_ID: &str = "os::012345-cpe0009";
const CTL: &str = "self::ctl-req";

fn endpoint(w: &World) -> Endpoint {
    let cfg = AgentConfig::load(&w.config).expect("config");
    let agent = Arc::new(Agent::open(&w.state, cfg).expect("agent"));
    let usp = UspConfig {
        endpoint_id: AGENT_ID.into(),
        controllers: vec![ControllerConfig {
            endpoint_id: CTL.into(),
            role: Role::FullAccess,
            identity: None,
            reply_to: None,
        }],
        device_info: DeviceInfoConfig::default(),
    };
    let dir = w.root.join("usp-state");
    std::fs::create_dir_all(&dir).unwrap();
    let hook: RebootHook = Arc::new(|| Ok(()));
    Endpoint::new(DataModel::open(agent, usp, &dir, hook).expect("data model"))
}

/// Sends `msg` as the controller; returns the one reply.
fn send(ep: &mut Endpoint, msg: &Msg) -> Msg {
    let limits = Limits::default();
    let bytes = encode_record(&Record::no_session_msg(AGENT_ID, CTL, msg), &limits).unwrap();
    let mut out = ep.handle_record(&bytes, None);
    assert_eq!(out.len(), 1, "one reply to {msg:?}");
    let (to, b) = out.remove(0);
    assert_eq!(to, CTL);
    let rec = decode_record(&b, CTL, &limits).unwrap();
    let reply = decode_msg(rec.no_session_payload().unwrap(), &limits).unwrap();
    assert_eq!(reply.msg_id(), msg.msg_id());
    reply
}

fn get(ep: &mut Endpoint, path: &str) -> GetResp {
    match send(ep, &Msg::get("g", [path], 0)).response_body() {
        Some(response::RespType::GetResp(r)) => r.clone(),
        other => panic!("{path}: not a GetResp: {other:?}"),
    }
}

/// The values of `param` that `path` (ending in `.param`) resolves to, sorted; panics on an
/// error code.
fn values(ep: &mut Endpoint, path: &str) -> Vec<String> {
    let r = get(ep, path);
    let res = &r.req_path_results[0];
    assert_eq!(res.err_code, 0, "{path}: {}", res.err_msg);
    let name = path.rsplit('.').next().unwrap();
    let mut v: Vec<String> = res
        .resolved_path_results
        .iter()
        .map(|p| p.result_params[name].clone())
        .collect();
    v.sort();
    v
}

fn subscribe(ep: &mut Endpoint, id: &str, refs: &str, enable: bool) {
    subscribe_to(ep, id, "ValueChange", refs, enable)
}

fn subscribe_to(ep: &mut Endpoint, id: &str, notif_type: &str, refs: &str, enable: bool) {
    let ps = |param: &str, value: &str| add::CreateParamSetting {
        param: param.into(),
        value: value.into(),
        required: true,
    };
    let msg = Msg::add(
        format!("add-{id}"),
        false,
        vec![add::CreateObject {
            obj_path: "Device.LocalAgent.Subscription.".into(),
            param_settings: vec![
                ps("ID", id),
                ps("NotifType", notif_type),
                ps("ReferenceList", refs),
                ps("Enable", if enable { "true" } else { "false" }),
            ],
        }],
    );
    assert!(
        matches!(
            send(ep, &msg).response_body(),
            Some(response::RespType::AddResp(_))
        ),
        "subscription {id} not created"
    );
}

#[test]
fn search_expressions_as_the_specification_writes_them() {
    let w = World::new("usp-req-search");
    let mut ep = endpoint(&w);
    subscribe(
        &mut ep,
        "a",
        "Device.DeviceInfo.,Device.SoftwareModules.",
        true,
    );
    subscribe(&mut ep, "b", "Device.SoftwareModules.", false);

    // R-ARC.9a: whitespace on either side of the operator.
    assert_eq!(
        values(
            &mut ep,
            "Device.LocalAgent.Controller.[EndpointID == \"self::ctl-req\"].AssignedRole"
        ),
        ["FullAccess"]
    );
    // `~=`: a list holds the element (an exact element, not a substring).
    let sub = "Device.LocalAgent.Subscription";
    assert_eq!(
        values(
            &mut ep,
            &format!("{sub}.[ReferenceList~=\"Device.DeviceInfo.\"].ID")
        ),
        ["a"]
    );
    assert_eq!(
        values(
            &mut ep,
            &format!("{sub}.[ReferenceList~=\"Device.SoftwareModules.\"].ID")
        ),
        ["a", "b"]
    );
    assert!(values(&mut ep, &format!("{sub}.[ReferenceList~=\"Device.\"].ID")).is_empty());
    // Booleans: 1 and 0 are true and false.
    assert_eq!(values(&mut ep, &format!("{sub}.[Enable==1].ID")), ["a"]);
    assert_eq!(
        values(&mut ep, &format!("{sub}.[Enable==0 && ID==\"b\"].ID")),
        ["b"]
    );
    // A dateTime constant, unquoted: every subscription was created after 2000.
    assert_eq!(
        values(
            &mut ep,
            &format!("{sub}.[CreationDate>2000-01-01T00:00:00Z].ID")
        ),
        ["a", "b"]
    );
}

#[test]
fn a_set_cannot_make_two_subscriptions_share_their_unique_key() {
    let w = World::new("usp-req-keys");
    let mut ep = endpoint(&w);
    subscribe(&mut ep, "a", "Device.SoftwareModules.", false);
    subscribe(&mut ep, "b", "Device.SoftwareModules.", false);
    let set_id = |obj: &str, id: &str| {
        Msg::set(
            "s",
            false,
            vec![set::UpdateObject {
                obj_path: obj.into(),
                param_settings: vec![set::UpdateParamSetting {
                    param: "ID".into(),
                    value: id.into(),
                    required: true,
                }],
            }],
        )
    };
    // R-KEY.2: (ID, Recipient) identifies a subscription; b may not take a's ID.
    let reply = send(&mut ep, &set_id("Device.LocalAgent.Subscription.2.", "a"));
    let err = reply
        .error_body()
        .unwrap_or_else(|| panic!("not an Error: {reply:?}"));
    assert_eq!(err.err_code, 7025, "{err:?}");
    assert_eq!(
        values(&mut ep, "Device.LocalAgent.Subscription.*.ID"),
        ["a", "b"]
    );
    // A new, unused ID is fine, and so is setting an instance's own ID again.
    let reply = send(&mut ep, &set_id("Device.LocalAgent.Subscription.2.", "c"));
    assert!(reply.error_body().is_none(), "{reply:?}");
    let reply = send(&mut ep, &set_id("Device.LocalAgent.Subscription.1.", "a"));
    assert!(reply.error_body().is_none(), "{reply:?}");
    assert_eq!(
        values(&mut ep, "Device.LocalAgent.Subscription.*.ID"),
        ["a", "c"]
    );
}

#[test]
fn controller_notify_resp_echoes_the_subscription_id() {
    let limits = Limits::default();
    let (in_tx, in_rx) = sync_channel::<Inbound>(16);
    let (out_tx, out_rx) = channel::<(String, Vec<u8>)>();
    let out_tx = Mutex::new(out_tx);
    let send: Sender = Box::new(move |topic: &str, bytes: Vec<u8>| {
        out_tx
            .lock()
            .unwrap()
            .send((topic.to_string(), bytes))
            .map_err(|e| e.to_string())
    });
    let mut ctl = Controller::new(CTL, "usp/agent/{id}", send, in_rx);
    let notify = |id: &str, sub: &str, send_resp: bool| {
        let msg = Msg::notify_event(id, sub, send_resp, "Device.", "Boot!", Default::default());
        Inbound {
            payload: encode_record(&Record::no_session_msg(CTL, AGENT_ID, &msg), &limits).unwrap(),
            response_topic: Some(format!("usp/agent/{AGENT_ID}")),
        }
    };
    in_tx.send(notify("n-quiet", "sub-q", false)).unwrap();
    in_tx.send(notify("n-1", "sub-7", true)).unwrap();
    drop(in_tx);
    // Returns when the inbound channel is drained and closed.
    ctl.listen(Duration::from_secs(30));
    drop(ctl);
    let sent: Vec<Msg> = out_rx
        .iter()
        .map(|(topic, b)| {
            assert_eq!(topic, format!("usp/agent/{AGENT_ID}"));
            let rec = decode_record(&b, AGENT_ID, &limits).unwrap();
            decode_msg(rec.no_session_payload().unwrap(), &limits).unwrap()
        })
        .collect();
    // R-NOT.8: nothing for send_resp=false; R-NOT.10: the NotifyResp names the subscription.
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg_id(), "n-1");
    match sent[0].response_body() {
        Some(response::RespType::NotifyResp(r)) => assert_eq!(r.subscription_id, "sub-7"),
        other => panic!("not a NotifyResp: {other:?}"),
    }
}

fn supported(ep: &mut Endpoint, path: &str, unique_keys: bool) -> RequestedObjectResult {
    let msg = Msg::request(
        "gsdm",
        request::ReqType::GetSupportedDm(GetSupportedDm {
            obj_paths: vec![path.into()],
            first_level_only: false,
            return_commands: true,
            return_events: true,
            return_params: true,
            return_unique_key_sets: unique_keys,
        }),
    );
    match send(ep, &msg).response_body() {
        Some(response::RespType::GetSupportedDmResp(r)) => r.req_obj_results[0].clone(),
        other => panic!("{path}: not a GetSupportedDMResp: {other:?}"),
    }
}

#[test]
fn get_supported_dm_takes_element_paths_and_honours_its_flags() {
    let w = World::new("usp-req-gsdm");
    let mut ep = endpoint(&w);
    // USP 1.3+: a command, event or parameter path reports that element of its object only.
    let r = supported(&mut ep, "Device.SoftwareModules.InstallDU()", true);
    assert_eq!(r.err_code, 0, "{}", r.err_msg);
    assert_eq!(r.supported_objs.len(), 1, "{r:?}");
    let o = &r.supported_objs[0];
    assert_eq!(o.supported_obj_path, "Device.SoftwareModules.");
    let cmds: Vec<&str> = o
        .supported_commands
        .iter()
        .map(|c| c.command_name.as_str())
        .collect();
    assert_eq!(cmds, ["InstallDU()"]);
    assert!(
        o.supported_params.is_empty() && o.supported_events.is_empty(),
        "{o:?}"
    );

    let r = supported(
        &mut ep,
        "Device.LocalAgent.Subscription.{i}.ReferenceList",
        true,
    );
    assert_eq!(r.err_code, 0, "{}", r.err_msg);
    let o = &r.supported_objs[0];
    assert_eq!(o.supported_obj_path, "Device.LocalAgent.Subscription.{i}.");
    assert!(o.is_multi_instance);
    let params: Vec<&str> = o
        .supported_params
        .iter()
        .map(|p| p.param_name.as_str())
        .collect();
    assert_eq!(params, ["ReferenceList"]);
    assert!(
        o.unique_key_sets.is_empty() && o.supported_commands.is_empty(),
        "{o:?}"
    );

    let r = supported(&mut ep, "Device.Boot!", true);
    assert_eq!(r.err_code, 0, "{}", r.err_msg);
    assert_eq!(r.supported_objs[0].supported_events[0].event_name, "Boot!");
    assert_eq!(r.supported_objs[0].supported_events.len(), 1);
    assert!(r.supported_objs[0].supported_commands.is_empty());

    // unique_key_sets only when return_unique_key_sets asks for them.
    let with = supported(&mut ep, "Device.LocalAgent.Controller.", true);
    assert_eq!(
        with.supported_objs[0].unique_key_sets[0].key_names,
        ["EndpointID"]
    );
    let without = supported(&mut ep, "Device.LocalAgent.Controller.", false);
    assert!(
        without.supported_objs[0].unique_key_sets.is_empty(),
        "{without:?}"
    );

    // An instantiated path: the object must exist.
    assert_eq!(
        supported(&mut ep, "Device.LocalAgent.Controller.1.", true).err_code,
        0
    );
    assert_eq!(
        supported(&mut ep, "Device.LocalAgent.Controller.9.", true).err_code,
        7026
    );
    assert_eq!(
        supported(&mut ep, "Device.SoftwareModules.Nothing()", true).err_code,
        7026
    );
}

/// The Notify messages the endpoint has for the controller now.
fn notifies(ep: &mut Endpoint) -> Vec<notify::Notification> {
    let limits = Limits::default();
    ep.notifications()
        .into_iter()
        .filter_map(|(to, b)| {
            assert_eq!(to, CTL);
            let rec = decode_record(&b, CTL, &limits).unwrap();
            let msg = decode_msg(rec.no_session_payload().unwrap(), &limits).unwrap();
            match msg.request_body() {
                Some(request::ReqType::Notify(n)) => {
                    assert_eq!(n.subscription_id, "vc");
                    n.notification.clone()
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn value_change_for_any_referenced_parameter() {
    let w = World::new("usp-req-vc");
    let mut ep = endpoint(&w);
    subscribe(
        &mut ep,
        "vc",
        "Device.SoftwareModules.ExecEnv.1.Enable,Device.DeviceInfo.",
        true,
    );
    assert!(notifies(&mut ep).is_empty(), "a first look is no change");
    let msg = Msg::set(
        "off",
        false,
        vec![set::UpdateObject {
            obj_path: "Device.SoftwareModules.ExecEnv.1.".into(),
            param_settings: vec![set::UpdateParamSetting {
                param: "Enable".into(),
                value: "false".into(),
                required: true,
            }],
        }],
    );
    let reply = send(&mut ep, &msg);
    assert!(reply.error_body().is_none(), "{reply:?}");
    // Only the referenced parameter that changed; DeviceInfo's UpTime moves by itself and is
    // not watched.
    let notes = notifies(&mut ep);
    assert_eq!(
        notes,
        [notify::Notification::ValueChange(notify::ValueChange {
            param_path: "Device.SoftwareModules.ExecEnv.1.Enable".into(),
            param_value: "false".into(),
        })]
    );
    // GetSupportedDM says which parameters ValueChange ignores.
    let r = supported(&mut ep, "Device.DeviceInfo.UpTime", false);
    assert_eq!(
        r.supported_objs[0].supported_params[0].value_change, 2,
        "WILL_IGNORE"
    );
    let r = supported(&mut ep, "Device.SoftwareModules.ExecEnv.{i}.Enable", false);
    assert_eq!(
        r.supported_objs[0].supported_params[0].value_change, 1,
        "ALLOWED"
    );
}
