//! Account hierarchies end to end, in a generated world whose regional subsidiaries share their
//! parent's e-mail domain and are its children on both sides (`ParentId` in Salesforce,
//! `custom.parentaccountid` in Pendo): each family member matches its own Account instead of
//! coming out ambiguous, the parent's family figures are written once and a re-run writes
//! nothing, and a new user of a subsidiary lands under the subsidiary.

use std::collections::HashMap;

use emulator::pendo::GenConfig;
use emulator::pendo::generate::{AccountProfile, account_profile, sf_account_id};
use engine::store::MatchStatus;
use serde_json::{Value, json};

use crate::support::Emulators;

const MATCHING: &str = r#"
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
      - { rule: child_field, group: agent, field: name, account_field: Name }
      - { rule: pendo_parent, group: custom, field: parentaccountid }"#;

const CONFIG: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  engagement:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    max_latency: 1m
    matching:{matching}
    score:
      active_visitors: { weight: 0.5, target: 10 }
      active_days: { weight: 0.5, target: 20 }
    fields:
      active_visitors: Pendo_Active_Visitors__c
      events: Pendo_Events__c
      score: Pendo_Engagement_Score__c
      updated_at: Pendo_Engagement_Updated__c
    rollup_fields:
      active_visitors: Family_Visitors__c
      events: Family_Events__c
      score: Family_Score__c
  # The same accounts without the hierarchy rules, to compare (planned only).
  plain:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 1, target: 10 }
    fields:
      score: Health_Score__c
  new-users:
    template: new-users-to-contacts
    schedule: "*/15 * * * *"
    window_days: 30
    matching:{matching}
    contact_fields:
      visitor_id: Pendo_Visitor_Id__c
"#;

/// A family member in Salesforce whose Accounts only its own family shares a website with.
fn clean(p: &AccountProfile) -> bool {
    p.in_salesforce && !p.sf_duplicate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_match_member_by_member_roll_up_once_and_new_users_land_under_the_child() {
    let gc = GenConfig { seed: 5, accounts: 600, days: 30, hierarchies: true, ..GenConfig::default() };
    let emulators = Emulators::start_with(gc).await;
    for name in ["Family_Visitors__c", "Family_Events__c", "Family_Score__c"] {
        let url = format!("{}/__emulator/fields/Account", emulators.sf.base_url);
        let r = emulators.http.post(url).json(&json!({"name": name, "type": "double"})).send().await.unwrap();
        assert!(r.status().is_success(), "{name}: {}", r.text().await.unwrap());
    }
    let w = emulators.world(&CONFIG.replace("{matching}", MATCHING)).await;
    let profiles: Vec<AccountProfile> = (0..w.gc.accounts).map(|i| account_profile(&w.gc, i)).collect();
    // (parent, child) index pairs whose Accounts form a family of two.
    let families: Vec<(usize, usize)> = profiles
        .iter()
        .filter_map(|c| Some((c.parent.as_ref()?.0, c.index)))
        .filter(|&(p, c)| clean(&profiles[p]) && clean(&profiles[c]))
        .collect();
    assert!(families.len() >= 5, "the world holds families: {families:?}");

    let plain = w.dry_run("plain").await;
    let first = w.run("engagement").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(
        first.ambiguous < plain.ambiguous,
        "hierarchies settle families: {} ambiguous with them, {} without",
        first.ambiguous,
        plain.ambiguous
    );

    // Each member matched its own Account, and says why when the domain found the family.
    let map: HashMap<String, engine::store::IdMapEntry> =
        w.ctx.store.id_map("engagement").await.unwrap().into_iter().map(|e| (e.pendo_id.clone(), e)).collect();
    let mut by_hierarchy = 0;
    for &(p, c) in &families {
        for i in [p, c] {
            let e = &map[&profiles[i].id];
            assert_eq!(e.status, MatchStatus::Matched, "{}: {e:?}", profiles[i].id);
            assert_eq!(e.salesforce_id.as_deref(), Some(sf_account_id(i).as_str()), "{}: {e:?}", profiles[i].id);
            // Without an id rule only the shared domain could find it: the family settled it.
            if !profiles[i].has_sfdc_id_in_pendo && !profiles[i].has_pendo_id_in_sf {
                let rule = e.rule.as_deref().unwrap_or_default();
                assert!(rule.starts_with("email_domain, hierarchy:"), "{}: {rule}", profiles[i].id);
                by_hierarchy += 1;
            }
        }
    }
    assert!(by_hierarchy >= 5, "the domain rule found families: {by_hierarchy}");

    // The parent's family figures are its own plus its child's; a child's Account has none.
    let accounts: HashMap<String, Value> =
        w.records("Account").await.into_iter().map(|r| (r["Id"].as_str().unwrap().to_owned(), r)).collect();
    let figure = |i: usize, f: &str| accounts[&sf_account_id(i)][f].as_f64();
    for &(p, c) in &families {
        let own = |i| figure(i, "Pendo_Active_Visitors__c").unwrap_or(0.0);
        assert_eq!(figure(p, "Family_Visitors__c"), Some(own(p) + own(c)), "family of {}", profiles[p].id);
        let events = |i| figure(i, "Pendo_Events__c").unwrap_or(0.0);
        assert_eq!(figure(p, "Family_Events__c"), Some(events(p) + events(c)));
        assert!(figure(p, "Family_Score__c").is_some());
        assert_eq!(figure(c, "Family_Visitors__c"), None, "a leaf has no family figures");
    }
    let with_family = accounts.values().filter(|a| !a["Family_Visitors__c"].is_null()).count();
    assert!(with_family >= families.len(), "{with_family}");

    let again = w.run("engagement").await;
    assert_eq!((again.written, again.failed), (0, 0), "a re-run writes nothing: {again:?}");

    // New users of a subsidiary become Contacts of the subsidiary's Account.
    let before: Vec<String> =
        w.records("Contact").await.iter().filter_map(|r| r["Id"].as_str().map(str::to_owned)).collect();
    let report = w.run("new-users").await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    let email_of_child: HashMap<String, usize> = families
        .iter()
        .flat_map(|&(_, c)| profiles[c].visitors.iter().map(move |v| (v.email.to_lowercase(), c)))
        .collect();
    let mut under_child = 0;
    for contact in w.records("Contact").await.iter().filter(|r| !before.iter().any(|b| r["Id"] == json!(b))) {
        let Some(&c) = contact["Email"].as_str().and_then(|e| email_of_child.get(&e.to_lowercase())) else { continue };
        assert_eq!(contact["AccountId"].as_str(), Some(sf_account_id(c).as_str()), "{contact}");
        under_child += 1;
    }
    assert!(under_child > 0, "some subsidiary has a new user");
}
