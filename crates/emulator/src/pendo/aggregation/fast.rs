//! Columnar group-by: when every row is an event rollup (or every row a guide event) and every
//! key and aggregated field is a plain column, rows are grouped on integer codes read straight
//! from the columns (visitor, account, item and guide indexes, day, counts, event type) and
//! decoded to values once per group. This is what keeps a 30-day group-by over millions of rows
//! within a second or two; any other shape falls back to the general path in `ops`.
//!
//! A group of a group's result ([`group_of_group`]) is computed on the first group's codes, so
//! the millions of intermediate rows (one per account and day, say) are never built. A keyset
//! page of a group (a sort on its keys and a limit, [`group_sorted`]) is ordered on the codes'
//! ranks, so only the rows the page holds are built.

use std::sync::Arc;

use super::super::store::{DAY_MS, EventKind, GuideEventType, Store};
use super::super::val::{FxMap, FxSet, Obj, Val};
use super::expr::{Col, Expr, Path};
use super::ops::{Agg, AggField, AggState};
use super::row::{Ctx, Grid, GuideView, Period, Row};
use super::source::{Picked, Table};

/// The rows a group reads: listed, or picked by the source scan and never listed.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Rows(&'a [Row]),
    Picked(&'a Picked),
}

impl<'a> Input<'a> {
    /// The table every row indexes, if they all index one the columnar path reads.
    fn src(self) -> Option<Src> {
        match self {
            Input::Picked(p) => Some(match p.table {
                Table::Events(kind) => Src::Ev(kind),
                Table::Guides => Src::Guide,
            }),
            Input::Rows(rows) => {
                let src = match rows.first() {
                    Some(Row::Ev(k, _)) => Src::Ev(*k),
                    Some(Row::Guide(GuideView::Guide, _)) => Src::Guide,
                    _ => return None,
                };
                let same = |r: &Row| match (r, src) {
                    (Row::Ev(k, _), Src::Ev(kind)) => *k == kind,
                    (Row::Guide(GuideView::Guide, _), Src::Guide) => true,
                    _ => false,
                };
                rows.iter().all(same).then_some(src)
            }
        }
    }

    fn len(self) -> usize {
        match self {
            Input::Rows(rows) => rows.len(),
            Input::Picked(p) => p.len(),
        }
    }

    /// The times of the first and last rows of a picked set, which bound every row's.
    fn times(self, ctx: &Ctx, src: Src) -> Option<(i64, i64)> {
        match self {
            Input::Rows(_) => None,
            Input::Picked(p) => p.ends().map(|(a, b)| (read_ts(ctx, src, a), read_ts(ctx, src, b))),
        }
    }

    /// The rows' indexes below `len` (the table's length), in order.
    fn indexes(self, len: usize) -> impl Iterator<Item = usize> + 'a {
        let (listed, picked) = match self {
            Input::Rows(rows) => (Some(rows), None),
            Input::Picked(p) => (None, Some(p)),
        };
        let listed = listed.into_iter().flatten().filter_map(|r| match r {
            Row::Ev(_, i) | Row::Guide(_, i) => Some(*i as usize),
            _ => None,
        });
        listed.chain(picked.into_iter().flat_map(Picked::indexes)).filter(move |&i| i < len)
    }
}

/// Which table the rows index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Src {
    Ev(EventKind),
    /// `guideEvents` rows (poll rows present `type` differently and take the general path).
    Guide,
}

/// A column readable as an integer code.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Code {
    Visitor,
    Account,
    App,
    Time,
    Events,
    Minutes,
    Item,
    Guide,
    GuideType,
    /// A guide event's own time (`browserTime`), as a number.
    EventTime,
}

const GUIDE_TYPES: [GuideEventType; 5] = [
    GuideEventType::GuideSeen,
    GuideEventType::GuideAdvanced,
    GuideEventType::GuideDismissed,
    GuideEventType::GuideActivity,
    GuideEventType::PollResponse,
];

impl Code {
    fn of(col: Col, src: Src, period: Period) -> Option<Code> {
        match src {
            Src::Ev(kind) => Some(match col {
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
            }),
            Src::Guide => Some(match col {
                Col::VisitorId => Code::Visitor,
                Col::AccountId => Code::Account,
                Col::Day if period == Period::Day => Code::Time,
                Col::Hour if period == Period::Hour => Code::Time,
                Col::GuideId => Code::Guide,
                Col::Type => Code::GuideType,
                Col::BrowserTime | Col::GuideTimestamp => Code::EventTime,
                _ => return None,
            }),
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Code::Time | Code::Events | Code::Minutes | Code::App | Code::EventTime)
    }

    /// The code of row `i`, which the caller has checked is within the table.
    #[inline]
    fn read(self, ctx: &Ctx, src: Src, i: usize) -> i64 {
        let store = ctx.store;
        match src {
            Src::Ev(kind) => {
                let t = store.table_for(kind, ctx.period == Period::Day);
                match self {
                    Code::Visitor => i64::from(t.visitor(i)),
                    Code::Account => i64::from(t.account(i)),
                    Code::App => store.items(kind).get(t.item(i) as usize).map_or(0, |x| x.app_id),
                    Code::Time => match ctx.period {
                        Period::Day => day_index(ctx, t.ts(i)),
                        Period::Hour => t.ts(i),
                    },
                    Code::Events => i64::from(t.events(i)),
                    Code::Minutes => i64::from(t.minutes(i)),
                    Code::Item => i64::from(t.item(i)),
                    Code::Guide | Code::GuideType | Code::EventTime => 0,
                }
            }
            Src::Guide => {
                // Column by column: a whole event reads its account, a look-up by visitor.
                let t = &store.guide_events;
                match self {
                    Code::Visitor => i64::from(t.visitor(i)),
                    Code::Account => i64::from(t.account(i)),
                    Code::Time => match ctx.period {
                        Period::Day => day_index(ctx, t.ts(i)),
                        Period::Hour => t.ts(i).div_euclid(3_600_000).saturating_mul(3_600_000),
                    },
                    Code::Guide => i64::from(t.guide(i)),
                    Code::GuideType => GUIDE_TYPES.iter().position(|k| *k == t.kind(i)).unwrap_or(0) as i64,
                    Code::EventTime => t.ts(i),
                    Code::App | Code::Events | Code::Minutes | Code::Item => 0,
                }
            }
        }
    }

