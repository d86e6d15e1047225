//! The TR-181 data model the agent serves over USP: `Device.DeviceInfo.`, `Device.LocalAgent.`
//! and `Device.SoftwareModules.`, with Get, GetInstances, GetSupportedDM, Set, Add, Delete and
//! Operate, and the notifications its subscriptions ask for. Transport-free: the endpoint turns
//! these results into USP messages.
//!
//! Laid out the way obuspa lays out its data model: one file per object area
//! (`device_info`, `local_agent`, `software_modules`), one per message kind (`get`, `set`,
//! `add_delete`, `operate`, `notify`, `supported`), the state in `model` and what they take and
//! return in `types`. Children import siblings only, never this module.

mod add_delete;
mod device_info;
mod get;
mod keys;
mod local_agent;
mod model;
mod notify;
mod operate;
pub mod persist;
pub mod schema;
mod set;
mod software_modules;
mod supported;
pub mod tree;
mod types;
pub mod value_change;

pub use model::DataModel;
pub use notify::{Notification, NotifyBody};
pub use types::{
    AddResult, Caller, Created, DeleteResult, GetResult, InstancesResult, ObjSettings,
    OperateOutcome, OperateResult, ParamError, PathValues, RebootHook, RequestError, SetResult,
    SupportedFilter, SupportedObject, SupportedResult, UpdatedInstance, MAX_REFERENCES,
    MAX_REQUESTS, MAX_SUBSCRIPTIONS,
};
