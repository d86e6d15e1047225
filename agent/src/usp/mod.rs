//! The agent's USP side (TR-369): the TR-181 data model (`dm`) and the endpoint that turns
//! Records into data model calls and notifications into Records (`endpoint`). Transport-free:
//! the daemon feeds it bytes from its MQTT or WebSocket connection.

pub mod config;
pub mod dm;
pub mod endpoint;
