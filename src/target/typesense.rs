//! The `typesense` kind (DESIGN.md, "Target kinds"): a Typesense v0.25+
//! collection, written through its import and delete endpoints.
//!
//! Typesense takes upserts and deletes on different endpoints, so a batch
//! is up to three kinds of request, upserts first: one JSON-lines import
//! (`action=upsert`), deletes by an `id` filter in as many requests as keep
//! each request target under 4,000 bytes (proxies and servers cap request
//! lines), and a delete by path for each id a filter cannot carry. The
//! import always answers 200, with the outcome of each document on its own
//! line, so that is where failures are read: a 200 alone proves nothing.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::http::percent_encode;

use super::http::excerpt;
use super::{Batch, Health, Kind, Method, Reading, Request, Response, Verdict};
use crate::config::{Secrets, TargetSettings};
use crate::state::OutItem;

/// Filter deletes keep their request target (path and query) under this.
const TARGET_LIMIT: usize = 4000;

/// A Typesense collection and the key that writes to it.
pub struct Typesense {
    /// `{url}/collections/{collection}`, the collection percent-encoded.
    collection_url: String,
    /// The bytes of `collection_url` before its path: the request target
    /// is the rest.
    origin_len: usize,
    base: String,
    collection: String,
    api_key: Option<String>,
    /// The config table that names the key, and the variable it names,
    /// for doctor's fixes.
    table: String,
    key_env: Option<String>,
}

impl Typesense {
    /// The target `settings` name, at `url` (`{feed}` replaced).
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Typesense {
        let mut ts = Typesense::at(
            url,
            settings.index.as_deref().unwrap_or_default(),
            secrets.api_key.as_deref(),
        );
        ts.table = settings.secrets.table.clone();
        ts.key_env = settings.secrets.api_key_env.clone();
        ts
    }

    /// The collection `collection` at the Typesense at `url`.
    pub fn at(url: &str, collection: &str, api_key: Option<&str>) -> Typesense {
        let base = url.trim_end_matches('/').to_string();
        let collection_url = format!("{base}/collections/{}", percent_encode(collection));
        Typesense {
            origin_len: origin_len(&base),
            collection_url,
            base,
            collection: collection.to_string(),
            api_key: api_key.map(str::to_string),
            table: "target".into(),
            key_env: None,
        }
    }

    fn request(&self, method: Method, url: String, role: &'static str) -> Request {
        let req = Request::new(method, url, role);
        match &self.api_key {
            Some(key) => req.header("X-TYPESENSE-API-KEY", key.as_str()),
            None => req,
        }
    }

