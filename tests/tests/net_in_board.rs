//! Apps that serve the home, end to end on qemu-malta-mipsel (apps in jails): the board is a
//! router with a WAN side (eth0) and a LAN bridge (br-lan, the router at 192.168.1.1) whose port
//! eth1 is a QEMU user network of its own; the host is the LAN client there, its DNS queries
//! forwarded to the router's address, port 53 (boards/qemu-malta-mipsel.toml `[network]`).
//!
//! The agent installs the DNS filter (Debian's dnsmasq for mipsel, rootfs/files/dns-filter/),
//! whose package asks for the LAN's DNS to be intercepted; the board's own `nft` (Debian's, in
//! the firmware) holds the rules in cpevisor's table. The client asks the router's address, not
//! the app's: a blocked name gets 0.0.0.0, an allowed one the upstream's answer, forwarded by
//! the filter to its gateway (the router). The router's own resolver is stood in for by a second
//! dnsmasq started from the installed app's files with a local zone (the board firmware runs no
//! resolver of its own; OpenWrt's is dnsmasq too). Egress outside the app's policy (TCP to the
//! host's HTTP server) is dropped while the board itself reaches it. After uninstall the
//! board's ruleset is exactly what it was before the install.
//!
//! The same on qemu-virt-a53 with the filter as a microVM (Debian's dnsmasq for arm64 on the
//! minimal guest kernel), its upstream Debian's dnsmasq for the host on the WAN side, as an
//! ISP's resolver ([`HostResolver`]). There egress is checked through the filter itself: with
//! its package's policy (DNS servers on port 53 only) its queries to the resolver's other
//! port are dropped and the allowed name gets no answer; with that port allowed, it does.
//!
//! On both, a bridged app (`"network": {"mode": "bridged"}`) then gets the first address of the
//! board's `network.app_range` on the LAN and the router reaches it there; the jail's also
//! reaches the LAN client directly while its WAN egress stays closed.
//!
//! Needs `make firmware BOARDS="qemu-malta-mipsel qemu-virt-a53"` (the firmware with nft, and
//! the DNS filter's packages `scripts/sample-app.sh dns-filter mipsel aarch64`), so the tests
//! are `#[ignore]`d for a plain `cargo test`.

use cpevisor_e2e::agent::{
    app_address, app_logs, fetch_status_page, install, reboot, without_kernel_messages, Flash,
    HttpServer,
};
use cpevisor_e2e::bench::jail::{jail_pid, package_file, JailPackages};
use cpevisor_e2e::dns::resolve;
use cpevisor_e2e::firmware::workspace_root;
use cpevisor_e2e::packages::repack;
use cpevisor_e2e::router::{
    active_eu, app_root, boot_router, diagnose, gateway_of, kvm_filter_with_upstream,
    start_dnsmasq, HostResolver, BLOCKED, BOARD, KVM_BOARD, KVM_FILTER_PACKAGE,
};
use cpevisor_e2e::vm::kernel_complaints;
use cpevisor_e2e::BoardVm;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// ~14 MB (dnsmasq with Debian's library closure) over QEMU user networking, verified and
/// unpacked by an emulated MIPS CPU.
const INSTALL: Duration = Duration::from_secs(900);
const ANSWER: Duration = Duration::from_secs(60);
/// What the stand-in for the router's resolver answers for the allowed name.
const ALLOWED: (&str, Ipv4Addr) = ("allowed.example", Ipv4Addr::new(10, 9, 8, 7));
/// The first address of the boards' `network.app_range`: a bridged app's.
const LAN_APP: &str = "192.168.1.200";
/// The LAN client (the host, through the LAN port's QEMU user network).
const LAN_CLIENT: &str = "192.168.1.2";
/// The status app's port, mapped from the router's WAN port of the same number.
const STATUS_PORT: u16 = 8080;

/// Boots the router with the LAN's DNS and the WAN's `STATUS_PORT` forwarded from the host.
fn boot(flash: &Flash) -> BoardVm {
    boot_on(BOARD, flash)
}

fn boot_on(board: &str, flash: &Flash) -> BoardVm {
    boot_router(board, flash, vec![53], vec![STATUS_PORT]).unwrap()
}

