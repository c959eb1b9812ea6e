//! The cron appliance: `run` and its schedules, `resync` and its flags,
//! legacy collect-then-send, `cleanup`, and `daemon` shutdown.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn items(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"sku\":\"A{i}\",\"price\":{i}}}\n"))
        .collect()
}

/// An installation with one feed `p` of `n` items, `schedule` lines as
/// (job, crontab) pairs, the feed edited by `feed`.
fn setup(
    receiver: &Receiver,
    n: usize,
    schedule: &[(&str, &str)],
    feed: impl FnOnce(FeedConfig) -> FeedConfig,
) -> Env {
    let mut env = Env::new();
    let mut config = ConfigBuilder::new().target(|t| {
        t.url = receiver.url("/{feed}");
        t.batch_size = Some(10);
    });
    for (job, line) in schedule {
        config = config.schedule(job, line);
    }
    env.write_config(&config.feed(feed(FeedConfig::new("p", "p.ndjson", &["sku"]))));
    env.write("p.ndjson", &items(n));
    // Schedules are local time; pin the zone so the tests mean one thing.
    env.set_env("TZ", "UTC");
    env
}

fn run_at(env: &mut Env, at: &str) -> Run {
    env.set_env("FEEDSYNC_NOW", at);
    env.run(&["run"])
}

/// The jobs in the run history, oldest first.
fn jobs_run(env: &Env) -> Vec<String> {
    let doc = env.run(&["runs", "--limit", "1000", "--json"]).json();
    let mut jobs: Vec<String> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap().to_string())
        .collect();
    jobs.reverse();
    jobs
}

#[test]
fn run_follows_the_schedule_in_order_and_catches_up_once() {
    let receiver = Receiver::start();
    let mut env = setup(
        &receiver,
        3,
        &[
            ("sync", "*/5 * * * *"),
            ("send", "*/5 * * * *"),
            ("retry", "*/5 * * * *"),
            ("cleanup", "0 2 * * *"),
            ("resync", "0 3 * * 0"),
        ],
        |f| f,
    );
    // 2026-11-29 is a Sunday. First run: only the current minute counts.
    run_at(&mut env, "2026-11-29T10:07:30Z").assert_code(0);
    assert!(jobs_run(&env).is_empty(), "10:07 is not a */5 minute");
    run_at(&mut env, "2026-11-29T10:10:05Z").assert_code(0);
    assert_eq!(jobs_run(&env), ["sync", "send", "retry"]);
    assert_eq!(receiver.catalog("p").len(), 3);
    // Same minute again: nothing new is due.
    run_at(&mut env, "2026-11-29T10:10:40Z").assert_code(0);
    assert_eq!(jobs_run(&env).len(), 3);

    // Down from 10:10 until 03:01 the next Sunday: every job runs once, in order.
    run_at(&mut env, "2026-12-06T03:01:00Z").assert_code(0);
    assert_eq!(
        jobs_run(&env)[3..],
        ["sync", "send", "retry", "resync", "cleanup"]
    );
    // A run with nothing due leaves no record.
    run_at(&mut env, "2026-12-06T03:02:00Z").assert_code(0);
    assert_eq!(jobs_run(&env).len(), 8);
}

#[test]
fn sunday_is_0_or_7_and_ranges_limit_the_hours() {
    for (line, sunday, monday) in [
        ("0 3 * * 0", true, false),
        ("0 3 * * 7", true, false),
        ("0 3 * * sun", true, false),
        ("0 3 * * 1-5", false, true),
        ("0 3 * * 5-7", true, false),
        ("0 2-4 * * *", true, true),
        ("0 9-17 * * *", false, false),
        ("@daily", false, false),
    ] {
        for (day, want) in [("2026-11-29", sunday), ("2026-11-30", monday)] {
            let receiver = Receiver::start();
            let mut env = setup(&receiver, 1, &[("sync", line)], |f| f);
            run_at(&mut env, &format!("{day}T03:00:20Z")).assert_code(0);
            let ran = jobs_run(&env).contains(&"sync".to_string());
            assert_eq!(ran, want, "{line} on {day}");
        }
    }
}

