//! OAuth 2.0 as a Salesforce org serves it at `/services/oauth2/*`: the token endpoint with the
//! JWT bearer, client credentials, username-password and refresh token grants, `userinfo` and
//! `revoke`, and the bearer check every data request goes through.
//!
//! Token errors are `{"error","error_description"}` with HTTP 400; an invalid or expired session
//! on the data API is 401 with the usual error array, which clients such as simple-salesforce
//! index with `[0]` to decide to log in again.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;

use super::accounting::CallKind;
use super::response::Resp;
use super::state::{Session, SfState};
use super::store::ORG_ID;

const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Audiences Salesforce accepts for JWT assertions; the emulator also accepts its own URL.
const AUDIENCES: [&str; 2] = ["https://login.salesforce.com", "https://test.salesforce.com"];

fn token_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

#[derive(Debug, Deserialize)]
struct JwtClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    /// A NumericDate. RFC 7519 makes it a JSON number, but Salesforce also accepts a numeric
    /// string, which is what simple-salesforce sends (`'exp': f'{ts:.0f}'`).
    exp: Option<Value>,
}

/// Seconds since the epoch from a JWT NumericDate given as a number or a numeric string.
fn numeric_date(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
        }
        _ => None,
    }
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(st): State<SfState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    st.accounting.lock().note(CallKind::Auth);
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(grant) = get("grant_type") else {
        return token_error("invalid_request", "grant type is missing");
    };
    // Client credentials may come in the form or as HTTP Basic.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())));
    let client_id = get("client_id").map(str::to_string).or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let client_secret = get("client_secret").map(str::to_string).or_else(|| basic.as_ref().map(|b| b.1.clone()));
    let cfg = &st.config;
    let check_client = |secret_required: bool| -> Result<(), Response> {
        match client_id.as_deref() {
            Some(id) if id == cfg.client_id => {}
            _ => return Err(token_error("invalid_client_id", "client identifier invalid")),
        }
        match client_secret.as_deref() {
            Some(s) if s == cfg.client_secret => Ok(()),
            None if !secret_required => Ok(()),
            _ => Err(token_error("invalid_client", "invalid client credentials")),
        }
    };
    let now = st.clock.now();
    let (user_id, refresh) = match grant {
        "password" => {
            if let Err(r) = check_client(true) {
                return r;
            }
            let user_ok = get("username").is_some_and(|u| u.eq_ignore_ascii_case(&cfg.username));
            if !user_ok || get("password") != Some(cfg.password.as_str()) {
                return token_error("invalid_grant", "authentication failure");
            }
            let Some(uid) = user_id_for(&st, &cfg.username) else {
                return token_error("invalid_grant", "inactive user");
            };
            (uid, cfg.password_flow_refresh_token)
        }
        "client_credentials" => {
            if let Err(r) = check_client(true) {
                return r;
            }
            // Runs as the Connected App's "Run As" user: the integration user.
            let Some(uid) = user_id_for(&st, &cfg.username) else {
                return token_error("invalid_grant", "inactive user");
            };
            (uid, false)
        }
        "refresh_token" => {
            if let Err(r) = check_client(false) {
                return r;
            }
            let Some(rt) = get("refresh_token") else {
                return token_error("invalid_request", "refresh token is missing");
            };
            let Some(uid) = st.refresh_tokens.lock().get(rt).cloned() else {
                return token_error("invalid_grant", "expired access/refresh token");
            };
            (uid, false)
        }
        JWT_GRANT => {
            let Some(assertion) = get("assertion") else {
                return token_error("invalid_request", "assertion is missing");
            };
            match verify_jwt(&st, assertion, now.timestamp()) {
                Ok(uid) => (uid, false),
                Err(r) => return r,
            }
        }
        "authorization_code" => return token_error("invalid_grant", "invalid authorization code"),
        _ => return token_error("unsupported_grant_type", "grant type not supported"),
    };
    let token = new_token();
    st.sessions.lock().insert(token.clone(), Session { user_id: user_id.clone(), last_used: now });
    let issued_at = now.timestamp_millis().to_string();
    let id_url = identity_url(&st, &user_id);
    let mut mac = match Hmac::<Sha256>::new_from_slice(cfg.client_secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    mac.update(id_url.as_bytes());
    mac.update(issued_at.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    let mut body = json!({
        "access_token": token,
        "instance_url": st.base_url(),
        "id": id_url,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": if refresh { "api refresh_token" } else { "api" },
    });
    if refresh {
        let rt = format!("5Aep861{}", random_chars(80));
        st.refresh_tokens.lock().insert(rt.clone(), user_id);
        body["refresh_token"] = json!(rt);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn user_id_for(st: &SfState, username: &str) -> Option<String> {
    let db = st.db.lock();
    db.records("User")
        .find(|u| {
            u.get("Username").as_str().is_some_and(|n| n.eq_ignore_ascii_case(username))
                && u.get("IsActive") != crate::salesforce::store::Field::Bool(false)
                && !u.deleted
        })
        .map(|u| u.id().to_string())
}

fn verify_jwt(st: &SfState, assertion: &str, now: i64) -> Result<String, Response> {
    let key = DecodingKey::from_rsa_pem(st.config.jwt_public_key_pem.as_bytes())
        .map_err(|_| token_error("invalid_grant", "invalid assertion"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // Expiry and audience are checked below against the emulator's clock and Salesforce's
    // audience rules, with Salesforce's error wording.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<JwtClaims>(assertion, &key, &validation)
        .map_err(|_| token_error("invalid_grant", "invalid assertion"))?;
    let claims = data.claims;
    if claims.iss.as_deref() != Some(st.config.client_id.as_str()) {
        return Err(token_error("invalid_client_id", "client identifier invalid"));
    }
    let own = st.base_url().to_string();
    let aud_ok = match &claims.aud {
        Some(Value::String(a)) => AUDIENCES.contains(&a.trim_end_matches('/')) || a.trim_end_matches('/') == own,
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| AUDIENCES.contains(&a) || a == own),
        _ => false,
    };
    if !aud_ok {
        return Err(token_error("invalid_grant", "audience is invalid"));
    }
    // Salesforce allows a few minutes of clock skew.
    match claims.exp.as_ref().and_then(numeric_date) {
        Some(exp) if exp + 180 >= now => {}
        _ => return Err(token_error("invalid_grant", "expired authorization code")),
    }
    let sub = claims.sub.unwrap_or_default();
    user_id_for(st, &sub).ok_or_else(|| token_error("invalid_grant", "user hasn't approved this consumer"))
}

fn random_chars(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    let s = URL_SAFE_NO_PAD.encode(bytes).replace(['-', '_'], "x");
    s.chars().take(n).collect()
}

fn new_token() -> String {
    // Real tokens are "<15-char org id>!<opaque>".
    format!("{}!AR8AQ{}", &ORG_ID[..15], random_chars(96))
}

/// The bearer token from `Authorization: Bearer …` (or the older `OAuth …`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("OAuth ")).map(str::trim)
}

/// Checks a bearer token and touches its session. `None` means 401 `INVALID_SESSION_ID`.
pub fn authenticate(st: &SfState, headers: &HeaderMap) -> Option<Session> {
    let token = bearer(headers)?;
    let now = st.clock.now();
    let mut sessions = st.sessions.lock();
    let session = sessions.get_mut(token)?;
    if now - session.last_used > st.config.session_ttl {
        sessions.remove(token);
        return None;
    }
    session.last_used = now;
    Some(session.clone())
}

pub fn invalid_session() -> Resp {
    Resp::error(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid")
}

/// The identity URL of a user: the token response's `id`, which clients split to learn the org
/// and user IDs, and which answers the identity document.
pub fn identity_url(st: &SfState, user_id: &str) -> String {
    format!("{}/id/{ORG_ID}/{user_id}", st.base_url())
}

/// `GET /id/{orgId}/{userId}`: the identity document of the token's user.
pub async fn identity(
    State(st): State<SfState>,
    axum::extract::Path((org, user)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = authenticate(&st, &headers) else {
        return (StatusCode::FORBIDDEN, "Bad_OAuth_Token").into_response();
    };
    if org != ORG_ID || user != session.user_id {
        // Salesforce only shows a user's identity to that user's own tokens.
        return (StatusCode::FORBIDDEN, "Bad_Id").into_response();
    }
    st.accounting.lock().note(CallKind::Auth);
    let db = st.db.lock();
    let rec = db.get("User", &session.user_id);
    let field = |f: &str| rec.map(|u| u.get(f).to_value()).unwrap_or(Value::Null);
    let base = st.base_url();
    let url = |path: &str| format!("{base}{path}");
    axum::Json(json!({
        "id": identity_url(&st, &session.user_id),
        "asserted_user": true,
        "user_id": session.user_id,
        "organization_id": ORG_ID,
        "username": field("Username"),
        "nick_name": field("Alias"),
        "display_name": field("Name"),
        "email": field("Email"),
        "email_verified": true,
        "first_name": field("FirstName"),
        "last_name": field("LastName"),
        "timezone": "America/Los_Angeles",
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "last_modified_date": field("LastModifiedDate"),
        "is_app_installed": true,
        "urls": {
            "rest": url("/services/data/v{version}/"),
            "sobjects": url("/services/data/v{version}/sobjects/"),
            "query": url("/services/data/v{version}/query/"),
            "limits": url("/services/data/v{version}/limits/"),
            "profile": url(&format!("/{}", session.user_id)),
            "custom_domain": base,
        },
    }))
    .into_response()
}

/// `GET /services/oauth2/userinfo`.
pub async fn userinfo(State(st): State<SfState>, headers: HeaderMap) -> Response {
    let Some(session) = authenticate(&st, &headers) else {
        return (StatusCode::FORBIDDEN, "Bad_OAuth_Token").into_response();
    };
    st.accounting.lock().note(CallKind::Auth);
    let db = st.db.lock();
    let user = db.get("User", &session.user_id);
    let field = |f: &str| user.map(|u| u.get(f).to_value()).unwrap_or(Value::Null);
    let base = st.base_url();
    axum::Json(json!({
        "sub": format!("{base}/id/{ORG_ID}/{}", session.user_id),
        "user_id": session.user_id,
        "organization_id": ORG_ID,
        "preferred_username": field("Username"),
        "nickname": field("Alias"),
        "name": field("Name"),
        "email": field("Email"),
        "email_verified": true,
        "given_name": field("FirstName"),
        "family_name": field("LastName"),
        "zoneinfo": "America/Los_Angeles",
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "urls": {
            "rest": format!("{base}/services/data/v{{version}}/"),
            "sobjects": format!("{base}/services/data/v{{version}}/sobjects/"),
            "query": format!("{base}/services/data/v{{version}}/query/"),
            "limits": format!("{base}/services/data/v{{version}}/limits/"),
        },
    }))
    .into_response()
}

/// `POST /services/oauth2/revoke`: forgets an access or refresh token.
pub async fn revoke(State(st): State<SfState>, Form(form): Form<HashMap<String, String>>) -> Response {
    st.accounting.lock().note(CallKind::Auth);
    let Some(token) = form.get("token") else {
        return token_error("unsupported_token_type", "this token type is not supported");
    };
    let removed = st.sessions.lock().remove(token).is_some() | st.refresh_tokens.lock().remove(token).is_some();
    if removed { StatusCode::OK.into_response() } else { token_error("invalid_token", "invalid token") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::state::Config;
    use jsonwebtoken::{EncodingKey, Header};

    const DEV_KEY: &str = include_str!("../../../../testdata/jwt/emulator-dev.key");

    fn assertion(claims: Value) -> String {
        let key = EncodingKey::from_rsa_pem(DEV_KEY.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    }

    fn claims(exp: Value) -> Value {
        json!({"iss": "usagesync-emulator", "sub": "integration@usagesync.test",
               "aud": "https://login.salesforce.com", "exp": exp})
    }

    #[test]
    fn jwt_exp_may_be_a_number_or_a_numeric_string() {
        let st = SfState::new(Config::default());
        let now = st.clock.now().timestamp();
        // simple-salesforce sends exp as a string: {"exp": "1700000180"}.
        assert!(verify_jwt(&st, &assertion(claims(json!((now + 180).to_string()))), now).is_ok());
        assert!(verify_jwt(&st, &assertion(claims(json!(now + 180))), now).is_ok());
        // Still checked: a string exp in the past is refused, and so is garbage.
        assert!(verify_jwt(&st, &assertion(claims(json!((now - 3600).to_string()))), now).is_err());
        assert!(verify_jwt(&st, &assertion(claims(json!("soon"))), now).is_err());
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(" 42 ")), Some(42));
        assert_eq!(numeric_date(&json!("1.7e9")), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(null)), None);
        assert_eq!(numeric_date(&json!("NaN")), None);
    }
}
