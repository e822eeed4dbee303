//! Wire form → typed [`Config`], collecting every problem (with its key path and
//! line) instead of stopping at the first; and typed → wire for display.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;
use url::Url;

use super::locate::Locations;
use super::{
    Budget, Config, ConfigError, Connections, DEFAULT_API_VERSION, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_LATENCY,
    DEFAULT_MAX_PENDING, DEFAULT_MIN_REMAINING, DEFAULT_MIN_SHARE, DEFAULT_RECHECK_MATCHES_AFTER,
    DEFAULT_SIGNATURE_HEADER, DEFAULT_WEBSITE_FIELD, EngagementConfig, FieldMap, HOURLY_TEMPLATES, MatchRule,
    MetadataGroup, Metric, PendoConnection, Retention, SalesforceAuth, SalesforceConnection, ScoreConfig, Secret,
    StoreConfig, StoreKind, TemplateKind, Term, Verify, WINDOW_DAYS, WINDOW_HOURS, Webhooks, WindowLength, Workflow,
    duration, wire,
};

/// Collects errors, locating each by its key path.
pub(crate) struct Errors<'a> {
    locations: &'a Locations,
    rejected: &'a [String],
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    pub(super) fn push(&mut self, key: &str, message: impl Into<String>) {
        let pos = self.locations.find(key);
        self.list.push(ConfigError {
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn required<'v, T>(&mut self, value: &'v Option<T>, key: &str) -> Option<&'v T> {
        // A key blanked out after the parser rejected it is absent here; that error
        // is already reported.
        if value.is_none() && !covered(self.rejected, key) {
            let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            let place = if parent.is_empty() { "the top level".to_owned() } else { format!("`{parent}`") };
            self.push(key, format!("missing: `{leaf}` is required under {place}"));
        }
        value.as_ref()
    }
}

/// Turns a deserializer error (syntax, wrong type, unknown key) into one located error.
pub(super) fn parse_error(error: &serde_saphyr::Error, locations: &Locations) -> ConfigError {
    let location = error.location();
    let line = location.map(|l| l.line() as usize).filter(|l| *l > 0);
    let column = location.map(|l| l.column() as usize).filter(|c| *c > 0);
    let key = match (line, column) {
        (Some(line), Some(column)) => locations
            .path_at(line, column)
            .or_else(|| locations.path_for_value(line, column))
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let message = match error.without_snippet() {
        serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
            format!("unknown key `{field}`; expected one of: {}", expected.join(", "))
        }
        other => plain_message(&first_line(&other.to_string())),
    };
    ConfigError { line, column, key, message }
}

/// Says what was expected in the words the docs use, not Rust type names.
fn plain_message(message: &str) -> String {
    let expected = match message {
        "invalid u32" | "invalid u64" => "a whole number, 0 or more",
        "invalid f64" | "invalid f32" => "a number",
        "invalid bool" => "true or false",
        "expected mapping start" => "a map of `key: value` lines",
        "expected sequence start" => "a list",
        _ => return message.to_owned(),
    };
    format!("expected {expected}")
}

/// The deserializer's message without its own location suffix (we print our own).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.rfind(" at line ") {
        Some(cut) => line[..cut].to_owned(),
        None => line.to_owned(),
    }
}

