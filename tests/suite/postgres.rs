//! PostgreSQL sources against a real server (tests/common/pg.rs): every
//! type of DESIGN.md's mapping table, value by value as it reaches the
//! receiver; a full round of changes; the read-only snapshot; the errors,
//! with the password never shown; the unix socket; `doctor`; the time
//! bounds; and a large result streamed in bounded memory.

use crate::common::pg::{self, PgDb};
use crate::common::rss::run_measured;
use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The variable every test's config names for the URL.
const URL_ENV: &str = "SHOP_DATABASE_URL";

/// Feed `p` reading `query` from the URL in [`URL_ENV`], keyed by `key`.
fn pg_feed(query: &str, key: &[&str]) -> FeedConfig {
    FeedConfig {
        name: "p".into(),
        key: key.iter().map(|k| k.to_string()).collect(),
        ..FeedConfig::default()
    }
    .with("database_url_env", URL_ENV)
    .with("query", query)
}

fn log_table() -> toml::Value {
    toml::Value::Table(toml::Table::from_iter([(
        "file".to_string(),
        "feedsync.log".into(),
    )]))
}

/// An installation reading `feed` from `url` into `receiver`, with a log
/// file (so tests can look for secrets there too).
fn shop_env(receiver: &Receiver, feed: FeedConfig, url: &str) -> Env {
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::one_feed(&receiver.url("/in/{feed}"), feed).top("log", log_table()),
    );
    env.set_env(URL_ENV, url);
    env
}

/// A catalog table `p` (sku, name, price numeric(10,2), qty) with rows.
fn catalog(db: &PgDb, rows: &[(&str, &str, &str, i32)]) {
    db.exec("CREATE TABLE p (sku text PRIMARY KEY, name text, price numeric(10,2), qty int)");
    for (sku, name, price, qty) in rows {
        db.exec(&format!(
            "INSERT INTO p VALUES ('{sku}', '{name}', {price}, {qty})"
        ));
    }
}

const CATALOG_QUERY: &str = "SELECT sku, name, price, qty FROM p";

/// Asserts that `needle` appears nowhere a user or a file could show it.
#[track_caller]
fn assert_nowhere(env: &Env, run: &Run, needle: &str) {
    assert!(!run.stdout.contains(needle), "in stdout: {}", run.stdout);
    assert!(!run.stderr.contains(needle), "in stderr: {}", run.stderr);
    for file in ["feedsync.log", "feedsync.sqlite"] {
        if let Ok(bytes) = std::fs::read(env.path(file)) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "`{needle}` is in {file}"
            );
        }
    }
}

