//! Delivery of one batch to a target, and what its answer means.
//!
//! A target is one of two carriers, picked by its URL: a `file:` path
//! ([`file`]: each batch appended as a line) or an HTTP service ([`http`]).
//! Over HTTP, every service speaks the same exchange — send, wait for the
//! whole answer, read its status as DESIGN.md's response table says — and
//! differs only in how its requests look and what its answers mean. That
//! difference is the [`Kind`] interface below, one file per kind
//! ([`webhook`]: feedsync's own envelope); everything shared is `http`'s,
//! written once.
//!
//! This module turns every possible answer into a [`Response`] the sync
//! loop can act on. It decides nothing about state: that is `sync`'s job.

pub mod algolia;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod meilisearch;
pub mod typesense;
pub mod webhook;

#[cfg(test)]
mod tests;

use crate::config::{Endpoint, Secrets, TargetKind, TargetSettings};
use crate::error::Result;
use crate::state::{OutItem, State, Task, TaskLog};

pub use http::agent;
pub use webhook::{envelope, idempotency_key, signature};

/// What a batch's answer means for its items.
#[derive(Debug)]
pub enum Response {
    /// 2xx: a verdict per item, in batch order (an item without one is
    /// acknowledged).
    Delivered(Vec<Verdict>),
    /// 408, 425, 429, 5xx, timeouts, connection failures.
    Retry {
        error: String,
        /// Seconds from now the target asked us to wait (Retry-After).
        retry_after: Option<i64>,
    },
    /// 413: the batch is too large.
    TooLarge { error: String },
    /// Another 4xx: something in the batch is bad.
    Rejected { error: String },
    /// 401, 403, 404, 405, redirects, TLS: we are not a welcome client.
    Refused { error: String },
    /// Not sent at all: an earlier batch of the same group failed.
    Skipped,
}

/// What a delivered batch's answer says about one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok,
    Retry(String),
    Fail(String),
}

/// The sync types a batch can carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyncKind {
    Partial,
    Full,
    Retry,
    Send,
    Probe,
}

impl SyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Partial => "partial",
            SyncKind::Full => "full",
            SyncKind::Retry => "retry",
            SyncKind::Send => "send",
            SyncKind::Probe => "probe",
        }
    }
}

/// One batch, as a kind sees it when it builds its requests.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub feed: &'a str,
    pub sync: SyncKind,
    pub items: &'a [OutItem],
    /// Marks a deliberate resend, so the receiver does not discard it as a
    /// duplicate.
    pub nonce: Option<u64>,
}

/// The HTTP methods the kinds use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

/// One HTTP request a kind asks for. `http` adds what every kind sends
/// (User-Agent, gzip with its header, the timeouts) and sends it.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Sent with `Post` only.
    pub body: Vec<u8>,
    /// The batch's items this request carries, as indexes into the batch,
    /// in the order its answer speaks of them.
    pub items: Vec<usize>,
    /// The kind's own name for what this request does ("deletes",
    /// "task"), to tell its requests apart when it reads their answers;
    /// `http` never looks at it.
    pub role: &'static str,
}

/// Header values hold credentials: only their names are shown.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_bytes", &self.body.len())
            .field("items", &self.items.len())
            .field("role", &self.role)
            .finish()
    }
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>, role: &'static str) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            items: Vec::new(),
            role,
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What an answer to one request means.
#[derive(Debug)]
pub enum Reading {
    /// Settled: `Response::Delivered` with a verdict per item the request
    /// carried (in its `items` order), or a failure of the whole request.
    Settled(Response),
    /// Accepted but not done yet (an enqueued task): the outcome is the
    /// answer to this request, which `http` sends at growing intervals,
    /// within `timeout_secs` in all, until it settles.
    Poll(Request),
}

/// A kind of HTTP service: how its requests look and what its answers
/// mean, and nothing else. Sending, timeouts, gzip, TLS, redirects,
/// Retry-After and the statuses every service shares are `http`'s.
pub trait Kind: Send + Sync {
    /// The requests that deliver one batch, in the order they go (upserts
    /// before deletes, where a service takes them apart). The batch counts
    /// as delivered only when every one of them was.
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request>;

