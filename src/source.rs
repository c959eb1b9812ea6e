//! Where a feed's export lives: a file, an HTTP(S) URL, a command's output
//! or an SQLite query. Every kind is opened as a byte stream in the feed's
//! format, so the splitter and the diff serve them all the same way; what
//! can only be judged once the stream is read (a command's exit status, a
//! query's error, an HTTP response's validators) waits in [`End`].
//!
//! Every source but a file is read under a [`Deadline`]
//! (`source_timeout_secs`, guarantee 8), so a source that trickles or
//! never ends cannot hold the run, and with it the lock, for ever.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::config::{Feed, Format, SourceSpec};
use crate::error::{Error, Result};

/// HTTP validators from the last complete read of a feed's source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The outcome of opening a source.
// One per feed and run, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// An HTTP source answered 304: nothing changed since the last read.
    Unchanged,
    Stream(Source),
}

/// An open source, ready to be split into records.
pub struct Source {
    pub reader: Box<dyn Read + Send>,
    pub format: Format,
    /// Bytes to expect, when known (for the progress bar).
    pub size: Option<u64>,
    pub end: End,
    /// A file source, to read records back from by offset (the spool then
    /// keeps offsets instead of copies).
    pub file: Option<SourceFile>,
}

/// A second handle on a file source, and what it looked like when opened.
pub struct SourceFile {
    file: File,
    seen: (u64, Option<std::time::SystemTime>),
}

impl SourceFile {
    pub fn new(file: &File) -> Option<SourceFile> {
        let meta = file.metadata().ok()?;
        Some(SourceFile {
            file: file.try_clone().ok()?,
            seen: (meta.len(), meta.modified().ok()),
        })
    }

    /// The open file, if its contents are still those that were read. (A
    /// file replaced by a rename keeps its old contents under our handle; a
    /// file rewritten in place does not.)
    pub fn unchanged(&self) -> Option<&File> {
        let meta = self.file.metadata().ok()?;
        ((meta.len(), meta.modified().ok()) == self.seen).then_some(&self.file)
    }
}

/// What must be checked once the stream has been read.
pub enum End {
    Nothing,
    /// An HTTP response's validators, to store if the feed's run completes.
    Http(Validators),
    /// A command: its exit status, and the tail of its stderr for errors;
    /// its watchdog stays armed until the command has been waited for.
    Command {
        child: Child,
        command: String,
        stderr: JoinHandle<Vec<u8>>,
        deadline: Deadline,
        watchdog: Watchdog,
    },
    /// The thread running an SQLite query.
    Query(JoinHandle<Result<()>>),
}

/// How much of a failing command's stderr is shown.
const STDERR_TAIL: usize = 2048;

/// What one needs to open a source besides the feed: the process's HTTP
/// agent, the validators of the last read, the config file's folder
/// (commands run there) and `source_timeout_secs`.
pub struct Context<'a> {
    pub agent: &'a ureq::Agent,
    pub validators: Option<Validators>,
    pub workdir: &'a Path,
    pub timeout: Duration,
}

/// The bound on one read of a source, from its opening to the end of its
/// stream, whatever the source does meanwhile: send a byte a second,
/// fall silent, or never exit. The stream checks it on every read
/// ([`Deadline::reader`]); what could block a read past it is cut off at
/// the deadline by the source's own means — ureq's global timeout for
/// HTTP, a [`Watchdog`] that kills a command's process group or
/// interrupts a query (a database source cancels its query on the server
/// the same way).
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    /// Set by a watchdog that cut the source off, in case its clock ran a
    /// little ahead of ours.
    cut: Arc<AtomicBool>,
}

impl Deadline {
    pub fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn passed(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || Instant::now() >= self.at
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn reason(&self) -> String {
        format!(
            "did not finish within `source_timeout_secs` ({} s)",
            self.limit.as_secs()
        )
    }

    /// The source error for `what` (the source as messages name it).
    pub fn error(&self, what: &str) -> Error {
        Error::source(format!("{what}: {}", self.reason()))
    }

    /// `reader`, failing once the deadline has passed: a read after it,
    /// and an end or error that the cut-off caused.
    pub fn reader<R: Read + Send + 'static>(&self, reader: R) -> Box<dyn Read + Send> {
        Box::new(Timed {
            inner: reader,
            deadline: self.clone(),
        })
    }

