//! Server behaviour: per-adapter rate limits, stalled submissions, certificate reload.

use std::time::Duration;

use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_tests::{code, TestCa, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

fn doc(n: u32) -> Vec<u8> {
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    DocumentBuilder::new(code(A), vec![code(B)], date, &n.to_string(), "RATE").build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_over_its_rate_is_told_to_slow_down_and_others_are_not() {
    let relay = TestRelay::start_full(
        &[A, B],
        |_| {},
        "submits_per_second = 1\nsubmit_burst = 3\n",
    )
    .await
    .expect("relay");
    // Two connections of the same adapter share its budget.
    let mut a1 = relay.adapter(A).await.expect("A");
    let mut a2 = relay.adapter(A).await.expect("A again");
    a1.submit_document(&doc(1), None).await.expect("1");
    a2.submit_document(&doc(2), None).await.expect("2");
    a1.submit_document(&doc(3), None).await.expect("3");
    let err = a2
        .submit_document(&doc(4), None)
        .await
        .expect_err("over the rate");
    assert_eq!(err.code(), Some("RATE_LIMITED"), "{err}");
    // B is not affected.
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let from_b = DocumentBuilder::new(code(B), vec![code(A)], date, "1", "B").build();
    b.submit_document(&from_b, None).await.expect("B submits");
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_submission_is_cancelled() {
    let relay = TestRelay::start_full(&[A, B], |_| {}, "idle_timeout_secs = 1\n")
        .await
        .expect("relay");
    let a = relay.adapter(A).await.expect("A");
    let (tx, call) = truc_tests::stalled_submission(&a).await;
    // ... and then nothing, like a slowloris client.
    let result = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered")
        .expect("task");
    let status = result.expect_err("cancelled");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(truc_tests::error_code(&status), Some("SUBMIT_IDLE"));
    drop(tx);
    relay.stop().await.expect("stop");
}

/// An inbox stream that never says `open` is closed after the idle limit, like a stalled
/// submission, rather than held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_that_never_opens_is_closed() {
    let relay = TestRelay::start_full(&[A, B], |_| {}, "idle_timeout_secs = 1\n")
        .await
        .expect("relay");
    let b = relay.adapter(B).await.expect("B");
    let (tx, rx) = tokio::sync::mpsc::channel::<truc_client::proto::InboxRequest>(1);
    let mut grpc = b.grpc();
    let call = tokio::spawn(async move {
        grpc.inbox(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|_| ())
    });
    let status = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered")
        .expect("task")
        .expect_err("closed");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(truc_tests::error_code(&status), Some("INBOX_IDLE"));
    drop(tx);
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_on_sighup_without_a_restart() {
    let relay = TestRelay::spawn_process(&[A]).await.expect("trucd process");
    let pid = relay.pid().expect("pid");
    let adapter_cert = relay.cert_of(A).expect("cert");
    let new_ca = TestCa::new("renewed server CA").expect("ca");
    // Before the reload, a client that trusts only the new CA cannot talk to the relay.
    let before = relay.client_trusting(&adapter_cert, &new_ca.pem).await;
    let refused = match before {
        Err(_) => true,
        Ok(mut c) => c.lookup_unit(A).await.is_err(),
    };
    assert!(
        refused,
        "the old server certificate must not satisfy the new CA"
    );

    let renewed = new_ca
        .issue("relay", &["localhost", "127.0.0.1"])
        .expect("cert");
    std::fs::write(relay.dir.path().join("server.pem"), &renewed.cert).expect("write");
    std::fs::write(relay.dir.path().join("server.key"), &renewed.key).expect("write");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    let mut reloaded = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut c) = relay.client_trusting(&adapter_cert, &new_ca.pem).await {
            if c.lookup_unit(A).await.is_ok() {
                reloaded = Some(c);
                break;
            }
        }
    }
    assert!(
        reloaded.is_some(),
        "after SIGHUP the relay presents the renewed certificate"
    );
    // The process kept running: same pid, still serving.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_revokes_is_refused_after_a_reload() {
    let relay = TestRelay::spawn_process(&[A, B])
        .await
        .expect("trucd process");
    let pid = relay.pid().expect("pid");
    let mut a = relay.adapter(A).await.expect("A");
    a.lookup_unit(A).await.expect("A's certificate works");
    let mut inbox = a.inbox(4).await.expect("A's inbox");
    // A's key is compromised: the CA revokes its certificate, the relay reloads.
    let revoked = relay.cert_of(A).expect("A's certificate");
    relay.revoke(&[&revoked]).expect("revocation list");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let attempt = match relay.client_with(&revoked).await {
            Err(_) => true,
            Ok(mut c) => c.lookup_unit(A).await.is_err(),
        };
        if attempt {
            refused = true;
            break;
        }
    }
    assert!(refused, "a revoked certificate is refused in the handshake");
    // The connection it opened before is refused too, at its next call, and its open
    // inbox stream ends.
    let err = a
        .lookup_unit(A)
        .await
        .expect_err("the revoked certificate's old connection");
    assert_eq!(err.code(), Some("AUTH_CERTIFICATE_REJECTED"), "{err}");
    let ended = tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("the stream ends within seconds");
    match ended {
        Err(e) => assert_eq!(e.code(), Some("AUTH_CERTIFICATE_REJECTED"), "{e}"),
        Ok(other) => panic!("the open inbox ends with the refusal, not {other:?}"),
    }
    // B's certificate, from the same CA, is not affected.
    let mut b = relay.adapter(B).await.expect("B");
    b.lookup_unit(B).await.expect("B's certificate still works");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_and_health_is_served() {
    let relay = TestRelay::start(&[A]).await.expect("relay");
    let other_ca = TestCa::new("someone else's CA").expect("ca");
    let foreign = other_ca
        .issue("adapter", &["adapter.example"])
        .expect("cert");
    let refused = match relay.client_with(&foreign).await {
        Err(_) => true,
        Ok(mut c) => c.lookup_unit(A).await.is_err(),
    };
    assert!(
        refused,
        "a client certificate the relay's adapter CA did not sign is refused"
    );

    let a = relay.adapter(A).await.expect("A");
    let mut health = tonic_health::pb::health_client::HealthClient::new(a.channel());
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "truc.v1.Relay".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_relay_refuses_to_start_unless_told_it_is_development() {
    truc_tests::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "ministry = \"000.00.00.G04\"\nstore_dir = {:?}\n",
        dir.path().join("store")
    );
    let config = trucd::Config::from_toml(&base).expect("config");
    let err = trucd::server::prepare(&config).await.expect_err("no TLS");
    assert!(format!("{err:#}").contains("mutual TLS"), "{err:#}");

    // Development mode: plaintext, every caller is the configured unit.
    let registry = dir.path().join("registry.toml");
    std::fs::write(
        &registry,
        truc_relay::sample_transport_ministry(&code("000.00.00.G04")).to_toml(),
    )
    .expect("write");
    let dev = format!(
        "{base}registry_file = {registry:?}\ninsecure_plaintext = true\ninsecure_unit = \"{A}\"\n"
    );
    let config = trucd::Config::from_toml(&dev).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = trucd::Listeners {
        grpc: listener,
        admin: None,
    };
    let server = tokio::spawn(trucd::run(listeners, config, async {
        let _ = stopped.await;
    }));
    let mut client = None;
    for _ in 0..50 {
        if let Ok(c) = truc_client::Client::connect(&format!("http://127.0.0.1:{port}"), None).await
        {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("connects without TLS");
    client
        .submit_document(&doc(1), None)
        .await
        .expect("the development unit submits");
    let _ = stop.send(());
    server.await.expect("task").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_known_by_certificate_name_and_a_suspended_unit_is_refused() {
    let relay = TestRelay::start_with(&[A], |registry| {
        for u in registry.units.iter_mut() {
            if u.code.as_str() == B {
                u.names.push("cuc-hang-hai.adapter.example".into());
            }
            if u.code.as_str() == A {
                u.state = truc_relay::UnitState::Suspended;
            }
        }
    })
    .await
    .expect("relay");
    // B registered no fingerprint, only the name its certificates carry.
    let cert = relay
        .issue("adapter B", &["cuc-hang-hai.adapter.example"])
        .expect("cert");
    let mut b = relay.client_with(&cert).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let from_b =
        DocumentBuilder::new(code(B), vec![code("000.00.09.G04")], date, "1", "SAN").build();
    b.submit_document(&from_b, None)
        .await
        .expect("B is recognised by its certificate name");
    // A is suspended: its adapter is refused, with the reason.
    let mut a = relay.adapter(A).await.expect("A connects");
    let err = a
        .submit_document(&doc(1), None)
        .await
        .expect_err("suspended");
    assert_eq!(err.code(), Some("AUTH_UNIT_SUSPENDED"), "{err}");
    relay.stop().await.expect("stop");
}

/// A document of about `bytes` bytes (padding in its subject).
/// The relay's `/metrics` page.
async fn metrics_text(relay: &TestRelay) -> String {
    let addr = relay
        .admin_addr
        .expect("the test relay serves its admin API");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// One unlabelled value of a metrics page (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn doc_of_size(n: u32, bytes: usize) -> Vec<u8> {
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut builder = DocumentBuilder::new(code(A), vec![code(B)], date, &n.to_string(), "MEM");
    builder = builder.subject(&"x".repeat(bytes));
    builder.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_memory_left_packages_are_received_on_disk_and_one_unit_cannot_take_it_all() {
    // 400 KiB in all: a unit may hold 100 KiB.
    let relay = TestRelay::start_full(&[A, B], |_| {}, "memory_budget_bytes = 409600\n")
        .await
        .expect("relay");
    let metrics = || metrics_text(&relay);
    let a = relay.adapter(A).await.expect("A");
    // A slow submission of A that declared 100 KiB holds all of A's share (it sends a
    // byte now and then, so it is not cancelled as idle).
    let (tx, slow) = truc_tests::stalled_submission_of_size(&a, 100 * 1024).await;
    let drip = tokio::spawn({
        let tx = tx.clone();
        async move {
            use truc_client::proto::{submit_document_request::Part, SubmitDocumentRequest};
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let chunk = Part::Chunk(bytes::Bytes::from_static(b" "));
                if tx
                    .send(SubmitDocumentRequest { part: Some(chunk) })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let mut polls = 0;
    loop {
        if metric(&metrics().await, "truc_submission_memory_bytes") == 100 * 1024 {
            break;
        }
        polls += 1;
        assert!(polls < 400, "the slow submission never reserved its share");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A's next package finds no memory left for A: it is received on disk, and stored.
    let mut a2 = relay.adapter(A).await.expect("A again");
    let receipt = a2
        .submit_document(&doc_of_size(1, 20_000), None)
        .await
        .expect("received on disk");
    assert!(!receipt.duplicate);
    let text = metrics().await;
    assert_eq!(metric(&text, "truc_submissions_spilled_total"), 1, "{text}");
    // B is not affected: its package is received in memory.
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let from_b = DocumentBuilder::new(code(B), vec![code(A)], date, "1", "B").build();
    b.submit_document(&from_b, None).await.expect("B submits");
    assert_eq!(
        metric(&metrics().await, "truc_submissions_spilled_total"),
        1
    );
    // When the slow one ends (its stream closes unfinished), A's share comes back.
    drip.abort();
    drop(tx);
    let verdict = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the slow submission ends")
        .expect("task");
    assert!(verdict.is_err(), "an unfinished package is refused");
    a2.submit_document(&doc_of_size(2, 20_000), None)
        .await
        .expect("A submits again");
    let text = metrics().await;
    assert_eq!(
        metric(&text, "truc_submissions_spilled_total"),
        1,
        "in memory again"
    );
    assert_eq!(
        metric(&text, "truc_submission_memory_bytes"),
        0,
        "every share came back"
    );
    relay.stop().await.expect("stop");
}

/// The size of the largest staging file (a package being received on disk) of `relay`.
fn largest_staging_file(relay: &TestRelay) -> u64 {
    let dir = relay.dir.path().join("store").join("blobs").join("tmp");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_larger_than_its_memory_share_gives_it_back_once_it_goes_to_disk() {
    // 400 KiB in all: a unit may hold 100 KiB.
    let relay = TestRelay::start_full(
        &[A, B],
        |_| {},
        "memory_budget_bytes = 409600
",
    )
    .await
    .expect("relay");
    let a = relay.adapter(A).await.expect("A");
    // A package of undeclared size takes the most a unit may hold, then turns out larger:
    // its first 150 KiB go to a staging file, and the rest is slow to come.
    let package = doc_of_size(1, 200 * 1024);
    use truc_client::proto::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut grpc = a.grpc();
    let slow = tokio::spawn(async move {
        grpc.submit_document(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let chunk = |range: std::ops::Range<usize>| SubmitDocumentRequest {
        part: Some(Part::Chunk(bytes::Bytes::copy_from_slice(&package[range]))),
    };
    let header = SubmitDocumentRequest {
        part: Some(Part::Header(SubmitHeader::default())),
    };
    tx.send(header).await.expect("send");
    tx.send(chunk(0..150 * 1024)).await.expect("send");
    let mut polls = 0;
    while largest_staging_file(&relay) < 150 * 1024 {
        polls += 1;
        assert!(polls < 400, "the package never went to a staging file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // On disk: it holds no memory while the rest comes.
    let text = metrics_text(&relay).await;
    assert_eq!(
        metric(&text, "truc_submission_memory_bytes"),
        0,
        "a package received on disk gave its share back: {text}"
    );
    // So A's next package is received in memory, not spilled for want of A's share.
    let mut a2 = relay.adapter(A).await.expect("A again");
    a2.submit_document(&doc_of_size(2, 20_000), None)
        .await
        .expect("A submits meanwhile");
    assert_eq!(
        metric(
            &metrics_text(&relay).await,
            "truc_submissions_spilled_total"
        ),
        0
    );
    // The slow one ends whole, and is stored.
    tx.send(chunk(150 * 1024..package.len()))
        .await
        .expect("send");
    drop(tx);
    let receipt = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the slow submission ends")
        .expect("task")
        .expect("stored");
    assert!(!receipt.into_inner().duplicate);
    let mut b = relay.adapter(B).await.expect("B");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let d = truc_tests::next_delivery(&mut inbox).await;
        let bytes = if d.inline {
            d.package.to_vec()
        } else {
            b.fetch_payload(&d.message_id).await.expect("payload")
        };
        sizes.push(bytes.len());
        if bytes.len() > 100 * 1024 {
            assert_eq!(bytes, package, "the package received on disk is whole");
        }
        inbox.ack(&d.delivery_id).await.expect("ack");
    }
    sizes.sort_unstable();
    assert!(sizes[1] == package.len(), "{sizes:?}");
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_its_stream_limit_makes_further_calls_wait_and_others_do_not() {
    // Two calls per connection; stalled submissions are cut off after 5 s.
    let relay = TestRelay::start_full(
        &[A, B],
        |_| {},
        "max_streams_per_connection = 2\nidle_timeout_secs = 5\n",
    )
    .await
    .expect("relay");
    let reserved = || async { metric(&metrics_text(&relay).await, "truc_submission_memory_bytes") };
    let saturated = relay.adapter(A).await.expect("A");
    let other = relay.adapter(A).await.expect("A on a second connection");
    // Two silent submissions take both streams of the first connection; each reserves the
    // 1,000 bytes it declared once the relay has it.
    let (tx1, stall1) = truc_tests::stalled_submission_of_size(&saturated, 1000).await;
    let (tx2, stall2) = truc_tests::stalled_submission_of_size(&saturated, 1000).await;
    let mut polls = 0;
    while reserved().await != 2000 {
        polls += 1;
        assert!(polls < 400, "the two submissions never reached the relay");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another connection is not held up by them.
    other
        .clone()
        .lookup_unit(B)
        .await
        .expect("the other connection is served");
    assert_eq!(
        reserved().await,
        2000,
        "the submissions are still open after the other connection was served"
    );
    // A third call on the saturated connection waits for a free stream: it is answered
    // only after the relay has cut off a stalled submission (which gives its reservation
    // back before its answer leaves).
    saturated
        .clone()
        .lookup_unit(B)
        .await
        .expect("served once a stream is free");
    assert!(
        reserved().await < 2000,
        "a third call ran while two were open on a connection limited to two"
    );
    for stall in [stall1, stall2] {
        let status = stall.await.expect("task").expect_err("cut off");
        assert_eq!(truc_tests::error_code(&status), Some("SUBMIT_IDLE"));
    }
    drop((tx1, tx2));
    relay.stop().await.expect("stop");
}

/// Connections that never finish their TLS handshake hold at most `max_handshakes` slots:
/// those over it are closed at once instead of piling up for their 10 s each, and the
/// relay serves again as soon as the slots free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_in_the_handshake_are_bounded() {
    use tokio::io::AsyncReadExt;
    let relay = TestRelay::start_full(&[A], |_| {}, "max_handshakes = 2\n")
        .await
        .expect("relay");
    // Two connections that never begin their handshake take both slots. One closed at once
    // found the slots busy (the relay's own start-up checks may still be finishing their
    // handshakes on a slow machine): tried again.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        if stalled.len() == 2 {
            break;
        }
        let mut conn = tokio::net::TcpStream::connect(relay.addr)
            .await
            .expect("connect");
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(500), conn.read(&mut byte))
            .await
            .is_err()
        {
            stalled.push(conn);
        }
    }
    assert_eq!(stalled.len(), 2, "two stalled handshakes hold the slots");
    let mut closed = 0;
    for _ in 0..20 {
        let mut extra = tokio::net::TcpStream::connect(relay.addr)
            .await
            .expect("connect");
        let mut byte = [0u8; 1];
        // Closed by the relay well before a handshake's 10 s.
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 20,
        "every connection over the limit is closed at once"
    );
    drop(stalled);
    let mut served = false;
    for _ in 0..50 {
        if let Ok(mut a) = relay.adapter(A).await {
            if a.lookup_unit(A).await.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the relay serves once the stalled handshakes are gone"
    );
    relay.stop().await.expect("stop");
}
