//! Monitoring (DESIGN.md, "Monitoring"): the `[metrics]` file checked by
//! `promtool` and against `status --json` after syncs, failures and a
//! SIGKILL, its counter across runs; the `[notify]` heartbeat pings against
//! a loopback ping server (order, bodies, and the work that pings nothing),
//! a dead ping URL changing nothing, and `doctor`'s HEAD.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const PING_VAR: &str = "FEEDSYNC_PING_URL";

/// A heartbeat service on 127.0.0.1: records each request as (method,
/// path, body) and answers every one with `status` and "OK", as
/// healthchecks.io does.
struct PingServer {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    status: Arc<AtomicU16>,
}

impl PingServer {
    fn start() -> PingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&status));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, st) = (Arc::clone(&s), Arc::clone(&st));
                std::thread::spawn(move || serve_ping(conn, &s, &st));
            }
        });
        PingServer { port, seen, status }
    }

    /// The check's URL; its path stands for healthchecks.io's uuid.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ping/c0ffee", self.port)
    }

    fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// (method, path) of each request so far.
    fn calls(&self) -> Vec<(String, String)> {
        self.seen().into_iter().map(|(m, p, _)| (m, p)).collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn serve_ping(conn: TcpStream, seen: &Mutex<Vec<(String, String, String)>>, status: &AtomicU16) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let is_head = method == "HEAD";
        seen.lock().unwrap().push((method, path, body));
        let code = status.load(Ordering::SeqCst);
        let head =
            format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n");
        let mut w = &conn;
        let mut answer = head.into_bytes();
        if !is_head {
            answer.extend_from_slice(b"OK");
        }
        if w.write_all(&answer).is_err() {
            return;
        }
    }
}

/// A URL on which nothing listens: connections are refused.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/ping/dead")
}

fn catalog(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"sku": format!("S{i}"), "price": i}))
        .collect()
}

/// One feed `p` of `rows` to the receiver, with `[metrics] file =
/// "feedsync.prom"` and, when given, `[notify] ping_url_env`.
fn setup(
    receiver: &Receiver,
    rows: &[Value],
    notify: bool,
    edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Env {
    let env = Env::new();
    write_ndjson(&env.path("p.ndjson"), rows);
    let mut metrics = toml::Table::new();
    metrics.insert("file".into(), "feedsync.prom".into());
    let mut config = ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"]),
    )
    .target(|t| t.batch_size = Some(2))
    .top("metrics", metrics);
    if notify {
        let mut n = toml::Table::new();
        n.insert("ping_url_env".into(), PING_VAR.into());
        config = config.top("notify", n);
    }
    env.write_config(&edit(config));
    env
}

/// The metrics file's samples: `name{labels}` → value.
fn samples(env: &Env) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(env.path("feedsync.prom")).expect("the metrics file");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// `promtool check metrics` accepts the file. Without promtool the check
/// is skipped with one line, except under CI, where it must be installed.
fn promtool_accepts(env: &Env) {
    let file = std::fs::File::open(env.path("feedsync.prom")).unwrap();
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(env.path("feedsync.prom")).unwrap()
        ),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is needed under CI (Debian package `prometheus`): {e}")
        }
        Err(_) => eprintln!("promtool not installed: skipping `promtool check metrics`"),
    }
}

/// The metrics file says what `status --json` says, feed `p`.
#[track_caller]
fn assert_matches_status(env: &Env) {
    promtool_accepts(env);
    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
    let feed = &status.json()["feeds"][0];
    let m = samples(env);
    for s in ["pending", "sent", "retry", "failed"] {
        assert_eq!(
            m[&format!("feedsync_items{{feed=\"p\",status=\"{s}\"}}")],
            feed[s].as_f64().unwrap(),
            "status {s}: metrics {m:?}, status {feed}"
        );
    }
    assert_eq!(
        m["feedsync_items_live{feed=\"p\"}"],
        feed["live"].as_f64().unwrap()
    );
    match feed["last_success_at"].as_str() {
        None => assert!(!m.contains_key("feedsync_last_success_timestamp_seconds{feed=\"p\"}")),
        Some(t) => {
            let t = chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp() as f64;
            assert_eq!(m["feedsync_last_success_timestamp_seconds{feed=\"p\"}"], t);
        }
    }
}

