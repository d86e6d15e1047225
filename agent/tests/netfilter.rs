//! The apps' nftables rules with the real `nft` tool, each test in network namespaces of its
//! own so the host's ruleset is never touched: rules of two apps applied and listed, a
//! conflicting mapping refused with the ruleset unchanged, removal leaving the ruleset exactly
//! as it was, and real traffic (a WAN client reaching the app through its port mapping, the
//! app's egress outside its policy dropped). Needs root and nft; says so and passes without.

#[path = "common/netns.rs"]
mod netns;

use netns::{sh, NamedNs};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use cpevisor_agent::fault::FaultCode;
use cpevisor_agent::netfilter::{conntrack, AppRules, Interfaces, Netfilter, Nft};
use cpevisor_agent::package::network::NetworkConfig;

/// Moves this thread into a fresh network namespace (the test harness runs each test on its
/// own thread, and children it spawns inherit it). None: not root or no nft, test skipped.
fn fresh_netns() -> Option<Nft> {
    let nft = Nft::locate(None);
    // SAFETY: geteuid has no preconditions.
    if nft.is_none() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and nft (apt-get install nftables)");
        return None;
    }
    // SAFETY: unshare of the network namespace affects this thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    nft
}

fn ruleset(nft: &Nft) -> String {
    nft.run(&["list", "ruleset"], "").unwrap()
}

fn app(eu: &str, last: u8, net: serde_json::Value) -> AppRules {
    let net: NetworkConfig = serde_json::from_value(net).unwrap();
    net.validate().unwrap();
    AppRules {
        eu_id: eu.into(),
        addr: Ipv4Addr::new(10, 100, 0, last),
        net,
    }
}

fn ifs() -> Interfaces {
    Interfaces {
        wan: Some("wan0".into()),
        lan: Some("lan0".into()),
        lan_net: None,
    }
}

#[test]
fn two_apps_a_conflict_and_removal_leave_the_rest_as_it_was() {
    let Some(nft) = fresh_netns() else { return };
    // Someone else's table (firewall4's, say): never touched.
    nft.apply("table inet fw4 {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n")
        .unwrap();
    let before = ruleset(&nft);
    assert!(before.contains("table inet fw4"), "{before}");

    let nf = Netfilter::new(ifs(), Some(nft.clone()));
    nf.reset().unwrap();
    assert_eq!(ruleset(&nft), before, "reset with no apps changes nothing");

    nf.add(app(
        "eu-1",
        6,
        serde_json::json!({
            "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                               "interface": "wan"}],
            "intercept_dns": true,
            "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
        }),
    ))
    .unwrap();
    nf.add(app(
        "eu-2",
        10,
        serde_json::json!({
            "port_mappings": [{"protocol": "udp", "external_port": 8080, "internal_port": 5060,
                               "interface": "wan"}]
        }),
    ))
    .unwrap();
    let two = ruleset(&nft);
    for want in [
        "table inet fw4",
        "iifname \"wan0\" fib daddr type local tcp dport 8080 dnat ip to 10.100.0.6:80 comment \"eu-1\"",
        "iifname \"lan0\" ip saddr != 10.100.0.6 fib daddr type local udp dport 53 dnat ip to 10.100.0.6:53",
        "iifname \"wan0\" fib daddr type local udp dport 8080 dnat ip to 10.100.0.10:5060 comment \"eu-2\"",
        "ip saddr 10.100.0.10 drop comment \"eu-2\"",
        "oifname \"wan0\" ip saddr 10.100.0.6 masquerade",
    ] {
        assert!(two.contains(want), "missing {want:?} in:\n{two}");
    }

    // The same external port, protocol and side: refused, nothing changed.
    let f = nf
        .add(app(
            "eu-3",
            14,
            serde_json::json!({
                "port_mappings": [{"protocol": "tcp", "external_port": 8080,
                                   "internal_port": 8000, "interface": "wan"}]
            }),
        ))
        .unwrap_err();
    assert_eq!(f.code, FaultCode::UniqueKeyConflict);
    assert_eq!(f.code.code(), 7025);
    assert!(f.message.contains("already mapped to eu-1"), "{f}");
    assert!(!nf.is_applied("eu-3"));
    assert_eq!(ruleset(&nft), two);
    // The LAN's DNS is eu-1's already.
    let f = nf
        .add(app("eu-4", 18, serde_json::json!({"intercept_dns": true})))
        .unwrap_err();
    assert_eq!(f.code, FaultCode::UniqueKeyConflict, "{f}");
    assert_eq!(ruleset(&nft), two);
    // nft itself refusing (a rule the kernel cannot take) changes nothing either.
    let bad = Netfilter::new(
        Interfaces {
            wan: Some("wan0\" drop; \"".into()),
            lan: None,
            lan_net: None,
        },
        Some(nft.clone()),
    );
    assert!(bad
        .add(app(
            "eu-5",
            22,
            serde_json::json!({"port_mappings": [{"protocol": "tcp", "external_port": 1,
                                                  "internal_port": 1, "interface": "wan"}]})
        ))
        .is_err());
    assert_eq!(ruleset(&nft), two);

    // Re-adding eu-1 (a restart) replaces its rules, it does not double them.
    nf.add(app(
        "eu-1",
        6,
        serde_json::json!({
            "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                               "interface": "wan"}],
            "intercept_dns": true,
            "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
        }),
    ))
    .unwrap();
    assert_eq!(ruleset(&nft), two);

    nf.remove("eu-1");
    let one = ruleset(&nft);
    assert!(!one.contains("eu-1") && one.contains("eu-2"), "{one}");
    nf.remove("eu-2");
    assert_eq!(
        ruleset(&nft),
        before,
        "no app left: exactly the ruleset from before"
    );
}

