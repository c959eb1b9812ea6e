//! A loopback Meilisearch (v1.x), written from its API reference, not from
//! feedsync's code: the routes feedsync uses, `Authorization: Bearer`,
//! JSON error bodies `{message, code, type, link}`, and — what makes
//! Meilisearch hard to sync into — asynchronous tasks.
//!
//! A write answers `202` with a task summary and does nothing yet; the
//! task is processed later (here: once it has been looked up
//! `finish_after` times) and only then succeeds or fails. Like the real
//! auto-batcher, processing takes every task enqueued on that index
//! together: a task whose own documents are bad fails alone, but an
//! `internal` or `system` failure fails every task of the batch with one
//! error. So a client that enqueues a task while an earlier one on the
//! same index is unfinished can get good documents failed; the fake also
//! records each such enqueue in [`MeiliFake::violations`], which tests
//! assert empty.
//!
//! Documents are validated as Meilisearch does: the primary key field must
//! be present and an integer or a string of `A–Z a–z 0–9 - _`, at most 511
//! bytes (`invalid_document_id`, `missing_document_id`); `_geo` must be an
//! object with `lat` and `lng` (`invalid_document_geo_field`). An index is
//! created by its first document task unless the key may not create
//! indexes ([`MeiliFake::forbid_index_creation`]); a primary key given with
//! `?primaryKey=` that differs from the index's fails the task
//! (`index_primary_key_already_exists`).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// One document task's payload.
#[derive(Clone, Debug)]
pub enum Work {
    /// `documentAdditionOrUpdate`: the documents, and `?primaryKey=`.
    Add {
        docs: Vec<Value>,
        primary_key: Option<String>,
    },
    /// `documentDeletion` by ids (`delete-batch`).
    Delete { ids: Vec<Value> },
}

/// A task as Meilisearch keeps it.
#[derive(Clone, Debug)]
pub struct Task {
    pub uid: u64,
    pub index: String,
    pub work: Work,
    /// enqueued | processing | succeeded | failed | canceled
    pub status: String,
    pub error: Option<Value>,
    /// How often it has been looked up.
    pub polls: u32,
    /// The batch it was processed in.
    pub batch: Option<u64>,
    /// A failure this task was made to have (`fail_next_task`).
    doomed: Option<Value>,
}

impl Task {
    fn kind(&self) -> &'static str {
        match self.work {
            Work::Add { .. } => "documentAdditionOrUpdate",
            Work::Delete { .. } => "documentDeletion",
        }
    }

    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "canceled")
    }

    fn view(&self) -> Value {
        let done = self.status == "succeeded";
        let details = match &self.work {
            Work::Add { docs, .. } => {
                let indexed = done.then_some(docs.len());
                json!({"receivedDocuments": docs.len(), "indexedDocuments": indexed})
            }
            Work::Delete { ids } => {
                let deleted = done.then_some(ids.len());
                json!({"providedIds": ids.len(), "deletedDocuments": deleted})
            }
        };
        let at = "2026-11-29T12:00:00.000000Z";
        let started = (self.status != "enqueued").then_some(at);
        let finished = self.finished().then_some("2026-11-29T12:00:00.001000Z");
        let duration = self.finished().then_some("PT0.001S");
        json!({
            "uid": self.uid,
            "batchUid": self.batch,
            "indexUid": self.index,
            "status": self.status,
            "type": self.kind(),
            "canceledBy": null,
            "details": details,
            "error": self.error.clone().unwrap_or(Value::Null),
            "duration": duration,
            "enqueuedAt": at,
            "startedAt": started,
            "finishedAt": finished,
        })
    }
}

/// An index: its primary key and documents (by their id as a string).
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub primary_key: Option<String>,
    pub docs: BTreeMap<String, Value>,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    key: Option<String>,
    indexes: BTreeMap<String, Index>,
    tasks: Vec<Task>,
    requests: Vec<Seen>,
    violations: Vec<String>,
    /// Answers for the next write requests (`POST`), instead of enqueueing.
    answers: VecDeque<Answer>,
    /// Every write request answered so while set (`break_it`).
    down: Option<Answer>,
    /// Documents (by item id) whose `_geo` is taken to be malformed.
    bad_geo: Vec<String>,
    /// Failures for the next tasks enqueued.
    doomed: VecDeque<Value>,
    /// Looks a task needs before it is processed.
    finish_after: u32,
    /// Tasks are never processed while set.
    stalled: bool,
    /// The key may not create indexes.
    no_create: bool,
    /// Answered `/tasks/{uid}` for a 404 (`task_not_found`) to tasks with these uids.
    forgotten: Vec<u64>,
    /// Batches processed so far.
    batches: u64,
}

