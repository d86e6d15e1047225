//! The device's multi-call binary `cpevisor`: the applet comes from the name it is run under
//! (the firmware installs `cpevisord` and `cpevisorctl` as symlinks to it) or from its first
//! argument, and behaves as the thin host binary of the same applet; anything else is a usage
//! error naming the applets. (The jail runner through it: jail.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MULTICALL: &str = env!("CARGO_BIN_EXE_cpevisor");
const DAEMON: &str = env!("CARGO_BIN_EXE_cpevisord");
const CTL: &str = env!("CARGO_BIN_EXE_cpevisorctl");

/// A directory with `cpevisord` and `cpevisorctl` linked to the multi-call binary.
struct Links(PathBuf);

impl Links {
    fn new(tag: &str) -> Links {
        let dir = std::env::temp_dir().join(format!("cpv-multicall-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for applet in ["cpevisord", "cpevisorctl"] {
            std::os::unix::fs::symlink(MULTICALL, dir.join(applet)).unwrap();
        }
        Links(dir)
    }

    fn get(&self, applet: &str) -> PathBuf {
        self.0.join(applet)
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe).args(args).output().unwrap()
}

/// Exit code, stdout and stderr: what must match between two ways of running an applet.
fn seen(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn links_and_subcommands_behave_as_the_thin_binaries() {
    let links = Links::new("same");
    let m = Path::new(MULTICALL);
    for (thin, link, sub, args) in [
        (CTL, "cpevisorctl", "ctl", &["--help"][..]),
        (CTL, "cpevisorctl", "ctl", &["frobnicate"][..]),
        (CTL, "cpevisorctl", "ctl", &["usp"][..]),
        (DAEMON, "cpevisord", "daemon", &["--help"][..]),
        (DAEMON, "cpevisord", "daemon", &["--bogus"][..]),
        (DAEMON, "cpevisord", "daemon", &["jail-exec"][..]),
    ] {
        let want = seen(&run(Path::new(thin), args));
        assert!(!want.1.is_empty() || !want.2.is_empty(), "{thin} {args:?}");
        assert_eq!(seen(&run(&links.get(link), args)), want, "{link} {args:?}");
        let with_sub: Vec<&str> = [sub].iter().chain(args).copied().collect();
        assert_eq!(seen(&run(m, &with_sub)), want, "cpevisor {with_sub:?}");
        let with_name: Vec<&str> = [link].iter().chain(args).copied().collect();
        assert_eq!(seen(&run(m, &with_name)), want, "cpevisor {with_name:?}");
    }
    // The help texts are the applets' own, not one of the other.
    let help = seen(&run(&links.get("cpevisorctl"), &["--help"])).1;
    assert!(help.contains("cpevisorctl"), "{help}");
    assert_eq!(
        run(&links.get("cpevisord"), &["--help"]).status.code(),
        Some(0)
    );
}

#[test]
fn the_jail_runner_is_reached_under_the_multicall_name() {
    // The agent starts `<its executable> jail-exec SPEC`; on the device that is `cpevisor`.
    let want = seen(&run(Path::new(DAEMON), &["jail-exec"]));
    assert_eq!(want.0, Some(2));
    assert!(want.2.contains("jail-exec SPEC.json"), "{want:?}");
    assert_eq!(seen(&run(Path::new(MULTICALL), &["jail-exec"])), want);
    let probe = seen(&run(Path::new(DAEMON), &["jail-probe"]));
    assert_eq!(seen(&run(Path::new(MULTICALL), &["jail-probe"])), probe);
}

#[test]
fn no_applet_is_a_usage_error_naming_the_applets() {
    let links = Links::new("usage");
    let renamed = links.0.join("router-tool");
    std::os::unix::fs::symlink(MULTICALL, &renamed).unwrap();
    for (exe, args) in [
        (PathBuf::from(MULTICALL), &[][..]),
        (PathBuf::from(MULTICALL), &["list"][..]),
        (PathBuf::from(MULTICALL), &["--daemon"][..]),
        (renamed, &["daemonx"][..]),
    ] {
        let (code, out, err) = seen(&run(&exe, args));
        assert_eq!(code, Some(2), "{exe:?} {args:?}");
        assert!(out.is_empty(), "{out}");
        for name in ["cpevisord", "daemon", "cpevisorctl", "ctl"] {
            assert!(err.contains(name), "{exe:?} {args:?}: {err}");
        }
    }
    // Asked for, the usage is an answer.
    let (code, out, err) = seen(&run(Path::new(MULTICALL), &["--help"]));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("cpevisorctl | ctl") && err.is_empty(),
        "{out}{err}"
    );
}

/// Where KVM exists the VMM is an applet too: its link and `cpevisor vmm` run the vmm crate's
/// own command line.
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
#[test]
fn the_vmm_applet_is_the_vmm_command_line() {
    let links = Links::new("vmm");
    let link = links.0.join("cpevisor-vmm");
    std::os::unix::fs::symlink(MULTICALL, &link).unwrap();
    let version = seen(&run(&link, &["--version"]));
    assert_eq!(
        version,
        (
            Some(0),
            format!("cpevisor-vmm {}\n", env!("CARGO_PKG_VERSION")),
            String::new()
        )
    );
    let help = seen(&run(&link, &["--help"]));
    assert!(
        help.1
            .starts_with("cpevisor-vmm: run one Linux microVM on KVM"),
        "{help:?}"
    );
    assert_eq!(seen(&run(Path::new(MULTICALL), &["vmm", "--help"])), help);
    // A usage error is the VMM's (exit 2, its log prefix), not the multi-call's.
    let (code, out, err) = seen(&run(&link, &["--no-such-flag"]));
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(err.starts_with("cpevisor-vmm: error:"), "{err}");
}
