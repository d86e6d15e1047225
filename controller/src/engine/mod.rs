//! The controller's protocol engine, transport-free: it turns one operator command into USP
//! requests to many agents at once, matches their responses by msg_id and their
//! OperationComplete / `DUStateChange!` / ValueChange notifications by agent and command key,
//! and ends each agent's job with an [`Outcome`]. The MQTT side only hands it received payloads
//! ([`Inbound`]) and carries what it sends ([`Sender`]), so the same engine runs in
//! `cpevisor-controller` and in tests without a broker.
//!
//! Split by concern: `types` (what it takes and returns, the per-agent job), `controller`
//! (state and run loop), `pending` (jobs started and collected one by one), `requests` (what it sends), `answers` and `notifications` (what moves
//! a job on). Children import siblings only, never this module.

mod answers;
mod controller;
mod notifications;
mod pending;
mod requests;
mod types;

pub use controller::Controller;
pub use pending::JobSet;
pub use types::{
    split_param, Inbound, Op, Outcome, SeenAgent, SeenEvent, Sender, Stats, MAX_AGENTS,
    MAX_EVENTS_PER_AGENT,
};

#[cfg(test)]
mod tests;
