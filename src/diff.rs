//! Finding what changed: stream a feed's records against the hashes in the
//! state file and mark new, changed and deleted items `pending`.
//!
//! Each record's raw bytes are hashed first. Bytes seen last time cannot
//! hide a change, so such a record is settled without parsing; only records
//! with new bytes are parsed, keyed and compared by canonical hash. Per item
//! the diff keeps a rowid, a raw hash and a seen bit in memory; everything
//! else stays in SQLite.
//!
//! The work runs as a pipeline: one thread splits the source into chunks of
//! records, worker threads hash and parse them, and the calling thread
//! applies the results to the state in source order (SQLite wants one
//! writer). The caller runs this inside one write transaction and commits
//! only when it returns Ok, so a bad record or a tripped guard leaves the
//! state as it was.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::xxh3_64;

use crate::config::Feed;
use crate::error::{Error, Result};
use crate::format::{Decoder, SplitError, Splitter};
use crate::record::{Hash, Item, Rules, raw_hash};
use crate::spool::Spool;
use crate::state::{Slot, Tx};
use crate::threads;

/// What one collect found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    /// Records read from the source.
    pub records: u64,
}

/// What a collect leaves to deliver: every pending item of the feed, from
/// this collect or an earlier one, so delivery needs no walk of the table.
#[derive(Debug, Default)]
pub struct Pending {
    /// Rowids, ascending.
    pub rowids: Vec<i64>,
    pub upserts: u64,
    pub deletes: u64,
}

/// A slot's place in the queue.
const NOT_QUEUED: u8 = 0;
const UPSERT: u8 = 1;
const DELETE: u8 = 2;

pub struct Options<'a> {
    pub allow_deletes: bool,
    pub now: i64,
    /// Queue every item read, changed or not (`resync --force`).
    pub force: bool,
    /// Only these ids, each queued whatever its hash (`resync --by-ids`);
    /// no deletions are inferred for the others.
    pub ids: Option<&'a HashSet<String>>,
    /// Keep each pending item's data in the state (`keep_data`, legacy
    /// feeds) rather than in the spool.
    pub store_data: bool,
}

/// Records per chunk, and bytes per chunk, handed to a worker at a time.
const CHUNK_RECORDS: usize = 2048;
const CHUNK_BYTES: usize = 2 << 20;

/// A run of records copied out of the source.
struct Chunk {
    seq: u64,
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// The stream ended (or failed) after these records.
    end: Option<std::result::Result<(), SplitError>>,
}

struct Record {
    start: usize,
    len: usize,
    line: u64,
    offset: u64,
}

/// What a worker made of one record.
enum Outcome {
    /// Bytes seen last time, at this slot.
    Unchanged(u32),
    Parsed(Hash, Item, Option<String>),
    Bad(String),
}

/// A map keyed by the low half of a raw hash, which is already uniformly
/// spread, so it needs no hashing of its own.
type RawIndex = HashMap<u64, u32, BuildHasherDefault<Identity>>;

