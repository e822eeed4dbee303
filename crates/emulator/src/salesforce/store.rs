//! The org's data: records per sObject, unique and external-ID indexes, and the DML rules that
//! every write path (REST, Collections, Composite, Bulk) shares: type coercion, lengths,
//! required fields, picklists, references, uniqueness, validation rules and the system fields
//! (CreatedDate, LastModifiedById, SystemModstamp...).
//!
//! Writes can run inside a journal so that an `allOrNone` request can be rolled back as a whole.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ids::{self, IdGenerator};
use super::schema::{FieldDef, FieldType, ObjectDef, Schema};

use super::record::shared_name;
pub use super::record::{Field, Record};

/// A DML error as Salesforce reports it: the same triple serves top-level REST errors
/// (`errorCode`) and per-record Collections/Bulk results (`statusCode`).
#[derive(Debug, Clone, PartialEq)]
pub struct DmlError {
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl DmlError {
    pub fn new(code: &'static str, message: impl Into<String>, fields: Vec<String>) -> Self {
        Self { code, message: message.into(), fields }
    }

    /// The top-level REST form: `{"message","errorCode","fields"}`.
    pub fn rest_json(&self) -> Value {
        if self.fields.is_empty() {
            json!({"message": self.message, "errorCode": self.code})
        } else {
            json!({"message": self.message, "errorCode": self.code, "fields": self.fields})
        }
    }

    /// The per-record form used inside Collections results: `{"statusCode","message","fields"}`.
    pub fn record_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }

    /// The `sf__Error` form Bulk API 2.0 writes into failedResults.
    pub fn bulk_text(&self) -> String {
        format!("{}:{}:{} --", self.code, self.message, self.fields.join(","))
    }

    pub fn not_found() -> Self {
        Self::new("NOT_FOUND", "The requested resource does not exist", vec![])
    }

    pub fn entity_deleted() -> Self {
        Self::new("ENTITY_IS_DELETED", "entity is deleted", vec![])
    }

    pub fn invalid_type(object: &str) -> Self {
        Self::new(
            "NOT_FOUND",
            format!("The requested resource does not exist: sObject type '{object}' is not supported."),
            vec![],
        )
    }
}

/// Who writes and when: stamped into the system fields of every record a write touches.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub user_id: String,
    pub now: DateTime<Utc>,
}

/// The result of an upsert by external ID.
#[derive(Debug)]
pub enum UpsertOutcome {
    Created(String),
    Updated(String),
}

#[derive(Debug)]
pub enum UpsertError {
    /// More than one record carries the external ID value (HTTP 300).
    Multiple(Vec<String>),
    Dml(Vec<DmlError>),
}

impl From<Vec<DmlError>> for UpsertError {
    fn from(v: Vec<DmlError>) -> Self {
        UpsertError::Dml(v)
    }
}

/// A validation rule installed through the admin API: when `condition` holds for the record
/// being saved, the save fails with FIELD_CUSTOM_VALIDATION_EXCEPTION, like a formula rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationRule {
    pub name: String,
    pub error_message: String,
    #[serde(default)]
    pub error_field: Option<String>,
    pub condition: RuleCondition,
}

/// A field update installed through the admin API, as a workflow rule's field update or a
/// before-save flow makes one: when `when` holds for the record being saved (on every save
/// without one), `field` is set to `value` within the same save. The save stays the writer's,
/// so `LastModifiedById` is the user whose write set it off, as in Salesforce.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldUpdate {
    pub name: String,
    #[serde(default)]
    pub when: Option<RuleCondition>,
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleCondition {
    pub field: String,
    pub operator: RuleOperator,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleOperator {
    Equals,
    NotEquals,
    LessThan,
    GreaterThan,
    IsNull,
    NotNull,
    Contains,
}

impl RuleCondition {
    /// The rule's value as a field's would read; `None` for a list or an object.
    fn scalar(&self) -> Option<Field<'_>> {
        (!self.value.is_array() && !self.value.is_object()).then(|| Field::of(&self.value))
    }

    fn holds(&self, record: &Record, obj: &ObjectDef) -> bool {
        let name = obj.field(&self.field).map(|f| f.name.as_str()).unwrap_or(&self.field);
        let v = record.get(name);
        match self.operator {
            RuleOperator::IsNull => v.is_null(),
            RuleOperator::NotNull => !v.is_null(),
            // A list or object equals no stored value (every field holds a scalar).
            RuleOperator::Equals => self.scalar().is_some_and(|b| loose_eq(v, b)),
            RuleOperator::NotEquals => !self.scalar().is_some_and(|b| loose_eq(v, b)),
            RuleOperator::LessThan => self.scalar().and_then(|b| compare(v, b)) == Some(std::cmp::Ordering::Less),
            RuleOperator::GreaterThan => self.scalar().and_then(|b| compare(v, b)) == Some(std::cmp::Ordering::Greater),
            RuleOperator::Contains => match (v.as_str(), self.value.as_str()) {
                (Some(a), Some(b)) => a.to_lowercase().contains(&b.to_lowercase()),
                _ => false,
            },
        }
    }
}