#[test]
fn a_bad_schedule_is_a_config_error() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 1, &[], |f| f);
    // The text as a user wrote it: a crontab line one field short.
    env.config(&format!(
        "[target]\nurl = \"{}\"\nbatch_size = 10\n\n[schedule]\nsync = \"*/5 * * *\"\n\n\
         [[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\n",
        receiver.url("/{feed}")
    ));
    let run = env.run(&["run"]);
    run.assert_code(2);
    assert!(run.stderr.contains("schedule.sync"), "{}", run.stderr);
}

#[test]
fn run_is_silent_when_another_run_holds_the_lock() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 1, &[], |f| f);
    let lock = std::fs::File::create(env.path("feedsync.sqlite.lock")).unwrap();
    lock.try_lock().unwrap();
    let run = env.run(&["run"]);
    run.assert_code(75);
    assert_eq!(run.stderr, "");
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn legacy_feeds_collect_on_sync_and_deliver_on_send() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 25, &[], |f| f.with("mode", "legacy"));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["upserts"], 25);
    assert_eq!(receiver.request_count(), 0, "legacy sync only collects");
    let status = env.run(&["status", "--json"]).json();
    assert_eq!(status["feeds"][0]["mode"], "legacy");
    assert_eq!(status["feeds"][0]["pending"], 25);

    let run = env.run(&["send", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["sent"], 25);
    assert_eq!(receiver.catalog("p").len(), 25);
    assert!(receiver.requests().iter().all(|r| r.body["sync"] == "send"));
    // Legacy feeds keep delivered data, so a resend needs no source.
    let kept: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM items WHERE data IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 25);
}

