//! Export formats: splitting a byte stream into records (NDJSON lines, JSON
//! array elements, RFC 4180 CSV rows) and decoding one record into a JSON
//! object.
//!
//! Splitting and decoding are separate on purpose: the diff hashes each
//! record's raw bytes first and decodes only the records whose bytes it has
//! not seen before, so splitting must be cheap and must not parse. Memory is
//! bounded by the largest record, never by the size of the stream.

use std::io::{self, Read};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::Format;
use crate::record::{Item, Rules};

/// One record as it stands in the source.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub bytes: &'a [u8],
    /// 1-based line where the record starts.
    pub line: u64,
    /// Byte offset of `bytes` in the stream.
    pub offset: u64,
}

/// Why a stream could not be split; the caller adds the source's name.
#[derive(Debug)]
pub enum SplitError {
    Io(io::Error),
    /// Malformed at a place: (line, byte offset, reason).
    Malformed(u64, u64, String),
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::Io(e) => write!(f, "read error: {e}"),
            SplitError::Malformed(line, offset, why) => {
                write!(f, "line {line} (byte {offset}): {why}")
            }
        }
    }
}

impl From<io::Error> for SplitError {
    fn from(e: io::Error) -> Self {
        SplitError::Io(e)
    }
}

/// Turns one record's bytes into a JSON object. Cheap to clone and share
/// between threads.
#[derive(Debug, Clone)]
pub enum Decoder {
    Json,
    Csv(Arc<[String]>),
}

impl Decoder {
    /// Builds a record's item. Also returns the JSON text to send for it
    /// when that is not the record's own bytes: JSON records travel as the
    /// source wrote them, CSV rows as a JSON object of strings.
    pub fn item(&self, bytes: &[u8], rules: &Rules) -> Result<(Item, Option<String>), String> {
        match self {
            Decoder::Json => Ok((rules.from_json(bytes)?, None)),
            Decoder::Csv(header) => {
                let mut fields = Vec::with_capacity(header.len());
                split_csv_fields(bytes, &mut fields)?;
                if fields.len() != header.len() {
                    return Err(format!(
                        "{} fields, but the header has {}",
                        fields.len(),
                        header.len()
                    ));
                }
                let mut map = Map::new();
                for (name, field) in header.iter().zip(fields) {
                    let s = String::from_utf8(field)
                        .map_err(|_| format!("field `{name}` is not valid UTF-8"))?;
                    map.insert(name.clone(), Value::String(s));
                }
                let value = Value::Object(map);
                let item = rules.from_value(&value)?;
                Ok((item, Some(value.to_string())))
            }
        }
    }

    /// Bytes that change the meaning of a record's raw bytes: for CSV the
    /// header (the same row under another header is another item).
    pub fn fingerprint(&self) -> Vec<u8> {
        match self {
            Decoder::Json => b"json".to_vec(),
            Decoder::Csv(h) => {
                let mut v = b"csv".to_vec();
                for name in h.iter() {
                    v.push(0);
                    v.extend_from_slice(name.as_bytes());
                }
                v
            }
        }
    }
}

/// Splits a stream into records of one format.
pub struct Splitter {
    buf: Buffer,
    format: Format,
    csv_header: Option<Arc<[String]>>,
    json: JsonState,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JsonState {
    /// Before the first byte.
    Start,
    /// Inside the top-level object, before a key or `}`.
    ObjectKey { first: bool },
    /// Inside a records array, before a value or `]`.
    Array { top: bool, first: bool },
    /// Done; only white space may follow.
    End,
}

impl Splitter {
    /// Starts splitting. For CSV this reads the header row.
    pub fn new(reader: Box<dyn Read + Send>, format: Format) -> Result<Splitter, SplitError> {
        let mut s = Splitter {
            buf: Buffer::new(reader),
            format,
            csv_header: None,
            json: JsonState::Start,
        };
        s.buf.skip_bom()?;
        if format == Format::Csv {
            s.read_csv_header()?;
        }
        Ok(s)
    }

