//! From a record to an item: its key and id, its canonical hash, and
//! whether an incremental source marks it deleted.
//!
//! The canonical hash is what decides "changed": a hash over the record's
//! content with object keys sorted, the `hash_exclude` fields left out and
//! the `sort_arrays` arrays sorted, so equal content hashes alike whatever
//! the key order or spacing in the source. Every value is hashed with a
//! tag for its type, and containers hash their members' hashes.
//!
//! JSON records are hashed by `canonical`'s scanner straight from their
//! bytes: parsing dominates the cost of a first sync, and a `Value` tree
//! would only be thrown away. CSV records arrive as a `Value` and are
//! hashed by walking it with the same scheme, so a CSV row and a JSON
//! object with equal content hash alike.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::config::Feed;

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

/// One item read from a source.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// The key fields, flat under their configured names, as JSON text.
    pub key: String,
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

/// A place in the record that a rule names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    children: Vec<(String, Node)>,
    pub exclude: bool,
    pub sort: bool,
    key: Option<usize>,
    deleted: bool,
}

impl Node {
    pub fn child(&self, name: &[u8]) -> Option<&Node> {
        self.children
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, c)| c)
    }

    fn at(&mut self, path: &str) -> &mut Node {
        path.split('.').fold(self, |node, part| {
            let i = match node.children.iter().position(|(n, _)| n == part) {
                Some(i) => i,
                None => {
                    node.children.push((part.to_string(), Node::default()));
                    node.children.len() - 1
                }
            };
            &mut node.children[i].1
        })
    }
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
        let hash = crate::canonical::hash_record(bytes, &self.root, &mut caps)?;
        self.finish(hash, caps)
    }

    /// Builds the item of a record already decoded into a JSON object.
    pub fn from_value(&self, value: &Value) -> Result<Item, String> {
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        let mut caps = Captures::new(self.key.len());
        let hash = walk_value(value, Some(&self.root), &mut caps);
        self.finish(hash, caps)
    }

    fn finish(&self, hash: Hash, caps: Captures) -> Result<Item, String> {
        let mut key = Map::new();
        let mut id = String::new();
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
                Value::String(s) => encode_id_part(s, &mut id),
                other => encode_id_part(&other.to_string(), &mut id),
            }
            key.insert(field.clone(), v);
        }
        Ok(Item {
            id,
            key: Value::Object(key).to_string(),
            hash,
            deleted: caps.deleted.as_ref().is_some_and(is_true),
        })
    }
}

/// Values the rules ask for, picked up while hashing.
pub(crate) struct Captures {
    keys: Vec<Option<Value>>,
    deleted: Option<Value>,
}

impl Captures {
    fn new(keys: usize) -> Captures {
        Captures {
            keys: vec![None; keys],
            deleted: None,
        }
    }

    /// Records `v` if `node` is a key field or the deleted field.
    pub fn take(&mut self, node: Option<&Node>, v: impl FnOnce() -> Value) {
        if let Some(n) = node
            && (n.key.is_some() || n.deleted)
        {
            let v = v();
            if let Some(i) = n.key {
                self.keys[i] = Some(v.clone());
            }
            if n.deleted {
                self.deleted = Some(v);
            }
        }
    }
}

/// The hashing scheme: a seed per type keeps the domains apart, and
/// containers hash their members' hashes.
pub(crate) mod scheme {
    use super::Hash;
    use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed, xxh3_128_with_seed};

    pub const NULL: u64 = 1;
    pub const BOOL: u64 = 2;
    const UINT: u64 = 3;
    const INT: u64 = 4;
    const FLOAT: u64 = 5;
    pub const STRING: u64 = 6;
    const ARRAY: u64 = 7;
    const OBJECT: u64 = 8;
    const MEMBER: u64 = 9;

    pub fn array(items: &mut [Hash], sort: bool) -> Hash {
        if sort {
            items.sort_unstable();
        }
        let mut h = Array::new();
        for &item in items.iter() {
            h.push(item);
        }
        h.finish()
    }

    /// An array hashed item by item, as its items come: an unsorted array
    /// needs no list of its items' hashes, which for an array of small
    /// numbers would take eight times the record's size.
    pub struct Array(Xxh3);

    impl Array {
        pub fn new() -> Array {
            Array(Xxh3::with_seed(ARRAY))
        }

        pub fn push(&mut self, item: Hash) {
            self.0.update(&item.to_le_bytes());
        }

        pub fn finish(self) -> Hash {
            self.0.digest128()
        }
    }

    /// One object member: the key's hash seeds the hash of the value's,
    /// binding the two.
    pub fn member(key: &[u8], value: Hash) -> Hash {
        xxh3_128_with_seed(&value.to_le_bytes(), xxh3_64_with_seed(key, MEMBER))
    }

    /// An object from the wrapping sum of its members' hashes: a sum does
    /// not depend on order, so members need no sorting. (Keys are taken to
    /// be unique, as RFC 8259 asks; a repeated key counts each time.)
    pub fn object(members_sum: Hash) -> Hash {
        xxh3_128_with_seed(&members_sum.to_le_bytes(), OBJECT)
    }

    pub fn number(n: &serde_json::Number) -> Hash {
        if let Some(u) = n.as_u64() {
            xxh3_128_with_seed(&u.to_le_bytes(), UINT)
        } else if let Some(i) = n.as_i64() {
            xxh3_128_with_seed(&i.to_le_bytes(), INT)
        } else {
            let f = n.as_f64().unwrap_or(0.0);
            xxh3_128_with_seed(&f.to_bits().to_le_bytes(), FLOAT)
        }
    }
}

fn walk_value(v: &Value, node: Option<&Node>, caps: &mut Captures) -> Hash {
    match v {
        Value::Null => {
            caps.take(node, || Value::Null);
            xxh3_128_with_seed(b"", scheme::NULL)
        }
        Value::Bool(b) => {
            caps.take(node, || Value::Bool(*b));
            xxh3_128_with_seed(&[*b as u8], scheme::BOOL)
        }
        Value::Number(n) => {
            caps.take(node, || Value::Number(n.clone()));
            scheme::number(n)
        }
        Value::String(s) => {
            caps.take(node, || Value::String(s.clone()));
            xxh3_128_with_seed(s.as_bytes(), scheme::STRING)
        }
        Value::Array(a) => {
            caps.take(node, || Value::Array(Vec::new()));
            let mut items: Vec<Hash> = a.iter().map(|x| walk_value(x, None, caps)).collect();
            scheme::array(&mut items, node.is_some_and(|n| n.sort))
        }
        Value::Object(m) => {
            caps.take(node, || Value::Object(Map::new()));
            let mut sum: Hash = 0;
            for (k, v) in m {
                let child = node.and_then(|n| n.child(k.as_bytes()));
                let h = walk_value(v, child, caps);
                if !child.is_some_and(|c| c.exclude) {
                    sum = sum.wrapping_add(scheme::member(k.as_bytes(), h));
                }
            }
            scheme::object(sum)
        }
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
        assert_eq!(i.key, r#"{"sku":"MH01-XS/Black,1%","store":"default"}"#);
        let r = rules(&["p.id"], &[], &[]);
        let i = item(&r, r#"{"p":{"id":1.50}}"#).unwrap();
        assert_eq!(i.id, "1.5");
        assert_eq!(i.key, r#"{"p.id":1.5}"#);
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
