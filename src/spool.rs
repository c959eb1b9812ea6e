//! The data of this run's changes, on their way from the source to the
//! target. The state file records what changed (ids, hashes, statuses);
//! the changed records' JSON waits here, in an unnamed temporary file next
//! to the state file, for the deliveries that follow the collect.
//!
//! Keeping catalogs out of SQLite is what makes a first sync of a million
//! items affordable: the state stays small, and the spool is written and
//! read sequentially. For a file source it does not even copy: a JSON
//! record travels as its own bytes, so the spool keeps where they stand in
//! the file, and reads them back while the file is unchanged. Nothing is lost if the process dies: an item stays
//! `pending` until acknowledged, and the next collect, which reads the
//! source again, spools it again. (Feeds with `keep_data` keep the data in
//! the state instead, and `retry` items keep theirs there too.)

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::source::SourceFile;
use crate::state::{Data, OutItem};

pub struct Spool {
    file: File,
    /// Bytes written to `file` so far.
    written: u64,
    /// Not yet written.
    buffer: Vec<u8>,
    /// Where each item's data is, sorted by rowid once sealed.
    index: Vec<Entry>,
    /// A file source: records whose data is their own bytes are not copied,
    /// only their place in the source is kept.
    source: Option<SourceFile>,
}

#[derive(Clone, Copy)]
struct Entry {
    rowid: i64,
    offset: u64,
    len: u32,
    in_source: bool,
}

const BUFFER: usize = 1 << 20;
/// Gaps up to this size are read through rather than read around.
const COALESCE: u64 = 64 * 1024;

impl Spool {
    /// A new spool in `dir`. The file has no name, so it vanishes with the
    /// process, however that ends.
    pub fn new(dir: &Path) -> io::Result<Spool> {
        Ok(Spool {
            file: tempfile::tempfile_in(dir)?,
            written: 0,
            buffer: Vec::with_capacity(BUFFER),
            index: Vec::new(),
            source: None,
        })
    }

    /// Reads data that is a record's own bytes from the source file itself.
    pub fn refer_to(&mut self, source: SourceFile) {
        self.source = Some(source);
    }

