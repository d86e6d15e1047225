//! The USP side of the agent's configuration: our endpoint ID, the controllers allowed to talk
//! to us with their roles, and what DeviceInfo reports.

use serde::{Deserialize, Serialize};

/// What a controller may do (TR-181 `LocalAgent.Controller.{i}.AssignedRole`, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Every message.
    FullAccess,
    /// Get, GetInstances, GetSupportedDM and GetSupportedProtocol; the rest is 7006.
    ReadOnly,
}

impl Role {
    /// The `AssignedRole` name: `FullAccess` or `ReadOnly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::FullAccess => "FullAccess",
            Role::ReadOnly => "ReadOnly",
        }
    }
}

/// A controller allowed to manage this agent (`LocalAgent.Controller.{i}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// USP endpoint ID, e.g. `proto::cpevisor-controller`.
    pub endpoint_id: String,
    /// What it may do (`AssignedRole`).
    pub role: Role,
    /// The transport identity the controller must present (its client certificate's CN).
    /// None: the endpoint ID alone identifies it (only for transports without client certs).
    #[serde(default)]
    pub identity: Option<String>,
    /// Where replies and notifications go (the controller's MQTT topic); default its endpoint ID.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// DeviceInfo values the board knows (the rest, UpTime and MemoryStatus, come from /proc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfoConfig {
    /// `DeviceInfo.Manufacturer`.
    #[serde(default)]
    pub manufacturer: String,
    /// `DeviceInfo.ManufacturerOUI`: six hex digits.
    #[serde(default)]
    pub manufacturer_oui: String,
    /// The board profile's name.
    #[serde(default)]
    pub model_name: String,
    /// `DeviceInfo.ProductClass`.
    #[serde(default)]
    pub product_class: String,
    /// `DeviceInfo.SerialNumber`.
    #[serde(default)]
    pub serial_number: String,
}

/// What the USP data model needs to know, whatever the MTP: who we are, who may manage us,
/// DeviceInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UspConfig {
    /// Our USP endpoint ID (`os::<OUI>-<serial>` style).
    pub endpoint_id: String,
    /// The controllers that may manage us (at most `MAX_CONTROLLERS`, endpoint IDs unique).
    pub controllers: Vec<ControllerConfig>,
    /// What `Device.DeviceInfo.` reports.
    #[serde(default)]
    pub device_info: DeviceInfoConfig,
}

/// Bound on configured controllers: the table is read on every record.
pub const MAX_CONTROLLERS: usize = 32;
/// Longest endpoint ID (TR-369 leaves it open; ours fit in a topic name).
pub const MAX_ENDPOINT_ID: usize = 256;

/// Why a USP config is refused (fault 7004, see `fault/map.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UspConfigError {
    /// `what` ("endpoint_id", "controller endpoint_id") is empty, too long or not printable.
    BadEndpointId {
        /// Which endpoint ID is wrong.
        what: &'static str,
        /// The ID as given.
        id: String,
    },
    /// More than `MAX_CONTROLLERS` controllers.
    TooManyControllers,
    /// Two controllers share this endpoint ID.
    DuplicateController(String),
}

impl std::fmt::Display for UspConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UspConfigError::BadEndpointId { what, id } => write!(
                f,
                "{what} {id:?}: must be 1..{MAX_ENDPOINT_ID} printable bytes"
            ),
            UspConfigError::TooManyControllers => {
                write!(f, "more than {MAX_CONTROLLERS} controllers")
            }
            UspConfigError::DuplicateController(id) => write!(f, "controller {id} listed twice"),
        }
    }
}

impl std::error::Error for UspConfigError {}

impl UspConfig {
    /// Checks endpoint IDs (ours and the controllers'), the controller count and duplicates.
    pub fn validate(&self) -> Result<(), UspConfigError> {
        let check_id = |what: &'static str, id: &str| {
            if id.is_empty() || id.len() > MAX_ENDPOINT_ID || id.chars().any(|c| c.is_control()) {
                Err(UspConfigError::BadEndpointId {
                    what,
                    id: id.to_string(),
                })
            } else {
                Ok(())
            }
        };
        check_id("endpoint_id", &self.endpoint_id)?;
        if self.controllers.len() > MAX_CONTROLLERS {
            return Err(UspConfigError::TooManyControllers);
        }
        for (i, c) in self.controllers.iter().enumerate() {
            check_id("controller endpoint_id", &c.endpoint_id)?;
            if self.controllers[..i]
                .iter()
                .any(|o| o.endpoint_id == c.endpoint_id)
            {
                return Err(UspConfigError::DuplicateController(c.endpoint_id.clone()));
            }
        }
        Ok(())
    }
}
