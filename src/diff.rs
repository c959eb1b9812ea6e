//! Finding what changed: stream a feed's records against the hashes in the
//! state file and mark new, changed and deleted items `pending`.
//!
//! Each record's raw bytes are hashed first. Bytes seen last time cannot
//! hide a change, so such a record is settled without parsing; only records
//! with new bytes are decoded, keyed and compared by canonical hash. Per item
//! the diff keeps a rowid, a raw hash and a seen bit in memory; everything
//! else stays in SQLite.
//!
//! The caller runs this inside one write transaction and commits only when
//! it returns Ok, so a bad record or a tripped guard leaves the state as it
//! was.

use std::collections::{HashMap, HashSet};

use xxhash_rust::xxh3::xxh3_64;

use crate::config::Feed;
use crate::error::{Error, Result};
use crate::format::{RawRecord, Splitter};
use crate::record::{Rules, raw_hash};
use crate::state::{Slot, Tx};

/// What one collect found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    /// Records read from the source.
    pub records: u64,
    /// Items that became pending in this collect.
    pub changed: u64,
    pub deleted: u64,
}

pub struct Options<'a> {
    pub allow_deletes: bool,
    pub now: i64,
    /// Queue every item read, changed or not (`resync --force`).
    pub force: bool,
    /// Only these ids, each queued whatever its hash (`resync --by-ids`);
    /// no deletions are inferred for the others.
    pub ids: Option<&'a HashSet<String>>,
}

/// Reads every record of `records` and brings the feed's items up to date.
pub fn collect(
    tx: &Tx<'_>,
    feed: &Feed,
    feed_id: i64,
    stored_seed: Option<i64>,
    records: &mut Splitter,
    opts: &Options<'_>,
) -> Result<Collected> {
    let rules = Rules::new(feed);
    let decoder = records.decoder();
    let seed = {
        let mut f = rules.fingerprint().into_bytes();
        f.extend_from_slice(&decoder.fingerprint());
        xxh3_64(&f)
    };
    let slots = tx.slots(feed_id)?;
    // Raw hashes are only comparable under the same seed, and only worth
    // looking up when an unchanged record may be skipped.
    let skip_unchanged = !opts.force && opts.ids.is_none();
    let by_raw: HashMap<u128, u32> = if skip_unchanged && stored_seed == Some(seed as i64) {
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.deleted)
            .filter_map(|(i, s)| s.raw_hash.map(|h| (h, i as u32)))
            .collect()
    } else {
        HashMap::new()
    };
    let mut seen = vec![false; slots.len()];
    // Rows above this were inserted by this collect.
    let max_rowid = tx.max_rowid()?;
    let place = |r: &RawRecord<'_>, n: u64| {
        format!(
            "{}: record {n} (line {}, byte {})",
            feed.source.describe(),
            r.line,
            r.offset
        )
    };

    let mut out = Collected::default();
    let mut found: HashSet<String> = HashSet::new();
    loop {
        let rec = match records.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => return Err(Error::source(format!("{}: {e}", feed.source.describe()))),
        };
        out.records += 1;
        let n = out.records;
        let raw = raw_hash(rec.bytes, seed);
        if let Some(&slot) = by_raw.get(&raw) {
            mark_seen(tx, &mut seen, slot as usize, &slots, || place(&rec, n))?;
            continue;
        }
        let item = decoder
            .decode(rec.bytes)
            .and_then(|d| rules.item(d))
            .map_err(|why| Error::source(format!("{}: {why}", place(&rec, n))))?;
        if let Some(ids) = opts.ids {
            if !ids.contains(&item.id) {
                continue;
            }
            found.insert(item.id.clone());
        }
        let known = if slots.is_empty() {
            None // a first collect has nothing to compare with
        } else {
            tx.find(feed_id, &item.id)?
        };
        let Some(known) = known else {
            if item.deleted {
                continue; // deleting what the target never had
            }
            if !tx.insert(feed_id, &item, raw, opts.now)? {
                return Err(Error::source(format!(
                    "{}: duplicate key `{}`",
                    place(&rec, n),
                    item.id
                )));
            }
            out.changed += 1;
            continue;
        };
        if known.rowid > max_rowid {
            return Err(Error::source(format!(
                "{}: duplicate key `{}`",
                place(&rec, n),
                item.id
            )));
        }
        let slot = slots
            .binary_search_by_key(&known.rowid, |s| s.rowid)
            .map_err(|_| Error::State(format!("state file: item {} has no slot", item.id)))?;
        mark_seen(tx, &mut seen, slot, &slots, || place(&rec, n))?;
        if item.deleted {
            if !known.deleted {
                tx.tombstone(known.rowid, opts.now)?;
                out.changed += 1;
            }
        } else if skip_unchanged && !known.deleted && known.hash == item.hash {
            let data = (known.has_data).then_some(item.data.as_str());
            tx.touch(known.rowid, raw, data)?;
        } else {
            tx.change(known.rowid, &item, raw, opts.now)?;
            out.changed += 1;
        }
    }

    if let Some(ids) = opts.ids {
        // Asked for by id but not in the source: send what the state knows.
        for id in ids.difference(&found) {
            match tx.find(feed_id, id)? {
                Some(k) if !k.deleted => tx.tombstone(k.rowid, opts.now)?,
                Some(_) => {
                    let id = std::slice::from_ref(id);
                    tx.requeue(feed_id, &crate::state::status::ALL, Some(id))?;
                }
                None => {
                    log::warn!("{}: no item `{id}` in the source or the state", feed.name);
                    continue;
                }
            }
            out.changed += 1;
        }
        return Ok(out);
    }
    if feed.snapshot {
        let gone: Vec<i64> = slots
            .iter()
            .zip(&seen)
            .filter(|(s, seen)| !s.deleted && !**seen)
            .map(|(s, _)| s.rowid)
            .collect();
        let live = slots.iter().filter(|s| !s.deleted).count() as u64;
        let allowed = feed.max_deletes.allowed(live);
        if gone.len() as u64 > allowed && !opts.allow_deletes {
            return Err(Error::DeleteGuard(format!(
                "the export would delete {} of {live} items, more than max_deletes ({}) allows; \
                 nothing was sent. If the deletions are real, run `feedsync sync --feed {} --allow-deletes`",
                gone.len(),
                feed.max_deletes,
                feed.name
            )));
        }
        for rowid in &gone {
            tx.tombstone(*rowid, opts.now)?;
        }
        out.deleted = gone.len() as u64;
        out.changed += out.deleted;
    }
    tx.set_raw_seed(feed_id, seed as i64)?;
    Ok(out)
}

fn mark_seen(
    tx: &Tx<'_>,
    seen: &mut [bool],
    slot: usize,
    slots: &[Slot],
    place: impl Fn() -> String,
) -> Result<()> {
    if std::mem::replace(&mut seen[slot], true) {
        let id = tx.item_id(slots[slot].rowid)?;
        return Err(Error::source(format!("{}: duplicate key `{id}`", place())));
    }
    Ok(())
}