#[test]
fn every_mapped_type_reaches_the_receiver_value_by_value() {
    let Some(db) = pg::database() else { return };
    // The session's time zone must not shift instants.
    db.exec(&format!(
        "ALTER DATABASE {} SET timezone TO 'America/New_York'",
        db.name
    ));
    db.exec(
        "CREATE EXTENSION citext;
         CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN price AS numeric(10,4);
         CREATE DOMAIN code AS text;
         CREATE TABLE t (
           sku text PRIMARY KEY,
           i2 smallint, i4 integer, i8 bigint,
           f4 real, f8 double precision,
           n numeric(12,4), nbig numeric,
           b boolean,
           vc varchar(10), ch char(5), ci citext, e mood, u uuid,
           j json, jb jsonb,
           d date, tm time, ts timestamp, tz timestamptz,
           by bytea,
           ai integer[], atx text[], an numeric(6,2)[], a2 integer[][],
           dp price, dc code);
         INSERT INTO t VALUES (
           'A', -32768, 2147483647, 9223372036854775807,
           1.1, 0.1,
           19.99, 123456789012345678901234567890.123456789012345,
           true,
           'väter', 'ab', 'MiXeD', 'happy', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
           '{\"b\": [1, 2.5, null], \"a\": \"x\"}', '{\"k\": {\"n\": 1}}',
           '2026-03-01', '13:45:07.250', '2026-03-01 13:45:07.123400', '2026-03-01 12:00:00.5+02',
           '\\x00ff10',
           '{1,NULL,3}', '{\"a b\",\"\"}', '{1.5,-2}', '{{1,2},{3,4}}',
           12.5, 'SKU-1');
         INSERT INTO t (sku, i8, f4, f8, n, nbig, b, d, tm, ts, tz, ai, by) VALUES (
           'B', -9223372036854775808, 'NaN', '-Infinity', 'NaN', '-0.000000000000000000000000000001',
           false, 'infinity', '24:00:00', '-infinity', 'infinity', '{}', '');
         INSERT INTO t (sku, f4, f8, n, d, ts, tz) VALUES (
           'C', 'Infinity', 3.4e38, 0, '-infinity', '2026-01-02 03:04:05', '1999-12-31 23:59:59.999999+00');
         INSERT INTO t (sku) VALUES ('N');",
    );
    let receiver = Receiver::start();
    let env = shop_env(&receiver, pg_feed("SELECT * FROM t", &["sku"]), &db.url());
    env.run(&["sync"]).assert_code(0);

    let got = receiver.catalog("p");
    let a = json!({
        "sku": "A", "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
        "f4": 1.1, "f8": 0.1,
        "n": "19.9900", "nbig": "123456789012345678901234567890.123456789012345",
        "b": true,
        "vc": "väter", "ch": "ab   ", "ci": "MiXeD", "e": "happy",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": {"b": [1, 2.5, null], "a": "x"}, "jb": {"k": {"n": 1}},
        "d": "2026-03-01", "tm": "13:45:07.25", "ts": "2026-03-01T13:45:07.1234",
        "tz": "2026-03-01T10:00:00.5Z",
        "by": "AP8Q",
        "ai": [1, null, 3], "atx": ["a b", ""], "an": ["1.50", "-2.00"], "a2": [[1, 2], [3, 4]],
        "dp": "12.5000", "dc": "SKU-1",
    });
    assert_eq!(got["A"], a);
    let nulls = |sku: &str, set: Value| {
        let mut row = a.as_object().unwrap().clone();
        for v in row.values_mut() {
            *v = Value::Null;
        }
        row.insert("sku".into(), sku.into());
        for (k, v) in set.as_object().unwrap() {
            row.insert(k.clone(), v.clone());
        }
        Value::Object(row)
    };
    assert_eq!(
        got["B"],
        nulls(
            "B",
            json!({"i8": i64::MIN, "f4": "NaN", "f8": "-Infinity", "n": "NaN",
                   "nbig": "-0.000000000000000000000000000001", "b": false,
                   "d": "infinity", "tm": "24:00:00", "ts": "-infinity", "tz": "infinity",
                   "ai": [], "by": ""})
        )
    );
    assert_eq!(
        got["C"],
        nulls(
            "C",
            json!({"f4": "Infinity", "f8": 3.4e38, "n": "0.0000", "d": "-infinity",
                   "ts": "2026-01-02T03:04:05", "tz": "1999-12-31T23:59:59.999999Z"})
        )
    );
    assert_eq!(got["N"], nulls("N", json!({})));
    assert_eq!(got.len(), 4);
}

#[test]
fn inserts_updates_and_deletes_are_sent_and_nothing_changed_sends_nothing() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "apple", "1.00", 3), ("B", "bread", "2.50", 0)]);
    // Eight more, so one deletion stays within the mass-delete guard.
    db.exec("INSERT INTO p SELECT 'X' || i, 'x', i, i FROM generate_series(1, 8) AS i");
    let receiver = Receiver::start();
    let env = shop_env(&receiver, pg_feed(CATALOG_QUERY, &["sku"]), &db.url());
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p")["A"],
        json!({"sku": "A", "name": "apple", "price": "1.00", "qty": 3})
    );
    assert_eq!(receiver.catalog("p")["X8"]["price"], "8.00");
    assert_eq!(receiver.catalog("p").len(), 10);

    let requests = receiver.request_count();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.request_count(),
        requests,
        "nothing changed, nothing sent"
    );

    db.exec(
        "UPDATE p SET price = 1.20 WHERE sku = 'A';
         INSERT INTO p VALUES ('C', 'cheese', 7.00, 1);
         DELETE FROM p WHERE sku = 'B';",
    );
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    let mut ops = receiver.sent_ops("p");
    ops.sort();
    assert_eq!(
        ops,
        [
            ("delete".to_string(), "B".to_string()),
            ("upsert".to_string(), "A".to_string()),
            ("upsert".to_string(), "C".to_string()),
        ]
    );
    let now = receiver.catalog("p");
    assert_eq!(now["A"]["price"], "1.20");
    assert_eq!(now.len(), 10);
    assert!(now.contains_key("C") && !now.contains_key("B"));
}

