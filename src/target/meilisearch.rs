//! The `meilisearch` kind (v1.x): documents added by
//! `POST /indexes/{index}/documents`, deleted by `…/documents/delete-batch`,
//! and neither done when Meilisearch answers (DESIGN.md, "Target kinds").
//!
//! Meilisearch answers a write with `202` and a task, and does the work
//! later; the task may still fail. So an item is `sent` only once its task
//! has `succeeded`: the answer to a write is a task to poll (`http` polls
//! it within `timeout_secs`). Meilisearch also batches the tasks queued on
//! one index, and a failed batch fails every task in it, so a task is
//! enqueued only after the previous one on its index has finished: `http`
//! sends a batch's requests one after another, each settled before the
//! next, and every task is remembered in the state file ([`TaskLog`])
//! until it has finished, so a run killed or timed out while it waits
//! leaves a later run something to settle first rather than a task that
//! may still fail the next one.
//!
//! Meilisearch takes only `A–Z a–z 0–9 - _` in an id, so every other byte
//! (and `_` itself) of the item id is written `_XX` ([`encode_id`]): one
//! document id per item id, never two items on one.

use serde_json::Value;

use super::Health;
use super::{Batch, Kind, Method, Reading, Request, Response, Verdict};
use crate::clock;
use crate::config::{Secrets, TargetSettings};
use crate::state::{OutItem, Task, TaskLog};

/// The longest document id Meilisearch takes, in bytes.
pub const MAX_ID_BYTES: usize = 511;

/// The error codes of a failed document task that no resend can mend: the
/// target is refused, naming the fix.
const PRIMARY_KEY_CODES: [&str; 3] = [
    "index_primary_key_already_exists",
    "index_primary_key_no_candidate_found",
    "index_primary_key_multiple_candidates_found",
];

/// What a request of this kind is, for reading its answer.
const DOCUMENTS: &str = "documents";
const DELETES: &str = "deletes";
const DOCUMENTS_TASK: &str = "documents task";
const DELETES_TASK: &str = "deletes task";
const HEALTH: &str = "health";
const INDEX: &str = "index";

/// The permissions a key needs, for the errors that say it lacks one.
const ACTIONS: &str = "the key needs the actions documents.add, documents.delete and tasks.get (indexes.create while the index does not exist yet, indexes.get for doctor)";

/// A Meilisearch index as a target.
pub struct Meilisearch {
    base: String,
    index: String,
    id_field: String,
    key: Option<String>,
    /// The config table the credential is named in, for `doctor`'s fixes.
    table: String,
    tasks: Option<TaskLog>,
}

impl Meilisearch {
    /// The target `settings` name, at `url` (`{feed}` replaced in both).
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Meilisearch {
        Meilisearch {
            base: url.trim_end_matches('/').to_string(),
            index: settings.index.clone().unwrap_or_default(),
            id_field: settings.id_field.clone(),
            key: secrets.api_key.clone(),
            table: settings.secrets.table.clone(),
            tasks: None,
        }
    }

    /// The queue tasks on this index wait in: where they are remembered.
    fn place(&self) -> String {
        format!("{}/indexes/{}", self.base, self.index)
    }

    fn request(&self, method: Method, url: String, role: &'static str) -> Request {
        let req = Request::new(method, url, role);
        match &self.key {
            Some(key) => req.header("Authorization", format!("Bearer {key}")),
            None => req,
        }
    }

    /// `GET /tasks/{uid}`, speaking for `items`.
    fn poll(&self, uid: u64, deletes: bool, items: Vec<usize>) -> Request {
        let role = if deletes {
            DELETES_TASK
        } else {
            DOCUMENTS_TASK
        };
        let mut req = self.request(Method::Get, format!("{}/tasks/{uid}", self.base), role);
        req.items = items;
        req
    }

    /// The document sent for an upsert: the item's data with `id_field`
    /// set to its Meilisearch id (a source field of that name replaced).
    fn document(&self, item: &OutItem) -> Vec<u8> {
        let data = item.data.as_deref().unwrap_or(b"{}");
        let Ok(mut doc) = serde_json::from_slice::<serde_json::Map<String, Value>>(data) else {
            // Not an object (`unfit` keeps those out): as it is.
            return data.to_vec();
        };
        doc.insert(self.id_field.clone(), Value::String(encode_id(&item.id)));
        serde_json::to_vec(&doc).expect("serializing to memory")
    }

