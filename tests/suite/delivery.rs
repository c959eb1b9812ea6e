//! Delivery against a receiver that misbehaves on demand: every row of
//! DESIGN.md's response table, backoff and Retry-After, give-up after
//! max_attempts, bisection, timeouts, and secrets kept out of logs.

use std::time::{Duration, Instant};

use crate::common::targets;
use crate::common::*;
use std::collections::BTreeMap;

use serde_json::{Value, json};

const NOW: &str = "2026-11-29T12:00:00Z";
const NOW_SECS: i64 = 1_795_953_600;

/// `n` items A0..A(n-1) in an NDJSON export.
fn items(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"sku\":\"A{i}\",\"price\":{i}}}\n"))
        .collect()
}

/// Feed `p` of `n` items to `receiver`, in batches of 10 unless `target`
/// (which edits `[target]`) says otherwise.
fn setup(receiver: &Receiver, n: usize, target: impl FnOnce(&mut TargetConfig)) -> Env {
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = receiver.url("/{feed}");
                t.batch_size = Some(10);
                target(t);
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &items(n));
    env.set_env("FEEDSYNC_NOW", NOW);
    env
}

/// (status, attempts, error, next_attempt_at) of one item.
fn item(env: &Env, id: &str) -> (String, i64, Option<String>, Option<i64>) {
    env.db()
        .query_row(
            "SELECT CASE status WHEN 0 THEN 'sent' WHEN 1 THEN 'pending' WHEN 2 THEN 'retry'
                 WHEN 3 THEN 'failed' END, attempts, error, next_attempt_at
             FROM items WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

fn count(env: &Env, status: &str) -> usize {
    env.count_via_cli("p", status)
}

#[test]
fn per_item_results_in_a_2xx() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 5, |_| {});
    receiver.push(Behavior::Results(vec![
        json!({"id": "A1", "ok": false, "retryable": false, "error": "price must be positive"}),
        json!({"id": "A2", "ok": false, "retryable": true, "error": "index busy"}),
        json!({"id": "A3", "ok": true}),
    ]));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let f = &run.json()["feeds"][0];
    assert_eq!(
        (
            f["sent"].as_u64(),
            f["retry"].as_u64(),
            f["failed"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(item(&env, "A1").0, "failed");
    assert_eq!(
        item(&env, "A1").2.as_deref(),
        Some("price must be positive")
    );
    assert_eq!(item(&env, "A2").0, "retry");
    assert_eq!(item(&env, "A2").2.as_deref(), Some("index busy"));
    for id in ["A0", "A3", "A4"] {
        assert_eq!(
            item(&env, id).0,
            "sent",
            "{id}: unlisted or ok means acknowledged"
        );
    }
}

#[test]
fn retryable_statuses_back_off_and_stop_the_feed() {
    for status in [408, 425, 429, 500, 502, 503] {
        let receiver = Receiver::start();
        let env = setup(&receiver, 25, |_| {});
        receiver.push(Behavior::Status(status, "busy".into()));
        let run = env.run(&["sync"]);
        run.assert_code(1);
        assert_eq!(
            receiver.request_count(),
            1,
            "{status}: no more batches in this run"
        );
        assert_eq!(count(&env, "retry"), 10, "{status}");
        assert_eq!(count(&env, "pending"), 15, "{status}");
        let (_, attempts, error, next) = item(&env, "A0");
        assert_eq!(attempts, 1);
        assert!(error.unwrap().contains(&status.to_string()));
        let wait = next.unwrap() - NOW_SECS;
        assert!(
            (60..=66).contains(&wait),
            "{status}: base backoff plus jitter, got {wait}"
        );
    }
}

#[test]
fn backoff_doubles_per_attempt_up_to_the_cap() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 1, |t| {
        t.retry_base_secs = Some(100);
        t.retry_max_secs = Some(300);
    });
    receiver.set(Behavior::Status(503, String::new()));
    env.run(&["sync"]).assert_code(1);
    let mut now = NOW_SECS;
    for want in [100, 200, 300, 300] {
        let (_, _, _, next) = item(&env, "A0");
        let wait = next.unwrap() - now;
        assert!(
            (want..=want + want / 10).contains(&wait),
            "want ~{want}, got {wait}"
        );
        now = next.unwrap();
        let at = chrono::DateTime::from_timestamp(now, 0)
            .unwrap()
            .to_rfc3339();
        env.set_env("FEEDSYNC_NOW", &at);
        env.run(&["retry"]).assert_code(1);
    }
}

#[test]
fn retry_after_in_seconds_and_as_a_date_wins_when_later() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 1, |_| {});
    receiver.push(Behavior::RetryAfter(429, "900".into()));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(item(&env, "A0").3, Some(NOW_SECS + 900));

    let receiver = Receiver::start();
    let env = setup(&receiver, 1, |_| {});
    receiver.push(Behavior::RetryAfter(
        503,
        "Sun, 29 Nov 2026 14:00:00 GMT".into(),
    ));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(item(&env, "A0").3, Some(NOW_SECS + 7200));

    // Shorter than the backoff: the backoff stands.
    let receiver = Receiver::start();
    let env = setup(&receiver, 1, |_| {});
    receiver.push(Behavior::RetryAfter(429, "1".into()));
    env.run(&["sync"]).assert_code(1);
    assert!(item(&env, "A0").3.unwrap() - NOW_SECS >= 60);
}

