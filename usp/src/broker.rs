//! A real MQTT 5 broker for tests (and the PKI for any TLS test, `Pki`): Debian's mosquitto on
//! 127.0.0.1 with TLS and required client certificates, plus the PKI it needs (a CA, a server
//! certificate for 127.0.0.1 and for 10.0.2.2, client certificates for named identities), made
//! with the openssl CLI in a test directory. An emulated board on QEMU user networking reaches
//! the host's loopback, and so this broker, at 10.0.2.2 (slirp forwards it to 127.0.0.1), which
//! is why the certificate names it.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use cpevisor_usp::broker::TestBroker;
//! let dir = std::env::temp_dir().join("broker-doc");
//! let broker = TestBroker::start(&dir)?;
//! let config = broker.mqtt_config("agent-1", "os::agent-1")?; // TLS with agent-1's certificate
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mqtt::MqttConfig;
use crate::tls;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The host as a QEMU board on user networking (slirp) sees it: connections to it reach the
/// host's 127.0.0.1, where the broker listens. The server certificate names it too.
pub const SLIRP_HOST: &str = "10.0.2.2";

/// Broker limits, for load and bad-input tests.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// mosquitto `max_connections` (-1: unlimited).
    pub max_connections: i64,
    /// mosquitto `max_inflight_messages` per client.
    pub max_inflight: u16,
    /// mosquitto `max_packet_size`: larger packets are refused (0: mosquitto's default).
    pub max_packet_size: u32,
    /// mosquitto `message_size_limit`: larger payloads are dropped (0: no limit).
    pub message_size_limit: u32,
    /// Also open a plain-TCP listener without authentication (for tests of the codec alone).
    pub plain_listener: bool,
    /// The USP topic ACL on the TLS listener ([`usp_acl`] of `acl_controllers`): each client,
    /// named by its certificate's CN, reads only its own `usp/agent/<CN>[/+]` or
    /// `usp/controller/<CN>` topic; only the listed controllers write to agents' topics. Off:
    /// every authenticated client may use any topic.
    pub usp_acl: bool,
    /// The controllers the ACL lets write to agents (with `usp_acl`).
    pub acl_controllers: Vec<AclController>,
    /// mosquitto `log_type debug`: the log then names every refused PUBLISH (`Denied PUBLISH
    /// from <client id>`), which ACL tests wait for.
    pub debug_log: bool,
}

/// The part of the USP ACL that is the same for every deployment (`%u` is the client
/// certificate's CN, mosquitto `use_identity_as_username`): an agent reads its own topic
/// `usp/agent/<CN>` and the identity sub-topics below it, and writes to controllers' topics; a
/// controller reads its own `usp/controller/<CN>` and the topics of its `serve` replicas below
/// it, `usp/controller/<CN>/replica/<name>` (their requests' Response Topic, which agents
/// answer on, and where one replica forwards to another: anyone may write there as anyone may
/// write to a controller's topic). Nobody writes to an agent's topic by this part:
/// [`usp_acl`] adds that, per configured controller.
pub const USP_ACL_PATTERNS: &str = "\
pattern read usp/agent/%u
pattern read usp/agent/%u/+
pattern write usp/controller/+
pattern read usp/controller/%u
pattern write usp/controller/+/replica/+
pattern read usp/controller/%u/replica/+
";

/// Where a controller publishes its requests to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerTopic {
    /// The agent's own topic `usp/agent/<agent>`, as every TR-369 controller does. The agent
    /// cannot tell apart the controllers that write there: all those it accepts on that topic
    /// must have the same role (the agent refuses a config that mixes them).
    AgentTopic,
    /// `usp/agent/<agent>/<CN>` (`cpevisor-controller --identity CN`): the agent takes the suffix as
    /// the sender, and only this certificate may write it.
    IdentitySubTopic,
}