    pub fn decoder(&self) -> Decoder {
        match &self.csv_header {
            Some(h) => Decoder::Csv(h.clone()),
            None => Decoder::Json,
        }
    }

    /// Bytes read so far, for progress.
    pub fn position(&self) -> u64 {
        self.buf.consumed
    }

    pub fn next_record(&mut self) -> Result<Option<RawRecord<'_>>, SplitError> {
        let found = match self.format {
            Format::Ndjson => self.next_line()?,
            Format::Csv => self.next_csv()?,
            Format::Json => self.next_json()?,
        };
        Ok(found.map(|f| RawRecord {
            bytes: &self.buf.bytes()[f.start..f.start + f.len],
            line: f.line,
            offset: f.offset,
        }))
    }

    fn next_line(&mut self) -> Result<Option<Found>, SplitError> {
        loop {
            let data = self.buf.data();
            let (len, newline) = match memchr::memchr(b'\n', data) {
                Some(i) => (i, true),
                None if self.buf.eof => (data.len(), false),
                None => {
                    self.buf.fill()?;
                    continue;
                }
            };
            if len == 0 && !newline {
                return Ok(None);
            }
            let mut found = self.buf.found(len);
            self.buf.advance(len + newline as usize, newline as u64);
            // Trim white space (and a CR) around the line.
            let line = &self.buf.bytes()[found.start..found.start + found.len];
            let lead = line.len() - line.trim_ascii_start().len();
            let trimmed = line.trim_ascii().len();
            if trimmed == 0 {
                continue; // blank lines are allowed
            }
            found.start += lead;
            found.offset += lead as u64;
            found.len = trimmed;
            return Ok(Some(found));
        }
    }

    /// Finds the end of the CSV record at the buffer's start: the first
    /// newline outside quotes. Returns (record length, terminator length).
    fn csv_extent(&mut self) -> Result<Option<(usize, usize)>, SplitError> {
        let mut scan = 0;
        let mut quoted = false;
        loop {
            let data = &self.buf.data()[scan..];
            match memchr::memchr2(b'"', b'\n', data) {
                Some(i) if data[i] == b'"' => {
                    quoted = !quoted;
                    scan += i + 1;
                }
                Some(i) if !quoted => return Ok(Some((scan + i, 1))),
                Some(i) => scan += i + 1,
                None if self.buf.eof => {
                    let len = self.buf.data().len();
                    if quoted {
                        return Err(SplitError::Malformed(
                            self.buf.line,
                            self.buf.consumed,
                            "the file ends inside a quoted field (truncated?)".into(),
                        ));
                    }
                    return Ok((len > 0).then_some((len, 0)));
                }
                None => {
                    scan = self.buf.data().len();
                    self.buf.fill()?;
                }
            }
        }
    }

    fn next_csv(&mut self) -> Result<Option<Found>, SplitError> {
        loop {
            let Some((len, term)) = self.csv_extent()? else {
                return Ok(None);
            };
            let mut found = self.buf.found(len);
            let newlines = memchr::memchr_iter(b'\n', &self.buf.data()[..len + term]).count();
            self.buf.advance(len + term, newlines as u64);
            if self.buf.bytes()[..found.start + found.len].ends_with(b"\r") {
                found.len -= 1;
            }
            if found.len == 0 {
                continue;
            }
            return Ok(Some(found));
        }
    }

    fn read_csv_header(&mut self) -> Result<(), SplitError> {
        let (line, offset) = (self.buf.line, self.buf.consumed);
        let bad = |why: String| SplitError::Malformed(line, offset, why);
        let Some(found) = self.next_csv()? else {
            // A 0-byte export has no header and no records: an empty export.
            self.csv_header = Some(Arc::from(Vec::new()));
            return Ok(());
        };
        let mut fields = Vec::new();
        let header = &self.buf.bytes()[found.start..found.start + found.len];
        split_csv_fields(header, &mut fields).map_err(|e| bad(format!("header: {e}")))?;
        let mut names: Vec<String> = Vec::with_capacity(fields.len());
        for f in fields {
            let name = String::from_utf8(f).map_err(|_| bad("header is not valid UTF-8".into()))?;
            if names.contains(&name) {
                return Err(bad(format!("header names column `{name}` twice")));
            }
            names.push(name);
        }
        self.csv_header = Some(Arc::from(names));
        Ok(())
    }

