//! The two-way workflows end to end against both emulators on 127.0.0.1: new Pendo visitors
//! become Contacts once (never twice, not even from two runs at once), only real changes are
//! written, unmatched accounts become Leads or are skipped as configured; Salesforce Account
//! fields reach Pendo account metadata once and then only when a person changes them; and the
//! two directions run back to back settle to zero writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use emulator::salesforce::store::{INTEGRATION_USER_ID, WriteCtx};
use engine::store::Action;
use engine::workflow::new_users::normalise_email;
use engine::workflow::{Context, RunOptions, RunReport};
use serde_json::{Map, Value, json};

use crate::support::{self, Emulators, World, env};

const HEAD: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  engagement:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    max_latency: 1m
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 10 }
      active_days: { weight: 0.5, target: 20 }
    fields:
      active_visitors: Pendo_Active_Visitors__c
      active_days: Pendo_Active_Days__c
      events: Pendo_Events__c
      score: Pendo_Engagement_Score__c
      last_active: Pendo_Last_Active__c
      updated_at: Pendo_Engagement_Updated__c
  new-users:
    template: new-users-to-contacts
    schedule: "*/15 * * * *"
    window_days: 40
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    contact_fields:
      visitor_id: Pendo_Visitor_Id__c
      last_visit: Pendo_Last_Active__c
    unmatched_account: {unmatched}
  attributes:
    template: account-attributes-to-pendo
    schedule: "*/30 * * * *"
    window_days: 30
    pendo_account: { field: Pendo_Account_Id__c, id_map_of: engagement }
    attributes:
      - { salesforce: Plan_Tier__c, pendo: sfplantier }
      - { salesforce: Renewal_Date__c, pendo: sfrenewaldate, type: time }
      - { salesforce: Contract_Stage__c, pendo: sfcontractstage }
      - { salesforce: Owner.Name, pendo: sfownername }
      - { salesforce: Id, pendo: sfdcaccountid }
"#;

async fn world(accounts: usize, unmatched: &str) -> World {
    world_with_store(accounts, unmatched, None).await
}

/// A world whose state store is `store` (an opened store) or a fresh SQLite file.
async fn world_with_store(accounts: usize, unmatched: &str, store: Option<Arc<dyn engine::store::Store>>) -> World {
    let text = HEAD.replace("{unmatched}", unmatched);
    let w = Emulators::start(11, accounts, 30).await.world_on(&text, store).await;
    let fields: Vec<pendo::metadata::FieldSpec> =
        [("sfplantier", "string"), ("sfrenewaldate", "time"), ("sfcontractstage", "string"), ("sfownername", "string")]
            .into_iter()
            .map(|(name, t)| pendo::metadata::FieldSpec {
                name: name.into(),
                displayname: name.into(),
                field_type: t.into(),
            })
            .collect();
    w.ctx.pendo.create_fields(pendo::Kind::Account, "custom", &fields).await.unwrap();
    w
}

impl World {
    /// Contacts by normalised e-mail.
    async fn contacts_by_email(&self) -> HashMap<String, Vec<Value>> {
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for c in self.live_records("Contact").await {
            if let Some(e) = c["Email"].as_str().and_then(|e| normalise_email(e, false)) {
                out.entry(e).or_default().push(c);
            }
        }
        out
    }

    /// Pendo account metadata by account id.
    async fn pendo_accounts(&self) -> HashMap<String, Value> {
        let url = format!("{}/__emulator/accounts", self.pendo.base_url);
        let v: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        let list = v.as_array().cloned().or_else(|| v["accounts"].as_array().cloned()).unwrap();
        list.into_iter()
            .map(|a| {
                let id = a["accountId"].as_str().or_else(|| a["id"].as_str()).unwrap().to_owned();
                (id, a["metadata"].clone())
            })
            .collect()
    }

    /// Edits an Account as a person (not the integration user) would in the UI.
    fn person_edits(&self, account: &str, fields: Value) {
        let person = {
            let db = self.sf.state.db.lock();
            db.records("User").map(|u| u.id().to_owned()).find(|id| id != INTEGRATION_USER_ID).unwrap()
        };
        let ctx = WriteCtx { user_id: person, now: self.sf.state.clock.now() };
        let map: Map<String, Value> = fields.as_object().unwrap().clone();
        self.sf.state.db.lock().update("Account", account, &map, &ctx).unwrap();
    }

    async fn outcomes(&self, report: &RunReport) -> Vec<engine::store::RecordOutcome> {
        let filter = engine::store::OutcomeFilter::default();
        self.ctx.store.run_outcomes(report.run_id.unwrap(), &filter).await.unwrap()
    }

