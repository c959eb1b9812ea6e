//! Helpers for `bench/run.sh`: generate the synthetic catalog, measure the
//! two floors DESIGN.md names (parse and scan), and serve a loopback HTTP
//! sink that acknowledges every batch.
//!
//! ```text
//! benchtool gen N SEED OUT [--changed PCT]   # ~1.2 KB NDJSON products, streamed
//! benchtool parse FILE                      # every line into a serde_json Value
//! benchtool scan FILE                       # every line's raw bytes through xxh3
//! benchtool sink PORTFILE                   # a success, in each target kind's protocol
//! benchtool mysql-floor QUERY               # stream the rows of $BENCH_DATABASE_URL, discard them
//! ```

#![recursion_limit = "256"]

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => {
            let n: u64 = args[1].parse().expect("count");
            let seed: u64 = args[2].parse().expect("seed");
            let changed: u64 = match args.get(4).map(String::as_str) {
                Some("--changed") => args[5].parse().expect("percent"),
                _ => 0,
            };
            generate(n, seed, &args[3], changed);
        }
        Some("parse") => floor(&args[1], |line| {
            let v: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            std::hint::black_box(v);
        }),
        Some("scan") => floor(&args[1], |line| {
            std::hint::black_box(xxhash_rust::xxh3::xxh3_128(line));
        }),
        Some("sink") => sink(&args[1]),
        // The database floor: stream a query's rows through the client and
        // discard them (the URL from $BENCH_DATABASE_URL).
        Some("mysql-floor") => mysql_floor(&args[1]),
        // The same for PostgreSQL: a prepared statement read with
        // `query_raw` (streamed, binary values), as feedsync reads it.
        Some("pg-floor") => pg_floor(&args[1]),
        // feedsync's own parse-and-hash of every line, for comparison.
        Some("hash") => {
            let config = feedsync::config::Config::parse(
                "[target]\nurl = \"file:x\"\n[[feeds]]\nname = \"p\"\nsource = \"x.ndjson\"\nkey = [\"sku\"]\nhash_exclude = [\"updated_at\"]\n",
                std::path::Path::new("/tmp/x.toml"),
            )
            .expect("config");
            let rules = feedsync::record::Rules::new(&config.feeds[0]);
            floor(&args[1], |line| {
                std::hint::black_box(rules.from_json(line).expect("valid"));
            })
        }
        _ => {
            eprintln!("usage: benchtool gen|parse|scan|sink …");
            std::process::exit(2);
        }
    }
}

/// xorshift64*: fast, and the same catalog for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "soft",
    "breathable",
    "organic",
    "cotton",
    "hoodie",
    "training",
    "outdoor",
    "warmth",
    "ribbed",
    "cuffs",
    "drawstring",
    "pocket",
    "lightweight",
    "durable",
    "stretch",
    "fabric",
    "moisture",
    "wicking",
    "classic",
    "fit",
    "yoga",
    "running",
    "jacket",
    "layer",
    "zip",
    "recycled",
    "polyester",
    "seamless",
    "comfort",
    "everyday",
    "premium",
    "design",
];
const COLORS: &[&str] = &[
    "Black", "Blue", "Gray", "Green", "Orange", "Purple", "Red", "White",
];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL"];
const CATEGORIES: &[&str] = &[
    "Default Category/Men/Tops/Hoodies & Sweatshirts",
    "Default Category/Women/Bottoms/Pants",
    "Default Category/Gear/Bags",
    "Default Category/Collections/Eco Friendly",
    "Default Category/Training/Video Download",
];

/// One product of about 1.1 KB. Item `i`'s bytes depend on the seed and
/// `i` only; with `changed` set, a fixed `changed`% of items get a new
/// price and nothing else moves.
fn product(seed: u64, i: u64, changed: u64) -> String {
    let mut r = Rng(seed ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    for _ in 0..4 {
        r.next();
    }
    let words = |n: usize, r: &mut Rng| -> String {
        (0..n).map(|_| r.pick(WORDS)).collect::<Vec<_>>().join(" ")
    };
    let name = words(4, &mut r);
    let description = format!(
        "<p>{}.</p>\n<p>{}.</p>",
        words(10, &mut r),
        words(6, &mut r)
    );
    let cents = r.next() % 20000 + 500;
    let bump = changed > 0 && (i.wrapping_mul(2_654_435_761) % 100) < changed;
    let cents = if bump { cents + 100 } else { cents };
    // Shaped like a Magento catalog export row: many short attributes.
    let sku = format!("SKU-{i:08}");
    let price = format!("{}.{:02}", cents / 100, cents % 100);
    let v = serde_json::json!({
        "sku": sku,
        "store_view_code": "default",
        "attribute_set_code": "Top",
        "product_type": "simple",
        "product_websites": "base",
        "name": name,
        "description": description,
        "short_description": words(5, &mut r),
        "weight": (r.next() % 5000) as f64 / 1000.0,
        "product_online": 1,
        "tax_class_name": "Taxable Goods",
        "visibility": "Catalog, Search",
        "price": price,
        "special_price": null,
        "url_key": format!("product-{i}"),
        "meta_title": null,
        "base_image": format!("/m/h/{i:08}_main.jpg"),
        "updated_at": "2026-11-01 10:00:00",
        "new_from_date": null,
        "gift_message_available": false,
        "country_of_manufacture": r.pick(&["US", "DE", "PT", "VN", "CN"]),
        "qty": r.next() % 500,
        "use_config_min_qty": 1,
        "allow_backorders": 0,
        "min_cart_qty": 1,
        "max_cart_qty": 10000,
        "is_in_stock": !r.next().is_multiple_of(10),
        "notify_on_stock_below": 1,
        "manage_stock": 1,
        "website_id": 0,
        "categories": [r.pick(CATEGORIES), r.pick(CATEGORIES)],
        "additional_attributes": {
            "color": r.pick(COLORS),
            "size": r.pick(SIZES),
            "material": r.pick(&["Cotton", "Fleece", "Nylon", "Wool"]),
            "pattern": r.pick(&["Solid", "Striped", "Color-Blocked"]),
            "climate": r.pick(&["Cool", "Indoor", "Mild", "Windy"]),
            "eco_collection": r.next() % 2,
        },
        "additional_images": [format!("/m/h/{i:08}_alt1.jpg"), format!("/m/h/{i:08}_back.jpg")],
        "rating": (r.next() % 50) as f64 / 10.0,
    });
    v.to_string()
}

/// Streams the catalog to `OUT.part`, one product at a time, and renames it
/// to `OUT` only once it is whole: the scripts reuse any catalog that
/// exists, and an interrupted run (10M items take minutes) must not leave
/// a short one behind under the real name.
fn generate(n: u64, seed: u64, out: &str, changed: u64) {
    let part = format!("{out}.part");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&part).expect("create"));
    let mut bytes = 0u64;
    for i in 0..n {
        let line = product(seed, i, changed);
        bytes += line.len() as u64 + 1;
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .expect("write");
    std::fs::rename(&part, out).expect("rename");
    eprintln!(
        "{out}: {n} products, {} bytes, {:.0} B/product",
        bytes,
        bytes as f64 / n as f64
    );
}

