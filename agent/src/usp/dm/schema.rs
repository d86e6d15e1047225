//! The supported data model as static descriptors: objects (single or multi-instance), their
//! parameters (type, access), commands (input/output argument names, sync or async) and events
//! (argument names). Names follow TR-181 Device:2 exactly; what we add beyond it is marked.

/// TR-106 parameter types we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TR-106 `string`.
    String,
    /// TR-106 `boolean` (`true`/`false`, `1`/`0` accepted).
    Boolean,
    /// TR-106 `unsignedInt` (32 bits).
    UnsignedInt,
    /// TR-106 `int` (32 bits).
    Int,
    /// TR-106 `unsignedLong` (64 bits).
    UnsignedLong,
    /// TR-106 `dateTime`: RFC 3339 UTC.
    DateTime,
    /// Comma-separated list of strings (references included).
    List,
}

/// Whether a controller may write a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only the agent changes it.
    ReadOnly,
    /// A controller may Set it.
    ReadWrite,
}

/// One parameter of an object in the supported data model.
#[derive(Debug)]
pub struct ParamDesc {
    /// TR-181 parameter name (`Enable`, `X_CPEVISOR_HealthStatus`).
    pub name: &'static str,
    /// Its TR-106 type.
    pub kind: Kind,
    /// Whether a controller may set it.
    pub access: Access,
    /// Allowed values for enumerations (empty: any value of the type).
    pub values: &'static [&'static str],
}

/// One command of an object in the supported data model.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandDesc {
    /// TR-181 command name with its parentheses (`InstallDU()`).
    pub name: &'static str,
    /// Asynchronous: answered with a Request instance, then an OperationComplete.
    pub is_async: bool,
    /// Input argument names.
    pub inputs: &'static [&'static str],
    /// Output argument names.
    pub outputs: &'static [&'static str],
}

/// One event of an object in the supported data model.
#[derive(Debug, PartialEq, Eq)]
pub struct EventDesc {
    /// TR-181 event name with its `!` (`DUStateChange!`).
    pub name: &'static str,
    /// Argument names.
    pub args: &'static [&'static str],
}

/// One object of the supported data model, with what is below it.
#[derive(Debug)]
pub struct ObjDesc {
    /// Object name without the path or dot (`DeploymentUnit`).
    pub name: &'static str,
    /// Multi-instance: a table whose instances are numbered.
    pub multi: bool,
    /// Controllers may Add/Delete instances (only LocalAgent.Subscription here).
    pub creatable: bool,
    /// Its parameters.
    pub params: &'static [ParamDesc],
    /// Its commands.
    pub commands: &'static [CommandDesc],
    /// Its events.
    pub events: &'static [EventDesc],
    /// The objects below it.
    pub children: &'static [ObjDesc],
}

impl ObjDesc {
    /// The child object `name`, if there is one.
    pub fn child(&self, name: &str) -> Option<&'static ObjDesc> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The parameter `name`, if the object has one.
    pub fn param(&self, name: &str) -> Option<&'static ParamDesc> {
        self.params.iter().find(|p| p.name == name)
    }
    /// The command `name` (with parentheses), if the object has one.
    pub fn command(&self, name: &str) -> Option<&'static CommandDesc> {
        self.commands.iter().find(|c| c.name == name)
    }
    /// The event `name` (with `!`), if the object has one.
    pub fn event(&self, name: &str) -> Option<&'static EventDesc> {
        self.events.iter().find(|e| e.name == name)
    }
}

