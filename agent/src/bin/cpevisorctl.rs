//! cpevisorctl: talks to cpevisord over its Unix socket (see `cpevisorctl --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `usp ...` is the remote controller: its own options, no daemon socket.
    if args.first().map(String::as_str) == Some("usp") {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("{}", cpevisor_agent::ctl::usp::USAGE);
            return ExitCode::SUCCESS;
        }
        return match cpevisor_agent::ctl::usp::parse(&args[1..]) {
            Ok(cli) => ExitCode::from(cpevisor_agent::ctl::usp::run(&cli) as u8),
            Err(e) => {
                eprintln!("cpevisorctl usp: {e}");
                ExitCode::from(2)
            }
        };
    }
    match cpevisor_agent::ctl::parse(&args) {
        Ok(cli) => ExitCode::from(cpevisor_agent::ctl::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisorctl: {e}");
            ExitCode::from(2)
        }
    }
}
