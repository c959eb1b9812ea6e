//! Heartbeat pings in the healthchecks.io convention, which Cronitor,
//! Uptime Kuma push monitors and Better Stack heartbeats understand too:
//! `GET {url}/start` when work starts, `POST {url}` with the summary when it
//! went well, `POST {url}/fail` with the summary and the first error when
//! it did not. The service alerts when pings stop or report a failure.
//!
//! Monitoring must never break what it monitors: a ping that fails is a
//! warning, and changes neither the exit code nor the state. The URL
//! identifies the check, so it is a secret: it is read from the
//! environment, and no message shows it (they name the variable).

use std::io::Read;
use std::time::Duration;

use crate::config::Config;

/// How long one try may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries per ping.
const TRIES: usize = 2;
/// The longest body sent; healthchecks.io keeps 100 KB of it.
const MAX_BODY: usize = 10_000;

/// Where pings go: the URL from the variable `[notify] ping_url_env` names.
pub struct Pinger {
    url: String,
    var: String,
    agent: ureq::Agent,
}

/// Written by hand so that the URL can never be logged.
impl std::fmt::Debug for Pinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pinger {{ var: {}, .. }}", self.var)
    }
}

/// What is wrong with the ping URL's variable, naming it: unset or empty,
/// or not an http(s) URL.
pub fn read_url(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if v.starts_with("http://") || v.starts_with("https://") => {
            Ok(v.trim_end_matches('/').to_string())
        }
        Ok(v) if !v.is_empty() => Err(format!(
            "environment variable {var} (named by notify.ping_url_env) does not hold an http:// or https:// URL"
        )),
        _ => Err(format!(
            "environment variable {var} (named by notify.ping_url_env) is not set or empty"
        )),
    }
}

impl Pinger {
    /// A pinger for `url`, read from the variable `var`.
    pub fn new(var: &str, url: String) -> Pinger {
        Pinger {
            url,
            var: var.to_string(),
            agent: crate::target::agent(),
        }
    }

    /// The pinger `[notify]` asks for, or None. A variable that is unset
    /// or holds no URL is a warning (no pings are sent), not an error: the
    /// jobs still run, and the missing pings make the service alert.
    pub fn from_config(config: &Config) -> Option<Pinger> {
        let var = config.ping_url_env.as_deref()?;
        match read_url(var) {
            Ok(url) => Some(Pinger::new(var, url)),
            Err(e) => {
                log::warn!("{e}; no heartbeat pings are sent");
                None
            }
        }
    }

    /// `GET {url}/start`: work has started.
    pub fn start(&self) {
        self.ping("start", None);
    }

    /// The end of the work: `POST {url}` with `summary` when `error` is
    /// None, else `POST {url}/fail` with the summary and the error.
    pub fn finish(&self, summary: &str, error: Option<&str>) {
        match error {
            None => self.ping("success", Some(summary.to_string())),
            Some(e) => self.ping("fail", Some(format!("{summary}\n{e}"))),
        }
    }

    /// One ping, tried at most twice; a failure is a warning.
    fn ping(&self, what: &str, body: Option<String>) {
        let url = match what {
            "start" => format!("{}/start", self.url),
            "fail" => format!("{}/fail", self.url),
            _ => self.url.clone(),
        };
        let mut last = String::new();
        for _ in 0..TRIES {
            match self.try_once(&url, body.as_deref()) {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        log::warn!(
            "heartbeat ping ({what}) to the URL in {} failed: {last}",
            self.var
        );
    }

    fn try_once(&self, url: &str, body: Option<&str>) -> Result<(), String> {
        let sent = match body {
            None => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(TIMEOUT))
                .build()
                .call(),
            Some(body) => self
                .agent
                .post(url)
                .config()
                .timeout_global(Some(TIMEOUT))
                .build()
                .content_type("text/plain; charset=utf-8")
                .send(clip(body).as_bytes()),
        };
        answered(sent, &self.url)
    }

    /// `HEAD {url}`, for `doctor`: whether the URL answers, without
    /// counting as a ping.
    pub fn probe(&self) -> Result<(), String> {
        let sent = self
            .agent
            .head(&self.url)
            .config()
            .timeout_global(Some(TIMEOUT))
            .build()
            .call();
        answered(sent, &self.url)
    }
}

/// Ok for a 2xx; otherwise why not, with the URL left out.
fn answered(
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> Result<(), String> {
    match sent {
        Ok(mut resp) if resp.status().is_success() => {
            // Read the (short) answer so the connection can be reused.
            let _ = resp
                .body_mut()
                .as_reader()
                .take(64 * 1024)
                .read_to_end(&mut Vec::new());
            Ok(())
        }
        Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
        Err(e) => Err(describe(e, url)),
    }
}

/// A transport error in words that cannot hold the URL.
fn describe(e: ureq::Error, url: &str) -> String {
    let text = match e {
        ureq::Error::Timeout(_) => format!("no answer within {} s", TIMEOUT.as_secs()),
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::BadUri(_) => "not a valid URL".to_string(),
        e => e.to_string(),
    };
    // Whatever an error's text holds, the secret URL is not shown.
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    text.replace(url, "***").replace(host, "***")
}

/// `body`, cut to [`MAX_BODY`] bytes at a character boundary.
fn clip(body: &str) -> &str {
    if body.len() <= MAX_BODY {
        return body;
    }
    let mut end = MAX_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_body_is_cut_at_a_character() {
        let long = "é".repeat(MAX_BODY);
        let cut = clip(&long);
        assert!(cut.len() <= MAX_BODY && cut.len() >= MAX_BODY - 1);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn errors_never_show_the_url() {
        let url = "https://hc-ping.example/0b1e-secret";
        let e = ureq::Error::BadUri(format!("{url}/start is bad"));
        assert!(!describe(e, url).contains("secret"));
        let e = ureq::Error::Io(std::io::Error::other(format!("{url}: refused")));
        let text = describe(e, url);
        assert!(
            !text.contains("secret") && !text.contains("hc-ping"),
            "{text}"
        );
    }
}