/// Whether `key` is `parent` or lies inside it.
pub(super) fn is_within(key: &str, parent: &str) -> bool {
    key.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

fn covered(rejected: &[String], key: &str) -> bool {
    rejected.iter().any(|r| is_within(key, r))
}

/// `rejected`: keys of entries the parser rejected and the loader blanked out.
pub(super) fn build(
    file: &wire::ConfigFile,
    locations: &Locations,
    rejected: &[String],
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors { locations, rejected, list: Vec::new() };
    let connections = errors.required(&file.connections, "connections").and_then(|c| connections(c, &mut errors));
    let store = errors.required(&file.store, "store").and_then(|s| store(s, &mut errors));
    let budget = errors.required(&file.budget, "budget").and_then(|b| budget(b, &mut errors));
    let verify = match &file.verify {
        Some(v) => verify(v, "verify", &mut errors),
        None => Some(Verify::default()),
    };
    let webhooks = webhooks(file.webhooks.as_ref(), &mut errors);
    let console = super::console::build(file.console.as_ref(), &mut errors);
    let alerts = super::notify::build(file.alerts.as_ref(), &mut errors);
    let retention = retention(file.retention.as_ref(), &mut errors);
    let mut workflows = IndexMap::new();
    if let Some(list) = errors.required(&file.workflows, "workflows") {
        if list.is_empty() {
            errors.push("workflows", "no workflows: add at least one, or usagesync has nothing to do");
        }
        for (name, spec) in list {
            if let Some(workflow) = workflow(name, spec, &mut errors) {
                workflows.insert(name.clone(), workflow);
            }
        }
        let names: Vec<&str> = list.keys().map(String::as_str).collect();
        super::ownership::check(&workflows, &names, &mut errors);
    }
    let mut list = errors.list;
    if let (
        true,
        Some(connections),
        Some(store),
        Some(budget),
        Some(verify),
        Some(webhooks),
        Some(console),
        Some(alerts),
        Some(retention),
    ) = (list.is_empty(), connections, store, budget, verify, webhooks, console, alerts, retention)
    {
        return Ok(Config {
            connections,
            store,
            budget,
            verify,
            webhooks,
            console,
            alerts,
            retention,
            workflows,
            source: Default::default(),
        });
    }
    // An empty list here means every missing piece was blanked out after a parse
    // error, which the caller reports.
    list.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
    Err(list)
}

fn connections(c: &wire::Connections, errors: &mut Errors) -> Option<Connections> {
    let salesforce = errors.required(&c.salesforce, "connections.salesforce").and_then(|s| salesforce(s, errors));
    let pendo = errors.required(&c.pendo, "connections.pendo").and_then(|p| pendo(p, errors));
    Some(Connections { salesforce: salesforce?, pendo: pendo? })
}

fn salesforce(s: &wire::Salesforce, errors: &mut Errors) -> Option<SalesforceConnection> {
    let key = "connections.salesforce";
    let login_url = errors
        .required(&s.login_url, &format!("{key}.login_url"))
        .and_then(|u| http_url(u, &format!("{key}.login_url"), errors));
    let api_version = s.api_version.clone().unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    if !is_api_version(&api_version) {
        errors.push(
            &format!("{key}.api_version"),
            format!("`{api_version}` is not an API version: write two digits and `.0`, e.g. \"62.0\" (quote it)"),
        );
    }
    let auth = errors.required(&s.auth, &format!("{key}.auth")).and_then(|a| auth(a, errors));
    Some(SalesforceConnection { login_url: login_url?, api_version, auth: auth? })
}

fn is_api_version(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 4 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && &b[2..] == b".0"
}

/// An http(s) URL; plain http only on the loopback host (the emulator), so a real
/// token or key never crosses a network unencrypted.
fn http_url(text: &str, key: &str, errors: &mut Errors) -> Option<Url> {
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(error) => {
            errors.push(key, format!("`{text}` is not a URL: {error}"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if !loopback {
                errors.push(
                    key,
                    format!(
                        "`{text}` uses http: only https is allowed, except for 127.0.0.1 or localhost (the emulator)"
                    ),
                );
                return None;
            }
        }
        other => {
            errors.push(key, format!("`{text}` has scheme `{other}`: use https (or http for 127.0.0.1)"));
            return None;
        }
    }
    if url.host_str().is_none() {
        errors.push(key, format!("`{text}` has no host"));
        return None;
    }
    Some(url)
}

const FLOWS: &str = "client_credentials, jwt_bearer, refresh_token, password";

fn auth(a: &wire::Auth, errors: &mut Errors) -> Option<SalesforceAuth> {
    let key = "connections.salesforce.auth";
    let flow = errors.required(&a.flow, &format!("{key}.flow"))?;
    let k = |leaf: &str| format!("{key}.{leaf}");
    let client_id =
        errors.required(&a.client_id, &k("client_id")).and_then(|id| non_empty(id, &k("client_id"), errors));
    // Keys that the chosen flow does not use are mistakes (a secret put under the
    // wrong flow would otherwise be silently ignored).
    let allowed: &[&str] = match flow.as_str() {
        "client_credentials" => &["client_secret"],
        "jwt_bearer" => &["username", "private_key"],
        "refresh_token" => &["refresh_token", "client_secret"],
        "password" => &["username", "password", "client_secret"],
        other => {
            errors.push(&k("flow"), format!("unknown flow `{other}`; expected one of: {FLOWS}"));
            return None;
        }
    };
    let present = [
        ("client_secret", a.client_secret.is_some()),
        ("username", a.username.is_some()),
        ("private_key", a.private_key.is_some()),
        ("refresh_token", a.refresh_token.is_some()),
        ("password", a.password.is_some()),
    ];
    for (leaf, is_present) in present {
        if is_present && !allowed.contains(&leaf) {
            errors.push(&k(leaf), format!("not used by flow `{flow}` (it uses: client_id, {})", allowed.join(", ")));
        }
    }
    let secret = |value: &Option<wire::Secret>, leaf: &str, errors: &mut Errors| {
        errors.required(value, &k(leaf)).and_then(|s| self::secret(s, &k(leaf), errors))
    };
    let username = |errors: &mut Errors| {
        errors.required(&a.username, &k("username")).and_then(|u| non_empty(u, &k("username"), errors))
    };
    match flow.as_str() {
        "client_credentials" => {
            let client_secret = secret(&a.client_secret, "client_secret", errors);
            Some(SalesforceAuth::ClientCredentials { client_id: client_id?, client_secret: client_secret? })
        }
        "jwt_bearer" => {
            let username = username(errors);
            let private_key = secret(&a.private_key, "private_key", errors);
            Some(SalesforceAuth::JwtBearer { client_id: client_id?, username: username?, private_key: private_key? })
        }
        "refresh_token" => {
            let refresh_token = secret(&a.refresh_token, "refresh_token", errors);
            let client_secret = match &a.client_secret {
                Some(s) => Some(self::secret(s, &k("client_secret"), errors)?),
                None => None,
            };
            Some(SalesforceAuth::RefreshToken { client_id: client_id?, refresh_token: refresh_token?, client_secret })
        }
        _ => {
            let username = username(errors);
            let password = secret(&a.password, "password", errors);
            let client_secret = secret(&a.client_secret, "client_secret", errors);
            Some(SalesforceAuth::Password {
                client_id: client_id?,
                username: username?,
                password: password?,
                client_secret: client_secret?,
            })
        }
    }
}

fn non_empty(text: &str, key: &str, errors: &mut Errors) -> Option<String> {
    if text.trim().is_empty() {
        errors.push(key, "must not be empty");
        None
    } else {
        Some(text.to_owned())
    }
}

pub(super) fn secret(s: &wire::Secret, key: &str, errors: &mut Errors) -> Option<Secret> {
    match s {
        wire::Secret::Env(name) => {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if valid {
                Some(Secret::Env(name.clone()))
            } else {
                errors.push(key, format!("`{name}` is not an environment variable name (letters, digits, _)"));
                None
            }
        }
        wire::Secret::File(path) if path.as_os_str().is_empty() => {
            errors.push(key, "the secret file path is empty");
            None
        }
        wire::Secret::File(path) => Some(Secret::File(path.clone())),
        wire::Secret::Literal => {
            errors.push(
                key,
                "a literal secret is not allowed: config files get committed, copied and shown; write {env: NAME} or {file: PATH} instead",
            );
            None
        }
        wire::Secret::Invalid(message) => {
            errors.push(key, message.clone());
            None
        }
    }
}

fn pendo(p: &wire::Pendo, errors: &mut Errors) -> Option<PendoConnection> {
    let key = "connections.pendo";
    let base_url = p.base_url.as_ref().map(|u| http_url(u, &format!("{key}.base_url"), errors));
    let integration_key = errors
        .required(&p.integration_key, &format!("{key}.integration_key"))
        .and_then(|s| secret(s, &format!("{key}.integration_key"), errors));
    Some(PendoConnection {
        base_url: match base_url {
            Some(url) => Some(url?),
            None => None,
        },
        integration_key: integration_key?,
        parallel_queries: p.parallel_queries.unwrap_or(true),
    })
}

fn store(s: &wire::Store, errors: &mut Errors) -> Option<StoreConfig> {
    let url = errors.required(&s.url, "store.url")?;
    let password = s.password.as_ref().map(|p| secret(p, "store.password", errors));
    let kind = if url.starts_with("sqlite:") {
        if s.password.is_some() {
            errors.push("store.password", "SQLite has no password: remove this key");
        }
        StoreKind::Sqlite
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match Url::parse(url) {
            Ok(parsed) if parsed.password().is_some() => {
                errors.push(
                    "store.url",
                    "the URL holds a password: remove it and give `password: {env: NAME}` so the URL can be shown in logs",
                );
                return None;
            }
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                errors.push("store.url", "the Postgres URL has no host");
                return None;
            }
            Ok(_) => StoreKind::Postgres,
            Err(error) => {
                errors.push("store.url", format!("not a valid Postgres URL: {error}"));
                return None;
            }
        }
    } else {
        errors.push("store.url", format!("`{url}` is neither sqlite://PATH nor postgres://USER@HOST/DB"));
        return None;
    };
    Some(StoreConfig {
        kind,
        url: url.clone(),
        password: match password {
            Some(p) => Some(p?),
            None => None,
        },
    })
}

fn budget(b: &wire::Budget, errors: &mut Errors) -> Option<Budget> {
    let daily_share = *errors.required(&b.daily_share, "budget.daily_share")?;
    if !(daily_share > 0.0 && daily_share <= 1.0) {
        errors.push("budget.daily_share", format!("must be more than 0 and at most 1 (got {daily_share})"));
        return None;
    }
    Some(Budget { daily_share, min_remaining: b.min_remaining.unwrap_or(DEFAULT_MIN_REMAINING) })
}

/// `sample: N` (0 turns the read-back off) or `all: true`, not both.
fn verify(v: &wire::Verify, key: &str, errors: &mut Errors) -> Option<Verify> {
    match (v.sample, v.all) {
        (Some(_), Some(true)) => {
            errors.push(&format!("{key}.all"), "give either `sample` or `all: true`, not both");
            None
        }
        (_, Some(true)) => Some(Verify::All),
        (Some(0), _) => Some(Verify::Off),
        (Some(n), _) => match usize::try_from(n) {
            Ok(n) => Some(Verify::Sample(n)),
            Err(_) => {
                errors.push(&format!("{key}.sample"), format!("{n} is too large; use `all: true` to read everything"));
                None
            }
        },
        (None, _) => Some(Verify::default()),
    }
}

fn webhooks(w: Option<&wire::Webhooks>, errors: &mut Errors) -> Option<Webhooks> {
    let Some(w) = w else { return Some(Webhooks::default()) };
    let secret = match &w.secret {
        Some(s) => Some(secret(s, "webhooks.secret", errors)?),
        None => None,
    };
    let signature_header = w.signature_header.clone().unwrap_or_else(|| DEFAULT_SIGNATURE_HEADER.to_owned());
    if signature_header.is_empty() || !signature_header.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        errors.push("webhooks.signature_header", format!("`{signature_header}` is not an HTTP header name"));
        return None;
    }
    let max_body_bytes = w.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if !(1_024..=64 * 1_048_576).contains(&max_body_bytes) {
        errors.push("webhooks.max_body_bytes", format!("must be between 1024 and 67108864 (got {max_body_bytes})"));
        return None;
    }
    let max_pending = w.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
    if !(1..=100_000_000).contains(&max_pending) {
        errors.push("webhooks.max_pending", format!("must be between 1 and 100000000 (got {max_pending})"));
        return None;
    }
    Some(Webhooks { secret, signature_header, max_body_bytes, max_pending })
}

