//! The apps' network policy in the kernel's nftables: one table cpevisor owns
//! (`table inet cpevisor`), holding the rules of every app that runs, re-made whole on each
//! change so the rest of the ruleset (OpenWrt's firewall4, the operator's own) is never touched.
//!
//! - `render`: the rules of a set of apps as an `nft -f` script (pure; unit tests compare text).
//! - `nft`: runs the `nft` tool on a script: absolute path found once, no shell, a deadline.
//! - `conntrack`: forgets the un-NATed flows to the ports an app's new rules take.
//! - here: the set of apps whose rules are in place, the checks a new one must pass (its router
//!   ports free, the interfaces it needs configured) and the apply that keeps the set and the
//!   kernel in step.
//!
//! Why the `nft` tool and not netlink from Rust: OpenWrt's firewall4 needs it, so a router that
//! could run these rules carries it already and the agent adds nothing to flash for it (a board
//! without it: 892 KiB for nft and libnftables as Debian amd64 ships them), while a
//! netlink encoder of nftables' expressions in the agent would add code to every build, also
//! to boards that never map a port, and duplicate what the tool validates. One `nft -f` script
//! is one kernel transaction: the table is replaced whole or not at all.

pub mod conntrack;
pub mod nft;
pub mod render;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::fault::{Fault, FaultCode};
use crate::package::network::{NetworkConfig, NetworkMode, Protocol, Side};
use crate::supervise::lock;

pub use nft::Nft;
pub use render::{AppRules, Interfaces, TABLE};

