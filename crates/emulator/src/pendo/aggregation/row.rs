//! Pipeline rows. Event rows stay references into the columnar tables until an operator needs a
//! real object (eval, select, output), so a filter or group over a million rollups reads columns
//! directly instead of building a million JSON objects.

use std::sync::Arc;

use super::super::store::{EventKind, GuideEventType, Meta, NONE_U32, Store};
use super::super::val::{Obj, Val};
use super::expr::{Col, Env, Fields, Path, Seg};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Hour,
}

/// How a guide-event row presents itself: `guideEvents` rows carry the event type in `type`,
/// `pollEvents` rows carry the delivery channel there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuideView {
    Guide,
    Poll,
}

/// Which entity table an entity row points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    Visitor,
    Account,
}

#[derive(Clone, Debug)]
pub enum Row {
    Ev(EventKind, u32),
    Guide(GuideView, u32),
    /// A `visitors`/`accounts` source row, `{visitorId|accountId, metadata}`: metadata is built
    /// only for the fields read, or whole when the row is materialized.
    Entity(EntityKind, u32),
    Doc(Arc<Obj>),
    /// Row `n` of a grid of rows of one shape (a group's result).
    Grid(Arc<Grid>, u32),
}

/// Rows of one shape held as a row of values each under shared field names: a group's result,
/// where an object per row (a map, and a name per field) cost ~500 bytes a row, with a million
/// rows per query at a million accounts.
#[derive(Debug, Default)]
pub struct Grid {
    names: Vec<String>,
    values: Vec<Val>,
    /// Rows pushed (a grid of no fields has rows too).
    len: usize,
}

impl Grid {
    /// Whether `name` is one field of an object (setting `a.b` makes an object `a`), so that
    /// rows with fields of such names can be a grid.
    pub fn plain(name: &str) -> bool {
        !name.is_empty() && !name.contains(['.', '[', ']'])
    }

    /// An empty grid whose rows get the fields `names`, and for each name its column: a name
    /// given twice is one field, in its first place, as inserting into an object makes it.
    pub fn new<'n>(names: impl IntoIterator<Item = &'n str>) -> (Grid, Vec<usize>) {
        let mut t = Grid::default();
        let slots = names
            .into_iter()
            .map(|n| match t.names.iter().position(|m| m == n) {
                Some(k) => k,
                None => {
                    t.names.push(n.to_owned());
                    t.names.len() - 1
                }
            })
            .collect();
        (t, slots)
    }

    /// Adds a row of one value per name given to [`Grid::new`] (a later value of a repeated
    /// name wins), through their `slots`.
    pub fn push(&mut self, slots: &[usize], values: impl IntoIterator<Item = Val>) {
        let at = self.values.len();
        self.len += 1;
        self.values.resize(at + self.names.len(), Val::Null);
        for (&k, v) in slots.iter().zip(values) {
            self.values[at + k] = v;
        }
    }

    /// The grid's rows, in the order pushed.
    pub fn rows(self) -> Vec<Row> {
        let n = self.len;
        let t = Arc::new(self);
        (0..n).map(|i| Row::Grid(t.clone(), i as u32)).collect()
    }

    fn row(&self, i: u32) -> &[Val] {
        let w = self.names.len();
        self.values.get(i as usize * w..(i as usize + 1) * w).unwrap_or(&[])
    }

    fn get(&self, i: u32, name: &str) -> Val {
        self.names.iter().position(|n| n == name).and_then(|k| self.row(i).get(k)).cloned().unwrap_or(Val::Null)
    }
}

/// Everything rows and expressions need besides themselves.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub period: Period,
    pub tz_ms: i64,
    pub now: i64,
    pub app_ids: Vec<i64>,
    pub count_distinct: bool,
}

impl Ctx<'_> {
    pub fn env(&self) -> Env<'_> {
        Env { now: self.now, tz_ms: self.tz_ms, app_ids: &self.app_ids }
    }

    pub fn day_of(&self, ts: i64) -> i64 {
        ts.saturating_add(self.tz_ms).div_euclid(86_400_000).saturating_mul(86_400_000).saturating_sub(self.tz_ms)
    }
}

