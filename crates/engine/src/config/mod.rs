//! The engine's configuration: one YAML file read into typed, validated values.
//!
//! Loading never stops at the first problem: the deserializer reads a wire form in
//! which nearly every key is optional (`wire.rs`), then `validate.rs` checks every
//! key and every cross-key rule and collects all problems, each located by key path
//! through an index of the YAML text (`locate.rs`). An unknown key or a value of the
//! wrong type makes the deserializer stop, so the loader reports it, blanks that entry
//! out of the text (lines kept) and reads again; only a YAML syntax error ends the
//! reading early. Secrets are references
//! (`{env: NAME}` / `{file: PATH}`) and are not read at load time (`secret.rs`).

pub(crate) mod alert;
pub(crate) mod attributes;
mod console;
mod duration;
mod error;
pub(crate) mod expansion;
mod locate;
pub(crate) mod new_users;
mod notify;
pub(crate) mod nps;
pub(crate) mod ownership;
pub(crate) mod people;
mod secret;
pub(crate) mod template;
pub(crate) mod trial;
pub(crate) mod validate;
pub(crate) mod wire;

#[cfg(test)]
mod tests;
/// What the config modules' tests share: a load's errors, and a line of the starter.
#[cfg(test)]
pub(crate) mod test_support {
    /// The errors loading `text` gives; panics if it loads.
    pub(crate) fn errors(text: &str) -> Vec<super::ConfigError> {
        match super::load_str(text, "t.yaml") {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.errors,
        }
    }

    /// The 1-based line of the starter that holds `needle`.
    pub(crate) fn line_of(needle: &str) -> usize {
        super::STARTER
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} is not in the starter"))
            + 1
    }
}
#[cfg(test)]
mod tests_two_way;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use url::Url;

pub use crate::extract::WindowLength;
pub use alert::DropAlertConfig;
pub use attributes::{Attribute, AttributeType, AttributesConfig, DEFAULT_ATTRIBUTES_OVERLAP, PendoAccountSource};
pub use console::{Console, ConsoleRole, ConsoleUser, DEFAULT_SESSION_HOURS};
pub use error::{ConfigError, ConfigErrors};
pub use expansion::{ExpansionConfig, Milestone, MilestoneKind, OpportunityTemplate};
pub use new_users::{ContactFields, DEFAULT_NEW_USERS_OVERLAP, NewUsersConfig, UnmatchedAccount};
pub use notify::{ALERT_STATES, AlertEmail, AlertFormat, AlertWebhook, Alerts, StartTls};
pub use nps::{ContactMatch, FollowUpObject, HealthScoreConfig, NpsConfig, OwnerSource};
pub use people::{ContactEngagementConfig, PersonAlert, PersonFields, PersonMatch};
pub use secret::{Secret, SecretString};
pub use trial::{StageRule, TrialConfig, TrialFields, TrialMetric};

/// The annotated example config, also the starter written by `usagesync init`.
pub const STARTER: &str = include_str!("../../../../examples/usagesync.yaml");

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub connections: Connections,
    pub store: StoreConfig,
    pub budget: Budget,
    /// How runs read back what they wrote; a workflow may set its own.
    pub verify: Verify,
    pub webhooks: Webhooks,
    /// The web console; `None` serves none.
    pub console: Option<Console>,
    /// Where the daemon sends alerts on runs that did not succeed; `None` sends none.
    pub alerts: Option<Alerts>,
    /// How long run history is kept before the daemon (or `usagesync prune`) deletes it.
    pub retention: Retention,
    /// In file order.
    pub workflows: IndexMap<String, Workflow>,
    /// Where the config came from, kept so checks made after loading (preflight against the
    /// org) can name the line of the key they are about.
    pub(crate) source: Arc<Source>,
}

/// The loaded file's name and key index.
#[derive(Debug, Default)]
pub(crate) struct Source {
    origin: String,
    locations: locate::Locations,
}

#[derive(Debug, Clone)]
pub struct Connections {
    pub salesforce: SalesforceConnection,
    pub pendo: PendoConnection,
}

