//! cpevisorctl: talks to cpevisord over its Unix socket (see `cpevisorctl --help`); the device
//! runs the same code as the `cpevisorctl` applet of the multi-call `cpevisor`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    cpevisor_agent::applet::ctl::main(&args)
}
