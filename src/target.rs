//! Delivery of one batch to a target, and what its answer means.
//!
//! This module speaks DESIGN.md's wire format (envelope, headers, signing,
//! gzip) and turns every possible answer into a [`Response`] the sync loop
//! can act on. It decides nothing about state: that is `sync`'s job.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use hmac::{KeyInit, Mac};
use xxhash_rust::xxh3::Xxh3;

use crate::clock;
use crate::config::{Endpoint, Secrets, TargetSettings};
use crate::record::hash_hex;
use crate::state::OutItem;

/// What a batch's answer means for its items.
#[derive(Debug)]
pub enum Response {
    /// 2xx: a verdict per item, in batch order.
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

/// Longest response body kept as an item's error.
const ERROR_BODY: usize = 1024;
/// Longest answer read; a longer one is not a whole answer.
const ANSWER_LIMIT: u64 = 16 << 20;
/// Longest Retry-After honoured.
const MAX_RETRY_AFTER: i64 = 24 * 3600;

/// A feed's target: where its batches go and with which credentials.
pub struct Target {
    settings: TargetSettings,
    secrets: Secrets,
    agent: ureq::Agent,
    /// A `file:` target: the length its file had after the last group this
    /// target wrote and fsynced, so known to end with a whole line
    /// ([`UNKNOWN_END`] before the first).
    file_end: AtomicU64,
}

const UNKNOWN_END: u64 = u64::MAX;

/// One HTTP agent for the whole process, so connections are reused across
/// batches and feeds. It has no timeouts of its own (ureq's default): each
/// request sets its own, since a source read and a batch are bounded by
/// different keys. A batch's `timeout_global` covers connect, send and the
/// whole answer, body included.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("feedsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl Target {
    pub fn new(settings: TargetSettings, secrets: Secrets, agent: ureq::Agent) -> Target {
        Target {
            settings,
            secrets,
            agent,
            file_end: AtomicU64::new(UNKNOWN_END),
        }
    }

    pub fn settings(&self) -> &TargetSettings {
        &self.settings
    }

    /// How many batches may be handed over at once. An HTTP target gets the
    /// next batch only after answering the last. A file target takes a
    /// group, appends each batch as a line and fsyncs once for all: every
    /// batch is still durable before it counts, for a fraction of the
    /// fsyncs.
    pub fn window(&self) -> usize {
        match self.settings.endpoint {
            Endpoint::File(_) => 8,
            Endpoint::Http(_) => 1,
        }
    }

    /// Sends a group of at most `window()` batches: a response per batch,
    /// in order.
    pub fn send_group(
        &self,
        feed: &str,
        sync: SyncKind,
        batches: &[&[OutItem]],
        nonce: Option<u64>,
    ) -> Vec<Response> {
        match &self.settings.endpoint {
            Endpoint::File(path) => append_lines(path, &self.file_end, feed, sync, batches),
            Endpoint::Http(_) => batches
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
        match &self.settings.endpoint {
            Endpoint::File(_) => self
                .send_group(feed, sync, &[items], nonce)
                .pop()
                .unwrap_or(Response::Skipped),
            Endpoint::Http(url) => {
                let body = envelope(feed, sync, items);
                let key = idempotency_key(feed, items, nonce);
                self.post(url, feed, body, &key, items)
            }
        }
    }

    fn post(
        &self,
        url: &str,
        feed: &str,
        body: Vec<u8>,
        idempotency_key: &str,
        items: &[OutItem],
    ) -> Response {
        let body = if self.settings.gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            enc.write_all(&body)
                .and_then(|_| enc.finish())
                .expect("gzip into memory")
        } else {
            body
        };
        let timeout = Some(self.settings.timeout);
        let mut req = self
            .agent
            .post(url)
            .config()
            .timeout_global(timeout)
            .timeout_connect(timeout)
            .build()
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", idempotency_key)
            .header("X-Feedsync-Feed", feed);
        if self.settings.gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        if let Some(secret) = &self.secrets.signing_secret {
            req = req.header("X-Feedsync-Signature", signature(secret.as_bytes(), &body));
        }
        if let Some(token) = &self.secrets.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(key) = &self.secrets.api_key {
            req = req.header(self.settings.api_key_header.as_str(), key.as_str());
        }
        match req.send(&body[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                // Only a whole answer counts (guarantee 7): a body cut
                // short, shorter than its Content-Length or still arriving
                // when `timeout_global` runs out is an error here, and the
                // batch is retried whatever the status said. Bytes, not a
                // string: a whole body that is not UTF-8 is still whole.
                let body = match resp
                    .body_mut()
                    .with_config()
                    .limit(ANSWER_LIMIT)
                    .read_to_vec()
                {
                    Ok(body) => body,
                    Err(e) => {
                        return Response::Retry {
                            error: incomplete_answer(status, e, self.settings.timeout),
                            retry_after,
                        };
                    }
                };
                let text = String::from_utf8_lossy(&body);
                classify(status, &text, retry_after, location, items)
            }
            Err(e) => transport_error(e, self.settings.timeout),
        }
    }
}

