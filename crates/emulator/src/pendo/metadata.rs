//! Metadata: the field schema per kind (`GET /metadata/schema/{kind}`, field creation and
//! deletion) and value writes — the bulk `POST /metadata/{kind}/{group}/value[?create=true]`
//! answering `{total, updated, failed, missing}`, and the single-value GET/PUT. Writes are
//! visible to aggregations at once and bump `metadata.auto.lastupdated`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::Value as J;

use super::auth::Caller;
use super::store::{Account, GivenNet, Meta, MetaKind, Net, SERVER, Store, Visitor, field_descriptor};
use super::val::{Obj, Val};
use super::{ApiError, ApiResult, PendoState, UnknownFieldPolicy};

pub fn routes() -> Router<PendoState> {
    Router::new()
        .route("/api/v1/metadata/schema/{kind}", get(schema))
        .route("/api/v1/metadata/schema/{kind}/{group}", post(create_fields))
        .route("/api/v1/metadata/schema/{kind}/{group}/{field}", axum::routing::delete(delete_field))
        .route("/api/v1/metadata/{kind}/{group}/value", post(bulk_set))
        .route("/api/v1/metadata/{kind}/{group}/value/{id}/{field}", get(get_value).put(put_value))
}

fn kind_of(s: &str) -> ApiResult<MetaKind> {
    MetaKind::parse(s).ok_or_else(|| ApiError::not_found(format!("unknown metadata kind {s:?}")))
}

fn require_write(caller: &Caller) -> ApiResult<()> {
    if caller.write { Ok(()) } else { Err(ApiError::forbidden("integration key does not allow write access")) }
}

/// Unknown kinds answer `{}` rather than an error: Estuary probes `/metadata/schema/AccountMetadata`
/// and treats anything but 403 as a valid key.
async fn schema(State(state): State<PendoState>, Path(kind): Path<String>) -> Json<J> {
    let store = state.inner.store.read();
    let Some(kind) = MetaKind::parse(&kind) else {
        return Json(J::Object(Default::default()));
    };
    let mut out = serde_json::Map::new();
    for (group, fields) in store.schema(kind) {
        let g: serde_json::Map<String, J> = fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        out.insert(group.clone(), J::Object(g));
    }
    Json(J::Object(out))
}

/// Maps the type names the field-creation API and the UI use to the stored `Type` values that
/// tap-pendo's discovery accepts.
fn stored_type(t: &str) -> Option<&'static str> {
    Some(match t.to_ascii_lowercase().as_str() {
        "string" | "text" => "string",
        "number" | "float" => "float",
        "integer" | "int" => "integer",
        "boolean" | "bool" => "boolean",
        "time" | "date" | "datetime" => "time",
        "" => "",
        _ => return None,
    })
}

fn valid_field_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

