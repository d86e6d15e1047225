//! The USP endpoint against a real Agent (process runner, packages served over HTTP on
//! loopback), driven with encoded Records as a controller would send them: every command and
//! notification of the data model, every error code, roles, and Records that must be dropped.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::usp::config::{ControllerConfig, DeviceInfoConfig, Role, UspConfig};
use cpevisor_agent::usp::dm::{DataModel, RebootHook};
use cpevisor_agent::usp::endpoint::Endpoint;
use cpevisor_usp::proto::{add, notify, operate_resp, request, response, set, Msg, Record};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits};

const AGENT_ID: &str = "os::012345-cpe0001";
const FULL: &str = "self::ctl-full";
const FULL_CN: &str = "ctl-full.example";
const RO: &str = "self::ctl-ro";

struct Rig {
    ep: Endpoint,
    agent: Arc<Agent>,
    reboots: Arc<Mutex<u32>>,
    /// When set, the reboot hook fails (as a board whose reboot syscall is refused).
    reboot_fails: Arc<AtomicBool>,
    next: u64,
    usp_dir: std::path::PathBuf,
}

fn usp_config() -> UspConfig {
    UspConfig {
        endpoint_id: AGENT_ID.into(),
        controllers: vec![
            ControllerConfig {
                endpoint_id: FULL.into(),
                role: Role::FullAccess,
                identity: Some(FULL_CN.into()),
                reply_to: None,
            },
            ControllerConfig {
                endpoint_id: RO.into(),
                role: Role::ReadOnly,
                identity: None,
                reply_to: None,
            },
        ],
        device_info: DeviceInfoConfig {
            manufacturer: "Example Networks".into(),
            manufacturer_oui: "012345".into(),
            model_name: "qemu-aarch64-virt".into(),
            product_class: "HomeGateway".into(),
            serial_number: "cpe0001".into(),
        },
    }
}

impl Rig {
    fn open(w: &World) -> Rig {
        let cfg = AgentConfig::load(&w.config).expect("config");
        let agent = Arc::new(Agent::open(&w.state, cfg).expect("agent"));
        Rig::with_agent(w, agent)
    }

    fn with_agent(w: &World, agent: Arc<Agent>) -> Rig {
        let reboots = Arc::new(Mutex::new(0u32));
        let r = reboots.clone();
        let reboot_fails = Arc::new(AtomicBool::new(false));
        let fails = reboot_fails.clone();
        let hook: RebootHook = Arc::new(move || {
            if fails.load(Ordering::SeqCst) {
                return Err("reboot(2): operation not permitted".into());
            }
            *r.lock().unwrap() += 1;
            Ok(())
        });
        let usp_dir = w.root.join("usp-state");
        std::fs::create_dir_all(&usp_dir).unwrap();
        let dm = DataModel::open(agent.clone(), usp_config(), &usp_dir, hook).expect("dm");
        Rig {
            ep: Endpoint::new(dm),
            agent,
            reboots,
            reboot_fails,
            next: 0,
            usp_dir,
        }
    }

    /// Sends `msg` from `from` (with the transport identity `cn`); returns the decoded replies.
    fn send_as(&mut self, from: &str, cn: Option<&str>, msg: &Msg) -> Vec<Msg> {
        let bytes = enc(&Record::no_session_msg(AGENT_ID, from, msg));
        self.ep
            .handle_record(&bytes, cn)
            .into_iter()
            .map(|(to, b)| {
                assert_eq!(to, from, "replies go to the sender");
                open_record(&b, from)
            })
            .collect()
    }

    fn send(&mut self, msg: &Msg) -> Msg {
        let mut r = self.send_as(FULL, Some(FULL_CN), msg);
        assert_eq!(r.len(), 1, "one reply to {msg:?}");
        let reply = r.remove(0);
        assert_eq!(reply.msg_id(), msg.msg_id());
        reply
    }

    fn id(&mut self) -> String {
        self.next += 1;
        format!("m{}", self.next)
    }

    fn get(&mut self, paths: &[&str]) -> cpevisor_usp::proto::GetResp {
        let id = self.id();
        match self
            .send(&Msg::get(id, paths.iter().copied(), 0))
            .response_body()
        {
            Some(response::RespType::GetResp(r)) => r.clone(),
            other => panic!("not a GetResp: {other:?}"),
        }
    }

    /// The value of one parameter path (panics when it does not resolve to exactly one).
    fn value(&mut self, path: &str) -> String {
        let r = self.get(&[path]);
        let res = &r.req_path_results[0];
        assert_eq!(res.err_code, 0, "{path}: {}", res.err_msg);
        assert_eq!(res.resolved_path_results.len(), 1, "{path}: {res:?}");
        let name = path.rsplit('.').next().unwrap();
        res.resolved_path_results[0].result_params[name].clone()
    }

    fn operate(&mut self, cmd: &str, key: &str, args: &[(&str, &str)]) -> Msg {
        let id = self.id();
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.send(&Msg::operate(id, cmd, key, true, args))
    }

    /// Subscribes (as "oc") to the OperationComplete of InstallDU().
    fn subscribe_install_complete(&mut self) {
        self.subscribe(
            "oc",
            "OperationComplete",
            "Device.SoftwareModules.InstallDU()",
            false,
        );
    }

    /// Runs InstallDU() asynchronously as `key` and waits (20 s at most) for its
    /// OperationComplete; an OperationComplete subscription must be in place.
    fn install_du(&mut self, key: &str, args: &[(&str, &str)]) -> notify::OperationComplete {
        use operate_resp::operation_result::OperationResp as R;
        let m = self.operate("Device.SoftwareModules.InstallDU()", key, args);
        assert!(matches!(op_result(&m), R::ReqObjPath(_)), "{key}: {m:?}");
        let mut seen = Vec::new();
        self.notifications_until(20, &mut seen, |s| {
            oper_complete(s, "InstallDU()", key).is_some()
        });
        oper_complete(&seen, "InstallDU()", key).unwrap()
    }

    fn subscribe(&mut self, id: &str, notif_type: &str, refs: &str, persistent: bool) -> String {
        let mid = self.id();
        let p = |k: &str, v: &str| add::CreateParamSetting {
            param: k.into(),
            value: v.into(),
            required: true,
        };
        let msg = Msg::add(
            mid,
            false,
            vec![add::CreateObject {
                obj_path: "Device.LocalAgent.Subscription.".into(),
                param_settings: vec![
                    p("ID", id),
                    p("NotifType", notif_type),
                    p("ReferenceList", refs),
                    p("Enable", "true"),
                    p("Persistent", if persistent { "true" } else { "false" }),
                ],
            }],
        );
        match self.send(&msg).response_body() {
            Some(response::RespType::AddResp(r)) => {
                use cpevisor_usp::proto::add_resp::created_object_result::operation_status::OperStatus;
                match r.created_obj_results[0]
                    .oper_status
                    .as_ref()
                    .unwrap()
                    .oper_status
                    .as_ref()
                    .unwrap()
                {
                    OperStatus::OperSuccess(s) => s.instantiated_path.clone(),
                    OperStatus::OperFailure(f) => panic!("subscribe failed: {f:?}"),
                }
            }
            other => panic!("not an AddResp: {other:?}"),
        }
    }

