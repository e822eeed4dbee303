//! The aggregation planner and fast paths (keyset pushdown, ordered and limited entity scans,
//! lazy entity rows, columnar group-of-group and guide-event grouping) must give exactly the
//! rows, in exactly the order, and count exactly the rows scanned, that running every stage as
//! written gives. These tests run random pipelines both ways over a generated store seasoned with
//! the awkward cases (rows without an account or visitor, a duplicated feature id, events of a
//! missing guide, metadata already rewritten in full).

use std::sync::{Arc, OnceLock};

use emulator::pendo::bench::{extraction, results_with};
use emulator::pendo::store::{DAY_MS, NONE_U32};
use emulator::pendo::val::Val;
use emulator::pendo::{GenConfig, Store};
use proptest::prelude::*;
use serde_json::{Value as J, json};

const ANCHOR: i64 = 1_767_225_600_000;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let gc = GenConfig { seed: 3, accounts: 60, days: 12, anchor_day_ms: Some(ANCHOR), ..Default::default() };
        let mut s = emulator::pendo::generate::generate(&gc).store;
        let t = ANCHOR - 3 * DAY_MS + 3_600_000;
        // Rollups Pendo could not attribute, and ones of an unknown visitor.
        s.page_rows.push(t, NONE_U32, NONE_U32, 0, 4, 2);
        s.page_rows.push(t, 0, NONE_U32, 0, 1, 1);
        s.page_rows.push(t + 7_200_000, NONE_U32, 1, 1, 2, 5);
        // A feature id listed twice: both indexes decode to one value.
        let dup = s.features[0].clone();
        s.features.push(dup);
        let dup_index = (s.features.len() - 1) as u32;
        s.feature_rows.push(t, 2, 2, dup_index, 3, 1);
        s.feature_rows.push(t, 2, 2, 0, 1, 1);
        s.feature_rows.push(t, NONE_U32, NONE_U32, dup_index, 1, 1);
        // Guide events of a guide that is not there and of no account.
        let late = s.guide_events.iter().rev().find(|e| e.ts > ANCHOR - 5 * DAY_MS);
        if let Some(e) = late {
            let mut missing = e;
            missing.guide = 9_999;
            s.guide_events.push(missing);
            let mut orphan = e;
            orphan.account = NONE_U32;
            s.guide_events.push(orphan);
        }
        s.sort_events();
        // Metadata written through the API is held in full rather than compact.
        for i in [1usize, 5] {
            if let Some(Val::Obj(root)) = s.accounts.get_mut(i).map(|a| a.metadata_mut()) {
                Val::set_path(Arc::make_mut(root), "custom.csm", Val::str("Ann"));
            }
            if let Some(Val::Obj(root)) = s.visitors.get_mut(i).map(|v| v.metadata_mut()) {
                Val::set_path(Arc::make_mut(root), "agent.email", Val::str("x@y.example"));
            }
        }
        s.upsert_account(emulator::pendo::metadata::new_account("0-created", ANCHOR));
        s.upsert_visitor(emulator::pendo::metadata::new_visitor("0-created-visitor", ANCHOR));
        s
    })
}

fn run_both(p: &J, count_distinct: bool) {
    let s = store();
    let plain = results_with(s, p, ANCHOR, count_distinct, false);
    let fast = results_with(s, p, ANCHOR, count_distinct, true);
    match (plain, fast) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.1, b.1, "rows scanned differ for {p}");
            assert_eq!(a.0, b.0, "rows differ for {p}");
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("one path failed for {p}: {a:?} vs {b:?}"),
    }
}

fn id_of(col: &str, pick: usize) -> String {
    let s = store();
    match (col, pick % 5) {
        (_, 0) => String::new(),
        (_, 1) => "m".into(),
        ("visitorId", _) => s.visitors[pick % s.visitors.len()].id.to_string(),
        _ => s.accounts[pick % s.accounts.len()].id.to_string(),
    }
}

fn keyset(cols: &[&str], conds: &[(usize, usize, usize, bool)]) -> Option<J> {
    const OPS: [&str; 6] = [">", ">=", "<", "<=", "==", "!="];
    let parts: Vec<String> = conds
        .iter()
        .map(|&(c, op, pick, flip)| {
            let col = cols[c % cols.len()];
            let lit = J::from(id_of(col, pick)).to_string();
            let op = OPS[op % OPS.len()];
            if flip { format!("{lit} {op} {col}") } else { format!("{col} {op} {lit}") }
        })
        .collect();
    // Now and then the first two as an `||`, as a keyset on several keys is: the planner may
    // push only the floor both sides imply.
    let mut parts = parts;
    if parts.len() >= 2 && conds[0].2.is_multiple_of(3) {
        let second = parts.remove(1);
        parts[0] = format!("({} || {second})", parts[0]);
    }
    (!parts.is_empty()).then(|| json!({"filter": parts.join(" && ")}))
}