    /// Reads a task: still waiting, or settled for its items.
    fn task(&self, request: &Request, body: &str) -> Reading {
        let deletes = request.role == DELETES_TASK;
        let Ok(task) = serde_json::from_str::<Value>(body) else {
            return retry(format!(
                "Meilisearch answered a task look-up with no task: {}",
                super::http::excerpt(body)
            ));
        };
        let uid = task["uid"].as_u64().unwrap_or_default();
        let status = task["status"].as_str().unwrap_or_default();
        if matches!(status, "enqueued" | "processing") {
            return Reading::Poll(request.clone());
        }
        self.forget(uid);
        let response = match status {
            "succeeded" => Response::Delivered(vec![Verdict::Ok; request.items.len()]),
            "failed" => self.failure(uid, deletes, &task["error"], request.items.len()),
            "canceled" => Response::Retry {
                error: format!("Meilisearch task {uid} was canceled"),
                retry_after: None,
            },
            other => Response::Retry {
                error: format!("Meilisearch task {uid} has an unknown status {other:?}"),
                retry_after: None,
            },
        };
        Reading::Settled(response)
    }

    /// What a failed task means, per DESIGN.md's answer table.
    fn failure(&self, uid: u64, deletes: bool, error: &Value, items: usize) -> Response {
        let code = error["code"].as_str().unwrap_or("unknown");
        let kind = error["type"].as_str().unwrap_or_default();
        let said = format!("{code}: {}", error["message"].as_str().unwrap_or_default());
        let index = &self.index;
        if code == "index_not_found" && deletes {
            // Nothing to delete from: the documents are already gone.
            return Response::Delivered(vec![Verdict::Ok; items]);
        }
        if code == "index_not_found" {
            return Response::Refused {
                error: format!(
                    "Meilisearch task {uid} failed: {said} (the key may not create index `{index}`: give it the indexes.create action, or create the index)"
                ),
            };
        }
        if PRIMARY_KEY_CODES.contains(&code) {
            return Response::Refused {
                error: format!(
                    "Meilisearch task {uid} failed: {said} (set id_field to the primary key of index `{index}`, or send to another index)"
                ),
            };
        }
        if kind == "invalid_request" {
            // A bad document (or id) fails the whole task: split the batch
            // until it stands alone.
            return Response::Rejected { error: said };
        }
        Response::Retry {
            error: format!("Meilisearch task {uid} failed: {said}"),
            retry_after: None,
        }
    }

    fn forget(&self, uid: u64) {
        if let Some(log) = &self.tasks
            && let Err(e) = log.forget(&self.place(), uid)
        {
            // Remembered still, it is looked up again by the next run.
            log::warn!("Meilisearch task {uid} finished, but: {e}");
        }
    }
}