/// Reads the file in 1 MiB chunks, calls `f` on each line, prints seconds.
fn floor(path: &str, mut f: impl FnMut(&[u8])) {
    let started = Instant::now();
    let mut r = BufReader::with_capacity(1 << 20, File::open(path).expect("open"));
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if !line.is_empty() {
            f(&line);
        }
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
}

/// A minimal HTTP/1.1 receiver: reads each request and answers 200 `{}`.
fn sink(portfile: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    std::fs::write(portfile, listener.local_addr().unwrap().port().to_string()).unwrap();
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || serve(conn));
    }
}

fn serve(conn: TcpStream) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        let mut target = String::new();
        let mut gzip = false;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if target.is_empty() {
                target = l.to_string();
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("content-encoding") {
                    gzip = v.trim().eq_ignore_ascii_case("gzip");
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if gzip {
            let mut plain = Vec::new();
            let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain);
            body = plain;
        }
        let (status, answer) = answer(&target, &body);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A success in each target kind's own protocol, so every kind can be
/// measured against the same loopback sink: the webhook's `{}`, an
/// Elasticsearch `_bulk` result per action, a Typesense import line per
/// document, an Algolia task, a Meilisearch task that has succeeded.
fn answer(request_line: &str, body: &[u8]) -> (&'static str, String) {
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let lines = || body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    if path.contains("/_bulk") {
        let items: Vec<&str> = lines()
            .filter_map(|l| {
                if l.starts_with(b"{\"index\"") {
                    Some(r#"{"index":{"status":200,"result":"created"}}"#)
                } else if l.starts_with(b"{\"delete\"") {
                    Some(r#"{"delete":{"status":200,"result":"deleted"}}"#)
                } else {
                    None
                }
            })
            .collect();
        let answer = format!(
            r#"{{"took":1,"errors":false,"items":[{}]}}"#,
            items.join(",")
        );
        return ("200 OK", answer);
    }
    if path.contains("/documents/import") {
        let n = lines().count();
        return ("200 OK", vec![r#"{"success":true}"#; n].join("\n"));
    }
    if method == "DELETE" && path.contains("/collections/") {
        return ("200 OK", r#"{"num_deleted":1}"#.into());
    }
    if path.starts_with("/1/indexes/") {
        return ("200 OK", r#"{"taskID":1,"objectIDs":[]}"#.into());
    }
    if path.starts_with("/indexes/") && method == "POST" {
        let uid = TASKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            "202 Accepted",
            format!(
                r#"{{"taskUid":{uid},"indexUid":"p","status":"enqueued","type":"documentAdditionOrUpdate","enqueuedAt":"2026-12-01T00:00:00Z"}}"#
            ),
        );
    }
    if let Some(uid) = path.strip_prefix("/tasks/") {
        return (
            "200 OK",
            format!(
                r#"{{"uid":{uid},"indexUid":"p","status":"succeeded","type":"documentAdditionOrUpdate","error":null}}"#
            ),
        );
    }
    ("200 OK", "{}".into())
}

static TASKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn mysql_floor(query: &str) {
    use mysql::prelude::Queryable;
    let url = std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL");
    let t = Instant::now();
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).expect("url")).expect("connect");
    let stmt = conn.prep(query).expect("prepare");
    let mut rows = 0u64;
    for row in conn.exec_iter(&stmt, ()).expect("query") {
        std::hint::black_box(row.expect("row"));
        rows += 1;
    }
    eprintln!("{rows} rows");
    println!("{:.3}", t.elapsed().as_secs_f64());
}

/// `benchtool pg-floor QUERY`: stream the rows of $BENCH_DATABASE_URL (a
/// PostgreSQL URL) through the client and discard them.
fn pg_floor(query: &str) {
    let url = std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL");
    let t = Instant::now();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let stmt = client.prepare(query).expect("prepare");
    let mut rows = 0u64;
    let mut it = client
        .query_raw(&stmt, std::iter::empty::<&dyn postgres::types::ToSql>())
        .expect("query");
    while let Some(row) = postgres::fallible_iterator::FallibleIterator::next(&mut it).expect("row")
    {
        std::hint::black_box(row);
        rows += 1;
    }
    eprintln!("{rows} rows");
    println!("{:.3}", t.elapsed().as_secs_f64());
}