#[derive(Debug, Clone)]
struct Grouping {
    source: usize,
    conds: Vec<(usize, usize, usize, bool)>,
    identified: bool,
    keys1: Vec<usize>,
    fields1: Vec<(usize, usize)>,
    eval: bool,
    keys2: Vec<usize>,
    fields2: Vec<(usize, usize)>,
    sort_limit: Option<usize>,
    count_distinct: bool,
    /// A filter on columns other than the ids, before the group: `numEvents >= n || type == ..`,
    /// or on the item alone (`featureId == .. || appId == ..`).
    filter: Option<usize>,
    /// One group only (then perhaps a limit), not a group of a group.
    single: bool,
    /// The second group sums the first's sums of events and its row counts (and reads of the
    /// first's fields nothing else): what the engine's event totals ask.
    sums: bool,
}

fn grouping() -> impl Strategy<Value = Grouping> {
    let cond = (0..2usize, 0..6usize, 0..200usize, any::<bool>());
    (
        0..5usize,
        prop::collection::vec(cond, 0..3),
        any::<bool>(),
        prop::collection::vec(0..6usize, 0..4),
        prop::collection::vec((0..8usize, 0..6usize), 0..3),
        any::<bool>(),
        prop::collection::vec(0..6usize, 0..3),
        prop::collection::vec((0..8usize, 0..8usize), 0..3),
        prop::option::of(1..40usize),
        any::<bool>(),
        (prop::option::of(0..8usize), prop::bool::weighted(0.2), prop::bool::weighted(0.3)),
    )
        .prop_map(
            |(
                source,
                conds,
                identified,
                keys1,
                fields1,
                eval,
                keys2,
                fields2,
                sort_limit,
                count_distinct,
                (filter, single, sums),
            )| Grouping {
                source,
                conds,
                identified,
                keys1,
                fields1,
                eval,
                keys2,
                fields2,
                sort_limit,
                count_distinct,
                filter,
                single,
                sums,
            },
        )
}

fn grouping_pipeline(g: &Grouping) -> J {
    let ts = json!({"period": "dayRange", "first": ANCHOR, "count": -10});
    let (source, item) = match g.source {
        0 => (json!({"events": {"appId": "expandAppIds(\"*\")"}, "timeSeries": ts}), "pageId"),
        1 => (json!({"featureEvents": null, "timeSeries": ts}), "featureId"),
        2 => (json!({"trackEvents": null, "timeSeries": ts}), "trackTypeId"),
        3 => (json!({"guideEvents": null, "timeSeries": ts}), "guideId"),
        _ => (json!({"pollEvents": null, "timeSeries": ts}), "guideId"),
    };
    let cols = ["accountId", "visitorId", "day", item, "type", "numEvents"];
    let mut p = vec![json!({"source": source})];
    p.extend(keyset(&["accountId", "visitorId"], &g.conds));
    if g.identified {
        p.push(json!({"identified": "visitorId"}));
    }
    match g.filter {
        Some(n @ 0..4) => p.push(json!({"filter": format!("(numEvents >= {n}) || (type == \"guideSeen\")")})),
        Some(n) => {
            let s = store();
            let ids: Vec<&str> = match g.source {
                0 => s.pages.iter().map(|x| &*x.id).collect(),
                1 => s.features.iter().map(|x| &*x.id).collect(),
                2 => s.track_types.iter().map(|x| &*x.id).collect(),
                _ => s.guides.iter().map(|x| &*x.id).collect(),
            };
            let picked: Vec<String> =
                ids.iter().skip(n % 3).step_by(2).map(|id| format!("({item} == {})", J::from(*id))).collect();
            let app = if n % 2 == 0 { " || (appId == -1)" } else { "" };
            p.push(json!({"filter": format!("({}){app}", picked.join(" || "))}));
        }
        None => {}
    }
    let mut keys1: Vec<&str> = g.keys1.iter().map(|&k| cols[k]).collect();
    keys1.dedup();
    const AGGS: [&str; 8] = ["count", "sum", "first", "last", "min", "max", "avg", "list"];
    let mut fields1 = serde_json::Map::new();
    for (n, &(agg, col)) in g.fields1.iter().enumerate() {
        let arg = if agg == 0 && col == 5 { J::Null } else { J::from(cols[col]) };
        fields1.insert(format!("f{n}"), json!({ AGGS[agg % AGGS.len()]: arg }));
    }
    if g.sums {
        fields1.insert("e".into(), json!({"sum": "numEvents"}));
        fields1.insert("n".into(), json!({"count": null}));
    }
    p.push(json!({"group": {"group": keys1, "fields": fields1}}));
    if g.single {
        p.extend(g.sort_limit.map(|n| json!({"limit": n})));
        return J::Array(p);
    }
    if g.eval {
        p.push(json!({"eval": {"one": 1}}));
    }
    let mut keys2: Vec<&str> = g.keys2.iter().filter_map(|&k| keys1.get(k % keys1.len().max(1)).copied()).collect();
    keys2.dedup();
    // What the second group may read: the first's keys and fields, the constant, or rows.
    let mut readable: Vec<String> = keys1.iter().map(|k| k.to_string()).collect();
    readable.extend((0..g.fields1.len()).map(|n| format!("f{n}")));
    readable.push("one".into());
    let mut fields2 = serde_json::Map::new();
    for (n, &(agg, r)) in g.fields2.iter().enumerate() {
        let arg = if r == 7 { J::Null } else { J::from(readable[r % readable.len()].clone()) };
        let reads_a_field = (keys1.len()..keys1.len() + g.fields1.len()).contains(&(r % readable.len()));
        if g.sums && r != 7 && reads_a_field {
            continue;
        }
        let agg = if arg.is_null() { "count" } else { AGGS[agg % AGGS.len()] };
        fields2.insert(format!("g{n}"), json!({ agg: arg }));
    }
    if g.sums {
        fields2.insert("se".into(), json!({"sum": "e"}));
        fields2.insert("sn".into(), json!({"sum": "n"}));
    }
    p.push(json!({"group": {"group": keys2, "fields": fields2}}));
    if let Some(n) = g.sort_limit {
        if let Some(k) = keys2.first() {
            p.push(json!({"sort": [k]}));
        }
        p.push(json!({"limit": n}));
    }
    J::Array(p)
}

