//! Rows as records, for every database kind: a query runs in a thread of
//! its own and renders one JSON object per row into blocks of NDJSON
//! lines, handed to the reader through a bounded channel, so its rows
//! stream like NDJSON lines and memory does not grow with the result.
//! (Rendering straight into a reused block, not through a pipe or a
//! `serde_json::Map` per row, is what keeps a database source near the
//! speed of its client: DESIGN.md, "Performance".)
//! A kind says only how to run its query and what each value is
//! ([`Rows`]); the columns' checks, the records, the row numbers in
//! messages, `json_columns` and the deadline's verdict are written here
//! once (and what each kind of value becomes, in [`super::values`]).

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use super::values::{self, JsonColumns};
use super::{Deadline, End, Finish, Opened, Source};
use crate::config::Format;
use crate::error::{Error, Result};

/// A query whose result rows become records: what a database kind
/// implements.
pub trait Rows: Send + 'static {
    /// Runs the query, giving [`RowWriter::columns`] its columns and then
    /// [`RowWriter::row`] each row. It must end by `deadline`: a kind arms
    /// a watchdog ([`Deadline::watch`]) that stops the query, on the server
    /// for a database server.
    fn run(self, deadline: &Deadline, out: &mut RowWriter) -> Result<(), RowError>;

    /// The columns whose text values are JSON documents (`json_columns`).
    fn json_columns(&self) -> JsonColumns {
        JsonColumns::default()
    }
}

/// One column of a result as a kind describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The server types it JSON, so its values are documents already and
    /// `json_columns` does not parse them again.
    pub typed_json: bool,
}

/// Why a query's rows could not all become records.
#[derive(Debug)]
pub enum RowError {
    /// The database's own error (SQL, connection, interrupted), its
    /// message as the database gave it.
    Query(String),
    /// The result cannot be records (a column named twice, a value with no
    /// JSON form); messages name the row it was found in.
    Bad(String),
    /// Handing the records to the reader failed (`BrokenPipe`: it
    /// stopped reading).
    Write(io::Error),
}

impl RowError {
    /// The database's own error.
    pub fn query(e: impl std::fmt::Display) -> RowError {
        RowError::Query(e.to_string())
    }

    /// The error a database kind's `doctor` check reports for a failure
    /// before any row (connecting, preparing, the result's columns): the
    /// deadline's own error once it has passed, whatever the driver said.
    pub fn before_rows(self, deadline: &Deadline, place: &str) -> Error {
        if deadline.passed() {
            return deadline.error(place);
        }
        self.into_error(place, 0)
            .unwrap_or_else(|| Error::source(format!("{place}: stopped")))
    }

    /// The source error, `place` naming the source and `rows` the rows
    /// begun when it happened; `None` when the reader stopped early (a bad
    /// record), which the reader reports.
    pub fn into_error(self, place: &str, rows: u64) -> Option<Error> {
        match self {
            RowError::Write(e) if e.kind() == io::ErrorKind::BrokenPipe => None,
            RowError::Write(e) => Some(Error::source(format!("{place}: {e}"))),
            RowError::Query(e) => Some(Error::source(format!("{place}: {e}"))),
            // Before the first row: the result's shape, not a row, is wrong.
            RowError::Bad(why) if rows == 0 => Some(Error::source(format!("{place}: {why}"))),
            RowError::Bad(why) => Some(Error::source(format!("{place}: row {rows}: {why}"))),
        }
    }
}

/// Checks a result's column names, which become the records' fields: a
/// name given twice is an error. (A database kind's `doctor` check calls
/// it on the prepared statement's columns.)
pub fn check_columns(names: &[String]) -> Result<(), RowError> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(RowError::Bad(format!("the query names column `{n}` twice")));
        }
    }
    Ok(())
}

/// Checks a result's columns as records need them: no name twice, and
/// every column `json` names present. (A database kind's `doctor` check
/// calls it on the prepared statement's columns.)
pub fn check_result(names: &[String], json: &JsonColumns) -> Result<(), RowError> {
    check_columns(names)?;
    json.check(names).map_err(RowError::Bad)
}

/// Bytes of NDJSON lines per block handed to the reader: a little under
/// the splitter's read buffer (1 MB), so one read takes a whole block and
/// the diff's workers get blocks as large as a file gives them.
const BLOCK: usize = 960 << 10;