/// What an HTTP status and body mean, per DESIGN.md's response table.
fn classify(
    status: u16,
    body: &str,
    retry_after: Option<i64>,
    location: Option<String>,
    items: &[OutItem],
) -> Response {
    let excerpt = || {
        let b = body.trim();
        let b = crate::state::clip(b);
        if b.len() > ERROR_BODY {
            b[..ERROR_BODY].to_string()
        } else {
            b.to_string()
        }
    };
    let described = || {
        let b = excerpt();
        if b.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {b}")
        }
    };
    match status {
        200..=299 => Response::Delivered(verdicts(body, items)),
        300..=399 => Response::Refused {
            error: format!(
                "HTTP {status}: the target redirects{}; set the target url to the final address",
                location.map(|l| format!(" to {l}")).unwrap_or_default()
            ),
        },
        401 | 403 => Response::Refused {
            error: format!("{}: check the credentials", described()),
        },
        404 | 405 => Response::Refused {
            error: format!("{}: check the target url", described()),
        },
        408 | 425 | 429 | 500..=599 => Response::Retry {
            error: described(),
            retry_after,
        },
        413 => Response::TooLarge { error: described() },
        400..=499 => Response::Rejected { error: excerpt() },
        _ => Response::Retry {
            error: described(),
            retry_after,
        },
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

/// Why an answer whose status line arrived does not count.
fn incomplete_answer(status: u16, e: ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!(
            "HTTP {status}, but the answer was not complete after {} s (timeout_secs)",
            timeout.as_secs()
        ),
        ureq::Error::BodyExceedsLimit(limit) => {
            format!("HTTP {status}, but the answer is longer than {limit} bytes")
        }
        e => format!("HTTP {status}, but the answer was cut short: {e}"),
    }
}

fn transport_error(e: ureq::Error, timeout: Duration) -> Response {
    match e {
        ureq::Error::Tls(msg) => Response::Refused {
            error: format!("TLS failure: {msg}"),
        },
        ureq::Error::Timeout(_) => Response::Retry {
            error: format!("timed out after {} s", timeout.as_secs()),
            retry_after: None,
        },
        e @ ureq::Error::Rustls(_) => Response::Refused {
            error: format!("TLS verification failed: {e}"),
        },
        // ureq hands most TLS errors over as I/O errors wrapping rustls's.
        ureq::Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            Response::Refused {
                error: format!("TLS failure: {e}"),
            }
        }
        other => Response::Retry {
            error: other.to_string(),
            retry_after: None,
        },
    }
}

/// `Retry-After` in seconds or as an HTTP date, capped at 24 hours.
fn parse_retry_after(v: &str) -> Option<i64> {
    let v = v.trim();
    let secs = match v.parse::<i64>() {
        Ok(s) => s,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            at.timestamp() - clock::now_secs()
        }
    };
    Some(secs.clamp(0, MAX_RETRY_AFTER))
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

/// A `file:` target: each batch's envelope is appended as one line, and
/// the group is fsynced once; no batch counts before the fsync that covers
/// it. Empty batches (nothing left to send) are not written.
///
/// A line is all or nothing (guarantee 7). A group that fails to be
/// written or fsynced (a full disk, a file-size limit, an I/O error) is cut
/// off again: the file is truncated to its length before the group, and
/// every batch of the group is retried. A process killed mid-write cannot
/// truncate, so before appending, a file that does not end with `\n` is cut
/// back to just after its last `\n`. That is sound with one fsync per
/// group because acknowledgement follows the fsync: every acknowledged
/// line was fsynced with its `\n` before its items counted, so the last
/// `\n` of the file lies at or after the end of everything acknowledged,
/// and what follows it belongs to a group that never counted (its items
/// are still `pending` or `retry` and are written again). The whole lines a
/// killed group left stay, as duplicates, as at-least-once delivery allows.
/// (After a power loss some file systems may show a never-fsynced tail as
/// zeros; zeros with no `\n` after them are cut the same way.)
///
/// Normal path: one `fstat` per group to learn where the group starts. The
/// tail is read only when the file's length is not the one this target
/// left it at (the first group of a run, or another writer).
fn append_lines(
    path: &Path,
    file_end: &AtomicU64,
    feed: &str,
    sync: SyncKind,
    batches: &[&[OutItem]],
) -> Vec<Response> {
    let written = if batches.iter().all(|b| b.is_empty()) {
        Ok(())
    } else {
        append_group(path, file_end, feed, sync, batches)
    };
    match written {
        Ok(()) => batches
            .iter()
            .map(|_| Response::Delivered(Vec::new()))
            .collect(),
        // The group succeeds or fails as a whole, and was cut off again.
        Err(error) => batches
            .iter()
            .map(|_| Response::Retry {
                error: error.clone(),
                retry_after: None,
            })
            .collect(),
    }
}

