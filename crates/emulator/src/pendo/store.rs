//! The emulated subscription's data: visitors, accounts, catalogue items (features, pages, track
//! types, guides with polls, reports), segments, the metadata schema and the event tables.
//!
//! Event rollups are columnar (one `Vec` per column, sorted by time) because aggregations scan
//! millions of them; documents are `Val` trees because clients read them whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use super::val::{Obj, Val};

/// Pendo's default application id; every real sample uses it.
pub const DEFAULT_APP_ID: i64 = -323232;
/// Prefix Pendo gives anonymous visitor ids.
pub const ANONYMOUS_PREFIX: &str = "_PENDO_T_";
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn is_anonymous(id: &str) -> bool {
    id.is_empty() || id.starts_with(ANONYMOUS_PREFIX)
}

#[derive(Clone, Debug)]
pub struct Visitor {
    pub id: Arc<str>,
    /// `{auto, agent, custom, pendo, ...}`, exactly as the API returns it (see [`Meta`]).
    pub meta: Meta,
    pub remote_ip: Arc<str>,
    pub user_agent: Arc<str>,
    pub server: Arc<str>,
    pub country: Arc<str>,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub id: Arc<str>,
    pub meta: Meta,
}

/// Metadata as stored. Generated entities keep a compact form (a few dozen bytes instead of
/// kilobytes of maps) and build the document when read, so a million accounts with their
/// visitors fit in memory; the first write turns it into the full document.
#[derive(Clone, Debug)]
pub struct Meta {
    full: Option<Val>,
    compact: Compact,
}

#[derive(Clone, Debug)]
pub enum Compact {
    None,
    Visitor(Box<CompactVisitor>),
    Account(Box<CompactAccount>),
}

#[derive(Clone, Debug)]
pub struct CompactVisitor {
    pub account: Arc<str>,
    pub email: Box<str>,
    pub full_name: Box<str>,
    pub role: &'static str,
    pub department: &'static str,
    pub anonymous: bool,
    pub first: i64,
    pub last: i64,
    pub idhash: i64,
}

#[derive(Clone, Debug)]
pub struct CompactAccount {
    pub name: Box<str>,
    pub website: Box<str>,
    pub sfdc_id: Option<Box<str>>,
    /// The parent Pendo account's id (`custom.parentaccountid`).
    pub parent: Option<Box<str>>,
    pub plan: &'static str,
    pub arr: f64,
    pub trial: bool,
    pub renewal: i64,
    pub first: i64,
    pub last: i64,
    pub lastupdated: i64,
    pub idhash: i64,
}

