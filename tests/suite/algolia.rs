//! The `algolia` kind against the fake Algolia (`common::fakes::algolia`),
//! beyond the shared delivery suite: a whole-batch 400 bisected down to the
//! one record too big, upserts and deletes in one batch, deletes of absent
//! records, objectIDs kept intact, 429 with Retry-After, refusals, and a
//! SIGKILL round that converges.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fakes::algolia::{Algolia, Fault};
use crate::common::*;

const NOW: &str = "2026-11-29T12:00:00Z";
const LATER: &str = "2026-11-29T14:00:00Z";
const APP: &str = "LATENCY";
const KEY: &str = "algolia-admin-key";

/// An installation with feed `p` (`rows`, keyed by `sku`) sending to
/// index `p` of a fresh fake Algolia application.
fn setup(rows: &[Value], batch_size: u64) -> (Env, Algolia) {
    let al = Algolia::start(APP, KEY);
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = al.url();
                t.batch_size = Some(batch_size);
                t.retry_base_secs = Some(60);
                t.api_key_env = Some("ALGOLIA_KEY".into());
                t.extra.insert("kind".into(), "algolia".into());
                t.extra.insert("app_id".into(), APP.into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env.set_env("ALGOLIA_KEY", KEY);
    env.set_env("FEEDSYNC_NOW", NOW);
    (env, al)
}

fn row(sku: &str, text: &str) -> Value {
    json!({"sku": sku, "text": text})
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

/// The records the fake holds, without the `objectID` feedsync adds.
fn held(al: &Algolia) -> BTreeMap<String, Value> {
    al.records("p")
        .into_iter()
        .map(|(id, mut rec)| {
            assert_eq!(
                rec["objectID"],
                json!(id),
                "a record's objectID is its item id"
            );
            rec.as_object_mut().unwrap().remove("objectID");
            (id, rec)
        })
        .collect()
}

#[test]
fn a_record_too_big_is_isolated_by_bisection() {
    let mut rows: Vec<Value> = (0..8).map(|n| row(&format!("S{n}"), "small")).collect();
    rows[5] = row("S5", &"x".repeat(20_000));
    let (mut env, al) = setup(&rows, 8);
    env.run(&["sync"]).assert_code(1);

    let got = items(&env);
    assert_eq!(got["S5"].0, "failed", "{got:?}");
    let error = got["S5"].1.clone().unwrap();
    assert!(
        error.contains("Record at the position 0 objectID=S5 is too big"),
        "the service's own message: {error}"
    );
    for n in [0, 1, 2, 3, 4, 6, 7] {
        assert_eq!(got[&format!("S{n}")].0, "sent", "S{n}");
    }
    let listed = env.run(&["items", "--feed", "p", "--status", "failed"]);
    assert!(listed.stdout.contains("is too big"), "{}", listed.stdout);
    let mut want: Vec<String> = (0..8)
        .filter(|n| *n != 5)
        .map(|n| format!("S{n}"))
        .collect();
    want.sort();
    assert_eq!(held(&al).keys().cloned().collect::<Vec<_>>(), want);

    // Once the record fits, it goes.
    rows[5] = row("S5", "small now");
    write_ndjson(&env.path("p.ndjson"), &rows);
    env.set_env("FEEDSYNC_NOW", LATER);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(held(&al)["S5"], row("S5", "small now"));
}

#[test]
fn upserts_and_deletes_share_one_batch_request() {
    let rows = [row("A", "1"), row("B", "2"), row("C", "3")];
    let (env, al) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(0);
    let before = al.requests().len();
    write_ndjson(&env.path("p.ndjson"), &[row("A", "10"), row("C", "3")]);
    env.run(&["sync"]).assert_code(0);
    let posts: Vec<(String, String)> = al.requests()[before..].to_vec();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0], ("POST".into(), "/1/indexes/p/batch".into()));
    let ops = al.ops("p");
    assert_eq!(
        ops[3..],
        [
            ("upsert".to_string(), "A".to_string()),
            ("delete".into(), "B".into())
        ]
    );
    assert_eq!(
        held(&al),
        BTreeMap::from([
            ("A".to_string(), row("A", "10")),
            ("C".to_string(), row("C", "3"))
        ])
    );
}

