//! The `cpevisor-vmm` command line: `--help`, `--version`, `kvm-info`, or run one microVM.

use std::time::Instant;

use crate::builder::Vmm;
use crate::config::{parse_args, Command};
use crate::exit_code;
use crate::signals::stop_signal_fd;
use crate::vstate::vm::Vm;
use crate::{arch, log};

const HELP: &str = "\
cpevisor-vmm: run one Linux microVM on KVM

USAGE:
  cpevisor-vmm --config FILE [FLAGS]      VM description as JSON (flags override its fields)
  cpevisor-vmm --kernel PATH [FLAGS]
  cpevisor-vmm kvm-info                   check /dev/kvm and print its capabilities

FLAGS:
  --kernel PATH            arm64 Image (aarch64); ELF vmlinux or bzImage (x86_64)
  --kernel-format F        auto (default) | raw-x86-64 | raw-real-mode (x86_64 test guests)
  --initrd PATH            initramfs (newc cpio, or gzip/zstd/xz/lz4/bzip2/lzo/lzma)
  --cmdline STR            kernel command line
  --memory MIB             guest RAM (default 128)
  --max-memory MIB         refuse more guest RAM than this (default 2048)
  --vcpus N                vCPUs (default 1)
  --disk PATH[,ro]         virtio-blk disk (repeatable)
  --net TAP[,mac=MAC]      virtio-net on an existing tap device (repeatable)
  --rng                    virtio-rng
  --console SPEC           stdout (default) | none | file:PATH | socket:PATH
  --control-socket PATH    Unix control socket (line-delimited JSON:
                           status/pause/resume/stop/shutdown)
  --shutdown-timeout MS    on a stop request, press the guest's power button and wait this
                           long for its power-off before stopping it (default 10000; 0 = stop
                           at once)
  -h, --help               this text
  -V, --version            version

STOPPING:
  SIGTERM, SIGINT, SIGHUP or the control socket's `shutdown` press the guest's power button
  (aarch64: gpio-keys KEY_POWER on a PL061; x86_64: ACPI power button through a Generic Event
  Device) and wait up to --shutdown-timeout for the guest to power off. A second SIGTERM or
  SIGINT meanwhile stops at once; so does the control socket's `stop`.

EXIT CODES:
  0  guest powered off (also after a shutdown request), or stopped at once (control `stop`,
     a second SIGTERM/SIGINT, or any stop signal with --shutdown-timeout 0)
  1  host or KVM setup failure
  2  configuration or usage error (nothing was started)
  3  guest asked for a reboot
  4  guest crashed, or KVM failed while running it
  5  shutdown forced: the guest did not power off within --shutdown-timeout of the power
     button, so the VM was stopped

LOG LINES (stderr):
  cpevisor-vmm: first instruction: vcpu 0 entering KVM_RUN at <ms> ms
  boot-ready: <ms> ms since VMM start
  cpevisor-vmm: shutdown: power button pressed (<signal or control socket>), waiting up to <ms> ms ...
  cpevisor-vmm: shutdown: guest powered off after <ms> ms
  cpevisor-vmm: shutdown: guest did not power off within <ms> ms, stopping
  cpevisor-vmm: exit: <reason> (code <n>)
";

/// The whole `cpevisor-vmm` command: runs with `args` (those after the program name) and exits
/// with its exit code. The `cpevisor-vmm` binary and the device's multi-call `cpevisor` (run as its
/// `cpevisor-vmm` link) both start here, so the VMM runs the same way, confined the same way,
/// in either.
pub fn main(args: Vec<String>) -> ! {
    let start = Instant::now();
    crate::mark_start();
    crate::confine::one_malloc_arena();
    std::process::exit(run(start, args));
}

fn run(start: Instant, args: Vec<String>) -> i32 {
    let cmd = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("error: {e}"));
            return exit_code::CONFIG_ERROR;
        }
    };
    let cfg = match cmd {
        Command::Help => {
            print!("{HELP}");
            return exit_code::OK;
        }
        Command::Version => {
            println!("cpevisor-vmm {}", env!("CARGO_PKG_VERSION"));
            return exit_code::OK;
        }
        Command::KvmInfo => return kvm_info(),
        Command::Run(cfg) => cfg,
    };
    // A jailed VMM keeps nothing it inherited (the supervisor's descriptors) past this point.
    if cfg.jail.is_some() {
        let keep: Vec<i32> = cfg.ready_fd.into_iter().collect();
        if let Err(e) = crate::confine::close_inherited(&keep) {
            log(&format!("error: jail: {e}"));
            return exit_code::HOST_ERROR;
        }
    }
    // Before anything that could leave state behind, so a SIGTERM during setup still ends in a
    // clean stop (the event loop reads it) instead of the default action.
    if let Err(e) = stop_signal_fd() {
        log(&format!("error: signal handlers: {e}"));
        return exit_code::HOST_ERROR;
    }
    let vmm = match Vmm::build(&cfg, start) {
        Ok(v) => v,
        Err(e) => {
            log(&format!("error: {e}"));
            return e.exit_code();
        }
    };
    let event = vmm.run();
    let code = exit_code::for_event(&event);
    log(&format!("exit: {event} (code {code})"));
    code
}

fn kvm_info() -> i32 {
    let vm = match Vm::new() {
        Ok(vm) => vm,
        Err(e) => {
            log(&format!("error: {e}"));
            return exit_code::HOST_ERROR;
        }
    };
    println!("KVM API version: {}", vm.kvm().get_api_version());
    println!("VM created");
    println!("Max vCPUs: {}", vm.kvm().get_max_vcpus());
    println!("Memory slots: {}", vm.kvm().get_nr_memslots());
    for line in arch::kvm_capabilities(vm.kvm(), &vm) {
        println!("{line}");
    }
    exit_code::OK
}