/// Default Salesforce REST API version.
pub const DEFAULT_API_VERSION: &str = "62.0";

#[derive(Debug, Clone)]
pub struct SalesforceConnection {
    /// Token endpoint host (a real login host or the emulator's URL).
    pub login_url: Url,
    /// `NN.0`, default [`DEFAULT_API_VERSION`].
    pub api_version: String,
    pub auth: SalesforceAuth,
}

/// The OAuth flow and its credentials (`flow:` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesforceAuth {
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    JwtBearer {
        client_id: String,
        username: String,
        /// PEM private key.
        private_key: Secret,
    },
    RefreshToken {
        client_id: String,
        refresh_token: Secret,
        client_secret: Option<Secret>,
    },
    Password {
        client_id: String,
        username: String,
        password: Secret,
        client_secret: Secret,
    },
}

impl SalesforceAuth {
    /// The `flow:` value.
    pub fn flow(&self) -> &'static str {
        match self {
            SalesforceAuth::ClientCredentials { .. } => "client_credentials",
            SalesforceAuth::JwtBearer { .. } => "jwt_bearer",
            SalesforceAuth::RefreshToken { .. } => "refresh_token",
            SalesforceAuth::Password { .. } => "password",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PendoConnection {
    /// `None`: the client derives the host from the integration key's region.
    pub base_url: Option<Url>,
    pub integration_key: Secret,
    /// Whether one extraction's independent aggregations go to Pendo side by side (see
    /// [`crate::extract::Extractor::with_parallel_queries`]).
    pub parallel_queries: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// `sqlite://…` or `postgres://user@host/db`, never with a password in it.
    pub url: String,
    /// The Postgres password, kept out of the URL so the URL can be shown.
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of the org's `DailyApiRequests` usagesync may spend per UTC day, in (0, 1].
    pub daily_share: f64,
    /// Never leave fewer than this many org calls remaining.
    pub min_remaining: u64,
}

/// How much of what a run wrote it reads back afterwards, to report values something else
/// changed since (a trigger, a workflow rule, a person, another integration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// No read-back.
    Off,
    /// Up to this many records, chosen deterministically: one SOQL query per 200.
    Sample(usize),
    /// Every record written: one SOQL query per 200 of them.
    All,
}

/// Default sample: what one read-back query holds.
pub const DEFAULT_VERIFY_SAMPLE: usize = 200;

impl Default for Verify {
    fn default() -> Self {
        Verify::Sample(DEFAULT_VERIFY_SAMPLE)
    }
}

impl Config {
    /// The `verify:` setting that applies to `workflow`: its own, else the top-level one.
    pub fn verify_for(&self, workflow: &str) -> Verify {
        self.workflows.get(workflow).and_then(|w| w.verify).unwrap_or(self.verify)
    }
}

/// Default days of run history kept (`retention.history_days`).
pub const DEFAULT_HISTORY_DAYS: u32 = 30;

/// How long history is kept (`retention:`): runs with their per-record outcomes, closed
/// failures, processed webhook events and the budget ledger of past days. State that later runs
/// decide with (fingerprints, the create ledger, cursors, kept states, the id map, open
/// failures) is never pruned; see [`crate::store::RetentionStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// 1 to 3650.
    pub history_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { history_days: DEFAULT_HISTORY_DAYS }
    }
}

impl Retention {
    /// History older than this, at `now`, is pruned.
    pub fn cutoff(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.history_days))
    }
}

