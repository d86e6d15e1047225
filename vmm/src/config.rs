//! The VM description: one JSON document (`--config FILE`) or CLI flags for the common cases, both
//! landing in `VmConfig`. Everything a user can get wrong is checked here, before KVM is touched,
//! and every error names the field, flag or file at fault.

use std::path::{Path, PathBuf};

use crate::devices::serial::SerialBackend;
pub use crate::initrd::check_initrd;
/// The VM description is the shared type the agent writes; this module parses and checks it.
pub use cpevisor_types::vm::{
    BalloonConfig, DiskConfig, JailConfig, KernelFormat, MacAddr, NetConfig, VmConfig,
    DEFAULT_MAX_MEMORY_MIB, DEFAULT_SHUTDOWN_TIMEOUT_MS,
};
use cpevisor_types::IfName;
use error::check_readable_file;
pub use error::ConfigError;

pub mod error;

/// Hard ceiling on guest vCPUs; KVM's own limit is checked again when the VM exists.
pub const MAX_VCPUS: u8 = 64;
/// No board has more (1 TiB); keeps byte arithmetic on guest sizes far from overflow.
pub const MEMORY_CEILING_MIB: u64 = 1 << 20;
/// The config file is a small document; refuse anything that is obviously not one.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Longest accepted kernel command line (x86 boot protocol and arm64 FDT alike accept 2 KiB+).
pub const MAX_CMDLINE_BYTES: usize = 2048;
const MAX_DISKS: usize = 8;
const MAX_NETS: usize = 4;

/// Parses a console spec: `stdout`, `none`, `file:PATH` or `socket:PATH` (a listening Unix
/// socket the VMM connects to).
pub fn parse_console(spec: &str) -> Result<SerialBackend, ConfigError> {
    SerialBackend::parse(spec).map_err(|why| ConfigError::invalid("console", why))
}

/// What the VMM does with a VM description beyond the shared type: read it, and check it
/// against this host.
pub trait VmConfigExt: Sized {
    /// Parses a description; the error names the field at fault.
    fn from_json(text: &str) -> Result<Self, ConfigError>;
    /// Reads a config file: only a regular file that root or we own, not through a symlink
    /// and never waiting on a FIFO (the VMM runs as root and is handed the path).
    fn from_file(path: &Path) -> Result<Self, ConfigError>;
    /// Checks everything that can be checked without KVM: sizes, limits, files and their
    /// headers, taps, the readiness descriptor. Kernel/initrd format checks are the
    /// architecture's (`arch::check_kernel`).
    fn validate(&self) -> Result<(), ConfigError>;
}