/// Full blocks waiting for the reader: bounds the memory a fast query
/// can run ahead by.
const BLOCKS_AHEAD: usize = 8;

/// Opens a rows kind: runs it in a thread, behind a stream of NDJSON
/// records. `place` is how messages name the source (`sqlite shop.db`).
pub fn stream<R: Rows>(place: String, rows: R, deadline: Deadline) -> Result<Opened> {
    let (full_tx, full_rx) = mpsc::sync_channel(BLOCKS_AHEAD);
    let (free_tx, free_rx) = mpsc::channel();
    let reader = deadline.reader(BlockReader {
        full: full_rx,
        free: free_tx,
        block: Vec::new(),
        pos: 0,
    });
    let named = place.clone();
    let json = rows.json_columns();
    let thread = std::thread::spawn(move || {
        let place = named;
        let mut out = RowWriter::new(
            Sink::Blocks {
                full: full_tx,
                free: free_rx,
            },
            json,
        );
        let result = rows.run(&deadline, &mut out).and_then(|()| out.flush());
        let n = out.rows;
        // The reader sees the end of the stream now, not when we return.
        drop(out);
        if deadline.passed() {
            return Err(deadline.error(&place));
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => e.into_error(&place, n).map_or(Ok(()), Err),
        }
    });
    Ok(Opened::Stream(Source {
        reader,
        format: Format::Ndjson,
        size: None,
        end: End::Finish(Box::new(Query { place, thread })),
        file: None,
    }))
}

/// The reading end of a query's records: its blocks, in order, as one
/// byte stream, each read block given back to the writer for reuse. It
/// ends when the query thread drops its [`RowWriter`].
struct BlockReader {
    full: Receiver<Vec<u8>>,
    free: Sender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.block.len() {
            let Ok(next) = self.full.recv() else {
                return Ok(0); // the writer is done (or gone)
            };
            let used = std::mem::replace(&mut self.block, next);
            self.pos = 0;
            if used.capacity() > 0 {
                let _ = self.free.send(used); // the writer may be gone
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where a [`RowWriter`]'s blocks go.
enum Sink {
    /// To a [`BlockReader`], reusing the blocks it has read.
    Blocks {
        full: SyncSender<Vec<u8>>,
        free: Receiver<Vec<u8>>,
    },
    /// To any writer (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Write(Box<dyn Write + Send>),
}

/// The thread running a query; its result is the source's verdict.
struct Query {
    place: String,
    thread: JoinHandle<Result<()>>,
}

impl Finish for Query {
    fn finish(self: Box<Self>, _complete: bool) -> Result<()> {
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => Err(Error::source(format!(
                "{}: the query thread panicked",
                self.place
            ))),
        }
    }
}

/// One value of a row, as a kind gives it to [`RowWriter::row_cells`]:
/// the common values without a [`serde_json::Value`] of their own, text
/// borrowed from the row as the driver decoded it.
#[derive(Debug)]
pub enum Cell<'r> {
    Null,
    Int(i64),
    UInt(u64),
    Str(&'r str),
    String(String),
    Value(Value),
}

impl From<Value> for Cell<'_> {
    fn from(v: Value) -> Self {
        Cell::Value(v)
    }
}

/// Turns a query's columns and rows into NDJSON records: each row is
/// rendered once, straight into the block being filled, exactly as
/// `serde_json` writes the row's object (its fields in the order of a
/// [`serde_json::Map`]).
pub struct RowWriter {
    sink: Sink,
    names: Vec<String>,
    json: JsonColumns,
    /// Per column: its text values are parsed as JSON.
    parse: Vec<bool>,
    /// The columns in the order of the record's fields, each with what
    /// precedes its value (`{"name":` for the first, `,"name":` after).
    fields: Vec<(usize, Vec<u8>)>,
    /// Rows begun so far: the row a [`RowError::Bad`] was found in.
    rows: u64,
    /// The block being filled: whole lines only, between rows.
    block: Vec<u8>,
}

impl RowWriter {
    fn new(sink: Sink, json: JsonColumns) -> RowWriter {
        RowWriter {
            sink,
            names: Vec::new(),
            json,
            parse: Vec::new(),
            fields: Vec::new(),
            rows: 0,
            block: Vec::with_capacity(BLOCK + (64 << 10)),
        }
    }

