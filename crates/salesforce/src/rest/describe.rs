//! Metadata and replication resources: Versions (`GET /services/data/`), global and per-object
//! describe (cached for the client's lifetime), and getUpdated / getDeleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::check_object;
use crate::Client;
use crate::error::{RequestContext, Result};
use crate::ids::SalesforceId;
use crate::transport::{ApiRequest, Target};

/// Salesforce's datetime spelling in JSON: `2013-05-08T21:20:00.000+0000`.
pub mod sf_datetime {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `2013-05-08T21:20:00.000+0000`, and RFC 3339 as a fallback.
    ///
    /// # Errors
    /// A message naming the unparseable value.
    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
            .or_else(|_| DateTime::parse_from_rfc3339(s))
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| format!("{s:?} is not a Salesforce datetime: {e}"))
    }

    /// Formats as Salesforce does.
    #[must_use]
    pub fn format(d: &DateTime<Utc>) -> String {
        d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).map_err(serde::de::Error::custom)
    }

    pub(crate) fn serialize<S: Serializer>(d: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }
}

/// One entry of `GET /services/data/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Release name, e.g. `Winter '11`.
    pub label: String,
    /// e.g. `/services/data/v20.0`.
    pub url: String,
    /// e.g. `20.0`.
    pub version: String,
}

/// One object in the global describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SObjectSummary {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Three-character ID prefix; `null` for some virtual objects.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Custom object.
    #[serde(default)]
    pub custom: bool,
    /// Records can be created.
    #[serde(default)]
    pub createable: bool,
    /// Records can be updated.
    #[serde(default)]
    pub updateable: bool,
    /// Records can be deleted.
    #[serde(default)]
    pub deletable: bool,
    /// Can be queried.
    #[serde(default)]
    pub queryable: bool,
    /// Everything else.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `GET /sobjects/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalDescribe {
    /// Normally `UTF-8`.
    #[serde(default)]
    pub encoding: String,
    /// Normally 200.
    #[serde(default)]
    pub max_batch_size: u32,
    /// Every object visible to the user.
    pub sobjects: Vec<SObjectSummary>,
}

impl GlobalDescribe {
    /// An object by API name, case-insensitively.
    #[must_use]
    pub fn sobject(&self, name: &str) -> Option<&SObjectSummary> {
        self.sobjects.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }
}

/// One field in an object describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Field type (`string`, `reference`, `datetime`, `double`…).
    #[serde(rename = "type", default)]
    pub field_type: String,
    /// Maximum length for text fields.
    #[serde(default)]
    pub length: u32,
    /// Can be null.
    #[serde(default)]
    pub nillable: bool,
    /// Can be set on create.
    #[serde(default)]
    pub createable: bool,
    /// Can be set on update.
    #[serde(default)]
    pub updateable: bool,
    /// Unique.
    #[serde(default)]
    pub unique: bool,
    /// External ID (usable for upsert and lookups by value).
    #[serde(default)]
    pub external_id: bool,
    /// Gets a default value on create (so "required" fields may be omitted).
    #[serde(default)]
    pub defaulted_on_create: bool,
    /// Custom field.
    #[serde(default)]
    pub custom: bool,
    /// Lookup targets.
    #[serde(default)]
    pub reference_to: Vec<String>,
    /// Relationship name for lookups.
    #[serde(default)]
    pub relationship_name: Option<String>,
    /// Can identify a record in an upsert or a lookup by value (Id, external IDs, some
    /// standard fields such as `Name` on some objects).
    #[serde(default)]
    pub id_lookup: bool,
    /// The values of a picklist (empty for other types).
    #[serde(default)]
    pub picklist_values: Vec<PicklistValue>,
    /// A restricted picklist refuses values outside its list.
    #[serde(default)]
    pub restricted_picklist: bool,
    /// Everything else (precision, scale…).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One entry of a field's `picklistValues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PicklistValue {
    /// The API value, as written.
    pub value: String,
    /// Label shown to people.
    #[serde(default)]
    pub label: Option<String>,
    /// Inactive values stay on old records but cannot be set.
    #[serde(default)]
    pub active: bool,
    /// The value a create gets when it sets none.
    #[serde(default)]
    pub default_value: bool,
}

/// `GET /sobjects/{object}/describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SObjectDescribe {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Three-character ID prefix.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Custom object.
    #[serde(default)]
    pub custom: bool,
    /// Records can be created.
    #[serde(default)]
    pub createable: bool,
    /// Records can be updated.
    #[serde(default)]
    pub updateable: bool,
    /// Can be queried.
    #[serde(default)]
    pub queryable: bool,
    /// Fields.
    pub fields: Vec<FieldDescribe>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SObjectDescribe {
    /// A field by API name, case-insensitively.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Fields marked as external IDs.
    pub fn external_id_fields(&self) -> impl Iterator<Item = &FieldDescribe> {
        self.fields.iter().filter(|f| f.external_id)
    }
}

