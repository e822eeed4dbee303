use pendo::aggregation::expr::Expr;
use pendo::{Agg, Apps, Error, Pipeline, SortKey, Source, Span, Time, TimeSeries};
use serde_json::{Value, json};

use crate::{client, emulator};

const DAY: i64 = 86_400_000;

fn window() -> TimeSeries {
    TimeSeries::days(Time::Now, Span::Count(-21))
}

#[tokio::test]
async fn every_source_answers() {
    let e = emulator().await;
    let c = client(&e);
    let guides = c.guides(&[]).await.unwrap();
    let nps = guides.iter().find(|g| g.polls.iter().any(|p| p.poll_type() == Some("NPSRating"))).unwrap();
    let feature = c.features(&[]).await.unwrap().remove(0);
    let page = c.pages(&[]).await.unwrap().remove(0);
    let track = c.track_types(&[]).await.unwrap().remove(0);
    let entity_sources = [
        (Source::Visitors { identified: Some(true) }, "visitorId"),
        (Source::Accounts { apps: Apps::All }, "accountId"),
        (Source::Features { apps: Apps::Ids(vec![-323232]) }, "id"),
        (Source::Pages { apps: Apps::Default }, "id"),
        (Source::Guides { apps: Apps::All }, "id"),
        (Source::TrackTypes { apps: Apps::All }, "id"),
        (Source::PollsSeenEver { guide_id: nps.id.clone(), poll_id: nps.polls[0].id.clone() }, "response"),
    ];
    for (src, field) in entity_sources {
        let r = c.aggregate(&Pipeline::from_source(src.clone()).limit(5)).await.unwrap();
        assert!(!r.results.is_empty(), "{src:?}");
        assert!(r.results.iter().all(|row| !row[field].is_null()), "{src:?}: {field}");
    }
    let event_sources = [
        (Source::Events { apps: Apps::All }, "numEvents"),
        (Source::FeatureEvents { feature_id: None, apps: Apps::All }, "featureId"),
        (Source::FeatureEvents { feature_id: Some(feature.id.clone()), apps: Apps::Default }, "featureId"),
        (Source::PageEvents { page_id: Some(page.id.clone()), apps: Apps::Default }, "pageId"),
        (Source::TrackEvents { track_type_id: None, apps: Apps::All }, "trackTypeId"),
        (Source::GuideEvents { guide_id: None, apps: Apps::All }, "guideId"),
        (
            Source::PollEvents {
                guide_id: Some(nps.id.clone()),
                poll_id: Some(nps.polls[0].id.clone()),
                apps: Apps::Default,
            },
            "pollResponse",
        ),
    ];
    for (src, field) in event_sources {
        let r = c.aggregate(&Pipeline::events(src.clone(), window()).limit(50)).await.unwrap();
        assert!(!r.results.is_empty(), "{src:?}");
        assert!(r.results.iter().all(|row| !row[field].is_null()), "{src:?}: {field}");
        assert!(r.start_time.is_some());
    }
    let _ = track;
    // hourRange rows carry `hour`, dayRange rows `day`.
    let r = c
        .aggregate(
            &Pipeline::events(
                Source::Events { apps: Apps::All },
                TimeSeries::hours(Time::NowMinusMillis(10 * DAY), Span::Last(Time::Now)),
            )
            .limit(3),
        )
        .await
        .unwrap();
    assert!(r.results.iter().all(|row| row["hour"].is_i64() && row.get("day").is_none()));
}

