//! USP (TR-369, Broadband Forum User Services Platform) for cpevisor: what both ends of a USP
//! conversation share. The agent (`cpevisord`) binds it to its TR-181 data model; the operator's
//! controller (`cpevisor-controller`, crate controller/) drives agents with it.
//!
//! - `errors`: the USP error codes.
//! - `proto`: Records and Msgs as protobuf, with the field numbers of the BBF schemas.
//! - `record`: building and checking Records (bounded, endpoint-addressed).
//! - `path`: the data model path grammar (paths, instance numbers, wildcards, search paths).
//! - `mqtt`: an MQTT 5 client (USP's mandatory MTP), TLS, reconnect with back-off.
//! - `ws`: WebSocket (`v1.usp`) client and server, TLS.
//! - `tls`: rustls configurations with server verification and client certificates.

#![forbid(unsafe_code)]

#[cfg(feature = "test-broker")]
pub mod broker;
pub mod errors;
pub mod mqtt;
pub mod path;
pub mod proto;
pub mod record;
pub mod tls;
pub mod ws;
