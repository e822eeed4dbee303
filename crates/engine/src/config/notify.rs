//! The `alerts:` section: where the daemon tells people that a scheduled run did not succeed
//! (failed, partial, deferred…), by webhook or by e-mail over SMTP. Its typed form, wire form
//! and validation live here so the shared config files only gain a line each. Sending is the
//! binary's job.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Secret;
use super::validate::{self, Errors};

/// Run states an alert can be sent for, and the default set.
pub const ALERT_STATES: [&str; 5] = ["failed", "partial", "deferred", "cancelled", "abandoned"];
const DEFAULT_ON: [&str; 3] = ["failed", "partial", "deferred"];
/// Default for [`Alerts::quiet_for`].
pub const DEFAULT_QUIET_FOR: Duration = Duration::from_secs(3_600);

/// Alerts on runs that did not succeed. Without this section nothing is sent (the daemon
/// still logs every such run at warn level).
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    pub webhooks: Vec<AlertWebhook>,
    /// E-mail receivers; with `webhooks`, at least one receiver in all.
    pub email: Vec<AlertEmail>,
    /// Run states that alert (from [`ALERT_STATES`]).
    pub on: Vec<String>,
    /// The same workflow ending in the same state again within this long sends nothing more,
    /// so a schedule failing every minute does not flood a channel.
    pub quiet_for: Duration,
    /// Alert when an enabled workflow has had no successful run for this long (counted from
    /// its oldest recorded run when it never succeeded).
    pub no_success_for: Option<Duration>,
    /// Alert when a workflow has more open failures than this.
    pub open_failures_over: Option<u64>,
    /// Alert when usagesync has used (or reserved) this share of its daily API allocation.
    pub budget_used_over: Option<f64>,
}

/// One receiver: an HTTP POST of a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertWebhook {
    pub url: Url,
    /// Signs each body: `X-Usagesync-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret: Option<Secret>,
    pub format: AlertFormat,
}

/// One e-mail receiver: an SMTP server (submission, port 587 by default) and who gets the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEmail {
    /// The SMTP server's host name (also the name its TLS certificate must carry).
    pub server: String,
    pub port: u16,
    /// The sender address (`ops@example.com`, or `usagesync <ops@example.com>`).
    pub from: String,
    /// Recipient addresses; at least one.
    pub to: Vec<String>,
    /// Login, when the server asks for one; the password is a secret reference.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub starttls: StartTls,
}

/// Whether the SMTP connection is upgraded to TLS with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Refuse to send (and to log in) unless the server offers STARTTLS; the default.
    Required,
    /// Upgrade when the server offers it, send in the clear otherwise.
    Optional,
    /// Never upgrade: for a relay on the same host or network only.
    None,
}

impl StartTls {
    pub fn as_str(self) -> &'static str {
        match self {
            StartTls::Required => "required",
            StartTls::Optional => "optional",
            StartTls::None => "none",
        }
    }
}

/// Default SMTP port: submission with STARTTLS; plain SMTP when STARTTLS is off.
fn default_port(starttls: StartTls) -> u16 {
    match starttls {
        StartTls::None => 25,
        StartTls::Required | StartTls::Optional => 587,
    }
}

/// The body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// Every fact as a JSON object (`text` holds the one-line summary).
    Json,
    /// `{"text": …}`, what Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat) take.
    Slack,
}

impl AlertFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Json => "json",
            AlertFormat::Slack => "slack",
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Wire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Vec<EmailWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_success_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_failures_over: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_used_over: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookWire {
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<super::wire::Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailWire {
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<super::wire::Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls: Option<String>,
}

/// A bare address (`ops@example.com`) or one with a display name (`Ops <ops@example.com>`).
/// Deliberately loose: the SMTP server is the judge; this catches typos and header injection.
fn valid_address(text: &str) -> bool {
    let addr = match text.trim().rsplit_once('<') {
        Some((_, rest)) => match rest.strip_suffix('>') {
            Some(inner) => inner,
            None => return false,
        },
        None => text.trim(),
    };
    !text.contains(['\r', '\n'])
        && addr.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !addr.contains(char::is_whitespace)
                && !addr.contains(['<', '>', ',', ';'])
        })
}

