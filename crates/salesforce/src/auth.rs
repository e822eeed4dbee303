//! OAuth 2.0 access tokens: the [`TokenSource`] abstraction, the built-in [`OAuth`] flows
//! (JWT bearer, client credentials, refresh token, username-password), [`StaticToken`], and the
//! shared token cache that refreshes once when a session expires.
//!
//! Salesforce tokens carry no expiry; a session simply stops working (401
//! `INVALID_SESSION_ID`). So the cache keeps a token until a request proves it stale, and
//! concurrent requests that all see the same stale token trigger a single refresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::{Mutex, RwLock};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{AuthError, Error, Result, snippet};
use crate::ids::SalesforceId;

/// Token responses are small; anything bigger is not a token response.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// The JWT grant type URN.
const JWT_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Who the token acts as: parsed from the identity URL `…/id/<orgId>/<userId>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity URL as returned (`id` in the token response).
    pub url: String,
    /// Organization ID (`00D…`).
    pub org_id: SalesforceId,
    /// The integration user's ID (`005…`); its writes show up as `LastModifiedById` and CDC
    /// `commitUser`, which is how loops are detected.
    pub user_id: SalesforceId,
}

impl Identity {
    /// Parses an identity URL whose last two path segments are the org and user IDs.
    ///
    /// # Errors
    /// A description of what is wrong with the URL.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let mut segments = url.trim_end_matches('/').rsplit('/');
        let user = segments.next().unwrap_or_default();
        let org = segments.next().unwrap_or_default();
        let org_id =
            SalesforceId::parse(org).map_err(|e| format!("identity URL {url:?} has no org ID segment: {e}"))?;
        let user_id =
            SalesforceId::parse(user).map_err(|e| format!("identity URL {url:?} has no user ID segment: {e}"))?;
        Ok(Self { url: url.to_owned(), org_id, user_id })
    }
}

/// An access token and what came with it.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// Bearer token.
    pub access_token: Secret,
    /// Base URL for data calls (`https://acme.my.salesforce.com`).
    pub instance_url: Url,
    /// Org and user behind the token.
    pub identity: Identity,
    /// Normally `Bearer`.
    pub token_type: String,
    /// When the token was issued (`issued_at` is epoch milliseconds as a string).
    pub issued_at: Option<DateTime<Utc>>,
    /// Base64 HMAC-SHA256 of `id + issued_at`, keyed by the client secret.
    pub signature: Option<String>,
    /// Granted scopes, space separated.
    pub scope: Option<String>,
    /// Only the code and password flows return one.
    pub refresh_token: Option<Secret>,
}

/// The documented success body of the token endpoint.
#[derive(Deserialize)]
struct WireToken {
    access_token: String,
    instance_url: String,
    id: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The documented error body of the token endpoint.
#[derive(Deserialize)]
struct WireTokenError {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl AccessToken {
    /// Decodes a token endpoint success body.
    ///
    /// # Errors
    /// A description of the first missing or malformed field.
    pub fn from_response_body(body: &[u8]) -> std::result::Result<Self, String> {
        let wire: WireToken = serde_json::from_slice(body).map_err(|e| format!("not a token response: {e}"))?;
        let instance_url = Url::parse(&wire.instance_url)
            .map_err(|e| format!("instance_url {:?} is not a URL: {e}", wire.instance_url))?;
        if !matches!(instance_url.scheme(), "http" | "https") {
            return Err(format!("instance_url {:?} is not http(s)", wire.instance_url));
        }
        let identity = Identity::parse(&wire.id)?;
        let issued_at = match wire.issued_at {
            None => None,
            Some(raw) => {
                let millis: i64 = raw.parse().map_err(|_| format!("issued_at {raw:?} is not epoch milliseconds"))?;
                Some(
                    DateTime::<Utc>::from_timestamp_millis(millis)
                        .ok_or_else(|| format!("issued_at {raw:?} is out of range"))?,
                )
            }
        };
        if wire.access_token.is_empty() {
            return Err("access_token is empty".into());
        }
        Ok(Self {
            access_token: Secret(wire.access_token),
            instance_url,
            identity,
            token_type: wire.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            issued_at,
            signature: wire.signature,
            scope: wire.scope,
            refresh_token: wire.refresh_token.map(Secret),
        })
    }
}

/// Anything that can produce an access token. Implement it to plug in a secret store or a
/// token obtained elsewhere.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// Obtains a new token. Called when no token is cached and after a token was rejected.
    fn fetch_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, std::result::Result<AccessToken, AuthError>>;
}

/// A token obtained elsewhere. It cannot be renewed: after a 401 the call fails with
/// [`AuthError::CannotRefresh`].
#[derive(Debug)]
pub struct StaticToken {
    token: Mutex<Option<AccessToken>>,
}

impl StaticToken {
    /// Wraps a token.
    #[must_use]
    pub fn new(token: AccessToken) -> Self {
        Self { token: Mutex::new(Some(token)) }
    }
}

impl TokenSource for StaticToken {
    fn fetch_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
    ) -> BoxFuture<'a, std::result::Result<AccessToken, AuthError>> {
        let token = self.token.lock().take();
        Box::pin(async move { token.ok_or(AuthError::CannotRefresh) })
    }
}