    #[cfg(test)]
    fn to(out: Box<dyn Write + Send>, json: JsonColumns) -> RowWriter {
        RowWriter::new(Sink::Write(out), json)
    }

    /// The result's column names, which become the records' fields; a
    /// name given twice is an error.
    pub fn columns(&mut self, names: Vec<String>) -> Result<(), RowError> {
        self.typed_columns(
            names
                .into_iter()
                .map(|name| Column {
                    name,
                    typed_json: false,
                })
                .collect(),
        )
    }

    /// The result's columns, with what the server says of their types;
    /// checked as [`check_result`] does.
    pub fn typed_columns(&mut self, columns: Vec<Column>) -> Result<(), RowError> {
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        check_result(&names, &self.json)?;
        self.parse = columns
            .iter()
            .map(|c| !c.typed_json && self.json.names(&c.name))
            .collect();
        // The fields in the order a `Map` of the row iterates them, so the
        // record is byte for byte the one serializing that map would give.
        let order: Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Value::from(i)))
            .collect();
        self.fields = order
            .iter()
            .enumerate()
            .map(|(k, (name, i))| {
                let mut before = vec![if k == 0 { b'{' } else { b',' }];
                serde_json::to_writer(&mut before, name).expect("writing to memory");
                before.push(b':');
                (i.as_u64().expect("an index") as usize, before)
            })
            .collect();
        self.names = names;
        Ok(())
    }

    /// Whether column `i`'s text values are parsed as JSON documents (so
    /// a kind gives them as text, a binary string included).
    pub fn parses_json(&self, i: usize) -> bool {
        self.parse.get(i).copied().unwrap_or(false)
    }

    /// Writes one row as a record; `value(i, name)` gives the value of
    /// column `i`.
    pub fn row(
        &mut self,
        mut value: impl FnMut(usize, &str) -> Result<Value, RowError>,
    ) -> Result<(), RowError> {
        self.row_cells(|i, name| value(i, name).map(Cell::Value))
    }

    /// Writes one row as a record; `value(i, name)` gives the value of
    /// column `i` (asked for in the order of the record's fields, each
    /// once).
    pub fn row_cells<'r>(
        &mut self,
        mut value: impl FnMut(usize, &str) -> Result<Cell<'r>, RowError>,
    ) -> Result<(), RowError> {
        self.rows += 1;
        let start = self.block.len();
        if let Err(e) = self.render(&mut value) {
            self.block.truncate(start);
            return Err(e);
        }
        if self.block.len() >= BLOCK {
            self.send()?;
        }
        Ok(())
    }

    fn render<'r>(
        &mut self,
        value: &mut impl FnMut(usize, &str) -> Result<Cell<'r>, RowError>,
    ) -> Result<(), RowError> {
        if self.fields.is_empty() {
            self.block.extend_from_slice(b"{}\n");
            return Ok(());
        }
        for (i, before) in &self.fields {
            let (i, name) = (*i, self.names[*i].as_str());
            self.block.extend_from_slice(before);
            let out = &mut self.block;
            match value(i, name)? {
                Cell::Null => out.extend_from_slice(b"null"),
                Cell::Int(n) => serde_json::to_writer(&mut *out, &n).expect("writing to memory"),
                Cell::UInt(n) => serde_json::to_writer(&mut *out, &n).expect("writing to memory"),
                Cell::Str(text) => string(out, name, text, self.parse[i])?,
                Cell::String(text) => string(out, name, &text, self.parse[i])?,
                Cell::Value(Value::String(text)) => string(out, name, &text, self.parse[i])?,
                Cell::Value(v) => serde_json::to_writer(&mut *out, &v).expect("writing to memory"),
            }
        }
        self.block.extend_from_slice(b"}\n");
        Ok(())
    }

    /// Hands the block's lines to the reader.
    fn send(&mut self) -> Result<(), RowError> {
        match &mut self.sink {
            Sink::Blocks { full, free } => {
                let next = free
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BLOCK + (64 << 10)));
                let block = std::mem::replace(&mut self.block, next);
                full.send(block)
                    .map_err(|_| RowError::Write(io::ErrorKind::BrokenPipe.into()))?;
            }
            Sink::Write(w) => {
                w.write_all(&self.block).map_err(RowError::Write)?;
                self.block.clear();
            }
        }
        self.block.clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RowError> {
        if !self.block.is_empty() {
            self.send()?;
        }
        if let Sink::Write(w) = &mut self.sink {
            w.flush().map_err(RowError::Write)?;
        }
        Ok(())
    }
}