impl VmConfigExt for VmConfig {
    fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_slice(text.as_bytes())
            .map_err(|e| ConfigError::invalid("config", e.to_string()))
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let what = format!("config file {}", path.display());
        let text = cpevisor_sandbox::files::read_regular(path, MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::invalid("config file", e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| ConfigError::invalid(&what, e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.memory_mib == 0 {
            return Err(ConfigError::invalid("memory_mib", "must be at least 1"));
        }
        if self.max_memory_mib > MEMORY_CEILING_MIB {
            return Err(ConfigError::invalid(
                "max_memory_mib",
                format!(
                    "{} MiB is above {MEMORY_CEILING_MIB} MiB",
                    self.max_memory_mib
                ),
            ));
        }
        if self.memory_mib > self.max_memory_mib {
            return Err(ConfigError::invalid(
                "memory_mib",
                format!(
                    "{} MiB is above the limit max_memory_mib = {} MiB",
                    self.memory_mib, self.max_memory_mib
                ),
            ));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::invalid(
                "vcpus",
                format!("{} is outside 1..={MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.cmdline.len() > MAX_CMDLINE_BYTES {
            return Err(ConfigError::invalid(
                "cmdline",
                format!("longer than {MAX_CMDLINE_BYTES} bytes"),
            ));
        }
        if self
            .cmdline
            .bytes()
            .any(|b| b == 0 || !(b == b' ' || b.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "cmdline",
                "only printable ASCII and spaces are allowed",
            ));
        }
        check_readable_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_initrd(initrd)?;
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConfigError::invalid(
                "disks",
                format!("at most {MAX_DISKS} disks"),
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            let what = format!("disks[{i}] {}", d.path.display());
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(!d.read_only)
                .open(&d.path);
            let f = opened.map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
            let meta = f
                .metadata()
                .map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
            if meta.is_dir() {
                return Err(ConfigError::invalid(&what, "is a directory"));
            }
        }
        if self.nets.len() > MAX_NETS {
            return Err(ConfigError::invalid(
                "nets",
                format!("at most {MAX_NETS} nets"),
            ));
        }
        for (i, n) in self.nets.iter().enumerate() {
            check_tap(&format!("nets[{i}].tap"), &n.tap)?;
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if let SerialBackend::Socket(p) = &self.console {
            if p.as_os_str().len() > 107 {
                return Err(ConfigError::invalid(
                    "console",
                    format!("{}: socket path longer than 107 bytes", p.display()),
                ));
            }
        }
        if let Some(fd) = self.ready_fd {
            crate::devices::boot_signal::check_ready_fd(fd)?;
        }
        if let Some(p) = &self.control_socket {
            if p.as_os_str().len() > 107 {
                return Err(ConfigError::invalid(
                    "control_socket",
                    format!("{}: path longer than 107 bytes", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// A tap must exist already (the name itself was checked when parsed: `IfName`).
fn check_tap(what: &str, name: &IfName) -> Result<(), ConfigError> {
    if !Path::new("/sys/class/net").join(name.as_str()).exists() {
        return Err(ConfigError::invalid(
            what,
            format!("tap device '{name}' does not exist"),
        ));
    }
    Ok(())
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run a VM.
    Run(Box<VmConfig>),
    /// Print KVM's capabilities.
    KvmInfo,
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

fn parse_u64(flag: &str, v: &str) -> Result<u64, ConfigError> {
    v.parse::<u64>()
        .map_err(|_| ConfigError::invalid(flag, format!("'{v}' is not a number")))
}

/// Parses `argv[1..]`. Flags override the fields of a `--config` file.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    match args.first().map(String::as_str) {
        Some("kvm-info") if args.len() == 1 => return Ok(Command::KvmInfo),
        Some("kvm-info") => {
            return Err(ConfigError::invalid("kvm-info", "takes no arguments"));
        }
        _ => {}
    }
    let mut config_file: Option<PathBuf> = None;
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--rng" | "--balloon" if inline.is_some() => {
                return Err(ConfigError::invalid(&name, "takes no value"));
            }
            "--rng" | "--balloon" => flags.push((name, None)),
            "--config" | "--kernel" | "--kernel-format" | "--initrd" | "--cmdline" | "--memory"
            | "--max-memory" | "--vcpus" | "--disk" | "--net" | "--console"
            | "--control-socket" | "--shutdown-timeout" => {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| ConfigError::invalid(&name, "needs a value"))?,
                };
                if name == "--config" {
                    config_file = Some(PathBuf::from(v));
                } else {
                    flags.push((name, Some(v)));
                }
            }
            _ => return Err(ConfigError::invalid(&arg, "unknown argument (see --help)")),
        }
    }
    let mut cfg = match &config_file {
        Some(p) => VmConfig::from_file(p)?,
        None => {
            let kernel = flags
                .iter()
                .find(|(n, _)| n == "--kernel")
                .and_then(|(_, v)| v.clone())
                .ok_or_else(|| ConfigError::invalid("--kernel", "required (or --config FILE)"))?;
            VmConfig::with_kernel(PathBuf::from(kernel))
        }
    };
    // Lists given on the command line replace the file's lists rather than merging into them.
    let mut disks_from_cli = false;
    let mut nets_from_cli = false;
    for (name, v) in flags {
        let v = v.unwrap_or_default();
        match name.as_str() {
            "--kernel" => cfg.kernel = PathBuf::from(v),
            "--kernel-format" => {
                cfg.kernel_format = serde_json::from_value(serde_json::Value::String(v.clone()))
                    .map_err(|_| {
                        ConfigError::invalid(
                            &name,
                            format!("'{v}': expected auto, raw-x86-64 or raw-real-mode"),
                        )
                    })?
            }
            "--initrd" => cfg.initrd = Some(PathBuf::from(v)),
            "--cmdline" => cfg.cmdline = v,
            "--memory" => cfg.memory_mib = parse_u64(&name, &v)?,
            "--max-memory" => cfg.max_memory_mib = parse_u64(&name, &v)?,
            "--vcpus" => {
                cfg.vcpus = v.parse::<u8>().map_err(|_| {
                    ConfigError::invalid(&name, format!("'{v}' is not a vCPU count"))
                })?
            }
            "--disk" => {
                if !disks_from_cli {
                    cfg.disks.clear();
                    disks_from_cli = true;
                }
                let (path, opt) = match v.rsplit_once(',') {
                    Some((p, o)) => (p, Some(o)),
                    None => (v.as_str(), None),
                };
                let read_only = match opt {
                    None => false,
                    Some("ro") => true,
                    Some("rw") => false,
                    Some(o) => {
                        return Err(ConfigError::invalid(
                            &name,
                            format!("'{o}': expected PATH[,ro|,rw]"),
                        ))
                    }
                };
                cfg.disks.push(DiskConfig {
                    path: PathBuf::from(path),
                    read_only,
                });
            }
            "--net" => {
                if !nets_from_cli {
                    cfg.nets.clear();
                    nets_from_cli = true;
                }
                let mut parts = v.split(',');
                let tap = parts.next().unwrap_or_default();
                let tap = IfName::parse(tap)
                    .map_err(|e| ConfigError::invalid(&name, format!("tap {tap:?}: {e}")))?;
                let mut mac = None;
                for p in parts {
                    let m = p
                        .strip_prefix("mac=")
                        .and_then(MacAddr::parse)
                        .ok_or_else(|| {
                            ConfigError::invalid(&name, format!("'{p}': expected mac=aa:bb:..."))
                        })?;
                    mac = Some(m);
                }
                cfg.nets.push(NetConfig { tap, mac });
            }
            "--rng" => cfg.rng = true,
            "--balloon" => cfg.balloon = Some(BalloonConfig::default()),
            "--console" => cfg.console = parse_console(&v)?,
            "--control-socket" => cfg.control_socket = Some(PathBuf::from(v)),
            "--shutdown-timeout" => {
                cfg.shutdown_timeout_ms = v.parse::<u32>().map_err(|_| {
                    ConfigError::invalid(&name, format!("'{v}' is not a number of milliseconds"))
                })?
            }
            _ => unreachable!("flag list above"),
        }
    }
    Ok(Command::Run(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::check_cpio;
    use std::io::{Cursor, Write};

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn json_full_schema() {
        let c = VmConfig::from_json(
            r#"{"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0","memory_mib":64,
                "max_memory_mib":256,"vcpus":2,"disks":[{"path":"/d","read_only":true}],
                "nets":[{"tap":"tap0","mac":"02:00:00:00:00:01"}],"rng":true,
                "console":"file:/tmp/c","control_socket":"/run/vm.sock",
                "kernel_format":"raw-x86-64"}"#,
        )
        .unwrap();
        assert_eq!(c.memory_mib, 64);
        assert_eq!(c.vcpus, 2);
        assert!(c.disks[0].read_only);
        assert_eq!(c.nets[0].mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(c.console, SerialBackend::File("/tmp/c".into()));
        assert_eq!(c.kernel_format, KernelFormat::RawX86_64);
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = VmConfig::from_json(r#"{"kernel":"/k","memroy_mib":1}"#).unwrap_err();
        assert!(e.to_string().contains("memroy_mib"), "{e}");
        let e = VmConfig::from_json(r#"{"kernel":"/k","console":"tty"}"#).unwrap_err();
        assert!(e.to_string().contains("console"), "{e}");
        let e =
            VmConfig::from_json(r#"{"kernel":"/k","nets":[{"tap":"t","mac":"zz"}]}"#).unwrap_err();
        assert!(e.to_string().contains("MAC"), "{e}");
        let e = VmConfig::from_json("{not json").unwrap_err();
        assert_eq!(e.what, "config");
        let e = VmConfig::from_json(r#"{"memory_mib":1}"#).unwrap_err();
        assert!(e.to_string().contains("kernel"), "{e}");
    }

    #[test]
    fn limits() {
        let dir = std::env::temp_dir().join(format!("cpv-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("k");
        std::fs::write(&k, b"kernel").unwrap();
        let mut c = VmConfig::with_kernel(k.clone());
        c.validate().unwrap();
        c.memory_mib = 0;
        assert_eq!(c.validate().unwrap_err().what, "memory_mib");
        c.memory_mib = 4096;
        c.max_memory_mib = 1024;
        let e = c.validate().unwrap_err();
        assert!(e.why.contains("max_memory_mib"), "{e}");
        c.memory_mib = u64::MAX >> 10;
        c.max_memory_mib = u64::MAX;
        assert_eq!(c.validate().unwrap_err().what, "max_memory_mib");
        c.max_memory_mib = 1024;
        c.memory_mib = 64;
        c.vcpus = 0;
        assert_eq!(c.validate().unwrap_err().what, "vcpus");
        c.vcpus = 1;
        c.kernel = dir.join("missing");
        assert!(c.validate().unwrap_err().what.contains("missing"));
        c.kernel = k;
        c.nets.push(NetConfig {
            tap: IfName::parse("cpvnotap0").unwrap(),
            mac: None,
        });
        let e = c.validate().unwrap_err();
        assert!(e.why.contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Whatever the shared type can say (the agent writes with it), this parser reads back
    /// unchanged: every console, kernel format, ro and rw disks, MAC, jail, ready_fd, timeout.
    #[test]
    fn every_description_the_shared_type_writes_parses_back() {
        let mut c = VmConfig::with_kernel("/k".into());
        c.initrd = Some("/i".into());
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
            mac: Some(MacAddr([2, 0, 0, 0, 0, 9])),
        }];
        c.rng = true;
        c.balloon = Some(BalloonConfig {
            deflate_on_oom: false,
            free_page_reporting: true,
            target_mib: 32,
        });
        c.control_socket = Some("/run/vm.sock".into());
        c.jail = Some(JailConfig {
            uid: 100_001,
            gid: 100_001,
        });
        c.ready_fd = Some(3);
        c.shutdown_timeout_ms = 2500;
        let consoles = [
            SerialBackend::Stdio,
            SerialBackend::Null,
            SerialBackend::File("/tmp/c".into()),
            SerialBackend::Socket("/tmp/s".into()),
        ];
        let formats = [
            KernelFormat::Auto,
            KernelFormat::RawX86_64,
            KernelFormat::RawRealMode,
        ];
        for console in &consoles {
            for format in formats {
                c.console = console.clone();
                c.kernel_format = format;
                let json = serde_json::to_string_pretty(&c).unwrap();
                assert_eq!(VmConfig::from_json(&json).unwrap(), c, "{json}");
            }
        }
        let bare = serde_json::to_string(&VmConfig::with_kernel("/k".into())).unwrap();
        assert_eq!(
            VmConfig::from_json(&bare).unwrap(),
            VmConfig::with_kernel("/k".into())
        );
    }

    #[test]
    fn tap_names_follow_the_one_rule() {
        // ".." passed the old check here (and /sys/class/net/.. exists); tabs and '%' too.
        for bad in ["..", "a\tb", "tap%d", "abcdefghijklmnop", ""] {
            let json = serde_json::json!({"kernel": "/k", "nets": [{"tap": bad}]}).to_string();
            let e = VmConfig::from_json(&json).unwrap_err();
            assert!(e.to_string().contains("interface name"), "{bad:?}: {e}");
            let e = parse_args(args(&["--kernel", "/k", "--net", bad])).unwrap_err();
            assert_eq!(e.what, "--net", "{bad:?}");
            assert!(e.why.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    fn cpio_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let namesize = name.len() + 1;
        write!(
            out,
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0o100644,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        )
        .unwrap();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    #[test]
    fn cpio_truncation_is_detected() {
        let mut a = Vec::new();
        cpio_entry(&mut a, "init", &[7u8; 1000]);
        cpio_entry(&mut a, "TRAILER!!!", &[]);
        let len = a.len() as u64;
        check_cpio(&mut Cursor::new(&a), len).unwrap();
        for cut in [50usize, 200, 900, a.len() - 20] {
            let t = &a[..cut];
            let e = check_cpio(&mut Cursor::new(t), cut as u64).unwrap_err();
            assert!(e.contains("truncated"), "cut {cut}: {e}");
        }
        let mut bad = a.clone();
        bad[0] = b'X';
        assert!(check_cpio(&mut Cursor::new(&bad), len)
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn cli_flags() {
        let c = parse_args(args(&[
            "--kernel",
            "/k",
            "--memory=64",
            "--vcpus",
            "2",
            "--disk",
            "/d,ro",
            "--net",
            "tap0,mac=02:00:00:00:00:02",
            "--console",
            "socket:/tmp/s",
            "--control-socket",
            "/tmp/c",
            "--rng",
            "--balloon",
        ]))
        .unwrap();
        let Command::Run(c) = c else { panic!() };
        assert_eq!(c.balloon, Some(BalloonConfig::default()));
        assert_eq!(c.memory_mib, 64);
        assert_eq!(
            c.disks,
            vec![DiskConfig {
                path: "/d".into(),
                read_only: true
            }]
        );
        assert_eq!(c.nets[0].tap, "tap0");
        assert!(c.rng);
        assert_eq!(c.shutdown_timeout_ms, DEFAULT_SHUTDOWN_TIMEOUT_MS);
        let t = |v: &str| parse_args(args(&["--kernel", "/k", "--shutdown-timeout", v]));
        let Command::Run(c) = t("0").unwrap() else {
            panic!()
        };
        assert_eq!(c.shutdown_timeout_ms, 0, "0: stop at once");
        assert_eq!(t("-1").unwrap_err().what, "--shutdown-timeout");
        let c = VmConfig::from_json(r#"{"kernel":"/k","shutdown_timeout_ms":2500}"#).unwrap();
        assert_eq!(c.shutdown_timeout_ms, 2500);
        assert_eq!(parse_args(args(&["kvm-info"])).unwrap(), Command::KvmInfo);
        assert_eq!(parse_args(args(&["--help"])).unwrap(), Command::Help);
        assert_eq!(parse_args(args(&["--bogus"])).unwrap_err().what, "--bogus");
        assert_eq!(
            parse_args(args(&["--memory", "1"])).unwrap_err().what,
            "--kernel"
        );
        assert_eq!(
            parse_args(args(&["--kernel", "/k", "--memory", "x"]))
                .unwrap_err()
                .what,
            "--memory"
        );
        assert_eq!(
            parse_args(args(&["--kernel", "/k", "--disk", "/d,rx"]))
                .unwrap_err()
                .what,
            "--disk"
        );
        assert_eq!(
            parse_args(args(&["--kernel"])).unwrap_err().why,
            "needs a value"
        );
        assert_eq!(
            parse_args(args(&["--kernel", "/k", "--rng=yes"]))
                .unwrap_err()
                .why,
            "takes no value"
        );
    }
}