    /// Keeps an item's data: `at` is where the very same bytes stand in the
    /// source, when they do.
    pub fn push(&mut self, rowid: i64, data: &[u8], at: Option<u64>) -> io::Result<()> {
        let len = data.len() as u32;
        if let (Some(offset), Some(_)) = (at, &self.source) {
            self.index.push(Entry {
                rowid,
                offset,
                len,
                in_source: true,
            });
            return Ok(());
        }
        let offset = self.written + self.buffer.len() as u64;
        self.index.push(Entry {
            rowid,
            offset,
            len,
            in_source: false,
        });
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Ends writing; the spool is read from now on.
    pub fn seal(&mut self) -> io::Result<()> {
        self.flush()?;
        // Later versions of an item replace earlier ones.
        self.index.sort_by_key(|e| e.rowid);
        self.index.dedup_by(|later, earlier| {
            if later.rowid == earlier.rowid {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Fills in the data of the items that have none from the state. Data
    /// kept by reference is read only while the source file is unchanged.
    pub fn fill(&self, items: &mut [OutItem]) -> io::Result<()> {
        let source = self.source.as_ref().and_then(SourceFile::unchanged);
        for (file, in_source) in [(Some(&self.file), false), (source, true)] {
            let Some(file) = file else { continue };
            let mut wanted: Vec<(usize, u64, u32)> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| it.data.is_none() && !it.deleted)
                .filter_map(|(i, it)| {
                    let at = self
                        .index
                        .binary_search_by_key(&it.rowid, |e| e.rowid)
                        .ok()?;
                    let e = self.index[at];
                    (e.in_source == in_source).then_some((i, e.offset, e.len))
                })
                .collect();
            read_into(file, &mut wanted, items)?;
        }
        Ok(())
    }

    /// How long the data of item `rowid` is, without reading it: what a
    /// batch closing by `max_batch_bytes` counts.
    pub fn data_len(&self, rowid: i64) -> Option<usize> {
        let at = self.index.binary_search_by_key(&rowid, |e| e.rowid).ok()?;
        Some(self.index[at].len as usize)
    }
}

/// Reads each wanted (item, offset, length) from `file` into its item,
/// neighbouring records with one call.
fn read_into(
    file: &File,
    wanted: &mut [(usize, u64, u32)],
    items: &mut [OutItem],
) -> io::Result<()> {
    wanted.sort_by_key(|w| w.1);
    let mut start = 0;
    while start < wanted.len() {
        let mut end = start + 1;
        let mut span_end = wanted[start].1 + u64::from(wanted[start].2);
        while end < wanted.len() && wanted[end].1 <= span_end + COALESCE {
            span_end = span_end.max(wanted[end].1 + u64::from(wanted[end].2));
            end += 1;
        }
        let base = wanted[start].1;
        let mut buf = vec![0u8; (span_end - base) as usize];
        file.read_exact_at(&mut buf, base)?;
        // The items share the buffer (see `Data`).
        let buf = std::sync::Arc::new(buf);
        for &(i, off, len) in &wanted[start..end] {
            items[i].data = Some(Data::part(&buf, (off - base) as usize, len as usize));
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(rowid: i64) -> OutItem {
        OutItem {
            rowid,
            id: rowid.to_string(),
            key: "{}".into(),
            hash: 0,
            deleted: false,
            data: None,
            attempts: 0,
        }
    }

    #[test]
    fn data_kept_by_reference_is_read_only_from_an_unchanged_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n").unwrap();
        let source = std::fs::File::open(&path).unwrap();
        let mut s = Spool::new(dir.path()).unwrap();
        s.refer_to(SourceFile::new(&source).unwrap());
        s.push(1, b"{\"a\":1}", Some(0)).unwrap();
        s.push(2, b"{\"a\":2}", Some(8)).unwrap();
        s.seal().unwrap();
        // Replaced by a rename: our handle still reads what was collected.
        std::fs::write(dir.path().join("new"), "{\"a\":9}\n").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        let mut items = vec![out(1), out(2)];
        s.fill(&mut items).unwrap();
        assert_eq!(items[1].data.as_deref(), Some(&b"{\"a\":2}"[..]));
        // Rewritten in place: the references no longer hold; nothing is read.
        let mut s = Spool::new(dir.path()).unwrap();
        let source = std::fs::File::open(&path).unwrap();
        s.refer_to(SourceFile::new(&source).unwrap());
        s.push(1, b"{\"a\":9}", Some(0)).unwrap();
        s.seal().unwrap();
        std::fs::write(&path, "{\"a\":10}\n").unwrap();
        let mut items = vec![out(1)];
        s.fill(&mut items).unwrap();
        assert!(items[0].data.is_none(), "left pending for the next collect");
    }

    #[test]
    fn fills_what_it_holds_latest_version_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(dir.path()).unwrap();
        s.push(7, b"{\"v\":1}", None).unwrap();
        s.push(3, b"{\"v\":3}", None).unwrap();
        s.push(7, b"{\"v\":2}", None).unwrap();
        s.push(9, &vec![b'x'; 3 * BUFFER], None).unwrap();
        s.seal().unwrap();
        let mut items = vec![out(3), out(5), out(7), out(9)];
        items[1].data = Some(b"kept".to_vec().into());
        s.fill(&mut items).unwrap();
        assert_eq!(items[0].data.as_deref(), Some(&b"{\"v\":3}"[..]));
        assert_eq!(items[1].data.as_deref(), Some(&b"kept"[..]));
        assert_eq!(items[2].data.as_deref(), Some(&b"{\"v\":2}"[..]));
        assert_eq!(items[3].data.as_ref().map(|d| d.len()), Some(3 * BUFFER));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "unnamed");
    }
}
