//! The `nft -f` script for a set of apps: pure text, compared by the unit tests.
//!
//! The script first makes sure the table exists, deletes it, and creates it again with every
//! app's rules: one transaction, so the kernel holds either the old table or the new one, and no
//! other table is named. With no rules to hold, the table is deleted and not re-created, so a
//! device whose apps need none has exactly the ruleset it had before cpevisor.
//!
//! Per app (its address `A`, its comment its EUID):
//! - dstnat (prerouting): each mapping `iifname <side> fib daddr type local <proto> dport <ext>
//!   dnat to A:<int>` (only traffic addressed to the router itself, so a LAN client's
//!   connections to the internet on the same port are not taken); `intercept_dns`: the same
//!   for udp and tcp 53 from the LAN side, except the app's own queries. The chain runs before
//!   firewall4's (`dstnat - 10`) so the app's mapping wins over a redirect of the same port.
//! - forward: `egress` present or absent: replies (`ct state established,related`) pass, each
//!   allowed destination passes, the rest from `A` is dropped; mode none: everything from and to
//!   `A` is dropped.
//! - srcnat (postrouting): masquerade of `A` out of the WAN interface when it has egress rules.
//!
//! A bridged app (`A` a LAN address) gets the same rules: its mappings and egress policy act on
//! what the router routes for it (to and from the WAN); what it exchanges with the LAN's other
//! devices is bridged, not routed, and passes none of these hooks. Its masquerade out of the WAN
//! is the one the LAN's devices get from firewall4 anyway, made here so a board without it works
//! the same. One more: with `intercept_dns`, a LAN client's query DNAT'd to `A` would be
//! answered straight from `A` across the bridge, and the client, which asked the router,
//! drops it; so queries from the LAN subnet DNAT'd to `A` are masqueraded to the router's
//! address (`oifname <lan> ip saddr <LAN> ip daddr A ct status dnat masquerade`), and the answer
//! comes back through the router.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::package::network::{Cidr, EgressProtocol, NetworkConfig, NetworkMode, Side};

/// The name of the table cpevisor owns (family inet).
pub const TABLE: &str = "cpevisor";

/// The router's interfaces, from the agent config; None: not configured, and no mapping can
/// listen on that side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// The internet side (`wan_interface`).
    pub wan: Option<String>,
    /// The home side (`lan_interface`).
    pub lan: Option<String>,
    /// The LAN's subnet (from `lan_address`): where intercepted queries to a bridged app come
    /// from.
    pub lan_net: Option<Cidr>,
}

impl Interfaces {
    /// The interface name of `side`, if configured.
    pub fn of(&self, side: Side) -> Option<&str> {
        match side {
            Side::Wan => self.wan.as_deref(),
            Side::Lan => self.lan.as_deref(),
        }
    }
}

/// One app's rules: its address and its network section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRules {
    /// The app's EUID (the rules' comment, the key of the set).
    pub eu_id: String,
    /// The app's own address (its end of the link).
    pub addr: Ipv4Addr,
    /// What its package asks for.
    pub net: NetworkConfig,
}