    /// Collects Notify bodies (with their subscription IDs) until `done` holds or `secs` pass.
    fn notifications_until(
        &mut self,
        secs: u64,
        seen: &mut Vec<(String, notify::Notification)>,
        done: impl Fn(&[(String, notify::Notification)]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            for (to, b) in self.ep.notifications() {
                let m = open_record(&b, &to);
                let Some(request::ReqType::Notify(n)) = m.request_body() else {
                    panic!("not a Notify: {m:?}")
                };
                assert_eq!(
                    to, FULL,
                    "subscriptions belong to the full-access controller"
                );
                seen.push((n.subscription_id.clone(), n.notification.clone().unwrap()));
            }
            if done(seen) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out; seen: {seen:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A controller's NotifyResp to the Notify `msg_id`.
fn notify_resp(msg_id: &str) -> Msg {
    Msg::response(
        msg_id,
        response::RespType::NotifyResp(cpevisor_usp::proto::NotifyResp {
            subscription_id: String::new(),
        }),
    )
}

fn enc(r: &Record) -> Vec<u8> {
    encode_record(r, &Limits::default()).unwrap()
}

fn open_record(bytes: &[u8], to: &str) -> Msg {
    let rec = decode_record(bytes, to, &Limits::default()).expect("record");
    assert_eq!(rec.from_id, AGENT_ID);
    decode_msg(
        rec.no_session_payload().expect("no-session"),
        &Limits::default(),
    )
    .expect("msg")
}

fn error_of(m: &Msg) -> (u32, String) {
    let e = m
        .error_body()
        .unwrap_or_else(|| panic!("not an Error: {m:?}"));
    (e.err_code, e.err_msg.clone())
}

/// The single OperateResp result of `m`.
fn op_result(m: &Msg) -> operate_resp::operation_result::OperationResp {
    match m.response_body() {
        Some(response::RespType::OperateResp(r)) => {
            assert_eq!(r.operation_results.len(), 1, "{r:?}");
            r.operation_results[0].operation_resp.clone().unwrap()
        }
        other => panic!("not an OperateResp: {other:?}"),
    }
}

fn oper_complete(
    seen: &[(String, notify::Notification)],
    command: &str,
    key: &str,
) -> Option<notify::OperationComplete> {
    seen.iter().find_map(|(_, n)| match n {
        notify::Notification::OperComplete(o)
            if o.command_name == command && o.command_key == key =>
        {
            Some(o.clone())
        }
        _ => None,
    })
}

fn output_of(o: &notify::OperationComplete) -> BTreeMap<String, String> {
    use notify::operation_complete::OperationResp;
    match o.operation_resp.as_ref().unwrap() {
        OperationResp::ReqOutputArgs(a) => a.output_args.clone(),
        OperationResp::CmdFailure(f) => panic!("command failed: {} {}", f.err_code, f.err_msg),
    }
}

fn failure_of(o: &notify::OperationComplete) -> (u32, String) {
    use notify::operation_complete::OperationResp;
    match o.operation_resp.as_ref().unwrap() {
        OperationResp::CmdFailure(f) => (f.err_code, f.err_msg.clone()),
        OperationResp::ReqOutputArgs(a) => panic!("command succeeded: {a:?}"),
    }
}

fn du_events(seen: &[(String, notify::Notification)]) -> Vec<BTreeMap<String, String>> {
    seen.iter()
        .filter_map(|(_, n)| match n {
            notify::Notification::Event(e) if e.event_name == "DUStateChange!" => {
                assert_eq!(e.obj_path, "Device.SoftwareModules.");
                Some(e.params.clone())
            }
            _ => None,
        })
        .collect()
}

fn wait_value(rig: &mut Rig, path: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = rig.value(path);
        if v == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} is {v:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_of(dir: &Path) -> Vec<String> {
    common::list_files(dir)
}

#[test]
fn device_info_local_agent_and_supported_dm() {
    let w = World::new("usp-info");
    let mut rig = Rig::open(&w);
    assert_eq!(
        rig.value("Device.DeviceInfo.Manufacturer"),
        "Example Networks"
    );
    assert_eq!(
        rig.value("Device.DeviceInfo.ModelName"),
        "qemu-aarch64-virt"
    );
    assert_eq!(
        rig.value("Device.DeviceInfo.SoftwareVersion"),
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        rig.value("Device.DeviceInfo.UpTime")
            .parse::<u32>()
            .unwrap()
            > 0
    );
    let total: u64 = rig
        .value("Device.DeviceInfo.MemoryStatus.Total")
        .parse()
        .unwrap();
    let free: u64 = rig
        .value("Device.DeviceInfo.MemoryStatus.Free")
        .parse()
        .unwrap();
    assert!(total > 0 && free > 0 && free <= total, "{total} {free}");
    assert_eq!(rig.value("Device.LocalAgent.EndpointID"), AGENT_ID);
    let id = rig.id();
    let m = rig.send(&Msg::get_supported_protocol(id, "1.0,1.3"));
    let Some(response::RespType::GetSupportedProtocolResp(p)) = m.response_body() else {
        panic!("{m:?}")
    };
    assert!(p.agent_supported_protocol_versions.contains("1.3"));

    // Partial path with max_depth: DeviceInfo's own parameters only at depth 1.
    let id = rig.id();
    let m = rig.send(&Msg::get(id, ["Device.DeviceInfo."], 1));
    let Some(response::RespType::GetResp(r)) = m.response_body() else {
        panic!()
    };
    let paths: Vec<&str> = r.req_path_results[0]
        .resolved_path_results
        .iter()
        .map(|x| x.resolved_path.as_str())
        .collect();
    assert_eq!(paths, ["Device.DeviceInfo."]);
    let id = rig.id();
    let m = rig.send(&Msg::get(id, ["Device.DeviceInfo."], 0));
    let Some(response::RespType::GetResp(r)) = m.response_body() else {
        panic!()
    };
    assert_eq!(r.req_path_results[0].resolved_path_results.len(), 2);

    // Controllers and their roles, with stable instance numbers.
    let role =
        rig.value("Device.LocalAgent.Controller.[EndpointID==\"self::ctl-ro\"].AssignedRole");
    assert_eq!(role, "ReadOnly");
    let id = rig.id();
    let m = rig.send(&Msg::get_instances(
        id,
        ["Device.LocalAgent.Controller."],
        false,
    ));
    let Some(response::RespType::GetInstancesResp(r)) = m.response_body() else {
        panic!()
    };
    let insts = &r.req_path_results[0].curr_insts;
    assert_eq!(insts.len(), 2);
    assert_eq!(
        insts[0].instantiated_obj_path,
        "Device.LocalAgent.Controller.1."
    );
    assert_eq!(insts[0].unique_keys["EndpointID"], FULL);
    let id = rig.id();
    let m = rig.send(&Msg::get_instances(
        id,
        ["Device.SoftwareModules.ExecEnv."],
        true,
    ));
    let Some(response::RespType::GetInstancesResp(r)) = m.response_body() else {
        panic!()
    };
    assert_eq!(
        r.req_path_results[0].curr_insts[0].unique_keys["Name"],
        "jail0"
    );

    // The supported model: commands with their arguments, events, access.
    let id = rig.id();
    let m = rig.send(&Msg::get_supported_dm(
        id,
        ["Device.SoftwareModules."],
        false,
    ));
    let Some(response::RespType::GetSupportedDmResp(r)) = m.response_body() else {
        panic!()
    };
    let objs = &r.req_obj_results[0].supported_objs;
    let sm = objs
        .iter()
        .find(|o| o.supported_obj_path == "Device.SoftwareModules.")
        .unwrap();
    let install = sm
        .supported_commands
        .iter()
        .find(|c| c.command_name == "InstallDU()")
        .unwrap();
    assert_eq!(
        install.input_arg_names,
        [
            "URL",
            "UUID",
            "Username",
            "Password",
            "ExecutionEnvRef",
            "X_CPEVISOR_NetworkConfig"
        ]
    );
    assert_eq!(install.command_type, 2, "async");
    let ev = &sm.supported_events[0];
    assert_eq!(ev.event_name, "DUStateChange!");
    assert!(ev.arg_names.contains(&"Fault.FaultCode".to_string()));
    let du = objs
        .iter()
        .find(|o| o.supported_obj_path == "Device.SoftwareModules.DeploymentUnit.{i}.")
        .unwrap();
    assert!(du.is_multi_instance);
    assert_eq!(du.unique_key_sets[0].key_names, ["UUID"]);
    let cmds: Vec<&str> = du
        .supported_commands
        .iter()
        .map(|c| c.command_name.as_str())
        .collect();
    assert_eq!(cmds, ["Update()", "Uninstall()"]);
    let eu = objs
        .iter()
        .find(|o| o.supported_obj_path == "Device.SoftwareModules.ExecutionUnit.{i}.")
        .unwrap();
    let srs = eu
        .supported_commands
        .iter()
        .find(|c| c.command_name == "SetRequestedState()")
        .unwrap();
    assert_eq!(srs.command_type, 1, "sync");
    let env = objs
        .iter()
        .find(|o| o.supported_obj_path == "Device.SoftwareModules.ExecEnv.{i}.")
        .unwrap();
    let enable = env
        .supported_params
        .iter()
        .find(|p| p.param_name == "Enable")
        .unwrap();
    assert_eq!(enable.access, 1, "ExecEnv.Enable is writable");
    let id = rig.id();
    let m = rig.send(&Msg::get_supported_dm(
        id,
        ["Device.LocalAgent.Subscription.{i}."],
        true,
    ));
    let Some(response::RespType::GetSupportedDmResp(r)) = m.response_body() else {
        panic!()
    };
    assert_eq!(
        r.req_obj_results[0].supported_objs[0].access, 1,
        "add/delete"
    );
    let id = rig.id();
    let m = rig.send(&Msg::get_supported_dm(id, ["Device."], true));
    let Some(response::RespType::GetSupportedDmResp(r)) = m.response_body() else {
        panic!()
    };
    let dev = &r.req_obj_results[0].supported_objs[0];
    assert_eq!(dev.supported_commands[0].command_name, "Reboot()");
    assert_eq!(dev.supported_events[0].event_name, "Boot!");
    assert_eq!(
        r.req_obj_results[0].supported_objs.len(),
        4,
        "Device. and its 3 children"
    );
}

#[test]
fn du_lifecycle_through_operate_with_notifications() {
    let w = World::new("usp-life");
    let url1 = w.publish(&App::new("dnsfilter", "1.0"), "dnsfilter-1.0.cpkg");
    let url2 = w.publish(&App::new("dnsfilter", "2.0"), "dnsfilter-2.0.cpkg");
    let mut rig = Rig::open(&w);
    rig.subscribe("oc", "OperationComplete", "Device.SoftwareModules.", false);
    rig.subscribe(
        "du",
        "Event",
        "Device.SoftwareModules.DUStateChange!",
        false,
    );
    rig.subscribe(
        "vc",
        "ValueChange",
        "Device.SoftwareModules.ExecutionUnit.*.Status",
        false,
    );
    rig.subscribe(
        "new",
        "ObjectCreation",
        "Device.SoftwareModules.DeploymentUnit.",
        false,
    );
    rig.subscribe(
        "gone",
        "ObjectDeletion",
        "Device.SoftwareModules.DeploymentUnit.",
        false,
    );
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "5"
    );

    // InstallDU: asynchronous, a Request object, then OperationComplete and DUStateChange!.
    let m = rig.operate(
        "Device.SoftwareModules.InstallDU()",
        "k-install",
        &[
            ("URL", &url1),
            ("ExecutionEnvRef", "Device.SoftwareModules.ExecEnv.1"),
        ],
    );
    use operate_resp::operation_result::OperationResp as R;
    assert_eq!(
        op_result(&m),
        R::ReqObjPath("Device.LocalAgent.Request.1".into())
    );
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "InstallDU()", "k-install").is_some()
            && !du_events(s).is_empty()
            && s.iter().any(|(id, _)| id == "new")
            && s.iter().any(|(_, n)| {
                matches!(n, notify::Notification::ValueChange(v) if v.param_value == "Active")
            })
    });
    let out = output_of(&oper_complete(&seen, "InstallDU()", "k-install").unwrap());
    let du_ref = out["DeploymentUnitRef"].clone();
    assert_eq!(du_ref, "Device.SoftwareModules.DeploymentUnit.1");
    assert_eq!(out["Version"], "1.0");
    let uuid = out["UUID"].clone();
    let ev = &du_events(&seen)[0];
    assert_eq!(ev["UUID"], uuid);
    assert_eq!(ev["DeploymentUnitRef"], du_ref);
    assert_eq!(ev["CurrentState"], "Installed");
    assert_eq!(ev["OperationPerformed"], "Install");
    assert_eq!(ev["Resolved"], "true");
    assert_eq!(ev["Fault.FaultCode"], "0");
    assert_eq!(
        ev["ExecutionUnitRefList"],
        "Device.SoftwareModules.ExecutionUnit.1"
    );
    assert!(ev["StartTime"].ends_with('Z') && ev["CompleteTime"].ends_with('Z'));
    let created = seen.iter().find_map(|(id, n)| match n {
        notify::Notification::ObjCreation(c) if id == "new" => Some(c.clone()),
        _ => None,
    });
    let created = created.unwrap();
    assert_eq!(created.obj_path, "Device.SoftwareModules.DeploymentUnit.1.");
    assert_eq!(created.unique_keys["UUID"], uuid);
    let vc = seen.iter().find_map(|(_, n)| match n {
        notify::Notification::ValueChange(v) => Some(v.clone()),
        _ => None,
    });
    assert_eq!(
        vc.unwrap().param_path,
        "Device.SoftwareModules.ExecutionUnit.1.Status"
    );
    assert_eq!(rig.value("Device.LocalAgent.RequestNumberOfEntries"), "0");

    // The model shows it, searchable.
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.[Name==\"dnsfilter\"].UUID"),
        uuid
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.1.ExecutionUnitList"),
        "Device.SoftwareModules.ExecutionUnit.1"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.1.ExecutionEnvRef"),
        "Device.SoftwareModules.ExecEnv.1"
    );
    wait_value(
        &mut rig,
        "Device.SoftwareModules.ExecutionUnit.1.Status",
        "Active",
        10,
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecEnv.1.AvailableMemory"),
        "49152"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecEnv.1.ActiveExecutionUnits"),
        "Device.SoftwareModules.ExecutionUnit.1"
    );
    // Flash, KiB: the package declares none (-1); its files are measured; without a budget
    // the ExecEnv has what its file system has.
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecutionUnit.1.AllocatedDiskSpace"),
        "-1"
    );
    let kib = |rig: &mut Rig, p: &str| -> i64 { rig.value(p).parse().unwrap() };
    assert!(
        kib(
            &mut rig,
            "Device.SoftwareModules.ExecutionUnit.1.DiskSpaceInUse"
        ) > 0
    );
    let allocated = kib(
        &mut rig,
        "Device.SoftwareModules.ExecEnv.1.AllocatedDiskSpace",
    );
    let available = kib(
        &mut rig,
        "Device.SoftwareModules.ExecEnv.1.AvailableDiskSpace",
    );
    assert!(
        0 < available && available <= allocated,
        "{available} of {allocated}"
    );
    let id = rig.id();
    let m = rig.send(&Msg::get(
        id,
        ["Device.SoftwareModules.ExecutionUnit.[Status==\"Idle\"].EUID"],
        0,
    ));
    let Some(response::RespType::GetResp(r)) = m.response_body() else {
        panic!()
    };
    assert!(
        r.req_path_results[0].resolved_path_results.is_empty(),
        "{r:?}"
    );

    // SetRequestedState and Restart: synchronous.
    let m = rig.operate(
        "Device.SoftwareModules.ExecutionUnit.1.SetRequestedState()",
        "",
        &[("RequestedState", "Idle")],
    );
    assert_eq!(op_result(&m), R::ReqOutputArgs(Default::default()));
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecutionUnit.1.Status"),
        "Idle"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecutionUnit.1.RequestedState"),
        "Idle"
    );
    let m = rig.operate("Device.SoftwareModules.ExecutionUnit.1.Restart()", "", &[]);
    let R::CmdFailure(f) = op_result(&m) else {
        panic!("{m:?}")
    };
    assert_eq!(f.err_code, 7229, "restart of an Idle EU: {}", f.err_msg);
    let m = rig.operate(
        "Device.SoftwareModules.ExecutionUnit.*.SetRequestedState()",
        "",
        &[("RequestedState", "Active")],
    );
    assert_eq!(op_result(&m), R::ReqOutputArgs(Default::default()));
    let m = rig.operate("Device.SoftwareModules.ExecutionUnit.1.Restart()", "", &[]);
    assert_eq!(op_result(&m), R::ReqOutputArgs(Default::default()));
    wait_value(
        &mut rig,
        "Device.SoftwareModules.ExecutionUnit.1.Status",
        "Active",
        10,
    );
    let mut seen = Vec::new();
    rig.notifications_until(5, &mut seen, |s| {
        s.iter().any(
            |(_, n)| matches!(n, notify::Notification::ValueChange(v) if v.param_value == "Idle"),
        )
    });

    // Update keeps the instance numbers.
    let m = rig.operate(&format!("{du_ref}.Update()"), "k-up", &[("URL", &url2)]);
    assert!(matches!(op_result(&m), R::ReqObjPath(_)), "{m:?}");
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "Update()", "k-up").is_some()
    });
    let oc = oper_complete(&seen, "Update()", "k-up").unwrap();
    assert_eq!(oc.obj_path, "Device.SoftwareModules.DeploymentUnit.1.");
    output_of(&oc);
    let ev = du_events(&seen);
    assert_eq!(ev[0]["OperationPerformed"], "Update");
    assert_eq!(ev[0]["Version"], "2.0");
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.1.Version"),
        "2.0"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.1.UUID"),
        uuid
    );

    // Uninstall: the object goes, ObjectDeletion and DUStateChange! say so.
    let m = rig.operate(&format!("{du_ref}.Uninstall()"), "k-rm", &[]);
    assert!(matches!(op_result(&m), R::ReqObjPath(_)), "{m:?}");
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "Uninstall()", "k-rm").is_some() && s.iter().any(|(id, _)| id == "gone")
    });
    output_of(&oper_complete(&seen, "Uninstall()", "k-rm").unwrap());
    let ev = du_events(&seen);
    assert_eq!(ev[0]["CurrentState"], "Uninstalled");
    assert_eq!(ev[0]["DeploymentUnitRef"], du_ref);
    assert_eq!(
        ev[0]["ExecutionUnitRefList"],
        "Device.SoftwareModules.ExecutionUnit.1"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnitNumberOfEntries"),
        "0"
    );

    // A second install gets a new number: numbers are never reused.
    let out = output_of(&rig.install_du("k2", &[("URL", &url1)]));
    assert_eq!(
        out["DeploymentUnitRef"],
        "Device.SoftwareModules.DeploymentUnit.2"
    );
    agentd::kill_apps_of(&w.root);
}

