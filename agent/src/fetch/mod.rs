//! Downloads to flash: http:// and https:// (rustls; the firmware's CA bundle plus an optional extra CA),
//! streamed through a bounded buffer, capped in size, resumed after an interruption (within one
//! call by reconnecting with `Range`, across a crash or reboot from `<dest>.part`), verified
//! against an expected sha256.
//!
//! Every transfer (download or head probe) runs under an overall deadline (scaled by the size the
//! server announces, with a floor) and a minimum average rate, enforced on the socket
//! (`pace`): a server that drips bytes is cut, with an error that names the URL and the bound.
//!
//! Faults: 7004 bad URL (credentials included) or options, 7033 unreachable / TLS / HTTP error /
//! transfer that stops making progress or is too slow, 7005 over the size cap or flash full, 7035 digest
//! mismatch. On any fault the partial file is removed: a failed download leaves nothing behind.

mod http;
mod pace;
mod resolve;
mod tls;

pub use tls::SYSTEM_CA_BUNDLE;
pub mod url;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fault::{Fault, FaultCode};
use crate::store::{atomic_write, fsync_dir, io_fault, persist_point, read_json, Digest};
pub use pace::TransferLimits;
use pace::{is_too_slow, Pace};
pub use resolve::resolve;
pub use url::Url;

/// The buffer between socket and flash: the only per-download memory that scales with speed.
const BUFFER: usize = 16 * 1024;
/// The partial file is synced (and a crash point passed) every this many bytes.
const SYNC_EVERY: u64 = 8 << 20;
/// Progress is reported at most every this many bytes (and at the end).
const PROGRESS_EVERY: u64 = 256 << 10;
/// A connection per attempt, bounded even when each one makes a little progress.
const MAX_TOTAL_ATTEMPTS: u32 = 100;

/// How one download runs: bounds, expected digest, TLS trust, timeouts and retries.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Largest download accepted, bytes.
    pub max_bytes: u64,
    /// sha256 the whole file must have.
    pub expected_sha256: Option<Digest>,
    /// PEM file with extra trusted CA certificates (besides the system bundle).
    pub extra_ca_file: Option<PathBuf>,
    /// The firmware's public CA bundle ([`SYSTEM_CA_BUNDLE`]; missing: not used).
    pub system_ca_bundle: PathBuf,
    /// Longest wait for the TCP connect, per address tried.
    pub connect_timeout: Duration,
    /// Longest wait for any single read or write on the connection.
    pub io_timeout: Duration,
    /// Consecutive attempts without a new byte before giving up.
    pub max_attempts: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// Most redirects followed.
    pub max_redirects: u32,
    /// Overall deadline and minimum rate of the whole transfer, all attempts included.
    pub limits: TransferLimits,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 256 << 20,
            expected_sha256: None,
            extra_ca_file: None,
            system_ca_bundle: PathBuf::from(SYSTEM_CA_BUNDLE),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_delay: Duration::from_secs(1),
            max_redirects: 5,
            limits: TransferLimits::default(),
        }
    }
}

/// A completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size, bytes.
    pub size: u64,
    /// sha256 of the whole file.
    pub sha256: Digest,
    /// Bytes taken from a `.part` left by an earlier, interrupted run.
    pub resumed_from: u64,
    /// Connections made.
    pub attempts: u32,
}

/// `<dest>.part`: where the bytes go until the download is complete and verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// A stable name in `dir` for the package at `url`: the same URL always maps to the same file
/// (and `.part`), so a download cut by a crash resumes when the operation runs again.
pub fn download_path(dir: &Path, url: &str) -> PathBuf {
    dir.join(format!("{}.cpkg", &Digest::of(url.as_bytes()).hex()[..16]))
}

/// Removes a download and what an interrupted one left (`.part`, `.part.meta`): for an
/// operation that is rolled back instead of resumed.
pub fn discard_download(dest: &Path) -> Result<(), Fault> {
    for path in [dest.to_path_buf(), part_path(dest), meta_path(dest)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_fault("remove", &path, e)),
        }
    }
    match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

/// `<dest>.part.meta`: which URL (and server validator) the `.part` belongs to.
pub fn meta_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part.meta");
    PathBuf::from(p)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    /// ETag or Last-Modified of the response the part came from, sent back as `If-Range`.
    validator: Option<String>,
}

