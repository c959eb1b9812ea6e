//! The delivery contract every target kind keeps, run once per kind (see
//! `common::targets`): a first sync delivers everything, a change sends
//! only it, a delete sends a delete, an unchanged source sends nothing,
//! and a target that fails keeps its items for `retry`.

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
                kind.configure(t);
            })
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"]).with("max_deletes", "100%")),
    );
    write_ndjson(&env.path("p.ndjson"), rows);
    env.set_env("FEEDSYNC_NOW", NOW);
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
