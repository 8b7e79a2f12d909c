//! Crash consistency of changes that span several keys.
//!
//! An operation's writes reach sled's log one by one, in the order `Writes` gives them, and
//! sled recovers a prefix of its log; so what a crash can leave of an interrupted operation
//! is its first n writes, for any n. These tests stop each kind of operation after each of
//! its writes in turn, reopen the store, and check what it promises: the audit chain is
//! whole, every record that says it has a payload can read it, nothing is mistaken for a
//! duplicate of a submission that was never acknowledged, and every live delivery is
//! delivered again until acknowledged.

use std::path::Path;
use std::time::Duration;

use truc_edxml::{BusinessDocType, CalendarDate, DocumentId, OrgCode, PackageKind};

use crate::sled_store::crash_point;
use crate::{
    Completion, Destination, NewMessage, PayloadInput, Route, SledStore, Source, Store,
    StoreConfig, Summary, Timestamp,
};

const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A small payload: acknowledged once its payload-log entry is durable; a cut in
    /// writing its records fails the submission, which withdraws it from the log.
    Submit,
    /// A payload in a blob file (shared with documents 2 and 3): acknowledged after the
    /// flush of its records.
    SubmitBlob,
    Claim,
    Ack,
    Nack,
    Requeue,
    Purge,
}

pub(crate) fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).expect("code")
}

pub(crate) fn inbox() -> Destination {
    Destination::Inbox(code("000.00.07.G04"))
}

pub(crate) fn document_id(n: u32) -> DocumentId {
    DocumentId::new(&format!("000.00.05.G04,2026/11/22,{n}/CRASH"))
}

/// A store whose records stay in memory (nothing flushes the database during a test but
/// what the test asks for), so only the payload log holds small submissions.
pub(crate) fn records_in_memory() -> StoreConfig {
    StoreConfig {
        inline_threshold: 1024,
        record_flush_delay_ms: 600_000,
        ..StoreConfig::default()
    }
}

/// Document `n` from 000.00.05.G04 to 000.00.07.G04's inbox (also used by other tests of
/// the crate).
pub(crate) fn document(n: u32, bytes: &[u8], idempotency_key: Option<&str>) -> NewMessage {
    NewMessage {
        kind: PackageKind::Document,
        sender: code("000.00.05.G04"),
        document_id: Some(document_id(n)),
        business_doc_type: BusinessDocType::New,
        sha256: truc_edxml::Sha256Digest::of(bytes),
        source: Source::Adapter {
            unit: code("000.00.05.G04"),
            certificate: None,
        },
        received_at: Timestamp::now(),
        routes: vec![Route {
            recipient: code("000.00.07.G04"),
            destination: inbox(),
            held: false,
        }],
        summary: Summary {
            subject: format!("document {n}"),
            due_date: Some(CalendarDate::from_unix_days(20_000)),
            ..Summary::default()
        },
        idempotency_key: idempotency_key.map(str::to_owned),
        payload: PayloadInput::Bytes(bytes::Bytes::copy_from_slice(bytes)),
    }
}

fn open(dir: &Path) -> SledStore {
    // Small inline threshold: documents 2 and 3 share one blob file.
    let config = StoreConfig {
        inline_threshold: 1024,
        ..StoreConfig::default()
    };
    SledStore::open(dir, config).expect("open")
}

/// A year from now: every retry is due.
fn later() -> Timestamp {
    Timestamp(Timestamp::now().0 + 365 * 86_400_000)
}