    fn next_json(&mut self) -> Result<Option<Found>, SplitError> {
        loop {
            let Some(b) = self.buf.peek_non_ws()? else {
                return match self.json {
                    JsonState::End => Ok(None),
                    // An empty file is an empty export, like a 0-byte CSV.
                    JsonState::Start if self.buf.consumed == 0 => Ok(None),
                    _ => Err(self.malformed("the file ends early (truncated?)")),
                };
            };
            match self.json {
                JsonState::Start => {
                    self.buf.advance(1, 0);
                    self.json = match b {
                        b'[' => JsonState::Array {
                            top: true,
                            first: true,
                        },
                        b'{' => JsonState::ObjectKey { first: true },
                        _ => {
                            return Err(self.malformed(
                                "expected an array of objects or an object with an `items` array",
                            ));
                        }
                    };
                }
                JsonState::End => return Err(self.malformed("unexpected data after the end")),
                JsonState::ObjectKey { first } => {
                    if b == b'}' {
                        self.buf.advance(1, 0);
                        self.json = JsonState::End;
                        continue;
                    }
                    if !first {
                        if b != b',' {
                            return Err(self.malformed("expected `,` or `}`"));
                        }
                        self.buf.advance(1, 0);
                        if self.buf.peek_non_ws()?.is_none() {
                            continue; // reported as truncated above
                        }
                    }
                    let key = self.take_value()?;
                    let key: String = serde_json::from_slice(&key)
                        .map_err(|_| self.malformed("expected a string key"))?;
                    match self.buf.peek_non_ws()? {
                        Some(b':') => self.buf.advance(1, 0),
                        Some(_) => return Err(self.malformed("expected `:`")),
                        None => continue,
                    }
                    if key == "items" {
                        match self.buf.peek_non_ws()? {
                            Some(b'[') => {
                                self.buf.advance(1, 0);
                                self.json = JsonState::Array {
                                    top: false,
                                    first: true,
                                };
                            }
                            Some(_) => return Err(self.malformed("`items` is not an array")),
                            None => continue,
                        }
                    } else {
                        if self.buf.peek_non_ws()?.is_none() {
                            continue;
                        }
                        self.take_value()?; // other keys are ignored
                        self.json = JsonState::ObjectKey { first: false };
                    }
                }
                JsonState::Array { top, first } => {
                    if b == b']' {
                        self.buf.advance(1, 0);
                        self.json = if top {
                            JsonState::End
                        } else {
                            JsonState::ObjectKey { first: false }
                        };
                        continue;
                    }
                    if !first {
                        if b != b',' {
                            return Err(self.malformed("expected `,` or `]` between records"));
                        }
                        self.buf.advance(1, 0);
                        if self.buf.peek_non_ws()?.is_none() {
                            continue;
                        }
                    }
                    self.json = JsonState::Array { top, first: false };
                    let len = self.value_len()?;
                    let found = self.buf.found(len);
                    let newlines =
                        memchr::memchr_iter(b'\n', &self.buf.data()[..len]).count() as u64;
                    self.buf.advance(len, newlines);
                    return Ok(Some(found));
                }
            }
        }
    }

    fn malformed(&self, why: &str) -> SplitError {
        SplitError::Malformed(self.buf.line, self.buf.consumed, why.into())
    }

    /// Consumes one JSON value and returns its bytes.
    fn take_value(&mut self) -> Result<Vec<u8>, SplitError> {
        let len = self.value_len()?;
        let bytes = self.buf.data()[..len].to_vec();
        let newlines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        self.buf.advance(len, newlines);
        Ok(bytes)
    }

