//! The `file:` target: batches appended to a file, one envelope a line.
//!
//! It exists so a shop can sync into a file another program reads, and so
//! the whole pipeline can be tried without a receiver. It is a carrier of
//! its own, not an HTTP kind: there is no one to answer, so a batch counts
//! once the fsync that covers it has returned.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::webhook::envelope;
use super::{Response, SyncKind};
use crate::state::OutItem;

/// A `file:` target: each batch's envelope is appended as one line, and
/// the group is fsynced once; no batch counts before the fsync that covers
/// it. Empty batches (nothing left to send) are not written.
///
/// A line is all or nothing (guarantee 7). A group that fails to be
/// written or fsynced (a full disk, a file-size limit, an I/O error) is cut
/// off again: the file is truncated to its length before the group, and
/// every batch of the group is retried. A process killed mid-write cannot
/// truncate, so before appending, a file that does not end with `\n` is cut
/// back to just after its last `\n`. That is sound with one fsync per
/// group because acknowledgement follows the fsync: every acknowledged
/// line was fsynced with its `\n` before its items counted, so the last
/// `\n` of the file lies at or after the end of everything acknowledged,
/// and what follows it belongs to a group that never counted (its items
/// are still `pending` or `retry` and are written again). The whole lines a
/// killed group left stay, as duplicates, as at-least-once delivery allows.
/// (After a power loss some file systems may show a never-fsynced tail as
/// zeros; zeros with no `\n` after them are cut the same way.)
///
/// Normal path: one `fstat` per group to learn where the group starts. The
/// tail is read only when the file's length is not the one this target
/// left it at (the first group of a run, or another writer).
pub struct FileTarget {
    path: PathBuf,
    /// The length the file had after the last group this target wrote and
    /// fsynced, so known to end with a whole line ([`UNKNOWN_END`] before
    /// the first).
    file_end: AtomicU64,
}

const UNKNOWN_END: u64 = u64::MAX;

impl FileTarget {
    pub fn new(path: PathBuf) -> FileTarget {
        FileTarget {
            path,
            file_end: AtomicU64::new(UNKNOWN_END),
        }
    }

    /// Appends a group of batches: a response per batch, in order.
    pub fn append(&self, feed: &str, sync: SyncKind, batches: &[&[OutItem]]) -> Vec<Response> {
        let written = if batches.iter().all(|b| b.is_empty()) {
            Ok(())
        } else {
            append_group(&self.path, &self.file_end, feed, sync, batches)
        };
        match written {
            Ok(()) => batches
                .iter()
                .map(|_| Response::Delivered(Vec::new()))
                .collect(),
            // The group succeeds or fails as a whole, and was cut off again.
            Err(error) => batches
                .iter()
                .map(|_| Response::Retry {
                    error: error.clone(),
                    retry_after: None,
                })
                .collect(),
        }
    }
}

/// Appends the group's lines and fsyncs them, or leaves the file as it was
/// before the group (as far as truncation can) and says why.
fn append_group(
    path: &Path,
    file_end: &AtomicU64,
    feed: &str,
    sync: SyncKind,
    batches: &[&[OutItem]],
) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(cannot)?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(cannot)?;
    let mut start = f.metadata().map_err(cannot)?.len();
    if start != file_end.load(Ordering::Relaxed) {
        start = cut_torn_tail(&f, path, start).map_err(cannot)?;
    }
    file_end.store(UNKNOWN_END, Ordering::Relaxed);
    let mut end = start;
    let written = (|| -> std::io::Result<()> {
        for items in batches.iter().filter(|b| !b.is_empty()) {
            let mut line = envelope(feed, sync, items);
            line.push(b'\n');
            (&f).write_all(&line)?;
            start_writeback(&f, end, line.len());
            end += line.len() as u64;
        }
        f.sync_data()
    })();
    match written {
        Ok(()) => {
            file_end.store(end, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // Truncating frees what the group took, so it works on a full
            // disk; should it fail, the next append cuts the torn tail.
            let error = cannot(e);
            match f.set_len(start).and_then(|()| f.sync_data()) {
                Ok(()) => {
                    file_end.store(start, Ordering::Relaxed);
                    Err(error)
                }
                Err(e) => Err(format!(
                    "{error}; and cannot cut it back to its last whole line ({e}): the next write will"
                )),
            }
        }
    }
}

/// Starts writing `len` bytes at `offset` of `f` to the disk, without
/// waiting: the group's fsync then waits only for what is still on its way,
/// and the disk works while the next lines are written. (Without this the
/// courier wrote a group, then waited for the disk, in turn: a first sync
/// of a million items spent half its delivery in fsync.)
fn start_writeback(f: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: an open descriptor and a range; the call only schedules
        // writeback, and a failure leaves the work to the fsync.
        unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// Cuts whatever follows the last `\n` of `f` (`len` bytes long): the
/// unfinished line of a write that never counted. Returns the new length.
fn cut_torn_tail(f: &File, path: &Path, len: u64) -> std::io::Result<u64> {
    let mut buf = vec![0; 64 << 10];
    let mut end = len;
    let whole = loop {
        if end == 0 {
            break 0;
        }
        let n = end.min(buf.len() as u64) as usize;
        let at = end - n as u64;
        f.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            break at + i as u64 + 1;
        }
        end = at;
    };
    if whole < len {
        log::warn!(
            "{}: cutting {} bytes of an unfinished last line (a write that was never acknowledged)",
            path.display(),
            len - whole
        );
        f.set_len(whole)?;
    }
    Ok(whole)
}
