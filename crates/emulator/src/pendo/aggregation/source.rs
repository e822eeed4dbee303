//! Pipeline sources and `timeSeries`: which rows a pipeline starts from. Event sources need a
//! time window (dayRange/hourRange, rounded down to the period start in the subscription's
//! timezone); entity sources ignore one, even when a client nests it inside their parameters.

use std::sync::Arc;

use serde_json::Value as J;

use super::super::store::{DAY_MS, EventKind, GuideEventType, HOUR_MS, NONE_U32, Store, is_anonymous};
use super::super::val::{Obj, Val};
use super::expr::{self, BinOp, Col, Env, NoFields};
use super::row::{EntityKind, GuideView, Period, Row};

#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    Visitors { identified: bool },
    Accounts,
    Features,
    Pages,
    Guides,
    TrackTypes,
    Events,
    FeatureEvents { id: Option<String> },
    PageEvents { id: Option<String> },
    TrackEvents { id: Option<String> },
    GuideEvents { guide: Option<String> },
    PollEvents { guide: Option<String>, poll: Option<String> },
    PollsSeenEver { guide: String, poll: String },
}

impl SourceKind {
    fn needs_window(&self) -> bool {
        !matches!(
            self,
            SourceKind::Visitors { .. }
                | SourceKind::Accounts
                | SourceKind::Features
                | SourceKind::Pages
                | SourceKind::Guides
                | SourceKind::TrackTypes
                | SourceKind::PollsSeenEver { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub period: Period,
    pub start: i64,
    pub end: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    /// `None` means every app.
    pub apps: Option<Vec<i64>>,
    pub window: Option<Window>,
}

fn str_param(params: &J, key: &str) -> Result<Option<String>, String> {
    match params.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s.clone())),
        Some(J::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("source parameter {key} must be a string, got {other}")),
    }
}

fn eval_const(src: &str, env: &Env) -> Result<Val, String> {
    let e = expr::parse(src).map_err(|e| format!("invalid expression {src:?}: {e}"))?;
    Ok(expr::eval(&e, &NoFields, env))
}

/// `appId` as clients send it: a number, a numeric string, a list of either, or an expression
/// such as `expandAppIds("*")`.
fn parse_apps(v: Option<&J>, env: &Env) -> Result<Option<Vec<i64>>, String> {
    fn one(v: &J, env: &Env, out: &mut Vec<i64>) -> Result<bool, String> {
        match v {
            J::Number(n) => {
                out.push(n.as_i64().ok_or_else(|| format!("invalid appId {n}"))?);
                Ok(true)
            }
            J::String(s) => {
                if let Ok(n) = s.trim().parse::<i64>() {
                    out.push(n);
                    return Ok(true);
                }
                match eval_const(s, env)? {
                    Val::Int(i) => out.push(i),
                    Val::Arr(a) if a.iter().all(|x| x.as_i64().is_some()) => {
                        out.extend(a.iter().filter_map(Val::as_i64));
                    }
                    other => {
                        return Err(format!("appId expression {s:?} gave {other}, not app ids"));
                    }
                }
                Ok(true)
            }
            _ => Err(format!("invalid appId {v}")),
        }
    }
    match v {
        None | Some(J::Null) => Ok(None),
        Some(J::Array(items)) => {
            let mut out = Vec::new();
            for i in items {
                one(i, env, &mut out)?;
            }
            Ok(Some(out))
        }
        Some(v) => {
            let mut out = Vec::new();
            one(v, env, &mut out)?;
            Ok(Some(out))
        }
    }
}

fn time_value(v: &J, env: &Env, what: &str) -> Result<i64, String> {
    match v {
        J::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("timeSeries.{what} is not a valid time")),
        J::String(s) => {
            if let Ok(n) = s.trim().parse::<i64>() {
                return Ok(n);
            }
            eval_const(s, env)?
                .as_f64()
                .map(|f| f as i64)
                .ok_or_else(|| format!("timeSeries.{what} expression {s:?} is not a time"))
        }
        other => Err(format!("timeSeries.{what} must be a number or expression, got {other}")),
    }
}

