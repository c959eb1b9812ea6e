//! The rules every HTTP kind shares, written once: one agent, the
//! timeouts that bound a whole exchange (guarantee 7), gzip, no redirects,
//! TLS failures as refusals, Retry-After, polling an accepted task, and
//! DESIGN.md's response table for whole-request answers.
//!
//! A [`Kind`] says how its requests look and what a 2xx means; this
//! module sends them and reads every other answer the same way for all.

use std::io::Write;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{Batch, Health, Kind, Method, Reading, Request, Response, Verdict};
use crate::clock;
use crate::config::{Secrets, TargetSettings};
use crate::state::OutItem;

/// Longest answer read; a longer one is not a whole answer.
const ANSWER_LIMIT: u64 = 16 << 20;
/// Longest Retry-After honoured.
const MAX_RETRY_AFTER: i64 = 24 * 3600;
/// The first and the longest pause between two polls of a task. A task of
/// one batch usually finishes within milliseconds; starting at 50 ms made
/// waiting for tasks most of a 1% sync into Meilisearch (20 batches, each
/// waited for before the next is enqueued). Doubling from 2 ms costs a
/// slow task a handful of loopback GETs more.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_secs(2);

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

/// An HTTP target: a kind, and how its requests go on the wire.
pub struct Client {
    kind: Box<dyn Kind>,
    gzip: bool,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Client {
    /// The kind `settings` name, at `url` (`{feed}` already replaced).
    pub fn new(
        url: &str,
        settings: &TargetSettings,
        secrets: &Secrets,
        agent: ureq::Agent,
    ) -> Client {
        Client {
            kind: super::kind(url, settings, secrets),
            gzip: settings.gzip,
            timeout: settings.timeout,
            agent,
        }
    }

    /// A client for a kind made up by a test.
    #[cfg(test)]
    pub(super) fn with_kind(kind: Box<dyn Kind>, timeout: Duration) -> Client {
        Client {
            kind,
            gzip: false,
            timeout,
            agent: agent(),
        }
    }

    pub(super) fn kind(&self) -> &dyn Kind {
        &*self.kind
    }

    pub(super) fn kind_mut(&mut self) -> &mut dyn Kind {
        &mut *self.kind
    }

    /// Sends one batch, request by request, and reads the answers. Items
    /// the kind finds unfit fail at once and are not sent.
    pub fn send(&self, batch: &Batch<'_>) -> Response {
        let unfit: Vec<Option<String>> = batch.items.iter().map(|i| self.kind.unfit(i)).collect();
        if unfit.iter().all(Option::is_none) {
            return self.deliver(batch, self.kind.requests(batch));
        }
        let fit: Vec<usize> = (0..batch.items.len())
            .filter(|&i| unfit[i].is_none())
            .collect();
        let mut verdicts: Vec<Verdict> = unfit
            .into_iter()
            .map(|u| u.map_or(Verdict::Ok, Verdict::Fail))
            .collect();
        if !fit.is_empty() {
            let items: Vec<OutItem> = fit.iter().map(|&i| batch.items[i].clone()).collect();
            let sub = Batch {
                items: &items,
                ..*batch
            };
            match self.deliver(&sub, self.kind.requests(&sub)) {
                Response::Delivered(said) => {
                    for (&i, verdict) in fit.iter().zip(said) {
                        verdicts[i] = verdict;
                    }
                }
                failed => return failed,
            }
        }
        Response::Delivered(verdicts)
    }

    /// `doctor`'s check of the target and the credentials: what each of
    /// the kind's probe requests found, up to the first problem.
    pub fn probe(&self, feed: &str) -> Vec<Health> {
        let mut found = Vec::new();
        for mut request in self.kind.probe(feed) {
            let health = match self.fetch(&mut request) {
                Ok(a) => self
                    .kind
                    .health(&request, a.status, &a.body)
                    .unwrap_or_else(|| health(&*self.kind, &request, &a)),
                Err(failed) => unanswered(&request, failed),
            };
            let stop = health.is_problem();
            found.push(health);
            if stop {
                break;
            }
        }
        found
    }

    /// The batch is delivered when every request was; the first that was
    /// not is the batch's answer, and the rest are not sent.
    fn deliver(&self, batch: &Batch<'_>, requests: Vec<Request>) -> Response {
        let mut verdicts = vec![Verdict::Ok; batch.items.len()];
        for mut request in requests {
            match self.settle(batch, &mut request) {
                Response::Delivered(said) => {
                    for (&i, verdict) in request.items.iter().zip(said) {
                        verdicts[i] = verdict;
                    }
                }
                failed => return failed,
            }
        }
        Response::Delivered(verdicts)
    }

    /// One request's outcome, after polling until it settles (a poll
    /// speaks for the items of the request it follows).
    pub(super) fn settle(&self, batch: &Batch<'_>, request: &mut Request) -> Response {
        let mut reading = self.exchange(batch, request);
        let started = Instant::now();
        let mut pause = POLL_FIRST;
        loop {
            let mut next = match reading {
                Reading::Settled(response) => return response,
                Reading::Poll(next) => next,
            };
            if started.elapsed() + pause > self.timeout {
                return Response::Retry {
                    error: format!(
                        "accepted, but not finished after {} s (timeout_secs)",
                        self.timeout.as_secs()
                    ),
                    retry_after: None,
                };
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL_MAX);
            reading = self.exchange(batch, &mut next);
        }
    }

    /// Sends one request and reads what its whole answer means.
    fn exchange(&self, batch: &Batch<'_>, request: &mut Request) -> Reading {
        match self.fetch(request) {
            Ok(a) => read(
                &*self.kind,
                batch,
                request,
                a.status,
                &a.body,
                a.retry_after,
                a.location,
            ),
            Err(failed) => Reading::Settled(failed),
        }
    }

    /// Sends one request and reads the whole answer; no whole answer is
    /// the failure it means.
    fn fetch(&self, request: &mut Request) -> Result<Answer, Response> {
        if self.gzip && request.method == Method::Post {
            let body = &request.body;
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            request.body = enc
                .write_all(body)
                .and_then(|_| enc.finish())
                .expect("gzip into memory");
            request
                .headers
                .push(("Content-Encoding".into(), "gzip".into()));
        }
        self.kind.seal(request);
        let sent = match request.method {
            Method::Post => self
                .prepare(self.agent.post(request.url.as_str()), request)
                .send(&request.body[..]),
            Method::Get => self
                .prepare(self.agent.get(request.url.as_str()), request)
                .call(),
            Method::Delete => self
                .prepare(self.agent.delete(request.url.as_str()), request)
                .call(),
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => return Err(transport_error(e, self.timeout)),
        };
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
        // Only a whole answer counts (guarantee 7): a body cut short,
        // shorter than its Content-Length or still arriving when
        // `timeout_global` runs out is an error here, and the batch is
        // retried whatever the status said. Bytes, not a string: a whole
        // body that is not UTF-8 is still whole.
        let body = match resp
            .body_mut()
            .with_config()
            .limit(ANSWER_LIMIT)
            .read_to_vec()
        {
            Ok(body) => body,
            Err(e) => {
                return Err(Response::Retry {
                    error: incomplete_answer(status, e, self.timeout),
                    retry_after,
                });
            }
        };
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            retry_after,
            location,
        })
    }

    /// The timeouts and the kind's headers on a request of any method.
    fn prepare<B>(
        &self,
        builder: ureq::RequestBuilder<B>,
        request: &Request,
    ) -> ureq::RequestBuilder<B> {
        let timeout = Some(self.timeout);
        let mut builder = builder
            .config()
            .timeout_global(timeout)
            .timeout_connect(timeout)
            .build();
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
    }
}