#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Reads every record of `records` and brings the feed's items up to date;
/// the data of items that become pending goes to `spool`.
pub fn collect(
    tx: &Tx<'_>,
    feed: &Feed,
    feed_id: i64,
    stored_seed: Option<i64>,
    records: Splitter,
    opts: &Options<'_>,
    spool: &mut Spool,
) -> Result<(Collected, Pending)> {
    let rules = Rules::new(feed);
    let decoder = records.decoder();
    let seed = {
        let mut f = rules.fingerprint().into_bytes();
        f.extend_from_slice(&decoder.fingerprint());
        xxh3_64(&f)
    };
    let slots = tx.slots(feed_id)?;
    // Raw hashes are only comparable under the same seed, and only worth
    // looking up when an unchanged record may be skipped. An item still
    // waiting for its data is looked at in full, to pass its data along.
    let skip_unchanged = !opts.force && opts.ids.is_none();
    let mut index = RawIndex::default();
    let mut clashed = false;
    if skip_unchanged && stored_seed == Some(seed as i64) {
        index.reserve(slots.len());
        let mut clashes = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if let Some(h) = s.raw_hash().filter(|_| !s.deleted() && !s.needs_data())
                && index.insert(h as u64, i as u32).is_some()
            {
                clashes.push(h as u64);
            }
        }
        // Two items sharing the low half: let both be parsed.
        clashed = !clashes.is_empty();
        for c in clashes {
            index.remove(&c);
        }
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let apply = Apply {
        tx,
        feed,
        feed_id,
        opts,
        slots: &slots,
        seen: vec![false; slots.len()],
        queue: slots
            .iter()
            .map(|s| match (s.pending(), s.deleted()) {
                (false, _) => NOT_QUEUED,
                (true, false) => UPSERT,
                (true, true) => DELETE,
            })
            .collect(),
        inserted: Vec::new(),
        // Rows above this were inserted by this collect.
        max_rowid: tx.max_rowid()?,
        found: HashSet::new(),
        out: Collected::default(),
    };

    let mut apply = std::thread::scope(|scope| -> Result<Apply<'_, '_>> {
        let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(workers * 2);
        let (done_tx, done_rx) = sync_channel::<(Chunk, Vec<Outcome>)>(workers * 2);
        threads::named(scope, "feedsync-split", move || split(records, chunk_tx));
        // Shared by the workers; when the last one stops, the splitter's
        // next send fails and it stops too.
        let chunk_rx = Arc::new(Mutex::new(chunk_rx));
        for _ in 0..workers {
            let (chunk_rx, done_tx) = (Arc::clone(&chunk_rx), done_tx.clone());
            let (index, slots, rules, decoder) = (&index, &slots, &rules, &decoder);
            threads::named(scope, "feedsync-parse", move || {
                let work = Work {
                    index,
                    guess: !index.is_empty() && !clashed,
                    slots,
                    rules,
                    decoder: decoder.clone(),
                    seed,
                };
                work.run(&chunk_rx, done_tx)
            });
        }
        drop((chunk_rx, done_tx));
        in_order(done_rx, apply, spool)
    })?;

    if let Some(ids) = opts.ids {
        apply.missing_ids(ids)?;
    } else if feed.snapshot {
        apply.deletions()?;
    }
    tx.set_raw_seed(feed_id, seed as i64)?;
    Ok(apply.finish())
}

/// The splitting thread: copies records into chunks for the workers.
fn split(mut records: Splitter, out: SyncSender<Chunk>) {
    for seq in 0.. {
        let mut chunk = Chunk {
            seq,
            bytes: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            records: Vec::with_capacity(CHUNK_RECORDS),
            end: None,
        };
        while chunk.records.len() < CHUNK_RECORDS && chunk.bytes.len() < CHUNK_BYTES {
            match records.next_record() {
                Ok(Some(r)) => {
                    chunk.records.push(Record {
                        start: chunk.bytes.len(),
                        len: r.bytes.len(),
                        line: r.line,
                        offset: r.offset,
                    });
                    chunk.bytes.extend_from_slice(r.bytes);
                }
                Ok(None) => {
                    chunk.end = Some(Ok(()));
                    break;
                }
                Err(e) => {
                    chunk.end = Some(Err(e));
                    break;
                }
            }
        }
        let last = chunk.end.is_some();
        if out.send(chunk).is_err() || last {
            return;
        }
    }
}

/// A worker: hashes records, and parses those whose bytes are new.
struct Work<'a> {
    index: &'a RawIndex,
    /// Try the slot after the last record's first: a source read in the
    /// order of the last read (a query's rows) then settles each record
    /// with the slot it reads anyway, not a lookup in a table of a million
    /// entries (a cache miss each). Only with no clashes in the index, so
    /// the guess finds exactly the slot the index would.
    guess: bool,
    slots: &'a [Slot],
    rules: &'a Rules,
    decoder: Decoder,
    seed: u64,
}

