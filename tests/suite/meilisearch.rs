//! The `meilisearch` kind against the loopback fake (`common::fakes::meilisearch`),
//! beyond the shared delivery suite: an item is `sent` only once its task
//! has succeeded, one task at a time per index, bad documents isolated with
//! Meilisearch's own error, refusals that name the fix, and tasks that
//! outlive a run (a timeout, a SIGKILL) settled by the next one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fakes::meilisearch::MeiliFake;
use crate::common::*;

const NOW: &str = "2026-11-29T12:00:00Z";

/// An installation with one feed `p` of `rows` sending to index `p` of
/// `fake`, in batches of `batch` items, with the key in MEILI_KEY.
fn setup(fake: &MeiliFake, rows: &[Value], batch: u64, timeout: u64) -> Env {
    let mut env = Env::new();
    fake.require_key("masterKey-1");
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = fake.url();
                t.batch_size = Some(batch);
                t.timeout_secs = Some(timeout);
                t.retry_base_secs = Some(1);
                t.api_key_env = Some("MEILI_KEY".into());
                t.extra.insert("kind".into(), "meilisearch".into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env.set_env("FEEDSYNC_NOW", NOW);
    env.set_env("MEILI_KEY", "masterKey-1");
    env
}

fn rows(skus: &[&str]) -> Vec<Value> {
    skus.iter()
        .enumerate()
        .map(|(n, sku)| json!({"sku": sku, "price": n}))
        .collect()
}

fn catalog(rows: &[Value]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r["sku"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn failed_items(env: &Env) -> BTreeMap<String, String> {
    let run = env.run(&["items", "--feed", "p", "--status", "failed", "--json"]);
    run.assert_code(0);
    run.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn remembered_tasks(env: &Env) -> i64 {
    env.db()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn items_are_sent_only_after_their_task_succeeded() {
    let fake = MeiliFake::start();
    fake.finish_after(3);
    let now = rows(&["A", "B", "C"]);
    let mut env = setup(&fake, &now, 10, 30);
    // The first task fails at Meilisearch after its 202: nothing is sent.
    fake.fail_next_task("internal", "internal", "the task queue is corrupted");
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert!(
        env.statuses("p").values().all(|s| s == "retry"),
        "{:?}",
        env.statuses("p")
    );
    assert!(fake.index("p").is_none(), "the failed task created nothing");
    // Accepted with 202, polled until it succeeded: now they are sent.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    let run = env.run(&["retry"]);
    run.assert_code(0);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), catalog(&now));
    let last = fake.tasks().pop().unwrap();
    assert_eq!(last.status, "succeeded");
    assert!(last.polls >= 3, "polled until it finished: {}", last.polls);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(remembered_tasks(&env), 0, "finished tasks are forgotten");
    // The key went as a Bearer token; never in the log or the state.
    let req = &fake.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer masterKey-1"));
    assert!(!run.stderr.contains("masterKey-1"));
}

#[test]
fn never_two_tasks_in_flight_on_one_index() {
    let fake = MeiliFake::start();
    fake.finish_after(2);
    let skus: Vec<String> = (0..12).map(|i| format!("S{i:02}")).collect();
    let first = rows(&skus.iter().map(String::as_str).collect::<Vec<_>>());
    let env = setup(&fake, &first, 3, 30);
    env.run(&["sync"]).assert_code(0);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(fake.tasks().len(), 4, "one task per batch of 3");
    // A change that mixes upserts and deletes in a batch.
    let mut next: Vec<Value> = first.iter().skip(4).cloned().collect();
    next.iter_mut().for_each(|r| r["price"] = json!(99));
    write_ndjson(&env.path("p.ndjson"), &next);
    env.run(&["sync"]).assert_code(0);
    assert!(fake.tasks().iter().all(|t| t.status == "succeeded"));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(
        crate::common::TargetFake::mirror(&fake, "p"),
        catalog(&next)
    );
}

#[test]
fn a_bad_document_is_isolated_with_meilisearchs_error() {
    let fake = MeiliFake::start();
    let mut now = rows(&["A", "B", "C", "D", "E", "F", "G", "H"]);
    now[5]["_geo"] = json!("nowhere");
    let env = setup(&fake, &now, 8, 30);
    env.run(&["sync"]).assert_code(1);
    let failed = failed_items(&env);
    assert_eq!(failed.keys().collect::<Vec<_>>(), ["F"], "{failed:?}");
    assert!(
        failed["F"].starts_with("invalid_document_geo_field: The `_geo` field"),
        "{}",
        failed["F"]
    );
    let mut good = catalog(&now);
    good.remove("F");
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), good);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn ids_are_encoded_and_an_id_too_long_fails_alone() {
    let fake = MeiliFake::start();
    // 400 bytes of key; as an item id `/` is `%2F`, and at Meilisearch
    // every `%` is `_25`: 1,000 bytes.
    let long = "x/".repeat(200);
    let now = rows(&["24-MB01", "MH01/default", "a_b", "A.B", &long]);
    let env = setup(&fake, &now, 10, 30);
    env.run(&["sync"]).assert_code(1);
    let index = fake.index("p").unwrap();
    assert_eq!(
        index.docs.keys().collect::<Vec<_>>(),
        ["24-MB01", "A_2EB", "MH01_252Fdefault", "a_5Fb"]
    );
    assert_eq!(index.docs["MH01_252Fdefault"]["sku"], "MH01/default");
    assert_eq!(index.docs["a_5Fb"]["id"], "a_5Fb");
    assert_eq!(index.primary_key.as_deref(), Some("id"));
    let failed = failed_items(&env);
    let long_id = long.replace('/', "%2F");
    assert_eq!(failed.keys().collect::<Vec<_>>(), [&long_id], "{failed:?}");
    assert!(
        failed[&long_id].contains("more than the 511"),
        "{}",
        failed[&long_id]
    );
}

#[test]
fn a_primary_key_conflict_refuses_the_target() {
    let fake = MeiliFake::start();
    fake.create_index("p", Some("sku"));
    let env = setup(&fake, &rows(&["A", "B"]), 10, 30);
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(
        run.stderr.contains("index_primary_key_already_exists"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("id_field"), "{}", run.stderr);
    assert!(env.statuses("p").values().all(|s| s == "pending"));
}

#[test]
fn a_key_that_may_not_create_the_index_refuses_the_target() {
    let fake = MeiliFake::start();
    fake.forbid_index_creation();
    let env = setup(&fake, &rows(&["A", "B"]), 10, 30);
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.contains("index_not_found"), "{}", run.stderr);
    assert!(run.stderr.contains("indexes.create"), "{}", run.stderr);
    assert!(env.statuses("p").values().all(|s| s == "pending"));
}

#[test]
fn a_delete_into_a_missing_index_counts_as_done() {
    let fake = MeiliFake::start();
    let env = setup(&fake, &rows(&["A", "B"]), 10, 30);
    env.run(&["sync"]).assert_code(0);
    fake.drop_index("p");
    write_ndjson(&env.path("p.ndjson"), &[]);
    env.run(&["sync"]).assert_code(0);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    let last = fake.tasks().pop().unwrap();
    assert_eq!(
        last.error.as_ref().map(|e| e["code"].clone()),
        Some(json!("index_not_found"))
    );
}

#[test]
fn a_task_that_never_finishes_is_retried_remembered_and_settled_first() {
    let fake = MeiliFake::start();
    fake.stall(true);
    let env = setup(&fake, &rows(&["A", "B"]), 10, 1);
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert!(env.statuses("p").values().all(|s| s == "retry"));
    assert_eq!(remembered_tasks(&env), 1);
    // Still unfinished: a new change is not enqueued behind it.
    write_ndjson(&env.path("p.ndjson"), &rows(&["A", "B", "C"]));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(fake.tasks().len(), 1, "nothing enqueued behind it");
    assert_eq!(env.statuses("p")["C"], "pending");
    // It finishes: the next run settles it first, then sends the rest.
    fake.heal();
    env.run(&["sync"]).assert_code(0);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    assert_eq!(remembered_tasks(&env), 0);
    assert_eq!(fake.tasks().len(), 2, "A and B were not sent again");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let all = rows(&["A", "B", "C"]);
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), catalog(&all));
}

