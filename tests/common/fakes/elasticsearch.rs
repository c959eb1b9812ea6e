//! A loopback Elasticsearch (or OpenSearch) that speaks the parts of the
//! REST API feedsync uses, as Elastic's reference describes them:
//!
//! - `GET /`: the cluster's name and version (`version.distribution` is
//!   `"opensearch"` for OpenSearch); 403 with a `security_exception` for a
//!   key without the `monitor` privilege, when asked to.
//! - `POST /{index}/_bulk`: NDJSON (`application/x-ndjson`) of action
//!   lines (`{"index":{"_id":…}}` followed by the document,
//!   `{"delete":{"_id":…}}`), which must end with a newline (else 400
//!   `illegal_argument_exception`); an `_id` over 512 bytes fails the whole
//!   request (400 `action_request_validation_exception`). The 200 answer is
//!   `{"took","errors","items":[{ACTION:{"_index","_id","status",
//!   "result"|"error":{"type","reason"}}}]}`, one entry per action in
//!   order: 201 `created`, 200 `updated`, a delete 200 `deleted` or 404
//!   `not_found`, and the per-item failures asked for (`errors: true` with
//!   mixed statuses).
//! - Credentials: when one is required, any other `Authorization` gets 401
//!   with `WWW-Authenticate` and a `security_exception`.
//! - `Content-Encoding: gzip` bodies are accepted, as Elasticsearch does.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::receiver::{Request, read_http_request, write_http_response};
use crate::common::targets::TargetFake;

/// How the whole of the next requests are answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fault {
    /// As the API says.
    #[default]
    None,
    /// This status and body.
    Status(u16, String),
    /// This status with `Retry-After: <value>`.
    RetryAfter(u16, String),
}

