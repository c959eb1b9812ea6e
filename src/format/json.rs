//! JSON: an array of record objects, or an object with an `items` array
//! (its other keys are skipped). Records are found by a resumable structural
//! scan; the decoder validates them.

use super::{Found, SplitError, Splitter};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum JsonState {
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
    pub(super) fn next_json(&mut self) -> Result<Option<Found>, SplitError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::split;
    use crate::config::Format;

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
}
