//! Real database servers for the database-source tests, not mocks: a
//! throwaway MariaDB, started once per test run (the first test that asks
//! starts it) in a temp dir, on an ephemeral 127.0.0.1 port and a unix
//! socket, with a user that has a password. Each test gets a database of
//! its own ([`Mariadb::database`]), so tests run in parallel.
//!
//! No server outlives the test run: it is stopped by PID when the test
//! process exits (an `atexit` hook, [`stop_at_exit`]), and, should the
//! process be killed instead, by the kernel, because it was started with
//! `PR_SET_PDEATHSIG` from a thread that lives as long as the process
//! ([`spawn_for_the_run`]).
//!
//! Without the server's binaries the tests skip, with one printed line
//! saying what to install; under CI (`CI=true`) that is a failure instead
//! ([`missing`]).
//!
//! PostgreSQL lives in tests/common/pg.rs, built on the same pieces here:
//! [`missing`], [`find_binary`], [`free_port`], [`spawn_for_the_run`] and
//! [`stop_at_exit`].

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// What to install, in every skip line and CI failure.
pub const INSTALL: &str = "apt-get install mariadb-server postgresql";

/// Whether `binaries` are missing. Under CI that fails the test; elsewhere
/// it prints one line per `what` for the whole run, and the caller skips.
pub fn missing(what: &str, binaries: &[&str]) -> bool {
    let Some(absent) = binaries.iter().find(|b| find_binary(b).is_none()) else {
        return false;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is needed under CI: `{absent}` not found ({INSTALL})");
    }
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|w| w == what) {
        said.push(what.to_string());
        eprintln!("skipping the {what} tests: `{absent}` not found (install it: {INSTALL})");
    }
    true
}

/// `name` on `PATH`, or in the sbin folders Debian puts servers in.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Servers to stop when the test process exits: their PID and folder.
static SERVERS: Mutex<Vec<(libc::pid_t, PathBuf)>> = Mutex::new(Vec::new());

/// Stops `pid` (SIGKILL: its data is thrown away) and removes `dir` when
/// the test process exits.
pub fn stop_at_exit(pid: u32, dir: PathBuf) {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        // SAFETY: `stop_servers` is an `extern "C" fn()` that does not unwind.
        let rc = unsafe { libc::atexit(stop_servers) };
        assert_eq!(rc, 0, "atexit");
    });
    SERVERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid as libc::pid_t, dir));
}

extern "C" fn stop_servers() {
    let servers = match SERVERS.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(e) => std::mem::take(&mut *e.into_inner()),
    };
    for (pid, dir) in servers {
        // SAFETY: plain syscalls on a child of this process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Starts `cmd` so that it dies with the test process, however that ends:
/// it is spawned, with `PR_SET_PDEATHSIG`, by a thread that never exits
/// (the signal follows the spawning thread, not the process). Returns its
/// PID; register it with [`stop_at_exit`] too.
pub fn spawn_for_the_run(mut cmd: Command) -> std::io::Result<u32> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("db-server-keeper".into())
        .spawn(move || {
            // SAFETY: prctl is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let _ = tx.send(child.as_ref().map(|c| c.id()).map_err(|e| e.to_string()));
            let _keep = child;
            loop {
                std::thread::park();
            }
        })?;
    rx.recv()
        .expect("the keeper thread answers")
        .map_err(std::io::Error::other)
}

/// The MariaDB user the tests' feeds log in as.
pub const USER: &str = "feedsync";
/// Its password, with characters a URL must percent-encode.
pub const PASSWORD: &str = "Pw:d@b/s?1%x";
/// [`PASSWORD`] as written in a URL.
pub const PASSWORD_ENCODED: &str = "Pw%3Ad%40b%2Fs%3F1%25x";

/// The test run's MariaDB server.
pub struct Mariadb {
    pub port: u16,
    pub socket: PathBuf,
    dir: PathBuf,
    pid: u32,
    client: PathBuf,
}

/// The run's MariaDB, started by the first caller; `None` (the test
/// skips) when MariaDB is not installed and this is not CI.
pub fn mariadb() -> Option<&'static Mariadb> {
    static SERVER: OnceLock<Option<Mariadb>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if missing(
                "MariaDB",
                &["mariadbd", "mariadb-install-db", "mariadb", "openssl"],
            ) {
                return None;
            }
            Some(Mariadb::start())
        })
        .as_ref()
}