pub fn period_start(period: Period, t: i64, tz_ms: i64) -> i64 {
    let p = match period {
        Period::Day => DAY_MS,
        Period::Hour => HOUR_MS,
    };
    // Saturating: `first`/`last` come straight from the request.
    t.saturating_add(tz_ms).div_euclid(p).saturating_mul(p).saturating_sub(tz_ms)
}

pub fn parse_time_series(ts: &J, env: &Env) -> Result<Window, String> {
    let obj = ts.as_object().ok_or("timeSeries must be an object")?;
    let period = match obj.get("period").and_then(J::as_str) {
        Some("dayRange") => Period::Day,
        Some("hourRange") => Period::Hour,
        Some(p) => {
            return Err(format!("unsupported timeSeries period {p:?} (supported: dayRange, hourRange)"));
        }
        None => return Err("timeSeries.period is required".into()),
    };
    let len = match period {
        Period::Day => DAY_MS,
        Period::Hour => HOUR_MS,
    };
    let first = time_value(obj.get("first").ok_or("timeSeries.first is required")?, env, "first")?;
    let start = period_start(period, first, env.tz_ms);
    match (obj.get("count"), obj.get("last")) {
        (Some(c), _) if !c.is_null() => {
            let n = c.as_i64().ok_or("timeSeries.count must be an integer")?;
            if n == 0 {
                return Err("timeSeries.count must not be 0".into());
            }
            let span = n.checked_mul(len).ok_or("timeSeries.count is out of range")?;
            Ok(if n > 0 {
                Window { period, start, end: start.saturating_add(span) }
            } else {
                Window { period, start: start.saturating_add(span), end: start }
            })
        }
        (_, Some(l)) if !l.is_null() => {
            let last = time_value(l, env, "last")?;
            // `last`'s own period is included: Estuary scans a single bucket with first == last.
            let end = period_start(period, last, env.tz_ms).saturating_add(len);
            Ok(Window { period, start, end: end.max(start) })
        }
        _ => Err("timeSeries needs count or last".into()),
    }
}

/// Parses `{"source": {...}}`'s value.
pub fn parse_source(v: &J, env: &Env) -> Result<Source, String> {
    let obj = v.as_object().ok_or("source must be an object")?;
    let mut names = obj.keys().filter(|k| *k != "timeSeries");
    let name = names.next().ok_or("source names no data source")?.clone();
    if let Some(extra) = names.next() {
        return Err(format!("source names more than one data source ({name}, {extra})"));
    }
    let params = obj.get(&name).cloned().unwrap_or(J::Null);
    if !(params.is_null() || params.is_object()) {
        return Err(format!("parameters of source {name} must be an object or null"));
    }
    let kind = match name.as_str() {
        "visitors" => {
            SourceKind::Visitors { identified: params.get("identified").and_then(J::as_bool).unwrap_or(false) }
        }
        "accounts" => SourceKind::Accounts,
        "features" => SourceKind::Features,
        "pages" => SourceKind::Pages,
        "guides" => SourceKind::Guides,
        "trackTypes" => SourceKind::TrackTypes,
        "events" => SourceKind::Events,
        "featureEvents" => SourceKind::FeatureEvents { id: str_param(&params, "featureId")? },
        "pageEvents" => SourceKind::PageEvents { id: str_param(&params, "pageId")? },
        "trackEvents" => SourceKind::TrackEvents { id: str_param(&params, "trackTypeId")? },
        "guideEvents" => SourceKind::GuideEvents { guide: str_param(&params, "guideId")? },
        "pollEvents" => {
            SourceKind::PollEvents { guide: str_param(&params, "guideId")?, poll: str_param(&params, "pollId")? }
        }
        "pollsSeenEver" => SourceKind::PollsSeenEver {
            guide: str_param(&params, "guideId")?.ok_or("pollsSeenEver needs guideId")?,
            poll: str_param(&params, "pollId")?.ok_or("pollsSeenEver needs pollId")?,
        },
        other => return Err(format!("unknown source {other:?}")),
    };
    let apps = parse_apps(params.get("appId"), env)?;
    let ts = obj.get("timeSeries").or_else(|| params.get("timeSeries")).filter(|t| !t.is_null());
    let window = if kind.needs_window() {
        Some(parse_time_series(ts.ok_or_else(|| format!("source {name} requires timeSeries"))?, env)?)
    } else {
        None
    };
    Ok(Source { kind, apps, window })
}

