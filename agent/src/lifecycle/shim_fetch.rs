//! TEMPORARY: a minimal http:// GET used until the `fetch` module lands (then removed). No TLS,
//! no resume; capped, streamed to `downloads/`, digest checked.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fault::{Fault, FaultCode};
use crate::store::{Digest, Sha256Writer};

pub fn download(
    url: &str,
    dir: &Path,
    cap: u64,
    expected: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf, Fault> {
    let fail = |m: String| Fault::new(FaultCode::DownloadFailure, m);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail(format!("{url}: only http:// in this build")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| fail(format!("{authority}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("{authority}: no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .map_err(|e| fail(format!("{authority}: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| fail(format!("{authority}: {e}")))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| fail(e.to_string()))?;
    if !line.split_whitespace().nth(1).is_some_and(|c| c == "200") {
        return Err(fail(format!("{url}: HTTP {}", line.trim())));
    }
    let mut total = None;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| fail(e.to_string()))?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            total = v.trim().parse::<u64>().ok();
        }
    }
    if total.is_some_and(|t| t > cap) {
        return Err(Fault::new(
            FaultCode::CorruptData,
            format!("{url}: larger than the {cap} byte download cap"),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let out = dir.join("package.cpkg");
    let file = File::create(&out).map_err(|e| fail(e.to_string()))?;
    let mut w = Sha256Writer::new(file);
    let mut buf = [0u8; 16 * 1024];
    let mut got = 0u64;
    let res = (|| loop {
        let n = r.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        got += n as u64;
        if got > cap {
            return Err(Fault::new(
                FaultCode::CorruptData,
                format!("{url}: larger than the {cap} byte download cap"),
            ));
        }
        w.write_all(&buf[..n]).map_err(|e| fail(e.to_string()))?;
        progress(got, total);
    })();
    let (file, digest, _) = w.finish();
    drop(file);
    let res = res.and_then(|()| {
        if total.is_some_and(|t| t != got) {
            return Err(Fault::new(
                FaultCode::CorruptData,
                format!("{url}: truncated ({got} of {} bytes)", total.unwrap_or(0)),
            ));
        }
        if let Some(e) = expected {
            let want = Digest::parse(e, "expected digest")?;
            if want != digest {
                return Err(Fault::new(
                    FaultCode::CorruptData,
                    format!("{url}: digest {digest} does not match the expected {want}"),
                ));
            }
        }
        Ok(())
    });
    match res {
        Ok(()) => Ok(out),
        Err(f) => {
            let _ = fs::remove_file(&out);
            Err(f)
        }
    }
}
