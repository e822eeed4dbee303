//! Builds the Salesforce and Pendo clients a config describes, resolving secrets at the last
//! moment so that nothing secret lives longer than the clients that need it.

use salesforce::{ApiVersion, ClientAuth, OAuth};

use crate::config::{Config, ConfigError, SalesforceAuth};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{key}: {message}")]
    Secret { key: String, message: String },
    #[error("connections.salesforce: {0}")]
    Salesforce(#[source] salesforce::Error),
    #[error("connections.pendo: {0}")]
    Pendo(#[source] pendo::Error),
    #[error("connections.salesforce.api_version: {0:?} is not a version like 62.0")]
    ApiVersion(String),
}

/// Where secrets come from: the process environment in production, a map in tests and the demo.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn secret(key: &str, s: &crate::config::Secret, env: Env<'_>) -> Result<salesforce::Secret, ConnectError> {
    s.resolve(env)
        .map(|v| salesforce::Secret::new(v.expose()))
        .map_err(|e: ConfigError| ConnectError::Secret { key: key.to_owned(), message: e.message })
}

pub fn salesforce_client(config: &Config, env: Env<'_>) -> Result<salesforce::Client, ConnectError> {
    let sf = &config.connections.salesforce;
    let login = sf.login_url.as_str();
    let major = sf
        .api_version
        .split_once('.')
        .and_then(|(m, _)| m.parse::<u16>().ok())
        .ok_or_else(|| ConnectError::ApiVersion(sf.api_version.clone()))?;
    let key = |k: &str| format!("connections.salesforce.auth.{k}");
    let oauth = match &sf.auth {
        SalesforceAuth::ClientCredentials { client_id, client_secret } => OAuth::client_credentials(
            login,
            client_id,
            secret(&key("client_secret"), client_secret, env)?,
            ClientAuth::Form,
        ),
        SalesforceAuth::JwtBearer { client_id, username, private_key } => {
            let pem = secret(&key("private_key"), private_key, env)?;
            OAuth::jwt_bearer(login, client_id, username, pem.expose().as_bytes())
        }
        SalesforceAuth::RefreshToken { client_id, refresh_token, client_secret } => {
            let client_secret = match client_secret {
                Some(s) => Some(secret(&key("client_secret"), s, env)?),
                None => None,
            };
            OAuth::refresh_token(login, client_id, client_secret, secret(&key("refresh_token"), refresh_token, env)?)
        }
        SalesforceAuth::Password { client_id, username, password, client_secret } => OAuth::password(
            login,
            client_id,
            secret(&key("client_secret"), client_secret, env)?,
            username,
            secret(&key("password"), password, env)?,
        ),
    }
    .map_err(ConnectError::Salesforce)?;
    let client_config = salesforce::ClientConfig { api_version: ApiVersion::new(major), ..Default::default() };
    salesforce::Client::new(client_config, oauth).map_err(ConnectError::Salesforce)
}

pub fn pendo_client(config: &Config, env: Env<'_>) -> Result<pendo::Client, ConnectError> {
    let p = &config.connections.pendo;
    let key = p
        .integration_key
        .resolve(env)
        .map_err(|e| ConnectError::Secret { key: "connections.pendo.integration_key".into(), message: e.message })?;
    let client_config = match &p.base_url {
        Some(url) => pendo::ClientConfig::new(url.as_str(), key.expose()),
        None => pendo::ClientConfig::for_key(key.expose()),
    }
    .map_err(ConnectError::Pendo)?;
    pendo::Client::new(client_config).map_err(ConnectError::Pendo)
}