#[test]
fn retry_sends_only_due_items_and_max_attempts_gives_up() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 3, |t| t.max_attempts = Some(2));
    receiver.push(Behavior::Status(500, "down".into()));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(count(&env, "retry"), 3);

    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.request_count(), 1, "not due: nothing sent");

    env.set_env("FEEDSYNC_NOW", "2026-11-29T13:00:00Z");
    receiver.push(Behavior::Status(500, "still down".into()));
    let run = env.run(&["retry", "--json"]);
    run.assert_code(1);
    assert_eq!(run.json()["feeds"][0]["failed"], 3);
    let (status, attempts, error, _) = item(&env, "A0");
    assert_eq!((status.as_str(), attempts), ("failed", 2));
    assert!(error.unwrap().contains("still down"));

    // A failed item is not sent again until its data changes.
    env.set_env("FEEDSYNC_NOW", "2026-11-30T13:00:00Z");
    env.run(&["retry"]).assert_code(0);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), 2);
    env.write(
        "p.ndjson",
        &items(3).replace("\"price\":1}", "\"price\":11}"),
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").keys().collect::<Vec<_>>(), vec!["A1"]);
    assert_eq!(item(&env, "A1"), ("sent".into(), 0, None, None));
    assert_eq!(item(&env, "A0").0, "failed");
}

#[test]
fn a_413_splits_the_batch_and_a_lone_item_fails() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 10, |_| {});
    receiver.set(Behavior::TooLargeAbove(3));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 10);
    assert!(receiver.requests().iter().any(|r| r.items().len() == 10));

    let receiver = Receiver::start();
    let env = setup(&receiver, 2, |_| {});
    receiver.set(Behavior::TooLargeAbove(0));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(count(&env, "failed"), 2);
    assert!(item(&env, "A0").2.unwrap().contains("413"));
}

#[test]
fn bisection_isolates_the_one_rejected_item_in_500() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 500, |t| t.batch_size = Some(500));
    receiver.set(Behavior::RejectIds(vec!["A377".into()]));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    let f = &run.json()["feeds"][0];
    assert_eq!(
        (f["sent"].as_u64(), f["failed"].as_u64()),
        (Some(499), Some(1))
    );
    assert_eq!(count(&env, "failed"), 1);
    let (status, _, error, _) = item(&env, "A377");
    assert_eq!(status, "failed");
    assert_eq!(
        error.as_deref(),
        Some("{\"error\":\"rejected A377\"}"),
        "the body is the error"
    );
    assert_eq!(receiver.catalog("p").len(), 499);
    assert!(
        receiver.request_count() <= 2 * 9 + 1,
        "halving, not one by one"
    );
}

