//! Helpers for the lifecycle/crash/CLI tests: real signed packages (built with `pack_dir`), a
//! real HTTP server (Python's `http.server`) on loopback, the real `cpevisord` and
//! `cpevisorctl` binaries.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cpevisor_agent::package::{keygen, load_signing_key, pack_dir};
use serde_json::{json, Value};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_cpevisord");
pub const CTL: &str = env!("CARGO_BIN_EXE_cpevisorctl");

/// A scratch world: keys, packages served over HTTP, a state dir, a config.
pub struct World {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub key: PathBuf,
    pub trusted: PathBuf,
    pub www: PathBuf,
    pub http: Option<HttpServer>,
    pub daemon: Option<Child>,
    pub budget_mib: u32,
    /// Command the daemon is started under (e.g. `unshare --net`), empty for none.
    pub wrap: Vec<String>,
    /// The daemon's executable: [`DAEMON`], or a `cpevisord` link to the multi-call binary.
    pub exe: PathBuf,
}

pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Python's own threading HTTP server (what `python3 -m http.server` runs) with a listen
/// backlog of 256 instead of its 5: with 200 agents downloading at once the 5 overflowed, and the
/// dropped connection attempts waited out SYN retries (seen: usp_fleet's "head probe too slow:
/// 205 bytes in 30826 ms" under load).
const HTTP_SERVER: &str = "import functools, http.server, sys
http.server.ThreadingHTTPServer.request_queue_size = 256
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), handler).serve_forever()";

/// Starts Python's HTTP server ([`HTTP_SERVER`]) serving `dir` on a free loopback port.
pub fn http_server(dir: &Path) -> HttpServer {
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-c", HTTP_SERVER])
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (the HTTP server)");
        let server = HttpServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("the HTTP server did not come up");
}

pub const BUSYBOX: &str = "/bin/busybox";
/// The busybox applets the jail tests' apps use.
pub const APPLETS: [&str; 17] = [
    "sh", "ps", "cat", "hostname", "ls", "touch", "ip", "mount", "unshare", "wget", "httpd",
    "echo", "sleep", "grep", "tail", "tr", "id",
];

/// A rootfs in `dir` holding busybox (from the host's busybox-static) and its `APPLETS`
/// links, with the jail's mount points.
pub fn busybox_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    for m in ["proc", "dev", "tmp", "data"] {
        fs::create_dir_all(dir.join(m)).unwrap();
    }
}

/// Packs the contents of `dir` into the tar file `out` (with the `tar` CLI).
pub fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success(), "tar of {} failed: {st}", dir.display());
}

/// The (first) EU id of an installed DU as `cpevisorctl install` returns it.
pub fn eu_of(du: &Value) -> String {
    du["execution_unit_list"][0].as_str().unwrap().to_string()
}

/// app.json options for a test package.
#[derive(Clone)]
pub struct App {
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub memory_mib: u32,
    pub arch: String,
    pub command: Vec<String>,
    pub autostart: bool,
    pub restart: Value,
    /// Package for the kvm backend (kernel layer) instead of jail (rootfs + command).
    pub kvm: bool,
    /// Bytes of filler added to the rootfs (a package big enough to watch a download).
    pub pad_bytes: usize,
    /// More app.json fields (`health`, `start_deadline_s`), set over the others.
    pub extra: Value,
}

impl App {
    pub fn new(name: &str, version: &str) -> App {
        App {
            name: name.into(),
            version: version.into(),
            vendor: "acme".into(),
            memory_mib: 16,
            arch: "x86_64".into(),
            // A long-running app that prints its version once.
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo {name} {version} up; while true; do sleep 1; done"),
            ],
            autostart: true,
            restart: json!({
                "enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 2,
                "retry_interval_multiplier": 2000, "max_retry_count": 3, "reset_period_s": 600
            }),
            kvm: false,
            pad_bytes: 0,
            extra: json!({}),
        }
    }
}

