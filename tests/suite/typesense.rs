//! The `typesense` kind against the fake Typesense (`common::fakes::
//! typesense`), beyond the shared delivery suite: the import's
//! 200-with-failures read line by line, per-line retries, deletes of gone
//! documents, ids that need percent-encoding, filter deletes kept under
//! the request-target bound, refusals, and a SIGKILL round that converges.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fakes::typesense::{Fault, Typesense};
use crate::common::*;

const NOW: &str = "2026-11-29T12:00:00Z";
const LATER: &str = "2026-11-29T14:00:00Z";
const KEY: &str = "ts-admin-key";

/// An installation with feed `p` (`rows`, keyed by `sku`) sending to
/// collection `p` of a fresh fake Typesense, whose schema types `price`.
fn setup(rows: &[Value], batch_size: u64) -> (Env, Typesense) {
    let ts = Typesense::start(KEY);
    ts.create_collection("p", &[("sku", "string"), ("price", "int32")]);
    (install(&ts, rows, batch_size), ts)
}

/// An installation with feed `p` sending to collection `p` of `ts`.
fn install(ts: &Typesense, rows: &[Value], batch_size: u64) -> Env {
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = ts.url();
                t.batch_size = Some(batch_size);
                t.retry_base_secs = Some(60);
                t.api_key_env = Some("TS_KEY".into());
                t.extra.insert("kind".into(), "typesense".into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env.set_env("TS_KEY", KEY);
    env.set_env("FEEDSYNC_NOW", NOW);
    env
}

fn row(sku: &str, price: Value) -> Value {
    json!({"sku": sku, "price": price})
}

/// id → (status, error) as `items --json` shows them.
fn items(env: &Env) -> BTreeMap<String, (String, Option<String>)> {
    let run = env.run(&["items", "--feed", "p", "--json", "--limit", "100000"]);
    run.assert_code(0);
    run.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                (
                    i["status"].as_str().unwrap().to_string(),
                    i["error"].as_str().map(String::from),
                ),
            )
        })
        .collect()
}

/// The documents the fake holds, without the `id` feedsync adds.
fn held(ts: &Typesense) -> BTreeMap<String, Value> {
    ts.documents("p")
        .into_iter()
        .map(|(id, mut doc)| {
            assert_eq!(doc["id"], json!(id), "a document's id is its item id");
            doc.as_object_mut().unwrap().remove("id");
            (id, doc)
        })
        .collect()
}

