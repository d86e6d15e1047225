//! The agent end to end on the default board: `cpevisord` in the firmware installs the sample
//! app's signed package from a server on the host, runs it as a microVM (cpevisor-vmm on the
//! board's KVM), the app answers over its tap link with the token of the version installed; the
//! app writes a token to its data disk without syncing and the board is rebooted as a router
//! is, with plain `reboot` (the init stops the agent, which asks the guest to power off, then
//! syncs and unmounts the flash); on the same flash image and without any command the app is
//! Active and answers again, the token is on its disk, and the board's console carries no
//! kernel WARNING or Oops; then an update to 1.1 (its package carries another token on its blank disk)
//! runs 1.1 with the app's own disk carried over: it still answers with the token it had (a
//! DU's persistent data survives an update, TR-181; the new package's disk seeds only new
//! installs). Bad input first: a package
//! signed by a key the firmware does not trust is refused with 7036 and leaves nothing installed
//! or on the flash.
//!
//! They need `make firmware` (which also builds the packages, scripts/sample-app.sh), so they are
//! `#[ignore]`d for a plain `cargo test` and run by `make e2e`.
//!
//! Each time the app answers, every `cpevisor-vmm` in the board is checked to have confined
//! itself (seccomp, no_new_privs, no capabilities, the app's unprivileged uid).

use cpevisor_e2e::agent::{
    app_address, app_logs, deployment_units, eu_of, fetch_status_page, install, reboot,
    sample_token, update, wait_agent, wait_eu_status, Flash, HttpServer, SamplePackages,
};
use cpevisor_e2e::vm::kernel_complaints;
use cpevisor_e2e::{BoardVm, BootOptions};
use std::time::{Duration, Instant};

const BOARD: &str = "qemu-virt-a53";
const BOOT: Duration = Duration::from_secs(240);
const AGENT: Duration = Duration::from_secs(60);
/// Download (~30 MB over QEMU user networking), verification and unpack on an emulated CPU.
const INSTALL: Duration = Duration::from_secs(400);
const ACTIVE: Duration = Duration::from_secs(120);
/// Nested Linux under TCG: the stock guest kernel takes 20-30 s to serve HTTP.
const ANSWER: Duration = Duration::from_secs(300);

/// Boots on `flash`; `data` is what the init must report for it: `formatted` on a blank flash,
/// `mounted` when it already holds the agent's state.
fn boot(flash: &Flash, data: &str) -> BoardVm {
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(BOOT).unwrap();
    let marker = format!("CPEVISOR-DATA state={data} dev=/dev/vda");
    assert!(
        vm.transcript().contains(&marker),
        "the init did not report {marker:?}"
    );
    vm
}

/// Waits for the status app's EU to be Active and its page to carry `token`; returns the EUID.
/// `since` names what `started` marks, for the timings printed.
fn app_answers(vm: &mut BoardVm, token: &str, started: Instant, since: &str) -> String {
    let list = wait_agent(vm, AGENT).unwrap();
    let eu = eu_of(&list, "status").unwrap_or_else(|| panic!("no status EU listed: {list}"));
    let eu_id = eu["eu_id"].as_str().unwrap().to_string();
    let eu = wait_eu_status(vm, &eu_id, "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    assert_eq!(eu["requested_state"], "Active", "{eu}");
    let active = started.elapsed();
    let addr = app_address(vm, &eu_id).unwrap();
    let page = fetch_status_page(vm, &addr, ANSWER)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    assert!(
        page.contains(&format!("data={token}")),
        "the app at {addr} does not show {token}:\n{page}\n{}",
        app_logs(vm, &eu_id)
    );
    assert!(page.contains("app=status"), "{page}");

    // Run-time memory enforcement: the app's VMM sits in its own cgroup v2 whose memory.max is
    // the package's declared 16 MiB plus the kvm backend's 4 MiB margin for the VMM itself.
    let cgroup = format!("/sys/fs/cgroup/cpevisor/{eu_id}");
    let out = vm
        .run_ok(
            &format!(
                "cat {cgroup}/memory.max; for p in $(cat {cgroup}/cgroup.procs); do cat /proc/$p/comm; done"
            ),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    let limit = ((16u64 + 4) << 20).to_string();
    assert_eq!(
        lines.next(),
        Some(limit.as_str()),
        "memory.max of {cgroup}:\n{out}"
    );
    assert!(
        lines.any(|l| l == "cpevisor-vmm"),
        "cpevisor-vmm is not in {cgroup}:\n{out}"
    );
    assert_vmms_confined(vm, &eu_id);
    println!(
        "{eu_id} Active {active:.1?} and answering at {addr} {:.1?} after {since}",
        started.elapsed()
    );
    eu_id
}

/// Every cpevisor-vmm running in the board confined itself before its guest ran: seccomp
/// filter mode, no_new_privs, no effective capability, and the app's own unprivileged host id
/// (100000 + EU number, the agent's rule for both backends), read from /proc in the board.
fn assert_vmms_confined(vm: &mut BoardVm, eu_id: &str) {
    let out = vm
        .run_ok(
            "for p in $(pidof cpevisor-vmm); do echo VMM-STATUS $p \
             $(grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/$p/status | tr '\\t\\n' '  '); done",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, eu_id)));
    // Kernel messages may interleave on the console: take the tagged lines only.
    let vmms: Vec<Vec<&str>> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("VMM-STATUS "))
        .map(|rest| rest.split_whitespace().collect())
        .collect();
    assert!(!vmms.is_empty(), "no cpevisor-vmm running:\n{out}");
    let n: u32 = eu_id.strip_prefix("eu-").unwrap().parse().unwrap();
    let app_id = (100_000 + n).to_string();
    for words in vmms {
        let field = |key: &str| {
            let at = words.iter().position(|w| *w == key);
            at.and_then(|i| words.get(i + 1).copied())
                .unwrap_or_else(|| panic!("no {key} for VMM {words:?}:\n{out}"))
        };
        assert_eq!(field("Seccomp:"), "2", "VMM {words:?}");
        assert_eq!(field("NoNewPrivs:"), "1", "VMM {words:?}");
        assert_eq!(field("CapEff:"), "0000000000000000", "VMM {words:?}");
        assert_ne!(field("Uid:"), "0", "VMM {words:?}");
        assert_eq!(field("Uid:"), app_id, "VMM {words:?}");
    }
    println!("every cpevisor-vmm in the board is confined (uid {app_id}, seccomp, no caps)");
}

