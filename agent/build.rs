//! `cfg(microvm)`: this build has the microVM side (the kvm backend, the balloon work, the VMM
//! applet), on the CPUs where Linux offers KVM among the boards' (aarch64, x86_64; 32-bit ARM
//! KVM went in 5.7, MIPS routers have none). The one place the code asks; Cargo.toml's
//! target-specific `cpevisor-vmm` dependency states the same condition for Cargo, which cannot
//! read a cfg set here. Jail-only builds (mipsel, mips64el, armv7) carry none of it
//! (docs/flash.md, section 11) and refuse an ExecEnv that asks for a microVM.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(microvm)");
    println!("cargo::rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if matches!(arch.as_str(), "aarch64" | "x86_64") {
        println!("cargo::rustc-cfg=microvm");
    }
    // The target's name for the refusal's message (`mipsel-unknown-linux-musl: no KVM`).
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo::rustc-env=CPEVISOR_BUILD_TARGET={target}");
}