/// Downloads `url` to `dest`, calling `progress(bytes_so_far, total)` as it goes.
pub fn fetch(
    url: &str,
    dest: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched, Fault> {
    // Checked before anything touches the network or the flash.
    let parsed = Url::parse(url)?;
    let result = Download::start(&parsed, dest, opts).and_then(|mut d| d.run(progress));
    if result.is_err() {
        let _ = fs::remove_file(part_path(dest));
        let _ = fs::remove_file(meta_path(dest));
        if let Some(dir) = dest.parent() {
            let _ = fsync_dir(dir);
        }
    }
    result
}

/// Sends a GET for `url` with `headers`, following redirects (never from https to http).
/// Returns the URL that answered, its response head and the body reader. `tls` caches the
/// client config across calls; `attempts` counts connections.
fn request(
    url: &Url,
    opts: &FetchOptions,
    pace: &Arc<Pace>,
    tls: &mut Option<Arc<ClientConfig>>,
    headers: &[(&str, String)],
    attempts: &mut u32,
) -> Result<(Url, http::ResponseHead, BufReader<http::Stream>), AttemptError> {
    let mut target = url.clone();
    let mut redirects = 0;
    loop {
        let config = match target.scheme {
            url::Scheme::Https => {
                if tls.is_none() {
                    *tls = Some(
                        tls::client_config(&opts.system_ca_bundle, opts.extra_ca_file.as_deref())
                            .map_err(AttemptError::Fatal)?,
                    );
                }
                tls.clone()
            }
            url::Scheme::Http => None,
        };
        pace.remaining()
            .map_err(|e| AttemptError::TooSlow(download_failure(format!("{target}: {e}"))))?;
        *attempts += 1;
        let stream = http::connect(
            &target,
            config.as_ref(),
            opts.connect_timeout,
            opts.io_timeout,
            pace,
        )
        .map_err(|e| match pace.remaining() {
            Err(late) => AttemptError::TooSlow(download_failure(format!("{target}: {late}"))),
            Ok(_) => classify_connect(&target, e),
        })?;
        let (head, reader) = http::get(stream, &target, headers)
            .map_err(|e| classify_io(&target, e, opts.io_timeout))?;
        if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            return Ok((target, head, reader));
        }
        redirects += 1;
        if redirects > opts.max_redirects {
            return Err(AttemptError::Fatal(download_failure(format!(
                "{url}: more than {} redirects",
                opts.max_redirects
            ))));
        }
        let location = head.location.as_deref().ok_or_else(|| {
            AttemptError::Fatal(download_failure(format!(
                "{target}: redirect without Location"
            )))
        })?;
        let next = target.join(location).map_err(AttemptError::Fatal)?;
        if target.scheme == url::Scheme::Https && next.scheme == url::Scheme::Http {
            return Err(AttemptError::Fatal(download_failure(format!(
                "{target}: refusing a redirect from https to http"
            ))));
        }
        target = next;
    }
}

/// The first `max` bytes of `url` (a `Range` request; a server that ignores it is read only
/// that far), without touching the flash, within `opts.limits` (a probe's deadline is its
/// floor: the size is `max`). One connection, no retries. `Ok(None)` on a failure that says
/// nothing about the server's pace (refused, HTTP error, unexpected range), which the caller
/// treats as "unknown" and leaves to the real download to report; an error when the server was
/// too slow (deadline or minimum rate), naming the URL: the download would be no faster.
pub fn fetch_head(url: &str, opts: &FetchOptions, max: usize) -> Result<Option<Vec<u8>>, Fault> {
    let Ok(parsed) = Url::parse(url) else {
        return Ok(None);
    };
    let pace = Pace::new(opts.limits, "head probe");
    let headers = [("Range", format!("bytes=0-{}", max.saturating_sub(1)))];
    let (_, head, reader) = match request(&parsed, opts, &pace, &mut None, &headers, &mut 0) {
        Ok(r) => r,
        Err(AttemptError::TooSlow(f)) => return Err(f),
        Err(_) => return Ok(None),
    };
    let from_start = match head.status {
        200 => true,
        206 => head
            .content_range
            .as_deref()
            .and_then(http::parse_content_range)
            .is_some_and(|(first, _, _)| first == 0),
        _ => false,
    };
    if !from_start {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(max.min(BUFFER));
    match http::Body::new(&head, reader)
        .take(max as u64)
        .read_to_end(&mut out)
    {
        Ok(_) => Ok(Some(out)),
        Err(e) if is_too_slow(&e) => Err(download_failure(format!("{parsed}: {e}"))),
        Err(_) => Ok(None),
    }
}

enum AttemptError {
    /// Worth another connection (dropped, timed out, refused).
    Retry(String),
    /// Final.
    Fatal(Fault),
    /// Final: the transfer's deadline passed or it went under the minimum rate.
    TooSlow(Fault),
}

fn download_failure(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::DownloadFailure, msg.into())
}