/// Runs `stage` with its operation stopped after `cut` writes (`None`: not stopped), then
/// reopens the store and checks it. Returns how many writes the operation made.
async fn run(stage: Stage, cut: Option<usize>) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = vec![7u8; 4096];
    let writes = {
        let store = open(dir.path());
        store
            .submit(document(1, b"first", None))
            .await
            .expect("submit 1");
        store
            .submit(document(2, &big, None))
            .await
            .expect("submit 2");
        store
            .submit(document(3, &big, None))
            .await
            .expect("submit 3");
        let claims = if matches!(stage, Stage::Submit | Stage::SubmitBlob | Stage::Claim) {
            Vec::new()
        } else {
            store
                .claim(&inbox(), 10, LEASE, Timestamp::now())
                .await
                .expect("claim")
        };
        let token = |n: u32| {
            claims
                .iter()
                .find(|c| c.message.document_id == Some(document_id(n)))
                .map(|c| c.token.clone())
                .expect("claimed")
        };
        match stage {
            Stage::Requeue => {
                store
                    .fail(&token(1), "refused", Timestamp::now())
                    .await
                    .expect("dead-letter");
            }
            Stage::Purge => {
                for n in [1, 2] {
                    store
                        .ack(&token(n), Completion::Acknowledged, Timestamp::now())
                        .await
                        .expect("ack");
                }
            }
            _ => {}
        }

        crash_point::arm(cut);
        let now = Timestamp::now();
        let outcome = match stage {
            Stage::Submit => store
                .submit(document(4, b"fourth", Some("k4")))
                .await
                .map(drop),
            Stage::SubmitBlob => store.submit(document(4, &big, Some("k4"))).await.map(drop),
            Stage::Claim => store.claim(&inbox(), 10, LEASE, now).await.map(drop),
            Stage::Ack => store
                .ack(&token(1), Completion::Acknowledged, now)
                .await
                .map(drop),
            Stage::Nack => store.nack(&token(1), "busy", now).await.map(drop),
            Stage::Requeue => {
                let key = token(1).key;
                store.requeue(&key, "admin:test", now).await.map(drop)
            }
            // Later than the acknowledgements, whatever the clock's resolution.
            Stage::Purge => store.purge(later(), Duration::ZERO).await.map(drop),
        };
        let writes = crash_point::writes();
        crash_point::arm(None);
        match cut {
            Some(n) => assert!(
                outcome.is_err(),
                "{stage:?} cut after {n} writes went through ({writes} writes)"
            ),
            None => outcome.expect("uninterrupted operation"),
        }
        writes
        // The store is dropped here: sled writes out what it holds, so the reopened store
        // has exactly the writes made before the cut.
    };

    let context = format!("{stage:?} cut after {cut:?} writes");
    let store = open(dir.path());
    let audit = store.verify_audit().await.expect("verify audit");
    assert!(
        audit.first_bad.is_none(),
        "{context}: audit chain broken: {audit:?}"
    );
    check_payloads(&store, &context).await;

    if matches!(stage, Stage::Submit | Stage::SubmitBlob) {
        // Never acknowledged unless it ran to the end: storing it again is not a duplicate.
        // (A cut is an error returned to the submitter, so a small payload's submission is
        // withdrawn from the payload log, and the open does not write it again.)
        let bytes: &[u8] = if stage == Stage::Submit {
            b"fourth"
        } else {
            &big
        };
        let again = store
            .submit(document(4, bytes, Some("k4")))
            .await
            .expect("resubmit");
        assert_eq!(again.is_duplicate(), cut.is_none(), "{context}");
    }
    // Everything still live is delivered, and acknowledging it completes its message.
    let mut rounds = 0;
    loop {
        let claims = store
            .claim(&inbox(), 100, LEASE, later())
            .await
            .expect("claim after reopen");
        if claims.is_empty() {
            break;
        }
        for c in claims {
            store
                .ack(&c.token, Completion::Acknowledged, Timestamp::now())
                .await
                .expect("ack after reopen");
        }
        rounds += 1;
        assert!(rounds < 10, "{context}: deliveries keep coming back");
    }
    if stage == Stage::Requeue && cut.is_some() {
        // The requeue may not have happened: do it now (the dead letter must still be there
        // to requeue, or already be requeued and delivered above).
        let dead = store.dead_letters(10).await.expect("dead letters");
        for d in dead {
            store
                .requeue(&d.key, "admin:test", Timestamp::now())
                .await
                .expect("requeue after reopen");
            let claims = store
                .claim(&inbox(), 10, LEASE, later())
                .await
                .expect("claim");
            for c in claims {
                store
                    .ack(&c.token, Completion::Acknowledged, Timestamp::now())
                    .await
                    .expect("ack");
            }
        }
    }
    for n in 1..=4 {
        for m in store
            .find_by_document(&document_id(n))
            .await
            .expect("by document")
        {
            assert!(
                m.completed_at.is_some(),
                "{context}: document {n} is not complete after every delivery was acknowledged"
            );
        }
    }
    check_payloads(&store, &context).await;
    store
        .purge(later(), Duration::ZERO)
        .await
        .expect("purge after reopen");
    check_payloads(&store, &context).await;
    writes
}