#[test]
fn a_200_with_failure_lines_fails_only_those_items() {
    let rows = [
        row("A", json!(1)),
        row("B", json!("cheap")),
        row("C", json!(3)),
    ];
    let (mut env, ts) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(1);

    let got = items(&env);
    assert_eq!(got["A"].0, "sent");
    assert_eq!(got["C"].0, "sent");
    assert_eq!(
        got["B"].0, "failed",
        "a 400 line is failed, not sent: {got:?}"
    );
    assert_eq!(
        got["B"].1.as_deref(),
        Some("400: Field `price` must be an int32."),
        "the service's own error"
    );
    let listed = env.run(&["items", "--feed", "p", "--status", "failed"]);
    listed.assert_code(0);
    assert!(
        listed.stdout.contains("Field `price` must be an int32."),
        "{}",
        listed.stdout
    );
    assert_eq!(held(&ts).keys().collect::<Vec<_>>(), ["A", "C"]);

    // Not retried while the data is the same; sent once it changes.
    let before = ts.requests().len();
    env.set_env("FEEDSYNC_NOW", LATER);
    env.run(&["retry"]).assert_code(0);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(ts.requests().len(), before, "a failed item is not retried");
    write_ndjson(
        &env.path("p.ndjson"),
        &[row("A", json!(1)), row("B", json!(2)), row("C", json!(3))],
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(items(&env)["B"].0, "sent");
    assert_eq!(held(&ts)["B"], row("B", json!(2)));
}

#[test]
fn a_429_or_5xx_line_is_retried() {
    for code in [429u16, 503] {
        let rows = [row("A", json!(1)), row("B", json!(2)), row("C", json!(3))];
        let (mut env, ts) = setup(&rows, 10);
        ts.fail_document("B", code, "Not Ready or Lagging", Some(1));
        env.run(&["sync"]).assert_code(1);
        let got = items(&env);
        assert_eq!(got["B"].0, "retry", "{code}: {got:?}");
        assert!(
            got["B"]
                .1
                .as_deref()
                .unwrap()
                .contains("Not Ready or Lagging")
        );
        assert_eq!((got["A"].0.as_str(), got["C"].0.as_str()), ("sent", "sent"));

        env.set_env("FEEDSYNC_NOW", LATER);
        env.run(&["retry"]).assert_code(0);
        assert_eq!(items(&env)["B"].0, "sent", "{code}");
        assert_eq!(held(&ts).len(), 3, "{code}");
    }
}

#[test]
fn deletes_of_gone_documents_count_as_done() {
    let rows = [
        row("A", json!(1)),
        row("B", json!(2)),
        row("x`y", json!(3)),
        row("C", json!(4)),
    ];
    let (env, ts) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(held(&ts).len(), 4);
    // Someone else removed two of them already.
    ts.remove("p", "B");
    ts.remove("p", "x`y");

    write_ndjson(&env.path("p.ndjson"), &[row("A", json!(1))]);
    env.run(&["sync"]).assert_code(0);
    let got = items(&env);
    for id in ["B", "x`y", "C"] {
        assert_eq!(got[id].0, "sent", "{id}: the delete is delivered: {got:?}");
    }
    assert_eq!(held(&ts).keys().collect::<Vec<_>>(), ["A"]);
    let ops = ts.ops("p");
    assert!(ops.contains(&("delete".into(), "C".into())));
}

#[test]
fn ids_that_need_percent_encoding_reach_typesense_intact() {
    let ids = [
        "a+b c",
        "x/y",
        "p,q]",
        "back`quote",
        "é-ü",
        "100%",
        "a:[b]",
        "~._-",
    ];
    let rows: Vec<Value> = ids.iter().map(|id| row(id, json!(1))).collect();
    let (env, ts) = setup(&rows, 3);
    env.run(&["sync"]).assert_code(0);
    let want: Vec<String> = {
        let mut v: Vec<String> = ids
            .iter()
            .map(|id| {
                id.replace('%', "%25")
                    .replace('/', "%2F")
                    .replace(',', "%2C")
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(held(&ts).keys().cloned().collect::<Vec<_>>(), want);

    // Deleting them all removes exactly them (no `+` read as a space, no
    // id cut at a `/` or a `,`).
    ts.insert("p", json!({"id": "a b c", "sku": "decoy", "price": 1}));
    ts.insert("p", json!({"id": "x", "sku": "decoy", "price": 1}));
    write_ndjson(&env.path("p.ndjson"), &[]);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        ts.documents("p").keys().collect::<Vec<_>>(),
        ["a b c", "x"],
        "only the decoys are left"
    );
    assert!(items(&env).values().all(|(s, _)| s == "sent"));
    assert_eq!(ts.breaches(), Vec::<String>::new());
}

#[test]
fn many_deletes_go_in_filter_requests_under_the_bound() {
    let rows: Vec<Value> = (0..600)
        .map(|n| row(&format!("SKU-{n:05}/variant blue+green"), json!(n)))
        .collect();
    let (env, ts) = setup(&rows, 1000);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(held(&ts).len(), 600);
    let before = ts.requests().len();
    write_ndjson(&env.path("p.ndjson"), &rows[..1]);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(held(&ts).len(), 1);
    let deletes: Vec<(String, String)> = ts.requests()[before..]
        .iter()
        .filter(|(m, _)| m == "DELETE")
        .cloned()
        .collect();
    assert!(
        deletes.len() > 1 && deletes.len() < 100,
        "599 deletes in a few filter requests: {}",
        deletes.len()
    );
    assert!(deletes.iter().all(|(_, t)| t.contains("filter_by=")));
    assert_eq!(ts.breaches(), Vec::<String>::new());
}

#[test]
fn a_missing_collection_or_a_wrong_key_refuses_the_target() {
    let rows = [row("A", json!(1)), row("B", json!(2))];
    let (env, ts) = setup(&rows, 10);
    ts.set_api_key("another-key");
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(!run.stderr.contains(KEY), "the key never shows");
    assert!(items(&env).values().all(|(s, _)| s == "pending"));

    let ts = Typesense::start(KEY);
    let env = install(&ts, &rows, 10);
    env.run(&["sync"]).assert_code(4);
    assert!(items(&env).values().all(|(s, _)| s == "pending"));
    assert!(ts.documents("p").is_empty());
}

#[test]
fn a_sigkill_round_converges() {
    let mut rng = Rng(0x7e5e_11a5);
    let mut catalog: BTreeMap<String, Value> = (0..300)
        .map(|n| {
            let sku = format!("S{n:04} / {}", ["a+b", "c,d", "e`f", "g"][n % 4]);
            (
                sku.clone(),
                json!({"sku": sku, "price": n, "text": "x".repeat(n % 97)}),
            )
        })
        .collect();
    let rows: Vec<Value> = catalog.values().cloned().collect();
    let (mut env, ts) = setup(&rows, 25);
    let mut next = 300;
    let (mut killed, deadline) = (0, Instant::now() + Duration::from_secs(120));
    for round in 0..16 {
        assert!(Instant::now() < deadline, "over the time budget");
        let keys: Vec<String> = catalog.keys().cloned().collect();
        for _ in 0..rng.below(30) {
            let k = &keys[rng.below(keys.len())];
            if let Some(v) = catalog.get_mut(k) {
                v["price"] = json!(rng.below(10_000));
            }
        }
        for _ in 0..rng.below(20) {
            catalog.remove(&keys[rng.below(keys.len())]);
        }
        for _ in 0..rng.below(20) {
            next += 1;
            let sku = format!("N{next:05}+new");
            catalog.insert(sku.clone(), json!({"sku": sku, "price": next, "text": ""}));
        }
        write_ndjson(
            &env.path("p.ndjson"),
            &catalog.values().cloned().collect::<Vec<_>>(),
        );
        ts.set(None);
        match rng.below(4) {
            0 => ts.push(Fault::Status(503, "Not Ready or Lagging".into())),
            1 => ts.push(Fault::Slow(Duration::from_millis(300))),
            2 => ts.push(Fault::Drop),
            _ => {}
        }
        let at = chrono::Utc::now() + chrono::Duration::hours(round);
        env.set_env("FEEDSYNC_NOW", &at.to_rfc3339());
        let job = if rng.below(4) == 0 { "retry" } else { "sync" };
        let mut child = env.command(&[job]).spawn().unwrap();
        let wait = Duration::from_millis(rng.below(400) as u64);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let status = child.wait().unwrap();
        if let Some(code) = status.code() {
            assert!([0, 1].contains(&code), "round {round}: {job} exited {code}");
        }
    }
    assert!(killed >= 3, "too few kills landed mid-run: {killed}");

    ts.clear_faults();
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    env.set_env("FEEDSYNC_NOW", &later.to_rfc3339());
    env.run(&["sync"]).assert_code(0);
    env.run(&["retry"]).assert_code(0);
    let got = held(&ts);
    let want: BTreeMap<String, Value> = catalog
        .iter()
        .map(|(k, v)| (k.replace('/', "%2F").replace(',', "%2C"), v.clone()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert!(items(&env).values().all(|(s, _)| s == "sent"));
    assert_eq!(ts.breaches(), Vec::<String>::new());
}

/// `doctor`'s lines that start with `tag`.
fn doctor_lines(run: &Run, tag: &str) -> Vec<String> {
    let lines: Vec<&str> = run.stdout.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(tag))
        .map(|(i, l)| {
            // A finding and the fix under it, as one string.
            match lines.get(i + 1) {
                Some(next) if next.trim_start().starts_with("fix: ") => format!("{l}\n{next}"),
                _ => l.to_string(),
            }
        })
        .collect()
}

#[test]
fn doctor_checks_health_and_the_collection_without_writing() {
    let (env, ts) = setup(&[row("A", json!(1))], 10);
    let run = env.run(&["doctor"]);
    run.assert_code(0);
    assert!(doctor_lines(&run, "PROBLEM").is_empty(), "{}", run.stdout);
    let asked: Vec<(String, String)> = ts.requests();
    assert_eq!(
        asked,
        [
            ("GET".to_string(), "/health".to_string()),
            ("GET".into(), "/collections/p".into())
        ]
    );
    assert!(!run.stdout.contains(KEY) && !run.stderr.contains(KEY));
}

#[test]
fn doctor_shows_the_schema_to_create_for_a_missing_collection() {
    let ts = Typesense::start(KEY);
    let env = install(&ts, &[row("A", json!(1))], 10);
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    let problems = doctor_lines(&run, "PROBLEM");
    assert_eq!(problems.len(), 1, "{}", run.stdout);
    let p = &problems[0];
    assert!(p.contains("collection") && p.contains("`p`"), "{p}");
    assert!(p.contains("/collections"), "the fix creates it: {p}");
    assert!(
        p.contains(r#""name":"p""#) && p.contains(r#""fields""#),
        "the schema: {p}"
    );
    assert!(p.contains("`id`"), "the fix says how ids are kept: {p}");
    assert!(ts.documents("p").is_empty());
}

#[test]
fn doctor_names_a_wrong_key_and_the_actions_the_key_needs() {
    let (env, ts) = setup(&[row("A", json!(1))], 10);
    ts.set_api_key("rotated");
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    let problems = doctor_lines(&run, "PROBLEM");
    assert_eq!(problems.len(), 1, "{}", run.stdout);
    let p = &problems[0];
    for needle in [
        "401",
        "TS_KEY",
        "documents:import",
        "documents:delete",
        "collections:get",
    ] {
        assert!(p.contains(needle), "`{needle}` not in {p}");
    }
    assert!(!run.stdout.contains(KEY), "the key never shows");
}

#[test]
fn an_empty_id_fails_alone_and_the_rest_is_delivered() {
    let rows = [row("A", json!(1)), row("", json!(2)), row("C", json!(3))];
    let (env, ts) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(1);
    let got = items(&env);
    assert_eq!(got[""].0, "failed");
    assert_eq!(
        got[""].1.as_deref(),
        Some("Typesense cannot take an empty id")
    );
    assert_eq!(held(&ts).keys().collect::<Vec<_>>(), ["A", "C"]);
}

#[test]
fn a_collection_name_is_percent_encoded_and_gzip_is_honoured() {
    let ts = Typesense::start(KEY);
    ts.create_collection("shop p/eu", &[("price", "int32")]);
    let env = install(&ts, &[row("A", json!(1)), row("B", json!(2))], 10);
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    env.config(&cfg.replace(
        "kind = \"typesense\"",
        "kind = \"typesense\"\nindex = \"shop {feed}/eu\"\ngzip = true",
    ));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(ts.documents("shop p/eu").len(), 2);
    let (_, import) = ts
        .requests()
        .into_iter()
        .find(|(m, _)| m == "POST")
        .unwrap();
    assert!(
        import.starts_with("/collections/shop%20p%2Feu/documents/import"),
        "{import}"
    );
    assert!(ts.gzipped() > 0, "the import went compressed");
}

#[test]
fn the_key_stays_out_of_logs_and_the_state_file() {
    let (mut env, ts) = setup(&[row("A", json!(1)), row("B", json!("bad"))], 10);
    env.set_env("RUST_LOG", "trace");
    ts.push(Fault::Status(503, "Not Ready or Lagging".into()));
    let runs = [env.run(&["sync"]), env.run(&["sync"]), env.run(&["doctor"])];
    for run in &runs {
        assert!(
            !run.stderr.contains(KEY) && !run.stdout.contains(KEY),
            "{}",
            run.stderr
        );
    }
    assert!(runs[0].stderr.len() > 100, "trace logging is on");
    let state = std::fs::read(env.state_path()).unwrap();
    assert!(!state.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
}
