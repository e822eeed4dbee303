//! Engagement kept between runs, so that a re-run asks Pendo about the days since the last one
//! instead of the whole window again.
//!
//! Every figure of an [`AccountUsage`] over a window of whole days can be rebuilt from two kinds
//! of fact, each cheap to bring up to date from a few days of events:
//! - per account and day: events and minutes (and so active days);
//! - per account and thing (an identified visitor, a core feature, a (visitor, guide) pair seen
//!   or completed): the last day it was seen. A distinct count over the window is the number of
//!   things whose last day is inside it, and a newer day only ever raises a last day.
//!
//! A run reads the days since the last run plus [`TRAILING_DAYS`] before them (Pendo processes
//! some events hours late, and those days' figures are replaced whole), merges, and drops what
//! left the window. Days are identified by their start as Pendo reports it (midnight in the
//! subscription's timezone), never computed here, so daylight-saving days and timezones need no
//! arithmetic; a guide event's time is placed in the day whose start precedes it.
//!
//! What keeps the figures exact, and what sends a run back to reading the whole window:
//! - every day of a read must show in its rows (a day on which no account did anything would
//!   leave a hole the merge could not tell from a missing day);
//! - the days a read shares with the kept ones must start where the kept ones do (a changed
//!   subscription timezone moves them), and the read must reach back to the kept newest day;
//! - the basis (window length, whether it ends with the current day, the core feature ids, the
//!   guides' last steps) must be the one the state was built on;
//! - the state must have been read whole within [`REREAD_AFTER`] (what an increment cannot see:
//!   events deleted or excluded in Pendo after the fact).
//!
//! Things are kept as 64-bit hashes of their ids (FNV-1a, stable across builds and machines): a
//! visitor count is off only if two of one account's visitors share a hash.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;

use super::AccountUsage;

/// Days before the new ones read again at every run, for events Pendo processes late.
pub const TRAILING_DAYS: u32 = 2;
/// How old a whole read may get before the window is read whole again.
pub const REREAD_AFTER_MS: i64 = 7 * 86_400_000;
/// Pages of day sums a whole read may take (bounded by accounts × days before it starts): every
/// page is a scan of the whole window for Pendo, so a subscription larger than this reads
/// per-account totals every run instead, as if nothing were kept.
pub const WHOLE_READ_PAGES: u64 = 4;
/// Format version of [`UsageState::encode`]; another version is read as no state (version 1
/// kept days in milliseconds).
const VERSION: u64 = 2;

/// One account's events and minutes on one day (its start in seconds, see [`secs`]).
///
/// 16 bytes: a whole read at 100,000 accounts holds 1.6 million of these, and the fields at
/// 64 bits made them 32. An account's events or minutes on one day beyond 32 bits (four
/// billion) are refused as a bad row rather than cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DaySum {
    pub acc: u32,
    pub day: u32,
    pub events: u32,
    pub minutes: u32,
}

/// The last time (seconds; a day start once merged) one account's thing was seen. 16 bytes
/// (2.5 million of them at 100,000 accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub acc: u32,
    pub at: u32,
    pub key: u64,
}

/// A time as Pendo reports it (ms since the epoch) in whole seconds, as the kept rows hold
/// it: day starts are whole seconds, so a day keeps its exact start, and an event's time
/// floored to its second falls in the same day. `None` before 1970 or after 2106.
pub(super) fn secs(ms: i64) -> Option<u32> {
    u32::try_from(ms.div_euclid(1000)).ok()
}

/// The kinds of thing counted distinct, in [`Facts::seen`] order.
pub(super) const VISITORS: usize = 0;
pub(super) const FEATURES: usize = 1;
pub(super) const GUIDES_SEEN: usize = 2;
pub(super) const GUIDES_COMPLETED: usize = 3;
const KINDS: usize = 4;

/// Account ids by number, so that millions of rows do not each hold a copy of their id.
#[derive(Clone, Debug, Default)]
pub(super) struct Accounts {
    pub ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl Accounts {
    fn from_ids(ids: Vec<String>) -> Accounts {
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        Accounts { ids, index }
    }

    pub fn number(&mut self, id: &str) -> u32 {
        if let Some(n) = self.index.get(id) {
            return *n;
        }
        let n = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.push(id.to_owned());
        self.index.insert(id.to_owned(), n);
        n
    }
}

/// What one read of some days brought: the rows of each query, as read.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// The day starts the day sums show, ascending and distinct once [`Facts::settle`]d.
    pub days: Vec<u32>,
    pub sums: Vec<DaySum>,
    /// Guide rows carry the event's time until they are placed in a day.
    pub seen: [Vec<Seen>; KINDS],
}

