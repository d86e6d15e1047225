//! The TR-181 `Device.SoftwareModules` objects: ExecEnv, DeploymentUnit, ExecutionUnit, their
//! status state machines with explicit allowed transitions, and the `DUStateChange!` event.
//! Plain data: the lifecycle owns and persists it, the API serializes it.

pub mod uuid;

use serde::{Deserialize, Serialize};

/// Isolation backend an ExecEnv provides (`ExecEnv.Type` in our data model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecEnvType {
    /// Each app in its own KVM micro-VM run by the cpevisor VMM.
    Kvm,
    /// Each app as a jailed process on the host kernel (namespaces, cgroup, seccomp).
    Jail,
}

impl ExecEnvType {
    /// The `ExecEnv.Type` value: `kvm` or `jail`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecEnvType::Kvm => "kvm",
            ExecEnvType::Jail => "jail",
        }
    }
}

/// `ExecEnv.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEnvStatus {
    /// Enabled and able to run apps.
    Up,
    /// Turned off (`Enable` false).
    Disabled,
    /// Cannot run apps; in the data model's enumeration, but the agent does not report it yet.
    Error,
}

/// `Device.SoftwareModules.ExecEnv.{i}`: one per isolation backend of the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEnv {
    /// `Name`: unique label of the environment; EUs and DUs refer to it by this name.
    pub name: String,
    /// `Type`: which isolation backend runs its apps.
    #[serde(rename = "type")]
    pub env_type: ExecEnvType,
    /// `Enable`: false stops its apps and refuses installs into it.
    pub enable: bool,
    /// `Status`.
    pub status: ExecEnvStatus,
    /// CPU architecture of the apps it runs (`aarch64`, `x86_64`, ...).
    pub arch: String,
    /// App memory budget in MiB (board profile / agent config).
    pub memory_budget_mib: u32,
    /// Budget minus the memory of admitted apps (EUs whose RequestedState is Active).
    pub available_memory_mib: u32,
    /// `AllocatedDiskSpace`, KiB: the flash budget (its file system's size, when the budget
    /// is larger or there is none).
    #[serde(default)]
    pub allocated_disk_kib: u64,
    /// `AvailableDiskSpace`, KiB: what a package may still take (`lifecycle::disk`).
    #[serde(default)]
    pub available_disk_kib: u64,
}

/// `DeploymentUnit.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DuStatus {
    /// Install in progress: fetching, verifying and unpacking the package.
    Installing,
    /// Installed; its EU exists.
    Installed,
    /// Update in progress; falls back to Installed if it fails.
    Updating,
    /// Uninstall in progress; falls back to Installed if it fails.
    Uninstalling,
    /// Not installed (also the state a failed install returns to).
    Uninstalled,
}

impl DuStatus {
    /// The DU state machine. Failed operations go back to where they came from
    /// (Installing -> Uninstalled, Updating -> Installed, Uninstalling -> Installed).
    pub fn can_become(self, to: DuStatus) -> bool {
        use DuStatus::*;
        matches!(
            (self, to),
            (Uninstalled, Installing)
                | (Installing, Installed)
                | (Installing, Uninstalled)
                | (Installed, Updating)
                | (Updating, Installed)
                | (Installed, Uninstalling)
                | (Uninstalling, Uninstalled)
                | (Uninstalling, Installed)
        )
    }
}

/// `ExecutionUnit.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EuStatus {
    /// Not running, by request or after retries ran out.
    Idle,
    /// Being started: the sandbox is set up and the app launched, not yet ready.
    Starting,
    /// Running (and its health probe passing, where the package declares one).
    Active,
    /// Being stopped (graceful stop, then kill at the deadline).
    Stopping,
    /// Crashed while Starting or Active; waits out the AutoRestart back-off.
    Restarting,
}