#[test]
fn failures_carry_fault_codes_and_change_nothing() {
    let w = World::new("usp-err");
    let url = w.publish(&App::new("voip", "1.0"), "voip-1.0.cpkg");
    let mut rig = Rig::open(&w);
    rig.subscribe_install_complete();
    use operate_resp::operation_result::OperationResp as R;

    // Asynchronous failures arrive in OperationComplete with the TR-181 fault code.
    let m = rig.operate(
        "Device.SoftwareModules.InstallDU()",
        "bad-url",
        &[("URL", "ftp://127.0.0.1/x")],
    );
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let missing = w.url("nothing-here.cpkg");
    let m = rig.operate(
        "Device.SoftwareModules.InstallDU()",
        "missing",
        &[("URL", &missing)],
    );
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "InstallDU()", "bad-url").is_some()
            && oper_complete(s, "InstallDU()", "missing").is_some()
    });
    assert_eq!(
        failure_of(&oper_complete(&seen, "InstallDU()", "bad-url").unwrap()).0,
        7004
    );
    let (code, msg) = failure_of(&oper_complete(&seen, "InstallDU()", "missing").unwrap());
    assert_eq!(code, 7033, "{msg}");

    // Synchronous argument errors: 7027 (an unknown argument is not one, R-OPR.6); an unknown
    // ExecEnv: 7223.
    for (args, code) in [
        (vec![], 7027),
        (
            vec![("URL", url.as_str()), ("Username", "u"), ("Password", "p")],
            7027,
        ),
        (vec![("URL", url.as_str()), ("UUID", "not-a-uuid")], 7027),
        (
            vec![
                ("URL", url.as_str()),
                ("ExecutionEnvRef", "Device.SoftwareModules.ExecEnv.7"),
            ],
            7223,
        ),
    ] {
        let m = rig.operate("Device.SoftwareModules.InstallDU()", "", &args);
        let R::CmdFailure(f) = op_result(&m) else {
            panic!("{args:?}: {m:?}")
        };
        assert_eq!(f.err_code, code, "{args:?}: {}", f.err_msg);
    }
    // A requested UUID that is not the package's: installed then taken out again, 7004.
    let (code, msg) = failure_of(&rig.install_du(
        "wrong-uuid",
        &[
            ("URL", &url),
            ("UUID", "00000000-0000-5000-8000-000000000000"),
        ],
    ));
    assert_eq!(code, 7004, "{msg}");
    assert!(msg.contains("uninstalled again"), "{msg}");
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnitNumberOfEntries"),
        "0"
    );

    let before_files = state_of(&w.state);
    let before_usp = state_of(&rig.usp_dir);
    let usp_json = rig.usp_dir.join("usp.json");
    let usp_before = (
        std::fs::read(&usp_json).unwrap(),
        std::fs::metadata(&usp_json).unwrap().modified().unwrap(),
    );
    let before_model = rig.get(&["Device."]);

    // Paths: syntax 7008, unknown 7026 (Get: also a missing instance, R-GET.0), Operate on a
    // missing instance 7016.
    let r = rig.get(&[
        "Device.Nope.",
        "Device.SoftwareModules..",
        "Device.SoftwareModules.DeploymentUnit.9.UUID",
    ]);
    assert_eq!(
        r.req_path_results[0].err_code, 7026,
        "{:?}",
        r.req_path_results[0]
    );
    assert_eq!(r.req_path_results[1].err_code, 7008);
    assert_eq!(r.req_path_results[2].err_code, 7026, "R-GET.0");
    let m = rig.operate(
        "Device.SoftwareModules.DeploymentUnit.9.Uninstall()",
        "",
        &[],
    );
    assert_eq!(error_of(&m).0, 7016);
    let m = rig.operate("Device.SoftwareModules.Explode()", "", &[]);
    assert_eq!(error_of(&m).0, 7026);
    let m = rig.operate(
        "Device.SoftwareModules.ExecutionUnit.1.SetRequestedState(",
        "",
        &[],
    );
    assert_eq!(error_of(&m).0, 7008);

    // Set: 7011 wrong type, 7012 bad value, 7013 read-only, 7016 missing, 7010 unknown param.
    let set = |obj: &str, param: &str, value: &str| {
        Msg::set(
            "s",
            false,
            vec![set::UpdateObject {
                obj_path: obj.into(),
                param_settings: vec![set::UpdateParamSetting {
                    param: param.into(),
                    value: value.into(),
                    required: true,
                }],
            }],
        )
    };
    for (obj, param, value, code) in [
        ("Device.SoftwareModules.ExecEnv.1.", "Enable", "maybe", 7011),
        (
            "Device.LocalAgent.Subscription.1.",
            "NotifType",
            "Everything",
            7012,
        ),
        (
            "Device.LocalAgent.Subscription.1.",
            "ReferenceList",
            "Device.Nope.",
            7012,
        ),
        ("Device.SoftwareModules.ExecEnv.1.", "Name", "other", 7013),
        ("Device.DeviceInfo.", "UpTime", "3", 7013),
        ("Device.SoftwareModules.ExecEnv.9.", "Enable", "false", 7016),
        ("Device.SoftwareModules.ExecEnv.1.", "Colour", "red", 7010),
    ] {
        let m = rig.send(&set(obj, param, value));
        let (c, msg) = error_of(&m);
        assert_eq!(c, code, "{obj}{param}={value}: {msg}");
        let e = m.error_body().unwrap();
        if code != 7016 {
            assert_eq!(e.param_errs.len(), 1, "{e:?}");
            assert_eq!(e.param_errs[0].param_path, format!("{obj}{param}"));
        }
    }
    // Add / Delete: only subscriptions.
    let addm = |obj: &str| {
        Msg::add(
            "a",
            false,
            vec![add::CreateObject {
                obj_path: obj.into(),
                param_settings: vec![],
            }],
        )
    };
    assert_eq!(
        error_of(&rig.send(&addm("Device.SoftwareModules.DeploymentUnit."))).0,
        7019
    );
    assert_eq!(error_of(&rig.send(&addm("Device.DeviceInfo."))).0, 7018);
    assert_eq!(error_of(&rig.send(&addm("Device.Nothing."))).0, 7026);
    let del = |p: &str| Msg::delete("d", false, [p]);
    assert_eq!(
        error_of(&rig.send(&del("Device.SoftwareModules.ExecEnv.1."))).0,
        7024
    );
    assert_eq!(error_of(&rig.send(&del("Device.DeviceInfo."))).0, 7018);

    assert_eq!(state_of(&w.state), before_files, "nothing changed on flash");
    assert_eq!(state_of(&rig.usp_dir), before_usp);
    let usp_after = (
        std::fs::read(&usp_json).unwrap(),
        std::fs::metadata(&usp_json).unwrap().modified().unwrap(),
    );
    assert!(
        usp_after == usp_before,
        "usp.json rewritten without a change"
    );
    let mut after = rig.get(&["Device."]);
    let mut before = before_model;
    for r in [&mut before, &mut after] {
        for rp in &mut r.req_path_results[0].resolved_path_results {
            // Clocks, free memory and free flash (bounded by the file system's free space,
            // which other writers on this machine move) change on their own.
            rp.result_params.remove("UpTime");
            rp.result_params.remove("Free");
            rp.result_params.remove("AvailableDiskSpace");
        }
    }
    assert_eq!(after, before, "nothing changed in the model");

    // Set that works: ExecEnv.Enable through the agent; a subscription's params.
    let m = rig.send(&set("Device.SoftwareModules.ExecEnv.1.", "Enable", "false"));
    assert!(
        matches!(m.response_body(), Some(response::RespType::SetResp(_))),
        "{m:?}"
    );
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecEnv.1.Status"),
        "Disabled"
    );
    let (code, msg) = failure_of(&rig.install_du(
        "disabled",
        &[
            ("URL", &url),
            ("ExecutionEnvRef", "Device.SoftwareModules.ExecEnv.1."),
        ],
    ));
    assert_eq!(code, 7230, "{msg}");
    let m = rig.operate(
        "Device.SoftwareModules.InstallDU()",
        "unheard",
        &[("URL", &url)],
    );
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let m = rig.send(&set(
        "Device.LocalAgent.Subscription.[ID==\"oc\"].",
        "Enable",
        "false",
    ));
    assert!(
        matches!(m.response_body(), Some(response::RespType::SetResp(_))),
        "{m:?}"
    );
    assert_eq!(
        rig.value("Device.LocalAgent.Subscription.1.Enable"),
        "false"
    );
    // A disabled subscription delivers nothing.
    std::thread::sleep(Duration::from_secs(1));
    let mut seen = Vec::new();
    rig.notifications_until(0, &mut seen, |_| true);
    assert!(seen.is_empty(), "{seen:?}");
    let m = rig.send(&del("Device.LocalAgent.Subscription.1."));
    let Some(response::RespType::DeleteResp(d)) = m.response_body() else {
        panic!("{m:?}")
    };
    use cpevisor_usp::proto::delete_resp::deleted_object_result::operation_status::OperStatus;
    let Some(OperStatus::OperSuccess(s)) = d.deleted_obj_results[0]
        .oper_status
        .clone()
        .unwrap()
        .oper_status
    else {
        panic!("{d:?}")
    };
    assert_eq!(s.affected_paths, ["Device.LocalAgent.Subscription.1."]);
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "0"
    );
}