/// Serves one connection: answers `reply`.
fn serve_once(port: u16, reply: &'static str) -> impl FnOnce() -> Result<(), String> {
    move || {
        let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        s.write_all(reply.as_bytes()).map_err(|e| e.to_string())
    }
}

fn fetch(to: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&to, Duration::from_millis(1500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn a_wan_client_reaches_the_app_and_egress_outside_the_policy_is_dropped() {
    let Some(nft) = fresh_netns() else { return };
    // This thread is the router. The WAN client and the app each in a namespace of their own.
    let client = NamedNs::new("client");
    let appns = NamedNs::new("app");
    sh(&format!(
        "ip link add wan0 type veth peer name eth0 netns {c} && \
         ip link add cpv-eu-1 type veth peer name eth0 netns {a} && \
         ip addr add 192.0.2.1/24 dev wan0 && ip link set wan0 up && \
         ip addr add 10.100.0.5/30 dev cpv-eu-1 && ip link set cpv-eu-1 up && \
         ip link set lo up && echo 1 > /proc/sys/net/ipv4/ip_forward",
        c = client.0,
        a = appns.0
    ));
    client.run("ip addr add 192.0.2.2/24 dev eth0 && ip link set eth0 up && ip link set lo up");
    appns.run(
        "ip addr add 10.100.0.6/30 dev eth0 && ip link set eth0 up && ip link set lo up && \
         ip route add default via 10.100.0.5",
    );

    let nf = Netfilter::new(ifs(), Some(nft.clone()));
    // Before the rules: the router's port 8080 leads nowhere.
    let to_router = SocketAddr::from(([192, 0, 2, 1], 8080));
    let refused = client.thread(move || fetch(to_router)).join().unwrap();
    assert!(refused.is_err(), "{refused:?}");

    nf.add(app(
        "eu-1",
        6,
        serde_json::json!({
            "port_mappings": [{"protocol": "tcp", "external_port": 8080, "internal_port": 80,
                               "interface": "wan"}],
            "egress": [{"destination": "192.0.2.2/32", "protocol": "tcp", "ports": [9001]}]
        }),
    ))
    .unwrap();

    // DNAT: the client asks the router's own address, the app's listener on 80 answers.
    let server = appns.thread(serve_once(80, "app here"));
    std::thread::sleep(Duration::from_millis(100));
    let got = client.thread(move || fetch(to_router)).join().unwrap();
    assert_eq!(got.as_deref(), Ok("app here"));
    server.join().unwrap().unwrap();

    // Egress: the allowed destination and port pass (masqueraded), another port is dropped.
    let allowed = client.thread(serve_once(9001, "allowed"));
    let _blocked = client.thread(serve_once(9000, "should not be reached"));
    std::thread::sleep(Duration::from_millis(100));
    let ok = appns
        .thread(|| fetch(SocketAddr::from(([192, 0, 2, 2], 9001))))
        .join()
        .unwrap();
    assert_eq!(ok.as_deref(), Ok("allowed"));
    allowed.join().unwrap().unwrap();
    let dropped = appns
        .thread(|| fetch(SocketAddr::from(([192, 0, 2, 2], 9000))))
        .join()
        .unwrap();
    let why = dropped.expect_err("egress outside the policy must be dropped");
    // Dropped, not refused: the SYN never arrives, the connect times out.
    assert!(why.contains("timed out"), "{why}");

    // Rules gone: the mapping leads nowhere again, and the table is gone.
    nf.remove("eu-1");
    assert!(!ruleset(&nft).contains("cpevisor"));
    let after = client.thread(move || fetch(to_router)).join().unwrap();
    assert!(after.is_err(), "{after:?}");
}

/// A client that asked the router's port 53 before an app intercepted it keeps its flow's
/// conntrack entry, un-NATed, for as long as it keeps asking from that port: once the app's
/// rules are in, that entry is deleted (and a flow that was NATed is not).
#[test]
fn flows_to_an_apps_ports_tracked_before_its_rules_are_forgotten() {
    let Some(nft) = fresh_netns() else { return };
    sh("ip link set lo up");
    // Conntrack runs in a namespace once a rule needs it. A flow from port 40053 to 53 is
    // DNAT'd (the NATed flow that must stay); the others are plain.
    nft.apply(
        "table ip t {\n\tchain out {\n\t\ttype filter hook output priority 0;\n\t\tct state new counter\n\t}\n\
         \tchain nat {\n\t\ttype nat hook output priority -100;\n\t\tudp sport 40053 udp dport 53 dnat to 127.0.0.1:5300\n\t}\n}\n",
    )
    .unwrap();
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    let natted = UdpSocket::bind("127.0.0.1:40053").unwrap();
    for port in [53, 5454] {
        plain.send_to(b"q", ("127.0.0.1", port)).unwrap();
    }
    natted.send_to(b"q", ("127.0.0.1", 53)).unwrap();
    let before = conntrack::list().unwrap();
    for want in [(17, 53, false), (17, 5454, false), (17, 53, true)] {
        assert!(before.contains(&want), "no {want:?} among {before:?}");
    }

    let nf = Netfilter::new(ifs(), Some(nft.clone()));
    nf.add(app("eu-1", 6, serde_json::json!({"intercept_dns": true})))
        .unwrap();
    let after = conntrack::list().unwrap();
    assert!(
        !after.contains(&(17, 53, false)),
        "the un-NATed flow to port 53 is still tracked: {after:?}"
    );
    for kept in [(17, 5454, false), (17, 53, true)] {
        assert!(after.contains(&kept), "{kept:?} was deleted too: {after:?}");
    }
    assert_eq!(conntrack::forget_unnated(&[]).unwrap(), 0);
}