    /// Runs `cut` at the deadline, unless the watchdog is dropped first.
    pub fn watch(&self, cut: impl FnOnce() + Send + 'static) -> Watchdog {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let deadline = self.clone();
        let thread = std::thread::spawn(move || {
            let mut wait = deadline.remaining();
            // Dropping the sender wakes us with `Disconnected`.
            while let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(wait) {
                wait = deadline.remaining();
                if wait.is_zero() {
                    deadline.cut.store(true, Ordering::SeqCst);
                    cut();
                    return;
                }
            }
        });
        Watchdog {
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

/// A thread waiting for a deadline; dropping it disarms it.
pub struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Timed<R> {
    inner: R,
    deadline: Deadline,
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let late = || io::Error::new(io::ErrorKind::TimedOut, self.deadline.reason());
        if self.deadline.passed() {
            return Err(late());
        }
        match self.inner.read(buf) {
            Ok(n) if n > 0 => Ok(n),
            // A killed command's pipe ends, a timed-out HTTP body fails:
            // either way the deadline is the news, not the end or error.
            _ if self.deadline.passed() => Err(late()),
            other => other,
        }
    }
}

impl Source {
    pub fn open(feed: &Feed, cx: &Context<'_>) -> Result<Opened> {
        // A file cannot stall; the other kinds are read under the deadline.
        let deadline = Deadline::after(cx.timeout);
        let stream = match &feed.source {
            SourceSpec::File(path) => {
                let file = File::open(path)
                    .map_err(|e| Error::source(format!("{}: cannot open: {e}", path.display())))?;
                Source {
                    size: file.metadata().ok().map(|m| m.len()),
                    file: SourceFile::new(&file),
                    reader: Box::new(file),
                    format: feed.format.unwrap_or(Format::Ndjson),
                    end: End::Nothing,
                }
            }
            SourceSpec::Http(url) => return open_http(feed, url, cx, deadline),
            SourceSpec::Command(command) => open_command(feed, command, cx.workdir, deadline)?,
            SourceSpec::Sqlite { db, query } => open_query(db, query, deadline)?,
        };
        Ok(Opened::Stream(stream))
    }
}

impl End {
    /// Judges the source after its stream was read to the end (`complete`)
    /// or abandoned because of a bad record. Returns validators to store.
    pub fn finish(self, complete: bool) -> Result<Option<Validators>> {
        match self {
            End::Nothing => Ok(None),
            End::Http(v) => Ok(Some(v)),
            End::Command {
                mut child,
                command,
                stderr,
                deadline,
                watchdog,
            } => {
                // Both waits end by the deadline at the latest: the watchdog
                // kills the whole group, and with it whatever holds stderr.
                let status = child
                    .wait()
                    .map_err(|e| Error::source(format!("command `{command}`: {e}")))?;
                let tail = stderr.join().unwrap_or_default();
                drop(watchdog);
                if deadline.passed() {
                    return Err(Error::source(format!(
                        "command `{command}`: {}; it was killed with its process group",
                        deadline.reason()
                    )));
                }
                if status.success() {
                    return Ok(None);
                }
                // Abandoned early, the command may die of the closed pipe;
                // that is our doing, not its failure.
                use std::os::unix::process::ExitStatusExt;
                if !complete && status.signal() == Some(13) {
                    return Ok(None);
                }
                let tail = String::from_utf8_lossy(&tail);
                let tail = tail.trim();
                let how = match (status.code(), status.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (None, Some(s)) => format!("was killed by signal {s}"),
                    _ => "failed".into(),
                };
                Err(Error::source(if tail.is_empty() {
                    format!("command `{command}` {how}")
                } else {
                    format!("command `{command}` {how}: {tail}")
                }))
            }
            End::Query(thread) => match thread.join() {
                Ok(r) => r.map(|_| None),
                Err(_) => Err(Error::source("the SQLite query thread panicked")),
            },
        }
    }
}

fn open_http(feed: &Feed, url: &str, cx: &Context<'_>, deadline: Deadline) -> Result<Opened> {
    let timeout = Some(feed.target.timeout.max(std::time::Duration::from_secs(30)));
    let mut req = cx
        .agent
        .get(url)
        .config()
        .max_redirects(5)
        // Counts from now to the body's last byte, so a silent peer is cut
        // off at the deadline, not at the next per-read timeout.
        .timeout_global(Some(deadline.remaining()))
        .timeout_connect(timeout)
        .timeout_recv_response(timeout)
        .timeout_per_read(timeout)
        .build();
    if let Some(v) = &cx.validators {
        if let Some(tag) = &v.etag {
            req = req.header("If-None-Match", tag);
        }
        if let Some(lm) = &v.last_modified {
            req = req.header("If-Modified-Since", lm);
        }
    }
    if let Some(var) = &feed.source_token_env {
        req = req.header("Authorization", format!("Bearer {}", secret(var, feed)?));
    }
    if let Some(var) = &feed.source_api_key_env {
        req = req.header(feed.source_api_key_header.as_str(), secret(var, feed)?);
    }
    let mut resp = req.call().map_err(|e| {
        if deadline.passed() {
            deadline.error(url)
        } else {
            Error::source(format!("{url}: {e}"))
        }
    })?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Opened::Unchanged);
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if !(200..300).contains(&status) {
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        if deadline.passed() {
            return Err(deadline.error(url));
        }
        let excerpt: String = body.trim().chars().take(300).collect();
        return Err(Error::source(format!("{url}: HTTP {status}: {excerpt}")));
    }
    let content_type = header("content-type").unwrap_or_default();
    let format = feed
        .format
        .or_else(|| format_from_content_type(&content_type))
        .ok_or_else(|| {
            Error::source(format!(
                "{url}: cannot tell the format from the URL or the content type `{content_type}`; set `format`"
            ))
        })?;
    let validators = Validators {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    let size = header("content-length").and_then(|v| v.parse().ok());
    let reader = resp.into_body().into_reader();
    Ok(Opened::Stream(Source {
        reader: deadline.reader(reader),
        format,
        size,
        end: End::Http(validators),
        file: None,
    }))
}

fn secret(var: &str, feed: &Feed) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::config(format!(
            "environment variable {var} (named by feeds.{}) is not set or empty",
            feed.name
        ))),
    }
}