#[test]
fn the_metrics_file_follows_syncs_and_failures() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &catalog(5), false, |c| c);
    env.run(&["sync"]).assert_code(0);
    assert_matches_status(&env);
    let m = samples(&env);
    assert_eq!(m["feedsync_items{feed=\"p\",status=\"sent\"}"], 5.0);
    assert_eq!(m["feedsync_last_run_exit_code{job=\"sync\"}"], 0.0);
    assert!(m.contains_key("feedsync_last_run_duration_seconds{job=\"sync\"}"));
    assert!(m["feedsync_last_run_timestamp_seconds{job=\"sync\"}"] > 1.7e9);

    // Two changed, one deleted, one new, and the target failing: retries.
    let mut rows = catalog(5);
    rows[0]["price"] = json!(100);
    rows[1]["price"] = json!(101);
    rows.remove(4);
    rows.push(json!({"sku": "S9", "price": 9}));
    write_ndjson(&env.path("p.ndjson"), &rows);
    receiver.set(Behavior::Status(503, "{}".into()));
    env.run(&["sync"]).assert_code(1);
    assert_matches_status(&env);
    let m = samples(&env);
    assert_eq!(
        m["feedsync_items{feed=\"p\",status=\"retry\"}"], 2.0,
        "{m:?}"
    );
    assert_eq!(m["feedsync_last_run_exit_code{job=\"sync\"}"], 1.0);
    assert_eq!(m["feedsync_items_live{feed=\"p\"}"], 5.0);

    // A job that changes nothing (no retry is due yet) still rewrites the
    // file, and stays right.
    std::fs::remove_file(env.path("feedsync.prom")).unwrap();
    env.run(&["retry"]).assert_code(0);
    assert_matches_status(&env);
    assert!(samples(&env).contains_key("feedsync_last_run_exit_code{job=\"retry\"}"));

    // A source error: exit 3 recorded, the state untouched.
    env.write("p.ndjson", "{\"sku\": \"S1\"\n");
    env.run(&["sync"]).assert_code(3);
    assert_matches_status(&env);
    assert_eq!(
        samples(&env)["feedsync_last_run_exit_code{job=\"sync\"}"],
        3.0
    );
}

#[test]
fn the_oldest_pending_change_has_an_age() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &catalog(3), false, |c| c);
    let mut env = env;
    // Legacy: `sync` only collects, so the items stay pending.
    env.write_config(
        &ConfigBuilder::one_feed(
            &receiver.url("/{feed}"),
            FeedConfig::new("p", "p.ndjson", &["sku"]).with("mode", "legacy"),
        )
        .top("metrics", {
            let mut t = toml::Table::new();
            t.insert("file".into(), "feedsync.prom".into());
            t
        }),
    );
    env.set_env("FEEDSYNC_NOW", "2026-03-01T10:00:00Z");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        samples(&env)["feedsync_oldest_pending_age_seconds{feed=\"p\"}"],
        0.0
    );
    env.set_env("FEEDSYNC_NOW", "2026-03-01T10:02:30Z");
    env.run(&["retry"]).assert_code(0);
    let m = samples(&env);
    assert_eq!(m["feedsync_oldest_pending_age_seconds{feed=\"p\"}"], 150.0);
    assert_eq!(m["feedsync_items{feed=\"p\",status=\"pending\"}"], 3.0);
    assert_matches_status(&env);
    env.run(&["send"]).assert_code(0);
    assert_eq!(
        samples(&env)["feedsync_oldest_pending_age_seconds{feed=\"p\"}"],
        0.0
    );
    assert_matches_status(&env);
}