/// The webhook receiver (`usagesync run`). Optional; without a secret, deliveries are taken
/// unsigned (still de-duplicated on `uniqueId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhooks {
    /// HMAC-SHA256 key for the signature header.
    pub secret: Option<Secret>,
    pub signature_header: String,
    /// Bigger bodies are refused with 413 before they are read whole.
    pub max_body_bytes: u64,
    /// Inbox depth (events stored, not yet processed, all workers) at which the receiver stops
    /// storing and answers 503 with `Retry-After`: under overload the sender keeps the events,
    /// and the store does not grow without bound.
    pub max_pending: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            secret: None,
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// Pendo documents no signature header; this is ours, and the emulator's default.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Pendo-Signature";
/// Default for [`Webhooks::max_pending`]: about three minutes of 500 answers/s, the
/// most one worker on two cores was measured to write.
pub const DEFAULT_MAX_PENDING: u64 = 100_000;
/// Default for [`Webhooks::max_body_bytes`]: 1 MiB, far above any Pendo event.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;

/// Default for [`Budget::min_remaining`].
pub const DEFAULT_MIN_REMAINING: u64 = 0;
/// Default for [`Workflow::max_latency`].
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_secs(3_600);
/// Default for [`EngagementConfig::recheck_matches_after`].
pub const DEFAULT_RECHECK_MATCHES_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// Default for [`MatchRule::EmailDomain`]'s `website_field`.
pub const DEFAULT_WEBSITE_FIELD: &str = "Website";
/// Default for [`MatchRule::EmailDomain`]'s `min_share`.
pub const DEFAULT_MIN_SHARE: f64 = 0.5;
/// Allowed range of a window in days (`window_days: N`, `window: Nd`).
pub const WINDOW_DAYS: std::ops::RangeInclusive<u32> = 1..=180;
/// Allowed range of an hourly [`Workflow::window`]: past a month, days are the better unit.
pub const WINDOW_HOURS: std::ops::RangeInclusive<u32> = 1..=720;
/// The templates that take a window in hours: their figures (events, minutes, visitors,
/// features, guides, first visits) mean the same over hours as over days.
pub const HOURLY_TEMPLATES: &[TemplateKind] =
    &[TemplateKind::EngagementScores, TemplateKind::EngagementDropAlert, TemplateKind::NewUsersToContacts];

/// One named workflow: the settings every template shares, and the template with its
/// own settings.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The key under `workflows:`, `[a-z0-9-]+`.
    pub name: String,
    pub enabled: bool,
    pub schedule: croner::Cron,
    pub timezone: chrono_tz::Tz,
    /// How far back the figures look: `window_days: N` or `window: 30d | 24h`.
    pub window: WindowLength,
    /// The window ends with the current (partial) day or hour instead of the last whole one.
    pub window_includes_current: bool,
    /// How long a run may take to land its writes; the planner picks Bulk only when
    /// this leaves room for it.
    pub max_latency: Duration,
    /// This workflow's own `verify:`; `None` takes the top-level one.
    pub verify: Option<Verify>,
    pub template: Template,
}

impl Workflow {
    /// Whole days that cover [`Workflow::window`] (hours rounded up), for what counts in days.
    pub fn window_days(&self) -> u32 {
        self.window.covering_days()
    }

    /// The reporting window of a run at `end`.
    pub fn window(&self, end: chrono::DateTime<chrono::Utc>) -> crate::extract::Window {
        crate::extract::Window { end, length: self.window, include_current: self.window_includes_current }
    }
}

template::templates! {
    EngagementScores(EngagementConfig) = "engagement-scores",
    NewUsersToContacts(NewUsersConfig) = "new-users-to-contacts",
    AccountAttributesToPendo(AttributesConfig) = "account-attributes-to-pendo",
    NpsRealtime(NpsConfig) = "nps-realtime",
    EngagementDropAlert(DropAlertConfig) = "engagement-drop-alert",
    ExpansionOpportunity(ExpansionConfig) = "expansion-opportunity",
    TrialUsage(TrialConfig) = "trial-usage",
    ContactEngagement(ContactEngagementConfig) = "contact-engagement",
}

/// engagement-scores: per Pendo account usage figures and a score onto the matching
/// Salesforce Account.
#[derive(Debug, Clone)]
pub struct EngagementConfig {
    /// Tried in order; at least one.
    pub matching: Vec<MatchRule>,
    pub recheck_matches_after: Duration,
    /// Pendo feature ids counted for adoption; empty: the features marked core in Pendo.
    pub core_features: Vec<String>,
    pub score: ScoreConfig,
    pub fields: FieldMap,
    /// engagement-scores only: fields for the figures of each parent Account's whole family
    /// (itself, its Salesforce descendants, its Pendo children); empty rolls nothing up.
    pub rollup_fields: FieldMap,
}