/// The IP protocol number of a mapping's protocol.
fn ip_protocol(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// The interfaces `net` needs are configured (7225 otherwise: the package does not fit this
/// device).
pub fn check_interfaces(who: &str, net: &NetworkConfig, ifs: &Interfaces) -> Result<(), Fault> {
    if net.mode == NetworkMode::Bridged && ifs.lan.is_none() {
        return Err(Fault::new(
            FaultCode::DeploymentUnitToExecEnvMismatch,
            format!(
                "{who}: network mode bridged needs the router's LAN bridge, and the agent \
                 config names none (lan_interface)"
            ),
        ));
    }
    for (proto, port, side) in net.claims() {
        if ifs.of(side).is_none() {
            let what = if net.intercept_dns && port == 53 && side == Side::Lan {
                "intercept_dns".to_string()
            } else {
                format!("a port mapping ({} {port})", proto.as_str())
            };
            return Err(Fault::new(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{who}: {what} needs the router's {} interface, and the agent config names \
                     none ({}_interface)",
                    side.as_str(),
                    side.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// `net`'s router ports are not taken by any of `others` (`(who, config)` pairs): 7025 (USP
/// "Unique key conflict": TR-181's NAT.PortMapping is unique by protocol and external port)
/// naming the port and the app that holds it.
pub fn check_free<'a>(
    who: &str,
    net: &NetworkConfig,
    others: impl IntoIterator<Item = (&'a str, &'a NetworkConfig)>,
) -> Result<(), Fault> {
    let mine = net.claims();
    for (other, theirs) in others {
        for c in theirs.claims() {
            if mine.contains(&c) {
                return Err(Fault::new(
                    FaultCode::UniqueKeyConflict,
                    format!(
                        "{who}: {} port {} on the {} side is already mapped to {other}",
                        c.0.as_str(),
                        c.1,
                        c.2.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the data model shows of one EU's network (`ExecutionUnit.{i}.NetworkConfig.`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EuNetwork {
    /// The section in force: the package's, or the operator's override of it.
    pub config: NetworkConfig,
    /// The app's address, when its ExecEnv gives it a link.
    pub address: Option<String>,
    /// Whether its rules are in the kernel now.
    pub rules_active: bool,
    /// The router interface of each port mapping, in order (empty: not configured).
    #[serde(default)]
    pub interface_names: Vec<String>,
}

/// The apps whose rules are in the kernel, and the way to change them.
pub struct Netfilter {
    ifs: Interfaces,
    nft: Option<Nft>,
    applied: Mutex<BTreeMap<String, AppRules>>,
}

impl Netfilter {
    /// A set with no apps yet; `nft` None: no `nft` on this device (an app that needs rules is
    /// refused when it starts).
    pub fn new(ifs: Interfaces, nft: Option<Nft>) -> Netfilter {
        Netfilter {
            ifs,
            nft,
            applied: Mutex::new(BTreeMap::new()),
        }
    }

    /// The agent's set: its interfaces from the config, `nft` found once (`nft_path`, else
    /// [`nft::SEARCH`]). When a table of ours is in the kernel (a run that crashed) or
    /// `has_rules` (an installed package has a network section), the table is cleared now; the
    /// apps that start add their rules back.
    pub fn open(ifs: Interfaces, nft_path: Option<&Path>, has_rules: bool) -> Netfilter {
        let nft = Nft::locate(nft_path);
        let ours_in_kernel = nft
            .as_ref()
            .is_some_and(|n| n.run(&["list", "table", "inet", TABLE], "").is_ok());
        let n = Netfilter::new(ifs, nft);
        if has_rules || ours_in_kernel {
            if let Err(f) = n.reset() {
                crate::log_warn!("clearing cpevisor's nftables table: {f}");
            }
        }
        n
    }

    /// The configured interfaces.
    pub fn interfaces(&self) -> &Interfaces {
        &self.ifs
    }

    /// Makes the kernel's table match the (empty) set: what a previous run of the agent left
    /// (a crash, a power cut) goes, before the apps that run are added back one by one. Without
    /// `nft` there is nothing to clear.
    pub fn reset(&self) -> Result<(), Fault> {
        let applied = lock(&self.applied);
        match &self.nft {
            Some(nft) => nft.apply(&render::script(applied.values(), &self.ifs)),
            None => Ok(()),
        }
    }

    /// Adds (or replaces) `app`'s rules: checked against the other apps' ports and the
    /// interfaces, then the whole table applied at once; on any fault the set and the kernel
    /// stay as they were.
    pub fn add(&self, app: AppRules) -> Result<(), Fault> {
        let mut applied = lock(&self.applied);
        check_interfaces(&app.eu_id, &app.net, &self.ifs)?;
        check_free(
            &app.eu_id,
            &app.net,
            applied
                .values()
                .filter(|a| a.eu_id != app.eu_id)
                .map(|a| (a.eu_id.as_str(), &a.net)),
        )?;
        let nft = self.nft.as_ref().ok_or_else(|| {
            Fault::new(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{}: the app's network section needs nftables, and this device has no \
                     nft tool",
                    app.eu_id
                ),
            )
        })?;
        let claims: Vec<conntrack::Claim> = app
            .net
            .claims()
            .into_iter()
            .map(|(proto, port, _)| (ip_protocol(proto), port))
            .collect();
        let eu_id = app.eu_id.clone();
        let mut next = applied.clone();
        next.insert(app.eu_id.clone(), app);
        nft.apply(&render::script(next.values(), &self.ifs))?;
        *applied = next;
        // Flows to those ports tracked before the rules would keep missing them.
        match conntrack::forget_unnated(&claims) {
            Ok(0) => {}
            Ok(n) => crate::log_info!("{eu_id}: {n} earlier flows to its ports forgotten"),
            Err(e) => crate::log_warn!("{eu_id}: forgetting earlier flows to its ports: {e}"),
        }
        Ok(())
    }

    /// Removes `eu_id`'s rules (nothing when it has none). A failure is logged: the app is
    /// gone either way, and its rules go with the next apply that succeeds.
    pub fn remove(&self, eu_id: &str) {
        let mut applied = lock(&self.applied);
        if applied.remove(eu_id).is_none() {
            return;
        }
        if let Some(nft) = &self.nft {
            if let Err(f) = nft.apply(&render::script(applied.values(), &self.ifs)) {
                crate::log_error!("{eu_id}: removing its nftables rules: {f}");
            }
        }
    }

    /// Whether `eu_id`'s rules are in place.
    pub fn is_applied(&self, eu_id: &str) -> bool {
        lock(&self.applied).contains_key(eu_id)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::package::network::{PortMapping, Protocol};

    fn mapping(port: u16, side: Side) -> NetworkConfig {
        NetworkConfig {
            port_mappings: vec![PortMapping {
                protocol: Protocol::Tcp,
                external_port: port,
                internal_port: 80,
                interface: side,
            }],
            ..NetworkConfig::default()
        }
    }

    #[test]
    fn ports_are_unique_per_protocol_port_and_side() {
        let a = mapping(8080, Side::Wan);
        let f = check_free("eu-2", &a, [("eu-1", &a)]).unwrap_err();
        assert_eq!(f.code, FaultCode::UniqueKeyConflict);
        assert_eq!(
            f.message,
            "eu-2: tcp port 8080 on the wan side is already mapped to eu-1"
        );
        check_free("eu-2", &mapping(8080, Side::Lan), [("eu-1", &a)]).unwrap();
        check_free("eu-2", &mapping(8081, Side::Wan), [("eu-1", &a)]).unwrap();
        let dns = NetworkConfig {
            intercept_dns: true,
            ..NetworkConfig::default()
        };
        let f = check_free("eu-3", &dns, [("eu-1", &mapping(53, Side::Lan))]).unwrap_err();
        assert!(f.message.contains("tcp port 53 on the lan side"), "{f}");
    }

    #[test]
    fn mappings_need_their_interface() {
        let ifs = Interfaces {
            wan: Some("eth0".into()),
            lan: None,
            lan_net: None,
        };
        check_interfaces("eu-1", &mapping(1, Side::Wan), &ifs).unwrap();
        let f = check_interfaces("eu-1", &mapping(1, Side::Lan), &ifs).unwrap_err();
        assert_eq!(f.code, FaultCode::DeploymentUnitToExecEnvMismatch);
        assert!(f.message.contains("lan_interface"), "{f}");
        let dns = NetworkConfig {
            intercept_dns: true,
            ..NetworkConfig::default()
        };
        let f = check_interfaces("eu-1", &dns, &ifs).unwrap_err();
        assert!(f.message.contains("intercept_dns"), "{f}");
        let bridged = NetworkConfig {
            mode: NetworkMode::Bridged,
            ..NetworkConfig::default()
        };
        let f = check_interfaces("eu-1", &bridged, &ifs).unwrap_err();
        assert_eq!(f.code, FaultCode::DeploymentUnitToExecEnvMismatch);
        assert!(
            f.message.contains("bridged") && f.message.contains("(lan_interface)"),
            "{f}"
        );
    }

    #[test]
    fn without_nft_an_app_with_rules_is_refused_and_nothing_kept() {
        let n = Netfilter::new(Interfaces::default(), None);
        n.reset().unwrap();
        let f = n
            .add(AppRules {
                eu_id: "eu-1".into(),
                addr: Ipv4Addr::new(10, 100, 0, 6),
                net: NetworkConfig::default(),
            })
            .unwrap_err();
        assert!(f.message.contains("no nft tool"), "{f}");
        assert!(!n.is_applied("eu-1"));
        n.remove("eu-1");
    }
}