fn sent_ids(receiver: &Receiver) -> Vec<String> {
    let mut ids: Vec<String> = receiver
        .requests()
        .iter()
        .flat_map(|r| r.items().to_vec())
        .map(|i| {
            format!(
                "{} {}",
                i["op"].as_str().unwrap(),
                i["id"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn resync_sends_what_is_undelivered_and_force_sends_everything() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 5, &[], |f| f.with("max_deletes", "100%"));
    // A0 fails for good, A1 will retry, the rest are delivered.
    receiver.push(Behavior::Results(vec![
        json!({"id": "A0", "ok": false, "error": "bad"}),
        json!({"id": "A1", "ok": false, "retryable": true, "error": "busy"}),
    ]));
    env.run(&["sync"]).assert_code(1);
    env.write(
        "p.ndjson",
        &items(4).replace("\"price\":3}", "\"price\":33}"),
    );
    receiver.clear_requests();

    // Plain resync: changed A3, deleted A4, and the retry/failed A0 and A1.
    let run = env.run(&["resync", "--feed", "p", "--json"]);
    run.assert_code(0);
    assert_eq!(
        sent_ids(&receiver),
        ["delete A4", "upsert A0", "upsert A1", "upsert A3"]
    );
    assert!(receiver.requests().iter().all(|r| r.body["sync"] == "full"));
    assert!(env.statuses_via_cli("p").values().all(|s| s == "sent"));

    // --force: every item the source has; the delivered tombstone A4 is not resent.
    receiver.clear_requests();
    env.run(&["resync", "--feed", "p", "--force"])
        .assert_code(0);
    assert_eq!(
        sent_ids(&receiver),
        ["upsert A0", "upsert A1", "upsert A2", "upsert A3"]
    );
    // --force with a deletion the diff finds.
    receiver.clear_requests();
    env.write("p.ndjson", &items(3));
    env.run(&["resync", "--feed", "p", "--force"])
        .assert_code(0);
    assert_eq!(
        sent_ids(&receiver),
        ["delete A3", "upsert A0", "upsert A1", "upsert A2"]
    );
}

#[test]
fn resync_by_ids_sends_exactly_those_and_as_a_new_delivery() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 30, &[], |f| f);
    env.run(&["sync"]).assert_code(0);
    let first: Vec<(String, String)> = receiver
        .requests()
        .iter()
        .map(|r| {
            (
                r.items()[0]["id"].as_str().unwrap().to_string(),
                r.header("idempotency-key").unwrap().to_string(),
            )
        })
        .collect();
    receiver.clear_requests();
    // Another change in the source is left for the next sync.
    env.write(
        "p.ndjson",
        &items(30).replace("\"price\":7}", "\"price\":77}"),
    );
    env.run(&["resync", "--feed", "p", "--by-ids", "A0,A12"])
        .assert_code(0);
    assert_eq!(sent_ids(&receiver), ["upsert A0", "upsert A12"]);
    let r = &receiver.requests()[0];
    assert!(
        first
            .iter()
            .all(|(_, key)| key != r.header("idempotency-key").unwrap())
    );
    // A deliberate resend of the same batch twice is new each time.
    receiver.clear_requests();
    env.write("p.ndjson", &items(30));
    env.run(&["resync", "--feed", "p", "--by-ids", "A0"])
        .assert_code(0);
    env.run(&["resync", "--feed", "p", "--by-ids", "A0"])
        .assert_code(0);
    let keys: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn resync_no_reindex_resends_stored_data_without_the_source() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 12, &[], |f| f.with("keep_data", true));
    env.run(&["sync"]).assert_code(0);
    env.write("p.ndjson", &items(11));
    env.run(&["sync"]).assert_code(0);
    std::fs::remove_file(env.path("p.ndjson")).unwrap();
    receiver.clear_requests();

    // Nothing undelivered: nothing to resend.
    env.run(&["resync", "--feed", "p", "--no-reindex"])
        .assert_code(0);
    assert_eq!(receiver.request_count(), 0);
    // --force: every stored item, tombstones as deletes.
    env.run(&["resync", "--feed", "p", "--no-reindex", "--force"])
        .assert_code(0);
    let sent = sent_ids(&receiver);
    assert_eq!(sent.len(), 12);
    assert!(sent.contains(&"delete A11".to_string()));
    let a3 = receiver.catalog("p")["A3"].clone();
    assert_eq!(a3, json!({"sku": "A3", "price": 3}));

    env.run(&["resync", "--feed", "p", "--no-reindex", "--cleanup-feed"])
        .assert_code(2);
    let plain = setup(&receiver, 1, &[], |f| f);
    let run = plain.run(&["resync", "--feed", "p", "--no-reindex"]);
    run.assert_code(2);
    assert!(run.stderr.contains("keep_data"), "{}", run.stderr);
}

#[test]
fn resync_cleanup_feed_dry_run_and_batch_size() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 20, &[], |f| f);
    env.run(&["sync"]).assert_code(0);
    receiver.clear_requests();
    let before = env.dump();

    let run = env.run(&[
        "resync",
        "--feed",
        "p",
        "--cleanup-feed",
        "--dry-run",
        "--json",
    ]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["upserts"], 20);
    assert_eq!(run.json()["feeds"][0]["sent"], 0);
    assert_eq!(receiver.request_count(), 0);
    assert_eq!(env.dump(), before, "a dry run changes nothing");

    env.run(&[
        "resync",
        "--feed",
        "p",
        "--cleanup-feed",
        "--batch-size",
        "7",
    ])
    .assert_code(0);
    let sizes: Vec<usize> = receiver
        .requests()
        .iter()
        .map(|r| r.items().len())
        .collect();
    assert_eq!(sizes, [7, 7, 6]);
    env.run(&["resync", "--feed", "p", "--batch-size", "0"])
        .assert_code(2);
}

#[test]
fn an_interrupted_resync_carries_on_in_the_next_run() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 30, &[], |f| f);
    env.run(&["sync"]).assert_code(0);
    receiver.clear_requests();
    receiver.push(Behavior::Ok);
    receiver.push(Behavior::Status(503, "maintenance".into()));
    env.run(&["resync", "--feed", "p", "--force"])
        .assert_code(1);
    let statuses = env.statuses_via_cli("p");
    let pending = statuses.values().filter(|s| *s == "pending").count();
    assert_eq!(pending, 10, "the batches not tried stay pending");
    env.run(&["sync"]).assert_code(0);
    assert!(
        env.statuses_via_cli("p")
            .values()
            .filter(|s| *s == "pending")
            .count()
            == 0
    );
}

