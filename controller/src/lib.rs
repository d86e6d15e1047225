//! cpevisor-controller: the operator's side of cpevisor, a USP (TR-369) controller for the
//! fleet of `cpevisord` agents. It connects to the MQTT broker with its own endpoint ID, topic
//! and client certificate (or listens for agents' WebSockets), sends one request (or one
//! command) to every addressed agent in parallel, follows OperationComplete /
//! `DUStateChange!` / ValueChange until each agent is done or `--timeout` passes, and prints a
//! table or JSON. The exit code is 1 when any agent failed, 2 when the command line or the
//! broker was the problem. It lives outside the agent's crate so routers do not carry it
//! (issue 13). `fleet` is the long-running service (`serve`: inventory, deployments,
//! reconciliation, rollouts: `fleet::rollout` decides, `store::rollouts` keeps them) over the
//! database in `store`, with its HTTP API and dashboard in `http`; see README.md.
//!
//! Split by concern: `cli` (flags and commands), `config` (connection settings), `roster`,
//! `connection` (MQTT or WebSocket under the engine), `network` (the operator's network
//! override, whoever gives it), `engine` (the requests and what answers
//! them), `render` (tables and JSON); [`run`] ties them together. Children import siblings
//! only, never this module.

#![forbid(unsafe_code)]

mod cli;
mod config;
mod connection;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod network;
mod private_file;
mod render;
mod roster;
pub mod store;
pub mod ws_server;

use std::time::{Duration, Instant};

pub use cli::{parse, parse_agents_file, UspCli, WsListen, USAGE};
pub use config::CtlConfig;
pub use connection::Connection;
use engine::Op;
use roster::save_roster;
pub use roster::{load_roster, RosterEntry};