#[derive(Default)]
struct State {
    opensearch: bool,
    /// The `Authorization` value required, if any.
    auth: Option<String>,
    default: Fault,
    queue: VecDeque<Fault>,
    /// Documents whose index action fails: id → (status, type, reason).
    item_errors: BTreeMap<String, (u16, String, String)>,
    /// GET / answers 403 (a key without `monitor`).
    forbid_info: bool,
    requests: Vec<Request>,
    /// index → id → document.
    indices: BTreeMap<String, BTreeMap<String, Value>>,
    /// (index, op, id) of every applied action, in order.
    ops: Vec<(String, String, String)>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ElasticFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ElasticFake {
    /// An Elasticsearch 8 fake.
    pub fn start() -> ElasticFake {
        ElasticFake::start_as(false)
    }

    /// An OpenSearch 2 fake (the same bulk API; its own `GET /`).
    pub fn start_opensearch() -> ElasticFake {
        ElasticFake::start_as(true)
    }

    fn start_as(opensearch: bool) -> ElasticFake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        shared.state().opensearch = opensearch;
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    sh.conns.lock().unwrap().push(c);
                }
                let sh = sh.clone();
                thread::spawn(move || serve(&conn, &sh));
            }
        });
        ElasticFake {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The base URL (`[target] url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requires this `Authorization` value ("ApiKey …", "Basic …").
    pub fn require_auth(&self, value: &str) {
        self.shared.state().auth = Some(value.to_string());
    }

    /// Answers every request so from now on.
    pub fn set(&self, fault: Fault) {
        self.shared.state().default = fault;
    }

    /// Answers the next request so, once.
    pub fn push(&self, fault: Fault) {
        self.shared.state().queue.push_back(fault);
    }

    /// Makes the index action of document `id` fail with this status and
    /// error (400 `document_parsing_exception`, 429 …), until cleared.
    pub fn fail_doc(&self, id: &str, status: u16, kind: &str, reason: &str) {
        self.shared.state().item_errors.insert(
            id.to_string(),
            (status, kind.to_string(), reason.to_string()),
        );
    }

    pub fn clear_doc_failures(&self) {
        self.shared.state().item_errors.clear();
    }

    /// `GET /` answers 403, as for a key without the `monitor` privilege.
    pub fn forbid_info(&self) {
        self.shared.state().forbid_info = true;
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state().requests.clone()
    }

    /// The documents `index` holds.
    pub fn docs(&self, index: &str) -> BTreeMap<String, Value> {
        self.shared
            .state()
            .indices
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// (op, id) of each action applied to `index`, in order.
    pub fn ops(&self, index: &str) -> Vec<(String, String)> {
        self.shared
            .state()
            .ops
            .iter()
            .filter(|(i, _, _)| i == index)
            .map(|(_, op, id)| (op.clone(), id.clone()))
            .collect()
    }
}

impl Drop for ElasticFake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(h) = self.accept.take()
        {
            let _ = h.join();
        }
        for c in self.shared.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl TargetFake for ElasticFake {
    fn url(&self) -> String {
        self.base_url()
    }
    /// The index is the feed's name (`index = "{feed}"`, the default).
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        self.ops(feed)
            .into_iter()
            .map(|(op, id)| {
                let op = if op == "index" { "upsert".into() } else { op };
                (op, id)
            })
            .collect()
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        self.docs(feed)
    }
    fn break_it(&self) {
        self.set(Fault::Status(
            503,
            error_body(
                503,
                "cluster_block_exception",
                "blocked by: [SERVICE_UNAVAILABLE]",
            ),
        ));
    }
    fn heal(&self) {
        self.set(Fault::None);
    }
    fn target_keys(&self) -> toml::Table {
        let kind = if self.shared.state().opensearch {
            "opensearch"
        } else {
            "elasticsearch"
        };
        toml::Table::from_iter([("kind".to_string(), toml::Value::from(kind))])
    }
    fn throttle(&self, secs: u64) {
        self.set(Fault::RetryAfter(429, secs.to_string()));
    }
    /// Its index action fails with 400 in every bulk (`errors: true`).
    fn reject_item(&self, id: &str) -> bool {
        self.fail_doc(
            id,
            400,
            "document_parsing_exception",
            "[1:9] failed to parse field [price] of type [long]",
        );
        true
    }
}

/// Elasticsearch's error document for a failed request.
fn error_body(status: u16, kind: &str, reason: &str) -> String {
    json!({
        "error": {
            "root_cause": [{"type": kind, "reason": reason}],
            "type": kind,
            "reason": reason
        },
        "status": status
    })
    .to_string()
}

fn serve(stream: &TcpStream, sh: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream;
    let mut reader = BufReader::new(stream);
    while !sh.stop.load(Ordering::SeqCst) {
        let Ok(Some(req)) = read_http_request(&mut reader, &mut writer) else {
            return;
        };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, headers, body) = answer(&mut sh.state(), req);
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        let headers: Vec<(String, String)> = json.into_iter().chain(headers).collect();
        if write_http_response(&mut writer, status, &headers, &body, keep_alive).is_err()
            || !keep_alive
        {
            return;
        }
    }
}

type Answer = (u16, Vec<(String, String)>, String);

fn answer(st: &mut State, req: Request) -> Answer {
    st.requests.push(req.clone());
    if let Some(required) = &st.auth
        && req.header("authorization") != Some(required.as_str())
    {
        let reason = match req.header("authorization") {
            None => format!("missing authentication credentials for REST request [{}]", req.path),
            Some(_) => "unable to authenticate with provided credentials and anonymous access is not allowed for this request".into(),
        };
        return (
            401,
            vec![(
                "WWW-Authenticate".into(),
                "Basic realm=\"security\" charset=\"UTF-8\", ApiKey".into(),
            )],
            error_body(401, "security_exception", &reason),
        );
    }
    match st.queue.pop_front().unwrap_or_else(|| st.default.clone()) {
        Fault::None => {}
        Fault::Status(s, body) => return (s, vec![], body),
        Fault::RetryAfter(s, v) => {
            return (
                s,
                vec![("Retry-After".into(), v)],
                error_body(s, "es_rejected_execution_exception", "rejected execution"),
            );
        }
    }
    let path = req.path.split('?').next().unwrap_or("").to_string();
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/") => info(st),
        ("POST", p) if p.ends_with("/_bulk") && p.matches('/').count() == 2 => {
            let index = percent_decode(&p[1..p.len() - "/_bulk".len()]);
            bulk(st, &req, &index)
        }
        _ => (
            404,
            vec![],
            error_body(
                404,
                "index_not_found_exception",
                "no such index or endpoint",
            ),
        ),
    }
}

fn info(st: &State) -> Answer {
    if st.forbid_info {
        return (
            403,
            vec![],
            error_body(
                403,
                "security_exception",
                "action [cluster:monitor/main] is unauthorized for API key id [fake] of user [feedsync]",
            ),
        );
    }
    let doc = if st.opensearch {
        json!({
            "name": "fake-node",
            "cluster_name": "feedsync-test",
            "version": {"distribution": "opensearch", "number": "2.17.0", "lucene_version": "9.11.1"},
            "tagline": "The OpenSearch Project: https://opensearch.org/"
        })
    } else {
        json!({
            "name": "fake-node",
            "cluster_name": "feedsync-test",
            "version": {"number": "8.15.0", "build_flavor": "default", "lucene_version": "9.11.1"},
            "tagline": "You Know, for Search"
        })
    };
    (200, vec![], doc.to_string())
}

fn bulk(st: &mut State, req: &Request, index: &str) -> Answer {
    let ct = req.header("content-type").unwrap_or("");
    if !(ct.starts_with("application/x-ndjson") || ct.starts_with("application/json")) {
        return (
            406,
            vec![],
            error_body(
                406,
                "media_type_header_exception",
                &format!("Content-Type header [{ct}] is not supported"),
            ),
        );
    }
    let body = match req.header("content-encoding") {
        Some("gzip") => {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&req.raw_body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return (400, vec![], error_body(400, "parse_exception", "bad gzip"));
            }
            out
        }
        _ => req.raw_body.clone(),
    };
    if !body.ends_with(b"\n") {
        let reason = "The bulk request must be terminated by a newline [\\n]";
        return (
            400,
            vec![],
            error_body(400, "illegal_argument_exception", reason),
        );
    }
    // Parse every action first: a malformed request or an over-long id
    // fails the whole request, and nothing of it is applied.
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut lines = text.split('\n').filter(|l| !l.is_empty());
    let mut actions: Vec<(String, String, Option<Value>)> = Vec::new();
    while let Some(line) = lines.next() {
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(line) else {
            return (
                400,
                vec![],
                error_body(
                    400,
                    "x_content_parse_exception",
                    "malformed action/metadata line",
                ),
            );
        };
        let Some((op, meta)) = action.iter().next() else {
            return (
                400,
                vec![],
                error_body(400, "illegal_argument_exception", "empty action"),
            );
        };
        let id = meta["_id"].as_str().unwrap_or("").to_string();
        if id.len() > 512 {
            let reason = format!(
                "Validation Failed: 1: id [{id}] is too long, must be no longer than 512 bytes but was: {};",
                id.len()
            );
            return (
                400,
                vec![],
                error_body(400, "action_request_validation_exception", &reason),
            );
        }
        let doc = match op.as_str() {
            "index" | "create" => match lines.next().map(serde_json::from_str::<Value>) {
                Some(Ok(doc)) => Some(doc),
                _ => {
                    return (
                        400,
                        vec![],
                        error_body(
                            400,
                            "illegal_argument_exception",
                            "action without a document",
                        ),
                    );
                }
            },
            "delete" => None,
            other => {
                return (
                    400,
                    vec![],
                    error_body(
                        400,
                        "illegal_argument_exception",
                        &format!(
                            "Malformed action/metadata line, expected one of [create, delete, index, update] but found [{other}]"
                        ),
                    ),
                );
            }
        };
        actions.push((op.clone(), id, doc));
    }
    let mut items = Vec::new();
    let mut errors = false;
    for (op, id, doc) in actions {
        let docs = st.indices.entry(index.to_string()).or_default();
        let entry = match (&doc, st.item_errors.get(&id)) {
            (Some(_), Some((status, kind, reason))) => {
                errors = true;
                json!({"_index": index, "_id": id, "status": status,
                       "error": {"type": kind, "reason": reason, "index": index}})
            }
            (Some(doc), None) if !doc.is_object() => {
                errors = true;
                json!({"_index": index, "_id": id, "status": 400,
                       "error": {"type": "document_parsing_exception",
                                 "reason": "[1:1] failed to parse: root must be an object"}})
            }
            (Some(doc), None) => {
                let existed = docs.insert(id.clone(), doc.clone()).is_some();
                st.ops.push((index.to_string(), "index".into(), id.clone()));
                let (status, result) = if existed {
                    (200, "updated")
                } else {
                    (201, "created")
                };
                json!({"_index": index, "_id": id, "_version": 1, "result": result,
                       "_shards": {"total": 2, "successful": 1, "failed": 0},
                       "status": status, "_seq_no": 0, "_primary_term": 1})
            }
            (None, _) => {
                let existed = docs.remove(&id).is_some();
                st.ops
                    .push((index.to_string(), "delete".into(), id.clone()));
                let (status, result) = if existed {
                    (200, "deleted")
                } else {
                    (404, "not_found")
                };
                json!({"_index": index, "_id": id, "_version": 2, "result": result,
                       "_shards": {"total": 2, "successful": 1, "failed": 0},
                       "status": status, "_seq_no": 1, "_primary_term": 1})
            }
        };
        items.push(Value::Object(serde_json::Map::from_iter([(op, entry)])));
    }
    (
        200,
        vec![],
        json!({"took": 3, "errors": errors, "items": items}).to_string(),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
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