/// A controller certificate the ACL lets write to agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclController {
    /// The certificate's CN (the user name mosquitto gives the client).
    pub cn: String,
    /// Which agent topics it may write.
    pub topic: ControllerTopic,
}

impl AclController {
    /// A controller named by its certificate's CN, writing to `topic`.
    pub fn new(cn: &str, topic: ControllerTopic) -> AclController {
        AclController {
            cn: cn.to_string(),
            topic,
        }
    }
}

/// The mosquitto `acl_file` for a USP deployment: [`USP_ACL_PATTERNS`], then one `user` block per
/// controller that may write to agents: `topic write usp/agent/+` for
/// [`ControllerTopic::AgentTopic`], `topic write usp/agent/+/<CN>` for
/// [`ControllerTopic::IdentitySubTopic`]. Any other client the broker admits (any certificate of
/// the same CA) can write to no agent at all. A CN that would not be one plain ACL token and one
/// topic level (empty, whitespace, control characters, `/`, `+`, `#`) is refused, naming it.
pub fn usp_acl(controllers: &[AclController]) -> Result<String, String> {
    let mut acl = String::from(
        "# USP topic ACL (cpevisor): the CN of each client certificate is its user name.\n",
    );
    acl.push_str(USP_ACL_PATTERNS);
    for (i, c) in controllers.iter().enumerate() {
        let cn = &c.cn;
        let plain = !cn.is_empty()
            && cn.len() <= 256
            && !cn
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || "/+#".contains(ch));
        if !plain {
            return Err(format!(
                "controller certificate CN {cn:?}: must be 1-256 bytes without whitespace, \
                 control characters, '/', '+' or '#' (it becomes an ACL user and a topic level)"
            ));
        }
        if controllers[..i].iter().any(|o| o.cn == *cn) {
            return Err(format!("controller certificate CN {cn:?} listed twice"));
        }
        let topic = match c.topic {
            ControllerTopic::AgentTopic => "usp/agent/+".to_string(),
            ControllerTopic::IdentitySubTopic => format!("usp/agent/+/{cn}"),
        };
        acl.push_str(&format!("\nuser {cn}\ntopic write {topic}\n"));
    }
    Ok(acl)
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_connections: -1,
            max_inflight: 20,
            max_packet_size: 0,
            message_size_limit: 0,
            plain_listener: false,
            usp_acl: false,
            acl_controllers: Vec::new(),
            debug_log: false,
        }
    }
}

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// A running mosquitto; killed on drop.
pub struct TestBroker {
    pki: Pki,
    dir: PathBuf,
    port: u16,
    plain_port: Option<u16>,
    child: Option<Child>,
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what}: cannot run {:?}: {e}", cmd.get_program()),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Names become file names and certificate subjects: keep them plain.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("identity name {name:?}: use 1-64 of A-Z a-z 0-9 . _ : -"),
        ));
    }
    Ok(())
}

fn unique_serial() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "0x{:016x}{:08x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `openssl req -x509`: a new P-256 key and a certificate `CN=cn` with the `extensions` section
/// of `cnf`, self-signed or signed by `signer` (OpenSSL 3's `-CA` makes key, request and
/// signature in one process), written to `id`.
fn new_certificate(
    cnf: &Path,
    extensions: &str,
    cn: &str,
    id: &Identity,
    signer: Option<&Identity>,
    what: &str,
) -> io::Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "3", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-set_serial")
        .arg(unique_serial());
    if let Some(ca) = signer {
        cmd.arg("-CA").arg(&ca.cert).arg("-CAkey").arg(&ca.key);
    }
    cmd.arg("-config")
        .arg(cnf)
        .args(["-extensions", extensions, "-keyout"])
        .arg(&id.key)
        .arg("-out")
        .arg(&id.cert);
    run(&mut cmd, what)
}