struct Download<'a> {
    url: Url,
    dest: &'a Path,
    part: PathBuf,
    opts: &'a FetchOptions,
    file: File,
    hasher: Sha256,
    len: u64,
    synced_len: u64,
    meta: PartMeta,
    resumed_from: u64,
    tls: Option<Arc<ClientConfig>>,
    attempts: u32,
    last_progress: u64,
    pace: Arc<Pace>,
}

impl<'a> Download<'a> {
    fn start(url: &Url, dest: &'a Path, opts: &'a FetchOptions) -> Result<Download<'a>, Fault> {
        let part = part_path(dest);
        let meta_file = meta_path(dest);
        let url_text = url.to_string();
        // Resume only a part of the same URL; anything else starts over.
        let meta: Option<PartMeta> = read_json(&meta_file, 4096).unwrap_or(None);
        let resumable = meta.as_ref().is_some_and(|m| m.url == url_text) && part.is_file();
        let meta = match meta {
            Some(m) if resumable => m,
            _ => {
                let m = PartMeta {
                    url: url_text,
                    validator: None,
                };
                atomic_write(&meta_file, &serde_json::to_vec(&m).unwrap_or_default())?;
                m
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!resumable)
            .open(&part)
            .map_err(|e| io_fault("open", &part, e))?;
        let mut d = Download {
            url: url.clone(),
            dest,
            part,
            opts,
            file,
            hasher: Sha256::new(),
            len: 0,
            synced_len: 0,
            meta,
            resumed_from: 0,
            tls: None,
            attempts: 0,
            last_progress: 0,
            pace: Pace::new(opts.limits, "download"),
        };
        if resumable {
            d.absorb_existing()?;
        }
        Ok(d)
    }

