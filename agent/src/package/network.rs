//! An app's network section in its config (`network`): how the router reaches the app and what
//! the app may reach. Names follow TR-181 2.17 where it has them: `NetworkConfig` of
//! `ExecutionUnit.{i}`, whose port mappings are NAT `PortMapping`s (`Protocol`, `ExternalPort`,
//! `InternalPort`, `Interface`). The agent turns it into nftables rules (`crate::netfilter`).
//! A package without the section keeps today's behaviour: a link, and no rules at all.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultCode};

/// How the app is attached (`network.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Private address behind the router's NAT: what every app link already is.
    #[default]
    Nat,
    /// No traffic through the router at all (the link stays for the agent's own probes).
    None,
    /// On the LAN bridge with a LAN address of its own, like any device of the home: from the
    /// agent's `lan_app_range`, the router's LAN address its gateway.
    Bridged,
}

impl NetworkMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::None => "none",
            NetworkMode::Bridged => "bridged",
        }
    }
}

/// A transport protocol of a mapping or an egress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The config (and nft) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Which side of the router a mapping listens on (TR-181 `PortMapping.Interface`, here the
/// role; the agent config names the actual interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The home side (`lan_interface` in the agent config).
    Lan,
    /// The internet side (`wan_interface` in the agent config).
    Wan,
}

impl Side {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Lan => "lan",
            Side::Wan => "wan",
        }
    }
}

/// One port mapping (TR-181 `NAT.PortMapping.{i}`): traffic to the router's `external_port` on
/// `interface` goes to the app's `internal_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// `Protocol`.
    pub protocol: Protocol,
    /// `ExternalPort`, 1..=65535.
    pub external_port: u16,
    /// `InternalPort`, 1..=65535.
    pub internal_port: u16,
    /// `Interface`: the side it listens on.
    pub interface: Side,
}

/// The protocol an egress rule allows (`any` by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressProtocol {
    /// Every IP protocol (then `ports` must be empty).
    #[default]
    Any,
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

/// One allowed destination of the app's own connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// IPv4 CIDR, `a.b.c.d/n` (host bits zero); `0.0.0.0/0` is everywhere.
    pub destination: String,
    /// tcp, udp or any.
    #[serde(default)]
    pub protocol: EgressProtocol,
    /// Destination ports (tcp or udp only); empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// Most port mappings one app may ask for.
pub const MAX_PORT_MAPPINGS: usize = 32;
/// Most egress rules one app may declare.
pub const MAX_EGRESS_RULES: usize = 32;
/// Most ports in one egress rule.
pub const MAX_EGRESS_PORTS: usize = 16;

/// The app's `network` section.
///
/// `egress` absent means **no connections of the app's own** through the router: only replies
/// to connections that reach it through its mappings (or its DNS interception) pass. A package
/// declares what it needs (a DNS filter: its upstream resolvers, udp and tcp 53), so a
/// compromised or buggy app can neither scan the home network nor send data anywhere its
/// operator did not see in the package; `[{"destination": "0.0.0.0/0"}]` opens everything.
/// Traffic to the router's own addresses is not filtered in this slice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// nat (default), none or bridged.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Router ports forwarded to the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Allowed destinations of the app's own connections; None: none (see above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    /// The LAN's DNS (port 53, udp and tcp, to the router's own address) goes to the app's
    /// [`NetworkConfig::dns_port`].
    #[serde(default)]
    pub intercept_dns: bool,
    /// The port the app's DNS server listens on, for `intercept_dns`; absent: 53. A jail app
    /// has no capability to bind below 1024, so its server listens higher (the dns-filter app:
    /// 1053) and the interception rewrites the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_port: Option<u16>,
}

/// A parsed `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n` with the host bits zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a.b.c.d/n"))?;
        let addr: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{text:?}: bad IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0..=32"))?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        if u32::from(addr) & !mask != 0 {
            return Err(format!("{text:?}: host bits set"));
        }
        Ok(Cidr { addr, len })
    }
}

