//! Delivery: a feed's send queue, batch by batch, to its target, and what
//! the target said, back into the state file.
//!
//! Three parties work at once. The calling thread reads batches from the
//! state and their data from the spool, and records outcomes; a courier
//! thread builds envelopes and sends them; the target answers. An item
//! becomes `sent` only in the transaction that follows the target's
//! acknowledgement of its version (Guarantee 1), and after a retryable
//! failure or a refusal nothing more goes to that feed in this run.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use indicatif::ProgressBar;

use crate::clock;
use crate::config::Feed;
use crate::error::Result;
use crate::outcome::FeedReport;
use crate::spool::Spool;
use crate::state::{OutItem, Outcome as Recorded, Queue, State};
use crate::target::{Response, SyncKind, Target, Verdict};

/// Sends a feed's queue in batches until it is empty, a batch must be
/// retried later, the target refuses us, or a shutdown is asked for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    state: &mut State,
    target: &Target,
    feed: &Feed,
    from: Pick<'_>,
    kind: SyncKind,
    nonce: Option<u64>,
    bar: &ProgressBar,
    report: &mut FeedReport,
) -> Result<Outcome> {
    let mut batches = Batches {
        from,
        after: 0,
        size: feed.target.batch_size,
        max_bytes: feed.target.max_batch_bytes,
        target,
        feed: &feed.name,
        waiting: 0,
    };
    let settle = Settle {
        feed,
        feed_id: from.queue.feed_id,
        pending: from.rowids,
    };
    // How many batches may be with the courier at once: one for HTTP
    // (the next goes only after the last was answered), several for a
    // file, which writes them and fsyncs once for all.
    let window = target.window();
    let mut refused = None;
    std::thread::scope(|scope| -> Result<()> {
        let courier = Courier::start(scope, target, &feed.name, kind, nonce);
        // Work an earlier run left unfinished at the target is settled
        // first; while some still is, nothing more goes there.
        match settle.remembered(state, target, report, &courier)? {
            Flow::Continue => {}
            Flow::StopFeed => return Ok(()),
            Flow::Refused(error) => {
                refused = Some(error);
                return Ok(());
            }
        }
        let mut in_flight = 0;
        // One batch read ahead while the courier works.
        let mut ahead: Option<Vec<OutItem>> = None;
        loop {
            // Keep the window full, unless a shutdown was asked for.
            while in_flight < window && !crate::stop::requested() {
                let Some(b) = ahead
                    .take()
                    .map_or_else(|| batches.next(state), |b| Ok(Some(b)))?
                else {
                    break;
                };
                bar.inc(b.len() as u64);
                courier.submit(b);
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            if ahead.is_none() && !crate::stop::requested() {
                ahead = batches.next(state)?;
            }
            let Sent { items, response } = courier.wait();
            in_flight -= 1;
            let flow = if let Response::Delivered(verdicts) = response {
                // Acknowledged: send on at once, record meanwhile.
                if in_flight < window
                    && !crate::stop::requested()
                    && let Some(b) = ahead.take()
                {
                    bar.inc(b.len() as u64);
                    courier.submit(b);
                    in_flight += 1;
                }
                settle.delivered(state, &items, &verdicts, report)?;
                Flow::Continue
            } else {
                settle.failed(state, items, response, report, &courier)?
            };
            match flow {
                Flow::Continue => {}
                // Batches still with the courier are not written: they
                // stay pending.
                Flow::StopFeed => break,
                Flow::Refused(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        Ok(())
    })?;
    Ok(Outcome {
        waiting: batches.waiting,
        refused,
    })
}

/// How a delivery ended, beyond what the report counts.
pub(crate) struct Outcome {
    /// Upserts left pending because their data was at hand nowhere.
    pub waiting: u64,
    /// The target refused us as a client, saying this.
    pub refused: Option<String>,
}

/// What to do after a batch.
enum Flow {
    Continue,
    /// A retryable failure: no more batches for this feed in this run.
    StopFeed,
    /// The target refused us as a client.
    Refused(String),
}

/// Where a delivery takes its items from.
#[derive(Clone, Copy)]
pub(crate) struct Pick<'q> {
    pub queue: &'q Queue,
    /// The queue's rowids when a collect just listed them; else the queue
    /// is walked in the table.
    pub rowids: Option<&'q [i64]>,
    /// Data of items that have none in the state.
    pub spool: Option<&'q Spool>,
}

/// Reads the send queue batch by batch, with each item's data. A batch
/// closes at `batch_size` items, or before its body would pass
/// `max_batch_bytes` (an item bigger than that goes alone).
struct Batches<'q> {
    from: Pick<'q>,
    /// The last rowid read.
    after: i64,
    size: usize,
    max_bytes: usize,
    /// Measures bodies the way the target writes them.
    target: &'q Target,
    feed: &'q str,
    /// Upserts skipped because their data is neither stored nor spooled.
    waiting: u64,
}

impl Batches<'_> {
    fn next(&mut self, state: &State) -> Result<Option<Vec<OutItem>>> {
        let batch = match self.from.rowids {
            Some(list) => {
                let at = list.partition_point(|&r| r <= self.after);
                let take = &list[at..(at + self.size).min(list.len())];
                if take.is_empty() {
                    return Ok(None);
                }
                self.after = take[take.len() - 1];
                state.pending_items(self.from.queue.feed_id, take)?
            }
            None => {
                let batch = state.queue(self.from.queue, self.after, self.size)?;
                let Some(last) = batch.last() else {
                    return Ok(None);
                };
                self.after = last.rowid;
                batch
            }
        };
        let mut batch = self.by_bytes(batch);
        // The data of the batch, read here rather than by the courier:
        // while the courier writes one batch, this thread reads the next,
        // which balances the two cores of a first sync.
        if let Some(spool) = self.from.spool
            && let Err(e) = spool.fill(&mut batch)
        {
            log::warn!(
                "{}: spool file: {e}; those items wait for the next run",
                self.feed
            );
        }
        // An upsert without data stays pending for the next collect,
        // which reads the source and passes it along.
        let before = batch.len();
        batch.retain(|i| i.deleted || i.data.is_some());
        self.waiting += (before - batch.len()) as u64;
        Ok(Some(batch))
    }

    /// The longest head of `batch` whose body stays within `max_bytes`
    /// (at least one item); the rest is read again as the next batch.
    fn by_bytes(&mut self, mut batch: Vec<OutItem>) -> Vec<OutItem> {
        let mut total = self.target.frame_bytes(self.feed);
        let keep = batch
            .iter()
            .position(|item| {
                let data = match &item.data {
                    Some(d) => d.len(),
                    None => self
                        .from
                        .spool
                        .and_then(|s| s.data_len(item.rowid))
                        .unwrap_or(0),
                };
                total += self.target.item_bytes(item, data);
                total > self.max_bytes
            })
            .map_or(batch.len(), |at| at.max(1));
        if keep < batch.len() {
            batch.truncate(keep);
            self.after = batch[keep - 1].rowid;
        }
        batch
    }
}

/// Sends batches on its own thread, so the next batch is read and the last
/// one recorded while the target is busy. It sends in order, and after a
/// failure nothing more goes out.
struct Courier {
    to: SyncSender<Vec<OutItem>>,
    from: Receiver<Sent>,
}

/// A batch back from the courier: the items it sent, and the answer.
struct Sent {
    items: Vec<OutItem>,
    response: Response,
}

impl Courier {
    fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        target: &'s Target,
        feed: &'s str,
        kind: SyncKind,
        nonce: Option<u64>,
    ) -> Courier {
        let window = target.window();
        let (to, inbox) = sync_channel::<Vec<OutItem>>(window);
        let (outbox, from) = sync_channel(window);
        crate::threads::named(scope, "feedsync-send", move || {
            let mut failed = false;
            while let Ok(first) = inbox.recv() {
                // Whatever else is already waiting goes in the same group.
                let mut group = vec![first];
                while group.len() < window {
                    match inbox.try_recv() {
                        Ok(b) => group.push(b),
                        Err(_) => break,
                    }
                }
                // After a failure nothing more is written or sent; the main
                // thread has stopped the feed and these stay pending.
                let responses = if failed {
                    group.iter().map(|_| Response::Skipped).collect()
                } else {
                    let batches: Vec<&[OutItem]> = group.iter().map(Vec::as_slice).collect();
                    target.send_group(feed, kind, &batches, nonce)
                };
                // (A 413 or another 4xx is split and resent by the main
                // thread; only these stop the feed.)
                failed |= responses
                    .iter()
                    .any(|r| matches!(r, Response::Retry { .. } | Response::Refused { .. }));
                for (items, response) in group.into_iter().zip(responses) {
                    let sent = Sent { items, response };
                    if outbox.send(sent).is_err() {
                        return;
                    }
                }
            }
        });
        Courier { to, from }
    }

    fn submit(&self, items: Vec<OutItem>) {
        self.to
            .send(items)
            .expect("the courier thread lives as long as the scope");
    }

    fn wait(&self) -> Sent {
        self.from.recv().expect("the courier answers every batch")
    }

    fn call(&self, items: Vec<OutItem>) -> (Vec<OutItem>, Response) {
        self.submit(items);
        let sent = self.wait();
        (sent.items, sent.response)
    }
}

