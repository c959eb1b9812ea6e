//! The `webhook` kind: feedsync's own wire format, for a receiver the shop
//! writes itself (DESIGN.md, "Wire format").
//!
//! One `POST` per batch carries DESIGN.md's envelope with an
//! `Idempotency-Key`, optionally signed (`X-Feedsync-Signature`); a 2xx
//! may list per-item `results`. The envelope is also what a `file:` target
//! writes, one line per batch.

use hmac::{KeyInit, Mac};
use xxhash_rust::xxh3::Xxh3;

use super::{Batch, Kind, Method, Reading, Request, Response, SyncKind, Verdict};
use crate::config::{Secrets, TargetSettings};
use crate::record::hash_hex;
use crate::state::OutItem;

/// A webhook target: its URL and the credentials it sends.
pub struct Webhook {
    url: String,
    api_key_header: String,
    secrets: Secrets,
}

impl Webhook {
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Webhook {
        Webhook {
            url: url.to_string(),
            api_key_header: settings.api_key_header.clone(),
            secrets: secrets.clone(),
        }
    }
}

impl Kind for Webhook {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        let mut req = Request::new(Method::Post, &self.url, "batch")
            .header("Content-Type", "application/json")
            .header(
                "Idempotency-Key",
                idempotency_key(batch.feed, batch.items, batch.nonce),
            )
            .header("X-Feedsync-Feed", batch.feed);
        if let Some(token) = &self.secrets.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(key) = &self.secrets.api_key {
            req = req.header(self.api_key_header.as_str(), key.as_str());
        }
        req.body = envelope(batch.feed, batch.sync, batch.items);
        req.items = (0..batch.items.len()).collect();
        vec![req]
    }

    fn delivered(&self, batch: &Batch<'_>, _request: &Request, body: &str) -> Reading {
        Reading::Settled(Response::Delivered(verdicts(body, batch.items)))
    }

    /// The signature covers the body bytes as sent, compressed or not.
    fn seal(&self, request: &mut Request) {
        if let Some(secret) = &self.secrets.signing_secret {
            let sig = signature(secret.as_bytes(), &request.body);
            request.headers.push(("X-Feedsync-Signature".into(), sig));
        }
    }

    /// An empty batch whose `sync` is `probe`: receivers answer it with a
    /// 2xx.
    fn probe(&self, feed: &str) -> Vec<Request> {
        self.requests(&Batch {
            feed,
            sync: SyncKind::Probe,
            items: &[],
            nonce: None,
        })
    }
}

/// Per-item results in a 2xx answer; items not listed are acknowledged.
fn verdicts(body: &str, items: &[OutItem]) -> Vec<Verdict> {
    let mut out = vec![Verdict::Ok; items.len()];
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
        return out;
    };
    let Some(results) = doc.get("results").and_then(|r| r.as_array()) else {
        return out;
    };
    let index: std::collections::HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    for r in results {
        let Some(&i) = r
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|id| index.get(id))
        else {
            continue;
        };
        if r.get("ok").and_then(|v| v.as_bool()) == Some(false) {
            let error = match r.get("error") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => "rejected by the target".into(),
                Some(other) => other.to_string(),
            };
            let retryable = r.get("retryable").and_then(|v| v.as_bool()) == Some(true);
            out[i] = if retryable {
                Verdict::Retry(error)
            } else {
                Verdict::Fail(error)
            };
        }
    }
    out
}

