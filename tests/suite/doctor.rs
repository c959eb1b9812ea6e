//! `feedsync doctor`: all well on a healthy setup (exit 0), and each broken
//! thing reported as a problem with a fix (exit 1).

use crate::common::*;
use serde_json::json;

/// The config of [`healthy`]: feed `p` with a bearer token, against the
/// receiver.
fn healthy_config(receiver: &Receiver) -> ConfigBuilder {
    ConfigBuilder::new()
        .target(|t| {
            t.url = receiver.url("/{feed}");
            t.token_env = Some("SHOP_TOKEN".into());
        })
        .feed(FeedConfig::new("p", "p.ndjson", &["sku"]))
}

/// A healthy installation that `run` has served at 10:00 UTC: feed `p`
/// with a bearer token, against the receiver.
fn healthy(receiver: &Receiver) -> Env {
    let mut env = Env::new();
    env.write_config(&healthy_config(receiver));
    env.write("p.ndjson", "{\"sku\":\"A\"}\n{\"sku\":\"B\"}\n");
    env.set_env("SHOP_TOKEN", "s3cret-value");
    env.set_env("TZ", "UTC");
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:00:00Z");
    env.run(&["run"]).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:03:00Z");
    env
}

/// Runs doctor; checks that every problem line has a fix under it.
fn doctor(env: &Env) -> Run {
    let run = env.run(&["doctor"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("PROBLEM") {
            assert!(
                lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("fix: ")),
                "a problem without a fix:\n{}",
                run.stdout
            );
        }
    }
    assert!(!run.stdout.contains("s3cret-value"), "a secret was printed");
    assert!(!run.stderr.contains("s3cret-value"), "a secret was printed");
    run
}

fn problems(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with("PROBLEM"))
        .map(String::from)
        .collect()
}

#[track_caller]
fn assert_one_problem(run: &Run, needles: &[&str]) {
    run.assert_code(1);
    let p = problems(run);
    assert_eq!(p.len(), 1, "{}", run.stdout);
    for n in needles {
        assert!(p[0].contains(n), "`{n}` not in {}", run.stdout);
    }
}

#[test]
fn a_healthy_setup_is_all_well_and_each_feed_gets_one_probe() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    receiver.clear_requests();
    let run = doctor(&env);
    run.assert_code(0);
    assert!(run.stdout.ends_with("all well\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("last `feedsync run` 3 min ago"),
        "{}",
        run.stdout
    );
    let probes = receiver.requests();
    assert_eq!(probes.len(), 1);
    assert_eq!(
        probes[0].body,
        json!({"feed": "p", "sync": "probe", "items": []})
    );
    assert_eq!(
        probes[0].header("authorization"),
        Some("Bearer s3cret-value")
    );
    assert_eq!(probes[0].header("x-feedsync-feed"), Some("p"));
    // Doctor changed nothing: the catalog is what the sync sent.
    assert_eq!(receiver.catalog("p").len(), 2);
}

#[test]
fn an_unreadable_source() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    std::fs::remove_file(env.path("p.ndjson")).unwrap();
    assert_one_problem(&doctor(&env), &["source p", "p.ndjson"]);
}

#[test]
fn a_target_refusing_the_credentials() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    receiver.set(Behavior::Status(401, "{\"error\":\"bad token\"}".into()));
    let run = doctor(&env);
    assert_one_problem(&run, &["target p", "401"]);
    assert!(run.stdout.contains("token_env"), "{}", run.stdout);
}

#[test]
fn a_target_that_is_down() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    // A port nobody listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.write_config(
        &healthy_config(&receiver).target_url(&format!("http://127.0.0.1:{port}/{{feed}}")),
    );
    assert_one_problem(&doctor(&env), &["target p", "did not answer"]);
}

#[test]
fn an_unwritable_file_target() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    // A file where the target's folder should be: nobody can write there.
    env.write("blocked", "");
    env.write_config(&healthy_config(&receiver).target_url("file:blocked/{feed}.ndjson"));
    assert_one_problem(&doctor(&env), &["target p", "blocked"]);
    assert!(!env.path("blocked").is_dir());
}

#[test]
fn a_corrupt_state_file() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    std::fs::write(env.state_path(), vec![0x5a; 8192]).unwrap();
    let run = doctor(&env);
    assert_one_problem(&run, &["state file", "corrupt"]);
    assert!(run.stdout.contains("backup"), "{}", run.stdout);
}

#[test]
fn a_state_file_that_cannot_be_opened() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    std::fs::remove_file(env.state_path()).unwrap();
    std::fs::create_dir(env.state_path()).unwrap();
    assert_one_problem(&doctor(&env), &["state file", "folder"]);
}

