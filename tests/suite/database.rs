//! Database sources against a real MariaDB (tests/common/db.rs): every type
//! of the mapping table value by value, a full round of changes, the
//! guards, the errors with the password never shown, a writing query, the
//! unix socket, the deadline's `KILL QUERY`, `doctor`, the examples and
//! streaming memory. The config rules that need no server run everywhere.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::common::db::{self, Database};
use crate::common::rss::run_measured;
use crate::common::*;
use serde_json::{Value, json};

/// This test's own database on the run's MariaDB, or return (skipped)
/// when MariaDB is not installed and this is not CI.
macro_rules! database {
    ($label:expr) => {
        match db::mariadb_database($label) {
            Some(d) => d,
            None => return,
        }
    };
}

/// The variable every test's feed names.
const VAR: &str = "SHOP_DATABASE_URL";

/// Feed `p` keyed by `sku`, reading `query` from the database in [`VAR`].
fn p(query: &str) -> FeedConfig {
    FeedConfig {
        name: "p".into(),
        key: vec!["sku".into()],
        ..FeedConfig::default()
    }
    .with("database_url_env", VAR)
    .with("query", query)
}

/// An installation sending feed `feed` to `receiver`, with `url` in [`VAR`].
fn install(receiver: &Receiver, feed: FeedConfig, url: &str) -> Env {
    let mut env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(&receiver.url("/in/{feed}"), feed));
    env.set_env(VAR, url);
    env
}

/// A small products table.
fn products(db: &Database) {
    db.sql(
        "CREATE TABLE products (sku VARCHAR(20) PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2), qty INT);
         INSERT INTO products VALUES ('A', 'Alpha', 1.50, 3), ('B', 'Beta', 2.00, 0), ('C', 'Gamma', 10.25, 7);",
    );
}

const PRODUCTS: &str = "SELECT sku, name, price, qty FROM products";

fn count(db: &Database, table: &str) -> String {
    db.rows(&format!("SELECT COUNT(*) FROM {table}"))[0][0].clone()
}

#[test]
fn every_type_reaches_the_receiver_value_by_value() {
    let db = database!("types");
    db.sql(
        "CREATE TABLE t (
           sku VARCHAR(10) PRIMARY KEY,
           ti TINYINT, tu TINYINT UNSIGNED, flag BOOLEAN, si SMALLINT, mi MEDIUMINT,
           i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
           f FLOAT, d DOUBLE, price DECIMAL(10,4), big DECIMAL(65,30),
           c CHAR(3), vc VARCHAR(40), tx TEXT, e ENUM('simple','variable'), st SET('a','b','c'),
           j JSON, jt TEXT,
           dt DATE, tm TIME, tf TIME(6), dtm DATETIME, dtf DATETIME(6), ts TIMESTAMP(3) NULL,
           zd DATE, zdt DATETIME, zts TIMESTAMP NULL,
           bin VARBINARY(8), bl BLOB, y YEAR
         );
         SET time_zone = '+00:00';
         INSERT INTO t VALUES (
           'max',
           -128, 255, 1, -32768, 8388607,
           -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
           1.1, 0.1, 19.99, 12345678901234567890123456789012345.123456789012345678901234567890,
           'abc', 'héllo ✓ \"q\"', 'line1\\nline2', 'variable', 'a,c',
           '{\"a\": [1, 2], \"b\": null}', '{\"not\": \"parsed\"}',
           '2024-02-29', '-838:59:59', '12:00:00.500000', '2024-01-02 03:04:05', '2024-01-02 03:04:05.120000',
           '2024-06-01 12:00:00.250',
           '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
           x'00ff10', x'68690a', 2024
         );
         INSERT INTO t (sku) VALUES ('nulls');",
    );
    let query = "SELECT t.*, NULL AS n, JSON_OBJECT('k', 1, 'l', 'x') AS jo,
                        TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW()) AS session_offset
                 FROM t";
    let receiver = Receiver::start();
    let env = install(
        &receiver,
        p(query).with("json_columns", vec!["j", "jo"]),
        &db.url(),
    );
    env.run(&["sync"]).assert_code(0);
    let catalog = receiver.catalog("p");
    let want = json!({
        "sku": "max",
        "ti": -128, "tu": 255, "flag": 1, "si": -32768, "mi": 8388607,
        "i": -2147483648i64, "iu": 4294967295u64,
        "bi": i64::MIN, "bu": u64::MAX,
        "f": 1.1, "d": 0.1,
        "price": "19.9900",
        "big": "12345678901234567890123456789012345.123456789012345678901234567890",
        "c": "abc", "vc": "héllo ✓ \"q\"", "tx": "line1\nline2", "e": "variable", "st": "a,c",
        "j": {"a": [1, 2], "b": null}, "jt": "{\"not\": \"parsed\"}",
        "dt": "2024-02-29", "tm": "-838:59:59", "tf": "12:00:00.5",
        "dtm": "2024-01-02T03:04:05", "dtf": "2024-01-02T03:04:05.12",
        "ts": "2024-06-01T12:00:00.25Z",
        "zd": null, "zdt": null, "zts": null,
        "bin": "AP8Q", "bl": "aGkK", "y": 2024,
        "n": null, "jo": {"k": 1, "l": "x"}, "session_offset": 0
    });
    let got = &catalog["max"];
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&got[k], v, "column {k}: {got}");
    }
    // (Parsed as the receiver parsed the wire's JSON: 2^64-1 is an exact
    // u64 there, and FLOAT 1.1 the double 1.1, not 1.100000023841858.)
    assert_eq!(got, &want, "no other field");

    let nulls = &catalog["nulls"];
    for (k, v) in nulls.as_object().unwrap() {
        if !["sku", "jo", "session_offset"].contains(&k.as_str()) {
            assert_eq!(v, &Value::Null, "column {k}: {nulls}");
        }
    }
}

