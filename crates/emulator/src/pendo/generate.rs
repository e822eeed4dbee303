//! Deterministic world generation: a Pendo subscription for N accounts (visitors on a heavy-tailed
//! distribution, daily event rollups with trends, features incl. premium ones, guides with
//! completion, NPS answers) and — from the same seed — the Salesforce org that describes the same
//! companies (Accounts, Contacts, Users, open trial Opportunities), including the awkward cases a
//! matcher must survive: duplicate website domains, free-mail visitors, accounts missing from
//! Salesforce.
//!
//! Every account is generated from its own RNG stream (seed, account index), so the Salesforce
//! side can be produced without generating events, and adding accounts never changes earlier ones.
//! Absolute times hang off `anchor_day_ms` (today's local midnight by default): the same seed and
//! anchor give byte-identical data.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::store::{
    Account, Channel, Compact, CompactAccount, CompactVisitor, DAY_MS, DEFAULT_APP_ID, Email, EventKind, GuideEvent,
    GuideEventType, GuideTable, HOUR_MS, Item, Meta, MetaKind, NONE_U32, Net, Responses, Segment, Store, Visitor,
    base_schema,
};
use super::val::{Obj, Val};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GenConfig {
    pub seed: u64,
    pub accounts: usize,
    /// Days of history before the anchor day.
    pub days: u32,
    /// Local midnight of "today" in epoch ms; filled from the emulator clock when absent.
    pub anchor_day_ms: Option<i64>,
    pub timezone_offset_minutes: i32,
    /// Multiplies how often visitors are active (1.0 = realistic B2B SaaS usage).
    pub activity: f64,
    /// The subsidiaries that share their predecessor's e-mail domain become its children:
    /// `ParentId` in Salesforce, `custom.parentaccountid` in Pendo. Off by default, so that
    /// the figures of existing worlds do not move.
    pub hierarchies: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            accounts: 50,
            days: 60,
            anchor_day_ms: None,
            timezone_offset_minutes: 0,
            activity: 1.0,
            hierarchies: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenStats {
    pub accounts: usize,
    pub visitors: usize,
    pub page_rows: usize,
    pub feature_rows: usize,
    pub track_rows: usize,
    pub guide_events: usize,
    pub approx_bytes: usize,
}

pub struct Generated {
    pub store: Store,
    pub stats: GenStats,
}

/// sObject API name → records (field API names, with an 18-char `Id`), ready to POST to the
/// Salesforce emulator's `/__emulator/records/{sobject}`.
pub type SalesforceOrg = BTreeMap<String, Vec<serde_json::Value>>;

pub fn local_midnight(ms: i64, tz_minutes: i32) -> i64 {
    let off = i64::from(tz_minutes) * 60_000;
    ms.saturating_add(off).div_euclid(DAY_MS).saturating_mul(DAY_MS).saturating_sub(off)
}

// ---------------------------------------------------------------------------------------------
// Word lists. Small on purpose: combinations give enough variety, and they keep the crate free of
// a fake-data dependency.

const NAME_A: &[&str] = &[
    "North",
    "Blue",
    "Iron",
    "Silver",
    "Bright",
    "Cedar",
    "Granite",
    "Harbor",
    "Summit",
    "Maple",
    "Falcon",
    "Quantum",
    "Orbit",
    "Pioneer",
    "Crescent",
    "Atlas",
    "Beacon",
    "Copper",
    "Evergreen",
    "Lumen",
    "Nova",
    "Prairie",
    "Redwood",
    "Sterling",
    "Tidal",
    "Vertex",
    "Willow",
    "Zenith",
    "Aurora",
    "Cobalt",
    "Delta",
    "Ember",
];
const NAME_B: &[&str] = &[
    "wind", "stone", "field", "bridge", "light", "point", "wave", "peak", "works", "path", "gate", "line", "forge",
    "crest", "spring", "rock",
];
const NAME_C: &[&str] = &[
    "Labs",
    "Systems",
    "Inc",
    "Group",
    "Software",
    "Analytics",
    "Health",
    "Logistics",
    "Partners",
    "Technologies",
    "Retail",
    "Energy",
];
const TLDS: &[&str] = &["com", "com", "com", "io", "co", "net"];
pub(crate) const FIRST: &[&str] = &[
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Kira", "Liam", "Maya", "Noah",
    "Olivia", "Priya", "Quinn", "Ravi", "Sofia", "Tom", "Uma", "Victor", "Wen", "Xavier", "Yara", "Zoe", "Amir", "Bea",
    "Carlos", "Dana", "Elif", "Femi",
];
pub(crate) const LAST: &[&str] = &[
    "Adams", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen", "Khan", "Lopez",
    "Martin", "Nguyen", "Okafor", "Patel", "Quinn", "Rossi", "Smith", "Tanaka", "Ueda", "Varga", "Walsh", "Xu",
    "Young", "Zimmer", "Novak", "Silva",
];
pub const FREE_MAIL: &[&str] = &["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com"];
pub(crate) const ROLES: &[&str] = &["admin", "user", "user", "user", "viewer", "manager"];
const PLANS: &[&str] = &["starter", "growth", "enterprise"];
const NPS_REASONS_GOOD: &[&str] =
    &["Keep up the great work!", "Saves my team hours every week.", "Reporting is excellent.", ""];
const NPS_REASONS_MID: &[&str] = &["Does the job.", "Some features are hard to find.", ""];
const NPS_REASONS_BAD: &[&str] =
    &["Too slow lately.", "Exports keep failing.", "We are moving to another tool.", "Support took days to answer."];

/// (name, premium, core event)
const FEATURES: &[(&str, bool, bool)] = &[
    ("Create Dashboard", false, true),
    ("Share Dashboard", false, true),
    ("Export CSV", false, true),
    ("Filter Results", false, false),
    ("Invite User", false, true),
    ("Edit Profile", false, false),
    ("Search", false, false),
    ("Create Report", false, true),
    ("Schedule Report", false, false),
    ("Add Comment", false, false),
    ("Upload File", false, false),
    ("Notifications Settings", false, false),
    ("Advanced Analytics", true, true),
    ("SSO Configuration", true, false),
    ("API Access", true, true),
    ("Workflow Automation", true, true),
    ("Custom Roles", true, false),
    ("Audit Log", true, false),
];
const PAGES: &[(&str, &str)] = &[
    ("Home", "/home"),
    ("Dashboards", "/dashboards"),
    ("Dashboard Detail", "/dashboards/*"),
    ("Reports", "/reports"),
    ("Report Builder", "/reports/new"),
    ("Settings", "/settings"),
    ("Users", "/settings/users"),
    ("Integrations", "/settings/integrations"),
    ("Billing", "/settings/billing"),
    ("Analytics", "/analytics"),
    ("Automation", "/automation"),
    ("Help Center", "/help"),
];
const TRACK_TYPES: &[&str] =
    &["Signed Up", "Report Exported", "Invoice Paid", "Integration Connected", "Plan Upgraded"];

/// Creator shown on catalogue items, as the real `createdByUser` objects look.
fn pendo_user() -> Val {
    let mut o = Obj::new();
    o.insert("id".into(), Val::str("5629499534213120"));
    o.insert("username".into(), Val::str("pm@emulator.example"));
    o.insert("first".into(), Val::str("Pat"));
    o.insert("last".into(), Val::str("Manager"));
    o.insert("role".into(), Val::Int(8));
    o.insert("userType".into(), Val::str(""));
    Val::obj(o)
}

/// Stable pseudo-random ids in Pendo's style (22-ish chars of base64url).
fn pendo_id(rng: &mut StdRng) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22).map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char).collect()
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn stream_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(splitmix(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)) ^ index))
}

