//! A typed builder for aggregation pipelines: sources with their parameters, time series, and
//! the operators. It produces the JSON body every real client sends
//! (`{"response": {"mimeType": "application/json"}, "request": {"requestId", "pipeline"}}`).

use serde_json::{Map, Value, json};

use super::expr::Expr;
use crate::error::{Error, Result};

/// Which apps a source covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Apps {
    /// Leave `appId` out (the subscription's default app).
    Default,
    /// `expandAppIds("*")`: every app.
    All,
    Ids(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// `identified: true` keeps identified visitors only.
    Visitors {
        identified: Option<bool>,
    },
    Accounts {
        apps: Apps,
    },
    Features {
        apps: Apps,
    },
    Pages {
        apps: Apps,
    },
    Guides {
        apps: Apps,
    },
    TrackTypes {
        apps: Apps,
    },
    Events {
        apps: Apps,
    },
    FeatureEvents {
        feature_id: Option<String>,
        apps: Apps,
    },
    PageEvents {
        page_id: Option<String>,
        apps: Apps,
    },
    TrackEvents {
        track_type_id: Option<String>,
        apps: Apps,
    },
    GuideEvents {
        guide_id: Option<String>,
        apps: Apps,
    },
    PollEvents {
        guide_id: Option<String>,
        poll_id: Option<String>,
        apps: Apps,
    },
    /// All-time latest answers to one poll (`visitorId`, `accountId`, `response`, `time`).
    PollsSeenEver {
        guide_id: String,
        poll_id: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Hour,
}

/// A point in time for `timeSeries.first`/`last`.
#[derive(Clone, Debug, PartialEq)]
pub enum Time {
    Millis(i64),
    Now,
    /// `now() - <ms>`.
    NowMinusMillis(i64),
}

impl Time {
    fn to_json(&self) -> Value {
        match self {
            Time::Millis(ms) => json!(ms),
            Time::Now => json!("now()"),
            Time::NowMinusMillis(ms) => json!(format!("now() - {ms}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Span {
    /// Periods forward from `first` (negative: the periods before `first`'s period).
    Count(i64),
    /// Through `last`'s period.
    Last(Time),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimeSeries {
    pub period: Period,
    pub first: Time,
    pub span: Span,
}

impl TimeSeries {
    pub fn days(first: Time, span: Span) -> Self {
        TimeSeries { period: Period::Day, first, span }
    }
    pub fn hours(first: Time, span: Span) -> Self {
        TimeSeries { period: Period::Hour, first, span }
    }
    /// `[first_ms, last_ms]` by day, both days included.
    pub fn day_range(first_ms: i64, last_ms: i64) -> Self {
        Self::days(Time::Millis(first_ms), Span::Last(Time::Millis(last_ms)))
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert(
            "period".into(),
            json!(match self.period {
                Period::Day => "dayRange",
                Period::Hour => "hourRange",
            }),
        );
        o.insert("first".into(), self.first.to_json());
        match &self.span {
            Span::Count(n) => o.insert("count".into(), json!(n)),
            Span::Last(t) => o.insert("last".into(), t.to_json()),
        };
        Value::Object(o)
    }
}

fn apps_json(apps: &Apps, params: &mut Map<String, Value>) {
    match apps {
        Apps::Default => {}
        Apps::All => {
            params.insert("appId".into(), json!("expandAppIds(\"*\")"));
        }
        Apps::Ids(ids) => {
            params.insert("appId".into(), json!(ids));
        }
    }
}

impl Source {
    fn needs_time(&self) -> bool {
        !matches!(
            self,
            Source::Visitors { .. }
                | Source::Accounts { .. }
                | Source::Features { .. }
                | Source::Pages { .. }
                | Source::Guides { .. }
                | Source::TrackTypes { .. }
                | Source::PollsSeenEver { .. }
        )
    }

    fn to_json(&self) -> (&'static str, Value) {
        let mut p = Map::new();
        let opt = |k: &str, v: &Option<String>, p: &mut Map<String, Value>| {
            if let Some(v) = v {
                p.insert(k.to_string(), json!(v));
            }
        };
        let name = match self {
            Source::Visitors { identified } => {
                if let Some(i) = identified {
                    p.insert("identified".into(), json!(i));
                }
                "visitors"
            }
            Source::Accounts { apps } => {
                apps_json(apps, &mut p);
                "accounts"
            }
            Source::Features { apps } => {
                apps_json(apps, &mut p);
                "features"
            }
            Source::Pages { apps } => {
                apps_json(apps, &mut p);
                "pages"
            }
            Source::Guides { apps } => {
                apps_json(apps, &mut p);
                "guides"
            }
            Source::TrackTypes { apps } => {
                apps_json(apps, &mut p);
                "trackTypes"
            }
            Source::Events { apps } => {
                apps_json(apps, &mut p);
                "events"
            }
            Source::FeatureEvents { feature_id, apps } => {
                opt("featureId", feature_id, &mut p);
                apps_json(apps, &mut p);
                "featureEvents"
            }
            Source::PageEvents { page_id, apps } => {
                opt("pageId", page_id, &mut p);
                apps_json(apps, &mut p);
                "pageEvents"
            }
            Source::TrackEvents { track_type_id, apps } => {
                opt("trackTypeId", track_type_id, &mut p);
                apps_json(apps, &mut p);
                "trackEvents"
            }
            Source::GuideEvents { guide_id, apps } => {
                opt("guideId", guide_id, &mut p);
                apps_json(apps, &mut p);
                "guideEvents"
            }
            Source::PollEvents { guide_id, poll_id, apps } => {
                opt("guideId", guide_id, &mut p);
                opt("pollId", poll_id, &mut p);
                apps_json(apps, &mut p);
                "pollEvents"
            }
            Source::PollsSeenEver { guide_id, poll_id } => {
                p.insert("guideId".into(), json!(guide_id));
                p.insert("pollId".into(), json!(poll_id));
                "pollsSeenEver"
            }
        };
        (name, if p.is_empty() { Value::Null } else { Value::Object(p) })
    }
}

/// Group/reduce aggregators.
#[derive(Clone, Debug, PartialEq)]
pub enum Agg {
    Sum(String),
    /// Distinct non-null values of a field (Pendo's MAU examples), or rows when `None`.
    Count(Option<String>),
    First(String),
    Last(String),
    List(String),
    Min(String),
    Max(String),
    Avg(String),
}

impl Agg {
    fn to_json(&self) -> Result<Value, String> {
        let (name, field) = match self {
            Agg::Sum(f) => ("sum", Some(f)),
            Agg::Count(f) => ("count", f.as_ref()),
            Agg::First(f) => ("first", Some(f)),
            Agg::Last(f) => ("last", Some(f)),
            Agg::List(f) => ("list", Some(f)),
            Agg::Min(f) => ("min", Some(f)),
            Agg::Max(f) => ("max", Some(f)),
            Agg::Avg(f) => ("avg", Some(f)),
        };
        if let Some(f) = field
            && !super::expr::valid_path(f)
        {
            return Err(format!("invalid field path {f:?}"));
        }
        Ok(json!({ name: field }))
    }
}

/// A sort key: ascending unless `desc`.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub field: String,
    pub desc: bool,
}

impl SortKey {
    pub fn asc(f: &str) -> Self {
        SortKey { field: f.into(), desc: false }
    }
    pub fn desc(f: &str) -> Self {
        SortKey { field: f.into(), desc: true }
    }
}

/// A pipeline under construction. Invalid pieces are remembered and reported by [`Pipeline::to_json`].
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    stages: Vec<Value>,
    error: Option<String>,
}

impl Pipeline {
    /// Starts from an entity source (no time series).
    pub fn from_source(source: Source) -> Self {
        let mut p = Pipeline::default();
        if source.needs_time() {
            p.error = Some("event sources need a time series: use Pipeline::events".into());
        }
        let (name, params) = source.to_json();
        p.stages.push(json!({"source": { name: params }}));
        p
    }

    /// Starts from an event source over a time window.
    pub fn events(source: Source, time: TimeSeries) -> Self {
        let mut p = Pipeline::default();
        let (name, params) = source.to_json();
        let mut src = Map::new();
        src.insert(name.into(), params);
        src.insert("timeSeries".into(), time.to_json());
        p.stages.push(json!({ "source": Value::Object(src) }));
        p
    }

    /// Runs sub-pipelines side by side (combine with [`Pipeline::join`]).
    pub fn spawn(subs: Vec<Pipeline>) -> Self {
        let mut p = Pipeline::default();
        let mut arr = Vec::new();
        for s in subs {
            match s.to_json() {
                Ok(v) => arr.push(v),
                Err(e) => p.error = p.error.or(Some(e.to_string())),
            }
        }
        p.stages.push(json!({ "spawn": arr }));
        p
    }

    fn push(mut self, v: Value) -> Self {
        self.stages.push(v);
        self
    }

    fn fail(mut self, e: String) -> Self {
        self.error = self.error.or(Some(e));
        self
    }

    fn check_path(self, f: &str) -> Self {
        if super::expr::valid_path(f) { self } else { self.fail(format!("invalid field path {f:?}")) }
    }

    pub fn filter(self, e: Expr) -> Self {
        match e.0 {
            Ok(s) => self.push(json!({ "filter": s })),
            Err(err) => self.fail(err),
        }
    }

    fn assignments(self, op: &str, fields: Vec<(&str, Expr)>) -> Self {
        let mut o = Map::new();
        let mut me = self;
        for (k, e) in fields {
            if !super::expr::valid_path(k) {
                me = me.fail(format!("invalid output name {k:?}"));
                continue;
            }
            match e.0 {
                Ok(s) => {
                    o.insert(k.to_string(), json!(s));
                }
                Err(err) => me = me.fail(err),
            }
        }
        me.push(json!({ op: Value::Object(o) }))
    }

    /// Projects to exactly these fields.
    pub fn select(self, fields: Vec<(&str, Expr)>) -> Self {
        self.assignments("select", fields)
    }

    /// Adds or overwrites fields (dotted names nest).
    pub fn eval(self, fields: Vec<(&str, Expr)>) -> Self {
        self.assignments("eval", fields)
    }

    pub fn sort(self, keys: &[SortKey]) -> Self {
        let mut me = self;
        for k in keys {
            me = me.check_path(&k.field);
        }
        let v: Vec<String> =
            keys.iter().map(|k| if k.desc { format!("-{}", k.field) } else { k.field.clone() }).collect();
        me.push(json!({ "sort": v }))
    }

    pub fn limit(self, n: u64) -> Self {
        self.push(json!({ "limit": n }))
    }

    /// Keeps rows whose `field` is an identified (non-anonymous) id.
    pub fn identified(self, field: &str) -> Self {
        self.check_path(field).push(json!({ "identified": field }))
    }

    /// Keeps rows whose `field` is anonymous.
    pub fn anonymous(self, field: &str) -> Self {
        self.check_path(field).push(json!({ "identified": format!("!{field}") }))
    }

    fn agg_map(self, fields: &[(&str, Agg)]) -> (Self, Map<String, Value>) {
        let mut o = Map::new();
        let mut me = self;
        for (k, a) in fields {
            match a.to_json() {
                Ok(v) => {
                    o.insert((*k).to_string(), v);
                }
                Err(e) => me = me.fail(e),
            }
        }
        (me, o)
    }

    pub fn group(self, keys: &[&str], fields: &[(&str, Agg)]) -> Self {
        let mut me = self;
        for k in keys {
            me = me.check_path(k);
        }
        let (me, o) = me.agg_map(fields);
        me.push(json!({"group": {"group": keys, "fields": Value::Object(o)}}))
    }

    pub fn reduce(self, fields: &[(&str, Agg)]) -> Self {
        let (me, o) = self.agg_map(fields);
        me.push(json!({ "reduce": Value::Object(o) }))
    }

    /// Replaces the rows with `{"count": N}`.
    pub fn count(self) -> Self {
        self.push(json!({ "count": null }))
    }

    pub fn unwind(self, field: &str, keep_empty: bool) -> Self {
        self.check_path(field).push(json!({"unwind": {"field": field, "keepEmpty": keep_empty}}))
    }

    /// Left-joins fields from `sub` on `fields`; `mappings` are (output, sub-row field).
    pub fn merge(self, fields: &[&str], mappings: &[(&str, &str)], sub: Pipeline) -> Self {
        let m: Map<String, Value> = mappings.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        match sub.to_json() {
            Ok(p) => self.push(json!({"merge": {"fields": fields, "mappings": m, "pipeline": p}})),
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// Attaches the account's metadata object as `out`, looked up by the `account_id_field`.
    pub fn bulk_expand_account(self, out: &str, account_id_field: &str) -> Self {
        self.check_path(account_id_field).push(json!({"bulkExpand": { out: {"account": account_id_field} }}))
    }

    pub fn join(self, fields: &[&str], width: Option<usize>) -> Self {
        let mut o = json!({ "fields": fields });
        if let (Some(w), Some(m)) = (width, o.as_object_mut()) {
            m.insert("width".into(), json!(w));
        }
        self.push(json!({ "join": o }))
    }

    pub fn segment(self, id: &str) -> Self {
        self.push(json!({"segment": {"id": id}}))
    }

    /// A raw stage, for operators this builder does not model.
    pub fn stage(self, v: Value) -> Self {
        self.push(v)
    }

    /// The pipeline array.
    ///
    /// # Errors
    /// [`Error::Pipeline`] naming the first invalid piece.
    pub fn to_json(&self) -> Result<Value> {
        match &self.error {
            Some(e) => Err(Error::Pipeline(e.clone())),
            None => Ok(Value::Array(self.stages.clone())),
        }
    }

    /// The full request body.
    ///
    /// # Errors
    /// As [`Pipeline::to_json`].
    pub fn body(&self, request_id: &str) -> Result<Value> {
        Ok(json!({
            "response": {"mimeType": "application/json"},
            "request": {"requestId": request_id, "pipeline": self.to_json()?}
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_style_visitors_body() {
        let p = Pipeline::from_source(Source::Visitors { identified: Some(true) })
            .sort(&[SortKey::asc("visitorId")])
            .filter(Expr::field("visitorId").gt(""))
            .limit(100);
        let v = p.to_json().unwrap_or_default();
        assert_eq!(v[0], json!({"source": {"visitors": {"identified": true}}}));
        assert_eq!(v[2], json!({"filter": "(visitorId > \"\")"}));
    }

    #[test]
    fn events_need_time_and_bad_paths_fail() {
        assert!(Pipeline::from_source(Source::Events { apps: Apps::All }).to_json().is_err());
        let ok = Pipeline::events(Source::Events { apps: Apps::All }, TimeSeries::days(Time::Now, Span::Count(-1)))
            .to_json();
        let ok = ok.unwrap_or_default();
        assert_eq!(ok[0]["source"]["events"]["appId"], json!("expandAppIds(\"*\")"));
        assert_eq!(ok[0]["source"]["timeSeries"]["count"], json!(-1));
        assert!(
            Pipeline::from_source(Source::Accounts { apps: Apps::Default }).group(&["a b"], &[]).to_json().is_err()
        );
        assert!(
            Pipeline::from_source(Source::Accounts { apps: Apps::Default })
                .reduce(&[("n", Agg::Sum("x y".into()))])
                .to_json()
                .is_err()
        );
    }
}
