//! A loopback Typesense (v0.25+), built from Typesense's API reference
//! ("Documents", "Collections", "API Keys"), not from feedsync's code, so
//! the `typesense` kind is tested against the service's own rules:
//!
//! - every endpoint but `GET /health` wants `X-TYPESENSE-API-KEY`, and
//!   answers a wrong or missing key with 401 (whatever the key lacks);
//! - `POST /collections/{c}/documents/import?action=upsert` takes JSON
//!   lines and ALWAYS answers 200, one JSON line per document in order:
//!   `{"success":true}` or `{"success":false,"error":…,"code":…,"document":…}`
//!   (bad JSON, a non-string `id`, a field of the wrong type);
//! - `DELETE /collections/{c}/documents?filter_by=id:[…]` answers
//!   `{"num_deleted":N}` (ids plain or back-quoted, comma-separated);
//! - `DELETE /collections/{c}/documents/{id}` answers the document, or 404
//!   when it is gone;
//! - `GET /collections/{c}` answers its schema, 404 when there is none; a
//!   write into a missing collection is a 404 too (Typesense never creates
//!   one on its own);
//! - the raw path is split at `/` before each segment is percent-decoded,
//!   and `+` reads as a space in paths and queries alike.
//!
//! On demand it misbehaves: whole-request faults (a status, 429 with
//! `Retry-After`, a dropped connection, a slow answer) for the write
//! endpoints, and per-document failure lines for chosen ids. It keeps a
//! mirror of every collection and the (op, id) of every document it took.
//! A filter-delete whose request target is 4,000 bytes or more, and a
//! request without `User-Agent: feedsync/…`, are written down as breaches
//! of DESIGN.md's contract.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::common::receiver::{Reply, Request, Service, percent_decode, plain_body};

/// A whole-request misbehaviour of the write endpoints.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status and a Typesense error body `{"message": …}`.
    Status(u16, String),
    /// 429 with `Retry-After: <secs>`.
    RetryAfter(u64),
    /// Read the request, then drop the connection without an answer
    /// (nothing applied).
    Drop,
    /// Apply the request, then answer after this long.
    Slow(Duration),
}

/// A field of a collection's schema, as Typesense types them.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    /// `string`, `int32`, `int64`, `float`, `bool`, `string[]`, `auto`.
    pub kind: String,
}

#[derive(Default)]
struct Collection {
    fields: Vec<Field>,
    docs: BTreeMap<String, Value>,
}

/// A failure line for one document id: `times` answers (None: always).
struct ItemFault {
    code: u16,
    error: String,
    times: Option<usize>,
}

#[derive(Default)]
struct State {
    api_key: String,
    collections: BTreeMap<String, Collection>,
    queue: VecDeque<Fault>,
    default: Option<Fault>,
    item_faults: HashMap<String, ItemFault>,
    /// (collection, op, id) of every document taken, in order.
    ops: Vec<(String, String, String)>,
    /// (method, raw request target) of every request.
    requests: Vec<(String, String)>,
    breaches: Vec<String>,
    /// How many requests came with `Content-Encoding: gzip`.
    gzipped: usize,
}

/// The request-target bound DESIGN.md gives filter deletes.
pub const TARGET_LIMIT: usize = 4000;

/// A running fake Typesense.
pub struct Typesense {
    state: Arc<Mutex<State>>,
    service: Service,
}

