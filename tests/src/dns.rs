//! A DNS client for the host side of the tests: one A query over UDP, with a deadline, and the
//! IPv4 addresses of the answer. Enough to ask a board's LAN address through a forwarded port
//! what a name resolves to; no recursion, no TCP, no other record types.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

/// What a query got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE of the reply (0 NOERROR, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// The A records of the answer section, in order.
    pub addresses: Vec<Ipv4Addr>,
}

/// Largest reply read (a plain DNS message over UDP without EDNS).
const MAX_REPLY: usize = 512;

/// The wire form of a recursive A query for `name` with id `id`.
pub fn a_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    Ok(q)
}

/// Parses a reply to [`a_query`] with id `id`: its RCODE and A records.
pub fn parse_reply(id: u16, msg: &[u8]) -> Result<Answer, String> {
    let short = || format!("reply of {} bytes is cut short", msg.len());
    if msg.len() < 12 {
        return Err(short());
    }
    if u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Err("not a reply to our query".into());
    }
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at).ok_or_else(short)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at).ok_or_else(short)?;
        let fixed = msg.get(at..at + 10).ok_or_else(short)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if rtype == 1 && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(Answer { rcode, addresses })
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// Asks `server` (`127.0.0.1:port`) for `name`'s A records, resending every second until a
/// reply comes or `timeout` passes (UDP through QEMU's user network can drop the first packet
/// while the board's ARP settles).
pub fn resolve(server: &str, name: &str, timeout: Duration) -> Result<Answer, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp socket: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("udp connect {server}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut id: u16 = 0x5a00;
    let mut buf = [0u8; MAX_REPLY];
    let mut last = String::from("no reply");
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        let query = a_query(id, name)?;
        if let Err(e) = sock.send(&query) {
            last = format!("send: {e}");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // Replies to earlier tries carry older ids: read on until ours or the timeout.
        while let Ok(n) = sock.recv(&mut buf) {
            match parse_reply(id, &buf[..n]) {
                Ok(answer) => return Ok(answer),
                Err(e) => last = e,
            }
        }
    }
    Err(format!("{name} via {server}: {last} within {timeout:?}"))
}

/// How long after `since` `server` first answered an A query for `name`, asking every 50 ms
/// until `timeout` from one socket. Any answer to any of the tries counts (their ids share a
/// high byte): a round trip through an emulated board takes longer than the 50 ms between
/// tries, and a late answer still comes from a server that was up.
pub fn first_answer(
    server: &str,
    name: &str,
    since: Instant,
    timeout: Duration,
) -> Result<Duration, String> {
    const TRIES: u8 = 0x60;
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp socket: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("udp connect {server}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; MAX_REPLY];
    let mut n_try: u8 = 0;
    while since.elapsed() < timeout {
        let tried = Instant::now();
        n_try = n_try.wrapping_add(1);
        let id = u16::from_be_bytes([TRIES, n_try]);
        let _ = sock.send(&a_query(id, name)?);
        if let Ok(n) = sock.recv(&mut buf) {
            let theirs = u16::from_be_bytes([buf[0], buf.get(1).copied().unwrap_or(0)]);
            if n >= 12 && buf[0] == TRIES && parse_reply(theirs, &buf[..n]).is_ok() {
                return Ok(since.elapsed());
            }
        }
        // A refusal (ICMP port unreachable) returns at once: keep the pace at one try per 50 ms.
        if let Some(rest) = Duration::from_millis(50).checked_sub(tried.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Err(format!("{server} did not answer {name} within {timeout:?}"))
}

/// Answers per second from `server` for `name` over `run`, keeping up to `window` queries in
/// flight (a query unanswered for a second is given up and replaced). Returns answers/s.
pub fn answers_per_second(
    server: &str,
    name: &str,
    run: Duration,
    window: usize,
) -> Result<f64, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp socket: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("udp connect {server}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; MAX_REPLY];
    let mut in_flight: Vec<(u16, Instant)> = Vec::with_capacity(window);
    let mut next: u16 = 0;
    let mut answered = 0u64;
    let started = Instant::now();
    while started.elapsed() < run {
        in_flight.retain(|(_, sent)| sent.elapsed() < Duration::from_secs(1));
        while in_flight.len() < window {
            next = next.wrapping_add(1);
            sock.send(&a_query(next, name)?)
                .map_err(|e| format!("send to {server}: {e}"))?;
            in_flight.push((next, Instant::now()));
        }
        while let Ok(n) = sock.recv(&mut buf) {
            if n < 12 {
                continue;
            }
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            if let Some(at) = in_flight.iter().position(|(q, _)| *q == id) {
                in_flight.swap_remove(at);
                answered += 1;
            }
        }
    }
    Ok(answered as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips_through_a_reply() {
        let q = a_query(7, "allowed.example").unwrap();
        assert_eq!(&q[12..21], b"\x07allowed\x07");
        // The same message turned into a reply with one compressed A answer.
        let mut r = q.clone();
        r[2] |= 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
        let a = parse_reply(7, &r).unwrap();
        assert_eq!(a.rcode, 0);
        assert_eq!(a.addresses, vec![Ipv4Addr::new(10, 9, 8, 7)]);
        assert!(parse_reply(8, &r).is_err(), "another id");
        assert!(parse_reply(7, &r[..r.len() - 2]).is_err(), "cut short");
        assert!(a_query(1, "a..b").is_err());
    }
}