fn app_ok(apps: &Option<Vec<i64>>, app: i64) -> bool {
    apps.as_ref().is_none_or(|a| a.contains(&app))
}

fn doc_rows<'a>(docs: impl Iterator<Item = (&'a Val, i64)>, apps: &Option<Vec<i64>>) -> Vec<Row> {
    docs.filter(|(_, app)| app_ok(apps, *app))
        .filter_map(|(d, _)| match d {
            Val::Obj(o) => Some(Row::Doc(o.clone())),
            _ => None,
        })
        .collect()
}

/// Visits the rows of `kind`'s table in the window that the item, app and key conditions admit,
/// in table order; returns how many passed the item and app conditions (rows scanned: the key
/// bounds were pushed down by the planner, so they do not lower what the query costs Pendo).
fn scan_events(
    store: &Store,
    kind: EventKind,
    w: Window,
    id: Option<&str>,
    apps: &Option<Vec<i64>>,
    keys: &KeyPass,
    mut visit: impl FnMut(usize),
) -> u64 {
    let t = store.table_for(kind, w.period == Period::Day);
    let range = t.range(w.start, w.end);
    let items = store.items(kind);
    let only = match id {
        Some(id) => match store.item_index(kind, id) {
            Some(i) => Some(i),
            None => return 0,
        },
        None => None,
    };
    let all_apps = apps.as_ref().is_none_or(|a| items.iter().all(|it| a.contains(&it.app_id)));
    let mut scanned = 0u64;
    for i in range {
        let item = t.item(i);
        // A row summed into an earlier one of its day is not a row of the daily rollups.
        if only.is_some_and(|o| o != item) || t.folded(i) {
            continue;
        }
        if !all_apps && !items.get(item as usize).is_some_and(|it| app_ok(apps, it.app_id)) {
            continue;
        }
        scanned += 1;
        // Only bounds read the ids (an account is a look-up by visitor).
        if keys.is_empty() || keys.admits(t.visitor(i), t.account(i)) {
            visit(i);
        }
    }
    scanned
}

/// Visits the `guideEvents` rows in the window that the guide, app and key conditions admit;
/// returns rows scanned, as [`scan_events`].
fn scan_guide_events(
    store: &Store,
    w: Window,
    guide: Option<&str>,
    apps: &Option<Vec<i64>>,
    keys: &KeyPass,
    mut visit: impl FnMut(usize),
) -> u64 {
    let g = match guide {
        Some(g) => match store.guide_index(g) {
            Some(i) => Some(i),
            None => return 0,
        },
        None => None,
    };
    let lo = store.guide_events.first_at(w.start);
    let hi = store.guide_events.first_at(w.end).max(lo);
    let mut scanned = 0u64;
    let t = &store.guide_events;
    for i in lo..hi {
        let guide = t.guide(i);
        if g.is_some_and(|g| g != guide) || !store.guides.get(guide as usize).is_some_and(|gd| app_ok(apps, gd.app_id))
        {
            continue;
        }
        scanned += 1;
        if keys.is_empty() || keys.admits(t.visitor(i), t.account(i)) {
            visit(i);
        }
    }
    scanned
}

/// The table a [`Picked`] set indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Events(EventKind),
    /// `guideEvents` rows.
    Guides,
}

impl Table {
    pub fn row(self, i: usize) -> Row {
        match self {
            Table::Events(kind) => Row::Ev(kind, i as u32),
            Table::Guides => Row::Guide(GuideView::Guide, i as u32),
        }
    }
}

/// The rows of an event table a scan picked, a bit each over the window's part of the table:
/// a 30-day group at a million accounts reads ~89 million rollups, which as a list of rows
/// (16 bytes each) held 1.4 GB before the group began.
pub struct Picked {
    pub table: Table,
    start: usize,
    bits: Vec<u64>,
    len: usize,
}