#[test]
fn read_only_controller_and_strangers_change_nothing() {
    let w = World::new("usp-ro");
    let url = w.publish(&App::new("probe", "1.0"), "probe-1.0.cpkg");
    let mut rig = Rig::open(&w);
    let before = state_of(&w.state);

    // ReadOnly reads...
    let replies = rig.send_as(
        RO,
        None,
        &Msg::get("r1", ["Device.LocalAgent.EndpointID"], 0),
    );
    assert!(matches!(
        replies[0].response_body(),
        Some(response::RespType::GetResp(_))
    ));
    let replies = rig.send_as(RO, None, &Msg::get_supported_dm("r2", ["Device."], true));
    assert!(matches!(
        replies[0].response_body(),
        Some(response::RespType::GetSupportedDmResp(_))
    ));
    // ...and may not write: 7006 for Set, Add, Delete, Operate.
    let writes = [
        Msg::operate(
            "w1",
            "Device.SoftwareModules.InstallDU()",
            "",
            true,
            BTreeMap::from([("URL".to_string(), url.clone())]),
        ),
        Msg::operate("w2", "Device.Reboot()", "", true, BTreeMap::new()),
        Msg::set(
            "w3",
            false,
            vec![set::UpdateObject {
                obj_path: "Device.SoftwareModules.ExecEnv.1.".into(),
                param_settings: vec![set::UpdateParamSetting {
                    param: "Enable".into(),
                    value: "false".into(),
                    required: true,
                }],
            }],
        ),
        Msg::add(
            "w4",
            false,
            vec![add::CreateObject {
                obj_path: "Device.LocalAgent.Subscription.".into(),
                param_settings: vec![],
            }],
        ),
        Msg::delete("w5", false, ["Device.LocalAgent.Subscription.1."]),
    ];
    for m in &writes {
        let r = rig.send_as(RO, None, m);
        assert_eq!(r.len(), 1);
        let (code, msg) = error_of(&r[0]);
        assert_eq!(code, 7006, "{}: {msg}", m.msg_id());
        assert_eq!(r[0].msg_id(), m.msg_id());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(*rig.reboots.lock().unwrap(), 0);
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnitNumberOfEntries"),
        "0"
    );
    assert_eq!(rig.value("Device.SoftwareModules.ExecEnv.1.Enable"), "true");
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "0"
    );
    assert_eq!(rig.agent.snapshot().deployment_units.len(), 0);

    // The full-access controller disables the read-only one: it is ignored from then on,
    // across restarts of the data model, until enabled again.
    let set_enable = |v: &str| {
        Msg::set(
            "en",
            false,
            vec![set::UpdateObject {
                obj_path: "Device.LocalAgent.Controller.[EndpointID==\"self::ctl-ro\"].".into(),
                param_settings: vec![set::UpdateParamSetting {
                    param: "Enable".into(),
                    value: v.into(),
                    required: true,
                }],
            }],
        )
    };
    let m = rig.send(&set_enable("false"));
    assert!(
        matches!(m.response_body(), Some(response::RespType::SetResp(_))),
        "{m:?}"
    );
    assert_eq!(rig.value("Device.LocalAgent.Controller.2.Enable"), "false");
    assert!(rig
        .send_as(RO, None, &Msg::get("r3", ["Device.LocalAgent."], 0))
        .is_empty());
    let m = rig.send(&set_enable("true"));
    assert!(
        matches!(m.response_body(), Some(response::RespType::SetResp(_))),
        "{m:?}"
    );
    assert_eq!(
        rig.send_as(RO, None, &Msg::get("r4", ["Device.LocalAgent."], 0))
            .len(),
        1
    );

    // Nothing at all for: the full controller without its certificate identity, an unknown
    // controller, a Record for another endpoint, garbage.
    let install = &writes[0];
    assert!(rig.send_as(FULL, Some("someone-else"), install).is_empty());
    assert!(rig.send_as(FULL, None, install).is_empty());
    assert!(rig.send_as("self::intruder", None, install).is_empty());
    let foreign = enc(&Record::no_session_msg("os::other-cpe", FULL, install));
    assert!(rig.ep.handle_record(&foreign, Some(FULL_CN)).is_empty());
    assert!(rig.ep.handle_record(&foreign, Some(FULL_CN)).is_empty());
    assert!(rig
        .ep
        .handle_record(b"\xff\xff\xff garbage", Some(FULL_CN))
        .is_empty());
    // A known controller's malformed Msg (a Get header without a body) gets an Error naming
    // why; the agent keeps running.
    let headless = Msg {
        header: Some(cpevisor_usp::proto::Header {
            msg_id: "bad-1".into(),
            msg_type: cpevisor_usp::proto::header::MsgType::Get as i32,
        }),
        body: None,
    };
    let bad = enc(&Record::no_session_msg(AGENT_ID, FULL, &headless));
    let r = rig.ep.handle_record(&bad, Some(FULL_CN));
    assert_eq!(r.len(), 1);
    let reply = open_record(&r[0].1, FULL);
    assert_eq!(reply.msg_id(), "bad-1");
    let (code, msg) = error_of(&reply);
    assert_eq!(code, 7004, "{msg}");
    // The same from a stranger: nothing.
    let bad = enc(&Record::no_session_msg(
        AGENT_ID,
        "self::intruder",
        &headless,
    ));
    assert!(rig.ep.handle_record(&bad, None).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.agent.snapshot().deployment_units.len(), 0);
    assert_eq!(state_of(&w.state), before, "nothing changed on flash");
    assert_eq!(
        rig.value("Device.LocalAgent.EndpointID"),
        AGENT_ID,
        "still answering"
    );
}