/// The name of the InstallDU and Update argument that replaces a package's `network` section.
pub const OVERRIDE_ARG: &str = "X_CPEVISOR_NetworkConfig";
/// Largest [`OVERRIDE_ARG`] value, bytes: a full section (32 mappings, 32 egress rules of 16
/// ports) is about 6 KiB of JSON; the bound keeps the persisted state small.
pub const MAX_OVERRIDE_BYTES: usize = 8 << 10;

/// Where a section came from, for the faults that name its fields.
#[derive(Clone, Copy)]
enum Source {
    /// The package's app.json.
    Package,
    /// The operator's [`OVERRIDE_ARG`].
    Override,
}

fn invalid_in(src: Source, field: &str, why: impl fmt::Display) -> Fault {
    let message = match src {
        Source::Package => format!("app config field `network.{field}`: {why}"),
        Source::Override => format!("{OVERRIDE_ARG} field `{field}`: {why}"),
    };
    Fault::new(FaultCode::InvalidArguments, message)
}

/// Parses an operator's [`OVERRIDE_ARG`]: a JSON object in the schema of the package's
/// `network` section, checked by the same rules; `null` means the package's own section
/// (`Ok(None)`). The fault (7004) names the argument and the field.
pub fn parse_override(text: &str) -> Result<Option<NetworkConfig>, Fault> {
    if text.len() > MAX_OVERRIDE_BYTES {
        return Err(Fault::new(
            FaultCode::InvalidArguments,
            format!(
                "{OVERRIDE_ARG}: {} bytes, more than the {MAX_OVERRIDE_BYTES} allowed",
                text.len()
            ),
        ));
    }
    let c: Option<NetworkConfig> = serde_json::from_slice(text.as_bytes()).map_err(|e| {
        Fault::new(
            FaultCode::InvalidArguments,
            format!("{OVERRIDE_ARG}: not a network section: {e}"),
        )
    })?;
    if let Some(c) = &c {
        c.check(Source::Override)?;
    }
    Ok(c)
}

/// An install's or update's [`OVERRIDE_ARG`], parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkArg {
    /// `null`: the package's own section (an update drops the override in force).
    Package,
    /// The operator's section, in place of the package's for this DU.
    Operator(NetworkConfig),
}

impl NetworkArg {
    /// Parses the argument's text; the fault (7004) names the argument and the field.
    pub fn parse(text: &str) -> Result<NetworkArg, Fault> {
        Ok(match parse_override(text)? {
            Some(c) => NetworkArg::Operator(c),
            None => NetworkArg::Package,
        })
    }
}

impl NetworkConfig {
    /// Checks every field; the fault (7004) names the first one that fails.
    pub fn validate(&self) -> Result<(), Fault> {
        self.check(Source::Package)
    }