/// How the client authenticates itself in the client-credentials flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    #[default]
    Form,
    /// `Authorization: Basic base64(id:secret)`.
    Basic,
}

enum Grant {
    Jwt {
        client_id: String,
        username: String,
        audience: String,
        key: EncodingKey,
        lifetime: Duration,
    },
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        auth: ClientAuth,
    },
    RefreshToken {
        client_id: String,
        client_secret: Option<Secret>,
        /// Rotated when the endpoint returns a new refresh token.
        refresh_token: RwLock<Secret>,
    },
    Password {
        client_id: String,
        client_secret: Secret,
        username: String,
        password: Secret,
    },
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jwt { client_id, username, audience, .. } => f
                .debug_struct("JwtBearer")
                .field("client_id", client_id)
                .field("username", username)
                .field("audience", audience)
                .finish_non_exhaustive(),
            Self::ClientCredentials { client_id, auth, .. } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("auth", auth)
                .finish_non_exhaustive(),
            Self::RefreshToken { client_id, .. } => {
                f.debug_struct("RefreshToken").field("client_id", client_id).finish_non_exhaustive()
            }
            Self::Password { client_id, username, .. } => f
                .debug_struct("Password")
                .field("client_id", client_id)
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// JWT bearer assertion claims.
#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

/// The OAuth 2.0 flows against `{login_url}/services/oauth2/token`.
#[derive(Debug)]
pub struct OAuth {
    token_url: Url,
    grant: Grant,
}

impl OAuth {
    /// Default JWT assertion lifetime; Salesforce allows a few minutes of clock skew.
    pub const JWT_LIFETIME: Duration = Duration::from_secs(180);

