//! The state file across versions: a file written by the last release
//! upgrades in place on first use, resends nothing beyond what it had
//! pending, keeps every item's key, and a file from a newer feedsync is
//! refused untouched.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::{Value, json};

/// The fixture's feeds (see tests/data/make-state-v4.sh), with the
/// sources as the release last read them.
fn release_setup(receiver: &Receiver) -> Env {
    let env = Env::new();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/state-v4.sqlite"),
        env.state_path(),
    )
    .unwrap();
    // The feeds the fixture was made with (see make-state-v4.sh).
    env.config(&include_str!("../data/state-v4.toml").replace("@URL@", &receiver.url("/{feed}")));
    let lines = |rows: &[Value]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let p: Vec<Value> = ["A1", "A2", "A3", "FLAKY", "BAD", "W/1%"]
        .iter()
        .map(|s| json!({"sku": s, "price": 1}))
        .collect();
    env.write("p.ndjson", &lines(&p));
    env.write(
        "l.ndjson",
        &lines(&[
            json!({"sku": "L1", "price": 2}),
            json!({"sku": "L2", "price": 2}),
        ]),
    );
    env.write(
        "pair.ndjson",
        &lines(&[
            json!({"sku": "X", "store": "de", "price": 3}),
            json!({"sku": 7, "store": "fr", "price": 4}),
        ]),
    );
    env
}

/// `status --json`'s counts per feed: [live, deleted, pending, sent, retry, failed].
fn counts(env: &Env) -> BTreeMap<String, [u64; 6]> {
    let run = env.run(&["status", "--json"]);
    run.assert_code(0);
    run.json()["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let n = |k: &str| f[k].as_u64().unwrap();
            let c = [
                n("live"),
                n("deleted"),
                n("pending"),
                n("sent"),
                n("retry"),
                n("failed"),
            ];
            (f["name"].as_str().unwrap().to_string(), c)
        })
        .collect()
}

/// Every envelope item the receiver got, as (op, id, key).
fn envelopes(receiver: &Receiver) -> Vec<(String, String, Value)> {
    receiver
        .requests()
        .iter()
        .flat_map(|r| r.items().to_vec())
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap().to_string();
            (s("op"), s("id"), i["key"].clone())
        })
        .collect()
}

#[test]
fn a_file_from_the_last_release_upgrades_on_first_use_and_resends_nothing_else() {
    let receiver = Receiver::start();
    let mut env = release_setup(&receiver);
    let version = |env: &Env| -> i64 {
        env.db()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&env), 4, "the fixture is the release's schema");

    // What the release's own `status` showed for this file.
    let want = BTreeMap::from([
        ("legacy".to_string(), [2, 0, 2, 0, 0, 0]),
        ("p".to_string(), [6, 2, 0, 5, 2, 1]),
        ("pair".to_string(), [2, 0, 0, 2, 0, 0]),
    ]);
    assert_eq!(
        counts(&env),
        want,
        "the first look upgrades and counts alike"
    );
    assert!(version(&env) > 4);
    let check: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    // Nothing changed and nothing pending in immediate feeds: nothing goes.
    env.run(&["sync"]).assert_code(0);
    assert_eq!(envelopes(&receiver), vec![], "a sync resends nothing");
    assert_eq!(counts(&env), want);

    // What was pending goes, with the data and key the release stored.
    env.run(&["send"]).assert_code(0);
    let got = envelopes(&receiver);
    assert_eq!(
        got,
        vec![
            ("upsert".into(), "L1".into(), json!({"sku": "L1"})),
            ("upsert".into(), "L2".into(), json!({"sku": "L2"})),
        ]
    );
    assert_eq!(
        receiver.catalog("legacy")["L1"],
        json!({"sku": "L1", "price": 2})
    );

    // The retry items when due: an upsert with its kept data, and a
    // tombstone whose key the upgrade stopped storing.
    receiver.clear_requests();
    env.set_env("FEEDSYNC_NOW", "2099-01-01T00:00:00Z");
    env.run(&["retry"]).assert_code(0);
    let mut got = envelopes(&receiver);
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        vec![
            ("upsert".into(), "FLAKY".into(), json!({"sku": "FLAKY"})),
            ("delete".into(), "GONE2".into(), json!({"sku": "GONE2"})),
        ]
    );
    assert_eq!(
        receiver.catalog("p")["FLAKY"],
        json!({"sku": "FLAKY", "price": 1})
    );

    // Keys that are more than the id's text keep their own: an encoded id,
    // a number in a composite key.
    receiver.clear_requests();
    env.write(
        "p.ndjson",
        &["A1", "A2", "A3", "FLAKY", "BAD", "W/1%"]
            .iter()
            .map(|s| format!("{}\n", json!({"sku": s, "price": 5})))
            .collect::<String>(),
    );
    env.write(
        "pair.ndjson",
        &format!(
            "{}\n{}\n",
            json!({"sku": "X", "store": "de", "price": 3}),
            json!({"sku": 7, "store": "fr", "price": 9})
        ),
    );
    env.run(&["sync"]).assert_code(0);
    let keys: BTreeMap<String, Value> = envelopes(&receiver)
        .into_iter()
        .map(|(_, id, key)| (id, key))
        .collect();
    assert_eq!(keys["W%2F1%25"], json!({"sku": "W/1%"}));
    assert_eq!(keys["7/fr"], json!({"sku": 7, "store": "fr"}));
    assert_eq!(keys["A1"], json!({"sku": "A1"}));
    assert_eq!(
        keys.len(),
        7,
        "six upserts in p (BAD changed too), one in pair"
    );
}

#[test]
fn a_file_from_a_newer_feedsync_is_refused_and_left_alone() {
    let receiver = Receiver::start();
    let env = release_setup(&receiver);
    env.run(&["status"]).assert_code(0); // upgraded to this build's schema
    env.db().execute_batch("PRAGMA user_version = 999").unwrap();
    let before = std::fs::read(env.state_path()).unwrap();
    for job in [&["sync"][..], &["status"], &["retry"]] {
        let run = env.run(job);
        run.assert_code(5);
        assert!(
            run.stderr.contains("newer feedsync"),
            "{job:?}: {}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read(env.state_path()).unwrap(), before);
    assert!(receiver.requests().is_empty());
}
