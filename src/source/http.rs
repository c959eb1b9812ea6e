//! An HTTP(S) source: a GET with the last read's validators, so an
//! unchanged export (a 304) costs nothing, and the source's own
//! credentials. The whole exchange, body included, is bounded by the
//! deadline through ureq's global timeout.

use super::{Context, Deadline, End, Kind, Opened, Source, Validators};
use crate::config::{Feed, Format};
use crate::error::{Error, Result};

/// A feed whose `source` is an http(s):// URL.
pub struct HttpSource<'a> {
    pub url: &'a str,
}

impl Kind for HttpSource<'_> {
    fn open(&self, feed: &Feed, cx: &Context<'_>, deadline: Deadline) -> Result<Opened> {
        let url = self.url;
        let timeout = Some(feed.target.timeout.max(std::time::Duration::from_secs(30)));
        let mut req = cx
            .agent
            .get(url)
            .config()
            .max_redirects(5)
            // Counts from now to the body's last byte, so a silent peer is cut
            // off at the deadline, not at the next per-read timeout.
            .timeout_global(Some(deadline.remaining()))
            .timeout_connect(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(timeout)
            .build();
        if let Some(v) = &cx.validators {
            if let Some(tag) = &v.etag {
                req = req.header("If-None-Match", tag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header("If-Modified-Since", lm);
            }
        }
        if let Some(var) = &feed.source_token_env {
            req = req.header("Authorization", format!("Bearer {}", secret(var, feed)?));
        }
        if let Some(var) = &feed.source_api_key_env {
            req = req.header(feed.source_api_key_header.as_str(), secret(var, feed)?);
        }
        let mut resp = req.call().map_err(|e| {
            if deadline.passed() {
                deadline.error(url)
            } else {
                Error::source(format!("{url}: {e}"))
            }
        })?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(Opened::Unchanged);
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if !(200..300).contains(&status) {
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            if deadline.passed() {
                return Err(deadline.error(url));
            }
            let excerpt: String = body.trim().chars().take(300).collect();
            return Err(Error::source(format!("{url}: HTTP {status}: {excerpt}")));
        }
        let content_type = header("content-type").unwrap_or_default();
        let format = feed
            .format
            .or_else(|| format_from_content_type(&content_type))
            .ok_or_else(|| {
                Error::source(format!(
                    "{url}: cannot tell the format from the URL or the content type `{content_type}`; set `format`"
                ))
            })?;
        let validators = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        let size = header("content-length").and_then(|v| v.parse().ok());
        let reader = resp.into_body().into_reader();
        Ok(Opened::Stream(Source {
            reader: deadline.reader(reader),
            format,
            size,
            end: End::Validators(validators),
            file: None,
        }))
    }
}

fn secret(var: &str, feed: &Feed) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::config(format!(
            "environment variable {var} (named by feeds.{}) is not set or empty",
            feed.name
        ))),
    }
}

/// The format a `Content-Type` names, if it names one we read.
pub fn format_from_content_type(ct: &str) -> Option<Format> {
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Some(Format::Ndjson),
        "application/json" | "text/json" => Some(Format::Json),
        "text/csv" | "application/csv" => Some(Format::Csv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            format_from_content_type("application/x-ndjson; charset=utf-8"),
            Some(Format::Ndjson)
        );
        assert_eq!(format_from_content_type("text/csv"), Some(Format::Csv));
        assert_eq!(
            format_from_content_type("application/json"),
            Some(Format::Json)
        );
        assert_eq!(format_from_content_type("text/html"), None);
    }
}
