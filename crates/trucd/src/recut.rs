//! Re-cuts the request body of `SubmitDocument` calls into small messages before tonic
//! decodes them, so that an open submission costs the relay kilobytes, not a megabyte.
//!
//! tonic reserves a whole message's length as soon as its 5-byte prefix arrives, and keeps
//! it until the message is complete: every submission in the middle of a 1 MiB chunk held
//! 1 MiB, outside the relay's memory budget, however slowly its bytes came. This body sits
//! between HTTP/2 and tonic and turns each large `chunk` message into the same bytes cut
//! into `chunk` messages of at most [`PIECE_BYTES`], passing the received slices through
//! without copying them. The handler sees the same package bytes in more, smaller chunks;
//! HTTP/2 flow control bounds what is not yet read.
//!
//! Messages up to [`PIECE_BYTES`] pass as they are. A larger message must be what every
//! protobuf encoder writes for a chunk (the field alone); anything else of that size is
//! refused (`RPC_BAD_MESSAGE`), as is a message over the contract's limit
//! (`RPC_MESSAGE_TOO_LARGE`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::Status;

/// The path of the one method whose requests are re-cut.
pub const SUBMIT_DOCUMENT_PATH: &str = "/truc.v1.Relay/SubmitDocument";

/// Largest message handed to tonic for a submission, in package bytes.
pub const PIECE_BYTES: usize = 64 * 1024;

/// `SubmitDocumentRequest.chunk`: field 2, length-delimited.
const CHUNK_TAG: u8 = 0x12;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX_BYTES: usize = 5;

/// The longest varint (a `u64`).
const MAX_VARINT_BYTES: usize = 10;

/// Gives `SubmitDocument` requests a re-cutting body; other requests pass untouched. For
/// `tower::util::MapRequestLayer` in front of the gRPC services.
pub fn recut_submissions(request: Request<Body>) -> Request<Body> {
    if request.uri().path() != SUBMIT_DOCUMENT_PATH {
        return request;
    }
    request.map(|body| Body::new(RecutBody::new(body)))
}

/// Where the body is within the stream of gRPC messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a message's prefix (`head` holds what arrived of it).
    Prefix,
    /// Passing `left` more bytes of a small message as they are.
    Verbatim { left: usize },
    /// Reading the tag and length of a large message of `len` bytes (into `head`).
    ChunkHead { len: usize },
    /// Passing `left` more package bytes of a large chunk, `piece_left` of them in the
    /// current piece.
    ChunkBytes { left: usize, piece_left: usize },
}

/// A `SubmitDocument` request body whose large chunks come out as pieces.
#[derive(Debug)]
pub struct RecutBody {
    inner: Body,
    /// Largest piece, and largest message passed as it is ([`PIECE_BYTES`]).
    piece_bytes: usize,
    state: State,
    head: [u8; 1 + MAX_VARINT_BYTES],
    head_len: usize,
    out: VecDeque<Bytes>,
    /// A refusal to give once `out` is drained; after it, the body ends.
    error: Option<Status>,
    failed: bool,
}

impl RecutBody {
    /// Wraps the body of a `SubmitDocument` request.
    pub fn new(inner: Body) -> Self {
        Self::with_piece_bytes(inner, PIECE_BYTES)
    }

    /// Same, with pieces of at most `piece_bytes` (1 to [`PIECE_BYTES`]): small pieces let
    /// tests and the fuzzer reach every path with small inputs.
    pub fn with_piece_bytes(inner: Body, piece_bytes: usize) -> Self {
        RecutBody {
            inner,
            piece_bytes: piece_bytes.clamp(1, PIECE_BYTES),
            state: State::Prefix,
            head: [0; 1 + MAX_VARINT_BYTES],
            head_len: 0,
            out: VecDeque::new(),
            error: None,
            failed: false,
        }
    }

    /// Whether the bytes so far end on a message's end.
    fn between_messages(&self) -> bool {
        self.state == State::Prefix && self.head_len == 0
    }

    /// Stops reading: what is queued goes out, then `status`, then the end.
    fn fail(&mut self, status: Status) {
        self.error = Some(status);
        self.failed = true;
    }

