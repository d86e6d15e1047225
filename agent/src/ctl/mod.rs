//! cpevisorctl: the device's local command line for cpevisord (over its Unix socket), plus the
//! local package tools (pack, keygen). Tables for people, `--json` for scripts, a progress bar
//! while a download runs; faults print their code and exit non-zero. The operator's USP
//! controller is not here: it is `cpevisor-controller` (the `controller/` crate), so routers do
//! not carry it.

pub mod client;
mod render;

use std::path::PathBuf;

use crate::api::Request;

/// Where `cpevisord` listens when neither `--socket` nor `$CPEVISOR_SOCKET` names a path.
pub const DEFAULT_SOCKET: &str = "/run/cpevisord.sock";

/// The `cpevisorctl --help` text.
pub const USAGE: &str = "usage: cpevisorctl [--socket PATH] [--json] COMMAND

commands:
  install URL [--digest sha256:HEX] [--env NAME] [--network FILE|JSON]
                                                  install a package (InstallDU); --network:
                                                  a network section in place of the package's
  update UUID [URL] [--network FILE|JSON|null]    update a DU (default: its install URL); the
                                                  network override in force stays unless
                                                  given (null: back to the package's)
  uninstall UUID [--keep-data]                    remove a DU (and its data unless kept)
  list                                            ExecEnvs, DeploymentUnits, ExecutionUnits
  status [UUID|EUID]                              one DU or EU (all when omitted)
  start EUID | stop EUID | restart EUID           SetRequestedState Active / Idle, restart
  logs EUID                                       the app's console (RAM ring buffer)
  events                                          recent DUStateChange! and EU value changes
  reset ENV                                       ExecEnv.Reset(): uninstall everything in it
  env-enable ENV | env-disable ENV                ExecEnv.Enable (disable stops its apps)
  pack DIR --key KEY --out FILE                   build and sign a package from DIR/app.json
  keygen DIR                                      create a signing key pair in DIR
                                                  (pack, keygen: operator's host build only)

The socket defaults to $CPEVISOR_SOCKET or /run/cpevisord.sock.
The operator's USP controller (the former `cpevisorctl usp`) is `cpevisor-controller`,
run on the operator's side, not on the device.";

/// What `cpevisorctl usp ...` prints (exit 2): the controller moved out of the device tool.
pub const USP_MOVED: &str = "cpevisorctl: `usp` is no longer a cpevisorctl command: the USP \
controller is `cpevisor-controller` (the operator's side, crate controller/), with the same \
options and commands: `cpevisor-controller [OPTIONS] COMMAND`";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A request for the daemon over its socket.
    Daemon(Request),
    /// `pack`: build and sign a package, locally.
    Pack {
        /// The package source directory (holds `app.json`).
        dir: PathBuf,
        /// The secret signing key file.
        key: PathBuf,
        /// The package file to write.
        out: PathBuf,
    },
    /// `keygen DIR`: create a signing key pair in that directory.
    Keygen(PathBuf),
    /// `--help`, or no command.
    Help,
}

/// The parsed `cpevisorctl` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// The daemon's socket (`--socket`, `$CPEVISOR_SOCKET` or `DEFAULT_SOCKET`).
    pub socket: PathBuf,
    /// `--json`: print JSON (for scripts) instead of tables.
    pub json: bool,
    /// What to do.
    pub command: Command,
}