    /// What a 2xx answer to `request` means for the items it carries.
    fn delivered(&self, batch: &Batch<'_>, request: &Request, body: &str) -> Reading;

    /// A non-2xx answer this kind reads otherwise than the shared response
    /// table does (say, a 404 to deleting one document: already gone).
    /// `None`: the table decides.
    fn exception(&self, _request: &Request, _status: u16, _body: &str) -> Option<Reading> {
        None
    }

    /// The last touch on a request as it goes on the wire, its body
    /// compressed if `gzip` is set: a signature over those bytes.
    fn seal(&self, _request: &mut Request) {}

    /// Why the service cannot take `item` at all (an id it refuses), if
    /// so: that item fails alone, with this error, and the rest of its
    /// batch is delivered.
    fn unfit(&self, _item: &OutItem) -> Option<String> {
        None
    }

    /// The bytes `item` adds to a request body (uncompressed), its data
    /// being `data` bytes long, and [`Kind::frame_bytes`] the bytes around
    /// the items: what `max_batch_bytes` counts. May overestimate, never
    /// under: a batch closes before its body would pass the limit.
    fn item_bytes(&self, item: &OutItem, data: usize) -> usize;

    /// The bytes of a request body besides its items'.
    fn frame_bytes(&self, feed: &str) -> usize;

    /// The requests `doctor` makes to check the target and the
    /// credentials, without changing anything there. They go in order;
    /// after the first whose health is a problem the rest are not made.
    fn probe(&self, feed: &str) -> Vec<Request>;

    /// Work a service accepted but has not done yet (an enqueued task)
    /// outlives a run killed or timed out while it waits. A kind that
    /// leaves such work records it in `tasks` while it waits and forgets
    /// it once finished; the others ignore this.
    fn keep_tasks(&mut self, _tasks: TaskLog) {}

    /// The service's queue this kind's remembered tasks wait in; `None`
    /// for a kind that leaves no unfinished work.
    fn queue(&self) -> Option<String> {
        None
    }

    /// The request that looks up a remembered task, read as `delivered`
    /// reads the poll of a task of this run (its `items` are set by the
    /// caller).
    fn recall(&self, _task: &Task) -> Option<Request> {
        None
    }

    /// What `doctor` makes of a whole answer to one of `probe`'s requests
    /// (a 403 that is only a note, an index that does not exist yet).
    /// `None`: the shared reading, [`http::health`].
    fn health(&self, _request: &Request, _status: u16, _body: &str) -> Option<Health> {
        None
    }

    /// `doctor`'s fix when the target refuses the credentials (401/403):
    /// which config keys name them and what rights they need.
    fn credentials_fix(&self) -> String;
}

/// What `doctor` learns from one probe: all well, worth knowing, or
/// something to fix, each said in a line (and a fix).
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Ok(String),
    Note { what: String, fix: Option<String> },
    Problem { what: String, fix: String },
}

impl Health {
    pub fn is_problem(&self) -> bool {
        matches!(self, Health::Problem { .. })
    }
}