impl Kind for Meilisearch {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        let (deletes, upserts): (Vec<usize>, Vec<usize>) =
            (0..batch.items.len()).partition(|&i| batch.items[i].deleted);
        let place = self.place();
        let mut out = Vec::new();
        if !upserts.is_empty() {
            let mut body = vec![b'['];
            for item in upserts.iter().map(|&i| &batch.items[i]) {
                if body.len() > 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&self.document(item));
            }
            body.push(b']');
            let url = format!(
                "{place}/documents?primaryKey={}",
                super::http::percent_encode(&self.id_field)
            );
            let mut req = self
                .request(Method::Post, url, DOCUMENTS)
                .header("Content-Type", "application/json");
            req.body = body;
            req.items = upserts;
            out.push(req);
        }
        if !deletes.is_empty() {
            // An id Meilisearch cannot take names no document there.
            let ids: Vec<String> = deletes
                .iter()
                .map(|&i| encode_id(&batch.items[i].id))
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
                .collect();
            let mut req = self
                .request(
                    Method::Post,
                    format!("{place}/documents/delete-batch"),
                    DELETES,
                )
                .header("Content-Type", "application/json");
            req.body = serde_json::to_vec(&ids).expect("serializing to memory");
            req.items = deletes;
            out.push(req);
        }
        out
    }

    fn delivered(&self, batch: &Batch<'_>, request: &Request, body: &str) -> Reading {
        match request.role {
            DOCUMENTS | DELETES => {
                let Some(uid) = serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|v| v["taskUid"].as_u64())
                else {
                    return retry(format!(
                        "Meilisearch accepted the request but named no task: {}",
                        super::http::excerpt(body)
                    ));
                };
                let deletes = request.role == DELETES;
                if let Some(log) = &self.tasks {
                    let items: Vec<_> = request
                        .items
                        .iter()
                        .map(|&i| (batch.items[i].rowid, batch.items[i].hash))
                        .collect();
                    let now = clock::now_secs();
                    if let Err(e) = log.remember(&self.place(), uid, deletes, &items, now) {
                        return retry(format!("Meilisearch task {uid} not remembered: {e}"));
                    }
                }
                Reading::Poll(self.poll(uid, deletes, request.items.clone()))
            }
            DOCUMENTS_TASK | DELETES_TASK => self.task(request, body),
            _ => Reading::Settled(Response::Delivered(Vec::new())),
        }
    }

    fn exception(&self, request: &Request, status: u16, body: &str) -> Option<Reading> {
        let said = || {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            match (v["code"].as_str(), v["message"].as_str()) {
                (Some(code), Some(message)) => format!("HTTP {status}: {code}: {message}"),
                _ => format!("HTTP {status}"),
            }
        };
        match (status, request.role) {
            (401 | 403, _) => Some(Reading::Settled(Response::Refused {
                error: format!(
                    "{}: the API key is wrong, or lacks a permission: {ACTIONS}",
                    said()
                ),
            })),
            // The service no longer knows the task (its queue was
            // cleared): nothing is known of its items, which go again.
            (404, DOCUMENTS_TASK | DELETES_TASK) => {
                if let Some(uid) = request.url.rsplit('/').next().and_then(|u| u.parse().ok()) {
                    self.forget(uid);
                }
                Some(Reading::Settled(Response::Skipped))
            }
            _ => None,
        }
    }

    fn probe(&self, _feed: &str) -> Vec<Request> {
        vec![
            self.request(Method::Get, format!("{}/health", self.base), HEALTH),
            self.request(Method::Get, self.place(), INDEX),
        ]
    }

    /// An upsert whose id Meilisearch cannot take fails alone; a delete
    /// of such an id names no document there, so it is done at once.
    fn unfit(&self, item: &OutItem) -> Option<String> {
        if item.deleted {
            return None;
        }
        unfit(item)
    }

    fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        // `"ID_FIELD":"ID",` added to the data, or `"ID",` in the deletes.
        let id = encode_id(&item.id).len();
        if item.deleted {
            id + 3
        } else {
            data + self.id_field.len() + id + 8
        }
    }

    fn frame_bytes(&self, _feed: &str) -> usize {
        // `[` and `]` around the documents and around the ids.
        4
    }

    fn health(&self, request: &Request, status: u16, body: &str) -> Option<Health> {
        let index = &self.index;
        let doc: Value = serde_json::from_str(body).unwrap_or_default();
        match (request.role, status) {
            (HEALTH, 200..=299) => Some(Health::Ok(format!(
                "{} is Meilisearch, status {}",
                self.base,
                doc["status"].as_str().unwrap_or("?")
            ))),
            (INDEX, 200..=299) => Some(match doc["primaryKey"].as_str() {
                Some(pk) if pk != self.id_field => Health::Problem {
                    what: format!(
                        "Meilisearch index `{index}` has the primary key `{pk}`, not id_field `{}`: every document task would fail",
                        self.id_field
                    ),
                    fix: format!("set id_field = \"{pk}\" in the config, or send to another index"),
                },
                pk => Health::Ok(format!(
                    "Meilisearch index `{index}` exists (primary key {})",
                    pk.map_or("not set yet".into(), |pk| format!("`{pk}`"))
                )),
            }),
            (INDEX, 404) => Some(Health::Note {
                what: format!("Meilisearch index `{index}` does not exist yet"),
                fix: Some(
                    "Meilisearch creates it on the first write, if the key has the indexes.create action".into(),
                ),
            }),
            _ => None,
        }
    }

    fn credentials_fix(&self) -> String {
        let t = &self.table;
        match self.key {
            None => format!(
                "Meilisearch wants a key: set {t}.api_key_env to the name of an environment variable holding it; {ACTIONS}"
            ),
            Some(_) => format!(
                "Meilisearch answers a wrong key and a missing permission alike: check the key in the variable named by {t}.api_key_env; {ACTIONS}"
            ),
        }
    }

    fn keep_tasks(&mut self, tasks: TaskLog) {
        self.tasks = Some(tasks);
    }

    fn queue(&self) -> Option<String> {
        Some(self.place())
    }

    fn recall(&self, task: &Task) -> Option<Request> {
        Some(self.poll(task.uid, task.deletes, Vec::new()))
    }
}

fn retry(error: String) -> Reading {
    Reading::Settled(Response::Retry {
        error,
        retry_after: None,
    })
}

