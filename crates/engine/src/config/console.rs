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
    /// People with logins of their own, besides the token (which acts as an operator).
    pub users: Vec<ConsoleUser>,
}

/// A person who logs in with a name and a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub name: String,
    /// An Argon2 PHC string (`$argon2id$…`, from `usagesync console-password`), read like any
    /// secret so the Config page shows only where it comes from.
    pub password_hash: Secret,
    pub role: ConsoleRole,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRole {
    /// Sees every page; takes no action.
    Viewer,
    /// Also replays, dismisses, pins, runs and pauses.
    Operator,
}

impl ConsoleRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Viewer => "viewer",
            ConsoleRole::Operator => "operator",
        }
    }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserWire>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserWire {
    pub name: Option<String>,
    pub password_hash: Option<super::wire::Secret>,
    pub role: Option<String>,
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
    let mut users = Vec::new();
    let mut users_ok = true;
    // Every name given, kept or not, so a repeat is reported even when the first had an error.
    let mut names = std::collections::BTreeSet::new();
    for (i, u) in w.users.iter().flatten().enumerate() {
        let key = |leaf: &str| format!("console.users[{i}].{leaf}");
        let name = errors.required(&u.name, &key("name")).and_then(|n| {
            let valid =
                !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
            if !valid {
                errors.push(&key("name"), format!("`{n}` must be 1 to 64 letters, digits, . _ - or @"));
                return None;
            }
            if !names.insert(n.clone()) {
                errors.push(&key("name"), format!("`{n}` is listed twice"));
                return None;
            }
            Some(n.clone())
        });
        let hash = errors
            .required(&u.password_hash, &key("password_hash"))
            .and_then(|h| validate::secret(h, &key("password_hash"), errors));
        let role = match u.role.as_deref() {
            Some("viewer") => Some(ConsoleRole::Viewer),
            Some("operator") => Some(ConsoleRole::Operator),
            Some(other) => {
                errors.push(&key("role"), format!("`{other}` is not a role: viewer or operator"));
                None
            }
            None => {
                errors.push(&key("role"), "missing: `role` is required (viewer or operator)");
                None
            }
        };
        match (name, hash, role) {
            (Some(name), Some(password_hash), Some(role)) => users.push(ConsoleUser { name, password_hash, role }),
            _ => users_ok = false,
        }
    }
    if !users_ok {
        return None;
    }
    Some(Some(Console { token: token?, listen: listen?, session_hours, users }))
}

pub(super) fn to_wire(c: &Console, secret: impl Fn(&Secret) -> super::wire::Secret) -> Wire {
    Wire {
        token: Some(secret(&c.token)),
        listen: c.listen.map(|a| a.to_string()),
        session_hours: Some(c.session_hours),
        users: (!c.users.is_empty()).then(|| {
            c.users
                .iter()
                .map(|u| UserWire {
                    name: Some(u.name.clone()),
                    password_hash: Some(secret(&u.password_hash)),
                    role: Some(u.role.as_str().to_owned()),
                })
                .collect()
        }),
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
    fn users_load_with_roles_and_bad_ones_are_located() {
        let text = base()
            + "console:\n  token: { env: T }\n  users:\n    - name: ada\n      password_hash: { env: ADA_HASH }\n      role: operator\n    - name: bo\n      password_hash: { file: bo.hash }\n      role: viewer\n";
        let c = load_str(&text, "t.yaml").unwrap().console.unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0].role, super::ConsoleRole::Operator);
        assert_eq!(c.users[1].role, super::ConsoleRole::Viewer);
        let bad = base()
            + "console:\n  token: { env: T }\n  users:\n    - name: ada\n      password_hash: { env: H }\n      role: admin\n    - name: ada\n      password_hash: { env: H }\n      role: viewer\n";
        let errors = load_str(&bad, "t.yaml").unwrap_err().to_string();
        assert!(errors.contains("console.users[0].role: `admin` is not a role"), "{errors}");
        assert!(errors.contains("console.users[1].name: `ada` is listed twice"), "{errors}");
    }

    #[test]
    fn redacted_yaml_shows_the_reference_only() {
        let text = base() + "console:\n  token: { file: console-token }\n";
        let yaml = load_str(&text, "t.yaml").unwrap().redacted_yaml();
        assert!(yaml.contains("console:") && yaml.contains("console-token"), "{yaml}");
    }
}