    /// Bounds on the canonical codes of rows whose times lie in `first..=last`, from the store
    /// rather than from reading every row (wider, which only changes how groups are indexed).
    fn bounds(self, ctx: &Ctx, src: Src, (first, last): (i64, i64)) -> (i64, i64) {
        let store = ctx.store;
        let upto = |n: usize| (-1, (n as i64 - 1).max(0));
        match (self, src) {
            (Code::Visitor, _) => upto(store.visitors.len()),
            (Code::Account, _) => upto(store.accounts.len()),
            (Code::Item, Src::Ev(kind)) => upto(store.items(kind).len()),
            (Code::Guide, Src::Guide) => upto(store.guides.len()),
            (Code::GuideType, Src::Guide) => (0, GUIDE_TYPES.len() as i64 - 1),
            (Code::Time, _) => match (ctx.period, src) {
                (Period::Day, _) => (day_index(ctx, first), day_index(ctx, last)),
                (Period::Hour, Src::Ev(_)) => (first, last),
                (Period::Hour, Src::Guide) => {
                    let hour = |t: i64| t.div_euclid(3_600_000).saturating_mul(3_600_000);
                    (hour(first), hour(last))
                }
            },
            (Code::EventTime, Src::Guide) => (first, last),
            (Code::App, Src::Ev(kind)) => {
                store.items(kind).iter().fold((0, 0), |(lo, hi), x| (lo.min(x.app_id), hi.max(x.app_id)))
            }
            (Code::Events | Code::Minutes, Src::Ev(_)) => (0, i64::from(u32::MAX)),
            // Columns a source does not have read as 0 (an item or guide code as its canonical
            // form: the first item's index, or -1 where there is none).
            _ => (-1, 0),
        }
    }

    /// A numeric code's value: days are coded by number and valued by their start.
    #[inline]
    fn num(self, ctx: &Ctx, c: i64) -> i64 {
        match (self, ctx.period) {
            (Code::Time, Period::Day) => day_start(ctx, c),
            _ => c,
        }
    }

    fn decode(self, ctx: &Ctx, src: Src, c: i64) -> Val {
        let store = ctx.store;
        let idx = usize::try_from(c).unwrap_or(usize::MAX);
        match self {
            Code::Visitor => store.visitors.get(idx).map_or(Val::Null, |v| Val::Str(v.id.clone())),
            Code::Account => store.accounts.get(idx).map_or(Val::Null, |a| Val::Str(a.id.clone())),
            Code::Item => match src {
                Src::Ev(kind) => store.items(kind).get(idx).map_or(Val::Null, |x| Val::Str(x.id.clone())),
                Src::Guide => Val::Null,
            },
            Code::Guide => store.guides.get(idx).map_or(Val::Null, |g| Val::Str(g.id.clone())),
            Code::GuideType => GUIDE_TYPES.get(idx).map_or(Val::Null, |k| Val::str(k.as_str())),
            _ => Val::Int(self.num(ctx, c)),
        }
    }
}

/// The number of the day `ts` falls in, the first half of [`Ctx::day_of`]: grouping on day
/// numbers needs no division by a day's length per row.
#[inline]
fn day_index(ctx: &Ctx, ts: i64) -> i64 {
    ts.saturating_add(ctx.tz_ms).div_euclid(DAY_MS)
}

/// The second half of [`Ctx::day_of`], so `day_start(day_index(t)) == day_of(t)`.
#[inline]
fn day_start(ctx: &Ctx, day: i64) -> i64 {
    day.saturating_mul(DAY_MS).saturating_sub(ctx.tz_ms)
}

/// Day numbers this far from the epoch start days that do not saturate, so distinct numbers are
/// distinct days; rows beyond take the general path.
const MAX_DAY_INDEX: i64 = i64::MAX / DAY_MS - 2;

enum Acc {
    Sum(i64),
    Count(u64),
    First(Option<i64>),
    Last(Option<i64>),
    Min(Option<i64>),
    Max(Option<i64>),
    Avg(i64, u64),
    /// Boxed: the other accumulators fit 16 bytes, and a group over millions of rows holds one
    /// accumulator per field and group (tens of millions at a million accounts).
    #[allow(clippy::box_collection)]
    List(Box<Vec<i64>>),
}

fn simple_col(e: &Expr) -> Option<Col> {
    match e {
        Expr::Path(p) if p.rest.is_empty() && p.col != Col::Other => Some(p.col),
        _ => None,
    }
}

/// Group keys are at most this many columns (wider groups take the general path), held inline so
/// that a new group costs no allocation.
const MAX_KEYS: usize = 6;
type Key = [i64; MAX_KEYS];

/// Finds a group by its key codes: a direct table over the keys' value ranges when those are
/// small (account index by day, say), else a hash map. Group numbers are handed out in
/// first-seen order either way. Made [`Index::seen`], it only tells whether a key is new (a bit
/// per slot, a set of keys): what the first level of a group of a group that keeps nothing per
/// group needs.
enum Index {
    Dense(Dense, Vec<u32>),
    DenseSeen(Dense, Vec<u64>),
    /// Keys that pack into 64 bits hash faster than into 128 (an account and a visitor index).
    Packed64(Pack, FxMap<u64, u32>),
    Packed64Seen(Pack, FxSet<u64>),
    Packed(Pack, FxMap<u128, u32>),
    PackedSeen(Pack, FxSet<u128>),
    Hash(FxMap<Key, u32>),
    HashSeen(FxSet<Key>),
}

/// A key's slot in a direct table over the keys' value ranges.
struct Dense {
    lo: Key,
    mult: Key,
    n: usize,
    total: usize,
}

