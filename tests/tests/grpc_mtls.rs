//! Two units of the ministry exchange documents and statuses through a real `trucd` over
//! mutual TLS, and everything that should be refused is.

use std::time::Duration;

use truc_edxml::{
    AttachmentSource, CalendarDate, DocumentBuilder, DocumentId, StatusBuilder, StatusCode,
};
use truc_tests::{code, next_delivery, sample, TestRelay};

const A: &str = "000.00.05.G04"; // Tổng cục Đường bộ
const B: &str = "000.00.07.G04"; // Cục Hàng hải
const C: &str = "000.00.09.G04"; // Cục Đăng kiểm
const C_CHILD: &str = "000.01.09.G04"; // a level-3 unit of C

fn date() -> CalendarDate {
    CalendarDate::new(2026, 11, 21).expect("date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_reaches_a_unit_and_a_level3_unit_and_statuses_flow_back() {
    let relay = TestRelay::start(&[A, B, C]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let mut c = relay.adapter(C).await.expect("C");

    let doc = DocumentBuilder::new(
        code(A),
        vec![code(B), code(C_CHILD)],
        date(),
        "42",
        "TCĐBVN-VP",
    )
    .subject("Về việc kiểm tra liên thông")
    .attachment(AttachmentSource::new(
        "congvan.pdf",
        b"%PDF-1.4 test".to_vec(),
    ))
    .build();
    let receipt = a.submit_document(&doc, Some("A-42")).await.expect("submit");
    assert!(!receipt.duplicate);
    assert_eq!(receipt.routes.len(), 2);
    assert_eq!(
        receipt.routes[1].via, C,
        "the level-3 unit is reached through its parent"
    );
    let document_id = receipt.document_id.clone();

    let mut b_inbox = b.inbox(8).await.expect("B inbox");
    let got = next_delivery(&mut b_inbox).await;
    assert_eq!(got.recipient, B);
    assert_eq!(got.sender, A);
    assert_eq!(got.document_id, document_id);
    assert_eq!(got.package, doc, "byte for byte");
    b_inbox.ack(&got.delivery_id).await.expect("ack");
    b_inbox.close().await.expect("close B's inbox");

    let mut c_inbox = c.inbox(8).await.expect("C inbox");
    let got_c = next_delivery(&mut c_inbox).await;
    assert_eq!(got_c.recipient, C_CHILD, "the final recipient is kept");
    assert_eq!(got_c.package, doc);
    c_inbox.ack(&got_c.delivery_id).await.expect("ack");
    // An ack is sent, not awaited; closing the stream waits until the relay applied it, so
    // the arrivals (01) of B and C are recorded before B's statuses below.
    c_inbox.close().await.expect("close C's inbox");

    // B accepts (03) and completes (06): both go back to A.
    let mut a_inbox = a.inbox(8).await.expect("A inbox");
    for s in ["03", "06"] {
        let status = StatusBuilder::new(
            code(B),
            DocumentId::new(&document_id),
            StatusCode::new(s),
            &truc_tests::vietnam_now().to_string(),
        )
        .build();
        let r = b.submit_status(&status, None).await.expect("status");
        assert_eq!(r.kind, "status");
        let back = next_delivery(&mut a_inbox).await;
        assert_eq!(back.kind, "status");
        assert_eq!(back.status_code, s);
        assert_eq!(back.package, status);
        a_inbox.ack(&back.delivery_id).await.expect("ack");
    }

    // The timeline: both deliveries acknowledged, 01 for each recipient, then 03 and 06.
    let mut trace = None;
    for _ in 0..50 {
        let t = a.trace(&document_id).await.expect("trace");
        let acked = t
            .deliveries
            .iter()
            .filter(|d| d.state == "acknowledged")
            .count();
        if acked >= 4 && t.statuses.len() >= 4 {
            trace = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trace = trace.expect("a complete timeline");
    let codes: Vec<&str> = trace.statuses.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes.iter().filter(|c| **c == "01").count(), 2, "{codes:?}");
    assert!(codes.ends_with(&["03", "06"]), "{codes:?}");
    assert!(trace
        .events
        .iter()
        .any(|e| e.kind == "routed" && e.recipient == C_CHILD));

    // Resubmitting returns the original receipt.
    let again = a
        .submit_document(&doc, Some("A-42"))
        .await
        .expect("resubmit");
    assert!(again.duplicate);
    assert_eq!(again.message_id, receipt.message_id);

    // The directory answers.
    let unit = a.lookup_unit(C_CHILD).await.expect("lookup");
    assert_eq!((unit.level, unit.parent.as_str()), (3, C));
    assert_eq!(a.list_units(Some(C)).await.expect("list").len(), 42);
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unknown_malformed_and_oversized_are_refused_and_nothing_else_is_affected() {
    let relay = TestRelay::start_with(&[A, B], |registry| {
        if let Some(u) = registry
            .units
            .iter_mut()
            .find(|u| u.code.as_str() == "000.00.11.G04")
        {
            u.state = truc_relay::UnitState::Suspended;
        }
    })
    .await
    .expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");

    // B sends a package whose sender is A.
    let err = b
        .submit_document(&sample("valid/doc-basic.edxml"), None)
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Some("AUTH_FORGED_SENDER"));
    assert!(
        err.to_string().contains(B) && err.to_string().contains(A),
        "{err}"
    );

    // A certificate from the right CA that no unit registered.
    let stranger = relay.unregistered_cert().expect("cert");
    let mut s = relay
        .client_with(&stranger)
        .await
        .expect("connects: the CA is right");
    let err = s
        .submit_document(&sample("valid/doc-basic.edxml"), None)
        .await
        .expect_err("unknown certificate");
    assert_eq!(err.code(), Some("AUTH_UNKNOWN_CERTIFICATE"));

    // No client certificate at all: the TLS handshake fails.
    let no_cert =
        truc_client::Client::connect(&format!("https://localhost:{}", relay.addr.port()), None)
            .await;
    match no_cert {
        Err(_) => {}
        Ok(mut c) => assert!(
            c.lookup_unit(A).await.is_err(),
            "a client without a certificate must be refused"
        ),
    }

    // An unknown recipient inside the ministry.
    let to_nowhere =
        DocumentBuilder::new(code(A), vec![code("000.00.98.G04")], date(), "1", "X").build();
    let err = a
        .submit_document(&to_nowhere, None)
        .await
        .expect_err("unknown unit");
    assert_eq!(err.code(), Some("ROUTE_UNKNOWN_UNIT"));

    // Malformed packages: each with its code.
    for (file, expected) in [
        ("invalid/billion-laughs.edxml", "EDXML_DTD_FORBIDDEN"),
        ("invalid/not-xml.edxml", "EDXML_MALFORMED"),
        ("invalid/no-recipient.edxml", "EDXML_NO_RECIPIENT"),
        ("invalid/bad-base64.edxml", "EDXML_BAD_BASE64"),
    ] {
        let err = a
            .submit_document(&sample(file), None)
            .await
            .expect_err(file);
        assert_eq!(err.code(), Some(expected), "{file}: {err}");
    }

    // Oversized: refused from the header, before the bytes.
    let header = truc_client::SubmitHeader {
        idempotency_key: String::new(),
        size: 400 * 1024 * 1024,
        sha256: String::new(),
    };
    let err = a
        .submit_with_header(header, &sample("valid/doc-basic.edxml"))
        .await
        .expect_err("oversized");
    assert_eq!(err.code(), Some("EDXML_TOO_LARGE"));

    // A suspended unit's mail is held, and the sender is told.
    let held = DocumentBuilder::new(code(A), vec![code("000.00.11.G04")], date(), "2", "X").build();
    let r = a
        .submit_document(&held, None)
        .await
        .expect("held is accepted");
    assert_eq!(r.routes[0].kind, truc_proto_route_held());

    // After all that, normal traffic flows.
    let fine = DocumentBuilder::new(code(A), vec![code(B)], date(), "3", "X").build();
    a.submit_document(&fine, None).await.expect("submit");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let d = next_delivery(&mut inbox).await;
    assert_eq!(d.package, fine);
    relay.stop().await.expect("stop");
}

fn truc_proto_route_held() -> i32 {
    4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_deliveries_come_again_after_a_reconnect_and_acknowledged_ones_do_not() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    for n in 0..3 {
        let doc =
            DocumentBuilder::new(code(A), vec![code(B)], date(), &format!("{n}"), "X").build();
        a.submit_document(&doc, None).await.expect("submit");
    }
    let mut b = relay.adapter(B).await.expect("B");
    let first_ids = {
        let mut inbox = b.inbox(10).await.expect("inbox");
        let one = next_delivery(&mut inbox).await;
        let two = next_delivery(&mut inbox).await;
        let three = next_delivery(&mut inbox).await;
        inbox.ack(&one.delivery_id).await.expect("ack");
        // Give the ack time to land, then drop the stream with two unacknowledged.
        tokio::time::sleep(Duration::from_millis(300)).await;
        vec![one.message_id, two.message_id, three.message_id]
    };
    let mut inbox = b.inbox(10).await.expect("inbox again");
    let again1 = next_delivery(&mut inbox).await;
    let again2 = next_delivery(&mut inbox).await;
    let mut again = vec![again1.message_id.clone(), again2.message_id.clone()];
    again.sort();
    let mut expected = first_ids[1..].to_vec();
    expected.sort();
    assert_eq!(
        again, expected,
        "exactly the unacknowledged ones come again"
    );
    assert!(again1.attempt >= 2);
    inbox.ack(&again1.delivery_id).await.expect("ack");
    inbox.ack(&again2.delivery_id).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(inbox);
    let mut inbox = b.inbox(10).await.expect("inbox a third time");
    let nothing = tokio::time::timeout(Duration::from_secs(2), inbox.next()).await;
    assert!(nothing.is_err(), "nothing left to deliver, got {nothing:?}");
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_inbox_loop_acknowledges_handled_deliveries_and_retries_refused_ones() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let doc = DocumentBuilder::new(code(A), vec![code(B)], date(), "5", "LOOP").build();
    a.submit_document(&doc, None).await.expect("submit");
    let mut b = relay.adapter(B).await.expect("B");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_in = seen.clone();
    // A refused delivery comes back within the first retry bound (2 s by default).
    let looped = tokio::time::timeout(
        Duration::from_secs(6),
        b.run_inbox(4, move |d| {
            let seen = seen_in.clone();
            async move {
                let mut s = seen.lock().expect("lock");
                s.push(d.attempt);
                // The QLVB is "down" the first time.
                if s.len() == 1 {
                    Err("QLVB unavailable")
                } else {
                    Ok(())
                }
            }
        }),
    )
    .await;
    // The loop runs until the stream ends; the timeout ends it here.
    assert!(looped.is_err());
    let attempts = seen.lock().expect("lock").clone();
    assert_eq!(
        attempts.len(),
        2,
        "refused once, then handled: {attempts:?}"
    );
    assert_eq!(attempts, vec![1, 2]);
    let trace = a
        .trace(&format!("{A},2026/11/21,5/LOOP"))
        .await
        .expect("trace");
    assert!(trace
        .deliveries
        .iter()
        .any(|d| d.state == "acknowledged" && d.last_error.contains("QLVB unavailable")));
    relay.stop().await.expect("stop");
}

/// A unit that is not party to a document can neither report on it nor see its timeline,
/// even by guessing its DocumentId or reusing it for a document of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_s_statuses_and_timeline_are_its_parties_alone() {
    let relay = TestRelay::start(&[A, B, C]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let mut c = relay.adapter(C).await.expect("C");
    // A sends X to C; B is not a party.
    let x = DocumentBuilder::new(code(A), vec![code(C)], date(), "77", "TCĐBVN-VP").build();
    let x_id = a
        .submit_document(&x, None)
        .await
        .expect("submit")
        .document_id;
    let mut c_inbox = c.inbox(4).await.expect("C's inbox");
    let got = next_delivery(&mut c_inbox).await;
    c_inbox.ack(&got.delivery_id).await.expect("ack");

    // B's status about X is answered as for a document that does not exist.
    let forged = StatusBuilder::new(
        code(B),
        DocumentId::new(&x_id),
        StatusCode::new("06"),
        &truc_tests::vietnam_now().to_string(),
    )
    .build();
    let err = b
        .submit_status(&forged, None)
        .await
        .expect_err("B is not a party to X");
    assert_eq!(err.code(), Some("ROUTE_UNKNOWN_DOCUMENT"), "{err}");
    let unknown = StatusBuilder::new(
        code(B),
        DocumentId::new("000.00.05.G04,2026/11/21,78/TCĐBVN-VP"),
        StatusCode::new("06"),
        &truc_tests::vietnam_now().to_string(),
    )
    .build();
    let err_unknown = b
        .submit_status(&unknown, None)
        .await
        .expect_err("no such document");
    assert_eq!(err_unknown.code(), err.code());
    // Nor can B read X's timeline.
    let err = b.trace(&x_id).await.expect_err("not B's");
    assert_eq!(err.code(), Some("STORE_NOT_FOUND"), "{err}");

    // C, a recipient, reports; A hears it.
    let accepted = StatusBuilder::new(
        code(C),
        DocumentId::new(&x_id),
        StatusCode::new("03"),
        &truc_tests::vietnam_now().to_string(),
    )
    .build();
    c.submit_status(&accepted, None).await.expect("C reports");
    let mut a_inbox = a.inbox(4).await.expect("A's inbox");
    let back = next_delivery(&mut a_inbox).await;
    assert_eq!(
        (back.kind.as_str(), back.status_code.as_str()),
        ("status", "03")
    );
    a_inbox.ack(&back.delivery_id).await.expect("ack");

    // B reuses X's DocumentId for a document of its own: it sees that one, and nothing of
    // A's document, its deliveries or statuses.
    let mut copycat = DocumentBuilder::new(code(B), vec![code(C)], date(), "1", "CHHVN");
    copycat.document_id = Some(DocumentId::new(&x_id));
    let mine = b
        .submit_document(&copycat.build(), None)
        .await
        .expect("B's own document");
    let trace = b.trace(&x_id).await.expect("B's own document's timeline");
    assert!(
        trace
            .deliveries
            .iter()
            .all(|d| d.message_id == mine.message_id),
        "{:?}",
        trace.deliveries
    );
    assert!(
        trace.events.iter().all(|e| e.message_id == mine.message_id),
        "{:?}",
        trace.events
    );
    assert!(
        !trace.statuses.iter().any(|s| s.code == "03" || s.from == C),
        "{:?}",
        trace.statuses
    );
    // A's view is whole: its delivery to C, C's arrival and acceptance.
    let trace = a.trace(&x_id).await.expect("A's timeline");
    assert!(trace.statuses.iter().any(|s| s.code == "03" && s.from == C));
    assert!(trace.statuses.iter().any(|s| s.code == "01" && s.from == C));
    relay.stop().await.expect("stop");
}

/// A suspended level-3 unit cannot send through its parent's adapter, which still can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_level3_unit_cannot_send_through_its_parent() {
    let relay = TestRelay::start_with(&[A, C], |registry| {
        if let Some(u) = registry
            .units
            .iter_mut()
            .find(|u| u.code.as_str() == C_CHILD)
        {
            u.state = truc_relay::UnitState::Suspended;
        }
    })
    .await
    .expect("relay");
    let mut c = relay.adapter(C).await.expect("C");
    let as_child = DocumentBuilder::new(code(C_CHILD), vec![code(A)], date(), "5", "CĐK").build();
    let err = c
        .submit_document(&as_child, None)
        .await
        .expect_err("the level-3 unit is suspended");
    assert_eq!(err.code(), Some("AUTH_UNIT_SUSPENDED"), "{err}");
    let as_parent = DocumentBuilder::new(code(C), vec![code(A)], date(), "6", "CĐK").build();
    c.submit_document(&as_parent, None)
        .await
        .expect("C itself is active");
    relay.stop().await.expect("stop");
}

/// Of two documents sharing a DocumentId that a recipient reports on, the one its issuer
/// sent hears it, even when a copycat was stored first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_goes_to_the_document_its_issuer_sent_not_a_copycat_stored_before() {
    let relay = TestRelay::start(&[A, B, C]).await.expect("relay");
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let mut c = relay.adapter(C).await.expect("C");
    let x = DocumentBuilder::new(code(A), vec![code(C)], date(), "79", "TCĐBVN-VP").build();
    let x_id = truc_edxml::parse(&x)
        .expect("X reads")
        .document_id()
        .expect("X has a DocumentId")
        .to_string();
    // B takes A's next DocumentId first, for a document to C as well.
    let mut copycat = DocumentBuilder::new(code(B), vec![code(C)], date(), "2", "CHHVN");
    copycat.document_id = Some(DocumentId::new(&x_id));
    b.submit_document(&copycat.build(), None)
        .await
        .expect("B's document");
    let receipt = a.submit_document(&x, None).await.expect("A's document");
    assert_eq!(receipt.document_id, x_id);
    let accepted = StatusBuilder::new(
        code(C),
        DocumentId::new(&x_id),
        StatusCode::new("03"),
        &truc_tests::vietnam_now().to_string(),
    )
    .build();
    let r = c.submit_status(&accepted, None).await.expect("C reports");
    assert_eq!(
        r.routes[0].recipient, A,
        "to the issuer's document's sender"
    );
    let mut a_inbox = a.inbox(4).await.expect("A's inbox");
    let back = next_delivery(&mut a_inbox).await;
    assert_eq!(
        (back.kind.as_str(), back.status_code.as_str()),
        ("status", "03")
    );
    relay.stop().await.expect("stop");
}

/// A caller whose certificate names no unit is answered before the relay reads its call's
/// message: here a SubmitStatus whose message never comes is refused at once (the relay
/// used to wait for, and hold, up to a megabyte of it first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_certificate_is_refused_before_its_message_is_read() {
    use truc_client::proto::{Receipt, SubmitStatusRequest};
    let relay = TestRelay::start(&[A]).await.expect("relay");
    let unknown = relay.unregistered_cert().expect("cert");
    let client = relay.client_with(&unknown).await.expect("handshake");
    let mut grpc = tonic::client::Grpc::new(client.channel());
    grpc.ready().await.expect("ready");
    let never = tokio_stream::pending::<SubmitStatusRequest>();
    let call = grpc.client_streaming(
        tonic::Request::new(never),
        tonic::codegen::http::uri::PathAndQuery::from_static("/truc.v1.Relay/SubmitStatus"),
        tonic_prost::ProstCodec::<SubmitStatusRequest, Receipt>::default(),
    );
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("answered without the message")
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        truc_tests::error_code(&refused),
        Some("AUTH_UNKNOWN_CERTIFICATE")
    );
    // A registered unit's call still works, the caller found by the same check.
    let mut a = relay.adapter(A).await.expect("A");
    a.lookup_unit(A).await.expect("A's call");
    relay.stop().await.expect("stop");
}
