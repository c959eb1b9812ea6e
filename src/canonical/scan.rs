//! A strict JSON scanner that computes a record's canonical hash in one
//! pass over its bytes, building no tree and copying no strings.
//!
//! Parsing is the largest cost of a first sync, and a general-purpose
//! parser does work this job throws away: it decodes every string into an
//! owned buffer and every object into a map. This scanner validates the
//! record as RFC 8259 JSON, hashes strings straight from the input (only
//! strings with escapes are decoded, into a reused buffer), and sums object
//! members' hashes so they need no sorting. It hashes with the same scheme
//! as `walk_value` over a `serde_json::Value`; tests hold the two to
//! agreeing.

use std::borrow::Cow;

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::{Captures, Hash, Node, scheme};

/// Objects and arrays nested deeper than this are refused (guarantee 8),
/// so a hostile record cannot exhaust the stack: the record's own object
/// is the first level.
const MAX_DEPTH: usize = 128;

/// Hashes one JSON object record, picking up what `caps` asks for.
pub(crate) fn hash_record(bytes: &[u8], root: &Node, caps: &mut Captures) -> Result<Hash, String> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let mut s = Scanner {
            b: bytes,
            i: 0,
            caps,
            pool: &mut pool,
        };
        s.ws();
        if s.peek() != Some(b'{') {
            return Err(match s.peek() {
                None => "EOF while parsing a value (column 1)".to_string(),
                Some(_) => "not a JSON object".to_string(),
            });
        }
        let h = s.value(Some(root), 0)?;
        s.ws();
        if s.i < s.b.len() {
            return Err(s.err("trailing characters"));
        }
        Ok(h)
    })
}

/// Where a string's plain run starting at `from` ends: at its first `"`,
/// backslash or control character, or at the end of the input. Also says
/// whether the run has bytes above 0x7F, the only ones that need a UTF-8
/// check (anywhere else in a record they are a syntax error anyway).
///
/// Strings make up most of a record, so this reads eight bytes at a time:
/// in each mask the lowest flagged byte is exact (a borrow only carries
/// upwards from a byte that was flagged itself), so the lowest over all
/// three masks is where the run ends.
pub(super) fn plain_run(b: &[u8], from: usize) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let mut i = from;
    let mut wide = 0;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let stop = (zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if stop != 0 {
            let at = stop.trailing_zeros() / 8;
            let below = (1u64 << (at * 8)).wrapping_sub(1);
            return (i + at as usize, wide | (x & HIGH & below) != 0);
        }
        wide |= x & HIGH;
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        wide |= u64::from(c & 0x80);
        i += 1;
    }
    (i, wide != 0)
}

/// Reused buffers: item lists for each nesting level of arrays, and one
/// for unescaping.
#[derive(Default)]
struct Pool {
    items: Vec<Vec<Hash>>,
    text: Vec<u8>,
}

/// The largest item list (and, in bytes, unescaping buffer) kept for reuse.
const POOLED_ITEMS: usize = 1 << 12;
const POOLED_TEXT: usize = 1 << 20;

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

struct Scanner<'a, 'c> {
    b: &'a [u8],
    i: usize,
    caps: &'c mut Captures,
    pool: &'c mut Pool,
}

