//! The jail backend on this host (root, namespaces, veth): the runner alone (`cpevisord
//! jail-exec`) and through the agent. A busybox-static app looks at its own jail from inside:
//! PIDs, read-only root, data volume, hostname, seccomp, capabilities, its address; the host
//! reaches its server through the bridge; SIGTERM ends it; bad input is refused with a reason.
//! The runner tests make their network changes in a private network namespace (`unshare
//! --net`); the agent tests run the daemon in the host's (it downloads from loopback) with a
//! bridge and /16 of their own, removed at the end.
//! Memory limits need cgroup v2 with the memory controller, which this host lacks (v1): the
//! OOM path is covered by the board test (tests/tests/jail_in_board.rs).

#[path = "common/agentd.rs"]
mod agentd;
mod common;
#[path = "jail_probe/mod.rs"]
mod probe;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agentd::{busybox_rootfs, eu_of, App, World, BUSYBOX, DAEMON};

/// The device's multi-call binary (cpevisord and cpevisorctl are links to it there).
const MULTICALL: &str = env!("CARGO_BIN_EXE_cpevisor");
use serde_json::{json, Value};

/// Root, busybox-static and unshare are what these tests need; say so instead of failing
/// on a machine that cannot run them.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root
        && [BUSYBOX, "/usr/bin/unshare", "/usr/bin/curl"]
            .iter()
            .all(|p| Path::new(p).exists());
    if !ok {
        eprintln!("skipped: needs root, {BUSYBOX} (busybox-static), unshare and curl");
    }
    ok
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cpv-jail-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).unwrap();
        busybox_rootfs(&dir.join("rootfs"));
        Scratch(dir)
    }

    /// Writes a runner spec for `command` with a link on `bridge` in 10.`net`.0.0/16.
    fn spec(&self, command: &[&str], bridge: &str, net: u8) -> PathBuf {
        self.spec_as(command, bridge, net, None)
    }

    /// `spec`, with a user namespace mapping the app's root to `host_id` when given.
    fn spec_as(&self, command: &[&str], bridge: &str, net: u8, host_id: Option<u32>) -> PathBuf {
        self.spec_env(command, bridge, net, host_id, &[])
    }

    /// `spec_as`, with `extra_env` for the app beside PATH.
    fn spec_env(
        &self,
        command: &[&str],
        bridge: &str,
        net: u8,
        host_id: Option<u32>,
        extra_env: &[&str],
    ) -> PathBuf {
        let env: Vec<&str> = ["PATH=/bin"].iter().chain(extra_env).copied().collect();
        let spec = json!({
            "host_id": host_id,
            "eu_id": "eu-5",
            "rootfs": self.0.join("rootfs"),
            "data_dir": self.0.join("data"),
            "command": command,
            "env": env,
            "tmp_size_mib": 4,
            "net": {"bridge": bridge, "gateway": format!("10.{net}.0.1"), "prefix_len": 16,
                    "host_if": "cpv-eu-5", "app_ip": format!("10.{net}.0.22")},
        });
        let path = self.0.join("jail.json");
        fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `sh -c script` in a fresh network namespace (the runner's bridge and veth live there).
fn in_private_net(script: &str) -> Output {
    Command::new("unshare")
        .args(["--net", "/bin/sh", "-c", script])
        .env("RUNNER", DAEMON)
        .output()
        .expect("unshare")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn line_after<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag:?} line in:\n{out}"))
        .trim()
}

const INSPECT: &str = "\
echo \"PIDS $(ps -o pid | tail -n +2 | tr '\\n' ' ')\"
echo \"COMM1 $(cat /proc/1/comm)\"
touch /escape 2>&1 | sed 's/^/ROOTW /' || true
touch /dev/escape 2>&1 | sed 's/^/DEVW /' || true
echo \"NULLW $(echo x > /dev/null && echo ok)\"
echo kept > /data/written && echo \"DATAW $(cat /data/written)\"
echo \"HOST $(hostname)\"
mount -t tmpfs none /tmp 2>&1 | sed 's/^/MOUNT /'
unshare -n true 2>&1 | sed 's/^/UNSHARE /'
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp|SigIgn):' /proc/self/status | sed 's/^/STATUS /'
echo \"ADDR $(ip -4 -o addr show dev eth0)\"
echo \"ROUTE $(ip route | grep default)\"
echo \"MAC $(ip -o link show dev eth0 | grep -o 'link/ether [0-9a-f:]*')\"
echo \"DEV $(ls /dev | tr '\\n' ' ')\"
echo \"ID $(id -u)\"
echo \"UIDMAP $(cat /proc/self/uid_map)\"
exit 3";

