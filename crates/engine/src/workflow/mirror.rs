//! A set of Salesforce records a workflow needs every run, kept in the store (deflated, under a
//! cursor of the workflow) so that a re-run asks Salesforce only what changed instead of reading
//! the set again: the Contacts people link to, the open Opportunities an expansion rule looks
//! at, the open trial Opportunities.
//!
//! The mirror is current at a point: the newest `SystemModstamp` accounted for. A run with a
//! mirror reads, in one `queryAll` (so deleted records show), the records stamped since then,
//! less an overlap: `SystemModstamp` is stamped when a transaction starts, so one that commits
//! late may carry an older stamp than one already read. Applying a change twice is harmless.
//! Where every run that writes the object [`Held::follow`]s its writes before storing the mirror
//! (`Spec::follows_own`), the integration user's own changes within the overlap are left out:
//! the change query reads everything from the second after the stamp (a SOQL datetime is whole
//! seconds) and only others' changes before it, so a re-run after a large write of its own makes
//! one call. The gap this leaves: a change of the integration user itself (another workflow, or
//! someone logged in as it) stamped within the overlap or the stamp's own second and committed
//! after the follow; the weekly whole read catches it.
//!
//! Membership is either local (a field is set) or a set of SOQL rules, each under a tag (an
//! expansion milestone). A changed record is checked against the rules by Id (300 a query, per
//! rule) unless it left outright (deleted, or the spec's `out_when` field true) or it is a member
//! the integration user changed (its own writes do not move records in or out, the one
//! exception being the `out_when` field). What a query by stamp cannot see (a rule reading
//! another record's fields, a restore from backup, a change of the user's visibility) is caught
//! by reading the whole set again: when there is no mirror, when it was built for another spec,
//! or when it is older than [`REREAD_AFTER`].
//!
//! A dry run reads the mirror and leaves it as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use salesforce::Condition;
use salesforce::rest::describe::sf_datetime;
use salesforce::soql::{Literal, SoqlError};
use serde::{Deserialize, Serialize};

use super::{Context, RunError};
use crate::sf_read::{PricedRead, Row};

/// How old a mirror may get before the set is read whole again.
pub const REREAD_AFTER: chrono::Duration = chrono::Duration::days(7);
/// How far before the mirror's stamp the change query looks for others' changes.
const OVERLAP: chrono::Duration = chrono::Duration::minutes(10);
/// Ids per membership check.
const CHECK_CHUNK: usize = 300;

/// Which records belong to the set.
#[derive(Debug, Clone, Serialize)]
pub(crate) enum Membership {
    /// Every record with this field set (it must be one of the spec's fields).
    Field(String),
    /// Every record meeting one of these SOQL conditions, each under its tag.
    Rules(Vec<(String, String)>),
}

/// What a workflow mirrors.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spec {
    /// The workflow cursor the mirror is kept under.
    #[serde(skip)]
    pub cursor: &'static str,
    pub object: &'static str,
    /// What the reads are, for errors.
    #[serde(skip)]
    pub what: &'static str,
    /// The fields kept for each member.
    pub fields: Vec<String>,
    pub membership: Membership,
    /// A boolean field whose `true` takes a record out whatever the rules (`IsClosed`, where
    /// every rule asks for open Opportunities), so that closing one costs no check.
    pub out_when: Option<&'static str>,
    /// Whether every run that writes this object calls [`Held::follow`]: only then are the
    /// integration user's own changes within the overlap left out of the change query.
    #[serde(skip)]
    pub follows_own: bool,
}

impl Spec {
    /// Ties a stored mirror to the spec it was built with.
    fn fingerprint(&self) -> String {
        crate::change::fingerprint(&serde_json::to_value(self).unwrap_or_default()).to_string()
    }
}

