//! Tests of the canonical hash: the scanner against serde_json and the
//! walk over its `Value`, on generated and damaged documents.

use serde_json::Value;

use super::{Captures, Hash, Node, hash_record, walk_value};

/// xorshift64*, for reproducible random documents.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ws(r: &mut Rng) -> &'static str {
    [" ", "", "", "\n", "\t", "  ", "\r\n"][r.below(7) as usize]
}

fn string(r: &mut Rng) -> String {
    let parts = [
        "a",
        "sku",
        "é",
        "日本",
        "\\\"",
        "\\\\",
        "\\n",
        "\\u00e9",
        "\\ud83d\\ude00",
        "/",
        "\\/",
        " ",
        "x y",
    ];
    let n = r.below(4);
    let body: String = (0..n)
        .map(|_| parts[r.below(parts.len() as u64) as usize])
        .collect();
    format!("\"{body}\"")
}

/// A random JSON text, with random spacing and escapes.
fn value(r: &mut Rng, depth: u32) -> String {
    match r.below(if depth > 3 { 6 } else { 8 }) {
        0 => "null".into(),
        1 => ["true", "false"][r.below(2) as usize].into(),
        2 => [
            "0",
            "7",
            "-3",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "1.5",
            "-0.25",
            "1e3",
            "2E-2",
            "123.456",
            "1.0",
        ][r.below(12) as usize]
            .into(),
        3 | 4 => string(r),
        5 => {
            let n = r.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| format!("{}{}{}", ws(r), value(r, depth + 1), ws(r)))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => object(r, depth + 1, false),
    }
}

fn object(r: &mut Rng, depth: u32, top: bool) -> String {
    // Unique keys (RFC 8259 asks for them; repeated ones hash apart
    // from serde_json's last-wins), some spelled with escapes.
    let keys = [
        "\"a\"",
        "\"b\"",
        "\"tags\"",
        "\"n\\u0061me\"",
        "\"é\"",
        "\"\\u00e9t\"",
    ];
    let n = r.below(5) as usize;
    let start = r.below(keys.len() as u64) as usize;
    let mut members: Vec<String> = (0..n)
        .map(|j| {
            let k = keys[(start + j) % keys.len()];
            format!(
                "{}{k}{}:{}{}{}",
                ws(r),
                ws(r),
                ws(r),
                value(r, depth),
                ws(r)
            )
        })
        .collect();
    if top {
        members.push(format!("\"sku\":{}", string(r)));
    }
    format!("{}{{{}}}{}", ws(r), members.join(","), ws(r))
}

/// What hashing a record comes to: its hash and the key field picked up.
#[derive(Debug)]
struct Hashed {
    hash: Hash,
    key: Option<Value>,
}

/// The rules these tests hash by: the key `sku`, `b` excluded, `tags` sorted.
struct Rules(Node);

fn rules() -> Rules {
    let mut root = Node::default();
    root.at("sku").key = Some(0);
    root.at("b").exclude = true;
    root.at("tags").sort = true;
    Rules(root)
}

impl Rules {
    /// The scanner's reading of a record's bytes.
    fn scan(&self, bytes: &[u8]) -> Result<Hashed, String> {
        let mut caps = Captures::new(1);
        let hash = hash_record(bytes, &self.0, &mut caps)?;
        let key = caps.keys.pop().flatten();
        Ok(Hashed { hash, key })
    }

    /// The walk over the same record parsed by serde_json.
    fn walk(&self, value: &Value) -> Hashed {
        let mut caps = Captures::new(1);
        let hash = walk_value(value, Some(&self.0), &mut caps);
        let key = caps.keys.pop().flatten();
        Hashed { hash, key }
    }
}

#[test]
fn agrees_with_serde_json_on_random_documents() {
    let rules = rules();
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let doc = object(&mut r, 0, true);
        let scanned = rules.scan(doc.as_bytes());
        let value: Value = serde_json::from_str(&doc).expect("generated JSON is valid");
        let walked = rules.walk(&value);
        // The same hash, and the same key value (which `record` turns into
        // the item's id and key), present or missing alike.
        match scanned {
            Ok(a) => {
                assert_eq!(a.hash, walked.hash, "{doc}");
                assert_eq!(a.key, walked.key, "{doc}");
            }
            Err(a) => panic!("{doc}: scanner {a:?}, serde {walked:?}"),
        }
    }
}

