//! What the jail runner is told to do: one JSON file written by the agent (`JailBackend`) and
//! read by `cpevisord jail-exec`. Everything in it is checked again by the runner, so a damaged
//! or hand-written spec gives a clear error instead of a half-built jail.

use cpevisor_types::IfName;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest spec file the runner reads.
pub const MAX_SPEC_BYTES: u64 = 64 * 1024;
/// Same bounds as the package config's `command`.
pub const MAX_ARGS: usize = 64;
/// Longest argument or environment entry, bytes.
pub const MAX_ARG_BYTES: usize = 1024;
/// Most environment entries.
pub const MAX_ENV: usize = 32;
const MAX_PATH_BYTES: usize = 1024;

/// The spec file the agent writes for `cpevisord jail-exec` (JSON, unknown fields refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// The EU id: the jail's hostname and the name in every error.
    pub eu_id: String,
    /// Extracted rootfs directory, mounted read-only as `/`; with `root_image`, the empty
    /// directory the image is mounted on first.
    pub rootfs: PathBuf,
    /// The app's root as a read-only erofs image (a blob in the store), loop-mounted on
    /// `rootfs` by the runner (`root`); None: `rootfs` is an extracted tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_image: Option<PathBuf>,
    /// The app's persistent data directory, mounted read-write at `/data`.
    pub data_dir: PathBuf,
    /// The app's capped data volume (an ext4 image), mounted on `data_dir` first (`volume`);
    /// None: `data_dir` as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<PathBuf>,
    /// Argv of the app inside the jail (an absolute path in the rootfs first).
    pub command: Vec<String>,
    /// `KEY=value` entries of the app's environment.
    pub env: Vec<String>,
    /// Size of the jail's `/tmp` (tmpfs pages are charged to the app's memory cgroup).
    pub tmp_size_mib: u32,
    /// cgroup the runner joins before creating the jail, so no jail process starts outside it.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// The app's link; None: only loopback.
    #[serde(default)]
    pub net: Option<JailNet>,
    /// Host uid and gid that the jail's 0 maps to in its own user namespace (`userns`);
    /// None: no user namespace, the app is host root without capabilities.
    #[serde(default)]
    pub host_id: Option<u32>,
}

/// A veth pair: `host_if` in the host namespace on `bridge`, `eth0` in the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailNet {
    /// Host bridge the veth joins.
    pub bridge: String,
    /// The app's gateway: an address the bridge gets (and keeps, when it has it already), or,
    /// `on_lan`, the router's LAN address the bridge has already.
    pub gateway: Ipv4Addr,
    /// Prefix length of the app's network (16 for `a.b.0.0/16`).
    pub prefix_len: u8,
    /// Host-side name of the veth.
    pub host_if: String,
    /// The app's address on `eth0`.
    pub app_ip: Ipv4Addr,
    /// `bridge` is the router's LAN (a bridged app): the firmware made and addressed it, so the
    /// runner neither creates it nor adds an address to it.
    #[serde(default)]
    pub on_lan: bool,
}

impl JailNet {
    /// The MAC of the app's `eth0`: locally administered, with the app's IPv4 address in its
    /// last four bytes. Stable across restarts and updates of the app, so neighbour entries
    /// the host and the LAN already hold for the address stay right: with a random MAC, the
    /// router's REACHABLE entry kept pointing at the previous jail's interface after a restart,
    /// and the bridge flooded the app's traffic out of the LAN ports until it expired.
    pub fn app_mac(&self) -> [u8; 6] {
        let [a, b, c, d] = self.app_ip.octets();
        [0x02, 0x00, a, b, c, d]
    }
}

/// The interface name the app sees.
pub const JAIL_IF: &str = "eth0";

fn check_path(what: &str, p: &Path) -> Result<(), String> {
    let bytes = p.as_os_str().len();
    if !p.is_absolute() || bytes > MAX_PATH_BYTES || p.as_os_str().to_string_lossy().contains('\0')
    {
        return Err(format!(
            "{what}: {} must be an absolute path of at most {MAX_PATH_BYTES} bytes",
            p.display()
        ));
    }
    Ok(())
}

fn check_strings(what: &str, items: &[String], max: usize) -> Result<(), String> {
    if items.len() > max {
        return Err(format!("{what}: {} entries, at most {max}", items.len()));
    }
    for (i, s) in items.iter().enumerate() {
        if s.len() > MAX_ARG_BYTES || s.contains('\0') {
            return Err(format!(
                "{what}[{i}]: at most {MAX_ARG_BYTES} bytes and no NUL"
            ));
        }
    }
    Ok(())
}