impl Dense {
    #[inline]
    fn slot(&self, key: &Key) -> usize {
        let mut slot = 0i64;
        for ((c, lo), mult) in key.iter().zip(&self.lo).zip(&self.mult).take(self.n) {
            slot += (c - lo) * mult;
        }
        slot as usize
    }
}

/// A key's codes packed into one number, each in the bits its range needs.
struct Pack {
    lo: Key,
    shift: [u32; MAX_KEYS],
    n: usize,
}

impl Pack {
    #[inline]
    fn pack64(&self, key: &Key) -> u64 {
        let mut packed = 0u64;
        for ((c, lo), shift) in key.iter().zip(&self.lo).zip(&self.shift).take(self.n) {
            packed |= ((c - lo) as u64) << shift;
        }
        packed
    }

    #[inline]
    fn pack(&self, key: &Key) -> u128 {
        let mut packed = 0u128;
        for ((c, lo), shift) in key.iter().zip(&self.lo).zip(&self.shift).take(self.n) {
            packed |= u128::from((c - lo) as u64) << shift;
        }
        packed
    }
}

/// Where a key goes, worked out once for both kinds of [`Index`].
enum Layout {
    Dense(Dense),
    Packed64(Pack),
    Packed(Pack),
    Hash,
}

impl Layout {
    /// Dense when the product of the ranges is at most about twice `rows` (and bounded), so the
    /// table costs no more than the rows already do; else hashed on the keys packed into 128 bits
    /// when their ranges fit; else hashed on the keys as they are.
    fn new(n: usize, lo: &Key, hi: &Key, rows: usize) -> Layout {
        let limit = (rows.max(1 << 16) * 2).min(1 << 27);
        let mut mult: Key = [0; MAX_KEYS];
        let mut shift = [0u32; MAX_KEYS];
        let mut total: Option<usize> = Some(1);
        let mut bits: u32 = 0;
        for k in (0..n).rev() {
            if lo[k] > hi[k] {
                // No rows: nothing will be looked up.
                return Layout::Hash;
            }
            let Some(span) = hi[k].checked_sub(lo[k]).and_then(|d| u64::try_from(d).ok()) else {
                return Layout::Hash;
            };
            let range = usize::try_from(span).ok().and_then(|d| d.checked_add(1));
            mult[k] = total.map_or(0, |t| t as i64);
            total = match (total, range) {
                (Some(t), Some(r)) => t.checked_mul(r).filter(|&t| t <= limit),
                _ => None,
            };
            shift[k] = bits;
            bits += 64 - span.leading_zeros();
        }
        match total {
            Some(total) => Layout::Dense(Dense { lo: *lo, mult, n, total }),
            // Fewer bits than the word: a one-valued first key after the others' full width
            // would be shifted by the whole word, an overflow.
            None if bits < 64 => Layout::Packed64(Pack { lo: *lo, shift, n }),
            None if bits < 128 => Layout::Packed(Pack { lo: *lo, shift, n }),
            None => Layout::Hash,
        }
    }
}

impl Index {
    fn new(n: usize, lo: &Key, hi: &Key, rows: usize) -> Index {
        match Layout::new(n, lo, hi, rows) {
            Layout::Dense(d) => {
                let slots = vec![u32::MAX; d.total];
                Index::Dense(d, slots)
            }
            Layout::Packed64(p) => Index::Packed64(p, FxMap::default()),
            Layout::Packed(p) => Index::Packed(p, FxMap::default()),
            Layout::Hash => Index::Hash(FxMap::default()),
        }
    }

    /// An index that keeps no group numbers (see [`Index::get_or_insert`]).
    fn seen(n: usize, lo: &Key, hi: &Key, rows: usize) -> Index {
        match Layout::new(n, lo, hi, rows) {
            Layout::Dense(d) => {
                let bits = vec![0; d.total.div_ceil(64)];
                Index::DenseSeen(d, bits)
            }
            Layout::Packed64(p) => Index::Packed64Seen(p, FxSet::default()),
            Layout::Packed(p) => Index::PackedSeen(p, FxSet::default()),
            Layout::Hash => Index::HashSeen(FxSet::default()),
        }
    }

    /// The group of `key`, giving it number `next` if it is new; in an index made
    /// [`Index::seen`], `next` if the key is new and `u32::MAX` if not.
    #[inline]
    fn get_or_insert(&mut self, key: Key, next: u32) -> u32 {
        let new = |was_new: bool| if was_new { next } else { u32::MAX };
        match self {
            Index::Dense(d, slots) => {
                let s = &mut slots[d.slot(&key)];
                if *s == u32::MAX {
                    *s = next;
                }
                *s
            }
            Index::DenseSeen(d, bits) => {
                let slot = d.slot(&key);
                let (w, b) = (&mut bits[slot / 64], 1u64 << (slot % 64));
                let was_new = *w & b == 0;
                *w |= b;
                new(was_new)
            }
            Index::Packed64(p, map) => *map.entry(p.pack64(&key)).or_insert(next),
            Index::Packed64Seen(p, set) => new(set.insert(p.pack64(&key))),
            Index::Packed(p, map) => *map.entry(p.pack(&key)).or_insert(next),
            Index::PackedSeen(p, set) => new(set.insert(p.pack(&key))),
            Index::Hash(m) => *m.entry(key).or_insert(next),
            Index::HashSeen(set) => new(set.insert(key)),
        }
    }
}

/// A columnar group-by's result before decoding: each group's key codes and accumulators
/// (flattened, `key_codes.len()` and `specs.len()` per group), in first-seen order.
struct Grouped {
    src: Src,
    key_codes: Vec<Code>,
    specs: Vec<(Agg, Option<Code>)>,
    keys: Vec<i64>,
    accs: Vec<Acc>,
    groups: usize,
    /// Each key's smallest and largest code.
    lo: Key,
    hi: Key,
}

