//! Column metadata for a query (`/query?q=...&columns=true`): what each selected column is,
//! nested the way Salesforce nests it (a parent relationship's fields under its `joinColumns`, a
//! subquery as an `aggregate` column whose `joinColumns` are the child's fields). The Salesforce
//! CLI reads it to lay out `sf data query` tables.

use serde_json::{Value, json};

use super::ast::{Ast, Path, Select, SubQuery};
use crate::salesforce::schema::{FieldDef, FieldType, ObjectDef, Schema};

/// The `columns=true` answer for a query that has already been planned (so every name resolves).
pub fn metadata(ast: &Ast, schema: &Schema) -> Value {
    let Some(root) = schema.object(&ast.object) else {
        return json!({"columnMetadata": [], "entityName": ast.object, "groupBy": false, "idSelected": false, "keyPrefix": null});
    };
    let mut columns = Vec::new();
    let mut id_selected = false;
    if let Select::Fields(paths) = &ast.select {
        let mut subs = ast.subqueries.iter().peekable();
        for (i, p) in paths.iter().enumerate() {
            while let Some((_, sub)) = subs.next_if(|(at, _)| *at == i) {
                columns.push(subquery_column(root, sub, schema));
            }
            let parts = strip_root(root, p);
            id_selected |= parts.len() == 1 && parts[0].eq_ignore_ascii_case("Id");
            add_path(&mut columns, root, parts, schema);
        }
        for (_, sub) in subs {
            columns.push(subquery_column(root, sub, schema));
        }
    }
    json!({
        "columnMetadata": columns,
        "entityName": root.name,
        "groupBy": false,
        "idSelected": id_selected,
        "keyPrefix": root.key_prefix,
    })
}

/// `SELECT Account.Name FROM Account`: a path may start with the queried object's own name.
fn strip_root<'p>(root: &ObjectDef, p: &'p Path) -> &'p [String] {
    if p.parts.len() > 1 && p.parts[0].eq_ignore_ascii_case(&root.name) && root.relationship(&p.parts[0]).is_none() {
        &p.parts[1..]
    } else {
        &p.parts
    }
}

fn subquery_column(root: &ObjectDef, sub: &SubQuery, schema: &Schema) -> Value {
    let (fields, subqueries) = (&sub.fields, &sub.subqueries);
    let rel = schema.child_relationship(&root.name, &sub.relationship);
    let name = rel.as_ref().map_or(sub.relationship.clone(), |r| r.name.clone());
    let mut joins = Vec::new();
    if let Some(child) = rel.as_ref().and_then(|r| schema.object(&r.child)) {
        let mut subs = subqueries.iter().peekable();
        for (i, p) in fields.iter().enumerate() {
            while let Some((_, sub)) = subs.next_if(|(at, _)| *at == i) {
                joins.push(subquery_column(child, sub, schema));
            }
            add_path(&mut joins, child, strip_root(child, p), schema);
        }
        for (_, sub) in subs {
            joins.push(subquery_column(child, sub, schema));
        }
    }
    json!({
        "aggregate": true, "apexType": null, "booleanType": false, "columnName": name, "custom": name.ends_with("__r"),
        "displayName": name, "foreignKeyName": null, "insertable": false, "joinColumns": joins,
        "numberType": false, "textType": false, "updatable": false,
    })
}

/// Adds one selected path to `columns`, merging paths through the same relationship.
fn add_path(columns: &mut Vec<Value>, obj: &ObjectDef, parts: &[String], schema: &Schema) {
    let Some((first, rest)) = parts.split_first() else { return };
    if rest.is_empty() {
        columns.push(obj.field(first).map_or_else(|| name_entity_leaf(first), leaf));
        return;
    }
    let lookup = obj.relationship(first);
    let rel_name = lookup.and_then(|f| f.relationship_name.clone()).unwrap_or_else(|| first.clone());
    let target = lookup.and_then(|f| match f.reference_to.as_slice() {
        [one] => schema.object(one).map(|o| &**o),
        _ => None,
    });
    let position = columns.iter().position(|c| c["columnName"] == json!(rel_name) && c["aggregate"] == json!(false));
    let index = match position {
        Some(i) => i,
        None => {
            columns.push(json!({
                "aggregate": false, "apexType": target.map_or("Name", |t| t.name.as_str()), "booleanType": false,
                "columnName": rel_name, "custom": rel_name.ends_with("__r"), "displayName": rel_name,
                "foreignKeyName": null, "insertable": false, "joinColumns": [], "numberType": false,
                "textType": false, "updatable": false,
            }));
            columns.len() - 1
        }
    };
    let mut joins: Vec<Value> = columns[index]["joinColumns"].as_array().cloned().unwrap_or_default();
    match target {
        Some(t) => add_path(&mut joins, t, rest, schema),
        // Polymorphic (What, Who): the Name entity, whose fields exist on no single object.
        None => joins.extend(rest.last().map(|name| name_entity_leaf(name))),
    }
    columns[index]["joinColumns"] = Value::Array(joins);
}

/// A field of a polymorphic parent's Name entity: only its name is known.
fn name_entity_leaf(name: &str) -> Value {
    json!({
        "aggregate": false, "apexType": "String", "booleanType": false, "columnName": name, "custom": false,
        "displayName": name, "foreignKeyName": null, "insertable": false, "joinColumns": [],
        "numberType": false, "textType": true, "updatable": false,
    })
}

fn leaf(f: &FieldDef) -> Value {
    let apex = match f.field_type {
        FieldType::Id | FieldType::Reference => "Id",
        FieldType::Boolean => "Boolean",
        FieldType::Int => "Integer",
        FieldType::Double | FieldType::Percent => "Double",
        FieldType::Currency => "Decimal",
        FieldType::Date => "Date",
        FieldType::DateTime => "Datetime",
        _ => "String",
    };
    json!({
        "aggregate": false, "apexType": apex, "booleanType": f.field_type == FieldType::Boolean,
        "columnName": f.name, "custom": f.custom, "displayName": f.name, "foreignKeyName": null,
        "insertable": f.createable, "joinColumns": [], "numberType": f.field_type.is_numeric(),
        "textType": f.field_type.is_text(), "updatable": f.updateable,
    })
}
