//! `Device.SoftwareModules.`: the agent's execution environments, deployment units and
//! execution units as its snapshot has them, cross-referenced by path.

use std::collections::HashMap;

use super::model::{b, kib, DataModel};
use super::schema::{ObjDesc, DEVICE};
use super::tree::{Seg, TreeBuilder};
use crate::lifecycle::Snapshot;
use crate::model::HealthStatus;
use crate::netfilter::EuNetwork;
use crate::package::network::EgressProtocol;

impl DataModel {
    /// Adds `Device.SoftwareModules.` and its tables under `dev`, from `snap`.
    pub(super) fn software_modules(&mut self, t: &mut TreeBuilder, dev: &[Seg], snap: &Snapshot) {
        let sm_desc = DEVICE.child("SoftwareModules").expect("schema");
        let sm = t.object(
            Some(dev),
            sm_desc,
            vec![
                ("ExecEnvNumberOfEntries", snap.exec_envs.len().to_string()),
                (
                    "DeploymentUnitNumberOfEntries",
                    snap.deployment_units.len().to_string(),
                ),
                (
                    "ExecutionUnitNumberOfEntries",
                    snap.execution_units.len().to_string(),
                ),
            ],
        );
        let env_ref: HashMap<String, String> = snap
            .exec_envs
            .iter()
            .map(|e| {
                let n = self.store.number("ExecEnv", &e.name);
                (
                    e.name.clone(),
                    format!("Device.SoftwareModules.ExecEnv.{n}"),
                )
            })
            .collect();
        let eu_ref: HashMap<String, String> = snap
            .execution_units
            .iter()
            .map(|e| {
                let n = self.store.number("ExecutionUnit", &e.eu_id);
                (
                    e.eu_id.clone(),
                    format!("Device.SoftwareModules.ExecutionUnit.{n}"),
                )
            })
            .collect();
        let refs = |ids: &mut dyn Iterator<Item = &String>| {
            ids.filter_map(|id| eu_ref.get(id).cloned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let e_desc = sm_desc.child("ExecEnv").expect("schema");
        let et = t.table(&sm, e_desc);
        for e in &snap.exec_envs {
            let n = self.store.number("ExecEnv", &e.name);
            let active = snap
                .execution_units
                .iter()
                .filter(|u| u.exec_env == e.name && u.status == crate::model::EuStatus::Active)
                .map(|u| &u.eu_id);
            t.instance(
                &et,
                e_desc,
                n,
                &e.name,
                vec![
                    ("Enable", b(e.enable)),
                    ("Status", format!("{:?}", e.status)),
                    ("Name", e.name.clone()),
                    ("Type", e.env_type.as_str().to_string()),
                    ("AllocatedDiskSpace", kib(e.allocated_disk_kib)),
                    ("AvailableDiskSpace", kib(e.available_disk_kib)),
                    (
                        "AllocatedMemory",
                        kib(u64::from(e.memory_budget_mib) * 1024),
                    ),
                    (
                        "AvailableMemory",
                        kib(u64::from(e.available_memory_mib) * 1024),
                    ),
                    ("ActiveExecutionUnits", refs(&mut { active })),
                    ("X_CPEVISOR_Architecture", e.arch.clone()),
                ],
            );
        }
        let d_desc = sm_desc.child("DeploymentUnit").expect("schema");
        let dt = t.table(&sm, d_desc);
        for d in &snap.deployment_units {
            let n = self.store.number("DeploymentUnit", &d.uuid);
            self.du_eus
                .insert(d.uuid.clone(), d.execution_unit_list.clone());
            t.instance(
                &dt,
                d_desc,
                n,
                &d.uuid,
                vec![
                    ("UUID", d.uuid.clone()),
                    ("DUID", d.uuid.clone()),
                    ("Name", d.name.clone()),
                    ("Status", format!("{:?}", d.status)),
                    ("Resolved", b(d.resolved)),
                    ("URL", d.url.clone()),
                    ("Description", d.description.clone()),
                    ("Vendor", d.vendor.clone()),
                    ("Version", d.version.clone()),
                    ("ExecutionUnitList", refs(&mut d.execution_unit_list.iter())),
                    (
                        "ExecutionEnvRef",
                        env_ref.get(&d.exec_env).cloned().unwrap_or_default(),
                    ),
                ],
            );
        }
        let u_desc = sm_desc.child("ExecutionUnit").expect("schema");
        let ut = t.table(&sm, u_desc);
        for u in &snap.execution_units {
            let n = self.store.number("ExecutionUnit", &u.eu_id);
            let mut inst = ut.clone();
            inst.push(Seg::Inst(n));
            let du = snap.deployment_units.iter().find(|d| d.uuid == u.du_uuid);
            t.instance(
                &ut,
                u_desc,
                n,
                &u.eu_id,
                vec![
                    ("EUID", u.eu_id.clone()),
                    ("Name", u.name.clone()),
                    ("ExecEnvLabel", u.eu_id.clone()),
                    ("Status", format!("{:?}", u.status)),
                    ("RequestedState", format!("{:?}", u.requested_state)),
                    (
                        "ExecutionFaultCode",
                        format!("{:?}", u.execution_fault_code),
                    ),
                    ("ExecutionFaultMessage", u.execution_fault_message.clone()),
                    ("AutoStart", b(u.auto_start)),
                    ("RunLevel", u.run_level.to_string()),
                    ("Vendor", du.map(|d| d.vendor.clone()).unwrap_or_default()),
                    ("Version", du.map(|d| d.version.clone()).unwrap_or_default()),
                    (
                        "Description",
                        du.map(|d| d.description.clone()).unwrap_or_default(),
                    ),
                    // TR-181: -1 where it does not apply (a package that declares no flash).
                    (
                        "AllocatedDiskSpace",
                        u.allocated_disk_kib.map_or("-1".into(), kib),
                    ),
                    ("DiskSpaceInUse", kib(u.disk_in_use)),
                    ("MemoryInUse", kib(u.memory_in_use)),
                    (
                        "ExecutionEnvRef",
                        env_ref.get(&u.exec_env).cloned().unwrap_or_default(),
                    ),
                    (
                        "X_CPEVISOR_HealthStatus",
                        HealthStatus::dm_status(&u.health),
                    ),
                    (
                        "X_CPEVISOR_HealthLastCheck",
                        HealthStatus::dm_time(&u.health),
                    ),
                    (
                        "X_CPEVISOR_HealthMessage",
                        HealthStatus::dm_message(&u.health),
                    ),
                ],
            );
            network_config(t, &inst, u_desc, snap.eu_networks.get(&u.eu_id));
        }
    }
}

/// `ExecutionUnit.{i}.NetworkConfig.` and its port mappings under the EU instance `inst`.
fn network_config(
    t: &mut TreeBuilder,
    inst: &[Seg],
    u_desc: &'static ObjDesc,
    net: Option<&EuNetwork>,
) {
    let n_desc = u_desc.child("NetworkConfig").expect("schema");
    let m_desc = n_desc.child("X_CPEVISOR_PortMapping").expect("schema");
    let Some(net) = net else {
        let nc = t.object(
            Some(inst),
            n_desc,
            vec![
                ("X_CPEVISOR_InterceptDNS", b(false)),
                ("X_CPEVISOR_RulesActive", b(false)),
                ("X_CPEVISOR_PortMappingNumberOfEntries", "0".to_string()),
            ],
        );
        t.table(&nc, m_desc);
        return;
    };
    let c = &net.config;
    let egress: Vec<String> = c
        .egress
        .iter()
        .flatten()
        .map(|r| {
            let proto = match r.protocol {
                EgressProtocol::Any => "any",
                EgressProtocol::Tcp => "tcp",
                EgressProtocol::Udp => "udp",
            };
            let mut s = format!("{proto} {}", r.destination);
            for p in &r.ports {
                s.push_str(&format!(" {p}"));
            }
            s
        })
        .collect();
    let nc = t.object(
        Some(inst),
        n_desc,
        vec![
            ("X_CPEVISOR_Mode", c.mode.as_str().to_string()),
            (
                "X_CPEVISOR_Address",
                net.address.clone().unwrap_or_default(),
            ),
            ("X_CPEVISOR_Egress", egress.join(",")),
            ("X_CPEVISOR_InterceptDNS", b(c.intercept_dns)),
            // 0 when the app does not take the LAN's DNS.
            (
                "X_CPEVISOR_DNSPort",
                if c.intercept_dns { c.dns_port() } else { 0 }.to_string(),
            ),
            ("X_CPEVISOR_RulesActive", b(net.rules_active)),
            (
                "X_CPEVISOR_PortMappingNumberOfEntries",
                c.port_mappings.len().to_string(),
            ),
        ],
    );
    let mt = t.table(&nc, m_desc);
    for (i, m) in c.port_mappings.iter().enumerate() {
        let key = format!("{}:{}", m.protocol.as_str(), m.external_port);
        t.instance(
            &mt,
            m_desc,
            i as u32 + 1,
            &key,
            vec![
                ("Protocol", m.protocol.as_str().to_ascii_uppercase()),
                ("ExternalPort", m.external_port.to_string()),
                ("InternalPort", m.internal_port.to_string()),
                ("X_CPEVISOR_Side", m.interface.as_str().to_string()),
                (
                    "X_CPEVISOR_InterfaceName",
                    net.interface_names.get(i).cloned().unwrap_or_default(),
                ),
            ],
        );
    }
}
