//! The fast paths pinned down: records are settled by the hash of their raw
//! bytes without parsing, and new bytes are compared by content. Whatever
//! the bytes, a change is never missed, and bytes seen before never cause a
//! send.

use crate::common::*;
use serde_json::{Value, json};

/// Feed `p` (any share of deletes allowed) with these `hash_exclude` fields.
fn config(receiver: &Receiver, hash_exclude: &[&str]) -> ConfigBuilder {
    ConfigBuilder::new()
        .target(|t| {
            t.url = receiver.url("/{feed}");
            t.batch_size = Some(100);
        })
        .feed(FeedConfig {
            hash_exclude: hash_exclude.iter().map(|f| f.to_string()).collect(),
            ..FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")
        })
}

fn setup(receiver: &Receiver, hash_exclude: &[&str]) -> Env {
    let env = Env::new();
    env.write_config(&config(receiver, hash_exclude));
    env
}

fn lines(rows: &[String]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// Ids the receiver got in the last run.
fn sent(receiver: &Receiver) -> Vec<String> {
    let mut ids = receiver.sent_ids("p");
    ids.sort();
    receiver.clear_requests();
    ids
}

#[test]
fn a_changed_record_is_never_missed_whatever_its_bytes() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &[]);
    let mut rng = Rng(0xfeed_5eed);
    let mut rows: Vec<String> = (0..300)
        .map(|i| {
            json!({"sku": format!("S{i:03}"), "name": format!("item {i}"), "price": i,
                   "tags": ["a", "b"], "meta": {"w": 1.5, "ok": true}})
            .to_string()
        })
        .collect();
    env.write("p.ndjson", &lines(&rows));
    env.run(&["sync"]).assert_code(0);
    sent(&receiver);

    // Mutations that change content, each in a different way; several can
    // keep the record's length, or give it another record's old bytes.
    for round in 0..12 {
        let mut want = Vec::new();
        for _ in 0..8 {
            let i = rng.below(rows.len());
            let mut v: Value = serde_json::from_str(&rows[i]).unwrap();
            match rng.below(7) {
                0 => v["price"] = json!(v["price"].as_i64().unwrap() + 1),
                1 => v["name"] = json!(format!("{}x", &v["name"].as_str().unwrap()[1..])),
                2 => v["tags"] = json!(["b", "a"]),
                3 => v["meta"]["ok"] = json!(false),
                4 => v["extra"] = json!(null),
                5 => v["meta"]["w"] = json!(1.25),
                _ => v["price"] = json!(v["price"].to_string()),
            }
            let new = v.to_string();
            if new != rows[i] {
                rows[i] = new;
                want.push(v["sku"].as_str().unwrap().to_string());
            }
        }
        // Shuffle the file too: order alone means nothing.
        for _ in 0..20 {
            let (a, b) = (rng.below(rows.len()), rng.below(rows.len()));
            rows.swap(a, b);
        }
        env.write("p.ndjson", &lines(&rows));
        env.run(&["sync"]).assert_code(0);
        want.sort();
        want.dedup();
        assert_eq!(sent(&receiver), want, "round {round}");
    }
    // In the end the receiver holds exactly the export.
    let catalog = receiver.catalog("p");
    for r in &rows {
        let v: Value = serde_json::from_str(r).unwrap();
        assert_eq!(catalog[v["sku"].as_str().unwrap()], v);
    }
}

#[test]
fn bytes_seen_before_never_cause_a_send() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &["seen_at"]);
    let rows: Vec<String> = (0..200)
        .map(|i| json!({"sku": format!("S{i:03}"), "n": i, "seen_at": 1}).to_string())
        .collect();
    env.write("p.ndjson", &lines(&rows));
    env.run(&["sync"]).assert_code(0);
    sent(&receiver);

    // The same bytes again, in another order, with CRLFs and blank lines.
    let mut shuffled = rows.clone();
    shuffled.reverse();
    let text: String = shuffled.iter().map(|r| format!("{r}\r\n\n")).collect();
    for _ in 0..3 {
        env.write("p.ndjson", &text);
        env.run(&["sync"]).assert_code(0);
        assert!(sent(&receiver).is_empty());
    }
    // Other bytes, same content: re-spaced, keys reordered, an excluded
    // field changed. Nothing is sent, and the next run settles them by
    // their bytes alone.
    let respaced: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{{ \"seen_at\": {}, \"n\": {i}, \"sku\": \"S{i:03}\" }}",
                2 + i
            )
        })
        .collect();
    env.write("p.ndjson", &lines(&respaced));
    env.run(&["sync"]).assert_code(0);
    assert!(sent(&receiver).is_empty());
    let raw_before: Vec<String> = env.dump();
    env.run(&["sync"]).assert_code(0);
    assert!(sent(&receiver).is_empty());
    assert_eq!(env.dump(), raw_before, "settled without touching the state");
}

#[test]
fn a_config_change_that_changes_meaning_is_not_hidden_by_old_bytes() {
    let receiver = Receiver::start();
    let env = setup(&receiver, &["stock"]);
    let rows = [
        json!({"sku": "A", "stock": 1}).to_string(),
        json!({"sku": "B", "stock": 2}).to_string(),
    ];
    env.write("p.ndjson", &lines(&rows));
    env.run(&["sync"]).assert_code(0);
    sent(&receiver);
    // stock now counts. The same bytes hash differently under the new rules,
    // and the receiver may hold stale stock (changes to it were not sent),
    // so every item goes once.
    env.write_config(&config(&receiver, &[]));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(sent(&receiver), ["A", "B"]);
    env.run(&["sync"]).assert_code(0);
    assert!(sent(&receiver).is_empty());
    let rows = [rows[0].clone(), json!({"sku": "B", "stock": 3}).to_string()];
    env.write("p.ndjson", &lines(&rows));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(sent(&receiver), ["B"]);
}

#[test]
fn a_renamed_csv_column_changes_every_item() {
    let receiver = Receiver::start();
    let env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&receiver.url("/{feed}"))
            .feed(FeedConfig::new("p", "p.csv", &["sku"])),
    );
    env.write("p.csv", "sku,price\nA,1\nB,2\n");
    env.run(&["sync"]).assert_code(0);
    sent(&receiver);
    // The rows' bytes are the same; their meaning is not.
    env.write("p.csv", "sku,cost\nA,1\nB,2\n");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(sent(&receiver), ["A", "B"]);
    assert_eq!(receiver.catalog("p")["A"], json!({"sku": "A", "cost": "1"}));
}
