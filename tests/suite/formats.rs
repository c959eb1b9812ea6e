//! Reading odd exports end to end, with the real binary: CSV as the `csv`
//! crate reads it (lone-CR line endings, quotes inside unquoted fields,
//! rows of the wrong width), and the limits that bound what one record may
//! cost (`max_record_bytes`, the 128-level nesting limit).

use std::io::Write;

use crate::common::rss::run_measured;
use crate::common::*;

fn csv_feed(receiver: &Receiver) -> Env {
    let env = Env::new();
    env.write_config(&ConfigBuilder::one_feed(
        &receiver.url("/feeds/{feed}"),
        FeedConfig::new("p", "p.csv", &["sku"]),
    ));
    env
}

/// Asserts every bad-input promise: exit 3, a message naming `wants`,
/// nothing sent and the state as it was.
#[track_caller]
fn refused(env: &Env, run: &Run, wants: &[&str], before: &[String]) {
    run.assert_code(3);
    for want in wants {
        assert!(run.stderr.contains(want), "wants {want:?}: {}", run.stderr);
    }
    assert_eq!(env.dump(), before, "the state changed");
}

#[test]
fn a_csv_with_cr_only_line_endings_reads_every_row() {
    let receiver = Receiver::start();
    let env = csv_feed(&receiver);
    env.write("p.csv", "sku,name,price\rA1,Alpha,1.00\rB2,Beta,2.00\r");
    env.run(&["sync"]).assert_code(0);
    let catalog = receiver.catalog("p");
    assert_eq!(catalog.len(), 2, "{catalog:?}");
    assert_eq!(catalog["A1"]["name"], "Alpha");
    assert_eq!(catalog["B2"]["price"], "2.00");
}

#[test]
fn a_cr_only_rewrite_of_synced_data_sends_nothing() {
    let receiver = Receiver::start();
    let env = csv_feed(&receiver);
    let rows: Vec<String> = (0..100)
        .map(|i| format!("S{i:03},Item {i},{i}.50"))
        .collect();
    env.write("p.csv", &format!("sku,name,price\n{}\n", rows.join("\n")));
    env.run(&["sync"]).assert_code(0);
    assert_eq!(receiver.catalog("p").len(), 100);
    let requests = receiver.request_count();

    // The same data as an old "CSV (Macintosh)" export.
    env.write("p.csv", &format!("sku,name,price\r{}\r", rows.join("\r")));
    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][0]["collected"], 100, "{}", run.stdout);
    assert_eq!(receiver.request_count(), requests, "nothing changed");
    assert_eq!(receiver.catalog("p").len(), 100);
}

#[test]
fn a_quote_inside_an_unquoted_field_is_data() {
    let receiver = Receiver::start();
    let env = csv_feed(&receiver);
    env.write("p.csv", "sku,name,qty\nA1,5\" screen,1\nB2,plain,2\n");
    env.run(&["sync"]).assert_code(0);
    let catalog = receiver.catalog("p");
    assert_eq!(catalog.len(), 2, "{catalog:?}");
    assert_eq!(catalog["A1"]["name"], "5\" screen");
    assert_eq!(catalog["A1"]["qty"], "1");
}

#[test]
fn a_quote_after_the_start_of_a_field_does_not_open_a_multi_line_field() {
    let receiver = Receiver::start();
    let env = csv_feed(&receiver);
    // `}"multi` ends at its newline; `"ab"c` reads `abc`, as in the csv crate.
    env.write("p.csv", "sku,name\nA1,}\"multi\nB2,\"ab\"c\nC3,x\n");
    env.run(&["sync"]).assert_code(0);
    let catalog = receiver.catalog("p");
    assert_eq!(catalog.len(), 3, "{catalog:?}");
    assert_eq!(catalog["A1"]["name"], "}\"multi");
    assert_eq!(catalog["B2"]["name"], "abc");
    assert_eq!(catalog["C3"]["name"], "x");
}

