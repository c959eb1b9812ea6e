//! Export formats: splitting a byte stream into records (NDJSON lines, JSON
//! array elements, RFC 4180 CSV rows) and decoding one record into a JSON
//! object.
//!
//! Splitting and decoding are separate on purpose: the diff hashes each
//! record's raw bytes first and decodes only the records whose bytes it has
//! not seen before, so splitting must be cheap and must not parse. Memory is
//! bounded by `max_record_bytes`, never by the size of the stream or of a
//! record: the cap bounds the scan for a record's end, so a larger record is
//! refused before more of it is read (guarantee 8).
//!
//! CSV is read as the `csv` crate (and Python's `csv`) reads it, which is
//! what exports are written for: rows end at LF, CRLF or a lone CR; a field
//! is quoted only when it starts with `"`, a `"` anywhere else is an
//! ordinary character, and text after a closing quote is kept. A test holds
//! the two readers to agreeing record for record.

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
    /// One record refused before it was decoded: too large, or cut short.
    Record {
        /// 1-based, as the diff counts records.
        number: u64,
        line: u64,
        offset: u64,
        why: String,
    },
}

impl SplitError {
    /// The same error about bytes that are not a record (a CSV header, a
    /// JSON wrapper's other keys), which have no record number.
    fn outside_records(self, what: &str) -> SplitError {
        match self {
            SplitError::Record {
                line, offset, why, ..
            } => SplitError::Malformed(line, offset, format!("{what}: {why}")),
            e => e,
        }
    }
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::Io(e) => write!(f, "read error: {e}"),
            SplitError::Malformed(line, offset, why) => {
                write!(f, "line {line} (byte {offset}): {why}")
            }
            SplitError::Record {
                number,
                line,
                offset,
                why,
            } => write!(f, "record {number} (line {line}, byte {offset}): {why}"),
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
                let value = csv_object(header, bytes)?;
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

/// A CSV row as a JSON object of strings under the header's names.
fn csv_object(header: &[String], row: &[u8]) -> Result<Value, String> {
    let mut fields = Vec::with_capacity(header.len());
    split_csv_fields(row, &mut fields)?;
    if fields.len() != header.len() {
        return Err(format!(
            "{} fields, but the header has {}",
            fields.len(),
            header.len()
        ));
    }
    let mut map = Map::new();
    for (name, field) in header.iter().zip(fields) {
        let s =
            String::from_utf8(field).map_err(|_| format!("field `{name}` is not valid UTF-8"))?;
        map.insert(name.clone(), Value::String(s));
    }
    Ok(Value::Object(map))
}

/// Splits a stream into records of one format.
pub struct Splitter {
    buf: Buffer,
    format: Format,
    csv_header: Option<Arc<[String]>>,
    json: JsonState,
    /// `max_record_bytes`: the largest record accepted.
    limit: usize,
    /// Records returned so far.
    records: u64,
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
    /// Starts splitting, refusing records larger than `max_record_bytes`.
    /// For CSV this reads the header row.
    pub fn new(
        reader: Box<dyn Read + Send>,
        format: Format,
        max_record_bytes: usize,
    ) -> Result<Splitter, SplitError> {
        let mut s = Splitter {
            // Room for the largest record and the byte that proves it too large.
            buf: Buffer::new(reader, max_record_bytes.saturating_add(1)),
            format,
            csv_header: None,
            json: JsonState::Start,
            limit: max_record_bytes,
            records: 0,
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
        self.records += found.is_some() as u64;
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
                    let partial = data.len();
                    self.more(partial)?;
                    continue;
                }
            };
            if len == 0 && !newline {
                return Ok(None);
            }
            self.check(len)?;
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

    /// The record at the buffer's start, refused for `why`.
    fn refuse(&self, why: &str) -> SplitError {
        SplitError::Record {
            number: self.records + 1,
            line: self.buf.line,
            offset: self.buf.consumed,
            why: why.into(),
        }
    }

    /// Refuses the record at the buffer's start when `len` of its bytes
    /// (all of it, or as much as has been scanned) exceed the cap.
    fn check(&self, len: usize) -> Result<(), SplitError> {
        if len > self.limit {
            let why = format!("larger than max_record_bytes ({} bytes)", self.limit);
            return Err(self.refuse(&why));
        }
        Ok(())
    }

