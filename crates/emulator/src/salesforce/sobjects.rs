//! sObject resources: global and per-object describe, record create / read / update / delete,
//! read, upsert and delete by external ID, and the replication resources `updated` and
//! `deleted`. Status codes follow the documented, version-dependent rules (an upsert that
//! updates answers 200 with a body from v46.0, 204 before).

use chrono::Duration;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::ids;
use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::schema::ObjectDef;
use super::state::SfState;
use super::store::{Db, DmlError, Record, UpsertError, UpsertOutcome, format_datetime, parse_datetime};

/// The JSON form of a record: `attributes`, then the chosen fields (all, by default) in schema
/// order, with `null` for unset ones.
pub fn record_json(obj: &ObjectDef, rec: &Record, version: &str, fields: Option<&[String]>) -> Value {
    let mut m = Map::new();
    m.insert("attributes".into(), json!({"type": obj.name, "url": format!("{}/{}", obj.url(version), rec.id())}));
    match fields {
        Some(list) => {
            for f in list {
                m.insert(f.clone(), rec.get(f).to_value());
            }
        }
        None => {
            for f in obj.fields() {
                m.insert(f.name.clone(), rec.get(&f.name).to_value());
            }
        }
    }
    Value::Object(m)
}

/// Resolves a `fields=` list to canonical names, or the INVALID_FIELD error Salesforce gives.
pub fn resolve_fields(obj: &ObjectDef, list: &str) -> Result<Vec<String>, Resp> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match obj.field(name) {
            Some(f) => out.push(f.name.clone()),
            None => {
                return Err(Resp::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    format!(
                        "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        obj.name
                    ),
                ));
            }
        }
    }
    Ok(out)
}

pub fn lock_error(id: &str) -> DmlError {
    DmlError::new(
        "UNABLE_TO_LOCK_ROW",
        format!("unable to obtain exclusive access to this record or 1 records: {id}"),
        vec![],
    )
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, seg: &[&str]) -> Resp {
    let v = &ctx.version;
    let Some((&name, rest)) = seg.split_first() else {
        return match req.method {
            Method::GET => Resp::ok(json!({
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": db.schema.objects().map(|o| o.describe_global_entry(v)).collect::<Vec<_>>(),
            })),
            _ => Resp::method_not_allowed(&req.method, "GET,HEAD"),
        };
    };
    let Some(obj) = db.schema.object(name).cloned() else {
        return Resp::not_found();
    };
    match rest {
        [] => match req.method {
            Method::GET => {
                let recent: Vec<Value> = Vec::new();
                Resp::ok(json!({"objectDescribe": obj.describe_global_entry(v), "recentItems": recent}))
            }
            Method::POST => create(st, ctx, db, req, &obj),
            _ => Resp::method_not_allowed(&req.method, "GET,HEAD,POST"),
        },
        ["describe"] => match req.method {
            Method::GET => Resp::ok(obj.describe(v, &db.schema)),
            _ => Resp::method_not_allowed(&req.method, "GET,HEAD"),
        },
        ["updated"] => replication(ctx, db, req, &obj, false),
        ["deleted"] => replication(ctx, db, req, &obj, true),
        [id] if id.eq_ignore_ascii_case("id") && req.method == Method::POST => create(st, ctx, db, req, &obj),
        [id] => by_id(st, ctx, db, req, &obj, id),
        [field, value] => by_external_id(st, ctx, db, req, &obj, field, value),
        _ => Resp::not_found(),
    }
}

fn create(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, obj: &ObjectDef) -> Resp {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    if st.faults.lock().lock_row() {
        return Resp::errors(StatusCode::BAD_REQUEST, &[lock_error(&obj.key_prefix)]);
    }
    match db.create(&obj.name, &body, &ctx.write_ctx()) {
        Ok(id) => Resp::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": []}))
            .with_header("Location", format!("{}/{id}", obj.url(&ctx.version))),
        Err(errors) => Resp::dml(&errors),
    }
}

fn by_id(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, obj: &ObjectDef, id: &str) -> Resp {
    let norm = ids::normalize(id).filter(|i| ids::key_prefix(i) == obj.key_prefix);
    let Some(norm) = norm else {
        // A path segment that is not an ID of this object is read as an external ID field name.
        return Resp::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {id}"),
        );
    };
    match req.method {
        Method::GET | Method::HEAD => {
            let fields = match req.param("fields").map(|f| resolve_fields(obj, f)).transpose() {
                Ok(f) => f,
                Err(r) => return r,
            };
            match db.get(&obj.name, &norm) {
                Some(rec) if !rec.deleted => Resp::ok(record_json(obj, rec, &ctx.version, fields.as_deref())),
                _ => Resp::not_found(),
            }
        }
        Method::PATCH => {
            let body = match req.json_object() {
                Ok(b) => b,
                Err(r) => return r,
            };
            if st.faults.lock().lock_row() {
                return Resp::errors(StatusCode::BAD_REQUEST, &[lock_error(&norm)]);
            }
            match db.update(&obj.name, &norm, &body, &ctx.write_ctx()) {
                Ok(()) => Resp::no_content(),
                Err(errors) => Resp::dml(&errors),
            }
        }
        Method::DELETE => {
            if st.faults.lock().lock_row() {
                return Resp::errors(StatusCode::BAD_REQUEST, &[lock_error(&norm)]);
            }
            match db.delete(&obj.name, &norm, &ctx.write_ctx()) {
                Ok(()) => Resp::no_content(),
                Err(e) => Resp::dml(&[e]),
            }
        }
        _ => Resp::method_not_allowed(&req.method, "GET,HEAD,PATCH,DELETE"),
    }
}

