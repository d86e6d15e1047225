//! cpevisor agent: `cpevisord` (on the device) and `cpevisorctl` (its local tool).
//!
//! - `fault`     TR-181/USP fault codes shared by every operation.
//! - `package`   app packages: OCI layout, app config, ed25519 signatures, `pack`.
//! - `fetch`     HTTP(S) download: streamed, capped, resumable.
//! - `store`     content-addressed blobs and atomic state files on flash.
//! - `model`     the TR-181 `Device.SoftwareModules` objects.
//! - `lifecycle` operations, events, memory admission, recovery after power loss.
//! - `supervise` one backend process per running app, restart policy, cgroup limits.
//! - `api`       the local Unix-socket protocol between cpevisorctl and cpevisord.
//! - `ctl`       the cpevisorctl command line.
//! - `applet`    the entry points of cpevisord and cpevisorctl, and the multi-call `cpevisor`.
//! - `usp`       the TR-181 data model over USP (TR-369) and the transport-free endpoint.
//! - `objects`   JSON objects read field by field, without serde's buffering.

pub mod fault;
pub mod fetch;
pub mod package;
pub mod store;

pub mod api;
pub mod applet;
pub mod ctl;
pub mod lifecycle;
pub mod model;
pub mod netfilter;
pub mod objects;
pub mod supervise;
pub mod usp;

/// Log verbosity for the daemon's stderr: 0 error, 1 warn, 2 info, 3 debug.
pub static LOG_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

#[doc(hidden)]
pub fn log_line(level: u8, args: std::fmt::Arguments<'_>) {
    if level <= LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed) {
        let tag = ["ERROR", "WARN", "INFO", "DEBUG"][usize::from(level.min(3))];
        eprintln!(
            "cpevisord {} {tag} {args}",
            model::rfc3339(model::now_secs())
        );
    }
}

/// Logs an error line to stderr (always shown), `format!` syntax.
#[macro_export]
macro_rules! log_error { ($($a:tt)*) => { $crate::log_line(0, format_args!($($a)*)) } }
/// Logs a warning line to stderr when `LOG_LEVEL` is 1 or more, `format!` syntax.
#[macro_export]
macro_rules! log_warn { ($($a:tt)*) => { $crate::log_line(1, format_args!($($a)*)) } }
/// Logs an info line to stderr when `LOG_LEVEL` is 2 or more (the default), `format!` syntax.
#[macro_export]
macro_rules! log_info { ($($a:tt)*) => { $crate::log_line(2, format_args!($($a)*)) } }
/// Logs a debug line to stderr when `LOG_LEVEL` is 3, `format!` syntax.
#[macro_export]
macro_rules! log_debug { ($($a:tt)*) => { $crate::log_line(3, format_args!($($a)*)) } }