#[test]
fn a_row_of_the_wrong_width_names_its_line_and_the_header_width() {
    let receiver = Receiver::start();
    let env = csv_feed(&receiver);
    env.write("p.csv", "sku,name,size,color,qty\nZ9,z,1,red,1\n");
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    let requests = receiver.request_count();

    // Stray quotes on lines 2 and 3 must not glue rows together.
    let good = "sku,name,size,color,qty\nA1,5\" screen,1,red,2\nB2,7\" tablet,2,blue,3\n";
    for (bad, width) in [
        ("C3,x,1,red,2,extra\n", "6 fields"),
        ("C3,x,1\n", "3 fields"),
    ] {
        env.write("p.csv", &format!("{good}{bad}Z9,z,1,red,1\n"));
        let run = env.run(&["sync"]);
        refused(
            &env,
            &run,
            &["p.csv", "record 3 (line 4", width, "the header has 5"],
            &before,
        );
        assert_eq!(receiver.request_count(), requests);
    }
}

// ---------------------------------------------------------------------------
// Limits: the record cap and the nesting limit.

const MB: u64 = 1 << 20;

/// Well over the default `max_record_bytes` of 16 MiB.
const HUGE: usize = 20 << 20;

/// A feed of `format` read from `file` into a `file:` target, so the test
/// process never has to hold a huge record itself.
/// `max_record_bytes`, when given, is set at the top level.
fn file_feed(format: &str, file: &str, max_record_bytes: Option<i64>) -> Env {
    let env = Env::new();
    let mut config = ConfigBuilder::new()
        .target_url("file:out.ndjson")
        .feed(FeedConfig {
            format: Some(format.into()),
            ..FeedConfig::new("p", file, &["sku"])
        });
    if let Some(cap) = max_record_bytes {
        config = config.top("max_record_bytes", cap);
    }
    env.write_config(&config);
    env
}

/// Writes `head`, then `fill` repeated to `size` bytes, then `tail`,
/// streaming, so the test never holds the file in memory.
fn write_big(env: &Env, file: &str, head: &str, fill: &str, size: usize, tail: &str) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(env.path(file)).unwrap());
    w.write_all(head.as_bytes()).unwrap();
    for _ in 0..size / fill.len() {
        w.write_all(fill.as_bytes()).unwrap();
    }
    w.write_all(tail.as_bytes()).unwrap();
    w.flush().unwrap();
}

/// A first sync of two small items, so "state untouched" has a state.
fn synced_before(env: &Env, file: &str, text: &str) -> Vec<String> {
    env.write(file, text);
    env.run(&["sync"]).assert_code(0);
    let before = env.dump();
    assert_eq!(before.len(), 2);
    before
}

#[test]
fn a_huge_ndjson_line_is_refused_before_it_costs_its_size() {
    let env = file_feed("ndjson", "p.ndjson", None);
    let before = synced_before(&env, "p.ndjson", "{\"sku\":\"A\"}\n{\"sku\":\"C\"}\n");
    // A valid record: a numeric array, the costliest kind to parse.
    write_big(
        &env,
        "p.ndjson",
        "{\"sku\":\"A\"}\n{\"sku\":\"B\",\"n\":[1",
        ",1",
        HUGE,
        "]}\n{\"sku\":\"C\"}\n",
    );
    let (run, rss) = run_measured(&env, &["sync"]);
    refused(
        &env,
        &run,
        &["record 2 (line 2", "max_record_bytes", "16777216"],
        &before,
    );
    assert!(rss < 100 * MB, "peak RSS {} MB", rss / MB);
}

#[test]
fn a_huge_json_array_element_is_refused_before_it_costs_its_size() {
    let env = file_feed("json", "p.json", None);
    let before = synced_before(&env, "p.json", "[{\"sku\":\"A\"},\n{\"sku\":\"C\"}]\n");
    write_big(
        &env,
        "p.json",
        "[{\"sku\":\"A\"},\n{\"sku\":\"B\",\"n\":[1",
        ",1",
        HUGE,
        "]},\n{\"sku\":\"C\"}]\n",
    );
    let (run, rss) = run_measured(&env, &["sync"]);
    refused(
        &env,
        &run,
        &["record 2 (line 2", "max_record_bytes", "16777216"],
        &before,
    );
    assert!(rss < 100 * MB, "peak RSS {} MB", rss / MB);
}

