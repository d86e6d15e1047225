//! cpevisorctl: talks to cpevisord over its Unix socket (see `cpevisorctl --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cpevisor_agent::ctl::parse(&args) {
        Ok(cli) => ExitCode::from(cpevisor_agent::ctl::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisorctl: {e}");
            ExitCode::from(2)
        }
    }
}