#[test]
fn runner_contains_the_app() {
    if !can_run() {
        return;
    }
    let s = Scratch::new("contain");
    // busybox sed is not an applet in the rootfs: add it for the script.
    std::os::unix::fs::symlink("busybox", s.0.join("rootfs/bin/sed")).unwrap();
    let spec = s.spec(&["/bin/sh", "-c", INSPECT], "br-cpvt1", 71);
    let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
    let all = text(&out);
    // The runner ends like the app did.
    assert_eq!(out.status.code(), Some(3), "{all}");

    // Its own PID namespace: the jail's init is PID 1, and nothing of the host is visible.
    let pids: Vec<u32> = line_after(&all, "PIDS ")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // ps, its pipeline and the command substitutions count too.
    assert!(pids.contains(&1) && pids.len() <= 8, "{pids:?}\n{all}");
    assert!(pids.iter().all(|&p| p < 10), "host PIDs visible: {pids:?}");
    assert_eq!(line_after(&all, "COMM1 "), "cpevisord", "{all}");
    // Read-only root, writable data volume (seen from the host too).
    assert!(
        line_after(&all, "ROOTW ").contains("Read-only file system"),
        "{all}"
    );
    assert_eq!(line_after(&all, "DATAW "), "kept");
    assert!(
        line_after(&all, "DEVW ").contains("Read-only file system"),
        "{all}"
    );
    assert_eq!(line_after(&all, "NULLW "), "ok", "{all}");
    assert_eq!(
        fs::read_to_string(s.0.join("data/written")).unwrap(),
        "kept\n"
    );
    assert!(!s.0.join("rootfs/escape").exists());
    // Without a user namespace the app is host root (its capabilities dropped below).
    assert_eq!(line_after(&all, "ID "), "0", "{all}");
    assert_eq!(
        line_after(&all, "UIDMAP ")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "0", "4294967295"],
        "{all}"
    );
    assert_eq!(
        fs::metadata(s.0.join("data/written")).unwrap().uid(),
        0,
        "{all}"
    );
    assert_eq!(line_after(&all, "HOST "), "eu-5");
    // seccomp answers EPERM to mount and unshare.
    assert!(
        line_after(&all, "MOUNT ").contains("permission denied"),
        "{all}"
    );
    assert!(
        line_after(&all, "UNSHARE ").contains("Operation not permitted"),
        "{all}"
    );
    let status: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("STATUS "))
        .collect();
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(&want), "{want:?} not in {status:?}");
    }
    // The runner's ignored SIGPIPE (Rust's runtime) does not leak into the app, nor do the
    // init's forwarding handlers: SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM are not ignored.
    let ignored = status
        .iter()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .unwrap_or_else(|| panic!("no SigIgn in {status:?}"));
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGPIPE,
        libc::SIGTERM,
    ] {
        assert_eq!(
            ignored & (1 << (sig - 1)),
            0,
            "signal {sig} ignored: {ignored:#x}"
        );
    }
    assert!(
        line_after(&all, "ADDR ").contains("inet 10.71.0.22/16"),
        "{all}"
    );
    assert!(
        line_after(&all, "ROUTE ").contains("default via 10.71.0.1 dev eth0"),
        "{all}"
    );
    // The MAC follows the address (02:00 + 10.71.0.22), so a restarted app keeps it.
    assert_eq!(
        line_after(&all, "MAC "),
        "link/ether 02:00:0a:47:00:16",
        "{all}"
    );
    // Only harmless devices.
    let devs = line_after(&all, "DEV ");
    assert!(devs.contains("null") && devs.contains("urandom"), "{devs}");
    for absent in ["sda", "vda", "mem", "kmsg", "console"] {
        assert!(
            !devs.split_whitespace().any(|d| d == absent),
            "/dev/{absent} in the jail: {devs}"
        );
    }
}

/// What the app does as root of its own user namespace.
const AS_MAPPED_ROOT: &str = "\
echo \"ID $(id -u) $(id -g)\"
echo \"UIDMAP $(cat /proc/self/uid_map)\"
echo \"GIDMAP $(cat /proc/self/gid_map)\"
echo \"SETGROUPS $(cat /proc/self/setgroups)\"
echo \"PIDS $(ps -o pid | tail -n +2 | tr '\\n' ' ')\"
touch /data/made && echo \"MADE ok\"
(echo more >> /data/host-root-file) 2>&1 | sed 's/^/HOSTW /' || true
touch /escape 2>&1 | sed 's/^/ROOTW /' || true
echo \"ROOTOWNER $(ls -ln /bin/busybox | tr -s ' ' | cut -d ' ' -f 3)\"
echo \"HOST $(hostname)\"
echo \"ADDR $(ip -4 -o addr show dev eth0)\"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | sed 's/^/STATUS /'
unshare -U true 2>&1 | sed 's/^/UNSHARE /'
exit 4";

