//! The emulator's in-memory value type: what stored documents, aggregation rows and expression
//! results are made of. Cheap to clone (strings, arrays and objects are reference-counted), so a
//! million-row aggregation can pass values around without allocating per row.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// An object: insertion-ordered, because clients and humans read the JSON we emit.
pub type Obj = IndexMap<String, Val>;

#[derive(Clone, Debug, Default)]
pub enum Val {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Arr(Arc<Vec<Val>>),
    Obj(Arc<Obj>),
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(Arc::from(s))
    }

    pub fn obj(o: Obj) -> Val {
        Val::Obj(Arc::new(o))
    }

    pub fn arr(v: Vec<Val>) -> Val {
        Val::Arr(Arc::new(v))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_obj(&self) -> Option<&Obj> {
        match self {
            Val::Obj(o) => Some(o),
            _ => None,
        }
    }

    /// Truthiness as filters use it: only `true` keeps a row.
    pub fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    /// Looks one key up in an object; anything else has no fields.
    pub fn field(&self, key: &str) -> &Val {
        static NULL: Val = Val::Null;
        match self {
            Val::Obj(o) => o.get(key).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn at(&self, i: i64) -> &Val {
        static NULL: Val = Val::Null;
        match self {
            Val::Arr(a) => {
                let idx = if i < 0 { a.len() as i64 + i } else { i };
                usize::try_from(idx).ok().and_then(|i| a.get(i)).unwrap_or(&NULL)
            }
            _ => &NULL,
        }
    }

    /// Walks a dotted path (`metadata.auto.id`).
    pub fn path(&self, dotted: &str) -> &Val {
        dotted.split('.').fold(self, |v, k| v.field(k))
    }

    /// Sets `a.b.c` inside an object value, creating intermediate objects; eval uses dotted names
    /// to build nested output.
    pub fn set_path(obj: &mut Obj, dotted: &str, value: Val) {
        match dotted.split_once('.') {
            None => {
                obj.insert(dotted.to_string(), value);
            }
            Some((head, rest)) => {
                let entry = obj.entry(head.to_string()).or_insert_with(|| Val::obj(Obj::new()));
                if !matches!(entry, Val::Obj(_)) {
                    *entry = Val::obj(Obj::new());
                }
                if let Val::Obj(inner) = entry {
                    Val::set_path(Arc::make_mut(inner), rest, value);
                }
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "boolean",
            Val::Int(_) | Val::Float(_) => "number",
            Val::Str(_) => "string",
            Val::Arr(_) => "array",
            Val::Obj(_) => "object",
        }
    }

    /// Total order used by `sort`: null < bool < number < string < array < object. Numbers
    /// compare numerically across int/float so epoch-ms keys sort the same either way.
    pub fn cmp_total(&self, other: &Val) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn rank(v: &Val) -> u8 {
            match v {
                Val::Null => 0,
                Val::Bool(_) => 1,
                Val::Int(_) | Val::Float(_) => 2,
                Val::Str(_) => 3,
                Val::Arr(_) => 4,
                Val::Obj(_) => 5,
            }
        }
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => a.cmp(b),
            (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
            (Val::Str(a), Val::Str(b)) => a.cmp(b),
            (a, b) if rank(a) == 2 && rank(b) == 2 => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
            (Val::Arr(a), Val::Arr(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let o = x.cmp_total(y);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }

    /// Equality as the expression language sees it (1 == 1.0).
    pub fn loose_eq(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Int(a), Val::Int(b)) => a == b,
            (Val::Str(a), Val::Str(b)) => a == b,
            (a, b) if a.as_f64().is_some() && b.as_f64().is_some() => a.as_f64() == b.as_f64(),
            (Val::Arr(a), Val::Arr(b)) => a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.loose_eq(y)),
            (Val::Obj(a), Val::Obj(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.loose_eq(w)))
            }
            _ => false,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Val::Null => serde_json::Value::Null,
            Val::Bool(b) => serde_json::Value::Bool(*b),
            Val::Int(i) => serde_json::Value::from(*i),
            Val::Float(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Val::Str(s) => serde_json::Value::String(s.to_string()),
            Val::Arr(a) => serde_json::Value::Array(a.iter().map(Val::to_json).collect()),
            Val::Obj(o) => serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

impl From<&serde_json::Value> for Val {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Val::Null,
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Val::str(s),
            serde_json::Value::Array(a) => Val::arr(a.iter().map(Val::from).collect()),
            serde_json::Value::Object(o) => Val::obj(o.iter().map(|(k, v)| (k.clone(), Val::from(v))).collect()),
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::str(s)
    }
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Str(Arc::from(s))
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Val::Int(i)
    }
}
impl From<bool> for Val {
    fn from(b: bool) -> Self {
        Val::Bool(b)
    }
}
impl From<f64> for Val {
    fn from(f: f64) -> Self {
        Val::Float(f)
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Int(i) => s.serialize_i64(*i),
            Val::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Val::Float(_) => s.serialize_unit(),
            Val::Str(x) => s.serialize_str(x),
            Val::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a.iter() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Val::Obj(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

/// A hashable view of a value, for group keys and distinct counts. Integral floats hash like
/// integers so that `1` and `1.0` land in one group.
#[derive(Clone, Debug)]
pub struct HKey(pub Val);

impl PartialEq for HKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.loose_eq(&other.0)
    }
}
impl Eq for HKey {}

impl Hash for HKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn h<H: Hasher>(v: &Val, state: &mut H) {
            match v {
                Val::Null => 0u8.hash(state),
                Val::Bool(b) => {
                    1u8.hash(state);
                    b.hash(state)
                }
                Val::Int(i) => {
                    2u8.hash(state);
                    i.hash(state)
                }
                Val::Float(f) => {
                    2u8.hash(state);
                    if f.fract() == 0.0 && f.abs() < 9.0e18 { (*f as i64).hash(state) } else { f.to_bits().hash(state) }
                }
                Val::Str(s) => {
                    3u8.hash(state);
                    s.hash(state)
                }
                Val::Arr(a) => {
                    4u8.hash(state);
                    a.len().hash(state);
                    for x in a.iter() {
                        h(x, state);
                    }
                }
                Val::Obj(o) => {
                    5u8.hash(state);
                    o.len().hash(state);
                }
            }
        }
        h(&self.0, state)
    }
}

/// FxHash: group-by and distinct counts hash millions of short keys, where SipHash's DoS
/// resistance buys nothing (the emulator is a test tool on loopback).
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub type FxMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
pub type FxSet<K> = std::collections::HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_builds_nesting() {
        let mut o = Obj::new();
        Val::set_path(&mut o, "a.b.c", Val::Int(1));
        let v = Val::obj(o);
        assert_eq!(v.path("a.b.c").as_i64(), Some(1));
    }

    #[test]
    fn ints_and_floats_group_together() {
        use std::collections::HashSet;
        let mut s = HashSet::new();
        s.insert(HKey(Val::Int(3)));
        assert!(s.contains(&HKey(Val::Float(3.0))));
    }

    #[test]
    fn json_round_trip() {
        let j = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        let v = Val::from(&j);
        assert_eq!(v.to_json(), j);
        assert_eq!(serde_json::to_value(&v).unwrap_or_default(), j);
    }
}