const STREAM_CATALOG: u64 = 1;
const STREAM_ACCOUNT: u64 = 2;
const STREAM_ACTIVITY: u64 = 3;
pub(crate) const STREAM_ORG: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Account profiles: the shared truth both systems are generated from.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trend {
    Growing,
    Steady,
    Declining,
    /// Activity stops completely some weeks before the anchor.
    Churned,
    /// Steady, then usage falls to a fifth at `drop_day`.
    SharpDrop,
}

#[derive(Clone, Debug)]
pub struct VisitorProfile {
    pub id: String,
    pub first: &'static str,
    pub last: &'static str,
    pub email: String,
    pub free_mail: bool,
    pub anonymous: bool,
    pub role: &'static str,
    /// Probability of being active on a normal day.
    pub activity: f64,
    pub premium_user: bool,
    /// Days before the anchor when the visitor first appeared.
    pub joined_days_ago: u32,
    /// Has a Contact in Salesforce.
    pub has_contact: bool,
}

#[derive(Clone, Debug)]
pub struct AccountProfile {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub domain: String,
    pub plan: &'static str,
    pub arr: i64,
    pub trend: Trend,
    pub drop_day: u32,
    pub trial: bool,
    /// Has a Salesforce Account at all.
    pub in_salesforce: bool,
    /// Salesforce holds a second Account with the same website (ambiguous by domain).
    pub sf_duplicate: bool,
    /// Shares its email domain with the previous account (subsidiaries).
    pub shared_domain: bool,
    /// With [`GenConfig::hierarchies`]: the parent account's index and Pendo id.
    pub parent: Option<(usize, String)>,
    /// Pendo account metadata carries `custom.sfdcaccountid`.
    pub has_sfdc_id_in_pendo: bool,
    /// The Salesforce Account carries `Pendo_Account_Id__c`.
    pub has_pendo_id_in_sf: bool,
    pub visitors: Vec<VisitorProfile>,
    pub created_days_ago: u32,
}

fn slug(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect::<String>()
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
}

fn base_name_and_domain(seed: u64, i: usize) -> (String, String) {
    let mut rng = stream_rng(seed, STREAM_ACCOUNT, i as u64);
    let a = NAME_A[rng.random_range(0..NAME_A.len())];
    let b = NAME_B[rng.random_range(0..NAME_B.len())];
    let c = NAME_C[rng.random_range(0..NAME_C.len())];
    let tld = TLDS[rng.random_range(0..TLDS.len())];
    let name = format!("{a}{b} {c}");
    // The index keeps domains unique: name collisions are the generator's business, not the
    // matcher's; deliberate collisions are modelled by `shared_domain`.
    let domain = format!("{}{}{}.{tld}", a.to_ascii_lowercase(), b, i);
    (name, domain)
}

/// Whether account `i` shares its predecessor's domain: the first draw of its profile stream.
fn shares_domain(seed: u64, i: usize) -> bool {
    i > 0 && stream_rng(seed, STREAM_ACCOUNT, (i as u64) | (1 << 40)).random_bool(0.03)
}