    /// Hashes what an earlier run left in the part, so the final digest covers all of it.
    fn absorb_existing(&mut self) -> Result<(), Fault> {
        let len = self
            .file
            .metadata()
            .map_err(|e| io_fault("stat", &self.part, e))?
            .len();
        if len > self.opts.max_bytes {
            return self.reset();
        }
        let mut buf = vec![0u8; BUFFER];
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_fault("read", &self.part, e))?;
        let mut done = 0u64;
        loop {
            let n = self
                .file
                .read(&mut buf)
                .map_err(|e| io_fault("read", &self.part, e))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            done += n as u64;
        }
        self.len = done;
        self.synced_len = done;
        self.resumed_from = done;
        Ok(())
    }

    /// Drops what was downloaded and starts from byte 0.
    fn reset(&mut self) -> Result<(), Fault> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| io_fault("truncate", &self.part, e))?;
        self.hasher = Sha256::new();
        self.len = 0;
        self.synced_len = 0;
        self.meta.validator = None;
        Ok(())
    }

    fn run(&mut self, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<Fetched, Fault> {
        let mut without_progress = 0;
        loop {
            let before = self.len;
            match self.attempt(progress) {
                Ok(()) => break,
                Err(AttemptError::Fatal(f)) | Err(AttemptError::TooSlow(f)) => return Err(f),
                Err(AttemptError::Retry(reason)) => {
                    without_progress = if self.len > before {
                        0
                    } else {
                        without_progress + 1
                    };
                    if without_progress >= self.opts.max_attempts.max(1)
                        || self.attempts >= MAX_TOTAL_ATTEMPTS
                    {
                        // `reason` names the URL of the last request (after redirects).
                        return Err(download_failure(format!(
                            "{reason} (gave up after {} attempts, {} bytes received)",
                            self.attempts, self.len
                        )));
                    }
                    let left = self.pace.remaining().map_err(|e| {
                        download_failure(format!(
                            "{}: {e} ({reason}; {} bytes received)",
                            self.url, self.len
                        ))
                    })?;
                    std::thread::sleep(self.opts.retry_delay.min(left));
                }
            }
        }
        self.finish()
    }

    fn attempt(&mut self, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<(), AttemptError> {
        let mut headers = Vec::new();
        if self.len > 0 {
            headers.push(("Range", format!("bytes={}-", self.len)));
            if let Some(v) = &self.meta.validator {
                headers.push(("If-Range", v.clone()));
            }
        }
        let (target, head, body) = request(
            &self.url,
            self.opts,
            &self.pace,
            &mut self.tls,
            &headers,
            &mut self.attempts,
        )?;

        let total = match head.status {
            200 => {
                if self.len > 0 {
                    // The server ignored the range or the file changed: start over.
                    self.reset().map_err(AttemptError::Fatal)?;
                }
                self.meta.validator = head.etag.clone().or(head.last_modified.clone());
                atomic_write(
                    &meta_path(self.dest),
                    &serde_json::to_vec(&self.meta).unwrap_or_default(),
                )
                .map_err(AttemptError::Fatal)?;
                head.content_length
            }
            206 => {
                let range = head
                    .content_range
                    .as_deref()
                    .and_then(http::parse_content_range);
                match range {
                    Some((first, last, total))
                        if first == self.len
                            && head.content_length.is_none_or(|n| n == last - first + 1) =>
                    {
                        total.or(Some(last + 1))
                    }
                    _ => {
                        self.reset().map_err(AttemptError::Fatal)?;
                        return Err(AttemptError::Retry(format!(
                            "{target}: unusable Content-Range, restarting"
                        )));
                    }
                }
            }
            416 if self.len > 0 => {
                self.reset().map_err(AttemptError::Fatal)?;
                return Err(AttemptError::Retry(format!(
                    "{target}: range not satisfiable, restarting"
                )));
            }
            status => {
                return Err(AttemptError::Fatal(download_failure(format!(
                    "{target}: HTTP {status} {}",
                    head.reason
                ))))
            }
        };
        if let Some(total) = total {
            self.check_cap(total).map_err(AttemptError::Fatal)?;
        }
        // The deadline scales with the size announced (the cap when none is).
        self.pace.size_known(total.unwrap_or(self.opts.max_bytes));
        progress(self.len, total);
        let mut body = http::Body::new(&head, body);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(classify_io(&target, e, self.opts.io_timeout)),
            };
            self.check_cap(self.len + n as u64)
                .map_err(AttemptError::Fatal)?;
            self.file
                .write_all(&buf[..n])
                .map_err(|e| AttemptError::Fatal(io_fault("write", &self.part, e)))?;
            self.hasher.update(&buf[..n]);
            self.len += n as u64;
            if self.len - self.synced_len >= SYNC_EVERY {
                self.file
                    .sync_data()
                    .map_err(|e| AttemptError::Fatal(io_fault("fsync", &self.part, e)))?;
                self.synced_len = self.len;
                persist_point("fetch.part:synced");
            }
            if self.len - self.last_progress >= PROGRESS_EVERY {
                self.last_progress = self.len;
                progress(self.len, total);
            }
        }
        if let Some(total) = total {
            if self.len != total {
                return Err(AttemptError::Retry(format!(
                    "{target}: body ended at byte {} of {total}",
                    self.len
                )));
            }
        }
        progress(self.len, total.or(Some(self.len)));
        Ok(())
    }

    fn check_cap(&self, size: u64) -> Result<(), Fault> {
        if size > self.opts.max_bytes {
            return Err(Fault::new(
                FaultCode::ResourcesExceeded,
                format!(
                    "{}: download of {size} bytes or more exceeds the {} byte cap",
                    self.url, self.opts.max_bytes
                ),
            ));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Fetched, Fault> {
        self.file
            .sync_all()
            .map_err(|e| io_fault("fsync", &self.part, e))?;
        let digest = Digest::from_bytes(std::mem::take(&mut self.hasher).finalize().into());
        if let Some(expected) = self.opts.expected_sha256 {
            if expected != digest {
                return Err(Fault::new(
                    FaultCode::CorruptData,
                    format!(
                        "{}: content hashes to {digest}, expected {expected}",
                        self.url
                    ),
                ));
            }
        }
        fs::rename(&self.part, self.dest).map_err(|e| io_fault("rename into", self.dest, e))?;
        persist_point("fetch:renamed");
        let _ = fs::remove_file(meta_path(self.dest));
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(dir)?;
        }
        Ok(Fetched {
            path: self.dest.to_path_buf(),
            size: self.len,
            sha256: digest,
            resumed_from: self.resumed_from,
            attempts: self.attempts,
        })
    }
}

fn classify_connect(url: &Url, reason: http::ConnectError) -> AttemptError {
    AttemptError::Retry(format!("{url}: {reason}"))
}

/// Timeouts and dropped connections are retried; a TLS failure (certificate, protocol) or a
/// malformed response will not get better by asking again.
fn classify_io(url: &Url, e: io::Error, io_timeout: Duration) -> AttemptError {
    if is_too_slow(&e) {
        // Deadline or minimum rate: final, and the message says which.
        return AttemptError::TooSlow(download_failure(format!("{url}: {e}")));
    }
    match e.kind() {
        io::ErrorKind::InvalidData => AttemptError::Fatal(download_failure(format!("{url}: {e}"))),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AttemptError::Retry(format!(
            "{url}: timed out (no data for {} ms)",
            io_timeout.as_millis()
        )),
        _ => AttemptError::Retry(format!("{url}: {e}")),
    }
}