fn by_external_id(
    st: &SfState,
    ctx: &CallCtx,
    db: &mut Db,
    req: &DataRequest<'_>,
    obj: &ObjectDef,
    field: &str,
    value: &str,
) -> Resp {
    let Some(f) = obj.field(field).filter(|f| f.external_id || f.field_type == super::schema::FieldType::Id) else {
        return Resp::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {field}"),
        );
    };
    let field = f.name.clone();
    let multiple = |ids: &[String]| {
        Resp::json(
            StatusCode::MULTIPLE_CHOICES,
            Value::Array(ids.iter().map(|i| json!(format!("{}/{i}", obj.url(&ctx.version)))).collect()),
        )
    };
    match req.method {
        Method::GET | Method::DELETE => {
            let found = match db.find_by_external_id(&obj.name, &field, value) {
                Ok(f) => f,
                Err(e) => return Resp::dml(&[e]),
            };
            match found.as_slice() {
                [] => Resp::not_found(),
                [id] if req.method == Method::GET => {
                    let fields = match req.param("fields").map(|f| resolve_fields(obj, f)).transpose() {
                        Ok(f) => f,
                        Err(r) => return r,
                    };
                    match db.get(&obj.name, id) {
                        Some(rec) => Resp::ok(record_json(obj, rec, &ctx.version, fields.as_deref())),
                        None => Resp::not_found(),
                    }
                }
                [id] => match db.delete(&obj.name, id, &ctx.write_ctx()) {
                    Ok(()) => Resp::no_content(),
                    Err(e) => Resp::dml(&[e]),
                },
                many => multiple(many),
            }
        }
        Method::PATCH | Method::POST => {
            let body = match req.json_object() {
                Ok(b) => b,
                Err(r) => return r,
            };
            if st.faults.lock().lock_row() {
                return Resp::errors(StatusCode::BAD_REQUEST, &[lock_error(value)]);
            }
            match db.upsert(&obj.name, &field, value, &body, &ctx.write_ctx()) {
                Ok(UpsertOutcome::Created(id)) => {
                    let mut b = json!({"id": id, "success": true, "errors": []});
                    if ctx.version_num >= 46.0 {
                        b["created"] = json!(true);
                    }
                    Resp::json(StatusCode::CREATED, b)
                        .with_header("Location", format!("{}/{id}", obj.url(&ctx.version)))
                }
                Ok(UpsertOutcome::Updated(id)) => {
                    if ctx.version_num >= 46.0 {
                        Resp::ok(json!({"id": id, "success": true, "errors": [], "created": false}))
                    } else {
                        Resp::no_content()
                    }
                }
                Err(UpsertError::Multiple(ids)) => multiple(&ids),
                Err(UpsertError::Dml(errors)) => Resp::dml(&errors),
            }
        }
        _ => Resp::method_not_allowed(&req.method, "GET,HEAD,PATCH,DELETE"),
    }
}

/// `updated/?start=&end=` and `deleted/?start=&end=`: IDs changed or deleted in a window, by
/// SystemModstamp, with Salesforce's 30-day (updated) and 15-day (deleted) reach.
fn replication(ctx: &CallCtx, db: &Db, req: &DataRequest<'_>, obj: &ObjectDef, deleted: bool) -> Resp {
    if req.method != Method::GET {
        return Resp::method_not_allowed(&req.method, "GET,HEAD");
    }
    let (Some(start), Some(end)) = (req.param("start"), req.param("end")) else {
        return Resp::error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "start and end must be specified");
    };
    let (Some(start), Some(end)) = (parse_datetime(start), parse_datetime(end)) else {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "start and end must be valid dateTime values",
        );
    };
    // Seconds are ignored: the window is whole minutes.
    let trunc = |t: chrono::DateTime<chrono::Utc>| {
        t - Duration::seconds(t.timestamp().rem_euclid(60))
            - Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos()))
    };
    let (start, end) = (trunc(start), trunc(end));
    if start > end {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "startDate must chronologically precede endDate",
        );
    }
    let reach = if deleted { Duration::days(15) } else { Duration::days(30) };
    if start < ctx.now - reach {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            format!("startDate cannot be more than {} days ago", reach.num_days()),
        );
    }
    let end = end.min(trunc(ctx.now));
    if deleted {
        let rows: Vec<Value> = db
            .records(&obj.name)
            .filter(|r| r.deleted && r.deleted_at.is_some_and(|t| t >= start && t <= end))
            .map(|r| json!({"id": r.id(), "deletedDate": r.deleted_at.map(format_datetime)}))
            .collect();
        let earliest = db.records(&obj.name).filter_map(|r| r.deleted_at).min().unwrap_or(start).max(ctx.now - reach);
        Resp::ok(json!({
            "deletedRecords": rows,
            "earliestDateAvailable": format_datetime(earliest),
            "latestDateCovered": format_datetime(end),
        }))
    } else {
        let ids: Vec<&str> = db
            .records(&obj.name)
            .filter(|r| !r.deleted && r.modstamp.is_some_and(|t| t >= start && t <= end))
            .map(Record::id)
            .collect();
        if ids.len() > 600_000 {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 600000 records into this call",
            );
        }
        Resp::ok(json!({"ids": ids, "latestDateCovered": format_datetime(end)}))
    }
}