#[test]
fn runner_maps_the_app_root_to_its_host_id() {
    if !can_run() {
        return;
    }
    const HOST_ID: u32 = 100_005;
    let s = Scratch::new("userns");
    for applet in ["sed", "cut"] {
        std::os::unix::fs::symlink("busybox", s.0.join("rootfs/bin").join(applet)).unwrap();
    }
    // A volume already the app's (no ownership walk) holding a file of host root's.
    let data = s.0.join("data");
    std::os::unix::fs::chown(&data, Some(HOST_ID), Some(HOST_ID)).unwrap();
    let host_file = data.join("host-root-file");
    fs::write(&host_file, "root's\n").unwrap();
    let spec = s.spec_as(
        &["/bin/sh", "-c", AS_MAPPED_ROOT],
        "br-cpvt3",
        73,
        Some(HOST_ID),
    );
    let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    // Root inside, HOST_ID outside, and only that one id.
    assert_eq!(line_after(&all, "ID "), "0 0", "{all}");
    for map in ["UIDMAP ", "GIDMAP "] {
        assert_eq!(
            line_after(&all, map).split_whitespace().collect::<Vec<_>>(),
            ["0", "100005", "1"],
            "{all}"
        );
    }
    assert_eq!(line_after(&all, "SETGROUPS "), "deny", "{all}");
    assert_eq!(line_after(&all, "MADE "), "ok", "{all}");
    let made = fs::metadata(data.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (HOST_ID, HOST_ID), "{all}");
    // Host root's file is out of reach although the app is "root" and sees it.
    assert!(
        line_after(&all, "HOSTW ").contains("Permission denied"),
        "{all}"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "root's\n");
    assert!(
        line_after(&all, "ROOTW ").contains("Read-only file system"),
        "{all}"
    );
    // The rootfs stays host root's: nobody inside.
    assert_eq!(line_after(&all, "ROOTOWNER "), "65534", "{all}");
    // The rest of the jail is as without a user namespace.
    assert!(
        line_after(&all, "PIDS ")
            .split_whitespace()
            .any(|p| p == "1"),
        "{all}"
    );
    assert_eq!(line_after(&all, "HOST "), "eu-5");
    assert!(
        line_after(&all, "ADDR ").contains("inet 10.73.0.22/16"),
        "{all}"
    );
    let status: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("STATUS "))
        .collect();
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(&want), "{want:?} not in {status:?}");
    }
    assert!(
        line_after(&all, "UNSHARE ").contains("Operation not permitted"),
        "{all}"
    );
}

#[test]
fn runner_gives_the_data_volume_to_the_mapped_id() {
    if !can_run() {
        return;
    }
    let s = Scratch::new("chown");
    let data = s.0.join("data");
    fs::create_dir_all(data.join("old/deeper")).unwrap();
    fs::write(data.join("old/deeper/file"), "from a run as host root\n").unwrap();
    let spec = s.spec_as(
        &["/bin/sh", "-c", "echo new >> /data/old/deeper/file"],
        "br-cpvt4",
        74,
        Some(100_009),
    );
    let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for p in ["", "old", "old/deeper", "old/deeper/file"] {
        let md = fs::metadata(data.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (100_009, 100_009), "{p}");
    }
    assert_eq!(
        fs::read_to_string(data.join("old/deeper/file")).unwrap(),
        "from a run as host root\nnew\n"
    );
    // Back without a user namespace: host root's again.
    let spec = s.spec(
        &["/bin/sh", "-c", "echo back >> /data/old/deeper/file"],
        "br-cpvt4",
        74,
    );
    let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(fs::metadata(data.join("old/deeper/file")).unwrap().uid(), 0);
}