impl World {
    pub fn new(tag: &str) -> World {
        let root = std::env::temp_dir().join(format!("cpv-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let keys = root.join("keys");
        let trusted = root.join("trusted");
        let www = root.join("www");
        for d in [&keys, &trusted, &www] {
            fs::create_dir_all(d).unwrap();
        }
        let pair = keygen(&keys).unwrap();
        fs::copy(&pair.public, trusted.join("operator.pub")).unwrap();
        let mut w = World {
            state: root.join("state"),
            socket: root.join("cpevisord.sock"),
            config: root.join("agent.json"),
            key: pair.secret,
            trusted,
            www: www.clone(),
            http: None,
            daemon: None,
            budget_mib: 64,
            wrap: Vec::new(),
            exe: PathBuf::from(DAEMON),
            root,
        };
        w.write_config(64, 1 << 20);
        w.http = Some(http_server(&www));
        w
    }

    pub fn write_config(&mut self, budget_mib: u32, cap: u64) {
        self.budget_mib = budget_mib;
        let cfg = self.config_value(budget_mib, cap);
        fs::write(&self.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    }

    /// Writes a config: the default one with `patch`'s top-level fields replaced.
    pub fn write_config_patched(&self, patch: Value) {
        let mut cfg = self.config_value(self.budget_mib, 1 << 20);
        for (k, v) in patch.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        fs::write(&self.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    }

    fn config_value(&self, budget_mib: u32, cap: u64) -> Value {
        json!({
            "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                           "memory_budget_mib": budget_mib, "runner": "process"}],
            "trusted_keys_dir": self.trusted,
            "download_cap_bytes": cap,
            "cgroup_root": self.root.join("no-cgroup"),
            "stop_timeout_ms": 2000,
            // Each world's run state to itself (parallel agents, EU ids from eu-1 in each).
            "run_dir": self.root.join("run"),
        })
    }

    pub fn url(&self, file: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{file}",
            self.http.as_ref().unwrap().port
        )
    }

    /// Packs `app` with the world's key into www/<file>; returns its URL.
    pub fn publish(&self, app: &App, file: &str) -> String {
        self.publish_with_key(app, file, &self.key)
    }

    pub fn publish_with_key(&self, app: &App, file: &str, key: &Path) -> String {
        let dir = self.root.join(format!("src-{file}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        fs::write(
            dir.join("rootfs/hello"),
            format!("{} {}\n", app.name, app.version),
        )
        .unwrap();
        if app.pad_bytes > 0 {
            let filler: Vec<u8> = (0..app.pad_bytes).map(|i| (i % 251) as u8).collect();
            fs::write(dir.join("rootfs/filler"), filler).unwrap();
        }
        tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
        let mut app_json = json!({
            "name": app.name, "version": app.version, "vendor": app.vendor,
            "description": "test app", "arch": app.arch, "backends": ["jail"],
            "memory_mib": app.memory_mib, "vcpus": 1, "command": app.command,
            "restart": app.restart, "autostart": app.autostart, "run_level": 1,
            "rootfs": "rootfs.tar",
        });
        if app.kvm {
            fs::write(dir.join("Image"), b"not really a kernel").unwrap();
            app_json["backends"] = json!(["kvm"]);
            app_json["kernel"] = json!("Image");
            app_json["cmdline"] = json!("console=ttyS0 quiet");
            app_json["command"] = json!([]);
        }
        for (k, v) in app.extra.as_object().expect("extra is an object") {
            app_json[k] = v.clone();
        }
        self.pack_app(&dir, &app_json, file, key)
    }

    /// Writes `app_json` as dir/app.json and packs `dir` signed with `key` into www/<file>;
    /// returns its URL. For packages `App` cannot describe.
    pub fn pack_app(&self, dir: &Path, app_json: &Value, file: &str, key: &Path) -> String {
        fs::write(
            dir.join("app.json"),
            serde_json::to_vec_pretty(app_json).unwrap(),
        )
        .unwrap();
        let key = load_signing_key(key).unwrap();
        pack_dir(dir, &key, &self.www.join(file)).unwrap();
        self.url(file)
    }

    /// Packs a jail app `name` on a busybox rootfs (`busybox_rootfs`) running `command`;
    /// returns its URL.
    pub fn publish_busybox_app(&self, name: &str, command: &[&str], restart: Value) -> String {
        let dir = self.root.join(format!("src-{name}"));
        busybox_rootfs(&dir.join("rootfs"));
        tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
        let app = json!({
            "name": name, "version": "1.0", "vendor": "acme", "description": "busybox test app",
            "arch": "x86_64", "backends": ["jail"], "memory_mib": 16, "vcpus": 1,
            "command": command, "restart": restart, "autostart": true, "run_level": 1,
            "rootfs": "rootfs.tar",
        });
        self.pack_app(&dir, &app, &format!("{name}.cpkg"), &self.key)
    }

    /// Installs `script` (a stand-in for cpevisor-vmm) as the world's VMM, mode 0755, and
    /// configures one kvm ExecEnv `kvm0` (with `env_extra`'s fields added) that runs it;
    /// returns the script's path.
    pub fn use_vmm_script(&self, script: &str, env_extra: Value) -> PathBuf {
        let vmm = self.root.join("fake-vmm");
        fs::write(&vmm, script).unwrap();
        fs::set_permissions(&vmm, fs::Permissions::from_mode(0o755)).unwrap();
        let mut env = json!({"name": "kvm0", "type": "kvm", "arch": "x86_64",
                             "memory_budget_mib": 64});
        for (k, v) in env_extra.as_object().expect("env_extra is an object") {
            env[k] = v.clone();
        }
        self.write_config_patched(json!({"vmm_path": vmm, "exec_envs": [env]}));
        vmm
    }

    /// Starts cpevisord (optionally with a crash point) and waits for its socket.
    pub fn start_daemon(&mut self, crash_at: Option<&str>) {
        self.start_daemon_env(crash_at, &[]);
    }

    pub fn start_daemon_env(&mut self, crash_at: Option<&str>, env: &[(&str, &str)]) {
        self.start_daemon_with(crash_at, env, |_| {});
    }

    /// `start_daemon_env`, with `customize` applied to the command last (a pre_exec hook, a
    /// umask, descriptors to pass on).
    pub fn start_daemon_with(
        &mut self,
        crash_at: Option<&str>,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) {
        assert!(self.daemon.is_none(), "daemon already running");
        let mut cmd = match self.wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("3")
            .env_remove("CPEVISOR_CRASH_AT")
            .env_remove("CPEVISOR_CRASH_TRACE")
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.root.join("daemon.log"))
                    .unwrap(),
            );
        if let Some(c) = crash_at {
            cmd.env("CPEVISOR_CRASH_AT", c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("cpevisord");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The socket is bound before recovery runs; a served request means it finished.
            if UnixStream::connect(&self.socket).is_ok() && self.ctl(&["list"]).status.success() {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("cpevisord exited early: {st}; log:\n{}", self.daemon_log());
            }
            assert!(Instant::now() < deadline, "cpevisord did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.daemon = Some(child);
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM, wait; returns the exit status code.
    pub fn stop_daemon(&mut self) -> Option<i32> {
        let mut child = self.daemon.take()?;
        // SAFETY: signalling our own child process by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok().and_then(|s| s.code())
    }

    /// Waits for the daemon to die by itself (crash injection); true if it was SIGKILLed.
    pub fn wait_killed(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let Some(mut child) = self.daemon.take() else {
            return false;
        };
        let st = child.wait().unwrap();
        st.signal() == Some(libc::SIGKILL)
    }

    /// Kills the daemon with SIGKILL (power cut) and reaps it. Apps it started keep running
    /// until we kill them, as after a real power loss they would be gone: kill them too.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(CTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("cpevisorctl")
    }

    /// Runs `cpevisorctl --json ARGS`; Ok(result) or Err(fault code, message).
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value, (u64, String)> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "cpevisorctl {args:?}: not JSON ({e}): {stdout:?} stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if out.status.success() {
            Ok(v)
        } else {
            Err((
                v["fault"]["code"].as_u64().unwrap_or(0),
                v["fault"]["message"].as_str().unwrap_or("").to_string(),
            ))
        }
    }

    pub fn list(&self) -> Value {
        self.ctl_json(&["list"]).expect("list")
    }

    pub fn events(&self) -> Vec<Value> {
        self.ctl_json(&["events"])
            .expect("events")
            .as_array()
            .cloned()
            .unwrap()
    }

    pub fn du_events(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["kind"] == "DUStateChange!")
            .collect()
    }

    /// The EU's log as `cpevisorctl logs` returns it ("" when it has none yet).
    pub fn logs(&self, eu: &str) -> String {
        self.ctl_json(&["logs", eu]).unwrap()["log"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Polls the EU's log until it contains `needle` (or panics after `secs`); returns it.
    pub fn wait_log(&self, eu: &str, needle: &str, secs: u64) -> String {
        self.poll(secs, || {
            let log = self.logs(eu);
            if log.contains(needle) {
                Ok(log)
            } else {
                Err(format!("{eu}: no {needle:?} in its log: {log:?}"))
            }
        })
    }

    /// Calls `probe` every 50 ms until it gives Ok (returned), or panics after `secs` with its
    /// last Err and the daemon's log.
    pub fn poll<T>(&self, secs: u64, mut probe: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match probe() {
                Ok(v) => return v,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "{why} (after {secs} s)\ndaemon log:\n{}",
                    self.daemon_log()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn eu(&self, eu: &str) -> Value {
        self.ctl_json(&["status", eu]).expect("status")["execution_unit"].clone()
    }

    /// Polls until the EU's Status is `want` (or panics after `secs`).
    pub fn wait_eu_status(&self, eu: &str, want: &str, secs: u64) -> Value {
        self.poll(secs, || {
            let v = self.eu(eu);
            if v["status"] == want {
                Ok(v)
            } else {
                Err(format!("{eu} never became {want}: {v}"))
            }
        })
    }

    /// Every file under the state dir (relative), sorted, for "nothing changed" checks.
    pub fn state_files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        // An atomic write in flight (store::atomic): transient by design; the
                        // file it replaces is what a comparison of states is about.
                        continue;
                    }
                    if p.is_dir() {
                        out.push(format!("{}/", p.strip_prefix(base).unwrap().display()));
                        walk(base, &p, out);
                    } else {
                        out.push(p.strip_prefix(base).unwrap().display().to_string());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state, &self.state, &mut out);
        out.sort();
        out
    }

    /// state.json content (None before the first install).
    pub fn state_json(&self) -> Option<Value> {
        fs::read(self.state.join("state.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_apps_of(&self.root);
        if std::env::var_os("CPEVISOR_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Kills app processes (process backend) whose data dir lies under `root`: after a SIGKILL of
/// the daemon they survive it, as they would not survive a real power loss.
pub fn kill_apps_of(root: &Path) {
    let Ok(rd) = fs::read_dir("/proc") else {
        return;
    };
    let needle = root.to_string_lossy().to_string();
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let text = String::from_utf8_lossy(&environ);
        if text.contains("CPEVISOR_DATA_DIR=") && text.contains(&needle) {
            // SAFETY: signals a test app process we started through the daemon.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Loop devices whose backing file is under `dir`.
pub fn loop_devices_on(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        if let Ok(file) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if file.trim().starts_with(&*dir.to_string_lossy()) {
                out.push(format!(
                    "{}: {}",
                    e.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
    }
    out
}
