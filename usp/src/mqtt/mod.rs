//! MQTT 5 for USP (TR-369 "MQTT Binding"): our own codec and a blocking client.
pub mod codec;
