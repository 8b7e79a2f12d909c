//! Stopping a real `trucd` process: SIGTERM under load finishes in-flight submissions and
//! loses nothing acknowledged, then checkpoints the store; a second signal during a slow
//! shutdown exits at once.

use std::time::Duration;

use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_store::{MessageId, SledStore, Store, StoreConfig};
use truc_tests::{code, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let mut relay = TestRelay::spawn_process(&[A]).await.expect("trucd");
    let adapter = relay.adapter(A).await.expect("adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    // Four submitters keep sending until the relay stops answering.
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..4u32 {
        let mut client = adapter.clone();
        senders.spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..10_000u32 {
                let doc = DocumentBuilder::new(
                    code(A),
                    vec![code(B)],
                    date,
                    &format!("{}", worker * 100_000 + n),
                    "SIGTERM",
                )
                .build();
                match client.submit_document(&doc, None).await {
                    Ok(r) => acknowledged.push(r.message_id),
                    Err(_) => break,
                }
            }
            acknowledged
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let store_dir = relay.dir.path().join("store");
    let snapshot_at_start = newest_snapshot_lsn(&store_dir);
    relay.signal("TERM").expect("SIGTERM");
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("trucd exits after SIGTERM");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let mut acknowledged = Vec::new();
    while let Some(done) = senders.join_next().await {
        acknowledged.extend(done.expect("sender"));
    }
    assert!(
        !acknowledged.is_empty(),
        "some submissions were acknowledged"
    );

    // The stop ended with a checkpoint: sled's snapshot covers what the run wrote, so the
    // next start need not read the log back to this one's start.
    let snapshot_at_stop = newest_snapshot_lsn(&store_dir);
    assert!(
        snapshot_at_stop > snapshot_at_start,
        "sled's snapshot moved from {snapshot_at_start:?} to {snapshot_at_stop:?}"
    );

    // Every acknowledged submission is in the store, intact, after the stop.
    let store = SledStore::open(&store_dir, StoreConfig::default()).expect("reopen");
    for id in &acknowledged {
        let id: MessageId = id.parse().expect("message id");
        let m = store
            .message(id)
            .await
            .expect("read")
            .expect("acknowledged, so stored");
        let bytes = store
            .payload(id)
            .await
            .expect("payload")
            .read_all()
            .expect("bytes");
        assert_eq!(truc_edxml::Sha256Digest::of(&bytes), m.sha256);
    }
}

/// The log position covered by the newest sled snapshot of the store in `store_dir`.
fn newest_snapshot_lsn(store_dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(store_dir.join("db"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut relay = TestRelay::spawn_process(&[A]).await.expect("trucd");
    let adapter = relay.adapter(A).await.expect("adapter");
    // A submission that starts and then stalls holds the graceful shutdown open.
    let (tx, _call) = truc_tests::stalled_submission(&adapter).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.signal("TERM").expect("first SIGTERM");
    // The first signal waits for the stalled call; it is still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        relay.wait_exit(Duration::from_millis(10)).await.is_none(),
        "the graceful shutdown waits for in-flight calls"
    );
    relay.signal("TERM").expect("second SIGTERM");
    let status = relay
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after the second signal");
    assert_eq!(
        status.code(),
        Some(130),
        "the second signal's exit: {status}"
    );
    drop(tx);
}
