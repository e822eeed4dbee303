//! Entity reads: catalogue lists (features, pages, guides with polls, track types, reports),
//! single visitors and accounts, visitor history and the metadata schema.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Client;
use crate::error::Result;
use crate::transport::{Body, segment};

/// A feature, page, track type or report. Fields the client does not model stay in `extra`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItem {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub app_id: Option<i64>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub last_updated_at: Option<i64>,
    #[serde(default)]
    pub is_core_event: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuideStep {
    pub id: String,
    #[serde(default)]
    pub rank: Option<i64>,
    #[serde(default)]
    pub poll_ids: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    pub id: String,
    #[serde(default)]
    pub question: Option<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Poll {
    /// `attributes.type`, e.g. `NPSRating`, `NPSReason`, `PositiveNegative`.
    pub fn poll_type(&self) -> Option<&str> {
        self.attributes.get("type").and_then(Value::as_str)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Guide {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub app_id: Option<i64>,
    #[serde(default)]
    pub last_updated_at: Option<i64>,
    #[serde(default)]
    pub steps: Vec<GuideStep>,
    #[serde(default)]
    pub polls: Vec<Poll>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Guide {
    /// The step with the highest rank: reaching it is the best completion signal there is.
    pub fn last_step_id(&self) -> Option<&str> {
        self.steps.iter().max_by_key(|s| s.rank.unwrap_or(0)).map(|s| s.id.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Visitor {
    pub id: String,
    #[serde(default)]
    pub account_ids: Vec<String>,
    /// `group → field → value`.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Reads `metadata.<group>.<field>`.
pub fn metadata_value<'a>(metadata: &'a Map<String, Value>, group: &str, field: &str) -> Option<&'a Value> {
    metadata.get(group)?.get(field).filter(|v| !v.is_null())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub ts: Option<i64>,
    #[serde(default)]
    pub last_ts: Option<i64>,
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub page_id: Option<String>,
    #[serde(default)]
    pub feature_id: Option<String>,
    #[serde(default)]
    pub guide_id: Option<String>,
    #[serde(default)]
    pub guide_step_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One field of the metadata schema (the wire mixes PascalCase and camelCase).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FieldDescriptor {
    #[serde(rename = "Type", default)]
    pub field_type: String,
    #[serde(rename = "DisplayName", default)]
    pub display_name: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `group → field → descriptor`.
pub type MetadataSchema = BTreeMap<String, BTreeMap<String, FieldDescriptor>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Visitor,
    Account,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Visitor => "visitor",
            Kind::Account => "account",
        }
    }
}

impl Client {
    async fn list<T: serde::de::DeserializeOwned>(&self, path: &str, ids: &[&str]) -> Result<Vec<T>> {
        let q: Vec<(&str, String)> =
            if ids.is_empty() { vec![("expand", "*".into())] } else { vec![("id", ids.join(","))] };
        self.transport.json(Method::GET, path, &q, Body::None).await
    }

    /// Every feature in every app (`?expand=*`), or only `ids`.
    ///
    /// # Errors
    /// Request errors; an unknown id in `ids` fails the whole call (404).
    pub async fn features(&self, ids: &[&str]) -> Result<Vec<CatalogItem>> {
        self.list("/feature", ids).await
    }

    /// # Errors
    /// As [`Client::features`].
    pub async fn pages(&self, ids: &[&str]) -> Result<Vec<CatalogItem>> {
        self.list("/page", ids).await
    }

    /// # Errors
    /// As [`Client::features`].
    pub async fn track_types(&self, ids: &[&str]) -> Result<Vec<CatalogItem>> {
        self.list("/tracktype", ids).await
    }

    /// # Errors
    /// As [`Client::features`].
    pub async fn reports(&self) -> Result<Vec<CatalogItem>> {
        self.transport.json(Method::GET, "/report", &[], Body::None).await
    }

    /// Guides with their steps and polls.
    ///
    /// # Errors
    /// As [`Client::features`].
    pub async fn guides(&self, ids: &[&str]) -> Result<Vec<Guide>> {
        self.list("/guide", ids).await
    }

    /// # Errors
    /// [`crate::Error::NotFound`] for an unknown id.
    pub async fn visitor(&self, id: &str) -> Result<Visitor> {
        self.transport.json(Method::GET, &format!("/visitor/{}", segment(id)), &[], Body::None).await
    }

    /// # Errors
    /// [`crate::Error::NotFound`] for an unknown id.
    pub async fn account(&self, id: &str) -> Result<Account> {
        self.transport.json(Method::GET, &format!("/account/{}", segment(id)), &[], Body::None).await
    }

    /// One day of a visitor's activity from `start_ms` (a midnight).
    ///
    /// # Errors
    /// Request errors.
    pub async fn visitor_history(&self, id: &str, start_ms: i64) -> Result<Vec<HistoryItem>> {
        let path = format!("/visitor/{}/history", segment(id));
        self.transport.json(Method::GET, &path, &[("starttime", start_ms.to_string())], Body::None).await
    }

    /// # Errors
    /// Request errors; 403 is how Pendo says the key is invalid.
    pub async fn metadata_schema(&self, kind: Kind) -> Result<MetadataSchema> {
        self.transport.json(Method::GET, &format!("/metadata/schema/{}", kind.as_str()), &[], Body::None).await
    }
}