/// `GET /sobjects/{object}/updated/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedRecords {
    /// IDs changed in the window.
    pub ids: Vec<SalesforceId>,
    /// Use as the next window's start.
    #[serde(with = "sf_datetime")]
    pub latest_date_covered: DateTime<Utc>,
}

/// One entry of getDeleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecord {
    /// Deleted record.
    pub id: SalesforceId,
    /// When.
    #[serde(with = "sf_datetime")]
    pub deleted_date: DateTime<Utc>,
}

/// `GET /sobjects/{object}/deleted/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecords {
    /// Records deleted in the window.
    pub deleted_records: Vec<DeletedRecord>,
    /// Oldest date the delete log still covers; a window starting earlier may miss deletes.
    #[serde(with = "sf_datetime")]
    pub earliest_date_available: DateTime<Utc>,
    /// Use as the next window's start.
    #[serde(with = "sf_datetime")]
    pub latest_date_covered: DateTime<Utc>,
}

/// Describe results, kept because object schemas change rarely and describes cost API calls.
#[derive(Debug, Default)]
pub(crate) struct DescribeCache {
    global: RwLock<Option<Arc<GlobalDescribe>>>,
    /// Each with when it was fetched, so a caller can tell one fetched since a moment of its
    /// own (a run's start) from an older one.
    objects: RwLock<HashMap<String, (Arc<SObjectDescribe>, Instant)>>,
}

impl DescribeCache {
    pub(crate) fn insert(&self, object: &str, describe: Arc<SObjectDescribe>) {
        self.objects.write().insert(object.to_ascii_lowercase(), (describe, Instant::now()));
    }
}