const fn ro(name: &'static str, kind: Kind) -> ParamDesc {
    ParamDesc {
        name,
        kind,
        access: Access::ReadOnly,
        values: &[],
    }
}
const fn rw(name: &'static str, kind: Kind) -> ParamDesc {
    ParamDesc {
        name,
        kind,
        access: Access::ReadWrite,
        values: &[],
    }
}
const fn ro_enum(name: &'static str, values: &'static [&'static str]) -> ParamDesc {
    ParamDesc {
        name,
        kind: Kind::String,
        access: Access::ReadOnly,
        values,
    }
}
const fn obj(
    name: &'static str,
    params: &'static [ParamDesc],
    children: &'static [ObjDesc],
) -> ObjDesc {
    ObjDesc {
        name,
        multi: false,
        creatable: false,
        params,
        commands: &[],
        events: &[],
        children,
    }
}

use Kind::*;

/// The `NotifType` values a Subscription may hold.
pub const NOTIF_TYPES: &[&str] = &[
    "ValueChange",
    "ObjectCreation",
    "ObjectDeletion",
    "OperationComplete",
    "Event",
];
/// `DeploymentUnit.Status` values.
pub const DU_STATUS: &[&str] = &[
    "Installing",
    "Installed",
    "Updating",
    "Uninstalling",
    "Uninstalled",
];
/// `ExecutionUnit.Status` values.
pub const EU_STATUS: &[&str] = &["Idle", "Starting", "Active", "Stopping", "Restarting"];
/// `ExecutionUnit.ExecutionFaultCode` values.
pub const EU_FAULTS: &[&str] = &[
    "NoFault",
    "FailureOnStart",
    "FailureOnAutoStart",
    "FailureOnStop",
    "FailureWhileActive",
    "DependencyFailure",
    "UnStartable",
];

/// `DUStateChange!` arguments (TR-181).
pub const DU_STATE_CHANGE_ARGS: &[&str] = &[
    "UUID",
    "DeploymentUnitRef",
    "Version",
    "CurrentState",
    "Resolved",
    "ExecutionUnitRefList",
    "StartTime",
    "CompleteTime",
    "OperationPerformed",
    "Fault.FaultCode",
    "Fault.FaultString",
];
/// `Boot!` arguments (TR-181).
pub const BOOT_ARGS: &[&str] = &["CommandKey", "Cause", "FirmwareUpdated", "ParameterMap"];

const MEMORY_STATUS: ObjDesc = obj(
    "MemoryStatus",
    &[ro("Total", UnsignedInt), ro("Free", UnsignedInt)],
    &[],
);

const DEVICE_INFO: ObjDesc = obj(
    "DeviceInfo",
    &[
        ro("Manufacturer", String),
        ro("ManufacturerOUI", String),
        ro("ModelName", String),
        ro("ProductClass", String),
        ro("SerialNumber", String),
        ro("SoftwareVersion", String),
        ro("UpTime", UnsignedInt),
    ],
    &[MEMORY_STATUS],
);

const CONTROLLER: ObjDesc = ObjDesc {
    name: "Controller",
    multi: true,
    creatable: false,
    params: &[
        ro("EndpointID", String),
        // Disabling a controller makes the agent ignore it (and stop notifying it).
        rw("Enable", Boolean),
        // Vendor note: the role by name (FullAccess | ReadOnly) rather than a reference into
        // ControllerTrust.Role, which this agent does not model.
        ro_enum("AssignedRole", &["FullAccess", "ReadOnly"]),
    ],
    commands: &[],
    events: &[],
    children: &[],
};

const SUBSCRIPTION: ObjDesc = ObjDesc {
    name: "Subscription",
    multi: true,
    creatable: true,
    params: &[
        rw("Enable", Boolean),
        rw("ID", String),
        ro("Recipient", String),
        ParamDesc {
            name: "NotifType",
            kind: String,
            access: Access::ReadWrite,
            values: NOTIF_TYPES,
        },
        rw("ReferenceList", List),
        rw("Persistent", Boolean),
        ro("CreationDate", DateTime),
    ],
    commands: &[],
    events: &[],
    children: &[],
};

const REQUEST: ObjDesc = ObjDesc {
    name: "Request",
    multi: true,
    creatable: false,
    params: &[
        ro("Originator", String),
        ro("Command", String),
        ro("CommandKey", String),
        ro_enum(
            "Status",
            &[
                "Requested",
                "Active",
                "Canceling",
                "Canceled",
                "Success",
                "Error",
            ],
        ),
    ],
    commands: &[],
    events: &[],
    children: &[],
};

const LOCAL_AGENT: ObjDesc = obj(
    "LocalAgent",
    &[
        ro("EndpointID", String),
        ro("SupportedProtocols", List),
        ro("ControllerNumberOfEntries", UnsignedInt),
        ro("SubscriptionNumberOfEntries", UnsignedInt),
        ro("RequestNumberOfEntries", UnsignedInt),
    ],
    &[CONTROLLER, SUBSCRIPTION, REQUEST],
);

const EXEC_ENV: ObjDesc = ObjDesc {
    name: "ExecEnv",
    multi: true,
    creatable: false,
    params: &[
        rw("Enable", Boolean),
        ro_enum("Status", &["Up", "Error", "Disabled"]),
        ro("Name", String),
        ro("Type", String),
        ro("AllocatedDiskSpace", Int),
        ro("AvailableDiskSpace", Int),
        ro("AllocatedMemory", Int),
        ro("AvailableMemory", Int),
        ro("ActiveExecutionUnits", List),
        // Vendor: the CPU architecture of the packages it runs (`aarch64`, `armv7`, `mipsel`,
        // ...), what a controller places packages by. TR-181's Processor.{i}.Architecture
        // has no enumeration value for aarch64 or mips64 and describes the device, not the
        // ExecEnv.
        ro("X_CPEVISOR_Architecture", String),
    ],
    commands: &[CommandDesc {
        name: "Reset",
        is_async: true,
        inputs: &[],
        outputs: &[],
    }],
    events: &[],
    children: &[],
};

const DEPLOYMENT_UNIT: ObjDesc = ObjDesc {
    name: "DeploymentUnit",
    multi: true,
    creatable: false,
    params: &[
        ro("UUID", String),
        ro("DUID", String),
        ro("Name", String),
        ro_enum("Status", DU_STATUS),
        ro("Resolved", Boolean),
        ro("URL", String),
        ro("Description", String),
        ro("Vendor", String),
        ro("Version", String),
        ro("ExecutionUnitList", List),
        ro("ExecutionEnvRef", String),
    ],
    commands: &[
        CommandDesc {
            name: "Update",
            is_async: true,
            inputs: &["URL", "Username", "Password", "X_CPEVISOR_NetworkConfig"],
            outputs: &[],
        },
        CommandDesc {
            name: "Uninstall",
            is_async: true,
            inputs: &[],
            outputs: &[],
        },
    ],
    events: &[],
    children: &[],
};

/// Beyond TR-181 (vendor object): one router port mapped to the app. TR-181's own
/// `PortMappingRefList` points into `Device.NAT.PortMapping`, which this agent does not serve;
/// the parameters keep the NAT.PortMapping names where they mean the same.
const EU_PORT_MAPPING: ObjDesc = ObjDesc {
    name: "X_CPEVISOR_PortMapping",
    multi: true,
    creatable: false,
    params: &[
        ro_enum("Protocol", &["TCP", "UDP"]),
        ro("ExternalPort", UnsignedInt),
        ro("InternalPort", UnsignedInt),
        // The router side it listens on; the agent config names the interface.
        ro_enum("X_CPEVISOR_Side", &["lan", "wan"]),
        ro("X_CPEVISOR_InterfaceName", String),
    ],
    commands: &[],
    events: &[],
    children: &[],
};

/// TR-181 2.17 `ExecutionUnit.{i}.NetworkConfig.`, with what the package asks for as vendor
/// parameters.
const EU_NETWORK_CONFIG: ObjDesc = obj(
    "NetworkConfig",
    &[
        // References into Device.IP.Interface / Device.NAT.PortMapping: empty, the agent serves
        // neither table.
        ro("AccessInterfaceRefList", List),
        ro("PortMappingRefList", List),
        // Empty: the package has no network section (a link, no rules).
        ro_enum("X_CPEVISOR_Mode", &["", "nat", "none", "bridged"]),
        ro("X_CPEVISOR_Address", String),
        // `<tcp|udp|any> <cidr>[ <port>...]` per allowed destination; empty: replies only.
        ro("X_CPEVISOR_Egress", List),
        ro("X_CPEVISOR_InterceptDNS", Boolean),
        ro("X_CPEVISOR_DNSPort", UnsignedInt),
        // Whether the app's rules are in the kernel's nftables now.
        ro("X_CPEVISOR_RulesActive", Boolean),
        ro("X_CPEVISOR_PortMappingNumberOfEntries", UnsignedInt),
    ],
    &[EU_PORT_MAPPING],
);

const EXECUTION_UNIT: ObjDesc = ObjDesc {
    name: "ExecutionUnit",
    multi: true,
    creatable: false,
    params: &[
        ro("EUID", String),
        ro("Name", String),
        ro("ExecEnvLabel", String),
        ro_enum("Status", EU_STATUS),
        ro_enum("RequestedState", &["Idle", "Active"]),
        ro_enum("ExecutionFaultCode", EU_FAULTS),
        ro("ExecutionFaultMessage", String),
        // TR-181 has AutoStart and RunLevel writable; the agent takes them from the package.
        ro("AutoStart", Boolean),
        ro("RunLevel", UnsignedInt),
        ro("Vendor", String),
        ro("Version", String),
        ro("Description", String),
        ro("AllocatedDiskSpace", Int),
        ro("DiskSpaceInUse", Int),
        ro("MemoryInUse", Int),
        ro("ExecutionEnvRef", String),
        // Vendor extensions (TR-106 `X_<VENDOR>_`): the last health probe of the app's package.
        ro_enum("X_CPEVISOR_HealthStatus", &["None", "Ok", "Failing"]),
        ro("X_CPEVISOR_HealthLastCheck", DateTime),
        ro("X_CPEVISOR_HealthMessage", String),
    ],
    commands: &[
        CommandDesc {
            name: "SetRequestedState",
            is_async: false,
            inputs: &["RequestedState"],
            outputs: &[],
        },
        CommandDesc {
            name: "Restart",
            is_async: false,
            inputs: &[],
            outputs: &[],
        },
    ],
    events: &[],
    children: &[EU_NETWORK_CONFIG],
};

const SOFTWARE_MODULES: ObjDesc = ObjDesc {
    name: "SoftwareModules",
    multi: false,
    creatable: false,
    params: &[
        ro("ExecEnvNumberOfEntries", UnsignedInt),
        ro("DeploymentUnitNumberOfEntries", UnsignedInt),
        ro("ExecutionUnitNumberOfEntries", UnsignedInt),
    ],
    commands: &[CommandDesc {
        name: "InstallDU",
        is_async: true,
        inputs: &[
            "URL",
            "UUID",
            "Username",
            "Password",
            "ExecutionEnvRef",
            // Vendor: a JSON network section in place of the package's (agent/README.md).
            "X_CPEVISOR_NetworkConfig",
        ],
        // Beyond TR-181 (which reports through DUStateChange! only): the new DU, for the
        // OperationComplete of this request.
        outputs: &["DeploymentUnitRef", "UUID", "Version"],
    }],
    events: &[EventDesc {
        name: "DUStateChange",
        args: DU_STATE_CHANGE_ARGS,
    }],
    children: &[EXEC_ENV, DEPLOYMENT_UNIT, EXECUTION_UNIT],
};

/// `Device.`: the root.
pub static DEVICE: ObjDesc = ObjDesc {
    name: "Device",
    multi: false,
    creatable: false,
    params: &[],
    commands: &[CommandDesc {
        name: "Reboot",
        is_async: true,
        inputs: &[],
        outputs: &[],
    }],
    events: &[EventDesc {
        name: "Boot",
        args: BOOT_ARGS,
    }],
    children: &[DEVICE_INFO, LOCAL_AGENT, SOFTWARE_MODULES],
};

/// The parameters that identify an instance of a table (TR-181 unique keys), as GetInstances
/// and ObjectCreation report them.
pub fn unique_key_names(d: &ObjDesc) -> &'static [&'static str] {
    match d.name {
        "DeploymentUnit" => &["UUID"],
        "ExecutionUnit" => &["EUID"],
        "X_CPEVISOR_PortMapping" => &["Protocol", "ExternalPort", "X_CPEVISOR_Side"],
        "ExecEnv" => &["Name"],
        "Controller" => &["EndpointID"],
        "Subscription" => &["ID", "Recipient"],
        _ => &[],
    }
}

