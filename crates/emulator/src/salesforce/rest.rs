//! The REST entry point for everything under `/services/data/`: version check, bearer check,
//! fault injection, API-call accounting, body limits, then dispatch to the API area that owns
//! the resource (sObjects, Collections, Composite, sObject Tree, query, search, Bulk). Composite subrequests re-enter at [`dispatch`], inside the caller's lock and
//! without being counted again, as Salesforce counts a Composite request once.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::accounting::CallKind;
use super::response::Resp;
use super::state::SfState;
use super::store::{Db, WriteCtx};
use super::{bulk, collections, composite, oauth, query, search, sobjects, tree};
use crate::server::DropConnection;

/// Who is calling, at which API version: what every handler needs besides the data.
#[derive(Debug, Clone)]
pub struct CallCtx {
    pub user_id: String,
    /// The version as written in the URL without the `v`, e.g. `62.0`.
    pub version: String,
    pub version_num: f64,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl CallCtx {
    pub fn write_ctx(&self) -> WriteCtx {
        WriteCtx { user_id: self.user_id.clone(), now: self.now }
    }
}

/// One data-API request, already authenticated and read.
#[derive(Debug)]
pub struct DataRequest<'a> {
    pub method: Method,
    /// The path after `/services/data/vXX.X/`, without leading or trailing slashes, split.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl DataRequest<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object, or the JSON_PARSER_ERROR response Salesforce gives.
    pub fn json_object(&self) -> Result<Map<String, Value>, Resp> {
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Resp::error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of an sObject from a non-object value",
            )),
            Err(e) if self.body.is_empty() => Err(Resp::error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                format!("No content to map due to end-of-input: {e}"),
            )),
            Err(e) => Err(Resp::bad_json(e)),
        }
    }

    pub fn json_value(&self) -> Result<Value, Resp> {
        serde_json::from_slice::<Value>(self.body).map_err(Resp::bad_json)
    }
}

/// Splits `/services/data/...` into the version and the rest of the path.
fn split_path(path: &str) -> Option<(&str, Vec<String>)> {
    let rest = path.strip_prefix("/services/data")?;
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Some(("", Vec::new()));
    }
    let (version, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let segments = tail
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    Some((version, segments))
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// The versions Salesforce lists at `/services/data/`, oldest first.
pub fn versions_json(st: &SfState) -> Value {
    let mut out = Vec::new();
    let mut v = st.config.min_version;
    while v <= st.config.max_version + 0.001 {
        out.push(
            json!({"label": release_label(v), "url": format!("/services/data/v{v:.1}"), "version": format!("{v:.1}")}),
        );
        v += 1.0;
    }
    Value::Array(out)
}

/// Release names follow three releases a year; v20.0 was Winter '11.
fn release_label(v: f64) -> String {
    let n = (v as i64) - 20;
    let season = ["Winter", "Spring", "Summer"][n.rem_euclid(3) as usize];
    let year = 11 + n.div_euclid(3);
    format!("{season} '{year:02}")
}

fn parse_version(st: &SfState, raw: &str) -> Option<(String, f64)> {
    let num = raw.strip_prefix('v')?;
    let (major, minor) = num.split_once('.')?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) || minor != "0" {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    // Versions from 7.0 exist; the caller answers 410 for retired ones.
    (n >= 7.0 && n <= st.config.max_version).then(|| (num.to_string(), n))
}

/// What kind of call a path is, for accounting.
fn kind_of(segments: &[String]) -> CallKind {
    match segments.first().map(String::as_str) {
        Some("query") | Some("queryAll") => CallKind::Query,
        Some("composite") if segments.get(1).map(String::as_str) == Some("sobjects") => CallKind::Collections,
        Some("composite") => CallKind::Composite,
        Some("jobs") => CallKind::Bulk,
        _ => CallKind::Rest,
    }
}

/// `ANY /services/data/*`.
pub async fn handle(State(st): State<SfState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some((raw_version, segments)) = split_path(parts.uri.path()) else {
        return Resp::not_found().into_response();
    };
    if raw_version.is_empty() {
        // The Versions resource needs no session and is never counted.
        return Resp::ok(versions_json(&st)).into_response();
    }
    let Some((version, version_num)) = parse_version(&st, raw_version) else {
        return Resp::not_found().into_response();
    };
    if version_num < st.config.min_version {
        // Retired versions answer 410 GONE (the body's wording is not documented).
        return Resp::error(
            StatusCode::GONE,
            "UNSUPPORTED_API_VERSION",
            format!("API version {version} has been retired and is no longer supported."),
        )
        .into_response();
    }
    let Some(session) = oauth::authenticate(&st, &parts.headers) else {
        return oauth::invalid_session().into_response();
    };
    let Some(_in_flight) = st.enter_request() else {
        return Resp::error(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")
            .into_response();
    };
    let decision = st.faults.lock().decide();
    if decision.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(decision.latency_ms)).await;
    }
    if decision.drop_connection {
        let mut resp = StatusCode::OK.into_response();
        resp.extensions_mut().insert(DropConnection);
        return resp;
    }
    if decision.server_unavailable {
        return Resp::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable, please try again later",
        )
        .into_response();
    }
    let now = st.clock.now();
    let kind = kind_of(&segments);
    let limit_info = {
        let mut acc = st.accounting.lock();
        if !acc.try_consume(kind, now) {
            let info = acc.limit_info(now);
            return Resp::error(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
                .with_header("Sforce-Limit-Info", info)
                .into_response();
        }
        acc.limit_info(now)
    };
    let max_body = if bulk::is_upload(&parts.method, &segments) {
        st.config.max_bulk_upload_bytes
    } else {
        st.config.max_body_bytes
    };
    let body = match to_bytes(Body::new(body), max_body).await {
        Ok(b) => b,
        Err(_) => {
            return Resp::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "REQUEST_ENTITY_TOO_LARGE",
                format!("Request body is larger than the maximum of {max_body} bytes"),
            )
            .with_header("Sforce-Limit-Info", limit_info)
            .into_response();
        }
    };
    let ctx = CallCtx { user_id: session.user_id, version, version_num, now };
    let request = DataRequest {
        method: parts.method,
        segments,
        query: parse_query(parts.uri.query()),
        headers: &parts.headers,
        body: &body,
    };
    let resp = {
        let mut db = st.db.lock();
        dispatch(&st, &ctx, &mut db, &request)
    };
    resp.with_header("Sforce-Limit-Info", limit_info).into_response()
}