    fn token_url(login_url: &str) -> Result<Url> {
        let base = Url::parse(login_url).map_err(|e| Error::InvalidInput(format!("login URL {login_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::InvalidInput(format!("login URL {login_url:?} must be http or https")));
        }
        base.join("/services/oauth2/token").map_err(|e| Error::InvalidInput(format!("login URL {login_url:?}: {e}")))
    }

    /// JWT bearer flow: an RS256 assertion with `iss` = client id, `sub` = username,
    /// `aud` = the login URL, `exp` = now + 3 minutes. No refresh token comes back; a new
    /// assertion is signed each time.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad login URL; [`AuthError::Key`] for a bad PEM.
    pub fn jwt_bearer(
        login_url: &str,
        client_id: impl Into<String>,
        username: impl Into<String>,
        private_key_pem: &[u8],
    ) -> Result<Self> {
        let token_url = Self::token_url(login_url)?;
        let key = EncodingKey::from_rsa_pem(private_key_pem).map_err(AuthError::Key)?;
        Ok(Self {
            token_url,
            grant: Grant::Jwt {
                client_id: client_id.into(),
                username: username.into(),
                audience: login_url.trim_end_matches('/').to_owned(),
                key,
                lifetime: Self::JWT_LIFETIME,
            },
        })
    }

    /// Overrides the JWT `aud` claim (e.g. a community URL). No effect on other flows.
    #[must_use]
    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        if let Grant::Jwt { audience, .. } = &mut self.grant {
            *audience = aud.into();
        }
        self
    }

    /// Client credentials flow; `login_url` must be the org's My Domain.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad login URL.
    pub fn client_credentials(
        login_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
        auth: ClientAuth,
    ) -> Result<Self> {
        Ok(Self {
            token_url: Self::token_url(login_url)?,
            grant: Grant::ClientCredentials { client_id: client_id.into(), client_secret: client_secret.into(), auth },
        })
    }

    /// Refresh token flow. A rotated refresh token in a response replaces the stored one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad login URL.
    pub fn refresh_token(
        login_url: &str,
        client_id: impl Into<String>,
        client_secret: Option<Secret>,
        refresh_token: impl Into<Secret>,
    ) -> Result<Self> {
        Ok(Self {
            token_url: Self::token_url(login_url)?,
            grant: Grant::RefreshToken {
                client_id: client_id.into(),
                client_secret,
                refresh_token: RwLock::new(refresh_token.into()),
            },
        })
    }

    /// Username-password flow (`password` = password + security token when required).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad login URL.
    pub fn password(
        login_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Result<Self> {
        Ok(Self {
            token_url: Self::token_url(login_url)?,
            grant: Grant::Password {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                username: username.into(),
                password: password.into(),
            },
        })
    }

    /// The token endpoint this source posts to.
    #[must_use]
    pub fn token_endpoint(&self) -> &Url {
        &self.token_url
    }

    fn jwt_assertion(
        client_id: &str,
        username: &str,
        audience: &str,
        key: &EncodingKey,
        lifetime: Duration,
    ) -> std::result::Result<String, AuthError> {
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::minutes(3));
        let claims =
            JwtClaims { iss: client_id, sub: username, aud: audience, exp: (Utc::now() + lifetime).timestamp() };
        // Salesforce documents the header as exactly {"alg":"RS256"}.
        let mut header = Header::new(Algorithm::RS256);
        header.typ = None;
        jsonwebtoken::encode(&header, &claims, key).map_err(AuthError::Sign)
    }

    async fn request(&self, http: &reqwest::Client) -> std::result::Result<AccessToken, AuthError> {
        let url = self.token_url.to_string();
        let builder = http.post(self.token_url.clone()).header(reqwest::header::ACCEPT, "application/json");
        let builder = match &self.grant {
            Grant::Jwt { client_id, username, audience, key, lifetime } => {
                let assertion = Self::jwt_assertion(client_id, username, audience, key, *lifetime)?;
                builder.form(&[("grant_type", JWT_GRANT_TYPE), ("assertion", &assertion)])
            }
            Grant::ClientCredentials { client_id, client_secret, auth: ClientAuth::Form } => builder.form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
            ]),
            Grant::ClientCredentials { client_id, client_secret, auth: ClientAuth::Basic } => builder
                .basic_auth(client_id, Some(client_secret.expose()))
                .form(&[("grant_type", "client_credentials")]),
            Grant::RefreshToken { client_id, client_secret, refresh_token } => {
                let refresh = refresh_token.read().clone();
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.expose()),
                    ("client_id", client_id.as_str()),
                ];
                if let Some(secret) = client_secret {
                    form.push(("client_secret", secret.expose()));
                }
                builder.form(&form)
            }
            Grant::Password { client_id, client_secret, username, password } => builder.form(&[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
                ("username", username),
                ("password", password.expose()),
            ]),
        };

        let mut response = builder.send().await.map_err(|source| AuthError::Transport { url: url.clone(), source })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|source| AuthError::Transport { url: url.clone(), source })?
        {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(AuthError::InvalidResponse {
                    url,
                    reason: format!("body exceeds {MAX_TOKEN_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }

        if status == StatusCode::OK {
            let token =
                AccessToken::from_response_body(&body).map_err(|reason| AuthError::InvalidResponse { url, reason })?;
            if let (Grant::RefreshToken { refresh_token, .. }, Some(rotated)) = (&self.grant, &token.refresh_token) {
                *refresh_token.write() = rotated.clone();
            }
            tracing::debug!(
                grant = ?self.grant,
                org_id = %token.identity.org_id,
                user_id = %token.identity.user_id,
                "Obtained a Salesforce access token."
            );
            return Ok(token);
        }
        match serde_json::from_slice::<WireTokenError>(&body) {
            Ok(e) => Err(AuthError::Rejected { url, status, error: e.error, description: e.error_description }),
            Err(_) => Err(AuthError::Unexpected { url, status, snippet: snippet(&body) }),
        }
    }
}

impl TokenSource for OAuth {
    fn fetch_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, std::result::Result<AccessToken, AuthError>> {
        Box::pin(self.request(http))
    }
}

/// Caches the current token and makes sure only one refresh runs at a time.
#[derive(Debug)]
pub(crate) struct TokenCache {
    source: Arc<dyn TokenSource>,
    current: RwLock<Option<Arc<AccessToken>>>,
    /// Serialises fetches so a burst of 401s produces one token request.
    fetching: tokio::sync::Mutex<()>,
}

impl TokenCache {
    pub(crate) fn new(source: Arc<dyn TokenSource>) -> Self {
        Self { source, current: RwLock::new(None), fetching: tokio::sync::Mutex::new(()) }
    }

    /// The cached token, fetching one if none is cached.
    pub(crate) async fn get(&self, http: &reqwest::Client) -> std::result::Result<Arc<AccessToken>, AuthError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let _guard = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let token = Arc::new(self.source.fetch_token(http).await?);
        *self.current.write() = Some(Arc::clone(&token));
        Ok(token)
    }

    pub(crate) fn cached(&self) -> Option<Arc<AccessToken>> {
        self.current.read().clone()
    }

    /// Drops `stale` if it is still the cached token; a newer token fetched by a concurrent
    /// request is kept.
    pub(crate) fn invalidate(&self, stale: &Arc<AccessToken>) {
        let mut current = self.current.write();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_BODY: &str = r#"{"access_token":"00Dxx0000000123!AR8AQ","instance_url":"https://acme.my.salesforce.com",
        "id":"https://login.salesforce.com/id/00Dxx0000000123EAA/005xx000001AbCdAAK",
        "token_type":"Bearer","issued_at":"1699999999999","signature":"c2ln","scope":"api refresh_token"}"#;

    #[test]
    fn decodes_documented_token_response() {
        let t = AccessToken::from_response_body(TOKEN_BODY.as_bytes()).unwrap();
        assert_eq!(t.instance_url.as_str(), "https://acme.my.salesforce.com/");
        assert_eq!(t.identity.org_id.as_str(), "00Dxx0000000123EAA");
        assert_eq!(t.identity.user_id.as_str(), "005xx000001AbCdAAK");
        assert_eq!(t.issued_at.unwrap().timestamp_millis(), 1_699_999_999_999);
        assert!(t.refresh_token.is_none());
        assert_eq!(format!("{:?}", t.access_token), "***");
        assert!(!format!("{t:?}").contains("AR8AQ"));
    }

    #[test]
    fn rejects_malformed_token_responses() {
        let no_id = TOKEN_BODY.replace("\"id\"", "\"idx\"");
        assert!(AccessToken::from_response_body(no_id.as_bytes()).is_err());
        let bad_id = TOKEN_BODY.replace("005xx000001AbCdAAK", "user");
        assert!(AccessToken::from_response_body(bad_id.as_bytes()).is_err());
        let seconds_as_number = TOKEN_BODY.replace("\"1699999999999\"", "1699999999");
        assert!(AccessToken::from_response_body(seconds_as_number.as_bytes()).is_err());
        let bad_instance = TOKEN_BODY.replace("https://acme.my.salesforce.com", "acme");
        assert!(AccessToken::from_response_body(bad_instance.as_bytes()).is_err());
    }

    #[test]
    fn token_url_from_login_url() {
        let o = OAuth::client_credentials("http://127.0.0.1:4000", "id", "secret", ClientAuth::Basic).unwrap();
        assert_eq!(o.token_endpoint().as_str(), "http://127.0.0.1:4000/services/oauth2/token");
        let o = OAuth::password("https://login.salesforce.com/", "id", "s", "u", "p").unwrap();
        assert_eq!(o.token_endpoint().as_str(), "https://login.salesforce.com/services/oauth2/token");
        assert!(OAuth::password("ftp://x", "id", "s", "u", "p").is_err());
        assert!(!format!("{o:?}").contains("\"p\""));
    }

    #[test]
    fn jwt_assertion_has_documented_claims() {
        let pem = include_bytes!("../tests/fixtures/jwt_test_key.pem");
        let o = OAuth::jwt_bearer("http://127.0.0.1:4000/", "cid", "user@x.test", pem).unwrap();
        let Grant::Jwt { client_id, username, audience, key, lifetime } = &o.grant else {
            panic!("not a JWT grant");
        };
        assert_eq!(audience, "http://127.0.0.1:4000");
        let jwt = OAuth::jwt_assertion(client_id, username, audience, key, *lifetime).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ, None);
        let pubkey = include_bytes!("../tests/fixtures/jwt_test_key.pub.pem");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&["http://127.0.0.1:4000"]);
        validation.set_issuer(&["cid"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_rsa_pem(pubkey).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "user@x.test");
        let exp = data.claims["exp"].as_i64().unwrap();
        let delta = exp - Utc::now().timestamp();
        assert!((170..=181).contains(&delta), "exp is now+{delta}s");
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        let e = OAuth::jwt_bearer("http://127.0.0.1:1", "c", "u", b"not a key").unwrap_err();
        assert!(matches!(e, Error::Auth(AuthError::Key(_))));
    }
}