/// `GET /status` from the host through the WAN's forwarded port, retried until `ANSWER`.
fn status_via_wan(vm: &BoardVm) -> Result<String, String> {
    let port = vm
        .host_port(STATUS_PORT)
        .expect("the WAN port is forwarded");
    let deadline = std::time::Instant::now() + ANSWER;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let got = (|| -> std::io::Result<String> {
            let mut c = TcpStream::connect(("127.0.0.1", port))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            c.write_all(b"GET /status/ HTTP/1.0\r\nHost: router\r\n\r\n")?;
            let mut page = String::new();
            c.take(64 << 10).read_to_string(&mut page)?;
            Ok(page)
        })();
        match got {
            Ok(page) if page.contains("app=status") => return Ok(page),
            Ok(page) => last = page,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(format!(
        "no status page through the WAN port {port}: {last}"
    ))
}

/// Runs `cmd` on the board and returns its output; panics naming `what` on failure.
fn board(vm: &mut BoardVm, what: &str, cmd: &str) -> String {
    vm.run_ok(cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The board's whole nftables ruleset, as `nft list ruleset` prints it.
fn ruleset(vm: &mut BoardVm) -> String {
    without_kernel_messages(&board(
        vm,
        "nft list ruleset",
        "nft list ruleset; echo NFT-RC=$?",
    ))
}

#[test]
#[ignore = "needs `make firmware BOARDS=qemu-malta-mipsel`; boots an emulated MIPS board"]
fn dns_filter_serves_the_lan_on_qemu_malta_mipsel() {
    let packages = JailPackages::find(BOARD).unwrap();
    let filter = package_file("dns-filter", &packages.arch, "1.0");
    assert!(
        packages.dir.join(&filter).is_file(),
        "{filter} is missing: `make firmware BOARDS={BOARD}` builds it"
    );
    // The status app with a WAN port mapping, its package otherwise the sample's.
    let mapped = packages
        .variant(&format!("status-wan-{}", std::process::id()), |c| {
            c["network"] = json!({"port_mappings": [{"protocol": "tcp",
                "external_port": STATUS_PORT, "internal_port": STATUS_PORT, "interface": "wan"}]});
        })
        .unwrap();
    let server = HttpServer::serve(&packages.dir).unwrap();
    let flash = Flash::blank("net-malta", 256).unwrap();
    let mut vm = boot(&flash);
    let before = ruleset(&mut vm);
    assert!(
        before.contains("NFT-RC=0"),
        "nft does not run on the board:\n{before}"
    );
    assert!(!before.contains("table inet cpevisor"), "{before}");

    // The router's LAN MAC is the LAN port's and stays so while apps' links come and go.
    let lan_mac = || {
        "cat /sys/class/net/eth1/address /sys/class/net/br-lan/address \
         /sys/class/net/br-lan/addr_assign_type"
    };
    let macs = board(&mut vm, "the LAN's MAC", lan_mac());
    let mut dus = Vec::new();
    for file in [&filter, &mapped] {
        let url = format!("http://10.0.2.2:{}/{file}", server.port);
        let du = install(&mut vm, &url, INSTALL).unwrap().outcome.unwrap();
        dus.push(du["uuid"].as_str().unwrap().to_string());
    }
    let eu_id = active_eu(&mut vm, "dns-filter").unwrap();
    active_eu(&mut vm, "status").unwrap();
    let after_apps = board(&mut vm, "the LAN's MAC with apps", lan_mac());
    let words: Vec<&str> = after_apps.split_whitespace().collect();
    assert!(
        words.len() >= 3 && words[0] == words[1] && words[2] == "3",
        "br-lan's MAC is not pinned to eth1's (address, bridge address, assign type 3 = set):\n\
         before the apps:\n{macs}\nwith them:\n{after_apps}"
    );
    let pid = jail_pid(&mut vm, &eu_id, "dnsmasq")
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));

    // The router's resolver: dnsmasq from the app's own files on the router's address on the
    // apps' bridge (the filter's upstream), answering the allowed name from a local zone.
    let root = app_root(&mut vm, "usr/sbin/dnsmasq").unwrap();
    let gateway = gateway_of(&mut vm, pid).unwrap();
    let (name, addr) = ALLOWED;
    start_dnsmasq(
        &mut vm,
        &root,
        "router-dns",
        &format!("--no-resolv --listen-address={gateway} --port=53 --address=/{name}/{addr}"),
    )
    .unwrap();

    let rules = board(&mut vm, "cpevisor's table", "nft list table inet cpevisor");
    let app_addr = cpevisor_e2e::bench::jail::jail_address(&mut vm, pid).unwrap();
    for want in [
        "iifname \"br-lan\"".to_string(),
        format!("dnat ip to {app_addr}:1053"),
    ] {
        assert!(
            rules.contains(&want),
            "no {want:?} in cpevisor's table:\n{rules}"
        );
    }

    // The LAN client asks the router's address.
    let dns = format!(
        "127.0.0.1:{}",
        vm.lan_udp_port(53).expect("the LAN's port 53 is forwarded")
    );
    let blocked = resolve(&dns, BLOCKED, ANSWER).unwrap_or_else(|e| {
        let why = diagnose(&mut vm, &dns, &app_addr);
        panic!("{e}\n{why}\n{}", app_logs(&mut vm, &eu_id))
    });
    assert_eq!(
        blocked.addresses,
        vec![Ipv4Addr::UNSPECIFIED],
        "{blocked:?}"
    );
    let allowed = resolve(&dns, name, ANSWER).unwrap_or_else(|e| {
        let log = board(&mut vm, "resolver log", "tail -c 2000 /run/router-dns.log");
        panic!(
            "{e}\n{}\nrouter's resolver:\n{log}",
            app_logs(&mut vm, &eu_id)
        )
    });
    assert_eq!(allowed.addresses, vec![addr], "{allowed:?}");

    // Egress outside the app's policy (udp 53 only) is dropped; the board itself gets through.
    // (`timeout`, not `wget -T`: busybox 1.35's wget segfaults with -T.)
    let host = format!("http://10.0.2.2:{}/{filter}", server.port);
    let from_board = board(
        &mut vm,
        "the board fetches from the host",
        &format!("timeout 20 wget -q -O /dev/null {host}; echo WGET-RC=$?"),
    );
    assert!(from_board.contains("WGET-RC=0"), "{from_board}");
    let from_app = board(
        &mut vm,
        "the app fetches from the host",
        &format!("nsenter -t {pid} -n timeout 10 wget -q -O /dev/null {host}; echo WGET-RC=$?"),
    );
    assert!(
        from_app.contains("WGET-RC=") && !from_app.contains("WGET-RC=0"),
        "the app reached the host outside its egress policy:\n{from_app}"
    );

    // A WAN-side port mapping reaches the status app's HTTP.
    let page = status_via_wan(&vm)
        .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&mut vm, &dns, &app_addr)));
    assert!(page.contains("backend=jail"), "{page}");

    // A client that keeps asking from one source port while the filter is stopped leaves the
    // router a flow tracked without the filter's DNAT, which each retry keeps alive; it is
    // answered once the filter is back because the agent forgets that flow when the rules come
    // in. One lookup, one socket, asking every second from before the stop to after the start.
    board(
        &mut vm,
        "stop the filter",
        &format!("cpevisorctl stop {eu_id}"),
    );
    let asking = {
        let dns = dns.clone();
        std::thread::spawn(move || resolve(&dns, BLOCKED, ANSWER))
    };
    std::thread::sleep(Duration::from_secs(4));
    assert!(!asking.is_finished(), "answered with the filter stopped");
    board(
        &mut vm,
        "start the filter",
        &format!("cpevisorctl start {eu_id}"),
    );
    let back = asking.join().unwrap().unwrap_or_else(|e| {
        let why = board(
            &mut vm,
            "conntrack",
            "cat /proc/net/nf_conntrack 2>&1 | head -20",
        );
        panic!(
            "no answer once the filter is back: {e}\n{why}\n{}",
            app_logs(&mut vm, &eu_id)
        )
    });
    assert_eq!(back.addresses, vec![Ipv4Addr::UNSPECIFIED], "{back:?}");
    board(
        &mut vm,
        "stop the router's resolver",
        "kill $(cat /run/router-dns.pid)",
    );

    // After a reboot (plain `reboot`, as a router) the rules are back and the filter answers.
    let console = reboot(vm).unwrap();
    assert!(
        kernel_complaints(&console).is_empty(),
        "{:?}",
        kernel_complaints(&console)
    );
    let mut vm = boot(&flash);
    active_eu(&mut vm, "dns-filter").unwrap();
    active_eu(&mut vm, "status").unwrap();
    let dns = format!("127.0.0.1:{}", vm.lan_udp_port(53).unwrap());
    let blocked = resolve(&dns, BLOCKED, ANSWER)
        .unwrap_or_else(|e| panic!("after the reboot: {e}\n{}", app_logs(&mut vm, &eu_id)));
    assert_eq!(
        blocked.addresses,
        vec![Ipv4Addr::UNSPECIFIED],
        "{blocked:?}"
    );
    status_via_wan(&vm).unwrap();

    // Uninstalled, the apps leave the ruleset exactly as it was before them.
    for du in &dus {
        uninstall(&mut vm, du);
    }
    let after = ruleset(&mut vm);
    assert_eq!(
        after, before,
        "the ruleset after uninstall differs from before the install"
    );

    // A bridged app is a device of the LAN: its own address from the board's app_range, the
    // router reaching it across br-lan, and it reaching the LAN's client directly (bridged,
    // not routed), while the WAN stays closed to it (its default egress: replies only).
    let bridged = packages
        .variant(&format!("status-lan-{}", std::process::id()), |c| {
            c["network"] = json!({"mode": "bridged"});
        })
        .unwrap();
    let url = format!("http://10.0.2.2:{}/{bridged}", server.port);
    let du = install(&mut vm, &url, INSTALL).unwrap().outcome.unwrap();
    let eu_id = active_eu(&mut vm, "status").unwrap();
    let pid = jail_pid(&mut vm, &eu_id, "httpd")
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    let addr = cpevisor_e2e::bench::jail::jail_address(&mut vm, pid).unwrap();
    assert_eq!(addr, LAN_APP, "the bridged app's address");
    let page = board(
        &mut vm,
        "the router asks the bridged app",
        &format!("timeout 20 wget -q -O - http://{addr}:{STATUS_PORT}/status/"),
    );
    assert!(page.contains("app=status"), "{page}");
    let fetch = |vm: &mut BoardVm, host: &str| {
        board(
            vm,
            "the bridged app fetches",
            &format!(
                "nsenter -t {pid} -n timeout 10 wget -q -O /dev/null http://{host}:{}/{bridged}; \
                 echo WGET-RC=$?",
                server.port
            ),
        )
    };
    let lan = fetch(&mut vm, LAN_CLIENT);
    assert!(
        lan.contains("WGET-RC=0"),
        "the bridged app does not reach the LAN client:\n{lan}"
    );
    let wan = fetch(&mut vm, "10.0.2.2");
    assert!(
        wan.contains("WGET-RC=") && !wan.contains("WGET-RC=0"),
        "the bridged app reached the WAN outside its egress policy:\n{wan}"
    );
    uninstall(&mut vm, du["uuid"].as_str().unwrap());
    assert_eq!(
        ruleset(&mut vm),
        before,
        "the ruleset after the bridged app"
    );
    for file in [&mapped, &bridged] {
        let _ = std::fs::remove_file(packages.dir.join(file));
    }
}

