//! Networking for microVM apps: one persistent tap per app with a /30 of its own, the host side
//! addressed here, the guest side handed to the guest on its kernel command line. The agent
//! creates the tap before starting the VMM (which attaches to it by name) and deletes it after.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::package::network::Cidr;

/// Addresses of one app's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNet {
    /// Name of the app's tap device.
    pub tap: String,
    /// Host end of the app's /30 (`.1`).
    pub host_ip: Ipv4Addr,
    /// Guest end of the app's /30 (`.2`).
    pub guest_ip: Ipv4Addr,
}

/// A bridged app's place on the LAN (`network.mode` `bridged`): its link joins the LAN bridge
/// itself, with a LAN address and the router as its gateway, instead of a private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanLink {
    /// The LAN bridge (`lan_interface`).
    pub bridge: String,
    /// The app's LAN address.
    pub addr: Ipv4Addr,
    /// The LAN's prefix length.
    pub prefix: u8,
    /// The router's LAN address.
    pub gateway: Ipv4Addr,
}

/// The pool and the LAN it sits on, from the agent config (`AgentConfig::lan_pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPool {
    /// The LAN bridge the apps join (`lan_interface`).
    pub bridge: String,
    /// The router's address on the LAN: the apps' gateway.
    pub router: Ipv4Addr,
    /// The LAN's prefix length.
    pub prefix: u8,
    /// First address of the pool.
    pub first: Ipv4Addr,
    /// Last address of the pool (included).
    pub last: Ipv4Addr,
}

impl LanPool {
    /// How many addresses it holds.
    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Whether `a` is one of its addresses.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(a))
    }

    /// The LAN's subnet.
    pub fn subnet(&self) -> Cidr {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        Cidr {
            addr: Ipv4Addr::from(u32::from(self.router) & mask),
            len: self.prefix,
        }
    }

    /// What an app at `addr` is given: its address on the LAN bridge, the router its gateway.
    pub fn link(&self, addr: Ipv4Addr) -> LanLink {
        LanLink {
            bridge: self.bridge.clone(),
            addr,
            prefix: self.prefix,
            gateway: self.router,
        }
    }

    /// `first-last`, as the config spells it.
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }
}

/// The name of the host end of `eu_id`'s link (a tap, or a jail's veth); IFNAMSIZ is 16 with
/// the NUL: "cpv-eu-16383" fits.
pub fn link_name(eu_id: &str) -> String {
    format!("cpv-{eu_id}")
}

/// Links carved from a /16: app `n` gets `base + 4n` /30 (host .1, guest .2).
pub const MAX_APPS_PER_NETWORK: u32 = 1 << 14;
const NETMASK_30: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 252);

/// Why an app network or an app's link is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// `text` is not `a.b.0.0/16`; `why` says what is expected.
    BadNetwork {
        /// The network as configured.
        text: String,
        /// What is expected instead.
        why: &'static str,
    },
    /// Not an EUID of the form `eu-<n>` the agent hands out.
    NotAnEuid(String),
    /// An EUID whose number is beyond the links a /16 holds.
    NoLinkLeft(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::BadNetwork { text, why } => write!(f, "{text:?}: {why}"),
            NetError::NotAnEuid(eu_id) => write!(f, "{eu_id}: not an agent EUID"),
            NetError::NoLinkLeft(eu_id) => write!(
                f,
                "{eu_id}: beyond the {MAX_APPS_PER_NETWORK} links of the network"
            ),
        }
    }
}

impl std::error::Error for NetError {}

/// Parses `a.b.0.0/16`, the only shape accepted for an app network.
pub fn parse_network(text: &str) -> Result<Ipv4Addr, NetError> {
    let bad = |why| NetError::BadNetwork {
        text: text.to_string(),
        why,
    };
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| bad("expected a.b.0.0/16"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad("bad IPv4 address"))?;
    if len != "16" || ip.octets()[2] != 0 || ip.octets()[3] != 0 {
        return Err(bad("expected a /16 network such as 10.100.0.0/16"));
    }
    Ok(ip)
}

