//! Network mode `bridged` on this host's kernel: the test's thread is the router, in a network
//! namespace of its own, with a bridge standing in for `br-lan` (the router's 192.168.1.1/24 on
//! it), a LAN client and a WAN host each in a namespace of their own.
//! - through the agent (jail apps): a bridged app gets a LAN address from the pool, reaches and
//!   is reached by the LAN client at it directly, its egress outside its policy is dropped
//!   (routed to the WAN) while what it allows passes; two apps get distinct addresses, kept
//!   across a restart; a full pool and a missing LAN are refused with nothing changed.
//! - the rules alone: a LAN client asking the router's DNS gets the bridged app's answer from
//!   the router's address (the hairpin masquerade), not from the app's.
//!
//! Needs root, nft, busybox-static and curl; says so and passes without.

#[path = "common/agentd.rs"]
mod agentd;
mod common;

#[path = "common/netns.rs"]
mod netns;

use netns::{sh, NamedNs};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agentd::{busybox_rootfs, eu_of, tar_dir, World, BUSYBOX};
use cpevisor_agent::netfilter::{AppRules, Interfaces, Netfilter, Nft};
use cpevisor_agent::package::network::{Cidr, NetworkConfig};
use serde_json::{json, Value};

/// Root and the tools; None: skipped (said why).
fn can_run(jail: bool) -> Option<Nft> {
    let nft = Nft::locate(None);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = !jail
        || [BUSYBOX, "/usr/bin/curl"]
            .iter()
            .all(|p| Path::new(p).exists());
    if nft.is_none() || !root || !tools {
        eprintln!("skipped: needs root, nft, {BUSYBOX} (busybox-static) and curl");
        return None;
    }
    nft
}

/// The router: this thread in a fresh namespace, `br-lan0` with 192.168.1.1/24, a LAN client
/// at 192.168.1.10 on it, `wan0` with 192.0.2.1/24 and a WAN host at 192.0.2.2 behind it.
struct Home {
    client: NamedNs,
    wan: NamedNs,
}

fn home(tag: &str) -> Home {
    // SAFETY: unshare of the network namespace affects this thread only (and what it starts).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let client = NamedNs::new(&format!("{tag}c"));
    let wan = NamedNs::new(&format!("{tag}w"));
    sh(&format!(
        "ip link set lo up && \
         ip link add br-lan0 type bridge && ip addr add 192.168.1.1/24 dev br-lan0 && \
         ip link set br-lan0 up && \
         ip link add lanc0 type veth peer name eth0 netns {c} && \
         ip link set lanc0 master br-lan0 up && \
         ip link add wan0 type veth peer name eth0 netns {w} && \
         ip addr add 192.0.2.1/24 dev wan0 && ip link set wan0 up && \
         echo 1 > /proc/sys/net/ipv4/ip_forward && \
         for f in /proc/sys/net/bridge/bridge-nf-call-iptables; do \
             [ -e $f ] && echo 0 > $f; done; true",
        c = client.0,
        w = wan.0
    ));
    client.run(
        "ip link set lo up && ip addr add 192.168.1.10/24 dev eth0 && ip link set eth0 up && \
         ip route add default via 192.168.1.1",
    );
    // A route back to the LAN: what the egress policy lets through would reach the WAN host
    // even unmasqueraded, so only the policy's drop keeps the rest out.
    wan.run(
        "ip link set lo up && ip addr add 192.0.2.2/24 dev eth0 && ip link set eth0 up && \
         ip route add 192.168.1.0/24 via 192.0.2.1",
    );
    Home { client, wan }
}

/// Answers one HTTP request with `body`.
fn http_once(l: TcpListener, body: &'static str) -> impl FnOnce() -> Result<(), String> {
    move || {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).map_err(|e| e.to_string())
    }
}

fn listen_in(ns: &NamedNs, port: u16) -> TcpListener {
    ns.thread(move || TcpListener::bind(("0.0.0.0", port)).unwrap())
        .join()
        .unwrap()
}

