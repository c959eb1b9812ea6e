//! Tests shared by every format: helpers the per-format tests use, the
//! record-size cap, and the differential test holding our CSV reading to
//! the `csv` crate's.

use std::io::{self, Read};
use std::sync::Arc;

use serde_json::Value;

use super::csv::csv_object;
use super::{CHUNK, Decoder, Splitter};
use crate::config::Format;
use crate::record::Rules;

pub(super) const LIMIT: usize = 16 << 20;

/// A CSV record as the JSON object that would be sent.
pub(super) fn decode(dec: &Decoder, bytes: &[u8]) -> Result<Value, String> {
    let key = match dec {
        Decoder::Csv(h) => h[0].clone(),
        Decoder::Json => "sku".into(),
    };
    let rules = Rules::build(vec![key], vec![], vec![], None);
    let (_, data) = dec.item(bytes, &rules)?;
    Ok(serde_json::from_str(&data.unwrap()).unwrap())
}

pub(super) fn split(format: Format, text: &str) -> Result<Vec<(String, u64)>, String> {
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
    let mut s = match Splitter::new(Box::new(io::Cursor::new(text.to_vec())), Format::Csv, LIMIT) {
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

/// A reader that gives at most `step` bytes a read, so lines straddle
/// every read and buffer boundary.
struct Dribble(io::Cursor<Vec<u8>>, usize);
impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.1);
        self.0.read(&mut buf[..n])
    }
}

/// Blocks (the diff's way to read, handing buffers over) give exactly the
/// records, lines and offsets that record-by-record reading gives, for
/// every format, at any read size, with buffers handed back or not.
#[test]
fn blocks_cut_the_same_records_as_reading_one_by_one() {
    let mut rng = Rng(7);
    for round in 0..8 {
        // Lines of every length, blank and white-space lines, CRLF, a
        // last line with or without its newline, some past the 1 MB buffer.
        let mut text = String::new();
        while text.len() < 3 * CHUNK {
            match rng.below(10) {
                0 => text.push('\n'),
                1 => text.push_str("  \r\n"),
                _ => {
                    let len = [1, 40, 900, 5000, CHUNK + 10][rng.below(5).min(3 + (round % 2))];
                    text.push_str(&format!("{{\"sku\":\"{}\"}}", "x".repeat(len)));
                    text.push_str(if rng.below(3) == 0 { "\r\n" } else { "\n" });
                }
            }
        }
        if round % 3 == 0 {
            text.push_str("{\"sku\":\"last\"}");
        }
        let format = Format::Ndjson;
        let open = |step: usize| {
            let reader = Dribble(io::Cursor::new(text.as_bytes().to_vec()), step);
            Splitter::new(Box::new(reader), format, LIMIT).unwrap()
        };
        let step = [1 << 20, 4096, 777, 65536][round % 4];
        let mut one = open(step);
        let mut want = Vec::new();
        while let Some(r) = one.next_record().unwrap() {
            want.push((r.bytes.to_vec(), r.line, r.offset));
        }
        let mut blocks = open(step);
        let mut got = Vec::new();
        let mut spare = None;
        loop {
            let block = blocks.next_block(2048, 2 << 20, spare.take());
            for r in &block.records {
                got.push((
                    block.bytes[r.start..r.start + r.len].to_vec(),
                    r.line,
                    r.offset,
                ));
            }
            let end = block.end;
            if round % 2 == 0 {
                spare = Some(block.bytes);
            }
            if let Some(end) = end {
                end.unwrap();
                break;
            }
        }
        assert_eq!(got.len(), want.len(), "round {round}");
        assert!(got == want, "round {round}: the records differ");
    }
}