fn retention(r: Option<&wire::Retention>, errors: &mut Errors) -> Option<Retention> {
    let Some(days) = r.and_then(|r| r.history_days) else { return Some(Retention::default()) };
    match u32::try_from(days) {
        Ok(history_days @ 1..=3_650) => Some(Retention { history_days }),
        _ => {
            // A day at least: a prune must never reach the runs and webhook events in flight.
            errors.push("retention.history_days", format!("must be between 1 and 3650 days (got {days})"));
            None
        }
    }
}

/// `window_days: N` or `window: 30d | 24h`: one of them, within range; hours only for the
/// templates whose figures make sense by the hour, and never with a figure counted in days.
fn window(
    w: &wire::Workflow,
    kind: Option<TemplateKind>,
    k: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<WindowLength> {
    let length = match (&w.window_days, &w.window) {
        (Some(_), Some(_)) => {
            errors.push(&k("window"), "give `window` or `window_days`, not both");
            return None;
        }
        (Some(d), None) => WindowLength::Days(*d),
        (None, Some(text)) => match parse_window(text) {
            Some(length) => length,
            None => {
                errors.push(
                    &k("window"),
                    format!("`{text}` is not a window: write a number of days or hours, e.g. 30d or 24h"),
                );
                return None;
            }
        },
        (None, None) => {
            errors.required(&w.window_days, &k("window_days"));
            return None;
        }
    };
    let key = if w.window.is_some() { k("window") } else { k("window_days") };
    let ok = match length {
        WindowLength::Days(d) => WINDOW_DAYS.contains(&d),
        WindowLength::Hours(h) => WINDOW_HOURS.contains(&h),
    };
    if !ok {
        let message = match (length, w.window.is_some()) {
            (WindowLength::Days(d), false) => {
                format!("must be between {} and {} (got {d})", WINDOW_DAYS.start(), WINDOW_DAYS.end())
            }
            (WindowLength::Days(_), true) => {
                format!("must be between {} and {} days (got {length})", WINDOW_DAYS.start(), WINDOW_DAYS.end())
            }
            (WindowLength::Hours(_), _) => {
                format!("must be between {} and {} hours (got {length})", WINDOW_HOURS.start(), WINDOW_HOURS.end())
            }
        };
        errors.push(&key, message);
        return None;
    }
    if let (WindowLength::Hours(_), Some(kind)) = (length, kind) {
        if !HOURLY_TEMPLATES.contains(&kind) {
            let takes: Vec<_> = HOURLY_TEMPLATES.iter().map(|t| t.name()).collect();
            errors.push(
                &key,
                format!(
                    "{} counts in whole days: give its window in days (e.g. 30d); windows in hours are for {}",
                    kind.name(),
                    takes.join(", ")
                ),
            );
            return None;
        }
        if names_active_days(w) {
            errors.push(
                &key,
                "active_days counts whole days, which an hourly window does not hold: \
                 drop it from `score`, `fields`, `rollup_fields` and `alert`, or give the window in days",
            );
            return None;
        }
    }
    Some(length)
}

/// `30d` or `24h`.
fn parse_window(text: &str) -> Option<WindowLength> {
    let text = text.trim();
    if let Some(days) = text.strip_suffix('d') {
        days.parse().ok().map(WindowLength::Days)
    } else {
        text.strip_suffix('h')?.parse().ok().map(WindowLength::Hours)
    }
}

/// Whether the workflow scores, writes or alerts on active days.
fn names_active_days(w: &wire::Workflow) -> bool {
    let in_condition = |c: &Option<String>| {
        c.as_deref().is_some_and(|text| {
            text.match_indices("active_days").any(|(at, word)| {
                let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
                let before = text[..at].chars().next_back().is_some_and(ident);
                let after = text[at + word.len()..].chars().next().is_some_and(ident);
                !before && !after
            })
        })
    };
    w.score.as_ref().is_some_and(|s| s.active_days.is_some())
        || w.fields.as_ref().is_some_and(|f| f.active_days.is_some())
        || w.rollup_fields.as_ref().is_some_and(|f| f.active_days.is_some())
        || w.alert.as_ref().is_some_and(|a| in_condition(&a.when) || in_condition(&a.rearm_when))
}

fn workflow(name: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<Workflow> {
    let key = format!("workflows.{name}");
    let k = |leaf: &str| format!("{key}.{leaf}");
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        errors.push(&key, format!("workflow name `{name}` must use only a-z, 0-9 and -"));
    }
    let kind = errors.required(&w.template, &k("template")).and_then(|t| {
        let kind = TemplateKind::from_name(t);
        if kind.is_none() {
            let known: Vec<_> = TemplateKind::ALL.iter().map(|k| k.name()).collect();
            let near = crate::preflight::closest(t, known.iter().copied())
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            errors.push(&k("template"), format!("unknown template `{t}`; {near}known templates: {}", known.join(", ")));
        }
        kind
    });
    let schedule = errors.required(&w.schedule, &k("schedule")).and_then(|s| {
        croner::Cron::from_str(s)
            .map_err(|error| errors.push(&k("schedule"), format!("`{s}` is not a valid cron schedule: {error}")))
            .ok()
    });
    let timezone = match &w.timezone {
        None => Some(chrono_tz::UTC),
        Some(tz) => tz
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                errors.push(
                    &k("timezone"),
                    format!("`{tz}` is not a time zone name (use an IANA name such as UTC or Europe/Paris)"),
                )
            })
            .ok(),
    };
    let window = window(w, kind, &k, errors);
    let max_latency = match &w.max_latency {
        None => Some(DEFAULT_MAX_LATENCY),
        Some(text) => {
            bounded_duration(text, &k("max_latency"), Duration::from_secs(60), Duration::from_secs(7 * 86_400), errors)
        }
    };
    // Outer None: not set; inner None: set wrongly (reported).
    let verify = w.verify.as_ref().map(|v| verify(v, &k("verify"), errors));
    let kind = kind?;
    super::ownership::foreign_keys(&key, kind, w, errors);
    let template = kind.build(&key, w, errors);
    Some(Workflow {
        name: name.to_owned(),
        enabled: w.enabled.unwrap_or(true),
        schedule: schedule?,
        timezone: timezone?,
        window: window?,
        window_includes_current: w.window_includes_current.unwrap_or(false),
        max_latency: max_latency?,
        verify: match verify {
            Some(v) => Some(v?),
            None => None,
        },
        template: template?,
    })
}