impl JailSpec {
    /// Checks every field again in the runner: bounds, absolute paths, interface names.
    pub fn validate(&self) -> Result<(), String> {
        if self.eu_id.is_empty()
            || self.eu_id.len() > 64
            || !self
                .eu_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(format!(
                "eu_id: {:?} must be 1-64 of [A-Za-z0-9._-]",
                self.eu_id
            ));
        }
        check_path("rootfs", &self.rootfs)?;
        check_path("data_dir", &self.data_dir)?;
        if let Some(v) = &self.root_image {
            check_path("root_image", v)?;
        }
        if let Some(v) = &self.data_volume {
            check_path("data_volume", v)?;
        }
        if let Some(cg) = &self.cgroup {
            check_path("cgroup", cg)?;
        }
        if let Some(id) = self.host_id {
            super::userns::check_host_id(id)?;
        }
        match self.command.first() {
            None => return Err("command: empty (a jail app needs a command)".into()),
            Some(prog) if !prog.starts_with('/') => {
                return Err(format!(
                    "command[0]: {prog:?} must be an absolute path inside the rootfs"
                ))
            }
            Some(_) => {}
        }
        check_strings("command", &self.command, MAX_ARGS)?;
        check_strings("env", &self.env, MAX_ENV)?;
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(format!("env: {bad:?} is not KEY=value"));
        }
        if !(1..=4096).contains(&self.tmp_size_mib) {
            return Err(format!(
                "tmp_size_mib: {} not in 1..4096",
                self.tmp_size_mib
            ));
        }
        if let Some(net) = &self.net {
            for (what, name) in [("net.bridge", &net.bridge), ("net.host_if", &net.host_if)] {
                IfName::parse(name).map_err(|e| format!("{what}: {name:?}: {e}"))?;
            }
            if !(8..=30).contains(&net.prefix_len) {
                return Err(format!("net.prefix_len: {} not in 8..30", net.prefix_len));
            }
            let mask = u32::MAX << (32 - u32::from(net.prefix_len));
            let (gw, app) = (u32::from(net.gateway), u32::from(net.app_ip));
            if gw & mask != app & mask || gw == app {
                return Err(format!(
                    "net: app {} and gateway {} must be distinct addresses of one /{}",
                    net.app_ip, net.gateway, net.prefix_len
                ));
            }
        }
        Ok(())
    }

    /// Reads and validates a spec file: only a regular file that root or we own (not through
    /// a symlink, never waiting on a FIFO), as the runner is root and the path is an argument.
    pub fn load(path: &Path) -> Result<JailSpec, String> {
        let text = cpevisor_sandbox::files::read_regular(path, MAX_SPEC_BYTES)
            .map_err(|e| e.to_string())?;
        let spec: JailSpec =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        spec.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> JailSpec {
        JailSpec {
            eu_id: "eu-1".into(),
            rootfs: "/apps/a/rootfs".into(),
            data_dir: "/apps/a_data".into(),
            root_image: None,
            data_volume: None,
            command: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            tmp_size_mib: 8,
            cgroup: None,
            net: Some(JailNet {
                bridge: "br-lan".into(),
                gateway: Ipv4Addr::new(10, 100, 0, 1),
                prefix_len: 16,
                host_if: "cpv-eu-1".into(),
                app_ip: Ipv4Addr::new(10, 100, 0, 6),
                on_lan: false,
            }),
            host_id: Some(100_001),
        }
    }

    #[test]
    fn accepts_a_good_spec_and_names_what_is_wrong() {
        assert_eq!(sample().validate(), Ok(()));
        type Breaker = fn(&mut JailSpec);
        let cases: Vec<(Breaker, &str)> = vec![
            (|s| s.eu_id = "eu/1".into(), "eu_id"),
            (|s| s.rootfs = "rel/rootfs".into(), "rootfs"),
            (
                |s| s.root_image = Some("rel/root.erofs".into()),
                "root_image",
            ),
            (|s| s.command.clear(), "command: empty"),
            (|s| s.command[0] = "sh".into(), "command[0]"),
            (|s| s.command = vec!["/x".into(); 65], "command: 65"),
            (|s| s.command.push("a\0b".into()), "command[3]"),
            (|s| s.env.push("NOEQUALS".into()), "env"),
            (|s| s.tmp_size_mib = 0, "tmp_size_mib"),
            (|s| s.host_id = Some(0), "host_id"),
            (
                |s| s.net.as_mut().unwrap().bridge = "a-very-long-bridge-name".into(),
                "net.bridge",
            ),
            // The old rule here let "." and ".." through.
            (
                |s| s.net.as_mut().unwrap().bridge = "..".into(),
                "net.bridge",
            ),
            (
                |s| s.net.as_mut().unwrap().host_if = ".".into(),
                "net.host_if",
            ),
            (
                |s| s.net.as_mut().unwrap().prefix_len = 31,
                "net.prefix_len",
            ),
            (
                |s| s.net.as_mut().unwrap().app_ip = Ipv4Addr::new(10, 101, 0, 6),
                "must be distinct addresses of one /16",
            ),
        ];
        for (break_it, expect) in cases {
            let mut s = sample();
            break_it(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(expect), "{err} should mention {expect}");
        }
    }

    #[test]
    fn load_refuses_oversized_and_unknown_fields() {
        let dir = std::env::temp_dir().join(format!("cpv-jailspec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("spec.json");
        std::fs::write(&p, serde_json::to_vec(&sample()).unwrap()).unwrap();
        assert_eq!(JailSpec::load(&p).unwrap(), sample());
        let mut v = serde_json::to_value(sample()).unwrap();
        v["bogus"] = 1.into();
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(JailSpec::load(&p).unwrap_err().contains("bogus"));
        std::fs::write(&p, vec![b' '; MAX_SPEC_BYTES as usize + 1]).unwrap();
        assert!(JailSpec::load(&p).unwrap_err().contains("larger than"));
        // A FIFO (nobody writes to it: a blocking open would hang) and a symlink are refused.
        let fifo = dir.join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let err = JailSpec::load(&fifo).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let link = dir.join("link.json");
        std::fs::write(&p, serde_json::to_vec(&sample()).unwrap()).unwrap();
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let err = JailSpec::load(&link).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
