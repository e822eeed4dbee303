//! Who may use the console: a login with the configured token starts a session (an HttpOnly,
//! SameSite=Strict cookie holding a random id), and scripts may send the token as
//! `Authorization: Bearer`. State-changing actions are POSTs that must carry the session's CSRF
//! token and come from the console's own origin; a Bearer request carries no ambient
//! credential, so it needs no CSRF token. Wrong tokens are throttled per client address by
//! `super::throttle`, in front of every handler here. People may also have logins of their own
//! (`console.users`: a name, an Argon2 password hash, a role): a viewer sees every page and
//! takes no action; an operator (and the token) may act.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use engine::config::{ConsoleRole, SecretString};
use parking_lot::Mutex;
use serde::Deserialize;

use super::{ConsoleState, html};

const COOKIE: &str = "usagesync_console";
/// Sessions kept at most; the oldest go first, so a flood of logins cannot grow memory.
const MAX_SESSIONS: usize = 1_000;

pub(crate) struct Auth {
    token: SecretString,
    /// Name → (PHC string, role).
    users: HashMap<String, (String, ConsoleRole)>,
    /// A hash of random bytes, checked for an unknown name so it costs what a known one does.
    dummy: String,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Clone)]
struct Session {
    csrf: String,
    expires: Instant,
    user: String,
    role: ConsoleRole,
}

/// A refused request's answer (boxed: a response is large).
#[derive(Debug)]
pub(crate) struct Denied(Box<Response>);

impl From<Response> for Denied {
    fn from(r: Response) -> Self {
        Denied(Box::new(r))
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A request that passed the access check. `csrf` is the session's CSRF token (for forms);
/// `None` for a Bearer request.
pub(crate) struct Access {
    pub csrf: Option<String>,
    /// Who: a user's name, or "token".
    pub user: String,
    pub role: ConsoleRole,
}

impl Auth {
    #[cfg(test)]
    pub fn new(token: SecretString, session_hours: u32) -> Self {
        Self::with_users(token, session_hours, HashMap::new())
    }

    /// With logins of people's own: name → (Argon2 PHC string, role), each checked at start.
    pub fn with_users(token: SecretString, session_hours: u32, users: HashMap<String, (String, ConsoleRole)>) -> Self {
        let dummy = hash_password(&random_hex()).unwrap_or_default();
        Auth {
            token,
            users,
            dummy,
            lifetime: Duration::from_secs(u64::from(session_hours) * 3_600),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn token_matches(&self, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.token.expose().as_bytes())
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock();
        let s = sessions.get(&id)?.clone();
        if s.expires <= Instant::now() {
            sessions.remove(&id);
            return None;
        }
        Some((id, s))
    }

    /// Checks a page request: a live session or the Bearer token.
    pub fn check(&self, headers: &HeaderMap) -> Result<Access, Denied> {
        if let Some((_, s)) = self.session(headers) {
            return Ok(Access { csrf: Some(s.csrf), user: s.user, role: s.role });
        }
        if let Some(given) = bearer(headers)
            && self.token_matches(given)
        {
            return Ok(Access { csrf: None, user: "token".into(), role: ConsoleRole::Operator });
        }
        Err(Denied(Box::new(denied())))
    }

    /// Checks a state-changing request: access as for a page, the same origin, and (for a
    /// session) the CSRF token the form carried.
    pub fn check_action(&self, headers: &HeaderMap, csrf: &str) -> Result<Access, Denied> {
        let access = self.check(headers)?;
        if access.role == ConsoleRole::Viewer {
            tracing::warn!(user = %access.user, "Console: an action by a viewer was refused");
            return Err(Denied::from(refused("your login is a viewer's: it sees every page but takes no action")));
        }
        // A browser never attaches a Bearer token on its own, so only a session (a cookie the
        // browser does attach) needs proof that the request came from the console's pages.
        if access.csrf.is_none() {
            return Ok(access);
        }
        if !same_origin(headers) {
            tracing::warn!("Console: a cross-origin action was refused");
            return Err(Denied::from(refused(
                "this action must come from the console's own pages (Origin check failed)",
            )));
        }
        if let Some(expected) = &access.csrf
            && !constant_time_eq(csrf.as_bytes(), expected.as_bytes())
        {
            tracing::warn!("Console: an action without a valid CSRF token was refused");
            return Err(Denied::from(refused(
                "the form's CSRF token is missing or stale: reload the page and try again",
            )));
        }
        Ok(access)
    }

    /// Checks a person's name and password against their Argon2 hash (on a blocking thread: it
    /// is slow by design). An unknown name costs the same as a known one.
    async fn user_matches(&self, name: &str, password: &str) -> Option<ConsoleRole> {
        let (hash, role) = self.users.get(name).cloned().map_or((self.dummy.clone(), None), |(h, r)| (h, Some(r)));
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            use argon2::password_hash::PasswordVerifier;
            argon2::password_hash::phc::PasswordHash::new(&hash)
                .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        role.filter(|_| ok)
    }

    fn start_session(&self, user: &str, role: ConsoleRole) -> String {
        let id = random_hex();
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session { csrf: random_hex(), expires: now + self.lifetime, user: user.to_owned(), role },
        );
        id
    }
}

/// An Argon2id PHC string of `password` with a random salt (`usagesync console-password`).
pub(crate) fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    let hash: argon2::password_hash::phc::PasswordHash =
        argon2::Argon2::default().hash_password(password.as_bytes()).map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The request's Origin (or, without one, its Referer) names this host. Browsers send Origin
/// on every POST; a request with neither header is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let expected = [format!("http://{host}"), format!("https://{host}")];
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        return expected.iter().any(|e| e == origin);
    }
    if let Some(referer) = headers.get(header::REFERER).and_then(|o| o.to_str().ok()) {
        return expected.iter().any(|e| referer.strip_prefix(e.as_str()).is_some_and(|rest| rest.starts_with('/')));
    }
    false
}

