//! Pipeline operators: the whole pipeline is compiled (and rejected with a message) before any
//! row is touched, then executed stage by stage over `Vec<Row>`.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value as J;

use super::super::store::{EventKind, MetaKind, Store, is_anonymous};
use super::super::val::{FxMap, FxSet, HKey, Obj, Val};
use super::expr::{self, Env, Expr, Path};
use super::fast::Input;
use super::plan;
use super::row::{self, Ctx, Grid, Period, Row, RowRef};
use super::source::{self, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Sum,
    Count,
    First,
    Last,
    List,
    Min,
    Max,
    Avg,
}

impl Agg {
    fn of(s: &str) -> Option<Agg> {
        Some(match s {
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "first" => Agg::First,
            "last" => Agg::Last,
            "list" => Agg::List,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "avg" => Agg::Avg,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct AggField {
    pub out: String,
    pub agg: Agg,
    /// `None` for `{"count": null}`: count rows.
    pub arg: Option<Expr>,
}

#[derive(Clone, Debug)]
pub enum Stage {
    Filter(Expr),
    Select(Vec<(String, Expr)>),
    Eval(Vec<(String, Expr)>),
    Sort(Vec<(Path, bool)>),
    Limit(usize),
    Identified { path: Path, anonymous: bool },
    Group { keys: Vec<(String, Path)>, fields: Vec<AggField> },
    Reduce(Vec<AggField>),
    Count,
    Unwind { field: Path, keep_empty: bool, index: Option<String> },
    Merge { fields: Vec<Path>, mappings: Vec<(String, Path)>, pipeline: Box<Pipeline> },
    BulkExpand(Vec<(String, MetaKind, Expr)>),
    Join { fields: Vec<Path>, width: Option<usize> },
    Segment(String),
    Fork(Vec<Vec<Stage>>),
    Cat,
}

#[derive(Clone, Debug)]
pub enum Start {
    Source(Source),
    Spawn(Vec<Pipeline>),
}

#[derive(Clone, Debug)]
pub struct Pipeline {
    pub start: Start,
    pub stages: Vec<Stage>,
}

pub struct Opts<'a> {
    pub now: i64,
    pub tz_ms: i64,
    pub app_ids: &'a [i64],
    pub count_distinct: bool,
    /// Whether the planner may use its fast paths (keyset pushdown, fused group-of-group, ...).
    /// Off only in tests that check a fast path against the plain operator-by-operator answer.
    pub optimize: bool,
}

impl Opts<'_> {
    fn env(&self) -> Env<'_> {
        Env { now: self.now, tz_ms: self.tz_ms, app_ids: self.app_ids }
    }
}

fn single_key(stage: &J) -> Result<(&str, &J), String> {
    let o = stage.as_object().ok_or_else(|| format!("pipeline stage must be an object, got {stage}"))?;
    let mut it = o.iter();
    let (k, v) = it.next().ok_or("empty pipeline stage")?;
    if let Some((k2, _)) = it.next() {
        return Err(format!("pipeline stage has more than one operator ({k}, {k2})"));
    }
    Ok((k.as_str(), v))
}

fn expr_of(v: &J, what: &str) -> Result<Expr, String> {
    match v {
        J::String(s) => expr::parse(s).map_err(|e| format!("{what}: invalid expression {s:?}: {e}")),
        J::Number(_) | J::Bool(_) | J::Null => Ok(Expr::Lit(Val::from(v))),
        other => Err(format!("{what}: expected an expression string, got {other}")),
    }
}

fn path_of(v: &J, what: &str) -> Result<Path, String> {
    let s = v.as_str().ok_or_else(|| format!("{what}: expected a field name, got {v}"))?;
    Path::parse(s).map_err(|e| format!("{what}: invalid field {s:?}: {e}"))
}

fn paths_of(v: &J, what: &str) -> Result<Vec<Path>, String> {
    match v {
        J::Array(a) => a.iter().map(|x| path_of(x, what)).collect(),
        J::String(_) => Ok(vec![path_of(v, what)?]),
        other => Err(format!("{what}: expected a list of field names, got {other}")),
    }
}

fn assignments(v: &J, what: &str) -> Result<Vec<(String, Expr)>, String> {
    let o = v.as_object().ok_or_else(|| format!("{what} expects an object of name: expression"))?;
    o.iter().map(|(k, e)| Ok((k.clone(), expr_of(e, &format!("{what}.{k}"))?))).collect()
}

fn agg_field(out: &str, spec: &J) -> Result<AggField, String> {
    let o = spec.as_object().ok_or_else(|| format!("field {out}: expected {{\"<aggregator>\": <field>}}"))?;
    let mut it = o.iter();
    let (name, arg) = it.next().ok_or_else(|| format!("field {out}: no aggregator"))?;
    if it.next().is_some() {
        return Err(format!("field {out}: more than one aggregator"));
    }
    let agg = Agg::of(name).ok_or_else(|| format!("field {out}: unknown aggregator {name:?}"))?;
    let arg = match arg {
        J::Null => {
            if agg != Agg::Count {
                return Err(format!("field {out}: {name} needs a field"));
            }
            None
        }
        J::String(s) if s == "*" && agg == Agg::Count => None,
        v => Some(expr_of(v, &format!("field {out}"))?),
    };
    Ok(AggField { out: out.to_string(), agg, arg })
}

/// Both forms: `{"out": {"sum": "f"}}` and `[{"out": {"sum": "f"}}, ...]`.
fn agg_fields(v: &J) -> Result<Vec<AggField>, String> {
    match v {
        J::Object(o) => o.iter().map(|(k, s)| agg_field(k, s)).collect(),
        J::Array(a) => {
            let mut out = Vec::new();
            for item in a {
                let o = item.as_object().ok_or("group fields list must hold objects")?;
                for (k, s) in o {
                    out.push(agg_field(k, s)?);
                }
            }
            Ok(out)
        }
        J::Null => Ok(Vec::new()),
        other => Err(format!("fields must be an object or a list, got {other}")),
    }
}

fn stage(op: &str, v: &J, opts: &Opts) -> Result<Stage, String> {
    Ok(match op {
        "filter" => Stage::Filter(expr_of(v, "filter")?),
        "select" => Stage::Select(assignments(v, "select")?),
        "eval" => Stage::Eval(assignments(v, "eval")?),
        "sort" => {
            let keys = match v {
                J::Array(a) => a.clone(),
                J::String(_) => vec![v.clone()],
                _ => return Err("sort expects a list of field names".into()),
            };
            let mut out = Vec::new();
            for k in keys {
                let s = k.as_str().ok_or("sort keys must be strings")?;
                let (desc, name) = match s.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, s.strip_prefix('+').unwrap_or(s)),
                };
                out.push((Path::parse(name).map_err(|e| format!("sort: invalid field {s:?}: {e}"))?, desc));
            }
            Stage::Sort(out)
        }
        "limit" => {
            let n = v.as_u64().ok_or_else(|| format!("limit must be a non-negative integer, got {v}"))?;
            Stage::Limit(usize::try_from(n).unwrap_or(usize::MAX))
        }
        "identified" => {
            let s = v.as_str().ok_or("identified expects a field name")?;
            let (anonymous, name) = match s.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, s),
            };
            Stage::Identified { path: Path::parse(name).map_err(|e| format!("identified: {e}"))?, anonymous }
        }
        "group" => {
            let o = v.as_object().ok_or("group expects an object")?;
            let keys = match o.get("group") {
                None | Some(J::Null) => Vec::new(),
                Some(g) => paths_of(g, "group.group")?.into_iter().map(|p| (p.dotted(), p)).collect(),
            };
            Stage::Group { keys, fields: agg_fields(o.get("fields").unwrap_or(&J::Null))? }
        }
        "reduce" => Stage::Reduce(agg_fields(v)?),
        "count" => Stage::Count,
        "unwind" => {
            let o = v.as_object().ok_or("unwind expects an object")?;
            Stage::Unwind {
                field: path_of(o.get("field").ok_or("unwind needs field")?, "unwind.field")?,
                keep_empty: o.get("keepEmpty").and_then(J::as_bool).unwrap_or(false),
                index: o.get("index").and_then(J::as_str).map(str::to_string),
            }
        }
        "merge" => {
            let o = v.as_object().ok_or("merge expects an object")?;
            let fields = paths_of(o.get("fields").ok_or("merge needs fields")?, "merge.fields")?;
            let mappings = match o.get("mappings") {
                None | Some(J::Null) => Vec::new(),
                Some(J::Object(m)) => m
                    .iter()
                    .map(|(k, p)| Ok((k.clone(), path_of(p, "merge.mappings")?)))
                    .collect::<Result<_, String>>()?,
                Some(_) => return Err("merge.mappings must be an object".into()),
            };
            let pipeline = compile(o.get("pipeline").ok_or("merge needs pipeline")?, opts)?;
            Stage::Merge { fields, mappings, pipeline: Box::new(pipeline) }
        }
        "bulkExpand" => {
            let o = v.as_object().ok_or("bulkExpand expects an object")?;
            let mut out = Vec::new();
            for (name, spec) in o {
                let s = spec.as_object().ok_or("bulkExpand entries look like {\"account\": \"accountId\"}")?;
                let (kind, key) = s.iter().next().ok_or("empty bulkExpand entry")?;
                let kind = MetaKind::parse(kind).ok_or_else(|| format!("bulkExpand: unknown kind {kind:?}"))?;
                out.push((name.clone(), kind, expr_of(key, "bulkExpand")?));
            }
            Stage::BulkExpand(out)
        }
        "join" => {
            let o = v.as_object().ok_or("join expects an object")?;
            Stage::Join {
                fields: paths_of(o.get("fields").ok_or("join needs fields")?, "join.fields")?,
                width: o.get("width").and_then(J::as_u64).map(|w| w as usize),
            }
        }
        "segment" => {
            let id = v.get("id").and_then(J::as_str).ok_or("segment expects {\"id\": \"...\"}")?;
            Stage::Segment(id.to_string())
        }
        "fork" => {
            let branches = v.as_array().ok_or("fork expects a list of pipelines")?;
            let mut out = Vec::new();
            for b in branches {
                let a = b.as_array().ok_or("fork branches must be lists of stages")?;
                let mut stages = Vec::new();
                for s in a {
                    let (op, v) = single_key(s)?;
                    stages.push(stage(op, v, opts)?);
                }
                out.push(stages);
            }
            Stage::Fork(out)
        }
        "cat" => Stage::Cat,
        "source" | "spawn" => return Err(format!("{op} may only start a pipeline")),
        other => return Err(format!("unknown pipeline operator {other:?}")),
    })
}

