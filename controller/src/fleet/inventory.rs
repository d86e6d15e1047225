//! An agent's inventory from the rows of one Get of `Device.DeviceInfo.` and
//! `Device.SoftwareModules.` (full parameter path, value).

use std::collections::BTreeMap;

use crate::store::{DeviceFacts, Du, Eu, ExecEnv, Inventory};

/// The paths the inventory Get asks for.
pub const PATHS: &[&str] = &["Device.DeviceInfo.", "Device.SoftwareModules."];

/// Most instances of each table kept per agent: a hostile agent cannot fill the database.
pub const MAX_INSTANCES: usize = 256;
/// Longest value kept; longer ones are cut.
const MAX_VALUE: usize = 1024;

fn cut(v: &str) -> String {
    let mut end = v.len().min(MAX_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// `Device.SoftwareModules.ExecEnv.3.Name` -> (`ExecEnv`, `Device.SoftwareModules.ExecEnv.3.`,
/// `Name`).
fn instance(path: &str) -> Option<(&str, String, &str)> {
    let rest = path.strip_prefix("Device.SoftwareModules.")?;
    let mut parts = rest.splitn(3, '.');
    let (table, n, param) = (parts.next()?, parts.next()?, parts.next()?);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || param.contains('.') {
        return None;
    }
    Some((table, format!("Device.SoftwareModules.{table}.{n}."), param))
}

/// KiB from a data-model integer (negative or garbage: unknown).
fn kib(v: Option<&String>) -> Option<i64> {
    v.and_then(|s| s.parse::<i64>().ok()).filter(|n| *n >= 0)
}

/// The inventory the rows say.
pub fn from_rows(rows: &[(String, String)]) -> Inventory {
    let mut tables: BTreeMap<&str, BTreeMap<String, BTreeMap<&str, String>>> = BTreeMap::new();
    let mut facts = DeviceFacts::default();
    for (path, value) in rows {
        if let Some(p) = path.strip_prefix("Device.DeviceInfo.") {
            let v = Some(cut(value));
            match p {
                "Manufacturer" => facts.manufacturer = v,
                "ModelName" => facts.model = v,
                "SoftwareVersion" => facts.software_version = v,
                "SerialNumber" => facts.serial = v,
                // TR-181's CPU description, where an agent has it.
                _ if p.starts_with("Processor.") && p.ends_with(".Architecture") => {
                    facts.arch = facts.arch.take().or(v)
                }
                _ => {}
            }
            continue;
        }
        let Some((table, inst, param)) = instance(path) else {
            continue;
        };
        let t = tables.entry(table).or_default();
        if t.len() >= MAX_INSTANCES && !t.contains_key(&inst) {
            continue;
        }
        t.entry(inst).or_default().insert(param, cut(value));
    }
    let take = |name: &str| tables.get(name).cloned().unwrap_or_default();
    let non_empty = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
    let exec_envs = take("ExecEnv")
        .into_iter()
        .map(|(path, p)| ExecEnv {
            name: p.get("Name").cloned().unwrap_or_default(),
            env_type: non_empty(p.get("Type")),
            status: non_empty(p.get("Status")),
            // cpevisor agents say it as a vendor parameter (TR-181 has none per ExecEnv).
            arch: non_empty(p.get("X_CPEVISOR_Architecture")),
            budget_kib: kib(p.get("AllocatedMemory")),
            available_kib: kib(p.get("AvailableMemory")),
            path,
        })
        .collect();
    let dus = take("DeploymentUnit")
        .into_iter()
        .filter_map(|(path, p)| {
            Some(Du {
                uuid: non_empty(p.get("UUID"))?,
                name: p.get("Name").cloned().unwrap_or_default(),
                version: p.get("Version").cloned().unwrap_or_default(),
                url: non_empty(p.get("URL")),
                status: non_empty(p.get("Status")),
                exec_env: non_empty(p.get("ExecutionEnvRef")),
                path,
            })
        })
        .collect();
    let eus = take("ExecutionUnit")
        .into_iter()
        .filter_map(|(path, p)| {
            Some(Eu {
                euid: non_empty(p.get("EUID"))?,
                name: non_empty(p.get("Name")),
                status: non_empty(p.get("Status")),
                fault_code: non_empty(p.get("ExecutionFaultCode")),
                fault_message: non_empty(p.get("ExecutionFaultMessage")),
                path,
            })
        })
        .collect();
    Inventory {
        facts,
        exec_envs,
        dus,
        eus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_device_info_and_the_software_tables() {
        let inv = from_rows(&rows(&[
            ("Device.DeviceInfo.ModelName", "cpe-a"),
            ("Device.DeviceInfo.Manufacturer", "acme"),
            ("Device.DeviceInfo.SoftwareVersion", "0.1.0"),
            ("Device.DeviceInfo.SerialNumber", "s1"),
            ("Device.DeviceInfo.MemoryStatus.Total", "100"),
            ("Device.SoftwareModules.ExecEnv.1.Name", "jail0"),
            ("Device.SoftwareModules.ExecEnv.1.Type", "jail"),
            ("Device.SoftwareModules.ExecEnv.1.AllocatedMemory", "65536"),
            ("Device.SoftwareModules.ExecEnv.1.AvailableMemory", "49152"),
            (
                "Device.SoftwareModules.ExecEnv.1.X_CPEVISOR_Architecture",
                "aarch64",
            ),
            ("Device.SoftwareModules.DeploymentUnit.2.UUID", "u-1"),
            ("Device.SoftwareModules.DeploymentUnit.2.Name", "app"),
            ("Device.SoftwareModules.DeploymentUnit.2.Version", "1.0"),
            (
                "Device.SoftwareModules.DeploymentUnit.2.Status",
                "Installed",
            ),
            ("Device.SoftwareModules.ExecutionUnit.1.EUID", "eu-1"),
            ("Device.SoftwareModules.ExecutionUnit.1.Status", "Active"),
            ("Device.SoftwareModules.DeploymentUnitNumberOfEntries", "1"),
        ]));
        assert_eq!(inv.facts.model.as_deref(), Some("cpe-a"));
        assert_eq!(inv.facts.serial.as_deref(), Some("s1"));
        assert_eq!(inv.facts.arch, None, "not reported");
        assert_eq!(inv.exec_envs.len(), 1);
        assert_eq!(inv.exec_envs[0].path, "Device.SoftwareModules.ExecEnv.1.");
        assert_eq!(inv.exec_envs[0].available_kib, Some(49152));
        assert_eq!(inv.exec_envs[0].arch.as_deref(), Some("aarch64"));
        assert_eq!(inv.dus.len(), 1);
        assert_eq!(
            (inv.dus[0].name.as_str(), inv.dus[0].version.as_str()),
            ("app", "1.0")
        );
        assert_eq!(inv.eus[0].status.as_deref(), Some("Active"));
    }

    #[test]
    fn hostile_rows_are_bounded() {
        let mut list = Vec::new();
        for i in 0..(MAX_INSTANCES + 50) {
            list.push((
                format!("Device.SoftwareModules.DeploymentUnit.{i}.UUID"),
                "x".repeat(5000),
            ));
        }
        list.push((
            "Device.SoftwareModules.DeploymentUnit.x.UUID".into(),
            "bad".into(),
        ));
        list.push((
            "Device.SoftwareModules.ExecEnv.1.AvailableMemory".into(),
            "-5".into(),
        ));
        let inv = from_rows(&list);
        assert_eq!(inv.dus.len(), MAX_INSTANCES);
        assert!(inv.dus.iter().all(|d| d.uuid.len() == MAX_VALUE));
        assert_eq!(inv.exec_envs[0].available_kib, None);
    }
}
