//! The `console:` section: access to the daemon's web console. Its typed form, its wire form
//! and its validation live here so the shared config files only gain a line each.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Secret;
use super::validate::{self, Errors};

/// The web console (`usagesync run`). Without this section the daemon serves no console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// What a person types to log in, and what scripts send as `Authorization: Bearer`.
    pub token: Secret,
    /// `None`: the console shares the daemon's listener (`--listen`, 127.0.0.1 by default).
    /// Set, it gets a listener of its own, so `/webhooks/pendo` can face the network while
    /// the console stays on loopback.
    pub listen: Option<SocketAddr>,
    /// How long a login lasts.
    pub session_hours: u32,
}

/// Default for [`Console::session_hours`].
pub const DEFAULT_SESSION_HOURS: u32 = 12;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Wire {
    pub token: Option<super::wire::Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_hours: Option<u32>,
}

/// Checks the section; `Some(None)` when it is absent (no console), `None` after an error.
pub(super) fn build(w: Option<&Wire>, errors: &mut Errors) -> Option<Option<Console>> {
    let Some(w) = w else { return Some(None) };
    let token = errors.required(&w.token, "console.token").and_then(|t| validate::secret(t, "console.token", errors));
    let listen = match &w.listen {
        None => Some(None),
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                errors.push("console.listen", format!("`{text}` is not an IP address and port, e.g. 127.0.0.1:8081"));
                None
            }
        },
    };
    let session_hours = w.session_hours.unwrap_or(DEFAULT_SESSION_HOURS);
    if !(1..=720).contains(&session_hours) {
        errors.push("console.session_hours", format!("must be between 1 and 720 (got {session_hours})"));
        return None;
    }
    Some(Some(Console { token: token?, listen: listen?, session_hours }))
}

pub(super) fn to_wire(c: &Console, secret: impl Fn(&Secret) -> super::wire::Secret) -> Wire {
    Wire {
        token: Some(secret(&c.token)),
        listen: c.listen.map(|a| a.to_string()),
        session_hours: Some(c.session_hours),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::load_str;

    fn base() -> String {
        super::super::STARTER.to_owned()
    }

    #[test]
    fn absent_means_no_console_and_a_full_section_loads() {
        assert!(load_str(&base(), "t.yaml").unwrap().console.is_none());
        let text = base() + "console:\n  token: { env: CONSOLE_TOKEN }\n  listen: 127.0.0.1:9090\n";
        let c = load_str(&text, "t.yaml").unwrap().console.unwrap();
        assert_eq!(c.token, super::Secret::Env("CONSOLE_TOKEN".into()));
        assert_eq!(c.listen.map(|a| a.port()), Some(9090));
        assert_eq!(c.session_hours, super::DEFAULT_SESSION_HOURS);
    }

    #[test]
    fn bad_values_are_located_and_literal_tokens_refused() {
        let text = base() + "console:\n  token: hunter2\n  listen: localhost\n  session_hours: 0\n";
        let errors = load_str(&text, "t.yaml").unwrap_err().to_string();
        assert!(errors.contains("console.token") && errors.contains("literal secret"), "{errors}");
        assert!(!errors.contains("hunter2"), "{errors}");
        assert!(errors.contains("console.listen"), "{errors}");
        assert!(errors.contains("console.session_hours"), "{errors}");
        let missing = load_str(&(base() + "console:\n  listen: 127.0.0.1:0\n"), "t.yaml").unwrap_err().to_string();
        assert!(missing.contains("console.token") && missing.contains("missing"), "{missing}");
        let unknown =
            load_str(&(base() + "console:\n  token: { env: T }\n  pasword: x\n"), "t.yaml").unwrap_err().to_string();
        assert!(unknown.contains("pasword"), "{unknown}");
    }

    #[test]
    fn redacted_yaml_shows_the_reference_only() {
        let text = base() + "console:\n  token: { file: console-token }\n";
        let yaml = load_str(&text, "t.yaml").unwrap().redacted_yaml();
        assert!(yaml.contains("console:") && yaml.contains("console-token"), "{yaml}");
    }
}
