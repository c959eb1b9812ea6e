//! The target keys of DESIGN.md's "Target kinds": `kind` and the keys
//! each kind takes, named targets (`[targets.NAME]`, `target = "NAME"`)
//! with their own secrets, `max_batch_bytes`, and Standard Webhooks
//! signing. Each config breach is exit 2 naming the key and the file, and
//! changes nothing; config text stays literal here, since the text is what
//! is under test.

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::common::*;

/// An installation whose config is `text`, with a three-item feed `p`
/// (and `q`, the same catalog) in `p.ndjson`.
fn env_with(text: &str) -> Env {
    let env = Env::new();
    write_ndjson(
        &env.path("p.ndjson"),
        &[
            json!({"sku": "A", "price": 1}),
            json!({"sku": "B", "price": 2}),
            json!({"sku": "C", "price": 3}),
        ],
    );
    env.config(text);
    env
}

const FEED: &str = r#"
[[feeds]]
name = "p"
source = "p.ndjson"
key = ["sku"]
"#;

/// `text` is refused by `sync` with exit 2, the message naming each of
/// `needles` and the file, and nothing is written.
#[track_caller]
fn refused(text: &str, needles: &[&str]) -> Run {
    let env = env_with(text);
    let run = env.run(&["sync"]);
    run.assert_code(2);
    for n in needles.iter().chain(&["feedsync.toml"]) {
        assert!(run.stderr.contains(n), "`{n}` not in: {}", run.stderr);
    }
    assert!(!env.state_path().exists(), "a config error writes nothing");
    run
}

#[test]
fn an_unknown_kind_is_refused() {
    refused(
        &format!("[target]\nkind = \"solr\"\nurl = \"http://127.0.0.1:9\"\n{FEED}"),
        &["kind", "solr"],
    );
}

#[test]
fn index_is_only_for_the_service_kinds() {
    refused(
        &format!("[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\nindex = \"shop\"\n{FEED}"),
        &["target.index", "webhook"],
    );
    // From a feed, the feed's key is named.
    refused(
        &format!("[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n{FEED}index = \"shop\"\n"),
        &["feeds.p.index"],
    );
}

#[test]
fn app_id_is_required_for_algolia_and_refused_elsewhere() {
    refused(
        &format!(
            "[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\napp_id = \"ABC\"\n{FEED}"
        ),
        &["target.app_id", "algolia"],
    );
    refused(
        &format!("[target]\nkind = \"algolia\"\napi_key_env = \"K\"\n{FEED}"),
        &["target.app_id", "required"],
    );
}

#[test]
fn id_field_is_only_for_meilisearch() {
    refused(
        &format!(
            "[target]\nkind = \"typesense\"\nurl = \"http://127.0.0.1:9\"\nid_field = \"pk\"\n{FEED}"
        ),
        &["target.id_field", "meilisearch"],
    );
}

#[test]
fn signing_keys_are_only_for_webhooks() {
    for key in [
        "signature = \"standard\"",
        "signing_secret_env = \"S\"",
        "api_key_header = \"x-key\"",
    ] {
        let name = key.split(' ').next().unwrap();
        refused(
            &format!(
                "[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\n{key}\n{FEED}"
            ),
            &[&format!("target.{name}"), "webhook"],
        );
    }
}

#[test]
fn a_service_kind_takes_its_own_credentials_and_only_one() {
    refused(
        &format!(
            "[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"T\"\napi_key_env = \"K\"\n{FEED}"
        ),
        &["target.token_env", "target.api_key_env", "one credential"],
    );
    // OpenSearch has no ApiKey scheme.
    refused(
        &format!(
            "[target]\nkind = \"opensearch\"\nurl = \"http://127.0.0.1:9\"\napi_key_env = \"K\"\n{FEED}"
        ),
        &["target.api_key_env", "opensearch"],
    );
    refused(
        &format!(
            "[target]\nkind = \"meilisearch\"\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"T\"\n{FEED}"
        ),
        &["target.token_env", "meilisearch"],
    );
    // Basic authentication takes both halves.
    refused(
        &format!(
            "[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\nusername = \"feedsync\"\n{FEED}"
        ),
        &["target.username", "target.password_env"],
    );
    refused(
        &format!(
            "[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\nusername = \"u\"\npassword_env = \"P\"\n{FEED}"
        ),
        &["target.username", "webhook"],
    );
}

