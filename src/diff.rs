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
use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::xxh3_64;

use crate::config::Feed;
use crate::error::{Error, Result};
use crate::format::{Decoder, Span, SplitError, Splitter};
use crate::record::{Hash, Item, Rules, raw_hash};
use crate::spool::Spool;
use crate::state::{ItemStatus, Slots, Tx};
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
    /// A delivery follows in this run: new rows go in once, as `sent` and
    /// not yet acknowledged (see `state::unconfirmed`), instead of as
    /// `pending` rows to be rewritten when acknowledged.
    pub deliver_now: bool,
}

/// Records per chunk, and bytes per chunk, handed to a worker at a time.
const CHUNK_RECORDS: usize = 2048;
const CHUNK_BYTES: usize = 2 << 20;

/// A run of records cut from the source (see `Splitter::next_block`).
struct Chunk {
    seq: u64,
    bytes: Vec<u8>,
    records: Vec<Span>,
    /// The stream ended (or failed) after these records.
    end: Option<std::result::Result<(), SplitError>>,
}

/// What a worker made of one record.
enum Outcome {
    /// Bytes seen last time, at this slot.
    Unchanged(u32),
    /// New bytes, parsed; with the slot the record stands at if the
    /// source kept its last order (the one after the last record's).
    Parsed(Hash, Item, Option<String>, Option<u32>),
    Bad(String),
}

/// Which slot holds a raw hash: an open-addressing table of slot numbers
/// (4 bytes per entry, against about 32 for a `HashMap`: at ten million
/// items that is 64 MB instead of 270), placed by the low half of the
/// hash, which is already uniformly spread. Entries compare the whole hash
/// in the slots, so two items sharing a half cannot be confused.
///
/// It is the second way to a slot. An export lists its records in the
/// same order from one run to the next, which is the order the rows were
/// inserted in, so a worker first tries the slot after the last record's
/// (a sequential read that the memory prefetcher serves) and looks here
/// only when that is not the one: at a million items that halved the time
/// a no-change collect spends finding slots, lost in cache misses.
struct RawIndex {
    table: Vec<u32>,
    mask: usize,
}

const NO_SLOT: u32 = u32::MAX;

impl RawIndex {
    /// The eligible slots: those with a raw hash that may be skipped (not
    /// tombstones, nor items still waiting for their data).
    fn new(slots: &Slots) -> RawIndex {
        let mask = (slots.len() * 3 / 2).next_power_of_two().max(16) - 1;
        let mut table = vec![NO_SLOT; mask + 1];
        for slot in 0..slots.len() {
            if let Some(h) = eligible(slots, slot) {
                let mut at = h as usize & mask;
                while table[at] != NO_SLOT {
                    at = (at + 1) & mask;
                }
                table[at] = slot as u32;
            }
        }
        RawIndex { table, mask }
    }

    fn get(&self, slots: &Slots, raw: Hash) -> Option<u32> {
        let mut at = raw as usize & self.mask;
        loop {
            match self.table[at] {
                NO_SLOT => return None,
                slot if slots.raw_hash(slot as usize) == Some(raw) => return Some(slot),
                _ => at = (at + 1) & self.mask,
            }
        }
    }
}

