//! The jobs that move changes: collect (read a source and diff it, all in
//! one transaction) and deliver (in `deliver`: send the queue in batches
//! and record what the target said). `sync`, `send`, `retry` and `resync`
//! are combinations of the two, and `cleanup` drops old tombstones.

use std::collections::HashSet;

use indicatif::{ProgressBar, ProgressStyle};

use crate::clock;
use crate::config::{Config, Feed, FeedSecrets, Mode};
use crate::deliver::{self, Pick};
use crate::diff;
use crate::error::{Error, Result};
use crate::exit_code::ExitCode;
use crate::format::Splitter;
use crate::outcome::{FeedReport, JobReport};
use crate::source::{self, Opened, Source};
use crate::spool::Spool;
use crate::state::{ItemStatus, Queue, State, queue_size, retry_backlog};
use crate::target::{SyncKind, Target};

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
    /// Whether a feed's collect is delivered in the same run: immediate
    /// feeds, and any feed in a full sync.
    fn delivers_now(&self, feed: &Feed) -> bool {
        !self.dry_run && (self.full || feed.mode == Mode::Immediate)
    }

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
    secrets: FeedSecrets,
    agent: Option<ureq::Agent>,
    /// Targets (`TargetSettings::refusal_group`) that answered
    /// 401/403/404/405 in this run.
    refused: HashSet<String>,
    /// Draw progress bars (stderr is a terminal).
    progress: bool,
}

