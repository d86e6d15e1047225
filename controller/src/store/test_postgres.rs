//! A PostgreSQL server for tests (this crate's, and other packages' with the `test-postgres`
//! feature): Debian's server binaries (`make setup` installs them), a fresh cluster in a
//! temporary directory, listening on a free port of 127.0.0.1 and on a unix socket in that
//! directory, run as `nobody` when the tests run as root (the server refuses root), stopped
//! and removed on drop. With [`TestPostgres::start_tls`] it also speaks TLS (`ssl=on`) with
//! the certificate a test made, and may ask TLS clients for certificates of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::db::Db;
use super::location::Location;

/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long it may take to stop after SIGINT (fast shutdown) before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// The role the tests connect as (trusted, no password: the server listens on loopback only).
pub const USER: &str = "cpevisor";

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// The test server's TLS: its certificate chain and key (PEM files, copied into its
/// directory), and, when `client_ca` is given, the CA whose client certificates TLS
/// connections must present (pg_hba `cert`, the certificate's CN being the role; plain ones
/// stay trusted).
#[derive(Debug, Clone, Copy)]
pub struct ServerTls<'a> {
    /// The server's certificate (PEM).
    pub cert: &'a Path,
    /// Its key (PEM).
    pub key: &'a Path,
    /// The CA of the client certificates asked for, if any.
    pub client_ca: Option<&'a Path>,
}

/// A running test server.
pub struct TestPostgres {
    dir: PathBuf,
    child: Child,
    port: u16,
}

/// The newest PostgreSQL server's binaries in Debian's layout.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin: `make setup` installs it \
             (Debian package postgresql)"
        ),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` with `args`, as `nobody` when we are root; killed (SIGINT: the server's fast
/// shutdown) if this thread ends without stopping it (a test that panicked past its Drop, a
/// test binary killed).
fn command(program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    if is_root() {
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    }
    c.arg("--pdeathsig=INT").arg(program).args(args);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Copies the server's certificate, key and client CA into `dir` (the key private to the
/// server's user, as the server insists), adds the pg_hba line that asks TLS clients for a
/// certificate when there is a client CA; the server's `-c` arguments for them.
fn enable_tls(dir: &Path, data: &Path, tls: &ServerTls<'_>) -> Vec<String> {
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod the test server's TLS file");
        if is_root() {
            let ok = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(&to)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown nobody:nogroup {}", to.display());
        }
        format!("{}", to.display())
    };
    let mut args = vec![
        "-c".to_string(),
        "ssl=on".to_string(),
        "-c".to_string(),
        format!("ssl_cert_file={}", copy(tls.cert, "server.crt")),
        "-c".to_string(),
        format!("ssl_key_file={}", copy(tls.key, "server.key")),
    ];
    if let Some(ca) = tls.client_ca {
        args.push("-c".to_string());
        args.push(format!("ssl_ca_file={}", copy(ca, "client-ca.crt")));
        // The first line that matches decides: TLS connections need a certificate.
        let hba = data.join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).expect("the test server's pg_hba.conf");
        std::fs::write(&hba, format!("hostssl all all 127.0.0.1/32 cert\n{rest}"))
            .expect("the test server's pg_hba.conf");
    }
    args
}

impl TestPostgres {
    /// Creates a cluster and starts its server; panics with the server's log if it does not
    /// come up.
    pub fn start() -> TestPostgres {
        TestPostgres::start_with(None)
    }

    /// Like [`TestPostgres::start`], the server also taking TLS connections (`ssl=on`).
    pub fn start_tls(tls: &ServerTls<'_>) -> TestPostgres {
        TestPostgres::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls<'_>>) -> TestPostgres {
        let bin = bin_dir();
        let mut dir = std::env::temp_dir().join(format!(
            "cpv-pg-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the test server's directory");
        if is_root() {
            let ok = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown nobody:nogroup {}", dir.display());
        }
        let data = dir.join("data");
        let data_s = data.to_str().expect("a UTF-8 temporary directory");
        let out = command(
            &bin.join("initdb"),
            &[
                "-D",
                data_s,
                "-U",
                USER,
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .expect("running initdb (through setpriv, util-linux)");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tls_args = tls.map(|t| enable_tls(&dir, &data, t)).unwrap_or_default();
        // A port found free can be taken before the server binds it: a few tries.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = dir.join("postgres.log");
            let log_file = std::fs::File::create(&log).expect("the server's log");
            let port_s = port.to_string();
            let child = command(
                &bin.join("postgres"),
                &[
                    "-D",
                    data_s,
                    "-p",
                    &port_s,
                    "-k",
                    dir.to_str().unwrap_or_default(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    // A test's data need not survive a crash of the machine.
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ]
                .into_iter()
                .chain(tls_args.iter().map(String::as_str))
                .collect::<Vec<_>>(),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the server's log"))
            .stderr(log_file)
            .spawn()
            .expect("starting postgres");
            let mut server = TestPostgres { dir, child, port };
            if server.wait_ready() {
                return server;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            server.stop();
            dir = std::mem::take(&mut server.dir);
            if !last_log.contains("could not bind") {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("the PostgreSQL test server did not start:\n{last_log}");
    }

    /// Whether the server accepts connections before [`START_DEADLINE`] (false: it exited or
    /// never answered).
    fn wait_ready(&mut self) -> bool {
        let until = Instant::now() + START_DEADLINE;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if Db::open(&self.location("postgres")).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Database `name` as a store location.
    pub fn location(&self, name: &str) -> Location {
        Location::Postgres(self.url(name))
    }

    /// A new empty database named `name`.
    pub fn create_database(&self, name: &str) -> Location {
        let db = Db::open(&self.location("postgres")).expect("the test server");
        db.batch(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        self.location(name)
    }

    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // Exited (and reaped: its pid may be another process's by now).
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
