//! TLS to PostgreSQL (`pg_tls`) against the test server with `ssl=on` and certificates made
//! here (`cpevisor_usp::broker::Pki`, the openssl CLI): each mode accepts what it should and
//! refuses the rest with an error that says why.

use std::path::{Path, PathBuf};

use cpevisor_usp::broker::{Identity, Pki};

use super::super::test_postgres::{ServerTls, TestPostgres};
use super::{dep, Db, Location, Store};

/// A fresh directory for one test's certificates, removed after.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("cpv-pgtls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with `id`'s certificate, its database `fleet` made (plain, on loopback).
fn server(id: &Identity, client_ca: Option<&Path>) -> TestPostgres {
    let server = TestPostgres::start_tls(&ServerTls {
        cert: &id.cert,
        key: &id.key,
        client_ca,
    });
    server.create_database("fleet");
    server
}

/// `fleet` on `server` with these parameters.
fn at(server: &TestPostgres, params: &str) -> Location {
    Location::parse(&format!("{}?{params}", server.url("fleet")))
}

/// Whether `loc`'s connection is TLS, as the server sees it.
fn over_tls(loc: &Location) -> bool {
    Db::open(loc)
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
        .unwrap()
}

fn refused(loc: &Location) -> String {
    match Store::open(loc) {
        Ok(_) => panic!("{loc} connected"),
        Err(e) => e,
    }
}

#[test]
fn verify_full_with_the_servers_ca_connects_and_the_store_works() {
    let dir = Dir::new("full");
    let pki = Pki::new(&dir.0).unwrap();
    let server = server(&pki.server(), None);
    let ca = pki.ca();
    let loc = at(
        &server,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let mut s = Store::open(&loc).unwrap();
    let id = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    drop(s);
    let s = Store::open(&loc).unwrap();
    let d = s.deployments(false).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].id, d[0].version.as_str()), (id, "1.0"));
    assert!(over_tls(&loc));
    // The CA alone asks for verify-full; `require` takes it too, as libpq.
    assert!(over_tls(&at(
        &server,
        &format!("sslrootcert={}", ca.display())
    )));
    assert!(over_tls(&at(&server, "sslmode=require")));
    // `disable` is plain even where the server has TLS.
    assert!(!over_tls(&at(&server, "sslmode=disable")));
}

#[test]
fn a_server_whose_certificate_another_ca_signed_is_refused() {
    let dir = Dir::new("wrong-ca");
    let pki = Pki::new(&dir.0).unwrap();
    let other = Pki::new(&dir.0.join("other")).unwrap();
    let server = server(&pki.server(), None);
    for mode in ["verify-full", "verify-ca", "require"] {
        let loc = at(
            &server,
            &format!("sslmode={mode}&sslrootcert={}", other.ca().display()),
        );
        let e = refused(&loc);
        assert!(
            e.contains("TLS handshake")
                && e.contains(&format!(
                    "no CA of sslrootcert {} signed the server's certificate",
                    other.ca().display()
                )),
            "{mode}: {e}"
        );
        assert!(e.contains("127.0.0.1"), "{e}");
    }
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_which_verify_ca_takes() {
    let dir = Dir::new("name");
    let pki = Pki::new(&dir.0).unwrap();
    // From the same CA, naming no 127.0.0.1 (a client certificate serves: serverAuth too).
    let elsewhere = pki.identity("db.elsewhere.example").unwrap();
    let server = server(&elsewhere, None);
    let ca = pki.ca().display().to_string();
    let e = refused(&at(
        &server,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let not_named = "invalid peer certificate: certificate not valid for name \"127.0.0.1\"";
    assert!(e.contains("TLS handshake") && e.contains(not_named), "{e}");
    let e = refused(&at(&server, &format!("sslrootcert={ca}")));
    assert!(e.contains(not_named), "the default is verify-full: {e}");
    let loc = at(&server, &format!("sslmode=verify-ca&sslrootcert={ca}"));
    Store::open(&loc).unwrap();
    assert!(over_tls(&loc));
}

#[test]
fn tls_modes_refuse_a_server_without_tls_and_disable_goes_plain() {
    let server = TestPostgres::start();
    server.create_database("fleet");
    let dir = Dir::new("plain");
    let pki = Pki::new(&dir.0).unwrap();
    for params in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={}", pki.ca().display()),
    ] {
        let e = refused(&at(&server, &params));
        assert!(e.contains("server does not support TLS"), "{params}: {e}");
    }
    let e = refused(&at(&server, "sslmode=prefer"));
    assert!(e.contains("sslmode=prefer is not supported"), "{e}");
    let loc = at(&server, "sslmode=disable");
    Store::open(&loc).unwrap();
    assert!(!over_tls(&loc));
}

#[test]
fn a_client_certificate_is_presented_when_the_server_asks() {
    let dir = Dir::new("client");
    let pki = Pki::new(&dir.0).unwrap();
    let server = server(&pki.server(), Some(&pki.ca()));
    // Its CN is the role (pg_hba `cert`); its key private as a secret must be.
    let me = pki.identity(super::super::test_postgres::USER).unwrap();
    std::fs::set_permissions(&me.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let ca = pki.ca().display().to_string();
    let e = refused(&at(&server, &format!("sslrootcert={ca}")));
    assert!(e.contains("certificate"), "{e}");
    let loc = at(
        &server,
        &format!(
            "sslrootcert={ca}&sslcert={}&sslkey={}",
            me.cert.display(),
            me.key.display()
        ),
    );
    Store::open(&loc).unwrap();
    assert!(over_tls(&loc));
}