#[test]
fn index_names_the_service_would_refuse_are_config_errors() {
    // Elasticsearch: lower case only, after `{feed}` is replaced.
    let upper = FEED.replace("name = \"p\"", "name = \"Products\"");
    refused(
        &format!("[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\n{upper}"),
        &["index", "Products", "lower case"],
    );
    for bad in ["shop,eu", "_shop", "a b", ".."] {
        refused(
            &format!(
                "[target]\nkind = \"opensearch\"\nurl = \"http://127.0.0.1:9\"\nindex = \"{bad}\"\n{FEED}"
            ),
            &["target.index", bad],
        );
    }
    refused(
        &format!(
            "[target]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9\"\nindex = \"{}\"\n{FEED}",
            "x".repeat(256)
        ),
        &["target.index", "255 bytes"],
    );
    // Meilisearch: A-Z a-z 0-9 - _ only.
    let dotted = FEED.replace("name = \"p\"", "name = \"p.v2\"");
    refused(
        &format!("[target]\nkind = \"meilisearch\"\nurl = \"http://127.0.0.1:9\"\n{dotted}"),
        &["index", "p.v2", "meilisearch"],
    );
}

#[test]
fn max_batch_bytes_is_at_least_one() {
    refused(
        &format!("[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\nmax_batch_bytes = 0\n{FEED}"),
        &["target.max_batch_bytes"],
    );
}

#[test]
fn a_feed_naming_an_unknown_target_is_refused() {
    refused(
        &format!(
            "[targets.search]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n{FEED}target = \"serch\"\n"
        ),
        &["feeds.p.target", "serch", "search"],
    );
}

#[test]
fn a_named_target_no_feed_uses_is_still_checked() {
    refused(
        &format!(
            "[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n[targets.old]\nurl = \"http://127.0.0.1:9/{{feed}}\"\nindex = \"x\"\n{FEED}"
        ),
        &["targets.old.index"],
    );
    refused(
        &format!(
            "[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n[targets.old]\nbatch_size = 5\n{FEED}"
        ),
        &["targets.old.url"],
    );
    refused(
        &format!(
            "[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n[targets.old]\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"\"\n{FEED}"
        ),
        &["targets.old.token_env"],
    );
}

/// Two feeds with the same source, each naming its own target: one
/// catalog in two places, each with its own state and its own secret.
fn two_services(a: &Receiver, b: &Receiver) -> String {
    format!(
        r#"
[targets.search]
url = "{}"
token_env = "SEARCH_TOKEN"
batch_size = 2

[targets.marketplace]
url = "{}"
api_key_env = "MARKET_KEY"
api_key_header = "x-market-key"

[[feeds]]
name = "p"
source = "p.ndjson"
key = ["sku"]
target = "search"

[[feeds]]
name = "q"
source = "p.ndjson"
key = ["sku"]
target = "marketplace"
batch_size = 1
"#,
        a.url("/{feed}"),
        b.url("/{feed}")
    )
}

#[test]
fn one_catalog_goes_to_two_named_targets_each_with_its_own_secret() {
    let (a, b) = (Receiver::start(), Receiver::start());
    let mut env = env_with(&two_services(&a, &b));
    env.set_env("SEARCH_TOKEN", "search-secret");
    env.set_env("MARKET_KEY", "market-secret");
    env.run(&["sync"]).assert_code(0);
    let skus: Vec<&str> = vec!["A", "B", "C"];
    assert_eq!(
        a.catalog("p")
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        skus
    );
    assert_eq!(
        b.catalog("q")
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        skus
    );
    assert!(a.catalog("q").is_empty() && b.catalog("p").is_empty());
    for r in a.requests() {
        assert_eq!(r.header("authorization"), Some("Bearer search-secret"));
        assert_eq!(r.header("x-market-key"), None);
    }
    for r in b.requests() {
        assert_eq!(r.header("x-market-key"), Some("market-secret"));
        assert_eq!(r.header("authorization"), None);
    }
    // The feed's own batch_size overrides its target's; the target's
    // applies to the feed that sets none.
    assert_eq!(a.requests().len(), 2, "3 items in batches of 2");
    assert_eq!(b.requests().len(), 3, "3 items in batches of 1");
    assert_eq!(env.count_via_cli("p", "sent"), 3);
    assert_eq!(env.count_via_cli("q", "sent"), 3);
}

#[test]
fn a_missing_secret_of_a_named_target_is_named() {
    let (a, b) = (Receiver::start(), Receiver::start());
    let mut env = env_with(&two_services(&a, &b));
    env.set_env("SEARCH_TOKEN", "search-secret");
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("MARKET_KEY"), "{}", run.stderr);
    assert!(
        run.stderr.contains("targets.marketplace.api_key_env"),
        "{}",
        run.stderr
    );
    assert_eq!(a.request_count() + b.request_count(), 0, "nothing sent");
    // Commands that do not contact the targets need no secrets.
    env.run(&["sync", "--dry-run"]).assert_code(0);
}