impl Grouped {
    /// The rows of groups `gis`, in that order: each group's keys decoded under their names,
    /// then its fields. One grid of values where the keys' names are plain; where one is a path
    /// (`a.b` makes an object `a`), an object per row.
    fn rows(
        &self,
        ctx: &Ctx,
        gis: impl Iterator<Item = usize>,
        keys: &[(String, Path)],
        fields: &[AggField],
    ) -> Vec<Row> {
        let (nk, nf) = (self.key_codes.len(), self.specs.len());
        let key_vals = |gi: usize| {
            self.key_codes.iter().zip(&self.keys[gi * nk..gi * nk + nk]).map(|(c, &k)| c.decode(ctx, self.src, k))
        };
        let field_vals = |gi: usize| {
            self.specs
                .iter()
                .zip(&self.accs[gi * nf..gi * nf + nf])
                .map(|((_, code), acc)| finish(acc, *code, ctx, self.src))
        };
        if keys.iter().all(|(n, _)| Grid::plain(n)) {
            let (mut grid, slots) =
                Grid::new(keys.iter().map(|(n, _)| n.as_str()).chain(fields.iter().map(|f| f.out.as_str())));
            for gi in gis {
                grid.push(&slots, key_vals(gi).chain(field_vals(gi)));
            }
            return grid.rows();
        }
        gis.map(|gi| {
            let mut o = Obj::with_capacity(keys.len() + fields.len());
            for ((name, _), v) in keys.iter().zip(key_vals(gi)) {
                Val::set_path(&mut o, name, v);
            }
            for (f, v) in fields.iter().zip(field_vals(gi)) {
                o.insert(f.out.clone(), v);
            }
            Row::Doc(Arc::new(o))
        })
        .collect()
    }
}

/// Returns `None` when the fast path does not apply.
pub fn group(ctx: &Ctx, rows: Input, keys: &[(String, Path)], fields: &[AggField]) -> Option<Vec<Row>> {
    let g = group_codes(ctx, rows, keys, fields)?;
    Some(g.rows(ctx, 0..g.groups, keys, fields))
}

