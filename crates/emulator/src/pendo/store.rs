//! The emulated subscription's data: visitors, accounts, catalogue items (features, pages, track
//! types, guides with polls, reports), segments, the metadata schema and the event tables.
//!
//! Event rollups are columnar (one `Vec` per column, sorted by time) because aggregations scan
//! millions of them; documents are `Val` trees because clients read them whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use super::generate::{DEPARTMENTS, FIRST, FREE_MAIL, LAST, ROLES, splitmix};
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
    /// Where the visitor's events come from: remote IP, user agent, server, country.
    pub net: Net,
}

/// A visitor's network details. Generated visitors keep four bytes (their IP's last two
/// octets, the index of a shared user agent and country) rather than four strings.
#[derive(Clone, Debug)]
pub enum Net {
    /// `203.0.{ip[0]}.{ip[1]}`, [`USER_AGENTS`]`[agent]`, [`COUNTRIES`]`[country]`, [`SERVER`].
    Generated {
        ip: [u8; 2],
        agent: u8,
        country: u8,
    },
    Given(Box<GivenNet>),
}

#[derive(Clone, Debug)]
pub struct GivenNet {
    pub remote_ip: Arc<str>,
    pub user_agent: Arc<str>,
    pub server: Arc<str>,
    pub country: Arc<str>,
}

pub const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
];
pub const COUNTRIES: [&str; 5] = ["US", "GB", "DE", "FR", "CA"];
pub const SERVER: &str = "app.emulator.example";

/// The generated visitors' shared strings, allocated once so that reading them clones an `Arc`.
struct SharedNet {
    user_agents: Vec<Arc<str>>,
    countries: Vec<Arc<str>>,
    server: Arc<str>,
}

fn shared_net() -> &'static SharedNet {
    static SHARED: OnceLock<SharedNet> = OnceLock::new();
    SHARED.get_or_init(|| SharedNet {
        user_agents: USER_AGENTS.iter().map(|s| Arc::from(*s)).collect(),
        countries: COUNTRIES.iter().map(|s| Arc::from(*s)).collect(),
        server: Arc::from(SERVER),
    })
}

impl Net {
    pub fn remote_ip(&self) -> Val {
        match self {
            Net::Generated { ip, .. } => Val::from(format!("203.0.{}.{}", ip[0], ip[1])),
            Net::Given(g) => Val::Str(g.remote_ip.clone()),
        }
    }

    pub fn user_agent(&self) -> Arc<str> {
        match self {
            Net::Generated { agent, .. } => {
                let s = shared_net();
                s.user_agents.get(usize::from(*agent)).unwrap_or(&s.server).clone()
            }
            Net::Given(g) => g.user_agent.clone(),
        }
    }

    pub fn server(&self) -> Arc<str> {
        match self {
            Net::Generated { .. } => shared_net().server.clone(),
            Net::Given(g) => g.server.clone(),
        }
    }

    pub fn country(&self) -> Arc<str> {
        match self {
            Net::Generated { country, .. } => {
                let s = shared_net();
                s.countries.get(usize::from(*country)).unwrap_or(&s.server).clone()
            }
            Net::Given(g) => g.country.clone(),
        }
    }
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
pub enum Meta {
    Full(Val),
    Compact(Compact),
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
    pub email: Email,
    /// Indexes into the generator's word lists ([`FIRST`], [`LAST`], [`ROLES`],
    /// [`DEPARTMENTS`]); unused for anonymous visitors, whose document has no such fields.
    pub first_name: u8,
    pub last_name: u8,
    pub role: u8,
    pub department: u8,
    pub anonymous: bool,
    pub first: i64,
    pub last: i64,
}

/// A generated visitor's e-mail: `first.last{number}@` the account's domain or a free-mail
/// one, kept as its parts (the domain shared by the account's visitors) rather than as text.
#[derive(Clone, Debug)]
pub enum Email {
    /// `mail` 0 is `domain`, `k` is [`FREE_MAIL`]`[k - 1]`.
    Parts {
        number: u16,
        mail: u8,
        domain: Arc<str>,
    },
    Text(Box<str>),
}

impl CompactVisitor {
    fn email(&self) -> String {
        match &self.email {
            Email::Text(t) => t.to_string(),
            Email::Parts { number, mail, domain } => {
                let word = |list: &[&'static str], i: u8| list.get(usize::from(i)).copied().unwrap_or("");
                let domain = match mail.checked_sub(1) {
                    None => domain,
                    Some(k) => word(FREE_MAIL, k),
                };
                format!(
                    "{}.{}{number}@{domain}",
                    word(FIRST, self.first_name).to_ascii_lowercase(),
                    word(LAST, self.last_name).to_ascii_lowercase()
                )
            }
        }
    }

    fn full_name(&self) -> String {
        let word = |list: &[&'static str], i: u8| list.get(usize::from(i)).copied().unwrap_or("");
        format!("{} {}", word(FIRST, self.first_name), word(LAST, self.last_name))
    }

    fn role(&self) -> &'static str {
        ROLES.get(usize::from(self.role)).copied().unwrap_or("")
    }

    fn department(&self) -> &'static str {
        DEPARTMENTS.get(usize::from(self.department)).copied().unwrap_or("")
    }

    /// Derived from the id and the first visit, as the generator has always made it.
    fn idhash(&self, id: &str) -> i64 {
        (splitmix(id.len() as u64 ^ self.first as u64) % 4_294_967_296) as i64
    }
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
        Meta::Full(v)
    }

    pub fn compact(c: Compact) -> Self {
        Meta::Compact(c)
    }

    /// The metadata document of entity `id`.
    pub fn build(&self, id: &str) -> Val {
        match self {
            Meta::Full(v) => v.clone(),
            Meta::Compact(c) => c.build(id),
        }
    }

