//! The jobs that move changes: collect (read a source and diff it) and
//! deliver (send a queue of items in batches and record what the target
//! said). `sync`, `send`, `retry` and `resync` are combinations of the two.
//!
//! Delivery keeps Guarantee 1: an item becomes `sent` only in the
//! transaction that follows the target's acknowledgement of its version;
//! every other outcome leaves it `pending`, `retry` or `failed` with its
//! data, so a later run can deliver it.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::clock;
use crate::config::{Config, Feed, Mode, Secrets};
use crate::diff;
use crate::error::{Error, Result, exit};
use crate::format::Splitter;
use crate::source::{self, Opened, Source};
use crate::spool::Spool;
use crate::state::{OutItem, Outcome, Queue, State, queue_size, status};
use crate::target::{Response, SyncKind, Target, Verdict};

/// How one feed fared in one job; also the `--json` document's entries.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FeedReport {
    pub name: String,
    /// Items read from the source.
    pub collected: u64,
    /// Upserts and deletes queued for delivery in this job.
    pub upserts: u64,
    pub deletes: u64,
    /// Items the target acknowledged in this job.
    pub sent: u64,
    /// Items that became `retry` or `failed` in this job.
    pub retry: u64,
    pub failed: u64,
    /// Tombstones dropped (`cleanup` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub exit: u8,
    /// Time spent on this feed in this job, for the log file.
    #[serde(skip)]
    pub elapsed_ms: u64,
    #[serde(skip)]
    started: Option<std::time::Instant>,
}

impl FeedReport {
    fn new(name: &str) -> FeedReport {
        FeedReport {
            name: name.to_string(),
            started: Some(std::time::Instant::now()),
            ..Default::default()
        }
    }

    fn fail(&mut self, e: &Error) {
        self.error = Some(e.to_string());
        self.exit = e.exit_code();
    }

    /// The one-line summary shown on a terminal and kept in the run history.
    pub fn line(&self, dry_run: bool) -> String {
        let mut s = format!("{}: ", self.name);
        if let Some(n) = self.removed {
            s.push_str(&format!("{n} delivered tombstone{} dropped", plural(n)));
            return s;
        }
        if self.collected > 0 || self.upserts + self.deletes == 0 {
            s.push_str(&format!("{} read, ", self.collected));
        }
        if self.upserts + self.deletes == 0 {
            s.push_str("nothing to send");
        } else {
            if dry_run {
                s.push_str("would send ");
            }
            s.push_str(&format!(
                "{} upsert{}, {} delete{}",
                self.upserts,
                plural(self.upserts),
                self.deletes,
                plural(self.deletes)
            ));
            if !dry_run {
                s.push_str(&format!(", {} sent", self.sent));
                if self.retry > 0 {
                    s.push_str(&format!(", {} to retry", self.retry));
                }
                if self.failed > 0 {
                    s.push_str(&format!(", {} failed", self.failed));
                }
            }
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" — {e}"));
        }
        s
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A whole job: one report per feed and the job's exit code (that of the
/// first feed with a problem).
#[derive(Debug, Default, Serialize)]
pub struct JobReport {
    pub feeds: Vec<FeedReport>,
    #[serde(skip)]
    pub exit: u8,
}

impl JobReport {
    fn push(&mut self, mut r: FeedReport) {
        if let Some(t) = r.started {
            r.elapsed_ms = t.elapsed().as_millis() as u64;
        }
        if self.exit == exit::OK && r.exit != exit::OK {
            self.exit = r.exit;
        }
        self.feeds.push(r);
    }

    /// The run history's summary: one clause per feed.
    pub fn summary(&self) -> String {
        self.feeds
            .iter()
            .map(|f| f.line(false))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a job does besides the plain partial sync.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Send nothing and change nothing; report what would be sent.
    pub dry_run: bool,
    pub allow_deletes: bool,
    /// Print each queued item (`-v` with `--dry-run`).
    pub list_items: bool,
    /// A full sync: `retry` and `failed` items go back in the queue too,
    /// and legacy feeds are delivered as well.
    pub full: bool,
    /// Queue every item the source has, changed or not (`--force`).
    pub force: bool,
    /// Only these items, whatever their hashes (`--by-ids`).
    pub ids: Option<HashSet<String>>,
    /// Resend stored data; read no source (`--no-reindex`).
    pub no_reindex: bool,
    /// Forget the feed's state first (`--cleanup-feed`).
    pub cleanup: bool,
    /// Overrides the feeds' batch size (`--batch-size`).
    pub batch_size: Option<usize>,
}

impl Plan {
    /// A deliberate resend, which receivers must not drop as a duplicate.
    fn deliberate(&self) -> bool {
        self.force || self.ids.is_some() || self.no_reindex
    }
}

/// What the jobs share: config, state, the HTTP agent, and which targets
/// refused us in this run.
pub struct Jobs<'a> {
    pub config: &'a Config,
    pub state: &'a mut State,
    secrets: Secrets,
    agent: Option<ureq::Agent>,
    /// URL templates that answered 401/403/404/405 in this run.
    refused: HashSet<String>,
    /// Draw progress bars (stderr is a terminal).
    progress: bool,
}

