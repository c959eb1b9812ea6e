//! From a decoded record to an item: its key and id, its canonical hash,
//! and whether an incremental source marks it deleted.
//!
//! The canonical hash is what decides "changed": object keys sorted, the
//! `hash_exclude` fields removed, the `sort_arrays` arrays sorted. Equal
//! content gives an equal hash whatever the key order in the source.

use std::io;

use serde_json::{Map, Value};
use xxhash_rust::xxh3::{Xxh3, xxh3_128_with_seed};

use crate::config::Feed;
use crate::format::Decoded;

/// A 128-bit content hash. Wide enough that a collision is not a concern
/// for "never miss a change".
pub type Hash = u128;

pub fn hash_hex(h: Hash) -> String {
    format!("{h:032x}")
}

/// The hash of a record's bytes as the source wrote them, seeded with what
/// gives those bytes their meaning (config and CSV header), so a change of
/// either makes every record look new and be compared by content again.
pub fn raw_hash(bytes: &[u8], seed: u64) -> Hash {
    xxh3_128_with_seed(bytes, seed)
}

/// What a feed's config says about reading its items.
#[derive(Debug, Clone)]
pub struct Rules {
    key: Vec<String>,
    exclude: Vec<String>,
    sort_arrays: Vec<String>,
    deleted_field: Option<String>,
}

/// One item read from a source.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// The key fields, flat under their configured names, as JSON text.
    pub key: String,
    pub hash: Hash,
    /// The record as JSON text.
    pub data: String,
    /// An incremental source marked this item deleted.
    pub deleted: bool,
}

impl Rules {
    pub fn new(feed: &Feed) -> Rules {
        Rules {
            key: feed.key.clone(),
            exclude: feed.hash_exclude.clone(),
            sort_arrays: feed.sort_arrays.clone(),
            deleted_field: (!feed.snapshot).then(|| feed.deleted_field.clone()),
        }
    }

    /// The parts of the config that change what a record's bytes mean.
    pub fn fingerprint(&self) -> String {
        format!(
            "key={:?};exclude={:?};sort={:?};deleted={:?}",
            self.key, self.exclude, self.sort_arrays, self.deleted_field
        )
    }

    /// Builds the item, or says why the record is bad.
    pub fn item(&self, decoded: Decoded) -> Result<Item, String> {
        let Decoded {
            mut value,
            data,
            data_is_canonical,
        } = decoded;
        let mut key = Map::new();
        let mut id = String::new();
        for (i, field) in self.key.iter().enumerate() {
            let v = match lookup(&value, field) {
                None | Some(Value::Null) => return Err(format!("key field `{field}` is missing")),
                Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v,
                Some(_) => {
                    return Err(format!(
                        "key field `{field}` is an object or an array, not a value"
                    ));
                }
            };
            if i > 0 {
                id.push('/');
            }
            match v {
                Value::String(s) => encode_id_part(s, &mut id),
                other => encode_id_part(&other.to_string(), &mut id),
            }
            key.insert(field.clone(), v.clone());
        }
        let deleted = match &self.deleted_field {
            Some(f) => lookup(&value, f).is_some_and(is_true),
            None => false,
        };
        let hash = if data_is_canonical && self.exclude.is_empty() && self.sort_arrays.is_empty() {
            xxh3_128_with_seed(data.as_bytes(), 0)
        } else {
            for path in &self.exclude {
                remove(&mut value, path);
            }
            for path in &self.sort_arrays {
                if let Some(Value::Array(a)) = lookup_mut(&mut value, path) {
                    sort_canonically(a);
                }
            }
            canonical_hash(&value)
        };
        Ok(Item {
            id,
            key: Value::Object(key).to_string(),
            hash,
            data,
            deleted,
        })
    }
}

/// Hashes the value's JSON with sorted keys (serde_json's map is ordered),
/// streaming into the hasher instead of building a string.
pub fn canonical_hash(value: &Value) -> Hash {
    struct Sink(Xxh3);
    impl io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(Xxh3::new());
    serde_json::to_writer(&mut sink, value).expect("writing to a hasher cannot fail");
    sink.0.digest128()
}

fn sort_canonically(a: &mut [Value]) {
    let mut keyed: Vec<(String, Value)> = a
        .iter_mut()
        .map(|v| {
            let v = v.take();
            (v.to_string(), v)
        })
        .collect();
    keyed.sort_by(|x, y| x.0.cmp(&y.0));
    for (slot, (_, v)) in a.iter_mut().zip(keyed) {
        *slot = v;
    }
}

