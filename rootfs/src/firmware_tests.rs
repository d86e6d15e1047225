//! Firmware builder tests on a small synthetic cache: a fake kernel file, a tiny modules tree
//! (one module xz-compressed, no modules.dep, so dependencies come from .modinfo) and the host's
//! static busybox. Legitimate for testing the builder itself; real kernels are booted in tests/.

use super::*;
use crate::cpio::tests::parse;
use crate::modules::tests::fake_module;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const RELEASE: &str = "6.1.0-99-amd64";

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cpevisor-fw-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let put = |rel: &str, data: &[u8]| {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        let k = format!("cache/kernel/amd64/root/lib/modules/{RELEASE}");
        put(
            "cache/kernel/amd64/release",
            format!("{RELEASE}\n").as_bytes(),
        );
        put(
            &format!("cache/kernel/amd64/root/boot/vmlinuz-{RELEASE}"),
            b"fake kernel image",
        );
        put(
            &format!("{k}/kernel/drivers/virtio/virtio_ring.ko"),
            &fake_module("virtio_ring", &[]),
        );
        let blk = fake_module("virtio_blk", &["virtio_ring"]);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &blk[..], &mut xz).unwrap();
        put(&format!("{k}/kernel/drivers/block/virtio_blk.ko.xz"), &xz);
        put(
            &format!("{k}/kernel/fs/unused.ko"),
            &fake_module("unused", &[]),
        );
        put(
            &format!("{k}/modules.builtin"),
            b"kernel/drivers/virtio/virtio.ko\n",
        );
        put(
            "cache/busybox/amd64/busybox",
            &fs::read("/bin/busybox").expect("host static busybox"),
        );
        // A project binary (an x86_64 ELF header is enough) and a non-ELF file to be skipped.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        put("bins/cpevisor", &elf);
        put("bins/cpevisor.d", b"cpevisor: src/main.rs\n");
        // `make cross` leaves the applet links beside the multi-call binary for host use: the
        // builder makes its own, and skips these.
        std::os::unix::fs::symlink("cpevisor", dir.join("bins/cpevisord")).unwrap();
        // A KVM target's: the VMM folded into the multi-call binary.
        std::os::unix::fs::symlink("cpevisor", dir.join("bins/cpevisor-vmm")).unwrap();
        // Not a link to the multi-call binary: skipped like any other symlink.
        std::os::unix::fs::symlink("cpevisor.d", dir.join("bins/deps")).unwrap();
        Fixture { dir }
    }

    fn spec(&self) -> FirmwareSpec {
        FirmwareSpec {
            board: "test-board".into(),
            arch: "x86_64".into(),
            debian_arch: "amd64".into(),
            kernel_flavour: "amd64".into(),
            modules: vec!["virtio_blk".into(), "virtio".into()],
            board_json: "{\"name\": \"test-board\"}\n".into(),
            network: None,
        }
    }

    fn inputs(&self) -> FirmwareInputs {
        FirmwareInputs {
            cache: self.dir.join("cache"),
            bins: Some(self.dir.join("bins")),
            mtime: 0,
            tree: None,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn unpack(path: &Path) -> Vec<crate::cpio::tests::Parsed> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    parse(&raw)
}

#[test]
fn two_builds_are_byte_identical() {
    let fx = Fixture::new("repro");
    let (a, b) = (fx.dir.join("out-a"), fx.dir.join("out-b"));
    build_firmware(&fx.spec(), &fx.inputs(), &a).unwrap();
    build_firmware(&fx.spec(), &fx.inputs(), &b).unwrap();
    for f in ["kernel", "initramfs.cpio.gz", "manifest.txt"] {
        let (x, y) = (fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        assert!(!x.is_empty(), "{f} is empty");
        assert_eq!(x, y, "{f} differs between two builds");
    }
    // A different SOURCE_DATE_EPOCH changes the initramfs, proving the stamp is applied.
    let c = fx.dir.join("out-c");
    let mut inputs = fx.inputs();
    inputs.mtime = 1_700_000_000;
    build_firmware(&fx.spec(), &inputs, &c).unwrap();
    assert_ne!(
        fs::read(a.join("initramfs.cpio.gz")).unwrap(),
        fs::read(c.join("initramfs.cpio.gz")).unwrap()
    );
}

#[test]
fn initramfs_holds_init_busybox_binaries_and_module_closure() {
    let fx = Fixture::new("content");
    let out = fx.dir.join("out");
    let manifest = build_firmware(&fx.spec(), &fx.inputs(), &out).unwrap();
    assert_eq!(fs::read(out.join("kernel")).unwrap(), b"fake kernel image");
    let entries = unpack(&out.join("initramfs.cpio.gz"));
    let get = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing from initramfs"))
    };
    let init = String::from_utf8(get("init").data.clone()).unwrap();
    assert_eq!(get("init").mode, 0o100755);
    assert!(init.contains("BOARD='test-board'") && init.contains("ARCH='x86_64'"));
    assert_eq!(get("bin/busybox").data, fs::read("/bin/busybox").unwrap());
    assert_eq!(get("bin/sh").data, b"busybox");
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert_eq!(get("dev/null").rdev, (1, 3));
    // The multi-call binary once, its applets as symlinks to it.
    assert_eq!(get("usr/bin/cpevisor").mode, 0o100755);
    for applet in ["cpevisord", "cpevisorctl", "cpevisor-vmm"] {
        let link = get(&format!("usr/bin/{applet}"));
        assert_eq!(link.mode, 0o120777, "{applet}");
        assert_eq!(link.data, b"cpevisor", "{applet}");
    }
    assert!(!entries.iter().any(|e| e.name.ends_with(".d")));
    assert_eq!(get("etc/cpevisor/board").data, b"test-board\n");
    assert_eq!(
        get("etc/cpevisor/board.json").data,
        b"{\"name\": \"test-board\"}\n"
    );
    assert_eq!(get("tmp").mode, 0o041777);
    for d in ["proc", "sys", "run", "data", "usr/sbin", "sbin"] {
        assert_eq!(get(d).mode & 0o170000, 0o040000, "{d} is not a directory");
    }
    // The closure: virtio_ring pulled in by virtio_blk, decompressed, loaded first; the unused
    // module is left out; the built-in one is reported, not loaded.
    let m = format!("lib/modules/{RELEASE}/kernel/drivers");
    assert_eq!(
        get(&format!("{m}/block/virtio_blk.ko")).data,
        fake_module("virtio_blk", &["virtio_ring"])
    );
    assert!(entries.iter().all(|e| !e.name.contains("unused")));
    assert_eq!(
        String::from_utf8(get(LOAD_ORDER_PATH).data.clone()).unwrap(),
        format!("virtio_ring /{m}/virtio/virtio_ring.ko\nvirtio_blk /{m}/block/virtio_blk.ko\n")
    );
    assert_eq!(
        String::from_utf8(
            get(&format!("lib/modules/{RELEASE}/modules.dep"))
                .data
                .clone()
        )
        .unwrap(),
        "kernel/drivers/virtio/virtio_ring.ko:\n\
         kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n"
    );
    assert_eq!(manifest.builtin, ["virtio"]);
    let text = fs::read_to_string(out.join("manifest.txt")).unwrap();
    assert!(
        text.contains(&format!("kernel_release={RELEASE}\n")),
        "{text}"
    );
    assert!(
        text.contains("module=virtio_blk path=/lib/modules/"),
        "{text}"
    );
    assert!(text.contains("binary=/usr/bin/cpevisor sha256="), "{text}");
    assert!(!text.contains("binary=/usr/bin/cpevisord"), "{text}");
    assert!(
        text.contains("link=/usr/bin/cpevisord target=cpevisor\n")
            && text.contains("link=/usr/bin/cpevisorctl target=cpevisor\n")
            && text.contains("link=/usr/bin/cpevisor-vmm target=cpevisor\n"),
        "{text}"
    );
    assert!(!entries.iter().any(|e| e.name == "usr/bin/deps"));
    assert!(text.contains(&format!("initramfs_sha256={}", manifest.initramfs_sha256)));
}

#[test]
fn init_template_is_valid_shell_and_fully_rendered() {
    let init = render_init(INIT_TEMPLATE, "qemu-virt-a53", "aarch64").unwrap();
    assert!(init.starts_with("#!/bin/sh\n"));
    assert!(init.contains("CPEVISOR-READY board=$BOARD arch=$ARCH kernel=$(uname -r)"));
    let dir = std::env::temp_dir().join(format!("cpevisor-init-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("init");
    fs::write(&path, &init).unwrap();
    let out = Command::new("/bin/busybox")
        .args(["sh", "-n"])
        .arg(&path)
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = render_init("x @BOARD@ @KERNEL@", "b", "a").unwrap_err();
    assert!(err.to_string().contains("@KERNEL@"), "{err}");
}

#[test]
fn bad_inputs_give_errors_naming_what_is_wrong() {
    let fx = Fixture::new("bad");
    let out = fx.dir.join("out");
    let err_of = |spec: &FirmwareSpec, inputs: &FirmwareInputs| {
        build_firmware(spec, inputs, &out).unwrap_err().to_string()
    };

    // Busybox for the wrong architecture.
    let mut spec = fx.spec();
    spec.arch = "aarch64".into();
    let err = err_of(&spec, &fx.inputs());
    assert!(err.contains("busybox") && err.contains("aarch64"), "{err}");

    // A board name that would break the init script.
    let mut spec = fx.spec();
    spec.board = "x'; reboot; '".into();
    assert!(err_of(&spec, &fx.inputs()).contains("board name"));

    // A module that does not exist.
    let mut spec = fx.spec();
    spec.modules.push("no_such_module".into());
    assert!(err_of(&spec, &fx.inputs()).contains("\"no_such_module\""));

    // A flavour that is not in the cache.
    let mut spec = fx.spec();
    spec.kernel_flavour = "armmp".into();
    let err = err_of(&spec, &fx.inputs());
    assert!(
        err.contains("kernel/armmp/release") && err.contains("make setup"),
        "{err}"
    );

    // A missing binaries directory.
    let mut inputs = fx.inputs();
    inputs.bins = Some(fx.dir.join("nope"));
    assert!(err_of(&fx.spec(), &inputs).contains("nope"));

    // A project binary for another architecture.
    let mut arm = fs::read(fx.dir.join("bins/cpevisor")).unwrap();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    fs::write(fx.dir.join("bins/cpevisor-extra"), arm).unwrap();
    let err = err_of(&fx.spec(), &fx.inputs());
    assert!(
        err.contains("cpevisor-extra") && err.contains("machine 183"),
        "{err}"
    );
    assert!(!out.join("initramfs.cpio.gz").exists());
}

#[test]
fn a_router_board_gets_its_network_file_and_the_tree() {
    let fx = Fixture::new("router");
    // The tree as scripts/debian-tree.sh lays it out: the tool and its libraries, plain files.
    let tree = fx.dir.join("tree");
    fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    fs::create_dir_all(tree.join("lib/x86_64-linux-gnu")).unwrap();
    fs::write(tree.join("usr/sbin/nft"), b"nft").unwrap();
    fs::set_permissions(tree.join("usr/sbin/nft"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(tree.join("lib/x86_64-linux-gnu/libnftables.so.1"), b"lib").unwrap();
    let board: cpevisor_boards::Board =
        cpevisor_boards::Board::by_name_in(&cpevisor_boards::boards_dir(), "qemu-malta-mipsel")
            .unwrap();
    let mut spec = fx.spec();
    spec.network = Some(crate::board_spec::network_file(
        board.network.as_ref().unwrap(),
    ));
    let mut inputs = fx.inputs();
    inputs.tree = Some(tree.clone());
    let out = fx.dir.join("out");
    build_firmware(&spec, &inputs, &out).unwrap();
    let entries = unpack(&out.join("initramfs.cpio.gz"));
    let get = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing from initramfs"))
    };
    assert_eq!(get("usr/sbin/nft").data, b"nft");
    assert_eq!(get("usr/sbin/nft").mode, 0o100755);
    assert_eq!(get("lib/x86_64-linux-gnu/libnftables.so.1").mode, 0o100644);
    let network = String::from_utf8(get("etc/cpevisor/network").data.clone()).unwrap();
    assert!(
        network.contains("WAN=eth0\nLAN=br-lan\nLAN_PORTS=\"eth1\"\nLAN_ADDRESS=192.168.1.1/24\n"),
        "{network}"
    );
    // A board without [network] gets no such file; a tree with a link is refused, named.
    build_firmware(&fx.spec(), &fx.inputs(), &fx.dir.join("plain")).unwrap();
    let plain = unpack(&fx.dir.join("plain/initramfs.cpio.gz"));
    assert!(!plain.iter().any(|e| e.name == "etc/cpevisor/network"));
    std::os::unix::fs::symlink("nft", tree.join("usr/sbin/nft-link")).unwrap();
    let err = build_firmware(&spec, &inputs, &fx.dir.join("bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tree") && err.contains("nft-link"), "{err}");
}

#[test]
fn an_applet_built_separately_beside_the_multicall_binary_is_refused() {
    let fx = Fixture::new("stale");
    let out = fx.dir.join("out");
    // A build directory from before the multi-call binary, not cleaned: cpevisorctl as a file.
    let elf = fs::read(fx.dir.join("bins/cpevisor")).unwrap();
    fs::write(fx.dir.join("bins/cpevisorctl"), &elf).unwrap();
    let err = build_firmware(&fx.spec(), &fx.inputs(), &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cpevisorctl") && err.contains("applet of cpevisor"),
        "{err}"
    );
    assert!(!out.join("initramfs.cpio.gz").exists());
    // A jail target's directory has no VMM link: only the two applets every board has.
    fs::remove_file(fx.dir.join("bins/cpevisorctl")).unwrap();
    fs::remove_file(fx.dir.join("bins/cpevisor-vmm")).unwrap();
    let manifest = build_firmware(&fx.spec(), &fx.inputs(), &out).unwrap();
    let linked: Vec<&str> = manifest.links.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(linked, ["usr/bin/cpevisorctl", "usr/bin/cpevisord"]);

    // Without the multi-call binary, binaries go in as they are and no links are made.
    fs::remove_file(fx.dir.join("bins/cpevisor")).unwrap();
    fs::remove_file(fx.dir.join("bins/cpevisord")).unwrap();
    fs::write(fx.dir.join("bins/cpevisorctl"), &elf).unwrap();
    let manifest = build_firmware(&fx.spec(), &fx.inputs(), &out).unwrap();
    assert!(manifest.links.is_empty(), "{manifest:?}");
    assert_eq!(manifest.binaries.len(), 1);
    assert_eq!(manifest.binaries[0].0, "usr/bin/cpevisorctl");
    let entries = unpack(&out.join("initramfs.cpio.gz"));
    assert!(!entries.iter().any(|e| e.name == "usr/bin/cpevisord"));
}
