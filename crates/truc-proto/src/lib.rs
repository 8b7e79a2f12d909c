#![forbid(unsafe_code)]
//! The `truc.v1` gRPC contract between the relay and unit adapters, generated from
//! `proto/truc/v1/relay.proto` at build time. The `.proto` file is the documentation adapter
//! developers read; this crate only makes it usable from Rust.

/// Messages and services of package `truc.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("truc.v1");
}

/// The encoded file descriptor set of `truc.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/truc_v1_descriptor.bin"));

/// Largest `chunk` of a `SubmitDocument` stream, in bytes (1 MiB), as the contract states.
/// Adapters send packages in chunks of at most this size.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest request message the relay accepts, in bytes: one chunk and its framing, or a
/// status package (`SubmitStatus`). A call can make the relay buffer up to one message
/// while it decodes, so this bounds that (submissions' chunks are re-cut smaller first).
pub const MAX_REQUEST_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 64 * 1024;

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn messages_round_trip_and_the_descriptor_names_the_service() {
        let receipt = v1::Receipt {
            message_id: "01JDXYZ".into(),
            document_id: "000.00.05.G04,2026/11/21,1/X".into(),
            kind: "document".into(),
            routes: vec![v1::Route {
                recipient: "000.03.07.G04".into(),
                kind: v1::RouteKind::ViaParent as i32,
                via: "000.00.07.G04".into(),
            }],
            duplicate: false,
            sha256: "00".repeat(32),
            size: 4594,
            accepted_at: "2026-11-21T10:00:00.000Z".into(),
        };
        let bytes = prost::Message::encode_to_vec(&receipt);
        let back: v1::Receipt = prost::Message::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back, receipt);
        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        assert!(
            text.contains("truc.v1") && text.contains("SubmitDocument") && text.contains("Inbox")
        );
    }
}
