//! NDJSON: one record a line. The cheapest format to split, since a record
//! ends at the first LF.

use super::{Found, SplitError, Splitter};

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