/// GET /cgi-bin/write?TOKEN from the board (the guest writes TOKEN to its data disk, unsynced);
/// an empty token reads back what the disk holds. Returns the app's answer.
fn app_write(vm: &mut BoardVm, eu_id: &str, token: &str) -> String {
    let addr = app_address(vm, eu_id).unwrap();
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("?{token}")
    };
    vm.run_ok(
        &format!("timeout 20 wget -q -O- 'http://{addr}/cgi-bin/write{query}'"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, eu_id)))
}

#[test]
#[ignore = "boots the emulated board and a microVM in it: needs `make firmware`; run by `make e2e`"]
fn installed_app_runs_and_survives_a_reboot() {
    let packages = SamplePackages::find(BOARD).unwrap();
    // Served next to the good packages, under a directory of this run.
    let untrusted_dir = packages
        .dir
        .join(format!("untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&untrusted_dir).unwrap();
    let untrusted = packages
        .signed_by_untrusted_key("1.0", &untrusted_dir)
        .unwrap();
    let server = HttpServer::serve(&packages.dir).unwrap();
    let flash = Flash::blank("agent", 256).unwrap();
    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);

    let started = Instant::now();
    let mut vm = boot(&flash, "formatted");
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert!(deployment_units(&list).is_empty(), "fresh flash: {list}");
    println!(
        "board ready, agent answering after {:.1?}",
        started.elapsed()
    );

    // Bad input first: the same app signed by a key the firmware does not trust.
    let bad_url = format!(
        "http://10.0.2.2:{}/{}/{}",
        server.port,
        untrusted_dir.file_name().unwrap().to_string_lossy(),
        untrusted.file_name().unwrap().to_string_lossy()
    );
    let refused = install(&mut vm, &bad_url, INSTALL).unwrap();
    let _ = std::fs::remove_dir_all(&untrusted_dir);
    match refused.outcome {
        Err(f) if f.code == 7036 => println!("untrusted signer refused: 7036 {}", f.message),
        other => panic!("untrusted package: expected fault 7036, got {other:?}"),
    }
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert!(deployment_units(&list).is_empty(), "{list}");
    assert!(eu_of(&list, "status").is_none(), "{list}");
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
        "the refused package left files on the flash"
    );

    let done = install(&mut vm, &url, INSTALL).unwrap();
    let took = done.took;
    let du = done
        .outcome
        .unwrap_or_else(|f| panic!("install failed: {} {}", f.code, f.message));
    let size = std::fs::metadata(packages.path("1.0")).unwrap().len();
    println!(
        "installed {} bytes in {took:.1?} ({:.2} MiB/s): {du}",
        size,
        size as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    let list = wait_agent(&mut vm, AGENT).unwrap();
    let dus = deployment_units(&list);
    assert_eq!(dus.len(), 1, "{list}");
    assert_eq!(dus[0]["status"], "Installed", "{list}");
    assert_eq!(dus[0]["version"], "1.0", "{list}");
    // AutoStart: the agent starts it without a `start`.
    let eu_id = app_answers(&mut vm, &sample_token("1.0"), started, "the first boot");

    // A write the guest does not sync: only a clean power-off of the guest keeps it.
    let token = format!("unsynced-{}", std::process::id());
    let wrote = app_write(&mut vm, &eu_id, &token);
    assert!(wrote.contains(&format!("wrote={token}")), "{wrote}");
    let console = reboot(vm).unwrap();
    let complaints = kernel_complaints(&console);
    assert!(
        complaints.is_empty(),
        "the board's kernel complained:\n{}",
        complaints.join("\n")
    );
    let started = Instant::now();
    let mut vm = boot(&flash, "mounted");
    let again = app_answers(&mut vm, &sample_token("1.0"), started, "the reboot");
    assert_eq!(again, eu_id, "the EUID changed across the reboot");
    let written = app_write(&mut vm, &eu_id, "");
    assert!(
        written.contains(&format!("written={token}")),
        "the unsynced write did not survive the reboot: {written}\n{}",
        app_logs(&mut vm, &eu_id)
    );
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert_eq!(deployment_units(&list).len(), 1, "{list}");

    // Update to 1.1 (another token on its package's disk): same DU and EU, version 1.1, and
    // the app's data disk is its own private copy, kept across the update.
    let uuid = du["uuid"].as_str().unwrap();
    let url = format!("http://10.0.2.2:{}/status-1.1.cpkg", server.port);
    let started = Instant::now();
    let done = update(&mut vm, uuid, &url, INSTALL).unwrap();
    let updated = done
        .outcome
        .unwrap_or_else(|f| panic!("update failed: {} {}", f.code, f.message));
    println!("updated to 1.1 in {:.1?}", done.took);
    assert_eq!(updated["uuid"], uuid, "{updated}");
    assert_eq!(updated["version"], "1.1", "{updated}");
    let after = app_answers(&mut vm, &sample_token("1.0"), started, "the update began");
    assert_eq!(after, eu_id, "the EUID changed across the update");
}