/// `a.b.c` walks nested objects; a dot always means a path.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

fn lookup_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.').try_fold(value, |v, part| v.get_mut(part))
}

fn remove(value: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (lookup_mut(value, p), l),
        None => (Some(value), path),
    };
    if let Some(Value::Object(m)) = parent {
        m.remove(last);
    }
}

fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() == Some(1.0),
        Value::String(s) => {
            let s = s.trim();
            s == "1" || s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes")
        }
        _ => false,
    }
}

/// `%`, `/` and `,` are percent-encoded so the id splits back into its parts
/// and a comma-separated `--by-ids` list stays unambiguous.
fn encode_id_part(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            ',' => out.push_str("%2C"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Decoder;

    fn rules(key: &[&str], exclude: &[&str], sort: &[&str]) -> Rules {
        Rules {
            key: key.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            sort_arrays: sort.iter().map(|s| s.to_string()).collect(),
            deleted_field: Some("deleted".into()),
        }
    }

    fn item(r: &Rules, json: &str) -> Result<Item, String> {
        r.item(Decoder::Json.decode(json.as_bytes())?)
    }

    #[test]
    fn ids_from_single_and_composite_keys() {
        let r = rules(&["sku", "store"], &[], &[]);
        let i = item(&r, r#"{"sku":"MH01-XS/Black,1%","store":"default"}"#).unwrap();
        assert_eq!(i.id, "MH01-XS%2FBlack%2C1%25/default");
        assert_eq!(i.key, r#"{"sku":"MH01-XS/Black,1%","store":"default"}"#);
        let r = rules(&["p.id"], &[], &[]);
        let i = item(&r, r#"{"p":{"id":1.50}}"#).unwrap();
        assert_eq!(i.id, "1.5");
        assert_eq!(i.key, r#"{"p.id":1.5}"#);
    }

    #[test]
    fn bad_keys() {
        let r = rules(&["sku"], &[], &[]);
        assert!(item(&r, r#"{"sku":null}"#).unwrap_err().contains("missing"));
        assert!(item(&r, r#"{"name":"x"}"#).unwrap_err().contains("missing"));
        assert!(item(&r, r#"{"sku":[1]}"#).unwrap_err().contains("array"));
        assert_eq!(item(&r, r#"{"sku":""}"#).unwrap().id, "");
    }

    #[test]
    fn canonical_hash_ignores_order_exclusions_and_sorted_arrays() {
        let r = rules(&["sku"], &["meta.updated_at"], &["tags"]);
        let a = item(
            &r,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":2}}"#,
        )
        .unwrap();
        let b = item(
            &r,
            r#"{"meta":{"n":2,"updated_at":9},"tags":["y","x"],"sku":"A"}"#,
        )
        .unwrap();
        assert_eq!(a.hash, b.hash);
        let c = item(
            &r,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":3}}"#,
        )
        .unwrap();
        assert_ne!(a.hash, c.hash);
        // data travels as the source wrote it, excluded fields included
        assert!(b.data.contains("\"updated_at\":9"));
    }

    #[test]
    fn csv_and_json_records_with_equal_content_hash_alike() {
        let r = rules(&["sku"], &[], &[]);
        let csv = Decoder::Csv(std::sync::Arc::from(vec![
            "sku".to_string(),
            "p".to_string(),
        ]));
        let a = r.item(csv.decode(b"A,1").unwrap()).unwrap();
        let b = item(&r, r#"{"p":"1","sku":"A"}"#).unwrap();
        assert_eq!(a.hash, b.hash);
    }

    #[test]
    fn deleted_flag_spellings() {
        let r = rules(&["sku"], &[], &[]);
        for yes in ["true", "1", "\"1\"", "\"TRUE\"", "\"yes\""] {
            let i = item(&r, &format!(r#"{{"sku":"A","deleted":{yes}}}"#)).unwrap();
            assert!(i.deleted, "{yes}");
        }
        for no in ["false", "0", "\"no\"", "null"] {
            let i = item(&r, &format!(r#"{{"sku":"A","deleted":{no}}}"#)).unwrap();
            assert!(!i.deleted, "{no}");
        }
    }
}
