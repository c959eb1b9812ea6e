//! The `elasticsearch` and `opensearch` kinds against the loopback fake
//! (`common::fakes::elasticsearch`): the `_bulk` request, per-item
//! answers (`errors: true` with mixed statuses), credentials, an `_id` too
//! long for the service, and `doctor`. The shared delivery suite runs
//! against both kinds in `target_kinds`.

use base64::Engine;
use serde_json::{Value, json};

use crate::common::fakes::elasticsearch::ElasticFake;
use crate::common::*;

const NOW: &str = "2026-11-29T12:00:00Z";

fn rows(skus: &[&str]) -> Vec<Value> {
    skus.iter()
        .map(|s| json!({"sku": s, "price": 10}))
        .collect()
}

/// An installation with feed `p` of `rows` sent to `es` as `kind`, with
/// `extra` lines in `[target]`.
fn setup(es: &ElasticFake, kind: &str, extra: &str, rows: &[Value]) -> Env {
    let mut env = Env::new();
    write_ndjson(&env.path("p.ndjson"), rows);
    env.config(&format!(
        "[target]\nkind = \"{kind}\"\nurl = \"{}\"\n{extra}\n[[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\nmax_deletes = \"100%\"\n",
        es.base_url()
    ));
    env.set_env("FEEDSYNC_NOW", NOW);
    env
}

#[test]
fn a_batch_is_one_bulk_request_of_ndjson_actions() {
    let es = ElasticFake::start();
    let env = setup(
        &es,
        "elasticsearch",
        "index = \"shop-{feed}\"",
        &rows(&["A", "B"]),
    );
    env.run(&["sync"]).assert_code(0);
    write_ndjson(&env.path("p.ndjson"), &rows(&["A"]));
    env.run(&["sync"]).assert_code(0);
    let bulks: Vec<_> = es
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(bulks.len(), 2);
    for r in &bulks {
        assert_eq!(r.path, "/shop-p/_bulk");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("content-encoding"), None, "gzip is off by default");
        assert!(r.header("user-agent").unwrap().starts_with("feedsync/"));
        assert!(r.raw_body.ends_with(b"\n"));
    }
    let first = String::from_utf8(bulks[0].raw_body.clone()).unwrap();
    let lines: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0], json!({"index": {"_id": "A"}}));
    assert_eq!(lines[1], json!({"sku": "A", "price": 10}));
    assert_eq!(lines[2], json!({"index": {"_id": "B"}}));
    assert_eq!(
        String::from_utf8(bulks[1].raw_body.clone()).unwrap(),
        "{\"delete\":{\"_id\":\"B\"}}\n"
    );
    assert_eq!(es.docs("shop-p").keys().collect::<Vec<_>>(), ["A"]);
}

#[test]
fn gzip_is_sent_when_asked_for() {
    let es = ElasticFake::start();
    let env = setup(&es, "elasticsearch", "gzip = true", &rows(&["A"]));
    env.run(&["sync"]).assert_code(0);
    let bulk = es
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(bulk.header("content-encoding"), Some("gzip"));
    assert_eq!(es.docs("p").len(), 1);
}

#[test]
fn errors_true_gives_each_item_its_own_status() {
    let es = ElasticFake::start();
    es.fail_doc(
        "B",
        400,
        "document_parsing_exception",
        "[1:9] failed to parse field [price] of type [long]",
    );
    es.fail_doc(
        "D",
        429,
        "es_rejected_execution_exception",
        "rejected execution of coordinating operation",
    );
    let env = setup(&es, "elasticsearch", "", &rows(&["A", "B", "C", "D"]));
    env.run(&["sync"]).assert_code(1);
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses["A"], "sent");
    assert_eq!(statuses["B"], "failed");
    assert_eq!(statuses["C"], "sent");
    assert_eq!(statuses["D"], "retry");
    let run = env.run(&["items", "--feed", "p", "--status", "failed", "--json"]);
    assert_eq!(
        run.json()["items"][0]["error"],
        "document_parsing_exception: [1:9] failed to parse field [price] of type [long]"
    );
    let run = env.run(&["items", "--feed", "p", "--id", "D", "--json"]);
    assert!(
        run.json()["items"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("es_rejected_execution_exception"),
        "{}",
        run.stdout
    );
    // The 429 is retried; the 400 waits for its data to change.
    es.clear_doc_failures();
    let mut env = env;
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses["D"], "sent");
    assert_eq!(statuses["B"], "failed");
}

#[test]
fn deleting_a_document_already_gone_counts_as_done() {
    let es = ElasticFake::start();
    let env = setup(&es, "elasticsearch", "", &rows(&["A", "B"]));
    env.run(&["sync"]).assert_code(0);
    // Someone emptied the index meanwhile: a new cluster at the same place.
    let fresh = ElasticFake::start();
    env.config(
        &std::fs::read_to_string(env.config_path())
            .unwrap()
            .replace(&es.base_url(), &fresh.base_url()),
    );
    write_ndjson(&env.path("p.ndjson"), &rows(&["A"]));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(fresh.ops("p"), [("delete".to_string(), "B".to_string())]);
    assert!(env.statuses_via_cli("p").values().all(|s| s == "sent"));
}

