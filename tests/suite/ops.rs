//! Setting feedsync up and looking at it: `init`, shell completions, the
//! man page, the JSON-lines log and the HTML report.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

fn feedsync_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_feedsync"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FEEDSYNC_NOW")
        .env_remove("FEEDSYNC_CONFIG")
        .output()
        .unwrap()
        .into()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn init_then_sync_works_in_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    feedsync_in(dir.path(), &["init"]).assert_code(0);
    assert!(dir.path().join("feedsync.toml").exists());

    let run = feedsync_in(dir.path(), &["sync", "--json"]);
    run.assert_code(0);
    let feeds = &run.json()["feeds"];
    assert_eq!(feeds[0]["name"], "products");
    assert_eq!(feeds[0]["sent"], 1994);
    assert_eq!(feeds[1]["name"], "categories");
    // Every product arrived at the file target, as the sample export has it.
    let batches = lines(&dir.path().join("out/products.ndjson"));
    let sent: usize = batches
        .iter()
        .map(|b| b["items"].as_array().unwrap().len())
        .sum();
    assert_eq!(sent, 1994);
    let (_, rows) = read_csv(&luma_csv());
    assert_eq!(
        batches[0]["items"][0]["data"],
        Value::Object(rows[0].clone())
    );
    // A second sync has nothing to send; doctor finds nothing to fix.
    let run = feedsync_in(dir.path(), &["sync", "--json"]);
    assert_eq!(run.json()["feeds"][0]["sent"], 0);
    let doctor = feedsync_in(dir.path(), &["doctor"]);
    doctor.assert_code(0);
}

#[test]
fn init_keeps_an_existing_config_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shop/feedsync.toml");
    let config_arg = config.to_str().unwrap();
    feedsync_in(dir.path(), &["init", config_arg]).assert_code(0);
    assert!(dir.path().join("shop/exports/products.csv").exists());

    std::fs::write(&config, "# mine\n").unwrap();
    // An edited export is never overwritten, even with --force.
    std::fs::write(
        dir.path().join("shop/exports/categories.csv"),
        "url_key\nx\n",
    )
    .unwrap();
    let run = feedsync_in(dir.path(), &["init", config_arg]);
    run.assert_code(2);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    feedsync_in(dir.path(), &["init", config_arg, "--force"]).assert_code(0);
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("[[feeds]]")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("shop/exports/categories.csv")).unwrap(),
        "url_key\nx\n"
    );
    // --config names where init writes, and where sync then reads.
    let run = feedsync_in(dir.path(), &["--config", config_arg, "sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["feeds"][1]["sent"], 1);
}

#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let run = feedsync_in(dir.path(), &["completions", shell]);
        run.assert_code(0);
        for word in ["resync", "doctor", "by-ids", "allow-deletes"] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    feedsync_in(dir.path(), &["completions", "tcsh"]).assert_code(2);
}

/// The man pages in doc/man are generated from the clap definition; this
/// fails when they are stale. Regenerate with
/// `FEEDSYNC_UPDATE_MAN=1 cargo test --test integration ops::man_pages`.
#[test]
fn man_pages_are_up_to_date() {
    use clap::CommandFactory;
    let fresh = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(feedsync::cli::Cli::command(), fresh.path()).unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/man");
    if std::env::var_os("FEEDSYNC_UPDATE_MAN").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).unwrap();
        for e in std::fs::read_dir(fresh.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), committed.join(e.file_name())).unwrap();
        }
    }
    let names = |dir: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&committed), names(fresh.path()), "regenerate doc/man");
    for name in names(fresh.path()) {
        assert_eq!(
            std::fs::read_to_string(committed.join(&name)).unwrap(),
            std::fs::read_to_string(fresh.path().join(&name)).unwrap(),
            "doc/man/{name} is stale: FEEDSYNC_UPDATE_MAN=1 cargo test --test integration ops::man_pages"
        );
    }
    let page = std::fs::read_to_string(committed.join("feedsync.1")).unwrap();
    assert!(page.contains("doctor"));
}

/// `{ file = "PATH" }`, as `[report]` and `[log]` take it.
fn file_table(path: &str) -> toml::Value {
    toml::Value::Table(toml::Table::from_iter([("file".to_string(), path.into())]))
}

