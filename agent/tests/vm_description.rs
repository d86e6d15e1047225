//! The VM description the agent writes for its kvm backend is accepted by the VMM's own
//! parser and checks (`cpevisor-vmm --config`), for every option the agent can produce: initrd
//! or not, a root image or not, a disk or not, a tap or no network, the readiness pipe or not,
//! any vCPU count. Both
//! sides use `cpevisor_types::vm::VmConfig`; this shows the agent fills it in a way the VMM
//! takes (files, taps, jail ids, descriptor) and that nothing is lost on the way.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use cpevisor_agent::supervise::backend::{vm_config_json, LaunchSpec, ROOT_IMAGE_CMDLINE};
use cpevisor_agent::supervise::jail::userns::USERNS_ID_BASE;
use cpevisor_agent::supervise::net::{self, MAX_APPS_PER_NETWORK};
use cpevisor_agent::supervise::ready::StartPolicy;
use cpevisor_types::vm::{Console, KernelFormat};
use cpevisor_types::IfName;
use cpevisor_vmm::config::{VmConfig, VmConfigExt};

/// A newc cpio holding only its trailer: the smallest initramfs the VMM's check accepts.
fn empty_cpio() -> Vec<u8> {
    let name = b"TRAILER!!!\0";
    let mut out = format!("070701{}", "00000000".repeat(11)).into_bytes();
    out.extend_from_slice(format!("{:08x}{:08x}", name.len(), 0).as_bytes());
    out.extend_from_slice(name);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

/// A kernel the VMM's x86_64 check takes (a bzImage header; elsewhere only the file checks
/// run).
fn kernel_bytes() -> Vec<u8> {
    let mut k = vec![0u8; 0x2000];
    {
        k[0x1f1] = 4;
        k[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        k[0x211] = 1;
        k[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        k[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes());
        k[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes());
    }
    k
}

struct Files {
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    root_image: PathBuf,
    disk: PathBuf,
}

fn files(tag: &str) -> Files {
    let dir = std::env::temp_dir().join(format!("cpv-vmdesc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let f = Files {
        kernel: dir.join("Image"),
        initrd: dir.join("initrd"),
        root_image: dir.join("root.erofs"),
        disk: dir.join("disk.img"),
        dir,
    };
    std::fs::write(&f.kernel, kernel_bytes()).unwrap();
    std::fs::write(&f.initrd, empty_cpio()).unwrap();
    std::fs::write(&f.disk, vec![0u8; 4096]).unwrap();
    std::fs::write(&f.root_image, vec![0u8; 8192]).unwrap();
    // The blob store's files are read-only to the VMM's uid; the VMM opens a read-only disk
    // without asking for write access.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f.root_image, std::fs::Permissions::from_mode(0o444)).unwrap();
    f
}

fn spec(f: &Files) -> LaunchSpec {
    LaunchSpec {
        eu_id: "eu-5".into(),
        command: vec![],
        kernel: Some(f.kernel.clone()),
        initrd: None,
        root_image: None,
        disk: None,
        cmdline: "console=ttyS0 quiet".into(),
        memory_mib: 64,
        vcpus: 1,
        data_dir: f.dir.join("data"),
        app_dir: f.dir.clone(),
        run_dir: f.dir.join("run"),
        tap: None,
        lan: None,
        rootfs: None,
        rootfs_erofs: None,
        cgroup: None,
        start: StartPolicy::default(),
        stop_timeout: Duration::from_millis(2500),
    }
}

/// What the VMM makes of the agent's description: parsed, then every check that needs no KVM.
fn vmm_accepts(json: &str) -> VmConfig {
    let cfg = VmConfig::from_json(json).unwrap_or_else(|e| panic!("VMM parser: {e}\n{json}"));
    cfg.validate()
        .unwrap_or_else(|e| panic!("VMM checks: {e}\n{json}"));
    #[cfg(target_arch = "x86_64")]
    cpevisor_vmm::builder::check_config(&cfg).unwrap_or_else(|e| panic!("VMM checks: {e}\n{json}"));
    cfg
}

#[test]
fn every_description_the_agent_writes_is_accepted_by_the_vmm() {
    let f = files("all");
    // The write end of a pipe, as the agent hands the VMM its readiness pipe.
    let (_r, w) = nix::unistd::pipe().unwrap();
    let mut seen = 0;
    for (initrd, root_image) in [(false, false), (true, false), (false, true), (true, true)] {
        for disk in [false, true] {
            // "lo" stands in for the agent's tap: the VMM checks that the tap exists.
            for tap in [None, Some("lo")] {
                for ready_fd in [None, Some(w.as_raw_fd())] {
                    for (vcpus, stop_ms) in [(0, 0), (1, 2500), (4, 120_000)] {
                        let mut s = spec(&f);
                        s.stop_timeout = Duration::from_millis(stop_ms);
                        s.initrd = initrd.then(|| f.initrd.clone());
                        s.root_image = root_image.then(|| f.root_image.clone());
                        s.disk = disk.then(|| f.disk.clone());
                        s.tap = tap.map(String::from);
                        s.vcpus = vcpus;
                        let json = vm_config_json(&s, ready_fd).unwrap();
                        let c = vmm_accepts(&json);
                        assert_eq!(c.kernel, f.kernel);
                        assert_eq!(c.kernel_format, KernelFormat::Auto);
                        assert_eq!(c.initrd, s.initrd);
                        // A root image is the first disk: the agent says so on the command
                        // line, after the package's words.
                        let cmdline = match root_image {
                            true => format!("{} {ROOT_IMAGE_CMDLINE}", s.cmdline),
                            false => s.cmdline.clone(),
                        };
                        assert_eq!(c.cmdline, cmdline);
                        assert_eq!((c.memory_mib, c.max_memory_mib), (64, 64));
                        assert_eq!(u32::from(c.vcpus), vcpus.max(1));
                        // (path, read_only): the shared root image read-only and first, the
                        // app's private data disk writable after it.
                        let disks: Vec<_> = c
                            .disks
                            .iter()
                            .map(|d| (d.path.clone(), d.read_only))
                            .collect();
                        let want: Vec<_> = (s.root_image.iter().map(|p| (p.clone(), true)))
                            .chain(s.disk.iter().map(|p| (p.clone(), false)))
                            .collect();
                        assert_eq!(disks, want);
                        let taps: Vec<_> = c.nets.iter().map(|n| n.tap.to_string()).collect();
                        assert_eq!(taps, tap.iter().map(|t| t.to_string()).collect::<Vec<_>>());
                        assert!(c.rng);
                        // Free page reporting and deflate on OOM, no inflation.
                        let balloon = c.balloon.expect("every microVM app has a balloon");
                        assert!(balloon.free_page_reporting && balloon.deflate_on_oom);
                        assert_eq!(balloon.target_mib, 0);
                        assert_eq!(c.console, Console::Stdio);
                        assert_eq!(c.control_socket, Some(s.run_dir.join("vmm.sock")));
                        let jail = c.jail.expect("the agent always confines its VMMs");
                        assert_eq!(
                            (jail.uid, jail.gid),
                            (USERNS_ID_BASE + 5, USERNS_ID_BASE + 5)
                        );
                        assert_eq!(c.ready_fd, ready_fd);
                        assert_eq!(u64::from(c.shutdown_timeout_ms), stop_ms);
                        seen += 1;
                    }
                }
            }
        }
    }
    assert_eq!(seen, 96);
    std::fs::remove_dir_all(&f.dir).unwrap();
}

#[test]
fn the_taps_the_agent_plans_are_names_the_vmm_takes() {
    let base = std::net::Ipv4Addr::new(10, 100, 0, 0);
    for n in [0, 1, MAX_APPS_PER_NETWORK - 1] {
        let link = net::plan(base, &format!("eu-{n}")).unwrap();
        IfName::parse(&link.tap).unwrap_or_else(|e| panic!("{}: {e}", link.tap));
        let f = files(&format!("tap{n}"));
        let mut s = spec(&f);
        s.tap = Some(link.tap.clone());
        // Parsed (the tap does not exist here, so not validated).
        let c = VmConfig::from_json(&vm_config_json(&s, None).unwrap()).unwrap();
        assert_eq!(c.nets[0].tap, link.tap.as_str());
        std::fs::remove_dir_all(&f.dir).unwrap();
    }
}

#[test]
fn what_the_vmm_would_refuse_the_agent_refuses_when_writing() {
    let f = files("refused");
    let mut s = spec(&f);
    s.vcpus = 300; // the VMM's vcpus is a u8
    let e = vm_config_json(&s, None).unwrap_err();
    assert!(e.to_string().contains("vcpus"), "{e}");
    s.vcpus = 1;
    s.tap = Some("tap%d".into());
    let e = vm_config_json(&s, None).unwrap_err();
    assert!(e.to_string().contains("tap"), "{e}");
    s.tap = None;
    s.kernel = None;
    assert!(vm_config_json(&s, None).is_err());
    std::fs::remove_dir_all(&f.dir).unwrap();
}