    fn check(&self, src: Source) -> Result<(), Fault> {
        match self.mode {
            // On the LAN already: the home reaches it at its own address, a port of the
            // router's would only duplicate that.
            NetworkMode::Bridged => {
                if let Some(i) = self
                    .port_mappings
                    .iter()
                    .position(|m| m.interface == Side::Lan)
                {
                    return Err(invalid_in(
                        src,
                        &format!("port_mappings[{i}]"),
                        "a bridged app is on the LAN itself: the LAN reaches it at its own \
                         address, so it takes no lan port mappings (wan ones only)",
                    ));
                }
            }
            NetworkMode::None
                if !self.port_mappings.is_empty()
                    || self.intercept_dns
                    || self.egress.as_ref().is_some_and(|e| !e.is_empty()) =>
            {
                return Err(invalid_in(
                    src,
                    "mode",
                    "none takes no port_mappings, egress or intercept_dns",
                ))
            }
            _ => {}
        }
        match self.dns_port {
            Some(0) => return Err(invalid_in(src, "dns_port", "must be 1..=65535")),
            Some(_) if !self.intercept_dns => {
                return Err(invalid_in(src, "dns_port", "needs intercept_dns"))
            }
            _ => {}
        }
        if self.port_mappings.len() > MAX_PORT_MAPPINGS {
            return Err(invalid_in(
                src,
                "port_mappings",
                format!("more than {MAX_PORT_MAPPINGS}"),
            ));
        }
        for (i, m) in self.port_mappings.iter().enumerate() {
            if m.external_port == 0 {
                return Err(invalid_in(
                    src,
                    &format!("port_mappings[{i}].external_port"),
                    "must be 1..=65535",
                ));
            }
            if m.internal_port == 0 {
                return Err(invalid_in(
                    src,
                    &format!("port_mappings[{i}].internal_port"),
                    "must be 1..=65535",
                ));
            }
        }
        for (i, a) in self.port_mappings.iter().enumerate() {
            let key = (a.protocol, a.external_port, a.interface);
            if self.port_mappings[..i]
                .iter()
                .any(|b| (b.protocol, b.external_port, b.interface) == key)
            {
                return Err(invalid_in(
                    src,
                    &format!("port_mappings[{i}]"),
                    format!(
                        "{} {} on {} is mapped twice",
                        a.protocol.as_str(),
                        a.external_port,
                        a.interface.as_str()
                    ),
                ));
            }
            if self.intercept_dns && a.external_port == 53 && a.interface == Side::Lan {
                return Err(invalid_in(
                    src,
                    &format!("port_mappings[{i}]"),
                    "lan port 53 is already the app's through intercept_dns",
                ));
            }
        }
        let egress = self.egress.as_deref().unwrap_or_default();
        if egress.len() > MAX_EGRESS_RULES {
            return Err(invalid_in(
                src,
                "egress",
                format!("more than {MAX_EGRESS_RULES} rules"),
            ));
        }
        for (i, r) in egress.iter().enumerate() {
            Cidr::parse(&r.destination)
                .map_err(|why| invalid_in(src, &format!("egress[{i}].destination"), why))?;
            if r.ports.len() > MAX_EGRESS_PORTS || r.ports.contains(&0) {
                return Err(invalid_in(
                    src,
                    &format!("egress[{i}].ports"),
                    format!("at most {MAX_EGRESS_PORTS} ports of 1..=65535"),
                ));
            }
            if r.protocol == EgressProtocol::Any && !r.ports.is_empty() {
                return Err(invalid_in(
                    src,
                    &format!("egress[{i}].ports"),
                    "ports need protocol tcp or udp",
                ));
            }
        }
        Ok(())
    }

    /// The app's port that intercepted DNS queries go to.
    pub fn dns_port(&self) -> u16 {
        self.dns_port.unwrap_or(53)
    }

