//! Host name resolution in Rust: a static glibc binary has no NSS, so `getaddrinfo` cannot be
//! relied on for names on a router (the device's musl build would have one; this one is the same
//! on every C library). Order: IP literal, `/etc/hosts`, then DNS over UDP to the
//! `nameserver`s of `/etc/resolv.conf` (A records, then AAAA).

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Config files are small; reading is bounded anyway.
const MAX_CONFIG_FILE: u64 = 64 << 10;
const MAX_NAMESERVERS: usize = 3;
const MAX_DNS_RESPONSE: usize = 1232;
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

fn read_small(path: &str) -> String {
    let mut text = String::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(MAX_CONFIG_FILE).read_to_string(&mut text);
    }
    text
}

/// Why a host name has no address: the last failure of the lookup.
#[derive(Debug)]
pub enum ResolveError {
    /// No nameserver to ask gave an answer (the host is in no config file either).
    NoNameserver(String),
    /// The name exists but has no A or AAAA record.
    NoRecords(String),
    /// The query to `server` failed.
    Dns { server: IpAddr, source: DnsError },
}

/// One DNS query's failure.
#[derive(Debug)]
pub enum DnsError {
    /// A label is empty or longer than 63 bytes.
    BadName(String),
    /// The query would be over 300 bytes.
    NameTooLong(String),
    Malformed,
    /// The server answered with an error code other than NXDOMAIN.
    Rcode(u8),
    Io(io::Error),
    /// Only datagrams with another query id came back.
    NoMatchingAnswer,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NoNameserver(host) => write!(f, "no nameserver answered for {host}"),
            ResolveError::NoRecords(host) => write!(f, "{host} has no address records"),
            ResolveError::Dns { server, source } => write!(f, "DNS {server}: {source}"),
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::BadName(host) => write!(f, "bad host name {host:?}"),
            DnsError::NameTooLong(host) => write!(f, "host name too long: {host:?}"),
            DnsError::Malformed => f.write_str("malformed DNS response"),
            DnsError::Rcode(rcode) => write!(f, "DNS error rcode {rcode}"),
            DnsError::Io(e) => write!(f, "{e}"),
            DnsError::NoMatchingAnswer => f.write_str("no matching DNS answer"),
        }
    }
}

impl std::error::Error for ResolveError {}
impl std::error::Error for DnsError {}

impl From<io::Error> for DnsError {
    fn from(e: io::Error) -> Self {
        DnsError::Io(e)
    }
}

/// Addresses for `host`, or the reason there are none.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let from_hosts = hosts_lookup(&read_small(HOSTS), host);
    if !from_hosts.is_empty() {
        return Ok(from_hosts
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    if host == "localhost" {
        return Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]);
    }
    let servers = nameservers(&read_small(RESOLV_CONF));
    let mut last_error = ResolveError::NoNameserver(host.to_string());
    for qtype in [QTYPE_A, QTYPE_AAAA] {
        for server in &servers {
            match dns_query(*server, host, qtype) {
                Ok(ips) if !ips.is_empty() => {
                    return Ok(ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect())
                }
                Ok(_) => last_error = ResolveError::NoRecords(host.to_string()),
                Err(source) => {
                    last_error = ResolveError::Dns {
                        server: *server,
                        source,
                    }
                }
            }
        }
    }
    Err(last_error)
}

fn hosts_lookup(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect()
}

/// At most MAX_NAMESERVERS, as glibc: a fixed list on the stack.
fn nameservers(text: &str) -> heapless::Vec<IpAddr, MAX_NAMESERVERS> {
    let mut out = heapless::Vec::new();
    let listed = text.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == "nameserver").then_some(())?;
        // Drop a zone suffix such as fe80::1%eth0: std cannot parse it.
        w.next()?.split('%').next()?.parse::<IpAddr>().ok()
    });
    for ip in listed {
        if out.push(ip).is_err() {
            break; // the rest are ignored
        }
    }
    if out.is_empty() {
        out.push(Ipv4Addr::LOCALHOST.into())
            .expect("an empty list has room");
    }
    out
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

fn encode_query(id: u16, host: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(18 + host.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(host.to_string()));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    if q.len() > 300 {
        return Err(DnsError::NameTooLong(host.to_string()));
    }
    Ok(q)
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)? as usize;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l <= 63 => pos += 1 + l,
            _ => return None,
        }
    }
}