#[test]
fn a_full_round_sends_exactly_the_changes_and_nothing_when_nothing_changed() {
    let db = database!("round");
    products(&db);
    let receiver = Receiver::start();
    let env = install(&receiver, p(PRODUCTS).with("max_deletes", 1), &db.url());
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p")["A"],
        json!({"sku": "A", "name": "Alpha", "price": "1.50", "qty": 3})
    );
    assert_eq!(receiver.catalog("p").len(), 3);

    db.sql(
        "UPDATE products SET qty = 4 WHERE sku = 'A';
         DELETE FROM products WHERE sku = 'B';
         INSERT INTO products VALUES ('D', 'Delta', 5.00, 1);",
    );
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    let mut ops = receiver.sent_ops("p");
    ops.sort();
    let op = |o: &str, id: &str| (o.to_string(), id.to_string());
    assert_eq!(
        ops,
        [op("delete", "B"), op("upsert", "A"), op("upsert", "D")]
    );
    assert_eq!(receiver.catalog("p")["A"]["qty"], 4);

    receiver.clear_requests();
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 3);
    assert!(
        receiver.sent_ops("p").is_empty(),
        "nothing changed, nothing sent"
    );
}

/// Rows come back in the order of the last read, so the diff settles each
/// with the slot after the last one's: a row deleted, then restored with
/// the same bytes in its old place, is still news and is sent again.
#[test]
fn a_row_deleted_then_restored_unchanged_in_its_old_place_is_sent_again() {
    let db = database!("restored");
    products(&db);
    let receiver = Receiver::start();
    let query = "SELECT sku, name, price, qty FROM products ORDER BY sku";
    let env = install(&receiver, p(query).with("max_deletes", 1), &db.url());
    env.run(&["sync"]).assert_code(0);
    db.sql("DELETE FROM products WHERE sku = 'B'");
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 2);

    db.sql("INSERT INTO products VALUES ('B', 'Beta', 2.00, 0)");
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.sent_ops("p"),
        [("upsert".to_string(), "B".to_string())]
    );
    assert_eq!(
        receiver.catalog("p")["B"],
        json!({"sku": "B", "name": "Beta", "price": "2.00", "qty": 0})
    );
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert!(receiver.sent_ops("p").is_empty(), "nothing changed since");
}

