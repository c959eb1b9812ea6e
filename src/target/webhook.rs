//! The `webhook` kind: feedsync's own wire format, for a receiver the shop
//! writes itself (DESIGN.md, "Wire format").
//!
//! One `POST` per batch carries DESIGN.md's envelope with an
//! `Idempotency-Key`, optionally signed (`X-Feedsync-Signature`, or the
//! Standard Webhooks headers with `signature = "standard"`); a 2xx may
//! list per-item `results`, and a 410 retires the target. The envelope is also what a `file:` target
//! writes, one line per batch.

use base64::Engine;
use hmac::{KeyInit, Mac};
use xxhash_rust::xxh3::Xxh3;

use super::http::excerpt;
use super::{Batch, Health, Kind, Method, Reading, Request, Response, SyncKind, Verdict};
use crate::clock;
use crate::config::{Secrets, Signature, TargetSettings, standard_key};
use crate::record::hash_hex;
use crate::state::OutItem;

/// A webhook target: its URL and the credentials it sends.
pub struct Webhook {
    url: String,
    api_key_header: String,
    signature: Signature,
    /// Where the credentials are named (`target`, `targets.NAME`), for
    /// doctor's fixes.
    table: String,
    secrets: Secrets,
    /// Drawn once per run: a probe is never a repeat (DESIGN.md, Standard
    /// Webhooks signing).
    probe_nonce: u64,
}

impl Webhook {
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Webhook {
        Webhook {
            url: url.to_string(),
            api_key_header: settings.api_key_header.clone(),
            signature: settings.signature,
            table: settings.secrets.table.clone(),
            secrets: secrets.clone(),
            probe_nonce: run_nonce(),
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

    /// `410 Gone`: the receiver says this endpoint is no more, so the
    /// target is refused rather than retried for ever.
    fn exception(&self, _request: &Request, status: u16, body: &str) -> Option<Reading> {
        (status == 410).then(|| {
            Reading::Settled(Response::Refused {
                error: format!(
                    "HTTP 410 Gone{}: the receiver retired this url; check the target url",
                    match excerpt(body) {
                        b if b.is_empty() => String::new(),
                        b => format!(" ({b})"),
                    }
                ),
            })
        })
    }

    /// The signature covers the body bytes as sent (compressed or not for
    /// `feedsync`; `standard` never compresses).
    fn seal(&self, request: &mut Request) {
        let Some(secret) = &self.secrets.signing_secret else {
            return;
        };
        match self.signature {
            Signature::Feedsync => {
                let sig = signature(secret.as_bytes(), &request.body);
                request.headers.push(("X-Feedsync-Signature".into(), sig));
            }
            Signature::Standard => {
                // Checked when the secrets were read: a bad one never gets here.
                let Some(key) = standard_key(secret) else {
                    return;
                };
                let id = request
                    .headers
                    .iter()
                    .find(|(n, _)| n == "Idempotency-Key")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                // The real clock, even under FEEDSYNC_NOW: receivers
                // refuse timestamps that are not close to their own.
                let ts = clock::wall_secs();
                let sig = standard_signature(&key, &id, ts, &request.body);
                request.headers.push(("webhook-id".into(), id));
                request
                    .headers
                    .push(("webhook-timestamp".into(), ts.to_string()));
                request.headers.push(("webhook-signature".into(), sig));
            }
        }
    }

    fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        item_bytes(item, data)
    }

    fn frame_bytes(&self, feed: &str) -> usize {
        frame_bytes(feed)
    }

    /// An empty batch whose `sync` is `probe`: receivers answer it with a
    /// 2xx. Its nonce keeps receivers from dropping it as a repeat.
    fn probe(&self, feed: &str) -> Vec<Request> {
        self.requests(&Batch {
            feed,
            sync: SyncKind::Probe,
            items: &[],
            nonce: Some(self.probe_nonce),
        })
    }

    fn health(&self, request: &Request, status: u16, body: &str) -> Option<Health> {
        let url = &request.url;
        let said = match excerpt(body) {
            b if b.is_empty() => format!("HTTP {status}"),
            b => format!("HTTP {status}: {b}"),
        };
        match status {
            200..=299 => Some(Health::Ok(format!("{url} accepted a probe batch"))),
            410 => Some(Health::Problem {
                what: format!("{url} is gone: {said}"),
                fix: "the receiver retired this url: set the target url to its new address".into(),
            }),
            401 | 403 | 404 | 405 | 408 | 425 | 429 => None,
            400..=499 => Some(Health::Problem {
                what: format!("{url} rejected an empty probe batch: {said}"),
                fix: "the receiver must answer a batch with \"sync\": \"probe\" and no items with a 2xx (DESIGN.md, wire format)".into(),
            }),
            _ => None,
        }
    }

    /// Names the variables that hold the credentials, never their values.
    fn credentials_fix(&self) -> String {
        let t = &self.table;
        match (&self.secrets.token, &self.secrets.api_key) {
            (None, None) => format!(
                "the target wants credentials: set {t}.token_env (or api_key_env) to the name of an environment variable holding them"
            ),
            _ => format!(
                "check the credentials in the environment variables named by {t}.token_env / {t}.api_key_env"
            ),
        }
    }
}

/// A number drawn once per process, for probes.
fn run_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    xxhash_rust::xxh3::xxh3_64(format!("probe:{t}:{}", std::process::id()).as_bytes())
}

/// Standard Webhooks' `v1,<base64 of HMAC-SHA256(key, "{id}.{ts}.{body}")>`.
pub fn standard_signature(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
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

/// The bytes one item adds to [`envelope`]: its fixed text, its id as a
/// JSON string (at most 6 bytes per escaped byte), key and data, and a
/// comma.
pub fn item_bytes(item: &OutItem, data: usize) -> usize {
    let fixed = if item.deleted { 71 } else { 79 + data };
    fixed + json_str_bytes(&item.id) + item.key.len()
}

/// The bytes of [`envelope`] around its items (the longest `sync` value).
pub fn frame_bytes(feed: &str) -> usize {
    37 + json_str_bytes(feed)
}

/// An upper bound of `s`'s length as a JSON string.
pub fn json_str_bytes(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| {
            if b < 0x20 || b == b'"' || b == b'\\' {
                6
            } else {
                1
            }
        })
        .sum::<usize>()
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
            data: (!deleted).then(|| {
                format!("{{\"sku\":\"{id}\",\"price\":\"1\"}}")
                    .into_bytes()
                    .into()
            }),
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
            signature: Signature::Feedsync,
            table: "target".into(),
            secrets: Secrets::default(),
            probe_nonce: 1,
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
        for s in [401, 403, 404, 405, 410, 301] {
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
