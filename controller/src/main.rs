//! cpevisor-controller: the operator's USP controller (see `cpevisor-controller --help`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", cpevisor_controller::USAGE);
        return ExitCode::SUCCESS;
    }
    match cpevisor_controller::parse(&args) {
        Ok(cli) => ExitCode::from(cpevisor_controller::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisor-controller: {e}");
            ExitCode::from(2)
        }
    }
}