/// A run killed while its changes were on the wire leaves them pending,
/// their data gone with its spool; the next run must read those rows in
/// full to pass their data along, though their bytes are the ones it
/// hashed last time (and the diff settles rows in the last read's order).
#[test]
fn a_change_left_pending_by_a_killed_run_is_delivered_by_the_next() {
    let db = database!("killed");
    products(&db);
    let receiver = Receiver::start();
    let query = "SELECT sku, name, price, qty FROM products ORDER BY sku";
    let env = install(&receiver, p(query), &db.url());
    env.run(&["sync"]).assert_code(0);

    db.sql("UPDATE products SET qty = 9 WHERE sku = 'B'");
    receiver.clear_requests();
    receiver.push(Behavior::Hang(Duration::from_secs(60)));
    let mut child = env
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while receiver.request_count() == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        receiver.request_count(),
        1,
        "the batch reached the receiver"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(receiver.catalog("p")["B"]["qty"], 0, "not applied");

    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p")["B"]["qty"], 9);
    assert_eq!(
        receiver.sent_ops("p"),
        [("upsert".to_string(), "B".to_string())]
    );
}

#[test]
fn an_emptied_table_is_stopped_by_the_mass_delete_guard() {
    let db = database!("guard");
    products(&db);
    let receiver = Receiver::start();
    let env = install(&receiver, p(PRODUCTS), &db.url());
    env.run(&["sync"]).assert_code(0);
    db.sql("DELETE FROM products");
    receiver.clear_requests();
    let before = env.dump();
    let run = env.run(&["sync"]);
    run.assert_code(6);
    assert!(receiver.sent_ops("p").is_empty());
    assert_eq!(env.dump(), before);
    assert_eq!(receiver.catalog("p").len(), 3);
}

/// Every place a secret could leak to: stdout, stderr, the log file and
/// the state file (with its -wal, should one be left).
fn assert_nowhere(env: &Env, run: &Run, secrets: &[&str]) {
    let mut places = vec![
        ("stdout", run.stdout.clone().into_bytes()),
        ("stderr", run.stderr.clone().into_bytes()),
    ];
    for f in ["feedsync.log", "feedsync.sqlite", "feedsync.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(f)) {
            places.push((f, bytes));
        }
    }
    for (place, bytes) in &places {
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "`{s}` appears in {place}"
            );
        }
    }
}

#[test]
fn a_wrong_password_is_exit_3_and_the_password_appears_nowhere() {
    let db = database!("login");
    products(&db);
    let receiver = Receiver::start();
    let wrong = "Wr0ng-Pa55word-7731";
    let url = db.url().replace(db::PASSWORD_ENCODED, wrong);
    let mut env = install(&receiver, p(PRODUCTS), &url);
    let mut config = ConfigBuilder::one_feed(&receiver.url("/in/{feed}"), p(PRODUCTS));
    config
        .top
        .insert("log".into(), table(&[("file", "feedsync.log")]));
    env.write_config(&config);
    let run = env.run(&["sync", "-vv"]);
    run.assert_code(3);
    assert!(run.stderr.contains("Access denied"), "{}", run.stderr);
    assert!(run.stderr.contains(":***@127.0.0.1"), "{}", run.stderr);
    assert!(env.path("feedsync.log").exists());
    assert_nowhere(&env, &run, &[wrong]);
    assert!(receiver.sent_ops("p").is_empty());

    // The right password is never shown either, on success or at -vv.
    env.set_env(VAR, &db.url());
    let run = env.run(&["sync", "-vv"]);
    run.assert_code(0);
    assert_nowhere(&env, &run, &[db::PASSWORD, db::PASSWORD_ENCODED]);
}

