//! An adapter that acknowledges and then closes its inbox gracefully has every ack applied
//! by the time `close` returns.

use std::time::Duration;

use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_store::{DeliveryState, MessageId};
use truc_tests::{code, TestRelay};

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
        let d = tokio::time::timeout(Duration::from_secs(20), inbox.next())
            .await
            .expect("in time")
            .expect("inbox")
            .expect("delivery");
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