/// Appends the group's lines and fsyncs them, or leaves the file as it was
/// before the group (as far as truncation can) and says why.
fn append_group(
    path: &Path,
    file_end: &AtomicU64,
    feed: &str,
    sync: SyncKind,
    batches: &[&[OutItem]],
) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(cannot)?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(cannot)?;
    let mut start = f.metadata().map_err(cannot)?.len();
    if start != file_end.load(Ordering::Relaxed) {
        start = cut_torn_tail(&f, path, start).map_err(cannot)?;
    }
    file_end.store(UNKNOWN_END, Ordering::Relaxed);
    let mut end = start;
    let written = (|| -> std::io::Result<()> {
        for items in batches.iter().filter(|b| !b.is_empty()) {
            let mut line = envelope(feed, sync, items);
            line.push(b'\n');
            (&f).write_all(&line)?;
            end += line.len() as u64;
        }
        f.sync_data()
    })();
    match written {
        Ok(()) => {
            file_end.store(end, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // Truncating frees what the group took, so it works on a full
            // disk; should it fail, the next append cuts the torn tail.
            let error = cannot(e);
            match f.set_len(start).and_then(|()| f.sync_data()) {
                Ok(()) => {
                    file_end.store(start, Ordering::Relaxed);
                    Err(error)
                }
                Err(e) => Err(format!(
                    "{error}; and cannot cut it back to its last whole line ({e}): the next write will"
                )),
            }
        }
    }
}

/// Cuts whatever follows the last `\n` of `f` (`len` bytes long): the
/// unfinished line of a write that never counted. Returns the new length.
fn cut_torn_tail(f: &File, path: &Path, len: u64) -> std::io::Result<u64> {
    let mut buf = vec![0; 64 << 10];
    let mut end = len;
    let whole = loop {
        if end == 0 {
            break 0;
        }
        let n = end.min(buf.len() as u64) as usize;
        let at = end - n as u64;
        f.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            break at + i as u64 + 1;
        }
        end = at;
    };
    if whole < len {
        log::warn!(
            "{}: cutting {} bytes of an unfinished last line (a write that was never acknowledged)",
            path.display(),
            len - whole
        );
        f.set_len(whole)?;
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, deleted: bool) -> OutItem {
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

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(120));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon"), None);
        let later = clock::now() + chrono::Duration::seconds(300);
        let http_date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let got = parse_retry_after(&http_date).unwrap();
        assert!((299..=300).contains(&got), "{got}");
    }

    #[test]
    fn response_table() {
        let items = [item("A", false), item("B", false)];
        assert!(
            matches!(classify(204, "", None, None, &items), Response::Delivered(v) if v == vec![Verdict::Ok, Verdict::Ok])
        );
        let body = r#"{"results":[{"id":"B","ok":false,"retryable":false,"error":"bad price"}]}"#;
        match classify(200, body, None, None, &items) {
            Response::Delivered(v) => {
                assert_eq!(v, vec![Verdict::Ok, Verdict::Fail("bad price".into())])
            }
            r => panic!("{r:?}"),
        }
        for s in [408, 425, 429, 500, 503] {
            assert!(
                matches!(
                    classify(s, "", Some(5), None, &items),
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
                matches!(
                    classify(s, "", None, None, &items),
                    Response::Refused { .. }
                ),
                "{s}"
            );
        }
        assert!(matches!(
            classify(413, "", None, None, &items),
            Response::TooLarge { .. }
        ));
        match classify(422, &"x".repeat(5000), None, None, &items) {
            Response::Rejected { error } => assert_eq!(error.len(), ERROR_BODY),
            r => panic!("{r:?}"),
        }
    }
}