fn group(pairs: Vec<(&str, Val)>) -> Val {
    Val::obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl Meta {
    pub fn full(v: Val) -> Self {
        Meta { full: Some(v), compact: Compact::None }
    }

    pub fn compact(c: Compact) -> Self {
        Meta { full: None, compact: c }
    }

    /// The metadata document of entity `id`.
    pub fn build(&self, id: &str) -> Val {
        if let Some(v) = &self.full {
            return v.clone();
        }
        self.compact.build(id)
    }

    /// `build(id)` walked down `group.field`, without building the rest of the document.
    pub fn field(&self, id: &str, group: &str, field: &str) -> Val {
        match &self.full {
            Some(v) => v.field(group).field(field).clone(),
            None => self.compact.field(id, group, field),
        }
    }

    /// The full document, converting a compact form first.
    pub fn full_mut(&mut self, id: &str) -> &mut Val {
        if self.full.is_none() {
            self.full = Some(self.compact.build(id));
            self.compact = Compact::None;
        }
        self.full.get_or_insert_with(|| Val::obj(Obj::new()))
    }
}

impl Compact {
    /// One field of [`Compact::build`]'s document; `Null` where the document has none.
    fn field(&self, id: &str, group: &str, field: &str) -> Val {
        match self {
            Compact::None => Val::Null,
            Compact::Visitor(c) => match (group, field) {
                ("auto", "id") => Val::str(id),
                ("auto", "accountid") => Val::Str(c.account.clone()),
                ("auto", "accountids") => Val::arr(vec![Val::Str(c.account.clone())]),
                ("auto", "firstvisit") => Val::Int(c.first),
                ("auto", "lastvisit") => Val::Int(c.last),
                ("auto", "lastupdated") => Val::Int(c.last + 1_000),
                ("auto", "idhash") => Val::Int(c.idhash),
                ("agent", "email") if !c.anonymous => Val::str(&c.email),
                ("agent", "full_name") if !c.anonymous => Val::str(&c.full_name),
                ("agent", "role") if !c.anonymous => Val::str(c.role),
                ("custom", "department") if !c.anonymous => Val::str(c.department),
                ("pendo", "donotprocess") => Val::Bool(false),
                _ => Val::Null,
            },
            Compact::Account(c) => match (group, field) {
                ("auto", "id") => Val::str(id),
                ("auto", "firstvisit") => Val::Int(c.first),
                ("auto", "lastvisit") => Val::Int(c.last),
                ("auto", "lastupdated") => Val::Int(c.lastupdated),
                ("auto", "idhash") => Val::Int(c.idhash),
                ("agent", "name") => Val::str(&c.name),
                ("agent", "website") => Val::str(&c.website),
                ("custom", "sfdcaccountid") => c.sfdc_id.as_deref().map_or(Val::Null, Val::str),
                ("custom", "parentaccountid") => c.parent.as_deref().map_or(Val::Null, Val::str),
                ("custom", "plan") => Val::str(c.plan),
                ("custom", "arr") => Val::Float(c.arr),
                ("custom", "trial") => Val::Bool(c.trial),
                ("custom", "renewaldate") => Val::Int(c.renewal),
                _ => Val::Null,
            },
        }
    }

    fn build(&self, id: &str) -> Val {
        match self {
            Compact::None => Val::obj(Obj::new()),
            Compact::Visitor(c) => {
                let auto = group(vec![
                    ("id", Val::str(id)),
                    ("accountid", Val::Str(c.account.clone())),
                    ("accountids", Val::arr(vec![Val::Str(c.account.clone())])),
                    ("firstvisit", Val::Int(c.first)),
                    ("lastvisit", Val::Int(c.last)),
                    ("lastupdated", Val::Int(c.last + 1_000)),
                    ("idhash", Val::Int(c.idhash)),
                ]);
                let (agent, custom) = if c.anonymous {
                    (group(vec![]), group(vec![]))
                } else {
                    (
                        group(vec![
                            ("email", Val::str(&c.email)),
                            ("full_name", Val::str(&c.full_name)),
                            ("role", Val::str(c.role)),
                        ]),
                        group(vec![("department", Val::str(c.department))]),
                    )
                };
                group(vec![
                    ("auto", auto),
                    ("agent", agent),
                    ("custom", custom),
                    ("pendo", group(vec![("donotprocess", Val::Bool(false))])),
                ])
            }
            Compact::Account(c) => {
                let auto = group(vec![
                    ("id", Val::str(id)),
                    ("firstvisit", Val::Int(c.first)),
                    ("lastvisit", Val::Int(c.last)),
                    ("lastupdated", Val::Int(c.lastupdated)),
                    ("idhash", Val::Int(c.idhash)),
                ]);
                let agent = group(vec![("name", Val::str(&c.name)), ("website", Val::str(&c.website))]);
                let mut custom = Vec::with_capacity(6);
                if let Some(s) = &c.sfdc_id {
                    custom.push(("sfdcaccountid", Val::str(s)));
                }
                if let Some(s) = &c.parent {
                    custom.push(("parentaccountid", Val::str(s)));
                }
                custom.push(("plan", Val::str(c.plan)));
                custom.push(("arr", Val::Float(c.arr)));
                custom.push(("trial", Val::Bool(c.trial)));
                custom.push(("renewaldate", Val::Int(c.renewal)));
                group(vec![("auto", auto), ("agent", agent), ("custom", group(custom))])
            }
        }
    }
}

impl Visitor {
    pub fn metadata(&self) -> Val {
        self.meta.build(&self.id)
    }
    pub fn metadata_mut(&mut self) -> &mut Val {
        let id = self.id.clone();
        self.meta.full_mut(&id)
    }
}

impl Account {
    pub fn metadata(&self) -> Val {
        self.meta.build(&self.id)
    }
    pub fn metadata_mut(&mut self) -> &mut Val {
        let id = self.id.clone();
        self.meta.full_mut(&id)
    }
}

/// A feature, page, track type or report: the full JSON document plus what queries index on.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: Arc<str>,
    pub app_id: i64,
    pub doc: Val,
}