#[test]
fn a_huge_csv_row_is_refused_before_it_costs_its_size() {
    let env = file_feed("csv", "p.csv", None);
    let before = synced_before(&env, "p.csv", "sku,desc\nA,x\nC,y\n");
    // One row: a quoted description of many lines.
    write_big(
        &env,
        "p.csv",
        "sku,desc\nA,x\nB,\"",
        "a line of a long description, \"\"quoted\"\"\n",
        HUGE,
        "\"\nC,y\n",
    );
    let (run, rss) = run_measured(&env, &["sync"]);
    refused(
        &env,
        &run,
        &["record 2 (line 3", "max_record_bytes", "16777216"],
        &before,
    );
    assert!(rss < 100 * MB, "peak RSS {} MB", rss / MB);
}

#[test]
fn max_record_bytes_from_the_config_takes_effect() {
    let record = |sku: &str, len: usize| {
        let head = format!("{{\"sku\":\"{sku}\",\"d\":\"");
        format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
    };
    for (format, file) in [("ndjson", "p.ndjson"), ("json", "p.json")] {
        let env = file_feed(format, file, Some(4096));
        let text = |records: &[String]| match format {
            "json" => format!("[{}]", records.join(",\n")),
            _ => records.join("\n") + "\n",
        };
        // A record of exactly the cap is read.
        let before = synced_before(&env, file, &text(&[record("A", 4096), record("C", 100)]));
        env.write(
            file,
            &text(&[record("A", 4096), record("B", 4097), record("C", 100)]),
        );
        let run = env.run(&["sync"]);
        refused(
            &env,
            &run,
            &["record 2 (line 2", "max_record_bytes (4096 bytes)"],
            &before,
        );
    }
}

/// A record nested `levels` deep: the object, then arrays down to an empty one.
fn nested(sku: &str, levels: usize) -> String {
    let arrays = levels - 1;
    let n = match arrays {
        0 => String::new(),
        _ => format!(",\"n\":{}{}", "[".repeat(arrays), "]".repeat(arrays)),
    };
    format!("{{\"sku\":\"{sku}\"{n}}}")
}

#[test]
fn nesting_deeper_than_128_levels_is_refused_naming_the_record() {
    for (format, file) in [("ndjson", "p.ndjson"), ("json", "p.json")] {
        let env = file_feed(format, file, None);
        let lines = |records: &[String]| match format {
            "json" => format!("[{}]", records.join(",\n")),
            _ => records.join("\n") + "\n",
        };
        let deep = nested("D", 128);
        env.write(file, &lines(&[nested("A", 1), deep.clone()]));
        env.run(&["sync"]).assert_code(0);
        let out = std::fs::read_to_string(env.path("out.ndjson")).unwrap();
        assert!(out.contains(&deep), "128 levels are delivered as they are");
        let before = env.dump();
        assert_eq!(before.len(), 2);

        env.write(file, &lines(&[nested("A", 1), nested("D", 129)]));
        let run = env.run(&["sync"]);
        refused(
            &env,
            &run,
            &["record 2 (line 2", "nested deeper than 128 levels"],
            &before,
        );
    }
}

/// Many records just under `max_record_bytes`, each alone in its batch
/// (a batch closes at `max_batch_bytes`): however many batches a `file:`
/// target's window holds, what is with the courier stays bounded in
/// bytes, so peak memory stays under Guarantee 8's bound.
#[test]
fn records_near_the_cap_are_delivered_within_the_memory_bound() {
    let env = file_feed("ndjson", "p.ndjson", None);
    let n = 24;
    let text = "x".repeat(12 << 20);
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(env.path("p.ndjson")).unwrap());
        for i in 0..n {
            writeln!(w, "{{\"sku\":\"S{i:02}\",\"text\":\"{text}\"}}").unwrap();
        }
        w.flush().unwrap();
    }
    drop(text);
    let (run, rss) = run_measured(&env, &["sync"]);
    run.assert_code(0);
    let out = std::fs::read_to_string(env.path("out.ndjson")).unwrap();
    let skus: Vec<String> = out
        .lines()
        .flat_map(|line| {
            let batch: serde_json::Value = serde_json::from_str(line).unwrap();
            let items = batch["items"].as_array().unwrap().clone();
            assert_eq!(items.len(), 1, "one record a batch");
            items
                .into_iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(skus, (0..n).map(|i| format!("S{i:02}")).collect::<Vec<_>>());
    assert!(rss < 200 * MB, "peak RSS {} MB", rss / MB);
}