/// `start`/`end` as getUpdated/getDeleted want them (seconds, explicit offset).
fn window_param(d: &DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

impl Client {
    /// `GET /services/data/`: the API versions the instance serves. Sent without the bearer
    /// token; it needs none and does not count against limits.
    ///
    /// # Errors
    /// Transport errors, or an auth error when no instance URL is known yet.
    pub async fn versions(&self) -> Result<Vec<VersionInfo>> {
        let path = "/services/data/".to_owned();
        let ctx = RequestContext::new(Method::GET, &path);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx).unauthenticated();
        self.transport().send_json(request).await
    }

    /// `GET /sobjects/`: every object, cached after the first call.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn describe_global(&self) -> Result<Arc<GlobalDescribe>> {
        if let Some(cached) = self.describe_cache().global.read().clone() {
            return Ok(cached);
        }
        let path = self.data_path("sobjects");
        let ctx = RequestContext::new(Method::GET, &path);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx);
        let global: Arc<GlobalDescribe> = Arc::new(self.transport().send_json(request).await?);
        *self.describe_cache().global.write() = Some(Arc::clone(&global));
        Ok(global)
    }

    /// `GET /sobjects/{object}/describe`: fields and properties, cached per object.
    ///
    /// # Errors
    /// [`crate::Error::Api`] `NOT_FOUND` for an unknown object; any request failure.
    pub async fn describe(&self, object: &str) -> Result<Arc<SObjectDescribe>> {
        check_object(object)?;
        let key = object.to_ascii_lowercase();
        if let Some((cached, _)) = self.describe_cache().objects.read().get(&key).cloned() {
            return Ok(cached);
        }
        self.describe_fresh(object).await
    }

    /// `GET /sobjects/{object}/describe` sent even when a describe is cached (the cache is
    /// refreshed): for checks that must see a schema change made since the client started.
    ///
    /// # Errors
    /// [`crate::Error::Api`] `NOT_FOUND` for an unknown object; any request failure.
    pub async fn describe_fresh(&self, object: &str) -> Result<Arc<SObjectDescribe>> {
        check_object(object)?;
        let path = self.data_path(&format!("sobjects/{object}/describe"));
        let ctx = RequestContext::new(Method::GET, &path).object(object);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx);
        let describe: Arc<SObjectDescribe> = Arc::new(self.transport().send_json(request).await?);
        self.describe_cache().insert(object, Arc::clone(&describe));
        Ok(describe)
    }

    /// The describe of `object` if one is cached, without a request: for callers that may only
    /// use what an earlier step (such as a preflight check) already paid for.
    #[must_use]
    pub fn describe_cached(&self, object: &str) -> Option<Arc<SObjectDescribe>> {
        self.describe_cache().objects.read().get(&object.to_ascii_lowercase()).map(|(d, _)| Arc::clone(d))
    }

    /// The describe of `object` if one was fetched at or after `since`, without a request: for
    /// a check that must see the schema as it is now but may use a describe this same run
    /// already fetched (with the first page of a read, say).
    #[must_use]
    pub fn describe_fetched_since(&self, object: &str, since: Instant) -> Option<Arc<SObjectDescribe>> {
        let objects = self.describe_cache().objects.read();
        let (describe, fetched) = objects.get(&object.to_ascii_lowercase())?;
        (*fetched >= since).then(|| Arc::clone(describe))
    }

    /// Forgets cached describes (after a schema change).
    pub fn clear_describe_cache(&self) {
        *self.describe_cache().global.write() = None;
        self.describe_cache().objects.write().clear();
    }

    /// `GET /sobjects/{object}/updated/?start=…&end=…`: IDs changed in the window (at most 30
    /// days back; seconds are ignored by Salesforce).
    ///
    /// # Errors
    /// Any request failure, e.g. `EXCEEDED_ID_LIMIT`.
    pub async fn get_updated(&self, object: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<UpdatedRecords> {
        check_object(object)?;
        let path = self.data_path(&format!("sobjects/{object}/updated/"));
        let ctx = RequestContext::new(Method::GET, &path).object(object);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx)
            .query("start", window_param(&start))
            .query("end", window_param(&end));
        self.transport().send_json(request).await
    }

    /// `GET /sobjects/{object}/deleted/?start=…&end=…`: records deleted in the window (at most
    /// 15 days back).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn get_deleted(&self, object: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<DeletedRecords> {
        check_object(object)?;
        let path = self.data_path(&format!("sobjects/{object}/deleted/"));
        let ctx = RequestContext::new(Method::GET, &path).object(object);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx)
            .query("start", window_param(&start))
            .query("end", window_param(&end));
        self.transport().send_json(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_documented_replication_bodies() {
        let u: UpdatedRecords = serde_json::from_str(
            r#"{"ids":["a00D0000008pQR5IAM"],"latestDateCovered":"2013-05-08T21:20:00.000+0000"}"#,
        )
        .unwrap();
        assert_eq!(u.latest_date_covered.to_rfc3339(), "2013-05-08T21:20:00+00:00");
        let d: DeletedRecords = serde_json::from_str(
            r#"{"deletedRecords":[{"id":"a00D0000008pQRAIA2","deletedDate":"2013-05-07T22:07:19.000+0000"}],"earliestDateAvailable":"2013-05-03T15:57:00.000+0000","latestDateCovered":"2013-05-08T21:20:00.000+0000"}"#,
        )
        .unwrap();
        assert_eq!(d.deleted_records[0].id.as_str(), "a00D0000008pQRAIA2");
        assert!(sf_datetime::parse("2024-05-01T10:00:00Z").is_ok());
        assert!(sf_datetime::parse("2024-05-01T10:00:00.000+00:00").is_ok());
        assert!(sf_datetime::parse("yesterday").is_err());
        assert_eq!(sf_datetime::format(&u.latest_date_covered), "2013-05-08T21:20:00.000+0000");
    }

    #[test]
    fn decodes_describes() {
        let g: GlobalDescribe = serde_json::from_str(
            r#"{"encoding":"UTF-8","maxBatchSize":200,"sobjects":[{"name":"Account","label":"Account","keyPrefix":"001","custom":false,"createable":true,"urls":{"sobject":"/x"}}]}"#,
        )
        .unwrap();
        assert_eq!(g.sobject("account").unwrap().key_prefix.as_deref(), Some("001"));
        assert!(g.sobjects[0].extra.contains_key("urls"));
        let d: SObjectDescribe = serde_json::from_str(
            r#"{"name":"Account","fields":[{"name":"Pendo_Id__c","type":"string","length":80,"externalId":true,"picklistValues":[]}]}"#,
        )
        .unwrap();
        assert_eq!(d.external_id_fields().count(), 1);
        assert_eq!(d.field("pendo_id__c").unwrap().length, 80);
        let d: SObjectDescribe = serde_json::from_str(
            r#"{"name":"Task","fields":[{"name":"Priority","type":"picklist","idLookup":false,"restrictedPicklist":true,"picklistValues":[{"active":true,"defaultValue":false,"label":"High","validFor":null,"value":"High"},{"active":false,"defaultValue":true,"label":null,"validFor":null,"value":"Normal"}]}]}"#,
        )
        .unwrap();
        let priority = d.field("priority").unwrap();
        assert!(priority.restricted_picklist);
        let values: Vec<(&str, bool)> = priority.picklist_values.iter().map(|v| (v.value.as_str(), v.active)).collect();
        assert_eq!(values, [("High", true), ("Normal", false)]);
    }
}
