//! Entry points of the agent's commands, one rule in one place for every binary that runs them:
//! the device's multi-call binary `cpevisor` (one copy of the shared code on flash, installed
//! with `cpevisord` and `cpevisorctl` as symlinks to it) and the thin host binaries `cpevisord`
//! and `cpevisorctl` that the host tests and development use.
//!
//! - `daemon` `cpevisord`: the agent, and its internal `jail-exec` / `jail-probe` commands.
//! - `ctl`    `cpevisorctl`: the local tool.

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
}

/// Each applet: its installed name (a symlink to `cpevisor` on the device), its subcommand name
/// (`cpevisor SUBCOMMAND ...`), and what it is.
pub const APPLETS: [(&str, &str, Applet); 2] = [
    ("cpevisord", "daemon", Applet::Daemon),
    ("cpevisorctl", "ctl", Applet::Ctl),
];

/// `cpevisor` run under none of its names, with no applet named.
pub const USAGE: &str = "usage: cpevisor APPLET [ARGS...]   (or run as one of the applet names)
applets:
  cpevisord | daemon     the on-device agent (cpevisord --help)
  cpevisorctl | ctl      its local command-line tool (cpevisorctl --help)";

impl Applet {
    /// Runs the applet with `args`, the arguments after its name.
    pub fn run(self, args: &[OsString]) -> ExitCode {
        match self {
            Applet::Daemon => daemon::main(args),
            Applet::Ctl => ctl::main(args),
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
            .find(|(name, sub, _)| s.as_os_str() == *name || s.as_os_str() == *sub)
            .map(|(_, _, applet)| *applet)
    };
    let base = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(OsString::from);
    if let Some(applet) = base
        .as_ref()
        .filter(|b| b.as_os_str() != MULTICALL)
        .and_then(|b| APPLETS.iter().find(|(name, _, _)| b.as_os_str() == *name))
        .map(|(_, _, applet)| *applet)
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
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("{USAGE}");
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
        assert_eq!(s(&["cpevisor-vmm", "--help"]), None);
        assert_eq!(s(&[]), None);
        for (name, sub, _) in APPLETS {
            assert!(USAGE.contains(name) && USAGE.contains(sub), "{USAGE}");
        }
    }
}