/// A group followed by a sort on some of its keys, and perhaps a limit (a keyset page): the
/// groups are ordered on their codes' ranks and only the rows the limit keeps are built. The
/// rows, in the order, that building every group's row, sorting them (stably) and cutting them
/// would give; `None` where the columnar group does not apply or the sort reads anything but
/// the group's keys.
pub fn group_sorted(
    ctx: &Ctx,
    rows: Input,
    (keys, fields): (&[(String, Path)], &[AggField]),
    sort: &[(Path, bool)],
    limit: Option<usize>,
) -> Option<Vec<Row>> {
    let plain = |n: &str| !n.is_empty() && !n.contains(['.', '[', ']']);
    let mut names: Vec<&str> =
        keys.iter().map(|(n, _)| n.as_str()).chain(fields.iter().map(|f| f.out.as_str())).collect();
    let width = names.len();
    if !names.iter().all(|n| plain(n)) || sort.is_empty() || sort.len() > MAX_KEYS {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    if names.len() != width {
        return None;
    }
    let on: Vec<(usize, bool)> = sort
        .iter()
        .map(|(p, desc)| {
            p.rest.is_empty().then(|| keys.iter().position(|(n, _)| *n == p.head)).flatten().map(|k| (k, *desc))
        })
        .collect::<Option<_>>()?;
    let g = group_codes(ctx, rows, keys, fields)?;
    let nk = g.key_codes.len();
    // Each sorted key's codes ranked by the values they decode to, equal values equal ranks.
    let ranks: Vec<Ranks> = on.iter().map(|&(k, _)| Ranks::new(ctx, &g, k)).collect();
    // Ties keep first-seen order, as a stable sort of the built rows would.
    let mut order: Vec<([u32; MAX_KEYS], u32)> = (0..g.groups)
        .map(|gi| {
            let mut key = [0u32; MAX_KEYS];
            for (slot, (&(k, desc), rank)) in key.iter_mut().zip(on.iter().zip(&ranks)) {
                let r = rank.of(g.keys[gi * nk + k]);
                *slot = if desc { u32::MAX - r } else { r };
            }
            (key, gi as u32)
        })
        .collect();
    order.sort_unstable();
    order.truncate(limit.unwrap_or(usize::MAX));
    Some(g.rows(ctx, order.into_iter().map(|(_, gi)| gi as usize), keys, fields))
}

/// One key's codes ranked by the values they decode to, equal values equal ranks: in a table
/// over the codes' range when that is no wider than the groups (entity indexes, days), else
/// hashed.
enum Ranks {
    Dense { lo: i64, ranks: Vec<u32> },
    Hash(FxMap<i64, u32>),
}

impl Ranks {
    fn new(ctx: &Ctx, g: &Grouped, k: usize) -> Ranks {
        let (code, nk) = (g.key_codes[k], g.key_codes.len());
        let (lo, hi) = (g.lo[k], g.hi[k]);
        let span = hi.checked_sub(lo).and_then(|d| usize::try_from(d).ok()).filter(|&d| d <= g.groups.max(1 << 16) * 2);
        let mut seen: Vec<bool> = span.map_or_else(Vec::new, |d| vec![false; d + 1]);
        let mut seen_hashed: FxSet<i64> = FxSet::default();
        let mut first = |c: i64| match span {
            Some(_) => !std::mem::replace(&mut seen[(c - lo) as usize], true),
            None => seen_hashed.insert(c),
        };
        let mut vals: Vec<(Val, i64)> = (0..g.groups)
            .map(|gi| g.keys[gi * nk + k])
            .filter(|&c| first(c))
            .map(|c| (code.decode(ctx, g.src, c), c))
            .collect();
        sort_values(&mut vals);
        let mut rank = 0u32;
        let ranked = vals.iter().enumerate().map(|(i, (v, c))| {
            if i > 0 && vals[i - 1].0.cmp_total(v) != std::cmp::Ordering::Equal {
                rank += 1;
            }
            (*c, rank)
        });
        match span {
            Some(d) => {
                let mut ranks = vec![0; d + 1];
                for (c, r) in ranked {
                    ranks[(c - lo) as usize] = r;
                }
                Ranks::Dense { lo, ranks }
            }
            None => Ranks::Hash(ranked.collect()),
        }
    }

    #[inline]
    fn of(&self, c: i64) -> u32 {
        match self {
            Ranks::Dense { lo, ranks } => usize::try_from(c - lo).ok().and_then(|i| ranks.get(i)).copied().unwrap_or(0),
            Ranks::Hash(m) => m.get(&c).copied().unwrap_or(0),
        }
    }
}

/// Sorts decoded key values as [`Val::cmp_total`] orders them. Ids of hundreds of thousands of
/// visitors are compared mostly on their first eight bytes, held beside them, instead of
/// through a pointer each time.
fn sort_values(vals: &mut [(Val, i64)]) {
    let head = |v: &Val| -> Option<(u8, u64)> {
        match v {
            Val::Null => Some((0, 0)),
            Val::Int(i) => Some((2, (*i as u64) ^ (1 << 63))),
            Val::Str(s) => {
                let mut b = [0u8; 8];
                let n = s.len().min(8);
                b[..n].copy_from_slice(&s.as_bytes()[..n]);
                Some((3, u64::from_be_bytes(b)))
            }
            _ => None,
        }
    };
    let heads: Option<Vec<(u8, u64)>> = vals.iter().map(|(v, _)| head(v)).collect();
    let Some(heads) = heads else {
        vals.sort_by(|(a, _), (b, _)| a.cmp_total(b));
        return;
    };
    // A shorter string pads with zeros, which sort first: heads order as the whole values do,
    // and equal heads are told apart by the whole values.
    let mut keyed: Vec<((u8, u64), Val, i64)> =
        heads.into_iter().zip(vals.iter_mut()).map(|(h, (v, c))| (h, std::mem::take(v), *c)).collect();
    keyed.sort_unstable_by(|(ha, a, ca), (hb, b, cb)| ha.cmp(hb).then_with(|| a.cmp_total(b)).then(ca.cmp(cb)));
    for (slot, (_, v, c)) in vals.iter_mut().zip(keyed) {
        *slot = (v, c);
    }
}

/// The value a finished accumulator puts in its group's row.
fn finish(acc: &Acc, code: Option<Code>, ctx: &Ctx, src: Src) -> Val {
    let dec = |c: i64| code.map_or(Val::Int(c), |code| code.decode(ctx, src, c));
    match acc {
        Acc::Sum(s) => Val::Int(*s),
        Acc::Count(n) => Val::Int(*n as i64),
        Acc::First(x) | Acc::Last(x) | Acc::Min(x) | Acc::Max(x) => x.map_or(Val::Null, dec),
        Acc::Avg(s, n) => {
            if *n == 0 {
                Val::Null
            } else {
                Val::Float(*s as f64 / *n as f64)
            }
        }
        Acc::List(l) => Val::arr(l.iter().map(|&c| dec(c)).collect()),
    }
}

/// The time of row `i`.
fn read_ts(ctx: &Ctx, src: Src, i: usize) -> i64 {
    match src {
        Src::Ev(kind) => ctx.store.table_for(kind, ctx.period == Period::Day).ts(i),
        Src::Guide => ctx.store.guide_events.ts(i),
    }
}

/// A columnar group-by ready for its pass over the rows: the keys' and fields' codes and the
/// keys' value ranges; `None` where the fast path does not apply.
struct Pass {
    src: Src,
    key_codes: Vec<Code>,
    specs: Vec<(Agg, Option<Code>)>,
    canon: Canon,
    len: usize,
    lo: Key,
    hi: Key,
}

impl Pass {
    fn new(ctx: &Ctx, rows: Input, keys: &[(String, Path)], fields: &[AggField]) -> Option<Pass> {
        let src = rows.src()?;
        if keys.len() > MAX_KEYS {
            return None;
        }
        let key_codes: Vec<Code> = keys
            .iter()
            .map(|(_, p)| if p.rest.is_empty() { Code::of(p.col, src, ctx.period) } else { None })
            .collect::<Option<_>>()?;
        // (aggregator, column code or None for row counts)
        let mut specs: Vec<(Agg, Option<Code>)> = Vec::with_capacity(fields.len());
        for f in fields {
            let code = match &f.arg {
                None => None,
                Some(e) => Some(Code::of(simple_col(e)?, src, ctx.period)?),
            };
            let numeric_needed = matches!(f.agg, Agg::Sum | Agg::Avg | Agg::Min | Agg::Max);
            if numeric_needed && !code.is_some_and(Code::numeric) {
                return None;
            }
            specs.push((f.agg, code));
        }
        let len = match src {
            Src::Ev(kind) => ctx.store.table_for(kind, ctx.period == Period::Day).len(),
            Src::Guide => ctx.store.guide_events.len(),
        };
        let canon = Canon::new(ctx.store, src);
        // The keys' value ranges, to see whether a direct table can index the groups.
        let (mut lo, mut hi): (Key, Key) = ([i64::MAX; MAX_KEYS], [i64::MIN; MAX_KEYS]);
        match rows.times(ctx, src) {
            // A picked set's rows are known to lie within the store's tables and its ends' times:
            // a pass reading every row's keys (a look-up by visitor for each account) is spared.
            Some(times) => {
                for (k, &c) in key_codes.iter().enumerate() {
                    (lo[k], hi[k]) = c.bounds(ctx, src, times);
                }
            }
            None => {
                for i in rows.indexes(len) {
                    for (k, &c) in key_codes.iter().enumerate() {
                        let v = canon.of(c, c.read(ctx, src, i));
                        lo[k] = lo[k].min(v);
                        hi[k] = hi[k].max(v);
                    }
                }
            }
        }
        // Day numbers group and count as days only while no two name one saturated day.
        let days_ok = |c: &Code, k: usize| {
            *c != Code::Time || ctx.period != Period::Day || (lo[k] >= -MAX_DAY_INDEX && hi[k] <= MAX_DAY_INDEX)
        };
        if !key_codes.iter().enumerate().all(|(k, c)| days_ok(c, k)) {
            return None;
        }
        if specs.iter().any(|(a, c)| *a == Agg::Count && *c == Some(Code::Time) && ctx.period == Period::Day) {
            let far = rows.indexes(len).any(|i| day_index(ctx, read_ts(ctx, src, i)).abs() > MAX_DAY_INDEX);
            if far {
                return None;
            }
        }
        Some(Pass { src, key_codes, specs, canon, len, lo, hi })
    }

    /// Field `fi`'s canonical code in row `i` (`None` for a row count).
    #[inline]
    fn field(&self, ctx: &Ctx, fi: usize, i: usize) -> Option<i64> {
        self.specs[fi].1.map(|c| self.canon.of(c, c.read(ctx, self.src, i)))
    }

    /// Calls `f` with each row's group (numbered in first-seen order; with `numbered` false,
    /// not numbered at all), whether the row is its group's first, the group's key codes and
    /// the row.
    fn run(&self, ctx: &Ctx, rows: Input, numbered: bool, mut f: impl FnMut(u32, bool, &Key, usize)) {
        let (n, lo, hi) = (self.key_codes.len(), &self.lo, &self.hi);
        let mut index = if numbered { Index::new(n, lo, hi, rows.len()) } else { Index::seen(n, lo, hi, rows.len()) };
        let mut n_groups: u32 = 0;
        for i in rows.indexes(self.len) {
            let mut key: Key = [0; MAX_KEYS];
            for (slot, &c) in key.iter_mut().zip(&self.key_codes) {
                *slot = self.canon.of(c, c.read(ctx, self.src, i));
            }
            let g = index.get_or_insert(key, n_groups);
            let new = g == n_groups;
            if new {
                n_groups += 1;
            }
            f(g, new, &key, i);
        }
    }
}

fn group_codes(ctx: &Ctx, rows: Input, keys: &[(String, Path)], fields: &[AggField]) -> Option<Grouped> {
    Some(Pass::new(ctx, rows, keys, fields)?.group(ctx, rows))
}

impl Pass {
    /// Each group's key codes and accumulators.
    fn group(self, ctx: &Ctx, rows: Input) -> Grouped {
        let pass = self;
        let (nk, nf) = (pass.key_codes.len(), pass.specs.len());
        let mut group_keys: Vec<i64> = Vec::new();
        let mut accs: Vec<Acc> = Vec::new();
        // One set per distinct-count field across all groups: far fewer allocations than a set per
        // group when there are tens of thousands of groups.
        let mut distinct: Vec<FxSet<(u32, i64)>> = pass.specs.iter().map(|_| FxSet::default()).collect();
        let mut n_groups = 0usize;
        pass.run(ctx, rows, true, |g, new, key, i| {
            if new {
                n_groups += 1;
                group_keys.extend_from_slice(&key[..nk]);
                accs.extend(pass.specs.iter().map(|(a, _)| match a {
                    Agg::Sum => Acc::Sum(0),
                    Agg::Count => Acc::Count(0),
                    Agg::First => Acc::First(None),
                    Agg::Last => Acc::Last(None),
                    Agg::Min => Acc::Min(None),
                    Agg::Max => Acc::Max(None),
                    Agg::Avg => Acc::Avg(0, 0),
                    Agg::List => Acc::List(Box::default()),
                }));
            }
            let group_accs = &mut accs[g as usize * nf..g as usize * nf + nf];
            for (fi, ((agg, code), acc)) in pass.specs.iter().zip(group_accs.iter_mut()).enumerate() {
                let v = pass.field(ctx, fi, i);
                let value = |v: i64| code.map_or(v, |c| c.num(ctx, v));
                match acc {
                    Acc::Sum(s) => *s = s.saturating_add(v.map_or(0, value)),
                    // Counting a field counts its non-null values, as the general path does.
                    Acc::Count(n) => match (v, code) {
                        (Some(v), Some(c)) if Canon::null(*c, v) => {}
                        (Some(v), _) if ctx.count_distinct && *agg == Agg::Count => {
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
                            *s = s.saturating_add(value(v));
                            *n += 1;
                        }
                    }
                    Acc::List(l) => l.extend(v),
                }
            }
        });
        let Pass { src, key_codes, specs, lo, hi, .. } = pass;
        Grouped { src, key_codes, specs, keys: group_keys, accs, groups: n_groups, lo, hi }
    }
}

/// Where a second group reads one of its aggregated fields from the first group's result.
#[derive(Clone)]
enum Feed {
    /// Counts rows (`{"count": null}`).
    Rows,
    /// One of the first group's keys.
    Key(usize),
    /// One of the first group's aggregated fields.
    Field(usize),
    /// A constant an `eval` between the groups set.
    Const(Val),
}

/// Codes that decode to equal values get one code, so grouping and counting on codes agree with
/// doing it on the decoded values: every missing entity, item or guide is `-1`, and an item or
/// guide id listed twice takes its first index. Visitor and account ids are unique by
/// construction (the store only upserts them by id).
struct Canon {
    visitors: usize,
    accounts: usize,
    items: Vec<i64>,
}

impl Canon {
    fn new(store: &Store, src: Src) -> Canon {
        let ids: Vec<&str> = match src {
            Src::Ev(kind) => store.items(kind).iter().map(|x| &*x.id).collect(),
            Src::Guide => store.guides.iter().map(|g| &*g.id).collect(),
        };
        let mut first: FxMap<&str, i64> = FxMap::default();
        let items = ids.iter().enumerate().map(|(i, id)| *first.entry(id).or_insert(i as i64)).collect();
        Canon { visitors: store.visitors.len(), accounts: store.accounts.len(), items }
    }

    #[inline]
    fn of(&self, code: Code, c: i64) -> i64 {
        let within = |n: usize| usize::try_from(c).is_ok_and(|i| i < n);
        match code {
            Code::Visitor if !within(self.visitors) => -1,
            Code::Account if !within(self.accounts) => -1,
            Code::Item | Code::Guide => usize::try_from(c).ok().and_then(|i| self.items.get(i)).copied().unwrap_or(-1),
            _ => c,
        }
    }

    /// Whether a canonical code decodes to null.
    #[inline]
    fn null(code: Code, canon: i64) -> bool {
        matches!(code, Code::Visitor | Code::Account | Code::Item | Code::Guide) && canon < 0
    }
}

/// A group whose input is another group's result (possibly with `eval`s of constants in
/// between), computed on the first group's codes without building its rows: the rows, in the
/// order, the general path gives for those stages. Applies when the first group takes the
/// columnar path and the second groups on the first's keys and aggregates its keys, its fields,
/// the constants or rows; `None` otherwise.
pub fn group_of_group(
    ctx: &Ctx,
    rows: Input,
    (keys1, fields1): (&[(String, Path)], &[AggField]),
    consts: &[(String, Expr)],
    (keys2, fields2): (&[(String, Path)], &[AggField]),
) -> Option<Vec<Row>> {
    // The first group's rows hold each key, field and constant under its own plain name.
    let plain = Grid::plain;
    let mut names: Vec<&str> =
        keys1.iter().map(|(n, _)| n.as_str()).chain(fields1.iter().map(|f| f.out.as_str())).collect();
    let width = names.len();
    if !names.iter().copied().chain(keys2.iter().map(|(n, _)| n.as_str())).all(plain) {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    if names.len() != width {
        return None;
    }
    // The last `eval` of a name wins, as it overwrites the earlier ones.
    let mut constants: Vec<(&str, Val)> = Vec::new();
    for (n, e) in consts {
        let Expr::Lit(v) = e else { return None };
        if !plain(n) || names.contains(&n.as_str()) {
            return None;
        }
        constants.retain(|(c, _)| *c != n.as_str());
        constants.push((n.as_str(), v.clone()));
    }
    let key_of = |p: &Path| if p.rest.is_empty() { keys1.iter().position(|(n, _)| *n == p.head) } else { None };
    let field_of = |p: &Path| if p.rest.is_empty() { fields1.iter().position(|f| f.out == p.head) } else { None };
    let const_of = |p: &Path| {
        if p.rest.is_empty() { constants.iter().find(|(n, _)| *n == p.head).map(|(_, v)| v.clone()) } else { None }
    };
    let k2: Vec<usize> = keys2.iter().map(|(_, p)| key_of(p)).collect::<Option<_>>()?;
    let feeds: Vec<Feed> = fields2
        .iter()
        .map(|f| match &f.arg {
            None => Some(Feed::Rows),
            Some(Expr::Path(p)) => key_of(p)
                .map(Feed::Key)
                .or_else(|| field_of(p).map(Feed::Field))
                .or_else(|| const_of(p).map(Feed::Const)),
            Some(_) => None,
        })
        .collect::<Option<_>>()?;
    let pass = Pass::new(ctx, rows, keys1, fields1)?;
    let nk = pass.key_codes.len();
    let pick = |a: &[i64]| {
        let mut k: Key = [0; MAX_KEYS];
        for (slot, &ki) in k.iter_mut().zip(&k2) {
            *slot = a[ki];
        }
        k
    };
    // Distinct counts of key codes, one set per field across all groups. A count of the one
    // first key the second group does not group on needs none: the first group's keys are
    // distinct, so each of its groups brings that key's value to its second group only once
    // (the visitors of an account, the days of an account; ~10 million pairs at a million
    // accounts).
    let once: Vec<bool> = feeds
        .iter()
        .map(|feed| matches!(feed, Feed::Key(ki) if (0..nk).all(|k| k == *ki || k2.contains(&k))))
        .collect();
    let mut second = Second {
        feeds: feeds.clone(),
        index: Index::new(k2.len(), &pick(&pass.lo), &pick(&pass.hi), rows.len()),
        keys: Vec::new(),
        states: Vec::new(),
        distinct: feeds.iter().map(|_| FxSet::default()).collect(),
        once,
    };
    let new_state = |f: &AggField, feed: &Feed| match (f.agg, feed) {
        (Agg::Count, Feed::Key(_)) => St::Count(0),
        _ => St::General(AggState::new(f, ctx.count_distinct)),
    };

    // Where the second group reads of the first's fields only sums of sums of event counts or
    // minutes (never negative, so no partial sum saturates unless the whole does) and sums of
    // row counts, it takes them from the rows as they come: the first group is then only its
    // index, not a key and accumulators per group (the days of each account: ~16 million groups
    // at a million accounts, over a gigabyte).
    let flat: Option<Vec<Option<usize>>> = fields2
        .iter()
        .zip(&feeds)
        .map(|(f, feed)| match feed {
            Feed::Field(j) => {
                let summable =
                    matches!(pass.specs[*j], (Agg::Sum, Some(Code::Events | Code::Minutes)) | (Agg::Count, None));
                (f.agg == Agg::Sum && summable).then_some(Some(*j))
            }
            _ => Some(None),
        })
        .collect();
    if let Some(flat) = flat {
        let mut overflow = false;
        let summing = flat.iter().any(Option::is_some);
        pass.run(ctx, rows, false, |_, new, key, i| {
            if !new && !summing {
                return;
            }
            // A first-level key seen before has its second group already.
            let g2 = second.group_of(&pick(key), || {
                fields2.iter().zip(&feeds).zip(&flat).map(|((f, feed), j)| match j {
                    Some(_) => St::Flat(0),
                    None => new_state(f, feed),
                })
            });
            if new {
                second.add(ctx, (pass.src, &pass.key_codes), g2, key, |_| Val::Null);
            }
            if !summing {
                return;
            }
            let n2 = flat.len();
            for (st, j) in second.states[g2 as usize * n2..g2 as usize * n2 + n2].iter_mut().zip(&flat) {
                if let (St::Flat(sum), Some(j)) = (st, j) {
                    let v = match pass.specs[*j] {
                        (_, None) => Some(1),
                        (_, Some(c)) => pass.field(ctx, *j, i).map(|v| c.num(ctx, v)),
                    };
                    match sum.checked_add(v.unwrap_or(0)) {
                        Some(s) => *sum = s,
                        None => overflow = true,
                    }
                }
            }
        });
        // Past i64 the general path's sums turn to floats; it answers.
        return (!overflow).then(|| second.rows(ctx, (pass.src, &pass.key_codes), (keys2, &k2), fields2));
    }

    let g = pass.group(ctx, rows);
    let nf = g.specs.len();
    for gi in 0..g.groups {
        let key = &g.keys[gi * nk..gi * nk + nk];
        let accs = &g.accs[gi * nf..gi * nf + nf];
        let g2 = second.group_of(&pick(key), || fields2.iter().zip(&feeds).map(|(f, feed)| new_state(f, feed)));
        second.add(ctx, (g.src, &g.key_codes), g2, key, |j| finish(&accs[j], g.specs[j].1, ctx, g.src));
    }
    Some(second.rows(ctx, (g.src, &g.key_codes), (keys2, &k2), fields2))
}

/// A second-level accumulator: counts of first-level key codes stay on codes; sums taken from
/// the rows (see [`group_of_group`]) are plain sums; the rest go through the general path's
/// aggregator on decoded values.
enum St {
    Count(u64),
    Flat(i64),
    General(AggState),
}

/// The second group of [`group_of_group`], fed one first-level group at a time.
struct Second {
    feeds: Vec<Feed>,
    index: Index,
    keys: Vec<Key>,
    /// Per group, one state per field.
    states: Vec<St>,
    distinct: Vec<FxSet<(u32, i64)>>,
    /// Per field: a count of a key that needs no set (see `group_of_group`).
    once: Vec<bool>,
}

impl Second {
    /// The group of the second-level key `key`, made with `states` if it is new.
    fn group_of<I: IntoIterator<Item = St>>(&mut self, key: &Key, states: impl FnOnce() -> I) -> u32 {
        let next = self.keys.len() as u32;
        let g2 = self.index.get_or_insert(*key, next);
        if g2 == next {
            self.keys.push(*key);
            self.states.extend(states());
        }
        g2
    }

    /// Adds the first-level group of key codes `key1` to second-level group `g2`: its keys,
    /// constants and row, and its fields as `field` finishes them (fields summed from the rows
    /// are not asked for).
    fn add(&mut self, ctx: &Ctx, (src, codes): (Src, &[Code]), g2: u32, key1: &[i64], field: impl Fn(usize) -> Val) {
        let n2 = self.feeds.len();
        let sts = &mut self.states[g2 as usize * n2..g2 as usize * n2 + n2];
        for (fi, (feed, st)) in self.feeds.iter().zip(sts.iter_mut()).enumerate() {
            match (st, feed) {
                (St::Count(n), Feed::Key(ki)) => {
                    let c = key1[*ki];
                    if Canon::null(codes[*ki], c) {
                        continue;
                    }
                    if !ctx.count_distinct || self.once[fi] || self.distinct[fi].insert((g2, c)) {
                        *n += 1;
                    }
                }
                (St::Count(_) | St::Flat(_), _) => {}
                (St::General(a), Feed::Rows) => a.add(Val::Null, true),
                (St::General(a), Feed::Key(ki)) => a.add(codes[*ki].decode(ctx, src, key1[*ki]), false),
                (St::General(a), Feed::Field(j)) => a.add(field(*j), false),
                (St::General(a), Feed::Const(v)) => a.add(v.clone(), false),
            }
        }
    }

    /// The second group's rows, in first-seen order.
    fn rows(
        self,
        ctx: &Ctx,
        (src, codes): (Src, &[Code]),
        (keys2, k2): (&[(String, Path)], &[usize]),
        fields2: &[AggField],
    ) -> Vec<Row> {
        let n2 = fields2.len();
        // The keys' names are plain (see `group_of_group`), so each is one field.
        let (mut grid, slots) =
            Grid::new(keys2.iter().map(|(n, _)| n.as_str()).chain(fields2.iter().map(|f| f.out.as_str())));
        let mut states = self.states.into_iter();
        for key in self.keys {
            let keys = k2.iter().zip(&key).map(|(&ki, &c)| codes[ki].decode(ctx, src, c));
            let fields = states.by_ref().take(n2).map(|st| match st {
                St::Count(n) => Val::Int(n as i64),
                St::Flat(s) => Val::Int(s),
                St::General(a) => a.finish(),
            });
            grid.push(&slots, keys.chain(fields));
        }
        grid.rows()
    }
}

#[cfg(test)]
mod tests {
    use super::{Index, Key, MAX_KEYS};

    #[test]
    fn an_accumulator_is_24_bytes() {
        assert_eq!(std::mem::size_of::<super::Acc>(), 24);
    }

    #[test]
    fn keys_as_wide_as_the_word_are_packed_without_overflow() {
        // 0 + 1 + 63 bits: the first key's shift would be 64.
        let mut lo: Key = [0; MAX_KEYS];
        let mut hi: Key = [0; MAX_KEYS];
        (lo[1], hi[1]) = (0, 1);
        (lo[2], hi[2]) = (0, i64::MAX);
        let mut index = Index::new(3, &lo, &hi, 10);
        let key = |b: i64, c: i64| {
            let mut k: Key = [0; MAX_KEYS];
            (k[1], k[2]) = (b, c);
            k
        };
        assert_eq!(index.get_or_insert(key(1, i64::MAX), 0), 0);
        assert_eq!(index.get_or_insert(key(0, i64::MAX), 1), 1);
        assert_eq!(index.get_or_insert(key(1, i64::MAX), 2), 0);
    }
}