/// A busybox jail app on the network `network`.
fn publish(w: &World, name: &str, script: &str, network: Value) -> String {
    let dir = w.root.join(format!("src-{name}"));
    busybox_rootfs(&dir.join("rootfs"));
    tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
    let app = json!({
        "name": name, "version": "1.0", "vendor": "acme", "description": "bridged test app",
        "arch": "x86_64", "backends": ["jail"], "memory_mib": 16, "vcpus": 1,
        "command": ["/bin/sh", "-c", script], "autostart": true, "run_level": 1,
        "rootfs": "rootfs.tar", "network": network,
    });
    w.pack_app(&dir, &app, &format!("{name}.cpkg"), &w.key)
}

/// `path` of the app at `ip`:8080, fetched by the LAN client (retried while it comes up).
fn from_client(home: &Home, ip: &str, path: &str, w: &World, eu: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &home.client.0, "curl", "-sf", "-m", "2"])
            .arg(format!("http://{ip}:8080/{path}"))
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the LAN client got no {path} from {ip}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            w.logs(eu)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The app: says where it is, fetches from the LAN client and the WAN host (9001 allowed,
/// 9000 not), serves what it got on 8080.
const APP: &str = "busybox mkdir -p /data/www; cd /data/www || exit 1; \
    echo \"at $CPEVISOR_IP gw $CPEVISOR_GW\" > id; \
    (i=0; until busybox timeout 2 wget -q -O lan http://192.168.1.10:9100/; do \
         i=$((i+1)); [ $i -gt 50 ] && break; sleep 0.2; done; \
     busybox timeout 2 wget -q -O wan_ok http://192.0.2.2:9001/; \
     busybox timeout 3 wget -q -O wan_blocked http://192.0.2.2:9000/ \
         || echo dropped > wan_blocked_result; \
     echo done > probes) & \
    exec httpd -f -p 8080 -h /data/www";

fn ruleset(nft: &Nft) -> String {
    nft.run(&["list", "ruleset"], "").unwrap()
}

#[test]
fn bridged_jail_apps_sit_on_the_lan() {
    let Some(nft) = can_run(true) else { return };
    let home = home("j");
    let lan_listener = listen_in(&home.client, 9100);
    let wan_ok = listen_in(&home.wan, 9001);
    let wan_blocked = listen_in(&home.wan, 9000);
    wan_blocked.set_nonblocking(true).unwrap();
    let lan_server = std::thread::spawn(http_once(lan_listener, "hello from the LAN"));
    let wan_server = std::thread::spawn(http_once(wan_ok, "allowed"));

    // World after the namespace: its package server and daemon live in it.
    let mut w = World::new("bridged");
    let cfg = json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "jail"}],
        "download_cap_bytes": 16 << 20,
        "wan_interface": "wan0",
        "lan_interface": "br-lan0",
        "lan_address": "192.168.1.1/24",
        "lan_app_range": "192.168.1.200-192.168.1.201",
    });
    w.write_config_patched(cfg.clone());
    let egress = json!([{"destination": "192.0.2.2/32", "protocol": "tcp", "ports": [9001]}]);
    let net = json!({"mode": "bridged", "egress": egress});
    let one = publish(&w, "one", APP, net.clone());
    let two = publish(
        &w,
        "two",
        "busybox mkdir -p /data/www && echo $CPEVISOR_EU > /data/www/id && \
         exec httpd -f -p 8080 -h /data/www",
        net.clone(),
    );
    let three = publish(&w, "three", "exec sleep 1000", net.clone());
    w.start_daemon(None);

    let eu1 = eu_of(&w.ctl_json(&["install", &one]).expect("install one"));
    w.wait_eu_status(&eu1, "Active", 20);
    let n1 = &w.list()["eu_networks"][&eu1];
    assert_eq!(n1["address"], "192.168.1.200", "{n1}");
    assert_eq!(n1["config"]["mode"], "bridged", "{n1}");

    // The LAN client reaches it at its LAN address, through the bridge.
    let id = from_client(&home, "192.168.1.200", "id", &w, &eu1);
    assert_eq!(id, "at 192.168.1.200/24 gw 192.168.1.1");
    // It reached the LAN client; its allowed egress passed, the rest was dropped.
    from_client(&home, "192.168.1.200", "probes", &w, &eu1);
    assert_eq!(
        from_client(&home, "192.168.1.200", "lan", &w, &eu1),
        "hello from the LAN"
    );
    assert_eq!(
        from_client(&home, "192.168.1.200", "wan_ok", &w, &eu1),
        "allowed"
    );
    assert_eq!(
        from_client(&home, "192.168.1.200", "wan_blocked_result", &w, &eu1),
        "dropped"
    );
    assert!(
        matches!(wan_blocked.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the WAN host saw a connection outside the app's policy"
    );
    lan_server.join().unwrap().unwrap();
    wan_server.join().unwrap().unwrap();
    // Its address is in its rules; the LAN's port-less bridging is not.
    let rules = ruleset(&nft);
    assert!(
        rules.contains("ip saddr 192.168.1.200 drop comment \"eu-1\""),
        "{rules}"
    );

    // A second app: the next address.
    let eu2 = eu_of(&w.ctl_json(&["install", &two]).expect("install two"));
    w.wait_eu_status(&eu2, "Active", 20);
    assert_eq!(w.list()["eu_networks"][&eu2]["address"], "192.168.1.201");
    assert!(from_client(&home, "192.168.1.201", "id", &w, &eu2).contains(&eu2));

    // The pool is full: 7227 naming it, nothing changed.
    let files = w.state_files();
    let rules = ruleset(&nft);
    let (code, msg) = w.ctl_json(&["install", &three]).unwrap_err();
    assert_eq!(code, 7227, "{msg}");
    assert!(
        msg.contains("lan_app_range 192.168.1.200-192.168.1.201") && msg.contains("eu-1, eu-2"),
        "{msg}"
    );
    assert_eq!(w.state_files(), files);
    assert_eq!(ruleset(&nft), rules);
    assert_eq!(w.list()["deployment_units"].as_array().unwrap().len(), 2);

    // Restarted, and the agent restarted: each keeps its address.
    w.ctl_json(&["stop", &eu1]).unwrap();
    w.ctl_json(&["start", &eu1]).unwrap();
    w.wait_eu_status(&eu1, "Active", 20);
    w.stop_daemon();
    w.start_daemon(None);
    w.wait_eu_status(&eu2, "Active", 20);
    let l = w.list();
    assert_eq!(l["eu_networks"][&eu1]["address"], "192.168.1.200");
    assert_eq!(l["eu_networks"][&eu2]["address"], "192.168.1.201");
    assert!(from_client(&home, "192.168.1.201", "id", &w, &eu2).contains(&eu2));

    // Uninstalled: its address is free for the next bridged app.
    let du1 = l["deployment_units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "one")
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    w.ctl_json(&["uninstall", &du1]).expect("uninstall");
    let eu3 = eu_of(&w.ctl_json(&["install", &three]).expect("install three"));
    w.wait_eu_status(&eu3, "Active", 20);
    assert_eq!(w.list()["eu_networks"][&eu3]["address"], "192.168.1.200");

    // An agent with no LAN: a bridged package is refused, naming what is missing.
    w.stop_daemon();
    let mut bare = cfg.clone();
    for k in ["lan_interface", "lan_address", "lan_app_range"] {
        bare.as_object_mut().unwrap().remove(k);
    }
    w.write_config_patched(bare);
    w.start_daemon(None);
    let four = publish(&w, "four", "exec sleep 1000", net);
    let (code, msg) = w.ctl_json(&["install", &four]).unwrap_err();
    assert_eq!(code, 7225, "{msg}");
    assert!(
        msg.contains("bridged") && msg.contains("(lan_interface)"),
        "{msg}"
    );
    w.stop_daemon();
}

#[test]
fn a_lan_clients_dns_query_to_the_router_is_answered_by_the_bridged_app_from_the_router() {
    let Some(nft) = can_run(false) else { return };
    let home = home("d");
    let app = NamedNs::new("da");
    sh(&format!(
        "ip link add lana0 type veth peer name eth0 netns {a} && \
         ip link set lana0 master br-lan0 up",
        a = app.0
    ));
    app.run(
        "ip link set lo up && ip addr add 192.168.1.200/24 dev eth0 && ip link set eth0 up && \
         ip route add default via 192.168.1.1",
    );
    let net: NetworkConfig =
        serde_json::from_value(json!({"mode": "bridged", "intercept_dns": true, "dns_port": 1053}))
            .unwrap();
    net.validate().unwrap();
    let nf = Netfilter::new(
        Interfaces {
            wan: Some("wan0".into()),
            lan: Some("br-lan0".into()),
            lan_net: Some(Cidr::parse("192.168.1.0/24").unwrap()),
        },
        Some(nft.clone()),
    );
    nf.add(AppRules {
        eu_id: "eu-1".into(),
        addr: Ipv4Addr::new(192, 168, 1, 200),
        net,
    })
    .unwrap();

    // The app's "DNS server": answers each datagram on 1053 with "answer".
    let server = app.thread(|| {
        let s = UdpSocket::bind("0.0.0.0:1053").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let (_, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        s.send_to(b"answer", from).map_err(|e| e.to_string())?;
        Ok::<SocketAddr, String>(from)
    });
    std::thread::sleep(Duration::from_millis(100));
    // The LAN client asks the router; the answer must come from the router's address and
    // port (an answer from 192.168.1.200 straight across the bridge is what a resolver drops).
    let got = home
        .client
        .thread(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(b"query", "192.168.1.1:53").unwrap();
            let mut buf = [0u8; 512];
            let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
            Ok::<(String, SocketAddr), String>((
                String::from_utf8_lossy(&buf[..n]).to_string(),
                from,
            ))
        })
        .join()
        .unwrap();
    let asked_from = server.join().unwrap().expect("the app got the query");
    // The app saw the router (masqueraded), not the client.
    assert_eq!(asked_from.ip(), Ipv4Addr::new(192, 168, 1, 1));
    let (answer, from) = got.expect("the LAN client got an answer");
    assert_eq!(answer, "answer");
    assert_eq!(from, SocketAddr::from(([192, 168, 1, 1], 53)));
    nf.remove("eu-1");
}

#[test]
fn a_bridged_microvms_tap_is_a_port_of_the_lan_bridge_without_an_address() {
    use cpevisor_agent::supervise::net::{delete_tap, guest_link, LanLink};
    if can_run(false).is_none() || !Path::new("/dev/net/tun").exists() {
        return;
    }
    // SAFETY: unshare of the network namespace affects this thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let lan = LanLink {
        bridge: "br-lan0".into(),
        addr: Ipv4Addr::new(192, 168, 1, 200),
        prefix: 24,
        gateway: Ipv4Addr::new(192, 168, 1, 1),
    };
    // No LAN bridge: refused, naming it, and no tap left.
    let e = guest_link("eu-9", Some(&lan), None).unwrap_err();
    assert!(e.to_string().contains("br-lan0 does not exist"), "{e}");
    assert!(!sh("ip -o link").contains("cpv-eu-9"));

    sh("ip link add br-lan0 type bridge && ip addr add 192.168.1.1/24 dev br-lan0");
    // The ExecEnv's app network is not used for a bridged app.
    let base = Some(Ipv4Addr::new(10, 100, 0, 0));
    let (tap, words) = guest_link("eu-9", Some(&lan), base).unwrap().unwrap();
    assert_eq!(tap, "cpv-eu-9");
    assert!(words.contains("cpevisor.ip=192.168.1.200/24 cpevisor.gw=192.168.1.1"));
    let ports = sh("ip -o link show master br-lan0");
    assert!(ports.contains("cpv-eu-9"), "{ports}");
    let addrs = sh("ip -4 -o addr show dev cpv-eu-9");
    assert!(
        addrs.trim().is_empty(),
        "the host end has no address: {addrs}"
    );
    delete_tap(&tap).unwrap();
    assert!(!sh("ip -o link").contains("cpv-eu-9"));
}
