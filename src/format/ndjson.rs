//! NDJSON: one record a line. The cheapest format to split, since a record
//! ends at the first LF.

use super::{Block, Found, Span, SplitError, Splitter};

impl Splitter {
    /// The next non-blank line, trimmed of white space (and a CR).
    pub(super) fn next_line(&mut self) -> Result<Option<Found>, SplitError> {
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
}

impl Splitter {
    /// [`Splitter::next_block`] for NDJSON: the whole lines the buffer
    /// holds (reading more only while it holds none), handed over with the
    /// buffer. A line stays where it was read, because nothing is read
    /// into the buffer once it holds a record of the block.
    pub(super) fn ndjson_block(&mut self, max_records: usize, spare: Option<Vec<u8>>) -> Block {
        let mut records = Vec::with_capacity(max_records);
        // Where the last whole line in the buffer ends.
        let mut whole = 0;
        let end = loop {
            if records.len() >= max_records || (!records.is_empty() && self.buf.start >= whole) {
                break None;
            }
            match self.next_line() {
                Ok(Some(f)) => {
                    self.records += 1;
                    if records.is_empty() {
                        // At the end of the stream nothing moves any more.
                        whole = if self.buf.eof {
                            self.buf.end
                        } else {
                            self.buf.start + whole_lines(self.buf.data())
                        };
                    }
                    records.push(Span {
                        start: f.start,
                        len: f.len,
                        line: f.line,
                        offset: f.offset,
                    });
                }
                Ok(None) => break Some(Ok(())),
                Err(e) => break Some(Err(e)),
            }
        };
        Block {
            bytes: self.buf.take(spare),
            records,
            end,
        }
    }
}

/// How far `data` holds whole lines that end with a record: reading on
/// from anywhere before that point meets a non-blank line ending there or
/// earlier, so it never needs more of the stream.
fn whole_lines(data: &[u8]) -> usize {
    let mut end = data.len();
    while let Some(newline) = memchr::memrchr(b'\n', &data[..end]) {
        let start = memchr::memrchr(b'\n', &data[..newline]).map_or(0, |i| i + 1);
        if !data[start..newline].trim_ascii().is_empty() {
            return newline + 1;
        }
        end = newline;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::super::tests::split;
    use crate::config::Format;

    #[test]
    fn ndjson_lines_blank_lines_and_crlf() {
        let got = split(Format::Ndjson, "{\"a\":1}\r\n\n  \n{\"a\":2}").unwrap();
        assert_eq!(got, vec![("{\"a\":1}".into(), 1), ("{\"a\":2}".into(), 4)]);
    }
}
