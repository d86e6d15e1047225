//! The apps' network rules in the lifecycle: admitted with the package (its router ports free
//! among the installed DUs, the interfaces it needs configured), put in place when its EU
//! starts, removed when it stops or is uninstalled, cleared when the agent starts (what a crash
//! left) and stops, so the rules in the kernel are always those of the apps that run.

use std::collections::BTreeMap;

use super::config::ExecEnvConfig;
use super::lanpool::{self, LanPool};
use super::packages::AppSpec;
use super::state::{DuRecord, PersistedState};
use super::{Agent, OpResult};
use crate::fault::{Fault, FaultCode};
use crate::netfilter::{check_free, check_interfaces, AppRules, EuNetwork};
use crate::package::network::{NetworkArg, NetworkConfig, NetworkMode};
use crate::supervise::lock;
use crate::supervise::net::LanLink;

/// The override in force after an operation given `arg` (None: not given), `before` the one in
/// force until now (an install has none): a new value replaces it, `null` drops it, no
/// argument keeps it.
pub(super) fn override_after(
    arg: Option<&NetworkArg>,
    before: Option<&NetworkConfig>,
) -> Option<NetworkConfig> {
    match arg {
        None => before.cloned(),
        Some(NetworkArg::Package) => None,
        Some(NetworkArg::Operator(c)) => Some(c.clone()),
    }
}

/// `spec` as the DU runs it: its network section replaced by the operator's override, if any.
pub(super) fn effective_spec(spec: &AppSpec, over: Option<&NetworkConfig>) -> AppSpec {
    let mut spec = spec.clone();
    if let Some(c) = over {
        spec.network = Some(c.clone());
    }
    spec
}

fn is_bridged(spec: &AppSpec) -> bool {
    spec.network
        .as_ref()
        .is_some_and(|n| n.mode == NetworkMode::Bridged)
}