    /// Reads more of the record at the buffer's start, of which `len` bytes
    /// were scanned without finding its end. The cap is checked first, so a
    /// record too large is never read further (and the buffer never grows
    /// past the cap).
    fn more(&mut self, len: usize) -> Result<(), SplitError> {
        self.check(len)?;
        Ok(self.buf.fill()?)
    }

    /// Finds the end of the CSV row at the buffer's start: the first CR or
    /// LF outside a quoted field. Returns (row length, terminator length).
    fn csv_extent(&mut self) -> Result<Option<(usize, usize)>, SplitError> {
        let mut scan = 0;
        let mut quoted = false;
        loop {
            let data = self.buf.data();
            let rest = &data[scan..];
            let hit = match quoted {
                true => memchr::memchr(b'"', rest),
                false => memchr::memchr3(b'"', b'\n', b'\r', rest),
            };
            let Some(i) = hit else {
                if !self.buf.eof {
                    scan = data.len();
                    self.more(scan)?;
                    continue;
                }
                if quoted {
                    return Err(self.refuse("the file ends inside a quoted field (truncated?)"));
                }
                return Ok((!data.is_empty()).then_some((data.len(), 0)));
            };
            let at = scan + i;
            let next = data.get(at + 1).copied();
            // A quote in a quoted field, and a CR, mean what the next byte says.
            if next.is_none() && !self.buf.eof && (quoted || data[at] == b'\r') {
                let partial = data.len();
                self.more(partial)?;
                continue;
            }
            match data[at] {
                b'\n' => return Ok(Some((at, 1))),
                b'\r' => return Ok(Some((at, 1 + usize::from(next == Some(b'\n'))))),
                // `""` is a quote in the field; any other quote closes it,
                // and the rest of the field reads as unquoted.
                _ if quoted => match next {
                    Some(b'"') => scan = at + 2,
                    _ => {
                        quoted = false;
                        scan = at + 1;
                    }
                },
                // A quote opens a quoted field only as the field's first byte.
                _ => {
                    quoted = at == 0 || data[at - 1] == b',';
                    scan = at + 1;
                }
            }
        }
    }

    fn next_csv(&mut self) -> Result<Option<Found>, SplitError> {
        loop {
            let Some((len, term)) = self.csv_extent()? else {
                return Ok(None);
            };
            self.check(len)?;
            let found = self.buf.found(len);
            let lines = line_breaks(&self.buf.data()[..len + term]);
            self.buf.advance(len + term, lines);
            // Blank lines between rows are no rows, as in the csv crate.
            if len > 0 {
                return Ok(Some(found));
            }
        }
    }