    /// One import of every upsert: a line per document, in batch order.
    fn import(&self, batch: &Batch<'_>, upserts: Vec<usize>) -> Request {
        let mut req = self
            .request(
                Method::Post,
                format!("{}/documents/import?action=upsert", self.collection_url),
                "import",
            )
            .header("Content-Type", "text/plain");
        let size: usize = upserts
            .iter()
            .map(|&i| batch.items[i].data.as_deref().map_or(0, <[u8]>::len) + 32)
            .sum();
        req.body.reserve(size);
        for &i in &upserts {
            let item = &batch.items[i];
            let at = req.body.len();
            req.body
                .extend_from_slice(&document(item.data.as_deref(), "id", &item.id));
            // A JSON text holds raw line breaks only as whitespace between
            // tokens (a pretty-printed source): one line per document.
            for b in &mut req.body[at..] {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
            req.body.push(b'\n');
        }
        req.items = upserts;
        req
    }

    /// Deletes by filter, as few requests as the target bound allows; an
    /// id that holds a back-quote (which ends a back-quoted filter value)
    /// or that no filter under the bound could carry goes alone by path.
    fn deletes(&self, batch: &Batch<'_>, deletes: Vec<usize>) -> Vec<Request> {
        const OPEN: &str = "id%3A%5B"; // id:[
        const COMMA: &str = "%2C";
        const CLOSE: &str = "%5D";
        let prefix = format!("{}/documents?filter_by={OPEN}", self.collection_url);
        let fixed = prefix.len() - self.origin_len + CLOSE.len();
        let mut out = Vec::new();
        let mut alone = Vec::new();
        let mut query = String::new();
        let mut group = Vec::new();
        for i in deletes {
            let id = &batch.items[i].id;
            // A back-quoted value, so `,` `]` and spaces in ids are plain text.
            let value = format!("%60{}%60", percent_encode(id));
            if id.contains('`') || fixed + value.len() >= TARGET_LIMIT {
                alone.push(i);
                continue;
            }
            if !group.is_empty() && fixed + query.len() + COMMA.len() + value.len() >= TARGET_LIMIT
            {
                out.push(self.filter_delete(&prefix, &query, std::mem::take(&mut group)));
                query.clear();
            }
            if !group.is_empty() {
                query.push_str(COMMA);
            }
            query.push_str(&value);
            group.push(i);
        }
        if !group.is_empty() {
            out.push(self.filter_delete(&prefix, &query, group));
        }
        for i in alone {
            let url = format!(
                "{}/documents/{}",
                self.collection_url,
                percent_encode(&batch.items[i].id)
            );
            let mut req = self.request(Method::Delete, url, "delete");
            req.items = vec![i];
            out.push(req);
        }
        out
    }

    fn filter_delete(&self, prefix: &str, values: &str, items: Vec<usize>) -> Request {
        let mut req = self.request(Method::Delete, format!("{prefix}{values}%5D"), "deletes");
        req.items = items;
        req
    }
}

impl Kind for Typesense {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        let (deletes, upserts): (Vec<usize>, Vec<usize>) =
            (0..batch.items.len()).partition(|&i| batch.items[i].deleted);
        let mut out = Vec::new();
        if !upserts.is_empty() {
            out.push(self.import(batch, upserts));
        }
        out.extend(self.deletes(batch, deletes));
        out
    }

    fn delivered(&self, _batch: &Batch<'_>, request: &Request, body: &str) -> Reading {
        let verdicts = match request.role {
            "import" => import_verdicts(body, request.items.len()),
            // `{"num_deleted":N}`: N counts only the documents that were
            // there; one already gone is deleted all the same.
            "deletes" => {
                let said = serde_json::from_str::<Value>(body).ok();
                if said.is_some_and(|v| v.get("num_deleted").is_some_and(Value::is_u64)) {
                    vec![Verdict::Ok; request.items.len()]
                } else {
                    return Reading::Settled(unexpected(body));
                }
            }
            // A 2xx to GET /health, GET the collection or one delete.
            _ => vec![Verdict::Ok; request.items.len()],
        };
        Reading::Settled(Response::Delivered(verdicts))
    }

    /// A document deleted by path that is not there is already gone.
    fn exception(&self, request: &Request, status: u16, _body: &str) -> Option<Reading> {
        (request.role == "delete" && status == 404)
            .then(|| Reading::Settled(Response::Delivered(vec![Verdict::Ok; request.items.len()])))
    }

    /// An empty id can be neither imported nor deleted (by path it names
    /// the collection's documents endpoint itself).
    fn unfit(&self, item: &OutItem) -> Option<String> {
        item.id
            .is_empty()
            .then(|| "Typesense cannot take an empty id".to_string())
    }

    fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        // `"id":"…",` before the data and the line's `\n`. A delete adds
        // nothing to a body; counting its bytes in a filter keeps a batch
        // of deletes bounded all the same.
        if item.deleted {
            3 * item.id.len() + 9
        } else {
            data + 6 * item.id.len() + 9
        }
    }

    fn frame_bytes(&self, _feed: &str) -> usize {
        0
    }

    fn probe(&self, _feed: &str) -> Vec<Request> {
        vec![
            self.request(Method::Get, format!("{}/health", self.base), "health"),
            self.request(Method::Get, self.collection_url.clone(), "collection"),
        ]
    }

    fn health(&self, request: &Request, status: u16, body: &str) -> Option<Health> {
        let url = &request.url;
        let name = &self.collection;
        let doc: Value = serde_json::from_str(body).unwrap_or_default();
        match (request.role, status) {
            ("health", 200..=299) if doc["ok"] == Value::Bool(true) => {
                Some(Health::Ok(format!("{url} answered ok: Typesense is up")))
            }
            ("health", 200..=299) => Some(Health::Problem {
                what: format!("{url} says Typesense is not healthy: {}", excerpt(body)),
                fix: "check the Typesense server's log; feedsync keeps changes queued meanwhile"
                    .into(),
            }),
            ("collection", 200..=299) => Some(Health::Ok(format!(
                "collection `{name}` exists ({} documents)",
                doc["num_documents"].as_u64().unwrap_or(0)
            ))),
            // Typesense creates no collection on a write: it needs its
            // schema first.
            ("collection", 404) => Some(Health::Problem {
                what: format!("collection `{name}` does not exist at {}", self.base),
                fix: format!(
                    "create it before the first sync; each document's `id` (a string, the item id) is Typesense's implicit id field, so the schema declares only the fields you search on, e.g.: curl -X POST '{}/collections' -H \"X-TYPESENSE-API-KEY: ${}\" -H 'Content-Type: application/json' -d '{{\"name\":{},\"fields\":[{{\"name\":\".*\",\"type\":\"auto\"}}]}}'",
                    self.base,
                    self.key_env.as_deref().unwrap_or("KEY"),
                    Value::String(name.clone())
                ),
            }),
            _ => None,
        }
    }

    /// Typesense answers a wrong key and a key without the action alike.
    fn credentials_fix(&self) -> String {
        let t = &self.table;
        let rights = format!(
            "the actions `documents:import` and `documents:delete` on collection `{}`, and `collections:get` for doctor's check",
            self.collection
        );
        match self.api_key {
            None => format!(
                "Typesense wants an API key: set {t}.api_key_env to the name of an environment variable holding one with {rights}"
            ),
            Some(_) => format!(
                "Typesense answers a wrong key and a key without the rights alike: check the key in {} and that it has {rights}",
                key_variable(&self.key_env, t)
            ),
        }
    }
}

/// Where a kind's key comes from, for a fix: `$VAR (named by T.api_key_env)`.
pub(super) fn key_variable(var: &Option<String>, table: &str) -> String {
    match var {
        Some(v) => format!("${v} (named by {table}.api_key_env)"),
        None => format!("the variable {table}.api_key_env names"),
    }
}

/// A 2xx whose body is not what Typesense answers (a proxy's page, a cut
/// answer): nothing is acknowledged.
fn unexpected(body: &str) -> Response {
    Response::Retry {
        error: format!("unexpected answer from Typesense: {}", excerpt(body)),
        retry_after: None,
    }
}

/// One verdict per imported document, from the answer's lines in order.
/// A line that is missing or unreadable acknowledges nothing.
fn import_verdicts(body: &str, count: usize) -> Vec<Verdict> {
    let mut lines = body.lines().filter(|l| !l.trim().is_empty());
    (0..count)
        .map(|_| match lines.next().map(serde_json::from_str::<Value>) {
            Some(Ok(line)) => line_verdict(&line),
            Some(Err(_)) | None => Verdict::Retry(
                "Typesense's answer has no readable result line for this document".into(),
            ),
        })
        .collect()
}

/// `{"success":true}` → sent; a failure with code 429 or ≥ 500 → retry;
/// any other failure → failed with Typesense's error.
fn line_verdict(line: &Value) -> Verdict {
    if line.get("success").and_then(Value::as_bool) == Some(true) {
        return Verdict::Ok;
    }
    let error = line
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("rejected by Typesense");
    match line.get("code").and_then(Value::as_u64) {
        Some(code) if code == 429 || code >= 500 => Verdict::Retry(format!("{code}: {error}")),
        Some(code) => Verdict::Fail(format!("{code}: {error}")),
        None => Verdict::Fail(error.to_string()),
    }
}

