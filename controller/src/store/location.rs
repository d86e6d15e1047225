//! Where the store is, from the `--db` argument: a `postgres://` or `postgresql://` URL is a
//! PostgreSQL server, anything else a SQLite file. Shown (logs, errors) without a password.

use std::fmt;
use std::path::PathBuf;

/// A database the store can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (libpq's form).
    Postgres(String),
}

impl Location {
    /// What `--db ARG` names.
    pub fn parse(arg: &str) -> Location {
        if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            Location::Postgres(arg.to_string())
        } else {
            Location::Sqlite(PathBuf::from(arg))
        }
    }
}

impl From<&str> for Location {
    fn from(arg: &str) -> Location {
        Location::parse(arg)
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Sqlite(path)
    }
}

/// `s` with its `%XX` escapes decoded, as libpq's URLs are (`+` is itself); `None` for a bad
/// escape or bytes that are not UTF-8.
pub(super) fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let digit = |c: Option<u8>| (c? as char).to_digit(16);
            let (high, low) = (digit(bytes.next())?, digit(bytes.next())?);
            out.push((high * 16 + low) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the parameter named `key` (%-escaped or not) holds a password: libpq's `password`,
/// or `sslpassword` (the client key's, which the store refuses, but only after the URL is
/// shown).
fn is_password(key: &str) -> bool {
    decode(key).is_some_and(|k| k == "password" || k == "sslpassword")
}

/// `url` with the password (in the user part or a `password=` parameter) as `***`. The user
/// part ends at the last `@` before the query, not at the first `/`: a password may hold a
/// raw `/` (libpq wants it escaped, but an operator's typo must not print it); a database
/// name with an `@` is then hidden too, which errs on the safe side.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_at(url.find("://").map_or(0, |i| i + 3));
    let (before_query, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    let before_query = match before_query.rfind('@') {
        Some(at) => match before_query[..at].find(':') {
            Some(colon) => format!("{}:***{}", &before_query[..colon], &before_query[at..]),
            None => before_query.to_string(),
        },
        None => before_query.to_string(),
    };
    let query = match query.strip_prefix('?') {
        Some(query) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_password(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("?{}", query.join("&"))
        }
        None => String::new(),
    };
    format!("{scheme}{before_query}{query}")
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_selects_postgres_and_is_shown_without_its_password() {
        assert_eq!(
            Location::parse("fleet.db"),
            Location::Sqlite("fleet.db".into())
        );
        assert_eq!(
            Location::parse("/var/lib/postgres://x"),
            Location::Sqlite("/var/lib/postgres://x".into())
        );
        for (url, shown) in [
            (
                "postgres://ctl:s3cret@db.example:5432/fleet",
                "postgres://ctl:***@db.example:5432/fleet",
            ),
            (
                "postgresql://ctl:p@ss@h/fleet?password=s3cret&sslmode=disable",
                "postgresql://ctl:***@h/fleet?password=***&sslmode=disable",
            ),
            ("postgresql://ctl@h/fleet", "postgresql://ctl@h/fleet"),
            // A raw `/` (or `?`-free `@`) in the password still hides all of it.
            (
                "postgres://ctl:s3/cret@h/fleet",
                "postgres://ctl:***@h/fleet",
            ),
            (
                "postgres://ctl:a/s3cret@b@h:5432/fleet?sslmode=disable",
                "postgres://ctl:***@h:5432/fleet?sslmode=disable",
            ),
            ("postgres://h/fleet?x=1", "postgres://h/fleet?x=1"),
            // The TLS parameters are shown; a password among them, however spelled, is not.
            (
                "postgresql://ctl@h/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&\
                 pass%77ord=s3cret&sslkey=k.pem&sslpassword=s3cret&%70assword=s3cret",
                "postgresql://ctl@h/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&\
                 pass%77ord=***&sslkey=k.pem&sslpassword=***&%70assword=***",
            ),
        ] {
            let l = Location::parse(url);
            assert!(matches!(l, Location::Postgres(_)));
            assert_eq!(l.to_string(), shown);
            assert!(!l.to_string().contains("s3cret"));
        }
    }
}
