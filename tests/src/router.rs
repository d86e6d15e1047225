//! Router boards with a WAN and a LAN side (the profiles' `[network]`: qemu-malta-mipsel with
//! jail apps, qemu-virt-a53 with microVM apps) and the DNS filter app on them: what
//! tests/tests/net_in_board.rs and the `net` bench group share.
//!
//! The host is the LAN client: UDP ports of the router's LAN address are forwarded from
//! 127.0.0.1 ([`BootOptions::lan_udp`]). The board's firmware runs no resolver of its own, so
//! a resolver stands in for the filter's upstream: on the jail board a dnsmasq started from the
//! installed filter's own files on the router ([`start_dnsmasq`], OpenWrt's resolver is dnsmasq
//! too); for a microVM filter, whose files the board cannot run, Debian's dnsmasq for the host
//! on the WAN side, as an ISP's resolver ([`HostResolver`]).

use crate::agent::{app_logs, eu_of, wait_agent, wait_eu_status, Flash};
use crate::dns::resolve;
use crate::firmware::workspace_root;
use crate::{BoardVm, BootOptions};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The router board with jail apps.
pub const BOARD: &str = "qemu-malta-mipsel";
/// The router board with microVM apps (the default board).
pub const KVM_BOARD: &str = "qemu-virt-a53";
/// The DNS filter's microVM package (`scripts/sample-app.sh dns-filter aarch64`).
pub const KVM_FILTER_PACKAGE: &str = "dns-filter-kvm-aarch64-1.0.cpkg";
/// The router's LAN address (the profile's `network.lan_address`).
pub const ROUTER_LAN: &str = "192.168.1.1";
/// A name on the DNS filter's default block list (rootfs/files/dns-filter/blocklist).
pub const BLOCKED: &str = "ads.example";
/// The DNS filter's package file for the board's arch (`scripts/sample-app.sh dns-filter`).
pub const FILTER_PACKAGE: &str = "dns-filter-jail-mipsel-1.0.cpkg";

const BOOT: Duration = Duration::from_secs(300);
const AGENT: Duration = Duration::from_secs(120);
const ACTIVE: Duration = Duration::from_secs(240);

/// Boots router `board` on `flash` with the router's LAN UDP ports `lan_udp` and WAN TCP ports
/// `forward` forwarded from the host; checks the init's LAN line and waits for the agent.
pub fn boot_router(
    board: &str,
    flash: &Flash,
    lan_udp: Vec<u16>,
    forward: Vec<u16>,
) -> Result<BoardVm, String> {
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        lan_udp,
        forward,
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts)?;
    vm.wait_ready(BOOT)?;
    let lan = format!("CPEVISOR-LAN ok=yes wan=eth0 bridge=br-lan addr={ROUTER_LAN}/24 ports=eth1");
    if !vm.transcript().contains(&lan) {
        return Err(format!("the init did not report {lan:?}"));
    }
    wait_agent(&mut vm, AGENT)?;
    Ok(vm)
}

/// The EUID of app `name` once it is Active.
pub fn active_eu(vm: &mut BoardVm, name: &str) -> Result<String, String> {
    let list = wait_agent(vm, AGENT)?;
    let eu = eu_of(&list, name).ok_or_else(|| format!("no {name} EU: {list}"))?;
    let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
    wait_eu_status(vm, &eu_id, "Active", ACTIVE)
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    Ok(eu_id)
}

/// The directory of the installed app's root file system that holds `file` (a path inside it,
/// `usr/sbin/dnsmasq`).
pub fn app_root(vm: &mut BoardVm, file: &str) -> Result<String, String> {
    let out = vm.run_ok(
        &format!(
            "f=$(find /data/cpevisor -type f -path '*/rootfs/{file}' | head -1); echo ROOT=${{f%/{file}}}"
        ),
        Duration::from_secs(60),
    )?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("ROOT="))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("no installed app's rootfs holds {file}:\n{out}"))
}

/// The default gateway in the network namespace of process `pid` (an app's: the router).
pub fn gateway_of(vm: &mut BoardVm, pid: u32) -> Result<String, String> {
    let out = vm.run_ok(
        &format!("nsenter -t {pid} -n ip -4 route show default"),
        Duration::from_secs(30),
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| format!("no default route in the namespace of {pid}:\n{out}"))
}

/// Starts dnsmasq from the app rootfs `root` (its own loader and libraries) on the board itself,
/// outside any jail, with `args` (its own daemon: it forks, writes `/run/<name>.pid`, logs to
/// `/run/<name>.log`), and checks a second later that it is still running.
pub fn start_dnsmasq(vm: &mut BoardVm, root: &str, name: &str, args: &str) -> Result<(), String> {
    launch_dnsmasq(
        vm,
        root,
        name,
        &format!("{args} && sleep 1 && kill -0 $(cat /run/{name}.pid)"),
    )
}

/// Like [`start_dnsmasq`] without the check: returns as soon as dnsmasq has forked, which it
/// does after binding its sockets (what the `net` bench times).
pub fn launch_dnsmasq(vm: &mut BoardVm, root: &str, name: &str, args: &str) -> Result<(), String> {
    vm.run_ok(
        &format!(
            "R={root}; $R/lib/ld.so.1 --library-path $R/lib/mipsel-linux-gnu:$R/usr/lib/mipsel-linux-gnu \
             $R/usr/sbin/dnsmasq --no-hosts --no-poll --bind-interfaces --user=root --group= \
             --pid-file=/run/{name}.pid --log-facility=/run/{name}.log {args}"
        ),
        Duration::from_secs(60),
    )
    .map(|_| ())
}

