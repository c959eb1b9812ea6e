//! Every target kind behind one test interface, so one delivery suite runs
//! against each (as litestream runs one suite against every replica
//! client). A kind is a [`TargetKind`] variant plus its fake: something
//! feedsync can deliver to that answers "what was sent" and "what do you
//! hold" the same way for every kind. Adding a kind: one variant, its arm
//! in [`TargetKind::start`] and [`TargetKind::all`], its line in
//! `per_target_kind!`, and the fake.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fakes::elasticsearch::ElasticFake;
use super::fakes::meilisearch::MeiliFake;
use super::{Behavior, Env, Receiver};

/// A kind of target feedsync can deliver to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// `file:PATH`: NDJSON envelopes appended to a file.
    File,
    /// An `http://` webhook, served by the loopback [`Receiver`].
    Webhook,
    /// `kind = "elasticsearch"`, served by [`ElasticFake`].
    Elasticsearch,
    /// `kind = "opensearch"`: the same protocol, OpenSearch's `GET /`.
    Opensearch,
    /// `kind = "meilisearch"`, served by [`MeiliFake`].
    Meilisearch,
    /// `kind = "typesense"`, served by the fake Typesense (collection `p`
    /// created, as Typesense needs it before the first write).
    Typesense,
    /// `kind = "algolia"`, served by the fake Algolia.
    Algolia,
}

impl TargetKind {
    /// Every kind, in the order the shared suite runs them.
    pub fn all() -> [TargetKind; 7] {
        [
            TargetKind::File,
            TargetKind::Webhook,
            TargetKind::Elasticsearch,
            TargetKind::Opensearch,
            TargetKind::Meilisearch,
            TargetKind::Typesense,
            TargetKind::Algolia,
        ]
    }

    /// Starts a fake of this kind for an installation in `env`.
    pub fn start(self, env: &Env) -> Box<dyn TargetFake> {
        match self {
            TargetKind::File => Box::new(FileTarget::new(env.path("target.ndjson"))),
            TargetKind::Webhook => Box::new(Receiver::start()),
            TargetKind::Elasticsearch => Box::new(ElasticFake::start()),
            TargetKind::Opensearch => Box::new(ElasticFake::start_opensearch()),
            TargetKind::Meilisearch => Box::new(MeiliFake::start()),
            TargetKind::Typesense => {
                let ts = super::fakes::typesense::Typesense::start(SERVICE_KEY);
                ts.create_collection("p", &[]);
                Box::new(ts)
            }
            TargetKind::Algolia => Box::new(super::fakes::algolia::Algolia::start(
                ALGOLIA_APP,
                SERVICE_KEY,
            )),
        }
    }
}

/// A running target of some kind, seen from the test.
pub trait TargetFake {
    /// The `url` to put in `[target]`.
    fn url(&self) -> String;
    /// (op, id) of every item of `feed` it has taken, in order.
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)>;
    /// id → data it holds for `feed` after applying everything it took.
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value>;
    /// Makes the next deliveries fail in a way feedsync retries.
    fn break_it(&self);
    /// Undoes `break_it`.
    fn heal(&self);
    /// The `[target]` keys besides `url` this kind needs (`kind`, …).
    fn target_keys(&self) -> toml::Table {
        toml::Table::new()
    }
    /// Answers the next deliveries with 429 and `Retry-After: <secs>`.
    fn throttle(&self, _secs: u64) {
        panic!("this fake cannot throttle")
    }
    /// Refuses item `id` for good, as the service refuses a bad record
    /// (the rest of its batch is fine); `false` when the kind cannot.
    fn reject_item(&self, _id: &str) -> bool {
        false
    }
    /// The environment the credentials of `target_keys` name: (variable,
    /// value) pairs the installation must set.
    fn secrets(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl TargetFake for Receiver {
    fn url(&self) -> String {
        Receiver::url(self, "/{feed}")
    }
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        Receiver::sent_ops(self, feed)
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        Receiver::mirror(self, feed)
    }
    fn break_it(&self) {
        self.set(Behavior::Status(503, "down for maintenance".into()));
    }
    fn heal(&self) {
        self.set(Behavior::Ok);
    }
    fn throttle(&self, secs: u64) {
        self.set(Behavior::RetryAfter(429, secs.to_string()));
    }
    /// A 400 for any batch holding it: feedsync splits to isolate it.
    fn reject_item(&self, id: &str) -> bool {
        self.set(Behavior::RejectIds(vec![id.to_string()]));
        true
    }
}

/// A `file:` target: the NDJSON file feedsync appends envelopes to.
pub struct FileTarget {
    pub path: PathBuf,
}

impl FileTarget {
    pub fn new(path: PathBuf) -> FileTarget {
        FileTarget { path }
    }
}

impl TargetFake for FileTarget {
    fn url(&self) -> String {
        format!("file:{}", self.path.display())
    }
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        if !self.path.is_file() {
            return Vec::new();
        }
        file_envelopes(&self.path, 0)
            .iter()
            .filter(|e| e["feed"] == feed)
            .flat_map(|e| e["items"].as_array().cloned().unwrap_or_default())
            .map(|i| (i["op"].as_str().unwrap_or("").to_string(), item_id(&i)))
            .collect()
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        if !self.path.is_file() {
            return BTreeMap::new();
        }
        file_mirror(&self.path, 0, feed)
    }
    /// A folder where the file should be: every write fails.
    fn break_it(&self) {
        std::fs::create_dir_all(&self.path).unwrap();
    }
    fn heal(&self) {
        std::fs::remove_dir(&self.path).unwrap();
    }
}

