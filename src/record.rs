//! From a record to an item: its key and id, its canonical hash, and
//! whether an incremental source marks it deleted.
//!
//! The feed's rules are compiled here into the tree of paths that
//! `canonical` hashes by; it hands back the hash and the values the rules
//! asked for, which become the item's key, id and deleted flag.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::canonical::{self, Captures, Node};
use crate::config::Feed;

pub use crate::canonical::Hash;

/// A hash as 32 hex digits, as a target is sent it.
pub fn hash_hex(h: Hash) -> String {
    format!("{h:032x}")
}

/// The hash of a record's bytes as the source wrote them, seeded with what
/// gives those bytes their meaning (config and CSV header), so a change of
/// either makes every record look new and be compared by content again.
pub fn raw_hash(bytes: &[u8], seed: u64) -> Hash {
    xxh3_128_with_seed(bytes, seed)
}

/// One item read from a source.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// The key fields, flat under their configured names, as JSON text;
    /// `None` when the key is one field whose value is the id's text: the
    /// state file need not store it (`{field: id}` gives it back), so it
    /// is not even written out (a first sync makes a million of them).
    pub key: Option<String>,
    pub hash: Hash,
    /// An incremental source marked this item deleted.
    pub deleted: bool,
}

/// What a feed's config says about reading its items, compiled into a tree
/// of the dotted paths it names.
#[derive(Debug, Clone)]
pub struct Rules {
    key: Vec<String>,
    exclude: Vec<String>,
    sort_arrays: Vec<String>,
    deleted_field: Option<String>,
    root: Node,
}

impl Rules {
    pub fn new(feed: &Feed) -> Rules {
        Rules::build(
            feed.key.clone(),
            feed.hash_exclude.clone(),
            feed.sort_arrays.clone(),
            (!feed.snapshot).then(|| feed.deleted_field.clone()),
        )
    }

    pub(crate) fn build(
        key: Vec<String>,
        exclude: Vec<String>,
        sort_arrays: Vec<String>,
        deleted_field: Option<String>,
    ) -> Rules {
        let mut root = Node::default();
        for (i, k) in key.iter().enumerate() {
            root.at(k).key = Some(i);
        }
        for p in &exclude {
            root.at(p).exclude = true;
        }
        for p in &sort_arrays {
            root.at(p).sort = true;
        }
        if let Some(d) = &deleted_field {
            root.at(d).deleted = true;
        }
        Rules {
            key,
            exclude,
            sort_arrays,
            deleted_field,
            root,
        }
    }

    /// The parts of the config that change what a record's bytes mean.
    pub fn fingerprint(&self) -> String {
        format!(
            "hash=v2;key={:?};exclude={:?};sort={:?};deleted={:?}",
            self.key, self.exclude, self.sort_arrays, self.deleted_field
        )
    }

    /// Parses a JSON object record and builds its item, or says why the
    /// record is bad.
    pub fn from_json(&self, bytes: &[u8]) -> Result<Item, String> {
        let mut caps = Captures::new(self.key.len());
        let hash = canonical::hash_record(bytes, &self.root, &mut caps)?;
        self.finish(hash, caps)
    }

    /// Builds the item of a record already decoded into a JSON object.
    pub fn from_value(&self, value: &Value) -> Result<Item, String> {
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        let mut caps = Captures::new(self.key.len());
        let hash = canonical::walk_value(value, Some(&self.root), &mut caps);
        self.finish(hash, caps)
    }

