//! Sources beyond files, each against a real local thing: an HTTP export
//! with ETags on loopback, real shell commands, a real SQLite database; and
//! incremental feeds.

use crate::common::*;
use serde_json::{Value, json};

fn ndjson(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// `feed` sent to `receiver`.
fn feed_config(receiver: &Receiver, feed: FeedConfig) -> ConfigBuilder {
    ConfigBuilder::new()
        .target_url(&receiver.url("/in/{feed}"))
        .feed(feed)
}

/// Feed `p` keyed by `sku`, its source still to say.
fn p() -> FeedConfig {
    FeedConfig {
        name: "p".into(),
        key: vec!["sku".into()],
        ..FeedConfig::default()
    }
}

/// Feed `p` read from `source` (a path or URL).
fn p_from(source: &str) -> FeedConfig {
    FeedConfig {
        source: Some(source.into()),
        ..p()
    }
}

fn posts(receiver: &Receiver) -> Vec<Request> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

use crate::common::receiver::Request;

#[test]
fn http_source_with_etag_sends_only_changes_and_304_costs_nothing() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&feed_config(&receiver, p_from(&receiver.url("/export"))));
    let v1 = ndjson(&[json!({"sku": "A", "p": 1}), json!({"sku": "B", "p": 2})]);
    receiver.set_export(Export {
        body: v1,
        content_type: "application/x-ndjson; charset=utf-8".into(),
        etag: Some("\"v1\"".into()),
        last_modified: None,
    });
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p").len(),
        2,
        "format from the content type"
    );
    assert_eq!(receiver.gets()[0].header("if-none-match"), None);

    // Unchanged: a conditional GET, a 304, nothing read or sent.
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 0);
    assert_eq!(receiver.gets()[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(posts(&receiver).len(), 1);

    // Changed: only the change is sent.
    receiver.set_export(Export {
        body: ndjson(&[json!({"sku": "A", "p": 1}), json!({"sku": "B", "p": 3})]),
        content_type: "application/x-ndjson".into(),
        etag: Some("\"v2\"".into()),
        last_modified: None,
    });
    env.run(&["sync"]).assert_code(0);
    let last = posts(&receiver).pop().unwrap();
    assert_eq!(last.items().len(), 1);
    assert_eq!(last.items()[0]["id"], "B");

    // A bad export is not remembered: the next GET still asks for v2's successor.
    let before = env.dump();
    receiver.set_export(Export {
        body: "{\"sku\":\"A\"}\n{\"sku\":\n".into(),
        content_type: "application/x-ndjson".into(),
        etag: Some("\"v3\"".into()),
        last_modified: None,
    });
    env.run(&["sync"]).assert_code(3);
    assert_eq!(env.dump(), before);
    env.run(&["sync"]).assert_code(3);
    assert_eq!(
        receiver.gets().last().unwrap().header("if-none-match"),
        Some("\"v2\"")
    );
}

#[test]
fn http_source_last_modified_csv_and_errors() {
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(&feed_config(
        &receiver,
        p_from(&receiver.url("/feeds/products?store=default"))
            .with("source_token_env", "EXPORT_TOKEN"),
    ));
    let date = "Sun, 29 Nov 2026 10:00:00 GMT";
    receiver.set_export(Export {
        body: "sku,name\nA,\"two\nlines\"\n".into(),
        content_type: "text/csv".into(),
        etag: None,
        last_modified: Some(date.into()),
    });
    // The credential variable must be set.
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("EXPORT_TOKEN"), "{}", run.stderr);

    env.set_env("EXPORT_TOKEN", "exp-secret-42");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p")["A"]["name"], "two\nlines");
    let get = receiver.gets().pop().unwrap();
    assert_eq!(get.header("authorization"), Some("Bearer exp-secret-42"));
    assert_eq!(get.path, "/feeds/products?store=default");

    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.gets().pop().unwrap().header("if-modified-since"),
        Some(date)
    );

    // A non-2xx answer: exit 3 with the URL, the status and the body.
    receiver.fail_export(503, "{\"error\":\"export is being rebuilt\"}");
    let run = env.run(&["sync"]);
    run.assert_code(3);
    for want in ["/feeds/products", "503", "export is being rebuilt"] {
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    // A resync ignores the validators and reads the source again.
    env.run(&["resync", "--feed", "p"]).assert_code(0);
    assert_eq!(
        receiver.gets().pop().unwrap().header("if-modified-since"),
        None
    );
}