fn loose_eq(a: Field<'_>, b: Field<'_>) -> bool {
    match (a.as_f64(), b.as_f64(), a.as_str(), b.as_str()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

fn compare(a: Field<'_>, b: Field<'_>) -> Option<std::cmp::Ordering> {
    match (a.as_f64(), b.as_f64(), a.as_str(), b.as_str()) {
        (Some(x), Some(y), _, _) => x.partial_cmp(&y),
        (_, _, Some(x), Some(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[derive(Debug, Default, Clone)]
struct Table {
    records: IndexMap<String, Record>,
    /// Unique/external-ID field name → normalised value → record IDs holding it.
    /// External IDs that are not unique may map to several records (an upsert then answers 300).
    index: HashMap<String, HashMap<String, Vec<String>>>,
}

/// What a journal needs to undo one write: the record as it was before (None = did not exist).
#[derive(Debug)]
struct Undo {
    /// The process's one copy of the name: a seeding transaction journals a million creates.
    object: &'static str,
    id: String,
    /// Boxed: a seeding transaction journals a million creates, whose `None` then costs a word.
    before: Option<Box<Record>>,
}

/// The whole org's data and metadata.
#[derive(Debug)]
pub struct Db {
    pub schema: Schema,
    tables: HashMap<String, Table>,
    pub ids: IdGenerator,
    journal: Option<Vec<Undo>>,
    rules: HashMap<String, Vec<ValidationRule>>,
    field_updates: HashMap<String, Vec<FieldUpdate>>,
    case_number: u64,
}

/// The emulator's integration user, the `sub` of every default session.
pub const INTEGRATION_USER_ID: &str = "0058d0000000001AAA";
pub const INTEGRATION_USERNAME: &str = "integration@usagesync.test";
pub const ORG_ID: &str = "00D8d0000000001EAA";
/// The Organization record's name and instance, as `sf org display` shows them.
pub const ORG_NAME: &str = "usagesync Emulator";
pub const INSTANCE_NAME: &str = "EMU1";

/// What Salesforce answers a write to an object the API may not change.
fn read_only_error(object: &str) -> DmlError {
    DmlError::new(
        "INSUFFICIENT_ACCESS_OR_READONLY",
        format!("insufficient access rights on object id: entity type {object} is read-only in this org"),
        vec![],
    )
}

impl Db {
    /// A fresh org with the standard schema and its one integration user.
    pub fn new() -> Self {
        let mut db = Db {
            schema: Schema::standard(),
            tables: HashMap::new(),
            ids: IdGenerator::new(),
            journal: None,
            rules: HashMap::new(),
            field_updates: HashMap::new(),
            case_number: 0,
        };
        db.ids.observe(INTEGRATION_USER_ID);
        let epoch = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let mut user = Record::default();
        for (k, v) in [
            ("Id", json!(INTEGRATION_USER_ID)),
            ("Username", json!(INTEGRATION_USERNAME)),
            ("Email", json!(INTEGRATION_USERNAME)),
            ("FirstName", json!("Integration")),
            ("LastName", json!("User")),
            ("Name", json!("Integration User")),
            ("Alias", json!("integ")),
            ("IsActive", json!(true)),
            ("IsDeleted", json!(false)),
            ("CreatedDate", json!(format_datetime(epoch))),
            ("CreatedById", json!(INTEGRATION_USER_ID)),
            ("LastModifiedDate", json!(format_datetime(epoch))),
            ("LastModifiedById", json!(INTEGRATION_USER_ID)),
            ("SystemModstamp", json!(format_datetime(epoch))),
        ] {
            user.set(k, v);
        }
        user.modstamp = Some(epoch);
        db.table_mut("User").records.insert(INTEGRATION_USER_ID.to_string(), user.compacted());
        db.ids.observe(ORG_ID);
        let mut org = Record::default();
        for (k, v) in [
            ("Id", json!(ORG_ID)),
            ("Name", json!(ORG_NAME)),
            ("InstanceName", json!(INSTANCE_NAME)),
            ("IsSandbox", json!(false)),
            ("TrialExpirationDate", Value::Null),
            ("NamespacePrefix", Value::Null),
            ("OrganizationType", json!("Developer Edition")),
            ("Country", json!("US")),
            ("LanguageLocaleKey", json!("en_US")),
            ("DefaultLocaleSidKey", json!("en_US")),
            ("TimeZoneSidKey", json!("GMT")),
            ("IsDeleted", json!(false)),
            ("CreatedDate", json!(format_datetime(epoch))),
            ("CreatedById", json!(INTEGRATION_USER_ID)),
            ("LastModifiedDate", json!(format_datetime(epoch))),
            ("LastModifiedById", json!(INTEGRATION_USER_ID)),
            ("SystemModstamp", json!(format_datetime(epoch))),
        ] {
            org.set(k, v);
        }
        org.modstamp = Some(epoch);
        db.table_mut("Organization").records.insert(ORG_ID.to_string(), org.compacted());
        db
    }

    /// The table of an object, by its canonical name.
    fn table_mut(&mut self, object: &str) -> &mut Table {
        self.tables.entry(object.to_string()).or_default()
    }

    /// The table of an object named in any case.
    fn table(&self, object: &str) -> Option<&Table> {
        match self.tables.get(object) {
            Some(t) => Some(t),
            None => self.tables.get(&self.schema.object(object)?.name),
        }
    }

    /// Records of one object in creation order, deleted ones included.
    pub fn records<'a>(&'a self, object: &str) -> Box<dyn Iterator<Item = &'a Record> + 'a> {
        match self.table(object) {
            Some(t) => Box::new(t.records.values()),
            None => Box::new(std::iter::empty()),
        }
    }

    /// Number of records of one object (deleted ones included).
    pub fn count(&self, object: &str) -> usize {
        self.table(object).map_or(0, |t| t.records.len())
    }

    /// A record by ID, whatever its object (the key prefix tells), deleted ones included.
    pub fn get_any(&self, id: &str) -> Option<(&ObjectDef, &Record)> {
        let id = ids::normalize(id)?;
        let obj = self.schema.object_for_id(&id)?;
        let rec = self.tables.get(&obj.name)?.records.get(&id)?;
        Some((obj, rec))
    }

    /// A record of the given object by ID (15 or 18 characters), deleted ones included.
    pub fn get(&self, object: &str, id: &str) -> Option<&Record> {
        let id = ids::normalize(id)?;
        self.table(object)?.records.get(&id)
    }

    /// Live records whose external-ID (or unique) field equals `value`.
    ///
    /// # Errors
    /// NOT_FOUND when the field does not exist or is not an external ID / unique field.
    pub fn find_by_external_id(&self, object: &str, field: &str, value: &str) -> Result<Vec<String>, DmlError> {
        let obj = self.schema.object(object).ok_or_else(|| DmlError::invalid_type(object))?;
        let f = obj.field(field).ok_or_else(DmlError::not_found)?;
        if f.field_type == FieldType::Id {
            return Ok(self
                .get(object, value)
                .filter(|r| !r.deleted)
                .map(|r| vec![r.id().to_string()])
                .unwrap_or_default());
        }
        if !(f.external_id || f.unique) {
            return Err(DmlError::not_found());
        }
        let key = index_key(f, Field::Str(value));
        Ok(self
            .tables
            .get(&obj.name)
            .and_then(|t| t.index.get(&f.name))
            .and_then(|idx| idx.get(&key))
            .cloned()
            .unwrap_or_default())
    }

    pub fn add_rule(&mut self, object: &str, rule: ValidationRule) -> Result<(), String> {
        let obj = self.schema.object(object).ok_or_else(|| format!("sObject type '{object}' is not supported."))?;
        if obj.field(&rule.condition.field).is_none() {
            return Err(format!("No such column '{}' on sobject of type {}", rule.condition.field, obj.name));
        }
        let key = obj.name.clone();
        self.rules.entry(key).or_default().push(rule);
        Ok(())
    }

    /// Drops every validation rule of `object`; returns how many there were.
    pub fn clear_rules(&mut self, object: &str) -> usize {
        let key = self.schema.object(object).map_or_else(|| object.to_owned(), |o| o.name.clone());
        self.rules.remove(&key).map_or(0, |r| r.len())
    }

    /// Installs a field update; its field and value are checked as a save would check them.
    pub fn add_field_update(&mut self, object: &str, mut update: FieldUpdate) -> Result<(), String> {
        let obj = self.schema.object(object).ok_or_else(|| format!("sObject type '{object}' is not supported."))?;
        if let Some(c) = &update.when
            && obj.field(&c.field).is_none()
        {
            return Err(format!("No such column '{}' on sobject of type {}", c.field, obj.name));
        }
        let f = obj
            .field(&update.field)
            .ok_or_else(|| format!("No such column '{}' on sobject of type {}", update.field, obj.name))?;
        if f.system || f.field_type == FieldType::Id {
            return Err(format!("{} is set by Salesforce itself and cannot take a field update", f.name));
        }
        update.value = self.coerce_value(f, &update.value).map_err(|e| e.message)?;
        update.field = f.name.clone();
        let key = obj.name.clone();
        self.field_updates.entry(key).or_default().push(update);
        Ok(())
    }

    /// Drops every field update of `object`; returns how many there were.
    pub fn clear_field_updates(&mut self, object: &str) -> usize {
        let key = self.schema.object(object).map_or_else(|| object.to_owned(), |o| o.name.clone());
        self.field_updates.remove(&key).map_or(0, |r| r.len())
    }

    // ---- journal --------------------------------------------------------------------------

    /// Starts recording undo information for every write until [`Db::commit`] or [`Db::rollback`].
    pub fn begin(&mut self) {
        self.journal = Some(Vec::new());
    }

    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes every write since [`Db::begin`], newest first.
    pub fn rollback(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        for undo in journal.into_iter().rev() {
            let Some(obj) = self.schema.object(undo.object).cloned() else {
                continue;
            };
            let table = self.table_mut(&obj.name);
            if let Some(current) = table.records.get(&undo.id).cloned() {
                unindex(table, &obj, &current);
            }
            match undo.before {
                Some(before) => {
                    if !before.deleted {
                        index(table, &obj, &before);
                    }
                    table.records.insert(undo.id, *before);
                }
                None => {
                    table.records.shift_remove(&undo.id);
                }
            }
        }
    }

    fn remember(&mut self, object: &str, id: &str) {
        if self.journal.is_none() {
            return;
        }
        let before = self.table(object).and_then(|t| t.records.get(id)).cloned().map(Box::new);
        if let Some(j) = self.journal.as_mut() {
            j.push(Undo { object: shared_name(object), id: id.to_string(), before });
        }
    }

    // ---- DML ------------------------------------------------------------------------------

    /// Creates a record. Returns its new 18-character ID.
    ///
    /// # Errors
    /// Every problem found with the body, in Salesforce's codes; nothing is written then.
    pub fn create(&mut self, object: &str, body: &Map<String, Value>, ctx: &WriteCtx) -> Result<String, Vec<DmlError>> {
        let obj = self.schema.object(object).cloned().ok_or_else(|| vec![DmlError::invalid_type(object)])?;
        if !obj.createable {
            return Err(vec![read_only_error(&obj.name)]);
        }
        let values = self.coerce_body(&obj, body, true)?;
        let mut rec = new_record(&obj, values, ctx);
        check_required(&obj, &rec)?;
        let id = self.ids.next_id(&obj.key_prefix);
        rec.set("Id", json!(id));
        if obj.name == "Case" {
            self.case_number += 1;
            rec.set("CaseNumber", json!(format!("{:08}", self.case_number)));
        }
        self.finish_write(&obj, &mut rec, ctx, true);
        self.insert_new(&obj, id, rec)
    }

    /// Updates the given fields of a live record.
    ///
    /// # Errors
    /// MALFORMED_ID / NOT_FOUND / ENTITY_IS_DELETED for the target, or the body's problems.
    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<(), Vec<DmlError>> {
        let obj = self.schema.object(object).cloned().ok_or_else(|| vec![DmlError::invalid_type(object)])?;
        let id = self.resolve_target(&obj, id)?;
        if obj.read_only {
            return Err(vec![read_only_error(&obj.name)]);
        }
        let values = self.coerce_body(&obj, body, false)?;
        let table_key = obj.name.clone();
        let Some(current) = self.tables.get(&table_key).and_then(|t| t.records.get(&id)).cloned() else {
            return Err(vec![DmlError::not_found()]);
        };
        let mut rec = current.clone();
        for (k, v) in values {
            if v.is_null() && obj.field(&k).is_some_and(|f| f.required) {
                return Err(vec![DmlError::new(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{k}]"),
                    vec![k],
                )]);
            }
            rec.set(&k, v);
        }
        self.finish_write(&obj, &mut rec, ctx, false);
        self.check_rules_and_unique(&obj, &rec)?;
        self.remember(&obj.name, &id);
        let table = self.table_mut(&table_key);
        unindex(table, &obj, &current);
        index(table, &obj, &rec);
        table.records.insert(id, rec.compacted());
        Ok(())
    }

    /// Upserts by an external-ID field (or `Id`): updates the one match, creates when none.
    ///
    /// # Errors
    /// `Multiple` when several records match; otherwise the DML problems.
    pub fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<UpsertOutcome, UpsertError> {
        let obj = self.schema.object(object).cloned().ok_or_else(|| vec![DmlError::invalid_type(object)])?;
        let f = obj.field(field).cloned().ok_or_else(|| vec![DmlError::not_found()])?;
        if f.field_type == FieldType::Id {
            if value.is_empty() {
                return Ok(UpsertOutcome::Created(self.create(object, body, ctx)?));
            }
            self.update(object, value, body, ctx)?;
            return Ok(UpsertOutcome::Updated(ids::normalize(value).unwrap_or_default()));
        }
        if !f.external_id {
            return Err(vec![DmlError::new(
                "INVALID_FIELD",
                format!("Field {} is not an External ID or indexed field for {}", f.name, obj.name),
                vec![],
            )]
            .into());
        }
        // The external ID goes in the path; a different value in the body is contradictory.
        let mut body = body.clone();
        if let Some(k) = body.keys().find(|k| k.eq_ignore_ascii_case(&f.name)).cloned() {
            let in_body = body.remove(&k).unwrap_or(Value::Null);
            let same = match &in_body {
                Value::String(s) => s == value,
                Value::Null => false,
                other => *other == value,
            };
            if !same {
                return Err(vec![DmlError::new(
                    "INVALID_FIELD",
                    format!("The value in the body for {} does not match the value in the URL: {value}", f.name),
                    vec![f.name.clone()],
                )]
                .into());
            }
        }
        let matches = self.find_by_external_id(&obj.name, &f.name, value).map_err(|e| vec![e])?;
        match matches.as_slice() {
            [] => {
                body.insert(f.name.clone(), Value::String(value.to_string()));
                Ok(UpsertOutcome::Created(self.create(&obj.name, &body, ctx)?))
            }
            [one] => {
                let one = one.clone();
                self.update(&obj.name, &one, &body, ctx)?;
                Ok(UpsertOutcome::Updated(one))
            }
            many => Err(UpsertError::Multiple(many.to_vec())),
        }
    }

    /// Soft-deletes a record (it stays visible to queryAll and getDeleted).
    ///
    /// # Errors
    /// MALFORMED_ID, NOT_FOUND or ENTITY_IS_DELETED.
    pub fn delete(&mut self, object: &str, id: &str, ctx: &WriteCtx) -> Result<(), DmlError> {
        let obj = self.schema.object(object).cloned().ok_or_else(|| DmlError::invalid_type(object))?;
        let id = self.resolve_target(&obj, id).map_err(|mut e| e.remove(0))?;
        if obj.read_only {
            return Err(read_only_error(&obj.name));
        }
        self.remember(&obj.name, &id);
        let table = self.table_mut(&obj.name);
        let Some(current) = table.records.get(&id).cloned() else {
            return Err(DmlError::not_found());
        };
        unindex(table, &obj, &current);
        if let Some(rec) = table.records.get_mut(&id) {
            rec.deleted = true;
            rec.deleted_at = Some(ctx.now);
            rec.modstamp = Some(ctx.now);
            rec.set("IsDeleted", json!(true));
            rec.set("SystemModstamp", json!(format_datetime(ctx.now)));
            rec.pack();
        }
        Ok(())
    }

    /// Deletes a record for good (Bulk API `hardDelete`): it skips the recycle bin, so
    /// queryAll and getDeleted no longer see it.
    ///
    /// # Errors
    /// As [`Db::delete`].
    pub fn hard_delete(&mut self, object: &str, id: &str, ctx: &WriteCtx) -> Result<(), DmlError> {
        self.delete(object, id, ctx)?;
        if let (Some(obj), Some(id)) = (self.schema.object(object).cloned(), ids::normalize(id)) {
            self.table_mut(&obj.name).records.shift_remove(&id);
        }
        Ok(())
    }

    /// Inserts a record as given (admin seeding): system fields are filled in when absent, but
    /// the usual validation still applies so seeded worlds are ones the API could have made.
    ///
    /// # Errors
    /// The same DML errors as create, plus MALFORMED_ID / DUPLICATE_VALUE for a given `Id`.
    pub fn seed(&mut self, object: &str, body: &Map<String, Value>, ctx: &WriteCtx) -> Result<String, Vec<DmlError>> {
        let obj = self.schema.object(object).cloned().ok_or_else(|| vec![DmlError::invalid_type(object)])?;
        let mut body = body.clone();
        let given_id = body.keys().find(|k| k.eq_ignore_ascii_case("id")).cloned().and_then(|k| body.remove(&k));
        let mut stamps = Map::new();
        for k in ["CreatedDate", "LastModifiedDate", "CreatedById", "LastModifiedById", "Name", "IsClosed", "IsWon"] {
            if let Some(v) = body.remove(k) {
                stamps.insert(k.to_string(), v);
            }
        }
        let id = match given_id {
            Some(Value::String(s)) => {
                let id = ids::normalize(&s).filter(|i| ids::key_prefix(i) == obj.key_prefix).ok_or_else(|| {
                    vec![DmlError::new(
                        "MALFORMED_ID",
                        format!("{} ID: id value of incorrect type: {s}", obj.name),
                        vec!["Id".into()],
                    )]
                })?;
                if self.get(&obj.name, &id).is_some() {
                    return Err(vec![DmlError::new(
                        "DUPLICATE_VALUE",
                        format!("duplicate value found: Id duplicates value on record with id: {id}"),
                        vec!["Id".into()],
                    )]);
                }
                Some(id)
            }
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(vec![DmlError::new("MALFORMED_ID", "Id must be a string", vec!["Id".into()])]);
            }
        };
        let values = self.coerce_body_with(&obj, &body, true, true)?;
        let mut rec = new_record(&obj, values, ctx);
        let id = match id {
            Some(id) => {
                self.ids.observe(&id);
                id
            }
            None => self.ids.next_id(&obj.key_prefix),
        };
        rec.set("Id", json!(id));
        self.finish_write(&obj, &mut rec, ctx, true);
        for (k, v) in stamps {
            match k.as_str() {
                "CreatedDate" | "LastModifiedDate" => {
                    if let Some(t) = v.as_str().and_then(parse_datetime) {
                        rec.set(&k, json!(format_datetime(t)));
                    }
                }
                _ => {
                    rec.set(&k, v);
                }
            }
        }
        check_required(&obj, &rec)?;
        self.insert_new(&obj, id, rec)
    }

    /// Stores a record that does not exist yet, after the checks that need the whole org.
    fn insert_new(&mut self, obj: &ObjectDef, id: String, rec: Record) -> Result<String, Vec<DmlError>> {
        self.check_rules_and_unique(obj, &rec)?;
        self.remember(&obj.name, &id);
        let table = self.table_mut(&obj.name);
        index(table, obj, &rec);
        table.records.insert(id.clone(), rec.compacted());
        Ok(id)
    }

    /// Forgets every record and rule; the schema returns to the standard one.
    pub fn reset(&mut self) {
        *self = Db::new();
    }

    fn resolve_target(&self, obj: &ObjectDef, id: &str) -> Result<String, Vec<DmlError>> {
        let norm = ids::normalize(id).filter(|i| ids::key_prefix(i) == obj.key_prefix).ok_or_else(|| {
            vec![DmlError::new(
                "MALFORMED_ID",
                format!("{} ID: id value of incorrect type: {id}", obj.name),
                vec!["Id".into()],
            )]
        })?;
        match self.tables.get(&obj.name).and_then(|t| t.records.get(&norm)) {
            None => Err(vec![DmlError::not_found()]),
            Some(r) if r.deleted => Err(vec![DmlError::entity_deleted()]),
            Some(_) => Ok(norm),
        }
    }

    fn finish_write(&self, obj: &ObjectDef, rec: &mut Record, ctx: &WriteCtx, created: bool) {
        for update in self.field_updates.get(&obj.name).into_iter().flatten() {
            if update.when.as_ref().is_none_or(|c| c.holds(rec, obj)) {
                rec.set(&update.field, update.value.clone());
            }
        }
        let now = json!(format_datetime(ctx.now));
        if created {
            rec.set("IsDeleted", json!(false));
            rec.set("CreatedDate", now.clone());
            rec.set("CreatedById", json!(ctx.user_id));
        }
        rec.set("LastModifiedDate", now.clone());
        rec.set("LastModifiedById", json!(ctx.user_id));
        rec.set("SystemModstamp", now);
        rec.modstamp = Some(ctx.now);
        // Derived fields Salesforce computes itself.
        if obj.field("Name").is_some_and(|f| f.system) {
            let first = rec.get("FirstName").as_str().unwrap_or("").to_string();
            let last = rec.get("LastName").as_str().unwrap_or("").to_string();
            let name = format!("{first} {last}").trim().to_string();
            rec.set("Name", json!(name));
        }
        if obj.name == "Opportunity" {
            let stage = rec.get("StageName").as_str().unwrap_or("").to_string();
            rec.set("IsClosed", json!(stage.starts_with("Closed")));
            rec.set("IsWon", json!(stage == "Closed Won"));
        }
    }

    fn check_rules_and_unique(&self, obj: &ObjectDef, rec: &Record) -> Result<(), Vec<DmlError>> {
        let mut errors = Vec::new();
        for rule in self.rules.get(&obj.name).into_iter().flatten() {
            if rule.condition.holds(rec, obj) {
                let fields = rule.error_field.iter().cloned().collect();
                errors.push(DmlError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.error_message.clone(), fields));
            }
        }
        if let Some(table) = self.tables.get(&obj.name) {
            let id = rec.id();
            for f in obj.fields().filter(|f| f.unique) {
                let v = rec.get(&f.name);
                if v.is_null() {
                    continue;
                }
                let key = index_key(f, v);
                if let Some(other) = table
                    .index
                    .get(&f.name)
                    .and_then(|idx| idx.get(&key))
                    .and_then(|ids| ids.iter().find(|i| i.as_str() != id))
                {
                    errors.push(DmlError::new(
                        "DUPLICATE_VALUE",
                        format!("duplicate value found: {} duplicates value on record with id: {other}", f.name),
                        vec![],
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn coerce_body(
        &self,
        obj: &ObjectDef,
        body: &Map<String, Value>,
        create: bool,
    ) -> Result<Vec<(String, Value)>, Vec<DmlError>> {
        self.coerce_body_with(obj, body, create, false)
    }

    /// Checks every field of a request body against the schema and converts values to their
    /// stored form. Collects all problems so a caller sees every one at once, as Salesforce does
    /// for field-level errors.
    fn coerce_body_with(
        &self,
        obj: &ObjectDef,
        body: &Map<String, Value>,
        create: bool,
        seeding: bool,
    ) -> Result<Vec<(String, Value)>, Vec<DmlError>> {
        let mut out = Vec::with_capacity(body.len());
        let mut errors = Vec::new();
        let mut readonly = Vec::new();
        for (key, value) in body {
            if key == "attributes" {
                continue;
            }
            if let Some(f) = obj.field(key) {
                if f.field_type == FieldType::Id {
                    // An Id in an update body is the target itself; in a create it is refused.
                    if create {
                        readonly.push(f.name.clone());
                    }
                    continue;
                }
                let writable = if create { f.createable } else { f.updateable };
                if !writable && !seeding {
                    readonly.push(f.name.clone());
                    continue;
                }
                match self.coerce_value(f, value) {
                    Ok(v) => out.push((f.name.clone(), v)),
                    Err(e) => errors.push(e),
                }
            } else if let Some(f) = obj.relationship(key) {
                // Relationship by external ID: {"Account": {"Pendo_Account_Id__c": "acme"}}.
                match self.resolve_relationship(f, value) {
                    Ok(id) => out.push((f.name.clone(), json!(id))),
                    Err(e) => errors.push(e),
                }
            } else {
                errors.push(DmlError::new(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {}", obj.name),
                    vec![],
                ));
            }
        }
        if !readonly.is_empty() {
            errors.insert(
                0,
                DmlError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                        readonly.join(", ")
                    ),
                    readonly,
                ),
            );
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    fn resolve_relationship(&self, f: &FieldDef, value: &Value) -> Result<String, DmlError> {
        let bad = || {
            DmlError::new(
                "INVALID_FIELD",
                format!(
                    "Cannot resolve relationship {}: expected an object with one external ID field",
                    f.relationship_name.clone().unwrap_or_default()
                ),
                vec![],
            )
        };
        let map = value.as_object().ok_or_else(bad)?;
        let target = f.reference_to.first().ok_or_else(bad)?;
        let (ext_field, ext_value) = map.iter().find(|(k, _)| *k != "attributes").ok_or_else(bad)?;
        let ext_value = match ext_value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(bad()),
        };
        let found = self.find_by_external_id(target, ext_field, &ext_value).map_err(|_| {
            DmlError::new(
                "INVALID_FIELD",
                format!("Field name provided, {ext_field} is not an External ID or indexed field for {target}"),
                vec![],
            )
        })?;
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(DmlError::new(
                "INVALID_FIELD",
                format!("Foreign key external ID: {ext_value} not found for field {ext_field} in entity {target}"),
                vec![],
            )),
            _ => Err(DmlError::new(
                "INVALID_FIELD",
                format!(
                    "Foreign key external ID: {ext_value} matched more than one record for field {ext_field} in entity {target}"
                ),
                vec![],
            )),
        }
    }

    fn coerce_value(&self, f: &FieldDef, value: &Value) -> Result<Value, DmlError> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        let parse_err = |ty: &str| {
            DmlError::new(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {ty} from {} value {} or request may be missing a required field",
                    json_token(value),
                    short(value)
                ),
                vec![],
            )
        };
        match f.field_type {
            t if t.is_text() => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(parse_err("string")),
                };
                if s.chars().count() > f.length as usize {
                    return Err(DmlError::new(
                        "STRING_TOO_LONG",
                        format!("{}: data value too large: {} (max length={})", f.label, truncate(&s, 40), f.length),
                        vec![f.name.clone()],
                    ));
                }
                if t == FieldType::Email && !s.is_empty() && !valid_email(&s) {
                    return Err(DmlError::new(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {s}", f.label),
                        vec![f.name.clone()],
                    ));
                }
                if t == FieldType::Picklist && f.restricted && !f.picklist.iter().any(|p| p == &s) {
                    return Err(DmlError::new(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        format!("{}: bad value for restricted picklist field: {s}", f.label),
                        vec![f.name.clone()],
                    ));
                }
                if s.is_empty() { Ok(Value::Null) } else { Ok(Value::String(s)) }
            }
            FieldType::Boolean => match value {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
                _ => Err(parse_err("boolean")),
            },
            FieldType::Int | FieldType::Double | FieldType::Currency | FieldType::Percent => {
                let n = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                    _ => None,
                };
                let ty = if f.field_type == FieldType::Int { "int" } else { "double" };
                let n = n.ok_or_else(|| parse_err(ty))?;
                if f.field_type == FieldType::Int {
                    if n.fract() != 0.0 || n.abs() >= 1e9 {
                        return Err(DmlError::new(
                            "NUMBER_OUTSIDE_VALID_RANGE",
                            format!("{}: value outside of valid range on numeric field: {n}", f.label),
                            vec![f.name.clone()],
                        ));
                    }
                    return Ok(json!(n as i64));
                }
                let int_digits = f.precision.saturating_sub(f.scale) as i32;
                if n.abs() >= 10f64.powi(int_digits) {
                    return Err(DmlError::new(
                        "NUMBER_OUTSIDE_VALID_RANGE",
                        format!("{}: value outside of valid range on numeric field: {n}", f.label),
                        vec![f.name.clone()],
                    ));
                }
                Ok(serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null))
            }
            FieldType::Date => {
                let s = value.as_str().ok_or_else(|| parse_err("date"))?;
                let d = parse_date(s).ok_or_else(|| parse_err("date"))?;
                Ok(json!(d.format("%Y-%m-%d").to_string()))
            }
            FieldType::DateTime => {
                let s = value.as_str().ok_or_else(|| parse_err("datetime"))?;
                let t = parse_datetime(s).ok_or_else(|| parse_err("datetime"))?;
                Ok(json!(format_datetime(t)))
            }
            FieldType::Reference => {
                let s = value.as_str().ok_or_else(|| parse_err("reference"))?;
                if s.is_empty() {
                    return Ok(Value::Null);
                }
                let label = f.label.clone();
                let malformed = || {
                    DmlError::new(
                        "MALFORMED_ID",
                        format!("{label} ID: id value of incorrect type: {s}"),
                        vec![f.name.clone()],
                    )
                };
                let id = ids::normalize(s).ok_or_else(malformed)?;
                let target = self.schema.object_for_id(&id).ok_or_else(malformed)?;
                if !f.reference_to.iter().any(|r| r.eq_ignore_ascii_case(&target.name)) {
                    return Err(malformed());
                }
                match self.get(&target.name, &id) {
                    Some(r) if !r.deleted => Ok(json!(id)),
                    _ => Err(DmlError::new(
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                        vec![f.name.clone()],
                    )),
                }
            }
            _ => Err(parse_err("value")),
        }
    }
}

