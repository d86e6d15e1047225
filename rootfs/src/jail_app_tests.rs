use super::*;
use cpevisor_rootfs::app_tree::TreeFile;
use std::process::Command;

/// The host's busybox-static stands in for a board's: the tar layout does not depend on it.
const HOST_BUSYBOX: &str = "/bin/busybox";

fn spec(app: JailApp, token: Option<&[u8]>) -> JailAppSpec {
    JailAppSpec {
        arch: JailArch::X86_64,
        app,
        token: token.map(<[u8]>::to_vec),
        tree: Vec::new(),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jail-app-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_rootfs_unpacks_with_tar_and_is_reproducible() {
    let busybox = b"\x7fELF fake busybox".to_vec();
    let s = spec(JailApp::Status, Some(b"token-1.0\n"));
    let a = rootfs_tar(&s, &busybox, 1234).unwrap();
    assert_eq!(a, rootfs_tar(&s, &busybox, 1234).unwrap());
    assert_ne!(a, rootfs_tar(&s, &busybox, 1235).unwrap(), "mtime ignored");
    assert_eq!(a.len() % 512, 0);

    let dir = scratch("status");
    fs::write(dir.join("rootfs.tar"), &a).unwrap();
    let list = Command::new("tar")
        .args(["-tvf", "rootfs.tar"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    let listing = String::from_utf8(list.stdout).unwrap();
    for want in [
        "bin/busybox",
        "bin/status",
        "etc/status/token",
        "www/cgi-bin/index.cgi",
        "www/cgi-bin/write",
        "www/status/",
        "data/",
        "proc/",
    ] {
        assert!(listing.contains(want), "{want} missing:\n{listing}");
    }
    assert!(listing.contains("drwxrwxrwt"), "/tmp sticky:\n{listing}");
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let x = Command::new("tar")
        .args(["-xf", "../rootfs.tar"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(x.success());
    assert_eq!(
        fs::read(root.join("etc/status/token")).unwrap(),
        b"token-1.0\n"
    );
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), busybox);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root.join("bin/status"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn status_app_serves_its_page_from_the_unpacked_rootfs() {
    // The scripts run under the host's busybox by absolute path, as in the jail: the CGI
    // prints the token shipped in the rootfs. (Runs without a jail: /etc, /data are the host's
    // here, so only the CGI, which reads its token from /etc/status, is run, via a chroot-free
    // rewrite of that one path.)
    let cgi = include_str!("../files/jail/status/status.cgi");
    assert!(cgi.starts_with("#!/bin/busybox sh\n"));
    let dir = scratch("cgi");
    fs::write(dir.join("token"), "tok-42\n").unwrap();
    let script = cgi.replace(
        "/etc/status/token",
        &dir.join("token").display().to_string(),
    );
    let out = Command::new(HOST_BUSYBOX)
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with("Content-Type: text/plain\r\n\r\n"),
        "{page}"
    );
    for want in [
        "app=status\n",
        "backend=jail\n",
        "data=tok-42\n",
        "uptime_s=",
    ] {
        assert!(page.contains(want), "{want} missing:\n{page}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_script_runs_under_busybox_by_path() {
    // No /bin/sh symlink in the rootfs: each script must name /bin/busybox itself.
    for s in [
        include_str!("../files/jail/status/status"),
        include_str!("../files/jail/status/status.cgi"),
        include_str!("../files/jail/memhog/memhog"),
    ] {
        assert!(s.starts_with("#!/bin/busybox sh\n"), "{s}");
    }
}

#[test]
fn scripts_refuse_bad_arguments() {
    for (script, arg) in [
        (include_str!("../files/jail/status/status"), "80; reboot"),
        (include_str!("../files/jail/memhog/memhog"), "soon"),
    ] {
        let out = Command::new(HOST_BUSYBOX)
            .args(["sh", "-c", script, "app", arg])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("expected"),
            "{out:?}"
        );
    }
}

#[test]
fn memhog_rootfs_has_its_command_and_no_status_files() {
    let tar = rootfs_tar(&spec(JailApp::Memhog, None), b"\x7fELF", 0).unwrap();
    let names = tar_names(&tar);
    assert!(names.iter().any(|n| n == "bin/memhog"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("www")), "{names:?}");
    assert_eq!(JailApp::Memhog.command()[0], "/bin/memhog");
    assert_eq!(JailApp::Status.command(), ["/bin/status", "8080"]);
}

/// Names of the entries, read back by walking the headers (checks sizes and padding too).
fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let h = &tar[at..at + 512];
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap();
        names.push(String::from_utf8(h[..name_end].to_vec()).unwrap());
        let size_text = std::str::from_utf8(&h[124..135]).unwrap();
        let size = u64::from_str_radix(size_text, 8).unwrap() as usize;
        at += 512 + size.div_ceil(512) * 512;
    }
    assert_eq!(&tar[at..], &[0u8; 1024][..], "end marker");
    names
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let long = vec![b'x'; MAX_TOKEN_SIZE as usize + 1];
    let err = rootfs_tar(&spec(JailApp::Status, Some(&long)), b"", 0).unwrap_err();
    assert!(err.to_string().contains("at most 4096"), "{err}");
    assert!(JailArch::parse("mips")
        .unwrap_err()
        .to_string()
        .contains("mipsel"));
    assert!(JailApp::parse("hello")
        .unwrap_err()
        .to_string()
        .contains("status, memhog or dns-filter"));

    let host = fs::read(HOST_BUSYBOX).unwrap();
    JailArch::X86_64
        .check_elf(&host, Path::new(HOST_BUSYBOX))
        .unwrap();
    let err = JailArch::Mipsel
        .check_elf(&host, Path::new(HOST_BUSYBOX))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not mipsel"), "{err}");
    let err = JailArch::Armv7
        .check_elf(b"#!/bin/sh", Path::new("x"))
        .unwrap_err();
    assert!(err.to_string().contains("not an ELF"), "{err}");

    let cache = scratch("cache");
    let err = build_jail_app(
        &JailAppSpec {
            arch: JailArch::Mipsel,
            app: JailApp::Status,
            token: None,
            tree: Vec::new(),
        },
        &JailAppInputs {
            cache: cache.clone(),
            mtime: 0,
        },
        &cache.join("out"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("busybox/mipsel/busybox") && err.contains("make setup"),
        "{err}"
    );
    assert!(!cache.join("out").exists(), "nothing written on failure");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn builds_from_the_cache_for_a_board_arch() {
    // Uses the project's cache when `make setup` has filled it; skipped (passes) otherwise,
    // since unit tests must not need the network.
    let Some(home) = std::env::var_os("CPEVISOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cpevisor")))
    else {
        return;
    };
    if !home.join("busybox/mipsel/busybox").is_file() {
        eprintln!("no mipsel busybox in {}: skipped", home.display());
        return;
    }
    let out = scratch("build");
    let s = JailAppSpec {
        arch: JailArch::Mipsel,
        app: JailApp::Status,
        token: Some(b"t\n".to_vec()),
        tree: Vec::new(),
    };
    let inputs = JailAppInputs {
        cache: home,
        mtime: 0,
    };
    let m = build_jail_app(&s, &inputs, &out).unwrap();
    let first = fs::read(out.join("rootfs.tar")).unwrap();
    assert_eq!(m.rootfs_bytes, first.len() as u64);
    build_jail_app(&s, &inputs, &out).unwrap();
    assert_eq!(first, fs::read(out.join("rootfs.tar")).unwrap());
    let text = fs::read_to_string(out.join("manifest.txt")).unwrap();
    assert!(
        text.contains("arch=mipsel") && text.contains(&m.rootfs_sha256),
        "{text}"
    );
    let _ = fs::remove_dir_all(&out);
}

/// A tree like scripts/dns-filter-tree.sh's: the server (here the host's x86_64 busybox, an
/// ELF of the right arch) and a library.
fn dns_tree() -> Vec<TreeFile> {
    vec![
        TreeFile {
            path: "lib/x86_64-linux-gnu/libc.so.6".into(),
            data: b"libc".to_vec(),
            mode: 0o644,
        },
        TreeFile {
            path: "lib64/ld-linux-x86-64.so.2".into(),
            data: b"ld.so".to_vec(),
            mode: 0o755,
        },
        TreeFile {
            path: "usr/sbin/dnsmasq".into(),
            data: fs::read(HOST_BUSYBOX).unwrap(),
            mode: 0o755,
        },
    ]
}

#[test]
fn dns_filter_rootfs_carries_the_tree_the_script_and_the_default_list() {
    let busybox = b"\x7fELF fake busybox".to_vec();
    let mut s = spec(JailApp::DnsFilter, None);
    s.tree = dns_tree();
    let tar = rootfs_tar(&s, &busybox, 0).unwrap();
    assert_eq!(tar, rootfs_tar(&s, &busybox, 0).unwrap());
    let dir = scratch("dns-filter");
    fs::write(dir.join("rootfs.tar"), &tar).unwrap();
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let x = Command::new("tar")
        .args(["-xf", "../rootfs.tar"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(x.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        fs::read(root.join("usr/sbin/dnsmasq")).unwrap(),
        fs::read(HOST_BUSYBOX).unwrap()
    );
    assert_eq!(mode("usr/sbin/dnsmasq"), 0o755);
    assert_eq!(mode("lib/x86_64-linux-gnu/libc.so.6"), 0o644);
    assert_eq!(mode("bin/dns-filter"), 0o755);
    let list = fs::read_to_string(root.join("etc/dns-filter/blocklist")).unwrap();
    assert!(list.lines().any(|l| l == "blocked.invalid"), "{list}");
    let script = fs::read_to_string(root.join("bin/dns-filter")).unwrap();
    assert!(script.starts_with("#!/bin/busybox sh\n"));
    for dir in ["data", "tmp", "proc", "dev", "lib64", "usr/sbin"] {
        assert!(root.join(dir).is_dir(), "/{dir}");
    }
    assert_eq!(
        JailApp::DnsFilter.command(),
        ["/bin/dns-filter", "--port", "1053"]
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dns_filter_needs_a_tree_with_its_server_for_the_arch_and_others_take_none() {
    let busybox = b"\x7fELF fake busybox".to_vec();
    let s = spec(JailApp::DnsFilter, None);
    let err = rootfs_tar(&s, &busybox, 0).unwrap_err().to_string();
    assert!(
        err.contains("needs --tree") && err.contains("dns-filter-tree.sh x86_64"),
        "{err}"
    );
    let mut s = spec(JailApp::DnsFilter, None);
    s.arch = JailArch::Mipsel;
    s.tree = dns_tree();
    let err = rootfs_tar(&s, &busybox, 0).unwrap_err().to_string();
    assert!(
        err.contains("usr/sbin/dnsmasq") && err.contains("is not mipsel"),
        "{err}"
    );
    // A tree may not replace the app's own files.
    let mut s = spec(JailApp::DnsFilter, None);
    s.tree = dns_tree();
    s.tree.push(TreeFile {
        path: "bin/dns-filter".into(),
        data: b"other".to_vec(),
        mode: 0o755,
    });
    let err = rootfs_tar(&s, &busybox, 0).unwrap_err().to_string();
    assert!(err.contains("bin/dns-filter would replace"), "{err}");
    let mut s = spec(JailApp::Status, None);
    s.tree = dns_tree();
    let err = rootfs_tar(&s, &busybox, 0).unwrap_err().to_string();
    assert!(err.contains("takes no --tree"), "{err}");
    assert_eq!(JailApp::parse("dns-filter").unwrap(), JailApp::DnsFilter);
}