    /// The length of the JSON value at the buffer's start, reading more
    /// until it is complete. Structure only; the decoder validates.
    fn value_len(&mut self) -> Result<usize, SplitError> {
        let mut st = ValueScan::default();
        loop {
            match st.scan(self.buf.data(), self.buf.eof) {
                Some(0) => return Err(self.malformed("expected a value")),
                Some(n) => return Ok(n),
                None => {}
            }
            if self.buf.eof {
                return Err(self.malformed("the file ends inside a record (truncated?)"));
            }
            self.buf.fill()?;
        }
    }
}

/// Where a record lies in the buffer, and where it started in the stream.
struct Found {
    start: usize,
    len: usize,
    line: u64,
    offset: u64,
}

/// Resumable scan for the end of one JSON value.
#[derive(Default)]
struct ValueScan {
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    started: bool,
}

impl ValueScan {
    fn scan(&mut self, data: &[u8], eof: bool) -> Option<usize> {
        while self.pos < data.len() {
            let b = data[self.pos];
            self.pos += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.pos);
                    }
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.pos);
                    }
                }
                b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => {
                    // The end of a scalar (the delimiter is not part of it).
                    return Some(self.pos - 1);
                }
                _ => {}
            }
            self.started = true;
        }
        // A scalar that runs to the end of the file is complete.
        (eof && self.depth == 0 && !self.in_string && self.started).then_some(self.pos)
    }
}

/// Splits one CSV record (RFC 4180) into raw fields.
fn split_csv_fields(rec: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let mut i = 0;
    loop {
        if rec.get(i) == Some(&b'"') {
            i += 1;
            let mut field = Vec::new();
            loop {
                let Some(q) = memchr::memchr(b'"', &rec[i..]) else {
                    return Err(format!("field {} has no closing quote", out.len() + 1));
                };
                field.extend_from_slice(&rec[i..i + q]);
                i += q + 1;
                if rec.get(i) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(field);
            match rec.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => {
                    return Err(format!(
                        "field {} has text after its closing quote",
                        out.len()
                    ));
                }
            }
        } else {
            match memchr::memchr(b',', &rec[i..]) {
                Some(c) => {
                    out.push(rec[i..i + c].to_vec());
                    i += c + 1;
                }
                None => {
                    out.push(rec[i..].to_vec());
                    return Ok(());
                }
            }
        }
    }
}

/// A read buffer that keeps one partial record across refills and counts
/// lines and bytes for error messages.
struct Buffer {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes of the stream before `buf[start]`.
    consumed: u64,
    /// Line number at `buf[start]`.
    line: u64,
}

const CHUNK: usize = 1 << 20;