impl Default for Db {
    fn default() -> Self {
        Self::new()
    }
}

/// A new record's fields before system fields: picklist and other defaults, the running user as
/// owner, then the request's values.
fn new_record(obj: &ObjectDef, values: Vec<(String, Value)>, ctx: &WriteCtx) -> Record {
    let mut rec = Record::default();
    for f in obj.fields() {
        if let Some(d) = &f.default {
            rec.set(&f.name, d.clone());
        }
    }
    if obj.field("OwnerId").is_some() {
        rec.set("OwnerId", json!(ctx.user_id));
    }
    for (k, v) in values {
        rec.set(&k, v);
    }
    rec
}

/// REQUIRED_FIELD_MISSING naming every required field the record lacks.
fn check_required(obj: &ObjectDef, rec: &Record) -> Result<(), Vec<DmlError>> {
    let missing: Vec<String> =
        obj.fields().filter(|f| f.required && rec.get(&f.name).is_null()).map(|f| f.name.clone()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(vec![DmlError::new(
        "REQUIRED_FIELD_MISSING",
        format!("Required fields are missing: [{}]", missing.join(", ")),
        missing,
    )])
}

fn index_key(f: &FieldDef, v: Field<'_>) -> String {
    let s = match v {
        Field::Str(s) => s.to_owned(),
        other => other.to_value().to_string(),
    };
    if f.case_sensitive { s } else { s.to_lowercase() }
}

fn index(table: &mut Table, obj: &ObjectDef, rec: &Record) {
    let id = rec.id();
    for f in obj.fields().filter(|f| f.unique || f.external_id) {
        let v = rec.get(&f.name);
        if v.is_null() {
            continue;
        }
        let ids = table.index.entry(f.name.clone()).or_default().entry(index_key(f, v)).or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
}

fn unindex(table: &mut Table, obj: &ObjectDef, rec: &Record) {
    let id = rec.id();
    for f in obj.fields().filter(|f| f.unique || f.external_id) {
        let v = rec.get(&f.name);
        if v.is_null() {
            continue;
        }
        if let Some(idx) = table.index.get_mut(&f.name) {
            let key = index_key(f, v);
            if let Some(ids) = idx.get_mut(&key) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    idx.remove(&key);
                }
            }
        }
    }
}