/// Runs a parsed `usp` command; returns the exit code.
pub fn run(cli: &UspCli) -> i32 {
    let opened = match &cli.ws {
        Some(ws) => Connection::open_ws(ws, &cli.config),
        None => Connection::open(&cli.config),
    };
    let mut conn = match opened {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cpevisor-controller: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let code = match &cli.op {
        None => {
            conn.controller.listen(cli.listen);
            let probed = if cli.agents.is_empty() {
                Vec::new()
            } else {
                conn.wait_for_agents(&cli.agents, started + cli.timeout);
                conn.controller.run(&cli.agents, &Op::Probe, cli.timeout)
            };
            let mut seen: Vec<RosterEntry> = conn
                .controller
                .seen()
                .values()
                .map(|s| RosterEntry {
                    endpoint_id: s.endpoint_id.clone(),
                    topic: s.topic.clone(),
                    how: s.how.clone(),
                })
                .collect();
            seen.retain(|s| {
                s.how != "Response" || probed.iter().any(|p| p.ok && p.agent == s.endpoint_id)
            });
            if let Some(r) = &cli.roster {
                if let Err(e) = save_roster(r, &seen) {
                    eprintln!("cpevisor-controller: {e}");
                }
            }
            render::print_agents(&seen, &probed, cli.json);
            i32::from(probed.iter().any(|p| !p.ok))
        }
        Some(op) => {
            // Agents reach a WebSocket controller when their back-off lets them.
            conn.wait_for_agents(&cli.agents, started + cli.timeout);
            let left = (started + cli.timeout).saturating_duration_since(Instant::now());
            let outcomes = conn.controller.run(&cli.agents, op, left);
            let stats = conn.controller.stats();
            render::print_outcomes(op, &outcomes, stats, started.elapsed(), cli.json);
            i32::from(outcomes.iter().any(|o| !o.ok))
        }
    };
    // NotifyResps we owe are small; give them a moment to leave.
    conn.flush(Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpevisor_usp::mqtt::MqttSettings;

    fn p(s: &str) -> Result<UspCli, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    const CONN: &str =
        "--broker 127.0.0.1:8883 --ca ca.pem --cert c.pem --key c.key --id self::ctl";

    #[test]
    fn parses_commands() {
        let c = p(&format!("{CONN} --agent os::a --agent os::b --json install http://h/p.cpkg --env Device.SoftwareModules.ExecEnv.1")).unwrap();
        assert_eq!(c.config.mqtt.broker_host, "127.0.0.1");
        assert_eq!(c.config.mqtt.broker_port, Some(8883));
        assert_eq!(c.agents, vec!["os::a", "os::b"]);
        assert!(c.json);
        assert_eq!(
            c.op,
            Some(Op::Install {
                url: "http://h/p.cpkg".into(),
                env: Some("Device.SoftwareModules.ExecEnv.1".into()),
                network: None,
            })
        );
        assert_eq!(c.config.topic(), "usp/controller/self::ctl");
        let c = p(&format!(
            "{CONN} --agent os::a set Device.LocalAgent.Subscription.1.Enable=false"
        ))
        .unwrap();
        assert_eq!(
            c.op,
            Some(Op::Set {
                params: vec![(
                    "Device.LocalAgent.Subscription.1.Enable".into(),
                    "false".into()
                )]
            })
        );
        let c = p(&format!(
            "{CONN} --agent os::a operate Device.Reboot() CommandKey=k"
        ))
        .unwrap();
        assert!(matches!(c.op, Some(Op::Operate { ref args, .. }) if args["CommandKey"] == "k"));
        assert_eq!(p(&format!("{CONN} agents")).unwrap().op, None);
        assert_eq!(
            p(&format!("{CONN} --agent os::a --timeout 2.5 stop eu-1"))
                .unwrap()
                .timeout,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| p(s).unwrap_err();
        assert!(e(&format!("{CONN} get Device.")).contains("name the agents"));
        assert!(e(&format!("{CONN} --agent a frob")).contains("unknown command"));
        assert!(e(&format!("{CONN} --agent a set Device.X")).contains("not PATH=VALUE"));
        assert!(e(&format!("{CONN} --agent a operate Device.X")).contains("not a command"));
        assert!(e(&format!("{CONN} --agent a start")).contains("wrong number"));
        assert!(
            e(&format!("{CONN} --agent a --env x get Device.")).contains("--env does not apply")
        );
        assert!(e(&format!("{CONN} --all get Device.")).contains("--roster"));
        assert!(e("--id c --agent a get Device.").contains("no broker"));
        assert!(e("--broker h --agent a get Device.").contains("no controller endpoint"));
        assert!(e("--broker h --id c --cert x --agent a get Device.").contains("go together"));
        assert!(e(&format!("{CONN} --timeout soon --agent a get Device.")).contains("--timeout"));
        assert!(e(&format!("{CONN} --bogus")).contains("unknown option --bogus"));
        assert!(e(&format!("{CONN} --agent")).contains("--agent needs a value"));
        assert!(e(&format!("{CONN} --agent a --network null get Device."))
            .contains("--network does not apply to get"));
        assert!(
            e(&format!("{CONN} --agent a install u --network {{\"mode\":")).contains("not JSON")
        );
        assert!(e(&format!(
            "{CONN} --agent a install u --network /nonexistent.json"
        ))
        .contains("--network file"));
    }

    #[test]
    fn network_overrides_go_with_install_and_update() {
        let net = r#"{"mode":"none"}"#;
        let c = p(&format!(
            "{CONN} --agent os::a install http://h/p --network {net}"
        ))
        .unwrap();
        assert_eq!(
            c.op,
            Some(Op::Install {
                url: "http://h/p".into(),
                env: None,
                network: Some(net.into()),
            })
        );
        let c = p(&format!("{CONN} --agent os::a update U --network null")).unwrap();
        assert_eq!(
            c.op,
            Some(Op::Update {
                du: "U".into(),
                url: None,
                network: Some("null".into()),
            })
        );
    }

    #[test]
    fn websocket_listen_flags() {
        let c = p("--id self::c --ca ca.pem --ws-listen 127.0.0.1:9000 --ws-cert s.pem --ws-key s.key --agent os::a get Device.").unwrap();
        assert_eq!(
            c.ws,
            Some(WsListen {
                addr: "127.0.0.1:9000".into(),
                cert: Some(("s.pem".into(), "s.key".into()))
            })
        );
        let e = |s: &str| p(s).unwrap_err();
        assert!(
            e("--id c --ws-listen h:1 --ws-cert s.pem --agent a get Device.")
                .contains("go together")
        );
        assert!(
            e("--id c --ws-listen h:1 --ws-cert s --ws-key k --agent a get Device.")
                .contains("--ca")
        );
        assert!(e("--id c --ws-cert s --ws-key k --agent a get Device.").contains("--ws-listen"));
        assert!(p("--id c --ws-listen h:1 --agent a get Device.").is_ok());
    }

    #[test]
    fn client_ids_and_topics() {
        let mut c = CtlConfig {
            mqtt: MqttSettings {
                broker_host: "127.0.0.1".into(),
                endpoint_id: "self::c".into(),
                ..MqttSettings::default()
            },
            ..CtlConfig::default()
        };
        let m = c.mqtt_config().unwrap();
        assert_eq!(m.client_id, format!("self::c-{}", std::process::id()));
        assert_eq!(m.port, 1883);
        assert_eq!(m.subscriptions, vec!["usp/controller/self::c".to_string()]);
        c.session_expiry_s = 600;
        c.mqtt.topic = Some("ops/c".into());
        let m = c.mqtt_config().unwrap();
        assert_eq!(m.client_id, "self::c");
        assert_eq!(m.session_expiry_s, 600);
        assert_eq!(m.subscriptions, vec!["ops/c".to_string()]);
        assert_eq!(c.agent_topic().replace("{id}", "os::a"), "usp/agent/os::a");
    }

    #[test]
    fn config_files_keep_their_format() {
        let dir = std::env::temp_dir().join(format!("cpv-ctl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ctl.json");
        std::fs::write(
            &f,
            r#"{"broker_host": "b", "broker_port": 8884, "ca_file": "ca.pem",
                "cert_file": "c.pem", "key_file": "c.key", "server_name": "n",
                "endpoint_id": "self::c", "topic": "ops/c", "agent_topic": "a/{id}",
                "identity": "cn", "session_expiry_s": 60}"#,
        )
        .unwrap();
        let cfg = format!("--config {}", f.display());
        let c = p(&format!("{cfg} --id self::d --agent os::a get Device.")).unwrap();
        assert_eq!(c.config.mqtt.broker_host, "b");
        assert_eq!(c.config.mqtt.port(), 8884);
        assert_eq!(c.config.mqtt.server_name(), "n");
        assert_eq!(
            c.config.mqtt.endpoint_id, "self::d",
            "flags override the file"
        );
        assert_eq!(c.config.topic(), "ops/c");
        assert_eq!(c.config.agent_topic(), "a/{id}");
        assert_eq!(c.config.identity.as_deref(), Some("cn"));
        assert_eq!(c.config.session_expiry_s, 60);
        std::fs::write(
            &f,
            r#"{"broker_host": "b", "endpoint_id": "c", "brokr_port": 1}"#,
        )
        .unwrap();
        let e = p(&format!("{cfg} --agent os::a get Device.")).unwrap_err();
        assert!(e.contains("unknown field `brokr_port`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn agents_files_and_rosters() {
        let list = parse_agents_file("# fleet\nos::a\n\n  os::b  \n").unwrap();
        assert_eq!(list, vec!["os::a", "os::b"]);
        assert!(parse_agents_file("os::a\nbad id\n")
            .unwrap_err()
            .contains("line 2"));
        let dir = std::env::temp_dir().join(format!("cpv-roster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = dir.join("roster.json");
        let e = |id: &str, how: &str| RosterEntry {
            endpoint_id: id.into(),
            topic: None,
            how: how.into(),
        };
        save_roster(&r, &[e("os::b", "Boot!"), e("os::a", "OnBoardRequest")]).unwrap();
        save_roster(&r, &[e("os::b", "Response")]).unwrap();
        let got = load_roster(&r).unwrap();
        assert_eq!(
            got,
            vec![e("os::a", "OnBoardRequest"), e("os::b", "Response")]
        );
        let c = p(&format!(
            "{CONN} --all --roster {} get Device.",
            r.display()
        ))
        .unwrap();
        assert_eq!(c.agents, vec!["os::a", "os::b"]);
        std::fs::write(&r, "[{\"endpoint_id\": \"\"}]").unwrap();
        assert!(load_roster(&r).unwrap_err().contains("endpoint ID"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
