//! Checks a parsed query against the schema and turns it into a plan: canonical field names,
//! the relationship hops to follow, typed and pre-normalised filter values and sort keys. All
//! name resolution and literal conversion happens here once, so evaluation per row is only
//! lookups and comparisons.

use std::collections::HashSet;

use chrono::{Datelike, Days, Months, NaiveDate};

use super::SoqlError;
use super::ast::{Ast, Cond, DateFn, LitKind, Literal, Path, Select};
use super::lexer::{CmpOp, LikeTok};
use crate::salesforce::ids;
use crate::salesforce::schema::{FieldType, ObjectDef, Schema};
use crate::salesforce::store::format_datetime;

const NO_SUCH_COLUMN_TAIL: &str = "If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.";
const NO_SUCH_RELATIONSHIP_TAIL: &str = "If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.";

/// Fields a polymorphic relationship (`What`, `Who`) exposes: Salesforce's `Name` entity.
/// Each is queryable whatever the referenced record's type; it is null where that type lacks it.
const NAME_ENTITY_FIELDS: &[(&str, FieldType)] = &[
    ("Id", FieldType::Id),
    ("Name", FieldType::String),
    ("FirstName", FieldType::String),
    ("LastName", FieldType::String),
    ("Email", FieldType::Email),
    ("Phone", FieldType::Phone),
    ("Title", FieldType::String),
    ("Alias", FieldType::String),
    ("IsActive", FieldType::Boolean),
    ("Username", FieldType::String),
];

/// One step from a record to its parent.
#[derive(Debug, Clone, PartialEq)]
pub enum Hop {
    /// A lookup to one object type.
    Fixed { field: String, rel: String, target: String },
    /// A polymorphic lookup: the target's type comes from the referenced ID's key prefix.
    Poly { field: String, rel: String },
}

impl Hop {
    pub fn rel(&self) -> &str {
        match self {
            Hop::Fixed { rel, .. } | Hop::Poly { rel, .. } => rel,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Stored(String),
    /// `What.Type`: the referenced record's object name.
    ObjectType,
}

/// How a field's values compare and sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Text,
    Picklist,
    Id,
    Bool,
    Num,
    Date,
    DateTime,
    LongText,
}

#[derive(Debug, Clone)]
pub struct FieldRef {
    pub hops: Vec<Hop>,
    pub leaf: Leaf,
    pub class: Class,
    /// Picklist values in their defined order: ORDER BY sorts picklists by it, not alphabetically.
    pub picklist: Vec<String>,
    /// Whether `= 'x'` can be answered from the store's external-ID/unique index.
    pub indexed: bool,
}

impl FieldRef {
    pub fn leaf_name(&self) -> &str {
        match &self.leaf {
            Leaf::Stored(n) => n,
            Leaf::ObjectType => "Type",
        }
    }

    /// The path with canonical names, for error messages and duplicate detection.
    fn canonical(&self) -> String {
        let mut s = String::new();
        for h in &self.hops {
            s.push_str(h.rel());
            s.push('.');
        }
        s.push_str(self.leaf_name());
        s
    }
}

/// A compiled LIKE pattern over lower-cased text; the common shapes avoid the general matcher.
#[derive(Debug, Clone)]
pub enum Like {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    General(Vec<LikeTok>),
}

#[derive(Debug, Clone)]
pub enum Test {
    /// `= null` (true) / `!= null` (false).
    Null(bool),
    Text {
        op: CmpOp,
        lower: String,
        raw: String,
    },
    TextIn {
        set: HashSet<String>,
        null: bool,
    },
    Like(Like),
    Id {
        op: CmpOp,
        id: String,
    },
    IdIn {
        set: HashSet<String>,
        null: bool,
    },
    Num {
        op: CmpOp,
        v: f64,
    },
    Bool {
        eq: bool,
        v: bool,
    },
    /// Dates and datetimes in their wire form, whose byte order is time order.
    Wire {
        op: CmpOp,
        v: String,
    },
    /// A relative date literal: whole days `start..=end` (as `yyyy-mm-dd`); datetimes compare by
    /// their UTC date.
    Range {
        op: CmpOp,
        start: String,
        end: String,
    },
    Any(Vec<Test>),
}

#[derive(Debug, Clone)]
pub enum PCond {
    And(Vec<PCond>),
    Or(Vec<PCond>),
    Not(Box<PCond>),
    Test(FieldRef, Test),
}

#[derive(Debug, Clone)]
pub struct POrder {
    pub field: FieldRef,
    pub descending: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone)]