    /// `build(id)` walked down `group.field`, without building the rest of the document.
    pub fn field(&self, id: &str, group: &str, field: &str) -> Val {
        match self {
            Meta::Full(v) => v.field(group).field(field).clone(),
            Meta::Compact(c) => c.field(id, group, field),
        }
    }

    /// The full document, converting a compact form first.
    pub fn full_mut(&mut self, id: &str) -> &mut Val {
        if let Meta::Compact(c) = self {
            *self = Meta::Full(c.build(id));
        }
        match self {
            Meta::Full(v) => v,
            // Not reached: the compact form was just replaced.
            Meta::Compact(_) => {
                *self = Meta::Full(Val::obj(Obj::new()));
                self.full_mut(id)
            }
        }
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
                ("auto", "idhash") => Val::Int(c.idhash(id)),
                ("agent", "email") if !c.anonymous => Val::from(c.email()),
                ("agent", "full_name") if !c.anonymous => Val::from(c.full_name()),
                ("agent", "role") if !c.anonymous => Val::str(c.role()),
                ("custom", "department") if !c.anonymous => Val::str(c.department()),
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
                    ("idhash", Val::Int(c.idhash(id))),
                ]);
                let (agent, custom) = if c.anonymous {
                    (group(vec![]), group(vec![]))
                } else {
                    (
                        group(vec![
                            ("email", Val::from(c.email())),
                            ("full_name", Val::from(c.full_name())),
                            ("role", Val::str(c.role())),
                        ]),
                        group(vec![("department", Val::str(c.department()))]),
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

/// A column of unsigned integers held in the narrowest width that fits every value so far: a
/// value that does not fit widens the column (one copy), so what is read back is always what
/// was pushed. Event counts, minutes, items and hours fit in one or two bytes; ids need four.
#[derive(Clone, Debug)]
pub enum UCol {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Default for UCol {
    fn default() -> Self {
        UCol::U8(Vec::new())
    }
}

impl UCol {
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            UCol::U8(v) => u32::from(v[i]),
            UCol::U16(v) => u32::from(v[i]),
            UCol::U32(v) => v[i],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            UCol::U8(v) => v.len(),
            UCol::U16(v) => v.len(),
            UCol::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, x: u32) {
        match self {
            UCol::U8(v) => match u8::try_from(x) {
                Ok(b) => v.push(b),
                Err(_) => {
                    *self = if x <= u32::from(u16::MAX) {
                        UCol::U16(v.iter().map(|&b| u16::from(b)).collect())
                    } else {
                        UCol::U32(v.iter().map(|&b| u32::from(b)).collect())
                    };
                    self.push(x);
                }
            },
            UCol::U16(v) => match u16::try_from(x) {
                Ok(w) => v.push(w),
                Err(_) => {
                    *self = UCol::U32(v.iter().map(|&w| u32::from(w)).collect());
                    self.push(x);
                }
            },
            UCol::U32(v) => v.push(x),
        }
    }

    /// Puts the column in the row order `order` (see [`permute`]).
    fn permute(&mut self, order: &[u32]) {
        match self {
            UCol::U8(v) => permute(v, order),
            UCol::U16(v) => permute(v, order),
            UCol::U32(v) => permute(v, order),
        }
    }

    /// Replaces every value `x` by `f(x)`, which must fit the column's width (it is `f`'s
    /// caller's promise: a rank among as many values as the column already holds).
    fn map_narrowing(&mut self, f: impl Fn(u32) -> u32) {
        match self {
            UCol::U8(v) => v.iter_mut().for_each(|x| *x = u8::try_from(f(u32::from(*x))).unwrap_or(u8::MAX)),
            UCol::U16(v) => v.iter_mut().for_each(|x| *x = u16::try_from(f(u32::from(*x))).unwrap_or(u16::MAX)),
            UCol::U32(v) => v.iter_mut().for_each(|x| *x = f(*x)),
        }
    }

    fn width(&self) -> usize {
        match self {
            UCol::U8(_) => 1,
            UCol::U16(_) => 2,
            UCol::U32(_) => 4,
        }
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            UCol::U8(v) => v.truncate(len),
            UCol::U16(v) => v.truncate(len),
            UCol::U32(v) => v.truncate(len),
        }
    }

    pub fn to_vec(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Puts `v` in the order `order` (row `k` becomes the old row `order[k]`). Into a new vector,
/// one column at a time: reading in order's sequence and writing in turn is several times
/// faster on a hundred million rows than following the permutation's cycles in place.
fn permute<T: Copy>(v: &mut Vec<T>, order: &[u32]) {
    *v = order.iter().map(|&i| v[i as usize]).collect();
}

/// Rows' visitors and accounts. A row's account is nearly always its visitor's, so it is kept
/// as the difference from the visitor's base account (zigzag-coded: a byte holds ±127).
#[derive(Clone, Debug, Default)]
struct Who {
    visitor: UCol,
    account: UCol,
    /// Per visitor: the account of the first row pushed for it. A base, once set, never
    /// changes, so every row's account reads back as it was pushed.
    visitor_account: Vec<u32>,
}

impl Who {
    #[inline]
    fn visitor(&self, i: usize) -> u32 {
        self.visitor.get(i)
    }

    #[inline]
    fn account(&self, i: usize) -> u32 {
        let base = self.visitor_account.get(self.visitor.get(i) as usize).copied().unwrap_or(0);
        let z = self.account.get(i);
        let d = ((z >> 1) as i32) ^ -((z & 1) as i32);
        base.wrapping_add(d as u32)
    }

    fn push(&mut self, visitor: u32, account: u32) {
        let base = self.base(visitor, account);
        let d = account.wrapping_sub(base) as i32;
        self.visitor.push(visitor);
        self.account.push(((d << 1) ^ (d >> 31)) as u32);
    }

    /// The base account of `visitor`, set from `account` if it has none yet. Visitors far past
    /// the last one seen (an unattributed row's `NONE_U32`) get none.
    fn base(&mut self, visitor: u32, account: u32) -> u32 {
        let v = visitor as usize;
        if let Some(&base) = self.visitor_account.get(v) {
            return base;
        }
        if v - self.visitor_account.len() < 1 << 16 {
            // Visitors without rows in between take the same base: their rows, if any come,
            // are most likely of this account or a neighbour.
            self.visitor_account.resize(v + 1, account);
            return account;
        }
        0
    }

    fn permute(&mut self, order: &[u32]) {
        self.visitor.permute(order);
        self.account.permute(order);
    }

    fn truncate(&mut self, len: usize) {
        self.visitor.truncate(len);
        self.account.truncate(len);
    }

    fn bytes(&self) -> usize {
        self.visitor.len() * (self.visitor.width() + self.account.width()) + self.visitor_account.len() * 4
    }
}

/// One rollup table: a row is "visitor V of account A did `events` events over `minutes`
/// minutes on item I within the hour starting at `ts`". Sorted by `ts`.
///
/// Columnar and narrow, because a million accounts make well over a hundred million rows:
/// a row's time is an index into the table's distinct times (a few hundred hours), the small
/// numbers are [`UCol`]s of a byte or two, and the account is told relative to the visitor's;
/// a row costs 10 bytes instead of 28.
#[derive(Clone, Debug, Default)]
pub struct EventTable {
    /// The distinct times rows have; ascending once [`EventTable::sort`] has run.
    times: Vec<i64>,
    time_index: HashMap<i64, u32>,
    /// Per row: its time's index in `times`.
    time: UCol,
    who: Who,
    item: UCol,
    events: UCol,
    minutes: UCol,
}

impl EventTable {
    pub fn len(&self) -> usize {
        self.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// The start of row `i`'s hour.
    #[inline]
    pub fn ts(&self, i: usize) -> i64 {
        self.times[self.time.get(i) as usize]
    }

    #[inline]
    pub fn visitor(&self, i: usize) -> u32 {
        self.who.visitor(i)
    }

    #[inline]
    pub fn account(&self, i: usize) -> u32 {
        self.who.account(i)
    }

    #[inline]
    pub fn item(&self, i: usize) -> u32 {
        self.item.get(i)
    }

    #[inline]
    pub fn events(&self, i: usize) -> u32 {
        self.events.get(i)
    }

    #[inline]
    pub fn minutes(&self, i: usize) -> u32 {
        self.minutes.get(i)
    }

    /// Every row's time, in row order.
    pub fn ts_column(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.ts(i)).collect()
    }

    pub fn push(&mut self, ts: i64, visitor: u32, account: u32, item: u32, events: u32, minutes: u32) {
        // Rows come in runs of one hour (a visitor's pages and features of a day); the previous
        // row's time saves the lookup.
        let previous = self.len().checked_sub(1).map(|i| self.time.get(i));
        let t = match previous.filter(|&t| self.times[t as usize] == ts).or_else(|| self.time_index.get(&ts).copied()) {
            Some(t) => t,
            None => {
                let t = u32::try_from(self.times.len()).unwrap_or(u32::MAX);
                self.times.push(ts);
                self.time_index.insert(ts, t);
                t
            }
        };
        self.time.push(t);
        self.who.push(visitor, account);
        self.item.push(item);
        self.events.push(events);
        self.minutes.push(minutes);
    }

    /// Rows with `from <= ts < to`, found by binary search on the sorted time column.
    pub fn range(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let first_at = |bound: i64| {
            let (mut lo, mut hi) = (0, self.len());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.ts(mid) < bound {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let lo = first_at(from);
        let hi = first_at(to);
        lo..hi.max(lo)
    }

    /// Restores time order after out-of-order appends (generating, seeding, fired webhooks):
    /// a stable counting sort on the time index, so rows of one time keep the order they were
    /// appended in.
    pub fn sort(&mut self) {
        let sorted_times = self.times.windows(2).all(|w| w[0] <= w[1]);
        if sorted_times && (1..self.len()).all(|i| self.time.get(i - 1) <= self.time.get(i)) {
            return;
        }
        // Rank the distinct times, then count rows per rank.
        let mut by_time: Vec<u32> = (0..self.times.len() as u32).collect();
        by_time.sort_by_key(|&t| self.times[t as usize]);
        let mut rank = vec![0u32; self.times.len()];
        for (r, &t) in by_time.iter().enumerate() {
            rank[t as usize] = r as u32;
        }
        let mut start = vec![0u32; self.times.len() + 1];
        for i in 0..self.len() {
            start[rank[self.time.get(i) as usize] as usize + 1] += 1;
        }
        for r in 1..start.len() {
            start[r] += start[r - 1];
        }
        let mut order = vec![0u32; self.len()];
        for i in 0..self.len() {
            let r = rank[self.time.get(i) as usize] as usize;
            order[start[r] as usize] = i as u32;
            start[r] += 1;
        }
        // Ranks are indexes among the same number of times, so they fit the column's width.
        self.time.map_narrowing(|t| rank[t as usize]);
        self.times = by_time.iter().map(|&t| self.times[t as usize]).collect();
        self.time_index = self.times.iter().enumerate().map(|(r, &t)| (t, r as u32)).collect();
        for col in [&mut self.time, &mut self.item, &mut self.events, &mut self.minutes] {
            col.permute(&order);
        }
        self.who.permute(&order);
    }

    /// Rows and distinct times, for [`EventTable::rewind`].
    pub fn mark(&self) -> (usize, usize) {
        (self.len(), self.times.len())
    }

    /// Drops the rows (and their new times) pushed since `mark`, as long as nothing was
    /// sorted in between.
    pub fn rewind(&mut self, (rows, times): (usize, usize)) {
        for col in [&mut self.time, &mut self.item, &mut self.events, &mut self.minutes] {
            col.truncate(rows);
        }
        self.who.truncate(rows);
        for t in self.times.drain(times.min(self.times.len())..) {
            self.time_index.remove(&t);
        }
    }

    pub fn bytes(&self) -> usize {
        let cols = [&self.time, &self.item, &self.events, &self.minutes];
        self.len() * cols.iter().map(|c| c.width()).sum::<usize>() + self.who.bytes() + self.times.len() * 24
    }

    /// The end of row `i`'s last active minute.
    pub fn last_time(&self, i: usize) -> i64 {
        self.ts(i).saturating_add(i64::from(self.minutes(i).min(59)) * 60_000)
    }

    /// Where the rows are not already one per day × visitor × account × item (the keys Pendo
    /// sums events and minutes by; every other column of an event row is the visitor's) in the
    /// timezone `tz_ms`, what makes them so: see [`Fold`]. `None` when they are (the generator
    /// makes one active hour a day), so days are read from the hourly rows as they are.
    pub fn fold(&self, tz_ms: i64) -> Option<Fold> {
        let day = |ts: i64| ts.saturating_add(tz_ms).div_euclid(DAY_MS);
        let key = |i: usize| {
            (u128::from(self.visitor(i)) << 64) | (u128::from(self.account(i)) << 32) | u128::from(self.item(i))
        };
        // Rows are sorted by time, so each day is one run; sorted by (key, row), a key's rows are
        // neighbours and its first row leads them. One day at a time: a day at a million
        // accounts is a few million rows, the table well over a hundred million.
        let mut fold: Option<Fold> = None;
        let mut keyed: Vec<(u128, u32)> = Vec::new();
        let mut i = 0;
        while i < self.len() {
            let d = day(self.ts(i));
            keyed.clear();
            while i < self.len() && day(self.ts(i)) == d {
                keyed.push((key(i), i as u32));
                i += 1;
            }
            keyed.sort_unstable();
            for run in keyed.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
                let f = fold.get_or_insert_with(|| Fold::new(self.len()));
                let head = run[0].1 as usize;
                let (mut events, mut minutes, mut last) = (self.events(head), self.minutes(head), self.last_time(head));
                for &(_, r) in &run[1..] {
                    let r = r as usize;
                    events = events.saturating_add(self.events(r));
                    minutes = minutes.saturating_add(self.minutes(r));
                    last = last.max(self.last_time(r));
                    f.folded[r / 64] |= 1 << (r % 64);
                }
                f.summed[head / 64] |= 1 << (head % 64);
                f.heads.insert(head as u32, (events, minutes, last));
            }
        }
        fold
    }
}

/// What turns an hourly table's rows into daily rollups where a day has several rows of one
/// visitor, account and item (events seeded into a generated world, webhooks fired): the later
/// rows are left out, and the first carries the sums. Kept beside the hourly rows rather than as
/// a table of its own: a copy of every row (a million accounts make well over a hundred
/// million) to merge the few that repeat.
#[derive(Clone, Debug)]
pub struct Fold {
    /// One bit per row: set where the row is summed into an earlier one of its day and key.
    folded: Vec<u64>,
    /// One bit per row: set where others are summed into the row (a bit is read on every row
    /// of a scan; the map only for these).
    summed: Vec<u64>,
    /// The rows others are summed into: events, minutes and the end of the last active minute.
    heads: HashMap<u32, (u32, u32, i64)>,
}

impl Fold {
    fn new(rows: usize) -> Fold {
        let words = rows.div_ceil(64);
        Fold { folded: vec![0; words], summed: vec![0; words], heads: HashMap::new() }
    }

    fn bytes(&self) -> usize {
        (self.folded.len() + self.summed.len()) * 8 + self.heads.len() * 32
    }
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// An event table as a source reads it: the hourly rows, or the daily rollups those rows make
/// (see [`Fold`]). A row of a day is at the start of its first hour: sources place it in its day.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    table: &'a EventTable,
    fold: Option<&'a Fold>,
}

impl<'a> Rows<'a> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether row `i` is summed into an earlier row (a source skips it).
    #[inline]
    pub fn folded(&self, i: usize) -> bool {
        self.fold.is_some_and(|f| bit(&f.folded, i))
    }

    #[inline]
    fn head(&self, i: usize) -> Option<&'a (u32, u32, i64)> {
        self.fold.filter(|f| bit(&f.summed, i)).and_then(|f| f.heads.get(&u32::try_from(i).ok()?))
    }

    #[inline]
    pub fn ts(&self, i: usize) -> i64 {
        self.table.ts(i)
    }

    #[inline]
    pub fn visitor(&self, i: usize) -> u32 {
        self.table.visitor(i)
    }

    #[inline]
    pub fn account(&self, i: usize) -> u32 {
        self.table.account(i)
    }

    #[inline]
    pub fn item(&self, i: usize) -> u32 {
        self.table.item(i)
    }

    #[inline]
    pub fn events(&self, i: usize) -> u32 {
        self.head(i).map_or_else(|| self.table.events(i), |h| h.0)
    }

    #[inline]
    pub fn minutes(&self, i: usize) -> u32 {
        self.head(i).map_or_else(|| self.table.minutes(i), |h| h.1)
    }

    pub fn last_time(&self, i: usize) -> i64 {
        self.head(i).map_or_else(|| self.table.last_time(i), |h| h.2)
    }

    pub fn range(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        self.table.range(from, to)
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

/// The channel a guide was shown and answered through; Pendo's poll rows call it `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Web,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Email => "email",
        }
    }
}

/// One guide or poll event. Kept to 40 bytes, ids as indexes and the poll answer as an index
/// into [`Responses`], because a million accounts make tens of millions of them.
#[derive(Clone, Copy, Debug)]
pub struct GuideEvent {
    pub ts: i64,
    pub visitor: u32,
    pub account: u32,
    pub guide: u32,
    /// Index into the guide's `step_ids`, or `NONE_U32`.
    pub step: u32,
    /// Index into the guide's `poll_ids`, or `NONE_U32`.
    pub poll: u32,
    /// The poll answer: an index into [`Store::responses`] (0 is `null`, no answer).
    pub response: u32,
    pub kind: GuideEventType,
    pub channel: Channel,
}

const GUIDE_EVENT_TYPES: [GuideEventType; 5] = [
    GuideEventType::GuideSeen,
    GuideEventType::GuideAdvanced,
    GuideEventType::GuideDismissed,
    GuideEventType::GuideActivity,
    GuideEventType::PollResponse,
];

/// The guide and poll events, sorted by time once [`GuideTable::sort`] has run. Columnar and
/// narrow like [`EventTable`] (18 bytes an event rather than the 40 of a [`GuideEvent`]); an
/// event is read back whole with [`GuideTable::get`].
#[derive(Clone, Debug, Default)]
pub struct GuideTable {
    ts: Vec<i64>,
    who: Who,
    guide: UCol,
    /// Step and poll indexes plus one, so that `NONE_U32` is a zero byte.
    step: UCol,
    poll: UCol,
    response: UCol,
    /// The type's index in [`GUIDE_EVENT_TYPES`] times two, plus one for e-mail.
    kind: Vec<u8>,
}

impl GuideTable {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    #[inline]
    pub fn ts(&self, i: usize) -> i64 {
        self.ts[i]
    }

    /// Event `i`; panics past the end, as indexing does.
    #[inline]
    pub fn at(&self, i: usize) -> GuideEvent {
        self.event(i, self.who.account(i))
    }

    /// Event `i` with `account` as its account; panics past the end.
    #[inline]
    fn event(&self, i: usize, account: u32) -> GuideEvent {
        GuideEvent {
            ts: self.ts[i],
            visitor: self.who.visitor(i),
            account,
            guide: self.guide.get(i),
            step: self.step.get(i).wrapping_sub(1),
            poll: self.poll.get(i).wrapping_sub(1),
            response: self.response.get(i),
            kind: self.kind(i),
            channel: if self.kind[i] & 1 == 1 { Channel::Email } else { Channel::Web },
        }
    }

    pub fn get(&self, i: usize) -> Option<GuideEvent> {
        (i < self.len()).then(|| self.at(i))
    }

    /// Event `i` with `account` left as `NONE_U32`, or `None` past the end: an account is a
    /// look-up by visitor, which a filter on the type or step of millions of events need not
    /// pay (read it with [`GuideTable::account`]).
    pub fn peek(&self, i: usize) -> Option<GuideEvent> {
        (i < self.len()).then(|| self.event(i, NONE_U32))
    }

    /// Event `i`'s visitor; panics past the end, as indexing does.
    #[inline]
    pub fn visitor(&self, i: usize) -> u32 {
        self.who.visitor(i)
    }

    /// Event `i`'s account; panics past the end, as indexing does.
    #[inline]
    pub fn account(&self, i: usize) -> u32 {
        self.who.account(i)
    }

    /// Event `i`'s guide index; panics past the end, as indexing does.
    #[inline]
    pub fn guide(&self, i: usize) -> u32 {
        self.guide.get(i)
    }

    /// Event `i`'s type; panics past the end, as indexing does.
    #[inline]
    pub fn kind(&self, i: usize) -> GuideEventType {
        GUIDE_EVENT_TYPES.get(usize::from(self.kind[i] >> 1)).copied().unwrap_or(GuideEventType::GuideSeen)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = GuideEvent> + ExactSizeIterator + '_ {
        self.iter_from(0)
    }

    /// The events from index `first` on.
    pub fn iter_from(&self, first: usize) -> impl DoubleEndedIterator<Item = GuideEvent> + ExactSizeIterator + '_ {
        (first.min(self.len())..self.len()).map(|i| self.at(i))
    }

    /// The index of the first event at or after `ts` (the table being sorted).
    pub fn first_at(&self, ts: i64) -> usize {
        self.ts.partition_point(|&t| t < ts)
    }

    pub fn push(&mut self, e: GuideEvent) {
        let kind = GUIDE_EVENT_TYPES.iter().position(|k| *k == e.kind).unwrap_or(0) as u8;
        self.ts.push(e.ts);
        self.who.push(e.visitor, e.account);
        self.guide.push(e.guide);
        self.step.push(e.step.wrapping_add(1));
        self.poll.push(e.poll.wrapping_add(1));
        self.response.push(e.response);
        self.kind.push(kind << 1 | u8::from(e.channel == Channel::Email));
    }

    pub fn truncate(&mut self, len: usize) {
        self.ts.truncate(len);
        self.who.truncate(len);
        for col in [&mut self.guide, &mut self.step, &mut self.poll, &mut self.response] {
            col.truncate(len);
        }
        self.kind.truncate(len);
    }

    /// Sorts the events by time, keeping events of one time in the order they came (a stable
    /// sort), with a row order of four bytes an event and one column as scratch: events are
    /// counted into hours, each hour sorted, and the columns permuted one by one.
    pub fn sort(&mut self) {
        if self.ts.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let order = stable_time_order(&self.ts);
        permute(&mut self.ts, &order);
        self.who.permute(&order);
        for col in [&mut self.guide, &mut self.step, &mut self.poll, &mut self.response] {
            col.permute(&order);
        }
        permute(&mut self.kind, &order);
    }

    pub fn bytes(&self) -> usize {
        let cols = [&self.guide, &self.step, &self.poll, &self.response];
        self.len() * (8 + 1 + cols.iter().map(|c| c.width()).sum::<usize>()) + self.who.bytes()
    }
}