#[test]
fn deletes_of_absent_records_count_as_done() {
    let rows = [row("A", "1"), row("B", "2")];
    let (env, al) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(0);
    // Deleted from the dashboard meanwhile: the delete still succeeds.
    al.remove("p", "B");
    write_ndjson(&env.path("p.ndjson"), &[row("A", "1")]);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(items(&env)["B"].0, "sent");
    assert!(!held(&al).contains_key("B"));
}

#[test]
fn object_ids_reach_algolia_intact() {
    let ids = ["a+b c", "x/y", "p,q", "quote\"d", "é-ü", "100%", "~._-"];
    let rows: Vec<Value> = ids.iter().map(|id| row(id, "t")).collect();
    let (env, al) = setup(&rows, 3);
    env.run(&["sync"]).assert_code(0);
    let mut want: Vec<String> = ids
        .iter()
        .map(|id| {
            id.replace('%', "%25")
                .replace('/', "%2F")
                .replace(',', "%2C")
        })
        .collect();
    want.sort();
    assert_eq!(held(&al).keys().cloned().collect::<Vec<_>>(), want);
    write_ndjson(&env.path("p.ndjson"), &[]);
    env.run(&["sync"]).assert_code(0);
    assert!(al.records("p").is_empty());
}

#[test]
fn a_429_with_retry_after_is_honoured() {
    let rows = [row("A", "1"), row("B", "2")];
    let (mut env, al) = setup(&rows, 1);
    al.push(Fault::RetryAfter(7200));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(items(&env)["A"].0, "retry");
    assert!(al.records("p").is_empty());
    // An hour later the backoff (60 s) has long passed, but Algolia asked
    // for two hours: not due yet.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T13:00:00Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(
        items(&env)["A"].0,
        "retry",
        "not retried before Retry-After ran out"
    );
    assert!(al.records("p").is_empty());
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:01:00Z");
    env.run(&["retry"]).assert_code(0);
    env.run(&["sync"]).assert_code(0);
    assert!(items(&env).values().all(|(s, _)| s == "sent"));
    assert_eq!(held(&al).len(), 2);
}

#[test]
fn a_wrong_key_or_a_missing_acl_refuses_the_target() {
    let rows = [row("A", "1")];
    let (env, al) = setup(&rows, 10);
    al.set_api_key("rotated");
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(
        run.stderr.contains("Invalid Application-ID or API key"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(KEY), "the key never shows");
    assert!(items(&env).values().all(|(s, _)| s == "pending"));

    let (env, al) = setup(&rows, 10);
    al.set_acls(&["search"]);
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.contains("Method not allowed"), "{}", run.stderr);
    assert!(!al.has_index("p"));
}

#[test]
fn a_sigkill_round_converges() {
    let mut rng = Rng(0xa160_11a5);
    let mut catalog: BTreeMap<String, Value> = (0..300)
        .map(|n| {
            let sku = format!("S{n:04} {}", ["a/b", "c,d", "e+f", "g"][n % 4]);
            (sku.clone(), json!({"sku": sku, "price": n}))
        })
        .collect();
    let rows: Vec<Value> = catalog.values().cloned().collect();
    let (mut env, al) = setup(&rows, 25);
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
            let sku = format!("N{next:05}");
            catalog.insert(sku.clone(), json!({"sku": sku, "price": next}));
        }
        write_ndjson(
            &env.path("p.ndjson"),
            &catalog.values().cloned().collect::<Vec<_>>(),
        );
        al.set(None);
        match rng.below(4) {
            0 => al.push(Fault::Status(503, "Service Unavailable".into())),
            1 => al.push(Fault::Slow(Duration::from_millis(300))),
            2 => al.push(Fault::Drop),
            _ => {}
        }
        let at = chrono::Utc::now() + chrono::Duration::hours(round);
        env.set_env("FEEDSYNC_NOW", &at.to_rfc3339());
        let job = if rng.below(4) == 0 { "retry" } else { "sync" };
        let mut child = env.command(&[job]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(400) as u64));
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

    al.clear_faults();
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    env.set_env("FEEDSYNC_NOW", &later.to_rfc3339());
    env.run(&["sync"]).assert_code(0);
    env.run(&["retry"]).assert_code(0);
    let want: BTreeMap<String, Value> = catalog
        .iter()
        .map(|(k, v)| (k.replace('/', "%2F").replace(',', "%2C"), v.clone()))
        .collect();
    assert_eq!(held(&al), want);
    assert!(items(&env).values().all(|(s, _)| s == "sent"));
    assert_eq!(al.breaches(), Vec::<String>::new());
}