/// The Meilisearch id of an item id: every byte outside `A–Z a–z 0–9 -`
/// written `_` and two upper-case hex digits (`MH01/default` →
/// `MH01_2Fdefault`, `a_b` → `a_5Fb`), so no two item ids share one.
pub fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Why Meilisearch cannot take an upsert, if it cannot: its id empty or
/// too long once encoded, or its data (when at hand) not a JSON object.
fn unfit(item: &OutItem) -> Option<String> {
    let len = encode_id(&item.id).len();
    if len == 0 {
        return Some("the id is empty, and Meilisearch takes no empty document id".into());
    }
    if len > MAX_ID_BYTES {
        return Some(format!(
            "the id is {len} bytes as Meilisearch writes it (every byte outside A-Z a-z 0-9 - as _XX), more than the {MAX_ID_BYTES} it takes"
        ));
    }
    // (A remembered task's items may come without their data: it was
    // checked when they were sent.)
    if let Some(data) = &item.data
        && data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
    {
        return Some("the record is not a JSON object, and a Meilisearch document must be".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::webhook::tests::item;

    fn kind() -> Meilisearch {
        Meilisearch {
            base: "http://127.0.0.1:7700".into(),
            index: "p".into(),
            id_field: "id".into(),
            key: None,
            table: "target".into(),
            tasks: None,
        }
    }

    #[test]
    fn ids_are_encoded_one_to_one() {
        assert_eq!(encode_id("24-MB01"), "24-MB01");
        assert_eq!(encode_id("MH01/default"), "MH01_2Fdefault");
        assert_eq!(encode_id("a_b"), "a_5Fb");
        assert_eq!(encode_id("é"), "_C3_A9");
        assert_ne!(encode_id("a_b"), encode_id("a/b"));
    }

    #[test]
    fn an_id_too_long_once_encoded_is_unfit() {
        assert!(unfit(&item(&"a".repeat(511), false)).is_none());
        let why = unfit(&item(&"/".repeat(171), false)).unwrap();
        assert!(why.contains("513 bytes"), "{why}");
    }

    #[test]
    fn a_batch_is_upserts_then_deletes_with_the_id_field_set() {
        let items = [item("A/1", false), item("B", true), item("C", false)];
        let batch = Batch {
            feed: "p",
            sync: super::super::SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let reqs = kind().requests(&batch);
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0].url,
            "http://127.0.0.1:7700/indexes/p/documents?primaryKey=id"
        );
        assert_eq!(reqs[0].items, [0, 2]);
        let docs: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(docs[0]["id"], "A_2F1");
        assert_eq!(docs[0]["sku"], "A/1");
        assert_eq!(
            reqs[1].url,
            "http://127.0.0.1:7700/indexes/p/documents/delete-batch"
        );
        assert_eq!(reqs[1].body, br#"["B"]"#);
    }

    /// DESIGN.md's answer table for a task, as the kind reads it.
    #[test]
    fn what_a_task_answer_means() {
        let long = "/".repeat(200);
        let items = [item("A", false), item(&long, false), item("B", true)];
        let batch = Batch {
            feed: "p",
            sync: super::super::SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let k = kind();
        let docs = k.poll(3, false, vec![0, 1]);
        let dels = k.poll(4, true, vec![2]);
        let failed = |code: &str, kind: &str| {
            format!(
                r#"{{"uid":3,"status":"failed","error":{{"code":"{code}","type":"{kind}","message":"it went wrong","link":"x"}}}}"#
            )
        };
        let read = |req: &Request, body: &str| match k.delivered(&batch, req, body) {
            Reading::Settled(r) => Some(r),
            Reading::Poll(_) => None,
        };
        assert!(read(&docs, r#"{"uid":3,"status":"processing"}"#).is_none());
        assert!(read(&docs, r#"{"uid":3,"status":"enqueued"}"#).is_none());
        assert!(matches!(
            read(&docs, r#"{"uid":3,"status":"succeeded"}"#),
            Some(Response::Delivered(v)) if v == [Verdict::Ok, Verdict::Ok]
        ));
        // An id too long once encoded fails alone, before anything is sent.
        assert!(k.unfit(&items[1]).is_some_and(|e| e.contains("511")));
        assert!(k.unfit(&items[0]).is_none());
        assert!(matches!(
            read(&dels, &failed("index_not_found", "invalid_request")),
            Some(Response::Delivered(v)) if v == [Verdict::Ok]
        ));
        assert!(matches!(
            read(&docs, &failed("index_not_found", "invalid_request")),
            Some(Response::Refused { error }) if error.contains("indexes.create")
        ));
        for code in PRIMARY_KEY_CODES {
            assert!(matches!(
                read(&docs, &failed(code, "invalid_request")),
                Some(Response::Refused { error }) if error.contains("id_field")
            ));
        }
        assert!(matches!(
            read(&docs, &failed("invalid_document_id", "invalid_request")),
            Some(Response::Rejected { error }) if error == "invalid_document_id: it went wrong"
        ));
        for kind in ["internal", "system"] {
            assert!(matches!(
                read(&docs, &failed("io_error", kind)),
                Some(Response::Retry { .. })
            ));
        }
        assert!(matches!(
            read(&docs, r#"{"uid":3,"status":"canceled"}"#),
            Some(Response::Retry { .. })
        ));
    }
}
