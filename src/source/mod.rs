//! Where a feed's export lives: a file, an HTTP(S) URL, a command's output
//! or a database query. Every kind is opened as a byte stream in the feed's
//! format, so the splitter and the diff serve them all the same way: a
//! file, a URL or a command gives its own bytes; a database kind gives rows,
//! which [`rows`] turns into NDJSON records. What can only be judged once
//! the stream is read (a command's exit status, a query's error, an HTTP
//! response's validators) waits in [`End`].
//!
//! Each kind is one file behind the one interface, [`Kind`]: how to open
//! it, and how `doctor` checks it. [`kind`] is where kinds are registered;
//! a new kind is one file and one line there. A database kind is picked by
//! its URL's scheme ([`dburl`]); the URL is read from the environment by
//! the commands that read sources, before they start
//! ([`check_environment`]), so a missing one changes nothing.
//!
//! Every source but a file is read under a [`Deadline`]
//! (`source_timeout_secs`, guarantee 8), so a source that trickles or
//! never ends cannot hold the run, and with it the lock, for ever.

mod command;
pub mod dburl;
mod deadline;
mod file;
mod http;
mod mysql;
mod postgres;
pub mod rows;
mod sqlite;
pub mod values;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub use dburl::DbUrl;
pub use deadline::{Deadline, Watchdog};
pub use file::SourceFile;
pub use http::format_from_content_type;

use crate::config::{Feed, Format, SourceSpec};
use crate::error::{Error, Result};
use crate::format::Splitter;

/// The registry of source kinds: the one place that maps a feed's
/// configured source to the code that reads it. A database source's URL
/// is read from the environment here; unset, malformed or of a scheme no
/// kind reads, it is a config error naming the variable.
pub fn kind(feed: &Feed) -> Result<Box<dyn Kind + '_>> {
    Ok(match &feed.source {
        SourceSpec::File(path) => Box::new(file::FileSource { path }),
        SourceSpec::Http(url) => Box::new(http::HttpSource { url }),
        SourceSpec::Command(command) => Box::new(command::CommandSource { command }),
        SourceSpec::Sqlite { db, query } => Box::new(sqlite::SqliteSource { db, query }),
        SourceSpec::Database {
            url_env,
            query,
            json_columns,
        } => {
            let url = DbUrl::from_env(url_env, &feed.name)?;
            let refuse = |why: String| {
                Error::config(format!(
                    "environment variable {url_env} (named by feeds.{}.database_url_env) {why}",
                    feed.name
                ))
            };
            match url.scheme.as_str() {
                "mysql" | "mariadb" => {
                    Box::new(mysql::MysqlSource::new(url, query, json_columns).map_err(refuse)?)
                }
                "postgres" | "postgresql" => Box::new(
                    postgres::PostgresSource::new(url, query, json_columns).map_err(refuse)?,
                ),
                other => {
                    return Err(refuse(format!(
                        "holds a {other}:// URL: use mysql://, mariadb://, postgres:// or postgresql://"
                    )));
                }
            }
        }
    })
}

/// Checks, before a command that reads sources starts, what its feeds'
/// sources need from the environment (a database source's URL), so a
/// missing one is a config error (exit 2) with nothing read or sent.
pub fn check_environment<'a>(feeds: impl IntoIterator<Item = &'a Feed>) -> Result<()> {
    for feed in feeds {
        kind(feed)?;
    }
    Ok(())
}

