//! Partial sync end to end: the real binary, a real state file and a real
//! loopback receiver, fed the Luma sample export.

use crate::common::*;
use serde_json::{Value, json};

/// An installation syncing a copy of the Luma export to `receiver`.
fn luma(receiver: &Receiver) -> Env {
    let env = Env::new();
    std::fs::copy(luma_csv(), env.path("products.csv")).unwrap();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/feeds/{feed}"),
        FeedConfig {
            hash_exclude: vec!["updated_at".into()],
            ..FeedConfig::new("products", "products.csv", &["sku"])
        },
    ));
    env
}

/// (id, op) of every item the receiver applied for `products`, in order.
fn ids_sent(receiver: &Receiver) -> Vec<(String, String)> {
    receiver
        .sent_ops("products")
        .into_iter()
        .map(|(op, id)| (id, op))
        .collect()
}

#[test]
fn first_sync_delivers_every_row_and_a_second_sends_nothing() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    let run = env.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.stderr, "", "a good run under cron prints nothing");

    let (_, rows) = read_csv(&env.path("products.csv"));
    assert_eq!(rows.len(), 1994);
    let catalog = receiver.catalog("products");
    assert_eq!(catalog.len(), rows.len());
    for row in &rows {
        let sku = row["sku"].as_str().unwrap();
        assert_eq!(catalog[sku], Value::Object(row.clone()), "item {sku}");
    }
    // Batches of the default 500, each with the wire format's headers.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/feeds/products");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("x-feedsync-feed"), Some("products"));
        assert!(r.header("user-agent").unwrap().starts_with("feedsync/"));
        assert_eq!(r.header("idempotency-key").unwrap().len(), 32);
        assert_eq!(r.body["sync"], "partial");
        let first = &r.body["items"][0];
        assert_eq!(first["key"], json!({ "sku": first["id"] }));
        assert_eq!(first["hash"].as_str().unwrap().len(), 32);
    }
    assert!(requests[0].items().len() == 500 && requests[3].items().len() == 494);

    let statuses = env.statuses_via_cli("products");
    assert_eq!(statuses.len(), 1994);
    assert!(statuses.values().all(|s| s == "sent"));

    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), 4, "nothing changed, nothing sent");
}

#[test]
fn changes_deletions_and_additions_send_exactly_those_items() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    env.run(&["sync"]).assert_code(0);
    receiver.clear_requests();

    let csv = env.path("products.csv");
    let (header, mut rows) = read_csv(&csv);
    rows[10]["price"] = json!("99.5");
    let removed: Vec<String> = rows
        .drain(100..103)
        .map(|r| r["sku"].as_str().unwrap().to_string())
        .collect();
    let mut new = rows[0].clone();
    new["sku"] = json!("NEW-SKU-1");
    rows.push(new.clone());
    write_csv(&csv, &header, &rows);

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    let mut sent = ids_sent(&receiver);
    sent.sort();
    let mut want = vec![
        (
            rows[10]["sku"].as_str().unwrap().to_string(),
            "upsert".to_string(),
        ),
        ("NEW-SKU-1".to_string(), "upsert".to_string()),
    ];
    want.extend(removed.iter().map(|id| (id.clone(), "delete".to_string())));
    want.sort();
    assert_eq!(sent, want);

    let doc = run.json();
    assert_eq!(
        doc["feeds"][0],
        json!({"name": "products", "collected": 1992, "upserts": 2, "deletes": 3,
               "sent": 5, "retry": 0, "failed": 0})
    );
    // The receiver now holds exactly the export.
    let catalog = receiver.catalog("products");
    assert!(removed.iter().all(|id| !catalog.contains_key(id)));
    assert_eq!(catalog["NEW-SKU-1"], Value::Object(new));
    assert_eq!(catalog[rows[10]["sku"].as_str().unwrap()]["price"], "99.5");
    // A delete carries the hash of the item's last known content.
    let delete = receiver
        .delivered_items()
        .into_iter()
        .find(|i| i["op"] == "delete")
        .unwrap();
    assert_eq!(delete["hash"].as_str().unwrap().len(), 32);
    assert!(delete.get("data").is_none());
}

#[test]
fn excluded_fields_and_reordering_send_nothing() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    env.run(&["sync"]).assert_code(0);
    let before = receiver.request_count();

    let csv = env.path("products.csv");
    let (mut header, mut rows) = read_csv(&csv);
    for r in rows.iter_mut() {
        r["updated_at"] = json!("2026-11-29 10:00:00");
    }
    write_csv(&csv, &header, &rows);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.request_count(),
        before,
        "hash_exclude field changed"
    );

    header.reverse();
    write_csv(&csv, &header, &rows);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.request_count(), before, "columns reordered");
}