#[test]
fn reset_reboot_boot_onboard_and_numbers_across_restarts() {
    let mut w = World::new("usp-boot");
    let url = w.publish(&App::new("speedtest", "1.0"), "speedtest-1.0.cpkg");
    let mut rig = Rig::open(&w);

    // First connect: OnBoardRequest to each controller; no Boot! subscribers yet. Both are
    // answered (R-NOT.6a: until then they are retried).
    let out = rig.ep.on_connect();
    let mut to: Vec<String> = out.iter().map(|(t, _)| t.clone()).collect();
    to.sort();
    assert_eq!(to, [FULL.to_string(), RO.to_string()]);
    let m = open_record(&out[0].1, &out[0].0);
    let Some(request::ReqType::Notify(n)) = m.request_body() else {
        panic!()
    };
    assert!(n.send_resp);
    let Some(notify::Notification::OnBoardReq(ob)) = &n.notification else {
        panic!("{n:?}")
    };
    assert_eq!(ob.oui, "012345");
    assert_eq!(ob.product_class, "HomeGateway");
    assert_eq!(ob.serial_number, "cpe0001");
    for (to, bytes) in &out {
        let id = open_record(bytes, to).msg_id().to_string();
        let cn = (to == FULL).then_some(FULL_CN);
        assert!(rig.send_as(to, cn, &notify_resp(&id)).is_empty());
    }
    assert!(
        rig.ep.on_connect().is_empty(),
        "a reconnect sends nothing again"
    );

    rig.subscribe("boot", "Event", "Device.Boot!", true);
    rig.subscribe("oc", "OperationComplete", "Device.", true);
    rig.subscribe(
        "ram",
        "ValueChange",
        "Device.SoftwareModules.ExecutionUnit.*.Status",
        false,
    );
    output_of(&rig.install_du("i", &[("URL", &url)]));
    use operate_resp::operation_result::OperationResp as R;
    let uuid = rig.value("Device.SoftwareModules.DeploymentUnit.1.UUID");

    // A reboot that fails: CommandFailure 7022, and no RemoteReboot claimed later.
    rig.reboot_fails.store(true, Ordering::SeqCst);
    let m = rig.operate("Device.Reboot()", "reboot-bad", &[]);
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let mut seen = Vec::new();
    rig.notifications_until(10, &mut seen, |s| {
        oper_complete(s, "Reboot()", "reboot-bad").is_some()
    });
    let (code, msg) = failure_of(&oper_complete(&seen, "Reboot()", "reboot-bad").unwrap());
    assert_eq!(code, 7022, "{msg}");
    assert!(msg.contains("not permitted"), "{msg}");
    rig.reboot_fails.store(false, Ordering::SeqCst);

    // Reboot(): asynchronous, runs the hook, completes; the next Boot! names its CommandKey.
    let m = rig.operate("Device.Reboot()", "reboot-42", &[]);
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let mut seen = Vec::new();
    rig.notifications_until(10, &mut seen, |s| {
        oper_complete(s, "Reboot()", "reboot-42").is_some()
    });
    assert_eq!(
        oper_complete(&seen, "Reboot()", "reboot-42")
            .unwrap()
            .obj_path,
        "Device."
    );
    assert_eq!(*rig.reboots.lock().unwrap(), 1);

    // "Reboot": a new agent and data model on the same state.
    rig.agent.shutdown();
    drop(rig);
    agentd::kill_apps_of(&w.root);
    let mut rig = Rig::open(&w);
    let out = rig.ep.on_connect();
    assert_eq!(
        out.len(),
        1,
        "Boot! only: every controller was on-boarded already"
    );
    let m = open_record(&out[0].1, &out[0].0);
    let Some(request::ReqType::Notify(n)) = m.request_body() else {
        panic!()
    };
    assert_eq!(
        n.subscription_id, "boot",
        "persistent subscription survived"
    );
    let Some(notify::Notification::Event(e)) = &n.notification else {
        panic!("{n:?}")
    };
    assert_eq!(e.obj_path, "Device.");
    assert_eq!(e.event_name, "Boot!");
    assert_eq!(e.params["Cause"], "RemoteReboot");
    assert_eq!(e.params["CommandKey"], "reboot-42");
    assert_eq!(e.params["FirmwareUpdated"], "false");
    // Same instance numbers after the restart.
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnit.1.UUID"),
        uuid
    );
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "2",
        "the non-persistent subscription is gone"
    );
    let id = rig.id();
    let m = rig.send(&Msg::get_instances(
        id,
        ["Device.LocalAgent.Subscription."],
        true,
    ));
    let Some(response::RespType::GetInstancesResp(r)) = m.response_body() else {
        panic!("{m:?}")
    };
    let ids: Vec<&str> = r.req_path_results[0]
        .curr_insts
        .iter()
        .map(|i| i.unique_keys["ID"].as_str())
        .collect();
    assert_eq!(ids, ["boot", "oc"]);

    // ExecEnv.Reset(): uninstalls everything in it.
    let m = rig.operate("Device.SoftwareModules.ExecEnv.1.Reset()", "reset", &[]);
    assert!(matches!(op_result(&m), R::ReqObjPath(_)));
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "Reset()", "reset").is_some()
    });
    output_of(&oper_complete(&seen, "Reset()", "reset").unwrap());
    assert_eq!(
        rig.value("Device.SoftwareModules.DeploymentUnitNumberOfEntries"),
        "0"
    );

    // A later agent start is a LocalReboot with no CommandKey.
    rig.agent.shutdown();
    drop(rig);
    let mut rig = Rig::open(&w);
    let out = rig.ep.on_connect();
    let m = open_record(&out[0].1, &out[0].0);
    let Some(request::ReqType::Notify(n)) = m.request_body() else {
        panic!()
    };
    let Some(notify::Notification::Event(e)) = &n.notification else {
        panic!()
    };
    assert_eq!(e.params["Cause"], "LocalReboot");
    assert_eq!(e.params["CommandKey"], "");
    w.stop_daemon();
    agentd::kill_apps_of(&w.root);
}

