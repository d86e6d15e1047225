//! Forgets the kernel's connection-tracking entries of flows that new rules should take.
//!
//! NAT is decided on a flow's first packet. A LAN client that asked the router's port 53 while
//! no app intercepted it (the filter stopped, or not yet installed) has an entry without
//! destination NAT, and as long as it keeps asking from the same source port (a stub resolver,
//! QEMU's user network) every query matches that entry and is never DNAT'd to the app. So once
//! an app's rules are in, the entries of the ports it claims that carry no NAT at all are
//! deleted: the next packet makes a new entry, which the new rules see. Entries with NAT (a
//! flow already DNAT'd, or masqueraded out of the WAN) are left alone; deleting an un-NATed one
//! is harmless even when nothing would change for it, as its next packet makes the same entry.
//!
//! ctnetlink (`NETLINK_NETFILTER`, IPv4): a dump of the table, then one delete per matching
//! entry by its original tuple, sent back as the kernel gave it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `IPS_SRC_NAT | IPS_DST_NAT`.
const IPS_NAT_MASK: u32 = (1 << 4) | (1 << 5);
/// Attribute type bits (without NLA_F_NESTED and NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A dump's reads; the kernel sends a few entries per message.
const RECV_BUF: usize = 32 << 10;
/// Most entries deleted in one call: a router's table holds up to ~65k, and only the flows to
/// the claimed ports without NAT are taken.
const MAX_MATCHES: usize = 4096;
/// Each read waits at most this long (the kernel answers at once; this is the deadline).
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// An IP protocol number and a destination port: what an app's rules claim.
pub type Claim = (u8, u16);

/// Deletes the IPv4 entries to one of `claims` (protocol, destination port) that carry no NAT;
/// returns how many. Errors name the step; an entry already gone counts as deleted.
pub fn forget_unnated(claims: &[Claim]) -> io::Result<usize> {
    if claims.is_empty() {
        return Ok(0);
    }
    let sock = Socket::open()?;
    let tuples = sock.dump(claims)?;
    let mut deleted = 0;
    for tuple in &tuples {
        match sock.delete(tuple) {
            Ok(()) => deleted += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => deleted += 1,
            Err(e) => return Err(io::Error::new(e.kind(), format!("conntrack delete: {e}"))),
        }
    }
    Ok(deleted)
}

/// Every IPv4 entry as (protocol, destination port, has NAT): for tests and diagnosis.
pub fn list() -> io::Result<Vec<(u8, u16, bool)>> {
    let sock = Socket::open()?;
    let mut out = Vec::new();
    sock.walk(|entry| {
        if let Some((proto, port)) = entry.proto_port() {
            out.push((proto, port, entry.status & IPS_NAT_MASK != 0));
        }
        out.len() < MAX_MATCHES
    })?;
    Ok(out)
}

/// One entry of a dump: its original tuple attribute (as sent) and its status bits.
struct Entry<'a> {
    orig: &'a [u8],
    status: u32,
}

impl Entry<'_> {
    /// The original tuple's protocol number and destination port, when it has ports.
    fn proto_port(&self) -> Option<(u8, u16)> {
        let proto = attrs(&self.orig[4..])
            .find(|(t, _)| *t == CTA_TUPLE_PROTO)?
            .1;
        let mut num = None;
        let mut port = None;
        for (t, v) in attrs(proto) {
            match t {
                CTA_PROTO_NUM => num = v.first().copied(),
                CTA_PROTO_DST_PORT if v.len() >= 2 => port = Some(u16::from_be_bytes([v[0], v[1]])),
                _ => {}
            }
        }
        Some((num?, port?))
    }
}

/// The attributes in `buf`: (type without flags, payload); stops at the first malformed one.
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

/// Whole attributes (header included) of one message's payload, by type.
fn raw_attr(buf: &[u8], want: u16) -> Option<&[u8]> {
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == want {
            return Some(&rest[..len]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            // `time_t` is deprecated in libc on musl (it is to become 64-bit on 32-bit CPUs).
            tv_sec: READ_TIMEOUT.as_secs() as _,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads `tv`, a live timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    /// Sends one ctnetlink message of `kind` with `flags` and the attributes `attrs`.
    fn send(&self, kind: u16, flags: u16, attrs: &[u8]) -> io::Result<()> {
        let len = 16 + 4 + attrs.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: the kernel
                                                    // struct nfgenmsg: family, version 0, resource id 0.
        msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        msg.extend_from_slice(attrs);
        // SAFETY: send(2) reads `msg`, a live buffer of the length given.
        let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Dumps the table, calling `each` per entry until it returns false or the dump ends.
    fn walk(&self, mut each: impl FnMut(&Entry) -> bool) -> io::Result<()> {
        self.send(IPCTNL_MSG_CT_GET, NLM_F_DUMP, &[])?;
        let mut buf = vec![0u8; RECV_BUF];
        let mut wanted = true;
        loop {
            let n = self.recv(&mut buf)?;
            let mut rest = &buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::other("conntrack dump: malformed message"));
                }
                let body = &rest[16..len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    _ if wanted && body.len() >= 4 => {
                        let payload = &body[4..];
                        let status = attrs(payload)
                            .find(|(t, _)| *t == CTA_STATUS)
                            .and_then(|(_, v)| v.get(..4))
                            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        if let Some(orig) = raw_attr(payload, CTA_TUPLE_ORIG) {
                            // Read on to the end even when done: the socket is reused.
                            wanted = each(&Entry { orig, status });
                        }
                    }
                    _ => {}
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }

    /// The original tuples of the entries to `claims` without NAT.
    fn dump(&self, claims: &[Claim]) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.walk(|entry| {
            let claimed = entry.proto_port().is_some_and(|c| claims.contains(&c));
            if claimed && entry.status & IPS_NAT_MASK == 0 {
                out.push(entry.orig.to_vec());
            }
            out.len() < MAX_MATCHES
        })
        .map_err(|e| io::Error::new(e.kind(), format!("conntrack dump: {e}")))?;
        Ok(out)
    }

    /// Deletes the entry whose original tuple attribute is `orig`; waits for the kernel's ACK.
    fn delete(&self, orig: &[u8]) -> io::Result<()> {
        self.send(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, orig)?;
        let mut buf = [0u8; 1024];
        let n = self.recv(&mut buf)?;
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
            return Ok(());
        }
        Err(io::Error::other("conntrack delete: no ACK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn an_entrys_protocol_and_port_are_read_from_its_original_tuple() {
        let proto = [
            attr(CTA_PROTO_NUM, &[17]),
            attr(2, &1234u16.to_be_bytes()),
            attr(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
        ]
        .concat();
        let ip = attr(
            1 | 0x8000,
            &[attr(1, &[192, 168, 1, 2]), attr(2, &[192, 168, 1, 1])].concat(),
        );
        let orig = attr(
            CTA_TUPLE_ORIG | 0x8000,
            &[ip, attr(CTA_TUPLE_PROTO | 0x8000, &proto)].concat(),
        );
        let status = attr(CTA_STATUS, &8u32.to_be_bytes());
        let payload = [status, orig.clone()].concat();
        let found = raw_attr(&payload, CTA_TUPLE_ORIG).unwrap();
        assert_eq!(found, &orig[..]);
        let entry = Entry {
            orig: found,
            status: 8,
        };
        assert_eq!(entry.proto_port(), Some((17, 53)));
        // A truncated attribute ends the walk instead of reading past the buffer.
        assert_eq!(attrs(&orig[..orig.len() - 3]).count(), 0);
        assert!(raw_attr(&[8, 0, 1, 0], CTA_TUPLE_ORIG).is_none());
    }
}
