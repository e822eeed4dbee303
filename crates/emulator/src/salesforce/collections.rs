//! sObject Collections (`/composite/sobjects`): create, update, upsert, delete and retrieve of up
//! to 200 records in one API call, results in request order, per-record errors keyed
//! `statusCode`, and `allOrNone` rolling every record back when one fails.

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::ids;
use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::sobjects::{lock_error, record_json, resolve_fields};
use super::state::SfState;
use super::store::{Db, DmlError, UpsertError, UpsertOutcome};

/// The documented ceiling for one Collections request.
pub const MAX_RECORDS: usize = 200;
/// Retrieve by POST takes up to 2,000 IDs.
const MAX_RETRIEVE_IDS: usize = 2000;

fn rolled_back() -> DmlError {
    DmlError::new(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request was using AllOrNone header",
        vec![],
    )
}

fn too_many() -> Resp {
    Resp::error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        format!("record limit reached. cannot submit more than {MAX_RECORDS} records into this call"),
    )
}

/// One record's outcome before it is rendered.
struct Outcome {
    id: Option<String>,
    created: Option<bool>,
    errors: Vec<DmlError>,
}

impl Outcome {
    fn render(&self, rolled: bool) -> Value {
        let success = self.errors.is_empty() && !rolled;
        let mut m = Map::new();
        // A failed create has no id at all; a rolled-back create neither.
        if let Some(id) = &self.id
            && (success || self.created != Some(true))
        {
            m.insert("id".into(), json!(id));
        }
        m.insert("success".into(), json!(success));
        let errors: Vec<Value> = if self.errors.is_empty() && rolled {
            vec![rolled_back().record_json()]
        } else {
            self.errors.iter().map(DmlError::record_json).collect()
        };
        m.insert("errors".into(), Value::Array(errors));
        if let Some(c) = self.created {
            m.insert("created".into(), json!(c));
        }
        Value::Object(m)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch {
    #[serde(default)]
    all_or_none: bool,
    records: Vec<Value>,
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, seg: &[&str]) -> Resp {
    match (&req.method, seg) {
        (&Method::POST, []) => write(st, ctx, db, req, Op::Create),
        (&Method::PATCH, []) => write(st, ctx, db, req, Op::Update),
        (&Method::PATCH, [object, field]) => write(st, ctx, db, req, Op::Upsert(object, field)),
        (&Method::DELETE, []) => delete(st, ctx, db, req),
        (&Method::GET, [object]) => retrieve_get(ctx, db, req, object),
        (&Method::POST, [object]) => retrieve_post(ctx, db, req, object),
        (m, []) => Resp::method_not_allowed(m, "POST,PATCH,DELETE"),
        (m, _) => Resp::method_not_allowed(m, "GET,POST,PATCH"),
    }
}

enum Op<'a> {
    Create,
    Update,
    Upsert(&'a str, &'a str),
}

fn write(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, op: Op<'_>) -> Resp {
    let batch: Batch = match serde_json::from_slice(req.body) {
        Ok(b) => b,
        Err(e) => return Resp::bad_json(e),
    };
    if batch.records.len() > MAX_RECORDS {
        return too_many();
    }
    let upsert_target = match op {
        Op::Upsert(object, field) => {
            let Some(obj) = db.schema.object(object) else { return Resp::not_found() };
            let Some(f) = obj.field(field).filter(|f| f.external_id || f.name == "Id") else {
                return Resp::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    format!("Field name provided, {field} is not an External ID or indexed field for {}", obj.name),
                );
            };
            Some((obj.name.clone(), f.name.clone()))
        }
        _ => None,
    };
    let wctx = ctx.write_ctx();
    db.begin();
    let mut outcomes = Vec::with_capacity(batch.records.len());
    for rec in &batch.records {
        let Some(map) = rec.as_object() else {
            outcomes.push(Outcome {
                id: None,
                created: None,
                errors: vec![DmlError::new("JSON_PARSER_ERROR", "each record must be a JSON object", vec![])],
            });
            continue;
        };
        let rtype = map.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str);
        let Some(rtype) = rtype else {
            outcomes.push(Outcome {
                id: None,
                created: None,
                errors: vec![DmlError::new("INVALID_TYPE", "When creating, updating, or upserting a record, the type of the record is required. Specify the type in the attributes property.", vec![])],
            });
            continue;
        };
        let mut body = map.clone();
        body.remove("attributes");
        let lock = st.faults.lock().lock_row();
        let outcome = match &op {
            Op::Create => {
                if body.keys().any(|k| k.eq_ignore_ascii_case("id")) {
                    Outcome {
                        id: None,
                        created: None,
                        errors: vec![DmlError::new(
                            "INVALID_FIELD_FOR_INSERT_UPDATE",
                            "cannot specify Id in an insert call",
                            vec!["Id".into()],
                        )],
                    }
                } else if lock {
                    Outcome { id: None, created: None, errors: vec![lock_error(rtype)] }
                } else {
                    match db.create(rtype, &body, &wctx) {
                        Ok(id) => Outcome { id: Some(id), created: None, errors: vec![] },
                        Err(errors) => Outcome { id: None, created: None, errors },
                    }
                }
            }
            Op::Update => {
                let key = body.keys().find(|k| k.eq_ignore_ascii_case("id")).cloned();
                let id = key.and_then(|k| body.remove(&k)).and_then(|v| v.as_str().map(str::to_string));
                match id {
                    None => Outcome {
                        id: None,
                        created: None,
                        errors: vec![DmlError::new("MISSING_ARGUMENT", "Id not specified in an update call", vec![])],
                    },
                    Some(id) if lock => Outcome { id: Some(id.clone()), created: None, errors: vec![lock_error(&id)] },
                    Some(id) => {
                        let norm = ids::normalize(&id).unwrap_or(id.clone());
                        match db.update(rtype, &id, &body, &wctx) {
                            Ok(()) => Outcome { id: Some(norm), created: None, errors: vec![] },
                            Err(mut errors) => {
                                if let Some(e) = errors.first_mut().filter(|e| e.code == "MALFORMED_ID") {
                                    e.message = format!("{rtype} ID: id value of incorrect type: {id}");
                                }
                                Outcome { id: Some(id), created: None, errors }
                            }
                        }
                    }
                }
            }
            Op::Upsert(..) => {
                let (object, field) = upsert_target.clone().unwrap_or_default();
                if !rtype.eq_ignore_ascii_case(&object) {
                    Outcome {
                        id: None,
                        created: None,
                        errors: vec![DmlError::new(
                            "INVALID_FIELD",
                            format!("Record type {rtype} does not match the URL's sObject type {object}"),
                            vec![],
                        )],
                    }
                } else {
                    let key = body.keys().find(|k| k.eq_ignore_ascii_case(&field)).cloned();
                    let value = key.as_ref().and_then(|k| body.get(k)).and_then(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    });
                    if field == "Id"
                        && let Some(k) = &key
                    {
                        body.remove(k);
                    }
                    match value {
                        None if field != "Id" => Outcome {
                            id: None,
                            created: None,
                            errors: vec![DmlError::new(
                                "MISSING_ARGUMENT",
                                format!("{field} not specified"),
                                vec![field.clone()],
                            )],
                        },
                        _ if lock => Outcome { id: None, created: None, errors: vec![lock_error(&object)] },
                        value => match db.upsert(&object, &field, value.as_deref().unwrap_or(""), &body, &wctx) {
                            Ok(UpsertOutcome::Created(id)) => {
                                Outcome { id: Some(id), created: Some(true), errors: vec![] }
                            }
                            Ok(UpsertOutcome::Updated(id)) => {
                                Outcome { id: Some(id), created: Some(false), errors: vec![] }
                            }
                            Err(UpsertError::Multiple(ids)) => Outcome {
                                id: None,
                                created: Some(false),
                                errors: vec![DmlError::new(
                                    "DUPLICATE_EXTERNAL_ID",
                                    format!("{field}: more than one record found for external id field: {ids:?}"),
                                    vec![field.clone()],
                                )],
                            },
                            Err(UpsertError::Dml(errors)) => {
                                Outcome { id: None, created: Some(value.is_none()), errors }
                            }
                        },
                    }
                }
            }
        };
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().any(|o| !o.errors.is_empty());
    let rolled = batch.all_or_none && failed;
    if rolled {
        db.rollback();
    } else {
        db.commit();
    }
    Resp::ok(Value::Array(outcomes.iter().map(|o| o.render(rolled)).collect()))
}