fn be16(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

fn parse_response(msg: &[u8], id: u16, qtype: u16) -> Result<Vec<IpAddr>, DnsError> {
    let bad = || DnsError::Malformed;
    if msg.len() < 12 || be16(msg, 0) != Some(id) || msg[2] & 0x80 == 0 {
        return Err(bad());
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN
        rcode => return Err(DnsError::Rcode(rcode)),
    }
    let qd = be16(msg, 4).ok_or_else(bad)?;
    let an = be16(msg, 6).ok_or_else(bad)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos).ok_or_else(bad)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = skip_name(msg, pos).ok_or_else(bad)?;
        let rtype = be16(msg, pos).ok_or_else(bad)?;
        let rdlen = be16(msg, pos + 8).ok_or_else(bad)? as usize;
        let data = msg.get(pos + 10..pos + 10 + rdlen).ok_or_else(bad)?;
        match (rtype, qtype, data.len()) {
            (QTYPE_A, QTYPE_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (QTYPE_AAAA, QTYPE_AAAA, 16) => {
                let b: [u8; 16] = data.try_into().map_err(|_| bad())?;
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {} // CNAMEs and others: the resolver already followed them
        }
        pos += 10 + rdlen;
    }
    Ok(out)
}

fn dns_query(server: IpAddr, host: &str, qtype: u16) -> Result<Vec<IpAddr>, DnsError> {
    let mut id = [0u8; 2];
    // An unpredictable id makes spoofed answers harder; fall back to the clock if needed.
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        id = (t as u16).to_be_bytes();
    }
    let id = u16::from_be_bytes(id);
    let query = encode_query(id, host, qtype)?;
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect((server, 53))?;
    sock.set_read_timeout(Some(DNS_TIMEOUT))?;
    sock.send(&query)?;
    let mut buf = [0u8; MAX_DNS_RESPONSE];
    // Ignore stray datagrams with another id, a bounded number of times.
    for _ in 0..4 {
        let n = sock.recv(&mut buf)?;
        if n >= 2 && be16(&buf, 0) == Some(id) {
            return parse_response(&buf[..n], id, qtype);
        }
    }
    Err(DnsError::NoMatchingAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_conf_parsing() {
        let hosts = "127.0.0.1 localhost\n10.0.2.2 updates.example  # host\n::1 ip6-localhost\n";
        assert_eq!(
            hosts_lookup(hosts, "UPDATES.example"),
            vec!["10.0.2.2".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(hosts, "other").is_empty());
        let conf = "search lan\nnameserver 10.0.2.3\nnameserver fe80::1%eth0\n";
        assert_eq!(nameservers(conf).len(), 2);
        assert_eq!(nameservers("")[..], [IpAddr::from(Ipv4Addr::LOCALHOST)]);
        // More than MAX_NAMESERVERS: the first ones are kept, the rest ignored.
        let conf = "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n\
                    nameserver 192.0.2.4\n";
        let kept: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        assert_eq!(nameservers(conf)[..], kept[..]);
    }

    #[test]
    fn decodes_an_answer_with_compression() {
        let q = encode_query(0x1234, "a.example", QTYPE_A).unwrap();
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2; // two answers: a CNAME-like record and an A record
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        assert_eq!(
            parse_response(&r, 0x1234, QTYPE_A).unwrap(),
            vec![IpAddr::from([192, 0, 2, 7])]
        );
        assert!(matches!(
            parse_response(&r[..r.len() - 2], 0x1234, QTYPE_A),
            Err(DnsError::Malformed)
        ));
        assert!(parse_response(&r, 0x9999, QTYPE_A).is_err());
        let mut refused = q.clone();
        refused[2] = 0x81;
        refused[3] = 0x85;
        assert_eq!(
            parse_response(&refused, 0x1234, QTYPE_A)
                .unwrap_err()
                .to_string(),
            "DNS error rcode 5"
        );
        assert!(matches!(
            encode_query(1, "a..example", QTYPE_A),
            Err(DnsError::BadName(_))
        ));
        assert_eq!(resolve("192.0.2.1", 80).unwrap()[0].port(), 80);
    }
}
