//! A file source: the export as the shop's own job wrote it. A file cannot
//! stall, so it is read without a deadline, and it keeps a second handle
//! ([`SourceFile`]) so the spool can read records back by offset instead of
//! copying them.

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

use super::{Context, Deadline, End, Kind, Opened, Source};
use crate::config::{Feed, Format};
use crate::error::{Error, Result};

/// A feed whose `source` is a path.
pub struct FileSource<'a> {
    pub path: &'a Path,
}

impl Kind for FileSource<'_> {
    fn open(&self, feed: &Feed, _: &Context<'_>, _: Deadline) -> Result<Opened> {
        let path = self.path;
        let file = File::open(path)
            .map_err(|e| Error::source(format!("{}: cannot open: {e}", path.display())))?;
        Ok(Opened::Stream(Source {
            size: file.metadata().ok().map(|m| m.len()),
            file: SourceFile::new(&file),
            reader: Box::new(file),
            format: feed.format.unwrap_or(Format::Ndjson),
            end: End::Nothing,
        }))
    }

    fn fix(&self, _: &Feed) -> String {
        format!(
            "make sure the export exists at {} and the user running feedsync can read it",
            self.path.display()
        )
    }
}

/// A second handle on a file source, and what it looked like when opened.
pub struct SourceFile {
    file: File,
    seen: (u64, Option<SystemTime>),
}

impl SourceFile {
    /// A second handle on `file`, with its size and time as of now.
    pub fn new(file: &File) -> Option<SourceFile> {
        let meta = file.metadata().ok()?;
        Some(SourceFile {
            file: file.try_clone().ok()?,
            seen: (meta.len(), meta.modified().ok()),
        })
    }

    /// The open file, if its contents are still those that were read. (A
    /// file replaced by a rename keeps its old contents under our handle; a
    /// file rewritten in place does not.)
    pub fn unchanged(&self) -> Option<&File> {
        let meta = self.file.metadata().ok()?;
        ((meta.len(), meta.modified().ok()) == self.seen).then_some(&self.file)
    }
}
