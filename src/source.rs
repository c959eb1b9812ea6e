//! Where a feed's export lives. Every kind of source is opened as a byte
//! stream in the feed's format, so the splitter and the diff serve them all
//! the same way.

use std::fs::File;
use std::io::Read;

use crate::config::{Feed, Format, SourceSpec};
use crate::error::{Error, Result};

/// An open source, ready to be split into records.
pub struct Source {
    pub reader: Box<dyn Read + Send>,
    pub format: Format,
    /// Bytes to expect, when known (for the progress bar).
    pub size: Option<u64>,
}

impl Source {
    pub fn open(feed: &Feed) -> Result<Source> {
        match &feed.source {
            SourceSpec::File(path) => {
                let file = File::open(path)
                    .map_err(|e| Error::source(format!("{}: cannot open: {e}", path.display())))?;
                Ok(Source {
                    size: file.metadata().ok().map(|m| m.len()),
                    reader: Box::new(file),
                    format: feed.format.unwrap_or(Format::Ndjson),
                })
            }
            other => Err(Error::config(format!(
                "feed `{}`: {} sources are not supported by this build",
                feed.name,
                other.describe()
            ))),
        }
    }
}
