//! Entity reads: the catalogue lists (`/feature`, `/page`, `/guide`, `/tracktype`, `/report`,
//! each a top-level JSON array), single visitors and accounts, and visitor history.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;

use super::store::{DAY_MS, EventKind, Item, Store};
use super::val::{Obj, Val};
use super::{ApiError, ApiResult, PendoState};

pub fn routes() -> Router<PendoState> {
    Router::new()
        .route("/api/v1/feature", get(|s, q| list(s, q, Kind::Feature)))
        .route("/api/v1/page", get(|s, q| list(s, q, Kind::Page)))
        .route("/api/v1/guide", get(|s, q| list(s, q, Kind::Guide)))
        .route("/api/v1/tracktype", get(|s, q| list(s, q, Kind::TrackType)))
        .route("/api/v1/report", get(|s, q| list(s, q, Kind::Report)))
        .route("/api/v1/report/{id}/results.json", get(report_results))
        .route("/api/v1/visitor/{id}", get(visitor))
        .route("/api/v1/visitor/{id}/history", get(history))
        .route("/api/v1/account/{id}", get(account))
        .route("/api/v1/token/verify", get(|| async { Json(serde_json::json!({"valid": true})) }))
}

#[derive(Clone, Copy)]
enum Kind {
    Feature,
    Page,
    Guide,
    TrackType,
    Report,
}

fn docs(store: &Store, kind: Kind) -> Vec<(&str, i64, &Val)> {
    fn items(v: &[Item]) -> Vec<(&str, i64, &Val)> {
        v.iter().map(|i| (&*i.id, i.app_id, &i.doc)).collect()
    }
    match kind {
        Kind::Feature => items(&store.features),
        Kind::Page => items(&store.pages),
        Kind::TrackType => items(&store.track_types),
        Kind::Report => items(&store.reports),
        Kind::Guide => store.guides.iter().map(|g| (&*g.id, g.app_id, &g.doc)).collect(),
    }
}

async fn list(
    State(state): State<PendoState>,
    Query(q): Query<HashMap<String, String>>,
    kind: Kind,
) -> ApiResult<Response> {
    let store = state.inner.store.read();
    let all = docs(&store, kind);
    let app_filter: Option<i64> = match q.get("appId") {
        Some(a) if !q.contains_key("expand") => {
            Some(a.trim().parse().map_err(|_| ApiError::bad_request(format!("invalid appId {a:?}")))?)
        }
        _ => None,
    };
    let out: Vec<&Val> = match q.get("id").filter(|s| !s.is_empty()) {
        Some(ids) => {
            // One unknown id fails the whole request, as the Zendesk app's comment describes.
            let mut found = Vec::new();
            for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match all.iter().find(|(i, _, _)| *i == id) {
                    Some((_, _, d)) => found.push(*d),
                    None => return Err(ApiError::not_found(format!("no such id {id}"))),
                }
            }
            found
        }
        None => all.iter().filter(|(_, app, _)| app_filter.is_none_or(|a| a == *app)).map(|(_, _, d)| *d).collect(),
    };
    Ok(Json(out).into_response())
}

async fn report_results(State(state): State<PendoState>, Path(id): Path<String>) -> ApiResult<Response> {
    let pipeline = {
        let store = state.inner.store.read();
        let report =
            store.reports.iter().find(|r| *r.id == *id).ok_or_else(|| ApiError::not_found("report not found"))?;
        report.doc.path("aggregation.pipeline").to_json()
    };
    let body = serde_json::json!({"response": {"mimeType": "application/json"}, "request": {"pipeline": pipeline}});
    let out = super::aggregation::run_json(&state, &body).await?;
    Ok(Json(out.get("results").cloned().unwrap_or_default()).into_response())
}

/// Path ids are used as given; failing that, a base64 form is tried (the Postman collection shows
/// `/visitor/{b64_id}`, and how the server tells the forms apart is unknown).
fn resolve_id<'a, T>(raw: &str, lookup: impl Fn(&str) -> Option<&'a T>) -> Option<&'a T> {
    lookup(raw).or_else(|| {
        let engines = [
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::STANDARD,
        ];
        engines.iter().find_map(|e| {
            e.decode(raw.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| lookup(&s))
        })
    })
}

pub fn visitor_doc(store: &Store, v: &super::store::Visitor) -> Val {
    let mut o = Obj::new();
    o.insert("id".into(), Val::Str(v.id.clone()));
    let md = v.metadata();
    let ids = md.path("auto.accountids").clone();
    o.insert("accountIds".into(), if ids.is_null() { Val::arr(vec![]) } else { ids });
    o.insert("metadata".into(), md);
    let _ = store;
    Val::obj(o)
}

