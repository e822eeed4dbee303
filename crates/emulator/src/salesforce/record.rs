//! One stored record and the way it sits in memory.
//!
//! A seeded million-account org holds about five million records of a dozen fields each. As a
//! vector of JSON values a record took ~1,100 bytes (48 a field, one allocation per string); a
//! stored record is packed into a single allocation instead: per field a name number, a tag and
//! the value's bytes. Datetimes, dates and User ids, which most records share (every record of a
//! seeded batch was created and modified at one instant by one user), are numbers into one table
//! of such strings. A record being built or changed is open (a vector of fields) and is packed
//! when the store keeps it ([`Record::compacted`]).
//!
//! Values are the JSON scalars Salesforce returns; [`Field`] is a borrowed view of one, with the
//! accessors of `serde_json::Value` the store and SOQL use, so reads never allocate.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde_json::{Number, Value};

/// One stored record. Field names are canonical API names; values are JSON scalars in the wire
/// format Salesforce returns (dates `2024-05-01`, datetimes `2024-05-01T10:00:00.000+0000`).
#[derive(Debug, Clone, Default)]
pub struct Record {
    repr: Repr,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub modstamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
enum Repr {
    /// Being built or changed: fields sorted by name number.
    Open(Vec<(u32, Cell)>),
    /// As stored: see [`pack`].
    Packed(Box<[u8]>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Open(Vec::new())
    }
}

/// An owned value of an open record.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    /// An array or object, kept as its JSON text (the schema's fields are all scalars, so only
    /// a caller outside the DML rules could set one).
    Json(String),
}

/// A borrowed view of one field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Json(&'a str),
}

impl<'a> Field<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Field::Str(_))
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Field::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Field::U64(n) => Some(*n as f64),
            Field::I64(n) => Some(*n as f64),
            Field::F64(x) => Some(*x),
            _ => None,
        }
    }

    /// A view of a JSON value (arrays and objects have no borrowed text, so they read as null;
    /// the store never holds one).
    pub fn of(v: &'a Value) -> Self {
        match v {
            Value::Null | Value::Array(_) | Value::Object(_) => Field::Null,
            Value::Bool(b) => Field::Bool(*b),
            Value::Number(n) => number_field(n),
            Value::String(s) => Field::Str(s),
        }
    }

    /// The value as JSON, as the API returns it.
    pub fn to_value(&self) -> Value {
        match *self {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(b),
            Field::U64(n) => Value::Number(n.into()),
            Field::I64(n) => Value::Number(n.into()),
            Field::F64(x) => Number::from_f64(x).map_or(Value::Null, Value::Number),
            Field::Str(s) => Value::String(s.to_owned()),
            Field::Json(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        }
    }
}

impl PartialEq<Value> for Field<'_> {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

fn number_field(n: &Number) -> Field<'static> {
    if let Some(u) = n.as_u64() {
        Field::U64(u)
    } else if let Some(i) = n.as_i64() {
        Field::I64(i)
    } else {
        Field::F64(n.as_f64().unwrap_or(0.0))
    }
}

impl Cell {
    fn of(v: Value) -> Self {
        match v {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(b),
            Value::Number(n) => match number_field(&n) {
                Field::U64(u) => Cell::U64(u),
                Field::I64(i) => Cell::I64(i),
                Field::F64(x) => Cell::F64(x),
                _ => Cell::Null,
            },
            Value::String(s) => Cell::Str(s),
            other => Cell::Json(other.to_string()),
        }
    }

    fn view(&self) -> Field<'_> {
        match self {
            Cell::Null => Field::Null,
            Cell::Bool(b) => Field::Bool(*b),
            Cell::U64(n) => Field::U64(*n),
            Cell::I64(n) => Field::I64(*n),
            Cell::F64(x) => Field::F64(*x),
            Cell::Str(s) => Field::Str(s),
            Cell::Json(s) => Field::Json(s),
        }
    }
}

impl Record {
    pub fn id(&self) -> &str {
        self.get("Id").as_str().unwrap_or("")
    }