/// A row seen through the context, for expression evaluation.
pub struct RowRef<'r, 'c> {
    pub row: &'r Row,
    pub ctx: &'r Ctx<'c>,
}

impl Fields for RowRef<'_, '_> {
    fn get(&self, path: &Path) -> Val {
        let head = match self.row {
            Row::Doc(o) => o.get(&path.head).cloned().unwrap_or(Val::Null),
            Row::Ev(kind, i) => ev_col(self.ctx, *kind, *i as usize, path.col, &path.head),
            Row::Guide(view, i) => guide_col(self.ctx, *view, *i as usize, path.col),
            Row::Entity(kind, i) => return entity_get(self.ctx.store, *kind, *i as usize, path),
            Row::Grid(t, i) => t.get(*i, &path.head),
        };
        if path.rest.is_empty() { head } else { path.walk(head) }
    }
}

impl Row {
    pub fn get(&self, ctx: &Ctx, path: &Path) -> Val {
        RowRef { row: self, ctx }.get(path)
    }

    /// The row as an object (cheap for documents; built for event rows).
    pub fn materialize(&self, ctx: &Ctx) -> Arc<Obj> {
        match self {
            Row::Doc(o) => o.clone(),
            Row::Grid(t, i) => Arc::new(t.names.iter().cloned().zip(t.row(*i).iter().cloned()).collect()),
            Row::Entity(kind, i) => {
                let (name, id, meta) = entity(ctx.store, *kind, *i as usize);
                let mut o = Obj::with_capacity(2);
                o.insert(name.into(), id.map_or(Val::Null, |id| Val::Str(id.clone())));
                o.insert(
                    "metadata".into(),
                    match (id, meta) {
                        (Some(id), Some(m)) => m.build(id),
                        _ => Val::obj(Obj::new()),
                    },
                );
                Arc::new(o)
            }
            Row::Ev(kind, i) => {
                let cols: &[(&str, Col)] = match kind {
                    EventKind::Page => &[("pageId", Col::PageId)],
                    EventKind::Feature => &[("featureId", Col::FeatureId)],
                    EventKind::Track => &[("trackTypeId", Col::TrackTypeId), ("properties", Col::Properties)],
                };
                let time: (&str, Col) = match ctx.period {
                    Period::Day => ("day", Col::Day),
                    Period::Hour => ("hour", Col::Hour),
                };
                let mut o = Obj::with_capacity(14);
                for (name, col) in
                    [("visitorId", Col::VisitorId), ("accountId", Col::AccountId), ("appId", Col::AppId), time]
                        .iter()
                        .chain(cols)
                        .chain(&[
                            ("numEvents", Col::NumEvents),
                            ("numMinutes", Col::NumMinutes),
                            ("remoteIp", Col::RemoteIp),
                            ("server", Col::Server),
                            ("userAgent", Col::UserAgent),
                            ("lastTime", Col::LastTime),
                            ("parameters", Col::Parameters),
                        ])
                {
                    o.insert((*name).to_string(), ev_col(ctx, *kind, *i as usize, *col, name));
                }
                Arc::new(o)
            }
            Row::Guide(view, i) => {
                let cols: &[(&str, Col)] = &[
                    ("visitorId", Col::VisitorId),
                    ("accountId", Col::AccountId),
                    ("accountIds", Col::AccountIds),
                    ("appId", Col::AppId),
                    ("guideId", Col::GuideId),
                    ("guideStepId", Col::GuideStepId),
                    ("pollId", Col::PollId),
                    ("pollResponse", Col::PollResponse),
                    ("type", Col::Type),
                    ("browserTime", Col::BrowserTime),
                    ("guideTimestamp", Col::GuideTimestamp),
                    ("url", Col::Url),
                    ("country", Col::Country),
                    ("region", Col::Region),
                    ("latitude", Col::Latitude),
                    ("longitude", Col::Longitude),
                    ("loadTime", Col::LoadTime),
                    ("remoteIp", Col::RemoteIp),
                    ("serverName", Col::ServerName),
                    ("userAgent", Col::UserAgent),
                ];
                let mut o = Obj::with_capacity(cols.len());
                for (name, col) in cols {
                    if *view == GuideView::Poll && matches!(col, Col::GuideStepId | Col::Url) {
                        continue;
                    }
                    o.insert((*name).to_string(), guide_col(ctx, *view, *i as usize, *col));
                }
                Arc::new(o)
            }
        }
    }
}

