//! The `elasticsearch` and `opensearch` kinds (one protocol, both names):
//! a batch is one `_bulk` request, and its answer speaks of each action
//! (DESIGN.md, "Target kinds").
//!
//! `POST {url}/{index}/_bulk`, `application/x-ndjson`: an upsert is the
//! line `{"index":{"_id":ID}}` and the item's data on the next line, a
//! delete the line `{"delete":{"_id":ID}}`; the body ends with `\n`. The
//! 200 that comes back may still say `"errors": true`: then each entry of
//! `items` (one per action, in order) has its own `status`, and the sync
//! loop gets a verdict per item from it, so a partial failure is never
//! reported as a success.

use base64::Engine;

use super::http::excerpt;
use super::{Batch, Health, Kind, Method, Reading, Request, Response, Verdict};
use crate::config::{Secrets, TargetKind, TargetSettings};
use crate::state::OutItem;

/// Elasticsearch refuses a whole `_bulk` request when one `_id` is longer.
const MAX_ID_BYTES: usize = 512;

pub struct Elasticsearch {
    kind: TargetKind,
    /// The base URL, no trailing `/`.
    url: String,
    index: String,
    /// `Authorization`'s value, when a credential is configured.
    auth: Option<String>,
    /// Where the credentials are named, for doctor's fixes.
    table: String,
}

impl Elasticsearch {
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Elasticsearch {
        // The config allows at most one credential, and ApiKey only for
        // Elasticsearch.
        let auth = if let Some(key) = &secrets.api_key {
            Some(format!("ApiKey {key}"))
        } else if let Some(token) = &secrets.token {
            Some(format!("Bearer {token}"))
        } else if let (Some(user), Some(password)) = (&settings.username, &secrets.password) {
            let pair = format!("{user}:{password}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        } else {
            None
        };
        Elasticsearch {
            kind: settings.kind,
            url: url.trim_end_matches('/').to_string(),
            index: settings.index.clone().unwrap_or_default(),
            auth,
            table: settings.secrets.table.clone(),
        }
    }

    fn request(&self, method: Method, url: String, role: &'static str) -> Request {
        let mut req = Request::new(method, url, role);
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth.as_str());
        }
        req
    }

    fn name(&self) -> &'static str {
        match self.kind {
            TargetKind::Opensearch => "OpenSearch",
            _ => "Elasticsearch",
        }
    }
}

impl Kind for Elasticsearch {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        let url = format!(
            "{}/{}/_bulk",
            self.url,
            super::http::percent_encode(&self.index)
        );
        let mut req = self
            .request(Method::Post, url, "bulk")
            .header("Content-Type", "application/x-ndjson");
        let size: usize = batch
            .items
            .iter()
            .map(|i| self.item_bytes(i, i.data.as_deref().map_or(0, <[u8]>::len)))
            .sum();
        let mut body = Vec::with_capacity(size);
        for item in batch.items {
            let action = if item.deleted { "delete" } else { "index" };
            body.extend_from_slice(b"{\"");
            body.extend_from_slice(action.as_bytes());
            body.extend_from_slice(b"\":{\"_id\":");
            serde_json::to_writer(&mut body, &item.id).expect("writing to memory");
            body.extend_from_slice(b"}}\n");
            if !item.deleted {
                let data = item.data.as_deref().unwrap_or(b"null");
                let at = body.len();
                body.extend_from_slice(data);
                // A JSON text holds raw line breaks only as whitespace
                // between tokens (a pretty-printed source): one line each.
                for b in &mut body[at..] {
                    if *b == b'\n' || *b == b'\r' {
                        *b = b' ';
                    }
                }
                body.push(b'\n');
            }
        }
        req.body = body;
        req.items = (0..batch.items.len()).collect();
        vec![req]
    }

    fn delivered(&self, batch: &Batch<'_>, request: &Request, body: &str) -> Reading {
        let Some(entries) = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|doc| doc.get("items").and_then(|i| i.as_array()).cloned())
            .filter(|entries| entries.len() == request.items.len())
        else {
            // Without one entry per action nothing is known to be done;
            // resending is harmless (documents replace by id).
            return Reading::Settled(Response::Retry {
                error: format!(
                    "{} answered the bulk request without one result per action: {}",
                    self.name(),
                    excerpt(body)
                ),
                retry_after: None,
            });
        };
        let verdicts = entries
            .iter()
            .zip(&request.items)
            .map(|(entry, &i)| verdict(entry, batch.items[i].deleted))
            .collect();
        Reading::Settled(Response::Delivered(verdicts))
    }

    /// An id the service cannot take fails alone, before the request:
    /// Elasticsearch would refuse the whole `_bulk` for it.
    fn unfit(&self, item: &OutItem) -> Option<String> {
        if item.id.is_empty() {
            return Some(format!("{} cannot take an empty _id", self.name()));
        }
        (item.id.len() > MAX_ID_BYTES).then(|| {
            format!(
                "the id is {} bytes; {} takes an _id of at most {MAX_ID_BYTES} bytes",
                item.id.len(),
                self.name()
            )
        })
    }

    fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        // `{"index":{"_id":` … `}}\n` and the data line, or the delete line.
        let id = super::webhook::json_str_bytes(&item.id);
        if item.deleted {
            20 + id
        } else {
            20 + id + data
        }
    }

    fn frame_bytes(&self, _feed: &str) -> usize {
        0
    }

    /// `GET {url}/`: the cluster's name and version, which writes nothing.
    fn probe(&self, _feed: &str) -> Vec<Request> {
        vec![self.request(Method::Get, format!("{}/", self.url), "info")]
    }

    fn health(&self, request: &Request, status: u16, body: &str) -> Option<Health> {
        let url = &request.url;
        match status {
            200..=299 => {
                let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let version = doc["version"]["number"].as_str().unwrap_or("?");
                let distribution = doc["version"]["distribution"].as_str();
                let found = if distribution == Some("opensearch") {
                    "OpenSearch"
                } else {
                    "Elasticsearch"
                };
                Some(Health::Ok(format!(
                    "{url} is {found} {version}; batches go to index `{}`",
                    self.index
                )))
            }
            // An ingest-only key may not read cluster info and still
            // deliver: worth knowing, nothing to fix.
            403 => Some(Health::Note {
                what: format!(
                    "{url} answered 403 to GET /: the credential lacks the `monitor` cluster privilege, so doctor cannot check it further (an ingest-only key; delivery may still work)"
                ),
                fix: Some(format!(
                    "to let doctor check the cluster, grant the key the `monitor` cluster privilege; delivery needs `write` on index `{}`",
                    self.index
                )),
            }),
            _ => None,
        }
    }

    fn credentials_fix(&self) -> String {
        let t = &self.table;
        let keys = match self.kind {
            TargetKind::Opensearch => format!("{t}.token_env, or {t}.username + {t}.password_env"),
            _ => format!("{t}.api_key_env, {t}.token_env, or {t}.username + {t}.password_env"),
        };
        match self.auth {
            None => format!(
                "{} wants a credential: set {keys} (environment variable names)",
                self.name()
            ),
            Some(_) => format!(
                "check the credential in the environment variable named by {keys}; it needs the `write` privilege on index `{}`",
                self.index
            ),
        }
    }
}

