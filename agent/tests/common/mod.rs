//! Shared helpers for the agent's integration tests: scratch dirs, a sample app, packages built
//! by hand (to test what `pack_dir` would never produce), real HTTP(S) servers on loopback and
//! a test CA made with the `openssl` CLI.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cpevisor_agent::package::oci::{self, Descriptor, Index, Manifest, OciLayout};
use cpevisor_agent::package::tar::TarWriter;
use cpevisor_agent::package::{key_id, SigningKey};
use cpevisor_agent::store::{to_hex, Digest};

/// A fresh directory under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cpevisor-it-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// All files under `dir`, relative, sorted: "nothing changed" means this list did not change.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn app_config_json() -> serde_json::Value {
    serde_json::json!({
        "name": "hello", "version": "1.0.0", "vendor": "Example Operator",
        "description": "sample app", "arch": "aarch64", "backends": ["kvm", "jail"],
        "memory_mib": 32, "vcpus": 1, "cmdline": "console=ttyAMA0 quiet",
        "command": ["/bin/hello", "--port", "8080"],
        "restart": {"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 30,
                    "retry_interval_multiplier": 2000, "max_retry_count": 3, "reset_period_s": 60},
        "autostart": true, "run_level": 1
    })
}

/// Writes an app directory (`app.json` + files) with a kernel of `kernel_len` bytes.
pub fn write_app_dir(dir: &Path, kernel_len: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut app = app_config_json();
    app["kernel"] = "Image".into();
    app["initrd"] = "initrd.cpio".into();
    app["rootfs"] = "rootfs.tar".into();
    fs::write(
        dir.join("app.json"),
        serde_json::to_vec_pretty(&app).unwrap(),
    )
    .unwrap();
    let kernel: Vec<u8> = (0..kernel_len).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dir.join("Image"), kernel).unwrap();
    fs::write(dir.join("initrd.cpio"), b"initrd contents").unwrap();
    fs::write(dir.join("rootfs.tar"), vec![0u8; 2048]).unwrap();
}

/// The pieces of a package, for tests that build broken ones by hand.
pub struct Parts {
    pub config: Vec<u8>,
    pub config_media: String,
    pub layers: Vec<(String, Vec<u8>)>,
    /// (signature text, signer id) annotations, or none.
    pub signature: Option<(String, String)>,
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Overrides the size the layer descriptors declare (index into layers, size).
    pub layer_size_override: Option<(usize, u64)>,
}

impl Parts {
    pub fn good(key: &SigningKey) -> Parts {
        let mut p = Parts {
            config: serde_json::to_vec(&app_config_json()).unwrap(),
            config_media: oci::MEDIA_APP_CONFIG.to_string(),
            layers: vec![
                (
                    oci::MEDIA_KERNEL.to_string(),
                    b"kernel image bytes".to_vec(),
                ),
                (oci::MEDIA_ROOTFS.to_string(), vec![0u8; 1024]),
            ],
            signature: None,
            extra_files: Vec::new(),
            layer_size_override: None,
        };
        p.sign_with(key);
        p
    }

    fn manifest_bytes(&self) -> Vec<u8> {
        let desc = |media: &str, bytes: &[u8]| Descriptor {
            media_type: media.to_string(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        };
        let mut layers: Vec<Descriptor> = self.layers.iter().map(|(m, b)| desc(m, b)).collect();
        if let Some((i, size)) = self.layer_size_override {
            layers[i].size = size;
        }
        serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_MANIFEST.to_string(),
            config: desc(&self.config_media, &self.config),
            layers,
            annotations: BTreeMap::new(),
        })
        .unwrap()
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest_bytes())
    }

    /// Signs the manifest as it is now (call again after changing the parts).
    pub fn sign_with(&mut self, key: &SigningKey) {
        let sig = key.sign(self.manifest_digest().to_string().as_bytes());
        self.signature = Some((to_hex(&sig), key_id(&key.public_key())));
    }

    pub fn write(&self, path: &Path) {
        let manifest = self.manifest_bytes();
        let mut annotations = BTreeMap::new();
        if let Some((sig, signer)) = &self.signature {
            annotations.insert(oci::ANNOTATION_SIGNATURE.to_string(), sig.clone());
            annotations.insert(oci::ANNOTATION_SIGNER.to_string(), signer.clone());
        }
        let index = serde_json::to_vec(&Index {
            schema_version: 2,
            media_type: oci::MEDIA_INDEX.to_string(),
            manifests: vec![Descriptor {
                media_type: oci::MEDIA_MANIFEST.to_string(),
                digest: Digest::of(&manifest),
                size: manifest.len() as u64,
                annotations,
            }],
            annotations: BTreeMap::new(),
        })
        .unwrap();
        let layout = serde_json::to_vec(&OciLayout {
            image_layout_version: "1.0.0".into(),
        })
        .unwrap();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        files.insert(oci::blob_name(&Digest::of(&manifest)), manifest);
        files.insert(
            oci::blob_name(&Digest::of(&self.config)),
            self.config.clone(),
        );
        for (_, b) in &self.layers {
            files.insert(oci::blob_name(&Digest::of(b)), b.clone());
        }
        files.insert(oci::INDEX_FILE.into(), index);
        files.insert(oci::OCI_LAYOUT_FILE.into(), layout);
        for (n, b) in &self.extra_files {
            files.insert(n.clone(), b.clone());
        }
        let mut tar = TarWriter::new(Vec::new());
        for (name, bytes) in &files {
            tar.add_file(name, bytes.len() as u64, &mut &bytes[..])
                .unwrap();
        }
        fs::write(path, tar.finish().unwrap()).unwrap();
    }
}

/// A server process on loopback, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// `python3 -m http.server`, the stock server.
    pub fn stock(root: &Path) -> Server {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the download tests");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server banner: {line:?}"));
        Server {
            child,
            port,
            log: PathBuf::new(),
        }
    }

    /// `common/serve.py` (Range, TLS, dropped connections) with extra arguments.
    pub fn range(root: &Path, log: &Path, extra: &[&str]) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/serve.py");
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script)
            .arg("--root")
            .arg(root)
            .arg("--log")
            .arg(log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the download tests");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("serve.py did not start: {line:?}"));
        Server {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self, scheme: &str, host: &str, file: &str) -> String {
        format!("{scheme}://{host}:{}/{file}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, made with the
/// `openssl` CLI. Returns (ca.pem, server cert, server key).
pub fn make_test_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI is needed for the https tests");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let cert = format!("{name}-server.pem");
    let ext = format!("{name}-ext.cnf");
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &ca_key,
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &ca_key,
        "-sha256",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &ca,
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &key,
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        "/CN=localhost",
        "-out",
        &csr,
    ]);
    fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (dir.join(ca), dir.join(cert), dir.join(key))
}