#[tokio::test]
async fn operators() {
    let e = emulator().await;
    let c = client(&e);
    // Engagement per account: group twice, then sort descending.
    let p = Pipeline::events(Source::Events { apps: Apps::All }, window())
        .identified("visitorId")
        .group(
            &["accountId"],
            &[
                ("events", Agg::Sum("numEvents".into())),
                ("visitors", Agg::Count(Some("visitorId".into()))),
                ("days", Agg::Count(Some("day".into()))),
                ("rows", Agg::Count(None)),
                ("avg", Agg::Avg("numMinutes".into())),
                ("last", Agg::Max("day".into())),
            ],
        )
        .sort(&[SortKey::desc("events"), SortKey::asc("accountId")])
        .limit(5);
    let r = c.aggregate(&p).await.unwrap();
    assert!(!r.results.is_empty() && r.results.len() <= 5);
    let ev: Vec<i64> = r.results.iter().map(|x| x["events"].as_i64().unwrap()).collect();
    assert!(ev.windows(2).all(|w| w[0] >= w[1]));
    assert!(r.results.iter().all(|x| x["visitors"].as_i64().unwrap() <= x["rows"].as_i64().unwrap()));

    // reduce + count.
    let total = c.aggregate(&Pipeline::from_source(Source::Visitors { identified: None }).count()).await.unwrap();
    let anon = c
        .aggregate(&Pipeline::from_source(Source::Visitors { identified: None }).anonymous("visitorId").count())
        .await
        .unwrap();
    let ident = c
        .aggregate(&Pipeline::from_source(Source::Visitors { identified: Some(true) }).reduce(&[
            ("n", Agg::Count(Some("visitorId".into()))),
            ("ids", Agg::List("visitorId".into())),
            ("first", Agg::First("visitorId".into())),
            ("lastOne", Agg::Last("visitorId".into())),
            ("mn", Agg::Min("metadata.auto.firstvisit".into())),
        ]))
        .await
        .unwrap();
    let n = |r: &pendo::aggregation::AggregationResponse, k: &str| r.results[0][k].as_i64().unwrap();
    assert_eq!(n(&total, "count"), n(&anon, "count") + n(&ident, "n"));
    assert_eq!(ident.results[0]["ids"].as_array().unwrap().len() as i64, n(&ident, "n"));

    // select / eval / filter with escaped literals / unwind / bulkExpand / merge.
    let p = Pipeline::from_source(Source::Visitors { identified: Some(true) })
        .eval(vec![
            ("acct", Expr::field("metadata.auto.accountid")),
            ("nested.two", Expr::lit(1i64).plus(Expr::lit(1i64))),
        ])
        .bulk_expand_account("account", "acct")
        .filter(Expr::field("account.auto.id").eq(Expr::field("acct")).and(Expr::field("nested.two").eq(2i64)))
        .eval(vec![("ids", Expr::field("metadata.auto.accountids"))])
        .unwind("ids", false)
        .select(vec![
            ("visitorId", Expr::field("visitorId")),
            ("acct", Expr::field("ids")),
            ("name", Expr::field("account.agent.name")),
        ])
        .limit(10);
    let r = c.aggregate(&p).await.unwrap();
    assert_eq!(r.results.len(), 10);
    assert!(r.results.iter().all(|x| x["name"].is_string()));
    let sub = Pipeline::from_source(Source::Visitors { identified: None })
        .eval(vec![("accountId", Expr::field("metadata.auto.accountid"))])
        .group(&["accountId"], &[("n", Agg::Count(Some("visitorId".into())))]);
    let p = Pipeline::from_source(Source::Accounts { apps: Apps::Default })
        .merge(&["accountId"], &[("visitors", "n")], sub)
        .filter(Expr::field("visitors").ge(1i64))
        .count();
    assert_eq!(c.aggregate(&p).await.unwrap().results[0]["count"], 30);
    // spawn + join, segment.
    let p = Pipeline::spawn(vec![
        Pipeline::from_source(Source::Visitors { identified: Some(true) })
            .select(vec![("visitorId", Expr::field("visitorId")), ("a", Expr::lit(1i64))]),
        Pipeline::from_source(Source::Visitors { identified: None })
            .select(vec![("visitorId", Expr::field("visitorId")), ("b", Expr::lit(2i64))]),
    ])
    .join(&["visitorId"], Some(2))
    .count();
    assert_eq!(c.aggregate(&p).await.unwrap().results[0]["count"], ident.results[0]["n"]);
    let seg = c
        .aggregate(
            &Pipeline::from_source(Source::Visitors { identified: None }).segment("seg-enterprise-users").count(),
        )
        .await
        .unwrap();
    assert!(seg.results[0]["count"].as_i64().unwrap() <= n(&ident, "n"));
}

#[tokio::test]
async fn errors_are_typed() {
    let e = emulator().await;
    let c = client(&e);
    // Client-side: invalid builder pieces never reach the wire.
    let bad =
        Pipeline::from_source(Source::Accounts { apps: Apps::Default }).filter(Expr::field("not a path").eq(1i64));
    assert!(matches!(c.aggregate(&bad).await, Err(Error::Pipeline(_))));
    // Server-side 400 and 422.
    let r = c
        .aggregate_raw(
            &json!({"request": {"pipeline": [{"source": {"visitors": null}}, {"filter": "visitorId == \"x"}]}}),
        )
        .await;
    match r {
        Err(Error::Rejected { status: 400, message, .. }) => assert!(message.contains("string")),
        other => panic!("{other:?}"),
    }
    let r = c.aggregate_raw(&json!({"request": {"pipeline": [{"source": {"visitors": null}}, {"nope": 1}]}})).await;
    assert!(matches!(r, Err(Error::Rejected { status: 400, .. })));
    let r = c.aggregate_raw(&json!({"request": {}})).await;
    assert!(matches!(r, Err(Error::Rejected { status: 422, .. })));
    let r = c.aggregate_raw(&json!({"request": {"pipeline": [{"source": {"events": null}}]}})).await;
    assert!(matches!(&r, Err(e) if e.status() == Some(400) && !e.is_retryable()));
}