/// The order that sorts `ts` stably: rows counted into hours, then each hour sorted by time.
fn stable_time_order(ts: &[i64]) -> Vec<u32> {
    let (min, max) = ts.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let hours = (i128::from(max) - i128::from(min)) / i128::from(HOUR_MS) + 1;
    let Some(hours) = usize::try_from(hours).ok().filter(|&h| h <= ts.len().max(1 << 16)) else {
        // Times too far apart to count by the hour (seeded oddities): a plain stable sort.
        let mut order: Vec<u32> = (0..ts.len() as u32).collect();
        order.sort_by_key(|&i| ts[i as usize]);
        return order;
    };
    let hour = |t: i64| ((i128::from(t) - i128::from(min)) / i128::from(HOUR_MS)) as usize;
    let mut start = vec![0u32; hours + 1];
    for &t in ts {
        start[hour(t) + 1] += 1;
    }
    for h in 1..start.len() {
        start[h] += start[h - 1];
    }
    let bounds = start.clone();
    let mut order = vec![0u32; ts.len()];
    for (i, &t) in ts.iter().enumerate() {
        let h = hour(t);
        order[start[h] as usize] = i as u32;
        start[h] += 1;
    }
    for w in bounds.windows(2) {
        order[w[0] as usize..w[1] as usize].sort_by_key(|&i| ts[i as usize]);
    }
    order
}

