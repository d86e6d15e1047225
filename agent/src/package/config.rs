//! The app config blob (`application/vnd.cpevisor.app.config.v1+json`): what the app is and how
//! the agent runs it. Parsed strictly; every check failure is 7004 naming the field.

use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultCode};

/// CPU architecture an app's binaries are built for (`arch` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit Arm.
    Aarch64,
    /// 32-bit Arm (ARMv7).
    Armv7,
    /// 32-bit little-endian MIPS.
    Mipsel,
    /// 64-bit little-endian MIPS.
    Mips64el,
    /// 64-bit x86 (`x86_64` in the config).
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// The config spelling (`aarch64`, `x86_64`, ...), also what ExecEnv `arch` holds.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::Mipsel => "mipsel",
            Arch::Mips64el => "mips64el",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// An isolation backend an app supports (`backends` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A microVM run by cpevisor-vmm: needs the kernel layer.
    Kvm,
    /// Namespaces + cgroups + seccomp: needs the rootfs layer and `command`.
    Jail,
}

/// TR-181 `ExecutionUnit.{i}.AutoRestart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restart the app when it fails while Active.
    pub enable: bool,
    /// Seconds before the first restart.
    pub retry_min_wait_s: u32,
    /// Longest wait between restarts, seconds.
    pub retry_max_wait_s: u32,
    /// Per mille: 2000 doubles the wait after each retry.
    pub retry_interval_multiplier: u32,
    /// 0: retry for ever.
    pub max_retry_count: u32,
    /// Seconds of running without a crash after which RetryCount is reset.
    pub reset_period_s: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enable: false,
            retry_min_wait_s: 5,
            retry_max_wait_s: 300,
            retry_interval_multiplier: 2000,
            max_retry_count: 0,
            reset_period_s: 600,
        }
    }
}

/// What a health probe does (`health.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A TCP connect to the app's address and `port`.
    Tcp,
    /// `GET path` on the app's address and `port`: a 2xx or 3xx status passes.
    Http,
    /// `command` run in the app's sandbox: exit status 0 passes (jail apps only: a microVM
    /// shares no sandbox with the agent).
    Command,
}

fn default_probe_interval() -> u32 {
    10
}
fn default_probe_timeout() -> u32 {
    2
}
fn default_probe_threshold() -> u32 {
    3
}

/// The app's health probe: it must pass before the app is Active, and keep passing while it is
/// (`failure_threshold` failures in a row end the run as FailureWhileActive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// How the probe checks the app.
    pub kind: ProbeKind,
    /// tcp, http: the port on the app's address.
    #[serde(default)]
    pub port: u16,
    /// http: the request path (default `/`).
    #[serde(default)]
    pub path: String,
    /// command: argv inside the app's sandbox.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds between probes while the app runs (1..=`MAX_PROBE_INTERVAL_S`, default 10).
    #[serde(default = "default_probe_interval")]
    pub interval_s: u32,
    /// Deadline of one probe (connect, request and answer, or the command's run).
    #[serde(default = "default_probe_timeout")]
    pub timeout_s: u32,
    /// Failures in a row that end the run (1..=`MAX_PROBE_THRESHOLD`, default 3).
    #[serde(default = "default_probe_threshold")]
    pub failure_threshold: u32,
}

/// Upper bound of `health.interval_s`.
pub const MAX_PROBE_INTERVAL_S: u32 = 3600;
/// Upper bound of `health.timeout_s`.
pub const MAX_PROBE_TIMEOUT_S: u32 = 60;
/// Upper bound of `health.failure_threshold`.
pub const MAX_PROBE_THRESHOLD: u32 = 100;
/// Longest `health.path`, bytes.
pub const MAX_PROBE_PATH_LEN: usize = 256;
/// Most arguments in `health.command`.
pub const MAX_PROBE_ARGS: usize = 16;
/// Longest start deadline a package may ask for (a nested, emulated board is the slow case).
pub const MAX_START_DEADLINE_S: u32 = 3600;

