//! A small, real HTTP/1.1 feed receiver for integration tests.
//!
//! `feedsync` talks to its target over the network, so its tests need a
//! server that speaks the wire format (see DESIGN.md, "Wire format"): it
//! records every request as sent, answers with a programmable behaviour
//! (errors, `Retry-After`, 413, per-item results, hangs, dropped
//! connections) and keeps the catalog a receiver would hold after applying
//! every acknowledged batch. Blocking std networking, one thread per
//! connection, keep-alive supported.
//!
//! Malformed HTTP, and a non-empty body that is not JSON (after gunzip when
//! `Content-Encoding: gzip`), get a 400 and a closed connection without
//! consuming a queued behaviour; the latter is still recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_LINE: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How the receiver answers a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Behavior {
    /// 200 with body `{}`.
    #[default]
    Ok,
    /// This status and body, verbatim.
    Status(u16, String),
    /// This status with `Retry-After: <value>` (value verbatim).
    RetryAfter(u16, String),
    /// 413 if the batch has more than N items, else 200.
    TooLargeAbove(usize),
    /// 400 `{"error":"rejected <id>"}` if the batch holds one of these ids, else 200.
    RejectIds(Vec<String>),
    /// 200 with `{"results": [...]}`; items with `ok: false` are not applied.
    Results(Vec<Value>),
    /// Read the request, sleep this long, then answer 200 (and apply the batch).
    Hang(Duration),
    /// Read the request, then drop the connection without answering.
    Close,
    /// 200 `{"results": [...]}` whose `Content-Length` promises more bytes
    /// than are sent before the connection closes: an answer cut short. The
    /// batch is not applied.
    CutBody(Vec<Value>),
    /// 200 `{"results": [...]}` with a right `Content-Length`, the head sent
    /// at once and the body one byte per pause: an answer slower than any
    /// sane timeout. The batch is not applied.
    TrickleBody(Vec<Value>, Duration),
    /// A 200 `{}` whose status line and headers come one byte per pause.
    /// The batch is not applied.
    TrickleHead(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Body bytes as sent (de-chunked, still compressed).
    pub raw_body: Vec<u8>,
    /// Decoded JSON body, or `Null` when empty or undecodable.
    pub body: Value,
}

impl Request {
    /// Case-insensitive header lookup (first match).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The envelope's `feed` field ("" when missing).
    pub fn feed(&self) -> &str {
        self.body["feed"].as_str().unwrap_or("")
    }

