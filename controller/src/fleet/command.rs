//! The service's command lines: `serve`'s options and the `--db` commands, parsed into a
//! [`FleetCmd`] (`super::run` runs it).

use std::path::PathBuf;

use super::rollout_cli::{self, Amount, Plan, RolloutCmd};
use super::serve::ServeOptions;
use super::{selector, views};
use crate::config::{check_endpoint, merge, parse_secs, read_bounded};
use crate::store::labels::LabelChange;
use crate::store::{Location, NewDeployment};
use crate::CtlConfig;

/// The usage of the service's commands (all take `--db PATH`).
pub const USAGE: &str = "service commands (the fleet's desired state in a database: --db PATH is a
SQLite file, created if absent; --db postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME is a
PostgreSQL database, its schema created at the first open; TLS as libpq's ?sslmode=
disable|require|verify-ca|verify-full&sslrootcert=CA.pem[&sslcert=C.pem&sslkey=K.pem]; without
sslmode a server on this machine is plain, any other verify-full, which needs sslrootcert):
  serve --config FILE --db PATH [--sweep SECS] [--max-in-flight N] [--op-timeout SECS]
        [--http ADDR:PORT --api-token-file FILE] [--replica NAME] [--lease-ttl SECS]
                               the long-running controller: inventory and reconciliation;
                               with --http, the JSON API (/api/v1/, Authorization: Bearer
                               TOKEN, tokens one a line in FILE, mode 600) and the dashboard
                               (/#token=TOKEN); the config's http and api_token_file fields
                               say the same. Several serves on one database share the
                               fleet: each holds the leases (renewed every third of
                               --lease-ttl, 15 s) of its fair share of 64 shards and alone
                               reconciles their agents; a dead one's shards are taken by
                               the others when they expire; --replica names this one
                               (default HOST:PID; its own MQTT topic is TOPIC/replica/NAME)
  deploy --db PATH NAME URL --version V [--selector KEY=VALUE ...] [--digest D]
         [--memory-mib N] [--network JSON|FILE|null]
                               want app NAME at version V from URL on every agent the
                               selector matches; --network: sent with every InstallDU
                               and Update of it, as `install`'s
  deployments --db PATH [--json]
  agents --db PATH [--json]
  label --db PATH ENDPOINT [NAME=VALUE ...] [--remove NAME ...] [--json]
                               set and remove an agent's labels (all or nothing), then
                               show them; names 1..63 and values 0..63 of A-Z a-z 0-9 . _ -
                               (a letter or digit first and last), at most 64 an agent
  operations --db PATH [--limit N] [--json]   the journal, newest first
  replicas --db PATH [--json]  the live serve replicas, the shards each holds and the
                               coordinator (the one that steps rollouts)
";

/// A parsed service command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetCmd {
    /// `serve`.
    Serve(Box<CtlConfig>, ServeOptions),
    /// `deploy`.
    Deploy(Location, NewDeployment, bool),
    /// `deployments`.
    Deployments(Location, bool),
    /// `agents --db`.
    Agents(Location, bool),
    /// `operations`.
    Operations(Location, usize, bool),
    /// `rollout ...`.
    Rollout(Location, RolloutCmd, bool),
    /// `replicas`.
    Replicas(Location, bool),
    /// `label`: the agent and the change.
    Label(Location, String, LabelChange, bool),
}

/// Whether `args` are a service command: they name a database.
pub fn is_fleet(args: &[String]) -> bool {
    args.iter().any(|a| a == "--db")
}

