//! Apps in jails end to end on the boards without KVM (qemu-malta-mipsel, qemu-virt-a15): the
//! firmware's `cpevisord` refuses a kvm-only package and a package for another architecture
//! (7225, nothing installed), installs the signed status app built for the board's arch from a
//! server on the host, runs it in a jail (namespaces, read-only rootfs, cgroup limits, no
//! capabilities, no_new_privs, seccomp) whose veth sits on the board's LAN bridge, and the
//! board fetches its /status page from the app's address. Containment is checked from the
//! board's console; the memhog app is killed by its memory.max, restarted per AutoRestart and
//! finally reported FailureWhileActive with a reason naming memory, while the agent and the
//! status app keep running. The status app then writes a token to its data volume without
//! syncing, and the board reboots as a router does, with plain `reboot` (the init stops the
//! agent, which stops the app, then syncs and unmounts the flash): on the same flash the status
//! app is Active again and answers, the token on its volume, its data volume carried over
//! (starts=2), and the board's console carries no kernel WARNING or Oops; an update to 1.1
//! answers with 1.1's token, same EU, same data volume (starts=3).
//!
//! They need `make firmware BOARDS="qemu-malta-mipsel qemu-virt-a15"` (which also builds the
//! jail packages, `scripts/sample-app.sh jail ARCH`), so they are `#[ignore]`d for a plain
//! `cargo test`. TCG MIPS is slow: timeouts are generous, one board per test function.

use cpevisor_e2e::agent::{
    app_logs, ctl_json, deployment_units, eu_of, fetch_status_page, install, reboot, sample_token,
    update, wait_agent, wait_eu_status, Flash, HttpServer,
};
use cpevisor_e2e::bench::jail::{
    boot_jail_board, jail_address, jail_pid, JailPackages, APP_PORT, CGROUP_PARENT, PUBLISHED_PORT,
};
use cpevisor_e2e::packages::Variants;
use cpevisor_e2e::vm::kernel_complaints;
use cpevisor_e2e::BoardVm;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const AGENT: Duration = Duration::from_secs(120);
/// ~2.4 MiB over QEMU user networking, verification and unpack on an emulated CPU.
const INSTALL: Duration = Duration::from_secs(400);
const ACTIVE: Duration = Duration::from_secs(240);
const ANSWER: Duration = Duration::from_secs(180);
/// memhog: 3 s calm + allocation per run, restarts after 1, 2 and 4 s, on TCG.
const MEMHOG_GIVES_UP: Duration = Duration::from_secs(400);
/// The package's declared memory (scripts/sample-app.sh).
const APP_MEMORY_MIB: u64 = 16;
/// The memhog package's AutoRestart MaximumRetryCount.
const MEMHOG_RETRIES: u64 = 3;