#[derive(Clone, Debug)]
pub struct Guide {
    pub id: Arc<str>,
    pub app_id: i64,
    pub doc: Val,
    pub step_ids: Vec<Arc<str>>,
    pub poll_ids: Vec<Arc<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Page,
    Feature,
    Track,
}

/// One rollup table: a row is "visitor V of account A did `events` events over `minutes`
/// minutes on item I within the hour starting at `ts`". Sorted by `ts`.
#[derive(Clone, Debug, Default)]
pub struct EventTable {
    pub ts: Vec<i64>,
    pub visitor: Vec<u32>,
    pub account: Vec<u32>,
    pub item: Vec<u32>,
    pub events: Vec<u32>,
    pub minutes: Vec<u32>,
    /// Daily rollups only: the end of the last active minute of the day (a row's `lastTime`);
    /// empty in hourly tables, whose rows end `minutes` after `ts`.
    pub last: Vec<i64>,
}

impl EventTable {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn push(&mut self, ts: i64, visitor: u32, account: u32, item: u32, events: u32, minutes: u32) {
        self.ts.push(ts);
        self.visitor.push(visitor);
        self.account.push(account);
        self.item.push(item);
        self.events.push(events);
        self.minutes.push(minutes);
    }

    /// Rows with `from <= ts < to`, found by binary search on the sorted time column.
    pub fn range(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let lo = self.ts.partition_point(|&t| t < from);
        let hi = self.ts.partition_point(|&t| t < to);
        lo..hi.max(lo)
    }