/// Parses a service command line.
pub fn parse(args: &[String]) -> Result<FleetCmd, String> {
    let mut db = None;
    let mut json = false;
    let mut config_file = std::env::var_os("CPEVISOR_USP_CONFIG").map(PathBuf::from);
    let mut version = None;
    let mut digest = None;
    let mut memory = None;
    let mut network = None;
    let mut selector = Vec::new();
    let mut remove = Vec::new();
    let mut limit = 100usize;
    let mut opts = ServeOptions::new(Location::Sqlite(PathBuf::new()));
    let mut plan = Plan::default();
    let mut http_listen = None;
    let mut token_file = None;
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a {
            "--db" => db = Some(Location::parse(&value()?)),
            "--json" => json = true,
            "--config" => config_file = Some(PathBuf::from(value()?)),
            "--version" => version = Some(value()?),
            "--digest" => digest = Some(value()?),
            "--selector" => selector.push(value()?),
            "--remove" => remove.push(value()?),
            "--network" => network = Some(crate::network::arg(&value()?)?),
            "--http" => http_listen = Some(value()?),
            "--api-token-file" => token_file = Some(PathBuf::from(value()?)),
            "--memory-mib" => {
                let v = value()?;
                memory = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--memory-mib: {v:?} is not a positive number"))?,
                );
            }
            "--limit" => {
                let v = value()?;
                limit = v
                    .parse()
                    .map_err(|_| format!("--limit: {v:?} is not a number"))?;
            }
            "--canary" => plan.canary = Amount::parse(a, &value()?)?,
            "--wave" => plan.wave = Amount::parse(a, &value()?)?,
            "--max-failures" => plan.max_failure_pct = rollout_cli::parse_pct(a, &value()?)?,
            "--sweep" => opts.sweep = parse_secs(a, &value()?, 0.05)?,
            "--lease-ttl" => opts.lease_ttl = parse_secs(a, &value()?, 0.3)?,
            "--replica" => {
                opts.replica = value()?;
                // It becomes a topic level (the replica's own topic).
                if opts.replica.len() > 200
                    || !cpevisor_usp::mqtt::valid_topic_level(&opts.replica)
                    || opts.replica.chars().any(|c| c.is_control() || c == ' ')
                {
                    return Err(format!(
                        "--replica: {:?} is not a name of 1 to 200 bytes without '/', '+', \
                         '#', spaces or control characters",
                        opts.replica
                    ));
                }
            }
            "--op-timeout" => opts.op_timeout = parse_secs(a, &value()?, 0.05)?,
            "--max-in-flight" => {
                let v = value()?;
                opts.max_in_flight = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("--max-in-flight: {v:?} is not in 1..10000"))?;
                plan.max_in_flight = Some(opts.max_in_flight as i64);
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => words.push(a.to_string()),
        }
        i += 1;
    }
    let db = db.ok_or("--db PATH is needed")?;
    let Some((cmd, rest)) = words.split_first() else {
        return Err("no command given (see cpevisor-controller --help)".into());
    };
    // `deploy` and `rollout start`: NAME URL and the flags.
    let deployment = |rest: &[String]| -> Result<NewDeployment, String> {
        let [name, url] = rest else {
            return Err(format!("{cmd}: NAME URL --version V (see --help)"));
        };
        let version = version.ok_or(format!("{cmd}: --version V is needed"))?;
        for (what, v) in [("NAME", name), ("URL", url), ("--version", &version)] {
            views::check_text(what, v).map_err(|e| format!("{cmd}: {e}"))?;
        }
        Ok(NewDeployment {
            name: name.clone(),
            url: url.clone(),
            digest,
            version,
            selector: selector::parse(&selector)?,
            memory_mib: memory,
            network,
        })
    };
    if cmd != "label" && !remove.is_empty() {
        return Err(format!("{cmd}: --remove is label's"));
    }
    if cmd != "serve" && (http_listen.is_some() || token_file.is_some()) {
        return Err(format!("{cmd}: --http and --api-token-file are serve's"));
    }
    let no_args = |what: FleetCmd| {
        if rest.is_empty() {
            Ok(what)
        } else {
            Err(format!("{cmd}: takes no arguments"))
        }
    };
    match cmd.as_str() {
        "serve" => {
            let f = config_file.ok_or("serve needs --config FILE (the broker settings)")?;
            let mut config = serde_json::from_str::<CtlConfig>(&read_bounded(&f, "usp config")?)
                .map_err(|e| format!("usp config {}: {e}", f.display()))?;
            merge(&mut config, CtlConfig::default());
            if config.mqtt.endpoint_id.is_empty() || config.mqtt.broker_host.is_empty() {
                return Err("serve: the config needs broker_host and endpoint_id".into());
            }
            config.mqtt.validate(true)?;
            opts.db = db;
            opts.http = http_options(
                http_listen.or(config.http.clone()),
                token_file.or(config.api_token_file.clone()),
            )?;
            no_args(FleetCmd::Serve(Box::new(config), opts))
        }
        "deploy" => Ok(FleetCmd::Deploy(db, deployment(rest)?, json)),
        "rollout" => Ok(FleetCmd::Rollout(
            db,
            rollout_cli::parse(rest, deployment, plan)?,
            json,
        )),
        "deployments" => no_args(FleetCmd::Deployments(db, json)),
        "agents" => no_args(FleetCmd::Agents(db, json)),
        "operations" => no_args(FleetCmd::Operations(db, limit, json)),
        "replicas" => no_args(FleetCmd::Replicas(db, json)),
        "label" => {
            let Some((agent, set)) = rest.split_first() else {
                return Err("label: ENDPOINT [NAME=VALUE ...] [--remove NAME ...]".into());
            };
            check_endpoint(agent).map_err(|e| format!("label: {e}"))?;
            let change = LabelChange::new(set, &remove).map_err(|e| format!("label: {e}"))?;
            Ok(FleetCmd::Label(db, agent.clone(), change, json))
        }
        other => Err(format!(
            "{other}: not a command that takes --db (see --help)"
        )),
    }
}