impl EuStatus {
    /// The EU state machine: Idle -> Starting -> Active -> Stopping -> Idle; a crash of an Active
    /// app goes to Restarting (back-off) then Starting, or to Idle when retries are exhausted.
    pub fn can_become(self, to: EuStatus) -> bool {
        use EuStatus::*;
        matches!(
            (self, to),
            (Idle, Starting)
                | (Starting, Active)
                | (Starting, Idle)
                | (Starting, Stopping)
                | (Starting, Restarting)
                | (Active, Stopping)
                | (Active, Restarting)
                | (Active, Idle)
                | (Stopping, Idle)
                | (Restarting, Starting)
                | (Restarting, Idle)
                | (Restarting, Stopping)
        )
    }
}

/// `ExecutionUnit.ExecutionFaultCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionFaultCode {
    /// No fault.
    NoFault,
    /// The app failed to start on a SetRequestedState(Active) request.
    FailureOnStart,
    /// The app failed to start at boot or by AutoStart.
    FailureOnAutoStart,
    /// The app did not end by itself within its stop deadline and was killed.
    FailureOnStop,
    /// The app exited or failed while Active.
    FailureWhileActive,
    /// TR-181 `UnStartable`; in the data model's enumeration, but the agent never sets it.
    /// (Spelled `Unstartable` before; the alias reads such state.)
    #[serde(alias = "Unstartable")]
    UnStartable,
}

/// `ExecutionUnit.RequestedState` (what SetRequestedState asks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedState {
    /// Stopped.
    Idle,
    /// Running.
    Active,
}

/// TR-181 AutoRestart parameters of an EU, plus its live counters. The default is off, with
/// every interval and counter 0 (a new EU before its package's settings apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRestart {
    /// `Enable`: restart the app after it fails while Active.
    pub enable: bool,
    /// Seconds.
    pub retry_minimum_wait_interval: u32,
    /// Seconds.
    pub retry_maximum_wait_interval: u32,
    /// Per mille (2000 = the wait doubles on each retry).
    pub retry_interval_multiplier: u32,
    /// `MaximumRetryCount`: restarts before the EU gives up and goes Idle; 0 means no limit.
    pub maximum_retry_count: u32,
    /// Seconds an app must stay up for RetryCount to go back to 0.
    pub reset_period: u32,
    /// `RetryCount`: restarts since the app last stayed up for `reset_period` (live counter).
    pub retry_count: u32,
    /// Unix time (seconds) of the next restart attempt; 0 when none is scheduled.
    pub next_restart: u64,
}

impl AutoRestart {
    /// TR-181 back-off before retry number `retry` (0-based):
    /// min(max_wait, min_wait * (multiplier/1000)^retry), in milliseconds.
    pub fn wait_ms(&self, retry: u32) -> u64 {
        let max_ms = u64::from(self.retry_maximum_wait_interval).saturating_mul(1000);
        let mut wait = u64::from(self.retry_minimum_wait_interval).saturating_mul(1000);
        for _ in 0..retry {
            wait = wait.saturating_mul(u64::from(self.retry_interval_multiplier)) / 1000;
            if wait >= max_ms {
                return max_ms;
            }
        }
        wait.min(max_ms)
    }
}