    /// Restores time order after out-of-order appends (seeding, fired webhooks).
    pub fn sort(&mut self) {
        if self.ts.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by_key(|&i| self.ts[i]);
        fn permute<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i]).collect()
        }
        self.ts = permute(&self.ts, &idx);
        self.visitor = permute(&self.visitor, &idx);
        self.account = permute(&self.account, &idx);
        self.item = permute(&self.item, &idx);
        self.events = permute(&self.events, &idx);
        self.minutes = permute(&self.minutes, &idx);
    }

    pub fn bytes(&self) -> usize {
        self.len() * (8 + 4 * 5) + self.last.len() * 8
    }

    /// The end of row `i`'s last active minute.
    pub fn last_time(&self, i: usize) -> i64 {
        match self.last.get(i) {
            Some(&t) => t,
            None => self.ts[i].saturating_add(i64::from(self.minutes[i].min(59)) * 60_000),
        }
    }

    /// One row per day × visitor × account × item (the keys Pendo sums events and minutes by;
    /// every other column of an event row is the visitor's), each at its day's start in the
    /// timezone `tz_ms`. `None` when the rows already are one per such key, so the caller can
    /// serve days from this table as it is (the generator makes one active hour a day).
    pub fn daily(&self, tz_ms: i64) -> Option<EventTable> {
        let day = |ts: i64| ts.saturating_add(tz_ms).div_euclid(DAY_MS);
        let key = |i: usize| {
            (u128::from(self.visitor[i]) << 64) | (u128::from(self.account[i]) << 32) | u128::from(self.item[i])
        };
        // Rows are sorted by time, so each day is one run; a sorted run shows repeats as neighbours.
        let mut keys: Vec<u128> = Vec::new();
        let mut repeated = false;
        let mut i = 0;
        while i < self.len() && !repeated {
            let d = day(self.ts[i]);
            let mut j = i;
            keys.clear();
            while j < self.len() && day(self.ts[j]) == d {
                keys.push(key(j));
                j += 1;
            }
            keys.sort_unstable();
            repeated = keys.windows(2).any(|w| w[0] == w[1]);
            i = j;
        }
        if !repeated {
            return None;
        }
        let mut out = EventTable::default();
        let mut at: HashMap<u128, usize> = HashMap::new();
        let mut i = 0;
        while i < self.len() {
            let d = day(self.ts[i]);
            let start = d.saturating_mul(DAY_MS).saturating_sub(tz_ms);
            at.clear();
            while i < self.len() && day(self.ts[i]) == d {
                let last = self.last_time(i);
                match at.get(&key(i)) {
                    Some(&k) => {
                        out.events[k] = out.events[k].saturating_add(self.events[i]);
                        out.minutes[k] = out.minutes[k].saturating_add(self.minutes[i]);
                        out.last[k] = out.last[k].max(last);
                    }
                    None => {
                        at.insert(key(i), out.len());
                        out.push(
                            start,
                            self.visitor[i],
                            self.account[i],
                            self.item[i],
                            self.events[i],
                            self.minutes[i],
                        );
                        out.last.push(last);
                    }
                }
                i += 1;
            }
        }
        Some(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuideEventType {
    GuideSeen,
    GuideAdvanced,
    GuideDismissed,
    GuideActivity,
    PollResponse,
}

impl GuideEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            GuideEventType::GuideSeen => "guideSeen",
            GuideEventType::GuideAdvanced => "guideAdvanced",
            GuideEventType::GuideDismissed => "guideDismissed",
            GuideEventType::GuideActivity => "guideActivity",
            GuideEventType::PollResponse => "pollResponse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "guideSeen" => GuideEventType::GuideSeen,
            "guideAdvanced" => GuideEventType::GuideAdvanced,
            "guideDismissed" => GuideEventType::GuideDismissed,
            "guideActivity" => GuideEventType::GuideActivity,
            "pollResponse" => GuideEventType::PollResponse,
            _ => return None,
        })
    }
}