/// Compiles a pipeline (a JSON array of stages).
pub fn compile(v: &J, opts: &Opts) -> Result<Pipeline, String> {
    let stages = v.as_array().ok_or("pipeline must be a list of stages")?;
    let (first, rest) = stages.split_first().ok_or("pipeline is empty")?;
    let (op, val) = single_key(first)?;
    let start = match op {
        "source" => Start::Source(source::parse_source(val, &opts.env())?),
        "spawn" => {
            let subs = val.as_array().ok_or("spawn expects a list of pipelines")?;
            Start::Spawn(subs.iter().map(|s| compile(s, opts)).collect::<Result<_, _>>()?)
        }
        other => {
            return Err(format!("pipeline must start with source or spawn, not {other:?}"));
        }
    };
    let stages = rest.iter().map(|s| single_key(s).and_then(|(op, v)| stage(op, v, opts))).collect::<Result<_, _>>()?;
    Ok(Pipeline { start, stages })
}

/// Result of running a pipeline.
pub struct Output {
    pub rows: Vec<Row>,
    pub period: Period,
    pub start_time: Option<i64>,
    pub scanned: u64,
}

pub fn run(p: &Pipeline, store: &Store, opts: &Opts) -> Result<Output, String> {
    let mut scanned = 0u64;
    let mut stages: Cow<[Stage]> = Cow::Borrowed(&p.stages);
    // An event scan whose rows go through filters into a group is not listed: the filters are
    // applied as the scan picks rows and the group reads the picked set (`picked`), until a
    // stage that needs rows listed takes them.
    let mut picked: Option<source::Picked> = None;
    let mut i = 0;
    let (mut rows, period, start_time, mut streams) = match &p.start {
        Start::Source(src) => {
            let planned =
                if opts.optimize { plan::plan(src, &p.stages, store) } else { plan::Plan::as_written(&p.stages) };
            stages = planned.stages;
            let w = src.window;
            let period = w.map_or(Period::Day, |w| w.period);
            let filters = stages.iter().take_while(|st| RowFilter::applies(st)).count();
            let ctx = ctx_for(store, period, opts);
            let fused = if opts.optimize && matches!(stages.get(filters), Some(Stage::Group { .. })) {
                let kept: Vec<RowFilter> =
                    stages[..filters].iter().filter_map(|st| RowFilter::new(&ctx, st, true)).collect();
                source::picked(store, src, &planned.scan, |r| kept.iter().all(|f| f.keeps(&ctx, r)))
            } else {
                None
            };
            let rows = match fused {
                Some((set, n)) => {
                    scanned += n;
                    picked = Some(set);
                    i = filters;
                    Vec::new()
                }
                None => {
                    let (rows, n) = source::rows(store, src, &planned.scan);
                    scanned += n;
                    rows
                }
            };
            (rows, period, w.map(|w| w.start), None)
        }
        Start::Spawn(subs) => {
            let mut streams = Vec::new();
            for s in subs {
                let out = run(s, store, opts)?;
                scanned += out.scanned;
                let ctx = ctx_for(store, out.period, opts);
                streams.push(out.rows.iter().map(|r| Row::Doc(r.materialize(&ctx))).collect::<Vec<_>>());
            }
            (Vec::new(), Period::Day, None, Some(streams))
        }
    };
    let ctx = ctx_for(store, period, opts);
    while let Some(st) = stages.get(i) {
        i += 1;
        let input = match &picked {
            Some(p) => Input::Picked(p),
            None => Input::Rows(&rows),
        };
        if opts.optimize
            && streams.is_none()
            && let Stage::Group { keys, fields } = st
            && let Some((consts, second, used)) = group_after(&stages[i..])
            && let Some(out) = super::fast::group_of_group(&ctx, input, (keys, fields), &consts, second)
        {
            (rows, picked) = (out, None);
            i += used;
            continue;
        }
        if opts.optimize
            && streams.is_none()
            && let Stage::Group { keys, fields } = st
            && let Some(Stage::Sort(sort)) = stages.get(i)
        {
            let limit = match stages.get(i + 1) {
                Some(Stage::Limit(n)) => Some(*n),
                _ => None,
            };
            if let Some(out) = super::fast::group_sorted(&ctx, input, (keys, fields), sort, limit) {
                (rows, picked) = (out, None);
                i += 1 + usize::from(limit.is_some());
                continue;
            }
        }
        // (Over listed rows `apply` takes the same path.)
        if let Stage::Group { keys, fields } = st
            && let Some(p) = &picked
            && let Some(out) = super::fast::group(&ctx, Input::Picked(p), keys, fields)
        {
            (rows, picked) = (out, None);
            continue;
        }
        if let Some(set) = picked.take() {
            rows = set.rows();
        }
        if let Stage::Join { fields, width } = st {
            let s = streams.take().unwrap_or_else(|| vec![std::mem::take(&mut rows)]);
            rows = join(&ctx, s, fields, *width);
            continue;
        }
        if let Some(s) = streams.take() {
            rows = s.into_iter().flatten().collect();
        }
        rows = apply(&ctx, st, rows, opts, &mut scanned)?;
    }
    if let Some(set) = picked.take() {
        rows = set.rows();
    }
    if let Some(s) = streams.take() {
        rows = s.into_iter().flatten().collect();
    }
    Ok(Output { rows, period, start_time, scanned })
}