#[test]
fn command_source_streams_stdout_and_reports_failures() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write(
        "export.ndjson",
        &ndjson(&[json!({"sku": "A"}), json!({"sku": "B"})]),
    );
    env.write_config(&feed_config(
        &receiver,
        p().with("command", "cat export.ndjson")
            .with("format", "ndjson"),
    ));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p").len(),
        2,
        "runs in the config's folder"
    );
    let before = env.dump();
    let sent = receiver.request_count();

    for (command, want) in [
        (
            "cat export.ndjson; echo 'export failed: database is down' >&2; exit 3",
            "exited with status 3: export failed: database is down",
        ),
        ("echo '{\"sku\":\"A\"}'; kill -9 $$", "killed by signal 9"),
        // The command dies half-way through a record: its failure is the news.
        (
            "printf '{\"sku\":\"A\"}\\n{\"sku\"'; exit 1",
            "exited with status 1",
        ),
        ("printf '{\"sku\":\"A\"}\\n{\"sku\"'", "line 2"),
        ("no-such-exporter", "not found"),
    ] {
        env.write_config(&feed_config(
            &receiver,
            p().with("command", command).with("format", "ndjson"),
        ));
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(run.stderr.contains(want), "{command}: {}", run.stderr);
        assert_eq!(env.dump(), before, "{command}");
        assert_eq!(receiver.request_count(), sent, "{command}");
    }
}

#[test]
fn command_source_delivers_a_large_output_whole() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = "file:out.ndjson".into();
                t.batch_size = Some(5000);
            })
            .feed(p().with("format", "ndjson").with(
                "command",
                r#"awk 'BEGIN { for (i = 0; i < 100000; i++) printf "{\"sku\":\"S%d\",\"pad\":\"%0200d\"}\n", i, i }'"#,
            )),
    );
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["sent"], 100_000);
    drop(receiver);
}

#[test]
fn sqlite_source_maps_types_and_opens_read_only() {
    let receiver = Receiver::start();
    let env = Env::new();
    let shop = env.path("shop.db");
    {
        let db = rusqlite::Connection::open(&shop).unwrap();
        db.execute_batch(
            "CREATE TABLE products (sku TEXT, price REAL, qty INTEGER, note TEXT, img BLOB);
             INSERT INTO products VALUES ('A', 1.5, 3, NULL, x'00ff10');
             INSERT INTO products VALUES ('B', 2.0, 0, 'sale', NULL);",
        )
        .unwrap();
    }
    let hash_of = |p: &std::path::Path| std::fs::read(p).unwrap();
    let original = hash_of(&shop);
    env.write_config(&feed_config(
        &receiver,
        p().with("sqlite", "shop.db").with(
            "query",
            "SELECT sku, price, qty, note, img FROM products ORDER BY sku",
        ),
    ));
    env.run(&["sync"]).assert_code(0);
    let catalog = receiver.catalog("p");
    assert_eq!(
        catalog["A"],
        json!({"sku": "A", "price": 1.5, "qty": 3, "note": null, "img": "AP8Q"})
    );
    assert_eq!(catalog["B"]["note"], "sale");
    assert_eq!(catalog["B"]["price"], 2.0);
    assert_eq!(hash_of(&shop), original, "the shop database is not written");

    rusqlite::Connection::open(&shop)
        .unwrap()
        .execute("UPDATE products SET qty = 9 WHERE sku = 'B'", [])
        .unwrap();
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    let sent: Vec<Value> = receiver.delivered_items();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["data"]["qty"], 9);

    // Read-only: a query that writes fails; bad SQL names the database.
    let before = env.dump();
    for (query, want) in [
        ("DELETE FROM products RETURNING sku", "readonly"),
        ("SELECT * FROM nowhere", "no such table"),
        ("SELECT sku, sku FROM products", "twice"),
    ] {
        env.write_config(&feed_config(
            &receiver,
            p().with("sqlite", "shop.db").with("query", query),
        ));
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(run.stderr.contains("shop.db"), "{}", run.stderr);
        assert!(
            run.stderr.to_lowercase().contains(want),
            "{query}: {}",
            run.stderr
        );
        assert_eq!(env.dump(), before);
    }
    let rows: i64 = rusqlite::Connection::open(&shop)
        .unwrap()
        .query_row("SELECT count(*) FROM products", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn incremental_sources_delete_only_what_they_mark() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&feed_config(
        &receiver,
        p_from("changes.ndjson")
            .with("snapshot", false)
            .with("deleted_field", "is_deleted"),
    ));
    env.write(
        "changes.ndjson",
        &ndjson(&[
            json!({"sku": "A", "p": 1}),
            json!({"sku": "B", "p": 1}),
            json!({"sku": "C", "p": 1}),
        ]),
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);

    // Only B changed: A and C are absent, which is not a deletion.
    env.write("changes.ndjson", &ndjson(&[json!({"sku": "B", "p": 2})]));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);
    assert_eq!(receiver.catalog("p")["B"]["p"], 2);

    // Marked deleted, in any spelling; an unknown deleted item sends nothing.
    env.write(
        "changes.ndjson",
        &ndjson(&[
            json!({"sku": "A", "is_deleted": "Yes"}),
            json!({"sku": "C", "is_deleted": 1}),
            json!({"sku": "Z", "is_deleted": true}),
        ]),
    );
    receiver.clear_requests();
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["deletes"], 2);
    let catalog = receiver.catalog("p");
    assert_eq!(catalog.keys().collect::<Vec<_>>(), ["B"]);
    let ops: Vec<String> = receiver
        .sent_ops("p")
        .into_iter()
        .map(|(op, _)| op)
        .collect();
    assert_eq!(ops, ["delete", "delete"]);

    // A deleted item that comes back is an upsert again.
    env.write("changes.ndjson", &ndjson(&[json!({"sku": "A", "p": 5})]));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p")["A"]["p"], 5);
}

