//! Runs a plan over the store: picks candidate records (an index lookup when the filter pins an
//! Id or an external ID, otherwise a scan), filters them without copying, sorts when asked, and
//! renders only the rows that are returned.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::QueryOutput;
use super::lexer::{CmpOp, LikeTok};
use super::plan::{ChildPlan, Class, FieldRef, Hop, Leaf, Like, OutItem, OutNode, PCond, Plan, Test};
use crate::salesforce::store::{Db, Field, Record};

/// Per-query state: the store and the parents already looked up. Many rows share a parent (an
/// owner, an account), and a store lookup normalises the ID and allocates, so each distinct
/// parent is fetched once per query.
struct Ctx<'a> {
    db: &'a Db,
    parents: RefCell<HashMap<&'a str, Option<(&'a str, &'a Record)>>>,
}

impl<'a> Ctx<'a> {
    /// The parent a lookup points at, with its object name.
    fn follow(&self, rec: &'a Record, hop: &Hop) -> Option<(&'a str, &'a Record)> {
        let (field, target) = match hop {
            Hop::Fixed { field, target, .. } => (field, Some(target)),
            Hop::Poly { field, .. } => (field, None),
        };
        let id = rec.get(field).as_str()?;
        let found = *self
            .parents
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| self.db.get_any(id).map(|(o, r)| (o.name.as_str(), r)));
        match (found, target) {
            (Some((object, _)), Some(target)) if object != target => None,
            _ => found,
        }
    }
}

pub fn run(plan: &Plan, db: &Db, all_rows: bool, version: &str) -> QueryOutput {
    let mut records = Vec::new();
    let total_size = run_each(plan, db, all_rows, version, |r| records.push(r));
    QueryOutput { total_size, records }
}

/// Runs the plan, handing each result row to `row` as it is rendered (so a caller that turns
/// rows into something smaller never holds them all as JSON). Returns the number of rows, which
/// for `COUNT()` is the count and no row is handed over.
pub fn run_each(plan: &Plan, db: &Db, all_rows: bool, version: &str, mut row: impl FnMut(Value)) -> usize {
    let version = version.trim_start_matches('v');
    let cx = Ctx { db, parents: RefCell::new(HashMap::new()) };
    let cx = &cx;
    let matching = candidates(plan, db, all_rows)
        .filter(|r| all_rows || !r.deleted)
        .filter(|r| plan.filter.as_ref().is_none_or(|c| eval(c, r, cx)));
    if plan.count_only {
        let limit = plan.limit.unwrap_or(usize::MAX);
        return matching.skip(plan.offset).take(limit).count();
    }
    let rows = order_and_cut(plan, matching, cx);
    let children = child_indexes(plan, db, all_rows, cx);
    for r in &rows {
        row(render_row(plan, r, &children, cx, version));
    }
    rows.len()
}

/// One row with its subqueries' children (and theirs, level by level).
fn render_row<'a>(plan: &Plan, rec: &'a Record, children: &[ChildIndex<'a>], cx: &Ctx<'a>, version: &str) -> Value {
    let mut v = render(&plan.out, &plan.object, rec, cx, version);
    if let Value::Object(m) = &mut v {
        for (child, index) in plan.children.iter().zip(children) {
            m.insert(child.key.clone(), nested(child, index, rec.id(), cx, version));
        }
    }
    v
}

/// The rows of `matching` that the plan's ORDER BY, OFFSET and LIMIT keep, in order.
fn order_and_cut<'a>(plan: &Plan, matching: impl Iterator<Item = &'a Record>, cx: &Ctx<'a>) -> Vec<&'a Record> {
    let limit = plan.limit.unwrap_or(usize::MAX);
    if plan.order.is_empty() {
        // Unsorted: stop scanning as soon as LIMIT rows are found.
        return matching.skip(plan.offset).take(limit).collect();
    }
    let mut keyed: Vec<(Vec<Key>, usize, &Record)> = matching
        .enumerate()
        .map(|(seq, r)| (plan.order.iter().map(|o| sort_key(&o.field, value(&o.field, r, cx))).collect(), seq, r))
        .collect();
    // Ties fall back to scan order, which makes the order total (so an unstable sort and a
    // partial selection give exactly what a stable sort would).
    let cmp = |a: &(Vec<Key>, usize, &Record), b: &(Vec<Key>, usize, &Record)| {
        compare_rows(plan, &a.0, &b.0).then(a.1.cmp(&b.1))
    };
    let wanted = plan.offset.saturating_add(limit);
    if wanted == 0 {
        keyed.clear();
    } else if wanted < keyed.len() {
        // ORDER BY ... LIMIT n only needs the first n rows in order, not a full sort.
        keyed.select_nth_unstable_by(wanted - 1, cmp);
        keyed.truncate(wanted);
    }
    keyed.sort_unstable_by(cmp);
    keyed.into_iter().skip(plan.offset).take(limit).map(|(_, _, r)| r).collect()
}