impl Typesense {
    /// A Typesense whose admin key is `api_key`, with no collections.
    pub fn start(api_key: &str) -> Typesense {
        let state = Arc::new(Mutex::new(State {
            api_key: api_key.to_string(),
            ..State::default()
        }));
        let st = Arc::clone(&state);
        let service = Service::start(move |req| handle(&st, req));
        Typesense { state, service }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`: the `url` of a typesense target.
    pub fn url(&self) -> String {
        self.service.base_url()
    }

    /// Creates collection `name` with these `(field, type)` pairs (`id` is
    /// implicit, as in Typesense).
    pub fn create_collection(&self, name: &str, fields: &[(&str, &str)]) {
        self.state().collections.insert(
            name.to_string(),
            Collection {
                fields: fields
                    .iter()
                    .map(|(n, k)| Field {
                        name: n.to_string(),
                        kind: k.to_string(),
                    })
                    .collect(),
                docs: BTreeMap::new(),
            },
        );
    }

    /// Puts a document straight into a collection (as another writer would).
    pub fn insert(&self, collection: &str, doc: Value) {
        let id = doc["id"].as_str().expect("a document id").to_string();
        self.state()
            .collections
            .get_mut(collection)
            .expect("the collection exists")
            .docs
            .insert(id, doc);
    }

    /// Removes a document straight from a collection (as another writer would).
    pub fn remove(&self, collection: &str, id: &str) {
        if let Some(c) = self.state().collections.get_mut(collection) {
            c.docs.remove(id);
        }
    }

    /// The documents of a collection as Typesense holds them: id → document
    /// (its `id` field included).
    pub fn documents(&self, collection: &str) -> BTreeMap<String, Value> {
        self.state()
            .collections
            .get(collection)
            .map(|c| c.docs.clone())
            .unwrap_or_default()
    }

    /// (op, id) of every document of `collection` taken, in order; `op` is
    /// `upsert` or `delete` (a delete of a gone document included).
    pub fn ops(&self, collection: &str) -> Vec<(String, String)> {
        self.state()
            .ops
            .iter()
            .filter(|(c, _, _)| c == collection)
            .map(|(_, op, id)| (op.clone(), id.clone()))
            .collect()
    }

    /// (method, raw request target) of every request received.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state().requests.clone()
    }

    /// How many requests came compressed (`Content-Encoding: gzip`).
    pub fn gzipped(&self) -> usize {
        self.state().gzipped
    }

    /// Requests that broke DESIGN.md's rules for this kind.
    pub fn breaches(&self) -> Vec<String> {
        self.state().breaches.clone()
    }

    /// The next write request gets `fault` (queued faults go first, in order).
    pub fn push(&self, fault: Fault) {
        self.state().queue.push_back(fault);
    }

    /// Healthy again: queued faults dropped, no standing fault.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.queue.clear();
        st.default = None;
    }

    /// Every write request gets `fault` from now on (`None`: healthy).
    pub fn set(&self, fault: Option<Fault>) {
        self.state().default = fault;
    }

    /// The import answers a failure line `{code, error}` for document
    /// `id`, `times` times (`None`: until cleared).
    pub fn fail_document(&self, id: &str, code: u16, error: &str, times: Option<usize>) {
        self.state().item_faults.insert(
            id.to_string(),
            ItemFault {
                code,
                error: error.to_string(),
                times,
            },
        );
    }

    /// Clears every per-document failure.
    pub fn clear_document_faults(&self) {
        self.state().item_faults.clear();
    }

    /// The admin key changes (the old one is now a wrong key).
    pub fn set_api_key(&self, key: &str) {
        self.state().api_key = key.to_string();
    }
}

fn message(status: u16, text: &str) -> Reply {
    Reply::json(status, &json!({ "message": text }))
}

/// The raw path split at `/` and each segment decoded, then the query's
/// pairs decoded: Typesense's reading of a request target.
fn parse_target(target: &str) -> Option<(Vec<String>, HashMap<String, String>)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, true))
        .collect::<Option<Vec<_>>>()?;
    let mut params = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(k, true)?, percent_decode(v, true)?);
    }
    Some((segments, params))
}

fn handle(state: &Mutex<State>, req: &Request) -> Option<Reply> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut st = lock();
        st.requests.push((req.method.clone(), req.path.clone()));
        if req.header("content-encoding") == Some("gzip") {
            st.gzipped += 1;
        }
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
    let Some((segments, params)) = parse_target(&req.path) else {
        return Some(message(400, "Bad request."));
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    if req.method == "GET" && segs == ["health"] {
        return Some(Reply::json(200, &json!({"ok": true})));
    }
    {
        let st = lock();
        if req.header("x-typesense-api-key") != Some(st.api_key.as_str()) {
            return Some(message(
                401,
                "Forbidden - a valid `x-typesense-api-key` header must be sent.",
            ));
        }
    }
    let write = req.method != "GET";
    let fault = if write {
        let mut st = lock();
        st.queue.pop_front().or_else(|| st.default.clone())
    } else {
        None
    };
    let mut slow = None;
    match fault {
        Some(Fault::Status(status, text)) => return Some(message(status, &text)),
        Some(Fault::RetryAfter(secs)) => {
            return Some(
                message(429, "Rate limit exceeded.").header("Retry-After", &secs.to_string()),
            );
        }
        Some(Fault::Drop) => return None,
        Some(Fault::Slow(d)) => slow = Some(d),
        None => {}
    }
    let reply = {
        let mut st = lock();
        route(&mut st, req, &segs, &params)
    };
    if let Some(d) = slow {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(reply)
}

fn route(st: &mut State, req: &Request, segs: &[&str], params: &HashMap<String, String>) -> Reply {
    let not_found = || message(404, "Not Found");
    match (req.method.as_str(), segs) {
        ("GET", ["collections", name]) => match st.collections.get(*name) {
            Some(c) => {
                let mut fields = vec![json!({"name": "id", "type": "string"})];
                fields.extend(
                    c.fields
                        .iter()
                        .map(|f| json!({"name": f.name, "type": f.kind})),
                );
                Reply::json(
                    200,
                    &json!({"name": name, "num_documents": c.docs.len(), "fields": fields}),
                )
            }
            None => not_found(),
        },
        ("POST", ["collections", name, "documents", "import"]) => {
            if !st.collections.contains_key(*name) {
                return not_found();
            }
            let action = params.get("action").map_or("create", String::as_str);
            if !["create", "upsert", "update", "emplace"].contains(&action) {
                return message(
                    400,
                    "Parameter `action` must be a create|update|upsert|emplace.",
                );
            }
            let Some(body) = plain_body(req) else {
                return message(400, "Bad request.");
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            let lines: Vec<String> = text
                .strip_suffix('\n')
                .unwrap_or(&text)
                .split('\n')
                .map(|l| import_line(st, name, action, l))
                .collect();
            Reply::text(200, "text/plain; charset=utf-8", lines.join("\n"))
        }
        ("DELETE", ["collections", name, "documents"]) => {
            if !st.collections.contains_key(*name) {
                return not_found();
            }
            if req.path.len() >= TARGET_LIMIT {
                st.breaches.push(format!(
                    "a filter delete's request target is {} bytes",
                    req.path.len()
                ));
            }
            let Some(filter) = params.get("filter_by") else {
                return message(400, "Parameter `filter_by` must be provided.");
            };
            let Some(ids) = id_filter(filter) else {
                return message(
                    400,
                    &format!("Could not parse the filter query: `{filter}`."),
                );
            };
            let c = st.collections.get_mut(*name).expect("checked above");
            let mut deleted = 0;
            for id in &ids {
                deleted += usize::from(c.docs.remove(id).is_some());
            }
            for id in ids {
                st.ops.push((name.to_string(), "delete".into(), id));
            }
            Reply::json(200, &json!({ "num_deleted": deleted }))
        }
        ("DELETE", ["collections", name, "documents", id]) => {
            let Some(c) = st.collections.get_mut(*name) else {
                return not_found();
            };
            match c.docs.remove(*id) {
                Some(doc) => {
                    st.ops
                        .push((name.to_string(), "delete".into(), id.to_string()));
                    Reply::json(200, &doc)
                }
                None => message(404, &format!("Could not find a document with id: {id}")),
            }
        }
        _ => not_found(),
    }
}

/// The answer line for one imported line.
fn import_line(st: &mut State, collection: &str, action: &str, line: &str) -> String {
    let failure = |code: u16, error: &str| {
        json!({"success": false, "code": code, "error": error, "document": line}).to_string()
    };
    let doc: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(doc)) => doc,
        _ => return failure(400, "Bad JSON."),
    };
    let id = match doc.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return failure(400, "Document's `id` field should be a string."),
        None => {
            return failure(
                400,
                "Document has no `id` (this fake does not make them up).",
            );
        }
    };
    if let Some(f) = st.item_faults.get_mut(&id) {
        let (code, error) = (f.code, f.error.clone());
        match &mut f.times {
            Some(0) => {}
            Some(n) => {
                *n -= 1;
                return failure(code, &error);
            }
            None => return failure(code, &error),
        }
    }
    let c = st
        .collections
        .get_mut(collection)
        .expect("checked by the caller");
    for f in &c.fields {
        if let Some(v) = doc.get(&f.name)
            && !has_type(v, &f.kind)
        {
            let article = if f.kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            return failure(
                400,
                &format!("Field `{}` must be {article} {}.", f.name, f.kind),
            );
        }
    }
    let exists = c.docs.contains_key(&id);
    match action {
        "create" if exists => {
            return failure(409, &format!("A document with id {id} already exists."));
        }
        "update" if !exists => {
            return failure(404, &format!("Could not find a document with id: {id}"));
        }
        _ => {}
    }
    c.docs.insert(id.clone(), Value::Object(doc));
    st.ops.push((collection.to_string(), "upsert".into(), id));
    json!({"success": true}).to_string()
}

fn has_type(v: &Value, kind: &str) -> bool {
    match kind {
        "string" => v.is_string(),
        "int32" | "int64" => v.is_i64() || v.is_u64(),
        "float" => v.is_number(),
        "bool" => v.is_boolean(),
        "string[]" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        _ => true,
    }
}

/// The ids of an `id:[a,b]`, `id:=[…]` or `id:a` filter; values may be
/// back-quoted (then they may hold `,` `]` and spaces).
fn id_filter(filter: &str) -> Option<Vec<String>> {
    let rest = filter
        .trim()
        .strip_prefix("id")?
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let Some(list) = rest.strip_prefix('[') else {
        let (id, after) = value(rest)?;
        return after.trim().is_empty().then(|| vec![id]);
    };
    let mut ids = Vec::new();
    let mut rest = list.trim_start();
    if let Some(after) = rest.strip_prefix(']') {
        return after.trim().is_empty().then_some(ids);
    }
    loop {
        let (id, after) = value(rest)?;
        ids.push(id);
        let after = after.trim_start();
        if let Some(more) = after.strip_prefix(',') {
            rest = more.trim_start();
        } else if let Some(end) = after.strip_prefix(']') {
            return end.trim().is_empty().then_some(ids);
        } else {
            return None;
        }
    }
}

/// One filter value and what follows it: back-quoted up to the next
/// back-quote, or bare up to `,` or `]`.
fn value(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.strip_prefix('`') {
        let end = q.find('`')?;
        return Some((q[..end].to_string(), &q[end + 1..]));
    }
    let end = s.find([',', ']']).unwrap_or(s.len());
    let v = s[..end].trim();
    (!v.is_empty()).then(|| (v.to_string(), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_as_typesense_reads_them() {
        assert_eq!(id_filter("id:[a,b]").unwrap(), ["a", "b"]);
        assert_eq!(id_filter("id: [`a, b`, `c]`]").unwrap(), ["a, b", "c]"]);
        assert_eq!(id_filter("id:=`x y`").unwrap(), ["x y"]);
        assert!(id_filter("id:[`a`").is_none());
        let (segs, params) =
            parse_target("/collections/p/documents?filter_by=id%3A%5Ba+b%5D").unwrap();
        assert_eq!(segs, ["collections", "p", "documents"]);
        assert_eq!(params["filter_by"], "id:[a b]");
        let (segs, _) = parse_target("/collections/p/documents/a%2Fb+c").unwrap();
        assert_eq!(segs[3], "a/b c");
    }
}