/// Makes a CA (key + self-signed certificate) named `cn` in `dir` as `<stem>.pem/.key`.
fn make_ca(dir: &Path, stem: &str, cn: &str) -> io::Result<Identity> {
    let cnf = dir.join("openssl-ca.cnf");
    fs::write(
        &cnf,
        "[req]\ndistinguished_name = dn\n[dn]\n[v3]\nbasicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
    )?;
    let id = Identity {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    new_certificate(&cnf, "v3", cn, &id, None, "openssl CA")?;
    Ok(id)
}

/// Makes a leaf certificate `CN=cn` with `san` (openssl syntax), signed by `ca`.
fn make_leaf(dir: &Path, stem: &str, cn: &str, san: &str, ca: &Identity) -> io::Result<Identity> {
    let cnf = dir.join(format!("{stem}.cnf"));
    fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\n[dn]\n[leaf]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth,clientAuth\n\
             subjectAltName = {san}\nsubjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n"
        ),
    )?;
    let id = Identity {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    new_certificate(&cnf, "leaf", cn, &id, Some(ca), "openssl leaf certificate")?;
    let _ = fs::remove_file(&cnf);
    Ok(id)
}

/// A test PKI in a directory: a CA, a server certificate for 127.0.0.1, and client
/// certificates made on demand (also from a second, untrusted CA).
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA (`ca.pem`) and the server certificate (`server.pem`, CN 127.0.0.1, SAN
    /// 127.0.0.1, [`SLIRP_HOST`] and localhost) in `dir`, created if missing.
    pub fn new(dir: &Path) -> io::Result<Pki> {
        fs::create_dir_all(dir)?;
        let ca = make_ca(dir, "ca", "cpevisor test CA")?;
        make_leaf(
            dir,
            "server",
            "127.0.0.1",
            &format!("IP:127.0.0.1,IP:{SLIRP_HOST},DNS:localhost"),
            &ca,
        )?;
        Ok(Pki {
            dir: dir.to_owned(),
        })
    }

    /// The directory the PKI's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA that signed the server and every identity.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate and key.
    pub fn server(&self) -> Identity {
        Identity {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        }
    }

    /// A client certificate `CN=name` (SAN URI `urn:bbf:usp:id:<name>`) from the CA, made on
    /// first use.
    pub fn identity(&self, name: &str) -> io::Result<Identity> {
        check_name(name)?;
        let stem = format!("client-{name}");
        let id = Identity {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        if id.cert.exists() && id.key.exists() {
            return Ok(id);
        }
        let ca = Identity {
            cert: self.ca(),
            key: self.dir.join("ca.key"),
        };
        make_leaf(
            &self.dir,
            &stem,
            name,
            &format!("URI:urn:bbf:usp:id:{name}"),
            &ca,
        )
    }

    /// A client certificate `CN=name` from a different CA that nobody here trusts.
    pub fn foreign_identity(&self, name: &str) -> io::Result<Identity> {
        check_name(name)?;
        let foreign = self.dir.join("foreign");
        fs::create_dir_all(&foreign)?;
        let ca = if foreign.join("ca.pem").exists() {
            Identity {
                cert: foreign.join("ca.pem"),
                key: foreign.join("ca.key"),
            }
        } else {
            make_ca(&foreign, "ca", "untrusted test CA")?
        };
        make_leaf(
            &foreign,
            &format!("client-{name}"),
            name,
            "DNS:localhost",
            &ca,
        )
    }

    /// A TLS client configuration trusting the CA, presenting `identity` if given.
    pub fn client_tls(&self, identity: Option<&Identity>) -> io::Result<Arc<rustls::ClientConfig>> {
        Ok(tls::client_config(
            &self.ca(),
            identity.map(|i| (i.cert.as_path(), i.key.as_path())),
        )?)
    }

    /// A TLS server configuration with the server certificate, requiring client certificates
    /// from the CA when `mutual`.
    pub fn server_tls(&self, mutual: bool) -> io::Result<Arc<rustls::ServerConfig>> {
        let server = self.server();
        let ca = self.ca();
        Ok(tls::server_config(
            &server.cert,
            &server.key,
            mutual.then_some(ca.as_path()),
        )?)
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TestBroker {
    /// Makes the PKI in `dir` (created if missing) and starts mosquitto with the defaults.
    pub fn start(dir: &Path) -> io::Result<TestBroker> {
        TestBroker::start_with(dir, &BrokerOptions::default())
    }

    /// Like [`TestBroker::start`], with these options.
    pub fn start_with(dir: &Path, options: &BrokerOptions) -> io::Result<TestBroker> {
        let pki = Pki::new(dir)?;
        let mut last = None;
        // The free port may be taken between our probe and mosquitto's bind: try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let plain_port = if options.plain_listener {
                Some(free_port()?)
            } else {
                None
            };
            let mut broker = TestBroker {
                pki: pki.clone(),
                dir: dir.to_owned(),
                port,
                plain_port,
                child: None,
            };
            broker.write_conf(options)?;
            match broker.spawn() {
                Ok(()) => return Ok(broker),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("mosquitto did not start")))
    }

    fn write_conf(&self, o: &BrokerOptions) -> io::Result<()> {
        let d = self.dir.display();
        let mut conf = format!(
            "per_listener_settings true\npersistence false\nlog_dest file {d}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\nmax_inflight_messages {}\n",
            o.max_inflight
        );
        if o.debug_log {
            conf.push_str("log_type debug\n");
        }
        // As root, mosquitto would switch to user "mosquitto", who cannot read our keys.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            conf.push_str("user root\n");
        }
        if o.message_size_limit > 0 {
            conf.push_str(&format!("message_size_limit {}\n", o.message_size_limit));
        }
        let limits = |conf: &mut String| {
            conf.push_str(&format!("max_connections {}\n", o.max_connections));
            if o.max_packet_size > 0 {
                conf.push_str(&format!("max_packet_size {}\n", o.max_packet_size));
            }
        };
        conf.push_str(&format!(
            "\nlistener {} 127.0.0.1\nprotocol mqtt\nallow_anonymous false\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\nuse_identity_as_username true\n",
            self.port
        ));
        if o.usp_acl {
            let acl = usp_acl(&o.acl_controllers)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            fs::write(self.dir.join("acl"), acl)?;
            conf.push_str(&format!("acl_file {d}/acl\n"));
        }
        limits(&mut conf);
        if let Some(plain) = self.plain_port {
            conf.push_str(&format!(
                "\nlistener {plain} 127.0.0.1\nprotocol mqtt\nallow_anonymous true\n"
            ));
            limits(&mut conf);
        }
        fs::write(self.dir.join("mosquitto.conf"), conf)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {MOSQUITTO}: {e}")))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return Err(io::Error::other(format!(
                    "mosquitto exited ({status}): {} {}",
                    err.trim(),
                    self.log_tail()
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("mosquitto did not listen on {addr} within 10 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of mosquitto's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The address both listeners bind (loopback).
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TLS listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The plain listener's port, when `BrokerOptions::plain_listener` was set.
    pub fn plain_port(&self) -> Option<u16> {
        self.plain_port
    }

    /// The directory with the PKI, mosquitto's configuration and its log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The broker's PKI: its CA, server certificate and client identities.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The CA that signed the server and every identity.
    pub fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// A client certificate `CN=name` from the broker's CA (mosquitto takes the CN as the
    /// user name).
    pub fn identity(&self, name: &str) -> io::Result<Identity> {
        self.pki.identity(name)
    }

    /// A client certificate `CN=name` from a CA the broker does not trust.
    pub fn foreign_identity(&self, name: &str) -> io::Result<Identity> {
        self.pki.foreign_identity(name)
    }

    /// A TLS client configuration trusting the broker's CA, presenting `identity` if given.
    pub fn client_tls(&self, identity: Option<&Identity>) -> io::Result<Arc<rustls::ClientConfig>> {
        self.pki.client_tls(identity)
    }

    /// An MQTT configuration for this broker over TLS with identity `name`'s certificate,
    /// client id `client_id`, and quick reconnects (tests should not wait a minute).
    pub fn mqtt_config(&self, name: &str, client_id: &str) -> io::Result<MqttConfig> {
        let identity = self.identity(name)?;
        let mut config = MqttConfig::new(self.host(), self.port, client_id);
        config.tls = Some((self.client_tls(Some(&identity))?, self.host().to_owned()));
        config.backoff.min = Duration::from_millis(200);
        config.backoff.max = Duration::from_secs(2);
        config.connect_timeout = Duration::from_secs(10);
        Ok(config)
    }

    /// Stops mosquitto (SIGKILL: an abrupt broker loss, as a crash or a network cut looks).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts mosquitto again on the same ports and configuration.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        // The old socket may linger briefly; mosquitto sets SO_REUSEADDR, retry a little.
        let mut last = None;
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.unwrap_or_else(|| io::Error::other("mosquitto did not restart")))
    }

    /// Whether the mosquitto process is still alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

fn is_root() -> bool {
    // `id -u` avoids a libc dependency for this test-only helper.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{Event, MqttClient};

    /// The generated ACL: the fixed patterns, then one `user` block per controller with the one
    /// topic it may write; CNs that would break the file or the topic are refused by name.
    #[test]
    fn the_acl_lists_what_each_controller_may_write() {
        let acl = usp_acl(&[
            AclController::new("acs", ControllerTopic::AgentTopic),
            AclController::new("self::ops", ControllerTopic::IdentitySubTopic),
        ])
        .unwrap();
        assert!(acl.contains(USP_ACL_PATTERNS));
        assert!(!acl.contains("pattern write usp/agent/"), "{acl}");
        assert!(acl.ends_with(
            "\nuser acs\ntopic write usp/agent/+\n\nuser self::ops\ntopic write usp/agent/+/self::ops\n"
        ));
        for bad in ["", "a b", "a/b", "a+", "#", "x\ntopic write #"] {
            let err = usp_acl(&[AclController::new(bad, ControllerTopic::AgentTopic)]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let twice = vec![AclController::new("a", ControllerTopic::AgentTopic); 2];
        assert!(usp_acl(&twice).unwrap_err().contains("listed twice"));
    }

    /// A board connects to 10.0.2.2 and checks the certificate against that name: the same
    /// listener must pass that check (reached here through 127.0.0.1, as slirp does).
    #[test]
    fn the_server_certificate_is_valid_for_the_slirp_host() {
        let dir = std::env::temp_dir().join(format!("broker-slirp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let broker = TestBroker::start(&dir).expect("mosquitto");
        for name in [SLIRP_HOST, "127.0.0.1"] {
            let mut config = broker.mqtt_config("board", "board").unwrap();
            let identity = broker.identity("board").unwrap();
            config.tls = Some((broker.client_tls(Some(&identity)).unwrap(), name.into()));
            let (client, events) = MqttClient::start(config).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let connected = loop {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break false;
                };
                match events.recv_timeout(left) {
                    Ok(Event::Connected { .. }) => break true,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
            client.shutdown();
            assert!(connected, "TLS as {name} failed: {}", broker.log_tail());
        }
        // A name the certificate does not carry is refused: the check above can fail.
        let mut config = broker.mqtt_config("board", "board").unwrap();
        let identity = broker.identity("board").unwrap();
        config.tls = Some((
            broker.client_tls(Some(&identity)).unwrap(),
            "10.0.2.3".into(),
        ));
        let (client, events) = MqttClient::start(config).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(Event::Connected { .. }) => panic!("10.0.2.3 was accepted"),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        client.shutdown();
        drop(broker);
        let _ = fs::remove_dir_all(&dir);
    }
}
