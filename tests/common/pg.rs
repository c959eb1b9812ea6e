//! A throwaway PostgreSQL server for the tests: a real server, never a mock,
//! started once per test run (the first test that asks starts it) in a temp
//! dir, listening on an ephemeral 127.0.0.1 port (password login, SCRAM) and
//! on a unix socket in that dir (trust), with each test given its own
//! database.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then `initdb`
//! and `postgres` run as `nobody`, the temp dir owned by it. No server may
//! outlive the test run: an `atexit` hook stops it by PID and removes its
//! dir, and should the test process die without running it, the kernel
//! sends the server SIGQUIT (the parent-death signal, armed from a thread
//! that lives as long as the process).
//!
//! Without the server binaries the tests skip, saying once what to install;
//! under `CI=true` a missing server is a failure.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The login every test's URL uses, and its password, which holds
/// characters a URL must percent-encode (so decoding is tested too).
pub const USER: &str = "shop";
pub const PASSWORD: &str = "pg s3cr#t:p@ss/w%rd";
/// [`PASSWORD`] as written in a URL's user-info.
pub const PASSWORD_IN_URL: &str = "pg%20s3cr%23t%3Ap%40ss%2Fw%25rd";

/// The superuser the harness sets databases up with (unix socket, trust).
const ADMIN: &str = "pgadmin";

/// The running server.
pub struct Pg {
    pub port: u16,
    pub socket_dir: PathBuf,
    pub bin: PathBuf,
    admin: Mutex<postgres::Client>,
    next: AtomicU32,
}

/// One test's own database, owned by [`USER`].
pub struct PgDb {
    pub name: String,
    pub port: u16,
    pub socket_dir: PathBuf,
}

/// The server, started on first use; `None` (after one printed line saying
/// what to install) when this machine has no PostgreSQL and CI is not set.
pub fn server() -> Option<&'static Pg> {
    static SERVER: OnceLock<Option<Pg>> = OnceLock::new();
    SERVER
        .get_or_init(|| match find_bin() {
            Some(bin) => Some(start(bin)),
            None if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true but no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
            }
            None => {
                // Past libtest's capture, so the line is seen once.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the PostgreSQL tests: no server here (install Debian's `postgresql` package)"
                );
                None
            }
        })
        .as_ref()
}

/// A fresh database for one test, or `None` when the tests skip.
pub fn database() -> Option<PgDb> {
    server().map(Pg::database)
}

impl Pg {
    /// Creates a fresh database owned by [`USER`].
    pub fn database(&self) -> PgDb {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        self.admin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {USER}"))
            .unwrap();
        PgDb {
            name,
            port: self.port,
            socket_dir: self.socket_dir.clone(),
        }
    }

    /// The superuser's connection (unix socket), for what a test must set
    /// up across databases.
    pub fn admin(&self) -> std::sync::MutexGuard<'_, postgres::Client> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PgDb {
    /// The TCP URL with the right password.
    pub fn url(&self) -> String {
        self.url_with_password(PASSWORD_IN_URL)
    }

    /// The TCP URL with `password` (as written in the URL).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }

    /// The unix-socket URL: the socket's folder percent-encoded as the host.
    pub fn socket_url(&self) -> String {
        let dir = self.socket_dir.to_str().unwrap().replace('/', "%2F");
        format!("postgres://{USER}@{dir}:{}/{}", self.port, self.name)
    }

    /// A client as [`USER`] over the unix socket.
    pub fn client(&self) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(USER)
            .dbname(&self.name)
            .connect(postgres::NoTls)
            .unwrap()
    }

    /// Runs SQL statements as [`USER`].
    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{e:?}\nin: {sql}"));
    }

    /// The first column of a one-row query, as text.
    pub fn text(&self, sql: &str) -> String {
        let row = self.client().query_one(sql, &[]).unwrap();
        row.get::<_, String>(0)
    }
}

