//! One emulated board under QEMU, driven through its serial console.

use crate::console::{Console, BOARD_STALLED, TIMED_OUT};
use crate::firmware::{firmware_dir, timeout_scale, workspace_root};
use cpevisor_boards::Board;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// How long a board gets to answer its console after a command timed out (`BoardVm::run`).
const ANSWER_AFTER_TIMEOUT: Duration = Duration::from_secs(60);

/// The line the firmware's init prints once the board is up (see `rootfs/files/init`).
pub const READY_MARKER: &str = "CPEVISOR-READY";
/// The firmware init's last line before it reboots or powers off (rootfs/files/init).
pub const SHUTDOWN_MARKER: &str = "CPEVISOR-SHUTDOWN action=";

/// The kernel's complaints in a console transcript: WARNING traces, Oopses, BUGs, panics, and
/// a seccomp filter killing one of cpevisor's own processes (audit type 1326 with
/// `comm="cpevisor..."`: the VMM or the agent made a syscall its filter forbids; an app killed
/// by its jail's filter is the filter working and is not listed).
pub fn kernel_complaints(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| {
            ["WARNING:", "Oops", "BUG:", "cut here", "Kernel panic"]
                .iter()
                .any(|w| l.contains(w))
                || (l.contains("type=1326") && l.contains("comm=\"cpevisor"))
        })
        .collect()
}

/// How to boot a board.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Guest TCP ports to forward from 127.0.0.1 (each gets a free host port).
    pub forward: Vec<u16>,
    /// UDP ports of the router's LAN address to forward from 127.0.0.1 (each gets a free host
    /// port): the host is the LAN client (boards with `[network]` LAN ports).
    pub lan_udp: Vec<u16>,
    /// Extra kernel command line.
    pub append: String,
    /// Disk image attached as the board's flash (virtio-blk / IDE as the board has it).
    pub flash: Option<PathBuf>,
    /// Copy the console to this process's stdout as it arrives (for `make demo`); otherwise it
    /// goes to `target/e2e-logs/<board>-<pid>-<n>.log`.
    pub echo: bool,
    /// Boot this initrd instead of the firmware's `initramfs.cpio.gz` (e.g. the firmware with a
    /// bench overlay appended).
    pub initrd_override: Option<PathBuf>,
    /// Board RAM in MiB instead of the profile's `qemu.memory_mib`.
    pub memory_override: Option<u32>,
}

/// A running board. Dropping it kills QEMU.
pub struct BoardVm {
    /// The board's profile.
    pub board: Board,
    child: Child,
    stdin: ChildStdin,
    console: Console,
    /// (guest port, host port)
    forwards: Vec<(u16, u16)>,
    /// (router's LAN UDP port, host port)
    lan_udp: Vec<(u16, u16)>,
    /// Console position after the last command, so each wait looks at new output only.
    cursor: usize,
    commands: u32,
    /// [`ANSWER_AFTER_TIMEOUT`]; shorter in the harness's own tests.
    answer_after_timeout: Duration,
}