/// `kind`'s place in [`RowFilter::Expr`]'s verdicts.
fn kind_slot(kind: EventKind) -> usize {
    match kind {
        EventKind::Page => 0,
        EventKind::Feature => 1,
        EventKind::Track => 2,
    }
}

/// An event row's fields as far as its item decides them (see [`row::item_col`]).
struct ItemFields<'c, 'a> {
    ctx: &'c Ctx<'a>,
    kind: EventKind,
    item: u32,
}

impl expr::Fields for ItemFields<'_, '_> {
    fn get(&self, path: &Path) -> Val {
        let head = row::item_col(self.ctx.store, self.kind, self.item, path.col).unwrap_or(Val::Null);
        if path.rest.is_empty() { head } else { path.walk(head) }
    }
}

/// A `filter` or `identified` stage, which keeps or drops each row on its own, ready to test
/// rows: the same test whether it runs over listed rows or inside a source scan.
enum RowFilter<'e> {
    /// With, for each kind of event row, the verdict on each item where the expression reads
    /// only what the item decides (`featureId == ..`, tested once per feature instead of on
    /// every row).
    Expr(&'e Expr, [Option<Vec<bool>>; 3]),
    /// `identified` on the visitor column, over event and guide rows: whether each visitor is
    /// identified, worked out once rather than per row (millions of rows, a few hundred thousand
    /// visitors).
    Visitors {
        identified: Vec<bool>,
        anonymous: bool,
        path: &'e Path,
    },
    Identified {
        path: &'e Path,
        anonymous: bool,
    },
}