/// `doctor`'s lines that start with `tag`, each with the fix under it.
fn doctor_lines(run: &Run, tag: &str) -> Vec<String> {
    let lines: Vec<&str> = run.stdout.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(tag))
        .map(|(i, l)| match lines.get(i + 1) {
            Some(next) if next.trim_start().starts_with("fix: ") => format!("{l}\n{next}"),
            _ => l.to_string(),
        })
        .collect()
}

#[test]
fn doctor_reads_the_settings_and_notes_an_index_not_created_yet() {
    let (env, al) = setup(&[row("A", "1")], 10);
    let run = env.run(&["doctor"]);
    run.assert_code(0);
    let notes = doctor_lines(&run, "note");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("`p`") && n.contains("does not exist yet")),
        "{}",
        run.stdout
    );
    assert_eq!(
        al.requests(),
        [("GET".to_string(), "/1/indexes/p/settings".to_string())]
    );
    assert!(!al.has_index("p"), "doctor writes nothing");

    al.create_index("p");
    let run = env.run(&["doctor"]);
    run.assert_code(0);
    assert!(doctor_lines(&run, "PROBLEM").is_empty(), "{}", run.stdout);
    assert!(
        !doctor_lines(&run, "note")
            .iter()
            .any(|n| n.contains("does not exist"))
    );
}

#[test]
fn doctor_names_a_wrong_key_and_the_acls_the_key_needs() {
    for broken in ["key", "acl"] {
        let (env, al) = setup(&[row("A", "1")], 10);
        if broken == "key" {
            al.set_api_key("rotated");
        } else {
            al.set_acls(&["addObject", "deleteObject", "search"]);
        }
        let run = env.run(&["doctor"]);
        run.assert_code(1);
        let problems = doctor_lines(&run, "PROBLEM");
        assert_eq!(problems.len(), 1, "{broken}: {}", run.stdout);
        let p = &problems[0];
        for needle in [
            "403",
            "ALGOLIA_KEY",
            "addObject",
            "deleteObject",
            "settings",
        ] {
            assert!(p.contains(needle), "{broken}: `{needle}` not in {p}");
        }
        assert!(!run.stdout.contains(KEY), "the key never shows");
    }
}

#[test]
fn an_empty_object_id_fails_alone_and_the_rest_is_delivered() {
    let rows = [row("A", "1"), row("", "2"), row("C", "3")];
    let (env, al) = setup(&rows, 10);
    env.run(&["sync"]).assert_code(1);
    let got = items(&env);
    assert_eq!(got[""].0, "failed");
    assert_eq!(
        got[""].1.as_deref(),
        Some("Algolia cannot take an empty objectID")
    );
    assert_eq!(held(&al).keys().collect::<Vec<_>>(), ["A", "C"]);
}

#[test]
fn an_index_name_is_percent_encoded_in_the_path() {
    let (env, al) = setup(&[row("A", "1")], 10);
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    env.config(&cfg.replace(
        "kind = \"algolia\"",
        "kind = \"algolia\"\nindex = \"prod {feed}/fr+be\"",
    ));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(al.records("prod p/fr+be").len(), 1);
    assert_eq!(
        al.requests().last().unwrap().1,
        "/1/indexes/prod%20p%2Ffr%2Bbe/batch"
    );
}

#[test]
fn the_key_stays_out_of_logs_and_the_state_file() {
    let mut rows = vec![row("A", "1")];
    rows.push(row("B", &"x".repeat(20_000)));
    let (mut env, al) = setup(&rows, 10);
    env.set_env("RUST_LOG", "trace");
    al.push(Fault::Status(503, "Service Unavailable".into()));
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