impl BoardVm {
    /// Boots `board_name` from `target/firmware/<board>/`. Fails with a clear message when the
    /// firmware was not built.
    pub fn boot(board_name: &str, opts: &BootOptions) -> Result<BoardVm, String> {
        let board = Board::by_name(board_name).map_err(|e| e.to_string())?;
        let dir = firmware_dir(board_name);
        let kernel = dir.join("kernel");
        let initrd = opts
            .initrd_override
            .clone()
            .unwrap_or_else(|| dir.join("initramfs.cpio.gz"));
        for f in [&kernel, &initrd] {
            if !f.is_file() {
                return Err(format!(
                    "{} is missing: build the firmware first (`make firmware BOARDS={board_name}`)",
                    f.display()
                ));
            }
        }
        let mut forwards = Vec::new();
        for &guest in &opts.forward {
            forwards.push((free_port()?, guest));
        }
        let mut lan_udp = Vec::new();
        for &guest in &opts.lan_udp {
            lan_udp.push((free_udp_port()?, guest));
        }
        let mut argv = board
            .qemu_command(&kernel, &initrd, &opts.append, &forwards, &lan_udp)
            .map_err(|e| e.to_string())?;
        if let Some(mib) = opts.memory_override {
            let at = argv.iter().position(|a| a == "-m").map(|i| i + 1);
            match at.and_then(|i| argv.get_mut(i)) {
                Some(value) => *value = mib.to_string(),
                None => return Err(format!("{board_name}: QEMU command has no -m to override")),
            }
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if let Some(flash) = &opts.flash {
            cmd.args(flash_args(&board, flash));
        }
        let forwards = forwards.into_iter().map(|(h, g)| (g, h)).collect();
        let lan_udp = lan_udp.into_iter().map(|(h, g)| (g, h)).collect();
        let mut vm = Self::attach(board, cmd, opts.echo)?;
        vm.forwards = forwards;
        vm.lan_udp = lan_udp;
        Ok(vm)
    }

    /// A board from `cmd` (QEMU, or in the harness's own tests any program that plays a
    /// console), its output copied into the transcript.
    fn attach(board: Board, mut cmd: Command, echo: bool) -> Result<BoardVm, String> {
        let board_name = board.name.clone();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        let console = Console::default();
        let log_dir = workspace_root().join("target/e2e-logs");
        let _ = std::fs::create_dir_all(&log_dir);
        let tee: Option<Box<dyn Write + Send>> = if echo {
            Some(Box::new(std::io::stdout()))
        } else {
            // pid + a per-process count: several tests may boot the same board at once.
            static BOOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::fs::File::create(
                log_dir.join(format!("{board_name}-{}-{n}.log", std::process::id())),
            )
            .ok()
            .map(|f| Box::new(f) as Box<dyn Write + Send>)
        };
        console.spawn_reader(child.stdout.take().expect("piped"), tee);
        // QEMU's own errors (bad machine option, missing binary pieces) go to the same transcript.
        console.spawn_reader(child.stderr.take().expect("piped"), None);
        let stdin = child.stdin.take().expect("piped");
        Ok(BoardVm {
            board,
            child,
            stdin,
            console,
            forwards: Vec::new(),
            lan_udp: Vec::new(),
            cursor: 0,
            commands: 0,
            answer_after_timeout: ANSWER_AFTER_TIMEOUT,
        })
    }

    /// Scales a timeout by `CPEVISOR_TIMEOUT_SCALE`.
    pub fn scaled(d: Duration) -> Duration {
        d.mul_f64(timeout_scale())
    }

    /// Waits for `needle` in console output newer than the last wait; returns that output.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let (pos, text) = self
            .console
            .wait_for(needle, self.cursor, Self::scaled(timeout))
            .map_err(|e| format!("{}: {e}", self.board.name))?;
        self.cursor = pos;
        Ok(text)
    }

    /// Waits for the firmware's ready marker; returns the rest of its line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String, String> {
        self.wait_for(READY_MARKER, timeout)?;
        self.wait_for("\n", Duration::from_secs(5))
            .map(|s| s.trim().to_string())
    }

    /// Types a line on the console.
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("{}: console write failed: {e}", self.board.name))
    }

    /// Runs a shell command on the console; returns (exit status, output).
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<(i32, String), String> {
        self.commands += 1;
        let n = self.commands;
        // The console echoes what we type: the marker is split with '' in the typed line so only
        // the shell's output contains it whole.
        let start = format!("@@BEGIN{n}@@");
        let tag = format!("@@END{n}:");
        self.send_line(&format!(
            "echo '@@BEGIN{n}''@@'; {command}; echo \"@@END{n}\"':'$?'@@'"
        ))?;
        let out = match self
            .wait_for(&format!("{start}\n"), timeout)
            .and_then(|_| self.wait_for(&tag, timeout))
        {
            Ok(out) => out,
            Err(e) if e.contains(TIMED_OUT) && !e.contains(BOARD_STALLED) => {
                return Err(self.why_no_answer(e))
            }
            Err(e) => return Err(e),
        };
        let status_text = self.wait_for("@@", Duration::from_secs(5))?;
        let status = status_text
            .trim_end_matches("@@")
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("unparsable exit status {status_text:?}"))?;
        Ok((status, out.trim_end_matches(&tag).to_string()))
    }

    /// A command that timed out either still runs on a live board or met a board that stopped
    /// (under TCG a board's own kernel can stall without saying so): interrupt the command and see
    /// whether the shell answers, and say which in the error, so a test can tell its own failure
    /// from the board's ([`BOARD_STALLED`]).
    fn why_no_answer(&mut self, timed_out: String) -> String {
        self.commands += 1;
        let n = self.commands;
        let alive = format!("@@ALIVE{n}@@");
        // ^C ends the command where it still runs (the console shell has a controlling tty).
        let within = self.answer_after_timeout;
        // The newline ends the line on a shell without a tty, where ^C is just a byte.
        let asked = self
            .stdin
            .write_all(b"\x03\n")
            .map_err(|e| e.to_string())
            .and_then(|_| self.send_line(&format!("echo '@@ALIVE{n}''@@'")));
        let answered = asked.and_then(|_| self.wait_for(&alive, within));
        match answered {
            Ok(_) => format!(
                "{timed_out}\n(the board still answers its console: the command itself did not \
                 finish in time)"
            ),
            Err(_) => format!(
                "{timed_out}; {BOARD_STALLED}: it did not answer its console within {within:?} \
                 after the command timed out"
            ),
        }
    }

    /// Like `run`, but an exit status other than 0 is an error.
    pub fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        match self.run(command, timeout)? {
            (0, out) => Ok(out),
            (s, out) => Err(format!(
                "{}: `{command}` exited {s}:\n{out}",
                self.board.name
            )),
        }
    }

    /// The host port on 127.0.0.1 that reaches `guest_port` in the board.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, h)| *h)
    }

    /// The host UDP port forwarded to the router's LAN address, port `guest_port`.
    pub fn lan_udp_port(&self, guest_port: u16) -> Option<u16> {
        self.lan_udp
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, h)| *h)
    }

    /// Waits for QEMU to exit by itself (after `poweroff -f`; boards run with `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32, String> {
        let deadline = std::time::Instant::now() + Self::scaled(timeout);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status.code().unwrap_or(-1));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{}: QEMU still running after {timeout:?}",
                    self.board.name
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A router's reboot or power-off: types `command` (plain `reboot` or `poweroff`, which
    /// signal the init), waits for the init's shutdown line and for QEMU to exit (boards run
    /// with -no-reboot). The init must have stopped the agent and put /data away first:
    /// otherwise the error names what it saw. Returns the shutdown line.
    pub fn shut_down(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        self.send_line(command)?;
        self.wait_for(SHUTDOWN_MARKER, timeout)?;
        let line = self.wait_for("\n", Duration::from_secs(10))?;
        let line = format!("{SHUTDOWN_MARKER}{}", line.trim());
        self.wait_exit(timeout)?;
        let clean = line.contains(" agent=stopped ")
            && (line.ends_with("data=unmounted") || line.ends_with("data=read-only"));
        if !clean {
            return Err(format!("{}: not a clean shutdown: {line}", self.board.name));
        }
        Ok(line)
    }

    /// Everything the console printed so far.
    pub fn transcript(&self) -> String {
        self.console.text()
    }
}