#[test]
fn the_sent_counter_keeps_counting_across_runs() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &catalog(10), false, |c| c);
    let total = |env: &Env| samples(env)["feedsync_items_sent_total{feed=\"p\"}"];
    env.run(&["sync"]).assert_code(0);
    assert_eq!(total(&env), 10.0);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(total(&env), 10.0, "nothing changed, nothing sent");
    let mut rows = catalog(10);
    rows[0]["price"] = json!(50);
    rows.pop();
    write_ndjson(&env.path("p.ndjson"), &rows);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(total(&env), 12.0, "one upsert and one delete acknowledged");
    // A failed delivery acknowledges nothing; its resend later does.
    rows[1]["price"] = json!(51);
    write_ndjson(&env.path("p.ndjson"), &rows);
    receiver.set(Behavior::Status(503, "{}".into()));
    env.run(&["sync"]).assert_code(1);
    assert_eq!(total(&env), 12.0);
    receiver.set(Behavior::Ok);
    env.run(&["resync", "--feed", "p"]).assert_code(0);
    assert_eq!(total(&env), 13.0);
    assert_matches_status(&env);

    // `cleanup` a month on drops the delivered tombstone: counted again.
    let mut env = env;
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    env.set_env("FEEDSYNC_NOW", &later.to_rfc3339());
    env.run(&["cleanup"]).assert_code(0);
    assert_matches_status(&env);
    assert_eq!(
        samples(&env)["feedsync_items{feed=\"p\",status=\"sent\"}"],
        9.0
    );
    assert_eq!(total(&env), 13.0, "a counter never goes down");
}

#[test]
fn after_a_sigkill_the_next_job_writes_the_true_counts() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &catalog(8), false, |c| c);
    env.run(&["sync"]).assert_code(0);
    assert_matches_status(&env);
    // Every item changes; the target takes one batch, then hangs.
    let rows: Vec<Value> = (0..8)
        .map(|i| json!({"sku": format!("S{i}"), "price": 100 + i}))
        .collect();
    write_ndjson(&env.path("p.ndjson"), &rows);
    receiver.clear_requests();
    receiver.push(Behavior::Ok);
    receiver.set(Behavior::Hang(Duration::from_secs(60)));
    let mut child = env.command(&["sync"]).spawn().unwrap();
    wait_for("the second batch", Duration::from_secs(30), || {
        receiver.request_count() >= 2
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    receiver.set(Behavior::Ok);
    // A job that changes nothing (no retry is due): the file it writes
    // must count again.
    env.run(&["retry"]).assert_code(0);
    assert_matches_status(&env);
    let m = samples(&env);
    assert!(
        m["feedsync_items{feed=\"p\",status=\"pending\"}"] >= 6.0,
        "{m:?}"
    );
}

/// `run` at a fixed minute with every job scheduled yearly except `jobs`.
fn run_at(env: &mut Env, at: &str) -> Run {
    env.set_env("FEEDSYNC_NOW", at);
    env.set_env("TZ", "UTC");
    env.run(&["run"])
}

fn yearly(c: ConfigBuilder) -> ConfigBuilder {
    c.schedule("sync", "0 0 1 1 *")
        .schedule("send", "0 0 1 1 *")
        .schedule("retry", "0 0 1 1 *")
        .schedule("cleanup", "0 0 1 1 *")
}

#[test]
fn a_good_run_pings_start_then_success_with_its_summary() {
    let receiver = Receiver::start();
    let pings = PingServer::start();
    let mut env = setup(&receiver, &catalog(3), true, |c| c);
    env.set_env(PING_VAR, &pings.url());
    env.run(&["sync"]).assert_code(0);
    let seen = pings.seen();
    assert_eq!(
        pings.calls(),
        [
            ("GET".to_string(), "/ping/c0ffee/start".to_string()),
            ("POST".to_string(), "/ping/c0ffee".to_string())
        ]
    );
    assert!(
        seen[1]
            .2
            .contains("sync: p: 3 read, 3 upserts, 0 deletes, 3 sent"),
        "{}",
        seen[1].2
    );
    assert!(!seen[1].2.contains('\n'), "one line: {:?}", seen[1].2);

    // `run` with its sync due pings the same way.
    pings.clear();
    let run = run_at(&mut env, "2026-03-01T10:00:00Z");
    run.assert_code(0);
    assert_eq!(pings.calls().len(), 2, "{:?}", pings.calls());
    assert_eq!(pings.calls()[0].1, "/ping/c0ffee/start");
    assert_eq!(pings.calls()[1], ("POST".into(), "/ping/c0ffee".into()));
}

#[test]
fn a_failed_run_pings_fail_with_the_summary_and_the_first_error() {
    let receiver = Receiver::start();
    let pings = PingServer::start();
    let mut env = setup(&receiver, &catalog(3), true, |c| c);
    env.set_env(PING_VAR, &pings.url());
    receiver.set(Behavior::Status(
        503,
        "{\"error\":\"down for upgrade\"}".into(),
    ));
    env.run(&["sync"]).assert_code(1);
    let seen = pings.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("GET", "/ping/c0ffee/start")
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("POST", "/ping/c0ffee/fail")
    );
    let (summary, error) = seen[1].2.split_once('\n').expect("summary, then the error");
    assert!(summary.contains("sync: p: 3 read"), "{summary}");
    assert!(error.contains("503"), "{error}");

    // A source that cannot be read: exit 3, and its error.
    pings.clear();
    env.write("p.ndjson", "{\"sku\": \n");
    env.run(&["sync"]).assert_code(3);
    let seen = pings.seen();
    assert_eq!(seen[1].1, "/ping/c0ffee/fail");
    assert!(
        seen[1].2.contains("exit 3") && seen[1].2.contains("p.ndjson"),
        "{}",
        seen[1].2
    );
}