#[test]
fn an_emptied_table_trips_the_mass_delete_guard() {
    let Some(db) = pg::database() else { return };
    catalog(
        &db,
        &[("A", "a", "1", 1), ("B", "b", "2", 2), ("C", "c", "3", 3)],
    );
    let receiver = Receiver::start();
    let env = shop_env(&receiver, pg_feed(CATALOG_QUERY, &["sku"]), &db.url());
    env.run(&["sync"]).assert_code(0);
    db.exec("DELETE FROM p");
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(6);
    assert!(receiver.sent_ops("p").is_empty());
    assert_eq!(
        env.count_via_cli("p", "sent"),
        3,
        "nothing was marked deleted"
    );
}

#[test]
fn a_wrong_password_is_exit_3_and_no_password_is_shown_or_stored() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "a", "1", 1)]);
    let receiver = Receiver::start();
    let wrong = "Wr0ng-Pa55w0rd-xyzzy";
    let mut env = shop_env(
        &receiver,
        pg_feed(CATALOG_QUERY, &["sku"]),
        &db.url_with_password(wrong),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("***"),
        "the URL is shown redacted: {}",
        run.stderr
    );
    assert_nowhere(&env, &run, wrong);
    assert_eq!(receiver.request_count(), 0);

    // The right password works, and is not shown or stored either.
    env.set_env(URL_ENV, &db.url());
    let run = env.run(&["sync"]);
    run.assert_code(0);
    for secret in [pg::PASSWORD, pg::PASSWORD_IN_URL] {
        assert_nowhere(&env, &run, secret);
    }
}

#[test]
fn an_sql_error_is_exit_3_with_the_servers_message_and_the_state_untouched() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "a", "1", 1)]);
    let receiver = Receiver::start();
    let mut feed = pg_feed(CATALOG_QUERY, &["sku"]);
    let env = shop_env(&receiver, feed.clone(), &db.url());
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let requests = receiver.request_count();

    feed = feed.with("query", "SELECT sku, nme FROM p");
    env.write_config(
        &ConfigBuilder::one_feed(&receiver.url("/in/{feed}"), feed).top("log", log_table()),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("column \"nme\" does not exist"),
        "{}",
        run.stderr
    );
    assert_eq!(env.dump(), before);
    assert_eq!(receiver.request_count(), requests);
}

#[test]
fn a_server_that_is_down_is_exit_3_naming_it() {
    let Some(db) = pg::database() else { return };
    let receiver = Receiver::start();
    let port = pg::free_port();
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        pg::USER,
        pg::PASSWORD_IN_URL,
        db.name
    );
    let env = shop_env(&receiver, pg_feed(CATALOG_QUERY, &["sku"]), &url);
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("refused"),
        "{}",
        run.stderr
    );
    assert_nowhere(&env, &run, pg::PASSWORD_IN_URL);
    assert!(env.dump().is_empty());
}