#[test]
fn a_secret_in_a_feed_is_refused() {
    refused(
        &format!(
            "[targets.search]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n{FEED}target = \"search\"\npassword_env = \"P\"\n"
        ),
        &["password_env"],
    );
}

#[test]
fn a_refusing_target_stops_the_feeds_of_that_target_only() {
    let (a, b) = (Receiver::start(), Receiver::start());
    a.set(Behavior::Status(401, "who are you".into()));
    let text = format!(
        r#"
[targets.one]
url = "{a}"
[targets.same]
url = "{a}"
batch_size = 7
[targets.other]
url = "{b}"
{FEED}target = "one"
[[feeds]]
name = "q"
source = "p.ndjson"
key = ["sku"]
target = "same"
[[feeds]]
name = "r"
source = "p.ndjson"
key = ["sku"]
target = "other"
"#,
        a = a.url("/{feed}"),
        b = b.url("/{feed}")
    );
    let env = env_with(&text);
    env.run(&["sync"]).assert_code(4);
    // `q`'s target is another table with the same kind and URL template:
    // the same service, so nothing more is sent to it in this run.
    assert_eq!(a.request_count(), 1);
    assert_eq!(env.count_via_cli("q", "pending"), 3);
    assert_eq!(b.catalog("r").len(), 3, "another target is not stopped");
}

#[test]
fn target_may_be_left_out_when_every_feed_names_one() {
    let a = Receiver::start();
    let env = env_with(&format!(
        "[targets.search]\nurl = \"{}\"\n{FEED}target = \"search\"\n",
        a.url("/{feed}")
    ));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(a.catalog("p").len(), 3);
    // A feed naming no target, with no [target], has none.
    let run = refused(
        &format!("[targets.search]\nurl = \"http://127.0.0.1:9/{{feed}}\"\n{FEED}"),
        &["feed `p`", "url"],
    );
    assert!(run.stderr.contains("target"), "{}", run.stderr);
}

/// Bodies of the batches `r` took, in order.
fn bodies(r: &Receiver) -> Vec<Vec<u8>> {
    r.requests().into_iter().map(|q| q.raw_body).collect()
}

#[test]
fn a_batch_closes_before_its_body_would_pass_max_batch_bytes() {
    let r = Receiver::start();
    let rows: Vec<Value> = (0..10)
        .map(|i| json!({"sku": format!("S{i}"), "text": "x".repeat(300)}))
        .collect();
    let env = Env::new();
    write_ndjson(&env.path("p.ndjson"), &rows);
    env.config(&format!(
        "[target]\nurl = \"{}\"\ngzip = false\nmax_batch_bytes = 1500\n{FEED}",
        r.url("/{feed}")
    ));
    env.run(&["sync"]).assert_code(0);
    let sizes: Vec<usize> = bodies(&r).iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|&n| n <= 1500), "{sizes:?}");
    let counts: Vec<usize> = r.requests().iter().map(|q| q.items().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 10, "{counts:?}");
    // Each item is about 400 bytes in the envelope: three to a batch.
    assert_eq!(counts, [3, 3, 3, 1], "{sizes:?}");
    assert_eq!(r.catalog("p").len(), 10);
}