#[test]
fn json_key_order_does_not_matter_but_values_do() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("prices", "prices.ndjson", &["sku", "store"]),
    ));
    let rows = [
        json!({"sku": "A", "store": "default", "price": 1.50, "tags": ["x"]}),
        json!({"sku": "B", "store": "default", "price": 2}),
    ];
    write_ndjson(&env.path("prices.ndjson"), &rows);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.delivered_items().len(), 2);
    assert_eq!(receiver.delivered_items()[0]["id"], "A/default");

    env.write(
        "prices.ndjson",
        "{\"price\":1.5,\"tags\":[\"x\"],\"store\":\"default\",\"sku\":\"A\"}\n\n{\"store\": \"default\", \"price\": 2, \"sku\": \"B\"}\n",
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.delivered_items().len(),
        2,
        "same content, other bytes"
    );

    env.write(
        "prices.ndjson",
        "{\"price\":1.5,\"tags\":[\"x\"],\"store\":\"default\",\"sku\":\"A\"}\n{\"store\": \"default\", \"price\": 3, \"sku\": \"B\"}\n",
    );
    env.run(&["sync"]).assert_code(0);
    let items = receiver.delivered_items();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["data"]["price"], 3);
}

/// Each kind of bad input exits 3, names the place, and changes nothing.
#[test]
fn bad_input_changes_nothing() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"]),
    ));
    let good = "{\"sku\":\"A\",\"n\":1}\n{\"sku\":\"B\",\"n\":1}\n{\"sku\":\"C\",\"n\":1}\n";
    env.write("p.ndjson", good);
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let requests = receiver.request_count();

    let cases = [
        (
            "{\"sku\":\"A\",\"n\":2}\n{\"sku\":\"B\",\"n\":\n{\"sku\":\"C\",\"n\":1}\n",
            "line 2",
        ),
        (
            "{\"sku\":\"A\",\"n\":2}\n{\"n\":1}\n",
            "key field `sku` is missing",
        ),
        ("{\"sku\":\"A\",\"n\":2}\n{\"sku\":{\"x\":1}}\n", "record 2"),
        (
            "{\"sku\":\"A\",\"n\":2}\n{\"sku\":\"B\",\"n\":1}\n{\"sku\":\"A\",\"n\":1}\n",
            "duplicate key `A`",
        ),
        // Byte-for-byte the same record twice is a duplicate too.
        (
            "{\"sku\":\"B\",\"n\":1}\n{\"sku\":\"B\",\"n\":1}\n",
            "duplicate key `B`",
        ),
        ("{\"sku\":\"A\",\"n\":2}\n[1,2]\n", "not a JSON object"),
        ("{\"sku\":\"A\",\"n\":2}\n{\"sku\":\"B\",\"n\":1", "line 2"),
    ];
    for (text, want) in cases {
        env.write("p.ndjson", text);
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(run.stderr.contains(want), "{want:?} not in {}", run.stderr);
        assert!(
            run.stderr.contains("p.ndjson"),
            "names the file: {}",
            run.stderr
        );
        assert_eq!(env.dump(), before, "state changed by {text:?}");
        assert_eq!(receiver.request_count(), requests, "sent on {text:?}");
    }
}

#[test]
fn a_csv_cut_inside_a_record_is_malformed() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let requests = receiver.request_count();

    let text = std::fs::read(env.path("products.csv")).unwrap();
    // Cut in the middle of a quoted multi-line description.
    let cut = text.len() / 2;
    let at = cut + text[cut..].windows(4).position(|w| w == b"<p>I").unwrap() + 2;
    std::fs::write(env.path("products.csv"), &text[..at]).unwrap();
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert_eq!(env.dump(), before);
    assert_eq!(receiver.request_count(), requests);
}

#[test]
fn the_guard_stops_a_truncated_export() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let requests = receiver.request_count();

    // Cut at a record boundary: a smaller, well-formed export.
    let csv = env.path("products.csv");
    let (header, rows) = read_csv(&csv);
    write_csv(&csv, &header, &rows[..1000]);
    let run = env.run(&["sync"]);
    run.assert_code(6);
    assert!(run.stderr.contains("994"), "{}", run.stderr);
    assert!(run.stderr.contains("--allow-deletes"), "{}", run.stderr);
    assert_eq!(env.dump(), before);
    assert_eq!(receiver.request_count(), requests);

    // An empty file is judged the same way.
    std::fs::write(&csv, "").unwrap();
    env.run(&["sync"]).assert_code(6);

    write_csv(&csv, &header, &rows[..1000]);
    env.run(&["sync", "--allow-deletes"]).assert_code(0);
    let deletes = ids_sent(&receiver)
        .into_iter()
        .filter(|(_, op)| op == "delete")
        .count();
    assert_eq!(deletes, 994);
    assert_eq!(receiver.catalog("products").len(), 1000);
}