#[test]
fn host_reaches_the_app_through_the_bridge_and_sigterm_ends_it() {
    if !can_run() {
        return;
    }
    let s = Scratch::new("net");
    fs::create_dir_all(s.0.join("data/www")).unwrap();
    fs::write(s.0.join("data/www/index.html"), "hello from the jail\n").unwrap();
    let spec = s.spec(
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/data/www"],
        "br-cpvt2",
        72,
    );
    let script = format!(
        "\"$RUNNER\" jail-exec {} & pid=$!
         i=0
         until page=$(curl -sf -m 1 http://10.72.0.22:8080/); do
             i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.1
         done
         echo \"PAGE $page\"
         echo \"PORTS $(ip -o link show master br-cpvt2 | cut -d: -f2 | cut -d@ -f1)\"
         echo \"BRIDGE $(ip -4 -o addr show dev br-cpvt2)\"
         kill -TERM $pid; wait $pid; echo \"RC $?\"",
        spec.display()
    );
    let out = in_private_net(&script);
    let all = text(&out);
    assert_eq!(line_after(&all, "PAGE "), "hello from the jail", "{all}");
    assert_eq!(line_after(&all, "PORTS "), "cpv-eu-5", "{all}");
    assert!(
        line_after(&all, "BRIDGE ").contains("10.72.0.1/16"),
        "{all}"
    );
    // httpd died of the forwarded SIGTERM; the runner died the same way (128 + 15).
    assert_eq!(line_after(&all, "RC "), "143", "{all}");
}

#[test]
fn runner_refuses_bad_specs_with_the_reason() {
    if !can_run() {
        return;
    }
    let s = Scratch::new("bad");
    let run = |spec: &Path| {
        let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
        (out.status.code(), text(&out))
    };
    // A rootfs without the /data mount point: nothing runs, the message names it.
    let spec = s.spec(&["/bin/sh", "-c", "echo ran"], "br-cpvt3", 73);
    fs::remove_dir(s.0.join("rootfs/data")).unwrap();
    let (code, all) = run(&spec);
    assert_eq!(code, Some(125), "{all}");
    assert!(
        all.contains("mount point") && all.contains("/data"),
        "{all}"
    );
    assert!(!all.contains("ran"), "{all}");
    fs::create_dir(s.0.join("rootfs/data")).unwrap();
    // A command that does not exist in the rootfs.
    let spec = s.spec(&["/bin/nope"], "br-cpvt3", 73);
    let (code, all) = run(&spec);
    assert_eq!(code, Some(125), "{all}");
    assert!(all.contains("jail: exec /bin/nope: ENOENT"), "{all}");
    // Spec errors: unknown field, relative command, a bridge name the kernel would refuse.
    for (patch, want) in [
        (json!({"bogus": 1}), "unknown field `bogus`"),
        (json!({"command": ["sh"]}), "command[0]"),
        (
            json!({"net": {"bridge": "bridge/with/slash", "gateway": "10.73.0.1",
                    "prefix_len": 16, "host_if": "cpv-eu-5", "app_ip": "10.73.0.22"}}),
            "net.bridge",
        ),
    ] {
        let good = s.spec(&["/bin/nope"], "br-cpvt3", 73);
        let mut v: Value = serde_json::from_slice(&fs::read(&good).unwrap()).unwrap();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        fs::write(&spec, v.to_string()).unwrap();
        let (code, all) = run(&spec);
        assert_eq!(code, Some(125), "{all}");
        assert!(all.contains("jail: spec") && all.contains(want), "{all}");
    }
    let out = Command::new(DAEMON).arg("jail-exec").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("usage: cpevisord jail-exec"));
}

/// The probe's entry point (tests/jail_probe): nothing, unless run inside a jail by the
/// tests below (they set its variable).
#[test]
fn jail_probe_entry() {
    if std::env::var_os(probe::ENV).is_some() {
        probe::run();
    }
}

/// Puts this test binary into the rootfs as /probe, with the shared libraries it needs at
/// their paths (the rootfs has only busybox otherwise).
fn add_probe(rootfs: &Path) {
    let me = std::env::current_exe().unwrap();
    if fs::hard_link(&me, rootfs.join("probe")).is_err() {
        fs::copy(&me, rootfs.join("probe")).unwrap();
    }
    let ldd = Command::new("ldd").arg(&me).output().expect("ldd");
    let libs = String::from_utf8_lossy(&ldd.stdout).into_owned();
    for lib in libs.split_whitespace().filter(|w| w.starts_with('/')) {
        let dst = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}

/// Runs the probe in a jail (with a user namespace for `host_id`); its `PROBE` lines as
/// (what, result) pairs, and the whole output for messages.
fn run_probe(tag: &str, net: u8, host_id: Option<u32>) -> (Vec<(String, String)>, String) {
    let s = Scratch::new(tag);
    add_probe(&s.0.join("rootfs"));
    let env = format!("{}=1", probe::ENV);
    let command = [
        "/probe",
        "--exact",
        "jail_probe_entry",
        "--nocapture",
        "--test-threads=1",
    ];
    let spec = s.spec_env(&command, "br-cpvt5", net, host_id, &[&env]);
    let out = in_private_net(&format!("\"$RUNNER\" jail-exec {}", spec.display()));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let lines = all
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE ")?.split_once(' '))
        .map(|(what, result)| (what.to_string(), result.to_string()))
        .collect();
    (lines, all)
}

fn probed<'a>(lines: &'a [(String, String)], what: &str, all: &str) -> &'a str {
    lines
        .iter()
        .find(|(w, _)| w == what)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("the probe did not report {what}:\n{all}"))
}

