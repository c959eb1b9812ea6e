//! The delivery contract every target kind keeps, run once per kind (see
//! `common::targets`): a first sync delivers everything, a change sends
//! only it, a delete sends a delete, an unchanged source sends nothing,
//! a target that fails (5xx, or 429 with `Retry-After`) keeps its items
//! for `retry`, one bad item is isolated while the rest is delivered, and
//! runs killed at any moment converge.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common::*;
use crate::per_target_kind;

const NOW: &str = "2026-11-29T12:00:00Z";

per_target_kind!(
    a_first_sync_delivers_everything,
    a_change_sends_only_it,
    a_delete_sends_a_delete,
    an_unchanged_source_sends_nothing,
    a_failing_target_keeps_items_for_retry,
    a_throttling_target_is_retried_after_retry_after,
    one_bad_item_is_isolated_and_the_rest_delivered,
    sigkill_rounds_converge,
);

fn rows(prices: &[(&str, i64)]) -> Vec<Value> {
    prices
        .iter()
        .map(|(sku, price)| json!({"sku": sku, "price": price}))
        .collect()
}

fn catalog(rows: &[Value]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r["sku"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// An installation with one feed `p` of `rows`, delivering to a fresh
/// target of `kind`.
fn setup(kind: TargetKind, rows: &[Value]) -> (Env, Box<dyn TargetFake>) {
    let mut env = Env::new();
    let target = kind.start(&env);
    env.write_config(
        &ConfigBuilder::new()
            .target(|t| {
                t.url = target.url();
                t.batch_size = Some(2);
                t.extra = target.target_keys();
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env.set_env("FEEDSYNC_NOW", NOW);
    for (name, value) in target.secrets() {
        env.set_env(&name, &value);
    }
    (env, target)
}

fn all_sent(env: &Env) -> bool {
    env.statuses_via_cli("p").values().all(|s| s == "sent")
}

fn a_first_sync_delivers_everything(kind: TargetKind) {
    let now = rows(&[("A", 1), ("B", 2), ("C", 3)]);
    let (env, target) = setup(kind, &now);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    let mut ids: Vec<String> = target.sent_ops("p").into_iter().map(|(_, id)| id).collect();
    ids.sort();
    assert_eq!(ids, ["A", "B", "C"], "{kind:?}: each item once");
    assert!(all_sent(&env), "{kind:?}");
}

fn a_change_sends_only_it(kind: TargetKind) {
    let (env, target) = setup(kind, &rows(&[("A", 1), ("B", 2), ("C", 3)]));
    env.run(&["sync"]).assert_code(0);
    let before = target.sent_ops("p").len();
    let now = rows(&[("A", 1), ("B", 20), ("C", 3)]);
    write_ndjson(&env.path("p.ndjson"), &now);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        target.sent_ops("p")[before..],
        [("upsert".to_string(), "B".to_string())],
        "{kind:?}"
    );
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    assert!(all_sent(&env), "{kind:?}");
}

fn a_delete_sends_a_delete(kind: TargetKind) {
    let (env, target) = setup(kind, &rows(&[("A", 1), ("B", 2), ("C", 3)]));
    env.run(&["sync"]).assert_code(0);
    let before = target.sent_ops("p").len();
    let now = rows(&[("A", 1), ("C", 3)]);
    write_ndjson(&env.path("p.ndjson"), &now);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        target.sent_ops("p")[before..],
        [("delete".to_string(), "B".to_string())],
        "{kind:?}"
    );
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    assert!(all_sent(&env), "{kind:?}: the tombstone is delivered");
}

fn an_unchanged_source_sends_nothing(kind: TargetKind) {
    let now = rows(&[("A", 1), ("B", 2), ("C", 3)]);
    let (env, target) = setup(kind, &now);
    env.run(&["sync"]).assert_code(0);
    let before = target.sent_ops("p");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(target.sent_ops("p"), before, "{kind:?}");
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
}

fn a_failing_target_keeps_items_for_retry(kind: TargetKind) {
    let now = rows(&[("A", 1), ("B", 2), ("C", 3)]);
    let (mut env, target) = setup(kind, &now);
    target.break_it();
    env.run(&["sync"]).assert_code(1);
    assert!(target.mirror("p").is_empty(), "{kind:?}");
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses.len(), 3, "{kind:?}");
    assert!(
        statuses.values().all(|s| s == "retry" || s == "pending"),
        "{kind:?}: {statuses:?}"
    );
    assert!(statuses.values().any(|s| s == "retry"), "{kind:?}");

    target.heal();
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:00:00Z");
    env.run(&["retry"]).assert_code(0);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    assert!(all_sent(&env), "{kind:?}");
}

fn a_throttling_target_is_retried_after_retry_after(kind: TargetKind) {
    if kind == TargetKind::File {
        return; // a file does not throttle
    }
    let now = rows(&[("A", 1), ("B", 2), ("C", 3)]);
    let (mut env, target) = setup(kind, &now);
    target.throttle(7200);
    env.run(&["sync"]).assert_code(1);
    assert!(target.mirror("p").is_empty(), "{kind:?}");
    target.heal();
    // Retry-After (2 h) wins over the 60 s backoff: not due after 1 h.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T13:00:00Z");
    env.run(&["retry"]).assert_code(0);
    assert!(target.mirror("p").is_empty(), "{kind:?}: not due yet");
    env.set_env("FEEDSYNC_NOW", "2026-11-29T14:01:00Z");
    env.run(&["retry"]).assert_code(0);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    assert!(all_sent(&env), "{kind:?}");
}

fn one_bad_item_is_isolated_and_the_rest_delivered(kind: TargetKind) {
    let now = rows(&[("A", 1), ("B", 2), ("C", 3), ("D", 4), ("E", 5)]);
    let (env, target) = setup(kind, &now);
    if !target.reject_item("C") {
        return; // a file takes anything
    }
    env.run(&["sync"]).assert_code(1);
    let mut want = catalog(&now);
    want.remove("C");
    assert_eq!(target.mirror("p"), want, "{kind:?}");
    let statuses = env.statuses_via_cli("p");
    assert_eq!(statuses["C"], "failed", "{kind:?}: {statuses:?}");
    assert_eq!(
        statuses.values().filter(|s| *s == "sent").count(),
        4,
        "{kind:?}: {statuses:?}"
    );
    // The service's own error shows in `items --status failed`.
    let run = env.run(&["items", "--feed", "p", "--status", "failed", "--json"]);
    let items = run.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{kind:?}");
    let error = items[0]["error"].as_str().unwrap_or("");
    assert!(!error.is_empty(), "{kind:?}: the service's error is kept");
}

fn sigkill_rounds_converge(kind: TargetKind) {
    use std::time::Duration;
    let mut now: Vec<Value> = (0..300)
        .map(|i| json!({"sku": format!("S{i:03}"), "price": i}))
        .collect();
    let (mut env, target) = setup(kind, &now);
    let mut rng = Rng(0x5eed);
    for round in 0..6 {
        for r in now.iter_mut() {
            if rng.below(5) == 0 {
                r["price"] = json!(rng.below(1000));
            }
        }
        write_ndjson(&env.path("p.ndjson"), &now);
        let at = format!("2026-11-29T{:02}:00:00Z", 13 + round);
        env.set_env("FEEDSYNC_NOW", &at);
        let mut child = env.command(&["sync"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(150) as u64));
        let _ = child.kill();
        wait_exit(&mut child, Duration::from_secs(60));
    }
    env.set_env("FEEDSYNC_NOW", "2026-11-30T12:00:00Z");
    env.run(&["sync"]).assert_code(0);
    env.run(&["retry"]).assert_code(0);
    assert_eq!(target.mirror("p"), catalog(&now), "{kind:?}");
    assert!(all_sent(&env), "{kind:?}");
}