/// A database of its own for one test, `label` naming it; `None` when the
/// server is not installed (the test then returns early).
pub fn mariadb_database(label: &str) -> Option<Database> {
    mariadb().map(|s| s.database(label))
}

impl Mariadb {
    fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("feedsync-mariadb-")
            .tempdir()
            .unwrap()
            .keep();
        let root = unsafe { libc::geteuid() } == 0;
        let user_arg = root.then_some("--user=root");
        let data = dir.join("data");
        let install = Command::new(find_binary("mariadb-install-db").unwrap())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(user_arg)
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        certificates(&dir);
        let socket = dir.join("mysqld.sock");
        let port = free_port();
        let log = dir.join("error.log");
        let mut server = Command::new(find_binary("mariadbd").unwrap());
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
            .arg(format!("--ssl-cert={}", dir.join("server.pem").display()))
            .arg(format!("--ssl-key={}", dir.join("server.key").display()))
            .args(user_arg)
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                // Not UTC, so a test sees whether feedsync's sessions are.
                "--default-time-zone=+02:00",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=48M",
                "--innodb-flush-log-at-trx-commit=0",
                "--performance-schema=OFF",
                "--skip-log-bin",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = spawn_for_the_run(server).expect("starting mariadbd");
        stop_at_exit(pid, dir.clone());
        let s = Mariadb {
            port,
            socket,
            dir,
            pid,
            client: find_binary("mariadb").unwrap(),
        };
        let started = Instant::now();
        loop {
            if s.socket.exists() && s.try_sql("", "SELECT 1").is_ok() {
                break;
            }
            // SAFETY: signal 0 only asks whether the process exists.
            let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
            let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
            assert!(alive, "mariadbd exited while starting:\n{}", log_text());
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "mariadbd did not answer within 60 s:\n{}",
                log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.sql(
            "",
            &format!(
                "CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';
                 CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
            ),
        );
        s
    }

    /// A fresh database, on which the feeds' user may do anything (so a
    /// test sees that feedsync itself does not write, not the grants).
    pub fn database(&'static self, label: &str) -> Database {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{label}_{}", N.fetch_add(1, Ordering::SeqCst));
        self.sql(
            "",
            &format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4;
                 GRANT ALL ON `{name}`.* TO '{USER}'@'localhost';
                 GRANT ALL ON `{name}`.* TO '{USER}'@'%';"
            ),
        );
        Database { server: self, name }
    }

    /// Runs SQL as root over the socket in database `db` (`""`: none);
    /// the output's rows, tab-separated.
    fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut child = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "--connect-timeout=10"])
            .args((!db.is_empty()).then_some(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
    }

    /// The CA that signed the server's TLS certificate (for 127.0.0.1).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's folder (its error log is `error.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1
/// signed by it (`server.pem`, `server.key`) in `dir`, so the server
/// speaks TLS and a client can verify it.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new(find_binary("openssl").unwrap())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3",
        "-subj",
        "/CN=feedsync test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "3",
        "-extfile",
        "san.ext",
    ]);
}

/// One test's database on the run's MariaDB.
pub struct Database {
    pub server: &'static Mariadb,
    pub name: String,
}

impl Database {
    /// `mysql://` over TCP, as [`USER`] with [`PASSWORD`].
    pub fn url(&self) -> String {
        format!(
            "mysql://{USER}:{PASSWORD_ENCODED}@127.0.0.1:{}/{}",
            self.server.port, self.name
        )
    }

    /// The same over the unix socket.
    pub fn socket_url(&self) -> String {
        format!(
            "mysql://{USER}:{PASSWORD_ENCODED}@localhost/{}?socket={}",
            self.name,
            self.server.socket.display()
        )
    }

    /// Runs SQL as root in this database; panics on an error.
    pub fn sql(&self, sql: &str) {
        self.server.sql(&self.name, sql);
    }

    /// Runs a query as root; its rows, each a list of tab-separated fields.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.server
            .sql(&self.name, sql)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// Loads an SQL file (a schema and its seed) into this database.
    pub fn load(&self, file: &Path) {
        let text = std::fs::read_to_string(file).unwrap();
        self.sql(&text);
    }

    /// Every query running on the server now, as root sees them.
    pub fn running_queries(&self) -> Vec<String> {
        self.server
            .sql(
                "",
                "SELECT info FROM information_schema.processlist WHERE info IS NOT NULL AND id <> CONNECTION_ID()",
            )
            .lines()
            .map(str::to_string)
            .collect()
    }
}
