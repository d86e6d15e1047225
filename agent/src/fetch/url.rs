//! The subset of URLs a download accepts: `http://` and `https://`, no user:password.

use std::fmt;

use crate::fault::{Fault, FaultCode};
use crate::store::clip;

/// Longest URL accepted, bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The URL schemes a download accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (the package signature still protects the content).
    Http,
    /// HTTPS, checked against the firmware's CA bundle and the configured CA.
    Https,
}

/// A parsed download URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// Port: given, or 80/443 by scheme.
    pub port: u16,
    /// Path and query, starting with '/'.
    pub target: String,
}

fn invalid(url: &str, why: &str) -> Fault {
    Fault::new(
        FaultCode::InvalidArguments,
        format!("URL {:?}: {why}", clip(url)),
    )
}

impl Url {
    /// Parses `text`: `http` or `https`, no user:password, at most `MAX_URL_LEN` bytes.
    pub fn parse(text: &str) -> Result<Url, Fault> {
        if text.len() > MAX_URL_LEN {
            return Err(invalid(text, &format!("longer than {MAX_URL_LEN} bytes")));
        }
        if text.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(invalid(
                text,
                "contains spaces, control or non-ASCII characters",
            ));
        }
        let (scheme, rest) = if let Some(r) = text.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (Scheme::Https, r)
        } else {
            return Err(invalid(text, "only http:// and https:// are supported"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            // Credentials in URLs end up in logs and events; TR-181 wants them refused.
            return Err(Fault::new(
                FaultCode::InvalidArguments,
                "URL carries user:password credentials, which are not accepted",
            ));
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port_text) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| invalid(text, "unclosed '[' in host"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(invalid(text, "junk after IPv6 address")),
            };
            if v6[..end].parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid(text, "bad IPv6 address"));
            }
            (v6[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(invalid(text, "no host"));
        }
        if !host.contains(':')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(invalid(text, "bad character in host name"));
        }
        let port = match port_text {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(text, "bad port"))?,
        };
        Ok(Url {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// Resolves a `Location` header against this URL (absolute, or absolute-path).
    pub fn join(&self, location: &str) -> Result<Url, Fault> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with('/') && !location.starts_with("//") {
            let mut u = self.clone();
            u.target = location.to_string();
            Url::parse(&u.to_string())
        } else {
            Err(invalid(location, "unsupported redirect target"))
        }
    }

    /// `Host:` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        if default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.host_header(), self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_targets() {
        let u = Url::parse("https://Example.com:8443/a/b.cpkg?x=1").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.target.as_str()),
            (Scheme::Https, "example.com", 8443, "/a/b.cpkg?x=1")
        );
        let u = Url::parse("http://[::1]/p").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(u.to_string(), "http://[::1]/p");
        assert_eq!(Url::parse("http://h?q").unwrap().target, "/?q");
        assert_eq!(u.join("/other").unwrap().target, "/other");
    }

    #[test]
    fn refuses_credentials_and_bad_urls() {
        for bad in [
            "http://user:pw@host/x",
            "https://user@host/x",
            "ftp://host/x",
            "http:///x",
            "http://host:0/x",
            "http://host:99999/x",
            "http://ho st/x",
            "http://[::1/x",
        ] {
            let err = Url::parse(bad).unwrap_err();
            assert_eq!(err.code, FaultCode::InvalidArguments, "{bad}");
        }
        assert!(Url::parse("http://u:p@h/")
            .unwrap_err()
            .message
            .contains("user:password"));
    }
}
