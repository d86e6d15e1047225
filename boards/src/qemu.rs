//! Building the QEMU command line that boots a board's firmware, and quoting it for a shell.

use crate::error::BoardError;
use crate::profile::Board;
use std::path::Path;

/// At most this many port forwards: each one is a listening socket on the host.
pub const MAX_HOST_FORWARDS: usize = 32;
/// Bound on extra kernel command-line text (Linux's own limit on most arches is 2048 bytes
/// or more; we stay under the smallest).
pub const MAX_APPEND_EXTRA: usize = 1024;

impl Board {
    /// The full QEMU argv (binary first) that boots `kernel` + `initrd` on this board with the
    /// console on stdio and user networking forwarding `127.0.0.1:host` to the board's `guest`
    /// TCP port (its WAN side) for each `(host, guest)` in `hostfwd`.
    ///
    /// A board whose profile has `[network]` LAN ports gets one more NIC per port, each on a
    /// user network of its own that stands in for the home; the host is the LAN client there,
    /// and `lan_udp` forwards `127.0.0.1:host` UDP to the router's LAN address, port `guest`, on
    /// the first of them (a client's DNS query). Not `restrict=on`: libslirp's restricted mode
    /// drops the guest's UDP, the replies to those forwards included (seen: the router sent
    /// every answer, none reached the host). The board routes only the LAN's own subnet there.
    pub fn qemu_command(
        &self,
        kernel: &Path,
        initrd: &Path,
        append_extra: &str,
        hostfwd: &[(u16, u16)],
        lan_udp: &[(u16, u16)],
    ) -> Result<Vec<String>, BoardError> {
        let qemu = self.qemu.as_ref().ok_or_else(|| BoardError::NotEmulated {
            board: self.name.clone(),
        })?;
        let kernel = path_arg("kernel", kernel)?;
        let initrd = path_arg("initrd", initrd)?;
        if append_extra.len() > MAX_APPEND_EXTRA {
            return Err(BoardError::argument(
                "append",
                format!("{} bytes, at most {MAX_APPEND_EXTRA}", append_extra.len()),
            ));
        }
        if append_extra.chars().any(char::is_control) {
            return Err(BoardError::argument(
                "append",
                "contains control characters (newlines would end the kernel command line)",
            ));
        }
        let netdev = netdev_arg(hostfwd)?;
        let lan = self.lan_netdevs(lan_udp)?;

        let mut append = format!("console={} panic=-1", self.serial);
        let extra = append_extra.trim();
        if !extra.is_empty() {
            append.push(' ');
            append.push_str(extra);
        }

        let mut argv: Vec<String> = vec![
            qemu.binary.clone(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-machine".into(),
            qemu.machine.clone(),
            "-cpu".into(),
            qemu.cpu.clone(),
            "-smp".into(),
            qemu.smp.to_string(),
            "-m".into(),
            qemu.memory_mib.to_string(),
            "-kernel".into(),
            kernel,
            "-initrd".into(),
            initrd,
            "-append".into(),
            append,
        ];
        // The NICs in interface order: the WAN (eth0), then each LAN port (eth1, ...).
        let mut netdevs = vec![netdev];
        let mut devices = vec![format!("{},netdev=n0", qemu.nic)];
        for (i, options) in lan.into_iter().enumerate() {
            let id = format!("lan{i}");
            netdevs.push(format!("user,id={id},{options}"));
            devices.push(format!("{},netdev={id}", qemu.nic));
        }
        // QEMU's virt machines hand out their virtio-mmio slots from the top (the first device
        // on the command line gets the highest address) and Linux names NICs in address order:
        // listed in reverse, the WAN's NIC is eth0 there too (seen: on qemu-virt-a53 eth0 was
        // the LAN port, and the WAN's address went to the LAN's user network).
        if is_virtio_mmio(&qemu.nic) {
            devices.reverse();
        }
        for netdev in netdevs {
            argv.extend(["-netdev".into(), netdev]);
        }
        for device in devices {
            argv.extend(["-device".into(), device]);
        }
        argv.extend(qemu.extra_args.iter().cloned());
        Ok(argv)
    }
}

impl Board {
    /// The options of each LAN port's user network (after `user,id=..,`): the LAN's subnet,
    /// the host's address in it (the first host address that is not the router's), and on the
    /// first port the UDP forwards to the router's LAN address.
    fn lan_netdevs(&self, lan_udp: &[(u16, u16)]) -> Result<Vec<String>, BoardError> {
        let Some(network) = self.network.as_ref().filter(|n| !n.lan_ports.is_empty()) else {
            if lan_udp.is_empty() {
                return Ok(Vec::new());
            }
            return Err(BoardError::argument(
                "lan_udp",
                format!("board {} has no LAN port to forward to", self.name),
            ));
        };
        let (router, prefix) = network
            .lan_address()
            .map_err(|m| BoardError::argument("network.lan_address", m))?;
        let net = u32::from(router) & !(u32::MAX >> prefix);
        let client = if net + 1 == u32::from(router) {
            net + 2
        } else {
            net + 1
        };
        let net = std::net::Ipv4Addr::from(net);
        let client = std::net::Ipv4Addr::from(client);
        check_forwards("lan_udp", lan_udp)?;
        let mut first = format!("net={net}/{prefix},host={client}");
        for &(host, guest) in lan_udp {
            first.push_str(&format!(",hostfwd=udp:127.0.0.1:{host}-{router}:{guest}"));
        }
        let rest = format!("net={net}/{prefix},host={client}");
        let mut all = vec![first];
        all.extend(std::iter::repeat_n(rest, network.lan_ports.len() - 1));
        Ok(all)
    }
}

fn path_arg(what: &str, path: &Path) -> Result<String, BoardError> {
    let text = path.to_str().ok_or_else(|| {
        BoardError::argument(what, format!("{} is not valid UTF-8", path.display()))
    })?;
    if text.is_empty() {
        return Err(BoardError::argument(what, "empty path"));
    }
    Ok(text.to_string())
}

/// `user,id=n0,hostfwd=tcp:127.0.0.1:H-:G,...`: forwards bind to loopback only, so a test board
/// is never reachable from the network.
/// A virtio device on virtio-mmio (`virtio-net-device`), not on PCI (`virtio-net-pci`).
fn is_virtio_mmio(device: &str) -> bool {
    let name = device.split(',').next().unwrap_or_default();
    name.starts_with("virtio-") && name.ends_with("-device")
}

fn netdev_arg(hostfwd: &[(u16, u16)]) -> Result<String, BoardError> {
    check_forwards("hostfwd", hostfwd)?;
    let mut netdev = String::from("user,id=n0");
    for &(host, guest) in hostfwd {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    Ok(netdev)
}

/// At most [`MAX_HOST_FORWARDS`], no port 0, no host port twice.
fn check_forwards(what: &str, forwards: &[(u16, u16)]) -> Result<(), BoardError> {
    if forwards.len() > MAX_HOST_FORWARDS {
        return Err(BoardError::argument(
            what,
            format!("{} forwards, at most {MAX_HOST_FORWARDS}", forwards.len()),
        ));
    }
    for (i, &(host, guest)) in forwards.iter().enumerate() {
        if host == 0 || guest == 0 {
            return Err(BoardError::argument(
                what,
                format!("{host}:{guest}: port 0 cannot be forwarded"),
            ));
        }
        if forwards[..i].iter().any(|&(h, _)| h == host) {
            return Err(BoardError::argument(
                what,
                format!("host port {host} is forwarded twice"),
            ));
        }
    }
    Ok(())
}

/// Quotes one argument for a POSIX shell: plain words stay as they are, anything else goes in
/// single quotes with embedded single quotes written as `'\''`.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./,:=+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Joins an argv into one shell command line.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("virt,gic-version=3"), "virt,gic-version=3");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn netdev_rejects_bad_forwards() {
        assert_eq!(netdev_arg(&[]).unwrap(), "user,id=n0");
        assert_eq!(
            netdev_arg(&[(2222, 22), (8080, 80)]).unwrap(),
            "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80"
        );
        assert!(netdev_arg(&[(0, 22)]).is_err());
        assert!(netdev_arg(&[(2222, 0)]).is_err());
        assert!(netdev_arg(&[(2222, 22), (2222, 23)]).is_err());
        let many: Vec<(u16, u16)> = (1..=33).map(|p| (p, p)).collect();
        assert!(netdev_arg(&many).is_err());
    }
}
