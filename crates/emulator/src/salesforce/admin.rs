//! Admin endpoints under `/__emulator/`: reset the org, seed and dump records, add custom fields
//! validation rules and field updates, read API usage, and set limits, faults and the clock. They are not part
//! of Salesforce's API and are never counted as API calls.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::accounting::LimitsChange;
use super::faults::FaultConfig;
use super::schema::CustomFieldSpec;
use super::sobjects::record_json;
use super::state::SfState;
use super::store::{DmlError, FieldUpdate, ValidationRule, WriteCtx};
use crate::clock::ClockChange;

fn bad(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message.into()}))).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid body: {e}")))
}

/// `POST /__emulator/reset`: a fresh org with default limits, no faults and a live clock.
/// Sessions survive, so connected clients keep working.
pub async fn reset(State(st): State<SfState>) -> Response {
    st.db.lock().reset();
    st.accounting.lock().reset();
    st.faults.lock().set(FaultConfig::default());
    st.cursors.lock().clear();
    st.bulk.lock().clear();
    let _ = st.clock.apply(&ClockChange { now: None, advance_seconds: None, live: true });
    Json(json!({"reset": true})).into_response()
}

/// `POST /__emulator/records/{sobject}`: seeds a JSON array of records, all or none.
pub async fn seed(State(st): State<SfState>, Path(object): Path<String>, body: Bytes) -> Response {
    let records: Vec<Value> = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let ctx = WriteCtx { user_id: super::store::INTEGRATION_USER_ID.into(), now: st.clock.now() };
    let mut db = st.db.lock();
    let Some(name) = db.schema.object(&object).map(|o| o.name.clone()) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("sObject type '{object}' is not supported.")})))
            .into_response();
    };
    db.begin();
    let mut ids = Vec::with_capacity(records.len());
    for (index, rec) in records.iter().enumerate() {
        let Some(map) = rec.as_object() else {
            db.rollback();
            return bad(format!("record {index} is not a JSON object"));
        };
        let mut map = map.clone();
        map.remove("attributes");
        match db.seed(&name, &map, &ctx) {
            Ok(id) => ids.push(id),
            Err(errors) => {
                db.rollback();
                let errors: Vec<Value> = errors.iter().map(DmlError::rest_json).collect();
                return (StatusCode::BAD_REQUEST, Json(json!({"error": format!("record {index} was refused; nothing was seeded"), "index": index, "errors": errors}))).into_response();
            }
        }
    }
    db.commit();
    Json(json!({"created": ids.len(), "ids": ids})).into_response()
}

/// `GET /__emulator/records/{sobject}`: every record, deleted ones flagged with `IsDeleted`.
pub async fn dump(State(st): State<SfState>, Path(object): Path<String>) -> Response {
    let db = st.db.lock();
    let Some(obj) = db.schema.object(&object) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("sObject type '{object}' is not supported.")})))
            .into_response();
    };
    let rows: Vec<Value> = db.records(&obj.name).map(|r| record_json(obj, r, "66.0", None)).collect();
    Json(Value::Array(rows)).into_response()
}

/// `POST /__emulator/fields/{sobject}`: one custom field spec or an array of them.
pub async fn fields(State(st): State<SfState>, Path(object): Path<String>, body: Bytes) -> Response {
    let specs: Vec<CustomFieldSpec> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(_)) => match parse(&body) {
            Ok(s) => s,
            Err(r) => return r,
        },
        Ok(_) => match parse(&body) {
            Ok(s) => vec![s],
            Err(r) => return r,
        },
        Err(e) => return bad(format!("invalid body: {e}")),
    };
    let mut db = st.db.lock();
    // Check all before adding any, so a bad spec changes nothing.
    let mut trial = db.schema.clone();
    let mut names = Vec::new();
    for spec in specs {
        names.push(spec.name.clone());
        if let Err(e) = trial.add_custom_field(&object, spec) {
            return bad(e);
        }
    }
    db.schema = trial;
    Json(json!({"added": names})).into_response()
}

/// `POST /__emulator/validation-rules/{sobject}`.
pub async fn validation_rule(State(st): State<SfState>, Path(object): Path<String>, body: Bytes) -> Response {
    let rule: ValidationRule = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match st.db.lock().add_rule(&object, rule) {
        Ok(()) => Json(json!({"added": true})).into_response(),
        Err(e) => bad(e),
    }
}

/// `DELETE /__emulator/validation-rules/{sobject}`: removes the object's rules.
pub async fn clear_validation_rules(State(st): State<SfState>, Path(object): Path<String>) -> Response {
    let removed = st.db.lock().clear_rules(&object);
    Json(json!({"removed": removed})).into_response()
}

/// `POST /__emulator/field-updates/{sobject}`: a workflow field update (or before-save flow).
pub async fn field_update(State(st): State<SfState>, Path(object): Path<String>, body: Bytes) -> Response {
    let update: FieldUpdate = match parse(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match st.db.lock().add_field_update(&object, update) {
        Ok(()) => Json(json!({"added": true})).into_response(),
        Err(e) => bad(e),
    }
}

/// `DELETE /__emulator/field-updates/{sobject}`: removes the object's field updates.
pub async fn clear_field_updates(State(st): State<SfState>, Path(object): Path<String>) -> Response {
    let removed = st.db.lock().clear_field_updates(&object);
    Json(json!({"removed": removed})).into_response()
}

/// `GET /__emulator/usage`: API calls by kind and the daily allocation.
pub async fn usage(State(st): State<SfState>) -> Response {
    let now = st.clock.now();
    Json(st.accounting.lock().usage_json(now)).into_response()
}

/// `PUT /__emulator/limits`.
pub async fn limits(State(st): State<SfState>, body: Bytes) -> Response {
    let change: LimitsChange = match parse(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = st.clock.now();
    let mut acc = st.accounting.lock();
    match acc.apply(&change, now) {
        Ok(()) => Json(acc.limits_json(now)).into_response(),
        Err(e) => bad(e),
    }
}

/// `PUT /__emulator/faults`.
pub async fn faults(State(st): State<SfState>, body: Bytes) -> Response {
    let config: FaultConfig = match parse(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(e) = config.validate() {
        return bad(e);
    }
    st.faults.lock().set(config);
    Json(json!({"updated": true})).into_response()
}

/// `PUT /__emulator/clock`.
pub async fn clock(State(st): State<SfState>, body: Bytes) -> Response {
    let change: ClockChange = match parse(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.clock.apply(&change) {
        Ok(now) => Json(json!({"now": now.to_rfc3339()})).into_response(),
        Err(e) => bad(e),
    }
}

/// `POST /__emulator/sessions/expire`: ends every access token, as a session timeout would,
/// so clients must refresh or log in again.
pub async fn expire_sessions(State(st): State<SfState>) -> Response {
    let n = {
        let mut s = st.sessions.lock();
        let n = s.len();
        s.clear();
        n
    };
    Json(json!({"expired": n})).into_response()
}