fn delete(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>) -> Resp {
    let ids: Vec<String> = req
        .param("ids")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Resp::error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "ids parameter is required");
    }
    if ids.len() > MAX_RECORDS {
        return too_many();
    }
    let all_or_none = req.param("allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let wctx = ctx.write_ctx();
    db.begin();
    let mut outcomes = Vec::new();
    for id in &ids {
        let errors = match ids::normalize(id).and_then(|n| db.schema.object_for_id(&n).map(|o| o.name.clone())) {
            None => vec![DmlError::new("MALFORMED_ID", format!("malformed id {id}"), vec![])],
            Some(_) if st.faults.lock().lock_row() => vec![lock_error(id)],
            Some(object) => db.delete(&object, id, &wctx).err().into_iter().collect(),
        };
        let id = ids::normalize(id).unwrap_or(id.clone());
        outcomes.push(Outcome { id: Some(id), created: None, errors });
    }
    let rolled = all_or_none && outcomes.iter().any(|o| !o.errors.is_empty());
    if rolled {
        db.rollback();
    } else {
        db.commit();
    }
    Resp::ok(Value::Array(outcomes.iter().map(|o| o.render(rolled)).collect()))
}

fn retrieve(ctx: &CallCtx, db: &Db, object: &str, ids: &[String], fields: &str) -> Resp {
    let Some(obj) = db.schema.object(object) else { return Resp::not_found() };
    if fields.trim().is_empty() {
        return Resp::error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "fields parameter is required");
    }
    let fields = match resolve_fields(obj, fields) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let rows: Vec<Value> = ids
        .iter()
        .map(|id| match db.get(&obj.name, id) {
            Some(rec) if !rec.deleted => record_json(obj, rec, &ctx.version, Some(&fields)),
            _ => Value::Null,
        })
        .collect();
    Resp::ok(Value::Array(rows))
}

fn retrieve_get(ctx: &CallCtx, db: &Db, req: &DataRequest<'_>, object: &str) -> Resp {
    let ids: Vec<String> =
        req.param("ids").unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if ids.len() > MAX_RETRIEVE_IDS {
        return too_many();
    }
    retrieve(ctx, db, object, &ids, req.param("fields").unwrap_or(""))
}

#[derive(serde::Deserialize)]
struct RetrieveBody {
    ids: Vec<String>,
    fields: Vec<String>,
}

fn retrieve_post(ctx: &CallCtx, db: &Db, req: &DataRequest<'_>, object: &str) -> Resp {
    let body: RetrieveBody = match serde_json::from_slice(req.body) {
        Ok(b) => b,
        Err(e) => return Resp::bad_json(e),
    };
    if body.ids.len() > MAX_RETRIEVE_IDS {
        return too_many();
    }
    retrieve(ctx, db, object, &body.ids, &body.fields.join(","))
}
