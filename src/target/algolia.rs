//! The `algolia` kind (DESIGN.md, "Target kinds"): an Algolia index,
//! written through its batch endpoint.
//!
//! One batch is one `POST /1/indexes/{index}/batch` holding upserts
//! (`updateObject`, the record with its `objectID`) and deletes
//! (`deleteObject`) in batch order, which Algolia applies atomically and
//! in order. A 2xx with a `taskID` therefore acknowledges every item; a
//! 400 (a record over the plan's size limit, say) rejects the whole batch,
//! and the shared response table splits it to find the record.

use serde_json::Value;

use super::http::excerpt;
use super::http::percent_encode;
use super::typesense::{document, key_variable};
use super::{Batch, Health, Kind, Method, Reading, Request, Response, Verdict};
use crate::config::{Secrets, TargetSettings};
use crate::state::OutItem;

/// An Algolia index, its application and the key that writes to it.
pub struct Algolia {
    /// `{url}/1/indexes/{index}`, the index name percent-encoded.
    index_url: String,
    index: String,
    app_id: String,
    api_key: Option<String>,
    /// The config table that names the key, and the variable it names,
    /// for doctor's fixes.
    table: String,
    key_env: Option<String>,
}

impl Algolia {
    /// The target `settings` name, at `url` (`{feed}` replaced; the config
    /// makes it `https://{app_id}.algolia.net` unless set).
    pub fn new(url: &str, settings: &TargetSettings, secrets: &Secrets) -> Algolia {
        let mut al = Algolia::at(
            url,
            settings.index.as_deref().unwrap_or_default(),
            settings.app_id.as_deref().unwrap_or_default(),
            secrets.api_key.as_deref(),
        );
        al.table = settings.secrets.table.clone();
        al.key_env = settings.secrets.api_key_env.clone();
        al
    }

    /// Index `index` of application `app_id`, served at `url`.
    pub fn at(url: &str, index: &str, app_id: &str, api_key: Option<&str>) -> Algolia {
        Algolia {
            index_url: format!(
                "{}/1/indexes/{}",
                url.trim_end_matches('/'),
                percent_encode(index)
            ),
            index: index.to_string(),
            app_id: app_id.to_string(),
            api_key: api_key.map(str::to_string),
            table: "target".into(),
            key_env: None,
        }
    }

    fn request(&self, method: Method, url: String, role: &'static str) -> Request {
        let req = Request::new(method, url, role)
            .header("X-Algolia-Application-Id", self.app_id.as_str());
        match &self.api_key {
            Some(key) => req.header("X-Algolia-API-Key", key.as_str()),
            None => req,
        }
    }
}

