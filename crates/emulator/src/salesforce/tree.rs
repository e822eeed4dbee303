//! sObject Tree (`POST /composite/tree/{sObject}`): up to 200 records in nested parent-child
//! trees, created in one transaction and counted as one API call. Every record carries
//! `attributes.type` and a `referenceId`; children sit under their parent's child relationship
//! name as `{"records": [...]}` and get the parent's Id in the relationship's lookup field.
//!
//! As documented: at most 200 records across all trees, five record types and five levels;
//! records are created level by level (every root, then every second-level record, ...), which is
//! the order of `results` on success (`201`, `{"hasErrors": false, "results": [{"referenceId",
//! "id"}]}`); the first failure rolls everything back and the answer (`400`, `hasErrors: true`)
//! names only the failing record's `referenceId` with its `errors`. Duplicate reference IDs are
//! reported once per occurrence.

use std::collections::HashSet;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::store::{Db, DmlError};

const MAX_RECORDS: usize = 200;
const MAX_TYPES: usize = 5;
const MAX_DEPTH: usize = 5;

/// One record of a tree, flattened: its level (1 = root), its parent's index in the flat list
/// and the lookup field that takes the parent's Id.
struct Node {
    object: String,
    reference_id: String,
    fields: Map<String, Value>,
    level: usize,
    parent: Option<(usize, String)>,
}

fn invalid(message: impl Into<String>) -> Resp {
    Resp::error(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

/// The answer for one failed record: only its reference ID and errors, as Salesforce reports it.
fn failed(results: Vec<Value>) -> Resp {
    Resp::json(StatusCode::BAD_REQUEST, json!({"hasErrors": true, "results": results}))
}

pub fn handle(ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, object: &str) -> Resp {
    if req.method != Method::POST {
        return Resp::method_not_allowed(&req.method, "POST");
    }
    let Some(root) = db.schema.object(object).cloned() else {
        return Resp::not_found();
    };
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return invalid("The request body must hold a 'records' array.");
    };
    let mut nodes = Vec::new();
    if let Err(r) = flatten(db, records, &root.name, 1, None, &mut nodes) {
        return r;
    }
    if nodes.is_empty() {
        return invalid("Include at least one record in the request.");
    }
    if nodes.len() > MAX_RECORDS {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            format!("Exceeded max limit of records: {MAX_RECORDS} (the request has {})", nodes.len()),
        );
    }
    let types: HashSet<&str> = nodes.iter().map(|n| n.object.as_str()).collect();
    if types.len() > MAX_TYPES {
        return Resp::error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            format!("Exceeded max limit of distinct sObject types: {MAX_TYPES}"),
        );
    }
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = nodes
        .iter()
        .filter(|n| !seen.insert(n.reference_id.to_ascii_lowercase()))
        .map(|n| n.reference_id.to_ascii_lowercase())
        .collect();
    if !duplicated.is_empty() {
        let results = nodes
            .iter()
            .filter(|n| duplicated.contains(&n.reference_id.to_ascii_lowercase()))
            .map(|n| {
                let e = DmlError::new("INVALID_INPUT", "Duplicate ReferenceId provided in the request.", vec![]);
                json!({"referenceId": n.reference_id, "errors": [e.record_json()]})
            })
            .collect();
        return failed(results);
    }
    // Level by level, each level in request order: the order Salesforce creates and reports.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| nodes[i].level);
    let mut ids: Vec<Option<String>> = vec![None; nodes.len()];
    let mut results = Vec::with_capacity(nodes.len());
    let wctx = ctx.write_ctx();
    db.begin();
    for i in order {
        let node = &nodes[i];
        let mut fields = node.fields.clone();
        if let Some((parent, field)) = &node.parent {
            let parent_id = ids.get(*parent).cloned().flatten().unwrap_or_default();
            fields.insert(field.clone(), Value::String(parent_id));
        }
        match db.create(&node.object, &fields, &wctx) {
            Ok(id) => {
                results.push(json!({"referenceId": node.reference_id, "id": id}));
                ids[i] = Some(id);
            }
            Err(errors) => {
                db.rollback();
                let errors: Vec<Value> = errors.iter().map(DmlError::record_json).collect();
                return failed(vec![json!({"referenceId": node.reference_id, "errors": errors})]);
            }
        }
    }
    db.commit();
    Resp::json(StatusCode::CREATED, json!({"hasErrors": false, "results": results}))
}

/// Walks the request's trees into `out`, checking types, reference IDs, relationships and depth.
fn flatten(
    db: &Db,
    records: &[Value],
    expected: &str,
    level: usize,
    parent: Option<(usize, String)>,
    out: &mut Vec<Node>,
) -> Result<(), Resp> {
    if level > MAX_DEPTH {
        return Err(invalid(format!("sObject trees can be at most {MAX_DEPTH} levels deep.")));
    }
    for rec in records {
        let Some(map) = rec.as_object() else {
            return Err(invalid("Each record must be a JSON object."));
        };
        let attributes = map.get("attributes").and_then(Value::as_object);
        let ty = attributes.and_then(|a| a.get("type")).and_then(Value::as_str).unwrap_or(expected);
        let Some(obj) = db.schema.object(ty).cloned() else {
            return Err(Resp::error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                format!("sObject type '{ty}' is not supported."),
            ));
        };
        if !obj.name.eq_ignore_ascii_case(expected) {
            return Err(invalid(format!("The record type {} does not match the expected type {expected}.", obj.name)));
        }
        let Some(reference_id) = attributes.and_then(|a| a.get("referenceId")).and_then(Value::as_str) else {
            return Err(invalid("Include a reference ID for each record in the request."));
        };
        let index = out.len();
        out.push(Node {
            object: obj.name.clone(),
            reference_id: reference_id.to_string(),
            fields: Map::new(),
            level,
            parent: parent.clone(),
        });
        let mut fields = Map::new();
        let mut children = Vec::new();
        for (k, v) in map {
            if k == "attributes" {
                continue;
            }
            let nested = v.as_object().and_then(|o| o.get("records")).and_then(Value::as_array);
            match (nested, db.schema.child_relationship(&obj.name, k)) {
                (Some(list), Some(rel)) => children.push((rel, list)),
                (Some(_), None) => {
                    return Err(Resp::error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        format!("No such column '{k}' on sobject of type {}", obj.name),
                    ));
                }
                _ => {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        out[index].fields = fields;
        for (rel, list) in children {
            flatten(db, list, &rel.child, level + 1, Some((index, rel.field.clone())), out)?;
        }
    }
    Ok(())
}
