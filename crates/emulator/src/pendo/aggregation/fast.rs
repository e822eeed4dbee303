//! Columnar group-by: when every row is an event rollup and every key and aggregated field is a
//! plain column, rows are grouped on integer codes read straight from the columns (visitor,
//! account and item indexes, day, counts) and decoded to values once per group. This is what
//! keeps a 30-day group-by over a million rows well under a second; any other shape falls back
//! to the general path in `ops`.

use std::sync::Arc;

use super::super::store::{EventKind, EventTable, Store};
use super::super::val::{FxMap, FxSet, Obj, Val};
use super::expr::{Col, Expr};
use super::ops::{Agg, AggField};
use super::row::{Ctx, Period, Row};

/// A column readable as an integer code on rollup rows of one kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Code {
    Visitor,
    Account,
    App,
    Time,
    Events,
    Minutes,
    Item,
}

impl Code {
    fn of(col: Col, kind: EventKind, period: Period) -> Option<Code> {
        Some(match col {
            Col::VisitorId => Code::Visitor,
            Col::AccountId => Code::Account,
            Col::AppId => Code::App,
            Col::Day if period == Period::Day => Code::Time,
            Col::Hour if period == Period::Hour => Code::Time,
            Col::NumEvents => Code::Events,
            Col::NumMinutes => Code::Minutes,
            Col::PageId if kind == EventKind::Page => Code::Item,
            Col::FeatureId if kind == EventKind::Feature => Code::Item,
            Col::TrackTypeId if kind == EventKind::Track => Code::Item,
            _ => return None,
        })
    }

    fn numeric(self) -> bool {
        matches!(self, Code::Time | Code::Events | Code::Minutes | Code::App)
    }

    #[inline]
    fn read(self, ctx: &Ctx, t: &EventTable, store: &Store, kind: EventKind, i: usize) -> i64 {
        match self {
            Code::Visitor => i64::from(t.visitor[i]),
            Code::Account => i64::from(t.account[i]),
            Code::App => store.items(kind).get(t.item[i] as usize).map_or(0, |x| x.app_id),
            Code::Time => match ctx.period {
                Period::Day => ctx.day_of(t.ts[i]),
                Period::Hour => t.ts[i],
            },
            Code::Events => i64::from(t.events[i]),
            Code::Minutes => i64::from(t.minutes[i]),
            Code::Item => i64::from(t.item[i]),
        }
    }

    fn decode(self, store: &Store, kind: EventKind, c: i64) -> Val {
        let idx = usize::try_from(c).unwrap_or(usize::MAX);
        match self {
            Code::Visitor => store.visitors.get(idx).map_or(Val::Null, |v| Val::Str(v.id.clone())),
            Code::Account => store.accounts.get(idx).map_or(Val::Null, |a| Val::Str(a.id.clone())),
            Code::Item => store.items(kind).get(idx).map_or(Val::Null, |x| Val::Str(x.id.clone())),
            _ => Val::Int(c),
        }
    }
}

enum Acc {
    Sum(i64),
    Count(u64),
    First(Option<i64>),
    Last(Option<i64>),
    Min(Option<i64>),
    Max(Option<i64>),
    Avg(i64, u64),
    List(Vec<i64>),
}

fn simple_col(e: &Expr) -> Option<Col> {
    match e {
        Expr::Path(p) if p.rest.is_empty() && p.col != Col::Other => Some(p.col),
        _ => None,
    }
}