/// The document a service kind sends: the item's data with `field` set to
/// the id (a field of that name in the data is replaced). Usually the data
/// has no such field, and its bytes go through unchanged after the id;
/// only a record with its own field of that name is rewritten.
pub(super) fn document(data: Option<&[u8]>, field: &str, id: &str) -> Vec<u8> {
    let data = data.unwrap_or(b"{}");
    let keys = serde_json::from_slice::<HashMap<String, IgnoredAny>>(data);
    let body = data.trim_ascii_start().strip_prefix(b"{");
    match (keys, body) {
        (Ok(keys), Some(rest)) if !keys.contains_key(field) => {
            let mut out = Vec::with_capacity(data.len() + field.len() + id.len() + 8);
            out.push(b'{');
            serde_json::to_writer(&mut out, field).expect("writing to memory");
            out.push(b':');
            serde_json::to_writer(&mut out, id).expect("writing to memory");
            if !rest.trim_ascii_start().starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            out
        }
        _ => {
            // Records are JSON objects (the source readers refuse anything
            // else), so this is a record with its own `field`.
            let mut doc: Map<String, Value> = serde_json::from_slice(data).unwrap_or_default();
            doc.insert(field.to_string(), Value::String(id.to_string()));
            serde_json::to_vec(&doc).expect("a JSON object serialises")
        }
    }
}