/// `Device.SoftwareModules.ExecutionUnit.{i}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionUnit {
    /// `EUID`: stable across reboots, e.g. `eu-3`.
    pub eu_id: String,
    /// `Name`: the app name from the package config.
    pub name: String,
    /// UUID of the DeploymentUnit this EU belongs to.
    pub du_uuid: String,
    /// Name of the ExecEnv it runs in (maps to `ExecutionEnvRef`).
    pub exec_env: String,
    /// `Status`.
    pub status: EuStatus,
    /// `RequestedState`: what the operator (or AutoStart) last asked for.
    pub requested_state: RequestedState,
    /// `ExecutionFaultCode` of the last failure; `NoFault` when none.
    pub execution_fault_code: ExecutionFaultCode,
    /// `ExecutionFaultMessage`: human-readable detail of the fault; empty when none.
    pub execution_fault_message: String,
    /// `AutoStart`: start the app once installed and when the agent boots.
    pub auto_start: bool,
    /// `RunLevel` from the package config.
    pub run_level: u32,
    /// KiB, refreshed from the cgroup or the process RSS while the app runs.
    pub memory_in_use: u64,
    /// Declared memory from the package config, MiB (what admission counts).
    pub memory_mib: u32,
    /// `DiskSpaceInUse`, KiB: what the DU's files take on flash (blobs, version directory,
    /// data volume), measured for every snapshot.
    #[serde(default)]
    pub disk_in_use: u64,
    /// `AllocatedDiskSpace`, KiB: the flash the package declares (`disk_mib`); None when it
    /// declares none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_disk_kib: Option<u64>,
    /// `AutoRestart.*` policy and counters.
    pub auto_restart: AutoRestart,
    /// The last health probe's result, for apps whose package declares one (not persisted
    /// meaning: refreshed from the supervisor for every snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// A running microVM app's balloon (target, what the guest holds in it, what it gave back
    /// so far), as of the agent's last balloon tick; refreshed for every snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonFigures>,
}

/// A microVM's balloon figures as its VMM reports them (the supervisor's balloon work reads
/// them from the VMM's control socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonFigures {
    /// The target, MiB: what the guest should hold in its balloon.
    pub target_mib: u64,
    /// What the guest's driver says its balloon holds, MiB.
    pub actual_mib: u64,
    /// Guest RAM given back to the host since the VM started (reporting and inflation), MiB.
    pub discarded_mib: u64,
}

/// The last result of an app's health probe (`X_CPEVISOR_Health*` in the data model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `ok` or `failing`.
    pub state: String,
    /// RFC 3339 UTC of the probe.
    pub time: String,
    /// Why the probe failed (its output or the error); empty when it passed.
    pub message: String,
}

impl HealthStatus {
    /// `X_CPEVISOR_HealthStatus`: `None` (no probe, or none ran yet), `Ok` or `Failing`.
    pub fn dm_status(h: &Option<HealthStatus>) -> String {
        match h.as_ref().map(|h| h.state.as_str()) {
            None => "None",
            Some("ok") => "Ok",
            Some(_) => "Failing",
        }
        .into()
    }
    /// `X_CPEVISOR_HealthLastCheck`; TR-106's unknown time when no probe ran.
    pub fn dm_time(h: &Option<HealthStatus>) -> String {
        h.as_ref()
            .map_or_else(|| "0001-01-01T00:00:00Z".into(), |h| h.time.clone())
    }
    /// `X_CPEVISOR_HealthMessage`; empty when no probe ran.
    pub fn dm_message(h: &Option<HealthStatus>) -> String {
        h.as_ref().map(|h| h.message.clone()).unwrap_or_default()
    }
}

/// `Device.SoftwareModules.DeploymentUnit.{i}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentUnit {
    /// `UUID`: RFC 4122 version-5 UUID of the DU's Vendor and Name (see `uuid`); also `DUID`.
    pub uuid: String,
    /// `Name` from the package config.
    pub name: String,
    /// `Version` from the package config.
    pub version: String,
    /// `Vendor` from the package config.
    pub vendor: String,
    /// `Description` from the package config.
    pub description: String,
    /// `URL` the package was installed from.
    pub url: String,
    /// `Status`.
    pub status: DuStatus,
    /// `Resolved`: whether the DU's dependencies are met (always true: packages have none).
    pub resolved: bool,
    /// Name of the ExecEnv it was installed into (maps to `ExecutionEnvRef`).
    pub exec_env: String,
    /// `ExecutionUnitList`: EUIDs of the EUs it contains (one per package).
    pub execution_unit_list: Vec<String>,
    /// `sha256:<hex>` of the package manifest that was installed.
    pub manifest_digest: String,
}

/// `OperationPerformed` of `DUStateChange!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `Install` operation.
    Install,
    /// `Update` operation.
    Update,
    /// `Uninstall` operation.
    Uninstall,
}

