use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::receiver::{Behavior, Receiver};
use flate2::{Compression, write::GzEncoder};
use serde_json::{Value, json};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }
}

fn connect(rx: &Receiver) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(rx.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

fn send_raw(conn: &mut BufReader<TcpStream>, head: &str, body: &[u8]) {
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

fn post(conn: &mut BufReader<TcpStream>, extra: &str, body: &[u8]) -> Option<Response> {
    let head = format!(
        "POST /feeds/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    send_raw(conn, &head, body);
    read_response(conn)
}

fn read_response(conn: &mut BufReader<TcpStream>) -> Option<Response> {
    let mut line = String::new();
    if conn.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut r = Response {
        status,
        headers,
        body: String::new(),
    };
    let len: usize = r.header("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    r.body = String::from_utf8(body).ok()?;
    Some(r)
}

fn batch(items: &[(&str, &str)]) -> Vec<u8> {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, op)| match *op {
            "upsert" => {
                json!({"id": id, "key": {"sku": id}, "op": op, "hash": "h", "data": {"sku": id}})
            }
            _ => json!({"id": id, "key": {"sku": id}, "op": op, "hash": "h"}),
        })
        .collect();
    json!({"feed": "products", "sync": "partial", "items": items})
        .to_string()
        .into_bytes()
}

#[test]
fn gzip_body_is_recorded_and_decoded() {
    let rx = Receiver::start();
    let plain = batch(&[("A", "upsert"), ("B", "upsert")]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&plain).unwrap();
    let wire = gz.finish().unwrap();

    let r = post(
        &mut connect(&rx),
        "Content-Encoding: gzip\r\nX-Feedsync-Feed: products\r\n",
        &wire,
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert_eq!(r.header("connection"), Some("keep-alive"));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/feeds/products")
    );
    assert_eq!(req.header("x-feedsync-feed"), Some("products"));
    assert_eq!(req.header("CONTENT-ENCODING"), Some("gzip"));
    assert_eq!(req.raw_body, wire);
    assert_eq!(req.body, serde_json::from_slice::<Value>(&plain).unwrap());
    assert_eq!(rx.delivered_items().len(), 2);
    let cat = rx.catalog("products");
    assert_eq!(cat.keys().collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(cat["A"], json!({"sku": "A"}));
    assert!(rx.url("/feeds/{feed}").ends_with("/feeds/{feed}"));
}

#[test]
fn queued_500_then_default_200() {
    let rx = Receiver::start();
    rx.push(Behavior::Status(500, "boom".into()));
    let mut conn = connect(&rx);
    let r = post(&mut conn, "", &batch(&[("A", "upsert")])).unwrap();
    assert_eq!((r.status, r.body.as_str()), (500, "boom"));
    assert!(rx.catalog("products").is_empty());
    let r = post(&mut conn, "", &batch(&[("A", "upsert")])).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(rx.request_count(), 2);
    assert_eq!(rx.delivered_items().len(), 1);
    assert_eq!(rx.catalog("products").len(), 1);
}

#[test]
fn reject_ids() {
    let rx = Receiver::start();
    rx.set(Behavior::RejectIds(vec!["B".into()]));
    let mut conn = connect(&rx);
    let r = post(&mut conn, "", &batch(&[("A", "upsert"), ("B", "upsert")])).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"error": "rejected B"})
    );
    assert!(rx.delivered_items().is_empty());
    let r = post(&mut conn, "", &batch(&[("A", "upsert")])).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(rx.catalog("products").keys().collect::<Vec<_>>(), ["A"]);
}

#[test]
fn keep_alive_two_requests_one_connection() {
    let rx = Receiver::start();
    let mut conn = connect(&rx);
    assert_eq!(
        post(&mut conn, "", &batch(&[("A", "upsert"), ("B", "upsert")]))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        post(&mut conn, "", &batch(&[("A", "delete")]))
            .unwrap()
            .status,
        200
    );
    assert_eq!(rx.catalog("products").keys().collect::<Vec<_>>(), ["B"]);
    assert_eq!(rx.delivered_items().len(), 3);
    rx.clear_requests();
    assert_eq!(rx.request_count(), 0);
}

#[test]
fn chunked_body() {
    let rx = Receiver::start();
    let body = batch(&[("A", "upsert")]);
    let (a, b) = body.split_at(10);
    let mut conn = connect(&rx);
    let head = "POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_raw(
        &mut conn,
        head,
        format!("{:x};ext=1\r\n", a.len()).as_bytes(),
    );
    send_raw(&mut conn, "", a);
    send_raw(&mut conn, &format!("\r\n{:X}\r\n", b.len()), b);
    send_raw(&mut conn, "\r\n0\r\nX-Trailer: t\r\n\r\n", b"");
    assert_eq!(read_response(&mut conn).unwrap().status, 200);
    assert_eq!(rx.requests()[0].raw_body, body);
    assert_eq!(rx.catalog("products").len(), 1);
}

#[test]
fn results_retry_after_too_large() {
    let rx = Receiver::start();
    let mut conn = connect(&rx);
    let results = vec![json!({"id": "B", "ok": false, "retryable": false, "error": "bad"})];
    rx.push(Behavior::Results(results.clone()));
    rx.push(Behavior::RetryAfter(429, "7".into()));
    rx.push(Behavior::TooLargeAbove(1));
    let two = batch(&[("A", "upsert"), ("B", "upsert")]);
    let r = post(&mut conn, "", &two).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({ "results": results })
    );
    assert_eq!(rx.catalog("products").keys().collect::<Vec<_>>(), ["A"]);
    let r = post(&mut conn, "", &two).unwrap();
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    assert_eq!(post(&mut conn, "", &two).unwrap().status, 413);
    assert_eq!(rx.delivered_items().len(), 1);
}

#[test]
fn close_hang_and_malformed() {
    let rx = Receiver::start();
    rx.push(Behavior::Hang(Duration::from_secs(3)));
    rx.push(Behavior::Close);
    let mut hung = connect(&rx);
    send_raw(
        &mut hung,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",
        b"{}",
    );
    let waiting = Instant::now();
    while rx.request_count() == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "never received"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Other connections are served while one hangs.
    let started = Instant::now();
    assert!(
        post(&mut connect(&rx), "", b"{}").is_none(),
        "Close answers nothing"
    );
    assert_eq!(post(&mut connect(&rx), "", b"{}").unwrap().status, 200);
    let mut bad = connect(&rx);
    send_raw(&mut bad, "NONSENSE\r\n\r\n", b"");
    assert_eq!(read_response(&mut bad).unwrap().status, 400);
    assert_eq!(
        post(&mut connect(&rx), "", b"not json").unwrap().status,
        400
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(read_response(&mut hung).unwrap().status, 200);
}
