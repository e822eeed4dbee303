//! Timing of the engine's extraction queries against a generated store, paged as the engine pages
//! them. Ignored: run with `EXTRACT_ACCOUNTS=100000 cargo test --release -p emulator --test it
//! extraction_perf -- --ignored --nocapture` (`EXTRACT_PAGE` rows a page, 100,000 unless set;
//! `EXTRACT_ONLY` a part of one query's name).

use emulator::pendo::GenConfig;
use emulator::pendo::bench::extraction;

#[test]
#[ignore = "benchmark: generates a large store"]
fn extraction_timing() {
    let accounts: usize = std::env::var("EXTRACT_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let compare = std::env::var("EXTRACT_COMPARE").is_ok_and(|v| v == "1");
    let anchor = 1_767_225_600_000;
    let gc = GenConfig { seed: 1, accounts, days: 30, anchor_day_ms: Some(anchor), ..Default::default() };
    let t = std::time::Instant::now();
    let store = emulator::pendo::generate::generate(&gc).store;
    println!(
        "generated {accounts} accounts in {:.1?}: {} visitors, {} page rows, {} feature rows, {} guide events",
        t.elapsed(),
        store.visitors.len(),
        store.page_rows.len(),
        store.feature_rows.len(),
        store.guide_events.len()
    );
    let repeat: usize = std::env::var("EXTRACT_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let page: usize = std::env::var("EXTRACT_PAGE").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut fast = extraction(&store, anchor, page, true).unwrap();
    for _ in 1..repeat {
        fast = extraction(&store, anchor, page, true).unwrap();
    }
    let mut total = 0.0;
    for (t, _) in &fast {
        total += t.total_ms;
        println!(
            "{:<28} pages {:>3} rows {:>8} total {:>9.1} ms slowest page {:>8.1} ms",
            t.name, t.pages, t.rows, t.total_ms, t.slowest_page_ms
        );
    }
    println!("all queries: {total:.1} ms");
    if compare {
        let plain = extraction(&store, anchor, page, false).unwrap();
        for ((a, ra), (b, rb)) in fast.iter().zip(&plain) {
            println!("{:<28} plain total {:>9.1} ms", b.name, b.total_ms);
            assert_eq!(ra, rb, "{} differs from the plain path", a.name);
        }
    }
}
