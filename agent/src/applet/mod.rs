//! Entry points of the agent's commands, one rule in one place for every binary that runs them:
//! the device's multi-call binary `cpevisor` (one copy of the shared code on flash, installed
//! with each applet's name as a symlink to it) and the thin host binaries `cpevisord` and
//! `cpevisorctl` that the host tests and development use.
//!
//! - `daemon` `cpevisord`: the agent, and its internal `jail-exec` / `jail-probe` commands.
//! - `ctl`    `cpevisorctl`: the local tool.
//! - on the KVM architectures (aarch64, x86_64), `cpevisor-vmm`: the VMM, the vmm crate's own
//!   command line, folded in because it shares most of its code with the agent (docs/flash.md).

pub mod ctl;
pub mod daemon;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// The multi-call binary's own name.
pub const MULTICALL: &str = "cpevisor";

/// One of the commands the multi-call binary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applet {
    /// `cpevisord` (also `cpevisor daemon`).
    Daemon,
    /// `cpevisorctl` (also `cpevisor ctl`).
    Ctl,
    /// `cpevisor-vmm` (also `cpevisor vmm`), where KVM exists.
    #[cfg(microvm)]
    Vmm,
}

/// Each applet: its installed name (a symlink to `cpevisor` on the device), its subcommand name
/// (`cpevisor SUBCOMMAND ...`), what it is, and a line for the usage.
pub const APPLETS: &[(&str, &str, Applet, &str)] = &[
    (
        "cpevisord",
        "daemon",
        Applet::Daemon,
        "the on-device agent (cpevisord --help)",
    ),
    (
        "cpevisorctl",
        "ctl",
        Applet::Ctl,
        "its local command-line tool (cpevisorctl --help)",
    ),
    #[cfg(microvm)]
    (
        "cpevisor-vmm",
        "vmm",
        Applet::Vmm,
        "the microVM monitor the agent runs apps in (cpevisor-vmm --help)",
    ),
];

/// `cpevisor` run under none of its names, with no applet named.
pub fn usage() -> String {
    let mut s = String::from(
        "usage: cpevisor APPLET [ARGS...]   (or run as one of the applet names)\napplets:",
    );
    for (name, sub, _, what) in APPLETS {
        s += &format!("\n  {:<22} {what}", format!("{name} | {sub}"));
    }
    s
}

impl Applet {
    /// Runs the applet with `args`, the arguments after its name.
    pub fn run(self, args: &[OsString]) -> ExitCode {
        match self {
            Applet::Daemon => daemon::main(args),
            Applet::Ctl => ctl::main(args),
            // Exactly the cpevisor-vmm binary's main: same arguments, same confinement.
            #[cfg(microvm)]
            Applet::Vmm => cpevisor_vmm::cli::main(
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            ),
        }
    }
}

/// Which applet `argv` (program name first) asks for, and where its arguments start:
/// argv[0]'s file name when it is an applet's name (`/usr/bin/cpevisord ...`), else the first
/// argument, as a subcommand or applet name (`cpevisor daemon ...`, `cpevisor cpevisorctl ...`).
/// The daemon's internal commands are accepted right after `cpevisor` too: the agent starts
/// its jail runner as `<its own executable> jail-exec ...`, and on the device its own executable
/// (`/proc/self/exe`, symlinks resolved) is `cpevisor`, not the `cpevisord` link.
pub fn select(argv: &[OsString]) -> Option<(Applet, usize)> {
    let named = |s: &OsString| {
        APPLETS
            .iter()
            .find(|(name, sub, _, _)| s.as_os_str() == *name || s.as_os_str() == *sub)
            .map(|(_, _, applet, _)| *applet)
    };
    let base = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(OsString::from);
    if let Some(applet) = base
        .as_ref()
        .filter(|b| b.as_os_str() != MULTICALL)
        .and_then(|b| {
            APPLETS
                .iter()
                .find(|(name, _, _, _)| b.as_os_str() == *name)
        })
        .map(|(_, _, applet, _)| *applet)
    {
        return Some((applet, 1));
    }
    let first = argv.get(1)?;
    if let Some(applet) = named(first) {
        return Some((applet, 2));
    }
    let internal = [
        crate::supervise::jail::JAIL_EXEC,
        crate::supervise::jail::JAIL_PROBE,
    ];
    if internal.iter().any(|c| first.as_os_str() == *c) {
        return Some((Applet::Daemon, 1));
    }
    None
}

/// `main` of the multi-call binary: the applet `argv` names, or the usage (on stdout with exit
/// 0 when asked for with `-h`/`--help`, else on stderr with exit 2).
pub fn multicall_main(argv: &[OsString]) -> ExitCode {
    match select(argv) {
        Some((applet, from)) => applet.run(&argv[from..]),
        None if argv.get(1).is_some_and(|a| a == "-h" || a == "--help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn program_name_picks_the_applet() {
        let s = |a: &[&str]| select(&argv(a));
        assert_eq!(
            s(&["/usr/bin/cpevisord", "--help"]),
            Some((Applet::Daemon, 1))
        );
        assert_eq!(s(&["cpevisorctl", "list"]), Some((Applet::Ctl, 1)));
        // The link's name wins over a first argument that names another applet.
        assert_eq!(s(&["cpevisorctl", "daemon"]), Some((Applet::Ctl, 1)));
    }

    #[test]
    fn first_argument_picks_the_applet_under_any_other_name() {
        let s = |a: &[&str]| select(&argv(a));
        assert_eq!(s(&["cpevisor", "daemon", "-h"]), Some((Applet::Daemon, 2)));
        assert_eq!(s(&["/usr/bin/cpevisor", "ctl"]), Some((Applet::Ctl, 2)));
        assert_eq!(s(&["./cpevisor", "cpevisorctl"]), Some((Applet::Ctl, 2)));
        assert_eq!(s(&["renamed", "cpevisord"]), Some((Applet::Daemon, 2)));
        // The jail runner and probe as the agent starts them through /proc/self/exe.
        assert_eq!(
            s(&[
                "/usr/bin/cpevisor",
                "jail-exec",
                "/run/cpevisor/eu-1/jail.json"
            ]),
            Some((Applet::Daemon, 1))
        );
        assert_eq!(s(&["cpevisor", "jail-probe"]), Some((Applet::Daemon, 1)));
    }

    #[test]
    fn no_applet_is_refused() {
        let s = |a: &[&str]| select(&argv(a));
        assert_eq!(s(&["cpevisor"]), None);
        assert_eq!(s(&["cpevisor", "list"]), None);
        assert_eq!(s(&["cpevisor-vmmx", "--help"]), None);
        assert_eq!(s(&[]), None);
        let usage = usage();
        for (name, sub, _, _) in APPLETS {
            assert!(usage.contains(&format!("{name} | {sub}")), "{usage}");
        }
    }

    /// The VMM is an applet where KVM exists (this host: x86_64), under its binary's name.
    #[cfg(microvm)]
    #[test]
    fn the_vmm_is_an_applet_on_kvm_architectures() {
        let s = |a: &[&str]| select(&argv(a));
        assert_eq!(
            s(&["/usr/bin/cpevisor-vmm", "--config", "vm.json"]),
            Some((Applet::Vmm, 1))
        );
        assert_eq!(s(&["cpevisor", "vmm", "kvm-info"]), Some((Applet::Vmm, 2)));
        assert!(usage().contains("cpevisor-vmm | vmm"));
    }
}