/// Runs feedsync to its end, or kills it and fails the test when it is
/// still running after `limit` (a source that is never cut off).
fn run_bounded(env: &Env, args: &[&str], limit: std::time::Duration) -> Run {
    use std::process::Stdio;
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`feedsync {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap().into()
}

/// `source_timeout_secs = 2` on top of `feed_config`.
/// `feed_config` with a source timeout of 2 s.
fn timed_config(receiver: &Receiver, feed: FeedConfig) -> ConfigBuilder {
    feed_config(receiver, feed).top("source_timeout_secs", 2)
}

#[test]
fn an_http_source_that_trickles_runs_out_of_source_timeout() {
    let receiver = Receiver::start();
    receiver.set_export(Export {
        body: ndjson(&[json!({"sku": "A"}), json!({"sku": "B"})]),
        content_type: "application/x-ndjson".into(),
        ..Export::default()
    });
    let env = Env::new();
    env.write_config(&timed_config(
        &receiver,
        p_from(&receiver.url("/export.ndjson")),
    ));
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let sent = receiver.request_count();

    // One byte a second: every read succeeds, so only a bound on the
    // whole read ends it.
    let trickler = receiver::Trickler::start(
        "{\"sku\":\"A\"}\n{\"sku\":\"B\",\"pad\":\"",
        std::time::Duration::from_secs(1),
    );
    let url = trickler.url("/export.ndjson");
    env.write_config(&timed_config(&receiver, p_from(&url)));
    let limit = std::time::Duration::from_secs(30);
    let run = run_bounded(&env, &["sync"], limit);
    run.assert_code(3);
    for want in [url.as_str(), "source_timeout_secs", "(2 s)"] {
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    assert_eq!(env.dump(), before, "the feed's state is untouched");
    assert_eq!(receiver.request_count(), sent, "nothing was sent");
    // The lock went with the run: the next one reads the source again.
    let again = run_bounded(&env, &["sync"], limit);
    assert_ne!(again.code, 75, "{}", again.stderr);
    again.assert_code(3);
    assert_eq!(trickler.gets(), 2);
}

/// Whether a process is gone (a zombie counts: it runs nothing).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Kills the processes named in a pid file when dropped, so a failing
/// test leaves no `sleep 1000` behind.
struct KillPids(std::path::PathBuf);

impl Drop for KillPids {
    fn drop(&mut self) {
        for pid in std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
    }
}

#[test]
fn a_command_that_never_ends_is_killed_with_its_process_group() {
    let receiver = Receiver::start();
    let env = Env::new();
    let _cleanup = KillPids(env.path("pids"));
    // The background `sleep` keeps stdout open after its shell is gone: a
    // grandchild that only a kill of the whole group reaches.
    let command = "echo $$ > pids; sleep 1000 & echo $! >> pids; echo '{\"sku\":\"A\"}'; \
                   sleep 1000 & echo $! >> pids; wait";
    env.write_config(&timed_config(
        &receiver,
        p().with("format", "ndjson").with("command", command),
    ));
    let run = run_bounded(&env, &["sync"], std::time::Duration::from_secs(30));
    run.assert_code(3);
    for want in ["command `echo $$", "source_timeout_secs", "(2 s)"] {
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    assert_eq!(env.dump(), Vec::<String>::new(), "nothing was stored");
    assert_eq!(receiver.request_count(), 0);
    let pids = std::fs::read_to_string(env.path("pids")).unwrap();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    wait_for(
        "every process of the command to be gone",
        std::time::Duration::from_secs(10),
        || pids.iter().all(|p| dead(p)),
    );
    let again = run_bounded(&env, &["sync"], std::time::Duration::from_secs(30));
    again.assert_code(3);
}

#[test]
fn an_sqlite_query_that_never_ends_is_interrupted() {
    let receiver = Receiver::start();
    let env = Env::new();
    rusqlite::Connection::open(env.path("shop.db"))
        .unwrap()
        .execute_batch("CREATE TABLE products (sku TEXT)")
        .unwrap();
    // Counts for ever and never yields a row.
    env.write_config(&timed_config(
        &receiver,
        p().with("sqlite", "shop.db").with(
            "query",
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x AS sku FROM n WHERE x < 0",
        ),
    ));
    let run = run_bounded(&env, &["sync"], std::time::Duration::from_secs(30));
    run.assert_code(3);
    for want in ["sqlite ", "shop.db", "source_timeout_secs", "(2 s)"] {
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    assert_eq!(receiver.request_count(), 0);
}
