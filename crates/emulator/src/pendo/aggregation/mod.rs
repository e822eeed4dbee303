//! `POST /api/v1/aggregation`: Pendo's query API as a real engine over the stored data.
//!
//! Envelope errors (not JSON, no `request.pipeline`) answer 422 with a message; pipeline errors
//! (unknown source or operator, malformed expression, bad timeSeries) answer 400. Queries run on
//! the blocking pool so a large scan never stalls other connections.
//!
//! - [`expr`]: the expression language.
//! - [`source`]: sources and timeSeries windows; an event scan feeding a group hands it the
//!   rows it picked as a bitmap, filters applied, instead of listing them.
//! - [`row`]: lazy rows over the columnar event tables.
//! - [`ops`]: compilation and execution of the operators.
//! - [`plan`]: moves keyset filters, id sorts and limits into the source scan.
//! - [`fast`]: the columnar group-by used when every input is an event rollup, a group of its
//!   result without building the intermediate rows, and a sorted page of it building only the
//!   page's rows.

pub mod expr;
pub mod fast;
pub mod ops;
pub mod plan;
pub mod row;
pub mod source;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value as J;

use super::store::Store;
use super::{ApiError, ApiResult, PendoState};

pub fn routes() -> Router<PendoState> {
    Router::new().route(
        "/api/v1/aggregation",
        post(handle)
            .get(|| async { ApiError::bad_request("aggregation requires POST with a JSON body").into_response() }),
    )
}

async fn handle(State(state): State<PendoState>, body: Bytes) -> Response {
    let parsed: J = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("invalid JSON body: {e}")).into_response(),
    };
    match run_bytes(&state, parsed).await {
        Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], Body::from(bytes))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Everything a query needs from the state, captured before moving to the blocking pool.
struct Query {
    pipeline: J,
    now: i64,
    tz_ms: i64,
    count_distinct: bool,
    max_rows: usize,
}

fn envelope(state: &PendoState, body: J) -> ApiResult<Query> {
    let request = body.get("request").filter(|r| r.is_object()).ok_or_else(|| {
        ApiError::unprocessable("body must be {\"response\": {...}, \"request\": {\"pipeline\": [...]}}")
    })?;
    let pipeline = request
        .get("pipeline")
        .filter(|p| p.is_array())
        .cloned()
        .ok_or_else(|| ApiError::unprocessable("request.pipeline must be a list of stages"))?;
    let cfg = state.inner.config.read();
    Ok(Query {
        pipeline,
        now: state.now_ms(),
        tz_ms: i64::from(cfg.timezone_offset_minutes) * 60_000,
        count_distinct: cfg.count_distinct,
        max_rows: cfg.max_result_rows,
    })
}

/// Runs a compiled query against a store and returns the response document, for callers that
/// already hold the data (benchmarks, tests).
///
/// # Errors
/// A message describing why the pipeline was rejected.
pub fn execute(
    store: &Store,
    pipeline: &J,
    now: i64,
    tz_ms: i64,
    count_distinct: bool,
) -> Result<(Option<i64>, Vec<row::Row>, row::Period, u64), String> {
    let app_ids: Vec<i64> = store.apps.iter().map(|(id, _)| *id).collect();
    let opts = ops::Opts { now, tz_ms, app_ids: &app_ids, count_distinct, optimize: true };
    let compiled = ops::compile(pipeline, &opts)?;
    let out = ops::run(&compiled, store, &opts)?;
    Ok((out.start_time, out.rows, out.period, out.scanned))
}

fn run_sync(state: &PendoState, q: &Query) -> ApiResult<Vec<u8>> {
    let store = state.inner.store.read();
    let began = std::time::Instant::now();
    let (start, rows, period, scanned) =
        execute(&store, &q.pipeline, q.now, q.tz_ms, q.count_distinct).map_err(ApiError::bad_request)?;
    state.inner.usage.add_rows_scanned(scanned);
    if rows.len() > q.max_rows {
        return Err(ApiError::bad_request(format!(
            "aggregation returned {} rows, more than the limit of {}; narrow the time range",
            rows.len(),
            q.max_rows
        )));
    }
    let app_ids: Vec<i64> = store.apps.iter().map(|(id, _)| *id).collect();
    let ctx = row::Ctx { store: &store, period, tz_ms: q.tz_ms, now: q.now, app_ids, count_distinct: q.count_distinct };
    // Each row is built as it is written and dropped after: a page of a million rows never
    // exists as a million row objects beside its bytes.
    struct Results<'a> {
        rows: &'a [row::Row],
        ctx: &'a row::Ctx<'a>,
    }
    impl serde::Serialize for Results<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.rows.iter().map(|r| super::val::Val::Obj(r.materialize(self.ctx))))
        }
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Resp<'a> {
        start_time: i64,
        results: Results<'a>,
    }
    let results = Results { rows: &rows, ctx: &ctx };
    let executed = began.elapsed();
    let bytes = serde_json::to_vec(&Resp { start_time: start.unwrap_or(q.now), results })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding results: {e}")))?;
    // Where a slow extraction's time goes: the scan and grouping, or writing the answer.
    tracing::debug!(
        source = %q.pipeline.get(0).map(J::to_string).unwrap_or_default(),
        rows = rows.len(),
        scanned,
        bytes = bytes.len(),
        execute_ms = executed.as_millis() as u64,
        encode_ms = (began.elapsed() - executed).as_millis() as u64,
        "aggregation answered"
    );
    Ok(bytes)
}

async fn run_bytes(state: &PendoState, body: J) -> ApiResult<Vec<u8>> {
    let q = envelope(state, body)?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || run_sync(&st, &q))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
}

/// Runs an aggregation body and returns the parsed response (used by report results).
///
/// # Errors
/// The same errors the HTTP endpoint answers with.
pub async fn run_json(state: &PendoState, body: &J) -> ApiResult<J> {
    let bytes = run_bytes(state, body.clone()).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding results: {e}")))
}
