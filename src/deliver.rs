//! Delivery: a feed's send queue, batch by batch, to its target, and what
//! the target said, back into the state file.
//!
//! Four parties work at once. The calling thread reads batches from the
//! state and records outcomes; a filler thread reads their data from the
//! spool; a courier thread builds envelopes and sends them (a `file:`
//! target takes them in groups, one fsync each); the target answers. An
//! item becomes `sent` only in the transaction that follows the target's
//! acknowledgement of its version (Guarantee 1), and after a retryable
//! failure or a refusal nothing more goes to that feed in this run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};

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
    let waiting = AtomicU64::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let courier = Courier::start(scope, target, &feed.name, kind, nonce, from.spool, &waiting);
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
        let mut out = InFlight::new(window);
        // One batch read ahead while the courier works.
        let mut ahead: Option<(Vec<OutItem>, usize)> = None;
        loop {
            // Keep the window full, unless a shutdown was asked for.
            while !crate::stop::requested() {
                if ahead.is_none() {
                    ahead = batches.next(state)?;
                }
                let Some((b, bytes)) = ahead.take() else {
                    break;
                };
                if !out.room(bytes) {
                    ahead = Some((b, bytes));
                    break;
                }
                bar.inc(b.len() as u64);
                courier.submit(b);
                out.push(bytes);
            }
            if out.is_empty() {
                break;
            }
            if ahead.is_none() && !crate::stop::requested() {
                ahead = batches.next(state)?;
            }
            // Fewer batches out than the window holds: no more come until
            // an answer does, so the courier must not wait for them.
            if out.len() < window {
                courier.flush();
            }
            let Sent { items, response } = courier.wait();
            out.pop();
            let flow = if let Response::Delivered(verdicts) = response {
                // Acknowledged: send on at once, record meanwhile.
                if !crate::stop::requested()
                    && let Some((b, bytes)) = ahead.take_if(|(_, bytes)| out.room(*bytes))
                {
                    bar.inc(b.len() as u64);
                    courier.submit(b);
                    out.push(bytes);
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
        waiting: waiting.into_inner(),
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
}

impl Batches<'_> {
    /// The next batch, and the size of its body.
    fn next(&mut self, state: &State) -> Result<Option<(Vec<OutItem>, usize)>> {
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
        // (The spool's data is read on the courier's side, by `fill`.)
        Ok(Some(self.by_bytes(batch)))
    }

    /// The longest head of `batch` whose body stays within `max_bytes`
    /// (at least one item), and the size of its body; the rest is read
    /// again as the next batch.
    fn by_bytes(&mut self, mut batch: Vec<OutItem>) -> (Vec<OutItem>, usize) {
        let mut total = self.target.frame_bytes(self.feed);
        let mut keep = batch.len();
        for (at, item) in batch.iter().enumerate() {
            let bytes = self.target.item_bytes(item, self.data_len(item));
            if at > 0 && total + bytes > self.max_bytes {
                keep = at;
                break;
            }
            total += bytes;
        }
        if keep < batch.len() {
            batch.truncate(keep);
            self.after = batch[keep - 1].rowid;
        }
        (batch, total)
    }

    /// The length of an item's data, stored or spooled.
    fn data_len(&self, item: &OutItem) -> usize {
        match &item.data {
            Some(d) => d.len(),
            None => self
                .from
                .spool
                .and_then(|s| s.data_len(item.rowid))
                .unwrap_or(0),
        }
    }
}

/// The batches with the courier, in the order sent: at most `window` of
/// them, and no more than [`WINDOW_BYTES`] of bodies unless a single batch
/// is bigger.
struct InFlight {
    window: usize,
    bytes: usize,
    sizes: std::collections::VecDeque<usize>,
}

impl InFlight {
    fn new(window: usize) -> InFlight {
        InFlight {
            window,
            bytes: 0,
            sizes: std::collections::VecDeque::with_capacity(window),
        }
    }

    /// Whether a batch of `bytes` may go now.
    fn room(&self, bytes: usize) -> bool {
        self.sizes.is_empty()
            || (self.sizes.len() < self.window && self.bytes + bytes <= WINDOW_BYTES)
    }

    fn push(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.sizes.push_back(bytes);
    }

    /// The oldest batch was answered.
    fn pop(&mut self) {
        self.bytes -= self.sizes.pop_front().unwrap_or(0);
    }

    fn len(&self) -> usize {
        self.sizes.len()
    }

    fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }
}

/// Sends batches on its own thread, so the next batch is read and the last
/// one recorded while the target is busy. It sends in order, and after a
/// failure nothing more goes out.
struct Courier {
    to: SyncSender<Job>,
    from: Receiver<Sent>,
}