impl HealthCheck {
    fn validate(&self, backends: &[Backend]) -> Result<(), Fault> {
        match self.kind {
            ProbeKind::Tcp | ProbeKind::Http if self.port == 0 => {
                return Err(invalid("health.port", "must be 1..=65535"))
            }
            ProbeKind::Command if backends.contains(&Backend::Kvm) => {
                return Err(invalid(
                    "health.kind",
                    "a command probe runs in the app's sandbox, which a microVM does not share \
                     with the agent: use tcp or http for a package with the kvm backend",
                ))
            }
            ProbeKind::Command if self.command.first().is_none_or(|a| a.is_empty()) => {
                return Err(invalid("health.command", "needs a non-empty argv"))
            }
            _ => {}
        }
        if self.kind == ProbeKind::Http && !self.path.is_empty() {
            let ok = self.path.starts_with('/')
                && self.path.len() <= MAX_PROBE_PATH_LEN
                && self.path.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(invalid(
                    "health.path",
                    format!("must start with / and be up to {MAX_PROBE_PATH_LEN} printable ASCII bytes without spaces"),
                ));
            }
        }
        if self.command.len() > MAX_PROBE_ARGS
            || self
                .command
                .iter()
                .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
        {
            return Err(invalid(
                "health.command",
                format!("at most {MAX_PROBE_ARGS} arguments of {MAX_ARG_LEN} bytes, no NUL"),
            ));
        }
        if !(1..=MAX_PROBE_INTERVAL_S).contains(&self.interval_s) {
            return Err(invalid(
                "health.interval_s",
                format!("must be 1..={MAX_PROBE_INTERVAL_S}"),
            ));
        }
        if !(1..=MAX_PROBE_TIMEOUT_S).contains(&self.timeout_s) {
            return Err(invalid(
                "health.timeout_s",
                format!("must be 1..={MAX_PROBE_TIMEOUT_S}"),
            ));
        }
        if !(1..=MAX_PROBE_THRESHOLD).contains(&self.failure_threshold) {
            return Err(invalid(
                "health.failure_threshold",
                format!("must be 1..={MAX_PROBE_THRESHOLD}"),
            ));
        }
        Ok(())
    }
}

/// The app config blob (`MEDIA_APP_CONFIG`), JSON with unknown fields refused: who the app is and
/// how the agent runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App name: 1..=`MAX_NAME_LEN` bytes of `A-Z a-z 0-9 . _ -`; TR-181 `DeploymentUnit.Name`.
    pub name: String,
    /// App version, no spaces, up to `MAX_VERSION_LEN` bytes; `DeploymentUnit.Version`.
    pub version: String,
    /// Vendor, up to `MAX_VENDOR_LEN` bytes; `DeploymentUnit.Vendor`.
    pub vendor: String,
    /// Free text, up to `MAX_DESCRIPTION_LEN` bytes; `DeploymentUnit.Description`.
    #[serde(default)]
    pub description: String,
    /// Architecture the app is built for; must match the ExecEnv's.
    pub arch: Arch,
    /// Backends the app can run under (one or both, no repeats).
    pub backends: Vec<Backend>,
    /// Memory the app needs, MiB (1..=`MAX_MEMORY_MIB`): the guest's RAM or the jail's cgroup
    /// limit, and what admission counts.
    pub memory_mib: u32,
    /// Virtual CPUs of a microVM (1..=`MAX_VCPUS`).
    pub vcpus: u32,
    /// Guest kernel command line (kvm backend).
    #[serde(default)]
    pub cmdline: String,
    /// argv of the app inside the jail (jail backend).
    #[serde(default)]
    pub command: Vec<String>,
    /// `AutoRestart` policy of the app's EU (default: off).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Start the app when it is installed and when the agent boots (TR-181 `AutoStart`).
    #[serde(default)]
    pub autostart: bool,
    /// TR-181 `RunLevel` of the EU.
    #[serde(default)]
    pub run_level: u16,
    /// Seconds from a start to Active (microVM: the guest's boot-ready signal; jail: the app's
    /// process running; then the health probe, if any) before the start counts as failed.
    /// Absent: the agent's default (`supervise::ready::DEFAULT_START_DEADLINE_S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_deadline_s: Option<u32>,
    /// Health probe; absent: none, the app counts as Active once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// How long a stop waits for the app to end by itself (a microVM's guest to power off on
    /// its power button, a jail app to exit on SIGTERM) before it is killed and the stop
    /// reported as forced (FailureOnStop). None: the agent's `stop_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u32>,
    /// The app's network (`package::network`); absent: a link and no rules, as before the
    /// section existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<super::network::NetworkConfig>,
    /// Flash the installed app may take in all, MiB (1..=`MAX_DISK_MIB`): its package as
    /// stored (blobs, a jail app's extracted rootfs, a microVM's copy of its data disk) plus
    /// its data volume. Admission refuses the package (7227) before download when it is more
    /// than the ExecEnv has left. A jail app's data volume is what remains of it once the
    /// package is unpacked; a microVM's data volume is its fixed-size data disk, which must
    /// fit in it too. Absent (packages from before the field): the package's own size, known
    /// only once it is downloaded, and a data volume without a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u32>,
}