/// A subquery's matching child records grouped by the parent Id they point at (one pass over
/// the child object per query, not one per parent row), with the same for its own subqueries.
struct ChildIndex<'a> {
    by_parent: HashMap<&'a str, Vec<&'a Record>>,
    children: Vec<ChildIndex<'a>>,
}

fn child_indexes<'a>(plan: &Plan, db: &'a Db, all_rows: bool, cx: &Ctx<'a>) -> Vec<ChildIndex<'a>> {
    plan.children
        .iter()
        .map(|child| {
            let mut by_parent: HashMap<&str, Vec<&Record>> = HashMap::new();
            for r in db.records(&child.plan.object) {
                if (!all_rows && r.deleted) || !child.plan.filter.as_ref().is_none_or(|c| eval(c, r, cx)) {
                    continue;
                }
                if let Some(parent) = r.get(&child.field).as_str() {
                    by_parent.entry(parent).or_default().push(r);
                }
            }
            ChildIndex { by_parent, children: child_indexes(&child.plan, db, all_rows, cx) }
        })
        .collect()
}

/// A parent row's children as Salesforce nests them: a query result of their own, or `null`
/// when there are none.
fn nested<'a>(child: &ChildPlan, index: &ChildIndex<'a>, parent: &str, cx: &Ctx<'a>, version: &str) -> Value {
    let Some(rows) = index.by_parent.get(parent) else { return Value::Null };
    let kept = order_and_cut(&child.plan, rows.iter().copied(), cx);
    if kept.is_empty() {
        return Value::Null;
    }
    let records: Vec<Value> = kept.iter().map(|r| render_row(&child.plan, r, &index.children, cx, version)).collect();
    json!({"totalSize": records.len(), "done": true, "records": records})
}

/// Records that may match. When a top-level conjunct pins `Id` or an indexed external ID, only
/// those records are visited; the whole filter still runs on them, so this only saves work.
fn candidates<'a>(plan: &'a Plan, db: &'a Db, all_rows: bool) -> Box<dyn Iterator<Item = &'a Record> + 'a> {
    match pinned_ids(plan, db, all_rows) {
        Some(mut ids) => {
            // Creation order for generated IDs, and deterministic for any.
            ids.sort();
            ids.dedup();
            Box::new(ids.into_iter().filter_map(move |id| db.get(&plan.object, &id)))
        }
        None => db.records(&plan.object),
    }
}

fn pinned_ids(plan: &Plan, db: &Db, all_rows: bool) -> Option<Vec<String>> {
    let conjuncts: &[PCond] = match plan.filter.as_ref()? {
        PCond::And(items) => items,
        other => std::slice::from_ref(other),
    };
    for c in conjuncts {
        let PCond::Test(f, t) = c else { continue };
        if !f.hops.is_empty() {
            continue;
        }
        let is_id = f.leaf == Leaf::Stored("Id".to_string());
        match t {
            Test::Id { op: CmpOp::Eq, id } if is_id => return Some(vec![id.clone()]),
            Test::IdIn { set, null: false } if is_id => return Some(set.iter().cloned().collect()),
            // The external-ID index holds live records only, so queryAll must scan.
            Test::Text { op: CmpOp::Eq, raw, .. } if f.indexed && !all_rows => {
                if let Ok(ids) = db.find_by_external_id(&plan.object, f.leaf_name(), raw) {
                    return Some(ids);
                }
            }
            _ => {}
        }
    }
    None
}

fn value<'a>(f: &FieldRef, rec: &'a Record, cx: &Ctx<'a>) -> Field<'a> {
    let mut cur = rec;
    let mut object = "";
    for hop in &f.hops {
        match cx.follow(cur, hop) {
            Some((o, r)) => {
                object = o;
                cur = r;
            }
            None => return Field::Null,
        }
    }
    match &f.leaf {
        Leaf::Stored(name) => cur.get(name),
        Leaf::ObjectType => Field::Str(object),
    }
}