pub(super) fn bounded_duration(
    text: &str,
    key: &str,
    min: Duration,
    max: Duration,
    errors: &mut Errors,
) -> Option<Duration> {
    match duration::parse(text) {
        Ok(d) if d >= min && d <= max => Some(d),
        Ok(_) => {
            errors.push(
                key,
                format!("must be between {} and {} (got {text})", duration::format(min), duration::format(max)),
            );
            None
        }
        Err(message) => {
            errors.push(key, message);
            None
        }
    }
}

pub(crate) fn engagement(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<EngagementConfig> {
    account_side(key, w, errors, true)
}

/// The keys that find and score accounts (matching, score…); `fields` is required only by
/// templates that write engagement fields.
pub(super) fn account_side(
    key: &str,
    w: &wire::Workflow,
    errors: &mut Errors,
    fields_required: bool,
) -> Option<EngagementConfig> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let matching = match_rules(key, w, errors);
    let recheck_matches_after = match &w.recheck_matches_after {
        None => Some(DEFAULT_RECHECK_MATCHES_AFTER),
        Some(text) => bounded_duration(
            text,
            &k("recheck_matches_after"),
            Duration::from_secs(3_600),
            Duration::from_secs(365 * 86_400),
            errors,
        ),
    };
    let core_features = w.core_features.clone().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, feature) in core_features.iter().enumerate() {
        let fk = format!("{key}.core_features[{i}]");
        if feature.trim().is_empty() {
            errors.push(&fk, "a feature id must not be empty");
        } else if !seen.insert(feature) {
            errors.push(&fk, format!("feature `{feature}` is listed twice"));
        }
    }
    // expansion-opportunity and trial-usage read no score.
    let score = if (w.expansion.is_some() || w.trial.is_some()) && w.score.is_none() {
        Some(ScoreConfig::default())
    } else {
        errors.required(&w.score, &k("score")).and_then(|s| score(&k("score"), s, errors))
    };
    if fields_required && w.alert.is_some() {
        errors.push(&k("alert"), "not used by template engagement-scores");
    }
    if fields_required && w.expansion.is_some() {
        errors.push(&k("expansion"), "not used by template engagement-scores");
    }
    if fields_required && w.trial.is_some() {
        errors.push(&k("trial"), "not used by template engagement-scores");
    }
    let fields = if fields_required {
        errors.required(&w.fields, &k("fields")).and_then(|f| fields(&k("fields"), f, errors))
    } else {
        if w.fields.is_some() {
            errors.push(&k("fields"), "not used by this template");
        }
        Some(FieldMap::default())
    };
    let rollup_fields = match (&w.rollup_fields, fields_required) {
        (None, _) => Some(FieldMap::default()),
        (Some(_), false) => {
            errors.push(&k("rollup_fields"), "not used by this template");
            None
        }
        (Some(r), true) => rollup_fields(&k("rollup_fields"), r, fields.as_ref(), errors),
    };
    Some(EngagementConfig {
        matching: matching?,
        recheck_matches_after: recheck_matches_after?,
        core_features,
        score: score?,
        fields: fields?,
        rollup_fields: rollup_fields?,
    })
}