/// One member: the spec's fields' values (empty when null), and the tags of the rules it meets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mirror {
    /// [`Spec::fingerprint`] of the spec it was built with.
    pub spec: String,
    /// The newest `SystemModstamp` accounted for.
    pub at: Option<DateTime<Utc>>,
    /// When the set was last read whole.
    pub read_at: DateTime<Utc>,
    /// Record Id → member.
    pub members: BTreeMap<String, Member>,
}

impl Mirror {
    fn values(spec: &Spec, row: &Row<'_>) -> Vec<String> {
        spec.fields.iter().map(|f| row.get(f).unwrap_or_default().to_owned()).collect()
    }

    fn stamp(&mut self, row: &Row<'_>) -> bool {
        let at = row.get("SystemModstamp").and_then(|s| sf_datetime::parse(s).ok());
        let newer = at > self.at;
        self.at = self.at.max(at);
        newer
    }

    /// Puts a member in (or replaces it). Returns whether the mirror changed.
    fn put(&mut self, id: &str, member: Member) -> bool {
        self.members.insert(id.to_owned(), member.clone()).as_ref() != Some(&member)
    }

    /// Applies one changed record as the change query returned it. Returns whether the mirror
    /// changed, and whether the record's membership is left for the rules to decide.
    fn apply(&mut self, spec: &Spec, row: &Row<'_>, me: Option<&str>) -> (bool, bool) {
        let Some(id) = row.get("Id") else { return (false, false) };
        let newer = self.stamp(row);
        let gone = row.get("IsDeleted") == Some("true") || spec.out_when.is_some_and(|f| row.get(f) == Some("true"));
        let values = Self::values(spec, row);
        let changed = match &spec.membership {
            _ if gone => self.members.remove(id).is_some(),
            Membership::Field(f) => match row.get(f) {
                Some(_) => self.put(id, Member { values, tags: vec![] }),
                None => self.members.remove(id).is_some(),
            },
            Membership::Rules(_) => {
                let own = me.is_some_and(|me| row.get("LastModifiedById").is_some_and(|by| same_id(by, me)));
                match self.members.get(id) {
                    Some(m) if own => {
                        let tags = m.tags.clone();
                        self.put(id, Member { values, tags })
                    }
                    _ => return (newer, true),
                }
            }
        };
        (changed || newer, false)
    }

    fn encode(&self) -> Option<String> {
        let json = serde_json::to_vec(self).ok()?;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&json).ok()?;
        Some(base64::engine::general_purpose::STANDARD.encode(z.finish().ok()?))
    }

    /// An unreadable cursor is as good as none: the set is read whole again.
    fn decode(text: &str) -> Option<Mirror> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(bytes.as_slice()).read_to_end(&mut json).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// Salesforce Ids compare on their first 15 characters.
fn same_id(a: &str, b: &str) -> bool {
    a.get(..15).zip(b.get(..15)).is_some_and(|(a, b)| a == b)
}

/// A mirror brought up to date for this run, to be followed after the run's writes and stored.
pub(crate) struct Held {
    pub mirror: Mirror,
    ctx: Context,
    spec: Spec,
    me: Option<String>,
    /// The cursor as stored before the run.
    stored: Option<String>,
    changed: bool,
}

/// The set, from the stored mirror and the records changed since it, or read whole (see the
/// module's doc). Nothing is stored: see [`Held::store`].
///
/// # Errors
/// Salesforce and store failures; a field that is not a SOQL identifier.
pub(crate) async fn gather(ctx: &Context, workflow: &str, spec: Spec, now: DateTime<Utc>) -> Result<Held, RunError> {
    let what = spec.what;
    for f in spec.fields.iter().map(String::as_str).chain(spec.out_when) {
        salesforce::soql::field(f).map_err(|e| RunError::Salesforce { what, source: salesforce::Error::Soql(e) })?;
    }
    let me = ctx.salesforce.identity().await.map_err(|source| RunError::Salesforce { what, source })?;
    let stored = ctx.store.cursor(workflow, spec.cursor).await?;
    let fingerprint = spec.fingerprint();
    let current = stored
        .as_deref()
        .and_then(Mirror::decode)
        .filter(|m| m.spec == fingerprint && now - m.read_at < REREAD_AFTER && m.at.is_some());
    let fresh = Mirror { spec: fingerprint, at: None, read_at: now, members: BTreeMap::new() };
    let mut held = Held {
        mirror: current.clone().unwrap_or(fresh),
        ctx: ctx.clone(),
        spec,
        me: Some(me.user_id.as_str().to_owned()),
        stored,
        changed: true,
    };
    if current.is_some() {
        held.changed = held.follow_changes().await?;
    } else {
        held.read_whole().await?;
    }
    Ok(held)
}