/// Checks `value` against a parameter's type and enumeration: 7011 for the wrong type, 7012 for
/// a value out of range or outside the enumeration.
pub fn check_value(p: &ParamDesc, value: &str) -> Result<(), (u32, std::string::String)> {
    use cpevisor_usp::errors::{INVALID_TYPE, INVALID_VALUE};
    let bad_type = |what: &str| Err((INVALID_TYPE, format!("{}: {value:?} is not {what}", p.name)));
    match p.kind {
        Boolean => {
            if !matches!(value, "true" | "false" | "1" | "0") {
                return bad_type("a boolean");
            }
        }
        UnsignedInt => {
            if value.parse::<u32>().is_err() {
                return bad_type("an unsignedInt");
            }
        }
        UnsignedLong => {
            if value.parse::<u64>().is_err() {
                return bad_type("an unsignedLong");
            }
        }
        Int => {
            if value.parse::<i32>().is_err() {
                return bad_type("an int");
            }
        }
        String | List | DateTime => {}
    }
    if value.len() > 1024 {
        return Err((INVALID_VALUE, format!("{}: longer than 1024 bytes", p.name)));
    }
    if !p.values.is_empty() && !p.values.contains(&value) {
        return Err((
            INVALID_VALUE,
            format!(
                "{}: {value:?} is not one of {}",
                p.name,
                p.values.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A TR-106 boolean value: `true` or `1` is true, anything else false.
pub fn parse_bool(v: &str) -> bool {
    matches!(v, "true" | "1")
}

#[cfg(test)]
mod tests {
    use super::EU_FAULTS;
    use crate::model::ExecutionFaultCode::*;

    /// TR-181 (Device:2) `ExecutionUnit.{i}.ExecutionFaultCode`, as the specification spells
    /// it (`UnStartable` with a capital S), and every fault the agent reports rendered the way
    /// the data model renders it (`{:?}`, software_modules.rs) is one of them.
    #[test]
    fn execution_fault_codes_are_tr181_spelled() {
        let tr181 = [
            "NoFault",
            "FailureOnStart",
            "FailureOnAutoStart",
            "FailureOnStop",
            "FailureWhileActive",
            "DependencyFailure",
            "UnStartable",
        ];
        assert_eq!(EU_FAULTS, tr181);
        for code in [
            NoFault,
            FailureOnStart,
            FailureOnAutoStart,
            FailureOnStop,
            FailureWhileActive,
            UnStartable,
        ] {
            let shown = format!("{code:?}");
            assert!(EU_FAULTS.contains(&shown.as_str()), "{shown}");
        }
    }
}