#[test]
fn max_deletes_as_a_count() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", 1),
    ));
    env.write(
        "p.ndjson",
        "{\"sku\":\"A\"}\n{\"sku\":\"B\"}\n{\"sku\":\"C\"}\n",
    );
    env.run(&["sync"]).assert_code(0);
    env.write("p.ndjson", "{\"sku\":\"A\"}\n");
    env.run(&["sync"]).assert_code(6);
    env.write("p.ndjson", "{\"sku\":\"A\"}\n{\"sku\":\"B\"}\n");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 2);
}

#[test]
fn a_500_leaves_items_unsent_and_a_later_run_delivers_them() {
    let receiver = Receiver::start();
    let mut env = luma(&receiver);
    receiver.push(Behavior::Ok);
    receiver.push(Behavior::Status(500, "database is down".into()));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(1);
    assert!(run.stderr.contains("HTTP 500"), "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["feeds"][0]["sent"], 500);
    assert_eq!(doc["feeds"][0]["retry"], 500);
    // No more batches after a retryable failure.
    assert_eq!(receiver.request_count(), 2);
    assert_eq!(receiver.catalog("products").len(), 500);

    let statuses = env.statuses_via_cli("products");
    let count = |s: &str| statuses.values().filter(|v| *v == s).count();
    assert_eq!(
        (count("sent"), count("retry"), count("pending")),
        (500, 500, 994)
    );
    let retry = env.run(&[
        "items", "--feed", "products", "--status", "retry", "--json", "--limit", "1",
    ]);
    let item = &retry.json()["items"][0];
    assert_eq!(item["attempts"], 1);
    assert!(item["error"].as_str().unwrap().contains("database is down"));

    // The next sync delivers what is pending; `retry` delivers the rest once due.
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("products").len(), 1494);
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.catalog("products").len(), 1494, "not due yet");
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    env.set_env("FEEDSYNC_NOW", &later);
    env.run(&["retry"]).assert_code(0);
    assert_eq!(receiver.catalog("products").len(), 1994);
    assert!(
        env.statuses_via_cli("products")
            .values()
            .all(|s| s == "sent")
    );
}