#[test]
fn a_run_killed_while_polling_is_settled_by_the_next() {
    let fake = MeiliFake::start();
    fake.stall(true);
    let now = rows(&["A", "B", "C"]);
    let env = setup(&fake, &now, 10, 60);
    let mut child = env.command(&["sync"]).spawn().unwrap();
    wait_for("the task is remembered", Duration::from_secs(30), || {
        fake.tasks().len() == 1
            && env
                .db()
                .query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
                .is_ok_and(|n| n == 1)
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    fake.heal();
    env.run(&["sync"]).assert_code(0);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), catalog(&now));
    assert_eq!(fake.tasks().len(), 1, "settled, not sent again");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(remembered_tasks(&env), 0);
}

#[test]
fn a_wrong_key_refuses_the_target_naming_the_actions() {
    let fake = MeiliFake::start();
    let mut env = setup(&fake, &rows(&["A"]), 10, 30);
    env.set_env("MEILI_KEY", "not-the-key");
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.contains("invalid_api_key"), "{}", run.stderr);
    assert!(run.stderr.contains("documents.add"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-key"), "{}", run.stderr);
    assert!(env.statuses("p").values().all(|s| s == "pending"));
}

#[test]
fn a_task_the_service_no_longer_knows_is_sent_again() {
    let fake = MeiliFake::start();
    fake.stall(true);
    let now = rows(&["A", "B"]);
    let mut env = setup(&fake, &now, 10, 1);
    env.run(&["sync"]).assert_code(1);
    assert_eq!(remembered_tasks(&env), 1);
    // Its task queue was cleared (or the instance restored from a dump).
    fake.forget_task(0);
    fake.heal();
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(remembered_tasks(&env), 0);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), catalog(&now));
}