    /// Takes the bytes of one DATA frame, queueing what tonic is to see.
    fn feed(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            match self.state {
                State::Prefix => {
                    if !self.fill_head(&mut data, PREFIX_BYTES) {
                        break;
                    }
                    self.head_len = 0;
                    let flag = self.head[0];
                    let len = u32::from_be_bytes([
                        self.head[1],
                        self.head[2],
                        self.head[3],
                        self.head[4],
                    ]) as usize;
                    if len <= self.piece_bytes {
                        self.out
                            .push_back(Bytes::copy_from_slice(&self.head[..PREFIX_BYTES]));
                        if len > 0 {
                            self.state = State::Verbatim { left: len };
                        }
                    } else if len > truc_proto::MAX_REQUEST_MESSAGE_BYTES {
                        return Err(crate::grpc::message_too_large(&format!(
                            "a message of {len} bytes is over the limit of {} bytes",
                            truc_proto::MAX_REQUEST_MESSAGE_BYTES
                        )));
                    } else if flag != 0 {
                        return Err(crate::grpc::bad_message(
                            "compressed messages are not accepted",
                        ));
                    } else {
                        self.state = State::ChunkHead { len };
                    }
                }
                State::Verbatim { left } => {
                    let n = left.min(data.len());
                    self.out.push_back(data.split_to(n));
                    self.state = if n == left {
                        State::Prefix
                    } else {
                        State::Verbatim { left: left - n }
                    };
                }
                State::ChunkHead { len } => {
                    // The tag, then the varint length: it ends at a byte under 0x80, within
                    // the message.
                    let limit = self.head.len().min(len);
                    let complete = loop {
                        if self.head_len > 1 && self.head[self.head_len - 1] < 0x80 {
                            break true;
                        }
                        if self.head_len == limit || !data.has_remaining() {
                            break false;
                        }
                        self.head[self.head_len] = data.get_u8();
                        self.head_len += 1;
                    };
                    if !complete {
                        if self.head_len == limit {
                            return Err(not_a_chunk(self.piece_bytes));
                        }
                        break;
                    }
                    let field = decode_varint(&self.head[1..self.head_len]);
                    let framing = self.head_len;
                    self.head_len = 0;
                    match field {
                        Some(n)
                            if self.head[0] == CHUNK_TAG
                                && n.checked_add(framing as u64) == Some(len as u64) =>
                        {
                            self.state = if n == 0 {
                                // An empty chunk (only with pieces under 11 bytes).
                                self.out.push_back(piece_prefix(0));
                                State::Prefix
                            } else {
                                State::ChunkBytes {
                                    left: len - framing,
                                    piece_left: 0,
                                }
                            };
                        }
                        _ => return Err(not_a_chunk(self.piece_bytes)),
                    }
                }
                State::ChunkBytes { left, piece_left } => {
                    let piece_left = if piece_left == 0 {
                        let piece = left.min(self.piece_bytes);
                        self.out.push_back(piece_prefix(piece));
                        piece
                    } else {
                        piece_left
                    };
                    let n = piece_left.min(data.len());
                    self.out.push_back(data.split_to(n));
                    self.state = if n == left {
                        State::Prefix
                    } else {
                        State::ChunkBytes {
                            left: left - n,
                            piece_left: piece_left - n,
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// Copies bytes of `data` into `head` until it holds `want`; says whether it does.
    fn fill_head(&mut self, data: &mut Bytes, want: usize) -> bool {
        let n = (want - self.head_len).min(data.len());
        self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
        data.advance(n);
        self.head_len += n;
        self.head_len == want
    }
}

impl http_body::Body for RecutBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(bytes) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if let Some(status) = self.error.take() {
                return Poll::Ready(Some(Err(status)));
            }
            if self.failed {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    // The messages complete before a fault still go first, so the answer
                    // does not depend on how the bytes were framed.
                    Ok(data) => {
                        if let Err(status) = self.feed(data) {
                            self.fail(status);
                        }
                    }
                    // tonic ends the stream at trailers without looking at what it holds.
                    Err(_) if !self.between_messages() => self.fail(ended_inside()),
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                // A request that ends inside a message: without this, the bytes held back
                // here would vanish and tonic would see a clean end.
                None if !self.between_messages() => self.fail(ended_inside()),
                // tonic takes a cancelled request for a clean end, so the handler would go
                // on with a package cut short at a chunk's end; a request ends with
                // END_STREAM, never with a cancel.
                Some(Err(status)) if status.code() == tonic::Code::Cancelled => self.fail(
                    crate::grpc::bad_message("the request was cancelled before its end"),
                ),
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.failed && self.error.is_none() && self.out.is_empty())
            || (self.out.is_empty() && self.between_messages() && self.inner.is_end_stream())
    }
}

fn ended_inside() -> Status {
    crate::grpc::bad_message("the request ended inside a message")
}

/// The prefix and field framing of a piece of `len` package bytes.
fn piece_prefix(len: usize) -> Bytes {
    let mut field = BytesMut::with_capacity(1 + MAX_VARINT_BYTES);
    field.put_u8(CHUNK_TAG);
    let mut v = len as u64;
    while v >= 0x80 {
        field.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    field.put_u8(v as u8);
    let mut prefix = BytesMut::with_capacity(PREFIX_BYTES + field.len());
    prefix.put_u8(0);
    prefix.put_u32((field.len() + len) as u32);
    prefix.extend_from_slice(&field);
    prefix.freeze()
}

/// A protobuf varint from its complete bytes; `None` if it overflows a `u64`.
fn decode_varint(bytes: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        let part = u64::from(b & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
    }
    Some(value)
}

fn not_a_chunk(piece_bytes: usize) -> Status {
    crate::grpc::bad_message(&format!(
        "a SubmitDocument message over {piece_bytes} bytes must be a chunk alone"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use prost::Message;
    use truc_proto::v1::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};

    fn framed(message: &SubmitDocumentRequest) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    fn chunk(bytes: Vec<u8>) -> SubmitDocumentRequest {
        SubmitDocumentRequest {
            part: Some(Part::Chunk(bytes.into())),
        }
    }

    /// Runs `wire` through a re-cutting body in frames of `frame` bytes; returns the
    /// messages tonic would decode, or the error.
    async fn recut(wire: &[u8], frame: usize) -> Result<Vec<SubmitDocumentRequest>, Status> {
        recut_in_pieces(wire, frame, PIECE_BYTES).await
    }

    async fn recut_in_pieces(
        wire: &[u8],
        frame: usize,
        piece: usize,
    ) -> Result<Vec<SubmitDocumentRequest>, Status> {
        let frames: Vec<Result<Frame<Bytes>, Status>> = wire
            .chunks(frame)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let out = RecutBody::with_piece_bytes(inner, piece)
            .collect()
            .await?
            .to_bytes();
        let mut rest = &out[..];
        let mut messages = Vec::new();
        while !rest.is_empty() {
            assert_eq!(rest[0], 0, "uncompressed");
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            assert!(len <= piece + 8, "a message of {len} bytes came out");
            messages.push(SubmitDocumentRequest::decode(&rest[5..5 + len]).expect("decodes"));
            rest = &rest[5 + len..];
        }
        Ok(messages)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn large_chunks_come_out_as_pieces_with_the_same_bytes_in_order() {
        let header = SubmitDocumentRequest {
            part: Some(Part::Header(SubmitHeader {
                idempotency_key: "k".into(),
                size: 3_000_000,
                sha256: String::new(),
            })),
        };
        let big = pattern(1024 * 1024);
        let odd = pattern(PIECE_BYTES * 3 + 17);
        let small = pattern(1000);
        let mut wire = framed(&header);
        for m in [chunk(big.clone()), chunk(small.clone()), chunk(odd.clone())] {
            wire.extend(framed(&m));
        }
        for frame in [1, 7, 16 * 1024, 100_000, wire.len()] {
            let messages = recut(&wire, frame).await.expect("recut");
            assert_eq!(messages[0], header, "frames of {frame}");
            let mut bytes = Vec::new();
            for m in &messages[1..] {
                match &m.part {
                    Some(Part::Chunk(c)) => {
                        assert!(!c.is_empty() && c.len() <= PIECE_BYTES);
                        bytes.extend_from_slice(c);
                    }
                    other => panic!("not a chunk: {other:?}"),
                }
            }
            let expected: Vec<u8> = [big.clone(), small.clone(), odd.clone()].concat();
            assert!(bytes == expected, "bytes differ with frames of {frame}");
            // 16 pieces, the small one as it was, 4 pieces.
            assert_eq!(messages.len(), 1 + 16 + 1 + 4, "frames of {frame}");
        }
    }

    #[tokio::test]
    async fn oversized_and_odd_large_messages_are_refused_with_their_codes() {
        let code = |s: &Status| {
            s.metadata()
                .get("truc-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // Over the contract's limit: refused on its prefix alone.
        let mut wire = vec![0];
        wire.extend_from_slice(&(8u32 << 20).to_be_bytes());
        wire.extend_from_slice(b"\x12");
        let err = recut(&wire, 3).await.expect_err("too large");
        assert_eq!(code(&err).as_deref(), Some("RPC_MESSAGE_TOO_LARGE"));
        // A large message that is not a lone chunk: a header field, or a chunk whose length
        // does not fill the message.
        for head in [&b"\x0a\xff\xff\x04"[..], &b"\x12\x80\x80\x04"[..]] {
            let mut wire = vec![0];
            wire.extend_from_slice(&(PIECE_BYTES as u32 + 100).to_be_bytes());
            wire.extend_from_slice(head);
            wire.resize(5 + PIECE_BYTES + 100, b' ');
            let err = recut(&wire, 1000).await.expect_err("odd");
            assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"), "{head:?}");
        }
        // A varint that never ends.
        let mut wire = vec![0];
        wire.extend_from_slice(&(PIECE_BYTES as u32 + 100).to_be_bytes());
        wire.push(CHUNK_TAG);
        wire.extend_from_slice(&[0xff; 12]);
        let err = recut(&wire, 2).await.expect_err("endless varint");
        assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"));
        // A stream that ends inside a message, wherever it is cut.
        let whole = framed(&chunk(pattern(PIECE_BYTES + 10)));
        for end in [3, 5, 6, 7, 8, 100, 5 + PIECE_BYTES, whole.len() - 1] {
            let err = recut(&whole[..end], 4096).await.expect_err("truncated");
            assert_eq!(
                code(&err).as_deref(),
                Some("RPC_BAD_MESSAGE"),
                "cut at {end}"
            );
        }
        // Cancelled, inside a message or between two: refused, not taken for a clean end.
        for end in [5 + PIECE_BYTES, whole.len()] {
            let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
                Ok(Frame::data(Bytes::copy_from_slice(&whole[..end]))),
                Err(Status::cancelled("reset by the client")),
            ];
            let inner = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
            let err = RecutBody::new(inner)
                .collect()
                .await
                .expect_err("cancelled");
            assert_eq!(
                code(&err).as_deref(),
                Some("RPC_BAD_MESSAGE"),
                "cut at {end}"
            );
        }
        // Trailers inside a message: tonic would end the stream there, quietly.
        let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::copy_from_slice(
                &whole[..5 + PIECE_BYTES],
            ))),
            Ok(Frame::trailers(Default::default())),
        ];
        let inner = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let err = RecutBody::new(inner).collect().await.expect_err("trailers");
        assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"));
        // A chunk length that overflows with its framing (found in review): refused.
        let mut wire = vec![0, 0, 0, 0, 12, CHUNK_TAG];
        wire.extend_from_slice(&[0xff; 9]);
        wire.extend_from_slice(&[0x01, 0x00]);
        let err = recut_in_pieces(&wire, 1, 1).await.expect_err("overflow");
        assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"));
        // With small pieces, a message shorter than a varint that is not a chunk: its
        // bytes must not be read past its end.
        let mut short = vec![0, 0, 0, 0, 9, 0x49];
        short.extend_from_slice(&[0xff; 8]);
        short.extend(framed(&chunk(b"next".to_vec())));
        let err = recut_in_pieces(&short, 64, 1).await.expect_err("short odd");
        assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"));
        // Compressed large messages cannot be re-cut.
        let mut wire = vec![1];
        wire.extend_from_slice(&(PIECE_BYTES as u32 + 100).to_be_bytes());
        wire.resize(5 + PIECE_BYTES + 100, 0);
        let err = recut(&wire, 4096).await.expect_err("compressed");
        assert_eq!(code(&err).as_deref(), Some("RPC_BAD_MESSAGE"));
    }

    #[tokio::test]
    async fn with_small_pieces_every_message_over_the_piece_is_cut_and_the_rest_passes() {
        let header = SubmitDocumentRequest {
            part: Some(Part::Header(SubmitHeader {
                idempotency_key: "key".into(),
                size: 700,
                sha256: String::new(),
            })),
        };
        let parts = [pattern(300), pattern(1), pattern(129), pattern(270)];
        let mut wire = framed(&header);
        for p in &parts {
            wire.extend(framed(&chunk(p.clone())));
        }
        for piece in [128, 300, 1000] {
            for frame in [1, 2, 5, 64, wire.len()] {
                let messages = recut_in_pieces(&wire, frame, piece).await.expect("recut");
                assert_eq!(messages[0], header);
                let mut bytes = Vec::new();
                for m in &messages[1..] {
                    let Some(Part::Chunk(c)) = &m.part else {
                        panic!("not a chunk")
                    };
                    assert!(c.len() <= piece);
                    bytes.extend_from_slice(c);
                }
                assert_eq!(bytes, parts.concat(), "piece {piece}, frame {frame}");
                let expected: usize = parts.iter().map(|p| p.len().div_ceil(piece)).sum();
                assert_eq!(messages.len(), 1 + expected, "piece {piece}, frame {frame}");
            }
        }
        // A header over the piece size is refused: only chunks are cut.
        let err = recut_in_pieces(&wire, 16, 9)
            .await
            .expect_err("large header");
        assert!(
            err.message().contains("must be a chunk"),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn messages_complete_before_a_fault_go_out_before_the_refusal() {
        let header = SubmitDocumentRequest {
            part: Some(Part::Header(SubmitHeader::default())),
        };
        let good = framed(&header);
        let mut wire = good.clone();
        wire.extend_from_slice(&[0, 0x00, 0x80, 0x00, 0x00]); // 8 MiB: over the limit
        let frames: Vec<Result<Frame<Bytes>, Status>> = vec![Ok(Frame::data(wire.into()))];
        let inner = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let mut body = RecutBody::new(inner);
        let mut before = Vec::new();
        let status = loop {
            match body.frame().await {
                Some(Ok(f)) => before.extend_from_slice(&f.into_data().expect("data")),
                Some(Err(status)) => break status,
                None => panic!("ended without the refusal"),
            }
        };
        assert_eq!(before, good, "the header went first");
        assert_eq!(
            status
                .metadata()
                .get("truc-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("RPC_MESSAGE_TOO_LARGE")
        );
        assert!(body.frame().await.is_none(), "and then the end");
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[test]
    fn varints_decode_and_pieces_are_framed_as_protobuf_chunks() {
        assert_eq!(decode_varint(&[0x96, 0x01]), Some(150));
        assert_eq!(
            decode_varint(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()),
            Some(u64::MAX)
        );
        assert_eq!(
            decode_varint(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()),
            None
        );
        for len in [1, 127, 128, 16_383, 16_384, PIECE_BYTES] {
            let prefix = piece_prefix(len);
            let mut message = prefix[5..].to_vec();
            message.extend(std::iter::repeat_n(b'x', len));
            assert_eq!(
                u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize,
                message.len()
            );
            let decoded = SubmitDocumentRequest::decode(&message[..]).expect("decodes");
            assert_eq!(decoded, chunk(vec![b'x'; len]));
        }
    }
}