#[test]
fn no_ping_for_a_held_lock_a_minute_with_nothing_due_or_a_dry_run() {
    let receiver = Receiver::start();
    let pings = PingServer::start();
    let mut env = setup(&receiver, &catalog(3), true, yearly);
    env.set_env(PING_VAR, &pings.url());
    run_at(&mut env, "2026-03-01T10:00:00Z").assert_code(0);
    run_at(&mut env, "2026-03-01T10:01:00Z").assert_code(0);
    assert!(
        pings.calls().is_empty(),
        "nothing was due: {:?}",
        pings.calls()
    );
    env.run(&["sync", "--dry-run"]).assert_code(0);
    env.run(&["resync", "--feed", "p", "--dry-run"])
        .assert_code(0);
    assert!(pings.calls().is_empty(), "dry runs: {:?}", pings.calls());
    let lock = std::fs::File::create(env.path("feedsync.sqlite.lock")).unwrap();
    lock.try_lock().unwrap();
    env.run(&["sync"]).assert_code(75);
    run_at(&mut env, "2026-01-01T00:00:00Z").assert_code(75);
    assert!(
        pings.calls().is_empty(),
        "the lock was held: {:?}",
        pings.calls()
    );
    drop(lock);
    env.run(&["cleanup"]).assert_code(0);
    assert_eq!(pings.calls().len(), 2, "a direct job pings");
}

/// What a user can see of an installation: exit code, items, runs.
fn outcome(env: &Env, args: &[&str]) -> (i32, Vec<(String, String)>, usize) {
    let code = env.run(args).code;
    let items: Vec<(String, String)> = env.statuses_via_cli("p").into_iter().collect();
    let runs = env.run(&["runs", "--json"]).json()["runs"]
        .as_array()
        .unwrap()
        .len();
    (code, items, runs)
}