/// The request body: DESIGN.md's envelope. Key and data are stored as JSON
/// text and written through untouched.
pub fn envelope(feed: &str, sync: SyncKind, items: &[OutItem]) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|i| i.id.len() + i.key.len() + i.data.as_ref().map_or(0, |d| d.len()) + 96)
        .sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"feed\":");
    write_json_str(&mut out, feed);
    out.extend_from_slice(b",\"sync\":\"");
    out.extend_from_slice(sync.as_str().as_bytes());
    out.extend_from_slice(b"\",\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_json_str(&mut out, &item.id);
        out.extend_from_slice(b",\"key\":");
        out.extend_from_slice(item.key.as_bytes());
        if item.deleted {
            out.extend_from_slice(b",\"op\":\"delete\",\"hash\":\"");
            out.extend_from_slice(hash_hex(item.hash).as_bytes());
            out.extend_from_slice(b"\"}");
        } else {
            out.extend_from_slice(b",\"op\":\"upsert\",\"hash\":\"");
            out.extend_from_slice(hash_hex(item.hash).as_bytes());
            out.extend_from_slice(b"\",\"data\":");
            out.extend_from_slice(item.data.as_deref().unwrap_or(b"null"));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to memory");
}

/// A hash of the feed and the batch's (id, op, hash) triples, plus a nonce
/// for deliberate resends: the same batch retried after a lost answer has
/// the same key, whatever its `sync` field.
pub fn idempotency_key(feed: &str, items: &[OutItem], nonce: Option<u64>) -> String {
    let mut h = Xxh3::new();
    h.update(feed.as_bytes());
    h.update(b"\n");
    for i in items {
        h.update(i.id.as_bytes());
        h.update(if i.deleted {
            b"\tdelete\t"
        } else {
            b"\tupsert\t"
        });
        h.update(&i.hash.to_be_bytes());
        h.update(b"\n");
    }
    if let Some(n) = nonce {
        h.update(&n.to_be_bytes());
    }
    hash_hex(h.digest128())
}

/// `sha256=<hex HMAC-SHA256 of the body bytes as sent>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::target::http::read;

    pub(crate) fn item(id: &str, deleted: bool) -> OutItem {
        OutItem {
            rowid: 1,
            id: id.into(),
            key: format!("{{\"sku\":\"{id}\"}}"),
            hash: 7,
            deleted,
            data: (!deleted).then(|| format!("{{\"sku\":\"{id}\",\"price\":\"1\"}}").into_bytes()),
            attempts: 0,
        }
    }

    #[test]
    fn envelope_is_the_wire_format() {
        let body = envelope(
            "products",
            SyncKind::Partial,
            &[item("A", false), item("B", true)],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["feed"], "products");
        assert_eq!(v["sync"], "partial");
        assert_eq!(v["items"][0]["op"], "upsert");
        assert_eq!(v["items"][0]["data"]["price"], "1");
        assert_eq!(v["items"][0]["key"]["sku"], "A");
        assert_eq!(v["items"][1]["op"], "delete");
        assert!(v["items"][1].get("data").is_none());
        assert_eq!(v["items"][1]["hash"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn idempotency_key_depends_on_content_and_nonce_only() {
        let a = [item("A", false)];
        assert_eq!(
            idempotency_key("p", &a, None),
            idempotency_key("p", &a, None)
        );
        assert_ne!(
            idempotency_key("p", &a, None),
            idempotency_key("q", &a, None)
        );
        assert_ne!(
            idempotency_key("p", &a, None),
            idempotency_key("p", &a, Some(1))
        );
        assert_ne!(
            idempotency_key("p", &a, None),
            idempotency_key("p", &[item("A", true)], None)
        );
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// DESIGN.md's response table, as a webhook reads it.
    #[test]
    fn response_table() {
        let items = [item("A", false), item("B", false)];
        let kind = Webhook {
            url: "http://127.0.0.1:9/".into(),
            api_key_header: "X-Api-Key".into(),
            secrets: Secrets {
                token: None,
                api_key: None,
                signing_secret: None,
            },
        };
        let batch = Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let request = kind.requests(&batch).remove(0);
        let classify = |status, body: &str, retry_after, location| match read(
            &kind,
            &batch,
            &request,
            status,
            body,
            retry_after,
            location,
        ) {
            Reading::Settled(r) => r,
            Reading::Poll(p) => panic!("a webhook never polls: {p:?}"),
        };
        assert!(
            matches!(classify(204, "", None, None), Response::Delivered(v) if v == vec![Verdict::Ok, Verdict::Ok])
        );
        let body = r#"{"results":[{"id":"B","ok":false,"retryable":false,"error":"bad price"}]}"#;
        match classify(200, body, None, None) {
            Response::Delivered(v) => {
                assert_eq!(v, vec![Verdict::Ok, Verdict::Fail("bad price".into())])
            }
            r => panic!("{r:?}"),
        }
        for s in [408, 425, 429, 500, 503] {
            assert!(
                matches!(
                    classify(s, "", Some(5), None),
                    Response::Retry {
                        retry_after: Some(5),
                        ..
                    }
                ),
                "{s}"
            );
        }
        for s in [401, 403, 404, 405, 301] {
            assert!(
                matches!(classify(s, "", None, None), Response::Refused { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            classify(413, "", None, None),
            Response::TooLarge { .. }
        ));
        match classify(422, &"x".repeat(5000), None, None) {
            // An error body is kept to 1 KB (`state::clip`).
            Response::Rejected { error } => assert_eq!(error.len(), 1024),
            r => panic!("{r:?}"),
        }
    }
}