impl Facts {
    /// Sorts, and keeps one row per key (a day re-read, a thing seen on several days).
    pub fn settle(&mut self) {
        self.sums.sort_unstable_by_key(|s| (s.acc, s.day));
        self.sums.dedup_by_key(|s| (s.acc, s.day));
        self.days = self.sums.iter().map(|s| s.day).collect();
        self.days.sort_unstable();
        self.days.dedup();
        for list in &mut self.seen {
            settle_seen(list);
        }
    }
}

/// Sorted by (account, thing), one entry each, the latest time kept.
fn settle_seen(list: &mut Vec<Seen>) {
    list.sort_unstable_by(|a, b| (a.acc, a.key, b.at).cmp(&(b.acc, b.key, a.at)));
    list.dedup_by_key(|s| (s.acc, s.key));
}

/// The state kept between runs (see the module's doc).
#[derive(Clone, Debug, Default)]
pub struct UsageState {
    /// Hash of what the figures were computed for; another basis means a whole read.
    basis: u64,
    /// When the window was last read whole (ms).
    read_at: i64,
    /// The end of the window it is current to (ms).
    end: i64,
    /// The window's day starts (seconds), ascending, every one of them present.
    days: Vec<u32>,
    accounts: Accounts,
    sums: Vec<DaySum>,
    seen: [Vec<Seen>; KINDS],
}

impl UsageState {
    /// A state from a read of the whole window, and whether it can be kept: a read with a day
    /// without any row cannot seed increments (its figures are right all the same).
    pub(super) fn whole(basis: u64, now: i64, window_days: u32, accounts: Accounts, mut facts: Facts) -> (Self, bool) {
        facts.settle();
        let complete = facts.days.len() == window_days as usize;
        let mut state = UsageState {
            basis,
            read_at: now,
            end: now,
            days: facts.days,
            accounts,
            sums: facts.sums,
            seen: facts.seen,
        };
        if complete {
            state.place_guides_in_days();
        }
        (state, complete)
    }

    /// Whether an increment may bring this state up to `end` (ms) for `basis`: how many days to
    /// read, or `None` for a whole read.
    pub(super) fn days_to_read(&self, basis: u64, end: i64, window_days: u32) -> Option<u32> {
        if basis != self.basis || end < self.end || end - self.read_at >= REREAD_AFTER_MS {
            return None;
        }
        // Days since the last run, rounded up; a daylight-saving day may add one more, which the
        // overlap check in `merge` catches (a whole read, never a gap).
        let since = u32::try_from(u64::try_from(end - self.end).ok()?.div_ceil(86_400_000)).ok()?;
        let k = since.checked_add(TRAILING_DAYS)?.max(1);
        (k < window_days).then_some(k)
    }

    /// The accounts the state numbers, for numbering an increment's rows the same way.
    pub(super) fn take_accounts(&mut self) -> Accounts {
        std::mem::take(&mut self.accounts)
    }

    /// Merges a read of the newest `k` days. `None` when the read does not fit (see the module's
    /// doc): the caller reads the whole window instead.
    pub(super) fn merge(
        mut self,
        accounts: Accounts,
        mut facts: Facts,
        k: u32,
        window_days: u32,
        end: i64,
    ) -> Option<Self> {
        facts.settle();
        let (first, newest_kept) = (*facts.days.first()?, *self.days.last()?);
        if facts.days.len() != k as usize || first > newest_kept {
            return None;
        }
        // Days the read shares with the state must be the state's days exactly.
        if facts.days.iter().take_while(|d| **d <= newest_kept).any(|d| self.days.binary_search(d).is_err()) {
            return None;
        }
        self.accounts = accounts;
        self.days.retain(|d| *d < first);
        self.days.extend_from_slice(&facts.days);
        let drop_days = self.days.len().saturating_sub(window_days as usize);
        self.days.drain(..drop_days);
        let window_start = *self.days.first()?;

        // Day sums: the read's days are replaced whole. Grown by exactly the read (a plain
        // append doubles the kept list's capacity, the largest list of the state), and the
        // read's list freed as soon as it is moved.
        self.sums.retain(|s| s.day >= window_start && s.day < first);
        let read_sums = std::mem::take(&mut facts.sums);
        self.sums.reserve_exact(read_sums.len());
        self.sums.extend(read_sums);
        self.sums.sort_unstable_by_key(|s| (s.acc, s.day));

        let mut read_seen = std::mem::take(&mut facts.seen);
        self.place_days(&mut read_seen);
        for (kept, read) in self.seen.iter_mut().zip(read_seen.iter_mut()) {
            let read = std::mem::take(read);
            kept.reserve_exact(read.len());
            kept.extend(read);
            settle_seen(kept);
            kept.retain(|s| s.at >= window_start);
        }
        self.end = end;
        Some(self)
    }