/// The `nft -f` script that replaces cpevisor's table with the rules of `apps`.
pub fn script<'a>(apps: impl IntoIterator<Item = &'a AppRules>, ifs: &Interfaces) -> String {
    let (mut dstnat, mut forward, mut srcnat) = (Vec::new(), Vec::new(), Vec::new());
    for app in apps {
        rules_of(app, ifs, &mut dstnat, &mut forward, &mut srcnat);
    }
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if dstnat.is_empty() && forward.is_empty() && srcnat.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table inet {TABLE} {{");
    let chains = [
        (
            "dstnat",
            "type nat hook prerouting priority dstnat - 10; policy accept;",
            dstnat,
        ),
        (
            "forward",
            "type filter hook forward priority filter; policy accept;",
            forward,
        ),
        (
            "srcnat",
            "type nat hook postrouting priority srcnat; policy accept;",
            srcnat,
        ),
    ];
    for (name, head, rules) in chains {
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\tchain {name} {{\n\t\t{head}");
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        let _ = writeln!(s, "\t}}");
    }
    s.push_str("}\n");
    s
}

fn rules_of(
    app: &AppRules,
    ifs: &Interfaces,
    dstnat: &mut Vec<String>,
    forward: &mut Vec<String>,
    srcnat: &mut Vec<String>,
) {
    let (a, id) = (app.addr, &app.eu_id);
    let net = &app.net;
    if net.mode == NetworkMode::None {
        forward.push(format!("ip saddr {a} drop comment \"{id}\""));
        forward.push(format!("ip daddr {a} drop comment \"{id}\""));
        return;
    }
    for m in &net.port_mappings {
        // Checked before: a mapping whose side is not configured never gets here.
        let Some(ifname) = ifs.of(m.interface) else {
            continue;
        };
        dstnat.push(format!(
            "iifname \"{ifname}\" fib daddr type local {p} dport {e} dnat ip to {a}:{i} comment \"{id}\"",
            p = m.protocol.as_str(),
            e = m.external_port,
            i = m.internal_port,
        ));
    }
    if net.intercept_dns {
        if let Some(lan) = &ifs.lan {
            let port = net.dns_port();
            for p in ["udp", "tcp"] {
                dstnat.push(format!(
                    "iifname \"{lan}\" ip saddr != {a} fib daddr type local {p} dport 53 dnat ip to {a}:{port} comment \"{id} dns\""
                ));
            }
        }
    }
    forward.push(format!(
        "ip saddr {a} ct state established,related accept comment \"{id}\""
    ));
    let egress = net.egress.as_deref().unwrap_or_default();
    for r in egress {
        // Validated with the package: a bad CIDR never gets here.
        let Ok(dst) = Cidr::parse(&r.destination) else {
            continue;
        };
        let mut rule = format!("ip saddr {a}");
        if dst.len > 0 {
            let _ = write!(rule, " ip daddr {dst}");
        }
        match (r.protocol, r.ports.as_slice()) {
            (EgressProtocol::Any, _) => {}
            (p, []) => {
                let _ = write!(rule, " meta l4proto {}", proto(p));
            }
            (p, ports) => {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                let _ = write!(rule, " {} dport {{ {} }}", proto(p), list.join(", "));
            }
        }
        let _ = write!(rule, " accept comment \"{id}\"");
        forward.push(rule);
    }
    forward.push(format!("ip saddr {a} drop comment \"{id}\""));
    if let (false, Some(wan)) = (egress.is_empty(), &ifs.wan) {
        srcnat.push(format!(
            "oifname \"{wan}\" ip saddr {a} masquerade comment \"{id}\""
        ));
    }
    if let (NetworkMode::Bridged, true, Some(lan), Some(lan_net)) =
        (net.mode, net.intercept_dns, &ifs.lan, ifs.lan_net)
    {
        srcnat.push(format!(
            "oifname \"{lan}\" ip saddr {lan_net} ip daddr {a} ct status dnat masquerade comment \"{id} dns hairpin\""
        ));
    }
}

fn proto(p: EgressProtocol) -> &'static str {
    match p {
        EgressProtocol::Tcp => "tcp",
        EgressProtocol::Udp => "udp",
        EgressProtocol::Any => "ip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(eu: &str, last: u8, net: serde_json::Value) -> AppRules {
        AppRules {
            eu_id: eu.into(),
            addr: Ipv4Addr::new(10, 100, 0, last),
            net: serde_json::from_value::<NetworkConfig>(net).unwrap(),
        }
    }

    fn ifs() -> Interfaces {
        Interfaces {
            wan: Some("wan0".into()),
            lan: Some("br-lan".into()),
            lan_net: Some(Cidr::parse("192.168.1.0/24").unwrap()),
        }
    }

    #[test]
    fn a_bridged_app_gets_its_rules_on_its_lan_address_and_the_dns_hairpin() {
        let mut a = app(
            "eu-7",
            0,
            serde_json::json!({
                "mode": "bridged", "intercept_dns": true, "dns_port": 1053,
                "port_mappings": [{"protocol": "tcp", "external_port": 8080,
                                   "internal_port": 80, "interface": "wan"}],
                "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
            }),
        );
        a.addr = Ipv4Addr::new(192, 168, 1, 200);
        let s = script([&a], &ifs());
        for want in [
            "iifname \"wan0\" fib daddr type local tcp dport 8080 dnat ip to 192.168.1.200:80 comment \"eu-7\"",
            "iifname \"br-lan\" ip saddr != 192.168.1.200 fib daddr type local udp dport 53 dnat ip to 192.168.1.200:1053",
            "ip saddr 192.168.1.200 udp dport { 53 } accept comment \"eu-7\"",
            "ip saddr 192.168.1.200 drop comment \"eu-7\"",
            "oifname \"wan0\" ip saddr 192.168.1.200 masquerade comment \"eu-7\"",
            "oifname \"br-lan\" ip saddr 192.168.1.0/24 ip daddr 192.168.1.200 ct status dnat masquerade comment \"eu-7 dns hairpin\"",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        // A nat app's LAN clients are routed to it: no hairpin.
        a.net.mode = NetworkMode::Nat;
        assert!(!script([&a], &ifs()).contains("hairpin"));
    }

    #[test]
    fn no_apps_deletes_the_table_only() {
        assert_eq!(
            script([], &ifs()),
            "table inet cpevisor\ndelete table inet cpevisor\n"
        );
    }

    #[test]
    fn intercepted_dns_goes_to_the_apps_own_port() {
        let a = app(
            "eu-3",
            14,
            serde_json::json!({"intercept_dns": true, "dns_port": 1053}),
        );
        let s = script([&a], &ifs());
        for p in ["udp", "tcp"] {
            assert!(
                s.contains(&format!("{p} dport 53 dnat ip to 10.100.0.14:1053 comment")),
                "{s}"
            );
        }
    }

    #[test]
    fn two_apps() {
        let a = app(
            "eu-1",
            6,
            serde_json::json!({
                "port_mappings": [{"protocol": "tcp", "external_port": 8080,
                                   "internal_port": 80, "interface": "wan"}],
                "intercept_dns": true,
                "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53, 853]},
                           {"destination": "192.0.2.0/24"}]
            }),
        );
        let b = app("eu-2", 10, serde_json::json!({"mode": "none"}));
        let want = "\
table inet cpevisor
delete table inet cpevisor
table inet cpevisor {
\tchain dstnat {
\t\ttype nat hook prerouting priority dstnat - 10; policy accept;
\t\tiifname \"wan0\" fib daddr type local tcp dport 8080 dnat ip to 10.100.0.6:80 comment \"eu-1\"
\t\tiifname \"br-lan\" ip saddr != 10.100.0.6 fib daddr type local udp dport 53 dnat ip to 10.100.0.6:53 comment \"eu-1 dns\"
\t\tiifname \"br-lan\" ip saddr != 10.100.0.6 fib daddr type local tcp dport 53 dnat ip to 10.100.0.6:53 comment \"eu-1 dns\"
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 10.100.0.6 ct state established,related accept comment \"eu-1\"
\t\tip saddr 10.100.0.6 udp dport { 53, 853 } accept comment \"eu-1\"
\t\tip saddr 10.100.0.6 ip daddr 192.0.2.0/24 accept comment \"eu-1\"
\t\tip saddr 10.100.0.6 drop comment \"eu-1\"
\t\tip saddr 10.100.0.10 drop comment \"eu-2\"
\t\tip daddr 10.100.0.10 drop comment \"eu-2\"
\t}
\tchain srcnat {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname \"wan0\" ip saddr 10.100.0.6 masquerade comment \"eu-1\"
\t}
}
";
        assert_eq!(script([&a, &b], &ifs()), want);
    }

    #[test]
    fn default_egress_is_replies_only() {
        let a = app("eu-3", 14, serde_json::json!({}));
        let s = script([&a], &ifs());
        assert!(!s.contains("dstnat") && !s.contains("masquerade"), "{s}");
        assert!(s.contains(
            "\t\tip saddr 10.100.0.14 ct state established,related accept comment \"eu-3\"\n\
             \t\tip saddr 10.100.0.14 drop comment \"eu-3\"\n"
        ));
        let tcp = app(
            "eu-4",
            18,
            serde_json::json!({"egress": [{"destination": "10.0.0.0/8", "protocol": "tcp"}]}),
        );
        assert!(script([&tcp], &ifs())
            .contains("ip saddr 10.100.0.18 ip daddr 10.0.0.0/8 meta l4proto tcp accept"));
    }
}