#[test]
fn an_sql_error_and_a_server_that_is_down_are_exit_3_with_the_state_untouched() {
    let db = database!("errors");
    products(&db);
    let receiver = Receiver::start();
    let mut env = install(&receiver, p(PRODUCTS), &db.url());
    env.run(&["sync"]).assert_code(0);
    db.sql("UPDATE products SET qty = 99");
    let before = env.dump();

    for (query, wants) in [
        ("SELECT sku FROM nowhere", "doesn't exist"),
        ("SELEKT sku FROM products", "SQL syntax"),
    ] {
        env.write_config(&ConfigBuilder::one_feed(
            &receiver.url("/in/{feed}"),
            p(query),
        ));
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(run.stderr.contains(wants), "{query}: {}", run.stderr);
        assert!(
            run.stderr.contains("mysql://feedsync:***@"),
            "{}",
            run.stderr
        );
        assert_eq!(env.dump(), before);
    }

    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/in/{feed}"),
        p(PRODUCTS),
    ));
    let down = format!(
        "mysql://{}:{}@127.0.0.1:{}/{}",
        db::USER,
        db::PASSWORD_ENCODED,
        db::free_port(),
        db.name
    );
    env.set_env(VAR, &down);
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("cannot reach the server"),
        "{}",
        run.stderr
    );
    assert_eq!(env.dump(), before);

    env.set_env(VAR, &db.url().replace(&db.name, "no_such_db"));
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("no_such_db"), "{}", run.stderr);
    assert_eq!(env.dump(), before);
    assert!(
        receiver.sent_ops("p").len() == 3,
        "only the first sync sent"
    );
}

#[test]
fn an_unsupported_type_names_the_column_its_type_and_a_cast() {
    let db = database!("unmapped");
    db.sql(
        "CREATE TABLE g (sku VARCHAR(5), spot POINT, bits BIT(3));
         INSERT INTO g VALUES ('A', POINT(1, 2), b'101');",
    );
    let receiver = Receiver::start();
    for (query, wants) in [
        (
            "SELECT sku, spot FROM g",
            ["`spot`", "GEOMETRY", "ST_AsText(`spot`)"],
        ),
        (
            "SELECT sku, bits FROM g",
            ["`bits`", "BIT", "CAST(`bits` AS UNSIGNED)"],
        ),
    ] {
        let env = install(&receiver, p(query), &db.url());
        let run = env.run(&["sync"]);
        run.assert_code(3);
        for w in wants {
            assert!(run.stderr.contains(w), "{query}: {w}: {}", run.stderr);
        }
        assert!(env.dump().is_empty());
    }
    // The suggested cast works.
    let env = install(
        &receiver,
        p("SELECT sku, ST_AsText(`spot`) AS `spot`, CAST(`bits` AS UNSIGNED) AS `bits` FROM g"),
        &db.url(),
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(
        receiver.catalog("p")["A"],
        json!({"sku": "A", "spot": "POINT(1 2)", "bits": 5})
    );
}

#[test]
fn a_duplicate_column_name_is_a_source_error_naming_it() {
    let db = database!("dup");
    products(&db);
    let receiver = Receiver::start();
    let env = install(
        &receiver,
        p("SELECT sku, name, name AS sku FROM products"),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("`sku` twice"), "{}", run.stderr);
    assert!(env.dump().is_empty());
}

#[test]
fn json_columns_errors_name_the_column_and_the_row() {
    let db = database!("jsoncols");
    db.sql(
        "CREATE TABLE j (sku VARCHAR(5), attrs TEXT);
         INSERT INTO j VALUES ('A', '{\"c\": 1}'), ('B', ''), ('C', '{oops');",
    );
    let receiver = Receiver::start();
    let env = install(
        &receiver,
        p("SELECT sku, attrs FROM j ORDER BY sku").with("json_columns", vec!["attrs"]),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("row 3") && run.stderr.contains("`attrs`"),
        "{}",
        run.stderr
    );
    assert!(env.dump().is_empty());

    let env = install(
        &receiver,
        p("SELECT sku, attrs AS attributes FROM j").with("json_columns", vec!["attrs"]),
        &db.url(),
    );
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("`json_columns` names `attrs`"),
        "{}",
        run.stderr
    );

    db.sql("DELETE FROM j WHERE sku = 'C'");
    let env = install(
        &receiver,
        p("SELECT sku, attrs FROM j").with("json_columns", vec!["attrs"]),
        &db.url(),
    );
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p")["A"]["attrs"], json!({"c": 1}));
    assert_eq!(receiver.catalog("p")["B"]["attrs"], Value::Null);
}