#[test]
fn an_item_bigger_than_max_batch_bytes_goes_alone() {
    let r = Receiver::start();
    let rows = [
        json!({"sku": "A", "text": "a"}),
        json!({"sku": "BIG", "text": "b".repeat(5000)}),
        json!({"sku": "C", "text": "c"}),
    ];
    let env = Env::new();
    write_ndjson(&env.path("p.ndjson"), &rows);
    env.config(&format!(
        "[target]\nurl = \"{}\"\nmax_batch_bytes = 1000\n{FEED}",
        r.url("/{feed}")
    ));
    env.run(&["sync"]).assert_code(0);
    let batches: Vec<Vec<String>> = r
        .requests()
        .iter()
        .map(|q| {
            q.items()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(batches, [vec!["A"], vec!["BIG"], vec!["C"]]);
    assert_eq!(env.count_via_cli("p", "sent"), 3);
}

#[test]
fn a_webhook_answering_410_gone_refuses_the_target() {
    let r = Receiver::start();
    r.set(Behavior::Status(410, "this endpoint was retired".into()));
    let env = env_with(&format!("[target]\nurl = \"{}\"\n{FEED}", r.url("/{feed}")));
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.contains("410"), "{}", run.stderr);
    assert_eq!(r.request_count(), 1, "no retry loop, no bisection");
    assert_eq!(env.count_via_cli("p", "pending"), 3, "items stay pending");
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Verifies a request as a Standard Webhooks receiver does, from the
/// specification: HMAC-SHA256 keyed by the base64-decoded secret over
/// `{id}.{timestamp}.{body}`, sent as `v1,<base64>`.
fn verify_standard(r: &receiver::Request, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.raw_body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    r.header("webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .any(|s| s == want)
}

fn standard_env(r: &Receiver) -> Env {
    let mut env = env_with(&format!(
        "[target]\nurl = \"{}\"\nsignature = \"standard\"\nsigning_secret_env = \"HOOK_SECRET\"\ngzip = true\n{FEED}",
        r.url("/{feed}")
    ));
    env.set_env("HOOK_SECRET", WHSEC);
    env
}

#[test]
fn standard_webhooks_signing_verifies_with_the_specification() {
    let r = Receiver::start();
    let mut env = standard_env(&r);
    // A frozen clock for feedsync's decisions; the timestamp stays real.
    env.set_env("FEEDSYNC_NOW", "2020-01-01T00:00:00Z");
    env.run(&["sync"]).assert_code(0);
    let requests = r.requests();
    assert!(!requests.is_empty());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for q in &requests {
        assert!(verify_standard(q, WHSEC), "{:?}", q.headers);
        assert_eq!(q.header("webhook-id"), q.header("idempotency-key"));
        let ts: i64 = q.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((now - ts).abs() < 600, "the real clock: {ts} vs {now}");
        assert_eq!(q.header("content-encoding"), None, "sent uncompressed");
        assert_eq!(q.header("x-feedsync-signature"), None);
        assert_eq!(q.body["feed"], "p", "the body is the plain envelope");
    }
    // A wrong secret does not verify: the check above means something.
    assert!(!verify_standard(
        &requests[0],
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ));
}

#[test]
fn doctor_signs_its_probe_and_gives_it_a_fresh_id() {
    let r = Receiver::start();
    let env = standard_env(&r);
    env.run(&["doctor"]);
    env.run(&["doctor"]);
    let probes: Vec<receiver::Request> = r
        .requests()
        .into_iter()
        .filter(|q| q.body["sync"] == "probe")
        .collect();
    assert_eq!(probes.len(), 2);
    for q in &probes {
        assert!(verify_standard(q, WHSEC), "{:?}", q.headers);
    }
    assert_ne!(
        probes[0].header("webhook-id"),
        probes[1].header("webhook-id"),
        "a probe is never a repeat"
    );
}

#[test]
fn a_standard_secret_not_written_whsec_base64_is_named() {
    let r = Receiver::start();
    for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!"] {
        let mut env = standard_env(&r);
        env.set_env("HOOK_SECRET", bad);
        for cmd in ["sync", "doctor"] {
            let run = env.run(&[cmd]);
            run.assert_code(2);
            assert!(run.stderr.contains("HOOK_SECRET"), "{cmd}: {}", run.stderr);
            assert!(run.stderr.contains("whsec_"), "{cmd}: {}", run.stderr);
            assert!(!run.stderr.contains(bad), "the secret is not printed");
        }
        env.run(&["sync", "--dry-run"]).assert_code(0);
    }
    assert_eq!(r.request_count(), 0);
}

#[test]
fn standard_signing_needs_a_secret() {
    refused(
        &format!(
            "[target]\nurl = \"http://127.0.0.1:9/{{feed}}\"\nsignature = \"standard\"\n{FEED}"
        ),
        &["target.signature", "signing_secret_env"],
    );
}

#[test]
fn doctor_calls_a_webhook_answering_410_a_problem() {
    let r = Receiver::start();
    r.set(Behavior::Status(410, "retired".into()));
    let env = env_with(&format!("[target]\nurl = \"{}\"\n{FEED}", r.url("/{feed}")));
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(run.stdout.contains("PROBLEM  target p"), "{}", run.stdout);
    assert!(run.stdout.contains("410"), "{}", run.stdout);
}

#[test]
fn max_batch_bytes_bounds_a_file_targets_lines_too() {
    let rows: Vec<Value> = (0..10)
        .map(|i| json!({"sku": format!("S{i}"), "text": "x".repeat(300)}))
        .collect();
    let env = Env::new();
    write_ndjson(&env.path("p.ndjson"), &rows);
    env.config(&format!(
        "[target]\nurl = \"file:out.ndjson\"\nmax_batch_bytes = 1500\n{FEED}"
    ));
    env.run(&["sync"]).assert_code(0);
    let text = std::fs::read_to_string(env.path("out.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().all(|l| l.len() <= 1500),
        "{:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    let counts: Vec<usize> = targets::file_envelopes(&env.path("out.ndjson"), 0)
        .iter()
        .map(|e| e["items"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [3, 3, 3, 1]);
}