/// Two feeds, `p` and `q`, against the receiver, with `top` as extra
/// top-level tables (`report`, `log`, …).
fn two_feeds(receiver: &Receiver, top: &[(&str, toml::Value)]) -> Env {
    let env = Env::new();
    let mut config = ConfigBuilder::new()
        .target_url(&receiver.url("/{feed}"))
        .feed(FeedConfig::new("p", "p.ndjson", &["sku"]))
        .feed(FeedConfig::new("q", "q.ndjson", &["sku"]));
    for (key, value) in top {
        config = config.top(key, value.clone());
    }
    env.write_config(&config);
    let rows =
        |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"sku": format!("A{i}")})).collect() };
    write_ndjson(&env.path("p.ndjson"), &rows(5));
    write_ndjson(&env.path("q.ndjson"), &rows(3));
    env
}

#[test]
fn the_report_shows_each_feed_and_each_failed_item_escaped() {
    let receiver = Receiver::start();
    let env = two_feeds(&receiver, &[]);
    receiver.push(Behavior::Results(vec![
        json!({"id": "A1", "ok": false, "error": "<b>price</b> must be > 0 & \"currency\" set"}),
        json!({"id": "A3", "ok": false, "error": "<script>alert(1)</script>"}),
    ]));
    env.run(&["sync"]).assert_code(1);

    env.run(&["report", "--out", "site/status.html"])
        .assert_code(0);
    let page = std::fs::read_to_string(env.path("site/status.html")).unwrap();
    for text in [
        ">p<",
        ">q<",
        "<code>A1</code>",
        "<code>A3</code>",
        "&lt;b&gt;price&lt;/b&gt; must be &gt; 0 &amp; &quot;currency&quot; set",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "<svg",
    ] {
        assert!(page.contains(text), "the page lacks {text}");
    }
    assert!(
        !page.contains("<b>price"),
        "an error reached the page unescaped"
    );
    // Self-contained: no scripts, no links, nothing fetched.
    for outside in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!page.contains(outside), "the page has {outside}");
    }
    let without_svg_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_svg_ns.contains("http://") && !without_svg_ns.contains("https://"));
}

#[test]
fn run_rewrites_the_configured_report_after_work() {
    let receiver = Receiver::start();
    let env = two_feeds(&receiver, &[("report", file_table("www/status.html"))]);
    env.run(&["sync"]).assert_code(0);
    assert!(
        !env.path("www/status.html").exists(),
        "only `run` writes it"
    );
    env.run(&["run"]).assert_code(0);
    let page = std::fs::read_to_string(env.path("www/status.html")).unwrap();
    assert!(page.contains(">p<") && page.contains(">q<"));
    assert!(page.contains("in sync"), "{page}");
}