/// The `matching` list, required and not empty.
pub(super) fn match_rules(key: &str, w: &wire::Workflow, errors: &mut Errors) -> Option<Vec<MatchRule>> {
    let k = format!("{key}.matching");
    errors.required(&w.matching, &k).and_then(|rules| {
        if rules.is_empty() {
            errors.push(&k, "give at least one matching rule");
            return None;
        }
        let built: Vec<_> =
            rules.iter().enumerate().map(|(i, rule)| match_rule(&format!("{k}[{i}]"), rule, errors)).collect();
        let built = built.into_iter().collect::<Option<Vec<_>>>()?;
        // The hierarchy rules only refine what another rule finds.
        let refining = |r: &MatchRule| matches!(r, MatchRule::PendoParent { .. } | MatchRule::ChildField { .. });
        if built.iter().all(refining) {
            errors.push(&k, "pendo_parent and child_field refine another rule's match: add pendo_metadata, external_id or email_domain");
            return None;
        }
        for (i, rule) in built.iter().enumerate().filter(|(_, r)| refining(r)) {
            let kind = std::mem::discriminant(rule);
            if built[..i].iter().any(|r| std::mem::discriminant(r) == kind) {
                errors.push(&format!("{k}[{i}].rule"), "this rule may appear once in the chain");
                return None;
            }
        }
        Some(built)
    })
}

const RULES: &str = "pendo_metadata, external_id, email_domain, pendo_parent, child_field";