/// Routes one data-API request to the area that owns it. Synchronous and under the caller's
/// lock, so Composite can run subrequests in one transaction.
pub fn dispatch(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>) -> Resp {
    if ctx.version_num < st.config.min_version {
        return Resp::error(
            StatusCode::GONE,
            "UNSUPPORTED_API_VERSION",
            format!("API version {} has been retired and is no longer supported.", ctx.version),
        );
    }
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        [] => match req.method {
            Method::GET => resources(st, ctx),
            _ => Resp::method_not_allowed(&req.method, "GET"),
        },
        ["limits"] => match req.method {
            Method::GET => Resp::ok(st.accounting.lock().limits_json(ctx.now)),
            _ => Resp::method_not_allowed(&req.method, "GET"),
        },
        ["limits", "recordCount"] => record_count(db, req),
        ["sobjects", ..] => sobjects::handle(st, ctx, db, req, &seg[1..]),
        ["composite", "sobjects", ..] => collections::handle(st, ctx, db, req, &seg[2..]),
        ["composite", "tree", object] => tree::handle(ctx, db, req, object),
        ["composite"] => composite::handle(st, ctx, db, req),
        ["search"] => search::handle(ctx, db, req),
        ["query", rest @ ..] => query::handle(st, ctx, db, req, false, rest),
        ["queryAll", rest @ ..] => query::handle(st, ctx, db, req, true, rest),
        ["jobs", rest @ ..] => bulk::handle(st, ctx, db, req, rest),
        _ => Resp::not_found(),
    }
}

fn resources(st: &SfState, ctx: &CallCtx) -> Resp {
    let base = format!("/services/data/v{}", ctx.version);
    let mut m = Map::new();
    for r in ["sobjects", "query", "queryAll", "search", "limits", "composite", "jobs/ingest", "jobs/query"] {
        m.insert(r.to_string(), json!(format!("{base}/{r}")));
    }
    m.insert("identity".into(), json!(oauth::identity_url(st, &ctx.user_id)));
    Resp::ok(Value::Object(m))
}

fn record_count(db: &Db, req: &DataRequest<'_>) -> Resp {
    let names = req.param("sObjects").unwrap_or("");
    let mut out = Vec::new();
    for name in names.split(',').filter(|s| !s.is_empty()) {
        let Some(obj) = db.schema.object(name) else {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                format!("sObject type '{name}' is not supported."),
            );
        };
        let n = db.records(&obj.name).filter(|r| !r.deleted).count();
        out.push(json!({"count": n, "name": obj.name}));
    }
    Resp::ok(json!({"sObjects": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_labels() {
        assert_eq!(release_label(20.0), "Winter '11");
        assert_eq!(release_label(59.0), "Winter '24");
        assert_eq!(release_label(60.0), "Spring '24");
        assert_eq!(release_label(66.0), "Spring '26");
    }

    #[test]
    fn paths_split() {
        let (v, s) = split_path("/services/data/v60.0/sobjects/Account/").unwrap();
        assert_eq!(v, "v60.0");
        assert_eq!(s, vec!["sobjects", "Account"]);
        assert_eq!(split_path("/services/data/").map(|x| x.0), Some(""));
    }
}
