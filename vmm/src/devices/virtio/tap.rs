//! Host side of virtio-net: a backend trait, and its implementation on an existing tap device.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

/// Linux's limit on interface names, terminating NUL excluded.
const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

impl Tap {
    /// Attaches to the tap named `name`. The tap must exist already (the agent or the
    /// operator creates it, e.g. `ip tuntap add NAME mode tap`): TUNSETIFF would otherwise
    /// create a new one and leave it behind.
    pub fn open(name: &str) -> Result<Self, SetupError> {
        let err = |what: &str, source| SetupError {
            what: format!("tap device {name:?}: {what}"),
            source,
        };
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        if name.is_empty()
            || name.len() > IFNAME_MAX
            || name == "."
            || name == ".."
            || name
                .bytes()
                .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        {
            return Err(err("not a valid interface name", invalid()));
        }
        let sys = Path::new("/sys/class/net").join(name);
        if !sys.exists() {
            return Err(err(
                "no such interface",
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        if !sys.join("tun_flags").exists() {
            return Err(err("is not a tun/tap interface", invalid()));
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
            return Err(err("cannot attach (TUNSETIFF)", io::Error::last_os_error()));
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
        if Path::new("/sys/class/net/lo").exists() {
            let err = Tap::open("lo").err().unwrap();
            assert!(err.to_string().contains("not a tun/tap"), "{err}");
        }
    }
}
