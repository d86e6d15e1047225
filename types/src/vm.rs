//! The VM description: the JSON document the agent writes for each microVM and `cpevisor-vmm
//! --config` reads. One struct for both sides, so what one writes the other parses: unknown
//! fields are refused, absent ones take the defaults below. The VMM checks what needs the host
//! (files, taps, descriptors, KVM's limits) in its own `config::VmConfigExt::validate`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::IfName;

/// Guest memory when the description sets none.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Ceiling on guest memory when the description sets none.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 2048;
/// vCPUs when the description sets none.
pub const DEFAULT_VCPUS: u8 = 1;
/// How long a stop request waits for the guest's own power-off after the power button.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u32 = 10_000;

/// How the kernel file is interpreted.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFormat {
    /// Detect from the file: ELF vmlinux or bzImage on x86_64, arm64 `Image` on aarch64.
    #[default]
    Auto,
    /// Test mode (x86_64): flat 64-bit code entered in long mode with identity-mapped page
    /// tables, no boot protocol.
    RawX86_64,
    /// Test mode (x86_64): flat 16-bit code entered in real mode.
    RawRealMode,
}

impl KernelFormat {
    /// Whether this is one of the raw test formats (no boot protocol, no device tree).
    pub fn is_raw(self) -> bool {
        !matches!(self, KernelFormat::Auto)
    }
}

/// Where the guest's console goes; text form `stdout`, `none`, `file:PATH` or `socket:PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Console {
    /// Output to the VMM's stdout, input from its stdin.
    #[default]
    Stdio,
    /// Output appended to a file (created if missing), no input.
    File(PathBuf),
    /// Connect to a listening Unix stream socket: output and input both go through it.
    Socket(PathBuf),
    /// Output discarded, no input.
    Null,
}

impl Console {
    /// Parses the text form; the error says what is accepted.
    pub fn parse(spec: &str) -> Result<Console, String> {
        match spec {
            "stdout" => Ok(Console::Stdio),
            "none" => Ok(Console::Null),
            _ => {
                if let Some(p) = spec.strip_prefix("file:").filter(|p| !p.is_empty()) {
                    Ok(Console::File(PathBuf::from(p)))
                } else if let Some(p) = spec.strip_prefix("socket:").filter(|p| !p.is_empty()) {
                    Ok(Console::Socket(PathBuf::from(p)))
                } else {
                    Err(format!(
                        "'{spec}': expected stdout, none, file:PATH or socket:PATH"
                    ))
                }
            }
        }
    }
}

impl fmt::Display for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Console::Stdio => f.write_str("stdout"),
            Console::Null => f.write_str("none"),
            Console::File(p) => write!(f, "file:{}", p.display()),
            Console::Socket(p) => write!(f, "socket:{}", p.display()),
        }
    }
}

impl Serialize for Console {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Console {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Console::parse(&s).map_err(|e| serde::de::Error::custom(format!("console: {e}")))
    }
}

/// A block device backed by a host file (virtio-blk).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The host file; opened by the VMM before it drops its privileges.
    pub path: PathBuf,
    /// Refuse guest writes (the device reports read-only).
    #[serde(default)]
    pub read_only: bool,
}

/// A MAC address, text form `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` (two hex digits per byte); `None` for anything else.
    pub fn parse(s: &str) -> Option<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MacAddr::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a MAC address")))
    }
}

/// A network device backed by a host tap (virtio-net).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Name of an existing tap device (the agent creates and owns it).
    pub tap: IfName,
    /// The guest's MAC; absent: the VMM derives a locally administered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// Who the VMM becomes once everything is open (the agent gives each app's VMM ids of its own).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// User id the VMM runs as.
    pub uid: u32,
    /// Group id the VMM runs as.
    pub gid: u32,
}

fn yes() -> bool {
    true
}

/// A virtio-balloon: the guest gives memory back to the host (docs/density.md).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// The guest may take pages back from the balloon when it would otherwise run out of
    /// memory (`VIRTIO_BALLOON_F_DEFLATE_ON_OOM`).
    #[serde(default = "yes")]
    pub deflate_on_oom: bool,
    /// The guest reports the pages it frees and the host drops them from its RAM
    /// (`VIRTIO_BALLOON_F_REPORTING`).
    #[serde(default = "yes")]
    pub free_page_reporting: bool,
    /// MiB the guest is asked to hold in the balloon from the start (0: none).
    #[serde(default)]
    pub target_mib: u64,
}

impl Default for BalloonConfig {
    /// Reporting and deflate on OOM, no inflation: memory the guest frees goes back to the
    /// host, and the guest keeps all of its memory available.
    fn default() -> Self {
        BalloonConfig {
            deflate_on_oom: true,
            free_page_reporting: true,
            target_mib: 0,
        }
    }
}

fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}
fn default_vcpus() -> u8 {
    DEFAULT_VCPUS
}
fn default_max_memory_mib() -> u64 {
    DEFAULT_MAX_MEMORY_MIB
}
fn default_shutdown_timeout_ms() -> u32 {
    DEFAULT_SHUTDOWN_TIMEOUT_MS
}

/// The VM description (JSON schema = this struct; unknown fields are refused).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The guest kernel file.
    pub kernel: PathBuf,
    /// How to load the kernel (`auto` for real kernels).
    #[serde(default)]
    pub kernel_format: KernelFormat,
    /// An initramfs, loaded after the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the VMM adds its console and device arguments).
    #[serde(default)]
    pub cmdline: String,
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Ceiling on `memory_mib` the VMM accepts (a guard against typos).
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: u64,
    /// vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Block devices, in the order the guest sees them (`vda`, `vdb`, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Network devices, in the order the guest sees them.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// virtio-rng.
    #[serde(default)]
    pub rng: bool,
    /// virtio-balloon; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
    /// Where the guest's serial console goes.
    #[serde(default)]
    pub console: Console,
    /// A Unix socket for control commands (`shutdown`, `status`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Absent: unconfined (host tests, CLI use). Set: the VMM drops to these ids, an empty
    /// root, no capabilities and seccomp once it has opened everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<JailConfig>,
    /// An inherited pipe's write end: one byte on the guest's boot-ready signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_fd: Option<i32>,
    /// A stop request presses the guest's power button and waits this long for the guest to
    /// power off before stopping the VM; 0 stops at once.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u32,
}

impl VmConfig {
    /// A description with defaults for everything but the kernel.
    pub fn with_kernel(kernel: PathBuf) -> Self {
        VmConfig {
            kernel,
            kernel_format: KernelFormat::Auto,
            initrd: None,
            cmdline: String::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            vcpus: DEFAULT_VCPUS,
            disks: Vec::new(),
            nets: Vec::new(),
            rng: false,
            balloon: None,
            console: Console::Stdio,
            control_socket: None,
            jail: None,
            ready_fd: None,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: &VmConfig) {
        let json = serde_json::to_string(c).unwrap();
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, c, "{json}");
    }

    #[test]
    fn every_field_round_trips() {
        let mut c = VmConfig::with_kernel("/k".into());
        round_trip(&c);
        c.initrd = Some("/i".into());
        c.cmdline = "console=ttyS0".into();
        c.memory_mib = 64;
        c.max_memory_mib = 256;
        c.vcpus = 2;
        c.disks = vec![
            DiskConfig {
                path: "/ro".into(),
                read_only: true,
            },
            DiskConfig {
                path: "/rw".into(),
                read_only: false,
            },
        ];
        c.nets = vec![NetConfig {
            tap: IfName::parse("tap0").unwrap(),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        }];
        c.rng = true;
        c.balloon = Some(BalloonConfig {
            deflate_on_oom: false,
            free_page_reporting: true,
            target_mib: 16,
        });
        c.control_socket = Some("/run/vm.sock".into());
        c.jail = Some(JailConfig { uid: 7, gid: 8 });
        c.ready_fd = Some(3);
        c.shutdown_timeout_ms = 0;
        for console in [
            Console::Stdio,
            Console::Null,
            Console::File("/tmp/c".into()),
            Console::Socket("/tmp/s".into()),
        ] {
            for format in [
                KernelFormat::Auto,
                KernelFormat::RawX86_64,
                KernelFormat::RawRealMode,
            ] {
                c.console = console.clone();
                c.kernel_format = format;
                round_trip(&c);
            }
        }
    }

    #[test]
    fn absent_fields_take_the_defaults_and_unknown_ones_are_refused() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(c, VmConfig::with_kernel("/k".into()));
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","memroy_mib":1}"#);
        assert!(e.unwrap_err().to_string().contains("memroy_mib"));
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","nets":[{"tap":"a/b"}]}"#);
        assert!(e.unwrap_err().to_string().contains("'/'"));
        let c: VmConfig = serde_json::from_str(r#"{"kernel":"/k","balloon":{}}"#).unwrap();
        assert_eq!(c.balloon, Some(BalloonConfig::default()));
        assert!(c.balloon.unwrap().free_page_reporting && c.balloon.unwrap().deflate_on_oom);
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","balloon":{"target":1}}"#);
        assert!(e.unwrap_err().to_string().contains("target"));
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","vcpus":256}"#);
        assert!(e.is_err(), "vcpus is a u8 on both sides");
    }
}
