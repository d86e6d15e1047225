use super::*;
use crate::cpio::tests::{parse, Parsed};
use std::io::Write;

/// A scratch directory per test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("cpevisor-guest-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const RELEASE: &str = "6.1.0-99-amd64";

/// A fake bzImage: only the setup-header magic matters to the builder.
fn fake_bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 4096];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

fn fake_arm64_image() -> Vec<u8> {
    let mut k = vec![0u8; 4096];
    k[0x38..0x3c].copy_from_slice(b"ARM\x64");
    k
}

/// A cache with the host's x86_64 busybox, a stock amd64 "package" whose modules.dep lists the
/// app's modules (so they need not be real ELF), and a minimal x86_64 kernel.
fn synthetic_cache(dir: &Path) -> PathBuf {
    let cache = dir.join("cache");
    let kdir = cache.join("kernel/amd64");
    let mods = kdir.join("root/lib/modules").join(RELEASE);
    fs::create_dir_all(mods.join("kernel")).unwrap();
    fs::create_dir_all(kdir.join("root/boot")).unwrap();
    fs::write(kdir.join("release"), RELEASE).unwrap();
    fs::write(
        kdir.join(format!("root/boot/vmlinuz-{RELEASE}")),
        fake_bzimage(),
    )
    .unwrap();
    let mut dep = String::new();
    for name in [
        "virtio_mmio",
        "virtio_blk",
        "virtio_net",
        "virtio_rng",
        "ext4",
        "crc32c_generic",
        "evdev",
        "button",
    ] {
        fs::write(
            mods.join(format!("kernel/{name}.ko")),
            format!("module {name}"),
        )
        .unwrap();
        dep += &format!("kernel/{name}.ko:\n");
    }
    fs::write(mods.join("modules.dep"), dep).unwrap();
    let minimal = cache.join("guest-kernel/x86_64");
    fs::create_dir_all(&minimal).unwrap();
    fs::write(minimal.join("bzImage"), fake_bzimage()).unwrap();
    let bb = cache.join("busybox/amd64");
    fs::create_dir_all(&bb).unwrap();
    fs::copy("/bin/busybox", bb.join("busybox")).unwrap();
    cache
}

fn spec(kernel: GuestKernel, data: Option<&[u8]>) -> GuestSpec {
    GuestSpec {
        arch: GuestArch::X86_64,
        app: "status".into(),
        root: GuestRoot::default_for(&kernel),
        kernel,
        data: data.map(<[u8]>::to_vec),
    }
}

fn have_erofs_utils() -> bool {
    Command::new("fsck.erofs").arg("-V").output().is_ok()
}

/// The erofs image unpacked by erofs-utils' own checker into `dest` (which must not exist).
fn extract_erofs(image: &Path, dest: &Path) {
    let out = Command::new("fsck.erofs")
        .arg(format!("--extract={}", dest.display()))
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck.erofs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn initramfs_entries(dir: &Path) -> Vec<Parsed> {
    let gz = fs::read(dir.join("initramfs.cpio.gz")).unwrap();
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut cpio)
        .unwrap();
    parse(&cpio)
}

fn have_debugfs() -> bool {
    Command::new("debugfs").arg("-V").output().is_ok()
}