impl Agent {
    /// A package's network section against the device (7225: an interface it needs is not
    /// configured, or its ExecEnv gives apps no link to map to) and against the other installed
    /// DUs, `except` the one being updated (7025: a router port another DU maps). Run under the
    /// model lock where the install commits, so two installs cannot both take one port.
    pub(super) fn net_admit(
        &self,
        s: &PersistedState,
        spec: &AppSpec,
        env: &ExecEnvConfig,
        except: Option<&str>,
    ) -> OpResult<()> {
        let Some(net) = &spec.network else {
            return Ok(());
        };
        net.validate()?;
        check_interfaces(&spec.name, net, self.netfilter.interfaces())?;
        if net.mode == NetworkMode::Bridged {
            // An address for it among those the other bridged apps leave (an updated DU keeps
            // its own).
            let pool = self.lan_pool_for(&spec.name)?;
            let holders = lanpool::bridged_eus(s, except);
            if holders.len() as u64 >= u64::from(pool.size()) {
                return Err(lanpool::full(&pool, &holders));
            }
        } else if !net.claims().is_empty() && env.app_network.is_none() {
            return Err(Fault::new(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{}: its port mappings need an app link, and ExecEnv {} has no app_network",
                    spec.name, env.name
                ),
            ));
        }
        check_free(
            &spec.name,
            net,
            s.dus
                .iter()
                .filter(|r| except != Some(r.du.uuid.as_str()))
                .filter_map(|r| Some((r.du.name.as_str(), r.spec.network.as_ref()?))),
        )
    }

    /// The pool bridged apps' addresses come from, or why there is none (7225).
    fn lan_pool_for(&self, who: &str) -> Result<LanPool, Fault> {
        match self.cfg.lan_pool() {
            Ok(Some(pool)) => Ok(pool),
            _ => Err(Fault::new(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{who}: network mode bridged needs LAN addresses for apps, and the agent \
                     config sets none aside (lan_app_range, with lan_address)"
                ),
            )),
        }
    }

    /// Gives EU `eu_id` of `spec` its LAN address in `s` when it is bridged (an install or an
    /// update about to commit `s`); 7227 when the pool is full.
    pub(super) fn lan_assign(
        &self,
        s: &mut PersistedState,
        spec: &AppSpec,
        eu_id: &str,
    ) -> Result<(), Fault> {
        if is_bridged(spec) {
            lanpool::assign(s, &self.lan_pool_for(eu_id)?, eu_id)?;
        }
        Ok(())
    }

    /// A bridged app's place on the LAN, its address the one it holds (recorded now if it held
    /// none: an install from before the pool); None for the other modes.
    pub(super) fn lan_link(&self, rec: &DuRecord, eu_id: &str) -> Result<Option<LanLink>, Fault> {
        if !is_bridged(&rec.spec) {
            return Ok(None);
        }
        let pool = self.lan_pool_for(eu_id)?;
        let mut m = lock(&self.shared.model);
        let before = m.persisted.lan_addresses.clone();
        let addr = lanpool::assign(&mut m.persisted, &pool, eu_id)?;
        if m.persisted.lan_addresses != before {
            if let Err(f) = self.files.save_state(&m.persisted) {
                m.persisted.lan_addresses = before;
                return Err(f);
            }
        }
        Ok(Some(pool.link(addr)))
    }

    /// Puts the rules of `rec`'s EU `eu_id` in place (none without a network section, or
    /// without a link to apply them to); `lan`: the EU's place on the LAN when bridged.
    pub(super) fn net_start(
        &self,
        rec: &DuRecord,
        eu_id: &str,
        env: &str,
        lan: Option<&LanLink>,
    ) -> Result<(), Fault> {
        let Some(rules) = self.app_rules(rec, eu_id, env, lan)? else {
            return Ok(());
        };
        self.netfilter.add(rules)
    }

    /// Removes `eu_id`'s rules, if it has any.
    pub(super) fn net_stop(&self, eu_id: &str) {
        self.netfilter.remove(eu_id);
    }

    fn app_rules(
        &self,
        rec: &DuRecord,
        eu_id: &str,
        env: &str,
        lan: Option<&LanLink>,
    ) -> Result<Option<AppRules>, Fault> {
        let Some(net) = &rec.spec.network else {
            return Ok(None);
        };
        let Some(addr) = lan.map(|l| l.addr).or_else(|| self.app_addr(eu_id, env)) else {
            if net.claims().is_empty() {
                // No link: nothing reaches the app and it reaches nothing.
                return Ok(None);
            }
            return Err(Fault::new(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!("{eu_id}: its port mappings need an app link, and ExecEnv {env} has none"),
            ));
        };
        Ok(Some(AppRules {
            eu_id: eu_id.to_string(),
            addr,
            net: net.clone(),
        }))
    }

    /// The app's end of its link: the same address both backends give it.
    fn app_addr(&self, eu_id: &str, env: &str) -> Option<std::net::Ipv4Addr> {
        let cfg = self.cfg.exec_envs.iter().find(|e| e.name == env)?;
        let base = crate::supervise::net::parse_network(cfg.app_network.as_deref()?).ok()?;
        Some(crate::supervise::net::plan(base, eu_id).ok()?.guest_ip)
    }

    /// Every EU's network as the data model shows it.
    pub(super) fn eu_networks(&self, s: &PersistedState) -> BTreeMap<String, EuNetwork> {
        let mut out = BTreeMap::new();
        for eu in &s.eus {
            let Some(rec) = s.dus.iter().find(|r| r.du.uuid == eu.du_uuid) else {
                continue;
            };
            let Some(net) = &rec.spec.network else {
                continue;
            };
            out.insert(
                eu.eu_id.clone(),
                EuNetwork {
                    config: net.clone(),
                    address: match net.mode {
                        NetworkMode::Bridged => s.lan_addresses.get(&eu.eu_id).copied(),
                        _ => self.app_addr(&eu.eu_id, &eu.exec_env),
                    }
                    .map(|a| a.to_string()),
                    rules_active: self.netfilter.is_applied(&eu.eu_id),
                    interface_names: net
                        .port_mappings
                        .iter()
                        .map(|m| {
                            let ifs = self.netfilter.interfaces();
                            ifs.of(m.interface).unwrap_or_default().to_string()
                        })
                        .collect(),
                },
            );
        }
        out
    }
}
