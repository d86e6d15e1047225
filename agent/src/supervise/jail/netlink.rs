//! Just enough rtnetlink for the jail's link: a veth pair with its peer created straight in the
//! jail's network namespace, a bridge, link up / master, an IPv4 address and a default route.
//! Every request asks for an ACK; replies are read into a fixed buffer with a receive timeout,
//! so a silent or confused kernel cannot hang or overrun the runner.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;
/// Replies to our requests are one error/ACK message; 8 KiB also holds an echoed request.
const REPLY_BUF: usize = 8192;

/// A request under construction: header, fixed part, then attributes (nested ones tracked by
/// the offsets of their open headers).
struct Msg {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set by the socket
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: the kernel
        Msg {
            buf,
            open: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// `struct ifinfomsg` for `index` (0: by name or new), setting `flags` within `change`.
    fn ifinfo(mut self, index: u32, flags: u32, change: u32) -> Msg {
        self.buf.push(libc::AF_UNSPEC as u8);
        self.buf.push(0);
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Msg {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.open.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads one timeval that lives for the whole call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request and waits for its ACK; the kernel's error comes back as an io::Error.
    fn request(&mut self, msg: Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel (port 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and the address are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; REPLY_BUF];
        // Replies to other sequence numbers (none expected) are skipped, a bounded number of times.
        for _ in 0..16 {
            // SAFETY: recv writes at most `reply.len()` bytes into `reply`.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no netlink reply within 5 s",
                    ));
                }
                return Err(e);
            }
            match parse_ack(&reply[..n as usize], seq)? {
                Some(0) => return Ok(()),
                Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
                None => continue,
            }
        }
        Err(io::Error::other("no netlink ACK for our request"))
    }

    /// Creates a veth pair: `host` here, `peer` with address `peer_mac` directly in the network
    /// namespace of `pid`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns_pid: u32,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, host);
        m.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "veth");
        m.begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        // The peer attribute carries its own ifinfomsg before its attributes.
        m.buf.extend_from_slice(&[0u8; 16]);
        m.attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_ADDRESS, &peer_mac)
            .attr_u32(IFLA_NET_NS_PID, peer_netns_pid);
        m.end().end().end();
        self.request(m)
    }

    /// Creates bridge `name`; fails if a link of that name exists.
    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        self.request(m)
    }

    /// Brings a link up, optionally enslaving it to `master` (a bridge's index).
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let mut m = Msg::new(RTM_NEWLINK, 0).ifinfo(index, up, up);
        if let Some(master) = master {
            m.attr_u32(IFLA_MASTER, master);
        }
        self.request(m)
    }

    /// Deletes the link with interface index `index`.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.request(Msg::new(RTM_DELLINK, 0).ifinfo(index, 0, 0))
    }

    /// Adds `ip/prefix_len` to the link; an address it has already is fine.
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix_len, 0, 0]);
        m.buf.extend_from_slice(&index.to_ne_bytes());
        let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(ip) | host_bits);
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets())
            .attr(IFA_BROADCAST, &broadcast.octets());
        match self.request(m) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        m.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0, // dst_len: default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            0, // RT_SCOPE_UNIVERSE
            RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr_u32(RTA_OIF, index);
        self.request(m)
    }
}

/// Finds the error/ACK for `seq` in a reply datagram: Some(errno) (0 = ACK), None when the
/// datagram holds nothing for us. Truncated or malformed replies are errors.
fn parse_ack(mut data: &[u8], seq: u32) -> io::Result<Option<i32>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    while data.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap_or_default());
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap_or_default());
        if len < NLMSG_HDR || len > data.len() {
            return Err(bad("truncated reply"));
        }
        if kind == NLMSG_ERROR && msg_seq == seq {
            if len < NLMSG_HDR + 4 {
                return Err(bad("short error message"));
            }
            let err = i32::from_ne_bytes(
                data[NLMSG_HDR..NLMSG_HDR + 4]
                    .try_into()
                    .unwrap_or_default(),
            );
            return Ok(Some(err.checked_neg().unwrap_or(libc::EINVAL)));
        }
        let step = (len + 3) & !3;
        data = data.get(step..).unwrap_or(&[]);
    }
    Ok(None)
}

/// The index of a link in the calling thread's namespace, None when there is none.
pub fn link_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_the_right_lengths() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE).ifinfo(0, 0, 0);
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        // header 16 + ifinfomsg 16, then LINKINFO (4) holding KIND (4 + "veth\0" padded to 8).
        let linkinfo_len = u16::from_ne_bytes(b[32..34].try_into().unwrap());
        assert_eq!(linkinfo_len, 4 + 12, "nested length includes the padding");
        assert_eq!(b.len(), 32 + 4 + 12);
    }

    #[test]
    fn acks_errors_and_garbage() {
        let mut ack = Vec::new();
        ack.extend_from_slice(&20u32.to_ne_bytes());
        ack.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&0u16.to_ne_bytes());
        ack.extend_from_slice(&9u32.to_ne_bytes());
        ack.extend_from_slice(&0u32.to_ne_bytes());
        ack.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(parse_ack(&ack, 9).unwrap(), Some(libc::EEXIST));
        assert_eq!(parse_ack(&ack, 8).unwrap(), None);
        ack[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert!(parse_ack(&ack, 9).is_err());
        assert_eq!(parse_ack(&[1, 2, 3], 9).unwrap(), None);
    }

    #[test]
    fn missing_links_have_no_index() {
        assert!(link_index("lo").is_some());
        assert!(link_index("cpv-no-such").is_none());
        assert!(link_index("bad\0name").is_none());
    }
}