impl Work<'_> {
    fn run(&self, chunks: &Mutex<Receiver<Chunk>>, done: SyncSender<(Chunk, Vec<Outcome>)>) {
        loop {
            let next = chunks.lock().map(|rx| rx.recv());
            let Ok(Ok(chunk)) = next else { return };
            let mut outcomes = Vec::with_capacity(chunk.records.len());
            let mut next: Option<u32> = None;
            for r in &chunk.records {
                let bytes = &chunk.bytes[r.start..r.start + r.len];
                let raw = raw_hash(bytes, self.seed);
                let guessed = next.filter(|&slot| {
                    self.guess
                        && self.slots.get(slot as usize).is_some_and(|s| {
                            s.raw_hash() == Some(raw) && !s.deleted() && !s.needs_data()
                        })
                });
                let known = guessed.or_else(|| {
                    self.index
                        .get(&(raw as u64))
                        .copied()
                        .filter(|&slot| self.slots[slot as usize].raw_hash() == Some(raw))
                });
                next = known.map(|slot| slot + 1);
                let outcome = match known {
                    Some(slot) => Outcome::Unchanged(slot),
                    None => match self.decoder.item(bytes, self.rules) {
                        Ok((item, data)) => Outcome::Parsed(raw, item, data),
                        Err(why) => Outcome::Bad(why),
                    },
                };
                let bad = matches!(outcome, Outcome::Bad(_));
                outcomes.push(outcome);
                if bad {
                    break; // the collect stops at the first bad record
                }
            }
            if done.send((chunk, outcomes)).is_err() {
                return;
            }
        }
    }
}

/// Feeds the workers' results to `apply` in source order.
fn in_order<'t, 'c>(
    done: Receiver<(Chunk, Vec<Outcome>)>,
    mut apply: Apply<'t, 'c>,
    spool: &mut Spool,
) -> Result<Apply<'t, 'c>> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (chunk, outcomes) in done {
        waiting.insert(chunk.seq, (chunk, outcomes));
        while let Some((chunk, outcomes)) = waiting.remove(&next) {
            next += 1;
            apply.chunk(&chunk, outcomes, spool)?;
            match chunk.end {
                Some(Ok(())) => return Ok(apply),
                Some(Err(e)) => {
                    return Err(Error::source(format!(
                        "{}: {e}",
                        apply.feed.source.describe()
                    )));
                }
                None => {}
            }
        }
    }
    Err(Error::source(format!(
        "{}: reading stopped unexpectedly",
        apply.feed.source.describe()
    )))
}

/// A record's data, and where the same bytes stand in the source, if
/// they are its own.
struct Data<'a> {
    bytes: Cow<'a, [u8]>,
    at: Option<u64>,
}

/// A new item, waiting to be inserted with the rest of its chunk's.
struct Fresh<'a> {
    item: Item,
    raw: Hash,
    data: Data<'a>,
    /// Where it was read, for a duplicate-key error.
    number: u64,
    line: u64,
    offset: u64,
}

/// The state side of the diff: runs on the calling thread, in order.
struct Apply<'t, 'c> {
    tx: &'t Tx<'c>,
    feed: &'t Feed,
    feed_id: i64,
    opts: &'t Options<'t>,
    slots: &'t [Slot],
    seen: Vec<bool>,
    /// Per slot: NOT_QUEUED, UPSERT or DELETE once this collect is done.
    queue: Vec<u8>,
    /// Rows this collect added, all pending upserts.
    inserted: Vec<i64>,
    max_rowid: i64,
    found: HashSet<String>,
    out: Collected,
}

impl Apply<'_, '_> {
    fn finish(self) -> (Collected, Pending) {
        let mut q = Pending::default();
        for (s, op) in self.slots.iter().zip(&self.queue) {
            match *op {
                UPSERT => q.upserts += 1,
                DELETE => q.deletes += 1,
                _ => continue,
            }
            q.rowids.push(s.rowid);
        }
        // Rowids of new rows are above every slot's, so the list stays sorted.
        q.upserts += self.inserted.len() as u64;
        q.rowids.extend(self.inserted);
        (self.out, q)
    }

    /// Records that the known item at `rowid` is now queued as `op`.
    fn queued(&mut self, rowid: i64, op: u8) {
        if let Ok(slot) = self.slots.binary_search_by_key(&rowid, |s| s.rowid) {
            self.queue[slot] = op;
        }
    }