fn item_id(item: &Value) -> String {
    match &item["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every envelope in a file target from byte `skip` on, read as a
/// line-by-line reader would; panics naming the line when one is not a
/// whole envelope, or when the file ends mid-line.
pub fn file_envelopes(path: &Path, skip: usize) -> Vec<Value> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(skip as u64)).unwrap();
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).unwrap();
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "the file ends mid-line: …{}",
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(80)..])
    );
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "line {} is not a whole envelope ({e}): {}…",
                    n + 1,
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                )
            })
        })
        .collect()
}

/// What a reader applying a file target's envelopes (from byte `skip` on)
/// in order holds for `feed`: id → data, the receiver's `mirror` shape.
pub fn file_mirror(path: &Path, skip: usize, feed: &str) -> BTreeMap<String, Value> {
    let mut got = BTreeMap::new();
    for envelope in file_envelopes(path, skip) {
        if envelope["feed"] != feed {
            continue;
        }
        for item in envelope["items"].as_array().into_iter().flatten() {
            match item["op"].as_str() {
                Some("delete") => {
                    got.remove(&item_id(item));
                }
                _ => {
                    got.insert(item_id(item), item["data"].clone());
                }
            }
        }
    }
    got
}

/// One `#[test]` per target kind for each named `fn NAME(kind: TargetKind)`
/// in the calling module: `file::NAME`, `webhook::NAME`, …
#[macro_export]
macro_rules! per_target_kind {
    ($($test:ident),* $(,)?) => {
        $crate::per_target_kind!(@kind file File [$($test),*]);
        $crate::per_target_kind!(@kind webhook Webhook [$($test),*]);
        $crate::per_target_kind!(@kind elasticsearch Elasticsearch [$($test),*]);
        $crate::per_target_kind!(@kind opensearch Opensearch [$($test),*]);
        $crate::per_target_kind!(@kind meilisearch Meilisearch [$($test),*]);
        $crate::per_target_kind!(@kind typesense Typesense [$($test),*]);
        $crate::per_target_kind!(@kind algolia Algolia [$($test),*]);
    };
    (@kind $module:ident $kind:ident [$($test:ident),*]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::common::TargetKind::$kind)
                }
            )*
        }
    };
}

/// The fake Typesense as a target of the shared suite: documents without
/// the `id` feedsync sets (the suite compares them with the export's rows).
impl TargetFake for super::fakes::typesense::Typesense {
    fn url(&self) -> String {
        super::fakes::typesense::Typesense::url(self)
    }
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        self.ops(feed)
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        without_field(self.documents(feed), "id")
    }
    fn target_keys(&self) -> toml::Table {
        toml::Table::from_iter([
            ("kind".to_string(), "typesense".into()),
            ("api_key_env".to_string(), SERVICE_KEY_ENV.into()),
        ])
    }
    fn secrets(&self) -> Vec<(String, String)> {
        vec![(SERVICE_KEY_ENV.into(), SERVICE_KEY.into())]
    }
    fn throttle(&self, secs: u64) {
        self.set(Some(super::fakes::typesense::Fault::RetryAfter(secs)));
    }
    /// A failure line for that document in every import's 200.
    fn reject_item(&self, id: &str) -> bool {
        self.fail_document(id, 400, "Field `price` must be an int32.", None);
        true
    }
    fn break_it(&self) {
        self.set(Some(super::fakes::typesense::Fault::Status(
            503,
            "Not Ready or Lagging".into(),
        )));
    }
    fn heal(&self) {
        self.clear_faults();
    }
}

/// The fake Algolia as a target of the shared suite: records without the
/// `objectID` feedsync sets.
impl TargetFake for super::fakes::algolia::Algolia {
    fn url(&self) -> String {
        super::fakes::algolia::Algolia::url(self)
    }
    fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        self.ops(feed)
    }
    fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        without_field(self.records(feed), "objectID")
    }
    fn target_keys(&self) -> toml::Table {
        toml::Table::from_iter([
            ("kind".to_string(), "algolia".into()),
            ("app_id".to_string(), ALGOLIA_APP.into()),
            ("api_key_env".to_string(), SERVICE_KEY_ENV.into()),
        ])
    }
    fn secrets(&self) -> Vec<(String, String)> {
        vec![(SERVICE_KEY_ENV.into(), SERVICE_KEY.into())]
    }
    fn throttle(&self, secs: u64) {
        self.set(Some(super::fakes::algolia::Fault::RetryAfter(secs)));
    }
    /// A 400 "too big" for any batch holding it: feedsync splits to
    /// isolate it.
    fn reject_item(&self, id: &str) -> bool {
        self.refuse_record(id);
        true
    }
    fn break_it(&self) {
        self.set(Some(super::fakes::algolia::Fault::Status(
            503,
            "Service Unavailable".into(),
        )));
    }
    fn heal(&self) {
        self.clear_faults();
    }
}

/// A service's documents as the export's rows: the id field feedsync
/// sets removed, after checking it holds the id.
fn without_field(docs: BTreeMap<String, Value>, field: &str) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|(id, mut doc)| {
            let set = doc.as_object_mut().and_then(|d| d.remove(field));
            assert_eq!(set, Some(Value::String(id.clone())), "{field} of {id}");
            (id, doc)
        })
        .collect()
}

/// The service fakes' key in the shared suite, and the variable naming it.
const SERVICE_KEY: &str = "shared-suite-key";
const SERVICE_KEY_ENV: &str = "FEEDSYNC_TEST_SERVICE_KEY";
/// The fake Algolia's application id in the shared suite.
const ALGOLIA_APP: &str = "SHAREDAPP";
