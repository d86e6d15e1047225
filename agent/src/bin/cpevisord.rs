//! cpevisord: the on-device agent (see `cpevisord --help`); the device runs the same code as
//! the `cpevisord` applet of the multi-call `cpevisor`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    cpevisor_agent::applet::daemon::main(&args)
}
