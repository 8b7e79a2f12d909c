//! An adapter that acknowledges and then closes its inbox gracefully has every ack applied
//! by the time `close` returns.

use std::time::Duration;

use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_store::{DeliveryState, MessageId};
use truc_tests::{code, next_delivery, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_before_a_graceful_close_are_applied_when_it_returns() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut ids = Vec::new();
    for n in 0..20 {
        let doc =
            DocumentBuilder::new(code(A), vec![code(B)], date, &n.to_string(), "CLOSE").build();
        ids.push(
            a.submit_document(&doc, None)
                .await
                .expect("submit")
                .message_id,
        );
    }
    let mut inbox = b.inbox(100).await.expect("inbox");
    for _ in 0..20 {
        let d = next_delivery(&mut inbox).await;
        inbox.ack(&d.delivery_id).await.expect("ack");
    }
    inbox.close().await.expect("graceful close");
    let store = relay.engine().expect("in-process").store().clone();
    for id in ids {
        let id: MessageId = id.parse().expect("id");
        let deliveries = store.deliveries(id).await.expect("deliveries");
        assert_eq!(deliveries[0].state, DeliveryState::Acknowledged, "{id}");
    }
    relay.stop().await.expect("stop");
}

/// Submits `n` documents from A to B, each with an attachment of `attachment` bytes;
/// returns their message ids.
async fn queue_for_b(
    a: &mut truc_client::Client,
    n: usize,
    attachment: usize,
    tag: &str,
) -> Vec<String> {
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut ids = Vec::new();
    for i in 0..n {
        let doc = DocumentBuilder::new(code(A), vec![code(B)], date, &i.to_string(), tag)
            .attachment(truc_edxml::AttachmentSource::new(
                "annex.pdf",
                vec![(i % 251) as u8; attachment],
            ))
            .build();
        ids.push(
            a.submit_document(&doc, None)
                .await
                .expect("submit")
                .message_id,
        );
    }
    ids
}

/// An adapter that goes away in the middle of a burst leaves nothing claimed for it: what
/// it was sent is released when its stream ends, and what had been claimed for it but not
/// yet sent is released at once, so another connection of the unit gets everything long
/// before the (here ten-minute) lease would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_claimed_for_an_adapter_that_went_away_are_offered_again_at_once() {
    let relay = TestRelay::start_full(&[A, B], |_| {}, "lease_secs = 600\n")
        .await
        .expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    // More than HTTP/2's flow control lets through to an adapter that does not read
    // (about 27 MiB in base64): the relay is still sending when the adapter goes.
    let mut ids = queue_for_b(&mut a, 100, 200 * 1024, "AWAY").await;
    let mut inbox = b.inbox(100).await.expect("inbox");
    next_delivery(&mut inbox).await;
    // Gone without a word, holding one delivery and with many more claimed for it.
    drop(inbox);
    let mut b2 = relay.adapter(B).await.expect("B again");
    let mut inbox = b2.inbox(100).await.expect("inbox again");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), inbox.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {} delivered again; the rest stayed claimed",
                    seen.len(),
                    ids.len()
                )
            })
            .expect("inbox")
            .expect("delivery");
        inbox.ack(&d.delivery_id).await.expect("ack");
        seen.insert(d.message_id);
    }
    ids.sort();
    let mut seen: Vec<String> = seen.into_iter().collect();
    seen.sort();
    assert_eq!(seen, ids);
    inbox.close().await.expect("close");
    relay.stop().await.expect("stop");
}

/// An adapter cannot hold more unacknowledged deliveries than `limits.max_credits`, however
/// much credit it grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_holds_no_more_unacknowledged_deliveries_than_max_credits() {
    let relay = TestRelay::start_full(&[A, B], |_| {}, "max_credits = 10\n")
        .await
        .expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    queue_for_b(&mut a, 30, 0, "CREDIT").await;
    let mut inbox = b.inbox(1).await.expect("inbox");
    inbox.credit(1000).await.expect("credit");
    let mut held = Vec::new();
    for _ in 0..10 {
        let d = next_delivery(&mut inbox).await;
        held.push(d.delivery_id);
    }
    inbox.credit(1000).await.expect("more credit");
    // Nothing more while ten are held unacknowledged...
    let more = tokio::time::timeout(Duration::from_secs(2), inbox.next()).await;
    assert!(more.is_err(), "an eleventh delivery came: {more:?}");
    // ...and one more for each acknowledged.
    inbox.ack(&held[0]).await.expect("ack");
    next_delivery(&mut inbox).await;
    let more = tokio::time::timeout(Duration::from_secs(2), inbox.next()).await;
    assert!(more.is_err(), "a twelfth delivery came: {more:?}");
    drop(inbox);
    relay.stop().await.expect("stop");
}

/// A package stored as a file of its own (over 256 KiB) but small enough to go inline (up
/// to 4 MiB) arrives whole in its delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_kept_in_a_file_is_delivered_inline_whole() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let ids = queue_for_b(&mut a, 2, 1024 * 1024, "FILE").await;
    let mut inbox = b.inbox(10).await.expect("inbox");
    for _ in 0..2 {
        let d = next_delivery(&mut inbox).await;
        assert!(d.inline, "under 4 MiB: inline");
        assert!(d.size > 256 * 1024, "kept in a file: {} bytes", d.size);
        assert_eq!(d.package.len() as u64, d.size);
        let digest = truc_edxml::Sha256Digest::of(&d.package).to_hex();
        assert_eq!(digest, d.sha256, "the bytes stored");
        assert!(ids.contains(&d.message_id));
        inbox.ack(&d.delivery_id).await.expect("ack");
    }
    inbox.close().await.expect("close");
    relay.stop().await.expect("stop");
}
