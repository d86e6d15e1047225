//! cpevisor-controller: the operator's USP controller (see `cpevisor-controller --help`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "{}\n\n{}{}\n\n{}",
            cpevisor_controller::USAGE,
            cpevisor_controller::fleet::USAGE,
            cpevisor_controller::fleet::rollout_cli::USAGE,
            cpevisor_controller::fleet::selector::USAGE
        );
        return ExitCode::SUCCESS;
    }
    // The service's commands name a database; the one-shot ones never do.
    if cpevisor_controller::fleet::is_fleet(&args) {
        return match cpevisor_controller::fleet::parse(&args) {
            Ok(cmd) => ExitCode::from(cpevisor_controller::fleet::run(cmd) as u8),
            Err(e) => {
                eprintln!("cpevisor-controller: {e}");
                ExitCode::from(2)
            }
        };
    }
    match cpevisor_controller::parse(&args) {
        Ok(cli) => ExitCode::from(cpevisor_controller::run(&cli) as u8),
        Err(e) => {
            eprintln!("cpevisor-controller: {e}");
            ExitCode::from(2)
        }
    }
}