/// One entry of a bulk answer's `items`: `{"index": {"status": …}}`.
fn verdict(entry: &serde_json::Value, delete: bool) -> Verdict {
    let Some(result) = entry.as_object().and_then(|o| o.values().next()) else {
        return Verdict::Retry(format!("no result for this action: {entry}"));
    };
    let status = result["status"].as_u64().unwrap_or(0);
    let error = || {
        let e = &result["error"];
        let text = match (e["type"].as_str(), e["reason"].as_str()) {
            (Some(t), Some(r)) => format!("{t}: {r}"),
            (Some(t), None) => t.to_string(),
            _ if e.is_string() => e.as_str().unwrap_or_default().to_string(),
            _ => format!("status {status}"),
        };
        crate::state::clip(&text).to_string()
    };
    match status {
        200..=299 => Verdict::Ok,
        // Deleting what is already gone is done.
        404 if delete => Verdict::Ok,
        429 | 500..=599 => Verdict::Retry(error()),
        _ => Verdict::Fail(error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::webhook::tests::item;
    use crate::target::{SyncKind, http::read};

    fn kind() -> Elasticsearch {
        Elasticsearch {
            kind: TargetKind::Elasticsearch,
            url: "http://127.0.0.1:9".into(),
            index: "products".into(),
            auth: None,
            table: "target".into(),
        }
    }

    #[test]
    fn the_bulk_body_pairs_actions_and_documents_and_ends_with_a_newline() {
        let mut a = item("A", false);
        a.data = Some(b"{\n  \"sku\": \"A\"\n}".to_vec().into());
        let items = [a, item("B", true)];
        let batch = Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let req = kind().requests(&batch).remove(0);
        assert_eq!(req.url, "http://127.0.0.1:9/products/_bulk");
        let body = String::from_utf8(req.body.clone()).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_id\":\"A\"}}\n{   \"sku\": \"A\" }\n{\"delete\":{\"_id\":\"B\"}}\n"
        );
        assert!(
            body.len()
                <= items
                    .iter()
                    .map(|i| kind().item_bytes(i, i.data.as_deref().map_or(0, <[u8]>::len)))
                    .sum()
        );
    }

    #[test]
    fn each_action_has_its_verdict() {
        let items = [
            item("A", false),
            item("B", true),
            item("C", false),
            item("D", false),
        ];
        let batch = Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let k = kind();
        let req = k.requests(&batch).remove(0);
        let body = r#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"products","_id":"A","status":201,"result":"created"}},
            {"delete":{"_index":"products","_id":"B","status":404,"result":"not_found"}},
            {"index":{"_index":"products","_id":"C","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [price]"}}},
            {"index":{"_index":"products","_id":"D","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}}
        ]}"#;
        match read(&k, &batch, &req, 200, body, None, None) {
            Reading::Settled(Response::Delivered(v)) => assert_eq!(
                v,
                vec![
                    Verdict::Ok,
                    Verdict::Ok,
                    Verdict::Fail("mapper_parsing_exception: failed to parse field [price]".into()),
                    Verdict::Retry("es_rejected_execution_exception: rejected execution".into()),
                ]
            ),
            r => panic!("{r:?}"),
        }
        // A 2xx that does not speak of every action acknowledges nothing.
        assert!(matches!(
            read(&k, &batch, &req, 200, "{}", None, None),
            Reading::Settled(Response::Retry { .. })
        ));
    }

    #[test]
    fn an_id_over_512_bytes_is_unfit() {
        assert!(kind().unfit(&item(&"x".repeat(512), false)).is_none());
        let e = kind().unfit(&item(&"x".repeat(513), false)).unwrap();
        assert!(e.contains("512"), "{e}");
        assert!(kind().unfit(&item("", false)).is_some());
    }
}