impl<'e> RowFilter<'e> {
    fn applies(st: &Stage) -> bool {
        matches!(st, Stage::Filter(_) | Stage::Identified { .. })
    }

    /// `optimize` off tests every row as written (what the planned paths are checked against).
    fn new(ctx: &Ctx, st: &'e Stage, optimize: bool) -> Option<RowFilter<'e>> {
        match st {
            Stage::Filter(e) => {
                let by_item = [EventKind::Page, EventKind::Feature, EventKind::Track].map(|kind| {
                    let decided = |p: &Path| row::item_col(ctx.store, kind, 0, p.col).is_some();
                    (optimize && e.reads_only(&decided)).then(|| {
                        let items = ctx.store.items(kind).len() as u32;
                        (0..items)
                            .map(|item| expr::truthy(&expr::eval(e, &ItemFields { ctx, kind, item }, &ctx.env())))
                            .collect()
                    })
                });
                Some(RowFilter::Expr(e, by_item))
            }
            Stage::Identified { path, anonymous }
                if optimize && path.rest.is_empty() && path.col == expr::Col::VisitorId =>
            {
                let identified = ctx.store.visitors.iter().map(|v| !is_anonymous(&v.id)).collect();
                Some(RowFilter::Visitors { identified, anonymous: *anonymous, path })
            }
            Stage::Identified { path, anonymous } => Some(RowFilter::Identified { path, anonymous: *anonymous }),
            _ => None,
        }
    }

    fn keeps(&self, ctx: &Ctx, r: &Row) -> bool {
        let (path, anonymous) = match self {
            RowFilter::Expr(e, by_item) => {
                if let Row::Ev(kind, i) = r
                    && let Some(verdicts) = &by_item[kind_slot(*kind)]
                {
                    let t = ctx.store.table_for(*kind, ctx.period == Period::Day);
                    let i = *i as usize;
                    if let Some(&v) = (i < t.len()).then(|| verdicts.get(t.item(i) as usize)).flatten() {
                        return v;
                    }
                }
                return expr::truthy(&expr::eval(e, &RowRef { row: r, ctx }, &ctx.env()));
            }
            RowFilter::Visitors { identified, anonymous, path } => {
                let visitor = match r {
                    Row::Ev(kind, i) => {
                        let t = ctx.store.table_for(*kind, ctx.period == Period::Day);
                        let i = *i as usize;
                        (i < t.len()).then(|| t.visitor(i))
                    }
                    Row::Guide(_, i) => ctx.store.guide_events.peek(*i as usize).map(|e| e.visitor),
                    _ => return Self::known(ctx, r, path) != *anonymous,
                };
                let known = visitor.and_then(|v| identified.get(v as usize).copied()).unwrap_or(false);
                return known != *anonymous;
            }
            RowFilter::Identified { path, anonymous } => (*path, *anonymous),
        };
        Self::known(ctx, r, path) != anonymous
    }

    /// Whether `r`'s value at `path` names an identified visitor.
    fn known(ctx: &Ctx, r: &Row, path: &Path) -> bool {
        match r.get(ctx, path) {
            Val::Str(s) => !is_anonymous(&s),
            Val::Int(_) | Val::Float(_) => true,
            _ => false,
        }
    }
}

/// A group right after a group, past `eval`s of constants only: the constants, the second
/// group's keys and fields, and how many stages that is.
#[allow(clippy::type_complexity)]
fn group_after(stages: &[Stage]) -> Option<(Vec<(String, Expr)>, (&[(String, Path)], &[AggField]), usize)> {
    let mut consts = Vec::new();
    for (n, st) in stages.iter().enumerate() {
        match st {
            Stage::Eval(fields) if fields.iter().all(|(_, e)| matches!(e, Expr::Lit(_))) => {
                consts.extend(fields.iter().cloned())
            }
            Stage::Group { keys, fields } => return Some((consts, (keys.as_slice(), fields.as_slice()), n + 1)),
            _ => return None,
        }
    }
    None
}

fn ctx_for<'a>(store: &'a Store, period: Period, opts: &Opts) -> Ctx<'a> {
    Ctx {
        store,
        period,
        tz_ms: opts.tz_ms,
        now: opts.now,
        app_ids: opts.app_ids.to_vec(),
        count_distinct: opts.count_distinct,
    }
}