fn match_rule(key: &str, r: &wire::MatchRule, errors: &mut Errors) -> Option<MatchRule> {
    let k = |leaf: &str| format!("{key}.{leaf}");
    let rule = errors.required(&r.rule, &k("rule"))?;
    let allowed: &[&str] = match rule.as_str() {
        "pendo_metadata" | "pendo_parent" => &["group", "field"],
        "child_field" => &["group", "field", "account_field"],
        "external_id" => &["field"],
        "email_domain" => &["website_field", "min_share", "extra_free_mail"],
        other => {
            errors.push(&k("rule"), format!("unknown rule `{other}`; expected one of: {RULES}"));
            return None;
        }
    };
    let present = [
        ("group", r.group.is_some()),
        ("field", r.field.is_some()),
        ("website_field", r.website_field.is_some()),
        ("min_share", r.min_share.is_some()),
        ("extra_free_mail", r.extra_free_mail.is_some()),
        ("account_field", r.account_field.is_some()),
    ];
    for (leaf, is_present) in present {
        if is_present && !allowed.contains(&leaf) {
            errors.push(&k(leaf), format!("not used by rule `{rule}` (it uses: {})", allowed.join(", ")));
        }
    }
    match rule.as_str() {
        "pendo_metadata" | "pendo_parent" | "child_field" => {
            let group = errors.required(&r.group, &k("group")).and_then(|g| {
                let found = MetadataGroup::ALL.iter().copied().find(|m| m.name() == g);
                if found.is_none() {
                    let names: Vec<_> = MetadataGroup::ALL.iter().map(|m| m.name()).collect();
                    errors.push(
                        &k("group"),
                        format!("unknown metadata group `{g}`; expected one of: {}", names.join(", ")),
                    );
                }
                found
            });
            let field = errors.required(&r.field, &k("field")).and_then(|f| {
                let ok = !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    errors.push(&k("field"), format!("`{f}` is not a Pendo metadata field name (letters, digits, _)"));
                }
                ok.then(|| f.clone())
            });
            match rule.as_str() {
                "pendo_metadata" => Some(MatchRule::PendoMetadata { group: group?, field: field? }),
                "pendo_parent" => Some(MatchRule::PendoParent { group: group?, field: field? }),
                _ => {
                    let account_field = errors
                        .required(&r.account_field, &k("account_field"))
                        .and_then(|f| salesforce_field(f, &k("account_field"), errors));
                    Some(MatchRule::ChildField { group: group?, field: field?, account_field: account_field? })
                }
            }
        }
        "external_id" => {
            let field = errors.required(&r.field, &k("field")).and_then(|f| {
                let field = salesforce_field(f, &k("field"), errors)?;
                if !field.ends_with("__c") {
                    errors.push(&k("field"), format!("`{f}`: external-ID fields are custom fields, ending in __c"));
                    return None;
                }
                Some(field)
            });
            Some(MatchRule::ExternalId { field: field? })
        }
        _ => {
            let website_field = match &r.website_field {
                Some(f) => salesforce_field(f, &k("website_field"), errors),
                None => Some(DEFAULT_WEBSITE_FIELD.to_owned()),
            };
            let min_share = match r.min_share {
                None => Some(DEFAULT_MIN_SHARE),
                Some(s) if s > 0.0 && s <= 1.0 => Some(s),
                Some(s) => {
                    errors.push(&k("min_share"), format!("must be more than 0 and at most 1 (got {s})"));
                    None
                }
            };
            let extra = r.extra_free_mail.clone().unwrap_or_default();
            let mut ok = true;
            for (i, domain) in extra.iter().enumerate() {
                let valid = domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
                if !valid {
                    ok = false;
                    errors.push(
                        &format!("{key}.extra_free_mail[{i}]"),
                        format!("`{domain}` is not a lower-case domain name such as mail.example"),
                    );
                }
            }
            Some(MatchRule::EmailDomain {
                website_field: website_field?,
                min_share: min_share?,
                extra_free_mail: ok.then_some(extra)?,
            })
        }
    }
}

/// A Salesforce field API name: a letter, then letters, digits and single
/// underscores; a name with `__` must be a custom field (`__c`), possibly namespaced.
pub(super) fn salesforce_field(name: &str, key: &str, errors: &mut Errors) -> Option<String> {
    let shape = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.ends_with('_');
    let custom_ok = (!name.contains("__") || name.ends_with("__c")) && !name.contains("___");
    let body = name.strip_suffix("__c").unwrap_or(name);
    let single_underscores = !body.split("__").any(str::is_empty) && body.split("__").count() <= 2;
    if shape && custom_ok && single_underscores {
        Some(name.to_owned())
    } else {
        errors.push(
            key,
            format!("`{name}` is not a Salesforce field API name (a letter, then letters, digits and _; custom fields end in __c)"),
        );
        None
    }
}