#[test]
fn cleanup_drops_only_old_delivered_tombstones() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 10, &[], |f| f.with("max_deletes", "100%"));
    env.set_env("FEEDSYNC_NOW", "2026-11-01T00:00:00Z");
    env.run(&["sync"]).assert_code(0);
    // A0..A2 deleted and delivered on Nov 1.
    env.write(
        "p.ndjson",
        &items(10)
            .lines()
            .skip(3)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    env.run(&["sync"]).assert_code(0);
    // A3, A4 deleted on Nov 20, delivered; A5 deleted but not delivered.
    env.set_env("FEEDSYNC_NOW", "2026-11-20T00:00:00Z");
    env.write(
        "p.ndjson",
        &items(10)
            .lines()
            .skip(5)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    env.run(&["sync"]).assert_code(0);
    env.write(
        "p.ndjson",
        &items(10)
            .lines()
            .skip(6)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    receiver.push(Behavior::Status(500, String::new()));
    env.run(&["sync"]).assert_code(1);

    env.set_env("FEEDSYNC_NOW", "2026-11-25T00:00:00Z");
    let run = env.run(&["cleanup", "-v"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("3 delivered tombstones dropped"),
        "{}",
        run.stderr
    );
    let ids: Vec<String> = env.statuses_via_cli("p").into_keys().collect();
    assert_eq!(ids, ["A3", "A4", "A5", "A6", "A7", "A8", "A9"]);
    let runs = env.run(&["runs", "--json"]).json();
    assert_eq!(runs["runs"][0]["job"], "cleanup");
}

#[test]
fn daemon_finishes_the_batch_in_flight_on_sigterm() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 50, &[], |f| f);
    receiver.set(Behavior::Hang(Duration::from_millis(1500)));
    let mut child = env.command(&["daemon"]).spawn().unwrap();
    wait_for("the daemon to send", Duration::from_secs(20), || {
        receiver.request_count() > 0
    });
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    // The batch in flight was answered and recorded; no more were sent.
    assert_eq!(receiver.request_count(), 1);
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses.values().filter(|s| *s == "sent").count(), 10);
    assert_eq!(statuses.values().filter(|s| *s == "pending").count(), 40);
    let runs = env.run(&["runs", "--json"]).json();
    assert_eq!(runs["runs"][0]["job"], "sync");
    assert_eq!(runs["runs"][0]["exit_code"], 0);
    let _: Value = runs;
}

#[test]
fn legacy_feeds_without_keep_data_still_deliver_on_send() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 5, &[], |f| {
        f.with("mode", "legacy").with("keep_data", false)
    });
    env.run(&["sync"]).assert_code(0);
    env.run(&["send"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 5);
    let kept: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM items WHERE data IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 0, "delivered data is dropped without keep_data");
}