impl Held {
    /// Records the run made (or found by its keys) as members under `tag`, before
    /// [`Held::follow`]: the change query returns them, and a member the integration user
    /// changed costs no check.
    pub fn add(&mut self, id: &str, values: Vec<String>, tag: Option<&str>) {
        let member = self.mirror.members.entry(id.to_owned()).or_default();
        member.values = values;
        if let Some(tag) = tag
            && !member.tags.iter().any(|t| t == tag)
        {
            member.tags.push(tag.to_owned());
        }
        self.changed = true;
    }

    /// After the run's writes: reads what changed since the mirror's stamp (the writes among
    /// it), so that the next run's change query starts past them.
    ///
    /// # Errors
    /// Salesforce failures.
    pub async fn follow(&mut self) -> Result<(), RunError> {
        self.changed |= self.follow_changes().await?;
        Ok(())
    }

    /// Stores the mirror, when it changed and this is no dry run.
    ///
    /// # Errors
    /// Store failures.
    pub async fn store(&self, workflow: &str, dry_run: bool) -> Result<(), RunError> {
        if dry_run || !self.changed {
            return Ok(());
        }
        if let Some(text) = self.mirror.encode() {
            // A run holding the workflow's lease is the only writer; a lost race only means the
            // next run reads a little more.
            self.ctx.store.advance_cursor(workflow, self.spec.cursor, self.stored.clone(), text).await?;
        }
        Ok(())
    }