#[test]
fn a_stale_last_run_means_cron_stopped() {
    let receiver = Receiver::start();
    let mut env = healthy(&receiver);
    // Every minute: more than 10 minutes without a run is a problem.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:09:00Z");
    doctor(&env).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:11:00Z");
    assert_one_problem(
        &doctor(&env),
        &["last `feedsync run` was 11 min ago", "cron"],
    );

    // A nightly sync: twice its gap (48 h) before doctor worries.
    env.write_config(&healthy_config(&receiver).schedule("sync", "0 2 * * *"));
    env.set_env("FEEDSYNC_NOW", "2026-11-30T10:00:00Z");
    doctor(&env).assert_code(0);
    env.set_env("FEEDSYNC_NOW", "2026-12-01T10:01:00Z");
    assert_one_problem(&doctor(&env), &["last `feedsync run`"]);
}

#[test]
fn a_setup_that_never_ran_is_a_note() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    std::fs::remove_file(env.state_path()).unwrap();
    let run = doctor(&env);
    run.assert_code(0);
    assert!(
        run.stdout.contains("note     no state file yet"),
        "{}",
        run.stdout
    );
    assert!(!env.state_path().exists(), "doctor creates no state file");
    env.run(&["sync"]).assert_code(0);
    let run = doctor(&env);
    run.assert_code(0);
    assert!(
        run.stdout.contains("note     `feedsync run` has never run"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_held_lock() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    let lock = std::fs::File::create(env.path("feedsync.sqlite.lock")).unwrap();
    lock.try_lock().unwrap();
    assert_one_problem(&doctor(&env), &["run lock", "held"]);
    drop(lock);
    doctor(&env).assert_code(0);
}

#[test]
fn failed_items_need_attention() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    env.write("p.ndjson", "{\"sku\":\"A\",\"v\":2}\n{\"sku\":\"B\"}\n");
    receiver.push(Behavior::Results(vec![
        json!({"id": "A", "ok": false, "error": "bad"}),
    ]));
    env.run(&["sync"]).assert_code(1);
    let run = doctor(&env);
    assert_one_problem(&run, &["feed p", "1 item failed"]);
    assert!(run.stdout.contains("items --feed p --status failed"));
}

#[test]
fn a_missing_secret_is_still_a_config_error() {
    let receiver = Receiver::start();
    let mut env = healthy(&receiver);
    env.set_env("SHOP_TOKEN", "");
    let run = env.run(&["doctor"]);
    run.assert_code(2);
    assert!(run.stderr.contains("SHOP_TOKEN"), "{}", run.stderr);
}

#[test]
fn a_lock_held_past_source_timeout_names_the_run_that_holds_it() {
    let receiver = Receiver::start();
    let env = healthy(&receiver);
    // The command hangs while `stuck` exists, as an export waiting on a
    // dead database would; doctor's own read of it must not.
    let command = "if [ -e stuck ]; then echo $$ > cmd.pid; exec sleep 60; else cat p.ndjson; fi";
    let feed = FeedConfig {
        format: Some("ndjson".into()),
        key: vec!["sku".into()],
        ..FeedConfig::default()
    };
    env.write_config(
        &ConfigBuilder {
            feeds: vec![FeedConfig {
                name: "p".into(),
                ..feed.with("command", command)
            }],
            ..healthy_config(&receiver)
        }
        .top("source_timeout_secs", 60),
    );
    env.write("stuck", "");
    // The run starts at 10:03 by its clock.
    let mut run = env.command(&["sync"]).spawn().unwrap();
    struct Stop(Option<std::process::Child>, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.1) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid.trim()])
                    .status();
            }
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let pid = run.id();
    wait_for(
        "the stuck command",
        std::time::Duration::from_secs(20),
        || env.path("cmd.pid").exists() || run.try_wait().unwrap().is_some(),
    );
    assert!(run.try_wait().unwrap().is_none(), "the run ended early");
    let mut stop = Stop(Some(run), env.path("cmd.pid"));
    std::fs::remove_file(env.path("stuck")).unwrap();

    // Within source_timeout_secs: a run in progress, nothing to fix.
    let mut env = env;
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:03:30Z");
    let early = doctor(&env);
    early.assert_code(0);
    assert!(early.stdout.contains("in progress"), "{}", early.stdout);

    // Past it: no source may take that long, so the run is stuck.
    env.set_env("FEEDSYNC_NOW", "2026-11-29T10:05:00Z");
    let late = doctor(&env);
    let pid = pid.to_string();
    assert_one_problem(&late, &["run lock", &pid, "source_timeout_secs", "60 s"]);
    assert!(
        late.stdout.contains(&format!("kill {pid}")),
        "{}",
        late.stdout
    );

    if let Some(mut c) = stop.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    doctor(&env).assert_code(0);
    drop(stop);
}
