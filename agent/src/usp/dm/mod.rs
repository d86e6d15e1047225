//! The TR-181 data model the agent serves over USP: `Device.DeviceInfo.`, `Device.LocalAgent.`
//! and `Device.SoftwareModules.`, with Get, GetInstances, GetSupportedDM, Set, Add, Delete and
//! Operate, and the notifications its subscriptions ask for. Transport-free: the endpoint turns
//! these results into USP messages.

mod keys;
mod notify;
mod operate;
pub mod persist;
pub mod schema;
mod supported;
pub mod tree;
pub mod value_change;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path as FsPath;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use cpevisor_usp::errors::*;
use cpevisor_usp::path::{Leaf, Path};

use crate::fault::Fault;
use crate::lifecycle::Agent;
use crate::model::{now_secs, rfc3339, Event, HealthStatus};
use persist::{Subscription, UspStore};
use schema::{check_value, parse_bool, Access, Kind, ObjDesc};
use tree::{Obj, Seg, Tree, TreeBuilder};

pub use notify::{Notification, NotifyBody};
pub use operate::{OperateOutcome, OperateResult, RebootHook};

use super::config::{Role, UspConfig};

/// (object or instance path, [(name, value)]): what Get and GetInstances return per path.
pub type PathValues = Vec<(String, Vec<(String, String)>)>;

/// Most subscriptions held (all controllers together).
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most asynchronous commands in flight.
pub const MAX_REQUESTS: usize = 16;
/// Most entries in one ReferenceList.
pub const MAX_REFERENCES: usize = 16;
/// How many gone objects keep their number in RAM for late events.
const RECENTLY_GONE: usize = 64;

/// Who sent the message being processed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub endpoint_id: String,
    pub role: Role,
}

