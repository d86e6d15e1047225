//! A test world whose agent runs its microVM apps on the real `cpevisor-vmm` (with test hooks)
//! and the tiny hand-written guest (common/tiny_guest.rs) instead of the package's kernel: a
//! shim in front of the VMM swaps the kernel in the agent's VM description, which is otherwise
//! used as written and kept for the test to read. A test including this also includes
//! common/agentd.rs as `agentd` and common/tiny_guest.rs as `tiny_guest`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::agentd::World;
use crate::tiny_guest;

/// The world `tag` with the VMM shim in place, and where the VM description the VMM ran with
/// is written; None (said on stderr) where this host cannot run it: it needs root, /dev/kvm
/// and a debug build (the VMM's test hooks).
pub fn tiny_vm_world(tag: &str) -> Option<(World, PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/kvm").exists() || !cfg!(debug_assertions) {
        eprintln!("skipped: needs root, /dev/kvm and a debug build");
        return None;
    }
    let vmm = tiny_guest::vmm_with_test_hooks();
    let w = World::new(tag);
    let guest = w.root.join("guest.bzImage");
    std::fs::write(&guest, tiny_guest::tiny_bzimage("guest up\n", true)).unwrap();
    let seen = w.root.join("vm.json");
    w.use_vmm_script(
        &format!(
            "#!/bin/sh\nsed 's|\"kernel\": \"[^\"]*\"|\"kernel\": \"{guest}\"|' \"$2\" > {seen}\nexec {vmm} --config {seen}\n",
            guest = guest.display(),
            seen = seen.display(),
            vmm = vmm.display(),
        ),
        json!({}),
    );
    Some((w, seen))
}