pub fn format_from_content_type(ct: &str) -> Option<Format> {
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Some(Format::Ndjson),
        "application/json" | "text/json" => Some(Format::Json),
        "text/csv" | "application/csv" => Some(Format::Csv),
        _ => None,
    }
}

fn open_command(feed: &Feed, command: &str, workdir: &Path, deadline: Deadline) -> Result<Source> {
    // Its own process group, so that the watchdog reaches everything the
    // command started (`sh -c` children, their background jobs), whatever
    // holds the pipes.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .process_group(0)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::source(format!("command `{command}`: cannot start: {e}")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    // Drain stderr as it comes (a full pipe would stall the command) and
    // keep its tail for the error message.
    let stderr = std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        tail
    });
    let group = child.id() as libc::pid_t;
    // The group outlives its leader while any member lives, and its id is
    // not reused until then; the watchdog is disarmed once the command has
    // been waited for.
    let watchdog = deadline.watch(move || unsafe {
        libc::kill(-group, libc::SIGKILL);
    });
    Ok(Source {
        reader: deadline.reader(stdout),
        format: feed.format.unwrap_or(Format::Ndjson),
        size: None,
        file: None,
        end: End::Command {
            child,
            command: command.to_string(),
            stderr,
            deadline,
            watchdog,
        },
    })
}