fn build_email(i: usize, e: &EmailWire, errors: &mut Errors) -> Option<AlertEmail> {
    let key = |leaf: &str| format!("alerts.email[{i}].{leaf}");
    let mut ok = true;
    let server = errors.required(&e.server, &key("server")).and_then(|host| {
        let valid = !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | ':' | '@'));
        if !valid {
            errors.push(&key("server"), format!("`{host}` is not a host name (no scheme, port or path)"));
        }
        valid.then(|| host.clone())
    });
    let address = |text: &String, key: String, errors: &mut Errors| {
        let valid = valid_address(text);
        if !valid {
            errors.push(&key, format!("`{text}` is not an e-mail address"));
        }
        valid
    };
    let from = errors.required(&e.from, &key("from")).cloned();
    if let Some(from) = &from {
        ok &= address(from, key("from"), errors);
    }
    let to = errors.required(&e.to, &key("to")).cloned();
    if to.as_ref().is_some_and(Vec::is_empty) {
        errors.push(&key("to"), "no recipients: add at least one address");
        ok = false;
    }
    for (j, addr) in to.iter().flatten().enumerate() {
        ok &= address(addr, format!("alerts.email[{i}].to[{j}]"), errors);
    }
    let starttls = match e.starttls.as_deref() {
        None | Some("required") => StartTls::Required,
        Some("optional") => StartTls::Optional,
        Some("none") => StartTls::None,
        Some(other) => {
            errors.push(&key("starttls"), format!("`{other}` is not a STARTTLS mode: required, optional or none"));
            ok = false;
            StartTls::Required
        }
    };
    if e.port == Some(0) {
        errors.push(&key("port"), "must be a port number from 1 to 65535");
        ok = false;
    }
    let password = match &e.password {
        None => Some(None),
        Some(s) => validate::secret(s, &key("password"), errors).map(Some),
    };
    match (&e.username, &e.password) {
        (Some(_), None) => {
            errors.push(&key("password"), "missing: a `username` needs a `password` ({env: NAME} or {file: PATH})");
            ok = false;
        }
        (None, Some(_)) => {
            errors.push(&key("username"), "missing: a `password` needs a `username`");
            ok = false;
        }
        _ => {}
    }
    match (ok, server, from, to, password) {
        (true, Some(server), Some(from), Some(to), Some(password)) => Some(AlertEmail {
            server,
            port: e.port.unwrap_or_else(|| default_port(starttls)),
            from,
            to,
            username: e.username.clone(),
            password,
            starttls,
        }),
        _ => None,
    }
}

/// Checks the section; `Some(None)` when it is absent, `None` after an error.
pub(super) fn build(w: Option<&Wire>, errors: &mut Errors) -> Option<Option<Alerts>> {
    let Some(w) = w else { return Some(None) };
    let mut ok = true;
    let mut webhooks = Vec::new();
    let list = w.webhooks.as_ref();
    let mail = w.email.as_ref();
    if list.is_none_or(Vec::is_empty) && mail.is_none_or(Vec::is_empty) {
        let key = if list.is_some() || mail.is_none() { "alerts.webhooks" } else { "alerts.email" };
        errors.push(key, "no receivers: add a webhook or an e-mail receiver, or remove `alerts:`");
        ok = false;
    }
    let mut email = Vec::new();
    for (i, e) in mail.into_iter().flatten().enumerate() {
        match build_email(i, e, errors) {
            Some(e) => email.push(e),
            None => ok = false,
        }
    }
    for (i, hook) in list.into_iter().flatten().enumerate() {
        let key = |leaf: &str| format!("alerts.webhooks[{i}].{leaf}");
        let url = errors.required(&hook.url, &key("url")).and_then(|text| match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            _ => {
                errors.push(&key("url"), format!("`{text}` is not an http(s) URL"));
                None
            }
        });
        let secret = match &hook.secret {
            None => Some(None),
            Some(s) => validate::secret(s, &key("secret"), errors).map(Some),
        };
        let format = match hook.format.as_deref() {
            None | Some("json") => Some(AlertFormat::Json),
            Some("slack") => Some(AlertFormat::Slack),
            Some(other) => {
                errors.push(&key("format"), format!("`{other}` is not a format: json or slack"));
                None
            }
        };
        match (url, secret, format) {
            (Some(url), Some(secret), Some(format)) => webhooks.push(AlertWebhook { url, secret, format }),
            _ => ok = false,
        }
    }
    let on: Vec<String> = match &w.on {
        None => DEFAULT_ON.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            for (i, state) in list.iter().enumerate() {
                if !ALERT_STATES.contains(&state.as_str()) {
                    errors.push(
                        &format!("alerts.on[{i}]"),
                        format!("`{state}` is not a run state that alerts: {}", ALERT_STATES.join(", ")),
                    );
                    ok = false;
                }
            }
            list.clone()
        }
    };
    let quiet_for = match &w.quiet_for {
        None => DEFAULT_QUIET_FOR,
        Some(text) => match super::duration::parse(text) {
            Ok(d) => d,
            Err(e) => {
                errors.push("alerts.quiet_for", e);
                ok = false;
                Duration::ZERO
            }
        },
    };
    let no_success_for = match &w.no_success_for {
        None => None,
        Some(text) => match super::duration::parse(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                errors.push("alerts.no_success_for", "must be longer than 0s");
                ok = false;
                None
            }
            Err(e) => {
                errors.push("alerts.no_success_for", e);
                ok = false;
                None
            }
        },
    };
    let open_failures_over = w.open_failures_over;
    let budget_used_over = w.budget_used_over;
    if let Some(share) = budget_used_over
        && !(share > 0.0 && share <= 1.0)
    {
        errors.push("alerts.budget_used_over", format!("must be more than 0 and at most 1 (got {share})"));
        ok = false;
    }
    ok.then_some(Some(Alerts { webhooks, email, on, quiet_for, no_success_for, open_failures_over, budget_used_over }))
}