fn eval<'a>(c: &PCond, rec: &'a Record, cx: &Ctx<'a>) -> bool {
    match c {
        PCond::And(items) => items.iter().all(|i| eval(i, rec, cx)),
        PCond::Or(items) => items.iter().any(|i| eval(i, rec, cx)),
        PCond::Not(inner) => !eval(inner, rec, cx),
        PCond::Test(f, t) => test(t, value(f, rec, cx)),
    }
}

/// Lower-cases without allocating in the common case of text that already is.
fn lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { Cow::Borrowed(s) }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn ci_eq(s: &str, lowered: &str) -> bool {
    if s.is_ascii() { s.len() == lowered.len() && s.eq_ignore_ascii_case(lowered) } else { s.to_lowercase() == lowered }
}

fn apply(op: CmpOp, ord: Ordering) -> bool {
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

/// One condition on one value. An unset value satisfies only `!=`-style tests (`!= 'x'`,
/// `NOT IN`, `= null`), as in SOQL, and never an ordering comparison.
fn test(t: &Test, v: Field<'_>) -> bool {
    let missing = |op: &CmpOp| *op == CmpOp::Ne;
    match t {
        Test::Null(is_null) => v.is_null() == *is_null,
        Test::Text { op, lower: lit, .. } => match v.as_str() {
            None => missing(op),
            Some(s) => match op {
                CmpOp::Eq => ci_eq(s, lit),
                CmpOp::Ne => !ci_eq(s, lit),
                _ => apply(*op, lower(s).as_ref().cmp(lit.as_str())),
            },
        },
        Test::TextIn { set, null } => match v.as_str() {
            None => *null && v.is_null(),
            Some(s) => set.contains(lower(s).as_ref()),
        },
        Test::Like(pattern) => v.as_str().is_some_and(|s| like(pattern, &lower(s))),
        Test::Id { op, id } => match v.as_str() {
            None => missing(op),
            Some(s) => apply(*op, s.cmp(id)),
        },
        Test::IdIn { set, null } => match v.as_str() {
            None => *null && v.is_null(),
            Some(s) => set.contains(s),
        },
        Test::Num { op, v: lit } => match v.as_f64() {
            None => missing(op),
            Some(x) => x.partial_cmp(lit).is_some_and(|o| apply(*op, o)),
        },
        Test::Bool { eq, v: lit } => match v.as_bool() {
            None => !eq,
            Some(b) => (b == *lit) == *eq,
        },
        Test::Wire { op, v: lit } => match v.as_str() {
            None => missing(op),
            Some(s) => apply(*op, s.cmp(lit)),
        },
        Test::Range { op, start, end } => match v.as_str() {
            None => missing(op),
            Some(s) => {
                // Dates and UTC datetimes both start with the yyyy-mm-dd day.
                let day = s.get(..10).unwrap_or(s);
                let (start, end) = (start.as_str(), end.as_str());
                match op {
                    CmpOp::Eq => start <= day && day <= end,
                    CmpOp::Ne => !(start <= day && day <= end),
                    CmpOp::Lt => day < start,
                    CmpOp::Le => day <= end,
                    CmpOp::Gt => day > end,
                    CmpOp::Ge => day >= start,
                }
            }
        },
        Test::Any(tests) => tests.iter().any(|t| test(t, v)),
    }
}

fn like(pattern: &Like, s: &str) -> bool {
    match pattern {
        Like::Exact(p) => s == p,
        Like::Prefix(p) => s.starts_with(p.as_str()),
        Like::Suffix(p) => s.ends_with(p.as_str()),
        Like::Contains(p) => s.contains(p.as_str()),
        Like::General(toks) => {
            let chars: Vec<char> = s.chars().collect();
            glob(toks, &chars)
        }
    }
}

/// Wildcard matching with single-star backtracking: linear in the common case, O(n·m) at worst,
/// never exponential.
fn glob(p: &[LikeTok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(LikeTok::Char(c)) => s.get(si) == Some(c),
            Some(LikeTok::AnyOne) => true,
            _ => false,
        };
        if step {
            pi += 1;
            si += 1;
        } else if p.get(pi) == Some(&LikeTok::AnyMany) {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while p.get(pi) == Some(&LikeTok::AnyMany) {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Debug, Clone, PartialEq)]
enum Key {
    Null,
    /// Case-folded text: Salesforce sorts text case-insensitively.
    Text(String),
    /// IDs, dates and datetimes: their wire form sorts correctly byte by byte.
    Raw(String),
    Num(f64),
    Bool(bool),
    /// A picklist sorts by the position of its value in the picklist definition.
    Pick(usize, String),
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Null => 0,
            Key::Bool(_) => 1,
            Key::Num(_) => 2,
            Key::Pick(..) => 3,
            Key::Text(_) => 4,
            Key::Raw(_) => 5,
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Text(a), Key::Text(b)) | (Key::Raw(a), Key::Raw(b)) => a.cmp(b),
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Pick(a, x), Key::Pick(b, y)) => a.cmp(b).then_with(|| x.cmp(y)),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

fn sort_key(f: &FieldRef, v: Field<'_>) -> Key {
    match (f.class, v) {
        (_, Field::Null) => Key::Null,
        (Class::Num, n @ (Field::U64(_) | Field::I64(_) | Field::F64(_))) => n.as_f64().map_or(Key::Null, Key::Num),
        (Class::Bool, Field::Bool(b)) => Key::Bool(b),
        (Class::Picklist, Field::Str(s)) => {
            let pos = f.picklist.iter().position(|p| p.eq_ignore_ascii_case(s)).unwrap_or(f.picklist.len());
            Key::Pick(pos, lower(s).into_owned())
        }
        (Class::Text | Class::LongText, Field::Str(s)) => Key::Text(lower(s).into_owned()),
        (_, Field::Str(s)) => Key::Raw(s.to_owned()),
        (_, other) => Key::Raw(other.to_value().to_string()),
    }
}

fn compare_rows(plan: &Plan, a: &[Key], b: &[Key]) -> Ordering {
    for ((o, ka), kb) in plan.order.iter().zip(a).zip(b) {
        let ord = match (ka == &Key::Null, kb == &Key::Null) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if o.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if o.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let c = ka.cmp(kb);
                if o.descending { c.reverse() } else { c }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn render<'a>(node: &OutNode, object: &str, rec: &'a Record, cx: &Ctx<'a>, version: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/v{version}/sobjects/{object}/{}", rec.id())}),
    );
    for item in &node.items {
        match item {
            OutItem::Leaf { key, leaf: Leaf::Stored(name) } => {
                m.insert(key.clone(), rec.get(name).to_value());
            }
            OutItem::Leaf { key, leaf: Leaf::ObjectType } => {
                m.insert(key.clone(), Value::String(object.to_string()));
            }
            OutItem::Rel { key, hop, node } => {
                let v = cx.follow(rec, hop).map_or(Value::Null, |(o, r)| render(node, o, r, cx, version));
                m.insert(key.clone(), v);
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Vec<LikeTok> {
        s.chars()
            .map(|c| match c {
                '%' => LikeTok::AnyMany,
                '_' => LikeTok::AnyOne,
                c => LikeTok::Char(c),
            })
            .collect()
    }

    fn g(p: &str, s: &str) -> bool {
        glob(&pat(p), &s.chars().collect::<Vec<_>>())
    }

    #[test]
    fn glob_matches() {
        assert!(g("a%c", "abbbc"));
        assert!(g("a%c", "ac"));
        assert!(!g("a%c", "acb"));
        assert!(g("a_c", "abc"));
        assert!(!g("a_c", "ac"));
        assert!(g("%a%b%", "xxaxxbxx"));
        assert!(!g("%a%b%", "xxbxxaxx"));
        assert!(g("", ""));
        assert!(!g("", "a"));
        assert!(g("%%", ""));
        assert!(g("_%_", "ab"));
        assert!(!g("_%_", "a"));
        // Pathological for naive backtracking; linear-ish here.
        let long = "a".repeat(5000);
        assert!(!g("%a%a%a%a%a%b", &long));
    }

    #[test]
    fn case_folding() {
        assert!(ci_eq("ACME", "acme"));
        assert!(ci_eq("ÄBC", "äbc"));
        assert!(!ci_eq("acm", "acme"));
        assert_eq!(lower("abc"), Cow::Borrowed("abc"));
        assert_eq!(lower("AbC"), "abc");
    }
}
