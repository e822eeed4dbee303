//! Every OAuth flow, token-response decoding, token errors, and refresh after session expiry.

use std::sync::Arc;

use salesforce::{AuthError, ClientAuth, Error, OAuth, RetryClass, Secret, StaticToken};

use crate::support::*;

async fn assert_logged_in(client: &salesforce::Client) {
    let identity = client.identity().await.unwrap();
    assert_eq!(identity.org_id.key_prefix(), "00D");
    assert_eq!(identity.user_id.key_prefix(), "005");
    // A data call proves the token and instance URL work together.
    client.limits().await.unwrap();
}

#[tokio::test]
async fn password_flow_returns_documented_token_fields() {
    let org = Org::start().await;
    let client = org.client();
    assert_logged_in(&client).await;
    let token = client.current_token().unwrap();
    assert_eq!(token.token_type, "Bearer");
    assert!(token.issued_at.is_some(), "issued_at should be epoch millis");
    assert!(token.signature.is_some());
    assert_eq!(token.instance_url.as_str().trim_end_matches('/'), org.url(), "instance_url names the emulator");
}

#[tokio::test]
async fn client_credentials_in_form_and_basic() {
    let org = Org::start().await;
    for auth in [ClientAuth::Form, ClientAuth::Basic] {
        let client = org.client_from(org.client_credentials(auth));
        assert_logged_in(&client).await;
        assert!(client.current_token().unwrap().refresh_token.is_none());
    }
}

#[tokio::test]
async fn jwt_bearer_flow_with_our_key() {
    let org = Org::start().await;
    let source = OAuth::jwt_bearer(org.url(), CLIENT_ID, USERNAME, JWT_PRIVATE_KEY).unwrap();
    let client = org.client_from(source);
    assert_logged_in(&client).await;
    assert!(client.current_token().unwrap().refresh_token.is_none());
}

#[tokio::test]
async fn jwt_signed_by_an_untrusted_key_is_refused() {
    let org = Org::start().await;
    let other = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/jwt/other.key")).unwrap();
    let client = org.client_from(OAuth::jwt_bearer(org.url(), CLIENT_ID, USERNAME, &other).unwrap());
    let err = client.identity().await.unwrap_err();
    match &err {
        Error::Auth(AuthError::Rejected { status, error, .. }) => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(error, "invalid_grant");
        }
        other => panic!("expected a token rejection, got {other:?}"),
    }
    assert_eq!(err.retry_class(), RetryClass::Permanent);
}

#[tokio::test]
async fn jwt_with_wrong_audience_is_refused() {
    let org = Org::start().await;
    let source = OAuth::jwt_bearer(org.url(), CLIENT_ID, USERNAME, JWT_PRIVATE_KEY)
        .unwrap()
        .with_audience("https://evil.example.com");
    let err = org.client_from(source).identity().await.unwrap_err();
    assert!(matches!(&err, Error::Auth(AuthError::Rejected { error, .. }) if error == "invalid_grant"), "{err:?}");
}

#[tokio::test]
async fn refresh_token_flow_and_rotation() {
    let org = Org::start().await;
    let first = org.client();
    first.identity().await.unwrap();
    let refresh = first
        .current_token()
        .unwrap()
        .refresh_token
        .clone()
        .expect("the password flow hands out a refresh token in the emulator's default config");
    let source = OAuth::refresh_token(org.url(), CLIENT_ID, Some(Secret::new(CLIENT_SECRET)), refresh).unwrap();
    let client = org.client_from(source);
    assert_logged_in(&client).await;
}

#[tokio::test]
async fn bad_password_and_bad_secret_are_permanent_auth_errors() {
    let org = Org::start().await;
    let bad_password = OAuth::password(org.url(), CLIENT_ID, CLIENT_SECRET, USERNAME, "wrong").unwrap();
    let err = org.client_from(bad_password).limits().await.unwrap_err();
    match &err {
        Error::Auth(AuthError::Rejected { error, description, .. }) => {
            assert_eq!(error, "invalid_grant");
            assert!(!description.is_empty());
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.may_have_committed());

    let bad_secret = OAuth::client_credentials(org.url(), CLIENT_ID, "nope", ClientAuth::Form).unwrap();
    let err = org.client_from(bad_secret).limits().await.unwrap_err();
    assert!(
        matches!(&err, Error::Auth(AuthError::Rejected { error, .. }) if error.starts_with("invalid_client")),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_session_is_refreshed_once_and_the_call_succeeds() {
    let org = Org::start().await;
    // No request-level retries: the refresh retry must not depend on them.
    let client = org.client_with(salesforce::ApiVersion::DEFAULT, 1);
    client.limits().await.unwrap();
    let before = client.current_token().unwrap();

    org.expire_sessions().await;
    let usage = client.limits().await.unwrap();
    assert!(usage.daily_api_requests().is_some());
    let after = client.current_token().unwrap();
    assert!(!Arc::ptr_eq(&before, &after), "a new token was fetched");
    assert_ne!(before.access_token, after.access_token);
}

#[tokio::test]
async fn concurrent_calls_after_expiry_all_succeed() {
    let org = Org::start().await;
    let client = org.client();
    client.limits().await.unwrap();
    org.expire_sessions().await;
    let calls = (0..8).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.limits().await })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_static_token_cannot_be_refreshed() {
    let org = Org::start().await;
    let donor = org.client();
    donor.identity().await.unwrap();
    let token = (*donor.current_token().unwrap()).clone();
    let client = org.client_from(StaticToken::new(token));
    client.limits().await.unwrap();

    org.expire_sessions().await;
    let err = client.limits().await.unwrap_err();
    assert!(matches!(err, Error::Auth(AuthError::CannotRefresh)), "{err:?}");
}

/// Hands out its first token forever, so a refresh after expiry yields the same stale token.
#[derive(Debug)]
struct Sticky {
    inner: OAuth,
    first: parking_lot::Mutex<Option<salesforce::AccessToken>>,
}

impl salesforce::TokenSource for Sticky {
    fn fetch_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> futures_util::future::BoxFuture<'a, Result<salesforce::AccessToken, AuthError>> {
        Box::pin(async move {
            if let Some(t) = self.first.lock().clone() {
                return Ok(t);
            }
            let t = self.inner.fetch_token(http).await?;
            *self.first.lock() = Some(t.clone());
            Ok(t)
        })
    }
}

#[tokio::test]
async fn a_refresh_that_does_not_help_surfaces_the_documented_401() {
    let org = Org::start().await;
    let client = org.client_from(Sticky { inner: org.password_flow(), first: Default::default() });
    client.limits().await.unwrap();
    org.expire_sessions().await;
    let err = client.limits().await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.status.as_u16(), 401);
    assert_eq!(e.error_code, salesforce::ErrorCode::InvalidSessionId);
    assert_eq!(e.message, "Session expired or invalid");
    assert_eq!(err.retry_class(), RetryClass::RefreshAuth);
}