pub enum OutItem {
    Leaf { key: String, leaf: Leaf },
    Rel { key: String, hop: Hop, node: OutNode },
}

/// The shape of one output record, merged so that two paths through one relationship share a
/// nested object.
#[derive(Debug, Clone, Default)]
pub struct OutNode {
    pub items: Vec<OutItem>,
}

impl OutNode {
    fn insert(&mut self, hops: &[Hop], leaf: &Leaf, leaf_key: &str) {
        let Some((hop, rest)) = hops.split_first() else {
            self.items.push(OutItem::Leaf { key: leaf_key.to_string(), leaf: leaf.clone() });
            return;
        };
        let existing = self.items.iter_mut().find_map(|i| match i {
            OutItem::Rel { key, node, .. } if key == hop.rel() => Some(node),
            _ => None,
        });
        match existing {
            Some(node) => node.insert(rest, leaf, leaf_key),
            None => {
                let mut node = OutNode::default();
                node.insert(rest, leaf, leaf_key);
                self.items.push(OutItem::Rel { key: hop.rel().to_string(), hop: hop.clone(), node });
            }
        }
    }
}

/// A parent-to-child subquery: the children's own plan and the lookup that ties them to a row.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// The relationship name as the schema spells it: the key in each parent row.
    pub key: String,
    /// The child's lookup field holding the parent's Id.
    pub field: String,
    pub plan: Plan,
}

/// Salesforce's cap on parent-to-child relationships in one query.
const MAX_SUBQUERIES: usize = 20;

#[derive(Debug, Clone)]
pub struct Plan {
    pub object: String,
    pub count_only: bool,
    pub out: OutNode,
    pub children: Vec<ChildPlan>,
    pub filter: Option<PCond>,
    pub order: Vec<POrder>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// How many levels of parent-to-child subqueries a query may nest at an API version: five from
/// v58.0, one before.
pub fn max_child_levels(version: f64) -> usize {
    if version >= 58.0 { 5 } else { 1 }
}

/// Plans a query whose subqueries may nest `max_child_levels` deep.
pub fn build(
    ast: &Ast,
    src: &str,
    schema: &Schema,
    today: NaiveDate,
    max_child_levels: usize,
) -> Result<Plan, SoqlError> {
    build_level(ast, src, schema, today, max_child_levels, 0)
}

fn build_level(
    ast: &Ast,
    src: &str,
    schema: &Schema,
    today: NaiveDate,
    max_levels: usize,
    level: usize,
) -> Result<Plan, SoqlError> {
    let obj = schema.object(&ast.object).ok_or_else(|| {
        SoqlError::at(
            "INVALID_TYPE",
            src,
            ast.object_pos,
            format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                ast.object
            ),
        )
    })?;
    let r = Resolver { src, schema, root: obj, today };
    let (count_only, out) = match &ast.select {
        Select::Count => (true, OutNode::default()),
        Select::Fields(paths) => {
            let mut out = OutNode::default();
            let mut seen = HashSet::new();
            for p in paths {
                let f = r.resolve(p)?;
                if !seen.insert(f.canonical().to_ascii_lowercase()) {
                    return Err(SoqlError::new("INVALID_FIELD", format!("duplicate field selected: {}", p.text())));
                }
                out.insert(&f.hops, &f.leaf, f.leaf_name());
            }
            (false, out)
        }
    };
    let filter = ast.filter.as_ref().map(|c| r.cond(c)).transpose()?;
    let mut order = Vec::with_capacity(ast.order.len());
    for o in &ast.order {
        let field = r.resolve(&o.path)?;
        if field.class == Class::LongText {
            return Err(SoqlError::at(
                "INVALID_FIELD",
                src,
                o.path.pos,
                format!("field '{}' can not be sorted in a query call", field.leaf_name()),
            ));
        }
        order.push(POrder { field, descending: o.descending, nulls_first: o.nulls_first.unwrap_or(!o.descending) });
    }
    let offset = ast.offset.unwrap_or(0);
    if offset > 2000 {
        return Err(SoqlError::new("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000"));
    }
    if ast.subqueries.len() > MAX_SUBQUERIES {
        return Err(SoqlError::new(
            "MALFORMED_QUERY",
            format!("No more than {MAX_SUBQUERIES} parent-to-child relationships can be specified in a query"),
        ));
    }
    let mut children = Vec::with_capacity(ast.subqueries.len());
    let mut seen_rel = HashSet::new();
    if let Some((_, sub)) = ast.subqueries.first()
        && level >= max_levels
    {
        return Err(SoqlError::at(
            "MALFORMED_QUERY",
            src,
            sub.relationship_pos,
            format!("parent-to-child subqueries can nest at most {max_levels} level(s) at this API version"),
        ));
    }
    for (_, sub) in &ast.subqueries {
        let rel = schema.child_relationship(&obj.name, &sub.relationship).ok_or_else(|| {
            SoqlError::at(
                "INVALID_TYPE",
                src,
                sub.relationship_pos,
                format!(
                    "Didn't understand relationship '{}' in FROM part of query call. {NO_SUCH_RELATIONSHIP_TAIL}",
                    sub.relationship
                ),
            )
        })?;
        if !seen_rel.insert(rel.name.to_ascii_lowercase()) {
            return Err(SoqlError::at(
                "INVALID_FIELD",
                src,
                sub.relationship_pos,
                format!("duplicate field selected: {}", rel.name),
            ));
        }
        // The subquery is planned as a query of its own over the child object.
        let child_ast = Ast {
            select: Select::Fields(sub.fields.clone()),
            subqueries: sub.subqueries.clone(),
            object: rel.child.clone(),
            object_pos: sub.relationship_pos,
            filter: sub.filter.clone(),
            order: sub.order.clone(),
            limit: sub.limit,
            offset: None,
            offset_pos: 0,
        };
        let plan = build_level(&child_ast, src, schema, today, max_levels, level + 1)?;
        children.push(ChildPlan { key: rel.name, field: rel.field, plan });
    }
    Ok(Plan { object: obj.name.clone(), count_only, out, children, filter, order, limit: ast.limit, offset })
}