#[test]
fn a_query_that_writes_fails_and_the_table_is_unchanged() {
    let db = database!("writes");
    products(&db);
    let receiver = Receiver::start();
    // Refused by the read-only transaction (and session), or, for a
    // statement without result columns, before it is run at all.
    for query in [
        "DELETE FROM products RETURNING sku",
        "INSERT INTO products VALUES ('X', 'x', 1, 1) RETURNING sku",
        "UPDATE products SET qty = 0",
        "DROP TABLE products",
        "CREATE TABLE more AS SELECT * FROM products",
    ] {
        let env = install(&receiver, p(query), &db.url());
        let run = env.run(&["sync"]);
        run.assert_code(3);
        assert!(
            run.stderr.contains("READ ONLY transaction")
                || run
                    .stderr
                    .contains("returns no columns: it must be a SELECT"),
            "{query}: {}",
            run.stderr
        );
        assert_eq!(count(&db, "products"), "3", "{query}");
        assert_eq!(
            db.rows("SELECT qty FROM products WHERE sku = 'A'")[0][0],
            "3",
            "{query}"
        );
        assert_eq!(db.rows("SHOW TABLES"), [["products"]], "{query}");
    }
}

#[test]
fn a_unix_socket_url_reads_the_same_rows() {
    let db = database!("socket");
    products(&db);
    let receiver = Receiver::start();
    let url = db.socket_url().replace("mysql://", "mariadb://");
    let env = install(&receiver, p(PRODUCTS), &url);
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 3);
    assert_eq!(receiver.catalog("p")["C"]["price"], "10.25");
}

#[test]
fn tls_is_used_and_verified_as_ssl_mode_says() {
    let db = database!("tls");
    products(&db);
    let query = "SELECT sku, (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS
                              WHERE VARIABLE_NAME = 'Ssl_version') AS tls FROM products";
    let receiver = Receiver::start();
    let ca = db.server.ca();
    let tls = |params: &str| install(&receiver, p(query), &format!("{}?{params}", db.url()));
    for params in [
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display()),
        format!("ssl-ca={}", ca.display()),
        "ssl-mode=required".to_string(),
    ] {
        let env = tls(&params);
        env.run(&["sync"]).assert_code(0);
        let version = receiver.catalog("p")["A"]["tls"].clone();
        assert!(
            version.as_str().is_some_and(|v| v.starts_with("TLSv1.")),
            "{params}: {version}"
        );
    }
    // Plain by default.
    let env = install(&receiver, p(query), &db.url());
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p")["A"]["tls"], "");
    // A certificate that does not verify is a source error.
    let run = tls("ssl-mode=VERIFY_IDENTITY").run(&["sync"]);
    run.assert_code(3);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    let run = tls("ssl-mode=sometimes").run(&["sync"]);
    run.assert_code(2);
    assert!(run.stderr.contains("`ssl-mode`"), "{}", run.stderr);
}

#[test]
fn a_row_larger_than_max_record_bytes_is_refused_naming_it() {
    let db = database!("bigrow");
    products(&db);
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::one_feed(
            &receiver.url("/in/{feed}"),
            p("SELECT sku, IF(sku = 'B', REPEAT('x', 5000), name) AS name FROM products ORDER BY sku"),
        )
        .top("max_record_bytes", 2048),
    );
    env.set_env(VAR, &db.url());
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("record 2"), "{}", run.stderr);
    assert!(run.stderr.contains("max_record_bytes"), "{}", run.stderr);
    assert!(env.dump().is_empty());
}

#[test]
fn a_query_past_source_timeout_is_killed_on_the_server() {
    let db = database!("deadline");
    products(&db);
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::one_feed(
            &receiver.url("/in/{feed}"),
            p("SELECT sku, SLEEP(600) AS s FROM products"),
        )
        .top("source_timeout_secs", 2),
    );
    env.set_env(VAR, &db.url());
    let run = env.run(&["sync"]);
    run.assert_code(3);
    assert!(run.stderr.contains("source_timeout_secs"), "{}", run.stderr);
    assert!(env.dump().is_empty());
    // Not only abandoned: the server is not still sleeping on it.
    wait_for("the query to be killed", Duration::from_secs(20), || {
        !db.running_queries()
            .iter()
            .any(|q| q.contains("SLEEP(600)"))
    });
}