/// One kind of source. A byte-stream kind (file, HTTP, command) opens a
/// stream of its own bytes; a rows kind (a database) implements
/// [`rows::Rows`] and opens with [`rows::stream`].
pub trait Kind {
    /// Opens the source for one read, which must end by `deadline`. A
    /// kind that can block past it arms a [`Watchdog`] that cuts it off
    /// (kills the command, cancels the query on the server).
    fn open(&self, feed: &Feed, cx: &Context<'_>, deadline: Deadline) -> Result<Opened>;

    /// `doctor`'s check, which changes nothing: by default, opens the
    /// source and reads its first record. A kind with a cheaper sound check
    /// overrides it (a database server prepares the query without running
    /// it).
    fn check(&self, feed: &Feed, cx: &Context<'_>, max_record_bytes: usize) -> Result<Health> {
        let opened = self.open(feed, cx, Deadline::after(cx.timeout))?;
        first_record(feed, opened, max_record_bytes)
    }

    /// The one-line fix `doctor` suggests when [`Kind::check`] fails.
    fn fix(&self, feed: &Feed) -> String {
        format!(
            "check the source ({}) by hand; `feedsync sync --feed {} --dry-run` shows the same error",
            feed.source.describe(),
            feed.name
        )
    }
}

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

/// What must be checked once the stream has been read.
pub enum End {
    Nothing,
    /// An HTTP response's validators, to store if the feed's run completes.
    Validators(Validators),
    /// A judgement that waits for the stream's end.
    Finish(Box<dyn Finish>),
}

/// What a source can only judge once its stream was read or abandoned: a
/// command's exit status, a query thread's result.
pub trait Finish: Send {
    /// Waits for the source and judges it; `complete` as for
    /// [`End::finish`].
    fn finish(self: Box<Self>, complete: bool) -> Result<()>;
}

/// What one needs to open a source besides the feed: the process's HTTP
/// agent, the validators of the last read, the config file's folder
/// (commands run there) and `source_timeout_secs`.
pub struct Context<'a> {
    pub agent: &'a ureq::Agent,
    pub validators: Option<Validators>,
    pub workdir: &'a Path,
    pub timeout: Duration,
}

/// What `doctor` learned of a source it could read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It gave a record (or an HTTP 304: it was readable before).
    Readable,
    /// It was read to its end and held no record.
    Empty,
}

/// Why `doctor` could not read a source, and the fix it suggests.
pub struct Broken {
    pub error: Error,
    pub fix: String,
}

impl Source {
    /// Opens a feed's source for one read under `source_timeout_secs`.
    pub fn open(feed: &Feed, cx: &Context<'_>) -> Result<Opened> {
        kind(feed)?.open(feed, cx, Deadline::after(cx.timeout))
    }

    /// `doctor`'s check of a feed's source; changes nothing.
    pub fn check(
        feed: &Feed,
        cx: &Context<'_>,
        max_record_bytes: usize,
    ) -> std::result::Result<Health, Broken> {
        let kind = kind(feed).map_err(|error| Broken {
            error,
            fix: "set the environment variable as the message says".into(),
        })?;
        kind.check(feed, cx, max_record_bytes)
            .map_err(|error| Broken {
                error,
                fix: kind.fix(feed),
            })
    }
}

/// Reads an opened source's first record, then stops it (a command or
/// query is not read further).
fn first_record(feed: &Feed, opened: Opened, max_record_bytes: usize) -> Result<Health> {
    let Opened::Stream(s) = opened else {
        return Ok(Health::Readable); // 304: unchanged, so it was readable before
    };
    let first = Splitter::new(s.reader, s.format, max_record_bytes)
        .and_then(|mut records| records.next_record().map(|r| r.is_some()))
        .map_err(|e| Error::source(format!("{}: {e}", feed.source.describe())));
    let ended = s.end.finish(false);
    let first = first?;
    ended?;
    Ok(if first {
        Health::Readable
    } else {
        Health::Empty
    })
}

impl End {
    /// Judges the source after its stream was read to the end (`complete`)
    /// or abandoned because of a bad record. Returns validators to store.
    pub fn finish(self, complete: bool) -> Result<Option<Validators>> {
        match self {
            End::Nothing => Ok(None),
            End::Validators(v) => Ok(Some(v)),
            End::Finish(f) => f.finish(complete).map(|()| None),
        }
    }
}