    fn read_csv_header(&mut self) -> Result<(), SplitError> {
        let (line, offset) = (self.buf.line, self.buf.consumed);
        let bad = |why: String| SplitError::Malformed(line, offset, why);
        let Some(found) = self
            .next_csv()
            .map_err(|e| e.outside_records("the header"))?
        else {
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

    /// Consumes one JSON value outside the records and returns its bytes.
    fn take_value(&mut self) -> Result<Vec<u8>, SplitError> {
        let len = self
            .value_len()
            .map_err(|e| e.outside_records("a value outside `items`"))?;
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
                Some(n) => {
                    self.check(n)?;
                    return Ok(n);
                }
                None => {}
            }
            if self.buf.eof {
                return Err(self.refuse("the file ends inside a record (truncated?)"));
            }
            let partial = self.buf.data().len();
            self.more(partial)?;
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

/// Line breaks in `b` as CSV counts them: LF, CRLF and a lone CR each end
/// a line (`b` never ends in the CR of a CRLF).
fn line_breaks(b: &[u8]) -> u64 {
    memchr::memchr2_iter(b'\r', b'\n', b)
        .filter(|&i| b[i] == b'\n' || b.get(i + 1) != Some(&b'\n'))
        .count() as u64
}

/// Splits one CSV row (without its terminator) into raw fields, as the
/// `csv` crate does: a field starting with `"` is quoted up to its closing
/// quote (`""` being a quote), and what follows that quote up to the next
/// comma is kept as it stands; any other field runs to the next comma.
fn split_csv_fields(rec: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let mut i = 0;
    loop {
        let mut field = Vec::new();
        if rec.get(i) == Some(&b'"') {
            i += 1;
            loop {
                // The splitter never ends a row inside quotes.
                let Some(q) = memchr::memchr(b'"', &rec[i..]) else {
                    return Err("the row ends inside a quoted field".into());
                };
                field.extend_from_slice(&rec[i..i + q]);
                i += q + 1;
                if rec.get(i) != Some(&b'"') {
                    break;
                }
                field.push(b'"');
                i += 1;
            }
        }
        let end = memchr::memchr(b',', &rec[i..]).map_or(rec.len(), |c| i + c);
        field.extend_from_slice(&rec[i..end]);
        out.push(field);
        if end == rec.len() {
            return Ok(());
        }
        i = end + 1;
    }
}

/// A read buffer that keeps one partial record across refills and counts
/// lines and bytes for error messages.
struct Buffer {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// The buffer grows to hold one partial record, up to this size.
    cap: usize,
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
    fn new(reader: Box<dyn Read + Send>, cap: usize) -> Buffer {
        Buffer {
            reader,
            buf: vec![0; CHUNK],
            cap: cap.max(CHUNK),
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

    /// Reads more bytes, keeping the unconsumed ones; grows the buffer (up
    /// to `cap`) when a single record fills it. The splitter refuses a record
    /// before it could need more than `cap`.
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
            self.buf.resize((self.buf.len() * 2).min(self.cap), 0);
        }
        debug_assert!(self.end < self.buf.len(), "a record outgrew the cap");
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

    const LIMIT: usize = 16 << 20;

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
        let mut s = Splitter::new(
            Box::new(io::Cursor::new(text.as_bytes().to_vec())),
            format,
            LIMIT,
        )
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
            LIMIT,
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
    fn csv_quotes_count_only_at_a_field_start() {
        let dec = Decoder::Csv(Arc::from(vec!["a".to_string(), "b".to_string()]));
        for (row, a, b) in [
            (&b"5\" screen,1"[..], "5\" screen", "1"),
            (b"\"ab\"c,\"x,y\"", "abc", "x,y"),
            (b"\"a\"\"b\"\"x\"y,", "a\"b\"xy", ""),
            (b"\"\",\"\"\"\"", "", "\""),
            (b"}\"multi,\"a\nb\"", "}\"multi", "a\nb"),
        ] {
            let v = decode(&dec, row).unwrap();
            assert_eq!(
                (v["a"].as_str(), v["b"].as_str()),
                (Some(a), Some(b)),
                "{row:?}"
            );
        }
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

    /// xorshift64*, for reproducible random inputs.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    /// One field as an export might write it, odd quoting included.
    fn csv_field(r: &mut Rng) -> String {
        let plain = [
            "",
            "a",
            "sku",
            "é",
            "日本",
            " ",
            "x y",
            "5\" screen",
            "}\"multi",
            "a\"b\"",
            "\"",
            "1.50",
            "a b\"",
        ];
        let inner = [
            "", "a", "\"\"", ",", "\n", "\r\n", "\r", "é", " ", "<p>x</p>", "\"\"\"\"", "日",
        ];
        match r.below(3) {
            0 => {
                let body: String = (0..r.below(4)).map(|_| r.pick(&inner)).collect();
                // Sometimes text after the closing quote.
                let after = r.pick(&["", "", "", "c", "\"x", " ", "\"\""]);
                format!("\"{body}\"{after}")
            }
            _ => r.pick(&plain).to_string(),
        }
    }

    /// A CSV export: a header, rows mostly of its width, any line endings.
    fn csv_text(r: &mut Rng) -> Vec<u8> {
        let width = 1 + r.below(4);
        let mut text = String::new();
        if r.below(8) == 0 {
            text.push('\u{feff}');
        }
        let names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
        text.push_str(&names.join(","));
        for _ in 0..r.below(9) {
            text.push_str(r.pick(&["\n", "\r\n", "\r", "\n\n", "\r\r\n", "\n\r"]));
            let n = match r.below(30) {
                0 => width + 1,
                1 => width.saturating_sub(1).max(1),
                _ => width,
            };
            let fields: Vec<String> = (0..n).map(|_| csv_field(r)).collect();
            text.push_str(&fields.join(","));
        }
        text.push_str(r.pick(&["", "\n", "\r\n", "\r"]));
        text.into_bytes()
    }

    /// What one reader made of an export: the header, then each record
    /// as a (name → value) object or an error; reading stops at the first.
    #[derive(Debug)]
    struct Reading {
        header: Result<Vec<String>, String>,
        records: Vec<Result<Value, String>>,
    }

    fn ours(text: &[u8]) -> Reading {
        let mut records = Vec::new();
        let mut s =
            match Splitter::new(Box::new(io::Cursor::new(text.to_vec())), Format::Csv, LIMIT) {
                Ok(s) => s,
                Err(e) => {
                    return Reading {
                        header: Err(e.to_string()),
                        records,
                    };
                }
            };
        let dec = s.decoder();
        let Decoder::Csv(header) = &dec else {
            unreachable!("a CSV splitter has a CSV decoder")
        };
        loop {
            match s.next_record() {
                Ok(None) => break,
                Ok(Some(r)) => {
                    let one = csv_object(header, r.bytes);
                    let bad = one.is_err();
                    records.push(one);
                    if bad {
                        break;
                    }
                }
                Err(e) => {
                    records.push(Err(e.to_string()));
                    break;
                }
            }
        }
        Reading {
            header: Ok(header.to_vec()),
            records,
        }
    }

    /// The `csv` crate's reading, with default settings: a header, and
    /// every record as wide as it. (It keeps a BOM in the first name, which
    /// DESIGN.md says is not part of it, so it gets the text without one.)
    fn theirs(text: &[u8]) -> Reading {
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(text);
        let header = match r.headers() {
            Ok(h) => h.iter().map(String::from).collect::<Vec<_>>(),
            Err(e) => {
                return Reading {
                    header: Err(e.to_string()),
                    records: Vec::new(),
                };
            }
        };
        let mut records = Vec::new();
        for rec in r.records() {
            match rec {
                Ok(rec) => records.push(Ok(Value::Object(
                    header
                        .iter()
                        .zip(rec.iter())
                        .map(|(k, v)| (k.clone(), Value::String(v.into())))
                        .collect(),
                ))),
                Err(e) => {
                    records.push(Err(e.to_string()));
                    break;
                }
            }
        }
        Reading {
            header: Ok(header),
            records,
        }
    }

    /// Holds our reading of `text` to the csv crate's. The one intended
    /// difference: a file that ends inside a quoted field is truncated to
    /// us (guarantee 2), while the csv crate ends the field there.
    fn agree(text: &[u8]) {
        let (a, b) = (ours(text), theirs(text));
        let show = || {
            format!(
                "{:?}\nours:   {a:?}\ntheirs: {b:?}",
                String::from_utf8_lossy(text)
            )
        };
        match (&a.header, &b.header) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "{}", show()),
            (Err(e), Ok(y)) if e.contains("twice") => {
                let mut names = y.clone();
                names.sort();
                names.dedup();
                assert!(names.len() < y.len(), "{}", show());
                return;
            }
            (Err(e), Ok(_)) if e.contains("ends inside a quoted field") => {
                assert!(b.records.is_empty(), "{}", show());
                return;
            }
            (Err(_), Err(_)) => return,
            _ => panic!("headers differ: {}", show()),
        }
        for (i, mine) in a.records.iter().enumerate() {
            match (mine, b.records.get(i)) {
                (Ok(x), Some(Ok(y))) => assert_eq!(x, y, "record {}: {}", i + 1, show()),
                (Err(_), Some(Err(_))) => return,
                (Err(e), Some(_)) if e.contains("ends inside a quoted field") => {
                    assert_eq!(b.records.len(), i + 1, "not the last record: {}", show());
                    return;
                }
                _ => panic!("record {} differs: {}", i + 1, show()),
            }
        }
        assert_eq!(a.records.len(), b.records.len(), "{}", show());
    }

    #[test]
    fn csv_agrees_with_the_csv_crate_on_generated_inputs() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            agree(&csv_text(&mut r));
        }
    }

    #[test]
    fn csv_agrees_with_the_csv_crate_on_damaged_inputs() {
        let mut r = Rng(7);
        let bytes = b"\",\r\n a\xc3\xa9\xff";
        for _ in 0..20_000 {
            let mut text = csv_text(&mut r);
            for _ in 0..1 + r.below(3) {
                let at = r.below(text.len() + 1);
                let b = bytes[r.below(bytes.len())];
                match r.below(4) {
                    0 => text.truncate(at),
                    1 if at < text.len() => text[at] = b,
                    2 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.insert(at, b),
                }
            }
            agree(&text);
        }
    }

    #[test]
    fn csv_rows_end_at_lf_crlf_or_a_lone_cr_and_lines_count_each() {
        let text = "sku,d\rA,1\r\nB,\"x\ry\r\nz\"\nC,3\n\rD,4\r";
        let got = split(Format::Csv, text).unwrap();
        let lines: Vec<(&str, u64)> = got.iter().map(|(r, l)| (r.as_str(), *l)).collect();
        assert_eq!(
            lines,
            [("A,1", 2), ("B,\"x\ry\r\nz\"", 3), ("C,3", 6), ("D,4", 8)]
        );
        // The width error names the line of a CR-only file.
        let mut s = Splitter::new(
            Box::new(io::Cursor::new(b"a,b\r1,2\r1,2,3\r".to_vec())),
            Format::Csv,
            LIMIT,
        )
        .unwrap();
        let dec = s.decoder();
        assert!(decode(&dec, s.next_record().unwrap().unwrap().bytes).is_ok());
        let r = s.next_record().unwrap().unwrap();
        assert_eq!(r.line, 3);
        let e = decode(&dec, r.bytes).unwrap_err();
        assert_eq!(e, "3 fields, but the header has 2");
    }

    #[test]
    fn a_bom_is_not_part_of_the_first_name() {
        let s = Splitter::new(
            Box::new(io::Cursor::new(b"\xEF\xBB\xBFsku,name\nA,x\n".to_vec())),
            Format::Csv,
            LIMIT,
        )
        .unwrap();
        let Decoder::Csv(h) = s.decoder() else {
            panic!("not CSV")
        };
        assert_eq!(h.to_vec(), ["sku", "name"]);
    }

    fn split_with(format: Format, text: &[u8], limit: usize) -> Result<Vec<usize>, String> {
        let mut s = Splitter::new(Box::new(io::Cursor::new(text.to_vec())), format, limit)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(r) = s.next_record().map_err(|e| e.to_string())? {
            out.push(r.bytes.len());
        }
        Ok(out)
    }

    #[test]
    fn a_record_over_the_cap_is_refused_naming_it() {
        let limit = 4096;
        let rec = |len: usize| format!("{{\"d\":\"{}\"}}", "x".repeat(len - 8));
        let (fit, over) = (rec(limit), rec(limit + 1));
        // A CSV row of the cap's size, quoted newlines and all.
        let lines = "x\n".repeat((limit - 2) / 2);
        let cases = [
            (
                Format::Ndjson,
                format!("{fit}\n{fit}\n"),
                format!("{fit}\n{over}\n{fit}\n"),
                2,
            ),
            (
                Format::Json,
                format!("[{fit},{fit}]"),
                format!("[{fit},\n{over},{fit}]"),
                2,
            ),
            (
                Format::Csv,
                format!("h\n\"{lines}\""),
                format!("h\nx\n\"{lines}x\"\nx"),
                3,
            ),
        ];
        for (format, good, bad, line) in cases {
            let got = split_with(format, good.as_bytes(), limit).unwrap();
            assert!(got.iter().all(|&n| n == limit), "{format:?}: {got:?}");
            let e = split_with(format, bad.as_bytes(), limit).unwrap_err();
            let want = format!("record 2 (line {line}, ");
            assert!(e.starts_with(&want), "{format:?}: {e}");
            assert!(
                e.ends_with("larger than max_record_bytes (4096 bytes)"),
                "{e}"
            );
        }
        // A CSV header is held to the cap too.
        let e = split_with(Format::Csv, "h".repeat(limit + 1).as_bytes(), limit).unwrap_err();
        assert!(e.starts_with("line 1 (byte 0): the header: larger"), "{e}");
    }

    /// A reader of endless bytes that counts what was taken from it.
    struct Endless(Arc<std::sync::atomic::AtomicU64>, u8);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(self.1);
            self.0
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(buf.len())
        }
    }

    #[test]
    fn an_endless_record_is_refused_after_reading_about_the_cap() {
        let limit = 3 * CHUNK;
        for (format, byte) in [
            (Format::Ndjson, b'1'),
            (Format::Json, b'['),
            (Format::Csv, b'x'),
        ] {
            let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let reader = Box::new(Endless(Arc::clone(&taken), byte));
            let e = Splitter::new(reader, format, limit)
                .and_then(|mut s| s.next_record().map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("larger than max_record_bytes"),
                "{format:?}: {e}"
            );
            let taken = taken.load(std::sync::atomic::Ordering::Relaxed) as usize;
            assert!(taken <= limit + CHUNK, "{format:?}: read {taken} bytes");
        }
    }
}