/// A running fake Meilisearch on 127.0.0.1.
pub struct MeiliFake {
    addr: String,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
}

impl MeiliFake {
    /// A fake with no master key (every request allowed), tasks processed
    /// at their first look-up.
    pub fn start() -> MeiliFake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            finish_after: 1,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, halt) = (inner.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (shared, halt) = (shared.clone(), halt.clone());
                thread::spawn(move || serve(conn, &shared, &halt));
            }
        });
        MeiliFake { addr, inner, stop }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base URL (`url` in `[target]`).
    pub fn url(&self) -> String {
        self.addr.clone()
    }

    /// Requires `Authorization: Bearer <key>` on every route but `/health`.
    pub fn require_key(&self, key: &str) {
        self.lock().key = Some(key.to_string());
    }

    /// A task is processed at its `n`-th look-up (at least 1).
    pub fn finish_after(&self, n: u32) {
        self.lock().finish_after = n.max(1);
    }

    /// While `on`, no task is processed: they stay `enqueued`/`processing`.
    pub fn stall(&self, on: bool) {
        self.lock().stalled = on;
    }

    /// The next enqueued task fails with this error when processed (and so
    /// does every task batched with it, unless the error's type is
    /// `invalid_request`).
    pub fn fail_next_task(&self, code: &str, kind: &str, message: &str) {
        self.lock().doomed.push_back(error(code, kind, message));
    }

    /// The next write request is answered so, enqueueing nothing.
    pub fn answer_next(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.lock()
            .answers
            .push_back((status, headers, body.to_string()));
    }

    /// Every write request answered `status` with a Meilisearch error body,
    /// until [`heal`](Self::heal).
    pub fn down(&self, status: u16) {
        let body = error(
            "internal",
            "internal",
            "the service is down for maintenance",
        )
        .to_string();
        self.lock().down = Some((status, Vec::new(), body));
    }

    pub fn heal(&self) {
        let mut st = self.lock();
        st.down = None;
        st.stalled = false;
    }

    /// Creates an index with this primary key (as a user of the dashboard would).
    pub fn create_index(&self, uid: &str, primary_key: Option<&str>) {
        self.lock().indexes.insert(
            uid.to_string(),
            Index {
                primary_key: primary_key.map(String::from),
                docs: BTreeMap::new(),
            },
        );
    }

    /// Deletes an index (as a user of the dashboard would).
    pub fn drop_index(&self, uid: &str) {
        self.lock().indexes.remove(uid);
    }

    /// The key lacks the `indexes.create` action: a document task into a
    /// missing index fails with `index_not_found`.
    pub fn forbid_index_creation(&self) {
        self.lock().no_create = true;
    }

    /// `GET /tasks/{uid}` answers 404 for this task, as after the task
    /// queue was cleared.
    pub fn forget_task(&self, uid: u64) {
        self.lock().forgotten.push(uid);
    }

    pub fn index(&self, uid: &str) -> Option<Index> {
        self.lock().indexes.get(uid).cloned()
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.lock().tasks.clone()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    /// Each enqueue made while an earlier task on the same index was unfinished.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Tasks not yet finished.
    pub fn unfinished(&self) -> usize {
        self.lock().tasks.iter().filter(|t| !t.finished()).count()
    }

    /// Finishes every unfinished task now (as time passing would).
    pub fn process_all(&self) {
        let mut st = self.lock();
        while let Some(i) = st.tasks.iter().position(|t| !t.finished()) {
            process(&mut st, i);
        }
    }
}

impl Drop for MeiliFake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr.trim_start_matches("http://"));
    }
}

/// A Meilisearch error body.
pub fn error(code: &str, kind: &str, message: &str) -> Value {
    json!({
        "message": message,
        "code": code,
        "type": kind,
        "link": format!("https://docs.meilisearch.com/errors#{code}"),
    })
}