struct Resolver<'a> {
    src: &'a str,
    schema: &'a Schema,
    root: &'a ObjectDef,
    today: NaiveDate,
}

enum At<'a> {
    Obj(&'a ObjectDef),
    Poly,
}

impl Resolver<'_> {
    fn invalid_field(&self, pos: usize, reason: String) -> SoqlError {
        SoqlError::at("INVALID_FIELD", self.src, pos, reason)
    }

    fn resolve(&self, path: &Path) -> Result<FieldRef, SoqlError> {
        let mut parts: &[String] = &path.parts;
        // `SELECT Account.Name FROM Account`: SOQL lets a path start with the queried object.
        if parts.len() > 1
            && parts[0].eq_ignore_ascii_case(&self.root.name)
            && self.root.relationship(&parts[0]).is_none()
        {
            parts = &parts[1..];
        }
        let Some((leaf, rels)) = parts.split_last() else {
            return Err(self.invalid_field(path.pos, "unexpected empty field path".into()));
        };
        let bad_rel = |rel: &str| {
            self.invalid_field(
                path.pos,
                format!("Didn't understand relationship '{rel}' in field path. {NO_SUCH_RELATIONSHIP_TAIL}"),
            )
        };
        let mut at = At::Obj(self.root);
        let mut hops = Vec::with_capacity(rels.len());
        for rel in rels {
            let At::Obj(o) = at else {
                return Err(bad_rel(rel));
            };
            let f = o.relationship(rel).ok_or_else(|| bad_rel(rel))?;
            let rel_name = f.relationship_name.clone().unwrap_or_else(|| rel.clone());
            let targets: Vec<&ObjectDef> =
                f.reference_to.iter().filter_map(|t| self.schema.object(t).map(|o| &**o)).collect();
            match targets.as_slice() {
                [] => return Err(bad_rel(rel)),
                [one] => {
                    hops.push(Hop::Fixed { field: f.name.clone(), rel: rel_name, target: one.name.clone() });
                    at = At::Obj(one);
                }
                _ => {
                    hops.push(Hop::Poly { field: f.name.clone(), rel: rel_name });
                    at = At::Poly;
                }
            }
        }
        let no_column = |entity: &str| {
            self.invalid_field(path.pos, format!("No such column '{leaf}' on entity '{entity}'. {NO_SUCH_COLUMN_TAIL}"))
        };
        match at {
            At::Obj(o) => {
                let f = o.field(leaf).ok_or_else(|| no_column(&o.name))?;
                Ok(FieldRef {
                    indexed: hops.is_empty() && (f.external_id || f.unique) && !f.case_sensitive,
                    hops,
                    leaf: Leaf::Stored(f.name.clone()),
                    class: class_of(f.field_type),
                    picklist: f.picklist.clone(),
                })
            }
            At::Poly => {
                if leaf.eq_ignore_ascii_case("Type") {
                    return Ok(FieldRef {
                        hops,
                        leaf: Leaf::ObjectType,
                        class: Class::Text,
                        picklist: Vec::new(),
                        indexed: false,
                    });
                }
                let (name, ty) = NAME_ENTITY_FIELDS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(leaf))
                    .ok_or_else(|| no_column("Name"))?;
                Ok(FieldRef {
                    hops,
                    leaf: Leaf::Stored((*name).to_string()),
                    class: class_of(*ty),
                    picklist: Vec::new(),
                    indexed: false,
                })
            }
        }
    }

    fn cond(&self, c: &Cond) -> Result<PCond, SoqlError> {
        Ok(match c {
            Cond::And(items) => PCond::And(items.iter().map(|i| self.cond(i)).collect::<Result<_, _>>()?),
            Cond::Or(items) => PCond::Or(items.iter().map(|i| self.cond(i)).collect::<Result<_, _>>()?),
            Cond::Not(inner) => PCond::Not(Box::new(self.cond(inner)?)),
            Cond::Cmp { path, op, value } => {
                let f = self.filterable(path)?;
                let t = self.test(&f, *op, value)?;
                PCond::Test(f, t)
            }
            Cond::In { path, negated, values } => {
                let f = self.filterable(path)?;
                let tests = values.iter().map(|v| self.test(&f, CmpOp::Eq, v)).collect::<Result<Vec<_>, _>>()?;
                let t = collapse_in(tests);
                let test = PCond::Test(f, t);
                if *negated { PCond::Not(Box::new(test)) } else { test }
            }
            Cond::Like { path, pattern } => {
                let f = self.filterable(path)?;
                let LitKind::Str(s) = &pattern.kind else {
                    return Err(SoqlError::at("MALFORMED_QUERY", self.src, pattern.pos, "unexpected token".into()));
                };
                match f.class {
                    Class::Text | Class::Picklist => {}
                    other => {
                        return Err(SoqlError::at(
                            "INVALID_QUERY_FILTER_OPERATOR",
                            self.src,
                            path.pos,
                            format!("invalid operator on {} field", class_word(other)),
                        ));
                    }
                }
                PCond::Test(f, Test::Like(compile_like(&s.pattern)))
            }
        })
    }

    fn filterable(&self, path: &Path) -> Result<FieldRef, SoqlError> {
        let f = self.resolve(path)?;
        if f.class == Class::LongText {
            return Err(
                self.invalid_field(path.pos, format!("field '{}' can not be filtered in a query call", f.leaf_name()))
            );
        }
        Ok(f)
    }

    fn test(&self, f: &FieldRef, op: CmpOp, lit: &Literal) -> Result<Test, SoqlError> {
        let wrong_type = |ty: &str, quoted: bool| {
            let how = if quoted { "should be enclosed in quotes" } else { "should not be enclosed in quotes" };
            self.invalid_field(
                lit.pos,
                format!("value of filter criterion for field '{}' must be of type {ty} and {how}", f.leaf_name()),
            )
        };
        if let LitKind::Null = lit.kind {
            return match op {
                CmpOp::Eq => Ok(Test::Null(true)),
                CmpOp::Ne => Ok(Test::Null(false)),
                _ => Err(SoqlError::at("MALFORMED_QUERY", self.src, lit.pos, "unexpected token: 'null'".into())),
            };
        }
        match (f.class, &lit.kind) {
            (Class::Text | Class::Picklist, LitKind::Str(s)) => {
                Ok(Test::Text { op, lower: s.value.to_lowercase(), raw: s.value.clone() })
            }
            (Class::Text | Class::Picklist, _) => Err(wrong_type("string", true)),
            (Class::Id, LitKind::Str(s)) => match ids::normalize(&s.value) {
                Some(id) => Ok(Test::Id { op, id }),
                None => Err(SoqlError::at(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    self.src,
                    lit.pos,
                    format!("invalid ID field: {}", s.value),
                )),
            },
            (Class::Id, _) => Err(wrong_type("id", true)),
            (Class::Bool, LitKind::Bool(v)) => match op {
                CmpOp::Eq | CmpOp::Ne => Ok(Test::Bool { eq: op == CmpOp::Eq, v: *v }),
                _ => Err(SoqlError::at(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    self.src,
                    lit.pos,
                    "invalid operator on boolean field".into(),
                )),
            },
            (Class::Bool, _) => Err(wrong_type("boolean", false)),
            (Class::Num, LitKind::Num(text)) => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Test::Num { op, v }),
                _ => Err(SoqlError::at("MALFORMED_QUERY", self.src, lit.pos, format!("unexpected token: '{text}'"))),
            },
            (Class::Num, _) => Err(wrong_type("double", false)),
            (Class::Date, LitKind::Date(d)) => Ok(Test::Wire { op, v: d.format("%Y-%m-%d").to_string() }),
            (Class::DateTime, LitKind::DateTime(t)) => Ok(Test::Wire { op, v: format_datetime(*t) }),
            (Class::Date | Class::DateTime, LitKind::DateFn(func)) => {
                let (start, end) = date_range(*func, self.today).ok_or_else(|| {
                    SoqlError::at("MALFORMED_QUERY", self.src, lit.pos, "date literal out of range".into())
                })?;
                Ok(Test::Range {
                    op,
                    start: start.format("%Y-%m-%d").to_string(),
                    end: end.format("%Y-%m-%d").to_string(),
                })
            }
            (Class::Date, _) => Err(wrong_type("date", false)),
            (Class::DateTime, _) => Err(wrong_type("dateTime", false)),
            (Class::LongText, _) => {
                Err(self
                    .invalid_field(lit.pos, format!("field '{}' can not be filtered in a query call", f.leaf_name())))
            }
        }
    }
}