async fn visitor(State(state): State<PendoState>, Path(id): Path<String>) -> ApiResult<Json<Val>> {
    let store = state.inner.store.read();
    let v = resolve_id(&id, |k| store.visitor(k)).ok_or_else(|| ApiError::not_found("visitor not found"))?;
    Ok(Json(visitor_doc(&store, v)))
}

async fn account(State(state): State<PendoState>, Path(id): Path<String>) -> ApiResult<Json<Val>> {
    let store = state.inner.store.read();
    let a = resolve_id(&id, |k| store.account(k)).ok_or_else(|| ApiError::not_found("account not found"))?;
    let mut o = Obj::new();
    o.insert("id".into(), Val::Str(a.id.clone()));
    o.insert("metadata".into(), a.metadata());
    Ok(Json(Val::obj(o)))
}

fn parsed_ua(ua: &str) -> Val {
    let (name, version) = if ua.contains("Firefox") {
        ("Firefox", "125.0")
    } else if ua.contains("Chrome") {
        ("Chrome", "124.0")
    } else {
        ("Safari", "17.4")
    };
    let os = if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("Mac OS") {
        "Mac OS X"
    } else {
        "Linux"
    };
    Val::obj(Obj::from_iter([
        ("name".to_string(), Val::str(name)),
        ("version".to_string(), Val::str(version)),
        ("os".to_string(), Val::str(os)),
    ]))
}

/// One day of a visitor's activity from `starttime`, oldest first.
async fn history(
    State(state): State<PendoState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Val>>> {
    let start: i64 = q
        .get("starttime")
        .ok_or_else(|| ApiError::bad_request("missing starttime"))?
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request("starttime must be epoch milliseconds"))?;
    let store = state.inner.store.read();
    let v = resolve_id(&id, |k| store.visitor(k)).ok_or_else(|| ApiError::not_found("visitor not found"))?;
    let vidx = store.visitor_index.get(&v.id).copied().unwrap_or(u32::MAX);
    let end = start.saturating_add(DAY_MS);
    let mut items: Vec<(i64, Val)> = Vec::new();
    for kind in [EventKind::Page, EventKind::Feature] {
        let t = store.table(kind);
        for i in t.range(start, end) {
            if t.visitor(i) != vidx {
                continue;
            }
            let item = store.items(kind).get(t.item(i) as usize);
            let mut o = Obj::new();
            let ts = t.ts(i);
            let duration = i64::from(t.minutes(i)) * 60_000;
            o.insert("type".into(), Val::str(if kind == EventKind::Page { "page" } else { "feature" }));
            o.insert("ts".into(), Val::Int(ts));
            o.insert("lastTs".into(), Val::Int(ts.saturating_add(duration)));
            o.insert("duration".into(), Val::Int(duration));
            o.insert("parsedUserAgent".into(), parsed_ua(&v.net.user_agent()));
            let uri = item.map(|it| it.doc.path("rules").at(0).field("designerHint").clone()).unwrap_or_default();
            o.insert("untaggedUrl".into(), Val::Null);
            o.insert("uri".into(), uri);
            let id_key = if kind == EventKind::Page { "pageId" } else { "featureId" };
            o.insert(id_key.into(), item.map(|it| Val::Str(it.id.clone())).unwrap_or_default());
            o.insert("appId".into(), Val::Int(item.map_or(super::store::DEFAULT_APP_ID, |it| it.app_id)));
            items.push((ts, Val::obj(o)));
        }
    }
    let lo = store.guide_events.first_at(start);
    for e in store.guide_events.iter_from(lo).take_while(|e| e.ts < end) {
        if e.visitor != vidx {
            continue;
        }
        let Some(g) = store.guides.get(e.guide as usize) else {
            continue;
        };
        let mut o = Obj::new();
        o.insert("type".into(), Val::str("guide"));
        o.insert("ts".into(), Val::Int(e.ts));
        o.insert("lastTs".into(), Val::Int(e.ts));
        o.insert("duration".into(), Val::Int(0));
        o.insert("parsedUserAgent".into(), parsed_ua(&v.net.user_agent()));
        o.insert("guideId".into(), Val::Str(g.id.clone()));
        o.insert(
            "guideStepId".into(),
            g.step_ids.get(e.step as usize).map(|s| Val::Str(s.clone())).unwrap_or_default(),
        );
        o.insert("appId".into(), Val::Int(g.app_id));
        items.push((e.ts, Val::obj(o)));
    }
    items.sort_by_key(|(ts, _)| *ts);
    Ok(Json(items.into_iter().map(|(_, v)| v).collect()))
}
