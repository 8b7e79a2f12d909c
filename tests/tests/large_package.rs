//! A 200 MiB package passes end to end through a real `trucd` process while the relay's
//! resident memory grows by less than 64 MiB: packages are streamed to disk as they arrive,
//! checked while streaming, and streamed out again.

use std::io::Write;
use std::time::Duration;

use sha2::{Digest, Sha256};
use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

/// Resident set and its peak, in KiB, from /proc.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Streams a delivered package's bytes: their size and SHA-256 (hex).
async fn fetch_and_hash(client: &mut truc_client::Client, message_id: &str) -> (u64, String) {
    let mut hasher = Sha256::new();
    let size = client
        .fetch_payload_with(message_id, |chunk| {
            hasher.update(chunk);
            Ok(())
        })
        .await
        .expect("fetch");
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (size, hex)
}

/// The relay's peak resident memory grew by less than 64 MiB over `baseline` (KiB) while
/// it carried `what`.
fn assert_peak_growth_below_64_mib(pid: u32, baseline: u64, what: &str) {
    let (_, peak) = memory_kib(pid);
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    println!(
        "trucd memory: baseline {} MiB, peak {} MiB, growth {growth_mib} MiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 64,
        "the relay's memory grew by {growth_mib} MiB for {what}"
    );
}

fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_package_passes_with_bounded_relay_memory() {
    let relay = TestRelay::spawn_process(&[A, B])
        .await
        .expect("trucd process");
    let pid = relay.pid().expect("pid");

    // A small exchange first, so the baseline includes everything warmed up.
    let mut a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let warm = DocumentBuilder::new(code(A), vec![code(B)], date, "1", "X").build();
    a.submit_document(&warm, None).await.expect("warm-up");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let d = tokio::time::timeout(Duration::from_secs(30), inbox.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    inbox.ack(&d.delivery_id).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline, _) = memory_kib(pid);

    // A scanned document: 150 MiB of attachment, about 200 MiB of package once in base64.
    let package = DocumentBuilder::new(code(A), vec![code(B)], date, "2", "X")
        .subject("Hồ sơ quét")
        .attachment(AttachmentSource::new("hoso.pdf", noise(150 * 1024 * 1024)))
        .build();
    assert!(package.len() > 200 * 1024 * 1024 - 1024);
    let expected_sha: String = Sha256::digest(&package)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = relay.dir.path().join("big.edxml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&package))
        .expect("write");
    drop(package);

    let receipt = a
        .submit_file(&path, Some("big-2"))
        .await
        .expect("submit 200 MiB");
    assert_eq!(receipt.sha256, expected_sha);
    assert_eq!(
        receipt.size as usize,
        std::fs::metadata(&path).expect("meta").len() as usize
    );

    let d = tokio::time::timeout(Duration::from_secs(120), inbox.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    assert!(!d.inline, "a 200 MiB package is announced, not inlined");
    let (size, got) = fetch_and_hash(&mut b, &d.message_id).await;
    assert_eq!(size, receipt.size);
    assert_eq!(got, expected_sha, "byte for byte");
    inbox.ack(&d.delivery_id).await.expect("ack");
    assert_peak_growth_below_64_mib(pid, baseline, "a 200 MiB package");
}

/// A package sent in many small chunks, with empty ones between them, is joined in order and
/// arrives intact (the relay keeps a one-chunk package as received and copies the pieces of
/// any other together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_in_many_small_chunks_arrives_intact() {
    use truc_client::proto::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};

    let relay = TestRelay::spawn_process(&[A, B])
        .await
        .expect("trucd process");
    let a = relay.adapter(A).await.expect("A");
    let mut b = relay.adapter(B).await.expect("B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let package = DocumentBuilder::new(code(A), vec![code(B)], date, "3", "X")
        .attachment(AttachmentSource::new("phu-luc.pdf", noise(30 * 1024)))
        .build();
    let mut messages = vec![SubmitDocumentRequest {
        part: Some(Part::Header(SubmitHeader {
            size: package.len() as u64,
            ..SubmitHeader::default()
        })),
    }];
    for piece in package.chunks(97) {
        for part in [bytes::Bytes::new(), bytes::Bytes::copy_from_slice(piece)] {
            messages.push(SubmitDocumentRequest {
                part: Some(Part::Chunk(part)),
            });
        }
    }
    let receipt = a
        .grpc()
        .submit_document(tokio_stream::iter(messages))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(receipt.size, package.len() as u64);

    let mut inbox = b.inbox(4).await.expect("inbox");
    let d = tokio::time::timeout(Duration::from_secs(30), inbox.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    assert_eq!(d.message_id, receipt.message_id);
    assert!(d.inline, "a small package is delivered inline");
    assert_eq!(
        d.package.as_ref(),
        package.as_slice(),
        "the bytes, in order"
    );
    inbox.ack(&d.delivery_id).await.expect("ack");
}

/// A 100 MiB package from another ministry comes in through the national axis while the
/// relay's resident memory grows by less than 64 MiB: the axis's answer (the package in
/// base64, inside JSON) is read as it arrives, checked on the way and staged to disk, as an
/// adapter's package is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_package_from_the_national_axis_arrives_with_bounded_relay_memory() {
    use truc_upstream::Upstream;
    let (_axis, relay, other) = ministry_on_the_axis().await;
    let pid = relay.pid().expect("pid");
    let mut a = relay.adapter(A).await.expect("A");
    let mut inbox = a.inbox(4).await.expect("inbox");
    let date = CalendarDate::new(2026, 11, 21).expect("date");

    // A small package first, so the baseline includes the link warmed up.
    let warm = DocumentBuilder::new(code(OTHER_MINISTRY), vec![code(A)], date, "1", "X").build();
    other
        .send(&warm, OTHER_MINISTRY, &[A.into()], false)
        .await
        .expect("send the small one");
    let d = tokio::time::timeout(Duration::from_secs(30), inbox.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    assert_eq!(d.package.as_ref(), warm.as_slice());
    inbox.ack(&d.delivery_id).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline, _) = memory_kib(pid);

    // A scanned file: 75 MiB of attachment, 100 MiB of package, 133 MiB of answer.
    let package = DocumentBuilder::new(code(OTHER_MINISTRY), vec![code(A)], date, "2", "X")
        .subject("Hồ sơ quét")
        .attachment(AttachmentSource::new("hoso.pdf", noise(75 * 1024 * 1024)))
        .build();
    let expected_sha: String = Sha256::digest(&package)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected_size = package.len() as u64;
    other
        .send(&package, OTHER_MINISTRY, &[A.into()], false)
        .await
        .expect("send the large one");
    drop(package);

    let d = tokio::time::timeout(Duration::from_secs(120), inbox.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some");
    assert!(!d.inline, "a 100 MiB package is announced, not inlined");
    let (size, got) = fetch_and_hash(&mut a, &d.message_id).await;
    assert_eq!(size, expected_size);
    assert_eq!(got, expected_sha, "byte for byte");
    inbox.ack(&d.delivery_id).await.expect("ack");
    assert_peak_growth_below_64_mib(pid, baseline, "a 100 MiB package from the axis");
    relay.stop().await.expect("stop");
}

/// The other ministry of the national-axis tests.
const OTHER_MINISTRY: &str = "000.00.00.G12";

/// The simulator of the national axis, a `trucd` process as the transport ministry's relay
/// on it (unit A), and a client speaking for the other ministry's system.
async fn ministry_on_the_axis() -> (
    truc_axis_sim::LocalSimulator,
    TestRelay,
    truc_upstream::VdxpUpstream,
) {
    let local = truc_axis_sim::LocalSimulator::start(vec![
        truc_axis_sim::SystemConfig::new("bogtvt", "secret-a", "000.00.00.G04"),
        truc_axis_sim::SystemConfig::new("botc", "secret-b", OTHER_MINISTRY),
    ])
    .await
    .expect("simulator");
    let relay = TestRelay::spawn_ministry_process(
        "000.00.00.G04",
        &[A],
        &format!(
            "[upstream]\nbase_url = \"{}\"\nsystem_id = \"bogtvt\"\nsecret = \"secret-a\"\npoll_secs = 1\n",
            local.base_url
        ),
    )
    .await
    .expect("trucd process");
    let other = truc_upstream::VdxpUpstream::new(truc_upstream::UpstreamConfig {
        base_url: local.base_url.clone(),
        system_id: "botc".into(),
        secret: "secret-b".into(),
        ca_pem: None,
        client_identity_pem: None,
        timeout: Duration::from_secs(120),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client of the other ministry");
    (local, relay, other)
}

/// A 100 MiB package to another ministry leaves through the national axis while the
/// relay's resident memory grows by less than 64 MiB: `sendEdoc` streams it from its blob
/// file (the axis checks its SHA-256 against `hash-file`, so a damaged upload is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_package_to_another_ministry_leaves_with_bounded_relay_memory() {
    use truc_upstream::Upstream;
    let (_axis, relay, other) = ministry_on_the_axis().await;
    let pid = relay.pid().expect("pid");
    let mut a = relay.adapter(A).await.expect("A");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let recipient = "000.01.07.G12";

    // Whatever the other ministry has received, collected as it comes.
    let received = |n: usize| {
        let other = &other;
        async move {
            for _ in 0..600 {
                let listed = other.list_received(false).await.expect("list");
                if listed.len() >= n {
                    return listed;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{n} packages did not reach the other ministry");
        }
    };

    // A small package first, so the baseline includes the link warmed up.
    let warm = DocumentBuilder::new(code(A), vec![code(recipient)], date, "1", "X").build();
    a.submit_document(&warm, None)
        .await
        .expect("submit the small one");
    let first = received(1).await;
    other
        .acknowledge(&first[0].doc_id, true)
        .await
        .expect("ack");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline, _) = memory_kib(pid);

    let package = DocumentBuilder::new(code(A), vec![code(recipient)], date, "2", "X")
        .subject("Hồ sơ quét")
        .attachment(AttachmentSource::new("hoso.pdf", noise(75 * 1024 * 1024)))
        .build();
    let expected: Vec<u8> = Sha256::digest(&package).to_vec();
    let path = relay.dir.path().join("big.edxml");
    std::fs::write(&path, &package).expect("write");
    drop(package);
    a.submit_file(&path, None).await.expect("submit 100 MiB");

    let listed = received(1).await;
    let got = other
        .fetch(&listed[0].doc_id)
        .await
        .expect("fetch from the axis");
    assert_eq!(Sha256::digest(&got).to_vec(), expected, "byte for byte");
    drop(got);
    assert_peak_growth_below_64_mib(pid, baseline, "a 100 MiB package sent to the axis");
    relay.stop().await.expect("stop");
}