/// `data.txt` as the ext2 image holds it, read back with e2fsprogs' debugfs.
fn disk_data(disk: &Path) -> String {
    let out = Command::new("debugfs")
        .args(["-R", "cat /data.txt"])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stock_build_has_app_modules_and_is_reproducible() {
    let s = Scratch::new("stock");
    let cache = synthetic_cache(&s.0);
    let inputs = GuestInputs {
        cache,
        mtime: 1_700_000_000,
    };
    let (a, b) = (s.0.join("a"), s.0.join("b"));
    let m = build_guest(&spec(GuestKernel::Stock, None), &inputs, &a).unwrap();
    // Source inode times must not leak into the disk: build the second one a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_guest(&spec(GuestKernel::Stock, None), &inputs, &b).unwrap();
    for f in ["Image", "initramfs.cpio.gz", "disk.img", "manifest.txt"] {
        let digest = |d: &Path| Sha256Digest::of(&fs::read(d.join(f)).unwrap()).hex();
        assert_eq!(digest(&a), digest(&b), "{f} differs between two builds");
    }
    assert_eq!(m.kernel_source, RELEASE);
    let mut names = m.modules.clone();
    names.sort();
    assert_eq!(
        names,
        // the app's modules and the power button's (x86: ACPI button, evdev)
        [
            "button",
            "crc32c_generic",
            "evdev",
            "ext4",
            "virtio_blk",
            "virtio_mmio",
            "virtio_net",
            "virtio_rng"
        ]
    );
    let entries = initramfs_entries(&a);
    let find = |name: &str| entries.iter().find(|e| e.name == name);
    let init = find("init").expect("init in the initramfs");
    assert_eq!(init.mode & 0o777, 0o755);
    assert!(String::from_utf8_lossy(&init.data).contains("APP-READY"));
    let order = find("etc/cpevisor/modules.load").expect("load order");
    assert!(String::from_utf8_lossy(&order.data).contains("virtio_mmio /lib/modules/"));
    assert!(find("www/cgi-bin/index.cgi").is_some());
    assert!(find("www/cgi-bin/poweroff").is_some());
    assert!(find("www/cgi-bin/write").is_some());
    let meminfo = find("www/cgi-bin/meminfo").expect("the meminfo CGI (docs/density.md)");
    assert_eq!(meminfo.mode & 0o777, 0o755);
    assert!(String::from_utf8_lossy(&meminfo.data).contains("/proc/meminfo"));
    assert!(find("www/status").is_some(), "/status must be a directory");
    assert!(entries
        .iter()
        .all(|e| e.mtime == 1_700_000_000 || e.name == "TRAILER!!!"));
    assert_eq!(fs::read(a.join("Image")).unwrap(), fake_bzimage());
    if have_debugfs() {
        assert_eq!(disk_data(&a.join("disk.img")), "cpevisor sample data\n");
    }
}

#[test]
fn minimal_initramfs_build_has_no_modules_and_carries_the_data() {
    let s = Scratch::new("minimal");
    let cache = synthetic_cache(&s.0);
    let inputs = GuestInputs { cache, mtime: 0 };
    let out = s.0.join("out");
    let mut minimal = spec(GuestKernel::Minimal, Some(b"token-1234\n"));
    minimal.root = GuestRoot::Initramfs;
    let m = build_guest(&minimal, &inputs, &out).unwrap();
    assert!(m.modules.is_empty());
    assert_eq!(m.root, GuestRoot::Initramfs);
    assert!(!out.join("root.erofs").exists());
    // mtime 0 (no SOURCE_DATE_EPOCH) must be reproducible too: e2fsprogs reads a fake time of 0
    // as "use the clock".
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = s.0.join("again");
    build_guest(&minimal, &inputs, &again).unwrap();
    let digest = |d: &Path| Sha256Digest::of(&fs::read(d.join("disk.img")).unwrap()).hex();
    assert_eq!(
        digest(&out),
        digest(&again),
        "disk.img differs between two builds"
    );
    let entries = initramfs_entries(&out);
    assert!(!entries.iter().any(|e| e.name.ends_with("modules.load")));
    assert!(!entries.iter().any(|e| e.name.ends_with(".ko")));
    if have_debugfs() {
        assert_eq!(disk_data(&out.join("disk.img")), "token-1234\n");
    }
    let text = fs::read_to_string(out.join("manifest.txt")).unwrap();
    assert!(text.contains("kernel=minimal"), "{text}");
    assert!(
        text.contains("root=initramfs\nroot_file=initramfs.cpio.gz\n"),
        "{text}"
    );
}

#[test]
fn minimal_build_defaults_to_a_reproducible_erofs_root() {
    if !have_erofs_utils() {
        eprintln!("skipped: erofs-utils not installed (make setup)");
        return;
    }
    let s = Scratch::new("erofs");
    let cache = synthetic_cache(&s.0);
    let inputs = GuestInputs {
        cache,
        mtime: 1_700_000_000,
    };
    let (a, b) = (s.0.join("a"), s.0.join("b"));
    // A stale initramfs from an earlier build must not stay beside the erofs root.
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("initramfs.cpio.gz"), b"stale").unwrap();
    let minimal = spec(GuestKernel::Minimal, Some(b"token-erofs\n"));
    assert_eq!(minimal.root, GuestRoot::Erofs);
    let m = build_guest(&minimal, &inputs, &a).unwrap();
    assert_eq!(m.root, GuestRoot::Erofs);
    assert!(!a.join("initramfs.cpio.gz").exists());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_guest(&minimal, &inputs, &b).unwrap();
    for f in ["Image", "root.erofs", "disk.img", "manifest.txt"] {
        let digest = |d: &Path| Sha256Digest::of(&fs::read(d.join(f)).unwrap()).hex();
        assert_eq!(digest(&a), digest(&b), "{f} differs between two builds");
    }
    let image = fs::read(a.join("root.erofs")).unwrap();
    // The erofs superblock: magic 0xE0F5E1E2 at 1024, its 4 KiB blocks (log2 at 1024 + 12).
    assert_eq!(image[1024..1028], 0xE0F5_E1E2u32.to_le_bytes());
    assert_eq!(image[1024 + 12], 12);
    assert_eq!(m.root_sha256, Sha256Digest::of(&image).hex());
    let text = fs::read_to_string(a.join("manifest.txt")).unwrap();
    assert!(
        text.contains(&format!(
            "root=erofs\nroot_file=root.erofs\nroot_sha256={}\n",
            m.root_sha256
        )),
        "{text}"
    );

    let tree = s.0.join("tree");
    extract_erofs(&a.join("root.erofs"), &tree);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        fs::symlink_metadata(tree.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let init = fs::read_to_string(tree.join("init")).unwrap();
    assert!(init.contains("APP-READY"));
    assert_eq!(mode("init"), 0o755);
    // The kernel runs /sbin/init when the root is a disk.
    assert_eq!(
        fs::read_link(tree.join("sbin/init")).unwrap(),
        Path::new("/init")
    );
    // Every applet linked at build time (the root is read-only at boot).
    let applets = crate::erofs::busybox_applets(&fs::read("/bin/busybox").unwrap()).unwrap();
    for name in applets.iter().filter(|n| *n != "busybox") {
        let link = fs::read_link(tree.join("bin").join(name))
            .unwrap_or_else(|e| panic!("/bin/{name}: {e}"));
        assert_eq!(link, Path::new("busybox"), "/bin/{name}");
    }
    for cmd in ["mount", "httpd", "ip", "devmem"] {
        assert!(applets.iter().any(|a| a == cmd), "busybox has no {cmd}");
    }
    // Mount points exist; /tmp keeps its sticky bit; no device nodes (devtmpfs provides them).
    for dir in ["proc", "sys", "dev", "tmp", "run", "data", "www/status"] {
        assert!(tree.join(dir).is_dir(), "/{dir}");
    }
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(fs::read_dir(tree.join("dev")).unwrap().count(), 0);
    assert_eq!(mode("www/cgi-bin/meminfo"), 0o755);
    assert_eq!(mode("etc/passwd"), 0o644);
    assert_eq!(
        fs::read(tree.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    if have_debugfs() {
        assert_eq!(disk_data(&a.join("disk.img")), "token-erofs\n");
    }
}

#[test]
fn an_erofs_root_needs_the_minimal_kernel() {
    let s = Scratch::new("erofs-stock");
    let cache = synthetic_cache(&s.0);
    let inputs = GuestInputs { cache, mtime: 0 };
    let mut stock = spec(GuestKernel::Stock, None);
    stock.root = GuestRoot::Erofs;
    let err = build_guest(&stock, &inputs, &s.0.join("o"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--root initramfs"), "{err}");
    assert_eq!(
        GuestRoot::default_for(&GuestKernel::Stock),
        GuestRoot::Initramfs
    );
    assert_eq!(GuestRoot::parse("erofs").unwrap(), GuestRoot::Erofs);
    assert!(GuestRoot::parse("squashfs")
        .unwrap_err()
        .to_string()
        .contains("erofs or initramfs"));
}

#[test]
fn busybox_applets_come_from_its_sorted_name_table() {
    let mut bin = b"\x7fELF junk [ not this\0".to_vec();
    bin.extend_from_slice(b"[\0[[\0ash\0cat\0sh\0");
    let more: Vec<String> = (0..20).map(|i| format!("x{i:02}")).collect();
    for n in &more {
        bin.extend_from_slice(n.as_bytes());
        bin.push(0);
    }
    bin.extend_from_slice(b"\0trailing\0");
    let names = crate::erofs::busybox_applets(&bin).unwrap();
    assert_eq!(names[..5], ["[", "[[", "ash", "cat", "sh"]);
    assert_eq!(names.last().unwrap(), "x19");
    assert_eq!(names.len(), 5 + 20);
    // `ash` after `sh`: out of order, so not taken as a table.
    let mut bad = b"[\0[[\0sh\0ash\0\0".to_vec();
    bad.extend_from_slice(&[0; 8]);
    let err = crate::erofs::busybox_applets(&bad).unwrap_err().to_string();
    assert!(err.contains("out of order"), "{err}");
    let err = crate::erofs::busybox_applets(b"no table here")
        .unwrap_err()
        .to_string();
    assert!(err.contains("applet table"), "{err}");
    // The real one: the host's busybox has a few hundred applets, `sh` among them.
    let host = crate::erofs::busybox_applets(&fs::read("/bin/busybox").unwrap()).unwrap();
    assert!(
        host.len() > 100 && host.iter().any(|a| a == "sh"),
        "{host:?}"
    );
}

#[test]
fn missing_inputs_name_the_file_and_the_fix() {
    let s = Scratch::new("missing");
    let cache = synthetic_cache(&s.0);
    fs::remove_file(cache.join("guest-kernel/x86_64/bzImage")).unwrap();
    let inputs = GuestInputs {
        cache: cache.clone(),
        mtime: 0,
    };
    let err = build_guest(&spec(GuestKernel::Minimal, None), &inputs, &s.0.join("o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guest-kernel/x86_64/bzImage") && err.contains("make guest-kernels"),
        "{err}"
    );

    let mut unknown = spec(GuestKernel::Stock, None);
    unknown.app = "nope".into();
    let err = build_guest(&unknown, &inputs, &s.0.join("o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown app \"nope\"") && err.contains("status"),
        "{err}"
    );

    // An aarch64 guest needs arm64 busybox, absent from this cache.
    let mut arm = spec(GuestKernel::Stock, None);
    arm.arch = GuestArch::Aarch64;
    let err = build_guest(&arm, &inputs, &s.0.join("o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("busybox/arm64/busybox") && err.contains("make setup"),
        "{err}"
    );

    // The x86_64 busybox put where arm64's belongs is refused as the wrong machine.
    let bb = cache.join("busybox/arm64");
    fs::create_dir_all(&bb).unwrap();
    fs::copy("/bin/busybox", bb.join("busybox")).unwrap();
    let err = build_guest(&arm, &inputs, &s.0.join("o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("machine 62") && err.contains("machine 183"),
        "{err}"
    );

    let too_big = vec![b'x'; MAX_DATA_SIZE as usize + 1];
    let err = build_guest(
        &spec(GuestKernel::Stock, Some(&too_big)),
        &inputs,
        &s.0.join("o"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("app data file"), "{err}");
}

#[test]
fn kernel_images_are_checked_and_gunzipped() {
    let what = Path::new("k");
    let raw = fake_arm64_image();
    assert_eq!(
        guest_kernel_image(raw.clone(), GuestArch::Aarch64, what).unwrap(),
        raw
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        guest_kernel_image(gz, GuestArch::Aarch64, what).unwrap(),
        raw
    );
    let err = guest_kernel_image(fake_bzimage(), GuestArch::Aarch64, what)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an aarch64 kernel"), "{err}");
    let err = guest_kernel_image(raw, GuestArch::X86_64, what)
        .unwrap_err()
        .to_string();
    assert!(err.contains("HdrS"), "{err}");
    let err = guest_kernel_image(vec![0x1f, 0x8b, 8, 0, 1, 2], GuestArch::Aarch64, what)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad gzip data"), "{err}");
    let err = guest_kernel_image(Vec::new(), GuestArch::X86_64, what)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an x86_64 kernel"), "{err}");
}

#[test]
fn arch_and_kernel_names_parse_strictly() {
    assert_eq!(GuestArch::parse("aarch64").unwrap(), GuestArch::Aarch64);
    assert!(GuestArch::parse("arm64")
        .unwrap_err()
        .to_string()
        .contains("aarch64 or x86_64"));
    assert_eq!(GuestKernel::parse("minimal").unwrap(), GuestKernel::Minimal);
    assert!(GuestKernel::parse("")
        .unwrap_err()
        .to_string()
        .contains("stock or minimal"));
}

#[test]
fn dns_filter_guest_carries_the_tree_and_its_block_list_on_the_disk() {
    if !have_erofs_utils() {
        eprintln!("erofs-utils missing: skipped (make setup installs them)");
        return;
    }
    let s = Scratch::new("dns-filter");
    let inputs = GuestInputs {
        cache: synthetic_cache(&s.0),
        mtime: 0,
    };
    let mut spec = spec(GuestKernel::Minimal, Some(b"ads.example\n"));
    spec.app = "dns-filter".into();
    // The server: an ELF of the guest's arch (the host's x86_64 busybox stands in).
    let tree = vec![
        TreeFile {
            path: "usr/sbin/dnsmasq".into(),
            data: fs::read("/bin/busybox").unwrap(),
            mode: 0o755,
        },
        TreeFile {
            path: "lib/x86_64-linux-gnu/libc.so.6".into(),
            data: b"libc".to_vec(),
            mode: 0o644,
        },
    ];
    let err = build_guest(&spec, &inputs, &s.0.join("none"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs --tree"), "{err}");
    let mut arm = spec.clone();
    arm.arch = GuestArch::Aarch64;
    let err = check_tree(&APPS[1], &arm, &tree).unwrap_err().to_string();
    assert!(err.contains("usr/sbin/dnsmasq"), "{err}");

    let out = s.0.join("out");
    let m = build_guest_with_tree(&spec, &tree, &inputs, &out).unwrap();
    assert_eq!(m.app, "dns-filter");
    let root = s.0.join("root");
    extract_erofs(&out.join("root.erofs"), &root);
    assert_eq!(
        fs::read(root.join("usr/sbin/dnsmasq")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert!(root.join("lib/x86_64-linux-gnu/libc.so.6").is_file());
    let init = fs::read_to_string(root.join("init")).unwrap();
    assert!(init.contains(". /lib/cpevisor/boot") && init.contains("APP-READY app=dns-filter"));
    assert!(fs::read_to_string(root.join("lib/cpevisor/boot"))
        .unwrap()
        .contains("APP-NET state=configured"));
    assert!(root.join("bin/dns-filter").is_file());
    assert!(root.join("etc/dns-filter/blocklist").is_file());
    // The disk holds the list as /blocklist (the guest's /data/blocklist).
    let listing = Command::new("debugfs")
        .args(["-R", "cat /blocklist"])
        .arg(out.join("disk.img"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "ads.example\n");

    // The status app takes no tree.
    let status = GuestSpec {
        app: "status".into(),
        ..spec.clone()
    };
    let err = build_guest_with_tree(&status, &tree, &inputs, &s.0.join("status"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes no --tree"), "{err}");
}