/// The item id behind a Meilisearch id (`_XX` back to its byte), so tests
/// speak of items as `items` shows them.
pub fn decode_id(id: &str) -> String {
    let b = id.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&id[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn valid_id(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 511
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// Processes the batch that starts at task `i`: it and every later task
/// enqueued on the same index, as the auto-batcher takes them. A task
/// failed by its own documents (`invalid_request`) fails alone; any other
/// failure (`internal`, `system`) fails the whole batch with one error.
fn process(st: &mut Inner, i: usize) {
    let index = st.tasks[i].index.clone();
    let batch: Vec<usize> = (i..st.tasks.len())
        .filter(|&j| st.tasks[j].index == index && !st.tasks[j].finished())
        .collect();
    let mut staged = st.indexes.get(&index).cloned();
    let mut outcomes = Vec::new();
    let mut fatal = None;
    for &j in &batch {
        let failed = match st.tasks[j].doomed.clone() {
            Some(e) => Some(e),
            None => {
                let mut trial = staged.clone();
                match apply(
                    &mut trial,
                    &index,
                    &st.tasks[j].work,
                    st.no_create,
                    &st.bad_geo,
                ) {
                    Ok(()) => {
                        staged = trial;
                        None
                    }
                    Err(e) => Some(e),
                }
            }
        };
        if let Some(e) = &failed
            && e["type"] != "invalid_request"
        {
            fatal = Some(e.clone());
            break;
        }
        outcomes.push(failed);
    }
    let batch_uid = st.batches;
    st.batches += 1;
    for (n, &j) in batch.iter().enumerate() {
        let t = &mut st.tasks[j];
        t.batch = Some(batch_uid);
        let error = match &fatal {
            Some(e) => Some(e.clone()),
            None => outcomes[n].clone(),
        };
        t.status = if error.is_some() {
            "failed"
        } else {
            "succeeded"
        }
        .into();
        t.error = error;
    }
    if fatal.is_none()
        && let Some(ix) = staged
    {
        st.indexes.insert(index, ix);
    }
}

/// One task's effect on its index (created by the first addition).
fn apply(
    index: &mut Option<Index>,
    uid: &str,
    work: &Work,
    no_create: bool,
    bad_geo: &[String],
) -> Result<(), Value> {
    match work {
        Work::Delete { ids } => {
            let Some(ix) = index else {
                return Err(error(
                    "index_not_found",
                    "invalid_request",
                    &format!("Index `{uid}` not found."),
                ));
            };
            for id in ids {
                let key = match id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                ix.docs.remove(&key);
            }
            Ok(())
        }
        Work::Add { docs, primary_key } => {
            if index.is_none() {
                if no_create {
                    return Err(error(
                        "index_not_found",
                        "invalid_request",
                        &format!("Index `{uid}` not found."),
                    ));
                }
                *index = Some(Index::default());
            }
            let ix = index.as_mut().unwrap();
            match (ix.primary_key.clone(), primary_key) {
                (Some(have), Some(asked)) if &have != asked => {
                    return Err(error(
                        "index_primary_key_already_exists",
                        "invalid_request",
                        &format!("Index `{uid}`: Index already has a primary key: `{have}`."),
                    ));
                }
                (None, Some(asked)) => ix.primary_key = Some(asked.clone()),
                (None, None) => {
                    return Err(error(
                        "index_primary_key_no_candidate_found",
                        "invalid_request",
                        &format!(
                            "Index `{uid}`: The primary key inference failed as the engine did not find any field ending with `id` in its name. Please specify the primary key manually using the `primaryKey` query parameter."
                        ),
                    ));
                }
                _ => {}
            }
            let pk = ix.primary_key.clone().unwrap();
            for doc in docs {
                let Some(obj) = doc.as_object() else {
                    return Err(error(
                        "malformed_payload",
                        "invalid_request",
                        "The `json` payload provided is malformed. `Couldn't serialize document value: invalid type: expected a map`.",
                    ));
                };
                let id = match obj.get(&pk) {
                    None => {
                        return Err(error(
                            "missing_document_id",
                            "invalid_request",
                            &format!("Document doesn't have a `{pk}` attribute: `{doc}`."),
                        ));
                    }
                    Some(v) => valid_id(v).ok_or_else(|| {
                        error(
                            "invalid_document_id",
                            "invalid_request",
                            &format!("Document identifier `{v}` is invalid. A document identifier can be of type integer or string, only composed of alphanumeric characters (a-z A-Z 0-9), hyphens (-) and underscores (_), and can not be more than 511 bytes."),
                        )
                    })?,
                };
                let geo = obj.get("_geo").cloned();
                let bad = bad_geo.contains(&decode_id(&id));
                if let Some(geo) = geo.or_else(|| bad.then_some(Value::Null))
                    && (bad
                        || !(geo.is_object()
                            && geo.get("lat").is_some()
                            && geo.get("lng").is_some()))
                {
                    return Err(error(
                        "invalid_document_geo_field",
                        "invalid_request",
                        &format!(
                            "The `_geo` field in the document with the id: `{id}` is not an object. Was expecting an object with the `_geo.lat` and `_geo.lng` fields but instead got `{geo}`."
                        ),
                    ));
                }
                ix.docs.insert(id, doc.clone());
            }
            Ok(())
        }
    }
}

/// Serves one connection (keep-alive) until it closes.
fn serve(stream: TcpStream, inner: &Mutex<Inner>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone a socket");
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some(req)) = read_request(&mut reader) else {
            return;
        };
        let (status, headers, body) = {
            let mut st = inner.lock().unwrap_or_else(|e| e.into_inner());
            st.requests.push(req.clone());
            route(&mut st, &req)
        };
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        _ => "Whatever",
    }
}

type Answer = (u16, Vec<(String, String)>, String);

fn route(st: &mut Inner, req: &Seen) -> Answer {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let plain = |status: u16, v: Value| (status, Vec::new(), v.to_string());
    if segs == ["health"] && req.method == "GET" {
        return plain(200, json!({"status": "available"}));
    }
    if let Some(key) = &st.key {
        match req.header("authorization") {
            None => {
                return plain(
                    401,
                    error(
                        "missing_authorization_header",
                        "auth",
                        "The Authorization header is missing. It must use the bearer authorization method.",
                    ),
                );
            }
            Some(v) if v.strip_prefix("Bearer ") != Some(key.as_str()) => {
                return plain(
                    403,
                    error(
                        "invalid_api_key",
                        "auth",
                        "The provided API key is invalid.",
                    ),
                );
            }
            _ => {}
        }
    }
    let write = req.method == "POST";
    if write {
        if let Some(a) = st.answers.pop_front() {
            return a;
        }
        if let Some(answer) = &st.down {
            return answer.clone();
        }
        let json_type = req
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_type {
            return plain(
                415,
                error(
                    "invalid_content_type",
                    "invalid_request",
                    "The Content-Type header is invalid. Accepted values for the Content-Type header are: `application/json`, `application/x-ndjson`, `text/csv`",
                ),
            );
        }
    }
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["indexes", uid]) => match st.indexes.get(*uid) {
            Some(ix) => plain(
                200,
                json!({"uid": uid, "primaryKey": ix.primary_key, "createdAt": "2026-11-29T12:00:00Z", "updatedAt": "2026-11-29T12:00:00Z"}),
            ),
            None => plain(
                404,
                error(
                    "index_not_found",
                    "invalid_request",
                    &format!("Index `{uid}` not found."),
                ),
            ),
        },
        ("GET", ["tasks", uid]) => {
            let uid: u64 = uid.parse().unwrap_or(u64::MAX);
            let Some(i) = st.tasks.iter().position(|t| t.uid == uid) else {
                return plain(
                    404,
                    error(
                        "task_not_found",
                        "invalid_request",
                        &format!("Task `{uid}` not found."),
                    ),
                );
            };
            if st.forgotten.contains(&uid) {
                return plain(
                    404,
                    error(
                        "task_not_found",
                        "invalid_request",
                        &format!("Task `{uid}` not found."),
                    ),
                );
            }
            st.tasks[i].polls += 1;
            if !st.tasks[i].finished() && !st.stalled && st.tasks[i].polls >= st.finish_after {
                // The oldest unfinished task on the index starts the batch.
                let index = st.tasks[i].index.clone();
                let first = st
                    .tasks
                    .iter()
                    .position(|t| t.index == index && !t.finished())
                    .unwrap();
                process(st, first);
            } else if !st.tasks[i].finished() {
                let index = st.tasks[i].index.clone();
                let oldest = st
                    .tasks
                    .iter()
                    .position(|t| t.index == index && !t.finished());
                if oldest == Some(i) {
                    st.tasks[i].status = "processing".into();
                }
            }
            plain(200, st.tasks[i].view())
        }
        ("POST", ["indexes", uid, "documents"]) => {
            let body = body_json(req);
            let Some(docs) = body.as_ref().and_then(|v| v.as_array()).cloned() else {
                return plain(
                    400,
                    error(
                        "malformed_payload",
                        "invalid_request",
                        "The `json` payload provided is malformed. `Couldn't serialize document value: data are neither an object nor a list of objects`.",
                    ),
                );
            };
            let primary_key = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("primaryKey="))
                .map(String::from);
            enqueue(st, uid, Work::Add { docs, primary_key })
        }
        ("POST", ["indexes", uid, "documents", "delete-batch"]) => {
            let Some(ids) = body_json(req).and_then(|v| v.as_array().cloned()) else {
                return plain(
                    400,
                    error(
                        "bad_request",
                        "invalid_request",
                        "Json deserialize error: invalid type: expected a sequence",
                    ),
                );
            };
            enqueue(st, uid, Work::Delete { ids })
        }
        _ => plain(
            404,
            json!({"message": "Not Found", "code": "not_found", "type": "invalid_request", "link": "https://docs.meilisearch.com/errors#not_found"}),
        ),
    }
}