#[test]
fn doctor_prepares_the_query_without_running_it_and_names_the_feed() {
    let db = database!("doctor");
    products(&db);
    let receiver = Receiver::start();
    // Prepares fine, fails when run (the subquery gives three rows).
    let runs_badly = "SELECT sku, (SELECT sku FROM products) AS other FROM products";
    let mut env = install(&receiver, p(runs_badly), &db.url());
    let run = env.run(&["doctor"]);
    run.assert_code(0);
    assert!(run.stdout.contains("source p"), "{}", run.stdout);
    env.run(&["sync"]).assert_code(3);

    for (query, wants) in [
        ("SELECT sku FROM nowhere", "doesn't exist"),
        ("SELECT sku, POINT(1, 2) AS spot FROM products", "GEOMETRY"),
        ("SELECT sku, name AS sku FROM products", "twice"),
    ] {
        env.write_config(&ConfigBuilder::one_feed(
            &receiver.url("/in/{feed}"),
            p(query),
        ));
        let run = env.run(&["doctor"]);
        run.assert_code(1);
        let problem = run
            .stdout
            .lines()
            .find(|l| l.starts_with("PROBLEM"))
            .unwrap_or_else(|| panic!("{}", run.stdout));
        assert!(problem.contains("source p"), "{}", run.stdout);
        assert!(problem.contains(wants), "{query}: {}", run.stdout);
    }
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/in/{feed}"),
        p(PRODUCTS),
    ));
    env.set_env(VAR, &db.url().replace(db::PASSWORD_ENCODED, "nope"));
    let run = env.run(&["doctor"]);
    run.assert_code(1);
    assert!(run.stdout.contains("Access denied"), "{}", run.stdout);
    assert!(!run.stdout.contains("nope@"), "{}", run.stdout);
    assert_eq!(count(&db, "products"), "3");
}

/// Config and environment rules: no server needed.
#[test]
fn an_unset_or_foreign_url_variable_is_exit_2_naming_it_before_anything_runs() {
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/in/{feed}"),
        p("SELECT 1 AS sku"),
    ));
    for (value, wants) in [
        (None, "is not set or empty"),
        (Some(""), "is not set or empty"),
        (Some("redis://u:Hunter2@h/0"), "redis://"),
        (
            Some("mysql://u:Hun/ter2@h/db"),
            "does not hold a usable URL",
        ),
        (Some("mysql://u:Hunter2@h/db?sslkey=x"), "`sslkey`"),
        (
            Some("postgres://u:Hunter2@h/db?sslmode=require"),
            "`sslmode`",
        ),
    ] {
        match value {
            Some(v) => env.set_env(VAR, v),
            None => env.envs.retain(|(k, _)| k != VAR),
        }
        for cmd in [
            &["sync"][..],
            &["sync", "--dry-run"],
            &["resync", "--feed", "p"],
            &["run"],
            &["doctor"],
        ] {
            let run = env.run(cmd);
            run.assert_code(2);
            assert!(run.stderr.contains(VAR), "{cmd:?}: {}", run.stderr);
            assert!(run.stderr.contains(wants), "{cmd:?}: {}", run.stderr);
            assert!(
                !run.stderr.contains("Hunter2") && !run.stderr.contains("ter2"),
                "{}",
                run.stderr
            );
        }
        assert!(env.dump().is_empty());
        // Nothing ran: no run record.
        let runs = env.run(&["runs", "--json"]);
        assert_eq!(runs.json()["runs"], json!([]), "{}", runs.stdout);
    }
    // The daemon checks before its first minute (bounded: killed if not).
    env.envs.retain(|(k, _)| k != VAR);
    let mut daemon = env
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    for _ in 0..500 {
        exited = daemon.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if exited.is_none() {
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }
    let mut stderr = String::new();
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(exited.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains(VAR), "{stderr}");
    assert_eq!(receiver.request_count(), 0);
    // Commands that read no source do not need it.
    env.run(&["status"]).assert_code(0);
}

#[test]
fn a_server_that_accepts_and_never_answers_is_cut_off_at_the_deadline() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let receiver = Receiver::start();
    let mut env = Env::new();
    env.write_config(
        &ConfigBuilder::one_feed(&receiver.url("/in/{feed}"), p("SELECT 1 AS sku"))
            .top("source_timeout_secs", 2),
    );
    env.set_env(VAR, &format!("mysql://u:Hunter2@127.0.0.1:{port}/db"));
    let mut child = env
        .command(&["sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("source_timeout_secs") || stderr.contains("could not connect within"),
        "{stderr}"
    );
    assert!(!stderr.contains("Hunter2"), "{stderr}");
    drop(silent);
}

