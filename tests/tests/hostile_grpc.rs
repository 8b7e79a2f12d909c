//! A barrage of hostile input against a live `trucd` process: every invalid sample package,
//! garbage protobuf, huge declared sizes, endless streams, stalled (slowloris) submissions and
//! forged senders. Each gets its clear error code; the relay stays up; an honest adapter
//! exchanging documents meanwhile is unaffected; and a second barrage does not grow the
//! relay's memory (nothing leaks per bad request).

use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use truc_client::proto::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};
use truc_client::Client;
use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_tests::{code, samples_dir, TestRelay};

const HOSTILE: &str = "000.00.05.G04";
const HONEST: &str = "000.00.07.G04";
const PEER: &str = "000.00.09.G04";

/// Sends bytes as they are, as a gRPC message: for protobuf nobody should accept.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// The truc error code of a refusal (or the gRPC code when the framework refused first).
fn refusal(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("truc-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("grpc:{:?}", status.code()))
}

async fn raw_unary(client: &Client, method: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(client.channel());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(_) => panic!("{method} accepted garbage"),
        Err(s) => s,
    }
}

/// A streamed submission of `parts`, optionally stalling at the end.
async fn stream_submission(
    client: &Client,
    header: SubmitHeader,
    parts: Vec<Vec<u8>>,
    stall: bool,
) -> tonic::Status {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // Without the SDK's own limit on what it sends: hostile clients have none.
    let mut grpc = truc_client::proto::relay_client::RelayClient::new(client.channel())
        .max_encoding_message_size(usize::MAX);
    let call = tokio::spawn(async move {
        grpc.submit_document(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let _ = tx
        .send(SubmitDocumentRequest {
            part: Some(Part::Header(header)),
        })
        .await;
    for p in parts {
        if tx
            .send(SubmitDocumentRequest {
                part: Some(Part::Chunk(p.into())),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    if !stall {
        drop(tx);
        return match call.await.expect("task") {
            Ok(r) => panic!("accepted: {:?}", r.get_ref()),
            Err(s) => s,
        };
    }
    let result = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("a stalled submission is cut off")
        .expect("task");
    drop(tx);
    result.expect_err("stalled submission refused")
}

/// One barrage; returns the refusal codes seen.
async fn barrage(client: &Client) -> Vec<String> {
    let mut codes = Vec::new();
    // Every invalid sample, as a document and as a status.
    let mut invalid: Vec<_> = std::fs::read_dir(samples_dir().join("invalid"))
        .expect("samples")
        .map(|e| e.expect("entry").path())
        .collect();
    invalid.sort();
    for path in &invalid {
        let bytes = std::fs::read(path).expect("read");
        let mut c = client.clone();
        let err = c
            .submit_document(&bytes, None)
            .await
            .expect_err("an invalid sample is refused");
        codes.push(err.code().unwrap_or("").to_owned());
        let err = c
            .submit_status(&bytes, None)
            .await
            .expect_err("an invalid sample is refused as a status too");
        codes.push(err.code().unwrap_or("").to_owned());
    }
    // Garbage protobuf on every unary method.
    for (i, method) in [
        "/truc.v1.Relay/SubmitStatus",
        "/truc.v1.Relay/GetTrace",
        "/truc.v1.Relay/LookupUnit",
        "/truc.v1.Relay/ListUnits",
    ]
    .into_iter()
    .enumerate()
    {
        for n in 0..8usize {
            let mut junk = vec![0u8; 1 + (n * 997 + i * 131) % 4096];
            fastrand_fill(&mut junk, (n * 31 + i) as u64);
            // Field 1, length-delimited, claiming far more bytes than follow.
            junk[0] = 0x0a;
            let status = raw_unary(client, method, junk).await;
            codes.push(refusal(&status));
        }
    }
    // Declared sizes far over the limit: refused before any byte is read.
    for size in [u64::MAX, 10 << 30, 2 << 20] {
        let header = SubmitHeader {
            size,
            ..SubmitHeader::default()
        };
        let status = stream_submission(client, header, vec![b"<edXML".to_vec()], false).await;
        codes.push(refusal(&status));
    }
    // An endless package: refused once past the limit (1 MiB here), not buffered forever.
    let mut endless = vec![
        b"<?xml version=\"1.0\"?><edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"><x>"
            .to_vec(),
    ];
    endless.extend(std::iter::repeat_n(vec![b'a'; 64 * 1024], 40));
    let status = stream_submission(client, SubmitHeader::default(), endless, false).await;
    codes.push(refusal(&status));
    // Messages over the relay's 1 MiB (and framing) limit: a 4 MiB chunk, a 2 MiB status.
    let status = stream_submission(
        client,
        SubmitHeader::default(),
        vec![vec![b' '; 4 << 20]],
        false,
    )
    .await;
    codes.push(refusal(&status));
    // A message over 64 KiB that is not a chunk (a header with a 100 KiB idempotency key):
    // the relay cuts large chunks into small messages before decoding them, and refuses
    // any other large message before tonic buffers it.
    let header = SubmitHeader {
        idempotency_key: "k".repeat(100 * 1024),
        ..SubmitHeader::default()
    };
    let status = stream_submission(client, header, Vec::new(), false).await;
    let large_header = refusal(&status);
    assert!(
        large_header == "RPC_BAD_MESSAGE" && status.message().contains("must be a chunk"),
        "a large header: {large_header} {}",
        status.message()
    );
    codes.push(large_header);
    let mut huge_status = vec![0x0a, 0x80, 0x80, 0x80, 0x01];
    huge_status.resize(5 + (2 << 20), b' ');
    let status = raw_unary(client, "/truc.v1.Relay/SubmitStatus", huge_status).await;
    codes.push(refusal(&status));
    // Slowloris: three submissions that start and go silent, at once.
    let stalls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let status = stream_submission(
                    &client,
                    SubmitHeader::default(),
                    vec![b"<?xml version=\"1.0\"?><edXML".to_vec()],
                    true,
                )
                .await;
                refusal(&status)
            })
        })
        .collect();
    for s in stalls {
        codes.push(s.await.expect("task"));
    }
    // A whole, valid package whose header declares one byte more than it has: what a
    // submission cut short at a chunk's end looks like.
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let short = DocumentBuilder::new(code(HOSTILE), vec![code(HONEST)], date, "1", "SHORT").build();
    let header = SubmitHeader {
        size: short.len() as u64 + 1,
        ..SubmitHeader::default()
    };
    let status = stream_submission(client, header, vec![short], false).await;
    codes.push(refusal(&status));
    // Forged senders: a package from a unit this adapter does not serve.
    for n in 0..5 {
        let forged = DocumentBuilder::new(
            code(PEER),
            vec![code(HONEST)],
            date,
            &format!("{n}"),
            "FORGED",
        )
        .build();
        let err = client
            .clone()
            .submit_document(&forged, None)
            .await
            .expect_err("forged");
        codes.push(err.code().unwrap_or("").to_owned());
    }
    codes
}

/// Deterministic filler (no randomness needed for the test to be meaningful).
fn fastrand_fill(buf: &mut [u8], seed: u64) {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_barrage_gets_clear_errors_and_harms_nobody_else() {
    let relay = TestRelay::spawn_process_with(
        &[HOSTILE, HONEST, PEER],
        "max_package_bytes = 1048576\nidle_timeout_secs = 1\n",
    )
    .await
    .expect("trucd");
    let pid = relay.pid().expect("pid");
    let hostile = relay.adapter(HOSTILE).await.expect("hostile adapter");

    // The honest adapter exchanges documents with its peer all along.
    let honest = {
        let mut sender = relay.adapter(HONEST).await.expect("honest");
        let mut receiver = relay.adapter(PEER).await.expect("peer");
        tokio::spawn(async move {
            let date = CalendarDate::new(2026, 11, 21).expect("date");
            let mut inbox = receiver.inbox(16).await.expect("inbox");
            let mut received = 0;
            for n in 0..40 {
                let doc = DocumentBuilder::new(
                    code(HONEST),
                    vec![code(PEER)],
                    date,
                    &format!("{n}"),
                    "HONEST",
                )
                .build();
                sender
                    .submit_document(&doc, None)
                    .await
                    .expect("honest submission");
                let got = tokio::time::timeout(Duration::from_secs(30), inbox.next())
                    .await
                    .expect("delivered in time")
                    .expect("inbox")
                    .expect("delivery");
                assert_eq!(got.package, doc);
                inbox.ack(&got.delivery_id).await.expect("ack");
                received += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            received
        })
    };

    let first = barrage(&hostile).await;
    let after_first = rss_bytes(pid);
    let second = barrage(&hostile).await;
    let after_second = rss_bytes(pid);
    assert_eq!(first, second, "the same input gets the same answers");

    // Every refusal has a clear, stable code.
    for c in &first {
        assert!(
            !c.is_empty() && c != "grpc:Unknown" && c != "grpc:Internal",
            "an unclear refusal: {c:?} in {first:?}"
        );
    }
    for expected in [
        "EDXML_TOO_LARGE",
        "SUBMIT_IDLE",
        "AUTH_FORGED_SENDER",
        "EDXML_DTD_FORBIDDEN",
        "RPC_BAD_MESSAGE",
        "RPC_MESSAGE_TOO_LARGE",
        "SUBMIT_SIZE_MISMATCH",
    ] {
        assert!(
            first.iter().any(|c| c == expected),
            "{expected} not among {first:?}"
        );
    }
    assert_eq!(
        first
            .iter()
            .filter(|c| *c == "RPC_MESSAGE_TOO_LARGE")
            .count(),
        2,
        "both oversized messages (a chunk, a status) are refused as such: {first:?}"
    );
    assert_eq!(
        honest.await.expect("honest adapter"),
        40,
        "the honest exchange went on"
    );

    // The relay is still up and serving, and the second barrage did not grow its memory.
    let mut again = relay.adapter(HONEST).await.expect("still serving");
    assert!(again.lookup_unit(PEER).await.is_ok());
    let growth = after_second.saturating_sub(after_first);
    assert!(
        growth < 32 * 1024 * 1024,
        "resident memory grew by {growth} bytes over an identical barrage"
    );
    relay.stop().await.expect("stop");
}

/// One `SubmitDocument` call whose body is written by hand: a header declaring `declared`
/// bytes, then a chunk message announced as `declared` bytes of which only `sent` follow,
/// and then nothing (the returned sender keeps the request open). Bypasses the SDK so
/// that a message can be left unfinished, as a hostile client would.
async fn unfinished_chunk(
    client: &Client,
    declared: usize,
    sent: usize,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<Result<tonic::codegen::http::Response<tonic::body::Body>, String>>,
) {
    use prost::Message;
    use tower::ServiceExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let frames =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
            Ok::<_, tonic::Status>(http_body::Frame::data(b))
        });
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/truc.v1.Relay/SubmitDocument")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    let channel = client.channel();
    let call =
        tokio::spawn(async move { channel.oneshot(request).await.map_err(|e| e.to_string()) });
    let header = SubmitDocumentRequest {
        part: Some(Part::Header(SubmitHeader {
            size: declared as u64,
            ..SubmitHeader::default()
        })),
    }
    .encode_to_vec();
    let mut first = vec![0];
    first.extend_from_slice(&(header.len() as u32).to_be_bytes());
    first.extend_from_slice(&header);
    // The chunk: its prefix and field header, then the start of a package.
    let mut field = vec![0x12];
    prost::encoding::encode_varint(declared as u64, &mut field);
    first.push(0);
    first.extend_from_slice(&((field.len() + declared) as u32).to_be_bytes());
    first.extend_from_slice(&field);
    let start =
        b"<?xml version=\"1.0\"?><edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"><x>";
    first.extend_from_slice(start);
    let _ = tx.send(first.into()).await;
    let mut left = sent - start.len();
    while left > 0 {
        let n = left.min(16 * 1024);
        let _ = tx.send(vec![b'a'; n].into()).await;
        left -= n;
    }
    (tx, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_large_chunks_do_not_make_the_relay_hold_them() {
    // A memory budget of 4 MiB (1 MiB per unit): the packages being received beyond it go
    // to staging files, so what the relay's memory holds is its own receive buffers.
    let relay =
        TestRelay::spawn_process_with(&[HOSTILE, HONEST], "memory_budget_bytes = 4194304\n")
            .await
            .expect("trucd");
    let pid = relay.pid().expect("pid");
    let hostile = relay.adapter(HOSTILE).await.expect("hostile adapter");
    let mut honest = relay.adapter(HONEST).await.expect("honest adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let warm = DocumentBuilder::new(code(HONEST), vec![code(HOSTILE)], date, "0", "WARM").build();
    honest.submit_document(&warm, None).await.expect("warm-up");
    let before = rss_bytes(pid);

    // 48 calls on one connection, each 1 MiB chunk sent but for its last 64 KiB. tonic
    // alone would keep a 1 MiB buffer for each until the chunk is complete: 48 MiB.
    let mut open = Vec::new();
    for _ in 0..48 {
        open.push(unfinished_chunk(&hostile, 1 << 20, (1 << 20) - (64 << 10)).await);
    }
    // All of it sent: the senders' queues are empty once HTTP/2 flow control let every
    // byte through, which the relay allows only as it reads them.
    let mut polls = 0;
    while open.iter().any(|(tx, _)| tx.capacity() < tx.max_capacity()) {
        polls += 1;
        assert!(
            polls < 1000,
            "the relay stopped reading the unfinished chunks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut during = rss_bytes(pid);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        during = during.max(rss_bytes(pid));
    }
    let growth = during.saturating_sub(before);
    eprintln!("48 unfinished chunks: the relay's resident memory grew by {growth} bytes");
    assert!(
        growth < 24 * 1024 * 1024,
        "48 unfinished 1 MiB chunks grew the relay's memory by {growth} bytes"
    );

    // Meanwhile the relay serves others; then every unfinished call ends inside its
    // message and is refused.
    let doc = DocumentBuilder::new(code(HONEST), vec![code(HOSTILE)], date, "1", "DURING").build();
    honest
        .submit_document(&doc, None)
        .await
        .expect("served meanwhile");
    for (tx, call) in open {
        drop(tx);
        let response = call.await.expect("task").expect("answered");
        let (parts, body) = response.into_parts();
        let trailers = http_body_util::BodyExt::collect(body)
            .await
            .ok()
            .and_then(|c| c.trailers().cloned())
            .unwrap_or_default();
        let code_of = |h: &tonic::codegen::http::HeaderMap| {
            h.get("truc-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let code = code_of(&parts.headers).or_else(|| code_of(&trailers));
        assert_eq!(code.as_deref(), Some("RPC_BAD_MESSAGE"));
    }
    relay.stop().await.expect("stop");
}