#[test]
fn refusals_stop_every_feed_on_that_target_and_keep_items_pending() {
    for status in [401, 403, 404, 405] {
        let receiver = Receiver::start();
        let other = Receiver::start();
        let env = Env::new();
        env.write_config(
            &ConfigBuilder::new()
                .target_url(&receiver.url("/{feed}"))
                .feed(FeedConfig::new("a", "p.ndjson", &["sku"]))
                .feed(FeedConfig::new("b", "p.ndjson", &["sku"]))
                .feed(FeedConfig {
                    url: Some(other.url("/{feed}")),
                    ..FeedConfig::new("c", "p.ndjson", &["sku"])
                }),
        );
        env.write("p.ndjson", &items(3));
        receiver.set(Behavior::Status(status, "go away".into()));
        let run = env.run(&["sync"]);
        run.assert_code(4);
        assert!(run.stderr.contains(&status.to_string()), "{}", run.stderr);
        assert_eq!(receiver.request_count(), 1, "{status}: feed b is not tried");
        assert_eq!(
            other.catalog("c").len(),
            3,
            "another target still gets its feed"
        );
        for feed in ["a", "b"] {
            assert!(
                env.statuses_via_cli(feed).values().all(|s| s == "pending"),
                "{status} {feed}"
            );
        }
        receiver.set(Behavior::Ok);
        env.run(&["sync"]).assert_code(0);
        assert_eq!(receiver.catalog("a").len(), 3);
        assert_eq!(receiver.catalog("b").len(), 3);
    }
}

#[test]
fn timeouts_and_dead_receivers_are_retried_in_bounded_time() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 3, |t| t.timeout_secs = Some(1));
    receiver.push(Behavior::Hang(Duration::from_secs(20)));
    let started = Instant::now();
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(item(&env, "A0").2.unwrap().contains("timed out"));
    assert_eq!(count(&env, "retry"), 3);

    receiver.push(Behavior::Close);
    let env = setup(&receiver, 3, |t| t.timeout_secs = Some(5));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(count(&env, "retry"), 3);

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&format!("http://127.0.0.1:{port}/x"))
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &items(2));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(count(&env, "retry"), 2);
}

#[test]
fn one_connection_serves_many_batches() {
    let receiver = Receiver::start();
    let env = setup(&receiver, 100, |_| {});
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), 10);
    assert_eq!(receiver.connections(), 1);
}

#[test]
fn idempotency_key_is_stable_across_a_retry() {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 3, |_| {});
    receiver.push(Behavior::Status(500, String::new()));
    env.run(&["sync"]).assert_code(1);
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    let r = receiver.requests();
    assert_eq!(r[0].body["sync"], "partial");
    assert_eq!(r[1].body["sync"], "retry");
    assert_eq!(
        r[0].header("idempotency-key"),
        r[1].header("idempotency-key")
    );
}

#[test]
fn secrets_never_reach_logs_or_the_state_file() {
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = receiver.url("/{feed}");
                t.token_env = Some("T".into());
                t.api_key_env = Some("K".into());
                t.signing_secret_env = Some("S".into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &items(20));
    let secrets = ["tok-SECRET-1a2b", "key-SECRET-3c4d", "sig-SECRET-5e6f"];
    env.set_env("T", secrets[0]);
    env.set_env("K", secrets[1]);
    env.set_env("S", secrets[2]);
    env.set_env("RUST_LOG", "trace");
    receiver.push(Behavior::Status(401, "bad token".into()));
    let refused = env.run(&["sync", "-vv"]);
    refused.assert_code(4);
    receiver.push(Behavior::Status(500, "oops".into()));
    let failed = env.run(&["sync", "-vv"]);
    let ok = env.run(&["sync", "-vv"]);
    let logs = format!("{}{}{}", refused.stderr, failed.stderr, ok.stderr);
    assert!(logs.contains("401"), "the logs say something: {logs}");
    let state = std::fs::read(env.state_path()).unwrap();
    for s in secrets {
        assert!(!logs.contains(s), "{s} in the logs");
        assert!(
            !state.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s} in the state file"
        );
    }
    let auth = receiver.requests()[0]
        .header("authorization")
        .map(String::from);
    assert_eq!(auth.as_deref(), Some("Bearer tok-SECRET-1a2b"));
}

#[test]
fn a_file_target_that_cannot_be_written_is_retried() {
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url("file:blocked/out.ndjson")
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &items(2));
    env.write("blocked", "a file where a folder should be");
    env.set_env("FEEDSYNC_NOW", NOW);
    let run = env.run(&["sync"]);
    run.assert_code(1);
    assert!(run.stderr.contains("blocked/out.ndjson"), "{}", run.stderr);
    assert_eq!(count(&env, "retry"), 2);
    std::fs::remove_file(env.path("blocked")).unwrap();
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(count(&env, "sent"), 2);
    let text = std::fs::read_to_string(env.path("blocked/out.ndjson")).unwrap();
    let batch: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(batch["sync"], "retry");
}