#[test]
fn an_id_over_512_bytes_fails_alone_and_the_rest_is_delivered() {
    let es = ElasticFake::start();
    let long = "x".repeat(513);
    let env = setup(&es, "elasticsearch", "", &rows(&["A", long.as_str(), "C"]));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(es.docs("p").keys().collect::<Vec<_>>(), ["A", "C"]);
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses[&long], "failed");
    let run = env.run(&["items", "--feed", "p", "--status", "failed", "--json"]);
    let error = run.json()["items"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("512"), "{error}");
}

#[test]
fn credentials_are_sent_as_the_kind_says() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (kind, extra, env_var, value, want) in [
        (
            "elasticsearch",
            "api_key_env = \"ES_KEY\"",
            "ES_KEY",
            "a2V5OnNlY3JldA==",
            "ApiKey a2V5OnNlY3JldA==".to_string(),
        ),
        (
            "opensearch",
            "token_env = \"OS_TOKEN\"",
            "OS_TOKEN",
            "tok",
            "Bearer tok".to_string(),
        ),
        (
            "opensearch",
            "username = \"feedsync\"\npassword_env = \"OS_PASSWORD\"",
            "OS_PASSWORD",
            "pa:ss",
            format!("Basic {}", b64("feedsync:pa:ss")),
        ),
    ] {
        let es = ElasticFake::start();
        es.require_auth(&want);
        let mut env = setup(&es, kind, extra, &rows(&["A"]));
        env.set_env(env_var, value);
        // Secrets never reach the logs, whatever RUST_LOG says.
        env.set_env("RUST_LOG", "trace");
        let run = env.run(&["sync"]);
        run.assert_code(0);
        assert!(!run.stderr.contains(value), "{kind}: a secret was logged");
        assert!(!run.stderr.contains(&want), "{kind}: a secret was logged");
        assert_eq!(es.docs("p").len(), 1, "{kind} {extra}");
        // A wrong credential: the target is refused, the item stays pending.
        write_ndjson(&env.path("p.ndjson"), &rows(&["A", "B"]));
        env.set_env(env_var, "wrong");
        let run = env.run(&["sync"]);
        run.assert_code(4);
        assert!(!run.stderr.contains("wrong"), "a secret was printed");
        assert_eq!(env.statuses_via_cli("p")["B"], "pending");
    }
}

#[test]
fn doctor_reads_the_cluster_info() {
    let es = ElasticFake::start_opensearch();
    let env = setup(&es, "opensearch", "", &rows(&["A"]));
    let run = env.run(&["doctor"]);
    assert!(run.stdout.contains("OpenSearch 2.17.0"), "{}", run.stdout);
    assert!(
        es.requests()
            .iter()
            .all(|r| r.method == "GET" && r.path == "/"),
        "doctor writes nothing"
    );
}

#[test]
fn doctor_calls_a_401_a_problem_and_a_403_a_note() {
    let es = ElasticFake::start();
    es.require_auth("ApiKey right");
    let mut env = setup(
        &es,
        "elasticsearch",
        "api_key_env = \"ES_KEY\"",
        &rows(&["A"]),
    );
    env.set_env("ES_KEY", "wrong");
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(run.stdout.contains("PROBLEM  target p"), "{}", run.stdout);
    assert!(run.stdout.contains("401"), "{}", run.stdout);
    assert!(run.stdout.contains("target.api_key_env"), "{}", run.stdout);

    // An ingest-only key: 403 on GET /, which is only a note.
    env.set_env("ES_KEY", "right");
    es.forbid_info();
    let run = env.run(&["doctor"]);
    assert!(run.stdout.contains("note     target p"), "{}", run.stdout);
    assert!(run.stdout.contains("`monitor`"), "{}", run.stdout);
    assert!(!run.stdout.contains("PROBLEM  target"), "{}", run.stdout);
}

#[test]
fn a_refusal_stops_only_the_feeds_of_the_same_kind_and_url() {
    // A webhook and an Elasticsearch target at the same URL template are
    // two targets: the webhook's refusal (the cluster has no `POST /`)
    // does not stop the Elasticsearch feed.
    let es = ElasticFake::start();
    let mut env = Env::new();
    write_ndjson(&env.path("p.ndjson"), &rows(&["A", "B"]));
    env.config(&format!(
        r#"
[targets.hook]
url = "{url}"
[targets.search]
kind = "elasticsearch"
url = "{url}"
[[feeds]]
name = "w"
source = "p.ndjson"
key = ["sku"]
target = "hook"
[[feeds]]
name = "p"
source = "p.ndjson"
key = ["sku"]
target = "search"
"#,
        url = es.base_url()
    ));
    env.set_env("FEEDSYNC_NOW", NOW);
    env.run(&["sync"]).assert_code(4);
    assert_eq!(env.count_via_cli("w", "pending"), 2);
    assert_eq!(es.docs("p").len(), 2);
    assert_eq!(env.count_via_cli("p", "sent"), 2);
}

#[test]
fn a_feed_may_pick_its_own_kind() {
    // `[target]` is a webhook; this feed sends to a cluster instead.
    let es = ElasticFake::start();
    let hook = Receiver::start();
    let env = Env::new();
    write_ndjson(&env.path("p.ndjson"), &rows(&["A"]));
    env.config(&format!(
        "[target]\nurl = \"{}\"\n[[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\nkind = \"elasticsearch\"\nurl = \"{}\"\nindex = \"catalog\"\n[[feeds]]\nname = \"q\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\n",
        hook.url("/{feed}"),
        es.base_url()
    ));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(es.docs("catalog").len(), 1);
    assert_eq!(hook.catalog("q").len(), 1);
    assert!(hook.catalog("p").is_empty());
}
