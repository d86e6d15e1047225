//! Host side of virtio-net: a backend trait, and its implementation on an existing tap device.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::SetupError;

/// Size of `struct virtio_net_hdr_v1` (modern devices always carry `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// Where guest frames go and host frames come from. Each `send`/`recv` moves one whole frame
/// prefixed by a `VNET_HDR_LEN`-byte virtio-net header. The fd must be non-blocking.
pub trait NetBackend: Send {
    /// The fd polled for incoming frames.
    fn as_raw_fd(&self) -> RawFd;
    /// Reads one frame; `WouldBlock` when none is queued.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
}

/// An existing tap interface, attached with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap named `name`. The tap must exist already (the agent or the
    /// operator creates it, e.g. `ip tuntap add NAME mode tap`): TUNSETIFF would otherwise
    /// create a new one and leave it behind.
    pub fn open(name: &str) -> Result<Self, SetupError> {
        let err = |what: &str, source| SetupError {
            what: format!("tap device {name:?}: {what}"),
            source,
        };
        if let Err(e) = cpevisor_types::IfName::parse(name) {
            return Err(err(
                &format!("not a valid interface name: {e}"),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        // Looked up in the calling thread's network namespace (sysfs may show another one).
        let c_name = CString::new(name).map_err(|_| {
            err(
                "not a valid interface name",
                io::Error::from(io::ErrorKind::InvalidInput),
            )
        })?;
        // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(err(
                "no such interface",
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| err("cannot open /dev/net/tun", e))?;

        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and updates) one `struct ifreq`; `ifr` is valid for both
        // and outlives the call; the fd is open.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            let e = io::Error::last_os_error();
            // The kernel answers EINVAL for an existing interface that is not a tap.
            let what = if e.raw_os_error() == Some(libc::EINVAL) {
                "is not a tap interface (or is multi-queue)"
            } else {
                "cannot attach (TUNSETIFF)"
            };
            return Err(err(what, e));
        }
        let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(err(
                "cannot set the virtio-net header size (TUNSETVNETHDRSZ)",
                io::Error::last_os_error(),
            ));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// The tap's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl NetBackend for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tap_names_itself() {
        let err = Tap::open("cpevnotap0").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("cpevnotap0") && text.contains("no such interface"),
            "{text}"
        );
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "a/b", "sixteen-chars-xx", "..", "with space"] {
            let err = Tap::open(name).err().unwrap();
            assert!(
                err.to_string().contains("not a valid interface name"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_non_tap_interface_is_refused() {
        // Every network namespace has a loopback interface; opening the tun device needs
        // root, so without it the error is about /dev/net/tun instead.
        let err = Tap::open("lo").err().unwrap().to_string();
        assert!(
            err.contains("is not a tap interface") || err.contains("/dev/net/tun"),
            "{err}"
        );
    }

    /// Against a real tap, named by `CPEVISOR_TEST_TAP` (the test needs root and a tap; run
    /// it in a private network namespace, see the command below). Skipped when unset:
    /// `unshare -n sh -c 'ip tuntap add cpevtest0 mode tap && CPEVISOR_TEST_TAP=cpevtest0 \
    ///   cargo test -p cpevisor-vmm tap::tests::real_tap'`
    #[test]
    fn real_tap_attaches_and_exchanges_frames() {
        let Ok(name) = std::env::var("CPEVISOR_TEST_TAP") else {
            eprintln!("CPEVISOR_TEST_TAP unset: skipping the real-tap test");
            return;
        };
        let _tap_lock = crate::devices::virtio::testing::REAL_TAP
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut tap = Tap::open(&name).unwrap();
        assert_eq!(tap.name(), name);
        let mut buf = [0u8; 2048];
        // Down interface, nothing queued: a non-blocking read must not block.
        let err = tap.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // A frame from the guest: virtio-net header + broadcast Ethernet frame. On a down tap
        // the kernel drops it, but the write itself must take the header format we set.
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend_from_slice(&[0u8; 46]);
        match tap.send(&frame) {
            Ok(n) => assert_eq!(n, frame.len()),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        }
        let Ok(neighbor) = std::env::var("CPEVISOR_TEST_TAP_NEIGHBOR") else {
            return;
        };
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(b"x", (neighbor.as_str(), 9)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match tap.recv(&mut buf) {
                // header, then dst MAC, src MAC, ethertype ARP
                Ok(n) if n > VNET_HDR_LEN + 14 && buf[VNET_HDR_LEN + 12..][..2] == [0x08, 0x06] => {
                    assert_eq!(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 6], &[0xff; 6]);
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no ARP request seen");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("tap read: {e}"),
            }
        }
    }
}
