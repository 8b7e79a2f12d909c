//! The folder adapter: packages dropped in `outbox/` reach another unit's `inbox/` folder,
//! statuses dropped as files come back, refused packages land in `failed/` with the reason.

use std::path::Path;
use std::time::Duration;

use truc_client::folder::{run, FolderOptions};
use truc_edxml::{CalendarDate, DocumentBuilder, DocumentId, StatusBuilder, StatusCode};
use truc_tests::{code, sample, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

/// A folder adapter over `client` in `dir`, scanning every 100 ms, until `stop` turns true.
fn spawn_adapter(
    client: truc_client::Client,
    dir: std::path::PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<truc_client::folder::FolderStats, truc_client::ClientError>> {
    tokio::spawn(run(
        client,
        FolderOptions {
            dir,
            poll: Duration::from_millis(100),
            credits: 8,
        },
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_exchange_documents_and_statuses() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let work = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (unit, dir) in [(A, a_dir.clone()), (B, b_dir.clone())] {
        let client = relay.adapter(unit).await.expect("client");
        tasks.push(spawn_adapter(client, dir, stop_rx.clone()));
    }
    wait_for("the folders", || {
        a_dir.join("outbox").is_dir() && b_dir.join("outbox").is_dir()
    })
    .await;

    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(A), vec![code(B)], date, "77", "TCĐBVN-VP")
        .subject("Qua thư mục")
        .build();
    std::fs::write(a_dir.join("outbox").join("cv77.edxml"), &doc).expect("drop");
    std::fs::write(
        a_dir.join("outbox").join("broken.edxml"),
        sample("invalid/no-recipient.edxml"),
    )
    .expect("drop");

    wait_for("the delivery in B's inbox", || {
        !files(&b_dir.join("inbox"), "edxml").is_empty()
    })
    .await;
    let received = files(&b_dir.join("inbox"), "edxml");
    assert_eq!(
        std::fs::read(&received[0]).expect("read"),
        doc,
        "byte for byte"
    );
    assert!(a_dir.join("sent").join("cv77.edxml").is_file());
    assert!(a_dir.join("sent").join("cv77.edxml.receipt.json").is_file());
    wait_for("the refusal", || {
        a_dir
            .join("failed")
            .join("broken.edxml.error.txt")
            .is_file()
    })
    .await;
    let reason =
        std::fs::read_to_string(a_dir.join("failed").join("broken.edxml.error.txt")).expect("read");
    assert!(reason.contains("EDXML_NO_RECIPIENT"), "{reason}");

    // B answers with a status file: it arrives in A's inbox folder.
    let status = StatusBuilder::new(
        code(B),
        DocumentId::new("000.00.05.G04,2026/11/21,77/TCĐBVN-VP"),
        StatusCode::new("03"),
        "2026/11/21 11:00:00",
    )
    .build();
    std::fs::write(b_dir.join("outbox").join("st03.edxml"), &status).expect("drop");
    wait_for("the status in A's inbox", || {
        !files(&a_dir.join("inbox"), "edxml").is_empty()
    })
    .await;
    assert_eq!(
        std::fs::read(&files(&a_dir.join("inbox"), "edxml")[0]).expect("read"),
        status
    );
    let meta = std::fs::read_to_string(&files(&a_dir.join("inbox"), "json")[0]).expect("json");
    assert!(
        meta.contains("\"kind\":\"status\"") && meta.contains("\"status_code\":\"03\""),
        "{meta}"
    );

    stop_tx.send(true).expect("stop");
    for t in tasks {
        let stats = t.await.expect("task").expect("adapter");
        assert!(stats.sent >= 1);
    }
    relay.stop().await.expect("stop");
}

/// Refused document submissions from adapters so far, from the relay's `/metrics`.
async fn refused_documents(relay: &TestRelay) -> f64 {
    relay
        .metric(
            "truc_submissions_total",
            &[("kind", "document"), ("outcome", "refused")],
        )
        .await
        .expect("metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_units_packages_wait_in_the_outbox_until_it_is_active() {
    const CHILD: &str = "000.03.05.G04"; // a level-3 unit under A
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let engine = relay.engine().expect("in-process relay").clone();
    engine
        .registry()
        .set_state(
            engine.store().as_ref(),
            &code(CHILD),
            truc_relay::UnitState::Suspended,
            "operator:test",
        )
        .await
        .expect("suspend");
    let work = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (unit, dir) in [(A, a_dir.clone()), (B, b_dir.clone())] {
        let client = relay.adapter(unit).await.expect("client");
        tasks.push(spawn_adapter(client, dir, stop_rx.clone()));
    }
    wait_for("the folders", || {
        a_dir.join("outbox").is_dir() && b_dir.join("outbox").is_dir()
    })
    .await;
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(CHILD), vec![code(B)], date, "5", "X").build();
    let dropped = a_dir.join("outbox").join("cv5.edxml");
    std::fs::write(&dropped, &doc).expect("drop");

    // Refused while the unit is suspended (twice: tried again), and kept in the outbox.
    for _ in 0..200 {
        if refused_documents(&relay).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused_documents(&relay).await >= 2.0, "tried and refused");
    assert!(dropped.is_file(), "still in the outbox");
    assert!(
        files(&a_dir.join("failed"), "edxml").is_empty(),
        "not failed for good"
    );

    engine
        .registry()
        .set_state(
            engine.store().as_ref(),
            &code(CHILD),
            truc_relay::UnitState::Active,
            "operator:test",
        )
        .await
        .expect("reactivate");
    wait_for("the delivery in B's inbox", || {
        !files(&b_dir.join("inbox"), "edxml").is_empty()
    })
    .await;
    assert_eq!(
        std::fs::read(&files(&b_dir.join("inbox"), "edxml")[0]).expect("read"),
        doc
    );
    assert!(a_dir.join("sent").join("cv5.edxml").is_file());
    stop_tx.send(true).expect("stop");
    for t in tasks {
        t.await.expect("task").expect("adapter");
    }
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_outlasts_its_units_suspension_and_receives_what_was_held() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let engine = relay.engine().expect("in-process relay").clone();
    let work = tempfile::tempdir().expect("tempdir");
    let a_dir = work.path().join("a");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = relay.adapter(A).await.expect("client");
    let adapter = spawn_adapter(client, a_dir.clone(), stop_rx);
    wait_for("the folders", || a_dir.join("inbox").is_dir()).await;
    let set_state = |state| {
        let engine = engine.clone();
        async move {
            engine
                .registry()
                .set_state(engine.store().as_ref(), &code(A), state, "operator:test")
                .await
                .expect("state")
        }
    };
    // A is suspended: the relay ends its open inbox; mail for it is held meanwhile.
    set_state(truc_relay::UnitState::Suspended).await;
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(B), vec![code(A)], date, "31", "CHHVN").build();
    b.submit_document(&doc, None).await.expect("held for A");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!adapter.is_finished(), "the adapter keeps running");
    assert!(files(&a_dir.join("inbox"), "edxml").is_empty());

    // Active again: the adapter opens its inbox again and gets what was held.
    set_state(truc_relay::UnitState::Active).await;
    wait_for("the held document in A's inbox", || {
        !files(&a_dir.join("inbox"), "edxml").is_empty()
    })
    .await;
    assert_eq!(
        std::fs::read(&files(&a_dir.join("inbox"), "edxml")[0]).expect("read"),
        doc
    );
    stop_tx.send(true).expect("stop");
    let stats = adapter.await.expect("task").expect("adapter");
    assert_eq!(stats.received, 1);
    relay.stop().await.expect("stop");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_bytes_cannot_be_fetched_is_handed_back_and_the_others_flow() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    // Over 4 MiB: announced without its bytes, fetched by the adapter.
    let big = DocumentBuilder::new(code(B), vec![code(A)], date, "41", "CHHVN")
        .attachment(truc_edxml::AttachmentSource::new(
            "scan.pdf",
            (0..5_000_000u32).map(|i| (i % 251) as u8).collect(),
        ))
        .build();
    let big_id = b
        .submit_document(&big, None)
        .await
        .expect("big")
        .document_id;
    // Its payload file is lost on the relay's side (a damaged disk, say).
    let blobs: Vec<_> = walk(&relay.dir.path().join("store").join("blobs"))
        .into_iter()
        .filter(|p| !p.starts_with(relay.dir.path().join("store").join("blobs").join("tmp")))
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    std::fs::remove_file(&blobs[0]).expect("remove the payload");

    let work = tempfile::tempdir().expect("tempdir");
    let a_dir = work.path().join("a");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let adapter = spawn_adapter(relay.adapter(A).await.expect("A"), a_dir.clone(), stop_rx);
    // The adapter hands it back: the relay records the failed attempt and retries later.
    let mut a = relay.adapter(A).await.expect("A's client");
    let mut handed_back = None;
    for _ in 0..100 {
        let trace = a.trace(&big_id).await.expect("trace");
        handed_back = trace
            .events
            .iter()
            .find(|e| e.kind == "retry_scheduled")
            .map(|e| e.detail.clone());
        if handed_back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = handed_back.expect("a retry scheduled by the adapter's nack");
    assert!(!detail.is_empty());
    // The stream goes on: the next document arrives.
    let small = DocumentBuilder::new(code(B), vec![code(A)], date, "42", "CHHVN").build();
    b.submit_document(&small, None).await.expect("small");
    wait_for("the small document in A's inbox", || {
        !files(&a_dir.join("inbox"), "edxml").is_empty()
    })
    .await;
    assert_eq!(
        std::fs::read(&files(&a_dir.join("inbox"), "edxml")[0]).expect("read"),
        small
    );
    assert!(!adapter.is_finished(), "the adapter keeps running");
    stop_tx.send(true).expect("stop");
    let stats = adapter.await.expect("task").expect("adapter");
    assert_eq!(stats.received, 1);
    relay.stop().await.expect("stop");
}