#[tokio::test]
async fn keyset_paging_sees_every_row_once() {
    let e = emulator().await;
    let c = client(&e);
    let total =
        c.aggregate(&Pipeline::from_source(Source::Visitors { identified: Some(true) }).count()).await.unwrap().results
            [0]["count"]
            .as_u64()
            .unwrap();
    let pager = c.pager(Pipeline::from_source(Source::Visitors { identified: Some(true) }), &["visitorId"], 17);
    let rows = pager.collect_all().await.unwrap();
    assert_eq!(rows.len() as u64, total);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["visitorId"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len() as u64, total);
    // A repeating key plus a tie-breaker.
    let mut pager = c.pager(
        Pipeline::from_source(Source::Accounts { apps: Apps::All }),
        &["metadata.auto.lastupdated", "accountId"],
        7,
    );
    let mut n = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        n += page.len();
    }
    assert_eq!(n, 30);
    assert_eq!(pager.requests, 5);
}

mod escaping {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
        #[test]
        fn any_string_id_round_trips_through_a_filter(id in "[a-zA-Z0-9\"\\\\ '`{}()&|!=<>.@_-]{1,24}") {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let e = emulator::pendo::start("127.0.0.1:0", emulator::pendo::PendoState::new(Default::default())).await.unwrap();
                let seed = json!({"accounts": [{"accountId": "acme"}], "visitors": [
                    {"visitorId": id, "accountId": "acme"}, {"visitorId": format!("{id}x"), "accountId": "acme"}, {"visitorId": "other", "accountId": "acme"}]});
                reqwest::Client::new().post(format!("{}/__emulator/seed", e.base_url)).json(&seed).send().await.unwrap();
                let c = crate::client(&e);
                let r = c.aggregate(&Pipeline::from_source(Source::Visitors { identified: None }).filter(Expr::field("visitorId").eq(id.as_str()))).await.unwrap();
                prop_assert_eq!(r.results.len(), 1);
                prop_assert_eq!(r.results[0]["visitorId"].as_str(), Some(id.as_str()));
                let after: Vec<Value> = c.pager(Pipeline::from_source(Source::Visitors { identified: None }).filter(Expr::field("visitorId").ge(id.as_str())), &["visitorId"], 1).collect_all().await.unwrap();
                prop_assert!(after.iter().any(|r| r["visitorId"].as_str() == Some(id.as_str())));
                Ok(())
            })?;
        }
    }
}

#[tokio::test]
async fn rows_can_be_taken_one_at_a_time() {
    let e = emulator().await;
    let c = client(&e);
    let p =
        Pipeline::from_source(Source::Accounts { apps: Apps::Default }).sort(&[SortKey::asc("accountId")]).limit(50);
    let whole = c.aggregate(&p).await.unwrap().results;
    assert!(!whole.is_empty());
    let mut streamed = Vec::new();
    let n = c
        .aggregate_each(&p, |row| {
            streamed.push(row);
            Ok::<(), Error>(())
        })
        .await
        .unwrap();
    assert_eq!(n, whole.len() as u64);
    assert_eq!(streamed, whole);

    // The client's errors arrive as the caller's error type.
    #[derive(Debug)]
    enum Mine {
        Pendo(Error),
        Refused(Value),
    }
    impl From<Error> for Mine {
        fn from(e: Error) -> Self {
            Mine::Pendo(e)
        }
    }
    let r = c.aggregate_each(&p, |row| Err(Mine::Refused(row))).await;
    assert!(matches!(&r, Err(Mine::Refused(row)) if *row == whole[0]), "{r:?}");
    let bad =
        Pipeline::from_source(Source::Accounts { apps: Apps::Default }).filter(Expr::field("not a path").eq(1i64));
    let r = c.aggregate_each(&bad, |_| Ok::<(), Mine>(())).await;
    assert!(matches!(r, Err(Mine::Pendo(Error::Pipeline(_)))), "{r:?}");
    let wrong = crate::client_for(&e, "wrong-key");
    let r = wrong.aggregate_each(&p, |_| Ok::<(), Mine>(())).await;
    assert!(matches!(&r, Err(Mine::Pendo(e)) if e.status() == Some(403)), "{r:?}");
}

#[tokio::test]
async fn a_truncated_streamed_body_is_a_decode_error() {
    let app = axum::Router::new().route(
        "/api/v1/aggregation",
        axum::routing::post(|| async {
            r#"{"startTime": 1, "results": [{"accountId": "a1"}, {"accountId": "a"#.to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = pendo::Client::new(pendo::ClientConfig::new(&format!("http://{addr}"), "k").unwrap()).unwrap();
    let mut seen = 0;
    let p = Pipeline::from_source(Source::Accounts { apps: Apps::Default });
    let r = c
        .aggregate_each(&p, |_| {
            seen += 1;
            Ok::<(), Error>(())
        })
        .await;
    match r {
        Err(e @ Error::Decode { .. }) => {
            let text = e.to_string();
            assert!(text.contains("POST /aggregation") && text.contains("EOF"), "{text}");
            assert_eq!(e.fault(), pendo::Fault::Remote);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen, 1);
}
