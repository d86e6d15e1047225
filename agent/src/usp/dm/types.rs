//! What the data model takes and returns, shared by the message kinds: the caller, the
//! per-path results of Get, GetInstances, GetSupportedDM, Set, Add, Delete and Operate, and
//! the bookkeeping of asynchronous commands (`Device.LocalAgent.Request.{i}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use cpevisor_usp::errors::UspError;

use super::schema::{self, Access, Kind};
use crate::fault::Fault;
use crate::model::DeploymentUnit;
use crate::usp::config::Role;

/// (object or instance path, [(name, value)]): what Get and GetInstances return per path.
pub type PathValues = Vec<(String, Vec<(String, String)>)>;

/// Most subscriptions held (all controllers together).
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most asynchronous commands in flight.
pub const MAX_REQUESTS: usize = 16;
/// Most entries in one ReferenceList.
pub const MAX_REFERENCES: usize = 16;

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
pub(super) struct Request {
    pub instance: u32,
    pub originator: String,
    pub command: String,
    pub command_key: String,
}

/// What `Device.Reboot()` runs (the daemon reboots the board; tests record the call).
pub type RebootHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperateOutcome {
    /// Asynchronous: `Device.LocalAgent.Request.{i}`; an OperationComplete follows.
    Request(String),
    Output(BTreeMap<String, String>),
    Failure(UspError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperateResult {
    /// The command's concrete path (`Device.SoftwareModules.DeploymentUnit.2.Update()`).
    pub executed_command: String,
    pub outcome: OperateOutcome,
}

/// The end of an asynchronous command.
pub(super) struct Completion {
    pub request: u32,
    pub obj_path: String,
    pub command_name: String,
    pub command_key: String,
    pub result: Result<Option<DeploymentUnit>, Fault>,
    /// The caller's requested DU UUID (InstallDU's `UUID` argument), checked on completion.
    pub want_uuid: Option<String>,
}