    /// Field value by canonical name; `Field::Null` when unset.
    pub fn get(&self, field: &str) -> Field<'_> {
        let Some(name) = names().find(field) else { return Field::Null };
        match &self.repr {
            Repr::Open(cells) => match cells.binary_search_by_key(&name, |(n, _)| *n) {
                Ok(i) => cells[i].1.view(),
                Err(_) => Field::Null,
            },
            Repr::Packed(bytes) => Packed { bytes, at: 0 }.lookup(name).unwrap_or(Field::Null),
        }
    }

    /// Sets a field, replacing its value if it has one.
    pub fn set(&mut self, field: &str, value: Value) {
        let name = names().intern(field);
        let cells = self.open();
        let cell = Cell::of(value);
        match cells.binary_search_by_key(&name, |(n, _)| *n) {
            Ok(i) => cells[i].1 = cell,
            Err(i) => cells.insert(i, (name, cell)),
        }
    }

    /// The fields as a vector to change, unpacking a stored record.
    fn open(&mut self) -> &mut Vec<(u32, Cell)> {
        if let Repr::Packed(bytes) = &self.repr {
            let cells = Packed { bytes, at: 0 }.map(|(n, v)| (n, owned(v))).collect();
            self.repr = Repr::Open(cells);
        }
        match &mut self.repr {
            Repr::Open(cells) => cells,
            Repr::Packed(_) => unreachable!("unpacked just above"),
        }
    }

    /// The record packed as it is stored for good.
    pub fn compacted(mut self) -> Self {
        self.pack();
        self
    }

    /// Packs the record in place (a no-op when it is packed already).
    pub fn pack(&mut self) {
        if let Repr::Open(cells) = &self.repr {
            self.repr = Repr::Packed(pack(cells));
        }
    }

    /// The fields that have a value (`null` included when set so), by name.
    pub fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        let names = names();
        let mut out: Vec<(&'static str, Field<'_>)> = match &self.repr {
            Repr::Open(cells) => cells.iter().map(|(n, c)| (names.name(*n), c.view())).collect(),
            Repr::Packed(bytes) => Packed { bytes, at: 0 }.map(|(n, v)| (names.name(n), v)).collect(),
        };
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.deleted == other.deleted
            && self.deleted_at == other.deleted_at
            && self.modstamp == other.modstamp
            && self.fields() == other.fields()
    }
}

fn owned(v: Field<'_>) -> Cell {
    match v {
        Field::Null => Cell::Null,
        Field::Bool(b) => Cell::Bool(b),
        Field::U64(n) => Cell::U64(n),
        Field::I64(n) => Cell::I64(n),
        Field::F64(x) => Cell::F64(x),
        Field::Str(s) => Cell::Str(s.to_owned()),
        Field::Json(s) => Cell::Json(s.to_owned()),
    }
}

// ---- the packed form ---------------------------------------------------------------------
//
// Per field, in name-number order: the name number (LEB128), a tag, then the value: nothing
// for null and booleans, 8 little-endian bytes for numbers, a length (LEB128) and UTF-8 bytes
// for text, a shared-string number (LEB128) for a string in the shared table.

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_U64: u8 = 3;
const T_I64: u8 = 4;
const T_F64: u8 = 5;
const T_STR: u8 = 6;
const T_SHARED: u8 = 7;
const T_JSON: u8 = 8;

