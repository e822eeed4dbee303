//! The config file's wire form: what serde reads, before any validation.
//!
//! Almost every key is optional here so that a missing key becomes one entry in the
//! collected error list instead of stopping the parse; `validate.rs` turns this into
//! the typed [`super::Config`]. Tagged choices (`flow`, `template`, `rule`) are plain
//! strings for the same reason, and because serde's internally tagged enums buffer
//! their content and so lose the YAML line numbers.

use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub connections: Option<Connections>,
    #[serde(default, deserialize_with = "store")]
    pub store: Option<Store>,
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Webhooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<super::console::Wire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<super::notify::Wire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    pub workflows: Option<IndexMap<String, Workflow>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Webhooks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retention {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Connections {
    pub salesforce: Option<Salesforce>,
    pub pendo: Option<Pendo>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Salesforce {
    pub login_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub auth: Option<Auth>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Auth {
    pub flow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pendo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub integration_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_queries: Option<bool>,
}

/// `store: URL` is short for `store: {url: URL}`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Store {
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// Reads `store` as a plain URL string or as the map; the map goes through the derived
/// impl over the same map access, so its keys keep their line numbers.
pub(crate) fn store<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Store>, D::Error> {
    struct StoreVisitor;

    impl<'de> Visitor<'de> for StoreVisitor {
        type Value = Option<Store>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a database URL or a map with `url` (and `password`)")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_str<E: de::Error>(self, url: &str) -> Result<Self::Value, E> {
            Ok(Some(Store { url: Some(url.to_owned()), password: None }))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Store::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(StoreVisitor)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Budget {
    pub daily_share: Option<f64>,
    pub min_remaining: Option<u64>,
}

/// `verify:` at the top level or in a workflow.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Verify {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// One workflow: the keys every template shares, then each template's own keys.
/// A key that belongs to another template is reported by the validator.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workflow {
    pub template: Option<String>,
    pub enabled: Option<bool>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub window_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_includes_current: Option<bool>,
    pub max_latency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    // engagement-scores
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching: Option<Vec<MatchRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck_matches_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_features: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollup_fields: Option<Fields>,
    // new-users-to-contacts and account-attributes-to-pendo
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    // new-users-to-contacts
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_fields: Option<super::new_users::WireContactFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_plus_addressing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_source: Option<String>,
    // account-attributes-to-pendo
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pendo_account: Option<super::attributes::WirePendoAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pendo_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<super::attributes::WireAttribute>>,
    // nps-realtime (shapes in nps.rs)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_window_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detractors: Option<super::nps::DetractorsWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<super::nps::ContactWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_score: Option<super::nps::HealthScoreWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<super::nps::FollowUpWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nps_guide_id: Option<String>,
    // engagement-drop-alert
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<super::alert::AlertWire>,
    // expansion-opportunity
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expansion: Option<super::expansion::ExpansionWire>,
    // trial-usage
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<super::trial::TrialWire>,
    // contact-engagement
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<super::people::ContactsWire>,
}

impl Workflow {
    /// The template-specific keys set on this workflow, in the file format's order.
    pub(crate) fn template_keys_set(&self) -> Vec<&'static str> {
        [
            ("matching", self.matching.is_some()),
            ("recheck_matches_after", self.recheck_matches_after.is_some()),
            ("core_features", self.core_features.is_some()),
            ("score", self.score.is_some()),
            ("fields", self.fields.is_some()),
            ("rollup_fields", self.rollup_fields.is_some()),
            ("overlap", self.overlap.is_some()),
            ("contact_fields", self.contact_fields.is_some()),
            ("strip_plus_addressing", self.strip_plus_addressing.is_some()),
            ("unmatched_account", self.unmatched_account.is_some()),
            ("lead_source", self.lead_source.is_some()),
            ("pendo_account", self.pendo_account.is_some()),
            ("pendo_group", self.pendo_group.is_some()),
            ("integration_user", self.integration_user.is_some()),
            ("attributes", self.attributes.is_some()),
            ("batch_window_ms", self.batch_window_ms.is_some()),
            ("detractors", self.detractors.is_some()),
            ("contact", self.contact.is_some()),
            ("health_score", self.health_score.is_some()),
            ("follow_up", self.follow_up.is_some()),
            ("nps_guide_id", self.nps_guide_id.is_some()),
            ("alert", self.alert.is_some()),
            ("expansion", self.expansion.is_some()),
            ("trial", self.trial.is_some()),
            ("contacts", self.contacts.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchRule {
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_free_mail: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_field: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Score {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_visitors: Option<Term>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_days: Option<Term>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<Term>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Term>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_adoption: Option<Term>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide_completion: Option<Term>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Term {
    pub weight: Option<f64>,
    pub target: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_visitors: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_days: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_adoption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide_completion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A secret reference as written. A plain string is read (so the parse can go on and
/// report everything else) but kept only as a marker: the value itself is dropped at
/// once, so it can never reach an error message or a log.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Secret {
    Env(String),
    File(PathBuf),
    #[serde(skip)]
    Literal,
    #[serde(skip)]
    Invalid(String),
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a secret reference: {env: NAME} or {file: PATH}")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Secret, E> {
        Ok(Secret::Literal)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Ok(Secret::Literal)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Ok(Secret::Literal)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Ok(Secret::Literal)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Ok(Secret::Literal)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let mut env: Option<String> = None;
        let mut file: Option<PathBuf> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "env" => env = Some(map.next_value()?),
                "file" => file = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["env", "file"])),
            }
        }
        Ok(match (env, file) {
            (Some(name), None) => Secret::Env(name),
            (None, Some(path)) => Secret::File(path),
            (Some(_), Some(_)) => Secret::Invalid("give exactly one of `env` or `file`, not both".to_owned()),
            (None, None) => Secret::Invalid("give one of {env: NAME} or {file: PATH}".to_owned()),
        })
    }
}