/// Returns `None` when the fast path does not apply.
pub fn group(ctx: &Ctx, rows: &[Row], keys: &[(String, super::expr::Path)], fields: &[AggField]) -> Option<Vec<Row>> {
    let kind = match rows.first() {
        Some(Row::Ev(k, _)) => *k,
        _ => return None,
    };
    if !rows.iter().all(|r| matches!(r, Row::Ev(k, _) if *k == kind)) {
        return None;
    }
    let key_codes: Vec<Code> = keys
        .iter()
        .map(|(_, p)| if p.rest.is_empty() { Code::of(p.col, kind, ctx.period) } else { None })
        .collect::<Option<_>>()?;
    // (aggregator, column code or None for row counts)
    let mut specs: Vec<(Agg, Option<Code>)> = Vec::with_capacity(fields.len());
    for f in fields {
        let code = match &f.arg {
            None => None,
            Some(e) => Some(Code::of(simple_col(e)?, kind, ctx.period)?),
        };
        let numeric_needed = matches!(f.agg, Agg::Sum | Agg::Avg | Agg::Min | Agg::Max);
        if numeric_needed && !code.is_some_and(Code::numeric) {
            return None;
        }
        specs.push((f.agg, code));
    }
    let store = ctx.store;
    let t = store.table(kind);
    let mut index: FxMap<Vec<i64>, u32> = FxMap::default();
    let mut group_keys: Vec<Vec<i64>> = Vec::new();
    let mut accs: Vec<Vec<Acc>> = Vec::new();
    // One set per distinct-count field across all groups: far fewer allocations than a set per
    // group when there are tens of thousands of groups.
    let mut distinct: Vec<FxSet<(u32, i64)>> = specs.iter().map(|_| FxSet::default()).collect();
    let mut buf: Vec<i64> = Vec::with_capacity(key_codes.len());
    for r in rows {
        let Row::Ev(_, i) = r else { continue };
        let i = *i as usize;
        if i >= t.len() {
            continue;
        }
        buf.clear();
        for c in &key_codes {
            buf.push(c.read(ctx, t, store, kind, i));
        }
        let g = match index.get(buf.as_slice()) {
            Some(&g) => g,
            None => {
                let g = group_keys.len() as u32;
                index.insert(buf.clone(), g);
                group_keys.push(buf.clone());
                accs.push(
                    specs
                        .iter()
                        .map(|(a, _)| match a {
                            Agg::Sum => Acc::Sum(0),
                            Agg::Count => Acc::Count(0),
                            Agg::First => Acc::First(None),
                            Agg::Last => Acc::Last(None),
                            Agg::Min => Acc::Min(None),
                            Agg::Max => Acc::Max(None),
                            Agg::Avg => Acc::Avg(0, 0),
                            Agg::List => Acc::List(Vec::new()),
                        })
                        .collect(),
                );
                g
            }
        };
        let group_accs = &mut accs[g as usize];
        for (fi, ((agg, code), acc)) in specs.iter().zip(group_accs.iter_mut()).enumerate() {
            let v = code.map(|c| c.read(ctx, t, store, kind, i));
            match acc {
                Acc::Sum(s) => *s = s.saturating_add(v.unwrap_or(0)),
                Acc::Count(n) => match (v, ctx.count_distinct && *agg == Agg::Count) {
                    (Some(v), true) => {
                        if distinct[fi].insert((g, v)) {
                            *n += 1;
                        }
                    }
                    _ => *n += 1,
                },
                Acc::First(f) => {
                    if f.is_none() {
                        *f = v;
                    }
                }
                Acc::Last(l) => *l = v,
                Acc::Min(m) => {
                    *m = match (*m, v) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                Acc::Max(m) => {
                    *m = match (*m, v) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    }
                }
                Acc::Avg(s, n) => {
                    if let Some(v) = v {
                        *s = s.saturating_add(v);
                        *n += 1;
                    }
                }
                Acc::List(l) => l.extend(v),
            }
        }
    }
    let out = group_keys
        .into_iter()
        .zip(accs)
        .map(|(key, accs)| {
            let mut o = Obj::with_capacity(keys.len() + fields.len());
            for (((name, _), c), k) in keys.iter().zip(&key_codes).zip(key) {
                Val::set_path(&mut o, name, c.decode(store, kind, k));
            }
            for ((f, (_, code)), acc) in fields.iter().zip(&specs).zip(accs) {
                let dec = |c: i64| code.map_or(Val::Int(c), |code| code.decode(store, kind, c));
                let v = match acc {
                    Acc::Sum(s) => Val::Int(s),
                    Acc::Count(n) => Val::Int(n as i64),
                    Acc::First(x) | Acc::Last(x) | Acc::Min(x) | Acc::Max(x) => x.map_or(Val::Null, dec),
                    Acc::Avg(s, n) => {
                        if n == 0 {
                            Val::Null
                        } else {
                            Val::Float(s as f64 / n as f64)
                        }
                    }
                    Acc::List(l) => Val::arr(l.into_iter().map(dec).collect()),
                };
                o.insert(f.out.clone(), v);
            }
            Row::Doc(Arc::new(o))
        })
        .collect();
    Some(out)
}