/// One group, then a sort (on its keys, mostly, either way; now and then on a field, which the
/// fast path leaves to the general one) and perhaps a limit: a keyset page of a group.
#[derive(Debug, Clone)]
struct SortedGroup {
    group: Grouping,
    sort: Vec<(usize, bool)>,
    on_field: bool,
}

fn sorted_group() -> impl Strategy<Value = SortedGroup> {
    (grouping(), prop::collection::vec((0..6usize, any::<bool>()), 1..4), prop::bool::weighted(0.1))
        .prop_map(|(group, sort, on_field)| SortedGroup { group, sort, on_field })
}

fn sorted_group_pipeline(q: &SortedGroup) -> J {
    let mut p = match grouping_pipeline(&Grouping {
        keys2: Vec::new(),
        fields2: Vec::new(),
        sort_limit: None,
        eval: false,
        single: false,
        ..q.group.clone()
    }) {
        J::Array(p) => p,
        _ => unreachable!("a pipeline is a list"),
    };
    // Drop the second group: this is one group and its page.
    p.pop();
    let group = &p[p.len() - 1]["group"];
    let keys: Vec<String> =
        group["group"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_string)).collect();
    let fields: Vec<String> = group["fields"].as_object().into_iter().flat_map(|f| f.keys().cloned()).collect();
    let mut sort: Vec<J> = q
        .sort
        .iter()
        .filter_map(|&(k, desc)| {
            keys.get(k % keys.len().max(1)).map(|k| J::from(if desc { format!("-{k}") } else { k.clone() }))
        })
        .collect();
    if q.on_field
        && let Some(f) = fields.first()
    {
        sort.push(J::from(f.clone()));
    }
    if !sort.is_empty() {
        p.push(json!({"sort": sort}));
    }
    if let Some(n) = q.group.sort_limit {
        p.push(json!({"limit": n}));
    }
    J::Array(p)
}

#[derive(Debug, Clone)]
struct EntityQuery {
    visitors: bool,
    identified: bool,
    conds: Vec<(usize, usize, usize, bool)>,
    rename: bool,
    extra: Vec<usize>,
    filter_between: bool,
    eval_clobbers: bool,
    sort: Option<(bool, bool)>,
    limit: Option<usize>,
}

fn entity_query() -> impl Strategy<Value = EntityQuery> {
    let cond = (0..2usize, 0..6usize, 0..200usize, any::<bool>());
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(cond, 0..3),
        any::<bool>(),
        prop::collection::vec(0..9usize, 0..4),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((any::<bool>(), any::<bool>())),
        prop::option::of(0..120usize),
    )
        .prop_map(|(visitors, identified, conds, rename, extra, filter_between, eval_clobbers, sort, limit)| {
            EntityQuery { visitors, identified, conds, rename, extra, filter_between, eval_clobbers, sort, limit }
        })
}