/// A whole answer to one request.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<i64>,
    pub location: Option<String>,
}

/// What `doctor` makes of a whole answer, unless the kind reads it
/// otherwise ([`Kind::health`]): a 2xx is well, and any other status is a
/// problem with the fix the response table suggests.
pub fn health(kind: &dyn Kind, request: &Request, a: &Answer) -> Health {
    let url = &request.url;
    let status = a.status;
    let said = match excerpt(&a.body) {
        b if b.is_empty() => format!("HTTP {status}"),
        b => format!("HTTP {status}: {b}"),
    };
    let (what, fix) = match status {
        200..=299 => return Health::Ok(format!("{url} answered {status}")),
        401 | 403 => (
            format!("{url} refused the credentials: {said}"),
            kind.credentials_fix(),
        ),
        300..=399 => (
            format!(
                "{url} redirects{}",
                a.location
                    .as_ref()
                    .map(|l| format!(" to {l}"))
                    .unwrap_or_default()
            ),
            "set the target url to the final address".to_string(),
        ),
        404 | 405 => (
            format!("{url} refused us: {said}"),
            "check the target url (and index) in the config".to_string(),
        ),
        408 | 425 | 429 | 500..=599 => (
            format!("{url} did not answer: {said}"),
            "make sure the service is up; feedsync keeps changes queued meanwhile".to_string(),
        ),
        _ => (
            format!("{url} rejected doctor's check: {said}"),
            "check the target url and kind in the config".to_string(),
        ),
    };
    Health::Problem { what, fix }
}

/// `doctor`'s reading of a request that got no whole answer.
fn unanswered(request: &Request, failed: Response) -> Health {
    let url = &request.url;
    match failed {
        Response::Refused { error } => Health::Problem {
            what: format!("{url} refused us: {error}"),
            fix: "check the target's certificate, or the url's host name".into(),
        },
        Response::Retry { error, .. } => Health::Problem {
            what: format!("{url} did not answer: {error}"),
            fix: "make sure the receiver is up and reachable from this machine; feedsync keeps changes queued meanwhile".into(),
        },
        other => Health::Problem {
            what: format!("{url}: {other:?}"),
            fix: "check the target url in the config".into(),
        },
    }
}

/// What a whole answer to `request` means: a 2xx as the kind reads it,
/// anything else as the kind's exceptions or else the response table say.
pub(super) fn read(
    kind: &dyn Kind,
    batch: &Batch<'_>,
    request: &Request,
    status: u16,
    body: &str,
    retry_after: Option<i64>,
    location: Option<String>,
) -> Reading {
    if (200..=299).contains(&status) {
        return kind.delivered(batch, request, body);
    }
    kind.exception(request, status, body)
        .unwrap_or_else(|| Reading::Settled(table(status, body, retry_after, location)))
}

/// What a status other than 2xx means, per DESIGN.md's response table.
fn table(status: u16, body: &str, retry_after: Option<i64>, location: Option<String>) -> Response {
    let described = || {
        let b = excerpt(body);
        if b.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {b}")
        }
    };
    match status {
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
        400..=499 => Response::Rejected {
            error: excerpt(body),
        },
        _ => Response::Retry {
            error: described(),
            retry_after,
        },
    }
}

/// An answer's body as an item's error: trimmed, at most 1 KB.
pub fn excerpt(body: &str) -> String {
    crate::state::clip(body.trim()).to_string()
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

/// Every byte outside `A–Z a–z 0–9 - . _ ~` as `%XX`: what an index name,
/// an id or a query value must be in a URL so that a server which splits
/// the raw path at `/` and reads `+` as a space still sees it whole
/// (RFC 3986's unreserved set; every service kind uses it).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