#[test]
fn a_column_of_an_unmapped_type_is_named_with_its_type_and_a_cast() {
    let Some(db) = pg::database() else { return };
    db.exec("CREATE TABLE p (sku text, wait interval, spots point[]); INSERT INTO p VALUES ('A', '1 day', '{}')");
    let receiver = Receiver::start();
    let env = shop_env(
        &receiver,
        pg_feed("SELECT sku, wait FROM p", &["sku"]),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    for needle in ["`wait`", "`interval`", "wait::text"] {
        assert!(
            run.stderr.contains(needle),
            "`{needle}` not in {}",
            run.stderr
        );
    }
    let env = shop_env(
        &receiver,
        pg_feed("SELECT sku, spots FROM p", &["sku"]),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("`point[]`"), "{}", run.stderr);
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn a_column_named_twice_is_exit_3_naming_it() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "a", "1", 1)]);
    let receiver = Receiver::start();
    let env = shop_env(
        &receiver,
        pg_feed("SELECT sku, name, qty AS name FROM p", &["sku"]),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("`name` twice"), "{}", run.stderr);
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn a_query_that_writes_fails_and_the_table_is_unchanged() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "a", "1", 1), ("B", "b", "2", 2)]);
    db.exec("CREATE SEQUENCE s");
    let receiver = Receiver::start();
    for query in [
        "DELETE FROM p RETURNING sku",
        "WITH gone AS (DELETE FROM p RETURNING sku) SELECT sku FROM gone",
        "UPDATE p SET qty = 0 RETURNING sku, qty",
        "SELECT sku, nextval('s') AS n FROM p",
    ] {
        let env = shop_env(&receiver, pg_feed(query, &["sku"]), &db.url());
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(
            run.stderr.contains("read-only transaction"),
            "{query}: {}",
            run.stderr
        );
    }
    // A statement that would end the transaction is not run at all.
    let env = shop_env(&receiver, pg_feed("COMMIT", &["sku"]), &db.url());
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("returns no columns"), "{}", run.stderr);
    assert_eq!(
        db.text("SELECT string_agg(sku || qty, ',' ORDER BY sku) FROM p"),
        "A1,B2"
    );
    assert_eq!(db.text("SELECT last_value::text FROM s"), "1");
    assert_eq!(db.text("SELECT is_called::text FROM s"), "false");
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn json_columns_parse_text_and_take_json_typed_columns_as_they_are() {
    let Some(db) = pg::database() else { return };
    db.exec(
        "CREATE TABLE p (sku text, attrs text, doc jsonb, raw bytea);
         INSERT INTO p VALUES ('A', '{\"color\": \"red\"}', '{\"n\": 1}', convert_to('[1, 2]', 'UTF8')),
                              ('B', '', '\"text\"', NULL);",
    );
    let receiver = Receiver::start();
    let query = "SELECT sku, attrs, doc, raw FROM p ORDER BY sku";
    let feed = |columns: Vec<&str>| pg_feed(query, &["sku"]).with("json_columns", columns);
    let env = shop_env(&receiver, feed(vec!["attrs", "doc", "raw"]), &db.url());
    env.run(&["sync"]).assert_code(0);
    let got = receiver.catalog("p");
    assert_eq!(
        got["A"],
        json!({"sku": "A", "attrs": {"color": "red"}, "doc": {"n": 1}, "raw": [1, 2]})
    );
    // An empty text is null; a jsonb string stays a string.
    assert_eq!(
        got["B"],
        json!({"sku": "B", "attrs": null, "doc": "text", "raw": null})
    );

    let before = env.dump();
    db.exec("UPDATE p SET attrs = '{oops' WHERE sku = 'B'");
    let run = env.run(&["sync"]);
    run.assert_code(3);
    for needle in ["row 2", "`attrs`", "not valid JSON"] {
        assert!(
            run.stderr.contains(needle),
            "`{needle}` not in {}",
            run.stderr
        );
    }
    assert_eq!(env.dump(), before);

    let env = shop_env(&receiver, feed(vec!["attributes"]), &db.url());
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("`attributes`"), "{}", run.stderr);
}

#[test]
fn a_unix_socket_url_reads_the_same_rows() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "apple", "1.00", 3)]);
    let receiver = Receiver::start();
    let env = shop_env(
        &receiver,
        pg_feed(CATALOG_QUERY, &["sku"]),
        &db.socket_url(),
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p")["A"],
        json!({"sku": "A", "name": "apple", "price": "1.00", "qty": 3})
    );
}

