//! Named network namespaces for the host tests of the apps' network (netfilter, bridged,
//! netfilter_lifecycle, install_network): made with `ip netns add`, deleted on drop.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host's nft, which the tests that apply rules run inside a namespace.
pub const NFT: &str = "/usr/sbin/nft";

/// Root and the host's nft are there; says why not otherwise (the test then skips).
pub fn can_run_nft() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = Path::new(NFT).exists() && unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("skipped: needs root and {NFT} (apt-get install nftables)");
    }
    ok
}

/// Runs a shell line, panicking with its stderr when it fails; returns its stdout.
pub fn sh(line: &str) -> String {
    let out = Command::new("sh").args(["-c", line]).output().unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A named network namespace, deleted on drop.
pub struct NamedNs(pub String);

impl NamedNs {
    /// `cpv-<tag>-<pid>`, made afresh (a leftover of that name from a killed run is deleted).
    pub fn new(tag: &str) -> NamedNs {
        let name = format!("cpv-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&format!("ip netns add {name}"));
        NamedNs(name)
    }

    /// Runs `cmd` (a shell line) inside it; returns its stdout.
    pub fn run(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.0))
    }

    /// `nft list ruleset` inside it.
    pub fn ruleset(&self) -> String {
        sh(&format!("ip netns exec {} nft list ruleset", self.0))
    }

    /// An executable in `dir` that runs the host's nft inside this namespace: an agent config's
    /// `nft_path`, so the daemon under test applies its rules there.
    pub fn nft_wrapper(&self, dir: &Path) -> PathBuf {
        let wrapper = dir.join("nft-in-ns");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/nsenter --net=/run/netns/{} {NFT} \"$@\"\n",
                self.0
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapper
    }

    /// Runs `f` on a thread inside it.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = File::open(format!("/run/netns/{}", self.0)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on a namespace descriptor we hold; affects this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
