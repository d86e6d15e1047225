//! MQTT 5 for USP (TR-369 "MQTT Binding"): our own codec and a blocking client with TLS,
//! keep-alive, bounded queues and reconnect with capped, jittered back-off.
//!
//! Using the client (an agent subscribes to its own topic and answers on the Response Topic
//! of each request, with Content Type `usp.msg`):
//!
//! ```no_run
//! use std::path::Path;
//! use cpevisor_usp::mqtt::{Event, MqttClient, MqttConfig, USP_CONTENT_TYPE};
//! use cpevisor_usp::tls;
//!
//! let mut config = MqttConfig::new("broker.example", 8883, "os::012345-CPE0001");
//! let tls_config = tls::client_config(
//!     Path::new("/etc/cpevisor/ca.pem"),
//!     Some((Path::new("/etc/cpevisor/agent.pem"), Path::new("/etc/cpevisor/agent.key"))),
//! )?;
//! config.tls = Some((tls_config, "broker.example".into()));
//! config.subscriptions = vec!["usp/agent/os::012345-CPE0001".into()];
//! let (client, events) = MqttClient::start(config)?;
//! for event in events {
//!     match event {
//!         Event::Message(m) if m.content_type.as_deref() == Some(USP_CONTENT_TYPE) => {
//!             let reply: Vec<u8> = m.payload; // decode the Record, handle it, encode the answer
//!             if let Some(to) = m.response_topic {
//!                 client.publish(&to, &reply, Some("usp/agent/os::012345-CPE0001"),
//!                     Some(USP_CONTENT_TYPE))?;
//!             }
//!         }
//!         Event::Connected { .. } => {}           // subscriptions are active now
//!         Event::Disconnected { reason, retry_in } => eprintln!("{reason}; retry in {retry_in:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The client reconnects by itself and subscribes again; publications made while it is away
//! wait in the bounded outgoing queue (`MqttError::QueueFull` past it). Incoming messages that
//! find the event channel full are dropped and counted (`MqttClient::stats`); so are state
//! events, which is why `MqttClient::is_connected` is the authority on the connection's state.
//! Host names go through `MqttConfig::resolver` when set (a static agent has no NSS).

pub mod backoff;
pub mod client;
pub mod codec;
pub mod settings;
pub mod topic;

pub use backoff::Backoff;
pub use client::{
    is_usp_content_type, Event, Message, MqttClient, MqttConfig, MqttError, Stats,
    USP_CONTENT_TYPE, USP_ENDPOINT_ID_PROPERTY, USP_MIME_TYPE,
};
pub use settings::{MqttSettings, SettingsReader, UnknownFields};
pub use topic::{valid_topic, valid_topic_level, MAX_TOPIC_LEN};