#[test]
fn dry_run_sends_nothing_and_changes_nothing() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    let run = env.run(&["sync", "--dry-run", "--json"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["feeds"][0],
        json!({"name": "products", "collected": 1994, "upserts": 1994, "deletes": 0,
               "sent": 0, "retry": 0, "failed": 0})
    );
    assert_eq!(receiver.request_count(), 0);
    assert!(env.dump().is_empty());
    assert_eq!(
        env.run(&["runs", "--json"]).json()["runs"],
        json!([]),
        "no run record"
    );

    let run = env.run(&["sync", "--dry-run", "-v"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("upsert MH01-XS-Black\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("products: 1994 read, would send 1994 upserts")
    );
}

#[test]
fn status_and_items_show_the_state() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    let run = env.run(&["status", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["live"], 0);
    assert!(!env.state_path().exists(), "looking creates no state file");

    env.run(&["sync"]).assert_code(0);
    let doc = env.run(&["status", "--json"]).json();
    let f = &doc["feeds"][0];
    assert_eq!(f["name"], "products");
    assert_eq!(f["mode"], "immediate");
    assert_eq!(
        (f["live"].as_u64(), f["sent"].as_u64()),
        (Some(1994), Some(1994))
    );
    assert_eq!(
        (f["pending"].as_u64(), f["deleted"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(f["last_success_at"].as_str().unwrap().ends_with('Z'));
    assert!(doc["last_run_at"].is_string());
    let one = env.run(&["status", "--feed", "products", "--json"]).json();
    assert_eq!(one["feeds"].as_array().unwrap().len(), 1);
    env.run(&["status", "--feed", "nope"]).assert_code(2);
    let text = env.run(&["status"]).stdout;
    assert!(text.contains("products") && text.contains("1994"), "{text}");

    let doc = env
        .run(&[
            "items",
            "--feed",
            "products",
            "--id",
            "MH01-XS-Black",
            "--json",
        ])
        .json();
    let item = &doc["items"][0];
    assert_eq!(item["id"], "MH01-XS-Black");
    assert_eq!(item["status"], "sent");
    assert_eq!(item["deleted"], false);
    assert!(item["sent_at"].is_string());
    let doc = env.run(&["items", "--feed", "products", "--json"]).json();
    assert_eq!(doc["items"].as_array().unwrap().len(), 100, "default limit");
    env.run(&["items", "--feed", "nope"]).assert_code(2);
}

#[test]
fn the_state_file_is_private_and_complete_after_exit() {
    use std::os::unix::fs::PermissionsExt;
    let receiver = Receiver::start();
    let env = luma(&receiver);
    env.run(&["sync"]).assert_code(0);
    let mode = std::fs::metadata(env.state_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for leftover in [
        "feedsync.sqlite-wal",
        "feedsync.sqlite-journal",
        "feedsync.sqlite-shm",
    ] {
        assert!(!env.path(leftover).exists(), "{leftover} left behind");
    }
}

#[test]
fn a_second_run_exits_75_while_the_lock_is_held() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    let lock = std::fs::File::create(env.path("feedsync.sqlite.lock")).unwrap();
    lock.try_lock().unwrap();
    let run = env.run(&["sync"]);
    run.assert_code(75);
    assert_eq!(receiver.request_count(), 0);
    drop(lock);
    env.run(&["sync"]).assert_code(0);
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let env = Env::new();
    env.write("p.ndjson", "");
    let base = "[target]\nurl = \"file:out.ndjson\"\n[[feeds]]\nname = \"p\"\nsource = \"p.ndjson\"\nkey = [\"sku\"]\n";
    for (extra, want) in [
        ("colour = \"red\"\n", "colour"),
        ("batch_size = 0\n", "batch_size"),
        ("max_deletes = \"150%\"\n", "max_deletes"),
        ("token_env = \"T\"\n", "token_env"),
        ("timeout_secs = \"fast\"\n", "timeout_secs"),
    ] {
        env.config(&format!("{base}{extra}"));
        let run = env.run(&["sync"]);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
        assert!(run.stderr.contains("feedsync.toml"), "{}", run.stderr);
        assert!(!env.state_path().exists());
    }
    // A secret the config names must be set for commands that send.
    env.config(&base.replace("[target]\n", "[target]\ntoken_env = \"SHOP_TOKEN\"\n"));
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("SHOP_TOKEN"), "{}", run.stderr);
    env.run(&["status"]).assert_code(0);
}

#[test]
fn the_config_is_found_by_flag_env_then_working_directory() {
    let env = Env::new();
    env.write("p.ndjson", "{\"sku\":\"A\"}\n");
    let cfg = ConfigBuilder::new()
        .target_url("file:out/{feed}.ndjson")
        .feed(FeedConfig::new("p", "p.ndjson", &["sku"]))
        .to_toml();
    env.write("sub/feedsync.toml", &cfg);
    env.write("sub/p.ndjson", "{\"sku\":\"A\"}\n{\"sku\":\"B\"}\n");
    let bin = env!("CARGO_BIN_EXE_feedsync");
    let status = |cmd: &mut std::process::Command| -> Run { cmd.output().unwrap().into() };

    // $FEEDSYNC_CONFIG, with paths relative to the config file.
    let run = status(
        std::process::Command::new(bin)
            .current_dir(env.path(""))
            .env("FEEDSYNC_CONFIG", env.path("sub/feedsync.toml"))
            .args(["sync", "--json"]),
    );
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 2);
    assert!(env.path("sub/out/p.ndjson").exists());
    assert!(env.path("sub/feedsync.sqlite").exists());

    // ./feedsync.toml when neither is given.
    let run = status(
        std::process::Command::new(bin)
            .current_dir(env.path("sub"))
            .env_remove("FEEDSYNC_CONFIG")
            .args(["status", "--json"]),
    );
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["live"], 2);

    // --config wins over the environment.
    env.write("feedsync.toml", &cfg);
    let run = status(
        std::process::Command::new(bin)
            .current_dir(env.path("sub"))
            .env("FEEDSYNC_CONFIG", env.path("sub/feedsync.toml"))
            .args(["--config", env.path("feedsync.toml").to_str().unwrap()])
            .args(["sync", "--json"]),
    );
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 1);

    // No config at all.
    let run = status(
        std::process::Command::new(bin)
            .current_dir(env.path("sub/out"))
            .env_remove("FEEDSYNC_CONFIG")
            .args(["status"]),
    );
    run.assert_code(2);
}

#[test]
fn a_file_target_gets_one_envelope_per_batch() {
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = "file:out/{feed}.ndjson".into();
                t.batch_size = Some(2);
            })
            .feed(FeedConfig::new("p", "p.json", &["sku"])),
    );
    env.write(
        "p.json",
        "{\"generated\": \"today\", \"items\": [{\"sku\":\"A\"},{\"sku\":\"B\"},\n{\"sku\":\"C\"}]}",
    );
    let run = env.run(&["sync", "-v"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("p: 3 read"),
        "-v prints the summary: {}",
        run.stderr
    );
    let text = std::fs::read_to_string(env.path("out/p.ndjson")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["feed"], "p");
    assert_eq!(lines[0]["items"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["items"][0]["data"], json!({"sku": "C"}));
}

#[test]
fn signing_and_credentials_come_from_the_environment() {
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = receiver.url("/{feed}");
                t.token_env = Some("T".into());
                t.api_key_env = Some("K".into());
                t.signing_secret_env = Some("S".into());
                t.extra.insert("gzip".into(), false.into());
                t.extra.insert("api_key_header".into(), "x-shop-key".into());
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    env.write("p.ndjson", "{\"sku\":\"A\"}\n");
    env.set_env("T", "tok-123");
    env.set_env("K", "key-456");
    env.set_env("S", "sec-789");
    env.run(&["sync"]).assert_code(0);
    let r = &receiver.requests()[0];
    assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(r.header("x-shop-key"), Some("key-456"));
    assert_eq!(r.header("content-encoding"), None);
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sec-789").unwrap();
    mac.update(&r.raw_body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-feedsync-signature"), Some(want.as_str()));
}

#[test]
fn one_bad_feed_does_not_stop_the_others() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&receiver.url("/{feed}"))
            .feed(FeedConfig::new("a", "a.ndjson", &["sku"]))
            .feed(FeedConfig::new("b", "missing.ndjson", &["sku"]))
            .feed(FeedConfig::new("c", "c.csv", &["sku"])),
    );
    env.write("a.ndjson", "{\"sku\":\"A1\"}\n");
    env.write("c.csv", "sku,name\nC1,\"multi\nline\"\n");
    let run = env.run(&["sync", "--json"]);
    run.assert_code(3);
    assert!(run.stderr.contains("missing.ndjson"), "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["feeds"][0]["sent"], 1);
    assert!(doc["feeds"][1]["error"].is_string());
    assert_eq!(doc["feeds"][2]["sent"], 1);
    assert_eq!(receiver.catalog("c")["C1"]["name"], "multi\nline");

    // --feed picks feeds; an unknown one is a usage error.
    env.write("a.ndjson", "{\"sku\":\"A1\"}\n{\"sku\":\"A2\"}\n");
    env.write("c.csv", "sku,name\nC1,x\n");
    let run = env.run(&["sync", "--feed", "a", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.catalog("c")["C1"]["name"], "multi\nline");
    env.run(&["sync", "--feed", "zzz"]).assert_code(2);

    let runs = env.run(&["runs", "--json"]).json();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the refused run left no record");
    assert_eq!(runs[0]["job"], "sync");
    assert_eq!(runs[0]["exit_code"], 0);
    assert_eq!(runs[1]["exit_code"], 3);
}

#[test]
fn a_corrupt_state_file_exits_5_and_is_left_alone() {
    let receiver = Receiver::start();
    let env = luma(&receiver);
    let garbage = b"this is not an SQLite database, just some bytes.".repeat(100);
    std::fs::write(env.state_path(), &garbage).unwrap();
    let run = env.run(&["sync"]);
    run.assert_code(5);
    assert!(run.stderr.contains("feedsync.sqlite"), "{}", run.stderr);
    assert_eq!(std::fs::read(env.state_path()).unwrap(), garbage);
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn quiet_prints_errors_only_and_runs_lists_twenty_by_default() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"]),
    ));
    env.write("p.ndjson", "{\"sku\":\"A\"}\n");
    receiver.push(Behavior::Status(503, "busy".into()));
    let run = env.run(&["sync", "-q"]);
    run.assert_code(1);
    assert_eq!(
        run.stderr, "",
        "a retryable failure is a warning, hidden by -q"
    );
    env.write("p.ndjson", "{\"sku\":\n");
    let run = env.run(&["sync", "-q"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("error"),
        "errors still print: {}",
        run.stderr
    );

    env.write("p.ndjson", "{\"sku\":\"A\"}\n");
    for _ in 0..22 {
        env.run(&["sync"]);
    }
    let runs = env.run(&["runs", "--json"]).json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 20);
    let runs = env.run(&["runs", "--limit", "100", "--json"]).json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 24);
}