/// Uninstalls DU `uuid` with cpevisorctl.
fn uninstall(vm: &mut BoardVm, uuid: &str) {
    let out = board(
        vm,
        "uninstall",
        &format!("cpevisorctl uninstall {uuid}; echo CTL-RC=$?"),
    );
    assert!(out.contains("CTL-RC=0"), "{out}");
}

/// The LAN client's view through the router's address: `BLOCKED` gets 0.0.0.0, and the allowed
/// name the upstream's address (`reaches_upstream`) or no address at all.
fn lan_lookups(vm: &mut BoardVm, eu_id: &str, upstream: &HostResolver, reaches_upstream: bool) {
    let dns = format!(
        "127.0.0.1:{}",
        vm.lan_udp_port(53).expect("the LAN's port 53 is forwarded")
    );
    let blocked =
        resolve(&dns, BLOCKED, ANSWER).unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, eu_id)));
    assert_eq!(
        blocked.addresses,
        vec![Ipv4Addr::UNSPECIFIED],
        "{blocked:?}"
    );
    let (name, addr) = ALLOWED;
    if reaches_upstream {
        let allowed = resolve(&dns, name, ANSWER).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}\nupstream:\n{}",
                app_logs(vm, eu_id),
                upstream.log()
            )
        });
        assert_eq!(allowed.addresses, vec![addr], "{allowed:?}");
    } else {
        // The filter forwards and its packets are dropped: a timeout or SERVFAIL, no address,
        // and nothing of the query reached the upstream.
        let asked = upstream.queries_for(name);
        let got = resolve(&dns, name, Duration::from_secs(8));
        assert!(
            got.as_ref().map_or(true, |a| a.addresses.is_empty()),
            "{name} resolved outside the filter's egress policy: {got:?}"
        );
        assert_eq!(
            upstream.queries_for(name),
            asked,
            "the upstream got the filter's query outside its egress policy:\n{}",
            upstream.log()
        );
    }
}

