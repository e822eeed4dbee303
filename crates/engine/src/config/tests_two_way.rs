//! Loader tests for the two-way templates (new-users-to-contacts, account-attributes-to-pendo)
//! and for field ownership across workflows.

use std::time::Duration;

use super::*;

fn load_err(text: &str) -> ConfigErrors {
    match load_str(text, "bad.yaml") {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
}

#[test]
fn the_example_holds_both_templates_with_their_values() {
    let config = load_str(STARTER, "example.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Template::NewUsersToContacts(n) = &config.workflows["new-users"].template else { panic!("new-users") };
    assert_eq!(n.contact_fields.visitor_id, "Pendo_Visitor_Id__c");
    assert_eq!(n.contact_fields.last_visit.as_deref(), Some("Pendo_Last_Active__c"));
    assert_eq!(n.unmatched_account, UnmatchedAccount::Skip);
    assert!(!n.strip_plus_addressing);
    assert_eq!(n.overlap, Duration::from_secs(600));
    assert_eq!(n.matching.len(), 3);
    assert!(matches!(n.matching[2], MatchRule::PendoParent { .. }), "{:?}", n.matching);
    let Template::AccountAttributesToPendo(a) = &config.workflows["attributes-to-pendo"].template else {
        panic!("attributes-to-pendo")
    };
    assert_eq!(a.group, MetadataGroup::Custom);
    assert_eq!(a.pendo_account.field.as_deref(), Some("Pendo_Account_Id__c"));
    assert_eq!(a.pendo_account.id_map_of.as_deref(), Some("engagement"));
    assert_eq!(a.attributes.len(), 3);
    assert_eq!(
        a.attributes[1],
        Attribute { salesforce: "Renewal_Date__c".into(), pendo: "renewaldate".into(), kind: AttributeType::Time }
    );
    assert_eq!(a.attributes[2].salesforce, "CSM__r.Name");
    // The display form loads back to the same workflows.
    let again = load_str(&config.redacted_yaml(), "shown.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Template::AccountAttributesToPendo(b) = &again.workflows["attributes-to-pendo"].template else { panic!() };
    assert_eq!(a, b);
    let Template::NewUsersToContacts(m) = &again.workflows["new-users"].template else { panic!() };
    assert_eq!(n, m);
}

#[test]
fn a_field_sent_back_the_other_way_is_refused_with_its_line() {
    // engagement-scores writes the score into Salesforce; reading it back into Pendo is a loop.
    let text = STARTER.replace(
        "      - { salesforce: CSM__r.Name, pendo: csm }",
        "      - { salesforce: pendo_engagement_score__c, pendo: sfscore }",
    );
    let errors = load_err(&text);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let e = &errors.errors[0];
    assert_eq!(e.key, "workflows.attributes-to-pendo.attributes[2].salesforce");
    assert_eq!(e.line, Some(line_of(&text, "sfscore")));
    assert!(e.message.contains("written by workflow `engagement`"), "{}", e.message);
    assert!(e.message.contains("one owning direction"), "{}", e.message);
}

#[test]
fn a_field_written_by_two_workflows_is_refused() {
    let text = STARTER.to_owned()
        + "\n  more-users:\n    template: new-users-to-contacts\n    schedule: \"0 * * * *\"\n    window_days: 1\n    matching: [{ rule: external_id, field: Pendo_Account_Id__c }]\n    contact_fields: { visitor_id: Pendo_Visitor_Id__c }\n";
    let errors = load_err(&text);
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["workflows.more-users.contact_fields.visitor_id"], "{errors}");
    assert!(errors.errors[0].message.contains("already written by workflow `new-users`"), "{errors}");
}

#[test]
fn keys_of_other_templates_and_bad_values_are_reported() {
    let text = STARTER
        .replace("    unmatched_account: skip ", "    score: {}\n    unmatched_account: maybe ")
        .replace("    pendo_group: custom ", "    pendo_group: auto ")
        .replace("pendo: renewaldate, type: time", "pendo: renewaldate, type: date");
    let errors = load_err(&text);
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "workflows.new-users.score",
            "workflows.new-users.unmatched_account",
            "workflows.attributes-to-pendo.pendo_group",
            "workflows.attributes-to-pendo.attributes[1].type",
        ],
        "{errors}"
    );
    assert!(errors.errors[0].message.contains("not used by template new-users-to-contacts"), "{errors}");
    let text = STARTER.replace("      id_map_of: engagement ", "      id_map_of: nowhere ");
    let errors = load_err(&text);
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["workflows.attributes-to-pendo.pendo_account.id_map_of"], "{errors}");
    let text = STARTER.replace("      id_map_of: engagement ", "      id_map_of: new-users ");
    load_str(&text, "ok.yaml").unwrap_or_else(|e| panic!("new-users keeps matches too: {e}"));
}

#[test]
fn leads_need_the_lead_choice_and_a_visitor_id_is_an_external_id() {
    let text = STARTER
        .replace("    unmatched_account: skip ", "    lead_source: Product\n    unmatched_account: skip ")
        .replace("visitor_id: Pendo_Visitor_Id__c ", "visitor_id: Email ");
    let errors = load_err(&text);
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["workflows.new-users.contact_fields.visitor_id", "workflows.new-users.lead_source"], "{errors}");
    let ok = STARTER.replace("    unmatched_account: skip ", "    lead_source: Product\n    unmatched_account: lead ");
    let config = load_str(&ok, "ok.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Template::NewUsersToContacts(n) = &config.workflows["new-users"].template else { panic!() };
    assert_eq!((n.unmatched_account, n.lead_source.as_deref()), (UnmatchedAccount::Lead, Some("Product")));
}

#[test]
fn a_family_field_written_by_another_workflow_is_refused() {
    // nps-realtime owns Health_Score__c; a family figure may not write it too.
    let text = STARTER.replacen(
        "    # rollup_fields:                # each parent",
        "    rollup_fields: { score: health_score__c }\n    # x",
        1,
    );
    let errors = load_err(&text);
    let keys: Vec<&str> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["workflows.nps.health_score.field"], "{errors}");
    assert!(errors.errors[0].message.contains("already written by workflow `engagement`"), "{errors}");
}
