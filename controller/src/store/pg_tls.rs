//! TLS to PostgreSQL, asked for the way libpq's URLs ask: `sslmode`, `sslrootcert` (the CA,
//! PEM), `sslcert` and `sslkey` (a client certificate). They are taken out of the URL here
//! (tokio-postgres knows neither `verify-ca`/`verify-full` nor the files) and settled against
//! the hosts the URL names; `connector` makes the rustls side.
//!
//! The modes: `disable` (plain), `require` (TLS; the chain checked only when `sslrootcert` is
//! given, as libpq does), `verify-ca` (TLS, the chain checked against `sslrootcert`),
//! `verify-full` (that and the host name). Not `prefer` or `allow`: they go plain whenever the
//! server, or anyone in between, declines TLS, so they protect nothing against the one who
//! would read the traffic. Without `sslmode`, a server on this machine (unix socket,
//! loopback) is reached plain and any other host with `verify-full`: a URL naming a remote
//! host never sends the password or the fleet in clear unless it says `sslmode=disable`.

pub mod connector;

use std::net::IpAddr;
use std::path::PathBuf;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;

use super::location::decode;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS; the chain checked against `sslrootcert` if given.
    Require,
    /// TLS, the chain checked against `sslrootcert`, whatever name the certificate has.
    VerifyCa,
    /// TLS, the chain checked against `sslrootcert` and the certificate naming the host.
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        match value {
            "disable" => Ok(Mode::Disable),
            "require" => Ok(Mode::Require),
            "verify-ca" => Ok(Mode::VerifyCa),
            "verify-full" => Ok(Mode::VerifyFull),
            "prefer" | "allow" => Err(format!(
                "sslmode={value} is not supported: it goes plain whenever the server or anyone \
                 in between declines TLS; say require, verify-ca or verify-full (or disable)"
            )),
            _ => Err(format!(
                "sslmode={value}: not one of disable, require, verify-ca, verify-full"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a URL.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    mode: Option<Mode>,
    rootcert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// How a connection goes, once settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The mode in force (the URL's or the default).
    pub mode: Mode,
    /// The CA file, when the chain is checked.
    pub rootcert: Option<PathBuf>,
    /// The client certificate and its key, when given.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where `url`'s parameters start: at the first `?` after the credentials (tokio-postgres
/// ends them at the first `@`, so a password may hold a `?`).
fn query_start(url: &str) -> Option<usize> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let after_creds = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    url[after_creds..].find('?').map(|i| after_creds + i)
}

impl Params {
    /// `url` without its TLS parameters, and them. A TLS parameter given twice, empty or
    /// badly escaped, or an unsupported mode, is an error naming it.
    pub fn take(url: &str) -> Result<(String, Params), String> {
        let Some(q) = query_start(url) else {
            return Ok((url.to_string(), Params::default()));
        };
        let mut params = Params::default();
        let mut kept = Vec::new();
        for pair in url[q + 1..].split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key).unwrap_or_default();
            let slot = match key.as_str() {
                "sslmode" | "sslrootcert" | "sslcert" | "sslkey" => key.as_str(),
                // Everything else is tokio-postgres's to read (and refuse).
                _ => {
                    kept.push(pair);
                    continue;
                }
            };
            let value = decode(value).ok_or_else(|| format!("{slot}: a bad %-escape"))?;
            if value.is_empty() {
                return Err(format!("{slot} is empty"));
            }
            let taken = match slot {
                "sslmode" => params.mode.replace(Mode::parse(&value)?).is_some(),
                "sslrootcert" => params.rootcert.replace(value.into()).is_some(),
                "sslcert" => params.cert.replace(value.into()).is_some(),
                _ => params.key.replace(value.into()).is_some(),
            };
            if taken {
                return Err(format!("{slot} is given twice"));
            }
        }
        let mut rest = url[..q].to_string();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Ok((rest, params))
    }

    /// The mode in force for a connection to `cfg`'s hosts, and what it needs; `cfg`'s own
    /// TLS mode set to match. Errors name the parameter that is missing or out of place.
    pub fn settle(self, cfg: &mut Config) -> Result<Settled, String> {
        let remote = remote_host(cfg);
        let mode = match self.mode {
            Some(m) => m,
            None if remote.is_some() || self.rootcert.is_some() => Mode::VerifyFull,
            None if self.cert.is_some() || self.key.is_some() => Mode::Require,
            None => Mode::Disable,
        };
        let name = mode.name();
        let client = match (self.cert, self.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("sslcert and sslkey go together".into()),
        };
        if mode == Mode::Disable {
            if self.rootcert.is_some() || client.is_some() {
                return Err(
                    "sslmode=disable: sslrootcert, sslcert and sslkey have no use without TLS"
                        .into(),
                );
            }
            cfg.ssl_mode(SslMode::Disable);
            return Ok(Settled {
                mode,
                rootcert: None,
                client: None,
            });
        }
        if let Some(socket) = cfg.get_hosts().iter().find_map(|h| match h {
            Host::Unix(p) => Some(p),
            Host::Tcp(_) => None,
        }) {
            return Err(format!(
                "sslmode={name}: host {} is a unix socket, which carries no TLS (leave sslmode \
                 out or say disable)",
                socket.display()
            ));
        }
        if self.rootcert.is_none() && matches!(mode, Mode::VerifyCa | Mode::VerifyFull) {
            return Err(match (self.mode, remote) {
                (None, Some(host)) => format!(
                    "{host} is another machine, so TLS is the default (sslmode=verify-full), \
                     which needs sslrootcert=FILE: the CA (PEM) that signed the server's \
                     certificate; sslmode=disable would send the password and the fleet's \
                     state in clear"
                ),
                _ => format!(
                    "sslmode={name} needs sslrootcert=FILE: the CA (PEM) that signed the \
                     server's certificate"
                ),
            });
        }
        cfg.ssl_mode(SslMode::Require);
        Ok(Settled {
            mode,
            rootcert: self.rootcert,
            client,
        })
    }
}

/// The first host of `cfg` that is not this machine (a unix socket, `localhost` or a loopback
/// address); with `hostaddr`, the addresses connected to are what counts.
fn remote_host(cfg: &Config) -> Option<String> {
    if !cfg.get_hostaddrs().is_empty() {
        return cfg
            .get_hostaddrs()
            .iter()
            .find(|a| !a.is_loopback())
            .map(IpAddr::to_string);
    }
    cfg.get_hosts().iter().find_map(|h| match h {
        Host::Unix(_) => None,
        Host::Tcp(name) => {
            let local =
                name == "localhost" || name.parse::<IpAddr>().is_ok_and(|a| a.is_loopback());
            (!local).then(|| name.clone())
        }
    })
}

#[cfg(test)]
mod tests;