#[test]
fn the_log_file_has_a_line_per_feed_per_job() {
    let receiver = Receiver::start();
    let env = two_feeds(&receiver, &[("log", file_table("logs/feedsync.log"))]);
    std::fs::remove_file(env.path("q.ndjson")).unwrap();
    env.run(&["sync"]).assert_code(3);
    env.write("q.ndjson", "{\"sku\":\"B\"}\n");
    env.run(&["run"]).assert_code(0);

    let log = lines(&env.path("logs/feedsync.log"));
    let got: Vec<(String, String, String)> = log
        .iter()
        .map(|l| {
            (
                l["job"].as_str().unwrap().into(),
                l["feed"].as_str().unwrap().into(),
                l["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("sync", "p", "ok"),
        ("sync", "q", "source_error"),
        ("sync", "p", "ok"),
        ("sync", "q", "ok"),
    ];
    // `run` may also find send/retry/cleanup due, depending on the minute.
    assert_eq!(
        got[..4],
        want.map(|(a, b, c)| (a.into(), b.into(), c.into()))
    );
    assert_eq!(log[0]["sent"], 5);
    assert_eq!(log[1]["exit_code"], 3);
    assert!(log[1]["error"].as_str().unwrap().contains("q.ndjson"));
    assert_eq!(log[3]["collected"], 1);
    assert_eq!(log[3]["sent"], 1);
    for l in &log {
        assert!(l["elapsed_ms"].is_u64() && l["pid"].is_u64(), "{l}");
    }
}

/// A small tmpfs of its own, unmounted when dropped (lazily, so a test
/// that fails while a file in it is open cannot leave it mounted).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` when this process may not mount (not root, or a container
    /// without the right).
    fn mount(size: &str) -> Option<Tmpfs> {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the filesystem until not one more byte fits.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 16, 4096, 1] {
            let bytes = vec![0u8; chunk];
            // Bounded: the filesystem is a few MB.
            for _ in 0..100_000 {
                if file.write_all(&bytes).and_then(|_| file.flush()).is_err() {
                    break;
                }
            }
        }
        assert!(file.write_all(b"x").and_then(|_| file.sync_all()).is_err());
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn read_only_commands_work_on_a_full_disk() {
    let Some(disk) = Tmpfs::mount("2m") else {
        eprintln!(
            "skipped read_only_commands_work_on_a_full_disk: it needs root, to mount a tmpfs"
        );
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let env = Env {
        dir: tempfile::tempdir_in(disk.path()).unwrap(),
        envs: Vec::new(),
    };
    env.write_config(
        &ConfigBuilder::new()
            .target_url(&format!("file:{}/{{feed}}.ndjson", out.path().display()))
            .feed(FeedConfig::new("p", "p.ndjson", &["sku"])),
    );
    let rows = |v: i64| -> Vec<Value> {
        (0..200)
            .map(|i| json!({"sku": format!("A{i}"), "v": v}))
            .collect()
    };
    write_ndjson(&env.path("p.ndjson"), &rows(1));
    env.run(&["sync"]).assert_code(0);
    write_ndjson(&env.path("p.ndjson"), &rows(2));
    let filler = disk.fill();

    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["feeds"][0]["live"], 200);
    assert_eq!(status.json()["feeds"][0]["sent"], 200);
    let items = env.run(&["items", "--feed", "p", "--json"]);
    items.assert_code(0);
    assert_eq!(items.json()["items"].as_array().unwrap().len(), 100);
    let runs = env.run(&["runs", "--json"]);
    runs.assert_code(0);
    assert_eq!(runs.json()["runs"][0]["job"], "sync");
    let page = out.path().join("status.html");
    env.run(&["report", "--out", page.to_str().unwrap()])
        .assert_code(0);
    assert!(std::fs::read_to_string(&page).unwrap().contains(">p<"));
    let doctor = env.run(&["doctor"]);
    doctor.assert_code(1);
    assert!(
        doctor.stdout.contains("is full"),
        "doctor names the full disk:\n{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.contains("feed p: 200 live"),
        "{}",
        doctor.stdout
    );
    // A run cannot write, and says why.
    let sync = env.run(&["sync"]);
    sync.assert_code(5);
    assert!(sync.stderr.contains("is full"), "{}", sync.stderr);

    std::fs::remove_file(filler).unwrap();
    let sync = env.run(&["sync", "--json"]);
    sync.assert_code(0);
    assert_eq!(sync.json()["feeds"][0]["sent"], 200);
    let check: String = env
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert_eq!(
        env.run(&["status", "--json"]).json()["feeds"][0]["pending"],
        0
    );
    // Looking leaves nothing beside the state file.
    for leftover in ["feedsync.sqlite-wal", "feedsync.sqlite-shm"] {
        assert!(!env.path(leftover).exists(), "{leftover} left behind");
    }
}

/// The run history keeps its summary as people read it, the status page
/// charts the items each run sent, and a run record naming a job this
/// build does not know is an error, not some other job.
#[test]
fn run_records_keep_their_summary_figures_and_job_names() {
    let dir = tempfile::tempdir().unwrap();
    feedsync_in(dir.path(), &["init"]).assert_code(0);
    let sync = feedsync_in(dir.path(), &["sync", "--json"]);
    sync.assert_code(0);
    let sent: u64 = sync.json()["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sent"].as_u64().unwrap())
        .sum();
    assert!(sent > 0);

    let runs = feedsync_in(dir.path(), &["runs", "--json"]);
    runs.assert_code(0);
    let summary = runs.json()["runs"][0]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.starts_with("products: "), "{summary}");
    assert!(summary.contains(" sent"), "{summary}");
    let text = feedsync_in(dir.path(), &["runs"]);
    text.assert_code(0);
    assert!(text.stdout.contains(&summary), "{}", text.stdout);

    feedsync_in(dir.path(), &["report", "--out", "page.html"]).assert_code(0);
    let page = std::fs::read_to_string(dir.path().join("page.html")).unwrap();
    assert!(page.contains(&format!(">{sent} sent</text>")), "{page}");
    assert!(
        page.contains(&format!("sync — exit 0 done — {sent} sent")),
        "{page}"
    );

    let db = rusqlite::Connection::open(dir.path().join("feedsync.sqlite")).unwrap();
    db.execute(
        "INSERT INTO runs (job, started_at, finished_at, exit_code, summary)
         VALUES ('backfill', 1, 2, 0, 'x')",
        [],
    )
    .unwrap();
    drop(db);
    let runs = feedsync_in(dir.path(), &["runs", "--json"]);
    runs.assert_code(5);
    assert!(
        runs.stderr.contains("unknown job `backfill`"),
        "{}",
        runs.stderr
    );
}
