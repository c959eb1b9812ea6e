//! A loopback Algolia Search API, built from Algolia's REST reference
//! ("Batch write operations", "Get settings", "API keys"), not from
//! feedsync's code, so the `algolia` kind is tested against the service's
//! own rules:
//!
//! - every request carries `X-Algolia-Application-Id` and
//!   `X-Algolia-API-Key`; a wrong pair is 403 `Invalid Application-ID or
//!   API key`, a key without the ACL an operation needs is 403 `Method not
//!   allowed with this API key` (`addObject` for `updateObject`,
//!   `deleteObject` for `deleteObject`, `settings` for reading settings);
//! - `POST /1/indexes/{i}/batch` takes `{"requests":[{"action","body"}]}`,
//!   applies it atomically and in order, creating the index on the first
//!   write, and answers `{"taskID":N,"objectIDs":[…]}`; a record over the
//!   plan's size limit (10 KB on the free plan) rejects the WHOLE batch
//!   with 400 `Record at the position P objectID=ID is too big size=S/L
//!   bytes…`, and nothing of it is applied; deleting an absent object is
//!   no error;
//! - `GET /1/indexes/{i}/settings` answers the settings, 404 `Index does
//!   not exist` before the first write;
//! - errors are `{"message": …, "status": N}`.
//!
//! A request without `User-Agent: feedsync/…` is written down as a breach
//! of DESIGN.md's contract. On demand it misbehaves (a status, 429 with `Retry-After`, a dropped
//! connection, a slow answer) for the write endpoint. It keeps a mirror of
//! every index and the (op, id) of every record it took.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::receiver::{Reply, Request, Service, percent_decode, plain_body};

/// A whole-request misbehaviour of the batch endpoint.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status and an Algolia error body.
    Status(u16, String),
    /// 429 with `Retry-After: <secs>`.
    RetryAfter(u64),
    /// Read the request, then drop the connection (nothing applied).
    Drop,
    /// Apply the batch, then answer after this long.
    Slow(Duration),
}

/// The record size limit of Algolia's free (Build) plan, in bytes.
pub const FREE_PLAN_RECORD_BYTES: usize = 10_000;

struct State {
    app_id: String,
    api_key: String,
    acls: BTreeSet<String>,
    record_limit: usize,
    /// objectIDs refused as too big whatever their size.
    too_big: BTreeSet<String>,
    indexes: BTreeMap<String, BTreeMap<String, Value>>,
    next_task: u64,
    queue: VecDeque<Fault>,
    default: Option<Fault>,
    /// (index, op, id) of every record taken, in order.
    ops: Vec<(String, String, String)>,
    /// (method, raw request target) of every request.
    requests: Vec<(String, String)>,
    breaches: Vec<String>,
}

/// A running fake Algolia application.
pub struct Algolia {
    state: Arc<Mutex<State>>,
    service: Service,
}

impl Algolia {
    /// Application `app_id` whose admin key is `api_key` (every ACL), no
    /// indexes, the free plan's record limit.
    pub fn start(app_id: &str, api_key: &str) -> Algolia {
        let state = Arc::new(Mutex::new(State {
            app_id: app_id.to_string(),
            api_key: api_key.to_string(),
            acls: ["addObject", "deleteObject", "settings", "search"]
                .into_iter()
                .map(String::from)
                .collect(),
            record_limit: FREE_PLAN_RECORD_BYTES,
            too_big: BTreeSet::new(),
            indexes: BTreeMap::new(),
            next_task: 1000,
            queue: VecDeque::new(),
            default: None,
            ops: Vec::new(),
            requests: Vec::new(),
            breaches: Vec::new(),
        }));
        let st = Arc::clone(&state);
        let service = Service::start(move |req| handle(&st, req));
        Algolia { state, service }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`: the `url` of an algolia target (instead of
    /// `https://{app_id}.algolia.net`).
    pub fn url(&self) -> String {
        self.service.base_url()
    }

    /// The key now has only these ACLs.
    pub fn set_acls(&self, acls: &[&str]) {
        self.state().acls = acls.iter().map(|a| a.to_string()).collect();
    }

    /// The admin key changes (the old one is now a wrong key).
    pub fn set_api_key(&self, key: &str) {
        self.state().api_key = key.to_string();
    }

    /// Records larger than this many bytes are refused.
    pub fn set_record_limit(&self, bytes: usize) {
        self.state().record_limit = bytes;
    }

    /// Refuses record `id` as too big from now on, whatever its size (the
    /// whole batch holding it gets the 400).
    pub fn refuse_record(&self, id: &str) {
        self.state().too_big.insert(id.to_string());
    }

    /// Creates an empty index (as the dashboard does).
    pub fn create_index(&self, name: &str) {
        self.state().indexes.entry(name.to_string()).or_default();
    }

    /// Removes a record straight from an index (as the dashboard would).
    pub fn remove(&self, index: &str, id: &str) {
        if let Some(records) = self.state().indexes.get_mut(index) {
            records.remove(id);
        }
    }

    /// The records of an index as Algolia holds them: objectID → record
    /// (its `objectID` field included).
    pub fn records(&self, index: &str) -> BTreeMap<String, Value> {
        self.state().indexes.get(index).cloned().unwrap_or_default()
    }

    /// Whether the index exists.
    pub fn has_index(&self, index: &str) -> bool {
        self.state().indexes.contains_key(index)
    }

    /// (op, id) of every record of `index` taken, in order; `op` is
    /// `upsert` or `delete`.
    pub fn ops(&self, index: &str) -> Vec<(String, String)> {
        self.state()
            .ops
            .iter()
            .filter(|(i, _, _)| i == index)
            .map(|(_, op, id)| (op.clone(), id.clone()))
            .collect()
    }

    /// (method, raw request target) of every request received.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state().requests.clone()
    }