    fn select(&self, extra: &[&str]) -> String {
        let mut fields: Vec<&str> = vec!["Id"];
        for f in self.spec.fields.iter().map(String::as_str).chain(extra.iter().copied()).chain(self.spec.out_when) {
            if !fields.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                fields.push(f);
            }
        }
        format!("SELECT {} FROM {}", fields.join(", "), self.spec.object)
    }

    fn soql_error(&self, e: SoqlError) -> RunError {
        RunError::Salesforce { what: self.spec.what, source: salesforce::Error::Soql(e) }
    }

    /// Every member, read whole. A rule's members may be few and old, so the mirror's stamp is
    /// the object's newest first (one call more): the next change query then reads only what
    /// changes from now on, not every record changed since the newest member.
    async fn read_whole(&mut self) -> Result<(), RunError> {
        let base = self.select(&["SystemModstamp"]);
        let ctx = self.ctx.clone();
        let (spec, mirror) = (&self.spec, &mut self.mirror);
        match &spec.membership {
            Membership::Field(f) => {
                let soql = format!("{base} WHERE {f} != null");
                read(&ctx, soql, spec.object, false, spec.what, |row| {
                    mirror.apply(spec, &row, None);
                })
                .await?;
            }
            Membership::Rules(rules) => {
                let soql =
                    format!("SELECT Id, SystemModstamp FROM {} ORDER BY SystemModstamp DESC LIMIT 1", spec.object);
                read(&ctx, soql, spec.object, true, spec.what, |row| {
                    mirror.stamp(&row);
                })
                .await?;
                for (tag, rule) in rules {
                    let soql = format!("{base} WHERE {rule}");
                    read(&ctx, soql, spec.object, false, spec.what, |row| {
                        mirror.stamp(&row);
                        if let Some(id) = row.get("Id") {
                            let member = mirror.members.entry(id.to_owned()).or_default();
                            member.values = Mirror::values(spec, &row);
                            if !member.tags.contains(tag) {
                                member.tags.push(tag.clone());
                            }
                        }
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Applies what changed since the mirror's stamp. Returns whether the mirror changed.
    async fn follow_changes(&mut self) -> Result<bool, RunError> {
        let Some(at) = self.mirror.at else { return self.read_whole().await.map(|()| true) };
        // A SOQL datetime is whole seconds, so "after the stamp" starts at the next second; the
        // rest of the stamp's own second is the overlap's.
        let after = DateTime::<Utc>::from_timestamp(at.timestamp() + 1, 0).unwrap_or(at);
        let mut window = Condition::ge("SystemModstamp", after);
        let overlap = Condition::ge("SystemModstamp", at - OVERLAP);
        window = match self.me.as_ref().filter(|_| self.spec.follows_own) {
            Some(me) => window.or(overlap.and(Condition::ne("LastModifiedById", Literal::from(me.as_str())))),
            None => overlap,
        };
        let window = window.render().map_err(|e| self.soql_error(e))?;
        let soql = format!("{} WHERE {window}", self.select(&["IsDeleted", "SystemModstamp", "LastModifiedById"]));
        let ctx = self.ctx.clone();
        let (spec, mirror, me) = (&self.spec, &mut self.mirror, self.me.as_deref());
        let mut changed = false;
        let mut check: BTreeMap<String, Vec<String>> = BTreeMap::new();
        read(&ctx, soql, spec.object, true, spec.what, |row| {
            let (moved, undecided) = mirror.apply(spec, &row, me);
            changed |= moved;
            if undecided && let Some(id) = row.get("Id") {
                check.insert(id.to_owned(), Mirror::values(spec, &row));
            }
        })
        .await?;
        let Membership::Rules(rules) = &spec.membership else { return Ok(changed) };
        if check.is_empty() {
            return Ok(changed);
        }
        // Which rules each changed record meets now.
        let mut tags: HashMap<String, BTreeSet<String>> = HashMap::new();
        let ids: Vec<&String> = check.keys().collect();
        for (tag, rule) in rules {
            for chunk in ids.chunks(CHECK_CHUNK) {
                let list = chunk.iter().map(|id| salesforce::soql::quote(id)).collect::<Vec<_>>().join(", ");
                let soql = format!("SELECT Id FROM {} WHERE Id IN ({list}) AND ({rule})", spec.object);
                read(&ctx, soql, spec.object, false, spec.what, |row| {
                    if let Some(id) = row.get("Id") {
                        tags.entry(id.to_owned()).or_default().insert(tag.clone());
                    }
                })
                .await?;
            }
        }
        for (id, values) in check {
            // An Id answers in its 18-character form, as the change query gave it.
            changed |= match tags.remove(&id) {
                Some(t) => mirror.put(&id, Member { values, tags: t.into_iter().collect() }),
                None => mirror.members.remove(&id).is_some(),
            };
        }
        Ok(changed)
    }
}

/// Every row of `soql`, REST pages or one Bulk query, whichever costs fewer calls.
async fn read(
    ctx: &Context,
    soql: String,
    object: &str,
    include_deleted: bool,
    what: &'static str,
    each: impl FnMut(Row<'_>),
) -> Result<(), RunError> {
    match PricedRead::start(ctx, soql, object, include_deleted, what).await? {
        Some(read) => read.each(each).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(membership: Membership) -> Spec {
        Spec {
            cursor: "test",
            object: "Contact",
            what: "test",
            fields: vec!["Email".into()],
            membership,
            out_when: Some("IsClosed"),
            follows_own: true,
        }
    }

    fn row(v: &serde_json::Value) -> Row<'_> {
        let serde_json::Value::Object(r) = v else { unreachable!() };
        Row::Json(r)
    }

    #[test]
    fn changes_apply_idempotently_and_the_mirror_round_trips() {
        let t = |s: &str| sf_datetime::parse(s).ok();
        let spec = spec(Membership::Field("Email".into()));
        let mut m = Mirror::default();
        let rows = [
            json!({"Id": "003A", "Email": "a@x.test", "SystemModstamp": "2026-12-01T10:00:00.000+0000"}),
            json!({"Id": "003B", "Email": "b@x.test", "SystemModstamp": "2026-12-01T11:00:00.000+0000"}),
            json!({"Id": "003B", "Email": "b@x.test", "IsDeleted": true, "SystemModstamp": "2026-12-01T12:00:00.000+0000"}),
            json!({"Id": "003A", "Email": null, "SystemModstamp": "2026-12-01T09:00:00.000+0000"}),
            json!({"Id": "003C", "Email": "c@x.test", "SystemModstamp": "2026-12-01T08:00:00.000+0000"}),
        ];
        let mut changed = Vec::new();
        for r in rows.iter().chain(rows.iter()) {
            changed.push(m.apply(&spec, &row(r), None).0);
        }
        assert!(changed[..5].iter().all(|c| *c), "{changed:?}");
        // A row already applied, with no newer stamp, changes nothing.
        assert_eq!(m.apply(&spec, &row(&rows[4]), None), (false, false));
        let links: Vec<(&str, &str)> = m.members.iter().map(|(id, v)| (id.as_str(), v.values[0].as_str())).collect();
        assert_eq!(links, [("003C", "c@x.test")]);
        assert_eq!(m.at, t("2026-12-01T12:00:00.000+0000"), "the newest stamp, whatever the order");
        let text = m.encode().unwrap();
        assert_eq!(Mirror::decode(&text), Some(m));
        assert_eq!(Mirror::decode("not a mirror"), None);
    }

    #[test]
    fn under_rules_only_others_changes_are_checked_and_leaving_outright_costs_no_check() {
        let spec = spec(Membership::Rules(vec![("open".into(), "Email != null".into())]));
        let me = Some("005000000000001AAA");
        let mut m = Mirror::default();
        m.members.insert("006A".into(), Member { values: vec!["a".into()], tags: vec!["open".into()] });
        m.members.insert("006B".into(), Member { values: vec!["b".into()], tags: vec!["open".into()] });
        let stamp = "2026-12-01T10:00:00.000+0000";
        // A member the integration user changed (15-character Id): kept, with its new values.
        let own = json!({"Id": "006A", "Email": "a2", "LastModifiedById": "005000000000001", "SystemModstamp": stamp});
        assert_eq!(m.apply(&spec, &row(&own), me), (true, false));
        assert_eq!(m.members["006A"].values, ["a2"]);
        assert_eq!(m.members["006A"].tags, ["open"]);
        // A member someone else changed, or a record new to the mirror: left to the rules.
        let theirs =
            json!({"Id": "006A", "Email": "a3", "LastModifiedById": "005000000000002AAA", "SystemModstamp": stamp});
        assert_eq!(m.apply(&spec, &row(&theirs), me), (false, true));
        let new =
            json!({"Id": "006C", "Email": "c", "LastModifiedById": "005000000000001AAA", "SystemModstamp": stamp});
        assert_eq!(m.apply(&spec, &row(&new), me), (false, true));
        // Closed (the spec's `out_when`) or deleted: out, no check.
        let closed =
            json!({"Id": "006B", "IsClosed": true, "LastModifiedById": "005000000000002AAA", "SystemModstamp": stamp});
        assert_eq!(m.apply(&spec, &row(&closed), me), (true, false));
        assert!(!m.members.contains_key("006B"));
    }

    #[test]
    fn a_mirror_belongs_to_its_spec() {
        let a = spec(Membership::Rules(vec![("m".into(), "Type = 'A'".into())]));
        let b = spec(Membership::Rules(vec![("m".into(), "Type = 'B'".into())]));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
