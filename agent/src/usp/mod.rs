//! The agent's USP side (TR-369): the TR-181 data model (`dm`) and the endpoint that turns
//! Records into data model calls and notifications into Records (`endpoint`, transport-free),
//! carried by one MTP session: `mqtt` or `websocket`, both on the shared driver in `session`.
//! [`start`] reads what the daemon's `--usp FILE` (`file`) asks for and starts it.
//!
//! No module here imports one that imports it back: `file` and `endpoint` build on `config`
//! and `dm`; `mqtt` and `websocket` on `file`, `endpoint` and `session`; [`start`] on all.
//!
//! Data model (names as TR-181 Device:2 writes them):
//! - `Device.DeviceInfo.`: Manufacturer, ManufacturerOUI, ModelName, ProductClass, SerialNumber
//!   (from [`config::DeviceInfoConfig`]), SoftwareVersion (the agent's), UpTime (/proc/uptime),
//!   `MemoryStatus.Total`/`Free` (KiB, /proc/meminfo MemTotal/MemAvailable).
//! - `Device.LocalAgent.`: EndpointID, `Controller.{i}` (EndpointID, AssignedRole by name:
//!   FullAccess | ReadOnly; Enable writable and persisted: a disabled controller is ignored), `Subscription.{i}` (Enable, ID, Recipient, NotifType, ReferenceList,
//!   Persistent, CreationDate; the only table controllers may Add/Delete), `Request.{i}` (async
//!   commands in flight, RAM only).
//! - `Device.SoftwareModules.`: `ExecEnv.{i}` (Enable writable; AllocatedMemory/AvailableMemory and
//!   AllocatedDiskSpace/AvailableDiskSpace in KiB; `Reset()`), `DeploymentUnit.{i}` (`Update()`,
//!   `Uninstall()`), `ExecutionUnit.{i}` (AllocatedDiskSpace, -1 when the package declares no
//!   flash, and DiskSpaceInUse, KiB; `SetRequestedState()`, `Restart()`), `InstallDU()`, `DUStateChange!`; `Device.Reboot()`,
//!   `Device.Boot!`.
//! - Instance numbers are per table, keyed by ExecEnv name, DU UUID, EUID, controller endpoint
//!   ID; kept in `usp.json` (written only when they change) and never reused.
//!
//! Semantics worth knowing:
//! - InstallDU, Update, Uninstall, Reset and Reboot are asynchronous: OperateResp carries
//!   `Device.LocalAgent.Request.{i}`, and an OperationComplete goes to the subscriptions that ask
//!   for it (TR-369: OperationComplete is a subscribed notification), with output args
//!   (InstallDU: DeploymentUnitRef, UUID, Version, beyond TR-181) or a CommandFailure carrying
//!   the agent's fault code (7004..7230, 7003 internal). Bad arguments are refused at once (7027).
//! - InstallDU's Username/Password are refused (7027): downloads take no credentials. A `UUID`
//!   argument that is not the package's UUID undoes the install and fails with 7004.
//! - Errors: 7008 path syntax, 7026 unknown path (Get reports it per path), 7016 a named
//!   instance that does not exist (Set, Operate), 7011/7012 wrong type/value, 7013 read-only,
//!   7018 not a table, 7019 not creatable, 7024 not deletable, 7025 duplicate subscription ID,
//!   7006 a ReadOnly controller's Set/Add/Delete/Operate, 7001 Notify/Register from a controller.
//!   A Set without allow_partial validates every parameter before changing anything; an
//!   ExecEnv.Enable that the agent then refuses is not rolled back with the others.
//! - ValueChange for every parameter a ValueChange subscription references (`dm::value_change`),
//!   but those that move by themselves (UpTime, free memory); `ExecutionUnit.{i}.Status` from
//!   the agent's events.
//! - Records from an endpoint that is not a configured controller, or without the transport
//!   identity (certificate CN) its config names, get no answer at all; Records for another
//!   endpoint are dropped (logged once). Over MQTT the identity is the topic (`topic_auth`).

use std::path::Path;
use std::sync::Arc;

use crate::lifecycle::Agent;

pub mod config;
pub mod dm;
pub mod endpoint;
pub mod file;
pub mod mqtt;
pub mod retry;
pub mod session;
pub mod topic_auth;
pub mod websocket;

use dm::DataModel;
use endpoint::Endpoint;
use file::UspFile;
use session::Session;

/// Builds the data model and endpoint over `agent` and connects as `file` says: a WebSocket to
/// the controller when it has a `websocket` object, else the MQTT broker.
pub fn start(agent: Arc<Agent>, file: &UspFile, state_dir: &Path) -> Result<Session, String> {
    file.validate()?;
    if file.websocket.is_none() && file.mqtt.ca_file.is_none() {
        crate::log_warn!(
            "usp: no ca_file: talking to {}:{} over plain TCP",
            file.mqtt.broker_host,
            file.mqtt.port()
        );
    }
    let dm = DataModel::open(
        agent.clone(),
        file.usp_config(),
        state_dir,
        file.reboot_hook(),
    )
    .map_err(|f| format!("usp data model: {f}"))?;
    let endpoint = Endpoint::new(dm);
    if let Some(ws) = &file.websocket {
        return websocket::start(endpoint, agent, file, ws);
    }
    let mqtt = file.mqtt_config()?;
    mqtt::start(endpoint, agent, mqtt, file.topic())
}