fn score(key: &str, s: &wire::Score, errors: &mut Errors) -> Option<ScoreConfig> {
    let mut ok = true;
    let mut term = |metric: Metric, value: &Option<wire::Term>, errors: &mut Errors| -> Option<Term> {
        let value = value.as_ref()?;
        let tk = format!("{key}.{}", metric.key());
        let weight = errors.required(&value.weight, &format!("{tk}.weight")).copied();
        let target = errors.required(&value.target, &format!("{tk}.target")).copied();
        let (Some(weight), Some(target)) = (weight, target) else {
            ok = false;
            return None;
        };
        if !(weight.is_finite() && weight >= 0.0) {
            ok = false;
            errors.push(&format!("{tk}.weight"), format!("must be 0 or more (got {weight})"));
        }
        let ratio = matches!(metric, Metric::FeatureAdoption | Metric::GuideCompletion);
        if !(target.is_finite() && target > 0.0) {
            ok = false;
            errors.push(&format!("{tk}.target"), format!("must be more than 0 (got {target})"));
        } else if ratio && target > 1.0 {
            ok = false;
            errors.push(
                &format!("{tk}.target"),
                format!("is a share of features or guides: must be at most 1 (got {target})"),
            );
        }
        Some(Term { weight, target })
    };
    let config = ScoreConfig {
        active_visitors: term(Metric::ActiveVisitors, &s.active_visitors, errors),
        active_days: term(Metric::ActiveDays, &s.active_days, errors),
        minutes: term(Metric::Minutes, &s.minutes, errors),
        events: term(Metric::Events, &s.events, errors),
        feature_adoption: term(Metric::FeatureAdoption, &s.feature_adoption, errors),
        guide_completion: term(Metric::GuideCompletion, &s.guide_completion, errors),
    };
    let total: f64 = config.terms().map(|(_, t)| t.weight).sum();
    if ok && total <= 0.0 {
        ok = false;
        errors.push(key, "the weights sum to 0: give at least one metric a positive weight");
    }
    ok.then_some(config)
}

/// `rollup_fields`: shaped as `fields`, and never one of them (an Account's own figures and its
/// family's would overwrite each other).
fn rollup_fields(key: &str, r: &wire::Fields, own: Option<&FieldMap>, errors: &mut Errors) -> Option<FieldMap> {
    let map = fields(key, r, errors)?;
    let mut ok = true;
    if map.get(Metric::UpdatedAt).is_some() {
        ok = false;
        errors.push(&format!("{key}.updated_at"), "a family's update is stamped by `fields.updated_at`");
    }
    for (metric, field) in map.iter() {
        if own.is_some_and(|own| own.iter().any(|(_, f)| f.eq_ignore_ascii_case(field))) {
            ok = false;
            errors.push(
                &format!("{key}.{}", metric.key()),
                format!("field `{field}` is also in `fields`: the family's figures need fields of their own"),
            );
        }
    }
    ok.then_some(map)
}

fn fields(key: &str, f: &wire::Fields, errors: &mut Errors) -> Option<FieldMap> {
    let listed = [
        (Metric::ActiveVisitors, &f.active_visitors),
        (Metric::ActiveDays, &f.active_days),
        (Metric::Events, &f.events),
        (Metric::Minutes, &f.minutes),
        (Metric::FeatureAdoption, &f.feature_adoption),
        (Metric::GuideCompletion, &f.guide_completion),
        (Metric::LastActive, &f.last_active),
        (Metric::Score, &f.score),
        (Metric::UpdatedAt, &f.updated_at),
    ];
    let mut ok = true;
    let mut map = Vec::new();
    // Salesforce field names are case-insensitive, so duplicates are too.
    let mut owner: HashMap<String, Metric> = HashMap::new();
    for (metric, value) in listed {
        let Some(name) = value else { continue };
        let fk = format!("{key}.{}", metric.key());
        let Some(name) = salesforce_field(name, &fk, errors) else {
            ok = false;
            continue;
        };
        if let Some(first) = owner.get(&name.to_ascii_lowercase()) {
            ok = false;
            errors.push(
                &fk,
                format!("field `{name}` is already the target of `{}`: each metric needs its own field", first.key()),
            );
            continue;
        }
        owner.insert(name.to_ascii_lowercase(), metric);
        map.push((metric, crate::change::FieldName::from(name)));
    }
    if ok && map.iter().all(|(m, _)| *m == Metric::UpdatedAt) {
        ok = false;
        errors.push(key, "no metric is mapped to a field: the workflow would write nothing");
    }
    ok.then_some(FieldMap { fields: map })
}