async fn create_fields(
    State(state): State<PendoState>,
    Extension(caller): Extension<Caller>,
    Path((kind, group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<J>> {
    require_write(&caller)?;
    let kind = kind_of(&kind)?;
    let fields: Vec<J> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body must be a list of field definitions: {e}")))?;
    let mut parsed = Vec::new();
    for f in &fields {
        let name =
            f.get("name").and_then(J::as_str).ok_or_else(|| ApiError::bad_request("field definition needs name"))?;
        let name = name.to_ascii_lowercase();
        if !valid_field_name(&name) {
            return Err(ApiError::bad_request(format!("invalid field name {name:?}")));
        }
        let ty = f.get("type").and_then(J::as_str).unwrap_or("string");
        let ty = stored_type(ty).ok_or_else(|| ApiError::bad_request(format!("invalid field type {ty:?}")))?;
        let display =
            f.get("displayname").or_else(|| f.get("displayName")).and_then(J::as_str).unwrap_or(&name).to_string();
        parsed.push((name, ty, display));
    }
    let mut store = state.inner.store.write();
    let g = store.schema_mut(kind).entry(group.to_ascii_lowercase()).or_default();
    for (name, ty, display) in parsed {
        g.insert(name, field_descriptor(ty, &display));
    }
    let out: serde_json::Map<String, J> = g.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    Ok(Json(J::Object(out)))
}

async fn delete_field(
    State(state): State<PendoState>,
    Extension(caller): Extension<Caller>,
    Path((kind, group, field)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    require_write(&caller)?;
    let kind = kind_of(&kind)?;
    let mut store = state.inner.store.write();
    let removed =
        store.schema_mut(kind).get_mut(&group.to_ascii_lowercase()).and_then(|g| g.remove(&field.to_ascii_lowercase()));
    match removed {
        Some(_) => Ok(StatusCode::OK),
        None => Err(ApiError::not_found("no such field")),
    }
}

/// Checks a value against a stored field type; `null` always passes (it clears the field).
fn type_ok(ty: &str, v: &J) -> bool {
    match (ty, v) {
        (_, J::Null) | ("", _) => true,
        ("string", J::String(_)) => true,
        ("float", J::Number(_)) => true,
        ("integer", J::Number(n)) => n.is_i64() || n.is_u64(),
        ("boolean", J::Bool(_)) => true,
        ("time", J::Number(n)) => n.is_i64(),
        _ => false,
    }
}

fn infer_type(v: &J) -> &'static str {
    match v {
        J::Bool(_) => "boolean",
        J::Number(n) if n.is_i64() => "integer",
        J::Number(_) => "float",
        _ => "string",
    }
}

enum Outcome {
    Updated,
    Failed,
    Missing,
}

/// Finds (or creates) the entity's metadata object.
fn metadata_slot<'a>(store: &'a mut Store, kind: MetaKind, id: &str, create: bool, now: i64) -> Option<&'a mut Val> {
    match kind {
        MetaKind::Visitor => {
            if store.visitor(id).is_none() {
                if !create {
                    return None;
                }
                store.upsert_visitor(new_visitor(id, now));
            }
            let i = *store.visitor_index.get(id)? as usize;
            store.visitors.get_mut(i).map(|v| v.metadata_mut())
        }
        MetaKind::Account => {
            if store.account(id).is_none() {
                if !create {
                    return None;
                }
                store.upsert_account(new_account(id, now));
            }
            let i = *store.account_index.get(id)? as usize;
            store.accounts.get_mut(i).map(|a| a.metadata_mut())
        }
    }
}

fn auto_group(id: &str, now: i64) -> Obj {
    let mut auto = Obj::new();
    auto.insert("id".into(), Val::str(id));
    auto.insert("firstvisit".into(), Val::Null);
    auto.insert("lastvisit".into(), Val::Null);
    auto.insert("lastupdated".into(), Val::Int(now));
    auto
}

pub fn new_visitor(id: &str, now: i64) -> Visitor {
    let mut md = Obj::new();
    md.insert("auto".into(), Val::obj(auto_group(id, now)));
    md.insert("agent".into(), Val::obj(Obj::new()));
    md.insert("custom".into(), Val::obj(Obj::new()));
    md.insert("pendo".into(), Val::obj(Obj::from_iter([("donotprocess".to_string(), Val::Bool(false))])));
    Visitor {
        id: Arc::from(id),
        meta: Meta::full(Val::obj(md)),
        net: Net::Given(Box::new(GivenNet {
            remote_ip: Arc::from("198.51.100.1"),
            user_agent: Arc::from("Mozilla/5.0"),
            server: Arc::from(SERVER),
            country: Arc::from("US"),
        })),
    }
}

pub fn new_account(id: &str, now: i64) -> Account {
    let mut md = Obj::new();
    md.insert("auto".into(), Val::obj(auto_group(id, now)));
    md.insert("agent".into(), Val::obj(Obj::new()));
    md.insert("custom".into(), Val::obj(Obj::new()));
    Account { id: Arc::from(id), meta: Meta::full(Val::obj(md)) }
}

/// Writes `values` into `metadata.<group>` and bumps `auto.lastupdated`.
fn write_values(md: &mut Val, group: &str, values: &[(String, J)], now: i64) {
    if !matches!(md, Val::Obj(_)) {
        *md = Val::obj(Obj::new());
    }
    let Val::Obj(root) = md else { return };
    let root = Arc::make_mut(root);
    for (k, v) in values {
        Val::set_path(root, &format!("{group}.{k}"), Val::from(v));
    }
    Val::set_path(root, "auto.lastupdated", Val::Int(now));
}

async fn bulk_set(
    State(state): State<PendoState>,
    Extension(caller): Extension<Caller>,
    Path((kind, group)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<J>> {
    require_write(&caller)?;
    let kind = kind_of(&kind)?;
    let group = group.to_ascii_lowercase();
    let create = q.get("create").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let items: Vec<J> = match serde_json::from_slice::<J>(&body) {
        Ok(J::Array(a)) => a,
        Ok(_) => {
            return Err(ApiError::bad_request("body must be a JSON array of {id, values} objects"));
        }
        Err(e) => return Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    };
    let (policy, always_missing) = {
        let c = state.inner.config.read();
        (c.unknown_metadata_fields, c.always_send_missing)
    };
    let now = state.now_ms();
    let mut store = state.inner.store.write();
    let mut updated = 0u64;
    let mut failed = 0u64;
    let mut missing: Vec<J> = Vec::new();
    for item in &items {
        let outcome = set_one(&mut store, kind, &group, item, create, policy, now);
        match outcome {
            Outcome::Updated => updated += 1,
            Outcome::Failed => failed += 1,
            Outcome::Missing => {
                let id = item.get(id_key(kind)).or_else(|| item.get("visitorId")).cloned().unwrap_or(J::Null);
                missing.push(id);
            }
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("total".into(), J::from(items.len()));
    out.insert("updated".into(), J::from(updated));
    out.insert("failed".into(), J::from(failed));
    if always_missing || !missing.is_empty() {
        out.insert("missing".into(), J::Array(missing));
    }
    Ok(Json(J::Object(out)))
}

fn id_key(kind: MetaKind) -> &'static str {
    match kind {
        MetaKind::Visitor => "visitorId",
        MetaKind::Account => "accountId",
    }
}

fn set_one(
    store: &mut Store,
    kind: MetaKind,
    group: &str,
    item: &J,
    create: bool,
    policy: UnknownFieldPolicy,
    now: i64,
) -> Outcome {
    // Accounts may be addressed with visitorId too: one production client does, and its stub
    // accepts it.
    let id = item.get(id_key(kind)).or_else(|| item.get("visitorId")).and_then(J::as_str);
    let (Some(id), Some(values)) = (id.filter(|s| !s.is_empty()), item.get("values").and_then(J::as_object)) else {
        return Outcome::Failed;
    };
    let mut accepted = Vec::with_capacity(values.len());
    let mut new_fields = Vec::new();
    for (k, v) in values {
        let k = k.to_ascii_lowercase();
        match store.schema(kind).get(group).and_then(|g| g.get(&k)) {
            Some(desc) => {
                let ty = desc.field("Type").as_str().unwrap_or("");
                if !type_ok(ty, v) {
                    return Outcome::Failed;
                }
                accepted.push((k, v.clone()));
            }
            None => match policy {
                UnknownFieldPolicy::Fail => return Outcome::Failed,
                UnknownFieldPolicy::Ignore => {}
                UnknownFieldPolicy::Create => {
                    if !valid_field_name(&k) {
                        return Outcome::Failed;
                    }
                    new_fields.push((k.clone(), infer_type(v)));
                    accepted.push((k, v.clone()));
                }
            },
        }
    }
    let Some(md) = metadata_slot(store, kind, id, create, now) else {
        return Outcome::Missing;
    };
    write_values(md, group, &accepted, now);
    if !new_fields.is_empty() {
        let g = store.schema_mut(kind).entry(group.to_string()).or_default();
        for (k, ty) in new_fields {
            g.entry(k.clone()).or_insert_with(|| field_descriptor(ty, &k));
        }
    }
    Outcome::Updated
}

async fn get_value(
    State(state): State<PendoState>,
    Path((kind, group, id, field)): Path<(String, String, String, String)>,
) -> ApiResult<Json<J>> {
    let kind = kind_of(&kind)?;
    let store = state.inner.store.read();
    let md = match kind {
        MetaKind::Visitor => store.visitor(&id).map(|v| v.metadata()),
        MetaKind::Account => store.account(&id).map(|a| a.metadata()),
    }
    .ok_or_else(|| ApiError::not_found(format!("{} not found", id_key(kind))))?;
    Ok(Json(md.field(&group.to_ascii_lowercase()).field(&field.to_ascii_lowercase()).to_json()))
}

async fn put_value(
    State(state): State<PendoState>,
    Extension(caller): Extension<Caller>,
    Path((kind, group, id, field)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    require_write(&caller)?;
    let kind = kind_of(&kind)?;
    let value: J = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body must be a raw JSON value: {e}")))?;
    let item = serde_json::json!({ id_key(kind): id, "values": { field.clone(): value } });
    let policy = state.inner.config.read().unknown_metadata_fields;
    let now = state.now_ms();
    let mut store = state.inner.store.write();
    // The do-not-process and guide opt-out flags live in the built-in `pendo` group.
    let policy = if group == "pendo" { UnknownFieldPolicy::Create } else { policy };
    match set_one(&mut store, kind, &group.to_ascii_lowercase(), &item, false, policy, now) {
        Outcome::Updated => Ok(StatusCode::OK.into_response()),
        Outcome::Missing => Err(ApiError::not_found(format!("{} not found", id_key(kind)))),
        Outcome::Failed => {
            Err(ApiError::bad_request(format!("cannot set {group}.{field}: unknown field or wrong type")))
        }
    }
}
