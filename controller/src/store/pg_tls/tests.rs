//! The TLS parameters: taken out of the URL, refused with their name when wrong, settled
//! against the hosts (the default), and their files read as the rules say.

use std::path::Path;

use super::connector::PgTls;
use super::*;

/// `url`'s parameters settled, as `Pg::connect` does.
fn settle(url: &str) -> Result<(Settled, Config), String> {
    let (rest, params) = Params::take(url)?;
    let mut cfg: Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    let settled = params.settle(&mut cfg)?;
    Ok((settled, cfg))
}

fn mode(url: &str) -> Mode {
    settle(url).unwrap_or_else(|e| panic!("{url}: {e}")).0.mode
}

fn refused(url: &str) -> String {
    match settle(url) {
        Ok(s) => panic!("{url} was taken: {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_tls_parameters_leave_the_url_and_the_others_stay() {
    let (rest, p) = Params::take(
        "postgresql://u:pa?ss@db.example/fleet?application_name=x&sslmode=verify-ca&\
         sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3&sslcert=c.pem&ssl%6Bey=k.pem",
    )
    .unwrap();
    assert_eq!(
        rest,
        "postgresql://u:pa?ss@db.example/fleet?application_name=x&connect_timeout=3"
    );
    assert_eq!(
        p,
        Params {
            mode: Some(Mode::VerifyCa),
            rootcert: Some("/etc/ca.pem".into()),
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
        }
    );
    let (rest, p) = Params::take("postgresql://u@h/fleet?sslmode=disable").unwrap();
    assert_eq!(
        (rest.as_str(), p.mode),
        ("postgresql://u@h/fleet", Some(Mode::Disable))
    );
    let (rest, p) = Params::take("postgresql://u:p?w@h/fleet").unwrap();
    assert_eq!(
        (rest.as_str(), p),
        ("postgresql://u:p?w@h/fleet", Params::default())
    );
}

#[test]
fn bad_tls_parameters_are_refused_with_their_name() {
    for (url, says) in [
        (
            "postgresql://h/f?sslmode=prefer",
            "sslmode=prefer is not supported",
        ),
        (
            "postgresql://h/f?sslmode=allow",
            "sslmode=allow is not supported",
        ),
        (
            "postgresql://h/f?sslmode=verify_full",
            "sslmode=verify_full: not one of",
        ),
        ("postgresql://h/f?sslmode=", "sslmode is empty"),
        (
            "postgresql://h/f?sslmode=require&sslmode=disable",
            "sslmode is given twice",
        ),
        (
            "postgresql://h/f?sslrootcert=a&sslrootcert=b",
            "sslrootcert is given twice",
        ),
        (
            "postgresql://h/f?sslrootcert=%zz",
            "sslrootcert: a bad %-escape",
        ),
        ("postgresql://h/f?sslkey=%ff", "sslkey: a bad %-escape"),
    ] {
        let e = Params::take(url).unwrap_err();
        assert!(e.contains(says), "{url}: {e}");
    }
    for (url, says) in [
        (
            "postgresql://h/f?sslmode=verify-full",
            "sslmode=verify-full needs sslrootcert=FILE",
        ),
        (
            "postgresql://127.0.0.1/f?sslmode=verify-ca",
            "sslmode=verify-ca needs sslrootcert=FILE",
        ),
        (
            "postgresql://h/f?sslmode=require&sslcert=c.pem",
            "sslcert and sslkey go together",
        ),
        (
            "postgresql://h/f?sslmode=disable&sslrootcert=ca.pem",
            "sslmode=disable: sslrootcert, sslcert and sslkey have no use",
        ),
        (
            "postgresql://%2Frun%2Fpostgresql/f?sslmode=require",
            "host /run/postgresql is a unix socket",
        ),
    ] {
        let e = refused(url);
        assert!(e.contains(says), "{url}: {e}");
    }
    // tokio-postgres's own parameters are still its to refuse.
    let e = refused("postgresql://h/f?sslcrl=x");
    assert!(e.contains("sslcrl"), "{e}");
}

#[test]
fn without_sslmode_this_machine_is_plain_and_any_other_verify_full() {
    for url in [
        "postgresql://u@127.0.0.1:5432/f",
        "postgresql://u@127.1.2.3/f",
        "postgresql://u@localhost/f",
        "postgresql://u@[::1]:5433/f",
        "postgresql://u@%2Frun%2Fpostgresql/f",
        "postgresql://u@db.example/f?hostaddr=127.0.0.1",
    ] {
        let (s, cfg) = settle(url).unwrap();
        assert_eq!(s.mode, Mode::Disable, "{url}");
        assert_eq!(cfg.get_ssl_mode(), SslMode::Disable, "{url}");
    }
    for url in [
        "postgresql://u@db.example/f",
        "postgresql://u@10.1.2.3/f",
        "postgresql://u@127.0.0.1,db.example/f",
        "postgresql://u@localhost/f?hostaddr=10.1.2.3",
    ] {
        let e = refused(url);
        assert!(
            e.contains("is another machine, so TLS is the default (sslmode=verify-full)")
                && e.contains("sslrootcert=FILE"),
            "{url}: {e}"
        );
        let (s, cfg) = settle(&format!("{url}{}sslrootcert=ca.pem", sep(url))).unwrap();
        assert_eq!(s.mode, Mode::VerifyFull, "{url}");
        assert_eq!(cfg.get_ssl_mode(), SslMode::Require, "{url}");
        assert_eq!(s.rootcert, Some("ca.pem".into()));
        assert_eq!(
            mode(&format!("{url}{}sslmode=disable", sep(url))),
            Mode::Disable
        );
    }
    // A CA or a client certificate named asks for TLS on this machine too; `require` needs
    // no CA.
    assert_eq!(
        mode("postgresql://127.0.0.1/f?sslrootcert=ca.pem"),
        Mode::VerifyFull
    );
    assert_eq!(
        mode("postgresql://127.0.0.1/f?sslcert=c.pem&sslkey=k.pem"),
        Mode::Require
    );
    let (s, cfg) = settle("postgresql://db.example/f?sslmode=require").unwrap();
    assert_eq!((s.mode, s.rootcert), (Mode::Require, None));
    assert_eq!(cfg.get_ssl_mode(), SslMode::Require);
}

fn sep(url: &str) -> &'static str {
    if url.contains('?') {
        "&"
    } else {
        "?"
    }
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpv-pgtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_files_are_read_as_the_rules_say() {
    let dir = scratch("files");
    let pki = cpevisor_usp::broker::Pki::new(&dir).unwrap();
    let client = pki.identity("cpevisor").unwrap();
    let tls = |rootcert: &Path, key: &Path| {
        PgTls::new(&Settled {
            mode: Mode::VerifyFull,
            rootcert: Some(rootcert.into()),
            client: Some((client.cert.clone(), key.into())),
        })
        .map(|_| ())
    };
    std::fs::set_permissions(
        &client.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    tls(&pki.ca(), &client.key).unwrap();
    let e = tls(&dir.join("absent.pem"), &client.key).unwrap_err();
    assert!(
        e.starts_with("sslrootcert: CA file") && e.contains("absent.pem"),
        "{e}"
    );
    let e = tls(&client.key, &client.key).unwrap_err();
    assert!(
        e.contains("sslrootcert") && e.contains("holds no certificate"),
        "{e}"
    );
    // The key is a secret: private, not a symlink, a key.
    let link = dir.join("key-link");
    std::os::unix::fs::symlink(&client.key, &link).unwrap();
    let e = tls(&pki.ca(), &link).unwrap_err();
    assert!(
        e.starts_with("sslkey ") && e.contains("is a symlink"),
        "{e}"
    );
    std::fs::set_permissions(
        &client.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let e = tls(&pki.ca(), &client.key).unwrap_err();
    assert!(e.starts_with("sslkey ") && e.contains("chmod 600"), "{e}");
    let not_a_key = dir.join("not-a-key");
    std::fs::write(&not_a_key, "hello").unwrap();
    std::fs::set_permissions(
        &not_a_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let e = tls(&pki.ca(), &not_a_key).unwrap_err();
    assert!(e.contains("no usable private key"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