/// Parses argv (without the program name). Errors name the bad argument.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    let mut socket = std::env::var_os("CPEVISOR_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut json = false;
    let mut words: Vec<&str> = Vec::new();
    let mut flags: Vec<(&str, Option<&str>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--json" => json = true,
            "--keep-data" => flags.push((a, None)),
            "-h" | "--help" => {
                return Ok(Cli {
                    socket,
                    json,
                    command: Command::Help,
                })
            }
            "--socket" | "--digest" | "--env" | "--key" | "--out" | "--network" => {
                let v = args
                    .get(i + 1)
                    .ok_or_else(|| format!("{a} needs a value"))?;
                if a == "--socket" {
                    socket = PathBuf::from(v);
                } else {
                    flags.push((a, Some(v.as_str())));
                }
                i += 1;
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => words.push(a),
        }
        i += 1;
    }
    let flag = |name: &str| flags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let value = |name: &str| flag(name).flatten().map(str::to_string);
    let allowed = |ok: &[&str]| -> Result<(), String> {
        match flags.iter().find(|(n, _)| !ok.contains(n)) {
            Some((n, _)) => Err(format!("{n} does not apply to {}", words[0])),
            None => Ok(()),
        }
    };
    let arity = |n: std::ops::RangeInclusive<usize>| -> Result<(), String> {
        if n.contains(&(words.len() - 1)) {
            Ok(())
        } else {
            Err(format!(
                "{}: wrong number of arguments (see --help)",
                words[0]
            ))
        }
    };
    let Some(cmd) = words.first().copied() else {
        return Err("no command given (see --help)".into());
    };
    let arg = |k: usize| words[k].to_string();
    let command = match cmd {
        "install" => {
            arity(1..=1)?;
            allowed(&["--digest", "--env", "--network"])?;
            Command::Daemon(Request::Install {
                url: arg(1),
                digest: value("--digest"),
                env: value("--env"),
                network: value("--network").map(network_text).transpose()?,
            })
        }
        "update" => {
            arity(1..=2)?;
            allowed(&["--network"])?;
            Command::Daemon(Request::Update {
                uuid: arg(1),
                url: words.get(2).map(|s| s.to_string()),
                network: value("--network").map(network_text).transpose()?,
            })
        }
        "uninstall" => {
            arity(1..=1)?;
            allowed(&["--keep-data"])?;
            Command::Daemon(Request::Uninstall {
                uuid: arg(1),
                keep_data: flag("--keep-data").is_some(),
            })
        }
        "list" | "events" | "status" if words.len() == 1 => {
            allowed(&[])?;
            Command::Daemon(if cmd == "events" {
                Request::Events { after: 0 }
            } else {
                Request::List {}
            })
        }
        "status" => {
            arity(1..=1)?;
            allowed(&[])?;
            Command::Daemon(Request::Status { id: arg(1) })
        }
        "start" | "stop" | "restart" | "logs" => {
            arity(1..=1)?;
            allowed(&[])?;
            let eu = arg(1);
            Command::Daemon(match cmd {
                "start" => Request::Start { eu },
                "stop" => Request::Stop { eu },
                "restart" => Request::Restart { eu },
                _ => Request::Logs { eu },
            })
        }
        "reset" => {
            arity(1..=1)?;
            allowed(&[])?;
            Command::Daemon(Request::Reset { env: arg(1) })
        }
        "env-enable" | "env-disable" => {
            arity(1..=1)?;
            allowed(&[])?;
            Command::Daemon(Request::SetEnvEnable {
                env: arg(1),
                enable: cmd == "env-enable",
            })
        }
        "pack" => {
            arity(1..=1)?;
            allowed(&["--key", "--out"])?;
            Command::Pack {
                dir: PathBuf::from(arg(1)),
                key: value("--key").ok_or("pack: --key KEY is required")?.into(),
                out: value("--out").ok_or("pack: --out FILE is required")?.into(),
            }
        }
        "keygen" => {
            arity(1..=1)?;
            allowed(&[])?;
            Command::Keygen(PathBuf::from(arg(1)))
        }
        "usp" => return Err(USP_MOVED.trim_start_matches("cpevisorctl: ").into()),
        other => return Err(format!("unknown command {other:?} (see --help)")),
    };
    Ok(Cli {
        socket,
        json,
        command,
    })
}

/// `--network`'s value: JSON as given (an object, or `null`), otherwise the file it names. The
/// daemon checks it (same parser and bound as USP's `X_CPEVISOR_NetworkConfig`); a file is read
/// only up to one byte past that bound, enough for the daemon to refuse it as too large.
fn network_text(v: String) -> Result<String, String> {
    use std::io::Read;
    let t = v.trim_start();
    if t.starts_with('{') || t == "null" {
        return Ok(v);
    }
    let limit = crate::package::network::MAX_OVERRIDE_BYTES as u64 + 1;
    let mut text = String::new();
    std::fs::File::open(&v)
        .and_then(|f| f.take(limit).read_to_string(&mut text))
        .map_err(|e| format!("--network {v}: not JSON, and cannot read it as a file: {e}"))?;
    Ok(text)
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    match &cli.command {
        Command::Help => {
            println!("{USAGE}");
            0
        }
        Command::Keygen(_) | Command::Pack { .. } => operator_tool(cli),
        Command::Daemon(req) => {
            let show_bar = !cli.json && render::stderr_is_tty();
            let mut bar = render::ProgressBar::new(show_bar);
            match client::call(&cli.socket, req, &mut |p| bar.update(p)) {
                Ok(Ok(value)) => {
                    bar.finish();
                    render::print_result(req, &value, cli.json);
                    0
                }
                Ok(Err(f)) => {
                    bar.finish();
                    if cli.json {
                        println!("{}", serde_json::json!({ "fault": f }));
                    }
                    render::print_fault(&f)
                }
                Err(e) => {
                    bar.finish();
                    eprintln!("cpevisorctl: {}: {e}", cli.socket.display());
                    2
                }
            }
        }
    }
}

/// What `pack` and `keygen` print on the device (exit 2): building and signing packages is the
/// operator's work, left out of the device's build to keep it small (docs/flash.md).
pub const OPERATOR_ONLY: &str = "an operator tool, not in the device's build of cpevisorctl: \
run it with a host build of cpevisorctl, on the operator's side";