/// A TOML table of strings.
fn table(pairs: &[(&str, &str)]) -> toml::Value {
    toml::Value::Table(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), toml::Value::from(*v)))
            .collect(),
    )
}

/// A shop's example: its schema and seed loaded into the real server, its
/// config's feeds synced to the receiver.
fn example(dir: &str) -> (Database, Receiver, Env) {
    let db = db::mariadb_database(dir).expect("checked by the caller");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir);
    db.load(&root.join("schema.sql"));
    let mut config: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("feedsync.toml")).unwrap()).unwrap();
    let receiver = Receiver::start();
    config.insert(
        "target".into(),
        table(&[("url", &receiver.url("/in/{feed}"))]),
    );
    config.remove("state");
    let var = config["feeds"].as_array().unwrap()[0]["database_url_env"]
        .as_str()
        .unwrap()
        .to_string();
    let mut env = Env::new();
    env.config(&toml::to_string(&config).unwrap());
    env.set_env(&var, &db.url());
    (db, receiver, env)
}

#[test]
fn the_woocommerce_example_syncs_simple_products_and_variations() {
    if db::mariadb().is_none() {
        return;
    }
    let (db, receiver, env) = example("woocommerce");
    env.run(&["sync"]).assert_code(0);
    let items = receiver.catalog("products");
    assert_eq!(
        items["WOO-HOODIE"],
        json!({"sku": "WOO-HOODIE", "name": "Hoodie", "price": "42.00", "stock": 12, "status": "publish"})
    );
    assert_eq!(items["WOO-TEE-RED-M"]["name"], "T-Shirt - Red, M");
    assert_eq!(items["WOO-TEE-RED-M"]["price"], "18.50");
    assert_eq!(items["WOO-BEANIE"]["stock"], Value::Null);
    let mut skus: Vec<&String> = items.keys().collect();
    skus.sort();
    // Not the draft, the trashed product or the variable parent.
    assert_eq!(
        skus,
        [
            "WOO-BEANIE",
            "WOO-HOODIE",
            "WOO-TEE-BLUE-L",
            "WOO-TEE-RED-M"
        ]
    );
    let before = items.len();
    db.sql("UPDATE wp_postmeta SET meta_value = '3' WHERE meta_key = '_stock' AND post_id = 10");
    receiver.clear_requests();
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.sent_ops("products").len(), 1);
    assert_eq!(receiver.catalog("products").len(), before);
}

#[test]
fn the_magento_example_syncs_names_prices_and_stock_for_store_0() {
    if db::mariadb().is_none() {
        return;
    }
    let (_db, receiver, env) = example("magento");
    env.run(&["sync"]).assert_code(0);
    let items = receiver.catalog("products");
    assert_eq!(
        items["24-MB01"],
        json!({"sku": "24-MB01", "name": "Joust Duffle Bag", "price": "34.000000", "qty": "100.0000", "is_in_stock": 1, "type_id": "simple"})
    );
    assert_eq!(items.len(), 4, "{items:?}");
}

/// A result of about 300 MB is streamed: feedsync's peak memory stays
/// under 200 MB. (The rows are made by the server, `seq_1_to_N`.)
#[test]
fn a_300_mb_result_streams_in_flat_memory() {
    let db = database!("stream");
    let receiver_less = ConfigBuilder::new()
        .target_url("file:out/{feed}.ndjson")
        .feed(p(
            "SELECT CONCAT('sku-', seq) AS sku, REPEAT('x', 1000) AS pad FROM seq_1_to_300000",
        ));
    let mut env = Env::new();
    env.write_config(&receiver_less);
    env.set_env(VAR, &db.url());
    let (run, maxrss) = run_measured(&env, &["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 300_000);
    assert!(
        maxrss < 200 << 20,
        "peak RSS {} MB for a ~300 MB result",
        maxrss >> 20
    );
}