    /// The envelope's `items` (empty when missing).
    pub fn items(&self) -> &[Value] {
        self.body["items"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// A document served to GET requests, as a shop's export endpoint would.
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub body: String,
    pub content_type: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Default)]
struct State {
    export: Option<Export>,
    /// One-shot (status, body) answers to GET requests, used first.
    export_failures: VecDeque<(u16, String)>,
    default: Behavior,
    queue: VecDeque<Behavior>,
    requests: Vec<Request>,
    /// (feed, item) of every applied item, in order.
    delivered: Vec<(String, Value)>,
    catalogs: BTreeMap<String, BTreeMap<String, Value>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The test server; stops accepting and closes its connections when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and serves in background threads.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let id = sh.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    sh.conns().insert(id, clone);
                }
                let sh = Arc::clone(&sh);
                thread::spawn(move || {
                    serve(&stream, &sh);
                    let _ = stream.shutdown(Shutdown::Both);
                    sh.conns().remove(&id);
                });
            }
        });
        Receiver {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` + path, e.g. `url("/feeds/{feed}")`.
    pub fn url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("{}{sep}{path}", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.next_conn.load(Ordering::SeqCst)
    }

    /// Sets the behaviour for all following requests (after the queue).
    pub fn set(&self, behavior: Behavior) {
        self.shared.state().default = behavior;
    }

    /// Queues a one-shot behaviour; queued ones are used first, in order.
    pub fn push(&self, behavior: Behavior) {
        self.shared.state().queue.push_back(behavior);
    }

    /// Serves `export` to GET requests from now on (with 304s for matching
    /// `If-None-Match` / `If-Modified-Since`).
    pub fn set_export(&self, export: Export) {
        self.shared.state().export = Some(export);
    }

    /// Answers the next GET with this status and body instead.
    pub fn fail_export(&self, status: u16, body: &str) {
        self.shared
            .state()
            .export_failures
            .push_back((status, body.to_string()));
    }

    /// The GET requests received so far.
    pub fn gets(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    /// Every request received, including failed ones.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state().requests.clone()
    }

    /// Forgets the requests and delivered items so far; the catalog stays.
    pub fn clear_requests(&self) {
        let mut st = self.shared.state();
        st.requests.clear();
        st.delivered.clear();
    }

    pub fn request_count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// Every applied item of every 2xx batch, in order (items refused by
    /// `Results` with `ok: false` are left out).
    pub fn delivered_items(&self) -> Vec<Value> {
        self.shared
            .state()
            .delivered
            .iter()
            .map(|(_, item)| item.clone())
            .collect()
    }

    /// The receiver's view of a feed: id → data.
    pub fn catalog(&self, feed: &str) -> BTreeMap<String, Value> {
        self.shared
            .state()
            .catalogs
            .get(feed)
            .cloned()
            .unwrap_or_default()
    }
}

impl Receiver {
    /// The ids of `feed`'s applied items, in the order they arrived
    /// (since the last `clear_requests`).
    pub fn sent_ids(&self, feed: &str) -> Vec<String> {
        self.sent_ops(feed).into_iter().map(|(_, id)| id).collect()
    }

    /// (op, id) of `feed`'s applied items, in the order they arrived
    /// (since the last `clear_requests`).
    pub fn sent_ops(&self, feed: &str) -> Vec<(String, String)> {
        self.shared
            .state()
            .delivered
            .iter()
            .filter(|(f, _)| f == feed)
            .map(|(_, item)| (item["op"].as_str().unwrap_or("").to_string(), item_id(item)))
            .collect()
    }

    /// What the receiver holds for `feed` after every acknowledged batch:
    /// id → data (the same as `catalog`, named as every target fake names it).
    pub fn mirror(&self, feed: &str) -> BTreeMap<String, Value> {
        self.catalog(feed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the accept thread sees the flag.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(handle) = self.accept.take()
        {
            let _ = handle.join();
        }
        for conn in self.shared.conns().values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Serves requests on one connection until it closes, errs or times out.
fn serve(stream: &TcpStream, sh: &Shared) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut writer = stream;
    let mut reader = BufReader::new(stream);
    while !sh.stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let body = json!({ "error": format!("bad request: {e}") }).to_string();
                let _ = write_response(&mut writer, 400, &[], &body, false);
                return;
            }
            Err(_) => return,
        };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if req.method == "GET" {
            let (status, headers, body) = {
                let mut st = sh.state();
                st.requests.push(req.clone());
                export_answer(&mut st, &req)
            };
            if write_response(&mut writer, status, &headers, &body, keep_alive).is_err()
                || !keep_alive
            {
                return;
            }
            continue;
        }
        if !req.raw_body.is_empty() && req.body.is_null() {
            let body = r#"{"error":"body is not JSON"}"#;
            sh.state().requests.push(req);
            let _ = write_response(&mut writer, 400, &[], body, false);
            return;
        }
        let behavior = {
            let mut st = sh.state();
            st.requests.push(req.clone());
            st.queue.pop_front().unwrap_or_else(|| st.default.clone())
        };
        match &behavior {
            Behavior::Close => return,
            Behavior::Hang(d) => {
                let until = Instant::now() + *d;
                while Instant::now() < until {
                    if sh.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
            Behavior::CutBody(_) | Behavior::TrickleBody(..) | Behavior::TrickleHead(_) => {
                let _ = write_faulty(&mut writer, &behavior, &req, &sh.stop);
                return;
            }
            _ => {}
        }
        let (status, headers, body) = answer(&behavior, &req);
        if (200..300).contains(&status) {
            apply(&mut sh.state(), &req, &behavior);
        }
        if write_response(&mut writer, status, &headers, &body, keep_alive).is_err() || !keep_alive
        {
            return;
        }
    }
}

/// Status, extra headers and body for a request under a behaviour.
fn answer(behavior: &Behavior, req: &Request) -> (u16, Vec<(String, String)>, String) {
    let ok = (200, vec![], "{}".to_string());
    match behavior {
        Behavior::Ok | Behavior::Hang(_) | Behavior::Close => ok,
        Behavior::Status(s, body) => (*s, vec![], body.clone()),
        Behavior::RetryAfter(s, v) => (*s, vec![("Retry-After".into(), v.clone())], "{}".into()),
        Behavior::TooLargeAbove(n) if req.items().len() > *n => {
            (413, vec![], r#"{"error":"too large"}"#.into())
        }
        Behavior::TooLargeAbove(_) => ok,
        Behavior::RejectIds(ids) => {
            match req.items().iter().map(item_id).find(|id| ids.contains(id)) {
                Some(id) => (
                    400,
                    vec![],
                    json!({ "error": format!("rejected {id}") }).to_string(),
                ),
                None => ok,
            }
        }
        Behavior::Results(results) => (200, vec![], json!({ "results": results }).to_string()),
        Behavior::CutBody(results) | Behavior::TrickleBody(results, _) => {
            (200, vec![], json!({ "results": results }).to_string())
        }
        Behavior::TrickleHead(_) => ok,
    }
}

/// The answer to a GET: the export, a 304, or a queued failure.
fn export_answer(st: &mut State, req: &Request) -> (u16, Vec<(String, String)>, String) {
    if let Some((status, body)) = st.export_failures.pop_front() {
        return (status, vec![], body);
    }
    let Some(e) = &st.export else {
        return (404, vec![], r#"{"error":"no export"}"#.into());
    };
    let mut headers = vec![("Content-Type".to_string(), e.content_type.clone())];
    if let Some(tag) = &e.etag {
        headers.push(("ETag".into(), tag.clone()));
    }
    if let Some(lm) = &e.last_modified {
        headers.push(("Last-Modified".into(), lm.clone()));
    }
    let same_tag = e.etag.is_some() && req.header("if-none-match") == e.etag.as_deref();
    let same_date =
        e.last_modified.is_some() && req.header("if-modified-since") == e.last_modified.as_deref();
    if same_tag || same_date {
        return (304, headers, String::new());
    }
    (200, headers, e.body.clone())
}

fn item_id(item: &Value) -> String {
    match &item["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies a 2xx batch to the delivered list and the catalog.
fn apply(st: &mut State, req: &Request, behavior: &Behavior) {
    let refused: Vec<String> = match behavior {
        Behavior::Results(results) => results
            .iter()
            .filter(|r| r["ok"].as_bool() == Some(false))
            .map(item_id)
            .collect(),
        _ => vec![],
    };
    let feed = req.feed().to_string();
    for item in req.items() {
        let id = item_id(item);
        if refused.contains(&id) {
            continue;
        }
        st.delivered.push((feed.clone(), item.clone()));
        let catalog = st.catalogs.entry(feed.clone()).or_default();
        match item["op"].as_str() {
            Some("upsert") => {
                catalog.insert(id, item.get("data").cloned().unwrap_or(Value::Null));
            }
            Some("delete") => {
                catalog.remove(&id);
            }
            _ => {}
        }
    }
}

/// One CRLF- or LF-terminated line, without the terminator; `None` at EOF.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if r.take(MAX_LINE).read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    if buf.pop() != Some(b'\n') {
        return Err(bad("line too long or truncated"));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| bad("non-UTF-8 header"))
}

/// Reads one request; `Ok(None)` when the client closed the connection cleanly.
fn read_request(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<Option<Request>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("unsupported HTTP version"));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        headers: Vec::new(),
        raw_body: Vec::new(),
        body: Value::Null,
    };
    loop {
        let line = read_line(r)?.ok_or_else(|| bad("eof in headers"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header"))?;
        if req.headers.len() >= MAX_HEADERS {
            return Err(bad("too many headers"));
        }
        req.headers
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let has = |name: &str, token: &str| {
        req.header(name)
            .is_some_and(|v| v.to_ascii_lowercase().contains(token))
    };
    let (chunked, gzip) = (
        has("transfer-encoding", "chunked"),
        has("content-encoding", "gzip"),
    );
    req.raw_body = if chunked {
        read_chunked(r)?
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    } else {
        Vec::new()
    };
    if !req.raw_body.is_empty() {
        let mut plain = Vec::new();
        let decoded = if gzip {
            let gz = flate2::read::GzDecoder::new(req.raw_body.as_slice());
            gz.take(MAX_BODY as u64)
                .read_to_end(&mut plain)
                .map(|_| plain)
        } else {
            Ok(req.raw_body.clone())
        };
        req.body = decoded
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| bad("eof in chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the final empty line.
            for _ in 0..=MAX_HEADERS {
                match read_line(r)? {
                    Some(l) if !l.is_empty() => continue,
                    _ => return Ok(body),
                }
            }
            return Err(bad("too many trailers"));
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if read_line(r)?.is_none_or(|l| !l.is_empty()) {
            return Err(bad("missing CRLF after chunk"));
        }
    }
}

fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let typed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\n{}Content-Length: {}\r\nConnection: {}\r\n",
        if typed {
            ""
        } else {
            "Content-Type: application/json\r\n"
        },
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

/// The answers of `CutBody`, `TrickleBody` and `TrickleHead`: a 200 that
/// never arrives whole, or not in time. Stops early when the receiver is
/// dropped or the client has gone.
fn write_faulty(
    w: &mut impl Write,
    behavior: &Behavior,
    req: &Request,
    stop: &AtomicBool,
) -> io::Result<()> {
    let (_, _, body) = answer(behavior, req);
    let declared = match behavior {
        Behavior::CutBody(_) => body.len() + 64,
        _ => body.len(),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    let slowly = |w: &mut dyn Write, bytes: &[u8], pause: Duration| -> io::Result<()> {
        for b in bytes {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            w.write_all(std::slice::from_ref(b))?;
            w.flush()?;
            thread::sleep(pause);
        }
        Ok(())
    };
    match behavior {
        Behavior::TrickleHead(pause) => {
            slowly(w, head.as_bytes(), *pause)?;
            w.write_all(body.as_bytes())?;
        }
        Behavior::TrickleBody(_, pause) => {
            w.write_all(head.as_bytes())?;
            slowly(w, body.as_bytes(), *pause)?;
        }
        _ => {
            w.write_all(head.as_bytes())?;
            w.write_all(body.as_bytes())?;
        }
    }
    w.flush()
}

/// A loopback export that never finishes: every GET gets a 200 and
/// `first`, then one more byte (a space, so the record stays open) every
/// `every`, until the client hangs up or the trickler is dropped — a stuck
/// export script behind a proxy, as seen from feedsync.
pub struct Trickler {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    gets: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl Trickler {
    pub fn start(first: &str, every: Duration) -> Trickler {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(AtomicU64::new(0));
        let (stop2, gets2, first) = (stop.clone(), gets.clone(), first.to_string());
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (stop, gets, first) = (stop2.clone(), gets2.clone(), first.clone());
                thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
                    // The request head, up to its blank line.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_LINE as usize {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    gets.fetch_add(1, Ordering::SeqCst);
                    let start = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n{first}"
                    );
                    if conn.write_all(start.as_bytes()).is_err() {
                        return;
                    }
                    while !stop.load(Ordering::SeqCst) {
                        thread::sleep(every);
                        if conn.write_all(b" ").and_then(|_| conn.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Trickler {
            addr,
            stop,
            gets,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many requests it has answered.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(handle) = self.accept.take()
        {
            let _ = handle.join();
        }
    }
}

/// What a [`Service`] answers one request with.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.to_string(),
        }
    }

    /// `status` with a body of this content type.
    pub fn text(status: u16, content_type: &str, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// One more header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// How a [`Service`] answers: `None` drops the connection unanswered.
type Handler = dyn Fn(&Request) -> Option<Reply> + Send + Sync;

/// A loopback HTTP/1.1 server that answers every request with a handler:
/// the transport under the service fakes (`common::fakes`), which speak a
/// real service's API instead of feedsync's envelope. It reads and writes
/// HTTP exactly as [`Receiver`] does (keep-alive, chunked bodies,
/// `Expect: 100-continue`); what a request means is the handler's job.
/// A handler may sleep (a slow service): each connection has its thread.
pub struct Service {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Service {
    /// Binds 127.0.0.1 on a free port and answers with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Option<Reply> + Send + Sync + 'static) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test service");
        let addr = listener.local_addr().expect("service address");
        let shared = Arc::new(Shared::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let sh = Arc::clone(&shared);
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let id = sh.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    sh.conns().insert(id, clone);
                }
                let (sh, handler) = (Arc::clone(&sh), Arc::clone(&handler));
                thread::spawn(move || {
                    serve_with(&stream, &sh, &*handler);
                    let _ = stream.shutdown(Shutdown::Both);
                    sh.conns().remove(&id);
                });
            }
        });
        Service {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the service is shutting down (a sleeping handler stops early).
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(handle) = self.accept.take()
        {
            let _ = handle.join();
        }
        for conn in self.shared.conns().values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one connection of a [`Service`] until it closes, errs or the
/// handler drops it.
fn serve_with(stream: &TcpStream, sh: &Shared, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut writer = stream;
    let mut reader = BufReader::new(stream);
    while !sh.stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let body = json!({ "message": format!("bad request: {e}") }).to_string();
                let _ = write_response(&mut writer, 400, &[], &body, false);
                return;
            }
            Err(_) => return,
        };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let Some(reply) = handler(&req) else { return };
        if write_response(
            &mut writer,
            reply.status,
            &reply.headers,
            &reply.body,
            keep_alive,
        )
        .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// A request's body as the service reads it: gunzipped when sent with
/// `Content-Encoding: gzip` (`None` when that fails).
pub fn plain_body(req: &Request) -> Option<Vec<u8>> {
    let gzip = req
        .header("content-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("gzip"));
    if !gzip {
        return Some(req.raw_body.clone());
    }
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(req.raw_body.as_slice())
        .take(MAX_BODY as u64)
        .read_to_end(&mut plain)
        .ok()?;
    Some(plain)
}

/// Percent-decodes `s` (`+` read as a space when `plus_is_space`, as
/// query strings and some servers' paths do); `None` for a bad escape or
/// bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The receiver's HTTP/1.1 request reader, for other loopback fakes
/// (`common::fakes`): one request from `r`, `None` at a clean close.
pub fn read_http_request(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<Option<Request>> {
    read_request(r, w)
}

/// The receiver's response writer, for other loopback fakes.
pub fn write_http_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    write_response(w, status, headers, body, keep_alive)
}
