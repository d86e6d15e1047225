//! The `cpevisorctl` applet: talks to cpevisord over its Unix socket (see `cpevisorctl --help`).

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs cpevisorctl with `args` (the arguments after the program name).
pub fn main(args: &[OsString]) -> ExitCode {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The operator's USP controller moved to its own binary: say where, as a usage error.
    if args.first().map(String::as_str) == Some("usp") {
        eprintln!("{}", crate::ctl::USP_MOVED);
        return ExitCode::from(2);
    }
    match crate::ctl::parse(&args) {
        Ok(cli) => ExitCode::from(crate::ctl::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisorctl: {e}");
            ExitCode::from(2)
        }
    }
}