pub const NONE_U32: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct GuideEvent {
    pub ts: i64,
    pub visitor: u32,
    pub account: u32,
    pub guide: u32,
    /// Index into the guide's `step_ids`, or `NONE_U32`.
    pub step: u32,
    pub kind: GuideEventType,
    /// Index into the guide's `poll_ids`, or `NONE_U32`.
    pub poll: u32,
    pub response: Val,
    /// Channel the answer came through (`web`/`email`); Pendo's poll rows call it `type`.
    pub channel: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Segment {
    pub id: String,
    pub name: String,
    pub visitors: std::collections::HashSet<String>,
}

/// Field descriptors of one metadata kind: group → field → descriptor object.
pub type SchemaGroups = BTreeMap<String, BTreeMap<String, Val>>;

#[derive(Clone, Debug, Default)]
pub struct Store {
    pub apps: Vec<(i64, String)>,
    pub visitors: Vec<Visitor>,
    pub visitor_index: HashMap<Arc<str>, u32>,
    pub accounts: Vec<Account>,
    pub account_index: HashMap<Arc<str>, u32>,
    pub features: Vec<Item>,
    pub pages: Vec<Item>,
    pub track_types: Vec<Item>,
    pub reports: Vec<Item>,
    pub guides: Vec<Guide>,
    pub page_rows: EventTable,
    pub feature_rows: EventTable,
    pub track_rows: EventTable,
    /// The rollups above summed by day in `day_tz_ms` (see [`EventTable::daily`]): what
    /// `dayRange` sources read. `None` where the hourly table already has one row per day and
    /// key. Built by the first query that reads days, so generating or seeding costs nothing
    /// more; [`Store::sort_events`], which every change of events ends with, drops them.
    pub page_days: OnceLock<Option<EventTable>>,
    pub feature_days: OnceLock<Option<EventTable>>,
    pub track_days: OnceLock<Option<EventTable>>,
    /// The subscription's timezone offset that days are cut in.
    pub day_tz_ms: i64,
    /// Guide and poll events, sorted by `ts`.
    pub guide_events: Vec<GuideEvent>,
    pub segments: HashMap<String, Segment>,
    pub visitor_schema: SchemaGroups,
    pub account_schema: SchemaGroups,
}

impl Store {
    pub fn table(&self, kind: EventKind) -> &EventTable {
        match kind {
            EventKind::Page => &self.page_rows,
            EventKind::Feature => &self.feature_rows,
            EventKind::Track => &self.track_rows,
        }
    }

    /// The table a source of `kind` reads: daily rows for `dayRange`, hourly for `hourRange`.
    pub fn table_for(&self, kind: EventKind, daily: bool) -> &EventTable {
        if !daily {
            return self.table(kind);
        }
        let days = match kind {
            EventKind::Page => &self.page_days,
            EventKind::Feature => &self.feature_days,
            EventKind::Track => &self.track_days,
        };
        match days.get_or_init(|| self.table(kind).daily(self.day_tz_ms)) {
            Some(t) => t,
            None => self.table(kind),
        }
    }

    /// Cuts days in another timezone (the subscription's changed).
    pub fn set_day_timezone(&mut self, tz_ms: i64) {
        if tz_ms != self.day_tz_ms {
            self.day_tz_ms = tz_ms;
            self.rebuild_days();
        }
    }

    /// Drops the daily tables; the next query that reads days builds them again.
    fn rebuild_days(&mut self) {
        self.page_days = OnceLock::new();
        self.feature_days = OnceLock::new();
        self.track_days = OnceLock::new();
    }

    pub fn items(&self, kind: EventKind) -> &[Item] {
        match kind {
            EventKind::Page => &self.pages,
            EventKind::Feature => &self.features,
            EventKind::Track => &self.track_types,
        }
    }

    pub fn item_index(&self, kind: EventKind, id: &str) -> Option<u32> {
        self.items(kind).iter().position(|i| &*i.id == id).map(|p| p as u32)
    }

    pub fn guide_index(&self, id: &str) -> Option<u32> {
        self.guides.iter().position(|g| &*g.id == id).map(|p| p as u32)
    }

    pub fn visitor(&self, id: &str) -> Option<&Visitor> {
        self.visitor_index.get(id).and_then(|&i| self.visitors.get(i as usize))
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.account_index.get(id).and_then(|&i| self.accounts.get(i as usize))
    }

    /// Adds a visitor, or returns the existing index.
    pub fn upsert_visitor(&mut self, v: Visitor) -> u32 {
        if let Some(&i) = self.visitor_index.get(&v.id) {
            self.visitors[i as usize] = v;
            return i;
        }
        let i = self.visitors.len() as u32;
        self.visitor_index.insert(v.id.clone(), i);
        self.visitors.push(v);
        i
    }

    pub fn upsert_account(&mut self, a: Account) -> u32 {
        if let Some(&i) = self.account_index.get(&a.id) {
            self.accounts[i as usize] = a;
            return i;
        }
        let i = self.accounts.len() as u32;
        self.account_index.insert(a.id.clone(), i);
        self.accounts.push(a);
        i
    }

    pub fn sort_events(&mut self) {
        self.page_rows.sort();
        self.feature_rows.sort();
        self.track_rows.sort();
        if !self.guide_events.windows(2).all(|w| w[0].ts <= w[1].ts) {
            self.guide_events.sort_by_key(|e| e.ts);
        }
        self.rebuild_days();
    }

    pub fn schema(&self, kind: MetaKind) -> &SchemaGroups {
        match kind {
            MetaKind::Visitor => &self.visitor_schema,
            MetaKind::Account => &self.account_schema,
        }
    }

    pub fn schema_mut(&mut self, kind: MetaKind) -> &mut SchemaGroups {
        match kind {
            MetaKind::Visitor => &mut self.visitor_schema,
            MetaKind::Account => &mut self.account_schema,
        }
    }

    pub fn event_row_count(&self) -> usize {
        self.page_rows.len() + self.feature_rows.len() + self.track_rows.len()
    }

    pub fn approx_bytes(&self) -> usize {
        [&self.page_days, &self.feature_days, &self.track_days]
            .iter()
            .filter_map(|t| t.get().and_then(Option::as_ref))
            .map(EventTable::bytes)
            .sum::<usize>()
            + self.page_rows.bytes()
            + self.feature_rows.bytes()
            + self.track_rows.bytes()
            + self.guide_events.len() * std::mem::size_of::<GuideEvent>()
            + self.visitors.len() * 260
            + self.accounts.len() * 220
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    Visitor,
    Account,
}

impl MetaKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "visitor" => Some(MetaKind::Visitor),
            "account" => Some(MetaKind::Account),
            _ => None,
        }
    }
}