/// `DUStateChange!` `CurrentState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DuEventState {
    /// The DU is installed afterwards: the operation succeeded, or a failed update or uninstall
    /// kept the previous state.
    Installed,
    /// The DU is gone: an uninstall succeeded.
    Uninstalled,
    /// An install failed; nothing of it was left installed.
    Failed,
}

/// The `DUStateChange!` event: exactly one per finished DU operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuStateChange {
    /// `UUID` of the DU.
    pub uuid: String,
    /// `Version` of the DU after the operation.
    pub version: String,
    /// `CurrentState` after the operation.
    pub current_state: DuEventState,
    /// `Resolved` after the operation.
    pub resolved: bool,
    /// `OperationPerformed`.
    pub operation_performed: Operation,
    /// RFC 3339 UTC.
    pub start_time: String,
    /// `CompleteTime`, RFC 3339 UTC.
    pub complete_time: String,
    /// `None` when the operation succeeded (FaultCode 0 in USP terms).
    pub fault: Option<crate::fault::Fault>,
}

/// A value change of an EU, for subscribers of `ExecutionUnit.{i}.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EuValueChange {
    /// `EUID` of the unit that changed.
    pub eu_id: String,
    /// New `Status`.
    pub status: EuStatus,
    /// `ExecutionFaultCode` at the time of the change.
    pub execution_fault_code: ExecutionFaultCode,
    /// `ExecutionFaultMessage` at the time of the change.
    pub execution_fault_message: String,
    /// When the change happened, RFC 3339 UTC.
    pub time: String,
}

/// Everything the agent publishes: numbered so readers can ask for "events after N". Written,
/// never read back: the ring is in RAM (`lifecycle::events`), the control socket sends events
/// as JSON values that cpevisorctl renders as such, and the journal keeps a [`DuStateChange`]
/// itself. So no `Deserialize`: serde's derived reader of an internally tagged enum buffers
/// (docs/flash.md, section 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Event {
    /// A DU operation finished (`DUStateChange!`).
    #[serde(rename = "DUStateChange!")]
    DuStateChange(DuStateChange),
    /// An EU's status or fault changed (`ValueChange`).
    #[serde(rename = "ValueChange")]
    EuValueChange(EuValueChange),
}

/// RFC 3339 UTC for a Unix time, without pulling a date crate (civil-from-days, Howard Hinnant).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Current Unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_transitions() {
        use DuStatus::*;
        assert!(Uninstalled.can_become(Installing));
        assert!(Installing.can_become(Installed));
        assert!(Installed.can_become(Updating));
        assert!(!Installed.can_become(Installing));
        assert!(!Uninstalled.can_become(Installed));
        assert!(!Updating.can_become(Uninstalling));
    }

    #[test]
    fn eu_transitions() {
        use EuStatus::*;
        assert!(Idle.can_become(Starting));
        assert!(Active.can_become(Restarting));
        assert!(Restarting.can_become(Starting));
        assert!(!Idle.can_become(Active));
        assert!(!Stopping.can_become(Active));
    }

    #[test]
    fn backoff_follows_tr181_formula() {
        let ar = AutoRestart {
            enable: true,
            retry_minimum_wait_interval: 1,
            retry_maximum_wait_interval: 10,
            retry_interval_multiplier: 2000,
            maximum_retry_count: 5,
            reset_period: 60,
            retry_count: 0,
            next_restart: 0,
        };
        assert_eq!(ar.wait_ms(0), 1000);
        assert_eq!(ar.wait_ms(1), 2000);
        assert_eq!(ar.wait_ms(3), 8000);
        assert_eq!(ar.wait_ms(4), 10_000);
        assert_eq!(ar.wait_ms(u32::MAX), 10_000);
        let flat = AutoRestart {
            retry_interval_multiplier: 1000,
            ..ar
        };
        assert_eq!(flat.wait_ms(7), 1000);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