#[test]
fn rejects_what_serde_json_rejects() {
    let rules = rules();
    let mut r = Rng(42);
    let mut rejected = 0;
    for _ in 0..20_000 {
        let mut doc = object(&mut r, 0, true).into_bytes();
        // Damage it: cut it, or change one byte.
        match r.below(3) {
            0 => doc.truncate(r.below(doc.len() as u64) as usize),
            _ => {
                let at = r.below(doc.len() as u64) as usize;
                doc[at] = b"{}[]\",:\\ a0-.eE\x01\xff"[r.below(17) as usize];
            }
        }
        let serde_ok = serde_json::from_slice::<Value>(&doc).is_ok_and(|v| v.is_object());
        let ours = rules.scan(&doc);
        // (Whether the key is usable is `record`'s question, not this one.)
        let ours_ok = ours.is_ok();
        assert_eq!(
            ours_ok,
            serde_ok,
            "{:?}: {ours:?}",
            String::from_utf8_lossy(&doc)
        );
        rejected += usize::from(!serde_ok);
    }
    assert!(rejected > 5_000, "the damage was too gentle: {rejected}");
}

#[test]
fn plain_runs_end_where_a_byte_by_byte_scan_ends() {
    // Every stop byte at every place in and around an eight-byte word,
    // after plain ASCII and after bytes above 0x7F.
    for len in 0..24 {
        for at in 0..=len {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'a'] {
                for fill in [b'x', 0xc3] {
                    let mut b = vec![fill; len];
                    if at < len {
                        b[at] = stop;
                    }
                    let end = b
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                        .unwrap_or(len);
                    let wide = b[..end].iter().any(|&c| c >= 0x80);
                    assert_eq!(super::scan::plain_run(&b, 0), (end, wide), "{b:?}");
                }
            }
        }
    }
}

#[test]
fn strings_are_checked_as_utf8_and_for_control_characters() {
    let rules = rules();
    let long = "x".repeat(13);
    for (doc, want) in [
        (
            format!("{{\"sku\":\"{long}\u{1f}\"}}"),
            "control character (\\u001F)",
        ),
        (
            format!("{{\"sku\":\"A\",\"d\":\"{long}\\n\t\"}}"),
            "control character (\\u0009)",
        ),
    ] {
        let e = rules.scan(doc.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{doc}: {e}");
    }
    let mut bad = b"{\"sku\":\"A\",\"d\":\"caf\xc3\xa9 \"}".to_vec();
    assert!(rules.scan(&bad).is_ok());
    let at = bad.iter().position(|&c| c == 0xa9).unwrap();
    bad[at] = b'(';
    let e = rules.scan(&bad).unwrap_err();
    assert!(e.contains("invalid UTF-8"), "{e}");
}

#[test]
fn errors_say_where() {
    let rules = rules();
    for (doc, want) in [
        (r#"{"sku":"A","#, "EOF while parsing an object"),
        (r#"{"sku":"A"} x"#, "trailing characters (column 13)"),
        (r#"{"sku":"A" "b":1}"#, "expected `,` or `}` (column 12)"),
        (r#"{"sku":"A","n":01}"#, "invalid number"),
        ("{\"sku\":\"A\u{1}\"}", "control character"),
        (r#"{"sku":"\x"}"#, "invalid escape"),
        (r#"[{"sku":"A"}]"#, "not a JSON object"),
    ] {
        let e = rules.scan(doc.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{doc}: {e}");
    }
}

#[test]
fn nesting_is_limited_to_128_levels_of_objects_and_arrays() {
    let rules = rules();
    // `levels` containers, the record's object first, alternating
    // arrays and objects, with a scalar or nothing innermost.
    let doc = |levels: usize, inner: &str| {
        let mut open = String::from("{\"sku\":\"A\",\"x\":");
        let mut close = String::from("}");
        for l in 1..levels {
            if l % 2 == 1 {
                open.push('[');
                close.insert(0, ']');
            } else {
                open.push_str("{\"k\":");
                close.insert(0, '}');
            }
        }
        open.push_str(if levels.is_multiple_of(2) { inner } else { "0" });
        open + &close
    };
    for inner in ["", "1", "\"s\""] {
        assert!(rules.scan(doc(128, inner).as_bytes()).is_ok(), "{inner}");
        let e = rules.scan(doc(129, inner).as_bytes()).unwrap_err();
        assert!(e.contains("nested deeper than 128 levels"), "{e}");
    }
}