/// Cost of the endpoint per request (run with `--ignored --nocapture`, release for real
/// figures): Get of the whole model, GetSupportedDM of everything, with one app installed.
#[test]
#[ignore]
fn timing_per_request() {
    let w = World::new("usp-time");
    let url = w.publish(&App::new("timer", "1.0"), "timer-1.0.cpkg");
    let mut rig = Rig::open(&w);
    rig.subscribe("oc", "OperationComplete", "Device.SoftwareModules.", false);
    rig.operate("Device.SoftwareModules.InstallDU()", "t", &[("URL", &url)]);
    let mut seen = Vec::new();
    rig.notifications_until(20, &mut seen, |s| {
        oper_complete(s, "InstallDU()", "t").is_some()
    });
    for (what, msg) in [
        ("Get Device.", Msg::get("g", ["Device."], 0)),
        (
            "Get one parameter",
            Msg::get("g", ["Device.SoftwareModules.ExecutionUnit.1.Status"], 0),
        ),
        (
            "GetSupportedDM Device.",
            Msg::get_supported_dm("s", ["Device."], false),
        ),
    ] {
        let bytes = enc(&Record::no_session_msg(AGENT_ID, FULL, &msg));
        let n = 200;
        let t = Instant::now();
        let mut reply_len = 0;
        for _ in 0..n {
            reply_len = rig.ep.handle_record(&bytes, Some(FULL_CN))[0].1.len();
        }
        let per = t.elapsed() / n;
        println!("{what}: {per:?} per request, reply {reply_len} bytes");
    }
    let t = Instant::now();
    for _ in 0..200 {
        rig.ep.notifications();
    }
    println!("idle notifications() poll: {:?}", t.elapsed() / 200);
    agentd::kill_apps_of(&w.root);
}

#[test]
fn subscriptions_are_bounded_and_partial_adds_report_per_object() {
    let w = World::new("usp-subs");
    let mut rig = Rig::open(&w);
    for i in 0..cpevisor_agent::usp::dm::MAX_SUBSCRIPTIONS {
        rig.subscribe(
            &format!("s{i}"),
            "ValueChange",
            "Device.SoftwareModules.ExecutionUnit.*.Status",
            false,
        );
    }
    let obj = |path: &str, id: &str| add::CreateObject {
        obj_path: path.into(),
        param_settings: vec![add::CreateParamSetting {
            param: "ID".into(),
            value: id.into(),
            required: true,
        }],
    };
    let m = rig.send(&Msg::add(
        "full",
        false,
        vec![obj("Device.LocalAgent.Subscription.", "one-more")],
    ));
    assert_eq!(error_of(&m).0, 7005);
    let m = rig.send(&Msg::delete(
        "d",
        false,
        ["Device.LocalAgent.Subscription.*."],
    ));
    assert!(matches!(
        m.response_body(),
        Some(response::RespType::DeleteResp(_))
    ));
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "0"
    );

    // allow_partial: each object succeeds or fails on its own; a duplicate ID is 7025.
    let m = rig.send(&Msg::add(
        "partial",
        true,
        vec![
            obj("Device.LocalAgent.Subscription.", "a"),
            obj("Device.LocalAgent.Subscription.", "a"),
            obj("Device.SoftwareModules.ExecEnv.", "x"),
        ],
    ));
    let Some(response::RespType::AddResp(r)) = m.response_body() else {
        panic!("{m:?}")
    };
    use cpevisor_usp::proto::add_resp::created_object_result::operation_status::OperStatus;
    let codes: Vec<u32> = r
        .created_obj_results
        .iter()
        .map(
            |c| match c.oper_status.clone().unwrap().oper_status.unwrap() {
                OperStatus::OperSuccess(s) => {
                    assert_eq!(s.unique_keys["ID"], "a");
                    assert_eq!(s.unique_keys["Recipient"], "Device.LocalAgent.Controller.1");
                    0
                }
                OperStatus::OperFailure(f) => f.err_code,
            },
        )
        .collect();
    assert_eq!(codes, [0, 7025, 7019]);
    assert_eq!(
        rig.value("Device.LocalAgent.Subscription.[ID==\"a\"].Recipient"),
        "Device.LocalAgent.Controller.1"
    );
    // Without allow_partial, one failure undoes the others.
    let m = rig.send(&Msg::add(
        "whole",
        false,
        vec![
            obj("Device.LocalAgent.Subscription.", "b"),
            obj("Device.LocalAgent.Subscription.", "a"),
        ],
    ));
    assert_eq!(error_of(&m).0, 7025);
    assert_eq!(
        rig.value("Device.LocalAgent.SubscriptionNumberOfEntries"),
        "1"
    );
    // Operate with send_resp false: no reply at all.
    let msg = Msg::operate(
        "quiet",
        "Device.SoftwareModules.ExecEnv.1.Reset()",
        "",
        false,
        BTreeMap::new(),
    );
    assert!(rig.send_as(FULL, Some(FULL_CN), &msg).is_empty());
}

