//! Fuzz the re-cutting of `SubmitDocument` request bodies (`trucd::recut`), which reads
//! gRPC framing and protobuf from the network before tonic does.
//!
//! The input builds a request body: byte 0 picks the HTTP/2 frame size, byte 1 the piece
//! size (small, so that small inputs reach the cutting), and the rest is a list of
//! operations — a header message, a chunk message, a message of raw bytes, or raw bytes
//! without framing — so that both well-formed streams and garbage are common. Checked:
//! never a panic; every message that comes out fits the piece size; and when the input is a
//! complete stream of valid messages, the output is the same stream — headers identical,
//! the package bytes identical in order — or, only for a message larger than a piece that
//! is not a lone chunk, an error; when every message fits a piece, the bytes pass
//! unchanged.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use truc_proto::v1::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};
use trucd::recut::RecutBody;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn frame(out: &mut Vec<u8>, message: &[u8]) {
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
}

/// The wire bytes the operations in `data` describe.
fn build(mut data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    while data.len() >= 2 {
        let (op, len) = (data[0] % 4, usize::from(data[1]) * 3);
        data = &data[2..];
        let take = len.min(data.len());
        let (body, rest) = data.split_at(take);
        data = rest;
        match op {
            0 => {
                let header = SubmitHeader {
                    idempotency_key: String::from_utf8_lossy(body).into_owned(),
                    size: body.len() as u64,
                    sha256: String::new(),
                };
                let message = SubmitDocumentRequest {
                    part: Some(Part::Header(header)),
                };
                frame(&mut wire, &message.encode_to_vec());
            }
            1 => {
                let message = SubmitDocumentRequest {
                    part: Some(Part::Chunk(Bytes::copy_from_slice(body))),
                };
                frame(&mut wire, &message.encode_to_vec());
            }
            2 => frame(&mut wire, body),
            _ => wire.extend_from_slice(body),
        }
    }
    wire
}

/// Splits a stream of gRPC messages; `None` unless it is whole and every message decodes.
fn messages(mut wire: &[u8]) -> Option<Vec<(usize, SubmitDocumentRequest)>> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        if wire.len() < 5 || wire[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        let body = wire.get(5..5 + len)?;
        out.push((len, SubmitDocumentRequest::decode(body).ok()?));
        wire = &wire[5 + len..];
    }
    Some(out)
}

/// A stream reduced to what the relay sees: headers, and the package bytes between them.
#[derive(Debug, PartialEq)]
enum Seen {
    Header(SubmitHeader),
    Bytes(Vec<u8>),
    Empty,
}

fn seen(messages: &[(usize, SubmitDocumentRequest)]) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    for (_, m) in messages {
        match &m.part {
            Some(Part::Header(h)) => out.push(Seen::Header(h.clone())),
            Some(Part::Chunk(c)) => match out.last_mut() {
                Some(Seen::Bytes(b)) => b.extend_from_slice(c),
                _ => out.push(Seen::Bytes(c.to_vec())),
            },
            None => out.push(Seen::Empty),
        }
    }
    out.retain(|s| !matches!(s, Seen::Bytes(b) if b.is_empty()));
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let frame_size = 1 + usize::from(data[0]) * 4;
    let piece = 1 + usize::from(data[1]);
    let wire = build(&data[2..]);
    let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = wire
        .chunks(frame_size)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let inner = tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(
        frames,
    )));
    let result = runtime().block_on(async {
        RecutBody::with_piece_bytes(inner, piece)
            .collect()
            .await
            .map(|c| c.to_bytes())
    });
    let input = messages(&wire);
    match result {
        Ok(out) => {
            // Everything that comes out of a whole, valid stream is whole and valid, no
            // message is over a piece (and its framing), and the relay sees the same.
            if let Some(input) = input {
                let output = messages(&out).expect("the output of a valid stream is valid");
                for (len, _) in &output {
                    assert!(*len <= piece + 11, "a message of {len} bytes, pieces of {piece}");
                }
                assert_eq!(seen(&input), seen(&output));
                if input.iter().all(|(len, _)| *len <= piece) {
                    assert_eq!(&out[..], &wire[..], "small messages pass unchanged");
                }
            }
        }
        Err(status) => {
            // Refused only for a message over a piece that is not a lone chunk.
            if let Some(input) = input {
                let odd = input.iter().any(|(len, m)| {
                    *len > piece
                        && !matches!(&m.part, Some(Part::Chunk(c))
                            if c.len() + 1 + prost::length_delimiter_len(c.len()) == *len)
                });
                assert!(odd, "a valid stream refused: {status:?}");
            }
        }
    }
});