/// How long the courier waits for the next batch of a group before it
/// sends the group as it is.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// No more than this is with the courier, unless one batch alone is
/// bigger: batches of records near `max_record_bytes` stay within the
/// memory bound (Guarantee 8) however many fit in the window. (A window
/// cut short by it is flushed like any other that is not full.)
const WINDOW_BYTES: usize = 16 << 20;

/// What the courier is handed.
enum Job {
    /// A batch, and whether its data is still to be read (a batch fresh
    /// from the queue; not the halves of one split after a 413).
    Batch(Vec<OutItem>, bool),
    /// Send what you hold: nothing more comes until it is answered.
    Flush,
}

/// A batch back from the courier: the items it sent, and the answer.
struct Sent {
    items: Vec<OutItem>,
    response: Response,
}

impl Courier {
    /// The courier, and in front of it, when the items' data waits in a
    /// spool, a thread that reads it (`fill`): a first sync reads a
    /// gigabyte there, which would otherwise leave the calling thread, busy
    /// with the state, the slowest of the three.
    fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        target: &'s Target,
        feed: &'s str,
        kind: SyncKind,
        nonce: Option<u64>,
        spool: Option<&'s Spool>,
        waiting: &'s AtomicU64,
    ) -> Courier {
        let (window, size) = (target.window(), target.group());
        let (to, inbox) = sync_channel::<Job>(window + 1);
        let (outbox, from) = sync_channel(window);
        let inbox = match spool {
            None => inbox,
            Some(spool) => {
                let (filled, out) = sync_channel(window + 1);
                crate::threads::named(scope, "feedsync-fill", move || {
                    while let Ok(mut job) = inbox.recv() {
                        if let Job::Batch(batch, fresh @ true) = &mut job {
                            let skipped = fill(spool, feed, batch);
                            waiting.fetch_add(skipped, Ordering::Relaxed);
                            *fresh = false;
                        }
                        if filled.send(job).is_err() {
                            return;
                        }
                    }
                });
                out
            }
        };
        crate::threads::named(scope, "feedsync-send", move || {
            let mut failed = false;
            let mut group: Vec<Vec<OutItem>> = Vec::with_capacity(size);
            loop {
                // A group is sent once it is full, or when the calling
                // thread says no more come for now, or when none has come
                // for a moment (the calling thread may be waiting for
                // answers with fewer batches out than the window holds).
                let job = if group.is_empty() {
                    inbox.recv().ok()
                } else {
                    match inbox.recv_timeout(GATHER) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => Some(Job::Flush),
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                };
                let now = match job {
                    None => break,
                    Some(Job::Batch(b, _)) => {
                        group.push(b);
                        group.len() >= size
                    }
                    Some(Job::Flush) => !group.is_empty(),
                };
                if !now {
                    continue;
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
                for (items, response) in group.drain(..).zip(responses) {
                    let sent = Sent { items, response };
                    if outbox.send(sent).is_err() {
                        return;
                    }
                }
            }
        });
        Courier { to, from }
    }

    /// Sends a batch fresh from the queue.
    fn submit(&self, items: Vec<OutItem>) {
        self.send(items, true);
    }

    fn send(&self, items: Vec<OutItem>, fresh: bool) {
        self.to
            .send(Job::Batch(items, fresh))
            .expect("the courier thread lives as long as the scope");
    }

    /// Has the courier send what it holds (see `Job::Flush`).
    fn flush(&self) {
        self.to
            .send(Job::Flush)
            .expect("the courier thread lives as long as the scope");
    }

    fn wait(&self) -> Sent {
        self.from.recv().expect("the courier answers every batch")
    }

    /// Sends items that were sent before (half of a batch too large, a
    /// task of an earlier run), and waits for the answer.
    fn call(&self, items: Vec<OutItem>) -> (Vec<OutItem>, Response) {
        self.send(items, false);
        self.flush();
        let sent = self.wait();
        (sent.items, sent.response)
    }
}

/// Reads the data of `batch`'s items from the spool. An upsert whose data
/// is not at hand (the source file changed under the spool) is taken out:
/// it stays pending for the next collect, which reads the source and
/// passes it along. Returns how many were taken out.
fn fill(spool: &Spool, feed: &str, batch: &mut Vec<OutItem>) -> u64 {
    if let Err(e) = spool.fill(batch) {
        log::warn!("{feed}: spool file: {e}; those items wait for the next run");
    }
    let before = batch.len();
    batch.retain(|i| i.deleted || i.data.is_some());
    (before - batch.len()) as u64
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