/// Waits for the status EU to be Active and its page to show `version`'s token and `starts`;
/// returns (EUID, the app's PID in the board, its address).
fn status_answers(
    vm: &mut BoardVm,
    version: &str,
    starts: u32,
    started: Instant,
    since: &str,
) -> (String, u32, String) {
    let list = wait_agent(vm, AGENT).unwrap();
    let eu = eu_of(&list, "status").unwrap_or_else(|| panic!("no status EU listed: {list}"));
    let eu_id = eu["eu_id"].as_str().unwrap().to_string();
    let eu = wait_eu_status(vm, &eu_id, "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    assert_eq!(eu["requested_state"], "Active", "{eu}");
    let active = started.elapsed();
    let pid =
        jail_pid(vm, &eu_id, "httpd").unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    let addr = jail_address(vm, pid).unwrap();
    let page = fetch_status_page(vm, &format!("{addr}:{APP_PORT}"), ANSWER)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    let board = vm.board.name.clone();
    for want in [
        "app=status".to_string(),
        "backend=jail".to_string(),
        format!("data={}", sample_token(version)),
        format!("starts={starts}"),
    ] {
        assert!(
            page.lines().any(|l| l.trim() == want),
            "the app at {addr}:{APP_PORT} does not show {want}:\n{page}\n{}",
            app_logs(vm, &eu_id)
        );
    }
    // Its own UTS namespace: the jail's hostname is not the board's.
    assert!(
        !page.contains(&format!("hostname={board}")),
        "the jail shares the board's hostname:\n{page}"
    );
    println!(
        "{board}: {eu_id} Active {active:.1?} and answering at {addr}:{APP_PORT} {:.1?} after {since}",
        started.elapsed()
    );
    (eu_id, pid, addr)
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0), following one redirect; retries while the
/// relay starts. Returns the whole response.
fn host_get(port: u16, path: &str) -> Result<String, String> {
    let deadline = Instant::now() + BoardVm::scaled(Duration::from_secs(60));
    let mut path = path.to_string();
    let mut last = String::new();
    while Instant::now() < deadline {
        let reply = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: app\r\n\r\n").as_bytes())?;
            let mut body = String::new();
            s.take(1 << 20).read_to_string(&mut body)?;
            Ok(body)
        });
        match reply {
            Ok(r) if r.starts_with("HTTP/1.") && r.get(9..).is_some_and(|c| c.starts_with('3')) => {
                let location = r
                    .lines()
                    .find_map(|l| l.strip_prefix("Location: "))
                    .ok_or_else(|| format!("redirect without Location: {r}"))?;
                // Keep only the path: the host cannot resolve the app's own name for itself.
                path = match location.find("://") {
                    Some(i) => location[i + 3..]
                        .find('/')
                        .map(|j| location[i + 3 + j..].to_string())
                        .unwrap_or_else(|| "/".into()),
                    None => location.to_string(),
                };
                continue;
            }
            Ok(r) if !r.is_empty() => return Ok(r),
            Ok(_) => last = "empty reply".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no answer on 127.0.0.1:{port}{path}: {last}"))
}

/// A request from the host: the board relays its forwarded port to the app's veth address
/// (busybox `nc -ll -e nc`, standing in for the port publishing a router's firewall does), and
/// the host GETs the app's page through QEMU's forward.
fn host_reaches_app(vm: &mut BoardVm, addr: &str, version: &str) {
    vm.run_ok(
        &format!(
            "(nc -ll -p {PUBLISHED_PORT} -e nc {addr} {APP_PORT} </dev/null >/dev/null 2>&1 &)"
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let port = vm
        .host_port(PUBLISHED_PORT)
        .expect("the published port is forwarded");
    let page = host_get(port, "/status").unwrap_or_else(|e| panic!("{e}"));
    let token = format!("data={}", sample_token(version));
    assert!(
        page.lines().any(|l| l.trim() == token),
        "the host's request did not reach the app (no {token}):\n{page}"
    );
    println!(
        "{}: the app answered the host through 127.0.0.1:{port}",
        vm.board.name
    );
}

/// What the jail keeps the app from, read from the board's side.
fn containment(vm: &mut BoardVm, eu_id: &str, pid: u32) {
    let status = vm
        .run_ok(
            &format!("grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd|CapPrm):' /proc/{pid}/status"),
            Duration::from_secs(30),
        )
        .unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
            .to_string()
    };
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("Seccomp"), "2", "no seccomp filter:\n{status}");
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}:\n{status}");
    }

    // Root inside its own user namespace, 100000 + N on the board (Debian's kernels have
    // CONFIG_USER_NS, so the agent's default turns it on).
    let n: u32 = eu_id.strip_prefix("eu-").unwrap().parse().unwrap();
    let map = vm
        .run_ok(&format!("cat /proc/{pid}/uid_map"), Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0".to_string(), (100_000 + n).to_string(), "1".to_string()],
        "uid_map of the app:\n{map}"
    );

    // Its cgroup: the agent's per-EU one, with memory.max and pids.max set.
    let out = vm
        .run_ok(
            &format!(
                "c=$(sed -n 's/^0:://p' /proc/{pid}/cgroup); echo \"CGROUP $c\"; \
                 echo \"MEMORY-MAX $(cat /sys/fs/cgroup$c/memory.max)\"; \
                 echo \"PIDS-MAX $(cat /sys/fs/cgroup$c/pids.max)\"; \
                 echo \"CPU-MAX $(cat /sys/fs/cgroup$c/cpu.max)\""
            ),
            Duration::from_secs(30),
        )
        .unwrap();
    let value = |tag: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(tag))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let cgroup = value("CGROUP ");
    assert!(
        format!("/sys/fs/cgroup{cgroup}").starts_with(&format!("{CGROUP_PARENT}/{eu_id}")),
        "the app is not in its EU's cgroup:\n{out}"
    );
    let memory_max: u64 = value("MEMORY-MAX ")
        .parse()
        .unwrap_or_else(|_| panic!("memory.max is not a byte limit:\n{out}"));
    assert!(
        (APP_MEMORY_MIB << 20..=(APP_MEMORY_MIB + 16) << 20).contains(&memory_max),
        "memory.max {memory_max} is not the declared {APP_MEMORY_MIB} MiB (plus a small runner margin):\n{out}"
    );
    assert!(
        value("PIDS-MAX ").parse::<u64>().is_ok(),
        "pids.max is not set:\n{out}"
    );
    println!(
        "{eu_id}: cgroup {cgroup}, memory.max {memory_max}, pids.max {}, cpu.max {}",
        value("PIDS-MAX "),
        value("CPU-MAX ")
    );

    // Its mount namespace: / is read-only, /data writable; its PID namespace shows only the
    // jail's few processes. Run from the board as root in the jail's namespaces, so a refusal
    // is the mount's, not a missing privilege.
    let enter = format!("nsenter -t {pid} -m -r");
    let roots = vm
        .run_ok(
            &format!("awk '$2 == \"/\" {{print \"ROOT-OPTS\", $4}}' /proc/{pid}/mounts"),
            Duration::from_secs(30),
        )
        .unwrap();
    let root_opts = roots
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ROOT-OPTS "))
        .next_back()
        .unwrap_or_else(|| panic!("no / in the jail's mounts:\n{roots}"));
    assert!(
        root_opts.split(',').any(|o| o == "ro"),
        "the jail's / is mounted {root_opts}"
    );
    let (code, out) = vm
        .run(
            &format!("{enter} /bin/busybox touch /jail-escape"),
            Duration::from_secs(30),
        )
        .unwrap();
    assert_ne!(code, 0, "wrote to the jail's /:\n{out}");
    assert!(out.contains("Read-only"), "{out}");
    vm.run_ok(
        &format!("{enter} /bin/busybox sh -c 'echo probe >/data/probe && rm /data/probe'"),
        Duration::from_secs(30),
    )
    .unwrap();
    let procs = vm
        .run_ok(
            &format!(
                "echo \"JAIL-PROCS $({enter} /bin/busybox sh -c 'ls -d /proc/[0-9]*' | wc -l)\""
            ),
            Duration::from_secs(30),
        )
        .unwrap();
    let seen: u32 = procs
        .lines()
        .find_map(|l| l.trim().strip_prefix("JAIL-PROCS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{procs}"));
    assert!(
        (1..=4).contains(&seen),
        "the jail's /proc shows {seen} processes: not its own PID namespace"
    );
}