    /// Guide rows read whole carry event times: each goes into its day.
    fn place_guides_in_days(&mut self) {
        let mut seen = std::mem::take(&mut self.seen);
        self.place_days(&mut seen);
        for list in &mut seen {
            settle_seen(list);
        }
        self.seen = seen;
    }

    /// Replaces each time by the start of the day it falls in; times before the first day (which
    /// a read of whole days cannot return) are dropped.
    fn place_days(&self, seen: &mut [Vec<Seen>; KINDS]) {
        for list in seen.iter_mut() {
            list.retain_mut(|s| match self.days.partition_point(|d| *d <= s.at) {
                0 => false,
                i => {
                    s.at = self.days[i - 1];
                    true
                }
            });
        }
    }

    /// Every account's figures over the window (`last_active` is Pendo's and set by the caller).
    pub(super) fn usage(&self, core_total: u32) -> Vec<AccountUsage> {
        let n = self.accounts.ids.len();
        let mut out: Vec<AccountUsage> = self
            .accounts
            .ids
            .iter()
            .map(|id| AccountUsage { account_id: id.clone(), core_features_total: core_total, ..Default::default() })
            .collect();
        for s in &self.sums {
            if let Some(u) = out.get_mut(s.acc as usize) {
                u.active_days += 1;
                u.events += u64::from(s.events);
                u.minutes += u64::from(s.minutes);
            }
        }
        let mut counts = vec![0u64; n];
        for (kind, list) in self.seen.iter().enumerate() {
            counts.iter_mut().for_each(|c| *c = 0);
            for s in list {
                if let Some(c) = counts.get_mut(s.acc as usize) {
                    *c += 1;
                }
            }
            for (u, c) in out.iter_mut().zip(&counts) {
                match kind {
                    VISITORS => u.active_visitors = *c,
                    FEATURES => u.core_features_used = u32::try_from(*c).unwrap_or(u32::MAX).min(core_total),
                    GUIDES_SEEN => u.guides_seen = *c,
                    _ => u.guides_completed = *c,
                }
            }
        }
        out
    }

    /// Account → (day start → events), days without a row absent: what
    /// [`super::Extractor::daily_events`] reads, here from the day sums already kept, so a
    /// template that needs both asks Pendo for the days once.
    pub fn daily_events(&self) -> BTreeMap<String, BTreeMap<i64, u64>> {
        let mut out: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
        for s in &self.sums {
            let Some(id) = self.accounts.ids.get(s.acc as usize) else { continue };
            match out.get_mut(id) {
                Some(days) => {
                    days.insert(i64::from(s.day) * 1000, u64::from(s.events));
                }
                None => {
                    out.insert(id.clone(), BTreeMap::from([(i64::from(s.day) * 1000, u64::from(s.events))]));
                }
            }
        }
        out
    }

    /// Entries kept: day sums, then visitors, core features, guides seen, guides completed.
    pub fn sizes(&self) -> [usize; 1 + KINDS] {
        let mut out = [self.sums.len(), 0, 0, 0, 0];
        for (o, list) in out[1..].iter_mut().zip(&self.seen) {
            *o = list.len();
        }
        out
    }