pub(super) fn to_wire(a: &Alerts, secret: impl Fn(&Secret) -> super::wire::Secret) -> Wire {
    Wire {
        webhooks: (!a.webhooks.is_empty()).then(|| {
            a.webhooks
                .iter()
                .map(|h| WebhookWire {
                    url: Some(h.url.to_string()),
                    secret: h.secret.as_ref().map(&secret),
                    format: Some(h.format.as_str().to_owned()),
                })
                .collect()
        }),
        email: (!a.email.is_empty()).then(|| {
            a.email
                .iter()
                .map(|e| EmailWire {
                    server: Some(e.server.clone()),
                    port: Some(e.port),
                    from: Some(e.from.clone()),
                    to: Some(e.to.clone()),
                    username: e.username.clone(),
                    password: e.password.as_ref().map(&secret),
                    starttls: Some(e.starttls.as_str().to_owned()),
                })
                .collect()
        }),
        on: Some(a.on.clone()),
        quiet_for: Some(super::duration::format(a.quiet_for)),
        no_success_for: a.no_success_for.map(super::duration::format),
        open_failures_over: a.open_failures_over,
        budget_used_over: a.budget_used_over,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::load_str;
    use super::*;

    fn base() -> String {
        super::super::STARTER.to_owned()
    }

    #[test]
    fn absent_sends_nothing_and_a_full_section_loads() {
        assert!(load_str(&base(), "t.yaml").unwrap().alerts.is_none());
        let text = base()
            + "alerts:\n  webhooks:\n    - url: http://127.0.0.1:9/hook\n      secret: { env: ALERT_SECRET }\n    - url: https://chat.example/hooks/x\n      format: slack\n  on: [failed, partial]\n  quiet_for: 15m\n  no_success_for: 26h\n  open_failures_over: 100\n  budget_used_over: 0.9\n";
        let alerts = load_str(&text, "t.yaml").unwrap().alerts.unwrap();
        assert_eq!(alerts.webhooks.len(), 2);
        assert_eq!(alerts.webhooks[0].secret, Some(Secret::Env("ALERT_SECRET".into())));
        assert_eq!(alerts.webhooks[1].format, AlertFormat::Slack);
        assert_eq!(alerts.on, ["failed", "partial"]);
        assert_eq!(alerts.quiet_for, Duration::from_secs(900));
        assert_eq!(alerts.no_success_for, Some(Duration::from_secs(26 * 3_600)));
        assert_eq!(alerts.open_failures_over, Some(100));
        assert_eq!(alerts.budget_used_over, Some(0.9));
        let config = load_str(&text, "t.yaml").unwrap();
        assert!(config.secrets().iter().any(|(k, _)| k == "alerts.webhooks[0].secret"));
    }

    #[test]
    fn every_bad_key_is_reported_at_its_place() {
        let text = base()
            + "alerts:\n  webhooks:\n    - url: ftp://x\n      format: teams\n  on: [failed, exploded]\n  quiet_for: soon\n";
        let errors = load_str(&text, "t.yaml").unwrap_err().to_string();
        for needle in [
            "alerts.webhooks[0].url: `ftp://x` is not an http(s) URL",
            "alerts.webhooks[0].format: `teams` is not a format",
            "alerts.on[1]: `exploded` is not a run state",
            "alerts.quiet_for:",
        ] {
            assert!(errors.contains(needle), "{needle} not in {errors}");
        }
        let typo = base().replace("template: engagement-scores", "template: engagement-score");
        let errors = load_str(&typo, "t.yaml").unwrap_err().to_string();
        assert!(errors.contains("did you mean `engagement-scores`?"), "{errors}");
        let unknown = base() + "alerts:\n  webhooks: []\n  email: ops@example.com\n";
        assert!(load_str(&unknown, "t.yaml").unwrap_err().to_string().contains("email"));
    }

    #[test]
    fn email_receivers_load_with_defaults_and_alone() {
        let text = base()
            + "alerts:\n  email:\n    - server: smtp.example.com\n      from: usagesync <usagesync@example.com>\n      to: [ops@example.com, cs@example.com]\n      username: usagesync\n      password: { env: SMTP_PASSWORD }\n    - server: relay.internal\n      from: usagesync@example.com\n      to: [ops@example.com]\n      starttls: none\n";
        let config = load_str(&text, "t.yaml").unwrap();
        let alerts = config.alerts.as_ref().unwrap();
        assert!(alerts.webhooks.is_empty());
        let [first, second] = &alerts.email[..] else { panic!("{:?}", alerts.email) };
        assert_eq!((first.port, first.starttls), (587, StartTls::Required));
        assert_eq!(first.to, ["ops@example.com", "cs@example.com"]);
        assert_eq!(first.password, Some(Secret::Env("SMTP_PASSWORD".into())));
        assert_eq!((second.port, second.starttls, second.username.as_deref()), (25, StartTls::None, None));
        assert!(config.secrets().iter().any(|(k, _)| k == "alerts.email[0].password"));
        // The redacted form names the secret's reference, and loads back to the same thing.
        let yaml = config.redacted_yaml();
        assert!(yaml.contains("SMTP_PASSWORD") && yaml.contains("starttls: none"), "{yaml}");
        assert_eq!(load_str(&yaml, "t.yaml").unwrap().alerts, config.alerts);
    }

    #[test]
    fn every_bad_email_key_is_reported_at_its_place() {
        let text = base()
            + "alerts:\n  email:\n    - server: smtp://mail.example.com\n      port: 0\n      from: usagesync\n      to: [ops@example.com, \"a b@example.com\"]\n      username: usagesync\n      starttls: sometimes\n    - server: smtp.example.com\n      from: usagesync@example.com\n      to: []\n      password: { env: SMTP_PASSWORD }\n";
        let errors = load_str(&text, "t.yaml").unwrap_err().to_string();
        for needle in [
            "alerts.email[0].server: `smtp://mail.example.com` is not a host name",
            "alerts.email[0].port: must be a port number",
            "alerts.email[0].from: `usagesync` is not an e-mail address",
            "alerts.email[0].to[1]: `a b@example.com` is not an e-mail address",
            "alerts.email[0].password: missing",
            "alerts.email[0].starttls: `sometimes` is not a STARTTLS mode",
            "alerts.email[1].to: no recipients",
            "alerts.email[1].username: missing",
        ] {
            assert!(errors.contains(needle), "{needle} not in {errors}");
        }
        let literal = base()
            + "alerts:\n  email:\n    - server: smtp.example.com\n      from: a@example.com\n      to: [b@example.com]\n      username: u\n      password: hunter2\n";
        let errors = load_str(&literal, "t.yaml").unwrap_err().to_string();
        assert!(errors.contains("alerts.email[0].password") && !errors.contains("hunter2"), "{errors}");
        let none = base() + "alerts:\n  email: []\n";
        assert!(load_str(&none, "t.yaml").unwrap_err().to_string().contains("alerts.email: no receivers"));
    }
}