impl Drop for BoardVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flash disk as the board's bus has it: virtio-mmio on `virt`, IDE on malta, virtio-pci on q35.
fn flash_args(board: &Board, flash: &std::path::Path) -> Vec<String> {
    let drive = format!("file={},format=raw,if=none,id=flash", flash.display());
    let device = match board.qemu.as_ref().map(|q| q.machine.as_str()) {
        Some(m) if m.starts_with("virt") => "virtio-blk-device,drive=flash",
        Some(m) if m.starts_with("malta") => "ide-hd,drive=flash,bus=ide.0",
        _ => "virtio-blk-pci,drive=flash",
    };
    vec!["-drive".into(), drive, "-device".into(), device.into()]
}

fn free_udp_port() -> Result<u16, String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn free_port() -> Result<u16, String> {
    // Bind port 0 and release it: QEMU binds it right after. A race with another process is
    // possible but harmless here (the boot then fails loudly).
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_board(argv: &[&str]) -> BoardVm {
        let board = Board::by_name("qemu-q35-x86_64").unwrap();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        let mut vm = BoardVm::attach(board, cmd, false).unwrap();
        vm.answer_after_timeout = Duration::from_secs(5);
        vm
    }

    /// A command that outlives its timeout on a board that still answers is the test's failure,
    /// not the board's: the error says the board answers and does not say it stalled.
    #[test]
    fn a_timed_out_command_on_a_live_board_is_not_a_stall() {
        let mut vm = fake_board(&["sh"]);
        let err = vm.run("sleep 2", Duration::from_millis(500)).unwrap_err();
        assert!(err.contains("still answers"), "{err}");
        assert!(!err.contains(BOARD_STALLED), "{err}");
        // And the console is usable again.
        assert_eq!(
            vm.run_ok("echo again", Duration::from_secs(10))
                .unwrap()
                .trim(),
            "again"
        );
    }

    /// A board that stops reading its console is said to have stalled, which is what a test
    /// retries on a fresh board.
    #[test]
    fn a_board_that_no_longer_answers_is_a_stall() {
        let mut vm = fake_board(&["sleep", "60"]);
        let err = vm.run("true", Duration::from_millis(500)).unwrap_err();
        assert!(err.contains(BOARD_STALLED), "{err}");
    }

    #[test]
    fn complaints_include_seccomp_kills_of_our_processes_only() {
        let console = "[    8.6] audit: type=1326 audit(1.4:2): uid=100001 pid=132 comm=\"cpevisor-vmm\" sig=31 syscall=56\n\
                       [    9.1] audit: type=1326 audit(1.5:3): uid=200000 pid=140 comm=\"status\" sig=31 syscall=41\n\
                       [    9.2] EXT4-fs (vda): unmounting filesystem.\n\
                       [    9.3] WARNING: CPU: 0 PID: 1 at mm/x.c:1\n";
        let c = kernel_complaints(console);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].contains("cpevisor-vmm"));
        assert!(c[1].contains("WARNING:"));
    }
}
