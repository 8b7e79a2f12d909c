//! The relay's disk fills up under load: adapters get a clear `STORE_FULL`, nothing
//! acknowledged is lost or damaged, and when space returns the relay stops by itself to be
//! restarted (the database keeps the I/O error it met) and then takes work again.
//! (A file-size limit on the `trucd` process stands in for a full disk: writes past it fail
//! with EFBIG as a full disk fails with ENOSPC.)

use std::collections::BTreeMap;
use std::time::Duration;

use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_clear_errors_loses_nothing_and_recovers() {
    // 24 MiB of files (a soft limit, which the test can lift): the store's creation fits,
    // the load does not.
    let mut relay =
        TestRelay::spawn_process_under(&[A, B], "", Some("trap '' XFSZ; ulimit -S -f 24576"))
            .await
            .expect("trucd");
    let pid = relay.pid().expect("pid");
    let mut a = relay.adapter(A).await.expect("adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = |n: u32| {
        let mut data = vec![0u8; 48 * 1024];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(2654435761).wrapping_add(n) as u8;
        }
        DocumentBuilder::new(code(A), vec![code(B)], date, &n.to_string(), "FULL")
            .attachment(AttachmentSource::new("scan.pdf", data))
            .build()
    };
    let mut acknowledged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut refusal = None;
    for n in 0..2000u32 {
        let bytes = doc(n);
        match a.submit_document(&bytes, None).await {
            Ok(r) => {
                acknowledged.insert(r.document_id, bytes);
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
    let again = a.submit_document(&doc(5000), None).await;
    assert!(again.is_err());
    assert!(
        relay.wait_exit(Duration::from_millis(100)).await.is_none(),
        "still running"
    );

    // Space returns.
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(status.success());
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
    let bytes = doc(10_000);
    let r = a
        .submit_document(&bytes, None)
        .await
        .expect("the restarted relay takes work again");
    acknowledged.insert(r.document_id, bytes);

    // Everything acknowledged reaches B, byte for byte, exactly as sent.
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
    relay.stop().await.expect("stop");
}