/// `pack` and `keygen`: the operator's packaging tools (feature `operator-tools`).
#[cfg(feature = "operator-tools")]
fn operator_tool(cli: &Cli) -> i32 {
    match &cli.command {
        Command::Keygen(dir) => match crate::package::keygen(dir) {
            Ok(k) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"secret": k.secret, "public": k.public, "key_id": k.key_id})
                    );
                } else {
                    println!("secret key  {}", k.secret.display());
                    println!("public key  {}", k.public.display());
                    println!("key id      {}", k.key_id);
                }
                0
            }
            Err(f) => render::print_fault(&f),
        },
        Command::Pack { dir, key, out } => {
            let res = crate::package::load_signing_key(key)
                .and_then(|k| crate::package::pack_dir(dir, &k, out));
            match res {
                Ok(info) => {
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "path": info.path,
                                "manifest_digest": info.manifest_digest.to_string(),
                                "size": info.size,
                                "signer": info.signer,
                            })
                        );
                    } else {
                        println!("package   {} ({} bytes)", info.path.display(), info.size);
                        println!("manifest  {}", info.manifest_digest);
                        println!("signer    {}", info.signer);
                    }
                    0
                }
                Err(f) => render::print_fault(&f),
            }
        }
        _ => unreachable!("operator_tool is called for pack and keygen only"),
    }
}

/// `pack` and `keygen` in a build without them: say where they are.
#[cfg(not(feature = "operator-tools"))]
fn operator_tool(cli: &Cli) -> i32 {
    let name = match cli.command {
        Command::Keygen(_) => "keygen",
        _ => "pack",
    };
    eprintln!("cpevisorctl: {name}: {OPERATOR_ONLY}");
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cli, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    /// The device's build (no `operator-tools`): pack and keygen are refused, saying where
    /// they are, and write nothing. (`cargo test -p cpevisor-agent --no-default-features`.)
    #[cfg(not(feature = "operator-tools"))]
    #[test]
    fn pack_and_keygen_are_not_in_the_device_build() {
        let dir = std::env::temp_dir().join(format!("cpv-ctl-optools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let keygen = run(&p(&format!("keygen {d}")).unwrap());
        let pack = run(&p(&format!("pack {d} --key {d}/k --out {d}/a.cpkg")).unwrap());
        let left = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((keygen, pack, left), (2, 2, 0));
        assert!(OPERATOR_ONLY.contains("host build"), "{OPERATOR_ONLY}");
    }

    /// The host build keeps them: keygen writes a key pair.
    #[cfg(feature = "operator-tools")]
    #[test]
    fn keygen_works_in_the_host_build() {
        let dir = std::env::temp_dir().join(format!("cpv-ctl-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let code = run(&p(&format!("keygen {}", dir.display())).unwrap());
        let left = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((code, left), (0, 2));
    }

    #[test]
    fn parses_commands_and_flags() {
        let c = p("--socket /tmp/s --json install http://h/a.cpkg --env jail0").unwrap();
        assert!(c.json);
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert_eq!(
            c.command,
            Command::Daemon(Request::Install {
                url: "http://h/a.cpkg".into(),
                digest: None,
                env: Some("jail0".into()),
                network: None,
            })
        );
        let net = r#"{"mode":"none"}"#;
        let mut args: Vec<String> = ["update", "U", "--network", net]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse(&args).unwrap().command,
            Command::Daemon(Request::Update {
                uuid: "U".into(),
                url: None,
                network: Some(net.into()),
            })
        );
        // A file holding the section: its text goes over the socket.
        let file = std::env::temp_dir().join(format!("cpv-ctl-net-{}", std::process::id()));
        std::fs::write(&file, net).unwrap();
        args = vec![
            "install".into(),
            "http://h/a".into(),
            "--network".into(),
            file.display().to_string(),
        ];
        let parsed = parse(&args);
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(parsed.unwrap().command,
                Command::Daemon(Request::Install { network: Some(n), .. }) if n == net));
        assert_eq!(
            p("uninstall U --keep-data").unwrap().command,
            Command::Daemon(Request::Uninstall {
                uuid: "U".into(),
                keep_data: true
            })
        );
        assert_eq!(
            p("status").unwrap().command,
            Command::Daemon(Request::List {})
        );
        assert!(matches!(
            p("pack d --key k --out o").unwrap().command,
            Command::Pack { .. }
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(p("").unwrap_err().contains("no command"));
        assert!(p("frobnicate").unwrap_err().contains("unknown command"));
        assert!(p("start").unwrap_err().contains("wrong number"));
        assert!(p("start eu-1 --keep-data")
            .unwrap_err()
            .contains("--keep-data does not apply"));
        assert!(p("install u --digest")
            .unwrap_err()
            .contains("--digest needs a value"));
        assert!(p("pack d --key k").unwrap_err().contains("--out"));
        assert!(p("install u --network /nonexistent/net.json")
            .unwrap_err()
            .contains("--network /nonexistent/net.json: not JSON"));
        assert!(p("list --network null")
            .unwrap_err()
            .contains("--network does not apply"));
        assert!(p("list --bogus")
            .unwrap_err()
            .contains("unknown option --bogus"));
        assert!(p("--json usp get Device.")
            .unwrap_err()
            .contains("is `cpevisor-controller`"));
    }
}