    /// The router ports this config takes: its mappings, and LAN udp+tcp 53 when it intercepts
    /// the LAN's DNS. Two running apps may not share one.
    pub fn claims(&self) -> Vec<(Protocol, u16, Side)> {
        let mut v: Vec<_> = self
            .port_mappings
            .iter()
            .map(|m| (m.protocol, m.external_port, m.interface))
            .collect();
        if self.intercept_dns {
            v.push((Protocol::Udp, 53, Side::Lan));
            v.push((Protocol::Tcp, 53, Side::Lan));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<NetworkConfig, String> {
        let c: NetworkConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map_err(|f| f.message)?;
        Ok(c)
    }

    #[test]
    fn defaults_and_claims() {
        let c = parse(serde_json::json!({})).unwrap();
        assert_eq!(c.mode, NetworkMode::Nat);
        assert_eq!(c.egress, None);
        // Bridged, with a wan mapping and the LAN's DNS.
        let c = parse(serde_json::json!({"mode": "bridged", "intercept_dns": true,
            "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                               "interface": "wan"}]}))
        .unwrap();
        assert_eq!(c.mode, NetworkMode::Bridged);
        let c = parse(serde_json::json!({
            "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                               "interface": "wan"}],
            "intercept_dns": true,
            "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
        }))
        .unwrap();
        assert_eq!(
            c.claims(),
            vec![
                (Protocol::Tcp, 8080, Side::Wan),
                (Protocol::Udp, 53, Side::Lan),
                (Protocol::Tcp, 53, Side::Lan)
            ]
        );
    }

    #[test]
    fn names_the_bad_field() {
        let e = |v| parse(v).unwrap_err();
        let m = |ext: u16, int: u16| {
            serde_json::json!({"protocol": "udp", "external_port": ext, "internal_port": int,
                               "interface": "lan"})
        };
        assert!(e(serde_json::json!({"mode": "bridged",
            "port_mappings": [{"protocol": "tcp", "external_port": 8080,
                "internal_port": 80, "interface": "wan"}, m(80, 80)]}))
        .contains("`network.port_mappings[1]`: a bridged app is on the LAN itself"));
        assert!(e(serde_json::json!({"mode": "host"})).contains("host"));
        assert!(
            e(serde_json::json!({"mode": "none", "intercept_dns": true}))
                .contains("`network.mode`")
        );
        assert!(e(serde_json::json!({"port_mappings": [m(0, 1)]}))
            .contains("`network.port_mappings[0].external_port`"));
        assert!(e(serde_json::json!({"port_mappings": [m(1, 0)]}))
            .contains("`network.port_mappings[0].internal_port`"));
        assert!(e(serde_json::json!({"port_mappings": [m(5, 1), m(5, 2)]}))
            .contains("`network.port_mappings[1]`"));
        assert!(
            e(serde_json::json!({"port_mappings": [m(53, 1)], "intercept_dns": true}))
                .contains("intercept_dns")
        );
        assert!(e(serde_json::json!({"dns_port": 1053})).contains("`network.dns_port`: needs"));
        assert!(e(serde_json::json!({"intercept_dns": true, "dns_port": 0}))
            .contains("`network.dns_port`"));
        assert!(e(serde_json::json!({"port_mappings": [{"protocol": "sctp",
            "external_port": 1, "internal_port": 1, "interface": "lan"}]}))
        .contains("sctp"));
        assert!(
            e(serde_json::json!({"egress": [{"destination": "10.0.0.1/8"}]}))
                .contains("`network.egress[0].destination`: \"10.0.0.1/8\": host bits set")
        );
        assert!(
            e(serde_json::json!({"egress": [{"destination": "10.0.0.0/33"}]}))
                .contains("prefix length")
        );
        assert!(
            e(serde_json::json!({"egress": [{"destination": "0.0.0.0/0", "ports": [53]}]}))
                .contains("`network.egress[0].ports`: ports need protocol")
        );
    }

    #[test]
    fn overrides_name_the_argument_and_the_field() {
        let e = |t: &str| parse_override(t).unwrap_err().message;
        assert_eq!(parse_override("null").unwrap(), None);
        let c = parse_override(r#"{"mode": "none"}"#).unwrap().unwrap();
        assert_eq!(c.mode, NetworkMode::None);
        assert!(e("{").starts_with("X_CPEVISOR_NetworkConfig: not a network section"));
        assert!(e(r#"{"mode": "host"}"#).contains("host"));
        assert!(e(r#"{"nmode": "nat"}"#).contains("nmode"));
        assert_eq!(
            e(
                r#"{"port_mappings": [{"protocol": "tcp", "external_port": 0,
                "internal_port": 80, "interface": "wan"}]}"#
            ),
            "X_CPEVISOR_NetworkConfig field `port_mappings[0].external_port`: must be 1..=65535"
        );
        let big = format!(r#"{{"mode": "nat"{}}}"#, " ".repeat(MAX_OVERRIDE_BYTES));
        assert!(e(&big).contains("more than the 8192 allowed"));
        // The package's own section still names app.json's field.
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"dns_port": 5}"#)
            .unwrap()
            .validate()
            .unwrap_err()
            .message
            .starts_with("app config field `network.dns_port`"));
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            Cidr::parse("192.168.0.0/16").unwrap().to_string(),
            "192.168.0.0/16"
        );
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().len, 0);
        assert!(Cidr::parse("1.2.3.4").is_err());
        assert!(Cidr::parse("1.2.3.4/32").is_ok());
    }
}