/// A Pendo metadata group (`metadata.<group>.<field>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataGroup {
    Agent,
    Custom,
    Salesforce,
    Hubspot,
    Auto,
}

impl MetadataGroup {
    pub const ALL: &'static [MetadataGroup] = &[
        MetadataGroup::Agent,
        MetadataGroup::Custom,
        MetadataGroup::Salesforce,
        MetadataGroup::Hubspot,
        MetadataGroup::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MetadataGroup::Agent => "agent",
            MetadataGroup::Custom => "custom",
            MetadataGroup::Salesforce => "salesforce",
            MetadataGroup::Hubspot => "hubspot",
            MetadataGroup::Auto => "auto",
        }
    }
}

/// One rule of the matching chain.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchRule {
    /// A Salesforce Account Id held in Pendo account metadata.
    PendoMetadata { group: MetadataGroup, field: String },
    /// An Account external-ID field holding the Pendo account id.
    ExternalId { field: String },
    /// The account visitors' dominant email domain against the Account's website.
    EmailDomain {
        website_field: String,
        /// The dominant domain's minimum share of visitors with an email, (0, 1].
        min_share: f64,
        /// Added to the built-in free-mail list.
        extra_free_mail: Vec<String>,
    },
    /// Pendo account metadata holding the parent Pendo account id: a child its own rules do not
    /// place takes its parent's Account.
    PendoParent { group: MetadataGroup, field: String },
    /// Among Accounts of one Salesforce hierarchy found together by another rule, the one whose
    /// `account_field` equals this Pendo metadata value (trimmed, any case).
    ChildField { group: MetadataGroup, field: String, account_field: String },
}

/// The engagement metrics, in the order the file lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    ActiveVisitors,
    ActiveDays,
    Events,
    Minutes,
    FeatureAdoption,
    GuideCompletion,
    LastActive,
    Score,
    UpdatedAt,
}

impl Metric {
    pub fn key(self) -> &'static str {
        match self {
            Metric::ActiveVisitors => "active_visitors",
            Metric::ActiveDays => "active_days",
            Metric::Events => "events",
            Metric::Minutes => "minutes",
            Metric::FeatureAdoption => "feature_adoption",
            Metric::GuideCompletion => "guide_completion",
            Metric::LastActive => "last_active",
            Metric::Score => "score",
            Metric::UpdatedAt => "updated_at",
        }
    }
}

/// One score term: `weight * min(metric / target, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    pub weight: f64,
    pub target: f64,
}

/// The score's terms; an omitted metric does not count (weight 0). Weights are
/// non-negative with a positive sum, targets positive (ratios at most 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreConfig {
    pub active_visitors: Option<Term>,
    pub active_days: Option<Term>,
    pub minutes: Option<Term>,
    pub events: Option<Term>,
    pub feature_adoption: Option<Term>,
    pub guide_completion: Option<Term>,
}

impl ScoreConfig {
    /// The configured terms with their metric.
    pub fn terms(&self) -> impl Iterator<Item = (Metric, Term)> + '_ {
        [
            (Metric::ActiveVisitors, self.active_visitors),
            (Metric::ActiveDays, self.active_days),
            (Metric::Minutes, self.minutes),
            (Metric::Events, self.events),
            (Metric::FeatureAdoption, self.feature_adoption),
            (Metric::GuideCompletion, self.guide_completion),
        ]
        .into_iter()
        .filter_map(|(metric, term)| term.map(|term| (metric, term)))
    }
}

/// Metric → Salesforce Account field API name. Omitted metrics are not written; no
/// two metrics share a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    fields: Vec<(Metric, crate::change::FieldName)>,
}

