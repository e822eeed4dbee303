//! Composite (`/composite`): up to 25 subrequests in one API call, executed in order, later ones
//! referring to earlier results with `@{referenceId.path}`. With `allOrNone` the whole request is
//! one transaction: the first failure rolls everything back and every other subrequest answers
//! `PROCESSING_HALTED`. Without it, only subrequests that depend on a failed one are skipped.

use std::collections::HashMap;

use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::response::Resp;
use super::rest::{CallCtx, DataRequest, dispatch};
use super::state::SfState;
use super::store::Db;

const MAX_SUBREQUESTS: usize = 25;
/// Of the 25, at most five may be queries or sObject Collections requests.
const MAX_QUERY_OR_COLLECTIONS: usize = 5;

/// The outer request's headers with a subrequest's `httpHeaders` set over them (values that
/// are not strings, or not valid header text, are left out).
fn with_sub_headers(outer: &HeaderMap, sub: Option<&Map<String, Value>>) -> HeaderMap {
    let mut headers = outer.clone();
    for (name, value) in sub.into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(http::header::HeaderValue::from_str),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompositeBody {
    #[serde(default)]
    all_or_none: bool,
    #[serde(default)]
    #[allow(dead_code)]
    collate_subrequests: Option<bool>,
    composite_request: Vec<SubRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubRequest {
    method: String,
    url: String,
    reference_id: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    http_headers: Option<Map<String, Value>>,
}

fn halted(message: String) -> Value {
    json!([{"errorCode": "PROCESSING_HALTED", "message": message}])
}

fn valid_reference_id(r: &str) -> bool {
    r.starts_with(|c: char| c.is_ascii_alphanumeric()) && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>) -> Resp {
    if req.method != Method::POST {
        return Resp::method_not_allowed(&req.method, "POST");
    }
    let body: CompositeBody = match serde_json::from_slice(req.body) {
        Ok(b) => b,
        Err(e) => return Resp::bad_json(e),
    };
    let subs = body.composite_request;
    if subs.is_empty() {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_REQUEST",
            "compositeRequest must contain at least one subrequest",
        );
    }
    if subs.len() > MAX_SUBREQUESTS {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_REQUEST",
            format!("Composite request can contain a maximum of {MAX_SUBREQUESTS} subrequests"),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut heavy = 0;
    for s in &subs {
        if !valid_reference_id(&s.reference_id) {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                format!(
                    "Provided referenceId ('{}') must start with a letter or a number, and it can contain only letters, numbers and underscores ('_').",
                    s.reference_id
                ),
            );
        }
        if !seen.insert(s.reference_id.clone()) {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "INVALID_BATCH_REQUEST",
                format!("Duplicate referenceId provided in the request: {}", s.reference_id),
            );
        }
        if let Some(h) = &s.http_headers
            && let Some(bad) = h
                .keys()
                .find(|k| ["accept", "authorization", "content-type"].contains(&k.to_ascii_lowercase().as_str()))
        {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "INVALID_BATCH_REQUEST",
                format!("The header {bad} is not allowed in a subrequest"),
            );
        }
        let path = s.url.split('?').next().unwrap_or("");
        if path.contains("/query") || path.contains("/queryAll") || path.contains("/composite/sobjects") {
            heavy += 1;
        }
    }
    if heavy > MAX_QUERY_OR_COLLECTIONS {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_REQUEST",
            format!(
                "Composite request can contain a maximum of {MAX_QUERY_OR_COLLECTIONS} query or sObject Collections subrequests"
            ),
        );
    }

    if body.all_or_none {
        db.begin();
    }
    let mut results: HashMap<String, (StatusCode, Value)> = HashMap::new();
    let mut out: Vec<Value> = Vec::with_capacity(subs.len());
    let mut failed_at: Option<usize> = None;
    for (i, sub) in subs.iter().enumerate() {
        if failed_at.is_some() && body.all_or_none {
            out.push(json!({"body": halted("The transaction was rolled back since another operation in the same transaction failed.".into()), "httpHeaders": {}, "httpStatusCode": 400, "referenceId": sub.reference_id}));
            continue;
        }
        let resolved = resolve_refs(&sub.url, &results).and_then(|url| {
            let body = match &sub.body {
                Some(b) => Some(resolve_value(b, &results)?),
                None => None,
            };
            Ok((url, body))
        });
        let (url, sub_body) = match resolved {
            Ok(x) => x,
            Err(reference) => {
                let msg = format!(
                    "Invalid reference specified. No value for {reference} found in {}.",
                    reference.split(['.', '[']).next().unwrap_or("")
                );
                out.push(json!({"body": halted(msg), "httpHeaders": {}, "httpStatusCode": 400, "referenceId": sub.reference_id}));
                results.insert(sub.reference_id.clone(), (StatusCode::BAD_REQUEST, Value::Null));
                failed_at.get_or_insert(i);
                continue;
            }
        };
        // A subrequest's own headers (a query's page size, say) apply to it alone, over the
        // outer request's.
        let sub_headers = with_sub_headers(req.headers, sub.http_headers.as_ref());
        let resp = run_sub(st, ctx, db, &sub.method, &url, sub_body.as_ref(), &sub_headers);
        let status = resp.status;
        let mut headers = Map::new();
        for (k, v) in &resp.headers {
            if *k == "Location" {
                headers.insert((*k).to_string(), json!(v));
            }
        }
        let body_json = resp.body_json();
        out.push(json!({"body": body_json, "httpHeaders": headers, "httpStatusCode": status.as_u16(), "referenceId": sub.reference_id}));
        results.insert(sub.reference_id.clone(), (status, body_json));
        if status.as_u16() >= 400 {
            failed_at.get_or_insert(i);
        }
    }
    if body.all_or_none {
        if let Some(failed) = failed_at {
            db.rollback();
            for (i, entry) in out.iter_mut().enumerate() {
                if i != failed && entry["httpStatusCode"].as_u64().is_some_and(|s| s < 400) {
                    entry["body"] = halted(
                        "The transaction was rolled back since another operation in the same transaction failed."
                            .into(),
                    );
                    entry["httpStatusCode"] = json!(400);
                    entry["httpHeaders"] = json!({});
                }
            }
        } else {
            db.commit();
        }
    }
    Resp::ok(json!({"compositeResponse": out}))
}