/// A parameter that could not be set or used, with its full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub path: String,
    pub err: UspError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub requested_path: String,
    /// Set when the path was invalid; then `resolved` is empty.
    pub err: Option<UspError>,
    /// (object path, [(parameter name relative to it, value)])
    pub resolved: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesResult {
    pub requested_path: String,
    pub err: Option<UspError>,
    /// (instance path, unique keys)
    pub instances: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedObject {
    /// `Device.SoftwareModules.DeploymentUnit.{i}.`
    pub path: String,
    pub multi: bool,
    pub add_delete: bool,
    pub params: Vec<(&'static str, Access, Kind)>,
    pub commands: Vec<&'static schema::CommandDesc>,
    pub events: Vec<&'static schema::EventDesc>,
    /// The parameters that identify an instance (multi-instance objects only).
    pub unique_keys: &'static [&'static str],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedResult {
    pub requested_path: String,
    pub err: Option<UspError>,
    pub objects: Vec<SupportedObject>,
}

/// What Get/GetSupportedDM return for each object.
#[derive(Debug, Clone, Copy)]
pub struct SupportedFilter {
    pub first_level_only: bool,
    pub commands: bool,
    pub events: bool,
    pub params: bool,
    /// `return_unique_key_sets`.
    pub unique_keys: bool,
}

/// One object of a Set or Add request.
#[derive(Debug, Clone)]
pub struct ObjSettings {
    pub obj_path: String,
    /// (parameter name, value, required)
    pub params: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatedInstance {
    pub affected_path: String,
    pub updated: Vec<(String, String)>,
    pub param_errs: Vec<ParamError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetResult {
    pub requested_path: String,
    pub outcome: Result<Vec<UpdatedInstance>, (UspError, Vec<ParamError>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub instantiated_path: String,
    pub param_errs: Vec<ParamError>,
    pub unique_keys: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub requested_path: String,
    pub outcome: Result<Created, (UspError, Vec<ParamError>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResult {
    pub requested_path: String,
    pub outcome: Result<Vec<String>, UspError>,
}

/// A whole request refused (allow_partial false and something failed): a USP Error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub err: UspError,
    pub param_errs: Vec<ParamError>,
}

/// An asynchronous command in flight: `Device.LocalAgent.Request.{i}`.
#[derive(Debug, Clone)]
struct Request {
    instance: u32,
    originator: String,
    command: String,
    command_key: String,
}

pub struct DataModel {
    agent: Arc<Agent>,
    cfg: UspConfig,
    store: UspStore,
    subs: Vec<Subscription>,
    requests: Vec<Request>,
    next_request: u32,
    completions_tx: Sender<operate::Completion>,
    completions_rx: Receiver<operate::Completion>,
    events_rx: Receiver<(u64, Event)>,
    reboot: RebootHook,
    /// Instance paths seen at the last poll, for ObjectCreation/ObjectDeletion.
    known: BTreeSet<String>,
    /// DU UUID -> its EUIDs as last seen (DUStateChange! of an uninstall names them).
    du_eus: HashMap<String, Vec<String>>,
    /// (table, key, number) of objects recently gone: events about them may arrive after the
    /// poll that saw them go.
    recently_gone: VecDeque<(String, String, u32)>,
    boot_sent: bool,
    /// A controller changed something since the last poll (objects may have come or gone
    /// without an agent event: subscriptions, ExecEnv state).
    touched: bool,
    /// Parameter values ValueChange subscriptions watch, as of the last poll.
    watched: std::collections::BTreeMap<String, String>,
}

fn fault_err(f: Fault) -> UspError {
    UspError::new(INTERNAL_ERROR, f.to_string())
}

/// Kernel facts for DeviceInfo: seconds since boot, and MemTotal/MemAvailable in KiB.
fn read_uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

fn read_meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn b(v: bool) -> String {
    if v { "true" } else { "false" }.to_string()
}

impl DataModel {
    /// `state_dir` holds `usp.json`. `reboot` is what `Device.Reboot()` runs.
    pub fn open(
        agent: Arc<Agent>,
        cfg: UspConfig,
        state_dir: &FsPath,
        reboot: RebootHook,
    ) -> Result<DataModel, Fault> {
        cfg.validate()
            .map_err(|m| Fault::new(crate::fault::FaultCode::InvalidArguments, m))?;
        let store = UspStore::open(state_dir)?;
        let (completions_tx, completions_rx) = channel();
        let events_rx = agent.events().subscribe();
        let mut dm = DataModel {
            subs: store.data.subscriptions.clone(),
            agent,
            cfg,
            store,
            requests: Vec::new(),
            next_request: 0,
            completions_tx,
            completions_rx,
            events_rx,
            reboot,
            known: BTreeSet::new(),
            du_eus: HashMap::new(),
            recently_gone: VecDeque::new(),
            boot_sent: false,
            touched: false,
            watched: Default::default(),
        };
        let tree = dm.materialize();
        dm.known = instance_paths(&tree);
        Ok(dm)
    }

    pub fn config(&self) -> &UspConfig {
        &self.cfg
    }

    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// False once `Controller.{i}.Enable` was set false: its Records are ignored.
    pub fn controller_enabled(&self, endpoint_id: &str) -> bool {
        !self
            .store
            .data
            .disabled_controllers
            .iter()
            .any(|c| c == endpoint_id)
    }

    /// The number of an object that exists or went away recently; never a new one.
    fn known_number(&self, table: &str, key: &str) -> Option<u32> {
        self.store.lookup(table, key).or_else(|| {
            self.recently_gone
                .iter()
                .find(|(t, k, _)| t == table && k == key)
                .map(|(_, _, n)| *n)
        })
    }

    fn controller_path(&mut self, endpoint_id: &str) -> String {
        let n = self.store.number("Controller", endpoint_id);
        format!("Device.LocalAgent.Controller.{n}")
    }

    /// The instantiated model as of now. New instances get their numbers here (persisted).
    pub fn materialize(&mut self) -> Tree {
        use schema::DEVICE;
        let snap = self.agent.snapshot();
        let mut t = TreeBuilder::default();
        let dev = t.object(None, &DEVICE, Vec::new());

        let (mem_total, mem_free) = read_meminfo();
        let di = &self.cfg.device_info;
        let info = t.object(
            Some(&dev),
            DEVICE.child("DeviceInfo").expect("schema"),
            vec![
                ("Manufacturer", di.manufacturer.clone()),
                ("ManufacturerOUI", di.manufacturer_oui.clone()),
                ("ModelName", di.model_name.clone()),
                ("ProductClass", di.product_class.clone()),
                ("SerialNumber", di.serial_number.clone()),
                ("SoftwareVersion", env!("CARGO_PKG_VERSION").to_string()),
                ("UpTime", read_uptime().min(u64::from(u32::MAX)).to_string()),
            ],
        );
        let info_desc = DEVICE.child("DeviceInfo").expect("schema");
        t.object(
            Some(&info),
            info_desc.child("MemoryStatus").expect("schema"),
            vec![
                ("Total", mem_total.min(u64::from(u32::MAX)).to_string()),
                ("Free", mem_free.min(u64::from(u32::MAX)).to_string()),
            ],
        );

        // LocalAgent
        let la_desc = DEVICE.child("LocalAgent").expect("schema");
        let la = t.object(
            Some(&dev),
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

        // SoftwareModules
        let sm_desc = DEVICE.child("SoftwareModules").expect("schema");
        let sm = t.object(
            Some(&dev),
            sm_desc,
            vec![
                ("ExecEnvNumberOfEntries", snap.exec_envs.len().to_string()),
                (
                    "DeploymentUnitNumberOfEntries",
                    snap.deployment_units.len().to_string(),
                ),
                (
                    "ExecutionUnitNumberOfEntries",
                    snap.execution_units.len().to_string(),
                ),
            ],
        );
        let env_ref: HashMap<String, String> = snap
            .exec_envs
            .iter()
            .map(|e| {
                let n = self.store.number("ExecEnv", &e.name);
                (
                    e.name.clone(),
                    format!("Device.SoftwareModules.ExecEnv.{n}"),
                )
            })
            .collect();
        let eu_ref: HashMap<String, String> = snap
            .execution_units
            .iter()
            .map(|e| {
                let n = self.store.number("ExecutionUnit", &e.eu_id);
                (
                    e.eu_id.clone(),
                    format!("Device.SoftwareModules.ExecutionUnit.{n}"),
                )
            })
            .collect();
        let refs = |ids: &mut dyn Iterator<Item = &String>| {
            ids.filter_map(|id| eu_ref.get(id).cloned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let e_desc = sm_desc.child("ExecEnv").expect("schema");
        let et = t.table(&sm, e_desc);
        for e in &snap.exec_envs {
            let n = self.store.number("ExecEnv", &e.name);
            let active = snap
                .execution_units
                .iter()
                .filter(|u| u.exec_env == e.name && u.status == crate::model::EuStatus::Active)
                .map(|u| &u.eu_id);
            t.instance(
                &et,
                e_desc,
                n,
                &e.name,
                vec![
                    ("Enable", b(e.enable)),
                    ("Status", format!("{:?}", e.status)),
                    ("Name", e.name.clone()),
                    ("Type", e.env_type.as_str().to_string()),
                    (
                        "AllocatedMemory",
                        kib(u64::from(e.memory_budget_mib) * 1024),
                    ),
                    (
                        "AvailableMemory",
                        kib(u64::from(e.available_memory_mib) * 1024),
                    ),
                    ("ActiveExecutionUnits", refs(&mut { active })),
                ],
            );
        }
        let d_desc = sm_desc.child("DeploymentUnit").expect("schema");
        let dt = t.table(&sm, d_desc);
        for d in &snap.deployment_units {
            let n = self.store.number("DeploymentUnit", &d.uuid);
            self.du_eus
                .insert(d.uuid.clone(), d.execution_unit_list.clone());
            t.instance(
                &dt,
                d_desc,
                n,
                &d.uuid,
                vec![
                    ("UUID", d.uuid.clone()),
                    ("DUID", d.uuid.clone()),
                    ("Name", d.name.clone()),
                    ("Status", format!("{:?}", d.status)),
                    ("Resolved", b(d.resolved)),
                    ("URL", d.url.clone()),
                    ("Description", d.description.clone()),
                    ("Vendor", d.vendor.clone()),
                    ("Version", d.version.clone()),
                    ("ExecutionUnitList", refs(&mut d.execution_unit_list.iter())),
                    (
                        "ExecutionEnvRef",
                        env_ref.get(&d.exec_env).cloned().unwrap_or_default(),
                    ),
                ],
            );
        }
        let u_desc = sm_desc.child("ExecutionUnit").expect("schema");
        let ut = t.table(&sm, u_desc);
        for u in &snap.execution_units {
            let n = self.store.number("ExecutionUnit", &u.eu_id);
            let du = snap.deployment_units.iter().find(|d| d.uuid == u.du_uuid);
            t.instance(
                &ut,
                u_desc,
                n,
                &u.eu_id,
                vec![
                    ("EUID", u.eu_id.clone()),
                    ("Name", u.name.clone()),
                    ("ExecEnvLabel", u.eu_id.clone()),
                    ("Status", format!("{:?}", u.status)),
                    ("RequestedState", format!("{:?}", u.requested_state)),
                    (
                        "ExecutionFaultCode",
                        format!("{:?}", u.execution_fault_code),
                    ),
                    ("ExecutionFaultMessage", u.execution_fault_message.clone()),
                    ("AutoStart", b(u.auto_start)),
                    ("RunLevel", u.run_level.to_string()),
                    ("Vendor", du.map(|d| d.vendor.clone()).unwrap_or_default()),
                    ("Version", du.map(|d| d.version.clone()).unwrap_or_default()),
                    (
                        "Description",
                        du.map(|d| d.description.clone()).unwrap_or_default(),
                    ),
                    ("MemoryInUse", kib(u.memory_in_use)),
                    (
                        "ExecutionEnvRef",
                        env_ref.get(&u.exec_env).cloned().unwrap_or_default(),
                    ),
                    (
                        "X_CPEVISOR_HealthStatus",
                        HealthStatus::dm_status(&u.health),
                    ),
                    (
                        "X_CPEVISOR_HealthLastCheck",
                        HealthStatus::dm_time(&u.health),
                    ),
                    (
                        "X_CPEVISOR_HealthMessage",
                        HealthStatus::dm_message(&u.health),
                    ),
                ],
            );
        }
        if let Err(f) = self.store.save_if_changed() {
            crate::log_warn!("usp: instance numbers not saved: {f}");
        }
        Tree::new(t.objs)
    }

    // ---- Get ------------------------------------------------------------------------------

    pub fn get(&mut self, paths: &[String], max_depth: u32) -> Vec<GetResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = GetResult {
                    requested_path: p.clone(),
                    err: None,
                    resolved: Vec::new(),
                };
                match get_one(&tree, p, max_depth) {
                    Ok(res) => r.resolved = res,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }

    pub fn get_instances(
        &mut self,
        paths: &[String],
        first_level_only: bool,
    ) -> Vec<InstancesResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = InstancesResult {
                    requested_path: p.clone(),
                    err: None,
                    instances: Vec::new(),
                };
                match instances_one(&tree, p, first_level_only) {
                    Ok(i) => r.instances = i,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }

    pub fn get_supported_dm(
        &mut self,
        paths: &[String],
        filter: SupportedFilter,
    ) -> Vec<SupportedResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = SupportedResult {
                    requested_path: p.clone(),
                    err: None,
                    objects: Vec::new(),
                };
                match supported::supported_one(&tree, p, filter) {
                    Ok(o) => r.objects = o,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }

    // ---- Set ------------------------------------------------------------------------------

    pub fn set(
        &mut self,
        objs: &[ObjSettings],
        allow_partial: bool,
    ) -> Result<Vec<SetResult>, RequestError> {
        self.touched = true;
        let tree = self.materialize();
        // Validate everything first, so a refused request changes nothing.
        let mut plans = Vec::new();
        for o in objs {
            plans.push((o, plan_set(&tree, o)));
        }
        if !allow_partial {
            if let Some((_, Err((err, param_errs)))) = plans.iter().find(|(_, p)| p.is_err()) {
                return Err(RequestError {
                    err: err.clone(),
                    param_errs: param_errs.clone(),
                });
            }
        }
        let mut out = Vec::new();
        for (o, plan) in plans {
            let outcome = match plan {
                Err(e) => Err(e),
                Ok(insts) => {
                    let mut done = Vec::new();
                    let mut failed = None;
                    for inst in insts {
                        // Only non-required parameters failed (or none were given): the object
                        // is still updated, with the failures as param_errs (TR-369's
                        // allow_partial/required table), so there is nothing to apply.
                        let applied = if inst.changes.is_empty() {
                            Ok(())
                        } else {
                            self.apply_set(&inst)
                        };
                        match applied {
                            Ok(()) => done.push(UpdatedInstance {
                                affected_path: inst.obj_path.clone(),
                                updated: inst
                                    .changes
                                    .iter()
                                    .map(|(n, v)| (n.to_string(), v.clone()))
                                    .collect(),
                                param_errs: inst.param_errs.clone(),
                            }),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) if !allow_partial => {
                            return Err(RequestError {
                                err: e,
                                param_errs: Vec::new(),
                            })
                        }
                        Some(e) => Err((e, Vec::new())),
                        None => Ok(done),
                    }
                }
            };
            out.push(SetResult {
                requested_path: o.obj_path.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    fn apply_set(&mut self, inst: &SetPlan) -> Result<(), UspError> {
        match inst.desc.name {
            "ExecEnv" => {
                for (name, value) in &inst.changes {
                    if *name == "Enable" {
                        self.agent
                            .set_env_enable(&inst.key, parse_bool(value))
                            .map_err(|f| UspError::new(f.code, f.message))?;
                    }
                }
                Ok(())
            }
            "Controller" => {
                for (name, value) in &inst.changes {
                    if *name == "Enable" {
                        let list = &mut self.store.data.disabled_controllers;
                        list.retain(|c| *c != inst.key);
                        if !parse_bool(value) {
                            list.push(inst.key.clone());
                        }
                    }
                }
                self.store.save_if_changed().map_err(fault_err)
            }
            "Subscription" => {
                let n: u32 = inst.key.parse().unwrap_or(0);
                let Some(s) = self.subs.iter_mut().find(|s| s.instance == n) else {
                    return Err(UspError::new(
                        OBJECT_DOES_NOT_EXIST,
                        format!("{} no longer exists", inst.obj_path),
                    ));
                };
                for (name, value) in &inst.changes {
                    apply_sub_param(s, name, value);
                }
                self.save_subs().map_err(fault_err)
            }
            other => Err(UspError::new(
                NOT_WRITABLE,
                format!("{other} has no writable parameters"),
            )),
        }
    }

    fn save_subs(&mut self) -> Result<(), Fault> {
        self.store.data.subscriptions =
            self.subs.iter().filter(|s| s.persistent).cloned().collect();
        self.store.save_if_changed()
    }

    // ---- Add / Delete ---------------------------------------------------------------------

    pub fn add(
        &mut self,
        caller: &Caller,
        objs: &[ObjSettings],
        allow_partial: bool,
    ) -> Result<Vec<AddResult>, RequestError> {
        self.touched = true;
        let mut out = Vec::new();
        let before = self.subs.clone();
        for o in objs {
            let outcome = self.add_one(caller, o);
            if let Err((err, param_errs)) = &outcome {
                if !allow_partial {
                    self.subs = before;
                    let _ = self.save_subs();
                    return Err(RequestError {
                        err: err.clone(),
                        param_errs: param_errs.clone(),
                    });
                }
            }
            out.push(AddResult {
                requested_path: o.obj_path.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    fn add_one(
        &mut self,
        caller: &Caller,
        o: &ObjSettings,
    ) -> Result<Created, (UspError, Vec<ParamError>)> {
        let path = Path::parse(&o.obj_path).map_err(|e| (e, Vec::new()))?;
        let hit = tree::schema_of(&path).map_err(|e| (e, Vec::new()))?;
        if path.leaf != Leaf::Object || !hit.desc.multi || !hit.table {
            return Err((
                UspError::new(NOT_A_TABLE, format!("{}: not a table", o.obj_path)),
                Vec::new(),
            ));
        }
        if !hit.desc.creatable {
            return Err((
                UspError::new(
                    NOT_CREATABLE,
                    format!(
                        "{}: controllers cannot create {}",
                        o.obj_path, hit.desc.name
                    ),
                ),
                Vec::new(),
            ));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                UspError::new(
                    RESOURCES_EXCEEDED,
                    format!("already {MAX_SUBSCRIPTIONS} subscriptions"),
                ),
                Vec::new(),
            ));
        }
        let instance = self.store.next("Subscription");
        let mut sub = Subscription {
            instance,
            enable: false,
            id: String::new(),
            recipient: caller.endpoint_id.clone(),
            notif_type: String::new(),
            reference_list: Vec::new(),
            persistent: false,
            creation_date: rfc3339(now_secs()),
        };
        let obj_path = format!("Device.LocalAgent.Subscription.{instance}.");
        let mut param_errs = Vec::new();
        for (name, value, required) in &o.params {
            match check_param(hit.desc, name, value).and_then(|_| check_sub_value(name, value)) {
                Ok(()) => apply_sub_param(&mut sub, name, value),
                Err(err) => {
                    let pe = ParamError {
                        path: format!("{obj_path}{name}"),
                        err: err.clone(),
                    };
                    if *required {
                        return Err((err, vec![pe]));
                    }
                    param_errs.push(pe);
                }
            }
        }
        if sub.id.is_empty() {
            sub.id = format!("cpv-{instance}");
        }
        if self
            .subs
            .iter()
            .any(|s| s.id == sub.id && s.recipient == sub.recipient)
        {
            return Err((
                UspError::new(
                    DUPLICATE_KEY,
                    format!("subscription ID {:?} exists for this controller", sub.id),
                ),
                Vec::new(),
            ));
        }
        let unique_keys = vec![
            ("ID".to_string(), sub.id.clone()),
            (
                "Recipient".to_string(),
                self.controller_path(&sub.recipient),
            ),
        ];
        self.subs.push(sub);
        self.save_subs().map_err(|f| (fault_err(f), Vec::new()))?;
        Ok(Created {
            instantiated_path: obj_path,
            param_errs,
            unique_keys,
        })
    }

    pub fn delete(
        &mut self,
        paths: &[String],
        allow_partial: bool,
    ) -> Result<Vec<DeleteResult>, RequestError> {
        self.touched = true;
        let tree = self.materialize();
        let mut plans = Vec::new();
        for p in paths {
            plans.push((p, plan_delete(&tree, p)));
        }
        if !allow_partial {
            if let Some((_, Err(e))) = plans.iter().find(|(_, r)| r.is_err()) {
                return Err(RequestError {
                    err: e.clone(),
                    param_errs: Vec::new(),
                });
            }
        }
        let mut out = Vec::new();
        for (p, plan) in plans {
            let outcome = plan.map(|victims| {
                let paths: Vec<String> = victims
                    .iter()
                    .map(|n| format!("Device.LocalAgent.Subscription.{n}."))
                    .collect();
                self.subs.retain(|s| !victims.contains(&s.instance));
                paths
            });
            out.push(DeleteResult {
                requested_path: p.clone(),
                outcome,
            });
        }
        if let Err(f) = self.save_subs() {
            crate::log_warn!("usp: subscriptions not saved: {f}");
        }
        Ok(out)
    }
}

fn kib(v: u64) -> String {
    v.min(i32::MAX as u64).to_string()
}

fn instance_paths(tree: &Tree) -> BTreeSet<String> {
    tree.objs
        .iter()
        .filter(|o| o.instance().is_some() && o.desc.name != "Request")
        .map(|o| o.path.clone())
        .collect()
}

fn get_one(tree: &Tree, p: &str, max_depth: u32) -> Result<PathValues, UspError> {
    let path = Path::parse(p)?;
    tree::schema_of(&path)?;
    let roots = tree.resolve(&path);
    // R-GET.0: a path without wildcards or search expressions must name something that is
    // instantiated; only a search path may match nothing and still succeed (empty result).
    if roots.is_empty() && path.is_exact() {
        return Err(UspError::new(
            INVALID_PATH,
            format!("{p}: no such object instance"),
        ));
    }
    let mut out = Vec::new();
    match &path.leaf {
        Leaf::Param(name) => {
            for o in roots {
                if let Some(v) = o.param(name) {
                    out.push((o.path.clone(), vec![(name.clone(), v.to_string())]));
                }
            }
        }
        Leaf::Object => {
            for root in roots {
                let base = root.depth();
                for o in tree.objs.iter().filter(|o| o.path.starts_with(&root.path)) {
                    if o.table || o.params.is_empty() {
                        continue;
                    }
                    let depth = o.depth() - base + 1;
                    if max_depth != 0 && depth > max_depth as usize {
                        continue;
                    }
                    out.push((
                        o.path.clone(),
                        o.params
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.clone()))
                            .collect(),
                    ));
                }
            }
        }
        Leaf::Command(_) | Leaf::Event(_) => {
            return Err(UspError::new(
                INVALID_PATH,
                format!("{p}: Get takes object and parameter paths, not commands or events"),
            ))
        }
    }
    Ok(out)
}

fn unique_keys(o: &Obj) -> Vec<(String, String)> {
    schema::unique_key_names(o.desc)
        .iter()
        .map(|n| (n.to_string(), o.param(n).unwrap_or_default().to_string()))
        .collect()
}

fn instances_one(tree: &Tree, p: &str, first_level_only: bool) -> Result<PathValues, UspError> {
    let path = Path::parse(p)?;
    tree::schema_of(&path)?;
    if path.leaf != Leaf::Object {
        return Err(UspError::new(
            INVALID_PATH,
            format!("{p}: GetInstances takes object paths"),
        ));
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for root in tree.resolve(&path) {
        let root_insts = root
            .segs
            .iter()
            .filter(|s| matches!(s, Seg::Inst(_)))
            .count();
        for o in tree.objs.iter().filter(|o| o.path.starts_with(&root.path)) {
            if o.instance().is_none() || !seen.insert(o.path.clone()) {
                continue;
            }
            let insts = o.segs.iter().filter(|s| matches!(s, Seg::Inst(_))).count();
            if first_level_only && insts > root_insts + usize::from(root.table) {
                continue;
            }
            out.push((o.path.clone(), unique_keys(o)));
        }
    }
    Ok(out)
}

/// A Set validated for one instance.
struct SetPlan {
    obj_path: String,
    desc: &'static ObjDesc,
    key: String,
    changes: Vec<(&'static str, String)>,
    param_errs: Vec<ParamError>,
}

fn check_param(desc: &'static ObjDesc, name: &str, value: &str) -> Result<(), UspError> {
    // TR-369's error table: 7010 is the Add/Set code for a parameter that does not exist.
    let Some(p) = desc.param(name) else {
        return Err(UspError::new(
            UNSUPPORTED_PARAMETER,
            format!("no parameter {name} in {}", desc.name),
        ));
    };
    if p.access != Access::ReadWrite {
        return Err(UspError::new(
            NOT_WRITABLE,
            format!("{}.{name} is read-only", desc.name),
        ));
    }
    check_value(p, value).map_err(|(code, msg)| UspError::new(code, msg))
}

/// Checks beyond the type: ReferenceList entries must be valid paths, bounded in number.
fn check_sub_value(name: &str, value: &str) -> Result<(), UspError> {
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

fn apply_sub_param(s: &mut Subscription, name: &str, value: &str) {
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

fn plan_set(tree: &Tree, o: &ObjSettings) -> Result<Vec<SetPlan>, (UspError, Vec<ParamError>)> {
    let path = Path::parse(&o.obj_path).map_err(|e| (e, Vec::new()))?;
    let hit = tree::schema_of(&path).map_err(|e| (e, Vec::new()))?;
    if path.leaf != Leaf::Object || hit.table {
        return Err((
            UspError::new(
                INVALID_PATH,
                format!("{}: Set takes object instance paths", o.obj_path),
            ),
            Vec::new(),
        ));
    }
    let targets = tree.resolve(&path);
    if targets.is_empty() && path.is_exact() {
        return Err((
            UspError::new(
                OBJECT_DOES_NOT_EXIST,
                format!("{} does not exist", o.obj_path),
            ),
            Vec::new(),
        ));
    }
    let mut plans = Vec::new();
    for t in targets {
        let mut plan = SetPlan {
            obj_path: t.path.clone(),
            desc: t.desc,
            key: t.key.clone(),
            changes: Vec::new(),
            param_errs: Vec::new(),
        };
        for (name, value, required) in &o.params {
            let checked = check_param(t.desc, name, value).and_then(|_| {
                if t.desc.name == "Subscription" {
                    check_sub_value(name, value)
                        .and_then(|_| keys::check_unique(tree, t, name, value))
                } else {
                    Ok(())
                }
            });
            match checked {
                Ok(()) => {
                    let p = t.desc.param(name).expect("checked");
                    plan.changes.push((p.name, value.clone()));
                }
                Err(err) => {
                    let pe = ParamError {
                        path: format!("{}{name}", t.path),
                        err: err.clone(),
                    };
                    if *required {
                        return Err((err, vec![pe]));
                    }
                    plan.param_errs.push(pe);
                }
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

fn plan_delete(tree: &Tree, p: &str) -> Result<Vec<u32>, UspError> {
    let path = Path::parse(p)?;
    let hit = tree::schema_of(&path)?;
    if path.leaf != Leaf::Object || !hit.desc.multi || hit.table {
        return Err(UspError::new(
            NOT_A_TABLE,
            format!("{p}: not an instance of a table"),
        ));
    }
    if !hit.desc.creatable {
        return Err(UspError::new(
            DELETE_FAILURE,
            format!("{p}: controllers cannot delete {}", hit.desc.name),
        ));
    }
    // A path that names nothing deletes nothing (TR-369: not an error).
    Ok(tree
        .resolve(&path)
        .iter()
        .filter_map(|o| o.instance())
        .collect())
}