impl FieldMap {
    pub fn iter(&self) -> impl Iterator<Item = (Metric, &str)> + '_ {
        self.fields.iter().map(|(metric, field)| (*metric, &**field))
    }

    /// The names as shared handles, for values that name their field once per record.
    pub fn shared(&self) -> impl Iterator<Item = (Metric, &crate::change::FieldName)> + '_ {
        self.fields.iter().map(|(metric, field)| (*metric, field))
    }

    pub fn get(&self, metric: Metric) -> Option<&str> {
        self.iter().find(|(m, _)| *m == metric).map(|(_, field)| field)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Reads and validates a config file. Relative `{file: PATH}` secrets are taken from
/// the config file's directory.
///
/// # Errors
/// Every problem found, each with line, column and key; an unreadable file is one error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors::single(&origin, ConfigError::unlocated("", format!("cannot read the config file: {error}")))
    })?;
    let mut config = load_str(&text, &origin)?;
    if let Some(dir) = path.parent() {
        config.rebase_secret_files(dir);
    }
    Ok(config)
}

/// Validates config text; `origin` names it in messages (usually the file name).
///
/// # Errors
/// Every problem found, each with line, column and key.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let original = locate::Locations::index(text);
    let mut text = text.to_owned();
    let mut locations = locate::Locations::index(&text);
    let mut rejected: Vec<ConfigError> = Vec::new();
    // Each round either parses or blanks out one rejected entry; the cap only guards
    // against an entry that cannot be blanked away.
    for _ in 0..MAX_PARSE_ROUNDS {
        let error = match serde_saphyr::from_str::<wire::ConfigFile>(&text) {
            Ok(file) => {
                let keys: Vec<String> = rejected.iter().map(|e| e.key.clone()).collect();
                let result = validate::build(&file, &original, &keys);
                let mut config = finish(origin, rejected, result)?;
                config.source = Arc::new(Source { origin: origin.to_owned(), locations: original });
                return Ok(config);
            }
            Err(error) => validate::parse_error(&error, &locations),
        };
        // Read on past an unknown key or a wrongly typed value; a syntax error ends it.
        let next =
            if locations.is_complete() && !error.key.is_empty() { locations.blank(&text, &error.key) } else { None };
        rejected.push(error);
        match next {
            Some(blanked) => {
                text = blanked;
                locations = locate::Locations::index(&text);
            }
            None => break,
        }
    }
    finish(origin, rejected, Err(Vec::new()))
}

/// Bounds the read-on-after-an-error loop in [`load_str`].
const MAX_PARSE_ROUNDS: usize = 100;

fn finish(
    origin: &str,
    mut rejected: Vec<ConfigError>,
    result: Result<Config, Vec<ConfigError>>,
) -> Result<Config, ConfigErrors> {
    match result {
        Ok(config) if rejected.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(errors) => {
            // A problem inside an entry already rejected by the parser is not news.
            let covered = |key: &str| rejected.iter().any(|r| validate::is_within(key, &r.key));
            let fresh: Vec<_> = errors.into_iter().filter(|e| !covered(&e.key)).collect();
            rejected.extend(fresh);
        }
    }
    if rejected.is_empty() {
        // Not expected: every failed check records an error. Never report success.
        rejected.push(ConfigError::unlocated("", "the config is incomplete"));
    }
    rejected.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
    Err(ConfigErrors { origin: origin.to_owned(), errors: rejected })
}

impl Config {
    /// The file name the config was loaded under (as given to [`load`] or [`load_str`]).
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// Line and column of a dotted key path (`workflows.engagement.fields.minutes`), or of its
    /// nearest ancestor present in the file when the key was left to its default.
    pub fn position(&self, key: &str) -> Option<(usize, usize)> {
        self.source.locations.find(key).map(|p| (p.line, p.column))
    }

