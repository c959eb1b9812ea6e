//! The canonical hash of a record, the one thing that decides "changed": a
//! hash over the record's content with object keys sorted, the
//! `hash_exclude` fields left out and the `sort_arrays` arrays sorted, so
//! equal content hashes alike whatever the key order or spacing in the
//! source. Every value is hashed with a tag for its type, and containers
//! hash their members' hashes (`scheme`).
//!
//! JSON records are hashed by `scan` straight from their bytes: parsing
//! dominates the cost of a first sync, and a `Value` tree would only be
//! thrown away. CSV records arrive as a `Value` and are hashed by
//! `walk_value` with the same scheme, so a CSV row and a JSON object with
//! equal content hash alike; tests hold the two to agreeing. Both pick up
//! the values the rules ask for (key fields, the deleted flag) on the way,
//! so a record is read once. `record` turns those into an item.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128_with_seed;

mod scan;
pub(crate) mod scheme;
#[cfg(test)]
mod tests;

pub(crate) use scan::hash_record;

/// A 128-bit content hash. Wide enough that a collision is not a concern
/// for "never miss a change".
pub type Hash = u128;

/// A place in the record that a rule names, and what the rule says of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    children: Vec<(String, Node)>,
    pub exclude: bool,
    pub sort: bool,
    /// Which key field this is, by its place in the key.
    pub key: Option<usize>,
    /// This is the field that marks a record deleted.
    pub deleted: bool,
}

impl Node {
    pub fn child(&self, name: &[u8]) -> Option<&Node> {
        self.children
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, c)| c)
    }

    /// The node at a dotted path, made if it is not there yet.
    pub fn at(&mut self, path: &str) -> &mut Node {
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

/// Values the rules ask for, picked up while hashing.
pub(crate) struct Captures {
    /// One per key field, in the key's order.
    pub keys: Vec<Option<Value>>,
    pub deleted: Option<Value>,
}

impl Captures {
    pub fn new(keys: usize) -> Captures {
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

/// The canonical hash of a record already decoded into a `Value`, picking
/// up what `caps` asks for.
pub(crate) fn walk_value(v: &Value, node: Option<&Node>, caps: &mut Captures) -> Hash {
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
