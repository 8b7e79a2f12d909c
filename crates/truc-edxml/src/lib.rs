#![forbid(unsafe_code)]
//! Reading edXML packages (QCVN 102:2016) as the ministries' systems and the national axis
//! produce them.
//!
//! The relay never rewrites a package: an enveloped signature covers every byte, so the
//! bytes received are the bytes delivered. What this crate gives the relay is the metadata
//! it routes and tracks on ([`PackageMeta`]), read in one streaming pass
//! ([`PackageReader`]) that refuses hostile input (DTDs, entity bombs, deep nesting,
//! oversized fields) with stable error codes ([`EdxmlError::code`]).
//!
//! ```
//! use truc_edxml::{parse, CalendarDate, DocumentBuilder, OrgCode};
//!
//! let from = OrgCode::parse("000.00.05.G04").unwrap();
//! let to = OrgCode::parse("000.03.07.G04").unwrap();
//! let date = CalendarDate::new(2026, 11, 20).unwrap();
//! let bytes = DocumentBuilder::new(from.clone(), vec![to], date, "12", "TCĐBVN-VP")
//!     .subject("Về việc thử nghiệm")
//!     .build();
//! let meta = parse(&bytes).unwrap();
//! assert_eq!(meta.from(), &from);
//! assert_eq!(meta.document_id().unwrap().as_str(), "000.00.05.G04,2026/11/20,12/TCĐBVN-VP");
//! ```

mod base64_stream;
mod builder;
mod error;
mod limits;
mod meta;
mod org_code;
mod reader;
mod tokenizer;
mod values;

pub use builder::{content_type_for, AttachmentSource, DocumentBuilder, Layout, StatusBuilder};
pub use error::EdxmlError;
pub use limits::Limits;
pub use meta::{
    Attachment, Business, BusinessReceiver, DocumentHeader, ManifestReference, Organization,
    PackageBody, PackageKind, PackageMeta, Replacement, ResponseFor, SignatureInfo, StaffInfo,
    StatusHeader, TraceHeader,
};
pub use org_code::{OrgCode, OrgCodeError, OrgLevel};
pub use reader::{parse, parse_reader, parse_with, PackageReader, ReadError, EDXML_NS, XMLDSIG_NS};
pub use values::{
    BusinessDocType, CalendarDate, DocumentId, DocumentIdShape, KnownStatus, Sha256Digest,
    StatusCode, VietnamTime,
};

/// A package: its bytes, untouched, and what the relay read from them.
///
/// Keeping both together is what lets the relay forward byte for byte while routing on
/// typed metadata.
#[derive(Debug, Clone)]
pub struct Package {
    /// The package exactly as received.
    pub bytes: bytes::Bytes,
    /// Its metadata.
    pub meta: PackageMeta,
}

impl Package {
    /// Reads a package held in memory.
    pub fn parse(bytes: bytes::Bytes, limits: &Limits) -> Result<Self, EdxmlError> {
        let meta = parse_with(&bytes, limits)?;
        Ok(Package { bytes, meta })
    }
}
