//! `cpevisor-board`: board profiles for the Makefile and scripts.
//!
//! ```text
//! cpevisor-board list
//! cpevisor-board show NAME [--json]
//! cpevisor-board get NAME FIELD            (dotted path, e.g. memory.ram_mib, kernel.modules)
//! cpevisor-board qemu-cmd NAME --kernel K --initrd I [--append S] [--fwd HOST:GUEST]...
//! cpevisor-board check
//! cpevisor-board table                     (Markdown table of every board, for the README)
//! ```
//! Profiles come from `$CPEVISOR_BOARDS_DIR` or the repository's `boards/`.

#![forbid(unsafe_code)]

use cpevisor_boards::{boards_dir, list_boards, load_all_in, plain_value, shell_join, Board};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  cpevisor-board list
  cpevisor-board show NAME [--json]
  cpevisor-board get NAME FIELD
  cpevisor-board qemu-cmd NAME --kernel K --initrd I [--append S] [--fwd HOST:GUEST]...
  cpevisor-board check
  cpevisor-board table
profiles are read from $CPEVISOR_BOARDS_DIR or the repository's boards/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cpevisor-board: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err(format!("no command given\n{USAGE}"));
    };
    match command.as_str() {
        "list" => {
            no_more(rest)?;
            for name in list_boards() {
                println!("{name}");
            }
        }
        "show" => show(rest)?,
        "get" => return get(rest),
        "qemu-cmd" => qemu_cmd(rest)?,
        "check" => {
            no_more(rest)?;
            return Ok(check());
        }
        "table" => {
            no_more(rest)?;
            return Ok(table());
        }
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => return Err(format!("unknown command `{other}`\n{USAGE}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn no_more(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        Some(extra) => Err(format!("unexpected argument `{extra}`")),
        None => Ok(()),
    }
}

fn load(name: &str) -> Result<Board, String> {
    Board::by_name(name).map_err(|e| e.to_string())
}

fn show(rest: &[String]) -> Result<(), String> {
    let mut name = None;
    let mut json = false;
    for arg in rest {
        match arg.as_str() {
            "--json" => json = true,
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            word if name.is_none() => name = Some(word),
            word => return Err(format!("unexpected argument `{word}`")),
        }
    }
    let board = load(name.ok_or("show: missing board NAME")?)?;
    if json {
        let text = serde_json::to_string_pretty(&board.to_json()).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        for (path, value) in board.flatten() {
            println!("{path} = {value}");
        }
    }
    Ok(())
}

fn get(rest: &[String]) -> Result<ExitCode, String> {
    let [name, field] = rest else {
        return Err("get: expected NAME FIELD".into());
    };
    let board = load(name)?;
    match board.get(field) {
        Some(value) => {
            println!("{}", plain_value(&value));
            Ok(ExitCode::SUCCESS)
        }
        None => Err(format!(
            "board `{name}` has no field `{field}` (see `cpevisor-board show {name}`)"
        )),
    }
}

fn qemu_cmd(rest: &[String]) -> Result<(), String> {
    let mut name = None;
    let mut kernel = None;
    let mut initrd = None;
    let mut append = String::new();
    let mut forwards = Vec::new();
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(value("--kernel")?)),
            "--initrd" => initrd = Some(PathBuf::from(value("--initrd")?)),
            "--append" => append = value("--append")?,
            "--fwd" => forwards.push(parse_forward(&value("--fwd")?)?),
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            word if name.is_none() => name = Some(word.to_string()),
            word => return Err(format!("unexpected argument `{word}`")),
        }
    }
    let board = load(&name.ok_or("qemu-cmd: missing board NAME")?)?;
    let kernel = kernel.ok_or("qemu-cmd: --kernel is required")?;
    let initrd = initrd.ok_or("qemu-cmd: --initrd is required")?;
    let argv = board
        .qemu_command(&kernel, &initrd, &append, &forwards, &[])
        .map_err(|e| e.to_string())?;
    println!("{}", shell_join(&argv));
    Ok(())
}

fn parse_forward(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("--fwd `{text}`: expected HOST:GUEST with ports 1-65535");
    let (host, guest) = text.split_once(':').ok_or_else(bad)?;
    let host: u16 = host.parse().map_err(|_| bad())?;
    let guest: u16 = guest.parse().map_err(|_| bad())?;
    Ok((host, guest))
}

fn check() -> ExitCode {
    let dir = boards_dir();
    let (boards, errors) = load_all_in(&dir);
    for board in &boards {
        println!("ok   {}", board.name);
    }
    for error in &errors {
        eprintln!("BAD  {error}");
    }
    if boards.is_empty() && errors.is_empty() {
        eprintln!("no board profiles in {}", dir.display());
        return ExitCode::FAILURE;
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Markdown table of every profile that loads; bad ones are reported on stderr and fail the run.
fn table() -> ExitCode {
    let (boards, errors) = load_all_in(&boards_dir());
    println!("| board | kind | SoC / CPU | arch | CPUs | RAM MiB | flash MiB | app budget MiB | isolation | interrupts | console |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for b in &boards {
        let kind = if b.is_emulated() { "QEMU" } else { "hardware" };
        let chip = match &b.soc {
            Some(soc) => format!("{soc} ({})", b.cpu.model),
            None => b.cpu.model.clone(),
        };
        println!(
            "| {} | {kind} | {chip} | {} | {} | {} | {} | {} | {} | {} | {} |",
            b.name,
            b.cpu.arch,
            b.cpu.cores,
            b.memory.ram_mib,
            b.memory.flash_mib,
            b.memory.app_budget_mib,
            b.isolation,
            b.interrupt_controller,
            b.serial
        );
    }
    for error in &errors {
        eprintln!("BAD  {error}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
