//! The jail backend's machinery, for boards without hardware virtualization: each app runs in
//! its own mount, PID, UTS, IPC, network and (where the kernel has them) user namespaces, on
//! its read-only rootfs with a writable data volume, without capabilities, under no_new_privs
//! and a seccomp filter, inside its cgroup.
//!
//! - `spec`: what the agent asks for (JSON file), bounded and validated.
//! - `runner`: `cpevisord jail-exec`, the host side (cgroup, bridge, veth, clone, wait).
//! - `init`: the jail's PID 1 (mounts, hostname, addresses, privilege drop, exec, reaping).
//! - `error`: what a step of building the jail failed with.
//! - `root`: the app's root, an extracted tar layer or a read-only erofs image.
//! - `mounts`, `netlink`, `seccomp`, `userns`, `volume`: one mechanism each (capabilities, descriptors
//!   and the seccomp compiler are in the `cpevisor-sandbox` crate, shared with the VMM).

pub mod enter;
pub mod error;
pub mod init;
pub mod mounts;
pub mod netlink;
pub mod root;
pub mod runner;
pub mod seccomp;
pub mod spec;
pub mod userns;
pub mod volume;

pub use enter::{main as jail_probe_main, JAIL_PROBE};
pub use error::JailError;
pub use runner::main as jail_exec_main;
pub use spec::{JailNet, JailSpec};

/// The multi-call name: `cpevisord jail-exec SPEC [--ready-fd N]`.
pub const JAIL_EXEC: &str = "jail-exec";