/// A 127.0.0.1 port nothing listens on (just freed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The newest `/usr/lib/postgresql/N/bin` holding `initdb` and `postgres`.
fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The user the server runs as: ourselves, or `nobody` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam returns null or a
    // pointer to a static record, read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"nobody".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, PostgreSQL needs an unprivileged user: no `nobody` here"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn chown(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// `cmd`, run as `user` when given.
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// The server's PID and dir, for the `atexit` hook.
static PID: AtomicI32 = AtomicI32::new(0);
static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_at_exit() {
    let pid = PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signalling and reaping our own child by its PID.
        unsafe {
            // Fast shutdown: clients are cut off, the server exits.
            libc::kill(pid, libc::SIGINT);
            let started = Instant::now();
            let mut status = 0;
            while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                if started.elapsed() > Duration::from_secs(15) {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn start(bin: PathBuf) -> Pg {
    let user = server_user();
    let dir = tempfile::Builder::new()
        .prefix("feedsync-pg-")
        .tempdir()
        .unwrap()
        .keep();
    DIR.set(dir.clone()).unwrap();
    // SAFETY: registering a plain function with no captured state.
    unsafe { libc::atexit(stop_at_exit) };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.join("data");
    let socket_dir = dir.join("sock");
    for d in [&data, &socket_dir] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(d, user);
    }
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The superuser logs in by the socket (trust); a password for it
    // anyway, which initdb wants when TCP logins need one.
    let pwfile = dir.join("admin-password");
    std::fs::write(&pwfile, "admin-only-on-the-socket\n").unwrap();
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args(["-D", data.to_str().unwrap(), "-U", ADMIN])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .args(["-E", "UTF8", "--locale=C", "--no-sync"])
        .current_dir(&dir)
        .stdin(Stdio::null());
    as_user(&mut initdb, user);
    let out = initdb.output().unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An ephemeral port can be taken between our probe and the server's
    // bind: try a few.
    let log = dir.join("server.log");
    for _attempt in 0..3 {
        let port = free_port();
        let pid = spawn_server(&bin, &data, &socket_dir, port, &log, user);
        PID.store(pid, Ordering::SeqCst);
        if let Some(admin) = wait_ready(pid, &socket_dir, port) {
            let pg = Pg {
                port,
                socket_dir,
                bin,
                admin: Mutex::new(admin),
                next: AtomicU32::new(0),
            };
            pg.admin()
                .batch_execute(&format!(
                    "CREATE ROLE {USER} LOGIN PASSWORD '{}'",
                    PASSWORD.replace('\'', "''")
                ))
                .unwrap();
            return pg;
        }
        PID.store(0, Ordering::SeqCst);
    }
    panic!(
        "PostgreSQL did not start; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Starts `postgres` from a thread that lives as long as the process, so
/// the parent-death signal fires when the process dies, not when the test
/// that happened to start the server ends.
fn spawn_server(
    bin: &Path,
    data: &Path,
    socket_dir: &Path,
    port: u16,
    log: &Path,
    user: Option<(u32, u32)>,
) -> i32 {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(socket_dir)
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(log).unwrap());
    as_user(&mut cmd, user);
    // SAFETY: prctl is async-signal-safe; set after the uid change, which
    // would clear it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pg-keeper".into())
        .spawn(move || {
            let child = cmd.spawn();
            let pid = child.as_ref().map(|c| c.id() as i32);
            tx.send(pid.map_err(|e| e.to_string())).unwrap();
            // Reaped by the atexit hook, by PID.
            std::mem::forget(child);
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start postgres: {e}"))
}

/// Waits (at most 60 s) for the server to take a login on its socket;
/// `None` if it exited first (its port was taken, say).
fn wait_ready(pid: i32, socket_dir: &Path, port: u16) -> Option<postgres::Client> {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return None;
        }
        let admin = postgres::Config::new()
            .host_path(socket_dir)
            .port(port)
            .user(ADMIN)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls);
        if let Ok(admin) = admin {
            return Some(admin);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PostgreSQL did not accept logins within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