/// Records what the target said about a batch.
struct Settle<'a> {
    feed: &'a Feed,
    feed_id: i64,
    /// The pending rowids a collect listed, when delivery follows one.
    pending: Option<&'a [i64]>,
}

impl Settle<'_> {
    /// The rowid range of `items` when they are all the pending items in
    /// it (a run of the collect's list, none left out).
    fn whole_range(&self, items: &[OutItem]) -> Option<(i64, i64)> {
        let list = self.pending?;
        let (first, last) = (items.first()?.rowid, items.last()?.rowid);
        let at = list.binary_search(&first).ok()?;
        let run = list.get(at..at + items.len())?;
        (run.last() == Some(&last) && run.iter().zip(items).all(|(r, i)| *r == i.rowid))
            .then_some((first, last))
    }

    /// A 2xx: every item `sent`, or per the `results` the target listed.
    /// Rows not yet acknowledged (see `state::unconfirmed`) that are
    /// acknowledged now are already `sent`: only the range moves.
    fn delivered(
        &self,
        state: &mut State,
        items: &[OutItem],
        verdicts: &[Verdict],
        report: &mut FeedReport,
    ) -> Result<()> {
        let now = clock::now_secs();
        let keep_data = self.feed.keep_data;
        let tx = state.write()?;
        if verdicts.iter().all(|v| *v == Verdict::Ok) {
            let born = self.born(&tx, items)?;
            let known = &items[..born];
            match self.whole_range(known) {
                Some(range) => {
                    let feed_id = self.feed_id;
                    tx.mark_range_sent(feed_id, range, now, keep_data)?
                }
                None => tx.mark_sent(known, now, keep_data)?,
            }
            tx.count_acknowledged(self.feed_id, items.len() - born)?;
            report.sent += items.len() as u64;
        } else {
            self.record_each(&tx, items, verdicts, report)?;
        }
        self.settled(tx, items)
    }

    /// Where the rows not yet acknowledged start in `items` (they come
    /// last, being the newest).
    fn born(&self, tx: &crate::state::Tx<'_>, items: &[OutItem]) -> Result<usize> {
        Ok(match tx.unconfirmed(self.feed_id)? {
            Some((from, _)) => items.partition_point(|i| i.rowid < from),
            None => items.len(),
        })
    }

    /// Ends a transaction that recorded what became of `items`: the range
    /// of rows not yet acknowledged moves past them.
    fn settled(&self, tx: crate::state::Tx<'_>, items: &[OutItem]) -> Result<()> {
        let rowids: Vec<i64> = items.iter().map(|i| i.rowid).collect();
        tx.confirm(self.feed_id, &rowids)?;
        tx.commit()
    }

    /// Each item's verdict, recorded only if the item is still the version
    /// sent.
    fn record_each(
        &self,
        tx: &crate::state::Tx<'_>,
        items: &[OutItem],
        verdicts: &[Verdict],
        report: &mut FeedReport,
    ) -> Result<()> {
        let now = clock::now_secs();
        let born = self.born(tx, items)?;
        let mut acknowledged = 0;
        for (i, item) in items.iter().enumerate() {
            let outcome = match verdicts.get(i) {
                None | Some(Verdict::Ok) => {
                    report.sent += 1;
                    if i >= born {
                        // Already `sent`, as inserted.
                        acknowledged += 1;
                        continue;
                    }
                    Recorded::Sent
                }
                Some(Verdict::Retry(e)) => self.retry_outcome(item, e, None, now, report),
                Some(Verdict::Fail(e)) => {
                    report.failed += 1;
                    report.item_error(e);
                    Recorded::Failed { error: e }
                }
            };
            tx.record(item, &outcome, now, self.feed.keep_data)?;
        }
        tx.count_acknowledged(self.feed_id, acknowledged)
    }

    /// The outcomes of the tasks an earlier run left unfinished at the
    /// target (`Target::remembered`). Their items may have changed since,
    /// so each is recorded only if it is still the version the task
    /// carried; a task failed by a bad item is split as any rejected batch.
    fn remembered(
        &self,
        state: &mut State,
        target: &Target,
        report: &mut FeedReport,
        courier: &Courier,
    ) -> Result<Flow> {
        for (items, response) in target.remembered(state, self.feed_id)? {
            let flow = match response {
                Response::Delivered(verdicts) => {
                    let tx = state.write()?;
                    self.record_each(&tx, &items, &verdicts, report)?;
                    self.settled(tx, &items)?;
                    Flow::Continue
                }
                // Unfinished: the feed says why nothing went, even when the
                // task is another feed's and none of its items wait on it.
                Response::Retry { error, retry_after } => {
                    if report.error.is_none() {
                        report.error = Some(error.clone());
                    }
                    report.exit.absorb(crate::exit_code::ExitCode::ItemsFailed);
                    let response = Response::Retry { error, retry_after };
                    self.failed(state, items, response, report, courier)?
                }
                response => self.failed(state, items, response, report, courier)?,
            };
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
        Ok(Flow::Continue)
    }

    /// Anything but a 2xx. On 413 and other 4xx answers the batch is split
    /// until the offending items stand alone.
    fn failed(
        &self,
        state: &mut State,
        items: Vec<OutItem>,
        response: Response,
        report: &mut FeedReport,
        courier: &Courier,
    ) -> Result<Flow> {
        let now = clock::now_secs();
        let keep_data = self.feed.keep_data;
        match response {
            Response::Delivered(verdicts) => {
                self.delivered(state, &items, &verdicts, report)?;
                Ok(Flow::Continue)
            }
            Response::Retry { error, retry_after } => {
                log::warn!("{}: {error}; will retry", self.feed.name);
                let tx = state.write()?;
                for item in &items {
                    let outcome = self.retry_outcome(item, &error, retry_after, now, report);
                    tx.record(item, &outcome, now, keep_data)?;
                }
                self.settled(tx, &items)?;
                Ok(Flow::StopFeed)
            }
            Response::TooLarge { error } | Response::Rejected { error } if items.len() == 1 => {
                report.item_error(&error);
                let tx = state.write()?;
                tx.record(
                    &items[0],
                    &Recorded::Failed { error: &error },
                    now,
                    keep_data,
                )?;
                self.settled(tx, &items)?;
                report.failed += 1;
                Ok(Flow::Continue)
            }
            Response::TooLarge { .. } | Response::Rejected { .. } => {
                let mut left = items;
                let right = left.split_off(left.len() / 2);
                for half in [left, right] {
                    let (half, response) = courier.call(half);
                    match self.failed(state, half, response, report, courier)? {
                        Flow::Continue => {}
                        stop => return Ok(stop),
                    }
                }
                Ok(Flow::Continue)
            }
            Response::Refused { error } => Ok(Flow::Refused(error)),
            // Not sent, after an earlier failure: it stays pending.
            Response::Skipped => Ok(Flow::StopFeed),
        }
    }

    /// `retry` with backoff, or `failed` once `max_attempts` is used up.
    fn retry_outcome<'e>(
        &self,
        item: &OutItem,
        error: &'e str,
        retry_after: Option<i64>,
        now: i64,
        report: &mut FeedReport,
    ) -> Recorded<'e> {
        report.item_error(error);
        let t = &self.feed.target;
        let attempts = item.attempts + 1;
        if t.max_attempts > 0 && attempts >= t.max_attempts {
            report.failed += 1;
            return Recorded::Failed { error };
        }
        report.retry += 1;
        let wait = backoff(t.retry_base_secs, t.retry_max_secs, attempts, &item.id)
            .max(retry_after.unwrap_or(0));
        Recorded::Retry {
            error,
            next_attempt_at: now + wait,
        }
    }
}