/// How many bytes of `url` come before its path (`http://host:port`).
fn origin_len(url: &str) -> usize {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::SyncKind;
    use crate::target::webhook::tests::item;

    fn batch(items: &[crate::state::OutItem]) -> Batch<'_> {
        Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items,
            nonce: None,
        }
    }

    fn target(url: &str) -> String {
        url[origin_len(url)..].to_string()
    }

    #[test]
    fn upserts_go_first_as_one_import_of_documents_with_their_id() {
        let ts = Typesense::at("http://127.0.0.1:8108/", "my shop", Some("k"));
        let items = [item("A", false), item("B", true), item("C", false)];
        let reqs = ts.requests(&batch(&items));
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0].url,
            "http://127.0.0.1:8108/collections/my%20shop/documents/import?action=upsert"
        );
        assert_eq!(reqs[0].items, [0, 2]);
        let lines: Vec<Value> = reqs[0]
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], "A");
        assert_eq!(lines[0]["price"], "1");
        assert_eq!(lines[1]["id"], "C");
        assert!(reqs[0].body.ends_with(b"\n"));
        assert_eq!(reqs[1].method, Method::Delete);
        assert_eq!(
            target(&reqs[1].url),
            "/collections/my%20shop/documents?filter_by=id%3A%5B%60B%60%5D"
        );
        assert_eq!(reqs[1].items, [1]);
        assert!(reqs.iter().all(|r| {
            r.headers
                .contains(&("X-TYPESENSE-API-KEY".into(), "k".into()))
        }));
    }

    #[test]
    fn a_document_is_the_data_with_its_id_set() {
        let doc = document(Some(br#"{"id":7,"sku":"A"}"#), "id", "A/x");
        let v: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v, serde_json::json!({"id": "A/x", "sku": "A"}), "replaced");
        // Without a field of that name, the data's bytes go unchanged.
        let data = br#" {"sku":"A","price":1.50,"n":1e5}"#;
        assert_eq!(
            document(Some(data), "objectID", "A\"b"),
            br#"{"objectID":"A\"b","sku":"A","price":1.50,"n":1e5}"#
        );
        assert_eq!(document(Some(b"{ }"), "id", "A"), br#"{"id":"A" }"#);
    }

    #[test]
    fn a_pretty_printed_record_is_one_import_line() {
        let ts = Typesense::at("http://h:1", "p", None);
        let mut it = item("A", false);
        it.data = Some(b"{\n  \"sku\": \"A\",\r\n  \"t\": \"x\"\n}".to_vec().into());
        let items = [it, item("B", false)];
        let reqs = ts.requests(&batch(&items));
        let lines: Vec<&[u8]> = reqs[0].body.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3, "two lines and the final newline");
        let v: Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(v, serde_json::json!({"id": "A", "sku": "A", "t": "x"}));
    }

    #[test]
    fn ids_are_percent_encoded_byte_by_byte() {
        assert_eq!(percent_encode("a-Z.0_~"), "a-Z.0_~");
        assert_eq!(percent_encode("a+b c/d,é`"), "a%2Bb%20c%2Fd%2C%C3%A9%60");
    }

    #[test]
    fn filter_deletes_stay_under_the_bound_and_back_quoted_ids_go_alone() {
        let ts = Typesense::at("http://h:1/base", "p", None);
        let mut items: Vec<_> = (0..400)
            .map(|n| item(&format!("item-{n:04}/x+y"), true))
            .collect();
        items.push(item("has`quote", true));
        items.push(item(&"L".repeat(5000), true));
        let reqs = ts.requests(&batch(&items));
        let filters: Vec<&Request> = reqs.iter().filter(|r| r.role == "deletes").collect();
        assert!(filters.len() > 1, "400 ids do not fit one request");
        for r in &filters {
            let t = target(&r.url);
            assert!(t.starts_with("/base/collections/p/documents?filter_by="));
            assert!(t.len() < TARGET_LIMIT, "{}", t.len());
            assert!(!t.contains('+') && !t.contains(','));
        }
        let carried: Vec<usize> = filters.iter().flat_map(|r| r.items.clone()).collect();
        assert_eq!(carried, (0..400).collect::<Vec<_>>());
        let alone: Vec<&Request> = reqs.iter().filter(|r| r.role == "delete").collect();
        assert_eq!(alone.len(), 2);
        assert_eq!(
            target(&alone[0].url),
            "/base/collections/p/documents/has%60quote"
        );
        assert_eq!(alone[1].items, [401]);
    }

    /// `max_batch_bytes` relies on it: the estimate never falls short.
    #[test]
    fn item_bytes_cover_each_document_line() {
        let ts = Typesense::at("http://h:1", "p", None);
        for id in ["A", "a\"b\\c", "é\u{1}x"] {
            let items = [item(id, false)];
            let body = &ts.requests(&batch(&items))[0].body;
            let data = items[0].data.as_ref().unwrap().len();
            assert!(ts.item_bytes(&items[0], data) >= body.len(), "{id}");
        }
    }

    #[test]
    fn import_lines_are_read_in_order() {
        let body = concat!(
            "{\"success\":true}\n",
            "{\"success\":false,\"code\":400,\"error\":\"Field `price` must be an int32.\",\"document\":\"{}\"}\n",
            "{\"success\":false,\"code\":503,\"error\":\"Not Ready or Lagging\"}\n",
            "{\"success\":false,\"code\":429,\"error\":\"Rate limit exceeded.\"}\n",
            "{\"success\":false,\"error\":\"Bad JSON.\"}"
        );
        let v = import_verdicts(body, 6);
        assert_eq!(v[0], Verdict::Ok);
        assert_eq!(
            v[1],
            Verdict::Fail("400: Field `price` must be an int32.".into())
        );
        assert!(matches!(&v[2], Verdict::Retry(e) if e.contains("503")));
        assert!(matches!(&v[3], Verdict::Retry(e) if e.contains("429")));
        assert_eq!(v[4], Verdict::Fail("Bad JSON.".into()));
        assert!(
            matches!(v[5], Verdict::Retry(_)),
            "a missing line is no ack"
        );
    }

    #[test]
    fn deletes_count_as_done_even_when_already_gone() {
        let ts = Typesense::at("http://h:1", "p", None);
        let items = [item("A", true), item("a`b", true)];
        let b = batch(&items);
        let reqs = ts.requests(&b);
        match ts.delivered(&b, &reqs[0], r#"{"num_deleted":0}"#) {
            Reading::Settled(Response::Delivered(v)) => assert_eq!(v, [Verdict::Ok]),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            ts.delivered(&b, &reqs[0], "<html>"),
            Reading::Settled(Response::Retry { .. })
        ));
        match ts.exception(&reqs[1], 404, r#"{"message":"Could not find"}"#) {
            Some(Reading::Settled(Response::Delivered(v))) => assert_eq!(v, [Verdict::Ok]),
            r => panic!("{r:?}"),
        }
        assert!(
            ts.exception(&reqs[0], 404, "").is_none(),
            "a missing collection"
        );
    }
}