impl<'a> Jobs<'a> {
    pub fn new(config: &'a Config, state: &'a mut State, secrets: Secrets) -> Jobs<'a> {
        Jobs {
            config,
            state,
            secrets,
            agent: None,
            refused: HashSet::new(),
            progress: false,
        }
    }

    /// Shows progress bars for reading sources and sending batches.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    fn bar(&self, len: Option<u64>, what: &str, bytes: bool) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let (bar, template) = match (len, bytes) {
            (Some(n), true) => (
                ProgressBar::new(n),
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ),
            (Some(n), false) => (
                ProgressBar::new(n),
                "{msg} [{bar:30}] {pos}/{len} items eta {eta}",
            ),
            (None, _) => (
                ProgressBar::new_spinner(),
                "{msg} {spinner} {bytes} {bytes_per_sec}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.with_style(style).with_message(what.to_string())
    }

    /// Where the spool goes: beside the state file, on the same disk.
    fn state_dir(&self) -> &std::path::Path {
        self.state
            .path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
    }

    /// The one HTTP agent, made on first use, so connections are reused.
    fn agent(&mut self) -> &ureq::Agent {
        self.agent.get_or_insert_with(crate::target::agent)
    }

    fn target(&mut self, feed: &Feed) -> Target {
        let agent = self.agent().clone();
        Target::new(feed.target.clone(), self.secrets.clone(), agent)
    }

    /// `sync` and `resync`: collect each feed, then deliver its queue —
    /// at once for immediate feeds and full syncs, by `send` for legacy
    /// feeds.
    pub fn collect_and_deliver(&mut self, feeds: &[&Feed], plan: &Plan) -> Result<JobReport> {
        let kind = if plan.full {
            SyncKind::Full
        } else {
            SyncKind::Partial
        };
        let nonce = plan.deliberate().then(nonce);
        let mut job = JobReport::default();
        for feed in feeds {
            let mut feed = (*feed).clone();
            if let Some(n) = plan.batch_size {
                feed.target.batch_size = n;
            }
            let mut report = FeedReport::new(&feed.name);
            let feed_id = self.state.feed_id(&feed.name)?;
            let mut spool = Spool::new(self.state_dir())
                .map_err(|e| Error::State(format!("spool file: {e}")))?;
            let started = std::time::Instant::now();
            let collected = self.collect(&feed, feed_id, plan, &mut report, &mut spool);
            log::debug!("{}: collect took {:?}", feed.name, started.elapsed());
            match collected {
                Ok(pending) => {
                    let queued = report.upserts + report.deletes > 0;
                    if queued && !plan.dry_run && (plan.full || feed.mode == Mode::Immediate) {
                        let queue = Queue {
                            feed_id,
                            status: status::PENDING,
                            due: None,
                        };
                        let from = Pick {
                            queue: &queue,
                            rowids: pending.as_deref(),
                            spool: Some(&spool),
                        };
                        let started = std::time::Instant::now();
                        self.deliver(&feed, from, kind, nonce, &mut report)?;
                        log::debug!("{}: delivery took {:?}", feed.name, started.elapsed());
                    }
                }
                Err(e @ (Error::State(_) | Error::Locked(_))) => return Err(e),
                Err(e) => report.fail(&e),
            }
            if !plan.dry_run {
                self.state
                    .finish_feed(feed_id, clock::now_secs(), report.error.as_deref())?;
            }
            job.push(report);
        }
        Ok(job)
    }

    /// `send` and `retry`: deliver a queue of stored items, reading no
    /// source. `retry` takes the `retry` items whose time has come.
    pub fn deliver_stored(&mut self, feeds: &[&Feed], kind: SyncKind) -> Result<JobReport> {
        let (queued, due) = match kind {
            SyncKind::Retry => (status::RETRY, Some(clock::now_secs())),
            _ => (status::PENDING, None),
        };
        let mut job = JobReport::default();
        for feed in feeds {
            let mut report = FeedReport::new(&feed.name);
            let feed_id = self.state.feed_id(&feed.name)?;
            let queue = Queue {
                feed_id,
                status: queued,
                due,
            };
            (report.upserts, report.deletes) = queue_size(self.state.conn(), &queue)?;
            let from = Pick {
                queue: &queue,
                rowids: None,
                spool: None,
            };
            self.deliver(feed, from, kind, None, &mut report)?;
            self.state
                .finish_feed(feed_id, clock::now_secs(), report.error.as_deref())?;
            job.push(report);
        }
        Ok(job)
    }

    /// `cleanup`: drop tombstones delivered more than `tombstone_days` ago.
    pub fn cleanup(&mut self, feeds: &[&Feed]) -> Result<JobReport> {
        let before = clock::now_secs() - i64::from(self.config.tombstone_days) * 86_400;
        let mut job = JobReport::default();
        for feed in feeds {
            let mut report = FeedReport::new(&feed.name);
            let feed_id = self.state.feed_id(&feed.name)?;
            report.removed = Some(self.state.drop_tombstones(feed_id, before)?);
            job.push(report);
        }
        Ok(job)
    }

    /// Brings a feed's items up to date and fills its send queue, all in
    /// one transaction; with `dry_run` the transaction is rolled back.
    /// Returns the pending rowids when the diff knows them all.
    fn collect(
        &mut self,
        feed: &Feed,
        feed_id: i64,
        plan: &Plan,
        report: &mut FeedReport,
        spool: &mut Spool,
    ) -> Result<Option<Vec<i64>>> {
        let info = self.state.feed_info(&feed.name)?;
        let stored_seed = if plan.cleanup {
            None
        } else {
            info.as_ref().and_then(|f| f.raw_seed)
        };
        let opened = if plan.no_reindex {
            None
        } else {
            let agent = self.agent().clone();
            let cx = source::Context {
                agent: &agent,
                // A full sync re-reads the source whatever its validators say.
                validators: info.filter(|_| !plan.full).map(|i| i.validators),
                workdir: self.config.dir(),
            };
            match Source::open(feed, &cx)? {
                Opened::Unchanged => {
                    log::info!("{}: the source is unchanged (HTTP 304)", feed.name);
                    None
                }
                Opened::Stream(source) => Some(source),
            }
        };

        let bar = opened
            .as_ref()
            .map(|s| self.bar(s.size, &format!("{}: reading", feed.name), true));
        let tx = self.state.write()?;
        let mut pending = None;
        if plan.cleanup {
            tx.forget_feed(feed_id)?;
        }
        if plan.full && !plan.no_reindex && plan.ids.is_none() {
            // Before the diff, so it passes along the data of these items too.
            tx.requeue(feed_id, &[status::RETRY, status::FAILED], None, false)?;
        }
        if let (Some(mut source), Some(bar)) = (opened, bar) {
            if let Some(file) = source.file.take() {
                spool.refer_to(file);
            }
            let reader = Box::new(bar.wrap_read(source.reader));
            let opts = diff::Options {
                allow_deletes: plan.allow_deletes,
                now: clock::now_secs(),
                force: plan.force,
                ids: plan.ids.as_ref(),
                // Legacy feeds deliver in a later job, which reads no source.
                store_data: feed.keep_data || feed.mode == Mode::Legacy,
            };
            let collected = Splitter::new(reader, source.format)
                .map_err(|e| Error::source(format!("{}: {e}", feed.source.describe())))
                .and_then(|records| {
                    diff::collect(&tx, feed, feed_id, stored_seed, records, &opts, spool)
                })
                .and_then(|c| {
                    spool
                        .seal()
                        .map_err(|e| Error::State(format!("spool file: {e}")))?;
                    Ok(c)
                });
            bar.finish_and_clear();
            // The splitter (and with it the read end of any pipe) is gone, so
            // a command or query thread can be waited for. Its failure is the
            // root cause of a bad record it left behind, so it wins.
            let ended = source.end.finish(collected.is_ok());
            let validators = match (collected, ended) {
                (_, Err(e)) | (Err(e), _) => {
                    tx.rollback()?;
                    return Err(e);
                }
                (Ok((c, p)), Ok(v)) => {
                    report.collected = c.records;
                    (report.upserts, report.deletes) = (p.upserts, p.deletes);
                    pending = Some(p.rowids);
                    v
                }
            };
            if let Some(v) = validators {
                tx.set_validators(feed_id, &v)?;
            }
        }
        if plan.no_reindex {
            let ids: Option<Vec<String>> = plan.ids.as_ref().map(|s| s.iter().cloned().collect());
            let statuses: &[&str] = if plan.force || ids.is_some() {
                &status::ALL
            } else {
                &[status::RETRY, status::FAILED]
            };
            tx.requeue(feed_id, statuses, ids.as_deref(), true)?;
            pending = None;
        }
        let queue = Queue {
            feed_id,
            status: status::PENDING,
            due: None,
        };
        if pending.is_none() {
            (report.upserts, report.deletes) = queue_size(tx.conn(), &queue)?;
        }
        if plan.dry_run {
            if plan.list_items {
                print_queue(tx.conn(), &queue)?;
            }
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok(pending)
    }

    /// Sends a feed's queue in batches until it is empty, a batch must be
    /// retried later, or the target refuses us.
    fn deliver(
        &mut self,
        feed: &Feed,
        from: Pick<'_>,
        kind: SyncKind,
        nonce: Option<u64>,
        report: &mut FeedReport,
    ) -> Result<()> {
        if self.refused.contains(&feed.target.url_template) {
            report.fail(&Error::TargetRefused(
                "the target refused an earlier feed in this run; items stay pending".into(),
            ));
            return Ok(());
        }
        let target = self.target(feed);
        let bar = if self.progress {
            let todo = queue_size(self.state.conn(), from.queue)?;
            self.bar(
                Some(todo.0 + todo.1),
                &format!("{}: sending", feed.name),
                false,
            )
        } else {
            ProgressBar::hidden()
        };
        let mut batches = Batches {
            from,
            after: 0,
            size: feed.target.batch_size,
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
        std::thread::scope(|scope| -> Result<()> {
            let courier =
                Courier::start(scope, &target, batches.from.spool, &feed.name, kind, nonce);
            let mut in_flight = 0;
            // One batch read ahead while the courier works.
            let mut ahead: Option<Vec<OutItem>> = None;
            loop {
                // Keep the window full, unless a shutdown was asked for.
                while in_flight < window && !crate::stop::requested() {
                    let Some(b) = ahead
                        .take()
                        .map_or_else(|| batches.next(self.state), |b| Ok(Some(b)))?
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
                    ahead = batches.next(self.state)?;
                }
                let Sent {
                    items,
                    held,
                    response,
                } = courier.wait();
                in_flight -= 1;
                batches.waiting += held;
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
                    settle.delivered(self.state, &items, &verdicts, report)?;
                    Flow::Continue
                } else {
                    settle.failed(self.state, items, response, report, &courier)?
                };
                match flow {
                    Flow::Continue => {}
                    // Batches still with the courier are not written: they
                    // stay pending.
                    Flow::StopFeed => break,
                    Flow::Refused(error) => {
                        self.refused.insert(feed.target.url_template.clone());
                        report.fail(&Error::TargetRefused(format!(
                            "{error}; items stay pending"
                        )));
                        break;
                    }
                }
            }
            Ok(())
        })?;
        let waiting = batches.waiting;
        bar.finish_and_clear();
        if waiting > 0 {
            log::info!(
                "{}: {waiting} pending items wait for the next sync to read their data",
                feed.name
            );
        }
        if report.exit == exit::OK && report.retry + report.failed > 0 {
            report.exit = exit::ITEMS_FAILED;
        }
        Ok(())
    }
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
struct Pick<'q> {
    queue: &'q Queue<'q>,
    /// The queue's rowids when a collect just listed them; else the queue
    /// is walked in the table.
    rowids: Option<&'q [i64]>,
    /// Data of items that have none in the state.
    spool: Option<&'q Spool>,
}

