//! One health probe of an app: a TCP connect, an HTTP GET, or a command in the app's sandbox.
//! Every probe ends by its deadline, reads at most `MAX_ANSWER` bytes and says in one bounded
//! line what it saw.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::package::{HealthCheck, ProbeKind};

/// The most of an HTTP answer a probe reads: the status line is all it needs.
pub const MAX_ANSWER: usize = 1024;
/// Longest message a probe result carries.
pub const MAX_MESSAGE: usize = 200;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the probe passed.
    pub ok: bool,
    /// What it saw, at most `MAX_MESSAGE` bytes.
    pub message: String,
}

impl Outcome {
    fn pass(message: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            message: clip(message.into()),
        }
    }
    fn fail(message: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            message: clip(message.into()),
        }
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Makes a command probe's argv ready to run in the app's sandbox.
pub type CommandMaker = Box<dyn Fn(&[String]) -> Result<Command, String> + Send>;

/// Where a probe reaches the app: its address (tcp, http) or a command made ready to run in
/// its sandbox (command). The backend decides both.
pub struct Target {
    /// The app's address, or why it has none (no network).
    pub addr: Result<IpAddr, String>,
    /// Makes the command of a command probe, ready to run in the app's sandbox.
    pub command: CommandMaker,
}

/// Runs `h` once against `target`, within `h.timeout_s`.
pub fn run(h: &HealthCheck, target: &Target) -> Outcome {
    let timeout = Duration::from_secs(u64::from(h.timeout_s.max(1)));
    match h.kind {
        ProbeKind::Tcp | ProbeKind::Http => {
            let ip = match &target.addr {
                Ok(ip) => *ip,
                Err(why) => return Outcome::fail(why.clone()),
            };
            let addr = SocketAddr::new(ip, h.port);
            if h.kind == ProbeKind::Tcp {
                tcp(addr, timeout)
            } else {
                let path = if h.path.is_empty() { "/" } else { &h.path };
                http(addr, path, timeout)
            }
        }
        ProbeKind::Command => match (target.command)(&h.command) {
            Ok(cmd) => command(cmd, &h.command[0], timeout),
            Err(why) => Outcome::fail(why),
        },
    }
}

/// A TCP connect to `addr` within `timeout`.
pub fn tcp(addr: SocketAddr, timeout: Duration) -> Outcome {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Outcome::pass(format!("tcp {addr}: connected")),
        Err(e) => Outcome::fail(format!("tcp {addr}: {e}")),
    }
}

/// `GET path`: a 2xx or 3xx status passes. The whole exchange has one deadline.
pub fn http(addr: SocketAddr, path: &str, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let what = format!("http {addr}{path}");
    let status = (|| -> io::Result<Result<u16, String>> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        let left = |d: Instant| {
            d.checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        };
        s.set_write_timeout(Some(left(deadline)?))?;
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: cpevisord-probe\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        // The answer's bound is its type; it lives on the stack, never on the heap.
        let mut buf = heapless::Vec::<u8, MAX_ANSWER>::new();
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && !buf.is_full() {
            s.set_read_timeout(Some(left(deadline)?))?;
            let want = chunk.len().min(MAX_ANSWER - buf.len());
            match s.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    if buf.extend_from_slice(&chunk[..n]).is_err() {
                        break; // cannot happen: `want` fits
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(parse_status(&buf))
    })();
    match status {
        Ok(Ok(code)) if (200..400).contains(&code) => Outcome::pass(format!("{what}: {code}")),
        Ok(Ok(code)) => Outcome::fail(format!("{what}: status {code}")),
        Ok(Err(why)) => Outcome::fail(format!("{what}: {why}")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::fail(format!("{what}: no answer within {timeout:?}"))
        }
        Err(e) => Outcome::fail(format!("{what}: {e}")),
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(answer: &[u8]) -> Result<u16, String> {
    let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {text:?}")),
        _ if answer.is_empty() => Err("closed without an answer".into()),
        _ => Err(format!("not an HTTP answer: {:?}", clip(text.to_string()))),
    }
}

/// Runs `cmd` (its own process group, no input or output) and waits at most `timeout`: exit
/// status 0 passes; on the deadline the group is killed.
pub fn command(mut cmd: Command, name: &str, timeout: Duration) -> Outcome {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("command {name}: {e}")),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Outcome::pass(format!("command {name}: ok")),
            Ok(Some(st)) => {
                return Outcome::fail(format!(
                    "command {name}: {}",
                    super::shared::describe_exit(st)
                ))
            }
            Ok(None) if Instant::now() >= deadline => {
                super::shared::signal_group(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                return Outcome::fail(format!("command {name}: still running after {timeout:?}"));
            }
            // Bounded polling: a probe command is short and runs every few seconds at most.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Outcome::fail(format!("command {name}: wait: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut req = [0u8; 512];
                let _ = s.read(&mut req);
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn http_passes_on_2xx_3xx_only() {
        let t = Duration::from_secs(5);
        assert!(http(serve_once(b"HTTP/1.1 204 No Content\r\n\r\n"), "/", t).ok);
        assert!(http(serve_once(b"HTTP/1.0 302 Found\r\n\r\n"), "/", t).ok);
        let o = http(serve_once(b"HTTP/1.1 503 Busy\r\n\r\n"), "/h", t);
        assert!(!o.ok && o.message.ends_with("/h: status 503"), "{o:?}");
        let o = http(serve_once(b"SSH-2.0-x\r\n"), "/", t);
        assert!(!o.ok && o.message.contains("not an HTTP answer"), "{o:?}");
        let o = http(serve_once(b""), "/", t);
        assert!(!o.ok && o.message.contains("without an answer"), "{o:?}");
    }

    #[test]
    fn a_silent_server_fails_at_the_deadline_and_an_endless_one_is_capped() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        // Accepted by the kernel's backlog, never answered.
        let o = http(addr, "/", Duration::from_millis(300));
        assert!(!o.ok && o.message.contains("no answer"), "{o:?}");
        drop(l);
        // An answer without a line end: the probe stops reading at MAX_ANSWER.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let junk = [b'x'; 4096];
                while s.write_all(&junk).is_ok() {}
            }
        });
        let o = http(addr, "/", Duration::from_secs(5));
        assert!(!o.ok && o.message.contains("not an HTTP answer"), "{o:?}");
        assert!(o.message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn tcp_and_command() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(tcp(addr, Duration::from_secs(2)).ok);
        drop(l);
        let o = tcp(addr, Duration::from_secs(2));
        assert!(!o.ok && o.message.contains("refused"), "{o:?}");
        let t = Duration::from_secs(5);
        assert!(command(Command::new("/bin/true"), "true", t).ok);
        let o = command(Command::new("/bin/false"), "false", t);
        assert!(!o.ok && o.message.contains("status 1"), "{o:?}");
        let mut slow = Command::new("/bin/sleep");
        slow.arg("30");
        let o = command(slow, "sleep", Duration::from_millis(200));
        assert!(!o.ok && o.message.contains("still running"), "{o:?}");
    }
}