impl Picked {
    fn new(table: Table, start: usize, end: usize) -> Picked {
        Picked { table, start, bits: vec![0; end.saturating_sub(start).div_ceil(64)], len: 0 }
    }

    fn insert(&mut self, i: usize) {
        let at = i - self.start;
        if let Some(w) = self.bits.get_mut(at / 64) {
            *w |= 1 << (at % 64);
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The picked rows' indexes, ascending.
    pub fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(move |(n, &w)| {
            let base = self.start + n * 64;
            std::iter::successors((w != 0).then_some(w), |&w| Some(w & (w - 1)).filter(|&w| w != 0))
                .map(move |w| base + w.trailing_zeros() as usize)
        })
    }

    /// The first and last picked rows' indexes: the table being sorted by time, their times
    /// bound every picked row's.
    pub fn ends(&self) -> Option<(usize, usize)> {
        let first = self.bits.iter().position(|&w| w != 0)?;
        let last = self.bits.iter().rposition(|&w| w != 0)?;
        let at = |n: usize, bit: u32| self.start + n * 64 + bit as usize;
        Some((at(first, self.bits[first].trailing_zeros()), at(last, 63 - self.bits[last].leading_zeros())))
    }

    /// The picked rows as rows, for the operators that need them listed.
    pub fn rows(&self) -> Vec<Row> {
        let mut out = Vec::with_capacity(self.len);
        out.extend(self.indexes().map(|i| self.table.row(i)));
        out
    }
}

/// The rows of an event source (not `pollEvents`) that the scan admits and `keep` keeps, as
/// [`Picked`], and the rows scanned; `None` for any other source.
pub fn picked(store: &Store, src: &Source, scan: &Scan, mut keep: impl FnMut(&Row) -> bool) -> Option<(Picked, u64)> {
    let w = src.window?;
    let keys = KeyPass::new(store, &scan.bounds);
    let (kind, id) = match &src.kind {
        SourceKind::Events => (EventKind::Page, None),
        SourceKind::PageEvents { id } => (EventKind::Page, id.as_deref()),
        SourceKind::FeatureEvents { id } => (EventKind::Feature, id.as_deref()),
        SourceKind::TrackEvents { id } => (EventKind::Track, id.as_deref()),
        SourceKind::GuideEvents { guide } => {
            let lo = store.guide_events.first_at(w.start);
            let mut p = Picked::new(Table::Guides, lo, store.guide_events.first_at(w.end).max(lo));
            let n = scan_guide_events(store, w, guide.as_deref(), &src.apps, &keys, |i| {
                if keep(&Table::Guides.row(i)) {
                    p.insert(i);
                }
            });
            return Some((p, n));
        }
        _ => return None,
    };
    let range = store.table_for(kind, w.period == Period::Day).range(w.start, w.end);
    let table = Table::Events(kind);
    let mut p = Picked::new(table, range.start, range.end);
    let n = scan_events(store, kind, w, id, &src.apps, &keys, |i| {
        if keep(&table.row(i)) {
            p.insert(i);
        }
    });
    Some((p, n))
}

fn event_rows(
    store: &Store,
    kind: EventKind,
    w: Window,
    id: Option<&str>,
    apps: &Option<Vec<i64>>,
    keys: &KeyPass,
) -> (Vec<Row>, u64) {
    let range = store.table_for(kind, w.period == Period::Day).range(w.start, w.end);
    let mut out = Vec::with_capacity(if id.is_some() || !keys.is_empty() { range.len() / 8 } else { range.len() });
    let scanned = scan_events(store, kind, w, id, apps, keys, |i| out.push(Row::Ev(kind, i as u32)));
    (out, scanned)
}

/// A condition on a row's visitor or account id that the planner moved into the scan: `id op
/// value` with the expression language's string comparison (byte order; a missing id never
/// matches).
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub col: Col,
    pub op: BinOp,
    pub value: Arc<str>,
}

impl Bound {
    fn holds(&self, id: &str) -> bool {
        let v: &str = &self.value;
        match self.op {
            BinOp::Eq => id == v,
            BinOp::Lt => id < v,
            BinOp::Le => id <= v,
            BinOp::Gt => id > v,
            BinOp::Ge => id >= v,
            _ => false,
        }
    }
}