    fn finish(&self, hash: Hash, caps: Captures) -> Result<Item, String> {
        let mut values = Vec::with_capacity(self.key.len());
        let mut id = String::new();
        let mut key_is_id = self.key.len() == 1;
        for (i, (field, v)) in self.key.iter().zip(caps.keys).enumerate() {
            let v = match v {
                None | Some(Value::Null) => return Err(format!("key field `{field}` is missing")),
                Some(Value::Array(_) | Value::Object(_)) => {
                    return Err(format!(
                        "key field `{field}` is an object or an array, not a value"
                    ));
                }
                Some(v) => v,
            };
            if i > 0 {
                id.push('/');
            }
            match &v {
                Value::String(s) => {
                    encode_id_part(s, &mut id);
                    key_is_id &= id.len() == s.len();
                }
                other => {
                    encode_id_part(&other.to_string(), &mut id);
                    key_is_id = false;
                }
            }
            values.push((field, v));
        }
        let key = (!key_is_id).then(|| {
            let key: Map<String, Value> = values.into_iter().map(|(f, v)| (f.clone(), v)).collect();
            Value::Object(key).to_string()
        });
        Ok(Item {
            id,
            key,
            hash,
            deleted: caps.deleted.as_ref().is_some_and(is_true),
        })
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

    fn rules(key: &[&str], exclude: &[&str], sort: &[&str]) -> Rules {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Rules::build(v(key), v(exclude), v(sort), Some("deleted".into()))
    }

    fn item(r: &Rules, json: &str) -> Result<Item, String> {
        r.from_json(json.as_bytes())
    }

    #[test]
    fn ids_from_single_and_composite_keys() {
        let r = rules(&["sku", "store"], &[], &[]);
        let i = item(&r, r#"{"sku":"MH01-XS/Black,1%","store":"default"}"#).unwrap();
        assert_eq!(i.id, "MH01-XS%2FBlack%2C1%25/default");
        assert_eq!(
            i.key.as_deref(),
            Some(r#"{"sku":"MH01-XS/Black,1%","store":"default"}"#),
            "two fields"
        );
        let r1 = rules(&["sku"], &[], &[]);
        assert_eq!(item(&r1, r#"{"sku":"MH01"}"#).unwrap().key, None);
        let encoded = item(&r1, r#"{"sku":"M/1"}"#).unwrap();
        assert_eq!(encoded.key.as_deref(), Some(r#"{"sku":"M/1"}"#), "encoded");
        let number = item(&r1, r#"{"sku":1}"#).unwrap();
        assert_eq!(number.key.as_deref(), Some(r#"{"sku":1}"#), "a number");
        let r = rules(&["p.id"], &[], &[]);
        let i = item(&r, r#"{"p":{"id":1.50}}"#).unwrap();
        assert_eq!(i.id, "1.5");
        assert_eq!(i.key.as_deref(), Some(r#"{"p.id":1.5}"#));
        let i = item(&r, r#"{"p":{"id":true}}"#).unwrap();
        assert_eq!(i.id, "true");
    }

    #[test]
    fn bad_records() {
        let r = rules(&["sku"], &[], &[]);
        assert!(item(&r, r#"{"sku":null}"#).unwrap_err().contains("missing"));
        assert!(item(&r, r#"{"name":"x"}"#).unwrap_err().contains("missing"));
        assert!(item(&r, r#"{"sku":[1]}"#).unwrap_err().contains("array"));
        assert!(
            item(&r, r#"{"sku":{"a":1}}"#)
                .unwrap_err()
                .contains("object")
        );
        assert!(
            item(&r, r#"[{"sku":"A"}]"#)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            item(&r, r#""A""#)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            item(&r, r#"{"sku":"A"} x"#)
                .unwrap_err()
                .contains("trailing")
        );
        assert!(item(&r, r#"{"sku":"A","#).unwrap_err().contains("EOF"));
        assert_eq!(item(&r, r#"{"sku":""}"#).unwrap().id, "");
    }

    #[test]
    fn canonical_hash_ignores_order_spacing_escapes_exclusions_and_sorted_arrays() {
        let r = rules(&["sku"], &["meta.updated_at"], &["tags"]);
        let a = item(
            &r,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":2}}"#,
        )
        .unwrap();
        let b = item(
            &r,
            r#"{ "meta" : {"n":2, "updated_at":9}, "tags":["y","x"], "\u0073ku":"\u0041" }"#,
        )
        .unwrap();
        assert_eq!(a.hash, b.hash);
        for other in [
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":3}}"#,
            r#"{"sku":"A","tags":["x","y","y"],"meta":{"updated_at":1,"n":2}}"#,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":"2"}}"#,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":2.0}}"#,
            r#"{"sku":"A","tags":["x","y"],"meta":{"updated_at":1,"n":2},"x":null}"#,
        ] {
            assert_ne!(a.hash, item(&r, other).unwrap().hash, "{other}");
        }
        // Unsorted arrays keep their order.
        let r = rules(&["sku"], &[], &[]);
        let x = item(&r, r#"{"sku":"A","tags":["x","y"]}"#).unwrap();
        let y = item(&r, r#"{"sku":"A","tags":["y","x"]}"#).unwrap();
        assert_ne!(x.hash, y.hash);
    }

    #[test]
    fn parsing_and_walking_a_value_hash_alike() {
        let r = rules(&["sku"], &["b.c"], &["arr"]);
        for json in [
            r#"{"sku":"A","n":-3,"f":1.5,"u":18446744073709551615,"b":{"c":1,"d":[1,{"z":null}]},"arr":[3,1,2],"t":true,"s":"é\n"}"#,
            r#"{"sku":"B","d\u0075p":1,"other":{"x":[]}}"#,
            r#"{"sku":1.0,"big":1e300,"neg":-0.5}"#,
        ] {
            let parsed = item(&r, json).unwrap();
            let value: Value = serde_json::from_str(json).unwrap();
            let walked = r.from_value(&value).unwrap();
            assert_eq!(parsed.hash, walked.hash, "{json}");
            assert_eq!(parsed.id, walked.id, "{json}");
        }
    }

    #[test]
    fn deleted_flag_spellings() {
        let r = rules(&["sku"], &[], &[]);
        for yes in ["true", "1", "\"1\"", "\"TRUE\"", "\"yes\""] {
            let i = item(&r, &format!(r#"{{"sku":"A","deleted":{yes}}}"#)).unwrap();
            assert!(i.deleted, "{yes}");
        }
        for no in ["false", "0", "\"no\"", "null", "[1]"] {
            let i = item(&r, &format!(r#"{{"sku":"A","deleted":{no}}}"#)).unwrap();
            assert!(!i.deleted, "{no}");
        }
    }
}
