//! The relay's disk fills up under load: adapters get a clear `STORE_FULL`, nothing
//! acknowledged is lost or damaged, and when space returns the relay takes work again —
//! at once when the write that failed was a payload segment's (the usual case: payloads are
//! most of the bytes), or after stopping by itself to be restarted when it was the
//! database's (sled keeps the I/O error it met).
//! (A file-size limit on the `trucd` process stands in for a full disk: writes past it fail
//! with EFBIG as a full disk fails with ENOSPC.)

use std::collections::BTreeMap;
use std::time::Duration;

use truc_axis_sim::SystemConfig;
use truc_edxml::{
    AttachmentSource, CalendarDate, DocumentBuilder, DocumentId, StatusBuilder, StatusCode,
};
use truc_tests::{code, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

/// A document of about `size` bytes from A to B, different for every `n`.
fn doc(n: u32, size: usize) -> Vec<u8> {
    doc_to(n, size, B)
}

/// The same, to `to`.
fn doc_to(n: u32, size: usize, to: &str) -> Vec<u8> {
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut data = vec![0u8; size];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).wrapping_add(n) as u8;
    }
    DocumentBuilder::new(code(A), vec![code(to)], date, &n.to_string(), "FULL")
        .attachment(AttachmentSource::new("scan.pdf", data))
        .build()
}

/// A 24 MiB file-size limit (a soft one, which the test can lift).
const LIMIT: &str = "trap '' XFSZ; ulimit -S -f 24576";

/// Starts `trucd` under [`LIMIT`] and submits documents of `size` bytes until one is
/// refused; returns the relay and what was acknowledged, by DocumentId.
async fn fill_up(extra_config: &str, size: usize) -> (TestRelay, BTreeMap<String, Vec<u8>>) {
    let mut relay = TestRelay::spawn_process_under(&[A, B], extra_config, "", Some(LIMIT))
        .await
        .expect("trucd");
    let acknowledged = fill(&mut relay, B, size).await;
    (relay, acknowledged)
}

/// Submits documents of `size` bytes from A to `to` until one is refused with STORE_FULL;
/// returns what was acknowledged, by DocumentId.
async fn fill(relay: &mut TestRelay, to: &str, size: usize) -> BTreeMap<String, Vec<u8>> {
    let mut a = relay.adapter(A).await.expect("adapter");
    let mut acknowledged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut refusal = None;
    for n in 0..50_000u32 {
        let bytes = doc_to(n, size, to);
        match a.submit_document(&bytes, None).await {
            Ok(r) => {
                acknowledged.insert(r.document_id, bytes);
            }
            Err(e) if e.code() == Some("RATE_LIMITED") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                refusal = Some((e.code().unwrap_or("").to_owned(), e.to_string()));
                break;
            }
        }
    }
    let (code_, message) = refusal.expect("the disk filled up");
    assert_eq!(code_, "STORE_FULL", "{message}");
    assert!(!acknowledged.is_empty());
    // Refused again while full, and the relay stays up.
    let again = a.submit_document(&doc(90_000, size), None).await;
    assert!(again.is_err());
    assert!(
        relay.wait_exit(Duration::from_millis(100)).await.is_none(),
        "still running"
    );
    acknowledged
}

fn lift_the_limit(relay: &TestRelay) {
    let pid = relay.pid().expect("pid");
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(status.success());
}