#[test]
fn summaries_say_what_each_job_did() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 3, &[], |f| f.with("mode", "legacy"));
    let run = env.run(&["sync", "-v"]);
    assert!(
        run.stderr
            .contains("p: 3 read, 3 upserts, 0 deletes, 0 sent"),
        "{}",
        run.stderr
    );
    let run = env.run(&["send", "-v"]);
    assert!(
        run.stderr.contains("p: 3 upserts, 0 deletes, 3 sent"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("read"),
        "send reads no source: {}",
        run.stderr
    );
    let run = env.run(&["retry", "-v"]);
    assert!(run.stderr.contains("p: nothing to send"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// Time can jump (DESIGN.md, guarantee 9).

/// Each job's run start times (RFC 3339, UTC), earliest first.
fn runs_by_job(env: &Env) -> std::collections::BTreeMap<String, Vec<String>> {
    let doc = env.run(&["runs", "--limit", "10000", "--json"]).json();
    let mut by_job = std::collections::BTreeMap::<String, Vec<String>>::new();
    for r in doc["runs"].as_array().unwrap().iter().rev() {
        by_job
            .entry(r["job"].as_str().unwrap().to_string())
            .or_default()
            .push(r["started_at"].as_str().unwrap().to_string());
    }
    by_job
}

/// `run` once a minute from `from` for `minutes` minutes (UTC).
fn run_each_minute(env: &mut Env, from: &str, minutes: i64) {
    let from = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    for m in 0..minutes {
        let at = from + chrono::Duration::minutes(m);
        run_at(env, &at.to_rfc3339()).assert_code(0);
    }
}

#[test]
fn a_clock_stepped_back_runs_no_slot_twice() {
    let receiver = Receiver::start();
    let mut env = setup(
        &receiver,
        3,
        &[
            ("sync", "* * * * *"),
            ("send", "*/5 * * * *"),
            ("retry", "*/5 * * * *"),
            ("cleanup", "0 10 * * *"),
        ],
        |f| f,
    );
    // 09:50 to 10:00, then the clock is set back to 09:50 and runs on to 10:05.
    run_each_minute(&mut env, "2026-11-29T09:50:10Z", 11);
    run_each_minute(&mut env, "2026-11-29T09:50:20Z", 16);
    let runs = runs_by_job(&env);
    let minutes = |job: &str| -> Vec<String> {
        runs.get(job)
            .map(|t| t.iter().map(|s| s[11..16].to_string()).collect())
            .unwrap_or_default()
    };
    let sync: Vec<String> = (50..66)
        .map(|m| format!("{:02}:{:02}", 9 + m / 60, m % 60))
        .collect();
    assert_eq!(minutes("sync"), sync, "each minute's sync once");
    assert_eq!(minutes("send"), ["09:50", "09:55", "10:00", "10:05"]);
    assert_eq!(minutes("retry"), ["09:50", "09:55", "10:00", "10:05"]);
    assert_eq!(minutes("cleanup"), ["10:00"]);
}

#[test]
fn a_clock_that_was_days_fast_and_is_set_right_runs_on_at_once() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 3, &[("sync", "* * * * *")], |f| f);
    run_at(&mut env, "2099-01-01T10:00:00Z").assert_code(0);
    run_at(&mut env, "2099-01-01T10:01:00Z").assert_code(0);
    // Set right: the schedule is not held until 2099.
    run_at(&mut env, "2026-11-29T10:00:00Z").assert_code(0);
    run_at(&mut env, "2026-11-29T10:01:00Z").assert_code(0);
    // (`runs` lists by start time, so 2026 comes first.)
    let runs = runs_by_job(&env);
    assert_eq!(
        runs["sync"],
        [
            "2026-11-29T10:00:00Z",
            "2026-11-29T10:01:00Z",
            "2099-01-01T10:00:00Z",
            "2099-01-01T10:01:00Z"
        ]
    );
}

/// Schedules for the daylight-saving nights: a nightly 02:30 job and an
/// hourly one; sync and send only on New Year's Day.
const DST_SCHEDULE: &[(&str, &str)] = &[
    ("sync", "0 0 1 1 *"),
    ("send", "0 0 1 1 *"),
    ("retry", "0 * * * *"),
    ("cleanup", "30 2 * * *"),
];

#[test]
fn spring_forward_runs_the_skipped_time_once_after_the_gap() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 1, DST_SCHEDULE, |f| f);
    env.set_env("TZ", "Europe/Berlin");
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC). From 01:50 CET
    // (00:50 UTC) to 03:20 CEST (01:20 UTC).
    run_each_minute(&mut env, "2026-03-29T00:50:30Z", 31);
    let runs = runs_by_job(&env);
    assert_eq!(
        runs.get("cleanup").cloned().unwrap_or_default(),
        ["2026-03-29T01:00:30Z"],
        "02:30 runs once, at 03:00 CEST"
    );
    // 02:00 does not exist; it and 03:00 are one run at 03:00 CEST.
    assert_eq!(runs["retry"], ["2026-03-29T01:00:30Z"]);
}

