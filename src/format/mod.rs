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
//! This file holds what every format shares: the [`Splitter`] and its
//! errors, the read `Buffer` and the cap, written once. Each format is one
//! file that finds where its next record ends: `ndjson`, `json`, `csv`.

use std::io::{self, Read};
use std::sync::Arc;

use crate::config::Format;
use crate::record::{Item, Rules};

mod csv;
mod json;
mod ndjson;
#[cfg(test)]
mod tests;

use self::csv::csv_object;
use json::JsonState;

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

    /// Up to `max_records` records (and about `max_bytes`) together, in a
    /// buffer the caller then owns, for the diff's workers. NDJSON hands
    /// over its read buffer itself, so records are never copied: `spare`,
    /// a buffer an earlier block gave back, becomes the next read buffer
    /// (the unfinished record at the end is all that moves). Other formats
    /// copy their records out one by one.
    pub fn next_block(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        spare: Option<Vec<u8>>,
    ) -> Block {
        if self.format == Format::Ndjson {
            return self.ndjson_block(max_records, spare);
        }
        let mut block = Block {
            bytes: spare.map_or_else(Vec::new, |mut v| {
                v.clear();
                v
            }),
            records: Vec::with_capacity(max_records),
            end: None,
        };
        while block.records.len() < max_records && block.bytes.len() < max_bytes {
            match self.next_record() {
                Ok(Some(r)) => {
                    block.records.push(Span {
                        start: block.bytes.len(),
                        len: r.bytes.len(),
                        line: r.line,
                        offset: r.offset,
                    });
                    block.bytes.extend_from_slice(r.bytes);
                }
                Ok(None) => block.end = Some(Ok(())),
                Err(e) => block.end = Some(Err(e)),
            }
            if block.end.is_some() {
                break;
            }
        }
        block
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

    fn malformed(&self, why: &str) -> SplitError {
        SplitError::Malformed(self.buf.line, self.buf.consumed, why.into())
    }
}

/// Records cut from the stream together (see [`Splitter::next_block`]).
pub struct Block {
    /// The records' bytes, where `records` says; bytes outside them are
    /// not part of the block.
    pub bytes: Vec<u8>,
    /// Where each record lies in `bytes`.
    pub records: Vec<Span>,
    /// The stream ended (or failed) after these records.
    pub end: Option<Result<(), SplitError>>,
}

/// One record of a [`Block`]: its bytes, and where it started in the stream.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub len: usize,
    /// 1-based line where the record starts.
    pub line: u64,
    pub offset: u64,
}

/// Where a record lies in the buffer, and where it started in the stream.
struct Found {
    start: usize,
    len: usize,
    line: u64,
    offset: u64,
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

    /// Hands over the buffer with everything read so far, keeping only
    /// the unconsumed tail, which moves to the start of `spare` (or of a
    /// new buffer).
    fn take(&mut self, spare: Option<Vec<u8>>) -> Vec<u8> {
        let tail = self.end - self.start;
        let mut next = spare.unwrap_or_default();
        let size = CHUNK.max(tail * 2);
        if next.len() < size {
            next.resize(size, 0);
        }
        next[..tail].copy_from_slice(&self.buf[self.start..self.end]);
        // The buffer keeps its length: the block's spans say where its
        // records are, and a buffer given back as `spare` is then long
        // enough already. (Cut to what was read, it had to be zeroed up
        // to a whole buffer again each time: a database's blocks of a
        // quarter of a buffer cost a memset of 2 GB per million rows.)
        let full = std::mem::replace(&mut self.buf, next);
        (self.start, self.end) = (0, tail);
        full
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