/// What the board's network looks like when a query got no answer: addresses, routes, and
/// per-hook packet counters while one more query goes through.
pub fn diagnose(vm: &mut BoardVm, dns: &str, app: &str) -> String {
    // Counters keyed by where a packet is and which way it goes (the client is the LAN's
    // QEMU host address, .2).
    let rules = [
        ("pre", "ip saddr 192.168.1.2 udp dport 53"),
        ("pre", format!("ip saddr {app} udp sport 1053").leak()),
        ("pre", "ip saddr 192.168.1.2 ip protocol icmp"),
        ("fw", format!("ip daddr {app} udp dport 1053").leak()),
        ("fw", format!("ip saddr {app} udp sport 1053").leak()),
        ("post", format!("ip daddr {app} udp dport 1053").leak()),
        ("post", "ip daddr 192.168.1.2 udp sport 53"),
        ("post", "ip daddr 192.168.1.2"),
        ("in", "udp dport '{ 53, 1053 }'"),
    ];
    let mut cmd = String::from(
        "nft add table inet diag; \
         nft add chain inet diag pre '{ type filter hook prerouting priority -300; }'; \
         nft add chain inet diag fw '{ type filter hook forward priority -300; }'; \
         nft add chain inet diag in '{ type filter hook input priority -300; }'; \
         nft add chain inet diag post '{ type filter hook postrouting priority 300; }'; ",
    );
    for (chain, rule) in rules {
        cmd.push_str(&format!("nft add rule inet diag {chain} {rule} counter; "));
    }
    cmd.push_str("true");
    let setup = vm.run_ok(&cmd, Duration::from_secs(60)).unwrap_or_default();
    let _ = resolve(dns, "diag.example", Duration::from_secs(5));
    let out = vm
        .run_ok(
            "ip -4 addr; ip route; ip link; nft list ruleset; nft delete table inet diag; \
             sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.br-lan.rp_filter",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| format!("(no diagnosis: {e})"));
    format!("{setup}\n{out}")
}

/// The microVM filter's package re-signed as `<name>.cpkg` in `dir` (target/packages), with the
/// host's resolver on `port` (QEMU's host address on the WAN side, 10.0.2.2) as its upstream;
/// `open` also allows that port in its egress policy, otherwise the package's own policy (DNS
/// servers on port 53) stands and the filter's queries to it are dropped. Returns the file name.
pub fn kvm_filter_with_upstream(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    open: bool,
) -> Result<String, String> {
    crate::packages::repack(
        dir,
        KVM_FILTER_PACKAGE.trim_end_matches(".cpkg"),
        name,
        |c| {
            let cmdline = c["cmdline"].as_str().unwrap_or_default().to_string();
            c["cmdline"] =
                serde_json::json!(format!("{cmdline} cpevisor.dns_upstream=10.0.2.2#{port}"));
            if open {
                if let Some(egress) = c["network"]["egress"].as_array_mut() {
                    egress.push(serde_json::json!(
                        {"destination": "10.0.2.2/32", "protocol": "udp", "ports": [port]}
                    ));
                }
            }
        },
    )
}

/// Debian's dnsmasq for the host (the DNS filter's x86_64 tree, scripts/dns-filter-tree.sh)
/// on 127.0.0.1, which a board reaches at QEMU's host address 10.0.2.2 through its WAN: the
/// upstream of a microVM filter. Answers the names given from a local zone, nothing else (no
/// resolv.conf: nothing leaves this machine). Stopped when dropped.
pub struct HostResolver {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl HostResolver {
    /// Starts it with `zone` (name, address) and waits until it answers.
    pub fn start(zone: &[(&str, Ipv4Addr)]) -> Result<HostResolver, String> {
        let root = workspace_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/dns-filter-tree.sh"))
            .arg("x86_64")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/dns-filter-tree.sh: {e}"))?;
        if !out.status.success() {
            return Err("scripts/dns-filter-tree.sh x86_64 failed (see above)".into());
        }
        let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("tree");
        // A port free now; dnsmasq binds it a moment later (nothing else here takes ports).
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| format!("no free UDP port: {e}"))?
            .port();
        let log =
            std::env::temp_dir().join(format!("host-resolver-{}-{port}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(tree.join("lib64/ld-linux-x86-64.so.2"));
        cmd.arg("--library-path")
            .arg(format!(
                "{}:{}",
                tree.join("lib/x86_64-linux-gnu").display(),
                tree.join("usr/lib/x86_64-linux-gnu").display()
            ))
            .arg(tree.join("usr/sbin/dnsmasq"))
            .args([
                "--keep-in-foreground",
                "--log-facility=-",
                "--log-queries",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--user=root",
                "--group=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(zone.iter().map(|(n, a)| format!("--address=/{n}/{a}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().map_err(|e| format!("dnsmasq: {e}"))?;
        let resolver = HostResolver { child, port, log };
        let server = format!("127.0.0.1:{port}");
        let Some((name, _)) = zone.first() else {
            return Ok(resolver);
        };
        resolve(&server, name, Duration::from_secs(10))
            .map_err(|e| format!("the host resolver does not answer: {e}\n{}", resolver.log()))?;
        Ok(resolver)
    }

    /// How many A queries for `name` it has been asked (its own check at start included).
    pub fn queries_for(&self, name: &str) -> usize {
        let asked = format!("query[A] {name} ");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&asked))
            .count()
    }

    /// What it logged (the queries it got), at most the last 4 KiB.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }
}

impl Drop for HostResolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