    fn chunk(&mut self, chunk: &Chunk, outcomes: Vec<Outcome>, spool: &mut Spool) -> Result<()> {
        let mut fresh: Vec<Fresh<'_>> = Vec::new();
        for (r, outcome) in chunk.records.iter().zip(outcomes) {
            self.out.records += 1;
            match outcome {
                Outcome::Unchanged(slot) => self.mark_seen(slot as usize, r)?,
                Outcome::Parsed(raw, item, data) => {
                    // A JSON record travels as its own bytes, which a file
                    // source can give again from where they stand.
                    let data = match data {
                        Some(text) => Data {
                            bytes: Cow::Owned(text.into_bytes()),
                            at: None,
                        },
                        None => Data {
                            bytes: Cow::Borrowed(&chunk.bytes[r.start..r.start + r.len]),
                            at: Some(r.offset),
                        },
                    };
                    if let Some(new) = self.parsed(r, raw, item, data, spool)? {
                        fresh.push(new);
                    }
                }
                Outcome::Bad(why) => {
                    return Err(Error::source(format!("{}: {why}", self.place(r))));
                }
            }
        }
        self.add_fresh(&fresh, spool)
    }

    /// Inserts a chunk's new items, many to a statement.
    fn add_fresh(&mut self, fresh: &[Fresh<'_>], spool: &mut Spool) -> Result<()> {
        let now = self.opts.now;
        for group in fresh.chunks(64) {
            let stored: Vec<Option<&str>> = group
                .iter()
                .map(|f| self.stored(&f.data))
                .collect::<Result<_>>()?;
            let rows: Vec<_> = group
                .iter()
                .zip(&stored)
                .map(|(f, text)| (&f.item, f.raw, *text))
                .collect();
            let first = self.tx.insert_many(self.feed_id, &rows, now)?;
            for (n, (f, text)) in group.iter().zip(&stored).enumerate() {
                let rowid = match first {
                    Some(first) => first + n as i64,
                    // A duplicate key among them: row by row, to name it.
                    None => self
                        .tx
                        .insert_many(self.feed_id, &[(&f.item, f.raw, *text)], now)?
                        .ok_or_else(|| {
                            Error::source(format!(
                                "{}: record {} (line {}, byte {}): duplicate key `{}`",
                                self.feed.source.describe(),
                                f.number,
                                f.line,
                                f.offset,
                                f.item.id
                            ))
                        })?,
                };
                self.stash(rowid, &f.data, spool)?;
                self.inserted.push(rowid);
            }
        }
        Ok(())
    }

    /// The data as text to keep in the state, when the feed keeps it.
    /// (Valid JSON is valid UTF-8, and CSV data was built as a String, so
    /// this fails only on a bug.)
    fn stored<'d>(&self, data: &'d Data<'_>) -> Result<Option<&'d str>> {
        if !self.opts.store_data {
            return Ok(None);
        }
        std::str::from_utf8(&data.bytes)
            .map(Some)
            .map_err(|e| Error::source(e.to_string()))
    }

    fn place(&self, r: &Record) -> String {
        format!(
            "{}: record {} (line {}, byte {})",
            self.feed.source.describe(),
            self.out.records,
            r.line,
            r.offset
        )
    }

    fn duplicate(&self, r: &Record, id: &str) -> Error {
        Error::source(format!("{}: duplicate key `{id}`", self.place(r)))
    }

    fn mark_seen(&mut self, slot: usize, r: &Record) -> Result<()> {
        if std::mem::replace(&mut self.seen[slot], true) {
            let id = self.tx.item_id(self.slots[slot].rowid)?;
            return Err(self.duplicate(r, &id));
        }
        Ok(())
    }

    /// The data of an item that is pending now: kept in the state with
    /// `store_data`, else spooled for this run's deliveries.
    fn stash(&self, rowid: i64, data: &Data<'_>, spool: &mut Spool) -> Result<()> {
        if self.opts.store_data {
            return Ok(());
        }
        spool
            .push(rowid, &data.bytes, data.at)
            .map_err(|e| Error::State(format!("spool file: {e}")))
    }

    /// A record whose bytes were new: compared by content with what the
    /// state knows. A new item is handed back, to be inserted with others.
    fn parsed<'d>(
        &mut self,
        r: &Record,
        raw: Hash,
        item: Item,
        data: Data<'d>,
        spool: &mut Spool,
    ) -> Result<Option<Fresh<'d>>> {
        if let Some(ids) = self.opts.ids {
            if !ids.contains(&item.id) {
                return Ok(None);
            }
            self.found.insert(item.id.clone());
        }
        let now = self.opts.now;
        let known = if self.slots.is_empty() {
            None // a first collect has nothing to compare with
        } else {
            self.tx.find(self.feed_id, &item.id)?
        };
        let Some(known) = known else {
            if item.deleted {
                return Ok(None); // deleting what the target never had
            }
            return Ok(Some(Fresh {
                item,
                raw,
                data,
                number: self.out.records,
                line: r.line,
                offset: r.offset,
            }));
        };
        if known.rowid > self.max_rowid {
            return Err(self.duplicate(r, &item.id));
        }
        let slot = self
            .slots
            .binary_search_by_key(&known.rowid, |s| s.rowid)
            .map_err(|_| Error::State(format!("state file: item {} has no slot", item.id)))?;
        self.mark_seen(slot, r)?;
        let skip_unchanged = !self.opts.force && self.opts.ids.is_none();
        if item.deleted {
            if !known.deleted {
                self.tx.tombstone(known.rowid, now)?;
                self.queue[slot] = DELETE;
            }
        } else if skip_unchanged && !known.deleted && known.hash == item.hash {
            // Same content in other bytes: remember the bytes. Stored data is
            // kept current; a pending item without data gets it passed along.
            let current = if known.has_data {
                std::str::from_utf8(&data.bytes).ok()
            } else {
                None
            };
            self.tx.touch(known.rowid, raw, current)?;
            if known.pending && !known.has_data {
                self.stash(known.rowid, &data, spool)?;
            }
        } else {
            self.tx
                .change(known.rowid, &item, raw, now, self.stored(&data)?)?;
            self.stash(known.rowid, &data, spool)?;
            self.queue[slot] = UPSERT;
        }
        Ok(None)
    }

    /// `--by-ids` asked for items the source does not have: send what the
    /// state knows of them.
    fn missing_ids(&mut self, ids: &HashSet<String>) -> Result<()> {
        let missing: Vec<String> = ids.difference(&self.found).cloned().collect();
        for id in &missing {
            match self.tx.find(self.feed_id, id)? {
                Some(k) if !k.deleted => {
                    self.tx.tombstone(k.rowid, self.opts.now)?;
                    self.queued(k.rowid, DELETE);
                }
                Some(k) => {
                    let id = std::slice::from_ref(id);
                    let all = &crate::state::ItemStatus::ALL;
                    self.tx.requeue(self.feed_id, all, Some(id), false)?;
                    self.queued(k.rowid, DELETE);
                }
                None => log::warn!(
                    "{}: no item `{id}` in the source or the state",
                    self.feed.name
                ),
            }
        }
        Ok(())
    }

    /// A snapshot's live items that were not read are deleted, unless that
    /// is more than the mass-delete guard allows.
    fn deletions(&mut self) -> Result<()> {
        let gone: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].deleted() && !self.seen[i])
            .collect();
        let live = self.slots.iter().filter(|s| !s.deleted()).count() as u64;
        let feed = self.feed;
        let allowed = feed.max_deletes.allowed(live);
        if gone.len() as u64 > allowed && !self.opts.allow_deletes {
            return Err(Error::DeleteGuard(format!(
                "the export would delete {} of {live} items, more than max_deletes ({}) allows; \
                 nothing was sent. If the deletions are real, run `feedsync sync --feed {} --allow-deletes`",
                gone.len(),
                feed.max_deletes,
                feed.name
            )));
        }
        for &slot in &gone {
            self.tx.tombstone(self.slots[slot].rowid, self.opts.now)?;
            self.queue[slot] = DELETE;
        }
        Ok(())
    }
}