impl Drop for RowWriter {
    /// The rows written before a failure still reach the reader, as from
    /// a buffered pipe.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A text value: a JSON string, or, in a `json_columns` column, the
/// document it holds.
fn string(out: &mut Vec<u8>, name: &str, text: &str, parse: bool) -> Result<(), RowError> {
    if parse {
        let doc = values::json_text(name, text).map_err(RowError::Bad)?;
        serde_json::to_writer(&mut *out, &doc).expect("writing to memory");
    } else {
        values::write_json_string(out, text);
    }
    Ok(())
}

/// `doctor`'s fix for a database source that cannot be read: the same for
/// every database kind.
pub fn fix(feed: &crate::config::Feed) -> String {
    format!(
        "check the URL in {}, that the server is up, the user's SELECT grant and the query; \
         `feedsync sync --feed {} --dry-run` shows the same error",
        feed.source.describe(),
        feed.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rows_become_one_record_a_line_with_the_columns_as_fields() {
        let bytes = Shared::default();
        let mut out = RowWriter::to(Box::new(bytes.clone()), JsonColumns::default());
        out.columns(vec!["sku".into(), "qty".into()]).unwrap();
        out.row(|i, _| Ok(if i == 0 { "A".into() } else { 3.into() }))
            .unwrap();
        out.row(|i, name| Ok(if i == 0 { name.into() } else { Value::Null }))
            .unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(bytes.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"qty\":3,\"sku\":\"A\"}\n{\"qty\":null,\"sku\":\"sku\"}\n"
        );
        assert_eq!(out.rows, 2);
    }

    #[test]
    fn a_column_named_twice_is_refused_before_any_row() {
        let mut out = RowWriter::to(Box::new(io::sink()), JsonColumns::default());
        let e = out
            .columns(vec!["sku".into(), "name".into(), "sku".into()])
            .unwrap_err();
        assert!(
            matches!(&e, RowError::Bad(why) if why.contains("`sku` twice")),
            "{e:?}"
        );
        assert_eq!(out.rows, 0);
    }

    #[test]
    fn json_columns_are_parsed_unless_the_server_typed_them_json() {
        let bytes = Shared::default();
        let json = JsonColumns::new(&["attrs".into(), "doc".into()]);
        let mut out = RowWriter::to(Box::new(bytes.clone()), json.clone());
        let col = |name: &str, typed_json| Column {
            name: name.into(),
            typed_json,
        };
        out.typed_columns(vec![
            col("sku", false),
            col("attrs", false),
            col("doc", true),
        ])
        .unwrap();
        assert!(!out.parses_json(0) && out.parses_json(1) && !out.parses_json(2));
        let row = |attrs: &'static str| {
            move |i: usize, _: &str| {
                Ok(match i {
                    0 => Value::from("A"),
                    1 => Value::from(attrs),
                    _ => Value::from("typed"),
                })
            }
        };
        out.row(row(r#"{"color":"red"}"#)).unwrap();
        out.row(row("")).unwrap();
        let e = out.row(row("{oops")).unwrap_err();
        let e = e
            .into_error("mysql://shop:***@db/shop", 3)
            .unwrap()
            .to_string();
        assert!(
            e.contains("row 3") && e.contains("`attrs`") && e.contains("JSON"),
            "{e}"
        );
        out.flush().unwrap();
        let text = String::from_utf8(bytes.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"attrs\":{\"color\":\"red\"},\"doc\":\"typed\",\"sku\":\"A\"}\n{\"attrs\":null,\"doc\":\"typed\",\"sku\":\"A\"}\n"
        );

        let mut out = RowWriter::to(Box::new(io::sink()), json);
        let e = out
            .columns(vec!["sku".into(), "attributes".into()])
            .unwrap_err();
        let e = e.into_error("db", 0).unwrap().to_string();
        assert!(e.contains("`attrs`") && !e.contains("row"), "{e}");
    }
}