#[test]
fn doctor_prepares_the_query_without_running_it_and_names_what_is_wrong() {
    let Some(db) = pg::database() else { return };
    catalog(&db, &[("A", "a", "1", 0)]);
    let receiver = Receiver::start();
    // Running it divides by zero; preparing it does not.
    let runs_badly = "SELECT sku, 1 / qty AS per FROM p";
    let env = shop_env(&receiver, pg_feed(runs_badly, &["sku"]), &db.url());
    let run = env.run(&["doctor"]);
    assert!(!run.stdout.contains("PROBLEM"), "{}", run.stdout);
    env.run(&["sync"]).assert_code(3);

    for (query, needles) in [
        (
            "SELECT sku FROM nope",
            &["source p", "\"nope\" does not exist"][..],
        ),
        (
            "SELECT sku, '1 day'::interval AS wait FROM p",
            &["source p", "`interval`", "wait::text"],
        ),
        ("SELECT sku, sku FROM p", &["source p", "`sku` twice"]),
    ] {
        let env = shop_env(&receiver, pg_feed(query, &["sku"]), &db.url());
        let run = env.run(&["doctor"]);
        run.assert_code(1);
        let problems: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("PROBLEM"))
            .collect();
        assert_eq!(problems.len(), 1, "{}", run.stdout);
        for n in needles {
            assert!(problems[0].contains(n), "`{n}` not in {}", run.stdout);
        }
    }

    let env = shop_env(
        &receiver,
        pg_feed(CATALOG_QUERY, &["sku"]),
        &db.url_with_password("not-it-4242"),
    );
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("password authentication failed"),
        "{}",
        run.stdout
    );
    assert_nowhere(&env, &run, "not-it-4242");
}

#[test]
fn a_query_past_source_timeout_secs_is_cancelled_on_the_server() {
    let Some(db) = pg::database() else { return };
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::one_feed(
            &receiver.url("/in/{feed}"),
            pg_feed("SELECT 'A' AS sku, pg_sleep(600)::text AS slept", &["sku"]),
        )
        .top("source_timeout_secs", 2),
    );
    env.set_env(URL_ENV, &db.url());
    let mut child = env
        .command(&["sync"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(status.code(), Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("source_timeout_secs"), "{}", run.stderr);
    // The server stopped the query: no backend is still sleeping in it.
    let sleeping = format!(
        "SELECT count(*)::text FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()",
        db.name
    );
    wait_for(
        "the server to cancel the query",
        Duration::from_secs(30),
        || db.text(&sleeping) == "0",
    );
}

#[test]
fn a_server_that_accepts_and_never_answers_is_given_up_on_after_30_s() {
    let Some(_db) = pg::database() else { return };
    // Takes the connection and says nothing until the test is done.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        let _ = finished.recv_timeout(Duration::from_secs(300));
        drop(conns);
    });
    let receiver = Receiver::start();
    // The default `source_timeout_secs` (900 s): the 30 s bound on
    // connecting is what ends it.
    let env = shop_env(
        &receiver,
        pg_feed(CATALOG_QUERY, &["sku"]),
        &format!("postgres://shop:pw@127.0.0.1:{port}/x"),
    );
    let mut child = env
        .command(&["sync"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(240));
    let run: Run = child.wait_with_output().unwrap().into();
    done.send(()).unwrap();
    held.join().unwrap();
    assert_eq!(status.code(), Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("within 30 s"), "{}", run.stderr);
}

#[test]
fn a_300_mb_result_streams_in_bounded_memory() {
    let Some(db) = pg::database() else { return };
    // 300,000 rows of about 1 kB: some 300 MB of records.
    db.exec(
        "CREATE TABLE big AS
           SELECT 'sku-' || i AS sku, i AS qty, repeat(md5(i::text), 31) AS description
           FROM generate_series(1, 300000) AS i",
    );
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::new()
            .target_url("file:out.ndjson")
            .feed(pg_feed("SELECT sku, qty, description FROM big", &["sku"])),
    );
    env.set_env(URL_ENV, &db.url());
    let (run, peak) = run_measured(&env, &["sync"]);
    run.assert_code(0);
    let out = std::fs::metadata(env.path("out.ndjson")).unwrap().len();
    assert!(out > 300_000_000, "only {out} bytes were sent");
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
}