/// Reads the send queue batch by batch, with each item's data.
struct Batches<'q> {
    from: Pick<'q>,
    /// The last rowid read.
    after: i64,
    size: usize,
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
        Ok(Some(batch))
    }
}

/// Sends batches on its own thread, so the next batch is read and the last
/// one recorded while the target is busy; it also reads the items' data
/// from the spool, off the thread that works the state file. It sends in
/// order, and after a failure nothing more goes out.
struct Courier {
    to: SyncSender<Vec<OutItem>>,
    from: Receiver<Sent>,
}

/// A batch back from the courier: the items it sent, how many it held
/// back for lack of data, and the answer.
struct Sent {
    items: Vec<OutItem>,
    held: u64,
    response: Response,
}

impl Courier {
    fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        target: &'s Target,
        spool: Option<&'s Spool>,
        feed: &'s str,
        kind: SyncKind,
        nonce: Option<u64>,
    ) -> Courier {
        let window = target.window();
        let (to, inbox) = sync_channel::<Vec<OutItem>>(window);
        let (outbox, from) = sync_channel(window);
        crate::diff::named(scope, "feedsync-send", move || {
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
                let mut held = Vec::with_capacity(group.len());
                for items in &mut group {
                    if let Some(spool) = spool
                        && let Err(e) = spool.fill(items)
                    {
                        log::warn!("{feed}: spool file: {e}; those items wait for the next run");
                    }
                    // An upsert without data stays pending for the next
                    // collect, which reads the source and passes it along.
                    let before = items.len();
                    items.retain(|i| i.deleted || i.data.is_some());
                    held.push((before - items.len()) as u64);
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
                for ((items, held), response) in group.into_iter().zip(held).zip(responses) {
                    let sent = Sent {
                        items,
                        held,
                        response,
                    };
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
}

impl Settle<'_> {
    /// A 2xx: every item `sent`, or per the `results` the target listed.
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
            match self.whole_range(items) {
                Some(range) => {
                    let feed_id = self.feed_id;
                    tx.mark_range_sent(feed_id, range, now, keep_data)?
                }
                None => tx.mark_sent(items, now, keep_data)?,
            }
            report.sent += items.len() as u64;
        } else {
            for (i, item) in items.iter().enumerate() {
                let outcome = match verdicts.get(i) {
                    None | Some(Verdict::Ok) => {
                        report.sent += 1;
                        Outcome::Sent
                    }
                    Some(Verdict::Retry(e)) => self.retry_outcome(item, e, None, now, report),
                    Some(Verdict::Fail(e)) => {
                        report.failed += 1;
                        Outcome::Failed { error: e }
                    }
                };
                tx.record(item, &outcome, now, keep_data)?;
            }
        }
        tx.commit()
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
                tx.commit()?;
                Ok(Flow::StopFeed)
            }
            Response::TooLarge { error } | Response::Rejected { error } if items.len() == 1 => {
                let tx = state.write()?;
                tx.record(
                    &items[0],
                    &Outcome::Failed { error: &error },
                    now,
                    keep_data,
                )?;
                tx.commit()?;
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
    ) -> Outcome<'e> {
        let t = &self.feed.target;
        let attempts = item.attempts + 1;
        if t.max_attempts > 0 && attempts >= t.max_attempts {
            report.failed += 1;
            return Outcome::Failed { error };
        }
        report.retry += 1;
        let wait = backoff(t.retry_base_secs, t.retry_max_secs, attempts, &item.id)
            .max(retry_after.unwrap_or(0));
        Outcome::Retry {
            error,
            next_attempt_at: now + wait,
        }
    }
}

/// A random number for one run's deliberate resends.
fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    xxhash_rust::xxh3::xxh3_64(format!("{t}:{}", std::process::id()).as_bytes())
}

/// `base · 2^(attempts−1)`, capped at `max`, plus up to 10% jitter so
/// retries of many items do not arrive at once.
pub fn backoff(base: u64, max: u64, attempts: u32, salt: &str) -> i64 {
    let exp = attempts.saturating_sub(1).min(40);
    let wait = base.saturating_mul(1u64 << exp).min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let r = xxhash_rust::xxh3::xxh3_64_with_seed(salt.as_bytes(), nanos as u64);
    let jitter = if wait >= 10 { r % (wait / 10 + 1) } else { 0 };
    (wait + jitter) as i64
}

fn print_queue(conn: &rusqlite::Connection, q: &Queue<'_>) -> Result<()> {
    for (id, deleted) in crate::state::queue_ids(conn, q)? {
        println!("{} {id}", if deleted { "delete" } else { "upsert" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        for (attempts, base) in [(1, 60), (2, 120), (3, 240), (7, 3600), (30, 3600)] {
            let w = backoff(60, 3600, attempts, "x") as u64;
            assert!(w >= base && w <= base + base / 10, "{attempts}: {w}");
        }
    }
}
