//! The LAN addresses of bridged apps (`network.mode` `bridged`): a pool from the agent config
//! (`lan_app_range`), one address per EU, kept in `state.json` (`lan_addresses`) so an app
//! keeps its address across restarts, reboots and updates (the LAN's clients and its DNS
//! names point at it). An EU gets the address it held before when no other bridged app holds
//! it now, else the lowest free one; admission refuses a bridged package when every address
//! is held (7227), so an admitted app always finds one.

use std::net::Ipv4Addr;

use super::state::PersistedState;
use crate::fault::{Fault, FaultCode};
use crate::package::network::NetworkMode;
pub use crate::supervise::net::LanPool;

/// Whether `eu_id` is an EU of a bridged DU in `s`.
fn is_bridged(s: &PersistedState, eu_id: &str) -> bool {
    let Some(eu) = s.eus.iter().find(|e| e.eu_id == eu_id) else {
        return false;
    };
    s.dus.iter().any(|r| {
        r.du.uuid == eu.du_uuid
            && r.spec
                .network
                .as_ref()
                .is_some_and(|n| n.mode == NetworkMode::Bridged)
    })
}

/// The EUs of bridged DUs other than `except`'s (the DU being updated).
pub fn bridged_eus<'a>(s: &'a PersistedState, except: Option<&'a str>) -> Vec<&'a str> {
    s.eus
        .iter()
        .filter(|e| except != Some(e.du_uuid.as_str()))
        .filter(|e| is_bridged(s, &e.eu_id))
        .map(|e| e.eu_id.as_str())
        .collect()
}

/// The fault of a full pool (7227), naming it and who holds it.
pub fn full(pool: &LanPool, holders: &[&str]) -> Fault {
    Fault::new(
        FaultCode::SystemResourcesExceeded,
        format!(
            "the LAN address pool for bridged apps (lan_app_range {}, {} addresses) is full: \
             held by {}",
            pool.range(),
            pool.size(),
            holders.join(", ")
        ),
    )
}

/// Drops the addresses of EUs that are gone (uninstalled).
pub fn prune(s: &mut PersistedState) {
    let eus: Vec<String> = s.eus.iter().map(|e| e.eu_id.clone()).collect();
    s.lan_addresses.retain(|eu, _| eus.contains(eu));
}