/// Every record that does not say its payload was purged can read it, byte for byte.
async fn check_payloads(store: &SledStore, context: &str) {
    for n in 1..=4 {
        for m in store
            .find_by_document(&document_id(n))
            .await
            .expect("by document")
        {
            if m.payload_purged {
                continue;
            }
            let payload = store.payload(m.id).await.unwrap_or_else(|e| {
                panic!("{context}: document {n} lost its payload: {e}");
            });
            let bytes = payload.read_all().expect("read payload");
            assert_eq!(
                truc_edxml::Sha256Digest::of(&bytes),
                m.sha256,
                "{context}: document {n}'s payload changed"
            );
        }
    }
}

async fn every_cut(stage: Stage) {
    let writes = run(stage, None).await;
    assert!(writes > 0, "{stage:?} made no writes");
    for cut in 0..writes {
        run(stage, Some(cut)).await;
    }
}

#[tokio::test]
async fn an_interrupted_submission_leaves_nothing_that_counts() {
    every_cut(Stage::Submit).await;
}

#[tokio::test]
async fn an_interrupted_blob_submission_leaves_nothing_that_counts() {
    every_cut(Stage::SubmitBlob).await;
}

/// A claim writes nothing (leases live in memory), so a crash cannot leave half of one;
/// the run still checks that a reopened store offers the claimed deliveries again.
#[tokio::test]
async fn a_claim_writes_nothing_and_is_released_on_reopen() {
    assert_eq!(
        run(Stage::Claim, None).await,
        0,
        "a claim wrote to the database"
    );
}

#[tokio::test]
async fn an_interrupted_acknowledgement_is_done_or_redelivered() {
    every_cut(Stage::Ack).await;
}

#[tokio::test]
async fn an_interrupted_retry_is_delivered_again() {
    every_cut(Stage::Nack).await;
}

#[tokio::test]
async fn an_interrupted_requeue_keeps_the_audit_chain_whole() {
    every_cut(Stage::Requeue).await;
}

#[tokio::test]
async fn an_interrupted_purge_never_loses_a_payload_still_in_use() {
    every_cut(Stage::Purge).await;
}

/// Submits document 4 (a small payload, acknowledged on its payload-log entry) with an
/// image of the store taken after `image_after` of its database writes (`None`: no image);
/// checks that the image holds every acknowledged submission. Returns the writes made.
async fn acknowledged_then_imaged(image_after: Option<usize>) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path(), records_in_memory()).expect("open");
    let first = store
        .submit(document(1, b"first", None))
        .await
        .expect("submit 1");
    let image_dir = image.path().join("store");
    crash_point::arm(None);
    crash_point::arm_image(image_after.map(|n| (n, dir.path(), image_dir.as_path())));
    let fourth = store
        .submit(document(4, b"fourth", Some("k4")))
        .await
        .expect("submit 4 is acknowledged");
    let writes = crash_point::writes();
    crash_point::arm_image(None);
    drop(store);
    let Some(n) = image_after else {
        return writes;
    };
    let context = format!("image after {n} of {writes} writes");
    let store = SledStore::open(&image_dir, records_in_memory()).expect("the image opens");
    for (number, original, bytes) in [
        (1, first.record().id, &b"first"[..]),
        (4, fourth.record().id, &b"fourth"[..]),
    ] {
        let found = store
            .find_by_document(&document_id(number))
            .await
            .expect("find");
        assert_eq!(found.len(), 1, "{context}: document {number} is there once");
        assert_eq!(found[0].id, original, "{context}: under its id");
        let payload = store
            .payload(original)
            .await
            .expect("payload")
            .read_all()
            .expect("read");
        assert_eq!(&payload[..], bytes, "{context}");
    }
    let queued = store
        .claim(&inbox(), 10, LEASE, later())
        .await
        .expect("claim");
    assert_eq!(queued.len(), 2, "{context}: both are queued");
    writes
}

/// The acknowledgement of a small submission does not wait for the database's flush: a
/// crash may keep any prefix of its database writes (sled flushes on its own, or for
/// another caller), and the next open must still find it whole.
#[tokio::test]
async fn an_acknowledged_submission_survives_any_prefix_of_its_writes() {
    let writes = acknowledged_then_imaged(None).await;
    assert!(writes > 0);
    for n in 0..writes {
        acknowledged_then_imaged(Some(n)).await;
    }
}