/// Mangled paths and values in every message type: always an answer, never a panic, and the
/// agent keeps serving.
#[test]
fn mangled_paths_and_values_never_panic() {
    let w = World::new("usp-mangle");
    let mut rig = Rig::open(&w);
    let seeds = [
        "Device.SoftwareModules.ExecutionUnit.[Status==\"Active\"&&Name!=\"x\"].EUID",
        "Device.LocalAgent.Subscription.{i}.NotifType",
        "Device.SoftwareModules.DeploymentUnit.*.Update()",
        "Device.Boot!",
        "Device.DeviceInfo.MemoryStatus.",
        "Device.SoftwareModules.ExecEnv.1.Reset()",
    ];
    let alphabet: &[u8] = b"Device.[]{}*!()=<>&\"0123456789ia.";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..600 {
        let mut p = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..(1 + rnd() % 4) {
            let at = (rnd() as usize) % (p.len() + 1);
            match rnd() % 3 {
                0 if at < p.len() => {
                    p.remove(at);
                }
                1 => p.insert(at, alphabet[(rnd() as usize) % alphabet.len()]),
                _ if at < p.len() => p[at] = alphabet[(rnd() as usize) % alphabet.len()],
                _ => {}
            }
        }
        let path = String::from_utf8_lossy(&p).into_owned();
        let value = String::from_utf8_lossy(&p[..p.len().min(40)]).into_owned();
        let msgs = [
            Msg::get("g", [path.clone()], (rnd() % 3) as u32),
            Msg::get_instances("gi", [path.clone()], rnd() % 2 == 0),
            Msg::get_supported_dm("gs", [path.clone()], rnd() % 2 == 0),
            Msg::set(
                "s",
                rnd() % 2 == 0,
                vec![set::UpdateObject {
                    obj_path: path.clone(),
                    param_settings: vec![set::UpdateParamSetting {
                        param: "ReferenceList".into(),
                        value: value.clone(),
                        required: rnd() % 2 == 0,
                    }],
                }],
            ),
            Msg::delete("d", rnd() % 2 == 0, [path.clone()]),
            Msg::operate(
                "o",
                path.clone(),
                "",
                true,
                BTreeMap::from([("RequestedState".to_string(), value.clone())]),
            ),
        ];
        for m in &msgs {
            assert_eq!(rig.send_as(FULL, Some(FULL_CN), m).len(), 1, "{path:?}");
        }
    }
    // Every async command the mangling may have started has to end before the check.
    std::thread::sleep(Duration::from_secs(1));
    rig.ep.notifications();
    assert_eq!(rig.value("Device.LocalAgent.EndpointID"), AGENT_ID);
    agentd::kill_apps_of(&w.root);
}

/// TR-369 rows of issue 12 at the data model: R-GET.0 (a missing instance is 7026, a search
/// path matching nothing is empty), 7010 for an unknown parameter in Set, a failing
/// non-required parameter is a param_err in oper_success even with allow_partial=false,
/// R-OPR.6 (unknown input arguments are ignored), R-ENC.2 (header msg_type 99 is an Error).
#[test]
fn tr369_get_set_operate_and_unknown_msg_type() {
    let w = World::new("usp-tr369");
    let mut rig = Rig::open(&w);

    // R-GET.0.
    let r = rig.get(&[
        "Device.SoftwareModules.DeploymentUnit.9.",
        "Device.SoftwareModules.DeploymentUnit.9.UUID",
        "Device.LocalAgent.Controller.77.EndpointID",
        "Device.SoftwareModules.DeploymentUnit.*.UUID",
        "Device.SoftwareModules.DeploymentUnit.[Name==\"x\"].UUID",
        "Device.SoftwareModules.DeploymentUnit.",
        "Device.SoftwareModules.ExecEnv.1.Name",
    ]);
    let codes: Vec<u32> = r.req_path_results.iter().map(|x| x.err_code).collect();
    assert_eq!(codes, [7026, 7026, 7026, 0, 0, 0, 0], "{r:#?}");
    for x in &r.req_path_results[3..6] {
        assert!(x.resolved_path_results.is_empty(), "{x:?}");
    }
    assert_eq!(r.req_path_results[6].resolved_path_results.len(), 1);

    let set = |allow_partial: bool, obj: &str, params: &[(&str, &str, bool)]| {
        Msg::set(
            "s",
            allow_partial,
            vec![set::UpdateObject {
                obj_path: obj.into(),
                param_settings: params
                    .iter()
                    .map(|(p, v, required)| set::UpdateParamSetting {
                        param: p.to_string(),
                        value: v.to_string(),
                        required: *required,
                    })
                    .collect(),
            }],
        )
    };
    // 7010: an unknown parameter (required: the whole message fails, naming it).
    let m = rig.send(&set(
        false,
        "Device.SoftwareModules.ExecEnv.1.",
        &[("Colour", "red", true)],
    ));
    let e = m.error_body().unwrap_or_else(|| panic!("{m:?}"));
    assert_eq!(e.err_code, 7010, "{e:?}");
    assert_eq!(e.param_errs[0].err_code, 7010);
    assert_eq!(
        e.param_errs[0].param_path,
        "Device.SoftwareModules.ExecEnv.1.Colour"
    );

    // allow_partial=false, required=false: the object is updated (here: nothing to write),
    // each failing parameter is a param_err of oper_success.
    use cpevisor_usp::proto::set_resp::updated_object_result::operation_status::OperStatus;
    for (obj, param, code) in [
        ("Device.DeviceInfo.", "UpTime", 7013),
        ("Device.SoftwareModules.ExecEnv.1.", "Colour", 7010),
        ("Device.SoftwareModules.ExecEnv.1.", "Enable", 7011),
    ] {
        let value = if param == "Enable" { "maybe" } else { "3" };
        let m = rig.send(&set(false, obj, &[(param, value, false)]));
        let Some(response::RespType::SetResp(r)) = m.response_body() else {
            panic!("{obj}{param}: not a SetResp: {m:?}")
        };
        let st = r.updated_obj_results[0]
            .oper_status
            .as_ref()
            .and_then(|s| s.oper_status.as_ref());
        let Some(OperStatus::OperSuccess(ok)) = st else {
            panic!("{obj}{param}: not oper_success: {r:?}")
        };
        assert_eq!(ok.updated_inst_results.len(), 1, "{ok:?}");
        let inst = &ok.updated_inst_results[0];
        assert_eq!(inst.affected_path, obj);
        assert!(inst.updated_params.is_empty(), "{inst:?}");
        assert_eq!(inst.param_errs.len(), 1, "{inst:?}");
        assert_eq!(inst.param_errs[0].param, param);
        assert_eq!(inst.param_errs[0].err_code, code, "{inst:?}");
    }
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecEnv.1.Enable"),
        "true",
        "nothing was written"
    );

    // R-OPR.6: the unknown argument is ignored and the command runs (to its own failure:
    // the URL's scheme is refused in OperationComplete, not synchronously).
    rig.subscribe_install_complete();
    let (code, msg) = failure_of(&rig.install_du(
        "extra-arg",
        &[("URL", "ftp://127.0.0.1/x"), ("Colour", "blue")],
    ));
    assert_eq!(code, 7004, "{msg}");

    // R-DEL.2a: a valid path naming no instance is an OperationSuccess with nothing affected.
    let m = rig.send(&Msg::delete(
        "d99",
        false,
        ["Device.LocalAgent.Subscription.99."],
    ));
    let Some(response::RespType::DeleteResp(d)) = m.response_body() else {
        panic!("{m:?}")
    };
    use cpevisor_usp::proto::delete_resp::deleted_object_result::operation_status::OperStatus as D;
    let st = d.deleted_obj_results[0].oper_status.as_ref().unwrap();
    let Some(D::OperSuccess(ok)) = &st.oper_status else {
        panic!("{d:?}")
    };
    assert!(ok.affected_paths.is_empty() && ok.unaffected_path_errs.is_empty());

    // R-ENC.2 / R-MTP.5: msg_type 99 with a Get body is answered with an Error, not a GetResp.
    let mut bad = Msg::get("t99", ["Device.DeviceInfo."], 0);
    bad.header.as_mut().unwrap().msg_type = 99;
    let replies = rig.send_as(FULL, Some(FULL_CN), &bad);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].msg_id(), "t99");
    let (code, msg) = error_of(&replies[0]);
    assert_eq!(code, 7001, "{msg}");
}