impl<'a> Scanner<'a, '_> {
    fn err(&self, what: &str) -> String {
        format!("{what} (column {})", self.i + 1)
    }

    fn eof(&self, inside: &str) -> String {
        format!("EOF while parsing {inside} (column {})", self.i + 1)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A value inside `depth` objects and arrays.
    fn value(&mut self, node: Option<&Node>, depth: usize) -> Result<Hash, String> {
        if depth >= MAX_DEPTH && matches!(self.peek(), Some(b'{' | b'[')) {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            None => Err(self.eof("a value")),
            Some(b'{') => self.object(node, depth),
            Some(b'[') => self.array(node, depth),
            Some(b'"') => {
                let s = self.string()?;
                let h = xxh3_128_with_seed(&s, scheme::STRING);
                // The record is valid UTF-8, and so is every string in it.
                self.caps.take(node, || {
                    Value::String(String::from_utf8_lossy(&s).into_owned())
                });
                Ok(h)
            }
            Some(b't') => self.literal(b"true", node, Value::Bool(true)),
            Some(b'f') => self.literal(b"false", node, Value::Bool(false)),
            Some(b'n') => self.literal(b"null", node, Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(node),
            Some(_) => Err(self.err("expected value")),
        }
    }

    fn literal(&mut self, word: &[u8], node: Option<&Node>, v: Value) -> Result<Hash, String> {
        if !self.b[self.i..].starts_with(word) {
            if word.starts_with(&self.b[self.i..]) {
                return Err(self.eof("a value"));
            }
            return Err(self.err("expected value"));
        }
        self.i += word.len();
        let h = match &v {
            Value::Bool(b) => xxh3_128_with_seed(&[*b as u8], scheme::BOOL),
            _ => xxh3_128_with_seed(b"", scheme::NULL),
        };
        self.caps.take(node, || v);
        Ok(h)
    }

    /// A number, classified as serde_json does: integers that fit are
    /// u64 (non-negative) or i64 (negative), everything else f64.
    fn number(&mut self, node: Option<&Node>) -> Result<Hash, String> {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while let Some(b'0'..=b'9') = s.peek() {
                s.i += 1;
            }
            s.i - from
        };
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match digits(self) {
            0 if self.peek().is_none() => return Err(self.eof("a number")),
            0 => return Err(self.err("invalid number")),
            n if n > 1 && self.b[int_start] == b'0' => return Err(self.err("invalid number")),
            _ => {}
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            if digits(self) == 0 {
                return Err(match self.peek() {
                    None => self.eof("a number"),
                    Some(_) => self.err("invalid number"),
                });
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(match self.peek() {
                    None => self.eof("a number"),
                    Some(_) => self.err("invalid number"),
                });
            }
        }
        // ASCII digits and signs only, so this cannot fail.
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("0");
        let n: serde_json::Number = if !float && !negative {
            match text.parse::<u64>() {
                Ok(u) => u.into(),
                Err(_) => self.float(text)?,
            }
        } else if !float {
            match text.parse::<i64>() {
                Ok(i) => i.into(),
                Err(_) => self.float(text)?,
            }
        } else {
            self.float(text)?
        };
        let h = scheme::number(&n);
        self.caps.take(node, || Value::Number(n));
        Ok(h)
    }

    fn float(&self, text: &str) -> Result<serde_json::Number, String> {
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .ok_or_else(|| self.err("number out of range"))
    }

    /// A string's content: borrowed from the input when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, String> {
        self.i += 1; // the opening quote
        let start = self.i;
        self.plain()?;
        let plain = &self.b[start..self.i];
        if self.peek() == Some(b'"') {
            self.i += 1;
            return Ok(Cow::Borrowed(plain));
        }
        // Escapes (or an error): decode into the reused buffer.
        let mut out = std::mem::take(&mut self.pool.text);
        out.clear();
        out.extend_from_slice(plain);
        let result = self.escaped(&mut out).map(|()| Cow::Owned(out.clone()));
        if out.capacity() <= POOLED_TEXT {
            self.pool.text = out;
        }
        result
    }

    /// Moves past a run of plain string bytes, checking any non-ASCII ones
    /// as UTF-8. (An escape cannot split a character: its bytes are ASCII.)
    fn plain(&mut self) -> Result<(), String> {
        let (end, wide) = plain_run(self.b, self.i);
        if wide && let Err(e) = std::str::from_utf8(&self.b[self.i..end]) {
            let column = self.i + e.valid_up_to() + 1;
            return Err(format!("invalid UTF-8 (column {column})"));
        }
        self.i = end;
        Ok(())
    }

    /// The rest of a string, from the first byte that ended a plain run.
    fn escaped(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let b = self.b;
        loop {
            match b.get(self.i) {
                None => return Err(self.eof("a string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.i += 1,
                Some(&c) => {
                    return Err(format!(
                        "control character (\\u{c:04X}) found while parsing a string (column {})",
                        self.i + 1
                    ));
                }
            }
            let Some(&c) = b.get(self.i) else {
                return Err(self.eof("a string"));
            };
            self.i += 1;
            match c {
                b'"' | b'\\' | b'/' => out.push(c),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let ch = self.unicode()?;
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                _ => return Err(self.err("invalid escape")),
            }
            let from = self.i;
            self.plain()?;
            out.extend_from_slice(&b[from..self.i]);
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.b.get(self.i..self.i + 4) else {
            self.i = self.b.len();
            return Err(self.eof("a string"));
        };
        let s = std::str::from_utf8(h).map_err(|_| self.err("invalid escape"))?;
        let v = u32::from_str_radix(s, 16).map_err(|_| self.err("invalid escape"))?;
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return Err(self.err("invalid escape"));
        }
        self.i += 4;
        Ok(v)
    }

    /// `\uXXXX`, with surrogate pairs; a lone surrogate is an error, as in
    /// serde_json.
    fn unicode(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(self.err("lone leading surrogate in hex escape"));
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("lone leading surrogate in hex escape"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid unicode code point"))
    }

    fn array(&mut self, node: Option<&Node>, depth: usize) -> Result<Hash, String> {
        self.i += 1;
        self.caps.take(node, || Value::Array(Vec::new()));
        if !node.is_some_and(|n| n.sort) {
            let mut h = scheme::Array::new();
            self.elements(depth, |item| h.push(item))?;
            return Ok(h.finish());
        }
        // A sorted array is hashed once all its items are known.
        let mut items = self.pool.items.pop().unwrap_or_default();
        items.clear();
        let result = self.elements(depth, |item| items.push(item));
        let h = result.map(|()| scheme::array(&mut items, true));
        // A huge array's list is not kept for the rest of the run.
        if items.capacity() <= POOLED_ITEMS {
            self.pool.items.push(items);
        }
        h
    }

    fn elements(&mut self, depth: usize, mut item: impl FnMut(Hash)) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            item(self.value(None, depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                None => return Err(self.eof("a list")),
                Some(_) => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self, node: Option<&Node>, depth: usize) -> Result<Hash, String> {
        self.i += 1;
        self.caps.take(node, || Value::Object(Map::new()));
        let mut sum: Hash = 0;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(scheme::object(sum));
        }
        loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.eof("an object")),
                Some(_) => return Err(self.err("key must be a string")),
            }
            let key = self.string()?;
            self.ws();
            match self.peek() {
                Some(b':') => self.i += 1,
                None => return Err(self.eof("an object")),
                Some(_) => return Err(self.err("expected `:`")),
            }
            self.ws();
            let child = node.and_then(|n| n.child(&key));
            let h = self.value(child, depth + 1)?;
            if !child.is_some_and(|c| c.exclude) {
                sum = sum.wrapping_add(scheme::member(&key, h));
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(scheme::object(sum));
                }
                None => return Err(self.eof("an object")),
                Some(_) => return Err(self.err("expected `,` or `}`")),
            }
        }
    }
}
