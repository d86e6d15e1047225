//! The agent's USP endpoint without a transport: Records in, Records out. `handle_record`
//! decodes a Record with the bounded decoder, checks who sent it (a configured controller,
//! with the transport identity its config names), enforces its role, runs the Msg against the
//! data model and returns the reply; `notifications` and `on_connect` return the Notify Records
//! to send. The daemon's MQTT or WebSocket wiring only moves the bytes, and a test or a fleet
//! simulation can host many endpoints in one process.
//!
//! One file per message kind, as obuspa's `handle_*.c`: `get` (Get, GetInstances,
//! GetSupportedDM), `set`, `add_delete`, `operate`, `notify` (Notify out, with retries); the
//! Record layer (sender checks, encoding) in `record`, the request switch in `dispatch`.
//! Children import siblings only, never this module.

mod add_delete;
mod dispatch;
mod get;
mod notify;
mod operate;
mod record;
mod set;

pub use record::{Endpoint, Outgoing, SUPPORTED_VERSIONS};