/// The address of bridged EU `eu_id`: the one it held, when no other bridged EU holds it now
/// and it is still in the pool, else the lowest free one, recorded in `s` (the caller saves
/// it). 7227 when every address is held.
pub fn assign(s: &mut PersistedState, pool: &LanPool, eu_id: &str) -> Result<Ipv4Addr, Fault> {
    prune(s);
    let others: Vec<(String, Ipv4Addr)> = s
        .lan_addresses
        .iter()
        .filter(|(eu, _)| eu.as_str() != eu_id && is_bridged(s, eu))
        .map(|(eu, a)| (eu.clone(), *a))
        .collect();
    let free = |a: Ipv4Addr| pool.contains(a) && !others.iter().any(|(_, b)| *b == a);
    if let Some(a) = s.lan_addresses.get(eu_id).copied().filter(|a| free(*a)) {
        return Ok(a);
    }
    let a = (u32::from(pool.first)..=u32::from(pool.last))
        .map(Ipv4Addr::from)
        .find(|a| free(*a))
        .ok_or_else(|| {
            let holders: Vec<&str> = others.iter().map(|(eu, _)| eu.as_str()).collect();
            full(pool, &holders)
        })?;
    s.lan_addresses.insert(eu_id.to_string(), a);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::new_eu;
    use crate::lifecycle::packages::{AppSpec, InstalledFiles};
    use crate::lifecycle::state::DuRecord;
    use crate::model::{DeploymentUnit, DuStatus};
    use crate::package::config::AppConfig;

    fn pool(last: u8) -> LanPool {
        LanPool {
            bridge: "br-lan".into(),
            router: Ipv4Addr::new(192, 168, 1, 1),
            prefix: 24,
            first: Ipv4Addr::new(192, 168, 1, 200),
            last: Ipv4Addr::new(192, 168, 1, last),
        }
    }

    /// A state with one DU per `(eu number, bridged)`.
    fn state(apps: &[(u32, bool)]) -> PersistedState {
        let mut s = PersistedState::default();
        for (n, bridged) in apps {
            let uuid = format!("du-{n}");
            let mut c = serde_json::json!({
                "name": uuid, "version": "1.0", "vendor": "t", "arch": "x86_64",
                "backends": ["jail"], "memory_mib": 8, "vcpus": 1, "command": ["/bin/true"]
            });
            if *bridged {
                c["network"] = serde_json::json!({"mode": "bridged"});
            }
            let c: AppConfig = serde_json::from_value(c).unwrap();
            let spec = AppSpec::from_config(&c);
            let du = DeploymentUnit {
                uuid: uuid.clone(),
                name: uuid.clone(),
                version: "1.0".into(),
                vendor: "t".into(),
                description: String::new(),
                url: String::new(),
                status: DuStatus::Installed,
                resolved: true,
                exec_env: "jail0".into(),
                execution_unit_list: vec![format!("eu-{n}")],
                manifest_digest: String::new(),
            };
            s.eus.push(new_eu(&format!("eu-{n}"), &du, &spec));
            s.dus.push(DuRecord {
                du,
                spec,
                files: InstalledFiles {
                    app_id: uuid.clone(),
                    app_dir: "/apps/x".into(),
                    kernel: None,
                    initrd: None,
                    rootfs: None,
                    rootfs_image: None,
                    rootfs_erofs: None,
                    disk: None,
                    blobs: Vec::new(),
                },
                network_override: None,
            });
        }
        s
    }

    #[test]
    fn addresses_are_distinct_stable_and_bounded() {
        let p = pool(201);
        assert_eq!(p.size(), 2);
        let mut s = state(&[(1, true), (2, true), (3, true), (4, false)]);
        let a1 = assign(&mut s, &p, "eu-1").unwrap();
        let a2 = assign(&mut s, &p, "eu-2").unwrap();
        assert_eq!(a1, Ipv4Addr::new(192, 168, 1, 200));
        assert_eq!(a2, Ipv4Addr::new(192, 168, 1, 201));
        // Asked again (a restart): the same.
        assert_eq!(assign(&mut s, &p, "eu-2").unwrap(), a2);
        // Full: the fault names the pool and the holders, nothing recorded.
        let before = s.clone();
        let f = assign(&mut s, &p, "eu-3").unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded);
        assert!(
            f.message
                .contains("lan_app_range 192.168.1.200-192.168.1.201"),
            "{f}"
        );
        assert!(f.message.contains("held by eu-1, eu-2"), "{f}");
        assert_eq!(s, before);
        assert_eq!(bridged_eus(&s, None), ["eu-1", "eu-2", "eu-3"]);
        assert_eq!(bridged_eus(&s, Some("du-1")), ["eu-2", "eu-3"]);

        // eu-1 uninstalled: its address is free again, and eu-2 keeps its own.
        s.eus.retain(|e| e.eu_id != "eu-1");
        s.dus.retain(|r| r.du.uuid != "du-1");
        assert_eq!(assign(&mut s, &p, "eu-3").unwrap(), a1);
        assert_eq!(assign(&mut s, &p, "eu-2").unwrap(), a2);
        assert!(!s.lan_addresses.contains_key("eu-1"));
    }

    #[test]
    fn an_address_held_by_a_non_bridged_eu_is_free_for_others() {
        let p = pool(200);
        let mut s = state(&[(1, false), (2, true)]);
        // eu-1 was bridged once (an update made it nat): its old entry does not hold the pool.
        s.lan_addresses
            .insert("eu-1".into(), Ipv4Addr::new(192, 168, 1, 200));
        assert_eq!(
            assign(&mut s, &p, "eu-2").unwrap(),
            Ipv4Addr::new(192, 168, 1, 200)
        );
        // An address outside the pool (the config changed) is replaced.
        let mut s = state(&[(1, true)]);
        s.lan_addresses
            .insert("eu-1".into(), Ipv4Addr::new(192, 168, 1, 50));
        assert_eq!(
            assign(&mut s, &p, "eu-1").unwrap(),
            Ipv4Addr::new(192, 168, 1, 200)
        );
    }
}