#[test]
#[ignore = "needs `make firmware BOARDS=qemu-virt-a53`; boots an emulated aarch64 board with KVM inside"]
fn dns_filter_serves_the_lan_as_a_microvm_on_qemu_virt_a53() {
    let dir = workspace_root().join("target/packages");
    assert!(
        dir.join(KVM_FILTER_PACKAGE).is_file(),
        "{KVM_FILTER_PACKAGE} is missing: `make firmware BOARDS={KVM_BOARD}` builds it"
    );
    let upstream = HostResolver::start(&[ALLOWED]).unwrap();
    let tag = std::process::id();
    let closed = kvm_filter_with_upstream(
        &dir,
        &format!("dns-filter-closed-{tag}"),
        upstream.port,
        false,
    )
    .unwrap();
    let open =
        kvm_filter_with_upstream(&dir, &format!("dns-filter-open-{tag}"), upstream.port, true)
            .unwrap();
    let mapped = repack(&dir, "status-1.0", &format!("status-wan-kvm-{tag}"), |c| {
        c["network"] = json!({"port_mappings": [{"protocol": "tcp",
            "external_port": STATUS_PORT, "internal_port": 80, "interface": "wan"}]});
    })
    .unwrap();
    let server = HttpServer::serve(&dir).unwrap();
    let url = |file: &str| format!("http://10.0.2.2:{}/{file}", server.port);
    let flash = Flash::blank("net-a53", 256).unwrap();
    let mut vm = boot_on(KVM_BOARD, &flash);
    let before = ruleset(&mut vm);
    assert!(
        before.contains("NFT-RC=0"),
        "nft does not run on the board:\n{before}"
    );
    assert!(!before.contains("table inet cpevisor"), "{before}");

    // The package's own egress policy: the filter's queries to the upstream's port are dropped.
    let du = install(&mut vm, &url(&closed), INSTALL)
        .unwrap()
        .outcome
        .unwrap();
    let eu_id = active_eu(&mut vm, "dns-filter").unwrap();
    lan_lookups(&mut vm, &eu_id, &upstream, false);
    uninstall(&mut vm, du["uuid"].as_str().unwrap());

    // That port allowed: the allowed name is forwarded and answered.
    let mut dus = Vec::new();
    for file in [&open, &mapped] {
        let du = install(&mut vm, &url(file), INSTALL)
            .unwrap()
            .outcome
            .unwrap();
        dus.push(du["uuid"].as_str().unwrap().to_string());
    }
    let eu_id = active_eu(&mut vm, "dns-filter").unwrap();
    active_eu(&mut vm, "status").unwrap();
    let rules = board(&mut vm, "cpevisor's table", "nft list table inet cpevisor");
    assert!(
        rules.contains("iifname \"br-lan\"") && rules.contains(":53 comment"),
        "no DNS interception in cpevisor's table:\n{rules}"
    );
    lan_lookups(&mut vm, &eu_id, &upstream, true);
    let page = status_via_wan(&vm).unwrap();
    assert!(
        page.contains("backend=kvm") || page.contains("app=status"),
        "{page}"
    );

    // After a reboot the rules are back and the filter answers.
    let console = reboot(vm).unwrap();
    assert!(
        kernel_complaints(&console).is_empty(),
        "{:?}",
        kernel_complaints(&console)
    );
    let mut vm = boot_on(KVM_BOARD, &flash);
    let eu_id = active_eu(&mut vm, "dns-filter").unwrap();
    active_eu(&mut vm, "status").unwrap();
    lan_lookups(&mut vm, &eu_id, &upstream, true);
    status_via_wan(&vm).unwrap();

    for du in &dus {
        uninstall(&mut vm, du);
    }
    let after = ruleset(&mut vm);
    assert_eq!(
        after, before,
        "the ruleset after uninstall differs from before the install"
    );

    // A bridged microVM: its tap a port of br-lan, its LAN address from the board's app_range,
    // the router reaching it there.
    let bridged = repack(&dir, "status-1.0", &format!("status-lan-kvm-{tag}"), |c| {
        c["network"] = json!({"mode": "bridged"});
    })
    .unwrap();
    let du = install(&mut vm, &url(&bridged), INSTALL)
        .unwrap()
        .outcome
        .unwrap();
    let eu_id = active_eu(&mut vm, "status").unwrap();
    let addr = app_address(&mut vm, &eu_id).unwrap();
    assert_eq!(addr, LAN_APP, "the bridged microVM's address");
    let page = fetch_status_page(&mut vm, &addr, ANSWER)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    assert!(page.contains("app=status"), "{page}");
    uninstall(&mut vm, du["uuid"].as_str().unwrap());
    assert_eq!(
        ruleset(&mut vm),
        before,
        "the ruleset after the bridged app"
    );
    for file in [&closed, &open, &mapped, &bridged] {
        let _ = std::fs::remove_file(dir.join(file));
    }
}