/// `base · 2^(attempts−1)` with up to 10% jitter, so retries of many items
/// do not arrive at once, and never more than `max` (guarantee 9 bounds
/// every wait by it, jitter included).
pub fn backoff(base: u64, max: u64, attempts: u32, salt: &str) -> i64 {
    let exp = attempts.saturating_sub(1).min(40);
    let wait = base.saturating_mul(1u64 << exp).min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let r = xxhash_rust::xxh3::xxh3_64_with_seed(salt.as_bytes(), nanos as u64);
    let jitter = if wait >= 10 { r % (wait / 10 + 1) } else { 0 };
    (wait + jitter).min(max) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        for (attempts, base) in [(1, 60), (2, 120), (3, 240)] {
            let w = backoff(60, 3600, attempts, "x") as u64;
            assert!(w >= base && w <= base + base / 10, "{attempts}: {w}");
        }
        // Never above the cap, jitter included (1,000 draws of it).
        for (attempts, salt) in (0..1000).map(|i| ([6, 7, 30][i % 3], format!("item{i}"))) {
            let w = backoff(60, 3600, attempts, &salt) as u64;
            assert!(w <= 3600, "{attempts}: {w}");
            assert!(attempts == 6 || w == 3600, "{attempts}: {w}");
        }
    }
}