/// The API's settings: both or neither (an API without a token is refused).
fn http_options(
    listen: Option<String>,
    token_file: Option<PathBuf>,
) -> Result<Option<crate::http::HttpOptions>, String> {
    match (listen, token_file) {
        (Some(listen), Some(token_file)) => {
            Ok(Some(crate::http::HttpOptions { listen, token_file }))
        }
        (Some(_), None) => Err(
            "serve: --http needs --api-token-file FILE (the API takes no request without a token)"
                .into(),
        ),
        (None, Some(_)) => Err("serve: --api-token-file needs --http ADDR:PORT".into()),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<FleetCmd, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_the_service_commands() {
        assert!(is_fleet(&["agents".into(), "--db".into(), "x".into()]));
        assert!(!is_fleet(&["agents".into()]));
        match p("deploy --db f.db app http://h/a.cpkg --version 1.0 --selector model=m --selector arch=x86_64 --memory-mib 16").unwrap() {
            FleetCmd::Deploy(db, d, false) => {
                assert_eq!(db, Location::from("f.db"));
                assert_eq!(d.name, "app");
                assert_eq!(d.version, "1.0");
                assert_eq!(d.selector.len(), 2);
                assert_eq!(d.memory_mib, Some(16));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p("agents --db f.db --json").unwrap(),
            FleetCmd::Agents("f.db".into(), true)
        );
        assert_eq!(
            p("operations --db f.db --limit 5").unwrap(),
            FleetCmd::Operations("f.db".into(), 5, false)
        );
        match p("rollout start --db f.db app http://h/a --version 2 --selector model=m --canary 10% --wave 3 --max-in-flight 2 --max-failures 30%").unwrap() {
            FleetCmd::Rollout(_, RolloutCmd::Start(d, plan), false) => {
                assert_eq!((d.name.as_str(), d.version.as_str()), ("app", "2"));
                assert_eq!(plan.canary, Amount::Percent(10));
                assert_eq!(plan.wave, Amount::Count(3));
                assert_eq!(plan.max_in_flight, Some(2));
                assert_eq!(plan.max_failure_pct, 30);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p("rollout status --db f.db --json").unwrap(),
            FleetCmd::Rollout("f.db".into(), RolloutCmd::Status(None), true)
        );
        assert_eq!(
            p("rollout rollback --db f.db 4").unwrap(),
            FleetCmd::Rollout(
                "f.db".into(),
                RolloutCmd::Command(4, crate::store::rollouts::RolloutCommand::Rollback),
                false
            )
        );
        let e = |s: &str| p(s).unwrap_err();
        assert!(e("rollout pause --db f").contains("ID"));
        assert!(e("rollout pause --db f x").contains("not a rollout number"));
        assert!(e("rollout start --db f app u").contains("--version"));
        assert!(e("rollout frob --db f 1").contains("not one of"));
        assert!(e("rollout start --db f a u --version 1 --canary 0").contains("--canary"));
        assert!(
            e("rollout start --db f a u --version 1 --max-failures 200%").contains("percentage")
        );
        assert!(e("deploy --db f app http://h/a").contains("--version"));
        assert!(e("deploy --db f app --version 1").contains("NAME URL"));
        assert!(e("deploy --db f a u --version 1 --selector colour=red").contains("unknown key"));
        assert!(e("deploy --db f a u --version 1 --memory-mib 0").contains("positive"));
        match p(r#"deploy --db f a u --version 1 --network {"mode":"none"}"#).unwrap() {
            FleetCmd::Deploy(_, d, _) => {
                assert_eq!(d.network.as_deref(), Some(r#"{"mode":"none"}"#))
            }
            other => panic!("{other:?}"),
        }
        match p("rollout start --db f a u --version 1 --network null").unwrap() {
            FleetCmd::Rollout(_, RolloutCmd::Start(d, _), _) => {
                assert_eq!(d.network.as_deref(), Some("null"))
            }
            other => panic!("{other:?}"),
        }
        assert!(e(r#"deploy --db f a u --version 1 --network {"mode":"#)
            .starts_with("--network: not JSON"));
        assert!(
            e("deploy --db f a u --version 1 --network /nonexistent/n.json")
                .starts_with("--network file /nonexistent/n.json")
        );
        assert!(e("agents --db f extra").contains("no arguments"));
        assert!(e("serve --db f").contains("--config"));
        assert!(e("agents --db f --http 127.0.0.1:1").contains("serve's"));
        let dir = std::env::temp_dir().join(format!("cpv-fleet-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("ctl.json");
        std::fs::write(
            &cfg,
            r#"{"broker_host": "b", "endpoint_id": "self::c", "http": "127.0.0.1:8080"}"#,
        )
        .unwrap();
        let serve = |extra: &str| p(&format!("serve --db f --config {} {extra}", cfg.display()));
        assert!(serve("").unwrap_err().contains("--api-token-file"));
        assert!(serve("--http 127.0.0.1:9")
            .unwrap_err()
            .contains("needs --api-token-file"));
        match serve("--api-token-file t").unwrap() {
            FleetCmd::Serve(_, o) => assert_eq!(
                o.http,
                Some(crate::http::HttpOptions {
                    listen: "127.0.0.1:8080".into(),
                    token_file: "t".into()
                }),
                "the file's address, the flag's token file"
            ),
            other => panic!("{other:?}"),
        }
        std::fs::write(&cfg, r#"{"broker_host": "b", "endpoint_id": "self::c"}"#).unwrap();
        assert!(serve("--api-token-file t")
            .unwrap_err()
            .contains("needs --http"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e("frob --db f").contains("not a command"));
        assert!(e("agents --db f --bogus").contains("unknown option"));
        // A replica's name is a topic level of its own topic.
        for bad in ["a/b", "+", "#", "a b", "x\ny", ""] {
            let args = ["replicas", "--db", "f", "--replica", bad].map(String::from);
            assert!(parse(&args).unwrap_err().contains("--replica"), "{bad:?}");
        }
        assert!(matches!(
            p("replicas --db f --json").unwrap(),
            FleetCmd::Replicas(_, true)
        ));
    }

    #[test]
    fn parses_label_and_its_selectors() {
        let change = |set: &[&str], rm: &[&str]| {
            let s: Vec<String> = set.iter().map(|w| w.to_string()).collect();
            let r: Vec<String> = rm.iter().map(|w| w.to_string()).collect();
            LabelChange::new(&s, &r).unwrap()
        };
        assert_eq!(
            p("label --db f os::a site=paris tier= --remove old --json").unwrap(),
            FleetCmd::Label(
                "f".into(),
                "os::a".into(),
                change(&["site=paris", "tier="], &["old"]),
                true
            )
        );
        assert_eq!(
            p("label --db f os::a").unwrap(),
            FleetCmd::Label("f".into(), "os::a".into(), change(&[], &[]), false)
        );
        let e = |s: &str| p(s).unwrap_err();
        assert!(e("label --db f").contains("ENDPOINT"));
        assert!(e("label --db f os::a site").contains("not NAME=VALUE"));
        assert!(e("label --db f os::a si/te=x").contains("label name \"si/te\""));
        assert!(e("label --db f os::a site=a+b").contains("label value \"a+b\""));
        assert!(e("label --db f os::a site=x --remove site").contains("site: given twice"));
        assert!(e("label --db f os::a a=1 a=2").contains("a: given twice"));
        assert!(e("agents --db f --remove site").contains("--remove is label's"));
        match p("deploy --db f a u --version 1 --selector label.site=paris,lyon --selector board=b --selector percent=10").unwrap() {
            FleetCmd::Deploy(_, d, _) => {
                assert_eq!(d.selector["label.site"], "paris,lyon");
                assert_eq!(d.selector["percent"], "10");
                assert_eq!(d.selector["board"], "b");
            }
            other => panic!("{other:?}"),
        }
        assert!(e("deploy --db f a u --version 1 --selector percent=0").contains("percentage"));
    }
}