    /// Requests that broke DESIGN.md's contract (no `User-Agent:
    /// feedsync/…`).
    pub fn breaches(&self) -> Vec<String> {
        self.state().breaches.clone()
    }

    /// The next batch gets `fault` (queued faults go first, in order).
    pub fn push(&self, fault: Fault) {
        self.state().queue.push_back(fault);
    }

    /// Healthy again: queued faults dropped, no standing fault.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.queue.clear();
        st.default = None;
    }

    /// Every batch gets `fault` from now on (`None`: healthy).
    pub fn set(&self, fault: Option<Fault>) {
        self.state().default = fault;
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({ "message": message, "status": status }))
}

fn handle(state: &Mutex<State>, req: &Request) -> Option<Reply> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut st = lock();
        st.requests.push((req.method.clone(), req.path.clone()));
        if !req
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("feedsync/"))
        {
            st.breaches.push(format!(
                "{} {} without feedsync's User-Agent",
                req.method, req.path
            ));
        }
    }
    {
        let st = lock();
        if req.header("x-algolia-application-id") != Some(st.app_id.as_str())
            || req.header("x-algolia-api-key") != Some(st.api_key.as_str())
        {
            return Some(error(403, "Invalid Application-ID or API key"));
        }
    }
    let path = req
        .path
        .split_once('?')
        .map_or(req.path.as_str(), |(p, _)| p);
    let Some(segments) = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect::<Option<Vec<_>>>()
    else {
        return Some(error(400, "Invalid path"));
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["1", "indexes", index, "settings"]) => {
            let st = lock();
            Some(if !st.acls.contains("settings") {
                error(403, "Method not allowed with this API key")
            } else if !st.indexes.contains_key(*index) {
                error(404, "Index does not exist")
            } else {
                Reply::json(
                    200,
                    &json!({"hitsPerPage": 20, "searchableAttributes": null, "ranking":
                        ["typo", "geo", "words", "filters", "proximity", "attribute", "exact", "custom"]}),
                )
            })
        }
        ("POST", ["1", "indexes", index, "batch"]) => {
            let fault = {
                let mut st = lock();
                st.queue.pop_front().or_else(|| st.default.clone())
            };
            let mut slow = None;
            match fault {
                Some(Fault::Status(status, text)) => return Some(error(status, &text)),
                Some(Fault::RetryAfter(secs)) => {
                    return Some(
                        error(429, "Too many requests").header("Retry-After", &secs.to_string()),
                    );
                }
                Some(Fault::Drop) => return None,
                Some(Fault::Slow(d)) => slow = Some(d),
                None => {}
            }
            let reply = batch(&mut lock(), req, index);
            if let Some(d) = slow {
                let until = Instant::now() + d;
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Some(reply)
        }
        _ => Some(error(404, "Not found")),
    }
}

/// One batch: checked whole, then applied in order.
fn batch(st: &mut State, req: &Request, index: &str) -> Reply {
    let body: Option<Value> = plain_body(req).and_then(|b| serde_json::from_slice(&b).ok());
    let Some(requests) = body
        .as_ref()
        .and_then(|b| b.get("requests"))
        .and_then(Value::as_array)
    else {
        return error(
            400,
            "Invalid JSON: expected an object with a `requests` array",
        );
    };
    let mut ops = Vec::new();
    for (position, r) in requests.iter().enumerate() {
        let action = r["action"].as_str().unwrap_or("");
        let object = &r["body"];
        let Some(id) = object["objectID"].as_str() else {
            return error(
                400,
                &format!("objectID is required for the operation at position {position}"),
            );
        };
        let acl = match action {
            "updateObject" => "addObject",
            "deleteObject" => "deleteObject",
            other => return error(400, &format!("Invalid action: {other}")),
        };
        if !st.acls.contains(acl) {
            return error(403, "Method not allowed with this API key");
        }
        let size = object.to_string().len();
        if action == "updateObject" && (size > st.record_limit || st.too_big.contains(id)) {
            return error(
                400,
                &format!(
                    "Record at the position {position} objectID={id} is too big size={size}/{} bytes. Please have a look at https://www.algolia.com/doc/guides/sending-and-managing-data/prepare-your-data/in-depth/index-and-records-size-and-usage-limitations/#record-size-limits",
                    st.record_limit
                ),
            );
        }
        ops.push((action, id.to_string(), object.clone()));
    }
    let records = st.indexes.entry(index.to_string()).or_default();
    let mut ids = Vec::new();
    let mut taken = Vec::new();
    for (action, id, object) in ops {
        if action == "updateObject" {
            records.insert(id.clone(), object);
            taken.push((index.to_string(), "upsert".to_string(), id.clone()));
        } else {
            records.remove(&id);
            taken.push((index.to_string(), "delete".to_string(), id.clone()));
        }
        ids.push(id);
    }
    st.ops.extend(taken);
    st.next_task += 1;
    Reply::json(200, &json!({"taskID": st.next_task, "objectIDs": ids}))
}