    /// Deflated bytes for the store: varints, ids and day numbers relative to the window.
    /// Written as a stream (varints into deflate), so the only large buffer is the compressed
    /// output itself. The fastest level: most of the bytes are 64-bit keys, which no level
    /// compresses, and at 100,000 accounts the default level spent 1.3 s of a 7 s re-run here.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut w = std::io::BufWriter::with_capacity(1 << 16, z);
        self.write_to(&mut w).ok()?;
        w.into_inner().ok()?.finish().ok()
    }

    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let bad = || std::io::Error::other("a kept day is not among the window's days");
        for v in [VERSION, self.basis, zigzag(self.read_at), zigzag(self.end), self.days.len() as u64] {
            put(w, v)?;
        }
        let mut prev = 0i64;
        for d in &self.days {
            put(w, zigzag(i64::from(*d) - prev))?;
            prev = i64::from(*d);
        }
        put(w, self.accounts.ids.len() as u64)?;
        for id in &self.accounts.ids {
            put(w, id.len() as u64)?;
            w.write_all(id.as_bytes())?;
        }
        let day_no = |d: u32| self.days.binary_search(&d).map(|i| i as u64).map_err(|_| bad());
        put(w, self.sums.len() as u64)?;
        let mut prev_acc = 0u32;
        for s in &self.sums {
            put(w, u64::from(s.acc.wrapping_sub(prev_acc)))?;
            prev_acc = s.acc;
            for v in [day_no(s.day)?, u64::from(s.events), u64::from(s.minutes)] {
                put(w, v)?;
            }
        }
        for list in &self.seen {
            put(w, list.len() as u64)?;
            let mut prev_acc = 0u32;
            for s in list {
                put(w, u64::from(s.acc.wrapping_sub(prev_acc)))?;
                prev_acc = s.acc;
                w.write_all(&s.key.to_le_bytes())?;
                put(w, day_no(s.at)?)?;
            }
        }
        Ok(())
    }

    /// The state [`UsageState::encode`] wrote; `None` for anything unreadable (a whole read
    /// follows, so a damaged state costs time, never figures).
    pub fn decode(bytes: &[u8]) -> Option<UsageState> {
        let mut r = std::io::BufReader::with_capacity(1 << 16, flate2::read::DeflateDecoder::new(bytes));
        let state = Self::read_from(&mut r)?;
        // Nothing may follow.
        (r.read(&mut [0u8; 1]).ok()? == 0).then_some(state)
    }

    fn read_from(r: &mut impl std::io::Read) -> Option<UsageState> {
        if next(r)? != VERSION {
            return None;
        }
        let basis = next(r)?;
        let (read_at, end) = (unzigzag(next(r)?), unzigzag(next(r)?));
        let n_days = len(r)?;
        let mut days = Vec::with_capacity(n_days.min(1 << 16));
        let mut prev = 0i64;
        for _ in 0..n_days {
            prev = prev.checked_add(unzigzag(next(r)?))?;
            days.push(u32::try_from(prev).ok()?);
        }
        if days.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let n_acc = len(r)?;
        let mut ids = Vec::with_capacity(n_acc.min(1 << 20));
        for _ in 0..n_acc {
            // Pendo ids are short; a longer one is damage.
            let n = len(r)?;
            if n > 1 << 16 {
                return None;
            }
            let mut id = vec![0u8; n];
            r.read_exact(&mut id).ok()?;
            ids.push(String::from_utf8(id).ok()?);
        }
        let day = |i: u64| days.get(usize::try_from(i).ok()?).copied();
        let acc = |prev: u32, delta: u64| {
            let a = prev.checked_add(u32::try_from(delta).ok()?)?;
            ((a as usize) < n_acc).then_some(a)
        };
        let n_sums = len(r)?;
        let mut sums = Vec::with_capacity(n_sums.min(1 << 20));
        let mut prev_acc = 0u32;
        for _ in 0..n_sums {
            prev_acc = acc(prev_acc, next(r)?)?;
            let day = day(next(r)?)?;
            let (events, minutes) = (u32::try_from(next(r)?).ok()?, u32::try_from(next(r)?).ok()?);
            sums.push(DaySum { acc: prev_acc, day, events, minutes });
        }
        let mut seen: [Vec<Seen>; KINDS] = Default::default();
        for list in &mut seen {
            let n = len(r)?;
            list.reserve_exact(n.min(1 << 20));
            let mut prev_acc = 0u32;
            for _ in 0..n {
                prev_acc = acc(prev_acc, next(r)?)?;
                let mut key = [0u8; 8];
                r.read_exact(&mut key).ok()?;
                list.push(Seen { acc: prev_acc, key: u64::from_le_bytes(key), at: day(next(r)?)? });
            }
        }
        Some(UsageState { basis, read_at, end, days, accounts: Accounts::from_ids(ids), sums, seen })
    }
}