/// What the planner pushed into a source scan (see `plan`). The default scans as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scan {
    /// Conditions every emitted row meets.
    pub bounds: Vec<Bound>,
    /// Entity sources (`visitors`, `accounts`): emit in id order, descending when `true`,
    /// instead of insertion order.
    pub order: Option<bool>,
    /// Entity sources with `order`: emit at most this many rows (the first in that order).
    pub limit: Option<usize>,
}

/// Which visitor and account indexes the bounds admit, computed once per scan so that event rows
/// test an index instead of comparing strings.
struct KeyPass {
    visitors: Option<Vec<bool>>,
    accounts: Option<Vec<bool>>,
}

impl KeyPass {
    fn new(store: &Store, bounds: &[Bound]) -> KeyPass {
        let pass = |col: Col, ids: &mut dyn Iterator<Item = &str>| {
            let b: Vec<&Bound> = bounds.iter().filter(|b| b.col == col).collect();
            if b.is_empty() {
                return None;
            }
            Some(ids.map(|id| b.iter().all(|b| b.holds(id))).collect())
        };
        KeyPass {
            visitors: pass(Col::VisitorId, &mut store.visitors.iter().map(|v| &*v.id)),
            accounts: pass(Col::AccountId, &mut store.accounts.iter().map(|a| &*a.id)),
        }
    }

    fn is_empty(&self) -> bool {
        self.visitors.is_none() && self.accounts.is_none()
    }

    /// Out-of-range indexes read as a missing id, which no bound admits.
    #[inline]
    fn admits(&self, visitor: u32, account: u32) -> bool {
        let ok = |p: &Option<Vec<bool>>, i: u32| p.as_ref().is_none_or(|p| p.get(i as usize).copied().unwrap_or(false));
        ok(&self.visitors, visitor) && ok(&self.accounts, account)
    }
}

/// The id columns a source's rows can be bounded on, for the planner.
pub fn key_cols(kind: &SourceKind) -> &'static [Col] {
    match kind {
        SourceKind::Visitors { .. } => &[Col::VisitorId],
        SourceKind::Accounts => &[Col::AccountId],
        SourceKind::Events
        | SourceKind::FeatureEvents { .. }
        | SourceKind::PageEvents { .. }
        | SourceKind::TrackEvents { .. }
        | SourceKind::GuideEvents { .. }
        | SourceKind::PollEvents { .. } => &[Col::VisitorId, Col::AccountId],
        _ => &[],
    }
}