/// Most flash an app may declare, MiB (64 GiB).
pub const MAX_DISK_MIB: u32 = 64 * 1024;

/// Longest `name`, bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest `version`, bytes.
pub const MAX_VERSION_LEN: usize = 32;
/// Longest `vendor`, bytes.
pub const MAX_VENDOR_LEN: usize = 64;
/// Longest `description`, bytes.
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// Longest `cmdline`, bytes.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Most arguments in `command`.
pub const MAX_COMMAND_ARGS: usize = 64;
/// Longest argument of `command` or `health.command`, bytes.
pub const MAX_ARG_LEN: usize = 1024;
/// Most memory an app may declare, MiB (16 GiB).
pub const MAX_MEMORY_MIB: u32 = 16 * 1024;
/// Most vCPUs an app may declare.
pub const MAX_VCPUS: u32 = 16;
/// A stop deadline above this would hold a router's reboot for minutes.
pub const MAX_STOP_TIMEOUT_MS: u32 = 120_000;

fn invalid(field: &str, why: impl std::fmt::Display) -> Fault {
    Fault::new(
        FaultCode::InvalidArguments,
        format!("app config field `{field}`: {why}"),
    )
}

fn check_text(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<(), Fault> {
    if value.is_empty() && !allow_empty {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

impl AppConfig {
    /// Parses and validates a config blob.
    pub fn from_json(bytes: &[u8]) -> Result<AppConfig, Fault> {
        let config: AppConfig = serde_json::from_slice(bytes).map_err(|e| {
            Fault::new(
                FaultCode::InvalidArguments,
                format!("app config is not valid: {e}"),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Canonical bytes: the same config always serializes the same way (field order is the
    /// struct's), which keeps packages reproducible.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("AppConfig always serializes")
    }

    /// Checks every field against its bounds; the fault (7004) names the first field that fails.
    pub fn validate(&self) -> Result<(), Fault> {
        check_text("name", &self.name, MAX_NAME_LEN, false)?;
        if !self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid("name", "only A-Z a-z 0-9 . _ - allowed"));
        }
        check_text("version", &self.version, MAX_VERSION_LEN, false)?;
        if self.version.contains(char::is_whitespace) {
            return Err(invalid("version", "must not contain spaces"));
        }
        check_text("vendor", &self.vendor, MAX_VENDOR_LEN, false)?;
        check_text("description", &self.description, MAX_DESCRIPTION_LEN, true)?;
        if self.backends.is_empty() {
            return Err(invalid("backends", "must name kvm, jail or both"));
        }
        if self.backends.len() == 2 && self.backends[0] == self.backends[1] {
            return Err(invalid("backends", "lists a backend twice"));
        }
        if self.backends.len() > 2 {
            return Err(invalid("backends", "lists a backend twice"));
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(invalid(
                "memory_mib",
                format!("must be 1..={MAX_MEMORY_MIB}"),
            ));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(invalid("vcpus", format!("must be 1..={MAX_VCPUS}")));
        }
        check_text("cmdline", &self.cmdline, MAX_CMDLINE_LEN, true)?;
        if !self.cmdline.is_ascii() {
            return Err(invalid("cmdline", "must be ASCII"));
        }
        if self.command.len() > MAX_COMMAND_ARGS {
            return Err(invalid(
                "command",
                format!("more than {MAX_COMMAND_ARGS} arguments"),
            ));
        }
        for arg in &self.command {
            if arg.len() > MAX_ARG_LEN || arg.contains('\0') {
                return Err(invalid(
                    "command",
                    format!("an argument is longer than {MAX_ARG_LEN} bytes or holds NUL"),
                ));
            }
        }
        if self.backends.contains(&Backend::Jail)
            && self.command.first().is_none_or(|a| a.is_empty())
        {
            return Err(invalid(
                "command",
                "the jail backend needs a non-empty argv",
            ));
        }
        if let Some(d) = self.start_deadline_s {
            if !(1..=MAX_START_DEADLINE_S).contains(&d) {
                return Err(invalid(
                    "start_deadline_s",
                    format!("must be 1..={MAX_START_DEADLINE_S}"),
                ));
            }
        }
        if let Some(h) = &self.health {
            h.validate(&self.backends)?;
        }
        if self
            .stop_timeout_ms
            .is_some_and(|t| t > MAX_STOP_TIMEOUT_MS)
        {
            return Err(invalid(
                "stop_timeout_ms",
                format!("must be 0..={MAX_STOP_TIMEOUT_MS}"),
            ));
        }
        if let Some(n) = &self.network {
            n.validate()?;
        }
        if self.disk_mib.is_some_and(|d| d == 0 || d > MAX_DISK_MIB) {
            return Err(invalid("disk_mib", format!("must be 1..={MAX_DISK_MIB}")));
        }
        let r = &self.restart;
        if r.retry_min_wait_s > r.retry_max_wait_s {
            return Err(invalid(
                "restart.retry_min_wait_s",
                "greater than restart.retry_max_wait_s",
            ));
        }
        if !(1000..=65535).contains(&r.retry_interval_multiplier) {
            return Err(invalid(
                "restart.retry_interval_multiplier",
                "must be 1000..=65535 (per mille)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn good() -> serde_json::Value {
        serde_json::json!({
            "name": "dnsfilter", "version": "1.0.0", "vendor": "Example Operator",
            "arch": "aarch64", "backends": ["kvm"], "memory_mib": 64, "vcpus": 1,
            "cmdline": "console=ttyS0 quiet",
            "restart": {"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 60,
                        "retry_interval_multiplier": 2000, "max_retry_count": 5, "reset_period_s": 300},
            "autostart": true, "run_level": 1
        })
    }

    fn field_error(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = good();
        mutate(&mut v);
        let err = AppConfig::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code, FaultCode::InvalidArguments);
        err.message
    }

    #[test]
    fn accepts_good_and_round_trips() {
        let c = AppConfig::from_json(good().to_string().as_bytes()).unwrap();
        assert_eq!(c.arch, Arch::Aarch64);
        assert_eq!(AppConfig::from_json(&c.to_json()).unwrap(), c);
        // No deadline declared: the canonical bytes do not name one (packages built before
        // the field existed keep their digest).
        assert_eq!(c.stop_timeout_ms, None);
        assert!(!String::from_utf8(c.to_json())
            .unwrap()
            .contains("stop_timeout"));
        let mut v = good();
        v["stop_timeout_ms"] = 3000.into();
        let c = AppConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.stop_timeout_ms, Some(3000));
        // Nor disk_mib, which reads back as declared when it is.
        assert!(!String::from_utf8(c.to_json()).unwrap().contains("disk_mib"));
        v["disk_mib"] = 12.into();
        let c = AppConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.disk_mib, Some(12));
        assert_eq!(AppConfig::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn names_the_bad_field() {
        assert!(field_error(|v| v["arch"] = "sparc".into()).contains("sparc"));
        assert!(field_error(|v| v["memory_mib"] = 0.into()).contains("`memory_mib`"));
        assert!(field_error(|v| v["name"] = "a/b".into()).contains("`name`"));
        assert!(field_error(|v| v["backends"] = serde_json::json!(["jail"])).contains("`command`"));
        assert!(
            field_error(|v| v["backends"] = serde_json::json!(["kvm", "kvm"]))
                .contains("`backends`")
        );
        assert!(
            field_error(|v| v["restart"]["retry_min_wait_s"] = 100.into())
                .contains("retry_min_wait_s")
        );
        assert!(field_error(|v| v["surprise"] = 1.into()).contains("surprise"));
        assert!(field_error(|v| v["stop_timeout_ms"] = 120_001.into()).contains("stop_timeout_ms"));
        assert!(field_error(|v| v["disk_mib"] = 0.into()).contains("`disk_mib`"));
        assert!(field_error(|v| v["disk_mib"] = (MAX_DISK_MIB + 1).into()).contains("`disk_mib`"));
        assert!(field_error(|v| {
            v.as_object_mut().unwrap().remove("vendor");
        })
        .contains("vendor"));
        let err = AppConfig::from_json(b"{\"name\": ").unwrap_err();
        assert_eq!(err.code, FaultCode::InvalidArguments);
    }

    #[test]
    fn health_and_start_deadline_are_bounded() {
        let ok = |mutate: fn(&mut serde_json::Value)| {
            let mut v = good();
            mutate(&mut v);
            AppConfig::from_json(v.to_string().as_bytes()).unwrap()
        };
        // Absent: nothing is serialized, so existing packages keep their bytes.
        let plain = ok(|_| {});
        assert!(!String::from_utf8(plain.to_json())
            .unwrap()
            .contains("health"));
        let c = ok(|v| v["health"] = serde_json::json!({"kind": "http", "port": 80}));
        let h = c.health.unwrap();
        assert_eq!((h.interval_s, h.timeout_s, h.failure_threshold), (10, 2, 3));
        ok(|v| v["start_deadline_s"] = 300.into());
        let msg = field_error(|v| {
            v["health"] = serde_json::json!({"kind": "command", "command": ["/bin/true"]})
        });
        assert!(
            msg.contains("`health.kind`") && msg.contains("tcp or http"),
            "{msg}"
        );
        let jail = |v: &mut serde_json::Value| {
            v["backends"] = serde_json::json!(["jail"]);
            v["command"] = serde_json::json!(["/bin/app"]);
        };
        let c = ok(|v| {
            v["backends"] = serde_json::json!(["jail"]);
            v["command"] = serde_json::json!(["/bin/app"]);
            v["health"] = serde_json::json!({"kind": "command", "command": ["/bin/check"]});
        });
        assert_eq!(c.health.unwrap().kind, ProbeKind::Command);
        assert!(field_error(|v| {
            jail(v);
            v["health"] = serde_json::json!({"kind": "command"});
        })
        .contains("`health.command`"));
        assert!(
            field_error(|v| v["health"] = serde_json::json!({"kind": "tcp"}))
                .contains("`health.port`")
        );
        assert!(field_error(
            |v| v["health"] = serde_json::json!({"kind": "http", "port": 80, "path": "x y"})
        )
        .contains("`health.path`"));
        assert!(field_error(
            |v| v["health"] = serde_json::json!({"kind": "tcp", "port": 80, "timeout_s": 0})
        )
        .contains("`health.timeout_s`"));
        assert!(field_error(|v| v["health"] =
            serde_json::json!({"kind": "tcp", "port": 80, "failure_threshold": 1000}))
        .contains("`health.failure_threshold`"));
        assert!(
            field_error(|v| v["health"] = serde_json::json!({"kind": "udp", "port": 80}))
                .contains("udp")
        );
        assert!(field_error(|v| v["start_deadline_s"] = 0.into()).contains("`start_deadline_s`"));
    }
}