fn pack(cells: &[(u32, Cell)]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(cells.len() * 12);
    for (name, cell) in cells {
        put_varint(&mut out, u64::from(*name));
        match cell {
            Cell::Null => out.push(T_NULL),
            Cell::Bool(false) => out.push(T_FALSE),
            Cell::Bool(true) => out.push(T_TRUE),
            Cell::U64(n) => {
                out.push(T_U64);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Cell::I64(n) => {
                out.push(T_I64);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Cell::F64(x) => {
                out.push(T_F64);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Cell::Str(s) => match shared().intern(s) {
                Some(i) => {
                    out.push(T_SHARED);
                    put_varint(&mut out, u64::from(i));
                }
                None => {
                    out.push(T_STR);
                    put_varint(&mut out, s.len() as u64);
                    out.extend_from_slice(s.as_bytes());
                }
            },
            Cell::Json(s) => {
                out.push(T_JSON);
                put_varint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.into_boxed_slice()
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The fields of a packed record, in order. Only [`pack`] writes the bytes, so a malformed
/// sequence cannot occur; reading stops at the first byte that would not decode all the same.
struct Packed<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Packed<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(n);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }

    fn word(&mut self) -> Option<[u8; 8]> {
        let w = self.bytes.get(self.at..self.at + 8)?.try_into().ok()?;
        self.at += 8;
        Some(w)
    }
}

impl<'a> Iterator for Packed<'a> {
    type Item = (u32, Field<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let name = u32::try_from(self.varint()?).ok()?;
        Some((name, self.value()?))
    }
}

impl<'a> Packed<'a> {
    /// The value of field `wanted`. The others are stepped over undecoded, and the scan stops at
    /// the first larger name number (fields are in name-number order): this is every SOQL
    /// filter's and sort's read.
    fn lookup(mut self, wanted: u32) -> Option<Field<'a>> {
        loop {
            let name = u32::try_from(self.varint()?).ok()?;
            if name == wanted {
                return self.value();
            }
            if name > wanted {
                return None;
            }
            self.step_over()?;
        }
    }

    fn value(&mut self) -> Option<Field<'a>> {
        let tag = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(match tag {
            T_NULL => Field::Null,
            T_FALSE => Field::Bool(false),
            T_TRUE => Field::Bool(true),
            T_U64 => Field::U64(u64::from_le_bytes(self.word()?)),
            T_I64 => Field::I64(i64::from_le_bytes(self.word()?)),
            T_F64 => Field::F64(f64::from_le_bytes(self.word()?)),
            T_STR => Field::Str(self.text()?),
            T_JSON => Field::Json(self.text()?),
            T_SHARED => Field::Str(shared().get(u32::try_from(self.varint()?).ok()?)?),
            _ => return None,
        })
    }

    /// Steps over one value without reading it.
    fn step_over(&mut self) -> Option<()> {
        let tag = *self.bytes.get(self.at)?;
        self.at += 1;
        match tag {
            T_NULL | T_FALSE | T_TRUE => {}
            T_U64 | T_I64 | T_F64 => self.at = self.at.checked_add(8)?,
            T_STR | T_JSON => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.at = self.at.checked_add(len)?;
            }
            T_SHARED => {
                self.varint()?;
            }
            _ => return None,
        }
        Some(())
    }

    /// A length-prefixed text, borrowed for as long as the record is.
    fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        let bytes: &'a [u8] = self.bytes;
        let s = std::str::from_utf8(bytes.get(self.at..end)?).ok()?;
        self.at = end;
        Some(s)
    }
}

// ---- shared tables -----------------------------------------------------------------------

/// Strings kept once for the whole process, each under a number. Entries are never removed, so
/// they are leaked to give out `&'static str`: field names are the schema's (a few hundred),
/// shared values are capped at [`MAX_SHARED`].
#[derive(Default)]
struct Table {
    numbers: HashMap<&'static str, u32>,
    strings: Vec<&'static str>,
}

struct Interned(RwLock<Table>);

/// Shared values past this many are stored in each record: the table stays bounded however many
/// distinct instants a long-lived emulator writes at (about 80 MB at most with its index). The
/// table outlives `Db::reset`: its strings may still be borrowed, and it is bounded anyway.
const MAX_SHARED: usize = 1 << 20;

impl Interned {
    fn find(&self, s: &str) -> Option<u32> {
        self.0.read().numbers.get(s).copied()
    }

    fn add(&self, s: &str, cap: usize) -> Option<u32> {
        let mut t = self.0.write();
        if let Some(n) = t.numbers.get(s) {
            return Some(*n);
        }
        if t.strings.len() >= cap {
            return None;
        }
        let n = u32::try_from(t.strings.len()).ok()?;
        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
        t.strings.push(leaked);
        t.numbers.insert(leaked, n);
        Some(n)
    }

    fn get(&self, n: u32) -> Option<&'static str> {
        self.0.read().strings.get(n as usize).copied()
    }
}

struct Names(Interned);

impl Names {
    fn find(&self, name: &str) -> Option<u32> {
        self.0.find(name)
    }

    fn intern(&self, name: &str) -> u32 {
        match self.0.find(name) {
            Some(n) => n,
            // Names are not capped: they come from the schema, and a record cannot hold a
            // field it has no number for.
            None => self.0.add(name, usize::MAX).unwrap_or(u32::MAX),
        }
    }

    fn name(&self, n: u32) -> &'static str {
        self.0.get(n).unwrap_or("")
    }
}

/// The process's one copy of a field or object name.
pub fn shared_name(name: &str) -> &'static str {
    let names = names();
    names.name(names.intern(name))
}

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| Names(Interned(RwLock::new(Table::default()))))
}

struct Shared(Interned);

impl Shared {
    /// The shared number of a value most records repeat; `None` for any other string.
    fn intern(&self, s: &str) -> Option<u32> {
        if !worth_sharing(s) {
            return None;
        }
        self.0.find(s).or_else(|| self.0.add(s, MAX_SHARED))
    }

    fn get(&self, n: u32) -> Option<&'static str> {
        self.0.get(n)
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared(Interned(RwLock::new(Table::default()))))
}