/// FNV-1a over the parts, each followed by a byte no UTF-8 text contains, so ("ab", "c") and
/// ("a", "bc") differ.
pub(super) fn key_of(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn put(w: &mut impl std::io::Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    w.write_all(&buf[..=n])
}

/// A varint.
fn next(r: &mut impl std::io::Read) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok()?;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A count; capacities taken from it are capped, so a damaged count cannot ask for gigabytes
/// before the stream runs out.
fn len(r: &mut impl std::io::Read) -> Option<usize> {
    usize::try_from(next(r)?).ok()
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day in seconds, as the kept rows count time.
    const DAY: u32 = 86_400;
    /// A day in ms, as runs give their ends.
    const DAY_MS: i64 = 86_400_000;

    fn facts(days: std::ops::Range<u32>, rows: &[(u32, u32, u32)], seen: &[(usize, u32, u64, u32)]) -> Facts {
        let mut f = Facts::default();
        // Every day shows in some account's row, as in a live subscription.
        for d in days {
            f.sums.push(DaySum { acc: 0, day: d * DAY, events: 1, minutes: 1 });
        }
        for (acc, d, e) in rows {
            f.sums.push(DaySum { acc: *acc, day: d * DAY, events: *e, minutes: 0 });
        }
        for (kind, acc, key, at) in seen {
            f.seen[*kind].push(Seen { acc: *acc, key: *key, at: *at });
        }
        f
    }

    fn accounts() -> Accounts {
        Accounts::from_ids(vec!["filler".into(), "a".into(), "b".into()])
    }

    #[test]
    fn an_increment_gives_what_a_whole_read_of_the_new_window_gives() {
        // Window of 5 days; days 0-4 read whole, then days 3-6 (2 new, 2 trailing with a late
        // event on day 3); the window is now days 2-6.
        let whole = facts(
            0..5,
            &[(1, 0, 10), (1, 3, 5), (2, 4, 7)],
            &[
                (VISITORS, 1, 100, 0),
                (VISITORS, 1, 101, 3 * DAY + 5),
                (VISITORS, 2, 100, 4 * DAY),
                (GUIDES_SEEN, 2, 9, 1),
            ],
        );
        let (state, complete) = UsageState::whole(1, 5 * DAY_MS, 5, accounts(), whole);
        assert!(complete);
        assert_eq!(state.days.len(), 5);
        let k = state.days_to_read(1, 7 * DAY_MS, 5);
        assert_eq!(k, Some(4));
        // The read gives every row of its days again: b's day 4 too.
        let inc = facts(
            3..7,
            &[(1, 3, 6), (2, 4, 7), (1, 6, 1)],
            &[(VISITORS, 1, 100, 6 * DAY + 10), (GUIDES_COMPLETED, 1, 8, 5 * DAY)],
        );
        let merged = state.merge(accounts(), inc, 4, 5, 7 * DAY_MS).unwrap_or_default();
        let full = facts(
            2..7,
            &[(1, 3, 6), (2, 4, 7), (1, 6, 1)],
            &[
                (VISITORS, 1, 100, 6 * DAY),
                (VISITORS, 1, 101, 3 * DAY),
                (VISITORS, 2, 100, 4 * DAY),
                (GUIDES_COMPLETED, 1, 8, 5 * DAY),
            ],
        );
        let expected = UsageState::whole(1, 7 * DAY_MS, 5, accounts(), full).0;
        assert_eq!(merged.usage(3), expected.usage(3));
        let a = &merged.usage(3)[1];
        // Day 0's 10 events left the window; day 3 was replaced by its late total.
        assert_eq!((a.events, a.active_days, a.active_visitors, a.guides_completed), (7, 2, 2, 1));
        // Account b's guide seen on day 1 left the window.
        assert_eq!(merged.usage(3)[2].guides_seen, 0);
    }

    #[test]
    fn a_merge_grows_the_day_sums_by_the_read_only() {
        let whole = facts(0..5, &[(1, 0, 10), (1, 3, 5), (2, 4, 7)], &[]);
        let state = UsageState::whole(1, 5 * DAY_MS, 5, accounts(), whole).0;
        // As a run has it: decoded, every list exactly as long as it is.
        let state = UsageState::decode(&state.encode().unwrap_or_default()).unwrap_or_default();
        assert_eq!(state.sums.capacity(), state.sums.len());
        // More rows than the days leaving the window: the kept list must grow.
        let inc = facts(3..7, &[(1, 3, 6), (2, 4, 7), (1, 5, 1), (2, 5, 1), (1, 6, 1), (2, 6, 1)], &[]);
        let merged = state.merge(accounts(), inc, 4, 5, 7 * DAY_MS).unwrap_or_default();
        assert!(merged.sums.len() > 8);
        // By exactly what it needs, not to twice its size (the largest list of a state).
        assert_eq!(merged.sums.capacity(), merged.sums.len());
    }

    #[test]
    fn reads_that_do_not_fit_ask_for_a_whole_read() {
        let state = UsageState::whole(1, 5 * DAY_MS, 5, accounts(), facts(0..5, &[], &[])).0;
        // Another basis, a state read whole too long ago, a clock gone back.
        assert_eq!(state.days_to_read(2, 6 * DAY_MS, 5), None);
        assert_eq!(state.days_to_read(1, 5 * DAY_MS + REREAD_AFTER_MS, 30), None);
        assert_eq!(state.days_to_read(1, 4 * DAY_MS, 5), None);
        // Too many days since: the window whole.
        assert_eq!(state.days_to_read(1, 8 * DAY_MS, 5), None);
        // A day of the read without rows.
        let mut gap = facts(3..7, &[], &[]);
        gap.sums.retain(|s| s.day != 5 * DAY);
        assert!(state.clone().merge(accounts(), gap, 4, 5, 7 * DAY_MS).is_none());
        // A read that does not reach back to the kept newest day.
        assert!(state.clone().merge(accounts(), facts(5..8, &[], &[]), 3, 5, 8 * DAY_MS).is_none());
        // Shared days cut at other hours (the subscription's timezone changed).
        let mut moved = facts(3..7, &[], &[]);
        moved.sums.iter_mut().for_each(|s| s.day += 3_600);
        assert!(state.clone().merge(accounts(), moved, 4, 5, 7 * DAY_MS).is_none());
        // A whole read with a day missing seeds nothing.
        let mut holed = facts(0..5, &[], &[]);
        holed.sums.retain(|s| s.day != 2 * DAY);
        let (holed, complete) = UsageState::whole(1, 5 * DAY_MS, 5, accounts(), holed);
        assert!(!complete);
        // Its figures are still the read's.
        assert_eq!(holed.usage(0)[0].active_days, 4);
    }

    #[test]
    fn encoding_round_trips_and_damage_reads_as_none() {
        let state = UsageState::whole(
            7,
            5 * DAY_MS,
            5,
            accounts(),
            facts(
                0..5,
                &[(1, 2, 3), (2, 4, u32::MAX)],
                &[(FEATURES, 2, u64::MAX, 4 * DAY), (VISITORS, 1, 3, 2 * DAY + 1)],
            ),
        )
        .0;
        let bytes = state.encode().unwrap_or_default();
        let back = UsageState::decode(&bytes).unwrap_or_default();
        assert_eq!(back.usage(2), state.usage(2));
        assert_eq!((back.basis, back.read_at, back.end, &back.days), (7, 5 * DAY_MS, 5 * DAY_MS, &state.days));
        assert_eq!(back.seen, state.seen);
        assert!(UsageState::decode(b"not deflate!").is_none());
        assert!(UsageState::decode(&bytes[..bytes.len() / 2]).is_none());
    }

    #[test]
    fn rows_are_sixteen_bytes_and_times_whole_seconds() {
        assert_eq!(std::mem::size_of::<DaySum>(), 16);
        assert_eq!(std::mem::size_of::<Seen>(), 16);
        assert_eq!(secs(1_767_225_600_000), Some(1_767_225_600));
        // An event's time is floored to its second: still in the day it fell in.
        assert_eq!(secs(1_767_225_599_999), Some(1_767_225_599));
        assert_eq!(secs(-1), None);
        assert_eq!(secs((i64::from(u32::MAX) + 1) * 1000), None);
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
        assert_eq!(key_of(&["v1"]), key_of(&["v1"]));
    }
}
