//! cpevisor: the device's multi-call binary. Installed once, with `cpevisord` and `cpevisorctl`
//! as symlinks to it; `cpevisor daemon|ctl ARGS` works too (see agent/src/applet).

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    cpevisor_agent::applet::multicall_main(&argv)
}
