//! cpevisorctl: talks to cpevisord over its Unix socket (see `cpevisorctl --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The operator's USP controller moved to its own binary: say where, as a usage error.
    if args.first().map(String::as_str) == Some("usp") {
        eprintln!("{}", cpevisor_agent::ctl::USP_MOVED);
        return ExitCode::from(2);
    }
    match cpevisor_agent::ctl::parse(&args) {
        Ok(cli) => ExitCode::from(cpevisor_agent::ctl::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisorctl: {e}");
            ExitCode::from(2)
        }
    }
}
