//! The state's reading of what it finds in the file.

use super::*;

/// A state file with one feed, whose one item, inserted as `sent`, then
/// got the status `value` (as a run's statements would give it).
fn with_status(value: impl rusqlite::ToSql) -> (tempfile::TempDir, State, i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("state.db")).unwrap();
    let feed = state.feed_id("products").unwrap();
    let item = crate::record::Item {
        id: "p1".into(),
        key: None,
        hash: 1,
        deleted: false,
    };
    let tx = state.write().unwrap();
    tx.insert_many(feed, &[(&item, 2, None)], ItemStatus::Sent, 0)
        .unwrap();
    tx.commit().unwrap();
    state
        .conn()
        .execute("UPDATE items SET status = ?1", [value])
        .unwrap();
    (dir, state, feed)
}

#[test]
fn counts_read_each_status_into_its_own_count() {
    for status in ItemStatus::ALL {
        let (_dir, state, feed) = with_status(status);
        let c = state.counts(feed).unwrap();
        let got = [c.pending, c.sent, c.retry, c.failed];
        let want = ItemStatus::ALL.map(|s| u64::from(s == status));
        assert_eq!(got, want, "{status}");
    }
}

#[test]
fn an_unknown_status_is_a_state_error_not_a_failed_item() {
    let (_dir, state, feed) = with_status("lost");
    let e = state.counts(feed).unwrap_err();
    assert_eq!(e.exit_code(), crate::exit_code::ExitCode::State, "{e}");
    assert!(e.to_string().contains("unknown status"), "{e}");
    let filter = ItemFilter {
        status: None,
        id: None,
        limit: 10,
    };
    let e = state.list_items(feed, &filter).unwrap_err();
    assert!(e.to_string().contains("`lost`"), "{e}");
}

#[test]
fn items_filter_by_status() {
    let (_dir, state, feed) = with_status(ItemStatus::Retry);
    let pick = |status| ItemFilter {
        status: Some(status),
        id: None,
        limit: 10,
    };
    let rows = state.list_items(feed, &pick(ItemStatus::Retry)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, ItemStatus::Retry);
    assert!(
        state
            .list_items(feed, &pick(ItemStatus::Failed))
            .unwrap()
            .is_empty()
    );
}

/// A large feed's slots are read in parts by several threads (each on a
/// connection of its own): they must be exactly the rows one reader finds,
/// in order, with the rows of another feed in between left out.
#[test]
fn slots_read_in_parts_are_the_slots_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(&dir.path().join("state.db")).unwrap();
    let (a, b) = (state.feed_id("a").unwrap(), state.feed_id("b").unwrap());
    let tx = state.write().unwrap();
    for n in 0..130_000u32 {
        let item = crate::record::Item {
            id: format!("i{n}"),
            key: None,
            hash: u128::from(n),
            deleted: false,
        };
        let feed = if n % 3 == 0 { b } else { a };
        let status = [ItemStatus::Sent, ItemStatus::Pending][(n % 7 == 0) as usize];
        tx.insert_many(feed, &[(&item, u128::from(n) << 64 | 5, None)], status, 0)
            .unwrap();
    }
    tx.commit().unwrap();
    let tx = state.write().unwrap();
    for feed in [a, b] {
        let parts = tx.slots(feed).unwrap();
        let once = items::read_slots(tx.conn(), feed, (1, i64::MAX)).unwrap();
        assert_eq!(parts.len(), once.len());
        assert!(parts.len() > 40_000);
        for slot in 0..once.len() {
            assert_eq!(parts.rowid(slot), once.rowid(slot));
            assert_eq!(parts.raw_hash(slot), once.raw_hash(slot));
            assert_eq!(parts.pending(slot), once.pending(slot));
            assert_eq!(parts.needs_data(slot), once.needs_data(slot));
        }
    }
}