/// A metadata field descriptor in the wire shape tap-pendo and Airbyte read (PascalCase and
/// camelCase keys mixed, as the real schema endpoint returns them).
pub fn field_descriptor(ty: &str, display: &str) -> Val {
    let mut o = Obj::new();
    o.insert("Type".into(), Val::str(ty));
    o.insert("DisplayName".into(), Val::str(display));
    o.insert("ElementType".into(), Val::str(""));
    o.insert("ElementFormat".into(), Val::str(""));
    o.insert("Dirty".into(), Val::Bool(false));
    o.insert("isHidden".into(), Val::Bool(false));
    o.insert("isDeleted".into(), Val::Bool(false));
    o.insert("isCalculated".into(), Val::Bool(false));
    o.insert("isPerApp".into(), Val::Bool(false));
    o.insert("isPromoted".into(), Val::Bool(false));
    o.insert("neverIndex".into(), Val::Bool(false));
    Val::obj(o)
}

/// The `auto`/`agent`/`pendo` groups every subscription has, plus `custom` fields given.
pub fn base_schema(kind: MetaKind, custom: &[(&str, &str, &str)]) -> SchemaGroups {
    let mut g = SchemaGroups::new();
    let auto: &[(&str, &str, &str)] = match kind {
        MetaKind::Visitor => &[
            ("id", "string", "Visitor ID"),
            ("accountid", "string", "Account ID"),
            ("firstvisit", "time", "First Visit"),
            ("lastvisit", "time", "Last Visit"),
            ("lastupdated", "time", "Last Updated"),
        ],
        MetaKind::Account => &[
            ("id", "string", "Account ID"),
            ("firstvisit", "time", "First Visit"),
            ("lastvisit", "time", "Last Visit"),
            ("lastupdated", "time", "Last Updated"),
        ],
    };
    let agent: &[(&str, &str, &str)] = match kind {
        MetaKind::Visitor => {
            &[("email", "string", "Email"), ("full_name", "string", "Full Name"), ("role", "string", "Role")]
        }
        MetaKind::Account => &[("name", "string", "Name"), ("website", "string", "Website")],
    };
    for (group, fields) in [("auto", auto), ("agent", agent), ("custom", custom)] {
        let m = g.entry(group.to_string()).or_default();
        for (name, ty, display) in fields {
            m.insert((*name).to_string(), field_descriptor(ty, display));
        }
    }
    let pendo = g.entry("pendo".into()).or_default();
    pendo.insert("donotprocess".into(), field_descriptor("boolean", "Do Not Process"));
    g
}
