//! The `cpevisord` applet: the on-device agent. Runs operator apps per TR-181
//! `Device.SoftwareModules`, serves cpevisorctl on a Unix socket, stops apps cleanly on SIGTERM.
//! Also the jail runner (`cpevisord jail-exec`) and the jail probe (`cpevisord jail-probe`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::api::server;
use crate::lifecycle::config::AgentConfig;
use crate::lifecycle::Agent;
use crate::supervise::jail;
use crate::usp::{self, file::UspFile};
use crate::{log_error, log_info, LOG_LEVEL};

const USAGE: &str =
    "usage: cpevisord --state-dir DIR --config FILE [--socket PATH] [--log-level 0-3]
       cpevisord jail-exec SPEC.json [--ready-fd N]   (the jail runner, started by the agent)

  --state-dir DIR   flash directory for the store, state.json and journal.json
  --config FILE     agent config (JSON): exec_envs [{name, type kvm|jail, arch, memory_budget_mib,
                    enable, runner vmm|jail|process, app_network, lan_bridge}],
                    trusted_keys_dir, download_cap_bytes, vmm_path, ca_file, cgroup_root,
                    stop_timeout_ms, run_dir (private run state, default /run/cpevisor),
                    balloon {enable, tick_ms, low_watermark_mib, high_watermark_mib, step_mib,
                    floor_mib, floor_percent} (microVM balloon targets)
  --socket PATH     control socket (default /run/cpevisord.sock)
  --usp FILE        remote management over USP/MQTT (JSON: broker_host, broker_port, ca_file,
                    cert_file, key_file, endpoint_id, topic, controllers [{endpoint_id, topic,
                    role FullAccess|ReadOnly, identity}], device_info, reboot_command;
                    websocket {host, port, path, server_name}: USP/WebSocket to the
                    controller instead of MQTT); none: local only
  --log-level N     0 error, 1 warn, 2 info (default), 3 debug";

enum ConfigSource {
    File(PathBuf),
    Board(String),
}

struct Args {
    state_dir: PathBuf,
    config: ConfigSource,
    socket: PathBuf,
    usp: Option<PathBuf>,
}

fn parse_args(args: &[OsString]) -> Result<Args, String> {
    let mut state_dir = None;
    let mut config = None;
    let mut board = None;
    let mut socket = PathBuf::from("/run/cpevisord.sock");
    let mut usp = None;
    let mut it = args.iter().cloned();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--state-dir" => state_dir = Some(value("--state-dir")?),
            "--config" => config = Some(value("--config")?),
            "--board" => board = Some(value("--board")?.to_string_lossy().into_owned()),
            "--socket" => socket = value("--socket")?,
            "--usp" => usp = Some(value("--usp")?),
            "--log-level" => {
                let v = value("--log-level")?;
                let n: u8 = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| *n <= 3)
                    .ok_or("--log-level: expected 0..3")?;
                LOG_LEVEL.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        state_dir: state_dir.ok_or("--state-dir is required")?,
        config: match (config, board) {
            (Some(f), None) => ConfigSource::File(f),
            (None, Some(b)) => ConfigSource::Board(b),
            (Some(_), Some(_)) => return Err("--config and --board exclude each other".into()),
            (None, None) => return Err("--config FILE or --board NAME is required".into()),
        },
        socket,
        usp,
    })
}

/// Blocks SIGTERM/SIGINT in every thread; a dedicated thread takes them with sigwait.
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset before use, and
    // pthread_sigmask only changes this thread's mask (inherited by threads spawned later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set and `sig` a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Runs cpevisord with `args` (the arguments after the program name).
pub fn main(args: &[OsString]) -> ExitCode {
    // Whatever descriptors we were started with (a service manager's, a shell's) must not
    // reach the apps we run: close-on-exec for all above stderr, before anything is opened.
    // The runner's `--ready-fd` stays usable: it sets close-on-exec on it itself, and only
    // writes to it.
    if let Err(e) = cpevisor_sandbox::fds::cloexec_from(3) {
        eprintln!("cpevisord: marking inherited descriptors close-on-exec: {e}");
        return ExitCode::from(1);
    }
    // Multi-call: `cpevisord jail-exec SPEC` is the jail runner, so routers carry one binary.
    let argv: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.first().map(String::as_str) == Some(jail::JAIL_EXEC) {
        let code = jail::jail_exec_main(&argv[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    // `cpevisord jail-probe SPEC PID -- ARGV`: a health-probe command inside a running jail.
    if argv.first().map(String::as_str) == Some(jail::JAIL_PROBE) {
        let code = jail::jail_probe_main(&argv[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cpevisord: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sigset = block_termination_signals();
    let loaded = match &args.config {
        ConfigSource::File(f) => AgentConfig::load(f),
        ConfigSource::Board(b) => AgentConfig::for_board(b),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(f) => {
            log_error!("{f}");
            return ExitCode::from(2);
        }
    };
    let listener = match server::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            log_error!("socket {}: {e}", args.socket.display());
            return ExitCode::from(1);
        }
    };
    let agent = match Agent::open(&args.state_dir, cfg) {
        Ok(a) => Arc::new(a),
        Err(f) => {
            log_error!("state {}: {f}", args.state_dir.display());
            let _ = std::fs::remove_file(&args.socket);
            return ExitCode::from(1);
        }
    };
    let server_agent = agent.clone();
    let spawned = std::thread::Builder::new()
        .name("accept".into())
        .stack_size(256 * 1024)
        .spawn(move || server::serve(listener, server_agent));
    if let Err(e) = spawned {
        log_error!("cannot start the API thread: {e}");
        return ExitCode::from(1);
    }
    log_info!(
        "ready: state {}, socket {}",
        args.state_dir.display(),
        args.socket.display()
    );
    // USP is optional: without --usp the agent is managed through its socket only.
    let usp = match &args.usp {
        Some(file) => {
            match UspFile::load(file).and_then(|f| usp::start(agent.clone(), &f, &args.state_dir)) {
                Ok(s) => Some(s),
                Err(e) => {
                    log_error!("{e}");
                    agent.shutdown();
                    let _ = std::fs::remove_file(&args.socket);
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let sig = wait_for_signal(&sigset);
    log_info!("signal {sig}: stopping apps");
    if let Some(s) = usp {
        s.stop();
    }
    agent.shutdown();
    let _ = std::fs::remove_file(&args.socket);
    log_info!("stopped");
    ExitCode::SUCCESS
}
