//! The hashing scheme: a seed per type keeps the domains apart, and
//! containers hash their members' hashes.

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