/// Issue 10, findings 2 and 3: the app cannot take over the jail's init (which runs under
/// a seccomp filter of its own, without capabilities, not dumpable), and holds no descriptor
/// but stdin, stdout and stderr (no netlink socket of the runner's).
fn assert_init_out_of_reach_and_no_descriptors(lines: &[(String, String)], all: &str) {
    let get = |what: &str| probed(lines, what, all);
    assert_eq!(get("init-Seccomp"), "2", "{all}");
    assert_eq!(get("init-NoNewPrivs"), "1", "{all}");
    assert_eq!(get("init-CapEff"), "0000000000000000", "{all}");
    // Refused at open (EACCES/EPERM): not "opened", let alone "written".
    assert!(get("init-mem").starts_with("err "), "{all}");
    assert!(get("init-ptrace").starts_with("err "), "{all}");
    // EPERM: the call never got as far as the (bad) address.
    assert_eq!(
        get("init-vm-write"),
        format!("err {}", libc::EPERM),
        "{all}"
    );
    assert_eq!(get("init-getfd-taken"), "0", "{all}");
    let fds: Vec<&str> = lines
        .iter()
        .filter(|(w, _)| w == "fd")
        .map(|(_, r)| r.as_str())
        .collect();
    assert!(fds.len() >= 3, "{all}");
    let above_stderr: Vec<&&str> = fds
        .iter()
        .filter(|f| f.split(' ').next().and_then(|n| n.parse::<u32>().ok()) > Some(2))
        .collect();
    // The one above stderr is the directory being listed (/proc/<pid>/fd).
    assert!(
        above_stderr.len() <= 1 && above_stderr.iter().all(|f| f.ends_with("/fd")),
        "descriptors beyond stdio: {above_stderr:?}\n{all}"
    );
}

/// Issue 10, finding 6: what Docker's default profile refuses is refused with EPERM.
fn assert_docker_refusals(lines: &[(String, String)], all: &str) {
    let get = |what: &str| probed(lines, what, all);
    let eperm = format!("err {}", libc::EPERM);
    for call in [
        "io_uring_setup",
        "pidfd_getfd",
        "kcmp",
        "memfd_secret",
        "socket-vsock",
        "personality-addr-no-randomize",
    ] {
        assert_eq!(get(&format!("sys:{call}")), eperm, "{call}\n{all}");
    }
    assert_eq!(get("sys:socket-inet"), "ok", "{all}");
    assert_eq!(get("sys:personality-query"), "ok", "{all}");
}

/// Issue 10, finding 6: /proc masked and read-only as runc does.
fn assert_proc_masked(lines: &[(String, String)], all: &str, expect_erofs: bool) {
    let get = |what: &str| probed(lines, what, all);
    for p in probe::MASKED_FILES {
        if Path::new(p).exists() {
            assert_eq!(get(&format!("mask:{p}")), "chr", "{p} not masked\n{all}");
        }
    }
    for p in probe::MASKED_DIRS {
        if Path::new(p).exists() {
            assert_eq!(get(&format!("mask:{p}")), "dir 0", "{p} not masked\n{all}");
        }
    }
    for p in probe::READ_ONLY {
        if Path::new(p).exists() {
            assert_eq!(get(&format!("ro:{p}")), "yes", "{p} writable\n{all}");
        }
    }
    let irq = get("irq-write");
    if expect_erofs {
        assert_eq!(irq, format!("err {}", libc::EROFS), "{all}");
    } else {
        assert!(
            irq.starts_with("err ") || irq.starts_with("read err"),
            "{all}"
        );
    }
}

#[test]
fn probe_without_a_user_namespace_finds_the_jail_shut() {
    if !can_run() {
        return;
    }
    let (lines, all) = run_probe("probe-root", 75, None);
    assert_init_out_of_reach_and_no_descriptors(&lines, &all);
    assert_docker_refusals(&lines, &all);
    // The app is uid 0 here: only read-only mounts stop its writes.
    assert_proc_masked(&lines, &all, true);
}

#[test]
fn probe_in_a_user_namespace_finds_the_jail_shut() {
    if !can_run() {
        return;
    }
    let (lines, all) = run_probe("probe-userns", 76, Some(100_011));
    assert_init_out_of_reach_and_no_descriptors(&lines, &all);
    assert_docker_refusals(&lines, &all);
    assert_proc_masked(&lines, &all, false);
}

