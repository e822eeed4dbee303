use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn token(org: &Org, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = org.http.post(format!("{}/services/oauth2/token", org.emu.base_url)).form(form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn jwt(key_file: &str, aud: &str, exp_offset: i64) -> String {
    let pem = std::fs::read(format!("{}/../../testdata/jwt/{key_file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        json!({"iss": "usagesync-emulator", "sub": "integration@usagesync.test", "aud": aud, "exp": now + exp_offset});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

#[tokio::test]
async fn password_flow_returns_documented_fields() {
    let org = Org::start().await;
    let (status, v) = token(
        &org,
        &[
            ("grant_type", "password"),
            ("client_id", "usagesync-emulator"),
            ("client_secret", "emulator-secret"),
            ("username", "integration@usagesync.test"),
            ("password", "emulator-password"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    for k in ["access_token", "instance_url", "id", "token_type", "issued_at", "signature", "refresh_token"] {
        assert!(v[k].is_string(), "{k} missing in {v}");
    }
    assert_eq!(v["instance_url"], json!(org.emu.base_url));
    assert_eq!(v["issued_at"].as_str().unwrap().len(), 13, "issued_at is in milliseconds");
    let id = v["id"].as_str().unwrap();
    let parts: Vec<&str> = id.rsplit('/').take(2).collect();
    assert!(parts[0].starts_with("005") && parts[1].starts_with("00D"), "{id}");

    // The refresh token gets a new access token.
    let rt = v["refresh_token"].as_str().unwrap();
    let (status, r) =
        token(&org, &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", "usagesync-emulator")])
            .await;
    assert_eq!(status, 200, "{r}");
    assert!(r.get("refresh_token").is_none());
}

#[tokio::test]
async fn token_errors() {
    let org = Org::start().await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("client_id", "x")], "invalid_request"),
        (vec![("grant_type", "magic")], "unsupported_grant_type"),
        (
            vec![("grant_type", "client_credentials"), ("client_id", "nope"), ("client_secret", "emulator-secret")],
            "invalid_client_id",
        ),
        (
            vec![("grant_type", "client_credentials"), ("client_id", "usagesync-emulator"), ("client_secret", "wrong")],
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "usagesync-emulator"),
                ("client_secret", "emulator-secret"),
                ("username", "integration@usagesync.test"),
                ("password", "wrong"),
            ],
            "invalid_grant",
        ),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", "bogus"), ("client_id", "usagesync-emulator")],
            "invalid_grant",
        ),
    ];
    for (form, expected) in cases {
        let (status, v) = token(&org, &form).await;
        assert_eq!(status, 400, "{form:?}");
        assert_eq!(v["error"], json!(expected), "{form:?} → {v}");
        assert!(v["error_description"].is_string());
    }
}

#[tokio::test]
async fn client_credentials_with_basic_auth() {
    let org = Org::start().await;
    let resp = org
        .http
        .post(format!("{}/services/oauth2/token", org.emu.base_url))
        .basic_auth("usagesync-emulator", Some("emulator-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v.get("refresh_token").is_none());
}

#[tokio::test]
async fn jwt_bearer_is_verified() {
    let org = Org::start().await;
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let good = jwt("emulator-dev.key", "https://login.salesforce.com", 180);
    let (status, v) = token(&org, &[("grant_type", grant), ("assertion", &good)]).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("refresh_token").is_none());

    let forged = jwt("other.key", "https://login.salesforce.com", 180);
    let (status, v) = token(&org, &[("grant_type", grant), ("assertion", &forged)]).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));

    let wrong_aud = jwt("emulator-dev.key", "https://example.com", 180);
    let (_, v) = token(&org, &[("grant_type", grant), ("assertion", &wrong_aud)]).await;
    assert_eq!(v["error_description"], json!("audience is invalid"));

    let expired = jwt("emulator-dev.key", "https://test.salesforce.com", -3600);
    let (_, v) = token(&org, &[("grant_type", grant), ("assertion", &expired)]).await;
    assert_eq!(v["error"], json!("invalid_grant"));
}

#[tokio::test]
async fn sessions_expire_with_the_clock_and_answer_401_arrays() {
    let org = Org::start().await;
    let (status, _) = org.json(Method::GET, "limits", None).await;
    assert_eq!(status, 200);
    org.admin(Method::PUT, "clock", json!({"advanceSeconds": 3 * 3600})).await;
    let (status, v) = org.json(Method::GET, "limits", None).await;
    assert_eq!(status, 401);
    assert_eq!(v, json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]));
}

#[tokio::test]
async fn userinfo_names_the_org() {
    let org = Org::start().await;
    let resp = org
        .http
        .get(format!("{}/services/oauth2/userinfo", org.emu.base_url))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["organization_id"].as_str().unwrap().starts_with("00D"));
    assert_eq!(v["preferred_username"], json!("integration@usagesync.test"));
}