#[test]
fn fall_back_runs_the_repeated_hour_once() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 1, DST_SCHEDULE, |f| f);
    env.set_env("TZ", "Europe/Berlin");
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC): 02:00-02:59
    // comes twice. From 01:50 CEST (23:50 UTC) to 03:10 CET (02:10 UTC).
    run_each_minute(&mut env, "2026-10-24T23:50:30Z", 141);
    let runs = runs_by_job(&env);
    assert_eq!(
        runs["cleanup"],
        ["2026-10-25T00:30:30Z"],
        "02:30 runs once, the first time"
    );
    // Each wall-clock hour once: 02:00 (the first one) and 03:00.
    assert_eq!(
        runs["retry"],
        ["2026-10-25T00:00:30Z", "2026-10-25T02:00:30Z"]
    );
}

/// Three items that became `retry` while the clock read 2099 (the target
/// answered 503, or as `fail` says), then the target heals and the clock
/// is set right, to 2026-11-29 10:00 UTC.
fn failed_in_2099(receiver: &Receiver, schedule: &[(&str, &str)], fail: Behavior) -> Env {
    let mut env = setup(receiver, 3, schedule, |f| {
        f.with("retry_base_secs", 60).with("retry_max_secs", 600)
    });
    receiver.set(fail);
    env.set_env("FEEDSYNC_NOW", "2099-01-01T10:00:00Z");
    env.run(&["sync"]).assert_code(1);
    assert_eq!(
        env.run(&["status", "--json"]).json()["feeds"][0]["retry"],
        3
    );
    receiver.set(Behavior::Ok);
    receiver.clear_requests();
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:00:00Z");
    env
}

#[test]
fn retry_items_failed_while_the_clock_was_fast_go_once_it_is_set_right() {
    let receiver = Receiver::start();
    let mut env = failed_in_2099(&receiver, &[], Behavior::Status(503, "down".into()));
    // Doctor sees them stranded, and says what to do.
    let doctor = env.run(&["doctor"]);
    doctor.assert_code(1);
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("3 retry items")),
        "{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.contains("feedsync retry"),
        "{}",
        doctor.stdout
    );
    // `retry` counts their wait (at most retry_max_secs) from now...
    env.run(&["retry"]).assert_code(0);
    assert!(receiver.delivered_items().is_empty(), "not due yet");
    let doctor = env.run(&["doctor"]);
    doctor.assert_code(0);
    // ...and sends them once it is over.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:10:01Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);
    assert_eq!(env.run(&["status", "--json"]).json()["feeds"][0]["sent"], 3);
}

#[test]
fn run_delivers_retry_items_failed_while_the_clock_was_fast() {
    let receiver = Receiver::start();
    let schedule = &[("sync", "* * * * *"), ("retry", "*/5 * * * *")];
    let mut env = failed_in_2099(&receiver, schedule, Behavior::Status(503, "down".into()));
    // A week of minutes would be 10,080 runs; every five minutes for an
    // hour shows the same.
    for m in (0..60).step_by(5) {
        run_at(&mut env, &format!("2026-11-29T10:{m:02}:01Z")).assert_code(0);
    }
    assert_eq!(receiver.catalog("p").len(), 3);
    let status = env.run(&["status", "--json"]).json();
    assert_eq!(status["feeds"][0]["retry"], 0);
}

#[test]
fn a_retry_after_is_still_honoured_when_the_clock_is_set_right() {
    let receiver = Receiver::start();
    let mut env = failed_in_2099(&receiver, &[], Behavior::RetryAfter(503, "7200".into()));
    env.run(&["retry"]).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:10:01Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.request_count(), 0, "the target asked for 2 h");
    env.set_env("FEEDSYNC_NOW", "2026-11-29T12:00:01Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);
}

#[test]
fn retry_items_stranded_by_an_older_feedsync_go_after_the_upgrade() {
    let receiver = Receiver::start();
    let mut env = failed_in_2099(&receiver, &[], Behavior::Status(503, "down".into()));
    env.downgrade_to_schema_1();
    env.run(&["retry"]).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:10:01Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);
}