/// Entity indexes admitted by `admit` and the bounds, in insertion order or, with `scan.order`,
/// in id order cut to `scan.limit`; plus how many `admit` let through (rows scanned).
fn entity_indexes<'s>(
    ids: impl Iterator<Item = &'s str>,
    col: Col,
    admit: impl Fn(&str) -> bool,
    scan: &Scan,
) -> (Vec<(u32, &'s str)>, u64) {
    let bounds: Vec<&Bound> = scan.bounds.iter().filter(|b| b.col == col).collect();
    let mut scanned = 0u64;
    let mut out: Vec<(u32, &str)> = ids
        .enumerate()
        .filter(|(_, id)| admit(id))
        .inspect(|_| scanned += 1)
        .filter(|(_, id)| bounds.iter().all(|b| b.holds(id)))
        .map(|(i, id)| (i as u32, id))
        .collect();
    if let Some(desc) = scan.order {
        // Ties keep insertion order either way, as the stable sort this replaces does.
        let cmp = |a: &(u32, &str), b: &(u32, &str)| {
            let o = if desc { b.1.cmp(a.1) } else { a.1.cmp(b.1) };
            o.then(a.0.cmp(&b.0))
        };
        if let Some(n) = scan.limit.filter(|&n| n < out.len()) {
            if n == 0 {
                out.clear();
            } else {
                out.select_nth_unstable_by(n - 1, cmp);
                out.truncate(n);
            }
        }
        out.sort_unstable_by(cmp);
    }
    (out, scanned)
}

/// Produces the source's rows, plus how many stored rows were looked at (as if nothing had been
/// pushed into the scan: the count models what the query costs Pendo).
pub fn rows(store: &Store, src: &Source, scan: &Scan) -> (Vec<Row>, u64) {
    let apps = &src.apps;
    let w = src.window.unwrap_or(Window { period: Period::Day, start: i64::MIN, end: i64::MAX });
    let guide_range = || {
        let lo = store.guide_events.first_at(w.start);
        let hi = store.guide_events.first_at(w.end);
        lo..hi.max(lo)
    };
    let keys = KeyPass::new(store, &scan.bounds);
    let out = match &src.kind {
        SourceKind::Visitors { identified } => {
            let admit = |id: &str| !identified || !is_anonymous(id);
            let ids = store.visitors.iter().map(|v| &*v.id);
            let (idx, scanned) = entity_indexes(ids, Col::VisitorId, admit, scan);
            let rows = idx.iter().map(|&(i, _)| Row::Entity(EntityKind::Visitor, i)).collect();
            return (rows, scanned);
        }
        SourceKind::Accounts => {
            let ids = store.accounts.iter().map(|a| &*a.id);
            let (idx, scanned) = entity_indexes(ids, Col::AccountId, |_| true, scan);
            let rows = idx.iter().map(|&(i, _)| Row::Entity(EntityKind::Account, i)).collect();
            return (rows, scanned);
        }
        SourceKind::Features => doc_rows(store.features.iter().map(|i| (&i.doc, i.app_id)), apps),
        SourceKind::Pages => doc_rows(store.pages.iter().map(|i| (&i.doc, i.app_id)), apps),
        SourceKind::TrackTypes => doc_rows(store.track_types.iter().map(|i| (&i.doc, i.app_id)), apps),
        SourceKind::Guides => doc_rows(store.guides.iter().map(|g| (&g.doc, g.app_id)), apps),
        SourceKind::Events => return event_rows(store, EventKind::Page, w, None, apps, &keys),
        SourceKind::PageEvents { id } => return event_rows(store, EventKind::Page, w, id.as_deref(), apps, &keys),
        SourceKind::FeatureEvents { id } => {
            return event_rows(store, EventKind::Feature, w, id.as_deref(), apps, &keys);
        }
        SourceKind::TrackEvents { id } => return event_rows(store, EventKind::Track, w, id.as_deref(), apps, &keys),
        SourceKind::GuideEvents { guide } => {
            let mut out = Vec::new();
            let scanned = scan_guide_events(store, w, guide.as_deref(), apps, &keys, |i| {
                out.push(Row::Guide(GuideView::Guide, i as u32));
            });
            return (out, scanned);
        }
        SourceKind::PollEvents { guide, poll } => {
            let g = match guide {
                Some(g) => match store.guide_index(g) {
                    Some(i) => Some(i),
                    None => return (Vec::new(), 0),
                },
                None => None,
            };
            guide_range()
                .filter(|&i| {
                    let e = store.guide_events.at(i);
                    if e.kind != GuideEventType::PollResponse || g.is_some_and(|g| g != e.guide) {
                        return false;
                    }
                    let Some(gd) = store.guides.get(e.guide as usize) else {
                        return false;
                    };
                    let poll_ok = poll.as_deref().is_none_or(|p| {
                        e.poll != NONE_U32 && gd.poll_ids.get(e.poll as usize).is_some_and(|x| &**x == p)
                    });
                    poll_ok && app_ok(apps, gd.app_id)
                })
                .map(|i| Row::Guide(GuideView::Poll, i as u32))
                .collect()
        }
        SourceKind::PollsSeenEver { guide, poll } => {
            let Some(g) = store.guide_index(guide) else {
                return (Vec::new(), 0);
            };
            let Some(p) = store.guides[g as usize].poll_ids.iter().position(|x| &**x == poll.as_str()) else {
                return (Vec::new(), 0);
            };
            // Latest answer per visitor, in first-answer order.
            let mut latest: indexmap::IndexMap<u32, usize> = indexmap::IndexMap::new();
            for (i, e) in store.guide_events.iter().enumerate() {
                if e.kind == GuideEventType::PollResponse && e.guide == g && e.poll == p as u32 {
                    latest.insert(e.visitor, i);
                }
            }
            latest
                .values()
                .map(|&i| {
                    let e = store.guide_events.at(i);
                    let mut o = Obj::new();
                    let vid = store.visitors.get(e.visitor as usize).map_or(Val::Null, |v| Val::Str(v.id.clone()));
                    let aid = store.accounts.get(e.account as usize).map_or(Val::Null, |a| Val::Str(a.id.clone()));
                    o.insert("visitorId".into(), vid);
                    o.insert("accountId".into(), aid);
                    o.insert("response".into(), store.responses.get(e.response).clone());
                    o.insert("time".into(), Val::Int(e.ts));
                    Row::Doc(Arc::new(o))
                })
                .collect()
        }
    };
    let mut out: Vec<Row> = out;
    let scanned = out.len() as u64;
    if !keys.is_empty() {
        out.retain(|r| match r {
            Row::Guide(_, i) => store.guide_events.get(*i as usize).is_some_and(|e| keys.admits(e.visitor, e.account)),
            _ => true,
        });
    }
    (out, scanned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env() -> Env<'static> {
        Env { now: 1_700_000_000_000, tz_ms: 0, app_ids: &[-323232] }
    }

    #[test]
    fn count_negative_is_the_periods_before() {
        let w =
            parse_time_series(&serde_json::json!({"period":"dayRange","first":"now()","count":-1}), &env()).unwrap();
        let today = period_start(Period::Day, 1_700_000_000_000, 0);
        assert_eq!((w.start, w.end), (today - DAY_MS, today));
    }

    #[test]
    fn last_includes_its_own_period() {
        let w = parse_time_series(
            &serde_json::json!({"period":"hourRange","first":"1700000000000","last":1_700_000_000_000i64}),
            &env(),
        )
        .unwrap();
        assert_eq!(w.end - w.start, HOUR_MS);
    }

    #[test]
    fn timezone_rounds_days_locally() {
        let e = Env { now: 0, tz_ms: -4 * HOUR_MS, app_ids: &[] };
        // 2018-10-20T12:00Z is the 20th in US Eastern; its midnight is 04:00Z.
        let w = parse_time_series(&serde_json::json!({"period":"dayRange","first":1_540_036_800_000i64,"count":1}), &e)
            .unwrap();
        assert_eq!(w.start, 1_540_008_000_000);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        for first in [i64::MAX, i64::MIN, 0] {
            for span in [
                serde_json::json!({"count": i64::MAX}),
                serde_json::json!({"count": i64::MIN}),
                serde_json::json!({"last": i64::MIN}),
                serde_json::json!({"last": "now() * 1000000000000"}),
            ] {
                let mut ts = serde_json::json!({"period": "hourRange", "first": first});
                for (k, v) in span.as_object().unwrap() {
                    ts[k] = v.clone();
                }
                let _ = parse_time_series(&ts, &env());
            }
        }
    }

    #[test]
    fn app_ids_in_all_forms() {
        let e = env();
        assert_eq!(parse_apps(Some(&serde_json::json!(-323232)), &e).unwrap(), Some(vec![-323232]));
        assert_eq!(parse_apps(Some(&serde_json::json!(["1", "2"])), &e).unwrap(), Some(vec![1, 2]));
        assert_eq!(parse_apps(Some(&serde_json::json!("expandAppIds(\"*\")")), &e).unwrap(), Some(vec![-323232]));
        assert!(parse_apps(Some(&serde_json::json!("bogus(")), &e).is_err());
    }

    #[test]
    fn source_errors() {
        let e = env();
        assert!(parse_source(&serde_json::json!({"nope": null}), &e).is_err());
        assert!(parse_source(&serde_json::json!({"events": null}), &e).is_err());
        assert!(parse_source(&serde_json::json!({}), &e).is_err());
        assert!(
            parse_source(&serde_json::json!({"accounts": {"appId": 1, "timeSeries": {"period": "x"}}}), &e).is_ok()
        );
    }
}
