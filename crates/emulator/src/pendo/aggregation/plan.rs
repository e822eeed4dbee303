//! Query planning: before a pipeline runs, work that only narrows or orders its source is moved
//! into the source scan, where it is cheap, and the stages it replaces are dropped. Every rewrite
//! gives exactly the rows, in exactly the order, that running the stages as written would:
//!
//! - Keyset pushdown: comparisons of the row's `visitorId`/`accountId` with a string literal in
//!   the filters right after the source become scan bounds, so event scans test an index per row
//!   and entity scans skip the rows the filter would drop. A keyset on several keys stays a
//!   filter, and the lower bound it implies on its first key becomes a scan bound besides.
//! - Ordered entity scans: a `sort` on a `visitors`/`accounts` source's id (still the id after
//!   the selects, evals and filters in between) is answered by the scan emitting rows in id
//!   order, ties in insertion order as the stable sort leaves them; with only one-to-one stages
//!   before it, a `limit` right after the sort also cuts the scan, so rows the page will not hold
//!   are never built.

use std::borrow::Cow;
use std::sync::Arc;

use super::super::store::Store;
use super::super::val::Val;
use super::expr::{BinOp, Col, Expr};
use super::ops::Stage;
use super::source::{self, Bound, Scan, Source, SourceKind};

/// A source scan and the stages left to run after it.
pub struct Plan<'p> {
    pub scan: Scan,
    pub stages: Cow<'p, [Stage]>,
}

impl<'p> Plan<'p> {
    /// The pipeline exactly as written.
    pub fn as_written(stages: &'p [Stage]) -> Plan<'p> {
        Plan { scan: Scan::default(), stages: Cow::Borrowed(stages) }
    }
}

pub fn plan<'p>(src: &Source, stages: &'p [Stage], store: &Store) -> Plan<'p> {
    let mut scan = Scan::default();
    let mut out: Vec<Stage> = Vec::new();
    let cols = source::key_cols(&src.kind);
    let mut rest = stages;
    // Filters commute with each other, so every leading one may give up its key conditions.
    while let [Stage::Filter(e), tail @ ..] = rest {
        let mut kept = Vec::new();
        for c in conjuncts(e) {
            match bound(c, cols) {
                Some(b) => scan.bounds.push(b),
                None => {
                    // A keyset on several keys (`a > x || (a == x && b > y)`) stays a filter,
                    // but the floor it implies on its first key still narrows the scan.
                    scan.bounds.extend(floor(c, cols));
                    kept.push(c.clone());
                }
            }
        }
        if let Some(e) = kept.into_iter().reduce(|a, b| Expr::Bin(BinOp::And, Box::new(a), Box::new(b))) {
            out.push(Stage::Filter(e));
        }
        rest = tail;
    }
    let changed = !scan.bounds.is_empty();
    let id = match src.kind {
        SourceKind::Visitors { .. } => Some(("visitorId", store.visitor_index.len() == store.visitors.len())),
        SourceKind::Accounts => Some(("accountId", store.account_index.len() == store.accounts.len())),
        _ => None,
    };
    if let Some((id, unique)) = id
        // A filter left in place drops rows before the sort, so the scan may not stop early.
        && let Some((at, desc, limit)) = ordered_by_id(rest, id, unique, out.is_empty())
    {
        scan.order = Some(desc);
        scan.limit = limit;
        out.extend(rest[..at].iter().cloned());
        out.extend(rest[at + 1..].iter().cloned());
        return Plan { scan, stages: Cow::Owned(out) };
    }
    if !changed {
        return Plan::as_written(stages);
    }
    out.extend(rest.iter().cloned());
    Plan { scan, stages: Cow::Owned(out) }
}

/// The operands of a chain of `&&`, left to right.
fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Bin(BinOp::And, a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        other => vec![other],
    }
}

/// `id op "text"` (or `"text" op id`) on one of `cols`, as a scan bound.
fn bound(e: &Expr, cols: &[Col]) -> Option<Bound> {
    let Expr::Bin(op, a, b) = e else { return None };
    let (path, lit, op) = match (&**a, &**b) {
        (Expr::Path(p), Expr::Lit(Val::Str(s))) => (p, s, *op),
        (Expr::Lit(Val::Str(s)), Expr::Path(p)) => (
            p,
            s,
            match op {
                BinOp::Lt => BinOp::Gt,
                BinOp::Le => BinOp::Ge,
                BinOp::Gt => BinOp::Lt,
                BinOp::Ge => BinOp::Le,
                other => *other,
            },
        ),
        _ => return None,
    };
    let supported = matches!(op, BinOp::Eq | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge);
    let head_is_col = path.rest.is_empty() && path.col != Col::Other && cols.contains(&path.col);
    (supported && head_is_col).then(|| Bound { col: path.col, op, value: Arc::clone(lit) })
}

/// A lower bound on one of `cols` that every row `e` admits must meet, as `col >= text`: from
/// `col > text`, `col >= text` or `col == text`; from either side of an `&&`; from an `||`
/// whose sides both imply one on the same column (the lower of the two).
fn floor(e: &Expr, cols: &[Col]) -> Option<Bound> {
    let at_least = |b: Bound| matches!(b.op, BinOp::Gt | BinOp::Ge | BinOp::Eq).then_some(Bound { op: BinOp::Ge, ..b });
    match e {
        Expr::Bin(BinOp::And, a, b) => floor(a, cols).or_else(|| floor(b, cols)),
        Expr::Bin(BinOp::Or, a, b) => {
            let (a, b) = (floor(a, cols)?, floor(b, cols)?);
            (a.col == b.col).then(|| if a.value <= b.value { a } else { b })
        }
        _ => bound(e, cols).and_then(at_least),
    }
}

/// Whether `stages` sort on the source's id before anything that depends on row order: the
/// sort's index, direction, and the limit the scan may take when only one-to-one stages come
/// before the sort and a limit right after it.
fn ordered_by_id(
    stages: &[Stage],
    id: &str,
    unique: bool,
    mut one_to_one: bool,
) -> Option<(usize, bool, Option<usize>)> {
    // Names the id goes by at this point (a select may rename or copy it).
    let mut names: Vec<String> = vec![id.to_string()];
    let plain = |n: &str| !n.is_empty() && !n.contains(['.', '[', ']']);
    let clobbers = |assigned: &str, name: &str| {
        assigned == name || assigned.strip_prefix(name).is_some_and(|r| r.starts_with(['.', '[']))
    };
    for (i, st) in stages.iter().enumerate() {
        match st {
            Stage::Filter(_) | Stage::Identified { .. } | Stage::Segment(_) => one_to_one = false,
            Stage::Select(fields) => {
                names = fields
                    .iter()
                    .filter(|(n, e)| {
                        plain(n) && matches!(e, Expr::Path(p) if p.rest.is_empty() && names.contains(&p.head))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
            }
            Stage::Eval(fields) => names.retain(|n| !fields.iter().any(|(a, _)| clobbers(a, n))),
            Stage::BulkExpand(specs) => names.retain(|n| !specs.iter().any(|(a, _, _)| clobbers(a, n))),
            Stage::Sort(keys) => {
                let (first, desc) = keys.first()?;
                let on_id = first.rest.is_empty() && names.contains(&first.head);
                if !on_id || (keys.len() > 1 && !unique) {
                    return None;
                }
                let limit = match stages.get(i + 1) {
                    Some(Stage::Limit(n)) if one_to_one => Some(*n),
                    _ => None,
                };
                return Some((i, *desc, limit));
            }
            _ => return None,
        }
        if names.is_empty() {
            return None;
        }
    }
    None
}