impl<'a> Jobs<'a> {
    pub fn new(config: &'a Config, state: &'a mut State, secrets: FeedSecrets) -> Jobs<'a> {
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
        crate::paths::parent_dir(self.state.path())
    }

    /// The one HTTP agent, made on first use, so connections are reused.
    fn agent(&mut self) -> &ureq::Agent {
        self.agent.get_or_insert_with(crate::target::agent)
    }

    fn target(&mut self, feed: &Feed) -> Target {
        let agent = self.agent().clone();
        Target::new(feed.target.clone(), self.secrets.of(&feed.name), agent)
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
                    // A task an earlier run left at the target is settled
                    // by a delivery even when nothing new is queued.
                    let queued = report.upserts + report.deletes > 0
                        || self.state.has_remembered_tasks(feed_id)?;
                    if queued && plan.delivers_now(&feed) {
                        let queue = Queue {
                            feed_id,
                            status: ItemStatus::Pending,
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
                Err(e) if e.stops_job() => return Err(e),
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
        let now = clock::now_secs();
        let (queued, due) = match kind {
            SyncKind::Retry => (ItemStatus::Retry, Some(now)),
            _ => (ItemStatus::Pending, None),
        };
        let mut job = JobReport::default();
        for feed in feeds {
            let mut report = FeedReport::new(&feed.name);
            let feed_id = self.state.feed_id(&feed.name)?;
            // Rows a killed run left unacknowledged (see `state::unconfirmed`).
            let tx = self.state.write()?;
            tx.reopen_unconfirmed(feed_id)?;
            tx.commit()?;
            let queue = Queue {
                feed_id,
                status: queued,
                due,
            };
            (report.upserts, report.deletes) = if kind == SyncKind::Retry {
                self.retry_backlog(feed, feed_id, now)?
            } else {
                queue_size(self.state.conn(), &queue)?
            };
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

    /// The `retry` items of a feed due at `now`, by op: (upserts, deletes).
    /// Items that failed while the clock was ahead of `now` have their wait
    /// counted again from now first, so none is due later than its wait
    /// (at most `retry_max_secs`, or a capped Retry-After) after the clock.
    fn retry_backlog(&mut self, feed: &Feed, feed_id: i64, now: i64) -> Result<(u64, u64)> {
        let max = feed.target.retry_max_secs as i64;
        let mut backlog = retry_backlog(self.state.conn(), feed_id, now, max)?;
        if backlog.ahead > 0 {
            log::warn!(
                "{}: {} retry item{} failed at a time the clock has not reached (it was fast, or was set back); their wait counts from now",
                feed.name,
                backlog.ahead,
                if backlog.ahead == 1 { "" } else { "s" }
            );
            let tx = self.state.write()?;
            tx.restart_waits(feed_id, now, max)?;
            tx.commit()?;
            backlog = retry_backlog(self.state.conn(), feed_id, now, max)?;
        }
        Ok((backlog.upserts, backlog.deletes))
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
                timeout: self.config.source_timeout,
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
        // New rows a killed run left unacknowledged are plain pending ones
        // from here on (see `state::unconfirmed`).
        tx.reopen_unconfirmed(feed_id)?;
        let mut pending = None;
        if plan.cleanup {
            tx.forget_feed(feed_id)?;
        }
        if plan.full && !plan.no_reindex && plan.ids.is_none() {
            // Before the diff, so it passes along the data of these items too.
            tx.requeue(feed_id, &ItemStatus::FAILURES, None, false)?;
        }
        if let (Some(mut source), Some(bar)) = (opened, bar) {
            if let Some(file) = source.file.take() {
                spool.refer_to(file);
            }
            let reader = Box::new(bar.wrap_read(source.reader));
            // Legacy feeds deliver in a later job, which reads no source.
            let store_data = feed.keep_data || feed.mode == Mode::Legacy;
            let opts = diff::Options {
                allow_deletes: plan.allow_deletes,
                now: clock::now_secs(),
                force: plan.force,
                ids: plan.ids.as_ref(),
                store_data,
                // Written once, a row keeps what it was inserted with: only
                // when that is also what a sent row holds (its data with
                // `keep_data`, else none).
                deliver_now: plan.delivers_now(feed) && (feed.keep_data || !store_data),
            };
            let collected = Splitter::new(reader, source.format, self.config.max_record_bytes)
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
                    report.read = true;
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
            let statuses: &[ItemStatus] = if plan.force || ids.is_some() {
                &ItemStatus::ALL
            } else {
                &ItemStatus::FAILURES
            };
            tx.requeue(feed_id, statuses, ids.as_deref(), true)?;
            pending = None;
        }
        let queue = Queue {
            feed_id,
            status: ItemStatus::Pending,
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
    /// retried later, or the target refuses us. New rows it did not get
    /// acknowledged become plain `pending` rows (see `state::unconfirmed`).
    fn deliver(
        &mut self,
        feed: &Feed,
        from: Pick<'_>,
        kind: SyncKind,
        nonce: Option<u64>,
        report: &mut FeedReport,
    ) -> Result<()> {
        let sent = self.deliver_queue(feed, from, kind, nonce, report);
        let tx = self.state.write()?;
        tx.reopen_unconfirmed(from.queue.feed_id)?;
        tx.commit()?;
        sent
    }

    fn deliver_queue(
        &mut self,
        feed: &Feed,
        from: Pick<'_>,
        kind: SyncKind,
        nonce: Option<u64>,
        report: &mut FeedReport,
    ) -> Result<()> {
        if self.refused.contains(&feed.target.refusal_group()) {
            report.fail(&Error::TargetRefused(
                "the target refused an earlier feed in this run; items stay pending".into(),
            ));
            return Ok(());
        }
        let tasks = crate::state::TaskLog::new(self.state.path(), from.queue.feed_id);
        let target = self.target(feed).keep_tasks(tasks);
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
        let outcome = deliver::run(self.state, &target, feed, from, kind, nonce, &bar, report)?;
        if let Some(error) = outcome.refused {
            self.refused.insert(feed.target.refusal_group());
            report.fail(&Error::TargetRefused(format!(
                "{error}; items stay pending"
            )));
        }
        let waiting = outcome.waiting;
        bar.finish_and_clear();
        if waiting > 0 {
            log::info!(
                "{}: {waiting} pending items wait for the next sync to read their data",
                feed.name
            );
        }
        if report.retry + report.failed > 0 {
            report.exit.absorb(ExitCode::ItemsFailed);
        }
        Ok(())
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

fn print_queue(conn: &rusqlite::Connection, q: &Queue) -> Result<()> {
    for (id, deleted) in crate::state::queue_ids(conn, q)? {
        println!("{} {id}", if deleted { "delete" } else { "upsert" });
    }
    Ok(())
}
