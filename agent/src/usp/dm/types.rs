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
    /// The controller's USP endpoint ID (the record's `from_id`).
    pub endpoint_id: String,
    /// What that controller may do (its `AssignedRole`).
    pub role: Role,
}

/// A parameter that could not be set or used, with its full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// Full path of the parameter (`Device.LocalAgent.Subscription.3.Enable`).
    pub path: String,
    /// Why it failed.
    pub err: UspError,
}

/// One requested path of a Get: its resolved objects, or the error that path got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// The path as the controller sent it (may hold wildcards or search expressions).
    pub requested_path: String,
    /// Set when the path was invalid; then `resolved` is empty.
    pub err: Option<UspError>,
    /// (object path, [(parameter name relative to it, value)])
    pub resolved: Vec<(String, Vec<(String, String)>)>,
}

/// One requested path of a GetInstances: its instances, or the error that path got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesResult {
    /// The path as the controller sent it.
    pub requested_path: String,
    /// Set when the path was invalid; then `instances` is empty.
    pub err: Option<UspError>,
    /// (instance path, unique keys)
    pub instances: Vec<(String, Vec<(String, String)>)>,
}

/// One object of a GetSupportedDM answer, with what the filter asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedObject {
    /// `Device.SoftwareModules.DeploymentUnit.{i}.`
    pub path: String,
    /// Multi-instance (a table, `{i}` in the path).
    pub multi: bool,
    /// The controller may Add and Delete its instances.
    pub add_delete: bool,
    /// (parameter name, access, value type).
    pub params: Vec<(&'static str, Access, Kind)>,
    /// Its commands (`Reboot()`, `InstallDU()`, ...).
    pub commands: Vec<&'static schema::CommandDesc>,
    /// Its events (`DUStateChange!`, `Boot!`, ...).
    pub events: Vec<&'static schema::EventDesc>,
    /// The parameters that identify an instance (multi-instance objects only).
    pub unique_keys: &'static [&'static str],
}

/// One requested path of a GetSupportedDM: its objects, or the error that path got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedResult {
    /// The object path as the controller sent it.
    pub requested_path: String,
    /// Set when the path is not in the supported data model; then `objects` is empty.
    pub err: Option<UspError>,
    /// The object and, unless `first_level_only`, every object below it.
    pub objects: Vec<SupportedObject>,
}

/// What Get/GetSupportedDM return for each object.
#[derive(Debug, Clone, Copy)]
pub struct SupportedFilter {
    /// Only the requested object, not those below it.
    pub first_level_only: bool,
    /// Include each object's commands.
    pub commands: bool,
    /// Include each object's events.
    pub events: bool,
    /// Include each object's parameters.
    pub params: bool,
    /// `return_unique_key_sets`.
    pub unique_keys: bool,
}

/// One object of a Set or Add request.
#[derive(Debug, Clone)]
pub struct ObjSettings {
    /// Object or instance path, wildcards allowed (Set); the table path (Add).
    pub obj_path: String,
    /// (parameter name, value, required)
    pub params: Vec<(String, String, bool)>,
}

/// One instance a Set changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatedInstance {
    /// Its instance path.
    pub affected_path: String,
    /// (parameter name, new value) of each parameter set.
    pub updated: Vec<(String, String)>,
    /// Optional parameters that could not be set (the set went on without them).
    pub param_errs: Vec<ParamError>,
}

/// One object path of a Set: the instances it changed, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetResult {
    /// The object path as the controller sent it.
    pub requested_path: String,
    /// The changed instances, or the error and the required parameters behind it.
    pub outcome: Result<Vec<UpdatedInstance>, (UspError, Vec<ParamError>)>,
}

/// The instance an Add created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its path (`Device.LocalAgent.Subscription.4.`).
    pub instantiated_path: String,
    /// Optional parameters that could not be set on it.
    pub param_errs: Vec<ParamError>,
    /// Its unique keys and their values.
    pub unique_keys: Vec<(String, String)>,
}

/// One object of an Add: the instance created, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// The table path as the controller sent it.
    pub requested_path: String,
    /// The created instance, or the error and the required parameters behind it.
    pub outcome: Result<Created, (UspError, Vec<ParamError>)>,
}

/// One path of a Delete: the instances deleted, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResult {
    /// The path as the controller sent it (may match several instances).
    pub requested_path: String,
    /// The deleted instance paths (empty when nothing matched), or the error.
    pub outcome: Result<Vec<String>, UspError>,
}

/// A whole request refused (allow_partial false and something failed): a USP Error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The error code and message of the USP Error.
    pub err: UspError,
    /// The parameters behind it (`param_errs` of the Error message).
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

/// What an Operate did for one command path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperateOutcome {
    /// Asynchronous: `Device.LocalAgent.Request.{i}`; an OperationComplete follows.
    Request(String),
    /// Synchronous: the command's output arguments.
    Output(BTreeMap<String, String>),
    /// The command failed (or was refused) before it ran.
    Failure(UspError),
}

/// The result of one command path of an Operate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperateResult {
    /// The command's concrete path (`Device.SoftwareModules.DeploymentUnit.2.Update()`).
    pub executed_command: String,
    /// What happened.
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