/// Everything about account `i` except its events. Cheap; used by both generators.
pub fn account_profile(gc: &GenConfig, i: usize) -> AccountProfile {
    let (mut name, base_domain) = base_name_and_domain(gc.seed, i);
    // A second stream so the profile does not shift when name generation changes.
    let mut rng = stream_rng(gc.seed, STREAM_ACCOUNT, (i as u64) | (1 << 40));
    let shared_domain = i > 0 && rng.random_bool(0.03);
    let mut parent = None;
    let domain = if shared_domain {
        let (prev_name, prev_domain) = base_name_and_domain(gc.seed, i - 1);
        // A predecessor that is itself a subsidiary has another's domain: no family then.
        if gc.hierarchies && !shares_domain(gc.seed, i - 1) {
            parent = Some((i - 1, format!("{}-{}", slug(&prev_name), i - 1)));
        }
        name = format!("{prev_name} EMEA");
        prev_domain
    } else {
        base_domain
    };
    let plan = PLANS[rng.random_range(0..PLANS.len())];
    let arr = match plan {
        "starter" => rng.random_range(3..20) * 1_000,
        "growth" => rng.random_range(20..120) * 1_000,
        _ => rng.random_range(120..900) * 1_000,
    };
    let trend = match rng.random_range(0..100) {
        0..=24 => Trend::Growing,
        25..=64 => Trend::Steady,
        65..=79 => Trend::Declining,
        80..=87 => Trend::Churned,
        _ => Trend::SharpDrop,
    };
    let drop_day = rng.random_range(3..21);
    let trial = rng.random_bool(0.12);
    let in_salesforce = !rng.random_bool(0.06);
    let sf_duplicate = in_salesforce && rng.random_bool(0.04);
    let has_sfdc_id_in_pendo = in_salesforce && rng.random_bool(0.4);
    let has_pendo_id_in_sf = in_salesforce && rng.random_bool(0.3);
    let created_days_ago = rng.random_range(gc.days.min(30)..gc.days.max(31) + 300);

    // Heavy tail: most accounts have a handful of users, a few have hundreds.
    let u: f64 = rng.random_range(0.0005..1.0);
    let n_visitors = ((2.0 / u.powf(0.7)).floor() as usize).clamp(1, 2_000);
    let id = format!("{}-{}", slug(&name), i);
    let mut visitors = Vec::with_capacity(n_visitors + 1);
    for v in 0..n_visitors {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let free_mail = rng.random_bool(0.07);
        let local = format!("{}.{}{}", first.to_ascii_lowercase(), last.to_ascii_lowercase(), v);
        let email = if free_mail {
            format!("{local}@{}", FREE_MAIL[rng.random_range(0..FREE_MAIL.len())])
        } else {
            format!("{local}@{domain}")
        };
        let joined_days_ago = if rng.random_bool(0.15) {
            rng.random_range(0..gc.days.max(1))
        } else {
            rng.random_range(gc.days..gc.days + 200)
        };
        visitors.push(VisitorProfile {
            // Many Pendo installs use the e-mail as visitor id; others an opaque id. Mix both.
            id: if v % 3 == 0 { email.clone() } else { format!("{id}-u{v}") },
            first,
            last,
            email,
            free_mail,
            anonymous: false,
            role: ROLES[rng.random_range(0..ROLES.len())],
            activity: rng.random_range(0.15..0.75),
            premium_user: plan != "starter" && rng.random_bool(0.35),
            joined_days_ago,
            has_contact: in_salesforce && rng.random_bool(0.7),
        });
    }
    if rng.random_bool(0.2) {
        visitors.push(VisitorProfile {
            id: format!("_PENDO_T_{}", pendo_id(&mut rng)),
            first: "",
            last: "",
            email: String::new(),
            free_mail: false,
            anonymous: true,
            role: "",
            activity: 0.1,
            premium_user: false,
            joined_days_ago: rng.random_range(0..gc.days.max(1)),
            has_contact: false,
        });
    }
    AccountProfile {
        index: i,
        id,
        name,
        domain,
        plan,
        arr,
        trend,
        drop_day,
        trial,
        in_salesforce,
        sf_duplicate,
        shared_domain,
        parent,
        has_sfdc_id_in_pendo,
        has_pendo_id_in_sf,
        visitors,
        created_days_ago,
    }
}

