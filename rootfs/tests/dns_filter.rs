//! The dns-filter app with real parts, on this host: the x86_64 jail rootfs that
//! `cpevisor-rootfs jail-app --app dns-filter` builds from Debian's dnsmasq
//! (scripts/dns-filter-tree.sh), run with the package's command by the agent's own jail runner
//! (`cpevisord jail-exec`: namespaces, no capabilities, seccomp, read-only root, its veth on a
//! bridge) in a fresh network namespace. The upstream (the router's resolver) is a second
//! dnsmasq from the same tree on the bridge's address, the jail's default gateway, serving a
//! local zone; the client is busybox nslookup. An allowed name gets the upstream's answer
//! through the filter; a blocked name gets 0.0.0.0 / :: and nothing of it is forwarded; a name
//! added to /data/blocklist is blocked after a restart.
//!
//! Ignored by default: it needs root (namespaces, the jail), the private apt view of `make
//! setup` and, on the first run, the network to fetch dnsmasq-base and its libraries (~7 MB).
//! Run it with `make dns-filter-test` (about 15 s once the packages are cached).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The jail's network: the bridge's address (the gateway, the router) and the app's.
const GATEWAY: &str = "10.74.0.1";
const APP_IP: &str = "10.74.0.22";
/// The filter, as the jail package runs it (`--port 1053`: a jail cannot bind 53).
const FILTER: &str = "10.74.0.22:1053";
const COMMAND: &str = r#"["/bin/dns-filter", "--port", "1053"]"#;
/// The upstream's zone.
const UPSTREAM_ZONE: &[&str] = &[
    "--address=/allowed.test/192.0.2.10",
    "--address=/allowed.test/2001:db8::10",
    "--address=/later.test/192.0.2.20",
    // The default list blocks blocked.invalid: a filter that forwards it gets these back.
    "--address=/blocked.invalid/192.0.2.66",
    "--txt-record=blocked.invalid,leaked",
    "--txt-record=allowed.test,forwarded",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cache() -> PathBuf {
    match std::env::var_os("CPEVISOR_CACHE").filter(|c| !c.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cpevisor"),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A process holding a fresh network namespace; the test enters it with nsenter.
struct Namespace {
    holder: Child,
    pid: u32,
}

impl Namespace {
    fn new() -> Namespace {
        let mut holder = Command::new("unshare")
            .args(["--net", "--fork", "--kill-child", "sh", "-c"])
            .arg("ip link set lo up && echo $$ && exec sleep 600")
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("namespace holder said {line:?}"));
        Namespace { holder, pid }
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "--net", "--"])
            .arg(program);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A server in the namespace, its output in `log`; SIGTERM, then SIGKILL, when stopped.
struct Server(Child);

impl Server {
    fn start(mut cmd: Command, log: &Path) -> Server {
        let log = fs::File::create(log).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Server(child)
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        // nsenter execs the program: this is the runner (or dnsmasq) itself, which forwards
        // SIGTERM to the app and ends with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The agent's daemon, whose `jail-exec` is the jail runner: another package's binary, so
/// cargo gives this test no `CARGO_BIN_EXE_` for it. Built (a no-op when up to date) into this
/// test's own target directory.
fn cpevisord() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "cpevisor-agent",
        "--bin",
        "cpevisord",
    ])
    .arg("--manifest-path")
    .arg(repo().join("Cargo.toml"))
    .arg("--target-dir")
    .arg(profile_dir.parent().unwrap());
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    run(&mut cmd);
    profile_dir.join("cpevisord")
}

/// `nslookup -type=TYPE NAME SERVER` in the namespaces: the answers (the values after
/// `Address:` past the server's own, or `text =`), or the failure line.
fn lookup(ns: &Namespace, busybox: &Path, qtype: &str, name: &str, server: &str) -> Vec<String> {
    let out = ns
        .command(busybox)
        .args(["nslookup", &format!("-type={qtype}"), name, server])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut answers = Vec::new();
    for line in text.lines().skip_while(|l| !l.trim().is_empty()) {
        let line = line.trim();
        if let Some(a) = line.strip_prefix("Address:") {
            answers.push(a.trim().to_string());
        } else if let Some((_, t)) = line.split_once("text = ") {
            answers.push(t.trim_matches('"').to_string());
        } else if line.starts_with("** server can't find") {
            answers.push(line.to_string());
        }
    }
    answers
}

/// Waits until `server` answers a lookup of the default list's blocked name at all.
fn wait_answering(ns: &Namespace, busybox: &Path, server: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while lookup(ns, busybox, "a", "blocked.invalid", server).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what} does not answer on {server}; its log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root, make setup's apt view and (first run) the network: make dns-filter-test"]
fn dns_filter_forwards_allowed_names_and_blocks_listed_ones() {
    let tree = run(Command::new("bash")
        .arg(repo().join("scripts/dns-filter-tree.sh"))
        .arg("x86_64"));
    let tree = PathBuf::from(tree.trim()).join("tree");
    let busybox = cache().join("busybox/amd64/busybox");
    assert!(
        busybox.is_file(),
        "{} missing: make setup",
        busybox.display()
    );
    let bb = busybox.as_path();
    let runner = cpevisord();

    let dir = std::env::temp_dir().join(format!("dns-filter-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let (app, root, data) = (dir.join("app"), dir.join("root"), dir.join("data"));
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&data).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_cpevisor-rootfs"))
        .args([
            "jail-app",
            "--arch",
            "x86_64",
            "--app",
            "dns-filter",
            "--tree",
        ])
        .arg(&tree)
        .arg("--out")
        .arg(&app));
    run(Command::new("tar")
        .arg("-xf")
        .arg(app.join("rootfs.tar"))
        .arg("-C")
        .arg(&root));
    // The runner's spec, as the agent writes it for the package (its memory_mib for /tmp).
    let spec = dir.join("jail.json");
    fs::write(
        &spec,
        format!(
            r#"{{"host_id": null, "eu_id": "eu-dns", "rootfs": "{}", "data_dir": "{}",
                "command": {COMMAND}, "env": ["PATH=/bin"], "tmp_size_mib": 20,
                "net": {{"bridge": "br-cpvdns", "gateway": "{GATEWAY}", "prefix_len": 16,
                         "host_if": "cpv-eu-dns", "app_ip": "{APP_IP}"}}}}"#,
            root.display(),
            data.display()
        ),
    )
    .unwrap();
    let ns = Namespace::new();
    let jail = |log: &Path| {
        let mut cmd = ns.command(&runner);
        cmd.arg("jail-exec").arg(&spec);
        Server::start(cmd, log)
    };
    let log1 = dir.join("filter-1.log");
    let mut filter = jail(&log1);

    // The upstream on the bridge's address (--bind-dynamic: the runner makes the bridge), from
    // the same tree through its own loader.
    let mut upstream = ns.command(&tree.join("lib64/ld-linux-x86-64.so.2"));
    upstream
        .arg("--library-path")
        .arg(format!(
            "{}:{}",
            tree.join("lib/x86_64-linux-gnu").display(),
            tree.join("usr/lib/x86_64-linux-gnu").display()
        ))
        .arg(tree.join("usr/sbin/dnsmasq"))
        .args([
            "--keep-in-foreground",
            "--log-facility=-",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--bind-dynamic",
            "--log-queries",
        ])
        .arg(format!("--listen-address={GATEWAY}"))
        .args(UPSTREAM_ZONE);
    let upstream_log = dir.join("upstream.log");
    let mut upstream = Server::start(upstream, &upstream_log);
    wait_answering(&ns, bb, GATEWAY, "the upstream", &upstream_log);
    // The upstream itself answers every name the filter must block or pass.
    assert_eq!(
        lookup(&ns, bb, "a", "blocked.invalid", GATEWAY),
        ["192.0.2.66"]
    );
    wait_answering(&ns, bb, FILTER, "the filter", &log1);

    // Allowed: forwarded, the upstream's answers (A, AAAA and another type).
    assert_eq!(lookup(&ns, bb, "a", "allowed.test", FILTER), ["192.0.2.10"]);
    assert_eq!(
        lookup(&ns, bb, "aaaa", "allowed.test", FILTER),
        ["2001:db8::10"]
    );
    assert_eq!(
        lookup(&ns, bb, "txt", "allowed.test", FILTER),
        ["forwarded"]
    );
    assert_eq!(lookup(&ns, bb, "a", "later.test", FILTER), ["192.0.2.20"]);
    // Blocked by the default list: the null addresses, for the name and names under it, and
    // nothing forwarded for other types.
    assert_eq!(lookup(&ns, bb, "a", "blocked.invalid", FILTER), ["0.0.0.0"]);
    assert_eq!(lookup(&ns, bb, "aaaa", "blocked.invalid", FILTER), ["::"]);
    assert_eq!(lookup(&ns, bb, "a", "x.ads.example", FILTER), ["0.0.0.0"]);
    let txt = lookup(&ns, bb, "txt", "blocked.invalid", FILTER);
    assert!(!txt.iter().any(|a| a.contains("leaked")), "{txt:?}");
    let log = fs::read_to_string(&log1).unwrap();
    assert!(
        log.contains("block list /etc/dns-filter/blocklist: 3 names blocked")
            && log.contains(&format!("forwarding to {GATEWAY}, port 1053")),
        "{log}"
    );

    // The volume's list, read at the next start: it replaces the default one. A hosts-file line,
    // a comment, a bad line and a name with a trailing dot are taken as documented.
    fs::write(
        data.join("blocklist"),
        "# my list\nlater.test\n0.0.0.0 ads.example.\nnot a name here\nbad!name\n",
    )
    .unwrap();
    assert_eq!(lookup(&ns, bb, "a", "later.test", FILTER), ["192.0.2.20"]);
    filter.stop();
    let log2 = dir.join("filter-2.log");
    let mut filter = jail(&log2);
    wait_answering(&ns, bb, FILTER, "the restarted filter", &log2);
    assert_eq!(lookup(&ns, bb, "a", "later.test", FILTER), ["0.0.0.0"]);
    assert_eq!(lookup(&ns, bb, "a", "ads.example", FILTER), ["0.0.0.0"]);
    assert_eq!(lookup(&ns, bb, "a", "allowed.test", FILTER), ["192.0.2.10"]);
    // No longer on the list in use: forwarded again.
    assert_eq!(
        lookup(&ns, bb, "a", "blocked.invalid", FILTER),
        ["192.0.2.66"]
    );
    let log = fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains("block list /data/blocklist: 2 names blocked, 2 lines skipped"),
        "{log}"
    );
    filter.stop();
    upstream.stop();
    drop(ns);
    let _ = fs::remove_dir_all(&dir);
}
