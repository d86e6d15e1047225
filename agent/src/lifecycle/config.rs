//! The agent's configuration (`cpevisord --config FILE`, JSON): ExecEnvs with their memory
//! budgets, trusted signer keys, download cap, VMM path, CA file, cgroup root, run directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::model::ExecEnvType;
use crate::supervise::balloon::BalloonSettings;
use crate::supervise::net::NetError;

/// Where the firmware installs the board profile (JSON: the device's build reads no TOML).
pub const INSTALLED_BOARD: &str = cpevisor_boards::INSTALLED_PROFILE;
/// Trusted signer keys on the device when the config names none.
pub const DEVICE_KEYS_DIR: &str = "/etc/cpevisor/keys";
/// Where `--board` carves app links from on kvm boards (clear of QEMU's 10.0.2.0/24).
pub const DEFAULT_APP_NETWORK: &str = "10.100.0.0/16";
/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Why a config is refused (fault 7004, see `fault/map.rs`). Each names the field.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file cannot be read or parsed (the store's message names the file).
    Unreadable(Fault),
    /// The config file is not there.
    NoFile(PathBuf),
    /// The board profile `--board` names cannot be loaded.
    Board(cpevisor_boards::BoardError),
    /// `exec_envs` is empty.
    NoExecEnv,
    /// `download_limits.<field>` is 0.
    ZeroLimit(&'static str),
    /// `stop_timeout_ms` is over the most a package may ask for.
    StopTimeout {
        /// The most a package may ask for (`MAX_STOP_TIMEOUT_MS`).
        max_ms: u64,
    },
    /// `exec_envs[index].name` is not 1-32 of `[A-Za-z0-9_-]`.
    BadEnvName {
        /// Position of the ExecEnv in `exec_envs`.
        index: usize,
        /// The name as given.
        name: String,
    },
    /// Two ExecEnvs share a name.
    DuplicateEnv {
        /// Position of the second one in `exec_envs`.
        index: usize,
        /// The name they share.
        name: String,
    },
    /// `exec_envs[index].app_network` is not a usable `a.b.0.0/16`.
    AppNetwork {
        /// Position of the ExecEnv in `exec_envs`.
        index: usize,
        /// What is wrong with it.
        source: NetError,
    },
    /// `exec_envs[index].lan_bridge` is not a valid interface name.
    LanBridge {
        /// Position of the ExecEnv in `exec_envs`.
        index: usize,
        /// The name as given.
        bridge: String,
        /// What is wrong with it.
        source: cpevisor_types::IfNameError,
    },
    /// `exec_envs[index].memory_budget_mib` is 0.
    ZeroBudget {
        /// Position of the ExecEnv in `exec_envs`.
        index: usize,
    },
    /// `exec_envs[index].disk_budget_mib` is 0.
    ZeroDiskBudget {
        /// Position of the ExecEnv in `exec_envs`.
        index: usize,
    },
    /// `download_cap_bytes` is 0.
    ZeroDownloadCap,
    /// `run_dir` is not an absolute path below /.
    RunDir(PathBuf),
    /// `wan_interface` or `lan_interface` is not a valid interface name.
    RouterInterface {
        /// Which field.
        field: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        source: cpevisor_types::IfNameError,
    },
    /// `nft_path` is not an absolute path.
    NftPath(PathBuf),
    /// `balloon.<field>` is out of its bounds.
    Balloon {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// An ExecEnv runs its apps in microVMs (runner `vmm`) on a build without them.
    NoMicroVm {
        /// Index in `exec_envs`.
        index: usize,
        /// Why not (`backend::NO_MICROVM`).
        why: &'static str,
    },
    /// `lan_address` or `lan_app_range` is malformed, or set without what it needs.
    Lan {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// Board `name`'s profile where the installed one (at `installed`, of board `found` if any)
/// is not it: `<boards dir>/<name>.toml` on the host (feature `boards-dir`); a board's build
/// has no other profile.
#[cfg(feature = "boards-dir")]
fn profile_elsewhere(
    name: &str,
    _installed: &Path,
    _found: Option<String>,
) -> Result<cpevisor_boards::Board, ConfigError> {
    cpevisor_boards::Board::by_name(name).map_err(ConfigError::Board)
}

#[cfg(not(feature = "boards-dir"))]
fn profile_elsewhere(
    name: &str,
    installed: &Path,
    found: Option<String>,
) -> Result<cpevisor_boards::Board, ConfigError> {
    Err(ConfigError::Board(cpevisor_boards::BoardError::NotFound {
        name: name.to_string(),
        dir: installed.to_path_buf(),
        available: found.into_iter().collect(),
    }))
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable(fault) => f.write_str(&fault.message),
            ConfigError::NoFile(path) => write!(f, "{}: no such config file", path.display()),
            ConfigError::Board(e) => write!(f, "{e}"),
            ConfigError::NoExecEnv => f.write_str("exec_envs: at least one ExecEnv is required"),
            ConfigError::ZeroLimit(name) => write!(f, "download_limits.{name}: must be over 0"),
            ConfigError::StopTimeout { max_ms } => {
                write!(f, "stop_timeout_ms: must be 0..={max_ms}")
            }
            ConfigError::BadEnvName { index, name } => write!(
                f,
                "exec_envs[{index}].name: {name:?} must be 1-32 of [A-Za-z0-9_-]"
            ),
            ConfigError::DuplicateEnv { index, name } => {
                write!(f, "exec_envs[{index}].name: duplicate {name:?}")
            }
            ConfigError::AppNetwork { index, source } => {
                write!(f, "exec_envs[{index}].app_network: {source}")
            }
            ConfigError::LanBridge {
                index,
                bridge,
                source,
            } => write!(f, "exec_envs[{index}].lan_bridge: {bridge:?}: {source}"),
            ConfigError::ZeroBudget { index } => {
                write!(f, "exec_envs[{index}].memory_budget_mib: must be > 0")
            }
            ConfigError::ZeroDiskBudget { index } => {
                write!(f, "exec_envs[{index}].disk_budget_mib: must be > 0")
            }
            ConfigError::ZeroDownloadCap => f.write_str("download_cap_bytes: must be > 0"),
            ConfigError::RouterInterface {
                field,
                name,
                source,
            } => write!(f, "{field}: {name:?}: {source}"),
            ConfigError::Lan { field, why } => write!(f, "{field}: {why}"),
            ConfigError::NoMicroVm { index, why } => {
                write!(f, "exec_envs[{index}]: runner vmm (microVMs): {why}")
            }
            ConfigError::Balloon { field, why } => write!(f, "balloon.{field}: {why}"),
            ConfigError::NftPath(p) => {
                write!(f, "nft_path: {} must be an absolute path", p.display())
            }
            ConfigError::RunDir(d) => {
                write!(
                    f,
                    "run_dir: {} must be an absolute path below /",
                    d.display()
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// One entry of `exec_envs` in the agent config (JSON, unknown fields refused): an ExecEnv and how
/// its apps run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecEnvConfig {
    /// ExecEnv `Name`: 1-32 of `[A-Za-z0-9_-]`, unique.
    pub name: String,
    /// `type`: `kvm` or `jail`.
    #[serde(rename = "type")]
    pub env_type: ExecEnvType,
    /// Architecture of the apps it accepts; defaults to the agent's own.
    #[serde(default = "host_arch")]
    pub arch: String,
    /// App memory budget, MiB (> 0): what admission shares out among the apps.
    pub memory_budget_mib: u32,
    /// App flash budget, MiB (> 0): what admission shares out among the apps' packages and
    /// data volumes (`lifecycle::disk`). None: only the store's file system's free space
    /// bounds it. A board profile sets it to the board's `flash_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_budget_mib: Option<u32>,
    /// Initial `Enable` (default true); an operator's change at run time is kept over it.
    #[serde(default = "yes")]
    pub enable: bool,
    /// Which supervisor backend runs its apps: `vmm` (kvm), `jail`, or `process` (the
    /// host-test stand-in, no isolation). Default: kvm -> vmm, jail -> jail.
    #[serde(default)]
    pub runner: Option<Runner>,
    /// `a.b.0.0/16` the apps' links come from. kvm: each app gets a tap with its own /30 (host
    /// .1, guest .2, passed on the guest's command line). jail: each app gets a veth on
    /// `lan_bridge` with `a.b.0.0 + 4n + 2`/16, gateway `a.b.0.1` (the bridge's address).
    /// None: no network (jail apps still have loopback).
    #[serde(default)]
    pub app_network: Option<String>,
    /// jail: the bridge the apps' veths join (default `br-lan`), created if missing.
    #[serde(default)]
    pub lan_bridge: Option<String>,
    /// jail: each app in its own user namespace (root inside, an unprivileged id outside).
    /// Default: where the kernel has user namespaces; `true` on a kernel without them runs
    /// the apps without one (logged).
    #[serde(default)]
    pub user_namespace: Option<bool>,
}

/// The supervisor backend that runs an ExecEnv's apps (`runner` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// Each app in a microVM of the VMM at `vmm_path`.
    Vmm,
    /// Each app as a jailed process (namespaces, cgroup, seccomp).
    Jail,
    /// Each app as a plain child process, no isolation: the host tests' stand-in.
    Process,
}

impl ExecEnvConfig {
    /// The configured runner, or the one that matches the ExecEnv type.
    pub fn runner(&self) -> Runner {
        self.runner.unwrap_or(match self.env_type {
            ExecEnvType::Kvm => Runner::Vmm,
            ExecEnvType::Jail => Runner::Jail,
        })
    }

    /// Whether this ExecEnv's jails get user namespaces; says why once (called when the
    /// ExecEnv's backend is made).
    pub fn jail_user_namespace(&self) -> bool {
        use crate::supervise::jail::userns;
        match (self.user_namespace, userns::available()) {
            (Some(false), _) => {
                crate::log_info!("{}: jails without user namespaces (config)", self.name);
                false
            }
            (_, Ok(())) => {
                crate::log_info!("{}: jails with user namespaces", self.name);
                true
            }
            (Some(true), Err(why)) => {
                crate::log_warn!("{}: jails without user namespaces: {why}", self.name);
                false
            }
            (None, Err(why)) => {
                crate::log_info!("{}: jails without user namespaces: {why}", self.name);
                false
            }
        }
    }

    /// The bridge jail apps join.
    pub fn lan_bridge(&self) -> String {
        self.lan_bridge
            .clone()
            .unwrap_or_else(|| crate::supervise::backend::DEFAULT_LAN_BRIDGE.to_string())
    }
}

/// The binary that holds `jail-exec`: this very executable (on the device the multi-call
/// `cpevisor`, which /proc/self/exe names even when the agent runs as its `cpevisord` link, and
/// which takes `jail-exec` as its first argument; on the host the thin cpevisord), or
/// `$CPEVISOR_JAIL_RUNNER` (tests whose process is not cpevisord).
pub fn jail_runner_exe() -> PathBuf {
    std::env::var_os("CPEVISOR_JAIL_RUNNER")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// The agent config file (`cpevisord --config FILE`, JSON, unknown fields refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The ExecEnvs, at least one; the first is where installs go when none is named.
    pub exec_envs: Vec<ExecEnvConfig>,
    /// Directory of trusted signer public keys (`*.pub`).
    #[serde(default)]
    pub trusted_keys_dir: Option<PathBuf>,
    /// Largest package accepted for download, bytes.
    #[serde(default = "default_cap")]
    pub download_cap_bytes: u64,
    /// The cpevisor-vmm binary the vmm runner starts.
    #[serde(default = "default_vmm")]
    pub vmm_path: PathBuf,
    /// Extra CA certificate (PEM) trusted for HTTPS downloads, besides the firmware's CA
    /// bundle (`/etc/ssl/certs/ca-certificates.crt`; the agent has no built-in roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// cgroup v2 mount; limits are skipped (with a logged reason) when it is not usable.
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// An app's stop deadline when its package declares none: how long a stop waits for the
    /// app to end by itself (a microVM's guest to power off) before it is killed.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_ms: u64,
    /// Deadlines and minimum rate of package downloads and head probes.
    #[serde(default)]
    pub download_limits: DownloadLimits,
    /// The agent's private run state (a directory per running app: the backend's spec file,
    /// the VMM's control socket), made 0700 at start-up; an existing one must be the agent's
    /// own and 0700. None: `/run/cpevisor` as root, else `<state dir>/run`.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The router's internet-side interface (`eth0`, `wan`): where `wan` port mappings listen
    /// and apps' egress is masqueraded. None: no app can have a wan mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_interface: Option<String>,
    /// The router's home-side interface (`br-lan`): where `lan` port mappings and the DNS
    /// interception listen. None: no app can have either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_interface: Option<String>,
    /// The router's own address on the LAN, with its prefix (`192.168.1.1/24`): the gateway
    /// of bridged apps. Needs `lan_interface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_address: Option<String>,
    /// The LAN addresses bridged apps get, `first-last` (`192.168.1.200-192.168.1.249`),
    /// inside `lan_address`'s subnet and clear of it. None: apps of network mode `bridged` are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_app_range: Option<String>,
    /// The `nft` tool; None: the first of `/usr/sbin/nft`, `/sbin/nft`, `/usr/bin/nft`,
    /// `/bin/nft` found when the agent starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_path: Option<PathBuf>,
    /// How the agent sets microVM apps' balloon targets (`supervise::balloon::policy`): `enable`,
    /// `tick_ms`, `low_watermark_mib`, `high_watermark_mib`, `step_mib`, `floor_mib`,
    /// `floor_percent`; every field optional.
    #[serde(default)]
    pub balloon: BalloonSettings,
}

/// How long a package server may take. Every download has an overall deadline, the floor
/// `deadline_ms` or `deadline_ms_per_mib` per MiB announced when longer, and must average at
/// least `min_rate_bytes_per_s` over every `rate_window_ms`; the head probe (64 KiB) has
/// `probe_deadline_ms` and the same minimum rate. A server that drips bytes is cut at the
/// first bound it misses, and the fault (7033) names the URL and the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadLimits {
    /// Overall deadline of a download, the floor, ms.
    pub deadline_ms: u64,
    /// Overall deadline per MiB the server announces, ms, when that gives more than `deadline_ms`.
    pub deadline_ms_per_mib: u64,
    /// Lowest average rate a download must keep over each window, bytes per second.
    pub min_rate_bytes_per_s: u64,
    /// Length of the window the rate is averaged over, ms.
    pub rate_window_ms: u64,
    /// Deadline of the 64 KiB head probe, ms.
    pub probe_deadline_ms: u64,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        // Sized for a slow DSL line (1 Mbit/s moves a MiB in 8 s) with margin; 1 KiB/s over
        // 30 s is far below any working link and far above a drip.
        DownloadLimits {
            deadline_ms: 300_000,
            deadline_ms_per_mib: 30_000,
            min_rate_bytes_per_s: 1024,
            rate_window_ms: 30_000,
            probe_deadline_ms: 15_000,
        }
    }
}

impl DownloadLimits {
    /// The limits of a package download.
    pub fn download(&self) -> crate::fetch::TransferLimits {
        crate::fetch::TransferLimits {
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            deadline_per_mib: std::time::Duration::from_millis(self.deadline_ms_per_mib),
            min_rate_bps: self.min_rate_bytes_per_s,
            rate_window: std::time::Duration::from_millis(self.rate_window_ms),
        }
    }

    /// The limits of the head probe: its own deadline, the same minimum rate.
    pub fn probe(&self) -> crate::fetch::TransferLimits {
        crate::fetch::TransferLimits {
            deadline: std::time::Duration::from_millis(self.probe_deadline_ms),
            deadline_per_mib: std::time::Duration::ZERO,
            ..self.download()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("deadline_ms", self.deadline_ms),
            ("rate_window_ms", self.rate_window_ms),
            ("probe_deadline_ms", self.probe_deadline_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_cap() -> u64 {
    256 << 20
}
fn default_vmm() -> PathBuf {
    PathBuf::from("/usr/bin/cpevisor-vmm")
}
fn default_cgroup_root() -> PathBuf {
    PathBuf::from(crate::supervise::cgroup::DEFAULT_CGROUP_ROOT)
}
fn default_stop_timeout() -> u64 {
    // As cpevisor-vmm's own default for a guest's power-off.
    10_000
}

/// The architecture name cpevisor uses for the machine the agent runs on.
pub fn host_arch() -> String {
    match std::env::consts::ARCH {
        "arm" => "armv7",
        "mips" if cfg!(target_endian = "little") => "mipsel",
        "mips64" if cfg!(target_endian = "little") => "mips64el",
        other => other,
    }
    .to_string()
}

impl AgentConfig {
    /// Reads and validates the config file; the fault (7004) names the file and the field.
    pub fn load(path: &Path) -> Result<AgentConfig, Fault> {
        let cfg: AgentConfig = crate::store::read_json(path, MAX_CONFIG_BYTES)
            .map_err(ConfigError::Unreadable)?
            .ok_or_else(|| ConfigError::NoFile(path.to_path_buf()))?;
        cfg.validate()
            .map_err(|e| Fault::from(e).prefixed(path.display()))?;
        Ok(cfg)
    }

    /// A config for one ExecEnv of `env_type` with `budget_mib` (the board profile's app budget).
    pub fn single(name: &str, env_type: ExecEnvType, arch: &str, budget_mib: u32) -> AgentConfig {
        AgentConfig {
            exec_envs: vec![ExecEnvConfig {
                name: name.to_string(),
                env_type,
                arch: arch.to_string(),
                memory_budget_mib: budget_mib,
                disk_budget_mib: None,
                enable: true,
                runner: None,
                app_network: None,
                lan_bridge: None,
                user_namespace: None,
            }],
            trusted_keys_dir: None,
            download_cap_bytes: default_cap(),
            vmm_path: default_vmm(),
            ca_file: None,
            cgroup_root: default_cgroup_root(),
            stop_timeout_ms: default_stop_timeout(),
            download_limits: DownloadLimits::default(),
            run_dir: None,
            wan_interface: None,
            lan_interface: None,
            lan_address: None,
            lan_app_range: None,
            nft_path: None,
            balloon: BalloonSettings::default(),
        }
    }

    /// The config for a board profile: one ExecEnv (`kvm0` or `jail0`) of the board's isolation
    /// backend, its arch and app memory budget (kvm: `app_network` 10.100.0.0/16 when
    /// /dev/net/tun exists); trusted keys from `/etc/cpevisor/keys`.
    /// The profile is the installed `/etc/cpevisor/board.json` when it names `name`, else (with
    /// the feature `boards-dir`, host builds) `<boards dir>/<name>.toml` (`CPEVISOR_BOARDS_DIR`,
    /// see the boards crate).
    pub fn for_board(name: &str) -> Result<AgentConfig, Fault> {
        AgentConfig::for_board_at(name, Path::new(INSTALLED_BOARD))
    }

    /// [`AgentConfig::for_board`] with the installed profile at `installed`.
    pub fn for_board_at(name: &str, installed: &Path) -> Result<AgentConfig, Fault> {
        use cpevisor_boards::{Board, BoardError, Isolation};
        // Elsewhere only when the installed profile is absent or another board's: a broken
        // one is refused, naming its file and field.
        let board = match Board::load_json(installed) {
            Ok(b) if b.name == name => b,
            Ok(b) => profile_elsewhere(name, installed, Some(b.name))?,
            Err(BoardError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                profile_elsewhere(name, installed, None)?
            }
            Err(e) => return Err(ConfigError::Board(e).into()),
        };
        let env_type = match board.isolation {
            Isolation::Kvm => ExecEnvType::Kvm,
            Isolation::Jail => ExecEnvType::Jail,
        };
        let mut cfg = AgentConfig::single(
            &format!("{}0", env_type.as_str()),
            env_type,
            board.cpu.arch.as_str(),
            board.memory.app_budget_mib,
        );
        // microVM apps get a network where the kernel offers taps (module `tun`), jail apps
        // where the firmware made the LAN bridge or loaded the `veth` module.
        let has_links = match env_type {
            ExecEnvType::Kvm => Path::new("/dev/net/tun").exists(),
            ExecEnvType::Jail => {
                Path::new("/sys/class/net")
                    .join(crate::supervise::backend::DEFAULT_LAN_BRIDGE)
                    .exists()
                    || Path::new("/sys/module/veth").exists()
            }
        };
        // All of the flash at most: the store's free space (statvfs) is what bounds it once
        // the firmware and the agent's own files are on it.
        cfg.exec_envs[0].disk_budget_mib = Some(board.memory.flash_mib);
        if has_links {
            cfg.exec_envs[0].app_network = Some(DEFAULT_APP_NETWORK.to_string());
        }
        // The router's sides, where the profile names them: apps' port mappings and the LAN's
        // DNS interception listen there.
        if let Some(network) = &board.network {
            cfg.wan_interface = Some(network.wan.clone());
            cfg.lan_interface = Some(network.lan.clone());
            // Bridged apps' addresses, where the profile sets a range aside for them.
            cfg.lan_address = Some(network.lan_address.clone());
            cfg.lan_app_range = network.app_range.clone();
        }
        let keys = Path::new(DEVICE_KEYS_DIR);
        if keys.is_dir() {
            cfg.trusted_keys_dir = Some(keys.to_path_buf());
        }
        cfg.validate()
            .map_err(|e| Fault::from(e).prefixed(format_args!("board {name}")))?;
        Ok(cfg)
    }

    /// Checks every field's bounds (names, budgets, networks, limits, run_dir), and that this
    /// build can run each ExecEnv's apps (`backend::NO_MICROVM`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_for(crate::supervise::backend::NO_MICROVM)
    }

    /// [`AgentConfig::validate`] for a build that runs no microVMs because of `no_microvm`
    /// (None: one that does).
    fn validate_for(&self, no_microvm: Option<&'static str>) -> Result<(), ConfigError> {
        if self.exec_envs.is_empty() {
            return Err(ConfigError::NoExecEnv);
        }
        self.download_limits.validate()?;
        let max_stop = u64::from(crate::package::config::MAX_STOP_TIMEOUT_MS);
        if self.stop_timeout_ms > max_stop {
            return Err(ConfigError::StopTimeout { max_ms: max_stop });
        }
        for (i, env) in self.exec_envs.iter().enumerate() {
            if env.name.is_empty()
                || env.name.len() > 32
                || !env
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::BadEnvName {
                    index: i,
                    name: env.name.clone(),
                });
            }
            if self.exec_envs[..i].iter().any(|e| e.name == env.name) {
                return Err(ConfigError::DuplicateEnv {
                    index: i,
                    name: env.name.clone(),
                });
            }
            if let Some(n) = &env.app_network {
                crate::supervise::net::parse_network(n)
                    .map_err(|source| ConfigError::AppNetwork { index: i, source })?;
            }
            if let Some(b) = &env.lan_bridge {
                cpevisor_types::IfName::parse(b).map_err(|source| ConfigError::LanBridge {
                    index: i,
                    bridge: b.clone(),
                    source,
                })?;
            }
            if env.memory_budget_mib == 0 {
                return Err(ConfigError::ZeroBudget { index: i });
            }
            if env.disk_budget_mib == Some(0) {
                return Err(ConfigError::ZeroDiskBudget { index: i });
            }
            if let (Runner::Vmm, Some(why)) = (env.runner(), no_microvm) {
                return Err(ConfigError::NoMicroVm { index: i, why });
            }
        }
        if self.download_cap_bytes == 0 {
            return Err(ConfigError::ZeroDownloadCap);
        }
        if let Some(d) = &self.run_dir {
            if !d.is_absolute() || d.parent().is_none() {
                return Err(ConfigError::RunDir(d.clone()));
            }
        }
        for (field, name) in [
            ("wan_interface", &self.wan_interface),
            ("lan_interface", &self.lan_interface),
        ] {
            if let Some(n) = name {
                cpevisor_types::IfName::parse(n).map_err(|source| {
                    ConfigError::RouterInterface {
                        field,
                        name: n.clone(),
                        source,
                    }
                })?;
            }
        }
        if let Some(p) = &self.nft_path {
            if !p.is_absolute() {
                return Err(ConfigError::NftPath(p.clone()));
            }
        }
        self.balloon
            .validate()
            .map_err(|(field, why)| ConfigError::Balloon { field, why })?;
        self.lan_pool()?;
        Ok(())
    }

    /// The pool bridged apps' addresses come from, when `lan_app_range` is set (checked:
    /// `lan_address` and `lan_interface` set, the range inside the LAN and clear of the
    /// router's address).
    pub fn lan_pool(&self) -> Result<Option<crate::supervise::net::LanPool>, ConfigError> {
        let lan = |field, why: String| ConfigError::Lan { field, why };
        let router = match &self.lan_address {
            Some(a) => {
                Some(cpevisor_boards::parse_lan_address(a).map_err(|why| lan("lan_address", why))?)
            }
            None => None,
        };
        let Some(range) = &self.lan_app_range else {
            return Ok(None);
        };
        let Some((router, prefix)) = router else {
            return Err(lan(
                "lan_app_range",
                "needs lan_address (the router's address on the LAN, the apps' gateway)".into(),
            ));
        };
        let Some(bridge) = &self.lan_interface else {
            return Err(lan(
                "lan_app_range",
                "needs lan_interface (the LAN bridge the apps join)".into(),
            ));
        };
        let (first, last) = cpevisor_boards::parse_app_range(range, router, prefix)
            .map_err(|why| lan("lan_app_range", why))?;
        Ok(Some(crate::supervise::net::LanPool {
            bridge: bridge.clone(),
            router,
            prefix,
            first,
            last,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultCode;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let cfg: AgentConfig = serde_json::from_str(
            r#"{"exec_envs":[{"name":"jail0","type":"jail","memory_budget_mib":64}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.exec_envs[0].runner(), Runner::Jail);
        assert_eq!(cfg.exec_envs[0].lan_bridge(), "br-lan");
        assert_eq!(cfg.exec_envs[0].arch, host_arch());
        assert!(cfg.validate().is_ok());
        assert!(serde_json::from_str::<AgentConfig>(r#"{"exec_envs":[],"bogus":1}"#).is_err());
    }

    #[test]
    fn jail_user_namespaces_follow_the_kernel_unless_turned_off() {
        let parse = |extra: &str| -> ExecEnvConfig {
            let text = format!(r#"{{"name":"jail0","type":"jail","memory_budget_mib":64{extra}}}"#);
            serde_json::from_str(&text).unwrap()
        };
        let kernel_has_them = crate::supervise::jail::userns::available().is_ok();
        assert_eq!(parse("").jail_user_namespace(), kernel_has_them);
        assert_eq!(
            parse(r#","user_namespace":true"#).jail_user_namespace(),
            kernel_has_them
        );
        assert!(!parse(r#","user_namespace":false"#).jail_user_namespace());
        assert!(serde_json::from_str::<ExecEnvConfig>(
            r#"{"name":"j","type":"jail","memory_budget_mib":64,"user_namespace":"yes"}"#
        )
        .is_err());
    }

    #[cfg(feature = "boards-dir")]
    #[test]
    fn board_profiles_become_one_exec_env() {
        let cfg = AgentConfig::for_board("qemu-virt-a53").unwrap();
        let env = &cfg.exec_envs[0];
        assert_eq!(env.name, "kvm0");
        assert_eq!(env.env_type, ExecEnvType::Kvm);
        assert_eq!(env.arch, "aarch64");
        assert!(env.memory_budget_mib > 0);
        assert_eq!(env.disk_budget_mib, Some(256), "the board's flash_mib");
        assert_eq!(
            cfg.wan_interface.as_deref(),
            Some("eth0"),
            "a53 is a router board"
        );
        let cfg = AgentConfig::for_board("qemu-q35-x86_64").unwrap();
        assert_eq!(cfg.wan_interface, None, "q35's profile has no [network]");
        assert_eq!(cfg.lan_interface, None);
        let cfg = AgentConfig::for_board("qemu-malta-mipsel").unwrap();
        assert_eq!(cfg.exec_envs[0].name, "jail0");
        assert_eq!(cfg.exec_envs[0].arch, "mipsel");
        assert_eq!(cfg.wan_interface.as_deref(), Some("eth0"));
        assert_eq!(cfg.lan_interface.as_deref(), Some("br-lan"));
        assert_eq!(cfg.lan_address.as_deref(), Some("192.168.1.1/24"));
        let pool = cfg.lan_pool().unwrap().expect("malta sets app_range");
        assert_eq!(pool.first, std::net::Ipv4Addr::new(192, 168, 1, 200));
        let err = AgentConfig::for_board("no-such-board").unwrap_err();
        assert_eq!(err.code, FaultCode::InvalidArguments);
        assert!(err.message.contains("no-such-board"), "{}", err.message);
    }

    /// A minimal profile as the firmware installs it (the shape of `Board::to_json_text`).
    fn installed_profile(name: &str) -> String {
        format!(
            r#"{{"name": "{name}", "description": "test", "kind": "hardware",
            "isolation": "jail", "interrupt_controller": "gicv2", "serial": "ttyS0",
            "cpu": {{"arch": "armv7", "rust_target": "armv7-unknown-linux-musleabihf",
                     "debian_arch": "armhf", "model": "cortex-a7", "cores": 4}},
            "memory": {{"ram_mib": 256, "flash_mib": 128, "host_reserved_mib": 96,
                        "app_budget_mib": 160}}}}"#
        )
    }

    /// A jail-only build (mipsel, mips64el, armv7: no KVM) refuses an ExecEnv that runs its
    /// apps in microVMs, from a board profile or a config, naming why; jail and process
    /// ExecEnvs pass. Checked here through `validate_for` with a jail-only build's reason (this
    /// host's build has microVMs; the cross builds check `NO_MICROVM` itself).
    #[test]
    fn a_build_without_microvms_refuses_microvm_exec_envs() {
        const WHY: &str = "this build has no microVM backend (mipsel-unknown-linux-musl: no KVM)";
        let dir = std::env::temp_dir().join(format!("cpevisor-board-kvm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let installed = dir.join("board.json");
        let profile = installed_profile("kvm-router")
            .replace("\"isolation\": \"jail\"", "\"isolation\": \"kvm\"")
            .replace("\"armv7\"", "\"aarch64\"")
            .replace(
                "armv7-unknown-linux-musleabihf",
                "aarch64-unknown-linux-musl",
            )
            .replace("armhf", "arm64")
            .replace("cortex-a7", "cortex-a53");
        std::fs::write(&installed, profile).unwrap();
        let kvm = AgentConfig::for_board_at("kvm-router", &installed).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(kvm.exec_envs[0].runner(), Runner::Vmm);
        let err = Fault::from(kvm.validate_for(Some(WHY)).unwrap_err());
        assert_eq!(err.code, FaultCode::InvalidArguments);
        assert_eq!(
            err.message,
            format!("exec_envs[0]: runner vmm (microVMs): {WHY}")
        );
        assert!(kvm.validate_for(None).is_ok());
        let parse = |env: &str| -> AgentConfig {
            serde_json::from_str(&format!(r#"{{"exec_envs":[{env}]}}"#)).unwrap()
        };
        // The runner asked for by name, on the second ExecEnv.
        let named = parse(
            r#"{"name":"j","type":"jail","memory_budget_mib":64},
               {"name":"v","type":"jail","runner":"vmm","memory_budget_mib":64}"#,
        );
        let err = named.validate_for(Some(WHY)).unwrap_err().to_string();
        assert!(err.starts_with("exec_envs[1]: runner vmm"), "{err}");
        for ok in [
            r#"{"name":"j","type":"jail","memory_budget_mib":64}"#,
            r#"{"name":"p","type":"kvm","runner":"process","memory_budget_mib":64}"#,
        ] {
            assert!(parse(ok).validate_for(Some(WHY)).is_ok(), "{ok}");
        }
        // This build: microVMs on the KVM architectures only, refused elsewhere.
        let kvm_arch = cfg!(any(target_arch = "aarch64", target_arch = "x86_64"));
        assert_eq!(crate::supervise::backend::NO_MICROVM.is_none(), kvm_arch);
        assert_eq!(kvm.validate().is_ok(), kvm_arch);
    }

    #[test]
    fn the_installed_json_profile_is_the_board() {
        let dir = std::env::temp_dir().join(format!("cpevisor-board-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let installed = dir.join("board.json");
        std::fs::write(&installed, installed_profile("test-router")).unwrap();
        let cfg = AgentConfig::for_board_at("test-router", &installed).unwrap();
        assert_eq!(cfg.exec_envs[0].name, "jail0");
        assert_eq!(cfg.exec_envs[0].arch, "armv7");
        assert_eq!(cfg.exec_envs[0].memory_budget_mib, 160);
        assert_eq!(cfg.exec_envs[0].disk_budget_mib, Some(128));
        // A bad installed profile is refused naming the file and the field (on a board there
        // is no other profile to fall back to; on the host `boards/` has no such board).
        std::fs::write(
            &installed,
            installed_profile("test-router").replace("\"cores\": 4", "\"cores\": \"four\""),
        )
        .unwrap();
        let err = AgentConfig::for_board_at("test-router", &installed).unwrap_err();
        assert!(
            err.message.contains("board.json: cpu.cores: "),
            "{}",
            err.message
        );
        // Another board's profile installed: the host reads boards/; a board has no other.
        std::fs::write(&installed, installed_profile("test-router")).unwrap();
        let other = AgentConfig::for_board_at("qemu-malta-mipsel", &installed);
        if cfg!(feature = "boards-dir") {
            assert_eq!(other.unwrap().exec_envs[0].arch, "mipsel");
        } else {
            let err = other.unwrap_err();
            assert!(
                err.message.contains("`qemu-malta-mipsel`"),
                "{}",
                err.message
            );
            assert!(
                err.message.contains("available: test-router"),
                "{}",
                err.message
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn validation_names_the_field() {
        let mut cfg = AgentConfig::single("kvm0", ExecEnvType::Kvm, "aarch64", 128);
        cfg.exec_envs.push(cfg.exec_envs[0].clone());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exec_envs[1].name: duplicate"));
        cfg.exec_envs.truncate(1);
        cfg.exec_envs[0].app_network = Some("10.1.2.0/24".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exec_envs[0].app_network"));
        cfg.exec_envs[0].app_network = Some("10.1.0.0/16".into());
        assert!(cfg.validate().is_ok());
        cfg.exec_envs[0].lan_bridge = Some("br lan".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exec_envs[0].lan_bridge"));
        cfg.exec_envs[0].lan_bridge = Some("br-apps".into());
        assert!(cfg.validate().is_ok());
        cfg.exec_envs[0].memory_budget_mib = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("memory_budget_mib"));
        cfg.exec_envs[0].memory_budget_mib = 64;
        cfg.exec_envs[0].disk_budget_mib = Some(0);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("disk_budget_mib"));
        cfg.exec_envs[0].disk_budget_mib = Some(16);
        assert!(cfg.validate().is_ok());
        cfg.run_dir = Some("run".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("run_dir"));
        cfg.run_dir = Some("/".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("run_dir"));
        cfg.run_dir = None;

        // The bridged apps' pool: each field named, and what it needs.
        let err = |cfg: &AgentConfig| cfg.validate().unwrap_err().to_string();
        cfg.lan_app_range = Some("192.168.1.200-192.168.1.249".into());
        assert_eq!(
            err(&cfg),
            "lan_app_range: needs lan_address (the router's address on the LAN, the apps' gateway)"
        );
        cfg.lan_address = Some("192.168.1.1".into());
        assert!(err(&cfg).starts_with("lan_address: "), "{}", err(&cfg));
        cfg.lan_address = Some("192.168.1.1/24".into());
        assert!(err(&cfg).contains("lan_app_range: needs lan_interface"));
        cfg.lan_interface = Some("br-lan".into());
        let pool = cfg.lan_pool().unwrap().unwrap();
        assert_eq!(pool.size(), 50);
        cfg.lan_app_range = Some("192.168.1.250-192.168.2.3".into());
        assert!(err(&cfg).contains("lan_app_range: `192.168.1.250-192.168.2.3`: 192.168.2.3 is not a host address of the LAN 192.168.1.0/24"), "{}", err(&cfg));
        cfg.lan_app_range = Some("192.168.1.1-192.168.1.9".into());
        assert!(err(&cfg).contains("router's own address"), "{}", err(&cfg));
    }

    #[test]
    fn balloon_settings_default_and_are_bounded() {
        let cfg: AgentConfig = serde_json::from_str(
            r#"{"exec_envs":[{"name":"kvm0","type":"kvm","memory_budget_mib":64}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.balloon, BalloonSettings::default());
        assert!(cfg.balloon.enable);
        let cfg: AgentConfig = serde_json::from_str(
            r#"{"exec_envs":[{"name":"kvm0","type":"kvm","memory_budget_mib":64}],
                "balloon":{"low_watermark_mib":100,"high_watermark_mib":90}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "balloon.high_watermark_mib: 90 must be above low_watermark_mib 100"
        );
        let err = Fault::from(cfg.validate().unwrap_err());
        assert_eq!(err.code, FaultCode::InvalidArguments);
        assert!(
            serde_json::from_str::<AgentConfig>(r#"{"exec_envs":[],"balloon":{"tick":5}}"#)
                .is_err()
        );
    }
}