impl Kind for Algolia {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        if batch.items.is_empty() {
            return Vec::new();
        }
        let mut req = self
            .request(Method::Post, format!("{}/batch", self.index_url), "batch")
            .header("Content-Type", "application/json");
        let size: usize = batch
            .items
            .iter()
            .map(|i| i.data.as_deref().map_or(0, <[u8]>::len) + i.id.len() + 64)
            .sum();
        let mut body = Vec::with_capacity(size + 16);
        body.extend_from_slice(b"{\"requests\":[");
        for (n, item) in batch.items.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            if item.deleted {
                body.extend_from_slice(b"{\"action\":\"deleteObject\",\"body\":{\"objectID\":");
                serde_json::to_writer(&mut body, &item.id).expect("writing to memory");
                body.extend_from_slice(b"}}");
            } else {
                body.extend_from_slice(b"{\"action\":\"updateObject\",\"body\":");
                body.extend_from_slice(&document(item.data.as_deref(), "objectID", &item.id));
                body.push(b'}');
            }
        }
        body.extend_from_slice(b"]}");
        req.body = body;
        req.items = (0..batch.items.len()).collect();
        vec![req]
    }

    /// A batch Algolia accepted (it answers its `taskID`) is applied whole
    /// and in order.
    fn delivered(&self, _batch: &Batch<'_>, request: &Request, body: &str) -> Reading {
        if request.role == "batch" {
            let said = serde_json::from_str::<Value>(body).ok();
            if !said.is_some_and(|v| v.get("taskID").is_some_and(Value::is_u64)) {
                return Reading::Settled(Response::Retry {
                    error: format!("unexpected answer from Algolia: {}", excerpt(body)),
                    retry_after: None,
                });
            }
        }
        Reading::Settled(Response::Delivered(vec![Verdict::Ok; request.items.len()]))
    }

    /// Algolia takes no record without an `objectID`, and an empty one is
    /// none.
    fn unfit(&self, item: &OutItem) -> Option<String> {
        item.id
            .is_empty()
            .then(|| "Algolia cannot take an empty objectID".to_string())
    }

    fn item_bytes(&self, item: &OutItem, data: usize) -> usize {
        // `{"action":"updateObject","body":` + data with `"objectID":"…",`
        // + `}` and a comma, or the whole delete request.
        let id = 2 + 6 * item.id.len();
        if item.deleted {
            48 + id
        } else {
            47 + id + data
        }
    }

    fn frame_bytes(&self, _feed: &str) -> usize {
        // `{"requests":[` … `]}`
        15
    }

    /// `GET …/settings`: reads the index, writes nothing.
    fn probe(&self, _feed: &str) -> Vec<Request> {
        vec![self.request(
            Method::Get,
            format!("{}/settings", self.index_url),
            "settings",
        )]
    }

    fn health(&self, request: &Request, status: u16, body: &str) -> Option<Health> {
        let index = &self.index;
        match status {
            200..=299 => Some(Health::Ok(format!(
                "{} answered: index `{index}` exists",
                request.url
            ))),
            // Algolia creates an index on its first write.
            404 => Some(Health::Note {
                what: format!(
                    "index `{index}` does not exist yet at {} ({})",
                    request.url,
                    excerpt(body)
                ),
                fix: Some("nothing to do: Algolia creates it on the first sync".into()),
            }),
            _ => None,
        }
    }

    /// Algolia answers a wrong key and a key without the ACL alike (403).
    fn credentials_fix(&self) -> String {
        let t = &self.table;
        let rights = format!(
            "the ACLs `addObject` and `deleteObject` on index `{}`, and `settings` for doctor's check",
            self.index
        );
        match self.api_key {
            None => format!(
                "Algolia wants an API key: set {t}.api_key_env to the name of an environment variable holding one with {rights}"
            ),
            Some(_) => format!(
                "Algolia answers a wrong key and a key without the rights alike: check {t}.app_id (`{}`) and the key in {}, and that the key has {rights}",
                self.app_id,
                key_variable(&self.key_env, t)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::SyncKind;
    use crate::target::webhook::tests::item;

    /// `max_batch_bytes` relies on it: the estimate never falls short.
    #[test]
    fn item_bytes_and_frame_bytes_cover_the_body() {
        let al = Algolia::at("http://h:1", "p", "APP", None);
        let items = [item("A", false), item("a\"b\u{1}", true), item("é", false)];
        let batch = Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let body = &al.requests(&batch)[0].body;
        let estimate: usize = items
            .iter()
            .map(|i| al.item_bytes(i, i.data.as_deref().map_or(0, <[u8]>::len)))
            .sum();
        assert!(estimate + al.frame_bytes("p") >= body.len());
    }

    #[test]
    fn one_batch_request_holds_upserts_and_deletes_in_order() {
        let al = Algolia::at("https://APP.algolia.net/", "shop/eu", "APP", Some("key"));
        let items = [item("A", false), item("B/1", true), item("C", false)];
        let batch = Batch {
            feed: "p",
            sync: SyncKind::Partial,
            items: &items,
            nonce: None,
        };
        let reqs = al.requests(&batch);
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            reqs[0].url,
            "https://APP.algolia.net/1/indexes/shop%2Feu/batch"
        );
        assert_eq!(reqs[0].items, [0, 1, 2]);
        for h in [
            ("X-Algolia-Application-Id", "APP"),
            ("X-Algolia-API-Key", "key"),
        ] {
            assert!(reqs[0].headers.contains(&(h.0.into(), h.1.into())), "{h:?}");
        }
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        let r = body["requests"].as_array().unwrap();
        assert_eq!(r[0]["action"], "updateObject");
        assert_eq!(r[0]["body"]["objectID"], "A");
        assert_eq!(r[0]["body"]["price"], "1");
        assert_eq!(
            r[1],
            serde_json::json!({"action": "deleteObject", "body": {"objectID": "B/1"}})
        );
        assert_eq!(r[2]["body"]["objectID"], "C");

        match al.delivered(
            &batch,
            &reqs[0],
            r#"{"taskID":7,"objectIDs":["A","B/1","C"]}"#,
        ) {
            Reading::Settled(Response::Delivered(v)) => assert_eq!(v, vec![Verdict::Ok; 3]),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            al.delivered(&batch, &reqs[0], "OK"),
            Reading::Settled(Response::Retry { .. })
        ));
    }
}