fn json_token(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => truncate(s, 40),
        other => truncate(&other.to_string(), 40),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "..." }
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
        && !domain.contains('@')
}

/// Salesforce's datetime wire format: milliseconds and a `+0000` offset, always UTC.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses the datetime forms clients send: RFC 3339 (`Z` or `+hh:mm`), Salesforce's own
/// `+0000` form, with or without fractional seconds.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().or_else(|| parse_datetime(s).map(|t| t.date_naive()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> WriteCtx {
        WriteCtx { user_id: INTEGRATION_USER_ID.into(), now: Utc::now() }
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn create_fills_system_fields_and_defaults() {
        let mut db = Db::new();
        let id = db.create("task", &body(json!({"Subject": "Call"})), &ctx()).unwrap();
        let rec = db.get("Task", &id).unwrap();
        assert_eq!(rec.get("Status"), json!("Not Started"));
        assert_eq!(rec.get("OwnerId"), json!(INTEGRATION_USER_ID));
        assert!(rec.get("SystemModstamp").is_string());
        assert_eq!(ids::key_prefix(&id), "00T");
    }

    #[test]
    fn a_rule_on_a_list_equals_no_value_not_even_an_unset_one() {
        let mut db = Db::new();
        let rule = |name: &str, operator: RuleOperator| ValidationRule {
            name: name.into(),
            error_message: name.into(),
            error_field: None,
            condition: RuleCondition { field: "Website".into(), operator, value: json!(["x"]) },
        };
        db.add_rule("Account", rule("equals a list", RuleOperator::Equals)).unwrap();
        db.create("Account", &body(json!({"Name": "A"})), &ctx()).unwrap();
        db.clear_rules("Account");
        db.add_rule("Account", rule("differs from a list", RuleOperator::NotEquals)).unwrap();
        let errs = db.create("Account", &body(json!({"Name": "B"})), &ctx()).unwrap_err();
        assert_eq!(errs[0].message, "differs from a list");
    }

    #[test]
    fn reports_every_problem() {
        let mut db = Db::new();
        let errs = db.create("Opportunity", &body(json!({"Name": "x"})), &ctx()).unwrap_err();
        assert_eq!(errs[0].code, "REQUIRED_FIELD_MISSING");
        assert_eq!(errs[0].fields, vec!["StageName", "CloseDate"]);
        let errs = db.create("Account", &body(json!({"Name": "a".repeat(256), "Nope__c": 1})), &ctx()).unwrap_err();
        let codes: Vec<_> = errs.iter().map(|e| e.code).collect();
        assert_eq!(codes, vec!["STRING_TOO_LONG", "INVALID_FIELD"]);
        assert_eq!(db.count("Account"), 0);
    }

    #[test]
    fn upsert_creates_updates_and_detects_duplicates() {
        let mut db = Db::new();
        let c = ctx();
        let r = db.upsert("Account", "pendo_account_id__c", "acme", &body(json!({"Name": "Acme"})), &c).unwrap();
        let UpsertOutcome::Created(id) = r else { panic!("expected create") };
        let r = db.upsert("Account", "Pendo_Account_Id__c", "ACME", &body(json!({"Name": "Acme 2"})), &c).unwrap();
        assert!(matches!(r, UpsertOutcome::Updated(ref u) if *u == id));
        let err = db.create("Account", &body(json!({"Name": "B", "Pendo_Account_Id__c": "acme"})), &c).unwrap_err();
        assert_eq!(err[0].code, "DUPLICATE_VALUE");
    }

    #[test]
    fn rollback_restores_records_and_indexes() {
        let mut db = Db::new();
        let c = ctx();
        let id = db.create("Account", &body(json!({"Name": "A", "Pendo_Account_Id__c": "a"})), &c).unwrap();
        db.begin();
        db.update("Account", &id, &body(json!({"Pendo_Account_Id__c": "b"})), &c).unwrap();
        db.create("Account", &body(json!({"Name": "B", "Pendo_Account_Id__c": "a"})), &c).unwrap();
        db.rollback();
        assert_eq!(db.count("Account"), 1);
        assert_eq!(db.find_by_external_id("Account", "Pendo_Account_Id__c", "a").unwrap(), vec![id.clone()]);
        assert!(db.find_by_external_id("Account", "Pendo_Account_Id__c", "b").unwrap().is_empty());
    }

    #[test]
    fn references_are_checked() {
        let mut db = Db::new();
        let c = ctx();
        let e = db.create("Contact", &body(json!({"LastName": "X", "AccountId": "bogus"})), &c).unwrap_err();
        assert_eq!(e[0].code, "MALFORMED_ID");
        let e = db.create("Contact", &body(json!({"LastName": "X", "AccountId": "001000000000001"})), &c).unwrap_err();
        assert_eq!(e[0].code, "INVALID_CROSS_REFERENCE_KEY");
        let e =
            db.create("Contact", &body(json!({"LastName": "X", "AccountId": INTEGRATION_USER_ID})), &c).unwrap_err();
        assert_eq!(e[0].code, "MALFORMED_ID");
        let a = db.create("Account", &body(json!({"Name": "A", "Pendo_Account_Id__c": "p1"})), &c).unwrap();
        let id = db
            .create("Contact", &body(json!({"LastName": "X", "Account": {"Pendo_Account_Id__c": "p1"}})), &c)
            .unwrap();
        assert_eq!(db.get("Contact", &id).unwrap().get("AccountId"), json!(a));
    }

    #[test]
    fn deleted_records_refuse_writes() {
        let mut db = Db::new();
        let c = ctx();
        let id = db.create("Account", &body(json!({"Name": "A"})), &c).unwrap();
        db.delete("Account", &id[..15], &c).unwrap();
        assert_eq!(db.delete("Account", &id, &c).unwrap_err().code, "ENTITY_IS_DELETED");
        assert_eq!(
            db.update("Account", &id, &body(json!({"Name": "B"})), &c).unwrap_err()[0].code,
            "ENTITY_IS_DELETED"
        );
    }

    #[test]
    fn datetimes_normalise() {
        let t = parse_datetime("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(format_datetime(t), "2024-05-01T10:00:00.000+0000");
        assert!(parse_datetime("2024-05-01T12:00:00.123+0200").is_some());
        assert!(parse_datetime("yesterday").is_none());
    }
}