/// Runs the query on its own read-only connection in a thread that writes
/// one JSON object per row into a pipe, so rows stream like NDJSON lines.
fn open_query(db: &Path, query: &str, deadline: Deadline) -> Result<Source> {
    if !db.exists() {
        return Err(Error::source(format!(
            "sqlite {}: no such file",
            db.display()
        )));
    }
    let (reader, writer) =
        io::pipe().map_err(|e| Error::source(format!("sqlite {}: {e}", db.display())))?;
    let (db, query) = (db.to_path_buf(), query.to_string());
    let reader = deadline.reader(reader);
    let thread = std::thread::spawn(move || {
        let place = format!("sqlite {}", db.display());
        let result = rows_as_ndjson(&db, &query, writer, &deadline);
        if deadline.passed() {
            return Err(deadline.error(&place));
        }
        match result {
            Ok(()) => Ok(()),
            // The reader stopped early (a bad record); it reports that.
            Err(RowError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(RowError::Write(e)) => Err(Error::source(format!("{place}: {e}"))),
            Err(RowError::Sql(e)) => Err(Error::source(format!("{place}: {e}"))),
            Err(RowError::Row(n, why)) => Err(Error::source(format!("{place}: row {n}: {why}"))),
        }
    });
    Ok(Source {
        reader,
        format: Format::Ndjson,
        size: None,
        end: End::Query(thread),
        file: None,
    })
}

enum RowError {
    Sql(rusqlite::Error),
    Write(io::Error),
    Row(u64, String),
}

fn rows_as_ndjson(
    db: &Path,
    query: &str,
    writer: io::PipeWriter,
    deadline: &Deadline,
) -> Result<(), RowError> {
    use rusqlite::types::ValueRef;
    use rusqlite::{Connection, OpenFlags};
    let conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(RowError::Sql)?;
    // A query still running at the deadline is stopped inside SQLite.
    let handle = conn.get_interrupt_handle();
    let _watchdog = deadline.watch(move || handle.interrupt());
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(RowError::Sql)?;
    conn.execute_batch("PRAGMA query_only = ON")
        .map_err(RowError::Sql)?;
    let mut stmt = conn.prepare(query).map_err(RowError::Sql)?;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(RowError::Row(
                0,
                format!("the query names column `{n}` twice"),
            ));
        }
    }
    let mut out = io::BufWriter::with_capacity(1 << 16, writer);
    let mut rows = stmt.query([]).map_err(RowError::Sql)?;
    let mut n = 0u64;
    let mut line = Vec::with_capacity(1024);
    while let Some(row) = rows.next().map_err(RowError::Sql)? {
        n += 1;
        let mut obj = serde_json::Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i).map_err(RowError::Sql)? {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(i) => i.into(),
                ValueRef::Real(f) => serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
                ValueRef::Text(t) => serde_json::Value::String(
                    String::from_utf8(t.to_vec())
                        .map_err(|_| RowError::Row(n, format!("column `{name}` is not UTF-8")))?,
                ),
                ValueRef::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
            };
            obj.insert(name.clone(), v);
        }
        line.clear();
        serde_json::to_writer(&mut line, &obj).expect("writing to memory");
        line.push(b'\n');
        out.write_all(&line).map_err(RowError::Write)?;
    }
    out.flush().map_err(RowError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            format_from_content_type("application/x-ndjson; charset=utf-8"),
            Some(Format::Ndjson)
        );
        assert_eq!(format_from_content_type("text/csv"), Some(Format::Csv));
        assert_eq!(
            format_from_content_type("application/json"),
            Some(Format::Json)
        );
        assert_eq!(format_from_content_type("text/html"), None);
    }

    #[test]
    fn a_deadline_fails_the_stream_once_passed_and_a_dropped_watchdog_never_fires() {
        let deadline = Deadline::after(Duration::from_secs(3600));
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        drop(deadline.watch(move || flag.store(true, Ordering::SeqCst)));
        assert!(!fired.load(Ordering::SeqCst));
        let mut r = deadline.reader(&b"abc"[..]);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"abc");

        let deadline = Deadline::after(Duration::ZERO);
        let _armed = deadline.watch(|| {});
        let e = deadline.reader(&b"abc"[..]).read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("`source_timeout_secs` (0 s)"), "{e}");
    }
}
