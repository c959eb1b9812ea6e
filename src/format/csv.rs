//! CSV, read as the `csv` crate (and Python's `csv`) reads it, which is
//! what exports are written for: rows end at LF, CRLF or a lone CR; a field
//! is quoted only when it starts with `"`, a `"` anywhere else is an
//! ordinary character, and text after a closing quote is kept. A test holds
//! the two readers to agreeing record for record (`format::tests`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Found, SplitError, Splitter};

/// A CSV row as a JSON object of strings under the header's names.
pub(super) fn csv_object(header: &[String], row: &[u8]) -> Result<Value, String> {
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

impl Splitter {
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

    pub(super) fn next_csv(&mut self) -> Result<Option<Found>, SplitError> {
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

    pub(super) fn read_csv_header(&mut self) -> Result<(), SplitError> {
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::super::tests::{LIMIT, decode, split};
    use super::super::{Decoder, Splitter};
    use crate::config::Format;

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
}