fn body_json(req: &Seen) -> Option<Value> {
    let gzip = req
        .header("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(req.body.as_slice())
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        req.body.clone()
    };
    serde_json::from_slice(&bytes).ok()
}

fn enqueue(st: &mut Inner, index: &str, work: Work) -> Answer {
    let uid = st.tasks.len() as u64;
    if let Some(t) = st.tasks.iter().find(|t| t.index == index && !t.finished()) {
        st.violations.push(format!(
            "task {uid} enqueued on index {index} while task {} was {}",
            t.uid, t.status
        ));
    }
    let task = Task {
        uid,
        index: index.to_string(),
        work,
        status: "enqueued".into(),
        error: None,
        polls: 0,
        batch: None,
        doomed: st.doomed.pop_front(),
    };
    let summary = json!({
        "taskUid": uid,
        "indexUid": index,
        "status": "enqueued",
        "type": task.kind(),
        "enqueuedAt": "2026-11-29T12:00:00.000000Z",
    });
    st.tasks.push(task);
    (202, Vec::new(), summary.to_string())
}

fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<Seen>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let mut req = Seen {
        method: method.to_string(),
        path: path.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let Some(h) = read_line(r)? else {
            return Ok(None);
        };
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            req.headers
                .push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let size = read_line(r)?.unwrap_or_default();
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.trim().parse().unwrap_or(0);
        req.body = vec![0; len];
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

/// The shared delivery suite's view: a feed's index is named after it
/// (`index = "{feed}"`, the default), ids are shown as items shows them,
/// and a document without the primary key field feedsync adds.
impl crate::common::TargetFake for MeiliFake {
    fn url(&self) -> String {
        MeiliFake::url(self)
    }
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        let st = self.lock();
        let pk = st
            .indexes
            .get(feed)
            .and_then(|ix| ix.primary_key.clone())
            .unwrap_or_else(|| "id".into());
        let name = |v: &Value| {
            decode_id(
                &v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            )
        };
        let mut out = Vec::new();
        for t in st
            .tasks
            .iter()
            .filter(|t| t.index == feed && t.status == "succeeded")
        {
            match &t.work {
                Work::Add { docs, .. } => out.extend(
                    docs.iter()
                        .map(|d| ("upsert".to_string(), name(&d[pk.as_str()]))),
                ),
                Work::Delete { ids } => {
                    out.extend(ids.iter().map(|id| ("delete".to_string(), name(id))))
                }
            }
        }
        out
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        let Some(ix) = self.index(feed) else {
            return BTreeMap::new();
        };
        let pk = ix.primary_key.clone().unwrap_or_default();
        ix.docs
            .into_iter()
            .map(|(id, mut doc)| {
                if let Some(o) = doc.as_object_mut() {
                    o.remove(&pk);
                }
                (decode_id(&id), doc)
            })
            .collect()
    }
    fn break_it(&self) {
        self.down(503);
    }
    fn heal(&self) {
        MeiliFake::heal(self);
    }
    fn target_keys(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("kind".into(), "meilisearch".into());
        t
    }
    /// Meilisearch Cloud's rate limit: 429 `too_many_requests`.
    fn throttle(&self, secs: u64) {
        let body = error("too_many_requests", "system", "Too many requests").to_string();
        self.lock().down = Some((429, vec![("Retry-After".into(), secs.to_string())], body));
    }
    /// A document whose `_geo` Meilisearch refuses: its task fails.
    fn reject_item(&self, id: &str) -> bool {
        self.lock().bad_geo.push(id.to_string());
        true
    }
}