/// The distinct poll answers, each stored once: answers repeat (ratings 0–10, a few reasons),
/// so events hold an index rather than a value each.
#[derive(Clone, Debug)]
pub struct Responses {
    values: Vec<Val>,
    index: HashMap<String, u32>,
}

impl Default for Responses {
    fn default() -> Self {
        Responses { values: vec![Val::Null], index: HashMap::from([("null".to_string(), 0)]) }
    }
}

impl Responses {
    /// The index of `v`, added when new. Values are told apart by their JSON text, so `5` and
    /// `5.0` stay distinct, as the documents that carry them do.
    pub fn intern(&mut self, v: Val) -> u32 {
        if v.is_null() {
            return 0;
        }
        let key = serde_json::to_string(&v).unwrap_or_default();
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(v);
        self.index.insert(key, i);
        i
    }

    /// The answer at `i`; `null` for an index it never gave out.
    pub fn get(&self, i: u32) -> &Val {
        const NULL: &Val = &Val::Null;
        self.values.get(i as usize).unwrap_or(NULL)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Segment {
    pub id: String,
    pub name: String,
    pub visitors: std::collections::HashSet<Arc<str>>,
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
    /// What makes the rollups above daily in `day_tz_ms` (see [`EventTable::fold`]), for
    /// `dayRange` sources. `None` where the hourly table already has one row per day and key.
    /// Built by the first query that reads days, or by [`Store::warm_days`];
    /// [`Store::sort_events`], which every change of events ends with, drops them.
    pub page_days: OnceLock<Option<Fold>>,
    pub feature_days: OnceLock<Option<Fold>>,
    pub track_days: OnceLock<Option<Fold>>,
    /// The subscription's timezone offset that days are cut in.
    pub day_tz_ms: i64,
    /// Guide and poll events, sorted by `ts`.
    pub guide_events: GuideTable,
    /// The poll answers guide events point at.
    pub responses: Responses,
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

    /// The rows a source of `kind` reads: daily rollups for `dayRange`, hourly for `hourRange`.
    pub fn table_for(&self, kind: EventKind, daily: bool) -> Rows<'_> {
        let table = self.table(kind);
        if !daily {
            return Rows { table, fold: None };
        }
        let days = match kind {
            EventKind::Page => &self.page_days,
            EventKind::Feature => &self.feature_days,
            EventKind::Track => &self.track_days,
        };
        Rows { table, fold: days.get_or_init(|| table.fold(self.day_tz_ms)).as_ref() }
    }

    /// Cuts days in another timezone (the subscription's changed).
    pub fn set_day_timezone(&mut self, tz_ms: i64) {
        if tz_ms != self.day_tz_ms {
            self.day_tz_ms = tz_ms;
            self.rebuild_days();
        }
    }

    /// Builds the daily tables now rather than in the first query that reads days, which would
    /// otherwise wait seconds for them at a hundred thousand accounts: Pendo answers from
    /// rollups it keeps, so a world just generated or seeded is ready when its call returns.
    pub fn warm_days(&self) {
        std::thread::scope(|s| {
            for kind in [EventKind::Page, EventKind::Feature, EventKind::Track] {
                s.spawn(move || self.table_for(kind, true).len());
            }
        });
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

    /// How long the growing parts of the store are, for [`Store::rewind`].
    pub fn mark(&self) -> StoreMark {
        StoreMark {
            visitors: self.visitors.len(),
            accounts: self.accounts.len(),
            tables: [self.page_rows.mark(), self.feature_rows.mark(), self.track_rows.mark()],
            guide_events: self.guide_events.len(),
        }
    }

    /// Drops the visitors, accounts and events added since `mark` (nothing may have been
    /// sorted or removed since). Entities replaced in place are the caller's to put back.
    pub fn rewind(&mut self, mark: StoreMark) {
        for v in self.visitors.drain(mark.visitors.min(self.visitors.len())..) {
            self.visitor_index.remove(&v.id);
        }
        for a in self.accounts.drain(mark.accounts.min(self.accounts.len())..) {
            self.account_index.remove(&a.id);
        }
        let [page, feature, track] = mark.tables;
        self.page_rows.rewind(page);
        self.feature_rows.rewind(feature);
        self.track_rows.rewind(track);
        self.guide_events.truncate(mark.guide_events);
    }

    pub fn sort_events(&mut self) {
        self.page_rows.sort();
        self.feature_rows.sort();
        self.track_rows.sort();
        self.guide_events.sort();
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
            .map(Fold::bytes)
            .sum::<usize>()
            + self.page_rows.bytes()
            + self.feature_rows.bytes()
            + self.track_rows.bytes()
            + self.guide_events.bytes()
            + self.visitors.len() * 260
            + self.accounts.len() * 220
    }
}

/// See [`Store::mark`].
#[derive(Clone, Copy, Debug)]
pub struct StoreMark {
    visitors: usize,
    accounts: usize,
    tables: [(usize, usize); 3],
    guide_events: usize,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A row as the wide table held it.
    type Row = (i64, u32, u32, u32, u32, u32);

    fn rows_of(t: &EventTable) -> Vec<Row> {
        (0..t.len()).map(|i| (t.ts(i), t.visitor(i), t.account(i), t.item(i), t.events(i), t.minutes(i))).collect()
    }

    fn table_of(rows: &[Row]) -> EventTable {
        let mut t = EventTable::default();
        for &(ts, v, a, item, e, m) in rows {
            t.push(ts, v, a, item, e, m);
        }
        t
    }

    #[test]
    fn narrow_columns_widen_and_read_back_what_was_pushed() {
        let mut c = UCol::default();
        let values = [0, 255, 7, 256, 65_535, 3, 65_536, u32::MAX, 0];
        for (n, &x) in values.iter().enumerate() {
            c.push(x);
            assert_eq!(c.to_vec(), values[..=n].to_vec());
        }
        assert!(matches!(c, UCol::U32(_)));
        let mut small = UCol::default();
        (0..=255).for_each(|x| small.push(x));
        assert!(matches!(small, UCol::U8(_)), "bytes stay bytes");
    }

    proptest! {
        /// Sorting is the stable sort by time the wide table did, and `range` finds what a
        /// scan finds, whatever the times (unaligned, negative) and values (any width).
        #[test]
        fn event_table_sorts_and_reads_back_like_wide_rows(
            rows in proptest::collection::vec(
                (prop_oneof![(-3i64..40).prop_map(|h| h * HOUR_MS), any::<i64>()],
                 prop_oneof![0u32..50, any::<u32>()], prop_oneof![0u32..50, any::<u32>()], 0u32..300,
                 prop_oneof![1u32..60, any::<u32>()], 0u32..70_000),
                0..200),
            from in -5i64..45, len in 0i64..20,
        ) {
            let mut t = table_of(&rows);
            prop_assert_eq!(rows_of(&t), rows.clone());
            t.sort();
            let mut expected = rows.clone();
            expected.sort_by_key(|r| r.0);
            prop_assert_eq!(rows_of(&t), expected.clone());
            let (from, to) = (from * HOUR_MS, (from + len) * HOUR_MS);
            let lo = expected.partition_point(|r| r.0 < from);
            let hi = expected.partition_point(|r| r.0 < to).max(lo);
            prop_assert_eq!(t.range(from, to), lo..hi);
            // Rows appended after a sort join the order too.
            t.push(5 * HOUR_MS, 1, 2, 3, 4, 5);
            t.sort();
            expected.push((5 * HOUR_MS, 1, 2, 3, 4, 5));
            expected.sort_by_key(|r| r.0);
            prop_assert_eq!(rows_of(&t), expected);
        }
    }

    #[test]
    fn accounts_read_back_whatever_the_visitors_base() {
        let rows = [
            (0, 5, 9, 0, 1, 1),
            (0, 5, 8, 0, 1, 1),
            (0, 5, 10, 0, 1, 1),
            (0, 7, NONE_U32, 0, 1, 1),
            (0, NONE_U32, 3, 0, 1, 1),
            (0, 6, 0, 0, 1, 1),
            (0, 5, u32::MAX - 1, 0, 1, 1),
        ];
        let t = table_of(&rows);
        assert_eq!(rows_of(&t), rows.to_vec());
        let same = table_of(&[(0, 1, 400, 0, 1, 1), (0, 1, 400, 0, 1, 1), (0, 2, 401, 0, 1, 1)]);
        assert!(matches!(same.who.account, UCol::U8(_)), "accounts of their visitor cost a byte");
    }

    fn guide_event(ts: i64, visitor: u32) -> GuideEvent {
        GuideEvent {
            ts,
            visitor,
            account: 0,
            guide: 0,
            step: NONE_U32,
            poll: NONE_U32,
            response: 0,
            kind: GuideEventType::GuideSeen,
            channel: Channel::Web,
        }
    }

    fn fields(e: &GuideEvent) -> (i64, u32, u32, u32, u32, u32, u32, &'static str, &'static str) {
        (e.ts, e.visitor, e.account, e.guide, e.step, e.poll, e.response, e.kind.as_str(), e.channel.as_str())
    }

    proptest! {
        /// The narrow table reads every event back as it was pushed, and sorts as a stable
        /// sort by time does.
        #[test]
        fn guide_table_reads_back_and_sorts_like_a_vector(
            events in proptest::collection::vec(
                (prop_oneof![(-3i64..40).prop_map(|h| h * HOUR_MS + 17), -3i64..5, any::<i64>()],
                 prop_oneof![0u32..50, any::<u32>()], prop_oneof![0u32..50, any::<u32>()],
                 prop_oneof![0u32..5, any::<u32>()], prop_oneof![Just(NONE_U32), 0u32..4, any::<u32>()],
                 prop_oneof![Just(NONE_U32), 0u32..3], 0u32..1_000, 0usize..5, any::<bool>()),
                0..150),
        ) {
            let events: Vec<GuideEvent> = events
                .into_iter()
                .map(|(ts, visitor, account, guide, step, poll, response, kind, email)| GuideEvent {
                    ts, visitor, account, guide, step, poll, response,
                    kind: GUIDE_EVENT_TYPES[kind],
                    channel: if email { Channel::Email } else { Channel::Web },
                })
                .collect();
            let mut t = GuideTable::default();
            events.iter().for_each(|e| t.push(*e));
            prop_assert_eq!(t.iter().map(|e| fields(&e)).collect::<Vec<_>>(), events.iter().map(fields).collect::<Vec<_>>());
            let mut expected = events.clone();
            expected.sort_by_key(|e| e.ts);
            t.sort();
            prop_assert_eq!(t.iter().map(|e| fields(&e)).collect::<Vec<_>>(), expected.iter().map(fields).collect::<Vec<_>>());
            for probe in [-HOUR_MS, 0, 3, 7 * HOUR_MS] {
                prop_assert_eq!(t.first_at(probe), expected.partition_point(|e| e.ts < probe));
            }
            prop_assert!(t.get(t.len()).is_none());
        }
    }

    #[test]
    fn guide_events_far_apart_sort_too() {
        let mut t = GuideTable::default();
        for (i, ts) in [i64::MAX, i64::MIN, 0, i64::MIN].into_iter().enumerate() {
            t.push(guide_event(ts, i as u32));
        }
        t.sort();
        let key: Vec<_> = t.iter().map(|e| (e.ts, e.visitor)).collect();
        assert_eq!(key, vec![(i64::MIN, 1), (i64::MIN, 3), (0, 2), (i64::MAX, 0)]);
    }

    #[test]
    fn daily_rollups_sum_narrow_columns_past_their_width() {
        let day = 10 * DAY_MS;
        let t = table_of(&[
            (day + HOUR_MS, 1, 2, 3, 200, 40),
            (day + 2 * HOUR_MS, 1, 2, 4, 7, 1),
            (day + 2 * HOUR_MS, 1, 2, 3, 200, 50),
            (day + DAY_MS, 1, 2, 3, 1, 1),
        ]);
        let fold = t.fold(0).expect("two hours of one key make a day");
        let d = Rows { table: &t, fold: Some(&fold) };
        let rows: Vec<_> = (0..d.len())
            .filter(|&i| !d.folded(i))
            .map(|i| (d.ts(i), d.visitor(i), d.account(i), d.item(i), d.events(i), d.minutes(i), d.last_time(i)))
            .collect();
        assert_eq!(
            rows,
            vec![
                (day + HOUR_MS, 1, 2, 3, 400, 90, day + 2 * HOUR_MS + 50 * 60_000),
                (day + 2 * HOUR_MS, 1, 2, 4, 7, 1, day + 2 * HOUR_MS + 60_000),
                (day + DAY_MS, 1, 2, 3, 1, 1, day + DAY_MS + 60_000),
            ]
        );
        assert!(table_of(&[(day, 1, 2, 3, 1, 1), (day + DAY_MS, 1, 2, 3, 1, 1)]).fold(0).is_none());
    }

    #[test]
    fn responses_read_back_each_answer_and_store_it_once() {
        let mut r = Responses::default();
        let answers = [Val::Int(5), Val::Float(5.0), Val::str("5"), Val::str("yes"), Val::Null, Val::Int(5)];
        let ids: Vec<u32> = answers.iter().map(|a| r.intern(a.clone())).collect();
        for (a, &i) in answers.iter().zip(&ids) {
            assert_eq!(r.get(i).to_json(), a.to_json());
            assert_eq!(std::mem::discriminant(r.get(i)), std::mem::discriminant(a));
        }
        assert_eq!(ids[0], ids[5]);
        assert_eq!(ids[4], 0);
        assert_eq!(r.len(), 5, "null, 5, 5.0, \"5\", \"yes\"");
        assert!(r.get(999).is_null());
    }

    #[test]
    fn a_compact_visitor_builds_the_document_it_always_did() {
        let c = CompactVisitor {
            account: Arc::from("acme-1"),
            email: Email::Parts { number: 0, mail: 0, domain: Arc::from("acme.com") },
            first_name: 0,
            last_name: 2,
            role: 4,
            department: 1,
            anonymous: false,
            first: 1_767_000_000_000,
            last: 1_767_100_000_000,
        };
        let id = "ava.chen0@acme.com";
        let idhash = (splitmix(id.len() as u64 ^ c.first as u64) % 4_294_967_296) as i64;
        let expected = serde_json::json!({
            "auto": {"id": id, "accountid": "acme-1", "accountids": ["acme-1"], "firstvisit": c.first,
                     "lastvisit": c.last, "lastupdated": c.last + 1_000, "idhash": idhash},
            "agent": {"email": "ava.chen0@acme.com", "full_name": "Ava Chen", "role": "viewer"},
            "custom": {"department": "Finance"},
            "pendo": {"donotprocess": false},
        });
        let meta = Meta::compact(Compact::Visitor(Box::new(c.clone())));
        let doc = meta.build(id);
        assert_eq!(doc.to_json(), expected);
        for (group, fields) in expected.as_object().unwrap() {
            for (field, v) in fields.as_object().unwrap() {
                assert_eq!(&meta.field(id, group, field).to_json(), v, "{group}.{field}");
            }
        }
        let mut full = meta.clone();
        assert_eq!(full.full_mut(id).to_json(), expected);
        assert!(matches!(full, Meta::Full(_)));
        let free =
            CompactVisitor { email: Email::Parts { number: 12, mail: 2, domain: Arc::from("x.io") }, ..c.clone() };
        assert_eq!(free.email(), "ava.chen12@yahoo.com");
        let odd = CompactVisitor { email: Email::Text("Odd@Mail".into()), ..c.clone() };
        assert_eq!(odd.email(), "Odd@Mail");
        let anon = Meta::compact(Compact::Visitor(Box::new(CompactVisitor { anonymous: true, ..c })));
        assert_eq!(anon.build(id).to_json()["agent"], serde_json::json!({}));
        assert!(anon.field(id, "agent", "full_name").is_null());
    }

    #[test]
    fn generated_network_details_read_back_as_strings() {
        let n = Net::Generated { ip: [7, 254], agent: 2, country: 4 };
        assert_eq!(n.remote_ip().to_json(), serde_json::json!("203.0.7.254"));
        assert_eq!(&*n.user_agent(), USER_AGENTS[2]);
        assert_eq!(&*n.country(), "CA");
        assert_eq!(&*n.server(), SERVER);
    }
}
