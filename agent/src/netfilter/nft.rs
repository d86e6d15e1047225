//! Runs the `nft` tool: the absolute path found once when the agent starts, the script on its
//! standard input (`nft -f -`), no shell, an empty environment, a deadline. The child gets only
//! its three standard descriptors: every descriptor the agent opens is close-on-exec (the
//! standard library's default), so no socket or state file leaks into it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault::{Fault, FaultCode};

/// Where firmware images and distributions install `nft`, searched in this order.
pub const SEARCH: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];
/// How long one `nft -f` may take: a table of a few hundred rules loads in milliseconds; a tool
/// stuck on a lock must not hold an app's start for ever.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The `nft` tool at an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    path: PathBuf,
    deadline: Duration,
}

impl Nft {
    /// `explicit` when given (it must be an absolute path to a file), else the first of
    /// [`SEARCH`] that exists; None when there is none.
    pub fn locate(explicit: Option<&Path>) -> Option<Nft> {
        let path = match explicit {
            Some(p) => (p.is_absolute() && p.is_file()).then(|| p.to_path_buf())?,
            None => SEARCH.iter().map(PathBuf::from).find(|p| p.is_file())?,
        };
        Some(Nft {
            path,
            deadline: DEADLINE,
        })
    }

    /// The tool's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `nft -f -` with `script`; a fault (7003) with nft's own message when it refuses
    /// the script, cannot run, or misses the deadline (then it is killed).
    pub fn apply(&self, script: &str) -> Result<(), Fault> {
        self.run(&["-f", "-"], script).map(|_| ())
    }

    /// Runs `nft <args>` with `stdin`, returns its standard output.
    pub fn run(&self, args: &[&str], stdin: &str) -> Result<String, Fault> {
        let fail = |why: String| {
            Fault::new(
                FaultCode::Internal,
                format!("{} {}: {why}", self.path.display(), args.join(" ")),
            )
        };
        let mut child = Command::new(&self.path)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        // Each pipe on its own thread: a large script or a chatty error cannot block the wait.
        let mut input = child.stdin.take();
        let script = stdin.to_string();
        let writer = std::thread::spawn(move || {
            if let Some(i) = input.as_mut() {
                let _ = i.write_all(script.as_bytes());
            }
        });
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_string(&mut s);
                }
                s
            })
        };
        let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
        let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if start.elapsed() >= self.deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("no answer within {:?}, killed", self.deadline));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(e.to_string()),
            }
        };
        // Killed: its pipes may stay open in a child of its own, so the threads are left to
        // end when those close rather than joined.
        let st = status.map_err(fail)?;
        let _ = writer.join();
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        match st.success() {
            true => Ok(out),
            false => Err(fail(format!("{st}: {}", err.trim()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_wants_an_absolute_file() {
        assert_eq!(Nft::locate(Some(Path::new("nft"))), None);
        assert_eq!(Nft::locate(Some(Path::new("/nonexistent/nft"))), None);
        let sh = Nft::locate(Some(Path::new("/bin/sh"))).unwrap();
        assert_eq!(sh.path(), Path::new("/bin/sh"));
    }

    #[test]
    fn deadline_kills_and_errors_carry_stderr() {
        // /bin/sh stands in for a tool: `-c` runs the "args".
        let mut sh = Nft::locate(Some(Path::new("/bin/sh"))).unwrap();
        sh.deadline = Duration::from_millis(200);
        let t = Instant::now();
        let f = sh.run(&["-c", "sleep 5"], "").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(f.message.contains("killed"), "{f}");
        let f = sh.run(&["-c", "echo nope >&2; exit 1"], "").unwrap_err();
        assert!(f.message.ends_with(": nope"), "{f}");
        assert_eq!(sh.run(&["-c", "cat"], "in").unwrap(), "in");
        // An empty environment: nothing of the agent's own leaks into the tool.
        assert_eq!(
            sh.run(&["-c", "echo ${HOME-unset}"], "").unwrap(),
            "unset\n"
        );
    }
}