/// The raw hash by which a slot may be found unchanged, if it may.
fn eligible(slots: &Slots, slot: usize) -> Option<Hash> {
    slots
        .raw_hash(slot)
        .filter(|_| !slots.deleted(slot) && !slots.needs_data(slot))
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
    tx.use_key_field(feed_id, (feed.key.len() == 1).then(|| feed.key[0].as_str()))?;
    let slots = tx.slots(feed_id)?;
    // Raw hashes are only comparable under the same seed, and only worth
    // looking up when an unchanged record may be skipped. An item still
    // waiting for its data is looked at in full, to pass its data along.
    let skip_unchanged = !opts.force && opts.ids.is_none();
    let index = (skip_unchanged && stored_seed == Some(seed as i64)).then(|| RawIndex::new(&slots));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let apply = Apply {
        tx,
        feed,
        feed_id,
        opts,
        slots: &slots,
        seen: vec![false; slots.len()],
        queue: (0..slots.len())
            .map(|s| match (slots.pending(s), slots.deleted(s)) {
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
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(workers * 4);
        threads::named(scope, "feedsync-split", move || {
            split(records, chunk_tx, spare_rx)
        });
        // Shared by the workers; when the last one stops, the splitter's
        // next send fails and it stops too.
        let chunk_rx = Arc::new(Mutex::new(chunk_rx));
        for _ in 0..workers {
            let (chunk_rx, done_tx) = (Arc::clone(&chunk_rx), done_tx.clone());
            let (index, slots, rules, decoder) = (index.as_ref(), &slots, &rules, &decoder);
            threads::named(scope, "feedsync-parse", move || {
                let work = Work {
                    index,
                    slots,
                    rules,
                    decoder: decoder.clone(),
                    seed,
                };
                work.run(&chunk_rx, done_tx)
            });
        }
        drop((chunk_rx, done_tx));
        in_order(done_rx, apply, spool, spare_tx)
    })?;

    if let Some(ids) = opts.ids {
        apply.missing_ids(ids)?;
    } else if feed.snapshot {
        apply.deletions()?;
    }
    tx.set_raw_seed(feed_id, seed as i64)?;
    apply.unconfirmed()?;
    Ok(apply.finish())
}

/// The splitting thread: cuts the source into chunks for the workers,
/// reading into buffers that applied chunks gave back (`spare`).
fn split(mut records: Splitter, out: SyncSender<Chunk>, spare: Receiver<Vec<u8>>) {
    for seq in 0.. {
        let block = records.next_block(CHUNK_RECORDS, CHUNK_BYTES, spare.try_recv().ok());
        let last = block.end.is_some();
        let chunk = Chunk {
            seq,
            bytes: block.bytes,
            records: block.records,
            end: block.end,
        };
        if out.send(chunk).is_err() || last {
            return;
        }
    }
}

/// A worker: hashes records, and parses those whose bytes are new.
struct Work<'a> {
    /// None when no record may be skipped by its raw hash.
    index: Option<&'a RawIndex>,
    slots: &'a Slots,
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
            // The slot after the last record's (see `RawIndex`).
            let mut next_slot = 0usize;
            for r in &chunk.records {
                let bytes = &chunk.bytes[r.start..r.start + r.len];
                let raw = raw_hash(bytes, self.seed);
                let known = self.index.and_then(|index| {
                    let guess = (next_slot < self.slots.len()
                        && eligible(self.slots, next_slot) == Some(raw))
                    .then_some(next_slot as u32);
                    guess.or_else(|| index.get(self.slots, raw))
                });
                // A changed record most likely stands where the last one's
                // successor stood: the collect looks there first.
                let guess = (next_slot > 0 && next_slot < self.slots.len()).then_some(next_slot);
                next_slot = match (known, guess) {
                    (Some(slot), _) => slot as usize + 1,
                    (None, Some(guess)) => guess + 1,
                    (None, None) => next_slot,
                };
                let outcome = match known {
                    Some(slot) => Outcome::Unchanged(slot),
                    None => match self.decoder.item(bytes, self.rules) {
                        Ok((item, data)) => {
                            Outcome::Parsed(raw, item, data, guess.map(|g| g as u32))
                        }
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
    spare: SyncSender<Vec<u8>>,
) -> Result<Apply<'t, 'c>> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (chunk, outcomes) in done {
        waiting.insert(chunk.seq, (chunk, outcomes));
        while let Some((chunk, outcomes)) = waiting.remove(&next) {
            next += 1;
            apply.chunk(&chunk, outcomes, spool)?;
            // Its buffer is read into again (full: dropped).
            let _ = spare.try_send(chunk.bytes);
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
    slots: &'t Slots,
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
        for (slot, op) in self.queue.iter().enumerate() {
            match *op {
                UPSERT => q.upserts += 1,
                DELETE => q.deletes += 1,
                _ => continue,
            }
            q.rowids.push(self.slots.rowid(slot));
        }
        // Rowids of new rows are above every slot's, so the list stays sorted.
        q.upserts += self.inserted.len() as u64;
        q.rowids.extend(self.inserted);
        (self.out, q)
    }

    /// New rows inserted as `sent` are recorded as not yet acknowledged.
    /// (Rowids are consecutive within one collect; should they not be,
    /// the rows simply become `pending`.)
    fn unconfirmed(&self) -> Result<()> {
        let (Some(&first), Some(&last)) = (self.inserted.first(), self.inserted.last()) else {
            return Ok(());
        };
        if !self.opts.deliver_now {
            return Ok(());
        }
        self.tx.set_unconfirmed(self.feed_id, first, last)?;
        if (last - first + 1) as usize != self.inserted.len() {
            self.tx.reopen_unconfirmed(self.feed_id)?;
        }
        Ok(())
    }

    /// Records that the known item at `rowid` is now queued as `op`.
    fn queued(&mut self, rowid: i64, op: u8) {
        if let Some(slot) = self.slots.find(rowid) {
            self.queue[slot] = op;
        }
    }

    fn chunk(&mut self, chunk: &Chunk, outcomes: Vec<Outcome>, spool: &mut Spool) -> Result<()> {
        let mut fresh: Vec<Fresh<'_>> = Vec::new();
        for (r, outcome) in chunk.records.iter().zip(outcomes) {
            self.out.records += 1;
            match outcome {
                Outcome::Unchanged(slot) => self.mark_seen(slot as usize, r)?,
                Outcome::Parsed(raw, item, data, guess) => {
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
                    if let Some(new) = self.parsed(r, raw, item, data, guess, spool)? {
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
        let status = if self.opts.deliver_now {
            ItemStatus::Sent
        } else {
            ItemStatus::Pending
        };
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
            let first = self.tx.insert_many(self.feed_id, &rows, status, now)?;
            for (n, (f, text)) in group.iter().zip(&stored).enumerate() {
                let rowid = match first {
                    Some(first) => first + n as i64,
                    // A duplicate key among them: row by row, to name it.
                    None => self
                        .tx
                        .insert_many(self.feed_id, &[(&f.item, f.raw, *text)], status, now)?
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

    fn place(&self, r: &Span) -> String {
        format!(
            "{}: record {} (line {}, byte {})",
            self.feed.source.describe(),
            self.out.records,
            r.line,
            r.offset
        )
    }

    fn duplicate(&self, r: &Span, id: &str) -> Error {
        Error::source(format!("{}: duplicate key `{id}`", self.place(r)))
    }

    fn mark_seen(&mut self, slot: usize, r: &Span) -> Result<()> {
        if std::mem::replace(&mut self.seen[slot], true) {
            let id = self.tx.item_id(self.slots.rowid(slot))?;
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
        r: &Span,
        raw: Hash,
        item: Item,
        data: Data<'d>,
        guess: Option<u32>,
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
            // The guessed row, read by rowid (one random page, against two
            // through the id index), when it is this item.
            let at = guess.map(|g| self.slots.rowid(g as usize));
            match at.map(|rowid| self.tx.find_at(rowid, self.feed_id, &item.id)) {
                Some(Ok(Some(known))) => Some(known),
                Some(Err(e)) => return Err(e),
                _ => self.tx.find(self.feed_id, &item.id)?,
            }
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
            .find(known.rowid)
            .ok_or_else(|| Error::State(format!("state file: item {} has no slot", item.id)))?;
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
                    let all = &ItemStatus::ALL;
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
            .filter(|&i| !self.slots.deleted(i) && !self.seen[i])
            .collect();
        let live = (0..self.slots.len())
            .filter(|&i| !self.slots.deleted(i))
            .count() as u64;
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
            self.tx.tombstone(self.slots.rowid(slot), self.opts.now)?;
            self.queue[slot] = DELETE;
        }
        Ok(())
    }
}
