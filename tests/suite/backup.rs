//! `feedsync backup`: a sound copy even while a run is writing, and a
//! restored backup that converges on the source with resends only.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn setup(receiver: &Receiver, rows: &[Value]) -> Env {
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = receiver.url("/{feed}");
                t.batch_size = Some(10);
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env
}

fn rows(prices: &[(&str, i64)]) -> Vec<Value> {
    prices
        .iter()
        .map(|(sku, price)| json!({"sku": sku, "price": price}))
        .collect()
}

fn catalog_of(rows: &[Value]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r["sku"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[test]
fn a_backup_taken_during_a_slow_run_is_sound() {
    let receiver = Receiver::start();
    let items: Vec<Value> = (0..50).map(|i| json!({"sku": format!("A{i}")})).collect();
    let env = setup(&receiver, &items);
    receiver.set(Behavior::Hang(Duration::from_millis(1500)));
    let mut child = env.command(&["sync"]).spawn().unwrap();
    wait_for("the first batch", Duration::from_secs(20), || {
        receiver.request_count() > 0
    });
    // The run holds the lock and is waiting on its first batch.
    env.run(&["backup", "copy.sqlite"]).assert_code(0);
    receiver.set(Behavior::Ok);

    let copy = rusqlite::Connection::open(env.path("copy.sqlite")).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = copy
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50, "the collect had committed before the first batch");
    drop(copy);
    let mode = std::fs::metadata(env.path("copy.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    assert_eq!(receiver.catalog("p").len(), 50);
}

#[test]
fn a_restored_backup_converges_with_resends_only() {
    let receiver = Receiver::start();
    let first = rows(&[("A", 1), ("B", 2), ("C", 3), ("D", 4), ("E", 5)]);
    let env = setup(&receiver, &first);
    env.run(&["sync"]).assert_code(0);
    env.run(&["backup", "bk.sqlite"]).assert_code(0);

    // After the backup: a change, a deletion, a new item, and a sale price
    // that was delivered and then taken back.
    let later = rows(&[("A", 10), ("C", 30), ("D", 4), ("E", 5), ("F", 6)]);
    write_ndjson(&env.path("p.ndjson"), &later);
    env.run(&["sync"]).assert_code(0);
    let now = rows(&[("A", 10), ("C", 3), ("D", 4), ("E", 5), ("F", 6)]);
    write_ndjson(&env.path("p.ndjson"), &now);

    // The disk is lost; the backup comes back.
    std::fs::copy(env.path("bk.sqlite"), env.state_path()).unwrap();
    receiver.clear_requests();
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("restored from a backup"),
        "{}",
        run.stderr
    );
    assert_eq!(receiver.catalog("p"), catalog_of(&now));
    // Only resends: every batch was an upsert or delete of what the source says.
    for item in receiver.delivered_items() {
        let id = item["id"].as_str().unwrap();
        match item["op"].as_str().unwrap() {
            "upsert" => assert_eq!(item["data"], catalog_of(&now)[id]),
            _ => assert!(!catalog_of(&now).contains_key(id), "{id} deleted"),
        }
    }

    // Once is enough: the next sync has nothing to send.
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), 0);
    let runs = env.run(&["runs", "--json"]).json();
    let jobs: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs[..3], ["sync", "sync", "resync"]);
}

#[test]
fn backup_refuses_the_state_file_itself_and_needs_one() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &rows(&[("A", 1)]));
    let run = env.run(&["backup", "bk.sqlite"]);
    run.assert_code(5);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(!env.path("bk.sqlite").exists());
    env.run(&["sync"]).assert_code(0);
    env.run(&["backup", env.state_path().to_str().unwrap()])
        .assert_code(2);
    // A folder gets the state file's name.
    std::fs::create_dir(env.path("backups")).unwrap();
    env.run(&["backup", "backups"]).assert_code(0);
    assert!(env.path("backups/feedsync.sqlite").exists());
}

#[test]
fn after_a_restore_a_feed_that_cannot_be_read_does_not_make_the_others_resend_again() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&receiver.url("/{feed}"))
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]))
            .feed(FeedConfig::new("q", "q.ndjson", &["sku"])),
    );
    write_ndjson(&env.path("p.ndjson"), &rows(&[("A", 1), ("B", 2)]));
    write_ndjson(&env.path("q.ndjson"), &rows(&[("X", 1)]));
    env.run(&["sync"]).assert_code(0);
    env.run(&["backup", "bk.sqlite"]).assert_code(0);
    std::fs::copy(env.path("bk.sqlite"), env.state_path()).unwrap();
    std::fs::remove_file(env.path("q.ndjson")).unwrap();

    receiver.clear_requests();
    env.run(&["sync"]).assert_code(3);
    let resent = |feed: &str| {
        receiver
            .requests()
            .iter()
            .filter(|r| r.feed() == feed)
            .map(|r| r.items().len())
            .sum::<usize>()
    };
    assert_eq!(resent("p"), 2, "p is resent once");
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(3);
    assert_eq!(resent("p"), 0, "and only once");
    write_ndjson(&env.path("q.ndjson"), &rows(&[("X", 1)]));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(resent("q"), 1, "q is resent once it can be read");
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), 0);
}

/// The names in `dir` that start with `prefix`, sorted.
fn names_with(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn a_killed_backup_leaves_nothing_behind_once_the_next_one_ran() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &rows(&[("A", 1), ("B", 2)]));
    env.run(&["sync"]).assert_code(0);
    // A connection that keeps the state file to itself: the backup waits
    // for it, with its copy begun, until it is killed.
    let hold = env.db();
    hold.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE;
         BEGIN IMMEDIATE; INSERT INTO meta (name, value) VALUES ('held', '1'); COMMIT;",
    )
    .unwrap();
    let mut child = env.command(&["backup", "copy.sqlite"]).spawn().unwrap();
    let tmp = format!(".copy.sqlite.tmp-{}", child.id());
    wait_for("the backup's temp file", Duration::from_secs(20), || {
        env.path(&tmp).exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.path(&tmp).exists(), "the kill came too late");
    // What SQLite may leave beside a killed copy.
    for ext in ["-journal", "-wal", "-shm"] {
        env.write(&format!("{tmp}{ext}"), "left by the killed backup");
    }
    // A backup still running (this test stands in for it) keeps its files.
    let live = format!(".copy.sqlite.tmp-{}", std::process::id());
    env.write(&live, "");
    env.write(&format!("{live}-journal"), "");
    drop(hold);

    env.run(&["backup", "copy.sqlite"]).assert_code(0);
    assert_eq!(
        names_with(env.dir.path(), ".copy.sqlite.tmp-"),
        [live.clone(), format!("{live}-journal")],
    );
    let copy = rusqlite::Connection::open(env.path("copy.sqlite")).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let items: i64 = copy
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(items, 2);
}