/// R-NOT.1 / R-NOT.6a: the OnBoardRequest is retried on TR-369's schedule until its
/// NotifyResp; only the NotifyResp makes a controller onboarded (not sending, not a reconnect,
/// not a NotifyResp from another controller or for another msg_id), and after a restart an
/// unanswered OnBoardRequest is sent again.
#[test]
fn onboard_request_is_retried_until_its_notify_resp() {
    use cpevisor_agent::usp::retry::RetryPolicy;
    let w = World::new("usp-retry");
    let mut rig = Rig::open(&w);
    let policy = RetryPolicy {
        min_wait: Duration::from_millis(200),
        multiplier: 2000,
    };
    rig.ep.set_retry_policy(policy);
    let out = rig.ep.on_connect();
    let id_of = |to: &str, out: &[(String, Vec<u8>)]| -> Option<String> {
        out.iter()
            .find(|(t, _)| t == to)
            .map(|(t, b)| open_record(b, t))
            .filter(|m| {
                matches!(
                    m.request_body(),
                    Some(request::ReqType::Notify(n))
                        if matches!(n.notification, Some(notify::Notification::OnBoardReq(_)))
                )
            })
            .map(|m| m.msg_id().to_string())
    };
    let full_id = id_of(FULL, &out).expect("OnBoardRequest to FULL");
    let ro_id = id_of(RO, &out).expect("OnBoardRequest to RO");

    // Unanswered: sent again with the same msg_id, the second retry later than the first.
    let start = Instant::now();
    let mut retries: Vec<(String, Duration)> = Vec::new();
    let deadline = start + Duration::from_secs(10);
    while retries.iter().filter(|(t, _)| t == FULL).count() < 2 {
        for (to, b) in rig.ep.notifications() {
            let m = open_record(&b, &to);
            assert_eq!(
                m.msg_id(),
                if to == FULL { &full_id } else { &ro_id },
                "a retry is the same Notify"
            );
            retries.push((to, start.elapsed()));
        }
        assert!(Instant::now() < deadline, "no retries: {retries:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let full: Vec<Duration> = retries
        .iter()
        .filter(|(t, _)| t == FULL)
        .map(|(_, d)| *d)
        .collect();
    assert!(full[0] >= policy.wait(1, 0.0), "{full:?}");
    assert!(full[1] - full[0] >= policy.wait(2, 0.0), "{full:?}");

    // Answers that do not count: the wrong msg_id, the wrong controller; a reconnect resends.
    assert!(rig
        .send_as(FULL, Some(FULL_CN), &notify_resp("not-it"))
        .is_empty());
    assert!(rig.send_as(RO, None, &notify_resp(&full_id)).is_empty());
    let again = rig.ep.on_connect();
    assert_eq!(id_of(FULL, &again), Some(full_id.clone()), "{again:?}");
    assert_eq!(id_of(RO, &again), Some(ro_id.clone()));
    assert_eq!(again.len(), 2, "no second OnBoardRequest is made up");

    // The NotifyResp: FULL is done, RO still pending.
    assert!(rig
        .send_as(FULL, Some(FULL_CN), &notify_resp(&full_id))
        .is_empty());
    let pending: Vec<&str> = rig
        .ep
        .pending_notifications()
        .iter()
        .map(|p| p.to.as_str())
        .collect();
    assert_eq!(pending, [RO]);
    let again = rig.ep.on_connect();
    assert_eq!(id_of(FULL, &again), None);
    assert_eq!(id_of(RO, &again), Some(ro_id));

    // A restart: FULL stays onboarded (persisted), RO gets a new OnBoardRequest.
    rig.agent.shutdown();
    drop(rig);
    let mut rig = Rig::open(&w);
    let out = rig.ep.on_connect();
    assert_eq!(id_of(FULL, &out), None, "onboarded survives a restart");
    assert!(
        id_of(RO, &out).is_some(),
        "unanswered: sent again after a restart"
    );
}

#[test]
fn execution_unit_network_config_reports_the_package_section() {
    let w = World::new("usp-net");
    w.write_config_patched(serde_json::json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "process",
                       "app_network": "10.100.0.0/16"}],
        "wan_interface": "wan0",
        // No nft on this "device": the rules cannot be put in place, which the start reports.
        "nft_path": w.root.join("no-nft"),
    }));
    let mut app = App::new("web", "1.0");
    app.autostart = false;
    app.extra = serde_json::json!({"network": {
        "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                           "interface": "wan"}],
        "egress": [{"destination": "192.0.2.0/24", "protocol": "tcp", "ports": [443, 8443]}]
    }});
    let url = w.publish(&app, "web.cpkg");
    let plain = w.publish(&App::new("plain", "1.0"), "plain.cpkg");
    let mut rig = Rig::open(&w);
    rig.subscribe_install_complete();
    output_of(&rig.install_du("k-web", &[("URL", &url)]));
    output_of(&rig.install_du("k-plain", &[("URL", &plain)]));

    let nc = "Device.SoftwareModules.ExecutionUnit.1.NetworkConfig.";
    for (param, want) in [
        ("X_CPEVISOR_Mode", "nat"),
        ("X_CPEVISOR_Address", "10.100.0.6"),
        ("X_CPEVISOR_Egress", "tcp 192.0.2.0/24 443 8443"),
        ("X_CPEVISOR_InterceptDNS", "false"),
        ("X_CPEVISOR_RulesActive", "false"),
        ("X_CPEVISOR_PortMappingNumberOfEntries", "1"),
        ("PortMappingRefList", ""),
        ("X_CPEVISOR_PortMapping.1.Protocol", "TCP"),
        ("X_CPEVISOR_PortMapping.1.ExternalPort", "8080"),
        ("X_CPEVISOR_PortMapping.1.InternalPort", "80"),
        ("X_CPEVISOR_PortMapping.1.X_CPEVISOR_Side", "wan"),
        ("X_CPEVISOR_PortMapping.1.X_CPEVISOR_InterfaceName", "wan0"),
    ] {
        assert_eq!(rig.value(&format!("{nc}{param}")), want, "{param}");
    }
    // A package without the section: the object is there, empty.
    let nc2 = "Device.SoftwareModules.ExecutionUnit.2.NetworkConfig.";
    assert_eq!(rig.value(&format!("{nc2}X_CPEVISOR_Mode")), "");
    assert_eq!(
        rig.value(&format!("{nc2}X_CPEVISOR_PortMappingNumberOfEntries")),
        "0"
    );

    // Started on a device without nft: refused (7225) naming why; the EU stays Idle.
    let m = rig.operate(
        "Device.SoftwareModules.ExecutionUnit.1.SetRequestedState()",
        "k-start",
        &[("RequestedState", "Active")],
    );
    use operate_resp::operation_result::OperationResp as R;
    let R::CmdFailure(f) = op_result(&m) else {
        panic!("{m:?}")
    };
    assert_eq!(f.err_code, 7225, "{}", f.err_msg);
    assert!(f.err_msg.contains("no nft tool"), "{}", f.err_msg);
    assert_eq!(
        rig.value("Device.SoftwareModules.ExecutionUnit.1.RequestedState"),
        "Idle"
    );
}