fn run_sub(
    st: &SfState,
    ctx: &CallCtx,
    db: &mut Db,
    method: &str,
    url: &str,
    body: Option<&Value>,
    headers: &HeaderMap,
) -> Resp {
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return Resp::error(StatusCode::BAD_REQUEST, "INVALID_BATCH_REQUEST", format!("Invalid method: {method}"));
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let Some(rest) = path.strip_prefix("/services/data/") else {
        return Resp::not_found();
    };
    let (version, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(num) = version.strip_prefix('v').and_then(|v| v.parse::<f64>().ok()) else {
        return Resp::not_found();
    };
    if !(st.config.min_version..=st.config.max_version).contains(&num) {
        return Resp::not_found();
    }
    let segments: Vec<String> = tail
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    if segments.first().map(String::as_str) == Some("composite") && segments.len() == 1 {
        return Resp::error(StatusCode::BAD_REQUEST, "INVALID_BATCH_REQUEST", "Composite requests cannot be nested");
    }
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let sub_ctx = CallCtx { version: version.trim_start_matches('v').to_string(), version_num: num, ..ctx.clone() };
    let request = DataRequest {
        method,
        segments,
        query: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
        headers,
        body: &bytes,
    };
    dispatch(st, &sub_ctx, db, &request)
}

/// Replaces every `@{ref.path}` in a string. Err carries the reference that had no value.
fn resolve_refs(s: &str, results: &HashMap<String, (StatusCode, Value)>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("@{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        let v = lookup(reference, results).ok_or_else(|| reference.to_string())?;
        match v {
            Value::String(s) => out.push_str(&s),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_value(v: &Value, results: &HashMap<String, (StatusCode, Value)>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            // A string that is exactly one reference takes the referenced value's JSON type.
            if let Some(inner) = s.strip_prefix("@{").and_then(|x| x.strip_suffix('}'))
                && !inner.contains('}')
            {
                lookup(inner, results).ok_or_else(|| inner.to_string())?
            } else {
                Value::String(resolve_refs(s, results)?)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_value(x, results)).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), resolve_value(x, results)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Evaluates `ref.field[0].other` against an earlier subrequest's body. References are
/// case-sensitive, as in Salesforce (`id` from a create, `Id` from a record GET).
fn lookup(reference: &str, results: &HashMap<String, (StatusCode, Value)>) -> Option<Value> {
    let end = reference.find(['.', '[']).unwrap_or(reference.len());
    let (status, body) = results.get(&reference[..end])?;
    if status.as_u16() >= 400 {
        return None;
    }
    let mut cur = body;
    let mut path = &reference[end..];
    while !path.is_empty() {
        if let Some(p) = path.strip_prefix('.') {
            let end = p.find(['.', '[']).unwrap_or(p.len());
            cur = cur.get(&p[..end])?;
            path = &p[end..];
        } else if let Some(p) = path.strip_prefix('[') {
            let close = p.find(']')?;
            let idx: usize = p[..close].parse().ok()?;
            cur = cur.get(idx)?;
            path = &p[close + 1..];
        } else {
            return None;
        }
    }
    Some(cur.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_with_paths() {
        let mut r = HashMap::new();
        r.insert("acct".to_string(), (StatusCode::CREATED, json!({"id": "001x"})));
        r.insert("q".to_string(), (StatusCode::OK, json!({"records": [{"Id": "003y", "n": 5}]})));
        assert_eq!(resolve_refs("/sobjects/Account/@{acct.id}", &r).unwrap(), "/sobjects/Account/001x");
        assert_eq!(resolve_value(&json!("@{q.records[0].n}"), &r).unwrap(), json!(5));
        assert_eq!(resolve_refs("@{q.records[1].Id}", &r).unwrap_err(), "q.records[1].Id");
        assert!(resolve_refs("@{missing.id}", &r).is_err());
    }
}