fn class_of(t: FieldType) -> Class {
    match t {
        FieldType::Id | FieldType::Reference => Class::Id,
        FieldType::Boolean => Class::Bool,
        FieldType::Int | FieldType::Double | FieldType::Currency | FieldType::Percent => Class::Num,
        FieldType::Date => Class::Date,
        FieldType::DateTime => Class::DateTime,
        FieldType::TextArea => Class::LongText,
        FieldType::Picklist => Class::Picklist,
        FieldType::String | FieldType::Email | FieldType::Phone | FieldType::Url => Class::Text,
    }
}

fn class_word(c: Class) -> &'static str {
    match c {
        Class::Id => "id",
        Class::Bool => "boolean",
        Class::Num => "double",
        Class::Date => "date",
        Class::DateTime => "dateTime",
        Class::Text | Class::Picklist | Class::LongText => "string",
    }
}

/// IN over text or IDs becomes one set lookup per row instead of a scan of the list.
fn collapse_in(tests: Vec<Test>) -> Test {
    let mut null = false;
    let mut texts = HashSet::new();
    let mut idset = HashSet::new();
    let mut other = false;
    for t in &tests {
        match t {
            Test::Null(true) => null = true,
            Test::Text { op: CmpOp::Eq, lower, .. } => {
                texts.insert(lower.clone());
            }
            Test::Id { op: CmpOp::Eq, id } => {
                idset.insert(id.clone());
            }
            _ => other = true,
        }
    }
    if other || (!texts.is_empty() && !idset.is_empty()) {
        Test::Any(tests)
    } else if !idset.is_empty() {
        Test::IdIn { set: idset, null }
    } else {
        Test::TextIn { set: texts, null }
    }
}