fn entity_pipeline(q: &EntityQuery) -> J {
    let id = if q.visitors { "visitorId" } else { "accountId" };
    let source = if q.visitors { json!({"visitors": {"identified": q.identified}}) } else { json!({"accounts": null}) };
    let mut p = vec![json!({"source": source})];
    p.extend(keyset(&[id, "visitorId"], &q.conds));
    let paths = [
        "metadata.auto.accountid",
        "metadata.auto.accountids",
        "metadata.agent.email",
        "metadata.custom.sfdcaccountid",
        "metadata.custom.csm",
        "metadata.auto",
        "metadata.auto.accountids[0]",
        "metadata.nope.x",
        "metadata.agent.name",
    ];
    let out = if q.rename { "key" } else { id };
    let mut select = serde_json::Map::new();
    select.insert(out.into(), J::from(id));
    for (n, &e) in q.extra.iter().enumerate() {
        select.insert(format!("x{n}"), J::from(paths[e % paths.len()]));
    }
    if q.filter_between {
        p.push(json!({"filter": "isNotNull(metadata.auto.lastvisit)"}));
    }
    p.push(json!({"select": select}));
    if q.eval_clobbers {
        p.push(json!({"eval": {out: "1"}}));
    } else {
        p.push(json!({"eval": {"other": "2"}}));
    }
    if let Some((desc, second)) = q.sort {
        let mut keys = vec![if desc { format!("-{out}") } else { out.to_string() }];
        if second {
            keys.push("x0".into());
        }
        p.push(json!({"sort": keys}));
    }
    if let Some(n) = q.limit {
        p.push(json!({"limit": n}));
    }
    J::Array(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn grouped_event_queries_match_the_plain_path(g in grouping()) {
        run_both(&grouping_pipeline(&g), g.count_distinct);
    }

    #[test]
    fn sorted_pages_of_a_group_match_the_plain_path(q in sorted_group()) {
        run_both(&sorted_group_pipeline(&q), q.group.count_distinct);
    }

    #[test]
    fn entity_queries_match_the_plain_path(q in entity_query()) {
        run_both(&entity_pipeline(&q), true);
    }
}

#[test]
fn compact_metadata_fields_read_as_the_built_document() {
    let s = store();
    let groups = ["auto", "agent", "custom", "pendo", "nope"];
    let fields = [
        "id",
        "accountid",
        "accountids",
        "firstvisit",
        "lastvisit",
        "lastupdated",
        "idhash",
        "email",
        "full_name",
        "role",
        "department",
        "donotprocess",
        "name",
        "website",
        "sfdcaccountid",
        "parentaccountid",
        "plan",
        "arr",
        "trial",
        "renewaldate",
        "csm",
        "x",
    ];
    let mut checked = 0;
    for (id, meta, doc) in s
        .visitors
        .iter()
        .map(|v| (&v.id, &v.meta, v.metadata()))
        .chain(s.accounts.iter().map(|a| (&a.id, &a.meta, a.metadata())))
    {
        for g in groups {
            for f in fields {
                assert_eq!(meta.field(id, g, f).to_json(), doc.field(g).field(f).to_json(), "{id} {g}.{f}");
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
}

#[test]
fn the_engines_paged_extraction_matches_the_plain_path_at_any_page_size() {
    let s = store();
    for page in [1, 2, 3, 7, 50, 100_000] {
        let fast = extraction(s, ANCHOR, page, true);
        let plain = extraction(s, ANCHOR, page, false);
        match (fast, plain) {
            (Ok(f), Ok(p)) => {
                assert_eq!(f.len(), 11);
                for ((tf, rf), (_, rp)) in f.iter().zip(&p) {
                    assert!(!rp.is_empty(), "{} returned nothing", tf.name);
                    assert_eq!(rf, rp, "{} at {page} rows a page", tf.name);
                }
            }
            // A page of one or two rows cannot move past a key shared by two (or three, with the
            // overlap) rows: both paths must say so, the same way.
            (Err(f), Err(p)) => {
                assert!(page <= 2, "{f}");
                assert_eq!(f, p);
            }
            (f, p) => panic!("paths disagree at {page}: {:?} vs {:?}", f.err(), p.err()),
        }
    }
}

#[test]
fn keyset_pages_scan_as_many_rows_as_the_whole_query() {
    // Usage counts what Pendo would scan; pushing the keyset into the scan must not change it.
    let s = store();
    let last = s.accounts.iter().map(|a| a.id.to_string()).max().unwrap();
    let p = json!([
        {"source": {"events": null, "timeSeries": {"period": "dayRange", "first": ANCHOR, "count": -10}}},
        {"filter": format!("accountId > {}", J::from(last.as_str()))},
        {"group": {"group": ["accountId"], "fields": {"n": {"count": null}}}}
    ]);
    let (rows, scanned) = results_with(s, &p, ANCHOR, true, true).unwrap();
    assert!(rows.is_empty());
    assert!(scanned > 100, "scanned {scanned}");
    run_both(&p, true);
}
