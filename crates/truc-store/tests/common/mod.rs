//! Builders shared by the store's tests.
#![allow(dead_code)]

use std::time::Duration;

use truc_edxml::{BusinessDocType, DocumentId, OrgCode, PackageKind, Sha256Digest, StatusCode};
use truc_store::{
    Destination, NewMessage, PayloadInput, RetryPolicy, Route, Source, StoreConfig, Summary,
    Timestamp,
};

pub fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).expect("code")
}

pub fn inbox(s: &str) -> Destination {
    Destination::Inbox(code(s))
}

pub const T0: Timestamp = Timestamp(1_790_000_000_000);

/// A document from `sender` to each `(recipient, destination)`.
pub fn document(
    sender: &str,
    routes: &[(&str, Destination)],
    number: u32,
    bytes: &[u8],
) -> NewMessage {
    NewMessage {
        kind: PackageKind::Document,
        sender: code(sender),
        document_id: Some(DocumentId::new(&format!(
            "{sender},2026/11/21,{number}/TEST"
        ))),
        business_doc_type: BusinessDocType::New,
        sha256: Sha256Digest::of(bytes),
        source: Source::Adapter {
            unit: code(sender),
            certificate: None,
        },
        received_at: T0,
        routes: routes
            .iter()
            .map(|(r, d)| Route {
                recipient: code(r),
                destination: d.clone(),
                held: false,
            })
            .collect(),
        summary: Summary {
            subject: format!("document {number}"),
            ..Summary::default()
        },
        idempotency_key: None,
        payload: PayloadInput::Bytes(bytes::Bytes::copy_from_slice(bytes)),
    }
}

/// A status `code` from `sender` about `document`, routed back to `to`.
pub fn status(
    sender: &str,
    document: &DocumentId,
    status: &str,
    to: &str,
    at: Timestamp,
) -> NewMessage {
    let bytes = format!("status {status} of {document} from {sender}").into_bytes();
    NewMessage {
        kind: PackageKind::Status,
        sender: code(sender),
        document_id: Some(document.clone()),
        business_doc_type: BusinessDocType::New,
        sha256: Sha256Digest::of(&bytes),
        source: Source::Adapter {
            unit: code(sender),
            certificate: None,
        },
        received_at: at,
        routes: vec![Route {
            recipient: code(to),
            destination: inbox(to),
            held: false,
        }],
        summary: Summary {
            status_code: Some(StatusCode::new(status)),
            answers: Some(document.clone()),
            ..Summary::default()
        },
        idempotency_key: None,
        payload: PayloadInput::Bytes(bytes.into()),
    }
}

/// A config with fast retries and a short age, for tests.
pub fn fast_config() -> StoreConfig {
    StoreConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_age: Duration::from_secs(10),
        },
        inline_threshold: 1024,
        ..StoreConfig::default()
    }
}