/// The id field's name, the id and the metadata of an entity row.
fn entity(store: &Store, kind: EntityKind, i: usize) -> (&'static str, Option<&Arc<str>>, Option<&Meta>) {
    match kind {
        EntityKind::Visitor => {
            ("visitorId", store.visitors.get(i).map(|v| &v.id), store.visitors.get(i).map(|v| &v.meta))
        }
        EntityKind::Account => {
            ("accountId", store.accounts.get(i).map(|a| &a.id), store.accounts.get(i).map(|a| &a.meta))
        }
    }
}

/// A path read on an entity row, equal to reading it on the materialized row: `metadata.g.f`
/// reads one compact field instead of building the document.
fn entity_get(store: &Store, kind: EntityKind, i: usize, path: &Path) -> Val {
    let (name, id, meta) = entity(store, kind, i);
    let (Some(id), Some(meta)) = (id, meta) else {
        // What the materialized row holds for an index that is not there.
        return match path.head.as_str() {
            "metadata" => path.walk(Val::obj(Obj::new())),
            _ => Val::Null,
        };
    };
    if path.head == name {
        let v = Val::Str(id.clone());
        return if path.rest.is_empty() { v } else { path.walk(v) };
    }
    if path.head != "metadata" {
        return Val::Null;
    }
    match path.rest.as_slice() {
        [Seg::Key(g), Seg::Key(f), more @ ..] => {
            let v = meta.field(id, g, f);
            if more.is_empty() { v } else { Path { head: String::new(), col: Col::Other, rest: more.to_vec() }.walk(v) }
        }
        _ => path.walk(meta.build(id)),
    }
}

fn ev_col(ctx: &Ctx, kind: EventKind, i: usize, col: Col, name: &str) -> Val {
    let s = ctx.store;
    let t = s.table_for(kind, ctx.period == Period::Day);
    if i >= t.len() {
        return Val::Null;
    }
    // Each column read only when asked for: a filter on the item reads no account (which costs
    // a look-up by visitor) on each of millions of rows.
    let visitor = || s.visitors.get(t.visitor(i) as usize);
    if let Some(v) = item_col(s, kind, t.item(i), col) {
        return v;
    }
    match col {
        Col::VisitorId => visitor().map_or(Val::Null, |x| Val::Str(x.id.clone())),
        Col::AccountId => s.accounts.get(t.account(i) as usize).map_or(Val::Null, |x| Val::Str(x.id.clone())),
        Col::Day if ctx.period == Period::Day => Val::Int(ctx.day_of(t.ts(i))),
        Col::Hour if ctx.period == Period::Hour => Val::Int(t.ts(i)),
        Col::NumEvents => Val::Int(i64::from(t.events(i))),
        Col::NumMinutes => Val::Int(i64::from(t.minutes(i))),
        Col::Properties if kind == EventKind::Track => Val::obj(Obj::new()),
        Col::RemoteIp => visitor().map_or(Val::Null, |x| x.net.remote_ip()),
        Col::Server => visitor().map_or(Val::Null, |x| Val::Str(x.net.server())),
        Col::UserAgent => visitor().map_or(Val::Null, |x| Val::Str(x.net.user_agent())),
        Col::LastTime => Val::Int(t.last_time(i)),
        _ => {
            let _ = name;
            Val::Null
        }
    }
}