impl Buffer {
    fn new(reader: Box<dyn Read + Send>) -> Buffer {
        Buffer {
            reader,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            consumed: 0,
            line: 1,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The next `len` bytes as a record, before they are consumed.
    fn found(&self, len: usize) -> Found {
        Found {
            start: self.start,
            len,
            line: self.line,
            offset: self.consumed,
        }
    }

    fn advance(&mut self, n: usize, newlines: u64) {
        self.start += n;
        self.consumed += n as u64;
        self.line += newlines;
    }

    /// Reads more bytes, keeping the unconsumed ones; grows the buffer when
    /// a single record fills it.
    fn fill(&mut self) -> io::Result<()> {
        if self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn skip_bom(&mut self) -> io::Result<()> {
        while self.data().len() < 3 && !self.eof {
            self.fill()?;
        }
        if self.data().starts_with(b"\xEF\xBB\xBF") {
            self.start += 3;
            self.consumed += 3;
        }
        Ok(())
    }

    /// The next byte that is not JSON white space, without consuming it.
    fn peek_non_ws(&mut self) -> io::Result<Option<u8>> {
        loop {
            while let Some(&b) = self.data().first() {
                match b {
                    b' ' | b'\t' | b'\r' => self.advance(1, 0),
                    b'\n' => self.advance(1, 1),
                    _ => return Ok(Some(b)),
                }
            }
            if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV record as the JSON object that would be sent.
    fn decode(dec: &Decoder, bytes: &[u8]) -> Result<Value, String> {
        let key = match dec {
            Decoder::Csv(h) => h[0].clone(),
            Decoder::Json => "sku".into(),
        };
        let rules = Rules::build(vec![key], vec![], vec![], None);
        let (_, data) = dec.item(bytes, &rules)?;
        Ok(serde_json::from_str(&data.unwrap()).unwrap())
    }

    fn split(format: Format, text: &str) -> Result<Vec<(String, u64)>, String> {
        let mut s = Splitter::new(Box::new(io::Cursor::new(text.as_bytes().to_vec())), format)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(r) = s.next_record().map_err(|e| e.to_string())? {
            out.push((String::from_utf8(r.bytes.to_vec()).unwrap(), r.line));
        }
        Ok(out)
    }

    #[test]
    fn ndjson_lines_blank_lines_and_crlf() {
        let got = split(Format::Ndjson, "{\"a\":1}\r\n\n  \n{\"a\":2}").unwrap();
        assert_eq!(got, vec![("{\"a\":1}".into(), 1), ("{\"a\":2}".into(), 4)]);
    }

    #[test]
    fn csv_quoted_newlines_and_quotes() {
        let text = "sku,desc\r\nA,\"line one\nline \"\"two\"\"\"\r\nB,plain\n";
        let mut s = Splitter::new(
            Box::new(io::Cursor::new(text.as_bytes().to_vec())),
            Format::Csv,
        )
        .unwrap();
        let dec = s.decoder();
        let r = s.next_record().unwrap().unwrap();
        assert_eq!(r.line, 2);
        let v = decode(&dec, r.bytes).unwrap();
        assert_eq!(v["desc"], "line one\nline \"two\"");
        let r = s.next_record().unwrap().unwrap();
        assert_eq!(r.line, 4);
        assert_eq!(decode(&dec, r.bytes).unwrap()["sku"], "B");
        assert!(s.next_record().unwrap().is_none());
    }

    #[test]
    fn csv_truncated_inside_quotes_is_an_error() {
        let e = split(Format::Csv, "sku,desc\nA,\"unfinished\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn csv_field_count_must_match_header() {
        let dec = Decoder::Csv(Arc::from(vec!["a".to_string(), "b".to_string()]));
        assert!(decode(&dec, b"1,2,3").unwrap_err().contains("3 fields"));
        assert_eq!(decode(&dec, b"1,").unwrap()["b"], "");
    }

    #[test]
    fn json_array_and_items_object() {
        let got = split(Format::Json, " [ {\"a\":\"]\"} ,\n{\"b\":[1,{}]} ] ").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "{\"a\":\"]\"}");
        assert_eq!(got[1].1, 2);
        let got = split(
            Format::Json,
            "{\"meta\":{\"x\":[1]},\"items\":[{\"a\":1}],\"n\":3}",
        )
        .unwrap();
        assert_eq!(got, vec![("{\"a\":1}".into(), 1)]);
        assert!(split(Format::Json, "[{\"a\":1},{\"a\":").is_err());
        assert!(split(Format::Json, "[{\"a\":1}").is_err());
        assert!(split(Format::Json, "").unwrap().is_empty());
    }

    #[test]
    fn records_larger_than_the_buffer() {
        let big = "x".repeat(3 * CHUNK);
        let text = format!("{{\"a\":\"{big}\"}}\n{{\"a\":1}}\n");
        let got = split(Format::Ndjson, &text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), big.len() + 8);
        let got = split(Format::Json, &format!("[{}]", text.replace('\n', ","))).unwrap_err();
        assert!(got.contains("expected"), "{got}");
    }
}