fn compile_like(pattern: &[LikeTok]) -> Like {
    let mut toks = Vec::with_capacity(pattern.len());
    for t in pattern {
        match t {
            LikeTok::Char(c) => toks.extend(c.to_lowercase().map(LikeTok::Char)),
            other => toks.push(other.clone()),
        }
    }
    let text = |ts: &[LikeTok]| -> Option<String> {
        ts.iter().map(|t| if let LikeTok::Char(c) = t { Some(*c) } else { None }).collect()
    };
    let lead = toks.first() == Some(&LikeTok::AnyMany);
    let trail = toks.len() > usize::from(lead) && toks.last() == Some(&LikeTok::AnyMany);
    let inner = &toks[usize::from(lead)..toks.len() - usize::from(trail)];
    match (text(inner), lead, trail) {
        (Some(s), false, false) => Like::Exact(s),
        (Some(s), false, true) => Like::Prefix(s),
        (Some(s), true, false) => Like::Suffix(s),
        (Some(s), true, true) => Like::Contains(s),
        (None, _, _) => Like::General(toks),
    }
}

/// The whole days a relative date literal covers, inclusive. Weeks start on Sunday, as in the
/// default (en_US) locale.
pub fn date_range(f: DateFn, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let day = |d: NaiveDate| Some((d, d));
    let back = |n: u32| today.checked_sub_days(Days::new(u64::from(n)));
    let fwd = |n: u32| today.checked_add_days(Days::new(u64::from(n)));
    let week_start = back(today.weekday().num_days_from_sunday())?;
    let month_start = today.with_day(1)?;
    let month = |start: NaiveDate| Some((start, start.checked_add_months(Months::new(1))?.pred_opt()?));
    let year = |y: i32| Some((NaiveDate::from_ymd_opt(y, 1, 1)?, NaiveDate::from_ymd_opt(y, 12, 31)?));
    match f {
        DateFn::Today => day(today),
        DateFn::Yesterday => day(back(1)?),
        DateFn::Tomorrow => day(fwd(1)?),
        DateFn::NDaysAgo(n) => day(back(n)?),
        // LAST_N_DAYS includes today; NEXT_N_DAYS starts tomorrow.
        DateFn::LastNDays(n) => Some((back(n)?, today)),
        DateFn::NextNDays(n) => Some((fwd(1)?, fwd(n)?)),
        DateFn::ThisWeek => Some((week_start, week_start.checked_add_days(Days::new(6))?)),
        DateFn::LastWeek => {
            let s = week_start.checked_sub_days(Days::new(7))?;
            Some((s, s.checked_add_days(Days::new(6))?))
        }
        DateFn::NextWeek => {
            let s = week_start.checked_add_days(Days::new(7))?;
            Some((s, s.checked_add_days(Days::new(6))?))
        }
        DateFn::ThisMonth => month(month_start),
        DateFn::LastMonth => month(month_start.checked_sub_months(Months::new(1))?),
        DateFn::NextMonth => month(month_start.checked_add_months(Months::new(1))?),
        DateFn::ThisYear => year(today.year()),
        DateFn::LastYear => year(today.year() - 1),
        DateFn::NextYear => year(today.year() + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn date_ranges() {
        let today = d("2024-05-15"); // a Wednesday
        let r = |f| date_range(f, today).map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(r(DateFn::Today), pair("2024-05-15", "2024-05-15"));
        assert_eq!(r(DateFn::Yesterday), pair("2024-05-14", "2024-05-14"));
        assert_eq!(r(DateFn::Tomorrow), pair("2024-05-16", "2024-05-16"));
        assert_eq!(r(DateFn::LastNDays(7)), pair("2024-05-08", "2024-05-15"));
        assert_eq!(r(DateFn::NextNDays(7)), pair("2024-05-16", "2024-05-22"));
        assert_eq!(r(DateFn::NDaysAgo(3)), pair("2024-05-12", "2024-05-12"));
        assert_eq!(r(DateFn::ThisWeek), pair("2024-05-12", "2024-05-18"));
        assert_eq!(r(DateFn::LastWeek), pair("2024-05-05", "2024-05-11"));
        assert_eq!(r(DateFn::NextWeek), pair("2024-05-19", "2024-05-25"));
        assert_eq!(r(DateFn::ThisMonth), pair("2024-05-01", "2024-05-31"));
        assert_eq!(r(DateFn::LastMonth), pair("2024-04-01", "2024-04-30"));
        assert_eq!(r(DateFn::NextMonth), pair("2024-06-01", "2024-06-30"));
        assert_eq!(r(DateFn::ThisYear), pair("2024-01-01", "2024-12-31"));
        assert_eq!(r(DateFn::LastYear), pair("2023-01-01", "2023-12-31"));
        assert_eq!(r(DateFn::NextYear), pair("2025-01-01", "2025-12-31"));
        assert!(date_range(DateFn::LastNDays(u32::MAX), today).is_none());
    }

    #[test]
    fn like_shapes() {
        let lit = |s: &str| {
            let toks = super::super::lexer::tokenize(s).unwrap();
            let super::super::lexer::Tok::Str(l) = &toks[0].tok else { panic!() };
            compile_like(&l.pattern)
        };
        assert!(matches!(lit("'AbC'"), Like::Exact(s) if s == "abc"));
        assert!(matches!(lit("'ab%'"), Like::Prefix(s) if s == "ab"));
        assert!(matches!(lit("'%ab'"), Like::Suffix(s) if s == "ab"));
        assert!(matches!(lit("'%ab%'"), Like::Contains(s) if s == "ab"));
        assert!(matches!(lit("'%'"), Like::Suffix(s) if s.is_empty()));
        assert!(matches!(lit(r"'50\%%'"), Like::Prefix(s) if s == "50%"));
        assert!(matches!(lit("'a_c'"), Like::General(_)));
        assert!(matches!(lit("'a%c'"), Like::General(_)));
    }
}