/// The columns of an event row that its item alone decides (`None` for the others): a filter
/// reading only these is decided once per item (see `ops::RowFilter`).
pub fn item_col(store: &Store, kind: EventKind, item: u32, col: Col) -> Option<Val> {
    let item_doc = || store.items(kind).get(item as usize);
    let id = || item_doc().map_or(Val::Null, |x| Val::Str(x.id.clone()));
    Some(match col {
        Col::AppId => item_doc().map_or(Val::Null, |x| Val::Int(x.app_id)),
        Col::PageId if kind == EventKind::Page => id(),
        Col::FeatureId if kind == EventKind::Feature => id(),
        Col::TrackTypeId if kind == EventKind::Track => id(),
        _ => return None,
    })
}

/// A guide event type as a value: shared strings, as filters read `type` on every row.
fn type_name(kind: GuideEventType) -> Val {
    static NAMES: std::sync::OnceLock<[Arc<str>; 5]> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        [
            GuideEventType::GuideSeen,
            GuideEventType::GuideAdvanced,
            GuideEventType::GuideDismissed,
            GuideEventType::GuideActivity,
            GuideEventType::PollResponse,
        ]
        .map(|k| Arc::from(k.as_str()))
    });
    let i = match kind {
        GuideEventType::GuideSeen => 0,
        GuideEventType::GuideAdvanced => 1,
        GuideEventType::GuideDismissed => 2,
        GuideEventType::GuideActivity => 3,
        GuideEventType::PollResponse => 4,
    };
    Val::Str(names[i].clone())
}

fn guide_col(ctx: &Ctx, view: GuideView, i: usize, col: Col) -> Val {
    let s = ctx.store;
    // Without its account, read only where asked for (a look-up by visitor).
    let Some(e) = s.guide_events.peek(i) else {
        return Val::Null;
    };
    let visitor = || s.visitors.get(e.visitor as usize);
    let guide = || s.guides.get(e.guide as usize);
    let account = || s.accounts.get(s.guide_events.account(i) as usize);
    match col {
        Col::VisitorId => visitor().map_or(Val::Null, |x| Val::Str(x.id.clone())),
        Col::AccountId => account().map_or(Val::Null, |x| Val::Str(x.id.clone())),
        Col::AccountIds => account().map_or(Val::arr(vec![]), |x| Val::arr(vec![Val::Str(x.id.clone())])),
        Col::AppId => guide().map_or(Val::Null, |g| Val::Int(g.app_id)),
        Col::GuideId => guide().map_or(Val::Null, |g| Val::Str(g.id.clone())),
        Col::GuideStepId => guide()
            .and_then(|g| if e.step == NONE_U32 { None } else { g.step_ids.get(e.step as usize) })
            .map_or(Val::Null, |x| Val::Str(x.clone())),
        Col::PollId => guide()
            .and_then(|g| if e.poll == NONE_U32 { None } else { g.poll_ids.get(e.poll as usize) })
            .map_or(Val::Null, |x| Val::Str(x.clone())),
        Col::PollResponse => s.responses.get(e.response).clone(),
        Col::Type => match view {
            GuideView::Guide => type_name(e.kind),
            GuideView::Poll => Val::str(e.channel.as_str()),
        },
        Col::BrowserTime | Col::GuideTimestamp => Val::Int(e.ts),
        Col::Day if ctx.period == Period::Day => Val::Int(ctx.day_of(e.ts)),
        Col::Hour if ctx.period == Period::Hour => Val::Int(e.ts.div_euclid(3_600_000).saturating_mul(3_600_000)),
        Col::Url => Val::str("https://app.emulator.example/home"),
        Col::Country => visitor().map_or(Val::Null, |x| Val::Str(x.net.country())),
        Col::Region => Val::str(""),
        Col::Latitude | Col::Longitude => Val::Float(0.0),
        Col::LoadTime => Val::Int(0),
        Col::RemoteIp => visitor().map_or(Val::Null, |x| x.net.remote_ip()),
        Col::ServerName | Col::Server => visitor().map_or(Val::Null, |x| Val::Str(x.net.server())),
        Col::UserAgent => visitor().map_or(Val::Null, |x| Val::Str(x.net.user_agent())),
        _ => Val::Null,
    }
}