/// Datetimes (`2024-05-01T10:00:00.000+0000`), dates (`2024-05-01`) and User ids (`005…`, 18
/// characters): the values a whole batch of records holds the same, and few of them exist.
/// Told by shape, not by field type, so a text that merely looks like one is shared too: it
/// reads back the same, and the table's cap bounds what such texts can cost.
fn worth_sharing(s: &str) -> bool {
    let b = s.as_bytes();
    let dated = |b: &[u8]| b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit);
    match b.len() {
        10 => dated(b),
        28 => dated(b) && b[10] == b'T' && b.ends_with(b"+0000"),
        18 => b.starts_with(b"005"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use serde_json::json;

    fn value_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e12f64..1e12).prop_map(|x| json!(x)),
            "[a-zA-Z0-9 @.é-]{0,40}".prop_map(Value::String),
            Just(json!("2024-05-01T10:00:00.000+0000")),
            Just(json!("2024-05-01")),
            Just(json!("0058d0000000001AAA")),
            Just(json!("0018d0000000001AAA")),
            Just(json!(["a", 1])),
        ]
    }

    proptest::proptest! {
        /// Open or packed, a record answers every read as a map of the same writes would, and
        /// packing then writing again loses nothing.
        #[test]
        fn records_read_back_as_a_map_holds_them(
            writes in proptest::collection::vec((0usize..12, value_strategy(), proptest::bool::ANY), 0..40),
        ) {
            const NAMES: [&str; 12] =
                ["Id", "Name", "a", "Z", "OwnerId", "Name__c", "name", "IsDeleted", "B", "AccountId", "x_y", ""];
            let mut rec = Record::default();
            let mut map: IndexMap<String, Value> = IndexMap::new();
            for (k, v, pack_after) in writes {
                rec.set(NAMES[k], v.clone());
                map.insert(NAMES[k].to_string(), v);
                if pack_after {
                    rec.pack();
                }
            }
            for packed in [false, true] {
                if packed {
                    rec.pack();
                }
                for name in NAMES.iter().chain(["Missing", "id"].iter()) {
                    let want = map.get(*name).cloned().unwrap_or(Value::Null);
                    proptest::prop_assert_eq!(rec.get(name).to_value(), want);
                }
                proptest::prop_assert_eq!(rec.fields().len(), map.len());
                proptest::prop_assert_eq!(rec.id(), map.get("Id").and_then(Value::as_str).unwrap_or(""));
            }
        }
    }

    #[test]
    fn shared_values_are_the_ones_records_repeat() {
        assert!(worth_sharing("2024-05-01T10:00:00.000+0000"));
        assert!(worth_sharing("2024-05-01"));
        assert!(worth_sharing("0058d0000000001AAA"));
        assert!(!worth_sharing("0018d0000000001AAA"));
        assert!(!worth_sharing("abcd-ef-ghij"));
        assert!(!worth_sharing("x"));
    }

    #[test]
    fn a_packed_contact_is_a_fraction_of_its_json() {
        let mut rec = Record::default();
        for (k, v) in [
            ("Id", json!("0038d0000000123AAA")),
            ("FirstName", json!("Ada")),
            ("LastName", json!("Lovelace")),
            ("Name", json!("Ada Lovelace")),
            ("Email", json!("ada.lovelace@example.com")),
            ("AccountId", json!("0018d0000000042AAA")),
            ("OwnerId", json!("0058d0000000001AAA")),
            ("IsDeleted", json!(false)),
            ("CreatedDate", json!("2024-05-01T10:00:00.000+0000")),
            ("CreatedById", json!("0058d0000000001AAA")),
            ("LastModifiedDate", json!("2024-05-01T10:00:00.000+0000")),
            ("LastModifiedById", json!("0058d0000000001AAA")),
            ("SystemModstamp", json!("2024-05-01T10:00:00.000+0000")),
        ] {
            rec.set(k, v);
        }
        rec.pack();
        let Repr::Packed(bytes) = &rec.repr else { panic!("packed") };
        // 13 fields: their texts (18 + 3 + 8 + 12 + 24 + 18 bytes), a length byte each, two
        // bytes of name and tag a field, and six shared values of one or two bytes.
        assert!(bytes.len() <= 140, "{} bytes", bytes.len());
        assert_eq!(rec.get("CreatedDate"), Field::Str("2024-05-01T10:00:00.000+0000"));
        assert_eq!(rec.get("IsDeleted"), Field::Bool(false));
        assert_eq!(rec.get("Email").as_str(), Some("ada.lovelace@example.com"));
    }
}
