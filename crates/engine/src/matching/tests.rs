use super::*;

struct P {
    id: &'static str,
    meta: Option<&'static str>,
    domains: Vec<(String, u32)>,
    with_email: u32,
}

impl PendoSide for P {
    fn pendo_id(&self) -> &str {
        self.id
    }
    fn metadata(&self, group: &str, field: &str) -> Option<&str> {
        (group == "custom" && field == "sfdcaccountid").then_some(self.meta).flatten()
    }
    fn email_domains(&self) -> (&[(String, u32)], u32) {
        (&self.domains, self.with_email)
    }
}

fn p(id: &'static str, meta: Option<&'static str>, domains: &[(&str, u32)]) -> P {
    let domains: Vec<(String, u32)> = domains.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect();
    let with_email = domains.iter().map(|d| d.1).sum();
    P { id, meta, domains, with_email }
}

fn rules() -> Vec<Rule> {
    vec![
        Rule::PendoMetadata { group: "custom".into(), field: "sfdcaccountid".into() },
        Rule::ExternalId { field: "Pendo_Account_Id__c".into() },
        Rule::EmailDomain { min_share: 0.5, free_mail: FreeMail::default() },
    ]
}

const A1: &str = "001000000000001AAA";
const A2: &str = "001000000000002AAA";
const A3: &str = "001000000000003AAA";

fn accounts() -> Accounts {
    Accounts::new([
        AccountRow {
            id: A1.into(),
            external_id: Some("acme".into()),
            website: Some("https://www.acme.com".into()),
            ..Default::default()
        },
        AccountRow {
            id: A2.into(),
            external_id: None,
            website: Some("http://globex.com/".into()),
            ..Default::default()
        },
        AccountRow { id: A3.into(), external_id: None, website: Some("globex.com".into()), ..Default::default() },
    ])
}

fn run(pendo: &[P]) -> Verdicts {
    match_all(&rules(), pendo, &accounts(), &HashMap::new())
}

#[test]
fn first_rule_with_one_candidate_decides() {
    let out = run(&[p("acme", Some("001000000000001"), &[])]);
    assert_eq!(out["acme"], Outcome::Matched { salesforce_id: A1.into(), rule: "pendo_metadata".into() });
    let out = run(&[p("acme", None, &[("acme.com", 3)])]);
    assert_eq!(out["acme"], Outcome::Matched { salesforce_id: A1.into(), rule: "external_id".into() });
}

#[test]
fn bad_metadata_ids_fall_through() {
    let out = run(&[p("acme", Some("001000000000001XXX"), &[("acme.com", 1)])]);
    assert_eq!(out["acme"].salesforce_id(), Some(A1), "wrong checksum must not match, external id still does");
    let out = run(&[p("x", Some("' OR Id != null"), &[])]);
    assert!(matches!(out["x"], Outcome::Unmatched { .. }));
}

#[test]
fn two_websites_with_one_domain_are_ambiguous() {
    let out = run(&[p("globex", None, &[("globex.com", 4)])]);
    match &out["globex"] {
        Outcome::Ambiguous(a) => assert_eq!(a.candidates, vec![A2.to_owned(), A3.to_owned()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn free_mail_never_matches() {
    let accounts = Accounts::new([AccountRow {
        id: A1.into(),
        external_id: None,
        website: Some("gmail.com".into()),
        ..Default::default()
    }]);
    let out = match_all(&rules(), &[p("x", None, &[("gmail.com", 9)])], &accounts, &HashMap::new());
    assert!(matches!(out["x"], Outcome::Unmatched { .. }), "{:?}", out["x"]);
}

#[test]
fn a_minority_domain_does_not_match() {
    let out = run(&[p("x", None, &[("gmail.com", 6), ("acme.com", 4)])]);
    assert!(matches!(out["x"], Outcome::Unmatched { .. }), "{:?}", out["x"]);
    let out = run(&[p("x", None, &[("eu.acme.com", 3), ("gmail.com", 1)])]);
    assert_eq!(out["x"].salesforce_id(), Some(A1), "a subdomain belongs to its company");
}

#[test]
fn an_account_claimed_twice_goes_to_the_stronger_rule() {
    let out = run(&[p("acme", None, &[]), p("acme-eu", None, &[("acme.com", 2)])]);
    assert_eq!(out["acme"].salesforce_id(), Some(A1));
    assert!(matches!(out["acme-eu"], Outcome::Ambiguous(_)));
    // Equal rules: neither writes.
    let accounts = Accounts::new([AccountRow {
        id: A1.into(),
        external_id: None,
        website: Some("acme.com".into()),
        ..Default::default()
    }]);
    let out = match_all(
        &rules(),
        &[p("a", None, &[("acme.com", 2)]), p("b", None, &[("acme.com", 5)])],
        &accounts,
        &HashMap::new(),
    );
    assert!(out.values().all(|o| matches!(o, Outcome::Ambiguous(_))), "{out:?}");
}

#[test]
fn pins_beat_rules_and_must_exist() {
    let pins = HashMap::from([("globex".to_owned(), A3.to_owned()), ("ghost".to_owned(), "001000000000009AAA".into())]);
    let out =
        match_all(&rules(), &[p("globex", None, &[("globex.com", 4)]), p("ghost", None, &[])], &accounts(), &pins);
    assert_eq!(out["globex"], Outcome::Matched { salesforce_id: A3.into(), rule: "pinned".into() });
    assert!(matches!(out["ghost"], Outcome::Unmatched { .. }));
}

/// A run holds an outcome for every Pendo account (a million at the largest): the rare
/// ambiguous verdict is boxed, so that it does not set every outcome's size; its JSON is as
/// it was unboxed.
#[test]
fn an_outcome_is_the_size_of_a_match_and_an_ambiguous_one_reads_as_before() {
    assert_eq!(std::mem::size_of::<Outcome>(), 48);
    let o = Outcome::ambiguous("email_domain".into(), vec![A2.to_owned(), A3.to_owned()], "2 Accounts fit".into());
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"status": "ambiguous", "rule": "email_domain", "candidates": [A2, A3], "reason": "2 Accounts fit"})
    );
    assert_eq!(serde_json::from_value::<Outcome>(json).unwrap(), o);
}