    async fn counts(&self, report: &RunReport) -> BTreeMap<Action, u64> {
        self.ctx.store.outcome_counts(report.run_id.unwrap()).await.unwrap()
    }

    /// A Pendo account the new-users workflow matched, with its Account and that Account's website domain.
    async fn matched_account(&self) -> (String, String, String) {
        let map = self.ctx.store.id_map("new-users").await.unwrap();
        let accounts: HashMap<String, Value> =
            self.live_records("Account").await.into_iter().map(|a| (a["Id"].as_str().unwrap().to_owned(), a)).collect();
        map.iter()
            .filter(|e| e.status == engine::store::MatchStatus::Matched)
            .find_map(|e| {
                let sf = e.salesforce_id.clone()?;
                let website = accounts.get(&sf)?["Website"].as_str()?.to_owned();
                let domain =
                    website.trim_start_matches("https://www.").trim_start_matches("http://").trim_end_matches('/');
                Some((e.pendo_id.clone(), sf, domain.to_owned()))
            })
            .unwrap()
    }
}

fn visitor(id: &str, account: &str, email: &str, name: &str, first_ms: i64, last_ms: i64) -> Value {
    json!({
        "visitorId": id,
        "accountId": account,
        "metadata": {
            "auto": { "firstvisit": first_ms, "lastvisit": last_ms },
            "agent": { "email": email, "full_name": name }
        }
    })
}

