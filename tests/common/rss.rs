//! Peak memory of one feedsync run, for the tests that bound it (huge
//! records, streamed database results): written once, here, because the
//! probe below must be found by its test name.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use super::{Env, Run};

/// Runs feedsync and returns how it went with its peak resident memory in
/// bytes, taken from the kernel's accounting of exactly that child (not
/// `RUSAGE_CHILDREN`, which would mix in other tests' children).
///
/// The child is started by a fresh copy of this test binary ([`rss_probe`])
/// rather than by this process: Linux starts a child's `ru_maxrss` at the
/// peak of the process that spawned it, and this one runs every other
/// integration test too, so its peak says nothing about feedsync's.
pub fn run_measured(env: &Env, args: &[&str]) -> (Run, u64) {
    let target = env.command(args);
    let out = tempfile::NamedTempFile::new().unwrap();
    let name = format!("{}::rss_probe", module_path!().split_once("::").unwrap().1);
    let mut probe = std::process::Command::new(std::env::current_exe().unwrap());
    probe
        .args(["--ignored", "--exact", &name, "--test-threads=1", "-q"])
        .current_dir(target.get_current_dir().unwrap())
        .env(PROBE_OUT, out.path())
        .env(
            PROBE_ARGS,
            serde_json::to_string(
                &target
                    .get_args()
                    .map(|a| a.to_str().unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        );
    for (k, v) in target.get_envs() {
        match v {
            Some(v) => probe.env(k, v),
            None => probe.env_remove(k),
        };
    }
    let ran = probe.output().unwrap();
    assert!(
        ran.status.success(),
        "the probe failed: {}",
        String::from_utf8_lossy(&ran.stdout)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let run = Run {
        code: doc["code"].as_i64().unwrap() as i32,
        stdout: doc["stdout"].as_str().unwrap().into(),
        stderr: doc["stderr"].as_str().unwrap().into(),
    };
    (run, doc["maxrss"].as_u64().unwrap())
}

/// Where [`rss_probe`] writes how the run went, and the run's arguments.
const PROBE_OUT: &str = "FEEDSYNC_TEST_RSS_PROBE_OUT";
const PROBE_ARGS: &str = "FEEDSYNC_TEST_RSS_PROBE_ARGS";

/// Not a test: the small process [`run_measured`] starts to run feedsync
/// and read its peak memory. It inherits the directory and environment
/// the run needs.
#[test]
#[ignore = "run by run_measured only"]
// The child is reaped by `wait4`, which std's lint cannot see.
#[allow(clippy::zombie_processes)]
fn rss_probe() {
    let (Ok(out), Ok(args)) = (std::env::var(PROBE_OUT), std::env::var(PROBE_ARGS)) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_feedsync"))
        .args(&args)
        .env_remove(PROBE_OUT)
        .env_remove(PROBE_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out_pipe.read_to_string(&mut s).unwrap();
        s
    });
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes only into it and
    // `status`. Reaping the child here is fine: `child` is not waited on again.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    let doc = serde_json::json!({
        "code": status.code().unwrap_or(-1),
        "stdout": stdout,
        "stderr": stderr,
        "maxrss": usage.ru_maxrss as u64 * 1024,
    });
    std::fs::write(out, doc.to_string()).unwrap();
}