/// Installs memhog and follows it until the agent gives up on it; checks that the status app
/// (`status_eu`, process `status_pid`) and the agent kept running throughout.
fn memhog_is_contained(vm: &mut BoardVm, url: &str, status_eu: &str, status_pid: u32, addr: &str) {
    let started = Instant::now();
    install(vm, url, INSTALL)
        .unwrap()
        .outcome
        .unwrap_or_else(|f| panic!("memhog install failed: {} {}", f.code, f.message));
    let list = wait_agent(vm, AGENT).unwrap();
    let eu_id = eu_of(&list, "memhog").unwrap_or_else(|| panic!("no memhog EU: {list}"))["eu_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + BoardVm::scaled(MEMHOG_GIVES_UP);
    let mut retries_seen: Vec<u64> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let last: Value = loop {
        let reply = ctl_json(vm, &format!("status {eu_id}"), Duration::from_secs(60)).unwrap();
        let eu = reply
            .get("execution_unit")
            .or_else(|| reply["execution_units"].get(0))
            .cloned()
            .unwrap_or(reply);
        let retries = eu["auto_restart"]["retry_count"].as_u64().unwrap_or(0);
        if retries_seen.last() != Some(&retries) {
            retries_seen.push(retries);
        }
        let msg = eu["execution_fault_message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !msg.is_empty() && reasons.last() != Some(&msg) {
            reasons.push(msg);
        }
        if eu["status"] == "Idle" {
            break eu;
        }
        assert!(
            Instant::now() < deadline,
            "memhog not given up after {MEMHOG_GIVES_UP:?}; last: {eu}\n{}",
            app_logs(vm, &eu_id)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    println!(
        "memhog {eu_id}: Idle after {:.1?}, retries seen {retries_seen:?}, reasons {reasons:?}",
        started.elapsed()
    );
    assert_eq!(
        last["execution_fault_code"],
        "FailureWhileActive",
        "{last}\n{}",
        app_logs(vm, &eu_id)
    );
    let msg = last["execution_fault_message"].as_str().unwrap_or("");
    assert!(
        msg.contains("memory"),
        "the fault message does not name memory: {msg:?}\n{}",
        app_logs(vm, &eu_id)
    );
    assert_eq!(
        last["auto_restart"]["retry_count"].as_u64(),
        Some(MEMHOG_RETRIES),
        "{last}"
    );
    assert!(
        retries_seen.len() >= 2 && retries_seen.windows(2).all(|w| w[0] < w[1]),
        "RetryCount did not grow restart by restart: {retries_seen:?}"
    );
    let logs = app_logs(vm, &eu_id);
    assert!(
        logs.contains("memhog: holding"),
        "memhog never allocated:\n{logs}"
    );

    // The rest of the board: the agent answers, the status app is the same process, Active,
    // never restarted, and still serves its page.
    let list = wait_agent(vm, AGENT).unwrap();
    let status = eu_of(&list, "status").unwrap();
    assert_eq!(status["status"], "Active", "{list}");
    assert_eq!(status["eu_id"], status_eu, "{list}");
    let reply = ctl_json(vm, &format!("status {status_eu}"), Duration::from_secs(60)).unwrap();
    let s = reply.get("execution_unit").cloned().unwrap_or(reply);
    assert_eq!(
        s["auto_restart"]["retry_count"].as_u64().unwrap_or(0),
        0,
        "{s}"
    );
    assert_eq!(
        jail_pid(vm, status_eu, "httpd").unwrap(),
        status_pid,
        "the status app was restarted"
    );
    let page = fetch_status_page(vm, &format!("{addr}:{APP_PORT}"), ANSWER).unwrap();
    assert!(page.contains("app=status"), "{page}");
}

fn jail_end_to_end(board: &str) {
    let t0 = Instant::now();
    let packages = JailPackages::find(board).unwrap();
    let run = std::process::id();
    let other_arch = if packages.arch == "mipsel" {
        "armv7"
    } else {
        "mipsel"
    };
    // Signed by the trusted key and valid but for one thing each: refused for what it is.
    let kvm_only = packages
        .variant(&format!("kvm-only-{}-{run}", packages.arch), |c| {
            c["name"] = json!("kvmonly");
            c["backends"] = json!(["kvm"]);
            c["kernel"] = json!("app/manifest.txt");
            if let Some(o) = c.as_object_mut() {
                o.remove("rootfs");
            }
        })
        .unwrap();
    let foreign = packages
        .variant(&format!("foreign-{other_arch}-{run}"), |c| {
            c["name"] = json!("foreign");
            c["arch"] = json!(other_arch);
        })
        .unwrap();
    let mut _variants = Variants::new(&packages.dir);
    for f in [&kvm_only, &foreign] {
        _variants.keep(f.clone());
    }
    let server = HttpServer::serve(&packages.dir).unwrap();
    let flash = Flash::blank(&format!("jail-{board}"), 64).unwrap();

    let started = Instant::now();
    let mut vm = boot_jail_board(board, &flash, "formatted").unwrap();
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert!(deployment_units(&list).is_empty(), "fresh flash: {list}");
    println!(
        "{board}: ready, agent answering after {:.1?}",
        started.elapsed()
    );

    for (file, what) in [
        (&kvm_only, "a kvm-only package"),
        (&foreign, "an other-arch package"),
    ] {
        let url = format!("http://10.0.2.2:{}/{file}", server.port);
        match install(&mut vm, &url, INSTALL).unwrap().outcome {
            Err(f) if f.code == 7225 => println!("{board}: {what} refused: 7225 {}", f.message),
            other => panic!("{what}: expected fault 7225, got {other:?}"),
        }
    }
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert!(deployment_units(&list).is_empty(), "{list}");
    let left = vm
        .run_ok(
            "find /data/cpevisor/blobs /data/cpevisor/apps /data/cpevisor/downloads -type f \
             2>/dev/null | wc -l",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(
        left.trim(),
        "0",
        "a refused package left files on the flash"
    );

    let done = install(&mut vm, &packages.url(&server, "status", "1.0"), INSTALL).unwrap();
    let du = done
        .outcome
        .unwrap_or_else(|f| panic!("install failed: {} {}", f.code, f.message));
    println!("{board}: status 1.0 installed in {:.1?}: {du}", done.took);
    assert_eq!(du["version"], "1.0", "{du}");
    // AutoStart: the agent starts it without a `start`.
    let (eu_id, pid, addr) = status_answers(&mut vm, "1.0", 1, started, "the first boot");
    host_reaches_app(&mut vm, &addr, "1.0");
    containment(&mut vm, &eu_id, pid);
    memhog_is_contained(
        &mut vm,
        &packages.url(&server, "memhog", "1.0"),
        &eu_id,
        pid,
        &addr,
    );

    // A write the app does not sync: only a clean shutdown of the board keeps it.
    let token = format!("unsynced-{run}");
    let wrote = app_write(&mut vm, &addr, &token);
    assert!(wrote.contains(&format!("wrote={token}")), "{wrote}");
    let console = reboot(vm).unwrap();
    let complaints = kernel_complaints(&console);
    assert!(
        complaints.is_empty(),
        "{board}: the kernel complained:\n{}",
        complaints.join("\n")
    );
    let started = Instant::now();
    let mut vm = boot_jail_board(board, &flash, "mounted").unwrap();
    // starts=2: the data volume on the flash outlived the reboot.
    let (again, pid, addr) = status_answers(&mut vm, "1.0", 2, started, "the reboot");
    assert_eq!(again, eu_id, "the EUID changed across the reboot");
    let written = app_write(&mut vm, &addr, "");
    assert!(
        written.contains(&format!("written={token}")),
        "{board}: the unsynced write did not survive the reboot: {written}"
    );
    containment(&mut vm, &eu_id, pid);
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert_eq!(
        deployment_units(&list).len(),
        2,
        "status and memhog: {list}"
    );

    // Update to 1.1 (another token in its rootfs): same DU and EU, the new version answers
    // from a new rootfs with the same data volume (starts=3).
    let uuid = du["uuid"].as_str().unwrap();
    let started = Instant::now();
    let done = update(
        &mut vm,
        uuid,
        &packages.url(&server, "status", "1.1"),
        INSTALL,
    )
    .unwrap();
    let updated = done
        .outcome
        .unwrap_or_else(|f| panic!("update failed: {} {}", f.code, f.message));
    assert_eq!(updated["uuid"], uuid, "{updated}");
    assert_eq!(updated["version"], "1.1", "{updated}");
    let (after, _, addr) = status_answers(&mut vm, "1.1", 3, started, "the update began");
    host_reaches_app(&mut vm, &addr, "1.1");
    assert_eq!(after, eu_id, "the EUID changed across the update");
    println!("{board}: whole test {:.1?}", t0.elapsed());
}

/// GET /cgi-bin/write?TOKEN from the board (the status app writes TOKEN to /data/written,
/// unsynced); an empty token reads back what the volume holds. Returns the app's answer.
fn app_write(vm: &mut BoardVm, addr: &str, token: &str) -> String {
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("?{token}")
    };
    vm.run_ok(
        &format!("timeout 20 wget -q -O- 'http://{addr}:{APP_PORT}/cgi-bin/write{query}'"),
        Duration::from_secs(60),
    )
    .unwrap()
}

#[test]
#[ignore = "boots qemu-malta-mipsel: needs `make firmware BOARDS=qemu-malta-mipsel`; run by `make e2e`"]
fn jailed_app_on_malta_mipsel() {
    jail_end_to_end("qemu-malta-mipsel");
}

#[test]
#[ignore = "boots qemu-virt-a15: needs `make firmware BOARDS=qemu-virt-a15`; run by `make e2e`"]
fn jailed_app_on_virt_a15() {
    jail_end_to_end("qemu-virt-a15");
}
