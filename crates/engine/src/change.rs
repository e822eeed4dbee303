//! Change detection: a fingerprint of every value usagesync last wrote, per record and field, so
//! a run sends only the fields whose value moved. The fingerprints are also the loop guard: a
//! value that comes back unchanged from the other direction hashes the same and is not echoed.
//!
//! Fingerprints are the first 8 bytes of SHA-256 over the value's JSON text. JSON objects
//! serialise with sorted keys here, and numbers are rounded by the caller before they get this
//! far, so the same value always gives the same text (and the same fingerprint across releases,
//! which `DefaultHasher` does not promise).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fingerprint of a value.
pub fn fingerprint(value: &Value) -> u64 {
    fingerprint_text(&value.to_string())
}

/// The fingerprint of a value's JSON text (as `Value::to_string` writes it): the store keeps
/// the text and derives the fingerprint from it rather than keep both.
pub fn fingerprint_text(json: &str) -> u64 {
    let digest = Sha256::digest(json.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A field's API name, shared: the changes of one run name the same few fields, and a name
/// of its own in every change was a third of a first run's changes.
pub type FieldName = std::sync::Arc<str>;

/// Fields named by owned text, as most templates build them, with shared names.
pub fn named(fields: impl IntoIterator<Item = (String, Value)>) -> Vec<(FieldName, Value)> {
    fields.into_iter().map(|(f, v)| (FieldName::from(f), v)).collect()
}

/// What a workflow wants one record to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The source's key (the Pendo account id).
    pub key: String,
    /// The Salesforce record the values go to.
    pub salesforce_id: String,
    /// Field → value, every mapped field.
    pub fields: Vec<(FieldName, Value)>,
}

/// The part of a [`Desired`] that differs from what was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub salesforce_id: String,
    /// Only the fields whose fingerprint differs (or that were never written).
    pub fields: Vec<(FieldName, Value)>,
    /// The fingerprint of `fields[i]`, to store once Salesforce has the value; empty for a write
    /// whose fingerprints are not kept. Numbers beside the fields rather than pairs with the name
    /// again: a first run holds a change per matched record, and a second copy of each name was
    /// half of a change's bytes.
    pub prints: Vec<u64>,
}

impl Change {
    /// Keeps the fields (and their fingerprints) `keep` accepts.
    pub fn retain_fields(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let fields = std::mem::take(&mut self.fields);
        let mut prints = std::mem::take(&mut self.prints).into_iter();
        for field in fields {
            let print = prints.next();
            if keep(&field.0) {
                self.fields.push(field);
                self.prints.extend(print);
            }
        }
    }

    /// Each fingerprinted field with its fingerprint and the value sent.
    pub fn printed(&self) -> impl Iterator<Item = (&str, u64, &Value)> {
        self.fields.iter().zip(&self.prints).map(|((f, v), p)| (&**f, *p, v))
    }

    /// The fields as a JSON object, as a request body holds them.
    pub fn object(&self) -> serde_json::Map<String, Value> {
        self.fields.iter().map(|(f, v)| (f.to_string(), v.clone())).collect()
    }

    /// The field names, in order.
    pub fn names(&self) -> Vec<String> {
        self.fields.iter().map(|(f, _)| f.to_string()).collect()
    }

    /// The field names, sorted: records with the same set can share a Bulk job's CSV columns.
    pub fn field_set(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.fields.iter().map(|(f, _)| &**f).collect();
        v.sort_unstable();
        v
    }
}

/// Fingerprints last written, by (Salesforce record id, field).
pub type Written = crate::store::Fingerprints;