/// The typed config back in wire form, defaults filled in, for display.
pub(super) fn to_wire(config: &Config) -> wire::ConfigFile {
    let sf = &config.connections.salesforce;
    let secret = |s: &Secret| match s {
        Secret::Env(name) => wire::Secret::Env(name.clone()),
        Secret::File(path) => wire::Secret::File(path.clone()),
    };
    let mut auth = wire::Auth { flow: Some(sf.auth.flow().to_owned()), ..wire::Auth::default() };
    match &sf.auth {
        SalesforceAuth::ClientCredentials { client_id, client_secret } => {
            auth.client_id = Some(client_id.clone());
            auth.client_secret = Some(secret(client_secret));
        }
        SalesforceAuth::JwtBearer { client_id, username, private_key } => {
            auth.client_id = Some(client_id.clone());
            auth.username = Some(username.clone());
            auth.private_key = Some(secret(private_key));
        }
        SalesforceAuth::RefreshToken { client_id, refresh_token, client_secret } => {
            auth.client_id = Some(client_id.clone());
            auth.refresh_token = Some(secret(refresh_token));
            auth.client_secret = client_secret.as_ref().map(secret);
        }
        SalesforceAuth::Password { client_id, username, password, client_secret } => {
            auth.client_id = Some(client_id.clone());
            auth.username = Some(username.clone());
            auth.password = Some(secret(password));
            auth.client_secret = Some(secret(client_secret));
        }
    }
    let workflows = config
        .workflows
        .iter()
        .map(|(name, w)| {
            let mut out = wire::Workflow {
                template: Some(w.template.kind().name().to_owned()),
                enabled: Some(w.enabled),
                schedule: Some(w.schedule.as_str().to_owned()),
                timezone: Some(w.timezone.name().to_owned()),
                window_days: match w.window {
                    WindowLength::Days(d) => Some(d),
                    WindowLength::Hours(_) => None,
                },
                window: match w.window {
                    WindowLength::Days(_) => None,
                    hours @ WindowLength::Hours(_) => Some(hours.to_string()),
                },
                window_includes_current: w.window_includes_current.then_some(true),
                max_latency: Some(duration::format(w.max_latency)),
                verify: w.verify.map(verify_to_wire),
                ..wire::Workflow::default()
            };
            w.template.spec().to_wire(&mut out);
            (name.clone(), out)
        })
        .collect();
    wire::ConfigFile {
        connections: Some(wire::Connections {
            salesforce: Some(wire::Salesforce {
                login_url: Some(sf.login_url.to_string()),
                api_version: Some(sf.api_version.clone()),
                auth: Some(auth),
            }),
            pendo: Some(wire::Pendo {
                base_url: config.connections.pendo.base_url.as_ref().map(Url::to_string),
                integration_key: Some(secret(&config.connections.pendo.integration_key)),
                parallel_queries: (!config.connections.pendo.parallel_queries).then_some(false),
            }),
        }),
        store: Some(wire::Store {
            url: Some(config.store.url.clone()),
            password: config.store.password.as_ref().map(secret),
        }),
        budget: Some(wire::Budget {
            daily_share: Some(config.budget.daily_share),
            min_remaining: Some(config.budget.min_remaining),
        }),
        verify: Some(verify_to_wire(config.verify)),
        webhooks: Some(wire::Webhooks {
            secret: config.webhooks.secret.as_ref().map(secret),
            signature_header: Some(config.webhooks.signature_header.clone()),
            max_body_bytes: Some(config.webhooks.max_body_bytes),
            max_pending: Some(config.webhooks.max_pending),
        }),
        console: config.console.as_ref().map(|c| super::console::to_wire(c, secret)),
        alerts: config.alerts.as_ref().map(|a| super::notify::to_wire(a, secret)),
        retention: Some(wire::Retention { history_days: Some(u64::from(config.retention.history_days)) }),
        workflows: Some(workflows),
    }
}

fn verify_to_wire(v: Verify) -> wire::Verify {
    match v {
        Verify::Off => wire::Verify { sample: Some(0), all: None },
        Verify::Sample(n) => wire::Verify { sample: Some(n as u64), all: None },
        Verify::All => wire::Verify { sample: None, all: Some(true) },
    }
}

pub(super) fn rule_to_wire(rule: &MatchRule) -> wire::MatchRule {
    match rule {
        MatchRule::PendoMetadata { group, field } => wire::MatchRule {
            rule: Some("pendo_metadata".to_owned()),
            group: Some(group.name().to_owned()),
            field: Some(field.clone()),
            ..wire::MatchRule::default()
        },
        MatchRule::ExternalId { field } => wire::MatchRule {
            rule: Some("external_id".to_owned()),
            field: Some(field.clone()),
            ..wire::MatchRule::default()
        },
        MatchRule::EmailDomain { website_field, min_share, extra_free_mail } => wire::MatchRule {
            rule: Some("email_domain".to_owned()),
            website_field: Some(website_field.clone()),
            min_share: Some(*min_share),
            extra_free_mail: Some(extra_free_mail.clone()),
            ..wire::MatchRule::default()
        },
        MatchRule::PendoParent { group, field } => wire::MatchRule {
            rule: Some("pendo_parent".to_owned()),
            group: Some(group.name().to_owned()),
            field: Some(field.clone()),
            ..wire::MatchRule::default()
        },
        MatchRule::ChildField { group, field, account_field } => wire::MatchRule {
            rule: Some("child_field".to_owned()),
            group: Some(group.name().to_owned()),
            field: Some(field.clone()),
            account_field: Some(account_field.clone()),
            ..wire::MatchRule::default()
        },
    }
}

/// The Account side shared by the templates built on engagement figures, written back.
pub(crate) fn accounts_to_wire(e: &EngagementConfig, out: &mut wire::Workflow) {
    out.matching = Some(e.matching.iter().map(rule_to_wire).collect());
    out.recheck_matches_after = Some(duration::format(e.recheck_matches_after));
    out.core_features = Some(e.core_features.clone());
    let t = |term: Option<Term>| term.map(|t| wire::Term { weight: Some(t.weight), target: Some(t.target) });
    out.score = e.score.terms().next().is_some().then(|| wire::Score {
        active_visitors: t(e.score.active_visitors),
        active_days: t(e.score.active_days),
        minutes: t(e.score.minutes),
        events: t(e.score.events),
        feature_adoption: t(e.score.feature_adoption),
        guide_completion: t(e.score.guide_completion),
    });
    out.fields = fields_to_wire(&e.fields);
    out.rollup_fields = fields_to_wire(&e.rollup_fields);
}

fn fields_to_wire(map: &FieldMap) -> Option<wire::Fields> {
    let g = |m: Metric| map.get(m).map(str::to_owned);
    (!map.is_empty()).then(|| wire::Fields {
        active_visitors: g(Metric::ActiveVisitors),
        active_days: g(Metric::ActiveDays),
        events: g(Metric::Events),
        minutes: g(Metric::Minutes),
        feature_adoption: g(Metric::FeatureAdoption),
        guide_completion: g(Metric::GuideCompletion),
        last_active: g(Metric::LastActive),
        score: g(Metric::Score),
        updated_at: g(Metric::UpdatedAt),
    })
}