    /// Every secret the config references, with its key path.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        let mut out = Vec::new();
        let auth_key = |name: &str| format!("connections.salesforce.auth.{name}");
        match &self.connections.salesforce.auth {
            SalesforceAuth::ClientCredentials { client_secret, .. } => {
                out.push((auth_key("client_secret"), client_secret));
            }
            SalesforceAuth::JwtBearer { private_key, .. } => {
                out.push((auth_key("private_key"), private_key));
            }
            SalesforceAuth::RefreshToken { refresh_token, client_secret, .. } => {
                out.push((auth_key("refresh_token"), refresh_token));
                if let Some(secret) = client_secret {
                    out.push((auth_key("client_secret"), secret));
                }
            }
            SalesforceAuth::Password { password, client_secret, .. } => {
                out.push((auth_key("password"), password));
                out.push((auth_key("client_secret"), client_secret));
            }
        }
        out.push(("connections.pendo.integration_key".to_owned(), &self.connections.pendo.integration_key));
        if let Some(secret) = &self.webhooks.secret {
            out.push(("webhooks.secret".to_owned(), secret));
        }
        if let Some(password) = &self.store.password {
            out.push(("store.password".to_owned(), password));
        }
        if let Some(console) = &self.console {
            out.push(("console.token".to_owned(), &console.token));
            for (i, user) in console.users.iter().enumerate() {
                out.push((format!("console.users[{i}].password_hash"), &user.password_hash));
            }
        }
        for (i, hook) in self.alerts.iter().flat_map(|a| a.webhooks.iter()).enumerate() {
            if let Some(secret) = &hook.secret {
                out.push((format!("alerts.webhooks[{i}].secret"), secret));
            }
        }
        for (i, email) in self.alerts.iter().flat_map(|a| a.email.iter()).enumerate() {
            if let Some(password) = &email.password {
                out.push((format!("alerts.email[{i}].password"), password));
            }
        }
        out
    }

    /// Resolves every secret and reports each one that cannot be read (values are
    /// read and dropped; nothing is kept).
    ///
    /// # Errors
    /// One entry per missing or unreadable secret, keyed by its config path.
    pub fn check_secrets(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigErrors> {
        let errors: Vec<ConfigError> = self
            .secrets()
            .into_iter()
            .filter_map(|(key, secret)| {
                secret.resolve(env).err().map(|mut error| {
                    error.key = key;
                    error
                })
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors { origin: String::new(), errors }) }
    }

    /// The loaded config as YAML, defaults filled in, secrets shown only as their
    /// `{env: …}` / `{file: …}` reference.
    pub fn redacted_yaml(&self) -> String {
        let file = validate::to_wire(self);
        // The wire form holds only strings, numbers and maps, which always serialize.
        serde_saphyr::to_string(&file).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }

    fn rebase_secret_files(&mut self, dir: &Path) {
        let rebase = |secret: &mut Secret| {
            if let Secret::File(path) = secret
                && path.is_relative()
            {
                *path = dir.join(&*path);
            }
        };
        match &mut self.connections.salesforce.auth {
            SalesforceAuth::ClientCredentials { client_secret, .. } => rebase(client_secret),
            SalesforceAuth::JwtBearer { private_key, .. } => rebase(private_key),
            SalesforceAuth::RefreshToken { refresh_token, client_secret, .. } => {
                rebase(refresh_token);
                if let Some(secret) = client_secret {
                    rebase(secret);
                }
            }
            SalesforceAuth::Password { password, client_secret, .. } => {
                rebase(password);
                rebase(client_secret);
            }
        }
        rebase(&mut self.connections.pendo.integration_key);
        if let Some(secret) = &mut self.webhooks.secret {
            rebase(secret);
        }
        if let Some(password) = &mut self.store.password {
            rebase(password);
        }
        if let Some(console) = &mut self.console {
            rebase(&mut console.token);
        }
        if let Some(alerts) = &mut self.alerts {
            for secret in alerts.webhooks.iter_mut().filter_map(|h| h.secret.as_mut()) {
                rebase(secret);
            }
            for password in alerts.email.iter_mut().filter_map(|e| e.password.as_mut()) {
                rebase(password);
            }
        }
    }
}
