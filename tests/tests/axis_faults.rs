//! Documents cross the national axis in both directions while it fails 30 % of calls, adds
//! latency, lists entries twice, loses acknowledgements and goes down for a while: every
//! document reaches its recipient exactly once, and none is stored twice.
//!
//! `TRUC_FAULT_DOCS` sets the number of documents each way (default 30) and
//! `TRUC_FAULT_OUTAGE_SECS` the outage (default 3); the full drill is 500 and 60.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use truc_axis_sim::{Faults, SystemConfig};
use truc_edxml::{CalendarDate, DocumentBuilder, DocumentId};
use truc_tests::{code, TestRelay};

const A_UNIT: &str = "000.00.05.G04";
const A_CHILD: &str = "000.01.05.G04";
const B_UNIT: &str = "000.00.07.G12";
const B_CHILD: &str = "000.01.07.G12";

fn upstream(base: &str, system: &str, secret: &str) -> String {
    format!("[upstream]\nbase_url = \"{base}\"\nsystem_id = \"{system}\"\nsecret = \"{secret}\"\npoll_secs = 1\ntimeout_secs = 5\nbreaker_max_open_secs = 5\n")
}

const FAST_RETRIES: &str = "retry_base_ms = 200\nretry_cap_secs = 2\n";

/// Receives until `expected` distinct documents arrived (or the deadline), acknowledging each;
/// returns every DocumentId received, duplicates included.
async fn receive(
    mut client: truc_client::Client,
    expected: usize,
    deadline: Instant,
) -> Vec<String> {
    let mut inbox = client.inbox(32).await.expect("inbox");
    let mut got = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), inbox.next()).await {
            Ok(Ok(Some(d))) => {
                inbox.ack(&d.delivery_id).await.expect("ack");
                // Arrival statuses (01) of the other side's documents come too: count documents.
                if d.kind == "document" {
                    distinct.insert(d.document_id.clone());
                    got.push(d.document_id);
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => inbox = client.inbox(32).await.expect("reopen"),
            Err(_) => {}
        }
    }
    // A little longer, to catch late duplicates.
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(2), inbox.next()).await {
        inbox.ack(&d.delivery_id).await.expect("ack");
        if d.kind == "document" {
            got.push(d.document_id);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_cross_a_failing_axis_exactly_once_each_way() {
    let n: usize = std::env::var("TRUC_FAULT_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let local = truc_axis_sim::LocalSimulator::start(vec![
        SystemConfig::new("bogtvt", "sa", "000.00.00.G04"),
        SystemConfig::new("botc", "sb", "000.00.00.G12"),
    ])
    .await
    .expect("simulator");
    let (sim, base) = (local.sim.clone(), local.base_url.clone());
    let relay_a = TestRelay::start_ministry_with(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(&base, "bogtvt", "sa"),
        FAST_RETRIES,
    )
    .await
    .expect("A");
    let relay_b = TestRelay::start_ministry_with(
        "000.00.00.G12",
        &[B_UNIT],
        &upstream(&base, "botc", "sb"),
        FAST_RETRIES,
    )
    .await
    .expect("B");

    sim.set_faults(Faults {
        error_rate: [("*".to_owned(), 0.3)].into_iter().collect(),
        latency_ms: 5,
        duplicate_list: true,
        lose_ack_rate: 0.2,
        reset_rate: 0.05,
        ..Faults::default()
    });

    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let deadline = Instant::now() + Duration::from_secs(240);
    let receivers = (
        tokio::spawn(receive(
            relay_b.adapter(B_UNIT).await.expect("B"),
            n,
            deadline,
        )),
        tokio::spawn(receive(
            relay_a.adapter(A_UNIT).await.expect("A"),
            n,
            deadline,
        )),
    );
    let mut a = relay_a.adapter(A_UNIT).await.expect("A");
    let mut b = relay_b.adapter(B_UNIT).await.expect("B");
    for i in 0..n {
        let to_b = DocumentBuilder::new(
            code(A_UNIT),
            vec![code(B_CHILD)],
            date,
            &format!("{i}"),
            "AB",
        )
        .build();
        a.submit_document(&to_b, None).await.expect("A submits");
        let to_a = DocumentBuilder::new(
            code(B_UNIT),
            vec![code(A_CHILD)],
            date,
            &format!("{i}"),
            "BA",
        )
        .build();
        b.submit_document(&to_a, None).await.expect("B submits");
        if i == n / 2 {
            // The axis goes down for a while.
            let outage: i64 = std::env::var("TRUC_FAULT_OUTAGE_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3);
            let mut f = sim.faults();
            f.outage_until_ms = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as i64
                    + outage * 1000,
            );
            sim.set_faults(f);
        }
    }
    let at_b = receivers.0.await.expect("receiver B");
    let at_a = receivers.1.await.expect("receiver A");
    for (side, got, notation, store_relay) in
        [("B", &at_b, "AB", &relay_b), ("A", &at_a, "BA", &relay_a)]
    {
        let distinct: BTreeSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            n,
            "{side} received {} of {n} documents",
            distinct.len()
        );
        assert_eq!(
            got.len(),
            n,
            "{side}: {} deliveries for {n} documents (duplicates reached the adapter)",
            got.len()
        );
        let store = store_relay.engine().expect("engine").store();
        for i in 0..n {
            let sender = if notation == "AB" { A_UNIT } else { B_UNIT };
            let doc = DocumentId::new(&format!("{sender},2026/11/21,{i}/{notation}"));
            let stored = store
                .find_by_document(&doc)
                .await
                .expect("find")
                .into_iter()
                .filter(|m| m.kind == truc_edxml::PackageKind::Document)
                .collect::<Vec<_>>();
            assert_eq!(
                stored.len(),
                1,
                "{side}: {doc} stored {} times",
                stored.len()
            );
        }
    }
    let counters = sim.counters();
    println!("axis faults: {n} documents each way, simulator counters {counters:?}");
    assert!(
        counters.get("updateStatus.lost_ack").copied().unwrap_or(0) > 0,
        "lost acks were exercised"
    );
    assert!(counters.keys().any(|k| k.ends_with(".injected_error")));
}