/// Issue 10, finding 3, seen from the host: the jail's init holds stdio and its status pipe,
/// nothing of the runner's (its netlink socket) or of whoever started the runner.
#[test]
fn the_init_holds_only_stdio_and_its_status_pipe() {
    if !can_run() {
        return;
    }
    let s = Scratch::new("initfds");
    let spec = s.spec(&["/bin/sleep", "30"], "br-cpvt6", 77);
    // The init is the runner's child, the app the init's; its fds are final once the app
    // runs its command.
    let script = format!(
        "\"$RUNNER\" jail-exec {} & runner=$!
         i=0
         while :; do
             init=$(pgrep -P $runner | head -n 1)
             app=$([ -n \"$init\" ] && pgrep -P $init | head -n 1)
             [ -n \"$app\" ] && [ \"$(cat /proc/$app/comm 2>/dev/null)\" = sleep ] && break
             i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.1
         done
         for f in /proc/$init/fd/*; do echo \"INITFD ${{f##*/}} $(readlink $f)\"; done
         kill -TERM $runner; wait $runner; echo \"RC $?\"",
        spec.display()
    );
    let out = in_private_net(&script);
    let all = text(&out);
    let fds: Vec<(u32, &str)> = all
        .lines()
        .filter_map(|l| l.strip_prefix("INITFD ")?.split_once(' '))
        .map(|(fd, target)| (fd.parse().unwrap(), target))
        .collect();
    assert!(fds.iter().any(|&(fd, _)| fd == 2), "{all}");
    let above: Vec<&(u32, &str)> = fds.iter().filter(|&&(fd, _)| fd > 2).collect();
    assert!(
        above.len() == 1 && above[0].1.starts_with("pipe:"),
        "the init holds more than its status pipe: {above:?}\n{all}"
    );
    // The forwarded SIGTERM still ends the app under the init's filter.
    assert_eq!(line_after(&all, "RC "), "143", "{all}");
}

/// The agent tests take turns: EU ids start at eu-1 in every world, and a jail's host-side
/// veth (`cpv-eu-N`) is named after the EU, as it may be on a board with one agent.
static ONE_AGENT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_agent_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AGENT_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bridge the agent tests create in the host's namespace; deleted when dropped.
struct HostBridge {
    name: String,
    /// `10.<octet>.0.0/16`.
    octet: u8,
}

impl HostBridge {
    /// Unique per test process and tag, so parallel runs do not share a bridge or a network.
    fn new(tag: u8) -> HostBridge {
        let id = std::process::id() % 10_000;
        let b = HostBridge {
            name: format!("br-cpv{id}-{tag}"),
            octet: 150 + ((id % 50) as u8) + tag,
        };
        b.delete();
        b
    }

    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }

    fn app_ip(&self, eu: &str) -> std::net::Ipv4Addr {
        // eu-N gets 10.x.0.0 + 4N + 2.
        let n: u32 = eu.strip_prefix("eu-").unwrap().parse().unwrap();
        std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(10, self.octet, 0, 0)) + 4 * n + 2,
        )
    }
}

impl Drop for HostBridge {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A world whose daemon runs jail apps with links on `bridge`.
fn jail_world(tag: &str, bridge: &HostBridge) -> World {
    let w = World::new(tag);
    w.write_config_patched(json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "jail",
                       "app_network": format!("10.{}.0.0/16", bridge.octet),
                       "lan_bridge": bridge.name}],
        // The busybox rootfs is 2 MB.
        "download_cap_bytes": 16 << 20,
    }));
    w
}