/// The kind a target's settings name, speaking to `url`. Kinds are
/// registered here, one line each.
fn kind(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Box<dyn Kind> {
    match settings.kind {
        TargetKind::Webhook => Box::new(webhook::Webhook::new(url, settings, secrets)),
        TargetKind::Elasticsearch | TargetKind::Opensearch => {
            Box::new(elasticsearch::Elasticsearch::new(url, settings, secrets))
        }
        TargetKind::Meilisearch => Box::new(meilisearch::Meilisearch::new(url, settings, secrets)),
        TargetKind::Typesense => Box::new(typesense::Typesense::new(url, settings, secrets)),
        TargetKind::Algolia => Box::new(algolia::Algolia::new(url, settings, secrets)),
    }
}

/// A feed's target: where its batches go and with which credentials.
pub struct Target {
    settings: TargetSettings,
    carrier: Carrier,
}

enum Carrier {
    File(file::FileTarget),
    Http(http::Client),
}

impl Target {
    pub fn new(settings: TargetSettings, secrets: Secrets, agent: ureq::Agent) -> Target {
        let carrier = match &settings.endpoint {
            Endpoint::File(path) => Carrier::File(file::FileTarget::new(path.clone())),
            Endpoint::Http(url) => {
                Carrier::Http(http::Client::new(url, &settings, &secrets, agent))
            }
        };
        Target { settings, carrier }
    }

    pub fn settings(&self) -> &TargetSettings {
        &self.settings
    }

    /// Lets the kind remember in `tasks` the work it leaves unfinished.
    pub fn keep_tasks(mut self, tasks: TaskLog) -> Target {
        if let Carrier::Http(client) = &mut self.carrier {
            client.kind_mut().keep_tasks(tasks);
        }
        self
    }

    /// Looks up the tasks an earlier run left unfinished in this target's
    /// queue (DESIGN.md, "What each answer means"), oldest first, each
    /// waited for within `timeout_secs`: the items of `feed_id`'s, as the
    /// versions sent, with what the task's outcome means for them. One
    /// still unfinished comes last: nothing more may be queued there. A
    /// task of another feed sending to the same index is only waited for
    /// (its feed sends its items again, which is harmless); tasks the
    /// service no longer knows are left out (their items go again).
    pub fn remembered(&self, state: &State, feed_id: i64) -> Result<Vec<(Vec<OutItem>, Response)>> {
        let Carrier::Http(client) = &self.carrier else {
            return Ok(Vec::new());
        };
        let Some(queue) = client.kind().queue() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for task in state.remembered_tasks(&queue)? {
            let Some(mut request) = client.kind().recall(&task) else {
                continue;
            };
            let ours = task.feed_id == feed_id;
            let items = if ours {
                state.task_items(&task)?
            } else {
                Vec::new()
            };
            request.items = (0..items.len()).collect();
            let batch = Batch {
                feed: "",
                sync: SyncKind::Retry,
                items: &items,
                nonce: None,
            };
            match client.settle(&batch, &mut request) {
                Response::Skipped => {}
                Response::Retry { error, retry_after } => {
                    let error = format!(
                        "task {} already queued at {queue}: {error}; nothing more is queued there until it has finished",
                        task.uid
                    );
                    out.push((items, Response::Retry { error, retry_after }));
                    break;
                }
                Response::Refused { error } => {
                    out.push((items, Response::Refused { error }));
                    break;
                }
                response if ours => out.push((items, response)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The bytes `item` adds to a batch's body (`Kind::item_bytes`; a file
    /// target writes the webhook's envelope).
    pub fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        match &self.carrier {
            Carrier::File(_) => webhook::item_bytes(item, data),
            Carrier::Http(client) => client.kind().item_bytes(item, data),
        }
    }

    /// The bytes of a batch's body besides its items'.
    pub fn frame_bytes(&self, feed: &str) -> usize {
        match &self.carrier {
            Carrier::File(_) => webhook::frame_bytes(feed),
            Carrier::Http(client) => client.kind().frame_bytes(feed),
        }
    }

    /// How many batches are sent together. An HTTP target gets the next
    /// batch only after answering the last. A file target takes a group,
    /// appends each batch as a line and fsyncs once for all: every batch is
    /// still durable before it counts, for an eighth of the fsyncs (a
    /// fsync waits on the disk about as long for one batch as for eight).
    pub fn group(&self) -> usize {
        match self.carrier {
            Carrier::File(_) => 8,
            Carrier::Http(_) => 1,
        }
    }

    /// How many batches may be with the courier at once: for a file, a
    /// group being written and the next being gathered, so the disk and
    /// the reading of batches work at the same time.
    pub fn window(&self) -> usize {
        match self.carrier {
            Carrier::File(_) => 2 * self.group(),
            Carrier::Http(_) => 1,
        }
    }

    /// Sends a group of at most `group()` batches: a response per batch,
    /// in order.
    pub fn send_group(
        &self,
        feed: &str,
        sync: SyncKind,
        batches: &[&[OutItem]],
        nonce: Option<u64>,
    ) -> Vec<Response> {
        match &self.carrier {
            Carrier::File(f) => f.append(feed, sync, batches),
            Carrier::Http(_) => batches
                .iter()
                .map(|items| self.send(feed, sync, items, nonce))
                .collect(),
        }
    }

    /// Sends one batch and reads the answer. `nonce` marks a deliberate
    /// resend, so the receiver does not discard it as a duplicate.
    pub fn send(
        &self,
        feed: &str,
        sync: SyncKind,
        items: &[OutItem],
        nonce: Option<u64>,
    ) -> Response {
        match &self.carrier {
            Carrier::File(_) => self
                .send_group(feed, sync, &[items], nonce)
                .pop()
                .unwrap_or(Response::Skipped),
            Carrier::Http(client) => client.send(&Batch {
                feed,
                sync,
                items,
                nonce,
            }),
        }
    }
}