/// Activity multiplier for `days_ago` (0 = the anchor day).
fn trend_factor(trend: Trend, days_ago: u32, drop_day: u32, horizon: u32) -> f64 {
    let t = f64::from(days_ago) / f64::from(horizon.max(1));
    match trend {
        Trend::Growing => 1.3 - 0.8 * t,
        Trend::Steady => 1.0,
        Trend::Declining => 0.35 + 0.9 * t,
        Trend::Churned => {
            if days_ago < drop_day + 14 {
                0.0
            } else {
                0.8
            }
        }
        Trend::SharpDrop => {
            if days_ago < drop_day {
                0.2
            } else {
                1.0
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Salesforce half lives with the Salesforce emulator; re-exported so the world keeps one
// entry point.

pub use crate::salesforce::world::{salesforce_org, sf_account_id, sf_checksum, sf_id};

// ---------------------------------------------------------------------------------------------
// The Pendo side.

/// A store with the schema groups every subscription has and no data.
pub fn empty_store() -> Store {
    Store {
        apps: vec![(DEFAULT_APP_ID, "Emulated App".into())],
        visitor_schema: base_schema(MetaKind::Visitor, &[("department", "string", "Department")]),
        account_schema: base_schema(
            MetaKind::Account,
            &[
                ("sfdcaccountid", "string", "Salesforce Account ID"),
                ("parentaccountid", "string", "Parent Account ID"),
                ("plan", "string", "Plan"),
                ("arr", "float", "ARR"),
                ("trial", "boolean", "Trial"),
                ("renewaldate", "time", "Renewal Date"),
                ("csm", "string", "CSM"),
            ],
        ),
        ..Store::default()
    }
}

fn catalog_item(kind: &str, id: String, name: &str, created: i64, updated: i64, extra: Obj) -> Val {
    let mut o = Obj::new();
    o.insert("id".into(), Val::from(id));
    o.insert("kind".into(), Val::str(kind));
    o.insert("name".into(), Val::str(name));
    o.insert("appId".into(), Val::Int(DEFAULT_APP_ID));
    o.insert("appIds".into(), Val::arr(vec![Val::Int(DEFAULT_APP_ID)]));
    o.insert("createdAt".into(), Val::Int(created));
    o.insert("lastUpdatedAt".into(), Val::Int(updated));
    o.insert("createdByUser".into(), pendo_user());
    o.insert("lastUpdatedByUser".into(), pendo_user());
    o.insert("rootVersionId".into(), o.get("id").cloned().unwrap_or_default());
    o.insert(
        "stableVersionId".into(),
        Val::from(format!("{}-stable", o.get("id").map(|v| v.to_string()).unwrap_or_default())),
    );
    o.insert("dirty".into(), Val::Bool(false));
    o.extend(extra);
    Val::obj(o)
}

fn build_catalog(store: &mut Store, seed: u64, anchor: i64) {
    let mut rng = stream_rng(seed, STREAM_CATALOG, 0);
    let t0 = anchor - 400 * DAY_MS;
    let mut page_ids = Vec::new();
    for (k, (name, path)) in PAGES.iter().enumerate() {
        let id = pendo_id(&mut rng);
        page_ids.push(id.clone());
        let created = t0 + k as i64 * HOUR_MS * 7;
        let mut extra = Obj::new();
        extra.insert(
            "rules".into(),
            Val::arr(vec![Val::obj(Obj::from_iter([
                ("rule".to_string(), Val::from(format!("//*{path}"))),
                ("designerHint".to_string(), Val::str(path)),
            ]))]),
        );
        extra.insert("isCoreEvent".into(), Val::Bool(k < 4));
        extra.insert(
            "group".into(),
            Val::obj(Obj::from_iter([
                ("id".to_string(), Val::str("grp-core")),
                ("name".to_string(), Val::str("Core")),
            ])),
        );
        store.pages.push(Item {
            id: Arc::from(id.as_str()),
            app_id: DEFAULT_APP_ID,
            doc: catalog_item("Page", id, name, created, created + rng.random_range(1..300) * DAY_MS / 10, extra),
        });
    }
    for (k, (name, premium, core)) in FEATURES.iter().enumerate() {
        let id = pendo_id(&mut rng);
        let created = t0 + k as i64 * HOUR_MS * 5;
        let mut extra = Obj::new();
        extra.insert("pageId".into(), Val::str(&page_ids[k % page_ids.len()]));
        extra.insert("elementPathRules".into(), Val::arr(vec![Val::from(format!("#{}", slug(name)))]));
        extra.insert("isCoreEvent".into(), Val::Bool(*core));
        extra.insert("appWide".into(), Val::Bool(false));
        let (gid, gname) = if *premium { ("grp-premium", "Premium") } else { ("grp-core", "Core") };
        extra.insert(
            "group".into(),
            Val::obj(Obj::from_iter([("id".to_string(), Val::str(gid)), ("name".to_string(), Val::str(gname))])),
        );
        extra.insert("color".into(), Val::str(if *premium { ".groupColor02" } else { ".groupColor01" }));
        store.features.push(Item {
            id: Arc::from(id.as_str()),
            app_id: DEFAULT_APP_ID,
            doc: catalog_item("Feature", id, name, created, created + rng.random_range(1..300) * DAY_MS / 10, extra),
        });
    }
    for (k, name) in TRACK_TYPES.iter().enumerate() {
        let id = pendo_id(&mut rng);
        let created = t0 + k as i64 * HOUR_MS * 3;
        let mut extra = Obj::new();
        extra.insert("trackTypeName".into(), Val::str(name));
        extra.insert("trackTypeRules".into(), Val::arr(vec![Val::str(name)]));
        store.track_types.push(Item {
            id: Arc::from(id.as_str()),
            app_id: DEFAULT_APP_ID,
            doc: catalog_item("TrackType", id, name, created, created + DAY_MS, extra),
        });
    }
    // Guides: onboarding (multi-step), NPS (rating + reason polls), a yes/no poll, an announcement.
    let guide_defs: &[(&str, usize, &[&str])] = &[
        ("Welcome Tour", 4, &[]),
        ("Quarterly NPS Survey", 2, &["NPSRating", "NPSReason"]),
        ("Was this report useful?", 1, &["PositiveNegative"]),
        ("New: Workflow Automation", 1, &[]),
        ("Advanced Analytics Walkthrough", 3, &[]),
    ];
    for (k, (name, steps, polls)) in guide_defs.iter().enumerate() {
        let id = pendo_id(&mut rng);
        let created = t0 + k as i64 * DAY_MS;
        let updated = created + 30 * DAY_MS;
        let poll_ids: Vec<String> = polls.iter().map(|_| pendo_id(&mut rng)).collect();
        let step_ids: Vec<String> = (0..*steps).map(|_| pendo_id(&mut rng)).collect();
        let step_vals: Vec<Val> = step_ids
            .iter()
            .enumerate()
            .map(|(r, sid)| {
                let mut s = Obj::new();
                s.insert("id".into(), Val::str(sid));
                s.insert("guideId".into(), Val::str(&id));
                s.insert("type".into(), Val::str(if polls.is_empty() { "lightbox" } else { "poll" }));
                s.insert("pageId".into(), Val::str(&page_ids[r % page_ids.len()]));
                s.insert("rank".into(), Val::Int(r as i64 * 5_000_000));
                s.insert("advanceMethod".into(), Val::str("button"));
                s.insert("lastUpdatedAt".into(), Val::Int(updated));
                s.insert("resetAt".into(), Val::Int(0));
                let pids: Vec<Val> = if r == 0 { poll_ids.iter().map(|p| Val::str(p)).collect() } else { vec![] };
                s.insert("pollIds".into(), Val::arr(pids));
                Val::obj(s)
            })
            .collect();
        let poll_vals: Vec<Val> = polls
            .iter()
            .zip(&poll_ids)
            .map(|(ty, pid)| {
                let mut p = Obj::new();
                p.insert("id".into(), Val::str(pid));
                let question = match *ty {
                    "NPSRating" => "How likely are you to recommend us to a friend or colleague?",
                    "NPSReason" => "What is the main reason for your score?",
                    _ => "Was this helpful?",
                };
                p.insert("question".into(), Val::str(question));
                let mut attrs = Obj::new();
                attrs.insert("type".into(), Val::str(ty));
                if *ty == "NPSRating" {
                    attrs.insert("leftLabel".into(), Val::str("Not likely"));
                    attrs.insert("rightLabel".into(), Val::str("Very likely"));
                }
                p.insert("attributes".into(), Val::obj(attrs));
                let numeric: Vec<Val> = if *ty == "NPSRating" { (0..=10).map(Val::Int).collect() } else { vec![] };
                p.insert("numericResponses".into(), Val::arr(numeric));
                p.insert("resetAt".into(), Val::Int(0));
                Val::obj(p)
            })
            .collect();
        let mut extra = Obj::new();
        extra.insert("state".into(), Val::str("public"));
        extra.insert("launchMethod".into(), Val::str(if k == 1 { "auto" } else { "api" }));
        extra.insert("isMultiStep".into(), Val::Bool(*steps > 1));
        extra.insert("isTraining".into(), Val::Bool(false));
        extra.insert("publishedAt".into(), Val::Int(created + DAY_MS));
        extra.insert("publishedEver".into(), Val::Bool(true));
        extra.insert("resetAt".into(), Val::Int(0));
        extra.insert("expiresAfter".into(), Val::Int(0));
        let mut attrs = Obj::new();
        attrs.insert("type".into(), Val::str(if polls.is_empty() { "building-block" } else { "poll" }));
        attrs.insert("device".into(), Val::obj(Obj::from_iter([("type".to_string(), Val::str("desktop"))])));
        attrs.insert("priority".into(), Val::Int(k as i64));
        extra.insert("attributes".into(), Val::obj(attrs));
        extra.insert(
            "audience".into(),
            Val::arr(vec![
                Val::obj(Obj::from_iter([(
                    "source".to_string(),
                    Val::obj(Obj::from_iter([("visitors".to_string(), Val::Null)])),
                )])),
                Val::obj(Obj::from_iter([("identified".to_string(), Val::str("visitorId"))])),
            ]),
        );
        extra.insert("steps".into(), Val::arr(step_vals));
        extra.insert("polls".into(), Val::arr(poll_vals));
        store.guides.push(super::store::Guide {
            id: Arc::from(id.as_str()),
            app_id: DEFAULT_APP_ID,
            doc: catalog_item("Guide", id, name, created, updated, extra),
            step_ids: step_ids.iter().map(|s| Arc::from(s.as_str())).collect(),
            poll_ids: poll_ids.iter().map(|s| Arc::from(s.as_str())).collect(),
        });
    }
    for (k, name) in ["Active accounts (30 days)", "Feature adoption by account"].iter().enumerate() {
        let id = pendo_id(&mut rng);
        let created = t0 + k as i64 * DAY_MS;
        let mut extra = Obj::new();
        extra.insert("type".into(), Val::str(if k == 0 { "Account" } else { "Visitor" }));
        extra.insert("shared".into(), Val::Bool(true));
        extra.insert("scope".into(), Val::str("global"));
        extra.insert("level".into(), Val::str(if k == 0 { "account" } else { "visitor" }));
        extra.insert(
            "aggregation".into(),
            Val::obj(Obj::from_iter([(
                "pipeline".to_string(),
                Val::arr(vec![Val::obj(Obj::from_iter([(
                    "source".to_string(),
                    Val::obj(Obj::from_iter([((if k == 0 { "accounts" } else { "visitors" }).to_string(), Val::Null)])),
                )]))]),
            )])),
        );
        extra.insert("lastRunAt".into(), Val::Int(anchor - DAY_MS));
        store.reports.push(Item {
            id: Arc::from(id.as_str()),
            app_id: DEFAULT_APP_ID,
            doc: catalog_item("Report", id, name, created, created + DAY_MS, extra),
        });
    }
}

/// Generates the whole Pendo subscription for `gc`.
pub fn generate(gc: &GenConfig) -> Generated {
    let anchor = gc.anchor_day_ms.unwrap_or(0);
    let mut store = empty_store();
    // Days are cut in the subscription's timezone, as the anchor day is.
    store.day_tz_ms = i64::from(gc.timezone_offset_minutes) * 60_000;
    build_catalog(&mut store, gc.seed, anchor);
    let premium_features: Vec<u32> = FEATURES.iter().enumerate().filter(|f| f.1.1).map(|f| f.0 as u32).collect();
    let basic_features: Vec<u32> = FEATURES.iter().enumerate().filter(|f| !f.1.1).map(|f| f.0 as u32).collect();
    let n_pages = PAGES.len() as u32;
    let n_tracks = TRACK_TYPES.len() as u32;
    let days = gc.days.max(1);
    let mut enterprise_visitors: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    let mut guide_events = GuideTable::default();
    let mut responses = Responses::default();

    // Rows are generated per account, then sorted once at the end.
    for i in 0..gc.accounts {
        let p = account_profile(gc, i);
        let account_idx = store.accounts.len() as u32;
        let mut rng = stream_rng(gc.seed, STREAM_ACTIVITY, i as u64);
        let mut acc_first = i64::MAX;
        let mut acc_last = i64::MIN;
        let mut visitor_meta = Vec::with_capacity(p.visitors.len());
        for v in &p.visitors {
            let visitor_idx = store.visitors.len() as u32 + visitor_meta.len() as u32;
            let mut first_seen = i64::MAX;
            let mut last_seen = i64::MIN;
            let start_days_ago = v.joined_days_ago.min(days);
            for days_ago in (1..=start_days_ago).rev() {
                let day_start = anchor - i64::from(days_ago) * DAY_MS;
                let f = trend_factor(p.trend, days_ago, p.drop_day, days);
                let weekend = (day_start / DAY_MS + 4).rem_euclid(7) >= 5;
                let p_active = (v.activity * f * gc.activity * if weekend { 0.2 } else { 1.0 }).clamp(0.0, 1.0);
                if !rng.random_bool(p_active) {
                    continue;
                }
                let hour = day_start + rng.random_range(8..19) * HOUR_MS;
                first_seen = first_seen.min(hour);
                last_seen = last_seen.max(hour + 59 * 60_000);
                let n_pages_today = rng.random_range(1..4u32);
                let page0 = rng.random_range(0..n_pages);
                for k in 0..n_pages_today {
                    let page = (page0 + k * 5) % n_pages;
                    let ev = rng.random_range(3..60);
                    store.page_rows.push(
                        hour,
                        visitor_idx,
                        account_idx,
                        page,
                        ev,
                        rng.random_range(1..(ev / 2).max(2)),
                    );
                }
                let n_feats = rng.random_range(0..4u32);
                let f0 = rng.random_range(0..basic_features.len());
                for k in 0..n_feats as usize {
                    let feat = basic_features[(f0 + k * 3) % basic_features.len()];
                    store.feature_rows.push(
                        hour,
                        visitor_idx,
                        account_idx,
                        feat,
                        rng.random_range(1..15),
                        rng.random_range(0..3),
                    );
                }
                if v.premium_user && rng.random_bool(0.5) {
                    let feat = premium_features[rng.random_range(0..premium_features.len())];
                    store.feature_rows.push(
                        hour,
                        visitor_idx,
                        account_idx,
                        feat,
                        rng.random_range(1..10),
                        rng.random_range(0..4),
                    );
                }
                if rng.random_bool(0.08) {
                    store.track_rows.push(hour, visitor_idx, account_idx, rng.random_range(0..n_tracks), 1, 0);
                }
            }
            let guide_rng_roll: f64 = rng.random_range(0.0..1.0);
            if first_seen != i64::MAX && !v.anonymous {
                add_guide_events(
                    &mut guide_events,
                    &mut responses,
                    &store,
                    &p,
                    visitor_idx,
                    account_idx,
                    first_seen,
                    last_seen,
                    guide_rng_roll,
                    &mut rng,
                );
            }
            if first_seen == i64::MAX {
                // Never active inside the window: seen before it.
                let t = anchor - i64::from(v.joined_days_ago + 1) * DAY_MS + 10 * HOUR_MS;
                first_seen = t;
                last_seen = t;
            } else {
                first_seen = first_seen.min(anchor - i64::from(v.joined_days_ago) * DAY_MS + 9 * HOUR_MS);
            }
            acc_first = acc_first.min(first_seen);
            acc_last = acc_last.max(last_seen);
            visitor_meta.push((first_seen, last_seen));
        }
        let account_id: Arc<str> = Arc::from(p.id.as_str());
        let domain: Arc<str> = Arc::from(p.domain.as_str());
        for (v, (first_seen, last_seen)) in p.visitors.iter().zip(visitor_meta) {
            let visitor = build_visitor(&account_id, &domain, v, first_seen, last_seen, &mut rng);
            if p.plan == "enterprise" && !v.anonymous {
                enterprise_visitors.insert(visitor.id.clone());
            }
            store.upsert_visitor(visitor);
        }
        store.upsert_account(build_account(gc, &p, &account_id, acc_first, acc_last));
    }
    guide_events.sort();
    store.guide_events = guide_events;
    store.responses = responses;
    store.sort_events();
    store.warm_days();
    store.segments.insert(
        "seg-enterprise-users".into(),
        Segment { id: "seg-enterprise-users".into(), name: "Enterprise users".into(), visitors: enterprise_visitors },
    );
    let stats = GenStats {
        accounts: store.accounts.len(),
        visitors: store.visitors.len(),
        page_rows: store.page_rows.len(),
        feature_rows: store.feature_rows.len(),
        track_rows: store.track_rows.len(),
        guide_events: store.guide_events.len(),
        approx_bytes: store.approx_bytes(),
    };
    Generated { store, stats }
}

#[allow(clippy::too_many_arguments)]
fn add_guide_events(
    out: &mut GuideTable,
    responses: &mut Responses,
    store: &Store,
    p: &AccountProfile,
    visitor: u32,
    account: u32,
    first_seen: i64,
    last_seen: i64,
    roll: f64,
    rng: &mut StdRng,
) {
    let mut ev = |ts: i64, guide: u32, step: u32, kind: GuideEventType, poll: u32, response: Val, channel: Channel| {
        let response = responses.intern(response);
        GuideEvent { ts, visitor, account, guide, step, poll, response, kind, channel }
    };
    // Welcome tour (guide 0): shown on first visit; 60% finish all 4 steps, others drop off.
    if let Some(g) = store.guides.first() {
        let mut t = first_seen + 120_000;
        let steps = g.step_ids.len() as u32;
        let reach = if roll < 0.6 { steps } else { rng.random_range(1..steps.max(2)) };
        for s in 0..reach {
            out.push(ev(t, 0, s, GuideEventType::GuideSeen, NONE_U32, Val::Null, Channel::Web));
            t += rng.random_range(5_000..60_000);
            if s + 1 < reach || reach == steps {
                out.push(ev(t, 0, s, GuideEventType::GuideAdvanced, NONE_U32, Val::Null, Channel::Web));
                t += 1_000;
            }
        }
        if reach < steps {
            out.push(ev(
                t,
                0,
                reach.saturating_sub(1),
                GuideEventType::GuideDismissed,
                NONE_U32,
                Val::Null,
                Channel::Web,
            ));
        }
    }
    // NPS (guide 1): about a third of active visitors answer once, mood following the trend.
    if rng.random_bool(0.35) && last_seen > first_seen {
        let t = rng.random_range(first_seen..=last_seen);
        let base: f64 = match p.trend {
            Trend::Growing => 8.5,
            Trend::Steady => 7.5,
            Trend::Declining | Trend::SharpDrop => 5.0,
            Trend::Churned => 3.5,
        };
        let rating = (base + rng.random_range(-3.0..3.0f64)).round().clamp(0.0, 10.0) as i64;
        let reasons = if rating >= 9 {
            NPS_REASONS_GOOD
        } else if rating >= 7 {
            NPS_REASONS_MID
        } else {
            NPS_REASONS_BAD
        };
        let reason = reasons[rng.random_range(0..reasons.len())];
        let channel = if rng.random_bool(0.2) { Channel::Email } else { Channel::Web };
        out.push(ev(t - 2_000, 1, 0, GuideEventType::GuideSeen, NONE_U32, Val::Null, channel));
        out.push(ev(t, 1, 0, GuideEventType::PollResponse, 0, Val::Int(rating), channel));
        out.push(ev(t + 50, 1, 0, GuideEventType::PollResponse, 1, Val::str(reason), channel));
        out.push(ev(t + 1_000, 1, 1, GuideEventType::GuideAdvanced, NONE_U32, Val::Null, channel));
    }
    // Yes/no poll (guide 2).
    if rng.random_bool(0.15) && last_seen > first_seen {
        let t = rng.random_range(first_seen..=last_seen);
        out.push(ev(t, 2, 0, GuideEventType::GuideSeen, NONE_U32, Val::Null, Channel::Web));
        let answer = if rng.random_bool(0.7) { "yes" } else { "no" };
        out.push(ev(t + 3_000, 2, 0, GuideEventType::PollResponse, 0, Val::str(answer), Channel::Web));
    }
    // Announcement (guide 3): seen by a fifth, mostly dismissed.
    if rng.random_bool(0.2) {
        let t = last_seen - 30_000;
        out.push(ev(t, 3, 0, GuideEventType::GuideSeen, NONE_U32, Val::Null, Channel::Web));
        let kind = if rng.random_bool(0.7) { GuideEventType::GuideDismissed } else { GuideEventType::GuideAdvanced };
        out.push(ev(t + 4_000, 3, 0, kind, NONE_U32, Val::Null, Channel::Web));
    }
}

pub(crate) const DEPARTMENTS: &[&str] = &["Engineering", "Finance", "Operations", "Sales", "Marketing"];

/// `v`'s e-mail as [`Email::Parts`], when it has the shape `account_profile` gives e-mails
/// (anything else is kept as text).
fn email_parts(v: &VisitorProfile, domain: &Arc<str>) -> Option<Email> {
    let (local, at) = v.email.split_once('@')?;
    let name = format!("{}.{}", v.first.to_ascii_lowercase(), v.last.to_ascii_lowercase());
    let digits = local.strip_prefix(name.as_str())?;
    let number: u16 = digits.parse().ok().filter(|n: &u16| n.to_string() == digits)?;
    let mail = if at == &**domain {
        0
    } else {
        FREE_MAIL.iter().position(|m| *m == at).and_then(|k| u8::try_from(k + 1).ok())?
    };
    let parts = Email::Parts { number, mail, domain: domain.clone() };
    Some(parts)
}

fn build_visitor(
    account: &Arc<str>,
    domain: &Arc<str>,
    v: &VisitorProfile,
    first: i64,
    last: i64,
    rng: &mut StdRng,
) -> Visitor {
    // The draws stay in the order they always had, so that later draws do not move.
    // Same types as ever too: a range of another type draws differently.
    let department = if v.anonymous { 0 } else { rng.random_range(0..5usize) as u8 };
    let ip = [rng.random_range(0..255i32) as u8, rng.random_range(1..255i32) as u8];
    let agent = rng.random_range(0..3usize) as u8;
    let country = rng.random_range(0..5usize) as u8;
    let index = |list: &[&str], word: &str| list.iter().position(|w| *w == word).map_or(0, |i| i as u8);
    Visitor {
        id: Arc::from(v.id.as_str()),
        meta: Meta::compact(Compact::Visitor(Box::new(CompactVisitor {
            account: account.clone(),
            email: email_parts(v, domain).unwrap_or_else(|| Email::Text(v.email.as_str().into())),
            first_name: index(FIRST, v.first),
            last_name: index(LAST, v.last),
            role: index(ROLES, v.role),
            department,
            anonymous: v.anonymous,
            first,
            last,
        }))),
        net: Net::Generated { ip, agent, country },
    }
}

fn build_account(gc: &GenConfig, p: &AccountProfile, account: &Arc<str>, first: i64, last: i64) -> Account {
    let anchor = gc.anchor_day_ms.unwrap_or(0);
    let (first, last) = if first == i64::MAX { (anchor, anchor) } else { (first, last) };
    Account {
        id: account.clone(),
        meta: Meta::compact(Compact::Account(Box::new(CompactAccount {
            name: p.name.as_str().into(),
            website: format!("https://www.{}", p.domain).into(),
            sfdc_id: p.has_sfdc_id_in_pendo.then(|| sf_account_id(p.index).into()),
            parent: p.parent.as_ref().map(|(_, id)| id.as_str().into()),
            plan: if p.trial { "trial" } else { p.plan },
            arr: p.arr as f64,
            trial: p.trial,
            renewal: anchor + i64::from((p.index as u32 * 37) % 365 + 1) * DAY_MS,
            first,
            last,
            // Offset by the index so paging by lastupdated sees mostly distinct values, as in real data.
            lastupdated: last + 2_000 + p.index as i64,
            idhash: (splitmix(p.index as u64) % 4_294_967_296) as i64,
        }))),
    }
}

/// The kind of events a rollup table holds, for callers that iterate all three.
pub const EVENT_KINDS: [EventKind; 3] = [EventKind::Page, EventKind::Feature, EventKind::Track];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfg(accounts: usize) -> GenConfig {
        GenConfig { seed: 42, accounts, days: 30, anchor_day_ms: Some(1_767_225_600_000), ..Default::default() }
    }

    #[test]
    fn checksum_matches_known_ids() {
        // Known pairs from Salesforce documentation and real orgs.
        assert_eq!(sf_checksum("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(sf_checksum("003000000000000"), "003000000000000AAA");
        let id = sf_id("001", 12345);
        assert_eq!(id.len(), 18);
        assert_eq!(sf_checksum(&id[..15]), id);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = generate(&cfg(20));
        let b = generate(&cfg(20));
        assert_eq!(a.stats.page_rows, b.stats.page_rows);
        assert_eq!(a.store.page_rows.ts_column(), b.store.page_rows.ts_column());
        assert_eq!(a.store.visitors.len(), b.store.visitors.len());
        assert_eq!(salesforce_org(&cfg(20)), salesforce_org(&cfg(20)));
        let c = generate(&GenConfig { seed: 43, ..cfg(20) });
        assert_ne!(a.store.page_rows.ts_column(), c.store.page_rows.ts_column());
    }

    #[test]
    fn adding_accounts_keeps_earlier_ones() {
        let small = account_profile(&cfg(5), 3);
        let big = account_profile(&cfg(500), 3);
        assert_eq!(small.id, big.id);
        assert_eq!(small.visitors.len(), big.visitors.len());
    }

    #[test]
    fn org_matches_pendo_world() {
        let g = cfg(300);
        let org = salesforce_org(&g);
        let accounts = &org["Account"];
        let profiles: Vec<_> = (0..300).map(|i| account_profile(&g, i)).collect();
        // Awkward cases are all present.
        assert!(profiles.iter().any(|p| !p.in_salesforce));
        assert!(profiles.iter().any(|p| p.sf_duplicate));
        assert!(profiles.iter().any(|p| p.shared_domain));
        assert!(profiles.iter().flat_map(|p| &p.visitors).any(|v| v.free_mail));
        // Website domains match the visitors' e-mail domains.
        for p in profiles.iter().filter(|p| p.in_salesforce) {
            let acc = accounts.iter().find(|a| a["Id"] == sf_account_id(p.index)).unwrap();
            assert!(acc["Website"].as_str().unwrap().contains(&p.domain));
            for v in p.visitors.iter().filter(|v| !v.free_mail && !v.anonymous) {
                assert!(v.email.ends_with(&format!("@{}", p.domain)));
            }
        }
        for (sobject, prefix) in [("Account", "001"), ("Contact", "003"), ("User", "005"), ("Opportunity", "006")] {
            for r in &org[sobject] {
                let id = r["Id"].as_str().unwrap();
                assert!(id.starts_with(prefix) && id.len() == 18, "{id}");
                assert_eq!(sf_checksum(&id[..15]), id);
            }
        }
        let user_ids: std::collections::HashSet<_> = org["User"].iter().map(|u| u["Id"].clone()).collect();
        assert!(accounts.iter().all(|a| user_ids.contains(&a["OwnerId"])));
        assert!(org["Opportunity"].iter().all(|o| o["Type"] == "Trial"));
        assert!(!org["Opportunity"].is_empty());
        assert!(accounts.iter().any(|a| a.get("Pendo_Account_Id__c").is_some()));
    }

    #[test]
    fn pendo_side_has_the_matching_metadata() {
        let g = cfg(100);
        let gc = generate(&g);
        let with_sfdc =
            gc.store.accounts.iter().filter(|a| !a.metadata().path("custom.sfdcaccountid").is_null()).count();
        assert!(with_sfdc > 10, "{with_sfdc}");
        assert!(gc.store.page_rows.ts_column().windows(2).all(|w| w[0] <= w[1]));
        assert!(gc.store.guide_events.iter().any(|e| e.kind == GuideEventType::PollResponse));
        assert!(gc.store.visitors.iter().any(|v| v.id.starts_with("_PENDO_T_")));
    }
}