#[test]
fn a_dead_ping_url_changes_nothing_and_is_never_printed() {
    let plain_receiver = Receiver::start();
    let plain = setup(&plain_receiver, &catalog(3), false, |c| c);
    let receiver = Receiver::start();
    let mut env = setup(&receiver, &catalog(3), true, |c| c);
    let dead = dead_url();
    env.set_env(PING_VAR, &dead);
    for (source, behavior) in [
        (catalog(3), Behavior::Ok),
        (catalog(5), Behavior::Status(503, "{}".into())),
    ] {
        write_ndjson(&plain.path("p.ndjson"), &source);
        write_ndjson(&env.path("p.ndjson"), &source);
        plain_receiver.set(behavior.clone());
        receiver.set(behavior);
        assert_eq!(outcome(&env, &["sync"]), outcome(&plain, &["sync"]));
    }
    let run = env.run(&["sync"]);
    assert!(
        run.stderr.contains(PING_VAR),
        "the warning names the variable: {}",
        run.stderr
    );
    let port = dead.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert!(
        !run.stderr.contains(port) && !run.stderr.contains("/ping/dead"),
        "{}",
        run.stderr
    );

    // A ping service answering 500: tried twice, a warning, nothing else.
    let pings = PingServer::start();
    pings.status.store(500, Ordering::SeqCst);
    env.set_env(PING_VAR, &pings.url());
    receiver.set(Behavior::Ok);
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(
        pings.calls().len(),
        4,
        "two tries each: {:?}",
        pings.calls()
    );
    assert!(!run.stderr.contains("c0ffee"), "{}", run.stderr);

    // Unset: a warning naming it; the sync runs all the same.
    env.envs.retain(|(k, _)| k != PING_VAR);
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert!(run.stderr.contains(PING_VAR), "{}", run.stderr);
}

#[test]
fn doctor_checks_the_ping_url_with_a_head() {
    let receiver = Receiver::start();
    let pings = PingServer::start();
    let mut env = setup(&receiver, &catalog(1), true, |c| c);
    env.set_env(PING_VAR, &pings.url());
    let run = env.run(&["doctor"]);
    assert!(
        run.stdout
            .contains(&format!("heartbeat URL in {PING_VAR} answers")),
        "{}",
        run.stdout
    );
    assert_eq!(
        pings.calls(),
        [("HEAD".to_string(), "/ping/c0ffee".to_string())]
    );

    let dead = dead_url();
    env.set_env(PING_VAR, &dead);
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains(&format!("heartbeat URL in {PING_VAR} does not answer")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("/ping/dead") && !run.stderr.contains("/ping/dead"));

    env.envs.retain(|(k, _)| k != PING_VAR);
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains(&format!(
            "{PING_VAR} (named by notify.ping_url_env) is not set"
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn monitoring_keys_are_checked() {
    let env = Env::new();
    env.write("p.ndjson", "");
    env.config(
        "[target]\nurl = \"file:out.ndjson\"\n[notify]\nping_url = \"https://hc-ping.com/x\"\n\
         [[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\n",
    );
    let run = env.run(&["status"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("ping_url") && run.stderr.contains("feedsync.toml"),
        "{}",
        run.stderr
    );
    env.config(
        "[target]\nurl = \"file:out.ndjson\"\n[metrics]\nfile = \"\"\n\
         [[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\n",
    );
    let run = env.run(&["status"]);
    run.assert_code(2);
    assert!(run.stderr.contains("metrics.file"), "{}", run.stderr);
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_a_warning() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &catalog(2), false, |c| {
        let mut t = toml::Table::new();
        t.insert("file".into(), "missing-folder/feedsync.prom".into());
        c.top("metrics", t)
    });
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("warn") && run.stderr.contains("missing-folder/feedsync.prom"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.count_via_cli("p", "sent"),
        2,
        "the sync itself went through"
    );
}
