//! The relay's disk fills up under load: adapters get a clear `STORE_FULL`, nothing
//! acknowledged is lost or damaged, and when space returns the relay takes work again —
//! at once when the write that failed was a payload segment's (the usual case: payloads are
//! most of the bytes), or after stopping by itself to be restarted when it was the
//! database's (sled keeps the I/O error it met).
//! (A file-size limit on the `trucd` process stands in for a full disk: writes past it fail
//! with EFBIG as a full disk fails with ENOSPC.)

use std::collections::BTreeMap;
use std::time::Duration;

use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

/// A document of about `size` bytes, different for every `n`.
fn doc(n: u32, size: usize) -> Vec<u8> {
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut data = vec![0u8; size];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).wrapping_add(n) as u8;
    }
    DocumentBuilder::new(code(A), vec![code(B)], date, &n.to_string(), "FULL")
        .attachment(AttachmentSource::new("scan.pdf", data))
        .build()
}

/// Starts `trucd` under a 24 MiB file-size limit (a soft one, which the test can lift)
/// and submits documents of `size` bytes until one is refused; returns the relay and
/// what was acknowledged, by DocumentId.
async fn fill_up(extra_config: &str, size: usize) -> (TestRelay, BTreeMap<String, Vec<u8>>) {
    let mut relay = TestRelay::spawn_process_under(
        &[A, B],
        extra_config,
        Some("trap '' XFSZ; ulimit -S -f 24576"),
    )
    .await
    .expect("trucd");
    let mut a = relay.adapter(A).await.expect("adapter");
    let mut acknowledged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut refusal = None;
    for n in 0..50_000u32 {
        let bytes = doc(n, size);
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
    (relay, acknowledged)
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
