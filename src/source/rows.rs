//! Rows as records, for every database kind: a query runs in a thread of
//! its own and writes one JSON object per row into a pipe, so its rows
//! stream like NDJSON lines and memory does not grow with the result.
//! A kind says only how to run its query and what each value is
//! ([`Rows`]); the columns' checks, the records, the row numbers in
//! messages, `json_columns` and the deadline's verdict are written here
//! once (and what each kind of value becomes, in [`super::values`]).

use std::io::{self, BufWriter, PipeWriter, Write};
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
    /// Writing to the pipe failed.
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

/// Opens a rows kind: runs it in a thread, behind a pipe of NDJSON records.
/// `place` is how messages name the source (`sqlite shop.db`).
pub fn stream<R: Rows>(place: String, rows: R, deadline: Deadline) -> Result<Opened> {
    let (reader, writer) = io::pipe().map_err(|e| Error::source(format!("{place}: {e}")))?;
    let reader = deadline.reader(reader);
    let named = place.clone();
    let json = rows.json_columns();
    let thread = std::thread::spawn(move || {
        let place = named;
        let mut out = RowWriter::new(writer, json);
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

/// Turns a query's columns and rows into NDJSON records.
pub struct RowWriter {
    out: Box<dyn Write + Send>,
    names: Vec<String>,
    json: JsonColumns,
    /// Per column: its text values are parsed as JSON.
    parse: Vec<bool>,
    /// Rows begun so far: the row a [`RowError::Bad`] was found in.
    rows: u64,
    line: Vec<u8>,
}

impl RowWriter {
    fn new(out: PipeWriter, json: JsonColumns) -> RowWriter {
        RowWriter::to(Box::new(out), json)
    }

    fn to(out: Box<dyn Write + Send>, json: JsonColumns) -> RowWriter {
        RowWriter {
            out: Box::new(BufWriter::with_capacity(1 << 16, out)),
            names: Vec::new(),
            json,
            parse: Vec::new(),
            rows: 0,
            line: Vec::with_capacity(1024),
        }
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
        self.rows += 1;
        let mut obj = Map::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            let v = match value(i, name)? {
                Value::String(text) if self.parse[i] => {
                    values::json_text(name, &text).map_err(RowError::Bad)?
                }
                v => v,
            };
            obj.insert(name.clone(), v);
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, &obj).expect("writing to memory");
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(RowError::Write)
    }

    fn flush(&mut self) -> Result<(), RowError> {
        self.out.flush().map_err(RowError::Write)
    }
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