/// 401 with the login form: a browser can log in from here, a script sees the status.
fn denied() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, Html(login_html(None))).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"usagesync console\""));
    r
}

fn refused(why: &str) -> Response {
    let body = html::layout("Refused", "", None, &format!("<p class=\"error\">{}</p>", html::esc(why)));
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

pub(crate) fn login_html(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", html::esc(e))).unwrap_or_default();
    html::layout(
        "Log in",
        "",
        None,
        &format!(
            "{error}<form method=\"post\" action=\"/console/login\" class=\"login\">\
             <label>Name <input name=\"user\" id=\"user\" autocomplete=\"username\" placeholder=\"empty with the token\"></label> \
             <label>Password or console token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" autofocus></label> \
             <button type=\"submit\">Log in</button></form>\
             <p class=\"muted\">Your name and password (<code>console.users</code>), or no name and the token \
             <code>console.token</code> names in the config.</p>"
        ),
    )
}

pub(crate) async fn login_page(State(st): State<ConsoleState>, headers: HeaderMap) -> Response {
    if st.auth.session(&headers).is_some() {
        return Redirect::to("/console/").into_response();
    }
    Html(login_html(None)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    token: String,
}

pub(crate) async fn login(State(st): State<ConsoleState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    // A login from another site would sign the victim into the attacker's choice of session.
    if !same_origin(&headers) {
        return refused("log in from the console's own page (Origin check failed)");
    }
    let user = form.user.trim();
    let (name, role) = if user.is_empty() {
        if !st.auth.token_matches(&form.token) {
            tracing::warn!("Console: a login with a wrong token was refused");
            return (StatusCode::UNAUTHORIZED, Html(login_html(Some("That is not the console token."))))
                .into_response();
        }
        ("token".to_owned(), ConsoleRole::Operator)
    } else {
        match st.auth.user_matches(user, &form.token).await {
            Some(role) => (user.to_owned(), role),
            None => {
                tracing::warn!("Console: a login with a wrong name or password was refused");
                let page = login_html(Some("That name and password do not match."));
                return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
            }
        }
    };
    let id = st.auth.start_session(&name, role);
    tracing::info!(user = %name, role = role.as_str(), "Console: a session started");
    let max_age = st.auth.lifetime.as_secs();
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut r = Redirect::to("/console/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub(crate) async fn logout(State(st): State<ConsoleState>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = st.auth.check_action(&headers, &form.csrf) {
        return r.into_response();
    }
    if let Some((id, _)) = st.auth.session(&headers) {
        st.auth.sessions.lock().remove(&id);
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("usagesync_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// Pages may not be framed, sniffed or cached, and load nothing from elsewhere.
pub(crate) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_name_this_host() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(same_origin(&headers(&[("host", "h:1"), ("referer", "http://h:1/console/")])));
        assert!(!same_origin(&headers(&[("host", "h:1"), ("referer", "http://h:12/console/")])));
        assert!(!same_origin(&headers(&[("host", "h:1")])));
    }

    #[test]
    fn sessions_bearer_and_csrf() {
        let auth = Auth::new(SecretString::new("s3cret-token"), 1);
        assert!(auth.check(&headers(&[])).is_err());
        assert!(auth.check(&headers(&[("authorization", "Bearer wrong")])).is_err());
        assert!(auth.check(&headers(&[("authorization", "Bearer s3cret-token")])).unwrap().csrf.is_none());
        let id = auth.start_session("token", ConsoleRole::Operator);
        let cookie = format!("other=1; {COOKIE}={id}");
        let csrf = auth.check(&headers(&[("cookie", &cookie)])).unwrap().csrf.unwrap();
        let post = |token: &str| {
            auth.check_action(&headers(&[("cookie", &cookie), ("host", "h"), ("origin", "http://h")]), token).is_ok()
        };
        assert!(post(&csrf));
        assert!(!post(""));
        let cross = headers(&[("cookie", &cookie), ("host", "h"), ("origin", "http://evil.example")]);
        assert!(auth.check_action(&cross, &csrf).is_err());
        assert!(auth.check_action(&headers(&[("authorization", "Bearer s3cret-token")]), "").is_ok());
        assert!(!post(&random_hex()));
        assert!(auth.check(&headers(&[("cookie", &format!("{COOKIE}={}", random_hex()))])).is_err());
    }
}