fn no_duplicates(by_email: &HashMap<String, Vec<Value>>) {
    let dups: Vec<(&String, usize)> = by_email.iter().filter(|(_, v)| v.len() > 1).map(|(e, v)| (e, v.len())).collect();
    assert!(dups.is_empty(), "duplicate Contacts: {dups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_visitors_become_contacts_once_and_only_real_changes_follow() {
    let w = world(40, "skip").await;
    let before = w.contacts_by_email().await;
    no_duplicates(&before);

    let first = w.run("new-users").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    let counts = w.counts(&first).await;
    assert!(counts.get(&Action::Created).copied().unwrap_or(0) > 0, "{counts:?}");
    // Seeded Contacts (some with upper-case e-mails) are found, not created again: they get the visitor id.
    assert!(counts.get(&Action::Updated).copied().unwrap_or(0) > 0, "{counts:?}");
    let after = w.contacts_by_email().await;
    no_duplicates(&after);
    // Visitors of accounts that match no Account are skipped, not created.
    let outcomes = w.outcomes(&first).await;
    let updated: Vec<&str> =
        outcomes.iter().filter(|o| o.action == Action::Updated).filter_map(|o| o.salesforce_id.as_deref()).collect();
    let shouting = after
        .values()
        .flatten()
        .filter(|c| c["Email"].as_str().is_some_and(|e| e.chars().any(|ch| ch.is_ascii_uppercase())))
        .find(|c| updated.contains(&c["Id"].as_str().unwrap_or_default()))
        .expect("a seeded Contact with an upper-case e-mail is found by a new visitor");
    assert!(shouting["Pendo_Visitor_Id__c"].is_string(), "an upper-case e-mail is the same person: {shouting}");
    let unmatched = outcomes.iter().filter(|o| o.error_code.as_deref() == Some("UNMATCHED_ACCOUNT")).count();
    assert_eq!(
        unmatched as u64,
        first.unmatched as u64 - outcomes.iter().filter(|o| o.object == "Lead").count() as u64
    );
    assert!(w.live_records("Lead").await.is_empty());
    let contacts_after_first = w.live_records("Contact").await.len();

    // A repeat writes nothing and creates nothing.
    let second = w.run("new-users").await;
    assert_eq!((second.written, second.failed), (0, 0), "{:?}", second.samples);
    assert_eq!(w.live_records("Contact").await.len(), contacts_after_first);

    // The same person twice in one batch (case and spaces differ), plus someone new.
    let (pendo_account, sf_account, domain) = w.matched_account().await;
    let now = Utc::now().timestamp_millis();
    let email = format!("Grace.Hopper@{domain}");
    w.pendo_seed(json!({"visitors": [
        visitor("v-grace-1", &pendo_account, &format!("  {email} "), "Grace Brewster Hopper", now - 60_000, now - 60_000),
        visitor("v-grace-2", &pendo_account, &email.to_lowercase(), "Grace Hopper", now - 30_000, now - 30_000),
        visitor("v-alan", &pendo_account, &format!("alan@{domain}"), "Alan Turing", now - 20_000, now - 20_000),
    ]}))
    .await;
    let third = w.run("new-users").await;
    assert_eq!((third.written, third.failed), (2, 0), "{:?} {:?}", third.samples, third.failures);
    let outcomes = w.outcomes(&third).await;
    let dup = outcomes.iter().find(|o| o.error_code.as_deref() == Some("DUPLICATE_IN_BATCH")).unwrap();
    assert_eq!(dup.key, "v-grace-2", "the earliest first visit wins");
    let by_email = w.contacts_by_email().await;
    no_duplicates(&by_email);
    let grace = &by_email[&email.to_lowercase()][0];
    assert_eq!(grace["Pendo_Visitor_Id__c"], json!("v-grace-1"));
    assert_eq!(grace["AccountId"], json!(sf_account));
    assert_eq!((grace["FirstName"].as_str(), grace["LastName"].as_str()), (Some("Grace Brewster"), Some("Hopper")));
    assert!(grace["Pendo_Last_Active__c"].is_string());

    // Only a real change is written: Grace visits again (still inside the overlap).
    w.pendo_seed(json!({"visitors": [
        visitor("v-grace-1", &pendo_account, &email, "Grace Brewster Hopper", now - 60_000, now - 5_000),
    ]}))
    .await;
    let fourth = w.run("new-users").await;
    assert_eq!(fourth.written, 1, "{:?}", fourth.samples);
    assert_eq!(fourth.fields_changed, BTreeMap::from([("Contact.Pendo_Last_Active__c".to_owned(), 1)]));
    let fifth = w.run("new-users").await;
    assert_eq!(fifth.written, 0, "{:?}", fifth.samples);
    assert_eq!(w.contacts_by_email().await[&email.to_lowercase()].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_write_nothing_read_no_limits_and_a_spent_day_is_refused_before_any_call() {
    let w = world(30, "skip").await;
    for workflow in ["new-users", "attributes"] {
        let first = w.run(workflow).await;
        assert!(first.written > 0 && first.failed == 0, "{workflow}: {first:?}");
    }
    // A new process: the budget comes from the ledger and today's last reading, not /limits.
    for workflow in ["new-users", "attributes"] {
        let (again, calls) = w.run_fresh(workflow).await;
        let again = again.unwrap();
        assert_eq!((again.written, again.failed), (0, 0), "{workflow}: {again:?}");
        assert!(!again.api_calls.contains_key("read_limits"), "{workflow}: {:?}", again.api_calls);
        assert_eq!(calls, again.total_api_calls(), "{workflow}");
    }

    // Someone new, so new-users has something to read; then today's share spent (the ledger).
    let (pendo_account, _, domain) = w.matched_account().await;
    let now = Utc::now().timestamp_millis();
    w.pendo_seed(json!({"visitors": [
        visitor("v-late", &pendo_account, &format!("late@{domain}"), "Ada Late", now - 10_000, now - 10_000),
    ]}))
    .await;
    let today = Utc::now();
    w.ctx.store.settle_budget(today.date_naive(), "another-workflow", 0, 10_000_000, today).await.unwrap();
    for workflow in ["new-users", "attributes"] {
        let (refused, calls) = w.run_fresh(workflow).await;
        let e = refused.expect_err(workflow);
        assert!(matches!(e, engine::workflow::RunError::OverBudget { .. }) && e.is_deferral(), "{workflow}: {e}");
        assert_eq!(calls, 0, "{workflow}: refused before reading anything");
        let runs = w.ctx.store.list_runs(Some(workflow), 0).await.unwrap();
        let last = runs.iter().max_by_key(|r| r.started_at).unwrap();
        assert_eq!(last.state, engine::store::RunState::Deferred, "{workflow}: {last:?}");
    }
}

/// Of two runs of one workflow started together, one runs and the other is refused as busy,
/// naming the run that holds the workflow.
fn exactly_one_runs(
    a: Result<engine::workflow::RunReport, engine::workflow::RunError>,
    b: Result<engine::workflow::RunReport, engine::workflow::RunError>,
) -> engine::workflow::RunReport {
    match (a, b) {
        (Ok(ran), Err(engine::workflow::RunError::Busy { run_id, .. }))
        | (Err(engine::workflow::RunError::Busy { run_id, .. }), Ok(ran)) => {
            assert_eq!(Some(run_id), ran.run_id, "the refusal names the run that holds the workflow");
            ran
        }
        (a, b) => panic!(
            "expected exactly one run and one refused as busy: {:?} / {:?}",
            a.map(|r| r.run_id),
            b.map(|r| r.run_id)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_create_no_duplicate_contact() {
    let w = world(40, "skip").await;
    let options = RunOptions { dry_run: false, trigger: "test".into(), progress: None, ..Default::default() };
    let (a, b) = tokio::join!(
        engine::workflow::run(&w.ctx, "new-users", &options),
        engine::workflow::run(&w.ctx, "new-users", &options)
    );
    // One run per workflow at a time: the second is refused while the first holds the lease.
    let a = exactly_one_runs(a, b);
    assert_eq!(a.failed, 0, "{:?}", a.failures);
    no_duplicates(&w.contacts_by_email().await);
    let created = |c: &BTreeMap<Action, u64>| c.get(&Action::Created).copied().unwrap_or(0);
    let (ca, cb) = (created(&w.counts(&a).await), 0);
    assert!(ca + cb > 0);
    // Whatever one run deferred (the other was creating it) the next run settles, creating nothing.
    let contacts = w.live_records("Contact").await.len();
    let next = w.run("new-users").await;
    assert_eq!(created(&w.counts(&next).await), 0);
    assert_eq!(next.failed, 0, "{:?}", next.failures);
    assert_eq!(w.live_records("Contact").await.len(), contacts);
    no_duplicates(&w.contacts_by_email().await);
    // The same people from another visitor id each, in two runs at once: still one Contact each.
    let (pendo_account, _, domain) = w.matched_account().await;
    let now = Utc::now().timestamp_millis();
    let people: Vec<Value> = (0..30)
        .flat_map(|i| {
            let email = format!("twin{i}@{domain}");
            [
                visitor(&format!("twin-a-{i}"), &pendo_account, &email, "Twin A", now - 50_000, now - 50_000),
                visitor(&format!("twin-b-{i}"), &pendo_account, &email.to_uppercase(), "Twin B", now - 40_000, now),
            ]
        })
        .collect();
    w.pendo_seed(json!({ "visitors": people })).await;
    let (a, b) = tokio::join!(
        engine::workflow::run(&w.ctx, "new-users", &options),
        engine::workflow::run(&w.ctx, "new-users", &options)
    );
    let a = exactly_one_runs(a, b);
    assert_eq!(a.failed, 0, "{:?}", a.failures);
    w.run("new-users").await;
    let by_email = w.contacts_by_email().await;
    no_duplicates(&by_email);
    for i in 0..30 {
        assert_eq!(by_email[&format!("twin{i}@{domain}")].len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_accounts_become_leads_when_configured_and_only_once() {
    let w = world(30, "lead").await;
    let now = Utc::now().timestamp_millis();
    w.pendo_seed(json!({
        "accounts": [{ "accountId": "acct-nowhere", "metadata": { "agent": { "name": "Nowhere Industries" } } }],
        "visitors": [visitor("v-nobody", "acct-nowhere", "nobody@nowhere-industries.example", "No Body", now - 9_000, now)],
    }))
    .await;
    let first = w.run("new-users").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    let leads = w.live_records("Lead").await;
    let nobody: Vec<&Value> = leads.iter().filter(|l| l["Pendo_Visitor_Id__c"] == json!("v-nobody")).collect();
    assert_eq!(nobody.len(), 1, "{leads:?}");
    assert_eq!(nobody[0]["Company"], json!("Nowhere Industries"));
    assert_eq!(nobody[0]["Email"], json!("nobody@nowhere-industries.example"));
    assert!(!w.contacts_by_email().await.contains_key("nobody@nowhere-industries.example"));
    let lead_count = leads.len();
    let second = w.run("new-users").await;
    assert_eq!((second.written, second.failed), (0, 0), "{:?}", second.samples);
    assert_eq!(w.live_records("Lead").await.len(), lead_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_fields_reach_pendo_once_then_only_real_changes_and_own_writes_are_ignored() {
    let w = world(30, "skip").await;
    let accounts = w.live_records("Account").await;
    let with_pendo: Vec<&Value> = accounts.iter().filter(|a| a["Pendo_Account_Id__c"].is_string()).collect();
    assert!(with_pendo.len() >= 3);
    let target = with_pendo[0]["Id"].as_str().unwrap().to_owned();
    let target_pendo = with_pendo[0]["Pendo_Account_Id__c"].as_str().unwrap().to_owned();
    w.person_edits(
        &target,
        json!({"Plan_Tier__c": "Growth", "Renewal_Date__c": "2027-03-01", "Contract_Stage__c": "Active"}),
    );

    let first = w.run("attributes").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert_eq!(first.written, with_pendo.len(), "every Account with a Pendo id, once");
    let md = &w.pendo_accounts().await[&target_pendo];
    assert_eq!(md["custom"]["sfplantier"], json!("Growth"));
    assert_eq!(md["custom"]["sfrenewaldate"], json!(1_803_859_200_000_i64));
    assert_eq!(md["custom"]["sfcontractstage"], json!("Active"));
    assert!(md["custom"]["sfownername"].as_str().is_some_and(|s| !s.is_empty()), "{md}");

    let second = w.run("attributes").await;
    assert_eq!((second.written, second.failed), (0, 0), "{:?}", second.samples);

    // A person's change goes through, only that field.
    w.person_edits(&target, json!({"Plan_Tier__c": "Enterprise"}));
    let third = w.run("attributes").await;
    assert_eq!(third.written, 1, "{:?}", third.samples);
    assert_eq!(third.fields_changed, BTreeMap::from([("custom.sfplantier".to_owned(), 1)]));
    assert_eq!(w.pendo_accounts().await[&target_pendo]["custom"]["sfplantier"], json!("Enterprise"));
    // A value cleared in Salesforce is cleared in Pendo (empty values never written stay unsent).
    w.person_edits(&target, json!({"Contract_Stage__c": null}));
    let cleared = w.run("attributes").await;
    assert_eq!(cleared.fields_changed, BTreeMap::from([("custom.sfcontractstage".to_owned(), 1)]));
    assert_eq!(w.pendo_accounts().await[&target_pendo]["custom"]["sfcontractstage"], Value::Null);

    // usagesync's own write to an Account (engagement fields, as the integration user) is ignored.
    let id = salesforce::SalesforceId::parse(&target).unwrap();
    w.ctx.salesforce.update("Account", &id, &json!({"Pendo_Engagement_Score__c": 42.0})).await.unwrap();
    let fourth = w.run("attributes").await;
    assert_eq!(fourth.written, 0, "{:?}", fourth.samples);
    let outcomes = w.outcomes(&fourth).await;
    assert!(
        outcomes
            .iter()
            .any(|o| o.salesforce_id.as_deref() == Some(target.as_str())
                && o.error_code.as_deref() == Some("OWN_CHANGE")),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_back_to_back_converge_to_zero_writes() {
    let w = world(40, "skip").await;
    let target = w.live_records("Account").await.into_iter().find(|a| a["Pendo_Account_Id__c"].is_string()).unwrap();
    let target = target["Id"].as_str().unwrap().to_owned();
    let mut per_round = Vec::new();
    let mut attribute_runs = Vec::new();
    let mut calls = Vec::new();
    for round in 0..10 {
        if round == 4 {
            // A person moves one Account to another plan mid-way: one write, then quiet again.
            w.person_edits(&target, json!({"Plan_Tier__c": "Starter"}));
        }
        let e = w.run("engagement").await;
        let a = w.run("attributes").await;
        let n = w.run("new-users").await;
        for r in [&e, &a, &n] {
            assert_eq!(r.failed, 0, "round {round} {}: {:?}", r.workflow, r.failures);
        }
        per_round.push((e.written, a.written, n.written));
        calls.push((e.total_api_calls(), a.total_api_calls(), n.total_api_calls(), a.pendo_calls));
        attribute_runs.push(a);
    }
    eprintln!("per round (engagement, attributes, new-users): writes {per_round:?}");
    eprintln!("Salesforce calls (engagement, attributes, new-users) and Pendo write calls: {calls:?}");
    let totals: Vec<usize> = per_round.iter().map(|(e, a, n)| e + a + n).collect();
    assert!(totals[0] > 0, "{per_round:?}");
    assert_eq!(per_round[4], (0, 1, 0), "the person's change goes to Pendo once: {per_round:?}");
    assert_eq!(&totals[5..], &[0, 0, 0, 0, 0], "{per_round:?}");
    assert_eq!(&totals[1..4], &[0, 0, 0], "{per_round:?}");
    // Round 2 re-read the Accounts engagement-scores had just written (as the integration user):
    // recognised as usagesync's own changes, not echoed.
    let own = w.outcomes(&attribute_runs[1]).await;
    assert!(own.iter().any(|o| o.error_code.as_deref() == Some("OWN_CHANGE")), "{own:?}");
}

/// Two workers, each with its own Salesforce client and its own connection to one PostgreSQL
/// store, run the workflow at the same moment, twice over: every person gets one Contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sharing_postgres_create_no_duplicate_contact() {
    if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("USAGESYNC_SKIP_POSTGRES=1: skipped");
        return;
    }
    let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("usagesync_two_way_{}", std::process::id());
    let open = || async {
        engine::store::open_postgres_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL unavailable (USAGESYNC_SKIP_POSTGRES=1 skips): {e}"))
    };
    let w = world_with_store(40, "skip", Some(open().await)).await;
    let other = Context {
        salesforce: engine::connect::salesforce_client(&w.ctx.config, &env).unwrap(),
        pendo: engine::connect::pendo_client(&w.ctx.config, &env).unwrap(),
        store: open().await,
        config: w.ctx.config.clone(),
        clock: w.ctx.clock,
    };
    let options = RunOptions { dry_run: false, trigger: "test".into(), progress: None, ..Default::default() };
    let mut created = 0;
    for _ in 0..2 {
        let (a, b) = tokio::join!(
            engine::workflow::run(&w.ctx, "new-users", &options),
            engine::workflow::run(&other, "new-users", &options)
        );
        let r = exactly_one_runs(a, b);
        assert_eq!(r.failed, 0, "{:?}", r.failures);
        created += w.counts(&r).await.get(&Action::Created).copied().unwrap_or(0);
    }
    let by_email = w.contacts_by_email().await;
    let leftover = w.run("new-users").await;
    engine::store::drop_postgres_schema(&url, &schema).await.unwrap();
    no_duplicates(&by_email);
    assert!(created > 0);
    assert_eq!(leftover.written, 0, "{:?}", leftover.samples);
}

/// New people are made by the create stage, keyed by the visitor id: a Contact a run that died
/// made (its claim left pending in the store), or one a lost store knows nothing of, is found by
/// its key and adopted as it is, even where a person has since changed its e-mail (so the e-mail
/// look-up misses it): never a second Contact, never an edit overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_made_by_a_dead_run_or_unknown_to_a_lost_store_are_adopted_not_duplicated() {
    let w = world(30, "skip").await;
    w.run("new-users").await;
    let (pendo_account, sf_account, domain) = w.matched_account().await;
    let ms = Utc::now().timestamp_millis();
    let store = &w.ctx.store;
    // A run died after creating v-died's Contact and before committing its claim; v-lost's
    // Contact was made under a store that is gone. People have changed both e-mails since.
    for (vid, email) in [("v-died", "died.home@elsewhere.example"), ("v-lost", "lost.home@elsewhere.example")] {
        let contact = json!({"LastName": vid, "Email": email, "AccountId": sf_account,
                             "Pendo_Visitor_Id__c": vid, "Title": "edited by a person"});
        w.ctx.salesforce.create("Contact", &contact).await.unwrap();
    }
    store.begin_create("v-died", "new-users", Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    w.pendo_seed(json!({"visitors": [
        visitor("v-died", &pendo_account, &format!("died@{domain}"), "Just Died", ms - 8_000, ms - 8_000),
        visitor("v-lost", &pendo_account, &format!("lost@{domain}"), "Lost Store", ms - 7_000, ms - 7_000),
        visitor("v-new", &pendo_account, &format!("new@{domain}"), "Brand New", ms - 6_000, ms - 6_000),
    ]}))
    .await;
    let first = w.run("new-users").await;
    // Only v-new is written; the adopted two count as unchanged (with the people re-read in the overlap).
    assert_eq!((first.written, first.failed, first.deferred), (1, 0, 0), "{:?}", first.samples);
    assert!(first.unchanged >= 2, "{}", first.unchanged);
    let contacts = w.live_records("Contact").await;
    for vid in ["v-died", "v-lost", "v-new"] {
        let mine: Vec<&Value> = contacts.iter().filter(|c| c["Pendo_Visitor_Id__c"] == json!(vid)).collect();
        assert_eq!(mine.len(), 1, "{vid}: {mine:?}");
        if vid != "v-new" {
            assert_eq!(mine[0]["Title"], json!("edited by a person"), "adopted as it is");
            assert!(mine[0]["Email"].as_str().is_some_and(|e| e.ends_with("@elsewhere.example")), "{:?}", mine[0]);
        }
    }
    let outcomes = w.outcomes(&first).await;
    let adopted = outcomes.iter().filter(|o| o.message.as_deref().is_some_and(|m| m.contains("adopted"))).count();
    assert_eq!(adopted, 2, "{outcomes:?}");
    // The claim is committed now: a repeat creates nothing and writes nothing.
    let second = w.run("new-users").await;
    assert_eq!((second.written, second.failed, second.deferred), (0, 0, 0), "{:?}", second.samples);
    assert_eq!(w.live_records("Contact").await.len(), contacts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_contact_holds_the_cursor_and_replay_creates_it_once_the_cause_is_fixed() {
    use engine::store::{FailureFilter, FailureSelector, FailureStatus};
    let w = world(40, "skip").await;
    w.run("new-users").await;
    let (pendo_account, sf_account, domain) = w.matched_account().await;
    let settled = w.ctx.store.cursor("new-users", engine::workflow::new_users::CURSOR).await.unwrap();
    // Ada is new since the last run, Bob a second newer still.
    let ada_first = settled.and_then(|c| c.parse::<i64>().ok()).unwrap() + 1;
    let bob_first = ada_first + 1_000;
    w.pendo_seed(json!({"visitors": [
        visitor("v-ada", &pendo_account, &format!("ada@{domain}"), "Ada Lovelace", ada_first, bob_first),
        visitor("v-bob", &pendo_account, &format!("bob@{domain}"), "Bob Noyce", bob_first, bob_first),
    ]}))
    .await;
    let rule = json!({"name": "No_Lovelace", "errorMessage": "Reserved name", "errorField": "LastName",
                      "condition": {"field": "LastName", "operator": "equals", "value": "Lovelace"}});
    let url = format!("{}/__emulator/validation-rules/Contact", w.sf.base_url);
    assert!(w.http.post(&url).json(&rule).send().await.unwrap().status().is_success());

    let first = w.run("new-users").await;
    assert_eq!(first.failed, 1, "{:?}", first.failures);
    let open = w
        .ctx
        .store
        .list_failures(&FailureFilter { status: Some(FailureStatus::Open), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].workflow.as_str(), open[0].object.as_str()), ("new-users", "Contact"));
    assert_eq!((open[0].key.as_str(), open[0].error_code.as_str()), ("v-ada", "FIELD_CUSTOM_VALIDATION_EXCEPTION"));
    assert_eq!(open[0].payload["AccountId"], json!(sf_account));
    // The cursor stays at the refused visitor, not at Bob who came after her.
    let cursor = w.ctx.store.cursor("new-users", engine::workflow::new_users::CURSOR).await.unwrap();
    assert_eq!(cursor, Some(ada_first.to_string()));

    assert!(w.http.delete(&url).send().await.unwrap().status().is_success());
    let replay = engine::workflow::replay::replay(&w.ctx, &FailureSelector::Ids(vec![open[0].id]), 10).await.unwrap();
    assert_eq!((replay.claimed, replay.resolved, replay.failed_again), (1, 1, 0), "{replay:?}");
    let ada = &w.contacts_by_email().await[&format!("ada@{domain}")];
    assert_eq!((ada.len(), ada[0]["Pendo_Visitor_Id__c"].as_str()), (1, Some("v-ada")));
    let cursor = w.ctx.store.cursor("new-users", engine::workflow::new_users::CURSOR).await.unwrap();
    assert!(cursor.and_then(|c| c.parse::<i64>().ok()).is_some_and(|c| c > ada_first), "the cursor moves on");
    let next = w.run("new-users").await;
    assert_eq!((next.written, next.failed), (0, 0), "{:?}", next.samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pendo_refusal_holds_the_attributes_cursor_until_it_is_dismissed() {
    use engine::store::{FailureFilter, FailureSelector, FailureStatus};
    use engine::workflow::attributes::CURSOR;
    let w = world(40, "skip").await;
    let first = w.run("attributes").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    let with_pendo: Vec<Value> =
        w.live_records("Account").await.into_iter().filter(|a| a["Pendo_Account_Id__c"].is_string()).collect();
    let (ghost, later) = (with_pendo[0]["Id"].as_str().unwrap(), with_pendo[1]["Id"].as_str().unwrap());
    let stamp = |id: &str, rows: &[Value]| {
        let row = rows.iter().find(|a| a["Id"] == json!(id)).unwrap();
        salesforce::rest::describe::sf_datetime::parse(row["SystemModstamp"].as_str().unwrap()).unwrap()
    };
    w.person_edits(ghost, json!({"Pendo_Account_Id__c": "no-such-pendo-account", "Plan_Tier__c": "Growth"}));
    // SystemModstamp is kept to the millisecond, so the second edit waits for the emulator's clock
    // to reach the next one; only then is it stamped strictly later.
    let first_edit = stamp(ghost, &w.live_records("Account").await);
    let next_ms = first_edit + chrono::Duration::milliseconds(1);
    support::eventually("the emulator's clock to pass the first edit", Duration::from_secs(10), || async {
        (w.sf.state.clock.now() >= next_ms).then_some(())
    })
    .await;
    w.person_edits(later, json!({"Plan_Tier__c": "Enterprise"}));
    let rows = w.live_records("Account").await;
    assert!(stamp(ghost, &rows) < stamp(later, &rows));

    let second = w.run("attributes").await;
    assert_eq!((second.written, second.failed), (1, 1), "{:?}", second.failures);
    let open = w
        .ctx
        .store
        .list_failures(&FailureFilter { status: Some(FailureStatus::Open), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].key.as_str(), open[0].error_code.as_str()), ("no-such-pendo-account", "PENDO_ACCOUNT_MISSING"));
    assert_eq!(open[0].payload["sfplantier"], json!("Growth"));
    let cursor = |c: Option<String>| chrono::DateTime::parse_from_rfc3339(&c.unwrap()).unwrap().with_timezone(&Utc);
    let held = cursor(w.ctx.store.cursor("attributes", CURSOR).await.unwrap());
    assert_eq!(held, stamp(ghost, &rows), "the cursor stays at the refused Account");

    // A person decides it needs nothing: the same refusal stays dismissed and the cursor moves on.
    let dismissed = w
        .ctx
        .store
        .dismiss_failures(&FailureSelector::Ids(vec![open[0].id]), "test account", Utc::now())
        .await
        .unwrap();
    assert_eq!(dismissed.len(), 1);
    let third = w.run("attributes").await;
    assert_eq!((third.written, third.failed), (0, 1), "{:?}", third.failures);
    let moved = cursor(w.ctx.store.cursor("attributes", CURSOR).await.unwrap());
    assert!(moved >= stamp(later, &rows), "{moved} {held}");
    let still_open = w
        .ctx
        .store
        .list_failures(&FailureFilter { status: Some(FailureStatus::Open), ..Default::default() })
        .await
        .unwrap();
    assert!(still_open.is_empty(), "{still_open:?}");
}

/// A Pendo field the config names but Pendo lacks is held back alone: the other fields are
/// written, the run is partial and names the field where the config does, and the cursor stays;
/// once the field exists, the next run writes it for every Account that has a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_pendo_lacks_is_held_back_alone_until_it_exists() {
    use engine::workflow::attributes::CURSOR;
    let w = world(30, "skip").await;
    let url = format!("{}/api/v1/metadata/schema/account/custom/sfcontractstage", w.pendo.base_url);
    let r = w.http.delete(url).header("x-pendo-integration-key", "emulator-integration-key").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let with_pendo = || async {
        w.live_records("Account").await.into_iter().filter(|a| a["Pendo_Account_Id__c"].is_string()).collect::<Vec<_>>()
    };
    for a in with_pendo().await.iter().take(3) {
        w.person_edits(a["Id"].as_str().unwrap(), json!({"Contract_Stage__c": "Active"}));
    }
    let with_pendo = with_pendo().await;
    let staged: Vec<&Value> = with_pendo.iter().filter(|a| a["Contract_Stage__c"].is_string()).collect();
    assert_eq!(staged.len(), 3);

    let first = w.run("attributes").await;
    assert_eq!((first.state.as_str(), first.failed), ("partial", 0), "{first:?}");
    assert_eq!(first.written, with_pendo.len(), "the other fields still reach every account");
    let problems = &first.preflight.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field.as_deref(), Some("custom.sfcontractstage"));
    assert!(problems[0].line.is_some() && problems[0].message.contains("setup pendo"), "{}", problems[0]);
    assert!(!first.fields_changed.contains_key("custom.sfcontractstage"), "{:?}", first.fields_changed);
    assert_eq!(w.ctx.store.cursor("attributes", CURSOR).await.unwrap(), None, "the cursor stays");

    let field = pendo::metadata::FieldSpec {
        name: "sfcontractstage".into(),
        displayname: "Contract stage".into(),
        field_type: "string".into(),
    };
    w.ctx.pendo.create_fields(pendo::Kind::Account, "custom", &[field]).await.unwrap();
    let second = w.run("attributes").await;
    assert_eq!((second.state.as_str(), second.failed), ("succeeded", 0), "{second:?}");
    assert_eq!(second.fields_changed, BTreeMap::from([("custom.sfcontractstage".to_owned(), staged.len())]));
    let md = w.pendo_accounts().await;
    let one = staged[0]["Pendo_Account_Id__c"].as_str().unwrap();
    assert_eq!(md[one]["custom"]["sfcontractstage"], staged[0]["Contract_Stage__c"]);
    assert!(w.ctx.store.cursor("attributes", CURSOR).await.unwrap().is_some());
    let third = w.run("attributes").await;
    assert_eq!((third.written, third.changed), (0, 0), "{third:?}");
}

/// Calls a run reserved and never settled (it was killed) go back to the day's share when the
/// workflow's next run claims it, instead of shrinking the share until midnight UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_reservation_is_released_by_the_next_run() {
    let w = world(20, "skip").await;
    let today = Utc::now().date_naive();
    assert!(w.ctx.store.reserve_budget(today, "new-users", 5_000, 1_000_000, Utc::now()).await.unwrap());
    assert_eq!(w.ctx.store.budget_day(today).await.unwrap().reserved, 5_000);
    let report = w.run("new-users").await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert_eq!(w.ctx.store.budget_day(today).await.unwrap().reserved, 0);
}