/// Everything acknowledged reaches B, byte for byte, exactly as sent.
async fn all_delivered(relay: &TestRelay, acknowledged: &BTreeMap<String, Vec<u8>>) {
    let mut b = relay.adapter(B).await.expect("adapter B");
    let mut inbox = b.inbox(64).await.expect("inbox");
    let mut seen = 0;
    while seen < acknowledged.len() {
        let got = tokio::time::timeout(Duration::from_secs(60), inbox.next())
            .await
            .expect("delivered in time")
            .expect("inbox")
            .expect("delivery");
        let sent = acknowledged
            .get(&got.document_id)
            .unwrap_or_else(|| panic!("{} was never acknowledged", got.document_id));
        let bytes = if got.inline {
            got.package.to_vec()
        } else {
            b.fetch_payload(&got.message_id).await.expect("payload")
        };
        assert_eq!(&bytes, sent, "{} intact", got.document_id);
        inbox.ack(&got.delivery_id).await.expect("ack");
        seen += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_clear_errors_loses_nothing_and_recovers_at_once() {
    // 48 KiB packages: the payload segment (64 MiB at most) is the file that hits the limit.
    let (mut relay, mut acknowledged) = fill_up("", 48 * 1024).await;
    lift_the_limit(&relay);
    // The database met no error: the relay goes on, and takes work as soon as there is
    // space (the relay checks free space at most every 100 ms).
    let mut a = relay.adapter(A).await.expect("adapter");
    let bytes = doc(10_000, 48 * 1024);
    let mut taken = None;
    for _ in 0..50 {
        match a.submit_document(&bytes, None).await {
            Ok(r) => {
                taken = Some(r);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Some("STORE_FULL"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let r = taken.expect("the relay takes work again once there is space");
    acknowledged.insert(r.document_id, bytes);
    assert!(
        relay.wait_exit(Duration::from_millis(500)).await.is_none(),
        "no restart was needed"
    );
    all_delivered(&relay, &acknowledged).await;
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_write_that_failed_makes_the_relay_restart_and_lose_nothing() {
    // Payload segments of 1 MiB never reach the 24 MiB limit: the database's log does.
    let (mut relay, mut acknowledged) =
        fill_up("[store]\npayload_segment_bytes = 1048576\n", 4 * 1024).await;
    lift_the_limit(&relay);
    // The relay notices that the disk takes writes again while its store cannot (the
    // database keeps the I/O error it met), and stops so that it is started afresh.
    let exit = relay
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the relay stops to reopen its store");
    assert!(
        !exit.success(),
        "a failure exit, for the supervisor to restart it: {exit}"
    );
    relay.restart_process().await.expect("restart");
    let mut a = relay.adapter(A).await.expect("adapter");
    let bytes = doc(10_000, 4 * 1024);
    let r = a
        .submit_document(&bytes, None)
        .await
        .expect("the restarted relay takes work again");
    acknowledged.insert(r.document_id, bytes);
    all_delivered(&relay, &acknowledged).await;
    relay.stop().await.expect("stop");
}

/// The `[upstream]` section of a relay that talks to the simulator at `base` as `system`.
fn upstream(base: &str, system: &str, secret: &str) -> String {
    format!("[upstream]\nbase_url = \"{base}\"\nsystem_id = \"{system}\"\nsecret = \"{secret}\"\npoll_secs = 1\ntimeout_secs = 5\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_the_full_disk_refuses_puts_its_delivery_back_for_a_retry() {
    // Acknowledging a document that came across the national axis stores its arrival
    // status (01) for the sender: with the disk full, that fails.
    const C: &str = "000.00.06.G04";
    const SENDER: &str = "000.00.07.G12";
    let local = truc_axis_sim::LocalSimulator::start(vec![
        SystemConfig::new("bogtvt", "sa", "000.00.00.G04"),
        SystemConfig::new("botc", "sb", "000.00.00.G12"),
    ])
    .await
    .expect("simulator");
    // Leases of ten minutes: a delivery offered again during the test was given back, not
    // left to its lease.
    let mut relay = TestRelay::spawn_process_under(
        &[A, B, C],
        &upstream(&local.base_url, "bogtvt", "sa"),
        "lease_secs = 600\n",
        Some(LIMIT),
    )
    .await
    .expect("trucd");
    let other = TestRelay::start_ministry(
        "000.00.00.G12",
        &[SENDER],
        &upstream(&local.base_url, "botc", "sb"),
    )
    .await
    .expect("the other ministry's relay");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let sent = DocumentBuilder::new(code(SENDER), vec![code(B)], date, "1", "AXIS").build();
    let mut sender = other.adapter(SENDER).await.expect("sender");
    let receipt = sender.submit_document(&sent, None).await.expect("sent");

    // B receives it and holds it while A's documents (to C) fill the disk.
    let mut b = relay.adapter(B).await.expect("B");
    let mut inbox = b.inbox(1).await.expect("inbox");
    let first = tokio::time::timeout(Duration::from_secs(60), inbox.next())
        .await
        .expect("across the axis in time")
        .expect("inbox")
        .expect("a delivery");
    assert_eq!(first.document_id, receipt.document_id);
    let filled = fill(&mut relay, C, 48 * 1024).await;
    // Then with status packages (from C, a recipient of A's documents) smaller than the
    // arrival status B's acknowledgement makes (no organization name, a short
    // description), until not even those fit.
    let answered = filled.keys().next().expect("a document of A");
    let mut c_reports = relay.adapter(C).await.expect("C");
    let mut refusal = None;
    for n in 0..50_000u32 {
        let mut status = StatusBuilder::new(
            code(C),
            DocumentId::new(answered),
            StatusCode::new("03"),
            &truc_tests::vietnam_now().to_string(),
        );
        status.description = n.to_string();
        match c_reports.submit_status(&status.build(), None).await {
            Ok(_) => {}
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk filled up");
    assert_eq!(refusal.code(), Some("STORE_FULL"), "{refusal}");
    inbox.ack(&first.delivery_id).await.expect("ack sent");
    let refusal = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("the relay answers the acknowledgement")
        .expect_err("the acknowledgement is refused");
    assert_eq!(refusal.code(), Some("STORE_FULL"), "{refusal}");

    // B comes back and is offered it again within seconds (a retry), not when its lease
    // runs out.
    let mut inbox = b.inbox(1).await.expect("inbox again");
    let mut offered = truc_tests::next_delivery(&mut inbox).await;
    assert_eq!(offered.document_id, first.document_id);
    assert_ne!(offered.delivery_id, first.delivery_id);

    // Once there is space, its acknowledgement is taken (the relay checks free space at
    // most every 100 ms: an ack refused meanwhile gives it back again).
    lift_the_limit(&relay);
    let mut refused = 0;
    loop {
        inbox.ack(&offered.delivery_id).await.expect("ack sent");
        match tokio::time::timeout(Duration::from_secs(2), inbox.next()).await {
            // Nothing more to say: the acknowledgement was taken.
            Err(_) => break,
            Ok(Err(e)) => {
                assert_eq!(e.code(), Some("STORE_FULL"), "{e}");
                refused += 1;
                assert!(
                    refused < 50,
                    "the acknowledgement is taken once there is space"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                inbox = b.inbox(1).await.expect("inbox again");
                offered = truc_tests::next_delivery(&mut inbox).await;
                assert_eq!(offered.document_id, first.document_id);
            }
            Ok(Ok(other)) => panic!("nothing else is queued for B: {other:?}"),
        }
    }
    // The sender hears that it arrived, once.
    let mut sender_inbox = sender.inbox(4).await.expect("sender's inbox");
    let status = tokio::time::timeout(Duration::from_secs(60), sender_inbox.next())
        .await
        .expect("the arrival status crosses the axis")
        .expect("inbox")
        .expect("a delivery");
    assert_eq!(status.kind, "status");
    assert_eq!(status.document_id, receipt.document_id);
    sender_inbox.ack(&status.delivery_id).await.expect("ack");
    assert!(
        tokio::time::timeout(Duration::from_secs(3), sender_inbox.next())
            .await
            .is_err(),
        "one arrival status"
    );
    assert!(
        relay.wait_exit(Duration::from_millis(100)).await.is_none(),
        "still running"
    );
    relay.stop().await.expect("stop");
    other.stop().await.expect("stop");
}