#[test]
fn a_tls_failure_refuses_the_target_and_keeps_items_pending() {
    // A plain-HTTP server behind an https:// URL: the TLS handshake fails.
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = format!("https://{}/{{feed}}", receiver.addr());
                t.timeout_secs = Some(5);
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &items(3));
    let run = env.run(&["sync"]);
    run.assert_code(4);
    assert!(run.stderr.to_lowercase().contains("tls"), "{}", run.stderr);
    assert!(env.statuses_via_cli("p").values().all(|s| s == "pending"));
}

/// A 200 that does not arrive whole in time acknowledges nothing: the batch
/// is `retry`, nothing is `sent`, and a later healthy run delivers it.
fn an_unfinished_2xx_is_retried(behavior: Behavior, error: &str) {
    let receiver = Receiver::start();
    let mut env = setup(&receiver, 3, |t| t.timeout_secs = Some(2));
    receiver.push(behavior.clone());
    let run = env.run(&["sync"]);
    run.assert_code(1);
    let statuses = env.statuses_via_cli("p");
    let statuses: Vec<(&str, &str)> = statuses
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![("A0", "retry"), ("A1", "retry"), ("A2", "retry")],
        "{behavior:?}"
    );
    assert!(receiver.catalog("p").is_empty());
    let said = item(&env, "A0").2.unwrap();
    assert!(said.contains(error), "{behavior:?}: {said}");
    assert!(run.stderr.contains(error), "{}", run.stderr);

    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    assert_eq!(count(&env, "sent"), 3, "{behavior:?}");
    assert_eq!(receiver.catalog("p").len(), 3, "{behavior:?}");
}

fn a_retryable_result_for(id: &str) -> Vec<Value> {
    vec![json!({"id": id, "ok": false, "retryable": true, "error": "index busy, try again"})]
}

#[test]
fn a_2xx_body_shorter_than_its_content_length_acknowledges_nothing() {
    an_unfinished_2xx_is_retried(
        Behavior::CutBody(a_retryable_result_for("A0")),
        "HTTP 200, but the answer was cut short",
    );
}

#[test]
fn a_2xx_body_slower_than_the_timeout_acknowledges_nothing() {
    // About 80 bytes at 10 a second: eight seconds, against a timeout of two.
    an_unfinished_2xx_is_retried(
        Behavior::TrickleBody(a_retryable_result_for("A0"), Duration::from_millis(100)),
        "HTTP 200, but the answer was not complete after 2 s",
    );
}

#[test]
fn response_headers_slower_than_the_timeout_acknowledge_nothing() {
    an_unfinished_2xx_is_retried(
        Behavior::TrickleHead(Duration::from_millis(100)),
        "timed out after 2 s",
    );
}

/// `n` NDJSON lines of about 230 bytes each, S00000 onwards.
fn wide_items(n: usize) -> String {
    let text = "lorem ipsum dolor sit amet ".repeat(6);
    (0..n)
        .map(|i| {
            format!(
                "{{\"sku\":\"S{i:05}\",\"name\":\"Product {i}\",\"price\":{i},\"description\":\"{text}{i}\"}}\n"
            )
        })
        .collect()
}

/// A feed `p` of `n` wide items, sent to `file:OUT`.
fn file_target_env(out: &std::path::Path, n: usize) -> Env {
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&format!("file:{}", out.display()))
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", &wide_items(n));
    env.set_env("FEEDSYNC_NOW", NOW);
    env
}

/// What a line-by-line reader gets back from a file target, from byte
/// `skip` on: every line must be a whole envelope of feed `p`. id → data as
/// last written.
fn read_file_target(out: &std::path::Path, skip: usize) -> BTreeMap<String, Value> {
    for (n, batch) in targets::file_envelopes(out, skip).iter().enumerate() {
        assert_eq!(batch["feed"], "p", "envelope {}", n + 1);
    }
    targets::file_mirror(out, skip, "p")
}

