//! The `cpevisor-rootfs` command end to end, on a synthetic cache for a real board profile.
//! The cache has a `modules.dep` (so module files need not be ELF) and the host's x86_64 static
//! busybox, so the x86_64 board is the one whose firmware can be built here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cpevisor_boards::Board;
use cpevisor_rootfs::board_spec::INIT_MODULES;

const BOARD: &str = "qemu-q35-x86_64";
const RELEASE: &str = "6.1.0-99-amd64";

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpevisor-rootfs"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn synthetic_cache(dir: &Path) -> PathBuf {
    let board = Board::by_name(BOARD).unwrap();
    let kernel = board.kernel.expect("the x86_64 board names its kernel");
    let cache = dir.join("cache");
    let kdir = cache.join("kernel").join(&kernel.flavour);
    let mods = kdir.join("root/lib/modules").join(RELEASE);
    fs::create_dir_all(mods.join("kernel")).unwrap();
    fs::create_dir_all(kdir.join("root/boot")).unwrap();
    fs::write(kdir.join("release"), RELEASE).unwrap();
    fs::write(
        kdir.join(format!("root/boot/vmlinuz-{RELEASE}")),
        b"kernel bytes",
    )
    .unwrap();
    let mut dep = String::new();
    for name in kernel
        .modules
        .iter()
        .map(String::as_str)
        .chain(INIT_MODULES)
    {
        fs::write(
            mods.join(format!("kernel/{name}.ko")),
            format!("module {name}"),
        )
        .unwrap();
        dep += &format!("kernel/{name}.ko:\n");
    }
    fs::write(mods.join("modules.dep"), dep).unwrap();
    let bb = cache.join("busybox").join(&board.cpu.debian_arch);
    fs::create_dir_all(&bb).unwrap();
    fs::copy("/bin/busybox", bb.join("busybox")).unwrap();
    cache
}

#[test]
fn firmware_command_is_reproducible() {
    let dir = std::env::temp_dir().join(format!("cpevisor-rootfs-cli-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let cache = synthetic_cache(&dir);
    let mut outputs = Vec::new();
    for run in ["a", "b"] {
        let out = dir.join(run);
        let result = cli(&[
            "firmware",
            "--board",
            BOARD,
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(stdout.contains(&format!("kernel {RELEASE}")), "{stdout}");
        assert!(stdout.contains("ext4"), "{stdout}");
        outputs.push(out);
    }
    for f in ["kernel", "initramfs.cpio.gz", "manifest.txt"] {
        let a = fs::read(outputs[0].join(f)).unwrap();
        assert_eq!(a, fs::read(outputs[1].join(f)).unwrap(), "{f} differs");
    }
    let manifest = fs::read_to_string(outputs[0].join("manifest.txt")).unwrap();
    assert!(manifest.contains(&format!("board={BOARD}\n")), "{manifest}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_and_unknown_boards_are_reported() {
    let none = cli(&[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("usage:"));

    let twice = cli(&["firmware", "--board", "a", "--board", "b", "--out", "x"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("--board given twice"));

    let no_out = cli(&["firmware", "--board", BOARD]);
    assert!(String::from_utf8_lossy(&no_out.stderr).contains("--out DIR is required"));

    let unknown = cli(&[
        "firmware",
        "--board",
        "no-such-board",
        "--out",
        "/nonexistent",
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-board"));
}
