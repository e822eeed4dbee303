//! `/__emulator/` admin endpoints for tests and demos: reset and seed data, dump accounts and
//! visitors, configure and fire webhooks, read usage, set the clock, faults and config, and
//! export the matching Salesforce org. They need no integration key and are not counted as API
//! calls.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value as J, json};

use super::clock::ClockUpdate;
use super::faults::FaultConfig;
use super::store::{Channel, EventKind, GuideEvent, GuideEventType, Item, NONE_U32, Segment, Store};
use super::val::Val;
use super::webhooks::{FireRequest, WebhookConfig};
use super::{ApiError, ApiResult, GenConfig, PendoConfig, PendoState};

pub fn routes() -> Router<PendoState> {
    Router::new()
        .route("/reset", post(reset))
        .route("/seed", post(seed))
        .route("/accounts", get(accounts))
        .route("/visitors", get(visitors))
        .route("/stats", get(stats))
        .route("/webhooks", get(get_webhooks).put(put_webhooks))
        .route("/webhooks/fire", post(fire))
        .route("/usage", get(usage).delete(reset_usage))
        .route("/clock", get(get_clock).put(put_clock))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/config", get(get_config).put(put_config))
        .route("/salesforce-org", get(salesforce_org))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// Regenerates from the given generator settings, the previous ones, or empties the store.
async fn reset(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<J>> {
    let gc: Option<GenConfig> = if body.iter().all(u8::is_ascii_whitespace) {
        state.inner.generated_from.read().clone()
    } else {
        Some(parse(&body)?)
    };
    state.inner.usage.reset();
    state.inner.webhooks.clear();
    match gc {
        Some(g) => {
            let st = state.clone();
            let stats = tokio::task::spawn_blocking(move || st.regenerate(&g))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(Json(json!({"generated": stats})))
        }
        None => {
            *state.inner.store.write() = super::generate::empty_store();
            Ok(Json(json!({"generated": null})))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedBody {
    #[serde(default)]
    accounts: Vec<J>,
    #[serde(default)]
    visitors: Vec<J>,
    #[serde(default)]
    features: Vec<J>,
    #[serde(default)]
    pages: Vec<J>,
    #[serde(default)]
    track_types: Vec<J>,
    #[serde(default)]
    guides: Vec<J>,
    #[serde(default)]
    reports: Vec<J>,
    /// Rollup rows: `{kind: page|feature|track, id, visitorId, accountId, time, numEvents, numMinutes}`.
    #[serde(default)]
    events: Vec<J>,
    /// `{guideId, visitorId, accountId, time, type, guideStepId?, pollId?, response?, channel?}`.
    #[serde(default)]
    guide_events: Vec<J>,
    #[serde(default)]
    segments: Vec<J>,
}

fn s<'a>(v: &'a J, k: &str) -> ApiResult<&'a str> {
    v.get(k).and_then(J::as_str).ok_or_else(|| ApiError::bad_request(format!("{k} (string) is required in {v}")))
}

fn merge_metadata(base: &mut Val, md: Option<&J>) {
    let Some(J::Object(groups)) = md else { return };
    let Val::Obj(root) = base else { return };
    let root = Arc::make_mut(root);
    for (g, fields) in groups {
        if let J::Object(fields) = fields {
            for (k, v) in fields {
                Val::set_path(root, &format!("{g}.{k}"), Val::from(v));
            }
        }
    }
}

fn catalog(v: &J, kind: &str) -> ApiResult<Item> {
    let id = s(v, "id")?;
    let mut doc = v.clone();
    if let Some(o) = doc.as_object_mut() {
        o.entry("kind").or_insert(json!(kind));
        o.entry("appId").or_insert(json!(super::store::DEFAULT_APP_ID));
        o.entry("lastUpdatedAt").or_insert(json!(0));
    }
    let app_id = doc.get("appId").and_then(J::as_i64).unwrap_or(super::store::DEFAULT_APP_ID);
    Ok(Item { id: Arc::from(id), app_id, doc: Val::from(&doc) })
}

fn upsert_item(list: &mut Vec<Item>, item: Item) {
    match list.iter_mut().find(|i| i.id == item.id) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// Features, pages, track types, reports and guides.
type Catalog = (Vec<Item>, Vec<Item>, Vec<Item>, Vec<Item>, Vec<super::store::Guide>);

/// What a seed changed, so that a body refused halfway leaves the store as it was (seeding is
/// all-or-nothing) without first copying a store that may hold a million accounts.
struct SeedUndo {
    mark: super::store::StoreMark,
    visitors: Vec<(u32, super::store::Visitor)>,
    accounts: Vec<(u32, super::store::Account)>,
    catalog: Catalog,
    segments: Vec<(String, Option<Segment>)>,
}

impl SeedUndo {
    fn new(store: &Store) -> Self {
        SeedUndo {
            mark: store.mark(),
            visitors: Vec::new(),
            accounts: Vec::new(),
            // The catalogue is a few dozen documents: kept whole.
            catalog: (
                store.features.clone(),
                store.pages.clone(),
                store.track_types.clone(),
                store.reports.clone(),
                store.guides.clone(),
            ),
            segments: Vec::new(),
        }
    }

    fn restore(self, store: &mut Store) {
        for (id, old) in self.segments.into_iter().rev() {
            match old {
                Some(seg) => store.segments.insert(id, seg),
                None => store.segments.remove(&id),
            };
        }
        (store.features, store.pages, store.track_types, store.reports, store.guides) = self.catalog;
        store.rewind(self.mark);
        // Newest first, so an entity replaced twice ends as it was before the first.
        for (i, old) in self.visitors.into_iter().rev() {
            store.visitors[i as usize] = old;
        }
        for (i, old) in self.accounts.into_iter().rev() {
            store.accounts[i as usize] = old;
        }
    }
}

fn apply_seed(store: &mut Store, body: SeedBody, now: i64) -> ApiResult<J> {
    let mut undo = SeedUndo::new(store);
    match seed_into(store, body, now, &mut undo) {
        Ok(out) => Ok(out),
        Err(e) => {
            undo.restore(store);
            Err(e)
        }
    }
}

fn seed_into(store: &mut Store, body: SeedBody, now: i64, undo: &mut SeedUndo) -> ApiResult<J> {
    for a in &body.accounts {
        let id = s(a, "accountId").or_else(|_| s(a, "id"))?;
        let old = store.account(id).cloned();
        let mut acc = old.clone().unwrap_or_else(|| super::metadata::new_account(id, now));
        merge_metadata(acc.metadata_mut(), a.get("metadata"));
        let i = store.upsert_account(acc);
        undo.accounts.extend(old.map(|o| (i, o)));
    }
    for v in &body.visitors {
        let id = s(v, "visitorId").or_else(|_| s(v, "id"))?;
        let old = store.visitor(id).cloned();
        let mut vis = old.clone().unwrap_or_else(|| super::metadata::new_visitor(id, now));
        if let Some(acc) = v.get("accountId").and_then(J::as_str) {
            if store.account(acc).is_none() {
                store.upsert_account(super::metadata::new_account(acc, now));
            }
            if let Val::Obj(o) = vis.metadata_mut() {
                let o = Arc::make_mut(o);
                Val::set_path(o, "auto.accountid", Val::str(acc));
                Val::set_path(o, "auto.accountids", Val::arr(vec![Val::str(acc)]));
            }
        }
        merge_metadata(vis.metadata_mut(), v.get("metadata"));
        let i = store.upsert_visitor(vis);
        undo.visitors.extend(old.map(|o| (i, o)));
    }
    for f in &body.features {
        let item = catalog(f, "Feature")?;
        upsert_item(&mut store.features, item);
    }
    for p in &body.pages {
        let item = catalog(p, "Page")?;
        upsert_item(&mut store.pages, item);
    }
    for t in &body.track_types {
        let item = catalog(t, "TrackType")?;
        upsert_item(&mut store.track_types, item);
    }
    for r in &body.reports {
        let item = catalog(r, "Report")?;
        upsert_item(&mut store.reports, item);
    }
    for g in &body.guides {
        let item = catalog(g, "Guide")?;
        let ids = |key: &str| -> Vec<Arc<str>> {
            g.get(key)
                .and_then(J::as_array)
                .map(|a| a.iter().filter_map(|x| x.get("id").and_then(J::as_str)).map(Arc::from).collect())
                .unwrap_or_default()
        };
        let guide = super::store::Guide {
            id: item.id.clone(),
            app_id: item.app_id,
            doc: item.doc,
            step_ids: ids("steps"),
            poll_ids: ids("polls"),
        };
        match store.guides.iter_mut().find(|x| x.id == guide.id) {
            Some(slot) => *slot = guide,
            None => store.guides.push(guide),
        }
    }
    let idx = |store: &Store, v: &J| -> ApiResult<(u32, u32)> {
        let vid = s(v, "visitorId")?;
        let aid = s(v, "accountId")?;
        let vi =
            *store.visitor_index.get(vid).ok_or_else(|| ApiError::bad_request(format!("unknown visitor {vid}")))?;
        let ai =
            *store.account_index.get(aid).ok_or_else(|| ApiError::bad_request(format!("unknown account {aid}")))?;
        Ok((vi, ai))
    };
    let time =
        |v: &J| v.get("time").and_then(J::as_i64).ok_or_else(|| ApiError::bad_request("time (epoch ms) is required"));
    for e in &body.events {
        let kind = match e.get("kind").and_then(J::as_str).unwrap_or("page") {
            "page" => EventKind::Page,
            "feature" => EventKind::Feature,
            "track" => EventKind::Track,
            k => return Err(ApiError::bad_request(format!("unknown event kind {k}"))),
        };
        let item_id = s(e, "id")?;
        let item =
            store.item_index(kind, item_id).ok_or_else(|| ApiError::bad_request(format!("unknown item {item_id}")))?;
        let (vi, ai) = idx(store, e)?;
        let hour = time(e)?.div_euclid(super::store::HOUR_MS).saturating_mul(super::store::HOUR_MS);
        let n = |k: &str| e.get(k).and_then(J::as_u64).map_or(0, |x| u32::try_from(x).unwrap_or(u32::MAX));
        let table = match kind {
            EventKind::Page => &mut store.page_rows,
            EventKind::Feature => &mut store.feature_rows,
            EventKind::Track => &mut store.track_rows,
        };
        table.push(hour, vi, ai, item, n("numEvents").max(1), n("numMinutes"));
    }
    for e in &body.guide_events {
        let gid = s(e, "guideId")?;
        let g = store.guide_index(gid).ok_or_else(|| ApiError::bad_request(format!("unknown guide {gid}")))?;
        let (vi, ai) = idx(store, e)?;
        let ty = e.get("type").and_then(J::as_str).unwrap_or("guideSeen");
        let kind =
            GuideEventType::parse(ty).ok_or_else(|| ApiError::bad_request(format!("unknown guide event type {ty}")))?;
        let gd = &store.guides[g as usize];
        let pos = |list: &[Arc<str>], key: &str| -> u32 {
            e.get(key)
                .and_then(J::as_str)
                .and_then(|id| list.iter().position(|x| &**x == id))
                .map_or(NONE_U32, |p| p as u32)
        };
        let step = pos(&gd.step_ids, "guideStepId");
        let poll = pos(&gd.poll_ids, "pollId");
        let channel = if e.get("channel").and_then(J::as_str) == Some("email") { Channel::Email } else { Channel::Web };
        let ev = GuideEvent {
            ts: time(e)?,
            visitor: vi,
            account: ai,
            guide: g,
            step,
            kind,
            poll,
            response: store.responses.intern(e.get("response").map(Val::from).unwrap_or_default()),
            channel,
        };
        store.guide_events.push(ev);
    }
    for sg in &body.segments {
        let id = s(sg, "id")?.to_string();
        let visitors = sg
            .get("visitors")
            .and_then(J::as_array)
            .map(|a| a.iter().filter_map(J::as_str).map(Arc::from).collect())
            .unwrap_or_default();
        let name = sg.get("name").and_then(J::as_str).unwrap_or(&id).to_string();
        let old = store.segments.insert(id.clone(), Segment { id: id.clone(), name, visitors });
        undo.segments.push((id, old));
    }
    store.sort_events();
    Ok(json!({
        "accounts": store.accounts.len(),
        "visitors": store.visitors.len(),
        "eventRows": store.event_row_count(),
        "guideEvents": store.guide_events.len(),
    }))
}

/// Seeding is all-or-nothing: a refused body leaves the store as it was (see [`SeedUndo`]).
async fn seed(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<J>> {
    let body: SeedBody = parse(&body)?;
    let now = state.now_ms();
    let mut guard = state.inner.store.write();
    let out = apply_seed(&mut guard, body, now)?;
    guard.warm_days();
    Ok(Json(out))
}

fn dump<'a>(items: impl Iterator<Item = (&'a str, Val)>, key: &str) -> Json<J> {
    Json(J::Array(items.map(|(id, md)| json!({ key: id, "metadata": md.to_json() })).collect()))
}

async fn accounts(State(state): State<PendoState>) -> Json<J> {
    let store = state.inner.store.read();
    dump(store.accounts.iter().map(|a| (&*a.id, a.metadata())), "accountId")
}

async fn visitors(State(state): State<PendoState>) -> Json<J> {
    let store = state.inner.store.read();
    dump(store.visitors.iter().map(|v| (&*v.id, v.metadata())), "visitorId")
}

async fn stats(State(state): State<PendoState>) -> Json<J> {
    let store = state.inner.store.read();
    let polls = store.guide_events.iter().filter(|e| e.kind == GuideEventType::PollResponse).count();
    Json(json!({
        "accounts": store.accounts.len(),
        "visitors": store.visitors.len(),
        "identifiedVisitors": store.visitors.iter().filter(|v| !super::store::is_anonymous(&v.id)).count(),
        "features": store.features.len(),
        "pages": store.pages.len(),
        "guides": store.guides.len(),
        "trackTypes": store.track_types.len(),
        "reports": store.reports.len(),
        "pageRows": store.page_rows.len(),
        "featureRows": store.feature_rows.len(),
        "trackRows": store.track_rows.len(),
        "guideEvents": store.guide_events.len(),
        "pollResponses": polls,
        "approxBytes": store.approx_bytes(),
        "generatedFrom": state.inner.generated_from.read().clone(),
    }))
}

async fn get_webhooks(State(state): State<PendoState>) -> Json<J> {
    Json(json!({
        "config": state.inner.webhooks.config(),
        "deliveries": state.inner.webhooks.deliveries(),
    }))
}

/// `null` removes the target.
async fn put_webhooks(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<J>> {
    let cfg: Option<WebhookConfig> = parse(&body)?;
    if let Some(c) = &cfg {
        url::Url::parse(&c.url).map_err(|e| ApiError::bad_request(format!("invalid url: {e}")))?;
    }
    state.inner.webhooks.set(cfg.clone());
    Ok(Json(json!({ "config": cfg })))
}

async fn fire(State(state): State<PendoState>, body: Bytes) -> ApiResult<(StatusCode, Json<J>)> {
    let req: FireRequest = parse(&body)?;
    let out = super::webhooks::fire(&state, req)?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

async fn usage(State(state): State<PendoState>) -> Json<super::usage::UsageReport> {
    Json(state.inner.usage.report())
}

async fn reset_usage(State(state): State<PendoState>) -> StatusCode {
    state.inner.usage.reset();
    StatusCode::NO_CONTENT
}

async fn get_clock(State(state): State<PendoState>) -> Json<J> {
    Json(json!({"now": state.now_ms(), "state": state.inner.clock.state()}))
}

async fn put_clock(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<J>> {
    let u: ClockUpdate = parse(&body)?;
    let st = state.inner.clock.update(&u);
    Ok(Json(json!({"now": state.now_ms(), "state": st})))
}

async fn get_faults(State(state): State<PendoState>) -> Json<FaultConfig> {
    Json(state.inner.faults.config())
}

async fn put_faults(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<FaultConfig>> {
    let f: FaultConfig = parse(&body)?;
    state.inner.faults.set(f.clone());
    Ok(Json(f))
}

async fn get_config(State(state): State<PendoState>) -> Json<PendoConfig> {
    Json(state.config())
}

async fn put_config(State(state): State<PendoState>, body: Bytes) -> ApiResult<Json<PendoConfig>> {
    let c: PendoConfig = parse(&body)?;
    state.inner.faults.set(c.faults.clone());
    state.inner.store.write().set_day_timezone(i64::from(c.timezone_offset_minutes) * 60_000);
    *state.inner.config.write() = c.clone();
    Ok(Json(c))
}

async fn salesforce_org(State(state): State<PendoState>) -> ApiResult<Json<super::generate::SalesforceOrg>> {
    let st = state.clone();
    let org = tokio::task::spawn_blocking(move || st.salesforce_org())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(org))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pendo::generate::{GenConfig, generate};

    /// Everything a seed can touch, as text.
    fn fingerprint(s: &Store) -> String {
        let rows = |t: &super::super::store::EventTable| {
            (0..t.len())
                .map(|i| (t.ts(i), t.visitor(i), t.account(i), t.item(i), t.events(i), t.minutes(i)))
                .collect::<Vec<_>>()
        };
        let mut segments: Vec<_> =
            s.segments.iter().map(|(k, v)| (k.clone(), v.name.clone(), v.visitors.len())).collect();
        segments.sort();
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            s.visitors.iter().map(|v| (v.id.to_string(), v.metadata().to_json())).collect::<Vec<_>>(),
            s.accounts.iter().map(|a| (a.id.to_string(), a.metadata().to_json())).collect::<Vec<_>>(),
            s.visitor_index.len() + s.account_index.len(),
            [&s.features, &s.pages, &s.track_types, &s.reports]
                .map(|l| l.iter().map(|i| i.doc.to_json()).collect::<Vec<_>>()),
            s.guides.iter().map(|g| g.doc.to_json()).collect::<Vec<_>>(),
            rows(&s.page_rows),
            rows(&s.feature_rows),
            rows(&s.track_rows),
            s.guide_events.iter().map(|e| (e.ts, e.visitor, e.account, e.guide, e.response)).collect::<Vec<_>>(),
            segments,
        )
    }

    /// A body refused at its last part leaves no trace of the parts before it, whatever they
    /// added or replaced.
    #[test]
    fn a_refused_seed_leaves_the_store_as_it_was() {
        let gc =
            GenConfig { seed: 9, accounts: 30, days: 5, anchor_day_ms: Some(1_767_225_600_000), ..Default::default() };
        let mut store = generate(&gc).store;
        let before = fingerprint(&store);
        let visitor = store.visitors[3].id.to_string();
        let account = store.accounts[2].id.to_string();
        let guide = store.guides[1].id.to_string();
        let page = store.pages[0].id.to_string();
        let body: SeedBody = serde_json::from_value(json!({
            "accounts": [{"accountId": account, "metadata": {"custom": {"csm": "Ann"}}}, {"accountId": "brand-new"}],
            "visitors": [{"visitorId": visitor, "accountId": "another-new", "metadata": {"agent": {"role": "x"}}},
                         {"visitorId": "new-visitor", "accountId": "brand-new"}],
            "pages": [{"id": page, "name": "Renamed"}, {"id": "new-page", "name": "New"}],
            "guides": [{"id": "new-guide", "name": "G"}],
            "events": [{"kind": "page", "id": "new-page", "visitorId": "new-visitor", "accountId": "brand-new",
                        "time": 1_800_000_000_123i64, "numEvents": 4_000_000_000u64},
                       {"kind": "feature", "id": store.features[0].id.to_string(), "visitorId": visitor,
                        "accountId": account, "time": 5}],
            "guideEvents": [{"guideId": guide, "visitorId": visitor, "accountId": account, "time": 7,
                             "type": "pollResponse", "response": "a new answer"}],
            "segments": [{"id": "seg-enterprise-users", "visitors": []}, {"name": "no id"}],
        }))
        .unwrap();
        assert!(apply_seed(&mut store, body, 1).is_err());
        assert_eq!(fingerprint(&store), before);
        // The same body without the refused part is taken whole.
        let ok: SeedBody = serde_json::from_value(json!({"accounts": [{"accountId": "brand-new"}]})).unwrap();
        apply_seed(&mut store, ok, 1).unwrap();
        assert!(store.account("brand-new").is_some());
    }
}