fn ev(ctx: &Ctx, e: &Expr, row: &Row) -> Val {
    expr::eval(e, &RowRef { row, ctx }, &ctx.env())
}

fn apply(ctx: &Ctx, st: &Stage, mut rows: Vec<Row>, opts: &Opts, scanned: &mut u64) -> Result<Vec<Row>, String> {
    Ok(match st {
        Stage::Filter(_) | Stage::Identified { .. } => {
            // Working out which visitors are identified pays only over event rows.
            let events = rows.iter().any(|r| matches!(r, Row::Ev(..) | Row::Guide(..)));
            let f = match st {
                Stage::Identified { path, anonymous } if !events => {
                    Some(RowFilter::Identified { path, anonymous: *anonymous })
                }
                _ => RowFilter::new(ctx, st, opts.optimize),
            };
            if let Some(f) = f {
                rows.retain(|r| f.keeps(ctx, r));
            }
            rows
        }
        // A grid where every name is one field (the account list: a row per account).
        Stage::Select(fields) if fields.iter().all(|(n, _)| Grid::plain(n)) => {
            let (mut grid, slots) = Grid::new(fields.iter().map(|(n, _)| n.as_str()));
            for r in &rows {
                grid.push(&slots, fields.iter().map(|(_, e)| ev(ctx, e, r)));
            }
            grid.rows()
        }
        Stage::Select(fields) => rows
            .iter()
            .map(|r| {
                let mut o = Obj::with_capacity(fields.len());
                for (name, e) in fields {
                    Val::set_path(&mut o, name, ev(ctx, e, r));
                }
                Row::Doc(Arc::new(o))
            })
            .collect(),
        Stage::Eval(fields) => rows
            .iter()
            .map(|r| {
                let values: Vec<Val> = fields.iter().map(|(_, e)| ev(ctx, e, r)).collect();
                let mut o = Arc::unwrap_or_clone(r.materialize(ctx));
                for ((name, _), v) in fields.iter().zip(values) {
                    Val::set_path(&mut o, name, v);
                }
                Row::Doc(Arc::new(o))
            })
            .collect(),
        Stage::Sort(keys) => {
            let mut keyed: Vec<(Vec<Val>, Row)> =
                rows.into_iter().map(|r| (keys.iter().map(|(p, _)| r.get(ctx, p)).collect(), r)).collect();
            keyed.sort_by(|(a, _), (b, _)| {
                for ((x, y), (_, desc)) in a.iter().zip(b.iter()).zip(keys.iter()) {
                    let o = x.cmp_total(y);
                    if o != std::cmp::Ordering::Equal {
                        return if *desc { o.reverse() } else { o };
                    }
                }
                std::cmp::Ordering::Equal
            });
            keyed.into_iter().map(|(_, r)| r).collect()
        }
        Stage::Limit(n) => {
            rows.truncate(*n);
            rows
        }
        Stage::Group { keys, fields } => match super::fast::group(ctx, Input::Rows(&rows), keys, fields) {
            Some(out) => out,
            None => group(ctx, &rows, keys, fields),
        },
        Stage::Reduce(fields) => {
            let mut g = group(ctx, &rows, &[], fields);
            if g.is_empty() {
                g.push(Row::Doc(Arc::new(empty_aggs(fields))));
            }
            g
        }
        Stage::Count => {
            let mut o = Obj::new();
            o.insert("count".into(), Val::Int(rows.len() as i64));
            vec![Row::Doc(Arc::new(o))]
        }
        Stage::Unwind { field, keep_empty, index } => {
            let mut out = Vec::with_capacity(rows.len());
            let name = field.dotted();
            for r in &rows {
                match r.get(ctx, field) {
                    Val::Arr(a) if !a.is_empty() => {
                        let base = r.materialize(ctx);
                        for (i, item) in a.iter().enumerate() {
                            let mut o = (*base).clone();
                            Val::set_path(&mut o, &name, item.clone());
                            if let Some(ix) = index {
                                Val::set_path(&mut o, ix, Val::Int(i as i64));
                            }
                            out.push(Row::Doc(Arc::new(o)));
                        }
                    }
                    Val::Arr(_) | Val::Null => {
                        if *keep_empty {
                            let mut o = Arc::unwrap_or_clone(r.materialize(ctx));
                            Val::set_path(&mut o, &name, Val::Null);
                            out.push(Row::Doc(Arc::new(o)));
                        }
                    }
                    _ => out.push(r.clone()),
                }
            }
            out
        }
        Stage::Merge { fields, mappings, pipeline } => {
            let sub = run(pipeline, ctx.store, opts)?;
            *scanned += sub.scanned;
            let sub_ctx = ctx_for(ctx.store, sub.period, opts);
            let mut index: FxMap<Vec<HKey>, Arc<Obj>> = FxMap::default();
            for r in &sub.rows {
                let key: Vec<HKey> = fields.iter().map(|f| HKey(r.get(&sub_ctx, f))).collect();
                index.entry(key).or_insert_with(|| r.materialize(&sub_ctx));
            }
            rows.iter()
                .map(|r| {
                    let key: Vec<HKey> = fields.iter().map(|f| HKey(r.get(ctx, f))).collect();
                    let Some(m) = index.get(&key) else {
                        return r.clone();
                    };
                    let mut o = Arc::unwrap_or_clone(r.materialize(ctx));
                    if mappings.is_empty() {
                        for (k, v) in m.iter() {
                            o.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    } else {
                        let mv = Val::Obj(m.clone());
                        for (out, p) in mappings {
                            let v = p.walk(mv.field(&p.head).clone());
                            Val::set_path(&mut o, out, v);
                        }
                    }
                    Row::Doc(Arc::new(o))
                })
                .collect()
        }
        Stage::BulkExpand(specs) => rows
            .iter()
            .map(|r| {
                let mut o = Arc::unwrap_or_clone(r.materialize(ctx));
                for (name, kind, key) in specs {
                    let id = ev(ctx, key, r);
                    let md = id.as_str().and_then(|id| match kind {
                        MetaKind::Account => ctx.store.account(id).map(|a| a.metadata()),
                        MetaKind::Visitor => ctx.store.visitor(id).map(|v| v.metadata()),
                    });
                    Val::set_path(&mut o, name, md.unwrap_or(Val::Null));
                }
                Row::Doc(Arc::new(o))
            })
            .collect(),
        Stage::Segment(id) => {
            let seg = ctx.store.segments.get(id).ok_or_else(|| format!("unknown segment {id:?}"))?;
            let p = Path { head: "visitorId".into(), col: expr::Col::VisitorId, rest: vec![] };
            rows.retain(|r| r.get(ctx, &p).as_str().is_some_and(|v| seg.visitors.contains(v)));
            rows
        }
        Stage::Fork(branches) => {
            let mut out = Vec::new();
            for b in branches {
                let mut part = rows.clone();
                for st in b {
                    part = apply(ctx, st, part, opts, scanned)?;
                }
                out.extend(part);
            }
            out
        }
        Stage::Cat => rows,
        Stage::Join { .. } => rows,
    })
}

pub(super) enum AggState {
    Sum { int: i64, float: f64, is_float: bool },
    Count(u64),
    Distinct(FxSet<HKey>),
    First(Option<Val>),
    Last(Val),
    List(Vec<Val>),
    MinMax(Option<Val>, bool),
    Avg(f64, u64),
}

impl AggState {
    pub(super) fn new(f: &AggField, distinct: bool) -> AggState {
        match f.agg {
            Agg::Sum => AggState::Sum { int: 0, float: 0.0, is_float: false },
            Agg::Count if distinct && f.arg.is_some() => AggState::Distinct(FxSet::default()),
            Agg::Count => AggState::Count(0),
            Agg::First => AggState::First(None),
            Agg::Last => AggState::Last(Val::Null),
            Agg::List => AggState::List(Vec::new()),
            Agg::Min => AggState::MinMax(None, false),
            Agg::Max => AggState::MinMax(None, true),
            Agg::Avg => AggState::Avg(0.0, 0),
        }
    }

    pub(super) fn add(&mut self, v: Val, counted_row: bool) {
        match self {
            AggState::Sum { int, float, is_float } => match v {
                Val::Int(i) if !*is_float => match int.checked_add(i) {
                    Some(s) => *int = s,
                    None => {
                        *is_float = true;
                        *float = *int as f64 + i as f64;
                    }
                },
                Val::Int(i) => *float += i as f64,
                Val::Float(f) => {
                    if !*is_float {
                        *is_float = true;
                        *float = *int as f64;
                    }
                    *float += f;
                }
                _ => {}
            },
            AggState::Count(n) => {
                if counted_row || !v.is_null() {
                    *n += 1
                }
            }
            AggState::Distinct(set) => {
                if !v.is_null() {
                    set.insert(HKey(v));
                }
            }
            AggState::First(slot) => {
                if slot.is_none() {
                    *slot = Some(v)
                }
            }
            AggState::Last(slot) => *slot = v,
            AggState::List(l) => l.push(v),
            AggState::MinMax(slot, max) => {
                if v.is_null() {
                    return;
                }
                let replace = match slot {
                    None => true,
                    Some(cur) => {
                        let o = v.cmp_total(cur);
                        if *max { o == std::cmp::Ordering::Greater } else { o == std::cmp::Ordering::Less }
                    }
                };
                if replace {
                    *slot = Some(v);
                }
            }
            AggState::Avg(sum, n) => {
                if let Some(f) = v.as_f64() {
                    *sum += f;
                    *n += 1;
                }
            }
        }
    }

    pub(super) fn finish(self) -> Val {
        match self {
            AggState::Sum { int, float, is_float } => {
                if is_float {
                    Val::Float(float)
                } else {
                    Val::Int(int)
                }
            }
            AggState::Count(n) => Val::Int(n as i64),
            AggState::Distinct(s) => Val::Int(s.len() as i64),
            AggState::First(v) => v.unwrap_or(Val::Null),
            AggState::Last(v) => v,
            AggState::List(l) => Val::arr(l),
            AggState::MinMax(v, _) => v.unwrap_or(Val::Null),
            AggState::Avg(sum, n) => {
                if n == 0 {
                    Val::Null
                } else {
                    Val::Float(sum / n as f64)
                }
            }
        }
    }
}

pub(super) fn empty_aggs(fields: &[AggField]) -> Obj {
    let mut o = Obj::new();
    for f in fields {
        o.insert(f.out.clone(), AggState::new(f, true).finish());
    }
    o
}

pub(super) fn group(ctx: &Ctx, rows: &[Row], keys: &[(String, Path)], fields: &[AggField]) -> Vec<Row> {
    let mut index: FxMap<Vec<HKey>, usize> = FxMap::default();
    let mut groups: Vec<(Vec<HKey>, Vec<AggState>)> = Vec::new();
    let mut buf: Vec<HKey> = Vec::with_capacity(keys.len());
    let env = ctx.env();
    for r in rows {
        buf.clear();
        let rr = RowRef { row: r, ctx };
        for (_, p) in keys {
            buf.push(HKey(expr::Fields::get(&rr, p)));
        }
        let gi = match index.get(buf.as_slice()) {
            Some(&i) => i,
            None => {
                let i = groups.len();
                index.insert(buf.clone(), i);
                groups.push((buf.clone(), fields.iter().map(|f| AggState::new(f, ctx.count_distinct)).collect()));
                i
            }
        };
        let states = &mut groups[gi].1;
        for (f, st) in fields.iter().zip(states.iter_mut()) {
            let v = match &f.arg {
                Some(e) => expr::eval(e, &rr, &env),
                None => Val::Null,
            };
            st.add(v, f.arg.is_none());
        }
    }
    groups
        .into_iter()
        .map(|(key, states)| {
            let mut o = Obj::with_capacity(keys.len() + fields.len());
            for ((name, _), k) in keys.iter().zip(key) {
                Val::set_path(&mut o, name, k.0);
            }
            for (f, st) in fields.iter().zip(states) {
                o.insert(f.out.clone(), st.finish());
            }
            Row::Doc(Arc::new(o))
        })
        .collect()
}

/// Joins spawned streams on key fields: rows sharing a key merge into one; with `width`, only keys
/// present in at least that many streams survive.
fn join(ctx: &Ctx, streams: Vec<Vec<Row>>, fields: &[Path], width: Option<usize>) -> Vec<Row> {
    let n_streams = streams.len();
    let mut index: FxMap<Vec<HKey>, usize> = FxMap::default();
    let mut merged: Vec<(Obj, FxSet<usize>)> = Vec::new();
    for (si, stream) in streams.into_iter().enumerate() {
        for r in stream {
            let key: Vec<HKey> = fields.iter().map(|f| HKey(r.get(ctx, f))).collect();
            let obj = r.materialize(ctx);
            match index.get(&key) {
                Some(&i) => {
                    let (o, seen) = &mut merged[i];
                    for (k, v) in obj.iter() {
                        o.insert(k.clone(), v.clone());
                    }
                    seen.insert(si);
                }
                None => {
                    index.insert(key, merged.len());
                    let mut seen = FxSet::default();
                    seen.insert(si);
                    merged.push((Arc::unwrap_or_clone(obj), seen));
                }
            }
        }
    }
    let need = width.unwrap_or(n_streams).min(n_streams.max(1));
    merged.into_iter().filter(|(_, seen)| seen.len() >= need).map(|(o, _)| Row::Doc(Arc::new(o))).collect()
}