/// The changed fields of `desired`, or `None` when Salesforce already holds every value.
/// `always` names fields that ride along only when something else changed (a "last updated"
/// stamp): they never cause a write on their own.
pub fn diff(written: &Written, desired: &Desired, always: &[(FieldName, Value)]) -> Option<Change> {
    let differs = |(field, value): &(FieldName, Value)| {
        let print = fingerprint(value);
        (written.get(&desired.salesforce_id, field) != Some(print)).then_some(print)
    };
    // Nothing is allocated for a record that needs no write, and a change's lists are sized
    // once: grown by doubling they held half again what they used (a first run holds a change
    // per matched record).
    let (first, print) = desired.fields.iter().enumerate().find_map(|(i, f)| Some((i, differs(f)?)))?;
    let room = desired.fields.len() - first + always.len();
    let mut change = Change {
        key: desired.key.clone(),
        salesforce_id: desired.salesforce_id.clone(),
        fields: Vec::with_capacity(room),
        prints: Vec::with_capacity(room),
    };
    let (field, value) = &desired.fields[first];
    change.fields.push((field.clone(), value.clone()));
    change.prints.push(print);
    for f @ (field, value) in &desired.fields[first + 1..] {
        if let Some(print) = differs(f) {
            change.fields.push((field.clone(), value.clone()));
            change.prints.push(print);
        }
    }
    for (field, value) in always {
        change.prints.push(fingerprint(value));
        change.fields.push((field.clone(), value.clone()));
    }
    Some(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(events: i64, score: f64) -> Desired {
        Desired {
            key: "acme".into(),
            salesforce_id: "001A".into(),
            fields: vec![("Events__c".into(), json!(events)), ("Score__c".into(), json!(score))],
        }
    }

    fn remember(written: &mut Written, change: &Change) {
        for (f, p, _) in change.printed() {
            written.insert(&change.salesforce_id, f, p);
        }
    }

    #[test]
    fn a_change_is_sized_once() {
        let written = Written::default();
        let stamp = vec![("Updated__c".into(), json!("2026-12-07"))];
        let mut d = desired(3, 0.5);
        d.fields.extend([
            ("Minutes__c".into(), json!(7)),
            ("Visitors__c".into(), json!(2)),
            ("Days__c".into(), json!(1)),
        ]);
        let c = diff(&written, &d, &stamp).unwrap_or_else(|| panic!("every field is new"));
        // Grown by doubling, six entries took room for eight.
        assert_eq!((c.fields.len(), c.fields.capacity()), (6, 6));
        assert_eq!((c.prints.len(), c.prints.capacity()), (6, 6));
    }

    #[test]
    fn fields_are_kept_with_their_fingerprints() {
        let d = desired(3, 0.5);
        let mut c = diff(&Written::default(), &d, &[]).unwrap_or_else(|| panic!("every field is new"));
        let score = fingerprint(&json!(0.5));
        c.retain_fields(|f| f != "Events__c");
        assert_eq!(
            c.printed().map(|(f, p, v)| (f, p, v.clone())).collect::<Vec<_>>(),
            [("Score__c", score, json!(0.5))]
        );
        // A write whose fingerprints are not kept keeps none.
        let mut unprinted =
            Change { prints: Vec::new(), ..diff(&Written::default(), &d, &[]).unwrap_or_else(|| panic!()) };
        unprinted.retain_fields(|f| f == "Score__c");
        assert_eq!((unprinted.fields.len(), unprinted.printed().count()), (1, 0));
    }

    #[test]
    fn only_changed_fields_are_sent_and_a_repeat_sends_nothing() {
        let stamp = [("Updated__c".into(), json!("2026-11-27T00:00:00Z"))];
        let mut written = Written::default();
        let first = diff(&written, &desired(10, 50.5), &stamp).unwrap();
        assert_eq!(first.fields.len(), 3);
        remember(&mut written, &first);
        assert_eq!(diff(&written, &desired(10, 50.5), &stamp), None, "the stamp alone never writes");
        let second = diff(&written, &desired(11, 50.5), &stamp).unwrap();
        assert_eq!(second.field_set(), vec!["Events__c", "Updated__c"]);
    }

    #[test]
    fn fingerprints_are_stable_and_type_aware() {
        assert_eq!(fingerprint(&json!({"b": 1, "a": 2})), fingerprint(&json!({"a": 2, "b": 1})));
        assert_ne!(fingerprint(&json!(1)), fingerprint(&json!("1")));
        assert_ne!(fingerprint(&json!(null)), fingerprint(&json!(0)));
        // Pinned: a change here would rewrite every record of every customer on upgrade.
        assert_eq!(fingerprint(&json!(42)), 0x73475cb40a568e8d);
    }
}
