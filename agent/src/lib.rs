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

pub mod fault;
pub mod fetch;
pub mod package;
pub mod store;
