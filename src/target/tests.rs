//! The [`Kind`] contract, against a made-up kind on a loopback server:
//! what `http` does with several requests per batch and with a task to
//! poll, which the service kinds of DESIGN.md ("Target kinds") rely on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::Client;
use super::webhook::tests::item;
use super::{Batch, Kind, Method, Reading, Request, Response, SyncKind, Verdict};

/// A kind that takes a batch apart (upserts, then deletes) and whose
/// upserts are an enqueued task, polled until it is done: what the
/// service kinds of DESIGN.md need from this module.
struct TwoStep {
    url: String,
}

impl Kind for TwoStep {
    fn requests(&self, batch: &Batch<'_>) -> Vec<Request> {
        let (deletes, upserts) = (0..batch.items.len()).partition(|&i| batch.items[i].deleted);
        let mut up = Request::new(Method::Post, format!("{}/upserts", self.url), "upserts");
        up.body = b"[]".to_vec();
        up.items = upserts;
        let mut del = Request::new(Method::Delete, format!("{}/deletes", self.url), "deletes");
        del.items = deletes;
        vec![up, del]
    }

    fn delivered(&self, _: &Batch<'_>, request: &Request, body: &str) -> Reading {
        match (request.role, body) {
            ("upserts" | "task", "queued") => {
                let mut poll = Request::new(Method::Get, format!("{}/tasks/1", self.url), "task");
                poll.items = request.items.clone();
                Reading::Poll(poll)
            }
            ("deletes", _) => Reading::Settled(Response::Delivered(vec![Verdict::Fail(
                "not allowed".into(),
            )])),
            _ => Reading::Settled(Response::Delivered(Vec::new())),
        }
    }

    fn probe(&self, _: &str) -> Vec<Request> {
        Vec::new()
    }

    fn item_bytes(&self, _: &crate::state::OutItem, data: usize) -> usize {
        data
    }

    fn frame_bytes(&self, _: &str) -> usize {
        2
    }

    fn credentials_fix(&self) -> String {
        String::new()
    }
}

/// Answers each connection with the next (status, body) of `script`,
/// and logs each request's method and path.
fn serve(script: &[(u16, &'static str)]) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (seen, script) = (log.clone(), script.to_vec());
    std::thread::spawn(move || {
        for (status, body) in script {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(conn);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let words: Vec<&str> = line.split(' ').take(2).collect();
            seen.lock().unwrap().push(words.join(" "));
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, log)
}

fn client(url: String) -> Client {
    Client::with_kind(Box::new(TwoStep { url }), Duration::from_secs(10))
}

#[test]
fn a_batch_of_several_requests_and_polls_is_one_answer() {
    let (url, log) = serve(&[(202, "queued"), (200, "queued"), (200, "done"), (200, "")]);
    let items = [item("A", false), item("B", true), item("C", false)];
    let batch = Batch {
        feed: "p",
        sync: SyncKind::Partial,
        items: &items,
        nonce: None,
    };
    match client(url).send(&batch) {
        Response::Delivered(v) => assert_eq!(
            v,
            vec![
                Verdict::Ok,
                Verdict::Fail("not allowed".into()),
                Verdict::Ok
            ]
        ),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "POST /upserts",
            "GET /tasks/1",
            "GET /tasks/1",
            "DELETE /deletes"
        ]
    );
}

#[test]
fn a_failed_request_is_the_batch_answer_and_the_rest_are_not_sent() {
    let (url, log) = serve(&[(503, "busy"), (200, "")]);
    let items = [item("A", false), item("B", true)];
    let batch = Batch {
        feed: "p",
        sync: SyncKind::Partial,
        items: &items,
        nonce: None,
    };
    match client(url).send(&batch) {
        Response::Retry { error, .. } => assert_eq!(error, "HTTP 503: busy"),
        r => panic!("{r:?}"),
    }
    assert_eq!(*log.lock().unwrap(), ["POST /upserts"]);
}
