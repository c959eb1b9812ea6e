//! Guarantee 1 under fire: many rounds of random export changes and
//! receiver faults, each run killed with SIGKILL at a random moment. After a
//! final clean run the receiver must hold exactly the export, and the state
//! file must pass `PRAGMA integrity_check`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

fn write_export(env: &Env, catalog: &BTreeMap<String, Value>) {
    let rows: Vec<Value> = catalog.values().cloned().collect();
    let tmp = env.path("p.ndjson.tmp");
    write_ndjson(&tmp, &rows);
    std::fs::rename(tmp, env.path("p.ndjson")).unwrap();
}

/// `status` reads kept counts, never the rows: they must be what counting
/// every row (`items`, which reads each one) finds, whenever a run was
/// killed.
fn assert_counts_exact(env: &Env, round: i64) {
    let status = env.run(&["status", "--json", "--feed", "p"]);
    status.assert_code(0);
    let kept = &status.json()["feeds"][0];
    let items = env.run(&["items", "--feed", "p", "--json", "--limit", "1000000000"]);
    items.assert_code(0);
    let mut counted: BTreeMap<&str, u64> = BTreeMap::new();
    let rows = items.json()["items"].as_array().unwrap().clone();
    for row in &rows {
        let deleted = row["deleted"].as_bool().unwrap();
        *counted
            .entry(if deleted { "deleted" } else { "live" })
            .or_default() += 1;
        *counted.entry(row["status"].as_str().unwrap()).or_default() += 1;
    }
    for name in ["live", "deleted", "pending", "sent", "retry", "failed"] {
        let want = counted.get(name).copied().unwrap_or(0);
        assert_eq!(kept[name].as_u64(), Some(want), "round {round}: `{name}`");
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let rounds = 40;
    let mut rng = Rng(seed);
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"])
            .with("batch_size", 25)
            .with("max_deletes", "100%"),
    ));

    let mut next_id = 0u64;
    let mut new_item = |rng: &mut Rng| {
        next_id += 1;
        let sku = format!("S{next_id:05}");
        let v = json!({"sku": sku, "price": rng.below(10_000), "name": format!("item {next_id}"),
                       "tags": ["a", "b"], "text": "x".repeat(rng.below(400))});
        (sku, v)
    };
    let mut catalog: BTreeMap<String, Value> = (0..1500).map(|_| new_item(&mut rng)).collect();

    let (mut killed, mut finished) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    for round in 0..rounds {
        assert!(Instant::now() < deadline, "crash test over its time budget");
        // Random changes: prices, deletions, additions.
        let keys: Vec<String> = catalog.keys().cloned().collect();
        for _ in 0..rng.below(60) {
            let k = &keys[rng.below(keys.len())];
            if let Some(v) = catalog.get_mut(k) {
                v["price"] = json!(rng.below(10_000));
            }
        }
        for _ in 0..rng.below(25) {
            let k = &keys[rng.below(keys.len())];
            catalog.remove(k);
        }
        for _ in 0..rng.below(25) {
            let (k, v) = new_item(&mut rng);
            catalog.insert(k, v);
        }
        write_export(&env, &catalog);

        // Sometimes the receiver fails a batch.
        receiver.set(Behavior::Ok);
        if rng.below(4) == 0 {
            for _ in 0..rng.below(3) {
                receiver.push(Behavior::Ok);
            }
            receiver.push(Behavior::Status(503, "flaky".into()));
        }

        let job = if rng.below(5) == 0 { "retry" } else { "sync" };
        let at = chrono::Utc::now() + chrono::Duration::hours(round);
        env.set_env("FEEDSYNC_NOW", &at.to_rfc3339());
        let mut child = env.command(&[job]).spawn().unwrap();
        let wait = Duration::from_millis(rng.below(400) as u64);
        let started = Instant::now();
        let mut done = None;
        while started.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match done {
            Some(status) => {
                finished += 1;
                let code = status.code().unwrap();
                assert!([0, 1].contains(&code), "round {round}: {job} exited {code}");
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
        }
        assert_counts_exact(&env, round);
    }
    eprintln!("seed {seed:#x}: {killed} runs killed, {finished} finished");
    assert!(
        killed >= 5,
        "too few kills landed mid-run to prove anything"
    );

    // A healthy receiver and clean runs: pending by `sync`, the rest by `retry`.
    receiver.set(Behavior::Ok);
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    env.set_env("FEEDSYNC_NOW", &later.to_rfc3339());
    env.run(&["sync"]).assert_code(0);
    env.run(&["retry"]).assert_code(0);
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["sent"], 0, "nothing left to send");

    let got = receiver.catalog("p");
    assert_eq!(got.len(), catalog.len());
    for (id, want) in &catalog {
        assert_eq!(got.get(id), Some(want), "item {id}");
    }
    let check: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let statuses = env.statuses_via_cli("p");
    assert!(statuses.values().all(|s| s == "sent"));
}

/// New rows go in once, as sent with a range not yet acknowledged (see
/// `state::unconfirmed`): whoever looks, during the delivery or after a
/// kill, sees exactly the acknowledged items `sent` and the rest `pending`,
/// through every way `items` and `status` read, and the next run delivers
/// the rest.
#[test]
fn new_items_are_pending_until_acknowledged_during_a_run_and_after_a_kill() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/{feed}"),
        FeedConfig::new("p", "p.ndjson", &["sku"]).with("batch_size", 2),
    ));
    let rows: Vec<Value> = (0..5).map(|i| json!({"sku": format!("S{i}")})).collect();
    write_ndjson(&env.path("p.ndjson"), &rows);
    // The first batch is acknowledged, the second hangs.
    receiver.push(Behavior::Ok);
    receiver.set(Behavior::Hang(Duration::from_secs(20)));
    let mut child = env.command(&["sync"]).spawn().unwrap();
    wait_for("the second batch", Duration::from_secs(20), || {
        receiver.request_count() >= 2
    });
    let look = |when: &str| {
        let want: BTreeMap<String, String> = (0..5)
            .map(|i| {
                let status = if i < 2 { "sent" } else { "pending" };
                (format!("S{i}"), status.to_string())
            })
            .collect();
        assert_eq!(env.statuses("p"), want, "{when}: items");
        for (status, ids) in [
            ("pending", ["S2", "S3", "S4"].as_slice()),
            ("sent", &["S0", "S1"]),
        ] {
            let run = env.run(&["items", "--feed", "p", "--status", status, "--json"]);
            run.assert_code(0);
            let got: Vec<String> = run.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, ids, "{when}: items --status {status}");
        }
        let status = env.run(&["status", "--json"]);
        status.assert_code(0);
        let feed = &status.json()["feeds"][0];
        assert_eq!(
            (feed["pending"].as_u64(), feed["sent"].as_u64()),
            (Some(3), Some(2)),
            "{when}"
        );
    };
    look("during the delivery");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    look("after a kill");

    receiver.set(Behavior::Ok);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 5);
    assert!(env.statuses("p").values().all(|s| s == "sent"));
}