/// The link of the app whose EUID is `eu-<n>`.
pub fn plan(base: Ipv4Addr, eu_id: &str) -> Result<AppNet, NetError> {
    let n: u32 = eu_id
        .strip_prefix("eu-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| NetError::NotAnEuid(eu_id.to_string()))?;
    if n >= MAX_APPS_PER_NETWORK {
        return Err(NetError::NoLinkLeft(eu_id.to_string()));
    }
    let net = u32::from(base) + 4 * n;
    Ok(AppNet {
        tap: link_name(eu_id),
        host_ip: Ipv4Addr::from(net + 1),
        guest_ip: Ipv4Addr::from(net + 2),
    })
}

/// Kernel command line for the guest: `ip=` for kernels with IP autoconfiguration, and
/// `cpevisor.ip=`/`cpevisor.gw=` for the app image's init to read from /proc/cmdline.
pub fn guest_cmdline(net: &AppNet) -> String {
    format!(
        "ip={g}::{h}:{NETMASK_30}::eth0:off cpevisor.ip={g}/30 cpevisor.gw={h}",
        g = net.guest_ip,
        h = net.host_ip
    )
}

/// The guest's command line for a bridged app: its LAN address and prefix, the router as its
/// gateway (the same words as [`guest_cmdline`]).
pub fn guest_cmdline_lan(lan: &LanLink) -> String {
    let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(lan.prefix)));
    format!(
        "ip={a}::{g}:{mask}::eth0:off cpevisor.ip={a}/{p} cpevisor.gw={g}",
        a = lan.addr,
        g = lan.gateway,
        p = lan.prefix
    )
}

fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if let Err(e) = cpevisor_types::IfName::parse(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?}: {e}"),
        ));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid (empty) value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

fn tun_attach(name: &str) -> io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut ifr = ifreq_named(name)?;
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and updates one ifreq that lives for the whole call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

fn set_persist(tun: &File, on: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETPERSIST as _,
            libc::c_ulong::from(on),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the kernel reads it back
    // as sockaddr_in because sa_family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn inet_ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: a plain datagram socket, owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the SIOC{S,G}IF* requests read or write one ifreq valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the persistent tap (replacing a stale one), addresses the host side, brings it up.
pub fn create_tap(net: &AppNet) -> io::Result<()> {
    let _ = delete_tap(&net.tap);
    let tun = tun_attach(&net.tap)?;
    set_persist(&tun, true)?;
    drop(tun);
    let configure = || -> io::Result<()> {
        let mut ifr = ifreq_named(&net.tap)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_in(net.host_ip);
        inet_ioctl(libc::SIOCSIFADDR as _, &mut ifr)?;
        let mut ifr = ifreq_named(&net.tap)?;
        ifr.ifr_ifru.ifru_netmask = sockaddr_in(NETMASK_30);
        inet_ioctl(libc::SIOCSIFNETMASK as _, &mut ifr)?;
        let mut ifr = ifreq_named(&net.tap)?;
        inet_ioctl(libc::SIOCGIFFLAGS as _, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        inet_ioctl(libc::SIOCSIFFLAGS as _, &mut ifr)
    };
    configure().inspect_err(|_| {
        let _ = delete_tap(&net.tap);
    })
}

/// Creates the persistent tap of a bridged app (replacing a stale one) as a port of the LAN
/// bridge `lan.bridge`, up, with no address of the host's: the guest is on the LAN itself.
/// The bridge must exist (the firmware makes the LAN).
pub fn create_lan_tap(name: &str, lan: &LanLink) -> io::Result<()> {
    use super::jail::netlink::{link_index, Netlink};
    let bridge = link_index(&lan.bridge).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("the LAN bridge {} does not exist", lan.bridge),
        )
    })?;
    let _ = delete_tap(name);
    let tun = tun_attach(name)?;
    set_persist(&tun, true)?;
    drop(tun);
    let attach = || -> io::Result<()> {
        let index = link_index(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "tap vanished"))?;
        Netlink::open()?.set_up(index, Some(bridge))
    };
    attach().inspect_err(|_| {
        let _ = delete_tap(name);
    })
}