#[test]
fn agent_runs_jail_apps_with_the_same_lifecycle() {
    if !can_run() {
        return;
    }
    let _turn = one_agent_at_a_time();
    let bridge = HostBridge::new(1);
    let mut w = jail_world("agent", &bridge);
    let server = w.publish_busybox_app(
        "server",
        &[
            "/bin/sh",
            "-c",
            "echo \"up as $(hostname) at $CPEVISOR_IP\"; echo stored > /data/f; \
             echo \"uidmap$(tr -s ' ' < /proc/self/uid_map)\"; \
             exec httpd -f -p 8080 -h /data",
        ],
        json!({"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
               "retry_interval_multiplier": 1000, "max_retry_count": 0, "reset_period_s": 60}),
    );
    let crashy = w.publish_busybox_app(
        "crashy",
        &["/bin/sh", "-c", "echo boom; exit 3"],
        json!({"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
               "retry_interval_multiplier": 1000, "max_retry_count": 1, "reset_period_s": 60}),
    );
    w.start_daemon(None);

    let eu = eu_of(&w.ctl_json(&["install", &server]).unwrap());
    w.wait_eu_status(&eu, "Active", 20);
    let ip = bridge.app_ip(&eu);
    let fetch = || {
        Command::new("curl")
            .args(["-sf", "-m", "2"])
            .arg(format!("http://{ip}:8080/f"))
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let out = fetch();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no answer from {ip}: {}\n{}",
            text(&out),
            w.logs(&eu)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(page, "stored\n");
    assert!(
        w.logs(&eu).contains(&format!("up as {eu} at {ip}/16")),
        "{}",
        w.logs(&eu)
    );
    // The agent's default on a kernel with user namespaces: root inside is 100000 + N.
    let n: u32 = eu.strip_prefix("eu-").unwrap().parse().unwrap();
    assert!(
        w.logs(&eu).contains(&format!("uidmap 0 {} 1", 100_000 + n)),
        "{}",
        w.logs(&eu)
    );
    // The data volume is the agent's per-DU data directory.
    let data_files: Vec<String> = w
        .state_files()
        .into_iter()
        .filter(|f| f.contains("_data/"))
        .collect();
    assert!(
        data_files.iter().any(|f| f.ends_with("_data/f")),
        "{data_files:?}"
    );
    // The rootfs was extracted once, next to the version's files.
    assert!(
        w.state_files()
            .iter()
            .any(|f| f.ends_with("/rootfs/bin/busybox")),
        "{:?}",
        w.state_files()
    );

    // Stop: the jail goes away (SIGTERM forwarded to httpd), restart brings it back.
    let t0 = Instant::now();
    assert!(w.ctl(&["stop", &eu]).status.success());
    let v = w.eu(&eu);
    assert_eq!(v["status"], "Idle", "{v}");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(!fetch().status.success(), "still answering after stop");
    assert!(w.ctl(&["start", &eu]).status.success());
    w.wait_eu_status(&eu, "Active", 20);

    // A crashing jail app follows AutoRestart like any other.
    let bad = eu_of(&w.ctl_json(&["install", &crashy]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = w.eu(&bad);
        if v["execution_fault_code"] == "FailureWhileActive" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", w.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["status"], "Idle");
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert!(
        msg.contains("exited with status 3") && msg.contains("gave up after 1 restarts"),
        "{msg}"
    );
    assert_eq!(w.logs(&bad).matches("boom").count(), 2);
    // ...while the other app keeps serving.
    assert_eq!(w.eu(&eu)["status"], "Active");
    assert!(fetch().status.success());

    // A power cut of the agent (SIGKILL) takes its jails along: nothing keeps serving.
    w.kill_daemon();
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent_jail_runners() > 0 || fetch().status.success() {
        assert!(Instant::now() < deadline, "a jail outlived its agent");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many jail runners the agents of these tests have running (their specs live in the
/// world's run directory, `<world>/run/eu-N/jail.json`; the runner-only tests use other paths).
fn agent_jail_runners() -> usize {
    let Ok(rd) = fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("jail-exec") && cmd.contains("/run/eu-")
        })
        .count()
}

/// The device's layout: the agent runs as a `cpevisord` symlink to the multi-call `cpevisor`.
/// Its own executable (/proc/self/exe) is then `cpevisor`, so that is what it starts its jail
/// runner as (`cpevisor jail-exec SPEC`): the multi-call must take the runner's command there.
#[test]
fn agent_run_as_a_link_to_the_multicall_binary_runs_jail_apps() {
    if !can_run() {
        return;
    }
    let _turn = one_agent_at_a_time();
    let bridge = HostBridge::new(4);
    let mut w = jail_world("multicall", &bridge);
    let bin = w.root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(MULTICALL, bin.join("cpevisord")).unwrap();
    w.exe = bin.join("cpevisord");
    let url = w.publish_busybox_app(
        "hello",
        &[
            "/bin/sh",
            "-c",
            "echo \"hello from $(hostname)\"; exec sleep 1000",
        ],
        json!({"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
               "retry_interval_multiplier": 1000, "max_retry_count": 0, "reset_period_s": 60}),
    );
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 20);
    let log = w.wait_log(&eu, "hello from", 10);
    assert!(log.contains(&format!("hello from {eu}")), "{log}");
    // The runner is the multi-call binary, started by the agent under its own name with
    // `jail-exec` (its child, the jail's init, is a fork of it: not counted).
    let multicall = fs::canonicalize(MULTICALL).unwrap();
    let agent_pid = w.daemon.as_ref().unwrap().id().to_string();
    let parent_of = |dir: &Path| {
        let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after_name
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    let runners: Vec<Vec<String>> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| fs::read_link(e.path().join("exe")).ok().as_ref() == Some(&multicall))
        .filter(|e| parent_of(&e.path()) == agent_pid)
        .map(|e| {
            let raw = fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&raw)
                .split('\0')
                .map(str::to_string)
                .collect()
        })
        .filter(|argv: &Vec<String>| {
            argv.get(1).map(String::as_str) == Some("jail-exec")
                && argv
                    .iter()
                    .any(|a| a.starts_with(&w.root.to_string_lossy().to_string()))
        })
        .collect();
    assert_eq!(runners.len(), 1, "{runners:?}\n{}", w.daemon_log());
    assert!(runners[0][0].ends_with("cpevisor"), "{runners:?}");
    assert!(w.ctl(&["stop", &eu]).status.success());
    assert_eq!(w.eu(&eu)["status"], "Idle");
    assert_eq!(w.stop_daemon(), Some(0), "{}", w.daemon_log());
}

#[test]
fn jail_exec_env_refuses_what_it_cannot_run() {
    if !can_run() {
        return;
    }
    let _turn = one_agent_at_a_time();
    let bridge = HostBridge::new(2);
    let mut w = jail_world("refuse", &bridge);
    // kvm-only, and a jail app for another architecture: 7225.
    let mut kvm = App::new("kvmonly", "1.0");
    kvm.kvm = true;
    let kvm_url = w.publish(&kvm, "kvmonly.cpkg");
    let mut arm = App::new("armapp", "1.0");
    arm.arch = "armv7".into();
    let arm_url = w.publish(&arm, "armapp.cpkg");
    // A jail package without a command, correctly signed: 7004 (the config is invalid).
    let signer = common::test_key(43);
    let trusted = cpevisor_agent::package::TrustedKey::from_bytes(signer.public_key()).unwrap();
    fs::write(w.trusted.join("parts.pub"), trusted.to_hex()).unwrap();
    let mut parts = common::Parts::good(&signer);
    let mut cfg = common::app_config_json();
    cfg["arch"] = "x86_64".into();
    cfg["backends"] = json!(["jail"]);
    cfg["command"] = json!([]);
    parts.config = serde_json::to_vec(&cfg).unwrap();
    parts.sign_with(&signer);
    parts.write(&w.www.join("nocommand.cpkg"));
    w.start_daemon(None);
    let before = w.state_files();

    for (url, code, words) in [
        (kvm_url, 7225, "supports backends [kvm]"),
        (arm_url, 7225, "built for armv7"),
        (w.url("nocommand.cpkg"), 7004, "command"),
    ] {
        let (got, msg) = w.ctl_json(&["install", &url]).unwrap_err();
        assert_eq!(got, code, "{url}: {msg}");
        assert!(msg.contains(words), "{url}: {msg}");
    }
    assert!(w.list()["deployment_units"].as_array().unwrap().is_empty());
    assert_eq!(
        w.state_files(),
        before,
        "a refused install changed the store"
    );
}

/// cgroup limits and the OOM reason, on a stand-in cgroup tree of plain files (this host's
/// cgroup2 has no memory controller): the agent writes memory.max, pids.max and cpu.max for a
/// jail app; an app that plays the kernel's OOM killer (raises `oom_kill` in its
/// memory.events, then dies of SIGKILL) is reported as killed for exceeding memory.max and
/// restarted per AutoRestart.
#[test]
fn cgroup_limits_and_the_oom_kill_reason() {
    if !can_run() {
        return;
    }
    let _turn = one_agent_at_a_time();
    let bridge = HostBridge::new(3);
    let mut w = World::new("cgroup");
    let cg = w.root.join("cgroup");
    fs::create_dir_all(&cg).unwrap();
    fs::write(cg.join("cgroup.controllers"), "cpu memory pids").unwrap();
    w.write_config_patched(json!({
        "exec_envs": [
            {"name": "jail0", "type": "jail", "arch": "x86_64", "memory_budget_mib": 64,
             "app_network": format!("10.{}.0.0/16", bridge.octet), "lan_bridge": bridge.name},
            {"name": "host0", "type": "jail", "arch": "x86_64", "memory_budget_mib": 64,
             "runner": "process"}],
        "cgroup_root": cg,
        "download_cap_bytes": 16 << 20,
    }));
    let server = w.publish_busybox_app(
        "server",
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/data"],
        json!({"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
               "retry_interval_multiplier": 1000, "max_retry_count": 0, "reset_period_s": 60}),
    );
    let mut hog = App::new("hog", "1.0");
    let events = format!("{}/cpevisor/$CPEVISOR_EU/memory.events", cg.display());
    hog.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "n=$(sed -n 's/^oom_kill //p' {events}); echo \"oom_kill $((${{n:-0}} + 1))\" > {events}; \
             echo hogging; kill -9 $$"
        ),
    ];
    hog.restart = json!({"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
        "retry_interval_multiplier": 1000, "max_retry_count": 1, "reset_period_s": 60});
    let hog_url = w.publish(&hog, "hog.cpkg");
    w.start_daemon(None);

    // The jail app's cgroup: declared 16 MiB + 4 MiB for the runner and init, pids, cpu.
    let eu = eu_of(&w.ctl_json(&["install", &server]).unwrap());
    w.wait_eu_status(&eu, "Active", 20);
    let dir = cg.join("cpevisor").join(&eu);
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(read("memory.max"), (20u64 << 20).to_string());
    assert_eq!(read("pids.max"), "256");
    assert_eq!(read("cpu.max"), "100000 100000");
    let pid: u32 = read("cgroup.procs").trim().parse().unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("jail-exec"),
        "cgroup.procs holds {pid}, not the runner"
    );

    // The OOM-killed app: the reason names memory.max, AutoRestart applies, the jail app stays.
    let bad = eu_of(
        &w.ctl_json(&["install", &hog_url, "--env", "host0"])
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = w.eu(&bad);
        if v["execution_fault_code"] == "FailureWhileActive" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", w.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert_eq!(
        msg, "killed: exceeded memory.max (16 MiB); gave up after 1 restarts",
        "{v}"
    );
    assert_eq!(w.logs(&bad).matches("hogging").count(), 2);
    assert_eq!(w.eu(&eu)["status"], "Active");
    assert_eq!(w.stop_daemon(), Some(0));
}