/// The source's items as a line reader of the target should see them.
fn wide_catalog(n: usize) -> BTreeMap<String, Value> {
    wide_items(n)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["sku"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

const WIDE: usize = 50_000;

/// A first `sync` that runs out of room (`fill` runs it so), then more room
/// (`make_room`), then `sync` and `retry`: no line is ever torn, no item
/// counted `sent` is missing from the file, and in the end the file holds
/// every item whole. The file's first `skip` bytes are not the feed's.
fn a_full_disk_loses_nothing(
    env: &mut Env,
    out: &std::path::Path,
    skip: usize,
    fill: impl FnOnce(&Env) -> Run,
    make_room: impl FnOnce(),
) {
    let run = fill(env);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot write {}", out.display())),
        "{}",
        run.stderr
    );
    let got = read_file_target(out, skip);
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses.len(), WIDE);
    let sent: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| *s == "sent")
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<&&String> = sent.iter().filter(|id| !got.contains_key(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} items counted sent are not in the file, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(!sent.is_empty() && sent.len() < WIDE, "{} sent", sent.len());
    assert!(statuses.values().any(|s| s == "retry"));

    make_room();
    env.run(&["sync"]).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-11-30T12:00:00Z");
    env.run(&["retry"]).assert_code(0);
    let statuses = env.statuses_via_cli("p");
    assert!(statuses.values().all(|s| s == "sent"));
    let got = read_file_target(out, skip);
    assert!(got == wide_catalog(WIDE), "the file holds every item whole");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when this process may not mount (not root, or no privilege).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let done = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        done.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let done = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(done.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn a_full_disk_never_tears_a_file_targets_line() {
    let out_dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(out_dir.path(), "2m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the file-size limit test covers the same path"
        );
        return;
    };
    let out = out_dir.path().join("p.ndjson");
    let mut env = file_target_env(&out, WIDE);
    a_full_disk_loses_nothing(
        &mut env,
        &out,
        0,
        |env| {
            let run = env.run(&["sync"]);
            assert!(run.stderr.contains("No space left"), "{}", run.stderr);
            run
        },
        || disk.resize("64m"),
    );
}

#[test]
fn a_file_size_limit_never_tears_a_file_targets_line() {
    use std::os::unix::process::CommandExt;
    // The limit holds for every file the process writes, the state file
    // too: the target file starts just under it (a sparse hole, then a
    // newline) so that it is the one to hit it. The room left (3 MB) holds
    // at least one whole group of batches (up to 8 × ~130 KB), whatever the
    // courier groups, and far less than the feed's 13 MB.
    const LIMIT: u64 = 256 << 20;
    let skip = (LIMIT - (3 << 20)) as usize;
    let env_dir = tempfile::tempdir().unwrap();
    let out = env_dir.path().join("p.ndjson");
    {
        let f = std::fs::File::create(&out).unwrap();
        f.set_len(skip as u64 - 1).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_at(b"\n", skip as u64 - 1).unwrap();
    }
    let mut env = file_target_env(&out, WIDE);
    a_full_disk_loses_nothing(
        &mut env,
        &out,
        skip,
        |env| {
            let mut cmd = env.command(&["sync"]);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: LIMIT,
                        rlim_max: LIMIT,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Without this the kernel kills the process (SIGXFSZ)
                    // instead of failing the write with EFBIG.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
            let run: Run = cmd.output().unwrap().into();
            assert!(run.stderr.contains("too large"), "{}", run.stderr);
            run
        },
        || {},
    );
}

#[test]
fn a_torn_last_line_is_cut_before_the_next_batch() {
    let whole = r#"{"feed":"p","sync":"partial","items":[{"id":"OLD","key":{"sku":"OLD"},"op":"delete","hash":"00000000000000000000000000000000"}]}"#;
    let torn = r#"{"feed":"p","sync":"partial","items":[{"id":"S00007","key":{"sku":"S0"#;
    for before in [format!("{whole}\n{torn}"), torn.to_string()] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.ndjson");
        std::fs::write(&out, &before).unwrap();
        let env = file_target_env(&out, 3);
        env.run(&["sync"]).assert_code(0);
        let text = std::fs::read_to_string(&out).unwrap();
        let kept = before.len() - torn.len();
        assert_eq!(&text[..kept], &before[..kept], "whole lines stay");
        let got = read_file_target(&out, kept);
        assert!(got == wide_catalog(3), "{text}");
    }
}