/// Makes a microVM app's tap `cpv-<eu_id>`: a port of the LAN bridge for a bridged app
/// (`lan`), else routed with its own /30 of `network`; returns its name and the words that
/// give the guest its address and gateway. None: the app has no network.
pub fn guest_link(
    eu_id: &str,
    lan: Option<&LanLink>,
    network: Option<Ipv4Addr>,
) -> io::Result<Option<(String, String)>> {
    if let Some(lan) = lan {
        let tap = link_name(eu_id);
        create_lan_tap(&tap, lan).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create tap {tap} on {}: {e}", lan.bridge),
            )
        })?;
        return Ok(Some((tap, guest_cmdline_lan(lan))));
    }
    let Some(base) = network else {
        return Ok(None);
    };
    let link = plan(base, eu_id).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    create_tap(&link)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create tap {}: {e}", link.tap)))?;
    let words = guest_cmdline(&link);
    Ok(Some((link.tap, words)))
}

/// Removes a persistent tap (its addresses and routes go with it).
pub fn delete_tap(name: &str) -> io::Result<()> {
    let tun = tun_attach(name)?;
    set_persist(&tun, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_disjoint_links() {
        let base = parse_network("10.100.0.0/16").unwrap();
        let a = plan(base, "eu-1").unwrap();
        assert_eq!(a.tap, "cpv-eu-1");
        assert_eq!(a.host_ip, Ipv4Addr::new(10, 100, 0, 5));
        assert_eq!(a.guest_ip, Ipv4Addr::new(10, 100, 0, 6));
        let b = plan(base, "eu-300").unwrap();
        assert_eq!(b.host_ip, Ipv4Addr::new(10, 100, 4, 177));
        assert_eq!(
            plan(base, "eu-16384").unwrap_err().to_string(),
            "eu-16384: beyond the 16384 links of the network"
        );
        assert_eq!(plan(base, "x"), Err(NetError::NotAnEuid("x".into())));
        assert!(plan(base, "eu-16383").unwrap().tap.len() < libc::IFNAMSIZ);
        assert_eq!(
            guest_cmdline(&a),
            "ip=10.100.0.6::10.100.0.5:255.255.255.252::eth0:off cpevisor.ip=10.100.0.6/30 cpevisor.gw=10.100.0.5"
        );
    }

    #[test]
    fn a_bridged_guest_gets_its_lan_address_and_the_router() {
        let lan = LanLink {
            bridge: "br-lan".into(),
            addr: Ipv4Addr::new(192, 168, 1, 200),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 168, 1, 1),
        };
        assert_eq!(
            guest_cmdline_lan(&lan),
            "ip=192.168.1.200::192.168.1.1:255.255.255.0::eth0:off cpevisor.ip=192.168.1.200/24 cpevisor.gw=192.168.1.1"
        );
    }

    #[test]
    fn only_slash_16_networks() {
        assert!(parse_network("10.100.0.0/24").is_err());
        assert!(parse_network("10.100.1.0/16").is_err());
        assert!(parse_network("10.100.0.0").is_err());
        assert_eq!(
            parse_network("banana/16").unwrap_err().to_string(),
            "\"banana/16\": bad IPv4 address"
        );
    }

    #[test]
    fn interface_names_are_bounded() {
        assert!(ifreq_named("").is_err());
        assert!(ifreq_named("a-very-long-interface").is_err());
        assert!(ifreq_named("cpv-eu-1").is_ok());
        // The one rule (cpevisor_types::IfName): before it, these reached TUNSETIFF.
        for bad in ["..", "tap%d", "a b", "a/b"] {
            let e = ifreq_named(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