#[test]
fn two_feeds_on_one_index_wait_for_each_others_tasks() {
    let fake = MeiliFake::start();
    fake.stall(true);
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = fake.url();
                t.timeout_secs = Some(1);
                t.extra.insert("kind".into(), "meilisearch".into());
                t.extra.insert("index".into(), "catalog".into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]))
            .feed(FeedConfig::new("q", "q.ndjson", &["sku"])),
    );
    write_ndjson(&env.path("p.ndjson"), &rows(&["A", "B"]));
    write_ndjson(&env.path("q.ndjson"), &rows(&["X", "Y"]));
    env.set_env("FEEDSYNC_NOW", NOW);
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert_eq!(fake.tasks().len(), 1, "q enqueued nothing behind p's task");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("error: q: task 0 already queued at")
                && l.contains("nothing more is queued there until it has finished")),
        "{}",
        run.stderr
    );
    assert!(env.statuses("q").values().all(|s| s == "pending"));
    fake.heal();
    env.run(&["sync"]).assert_code(0);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert!(env.statuses("p").values().all(|s| s == "sent"));
    assert!(env.statuses("q").values().all(|s| s == "sent"));
    let docs = fake.index("catalog").unwrap().docs;
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["A", "B", "X", "Y"]);
}

fn doctor_lines(env: &Env) -> (i32, Vec<String>) {
    let run = env.run(&["doctor"]);
    assert!(!run.stdout.contains("masterKey-1") && !run.stderr.contains("masterKey-1"));
    (run.code, run.stdout.lines().map(String::from).collect())
}

#[test]
fn doctor_calls_a_missing_index_a_note_and_reads_an_existing_one() {
    let fake = MeiliFake::start();
    let env = setup(&fake, &rows(&["A"]), 10, 30);
    let (code, lines) = doctor_lines(&env);
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("note") && l.contains("index `p` does not exist yet")),
        "{lines:#?}"
    );
    assert!(fake.tasks().is_empty(), "doctor writes nothing");
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/health", "/indexes/p"]);
    env.run(&["sync"]).assert_code(0);
    let (code, lines) = doctor_lines(&env);
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("index `p` exists (primary key `id`)")),
        "{lines:#?}"
    );
}

#[test]
fn doctor_calls_another_primary_key_a_problem_naming_the_fix() {
    let fake = MeiliFake::start();
    fake.create_index("p", Some("sku"));
    let env = setup(&fake, &rows(&["A"]), 10, 30);
    let (code, lines) = doctor_lines(&env);
    assert_eq!(code, 1, "{lines:#?}");
    let at = lines
        .iter()
        .position(|l| l.starts_with("PROBLEM") && l.contains("primary key `sku`"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(lines[at + 1].contains("id_field = \"sku\""), "{lines:#?}");
}

#[test]
fn doctor_calls_a_wrong_key_a_problem_naming_the_actions() {
    let fake = MeiliFake::start();
    let mut env = setup(&fake, &rows(&["A"]), 10, 30);
    env.set_env("MEILI_KEY", "not-the-key");
    let (code, lines) = doctor_lines(&env);
    assert_eq!(code, 1, "{lines:#?}");
    let at = lines
        .iter()
        .position(|l| l.starts_with("PROBLEM") && l.contains("403"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    let fix = &lines[at + 1];
    for needle in ["api_key_env", "documents.add", "tasks.get", "indexes.get"] {
        assert!(fix.contains(needle), "{needle}: {lines:#?}");
    }
}

#[test]
fn the_key_stays_out_of_trace_logs_and_gzip_is_sent_when_asked() {
    let fake = MeiliFake::start();
    let now = rows(&["A", "B"]);
    let mut env = setup(&fake, &now, 10, 30);
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    env.write(
        "feedsync.toml",
        &config.replace("[target]\n", "[target]\ngzip = true\n"),
    );
    env.set_env("RUST_LOG", "trace");
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("masterKey-1"), "the key was logged");
    assert!(
        !std::fs::read(env.state_path())
            .unwrap()
            .windows(11)
            .any(|w| w == b"masterKey-1")
    );
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.header("content-encoding"), Some("gzip"));
    assert_eq!(crate::common::TargetFake::mirror(&fake, "p"), catalog(&now));
}
