//! The one error type of the crate, with stable codes.

use thiserror::Error;

/// Why a package was refused.
///
/// Every variant has a stable machine-readable [`code`](EdxmlError::code) (documented in
/// `docs/errors.md`) that adapters and operators can match on, and a message that names the
/// element or byte offset at fault so the producing system can be fixed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EdxmlError {
    /// The package has no bytes, or only whitespace.
    #[error("the package is empty")]
    Empty,

    /// The bytes are not well-formed XML (also: not XML at all, or truncated).
    #[error("not well-formed XML at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the package where the problem was seen.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// A DOCTYPE or other DTD declaration: refused, since DTDs enable entity bombs and XXE.
    #[error("DOCTYPE and DTD declarations are forbidden (found at byte {offset})")]
    DtdForbidden {
        /// Byte offset of the declaration.
        offset: u64,
    },

    /// An entity reference other than the five predefined ones or a character reference.
    #[error("entity reference &{name}; at byte {offset} is forbidden: only &amp; &lt; &gt; &quot; &apos; and character references are allowed")]
    EntityForbidden {
        /// The entity name as written.
        name: String,
        /// Byte offset of the reference.
        offset: u64,
    },

    /// The XML declaration names an encoding other than UTF-8, or a UTF-16 byte order mark.
    #[error("unsupported encoding {encoding:?}: edXML packages must be UTF-8")]
    Encoding {
        /// The encoding found.
        encoding: String,
    },

    /// Text of an element the relay reads is not valid UTF-8.
    #[error("element {element}: text is not valid UTF-8")]
    InvalidUtf8 {
        /// Path of the element.
        element: String,
    },

    /// A known edXML element is in the wrong XML namespace.
    #[error("element {element} is in namespace {found:?}, expected \"http://www.mic.gov.vn/TBT/QCVN_102_2016\"")]
    BadNamespace {
        /// The element's local name or path.
        element: String,
        /// The namespace it was found in (empty when none).
        found: String,
    },

    /// The root element is not `edXML`.
    #[error("root element is <{root}>, expected <edXML>")]
    NotEdxml {
        /// Local name of the root found.
        root: String,
    },

    /// Neither a `MessageHeader` (document) nor a `Status` (status package), or both.
    #[error("{0}")]
    NoHeader(&'static str),

    /// A required element is missing or empty.
    #[error("required element {element} is missing or empty")]
    MissingField {
        /// Path of the missing element.
        element: &'static str,
    },

    /// A document package without any `To` recipient.
    #[error("the document has no recipient: MessageHeader/To is missing")]
    NoRecipient,

    /// An `OrganId` that is not a unit code.
    #[error("element {element}: {value:?} is not a unit code ({reason})")]
    BadOrganId {
        /// Path of the element.
        element: String,
        /// The value found.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A field the relay routes or tracks on has a value it cannot use.
    #[error("element {element}: {value:?} is invalid ({reason})")]
    BadField {
        /// Path of the element.
        element: String,
        /// The value found.
        value: String,
        /// What was expected.
        reason: &'static str,
    },

    /// An attachment's `ContentTransferEncoded` is not valid base64.
    #[error(
        "attachment #{index} ({name:?}): ContentTransferEncoded is not valid base64: {reason}"
    )]
    BadBase64 {
        /// 1-based position of the attachment.
        index: usize,
        /// The attachment's name, when given before its content.
        name: String,
        /// What was wrong.
        reason: String,
    },

    /// The package exceeds the configured size limit.
    #[error("the package exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },

    /// Elements nest deeper than the configured limit.
    #[error("elements nest deeper than {limit} levels (at byte {offset})")]
    TooDeep {
        /// The depth limit.
        limit: usize,
        /// Byte offset of the element that went too deep.
        offset: u64,
    },

    /// An element has more attributes than the configured limit.
    #[error("element <{element}> has more than {limit} attributes")]
    TooManyAttributes {
        /// The element's qualified name.
        element: String,
        /// The limit.
        limit: usize,
    },

    /// More `To` recipients than the configured limit.
    #[error("more than {limit} recipients (MessageHeader/To)")]
    TooManyRecipients {
        /// The limit.
        limit: usize,
    },

    /// More attachments than the configured limit.
    #[error("more than {limit} attachments (AttachmentEncoded/Attachment)")]
    TooManyAttachments {
        /// The limit.
        limit: usize,
    },

    /// One attachment decodes to more bytes than the configured limit.
    #[error("attachment #{index} ({name:?}) decodes to more than {limit} bytes")]
    AttachmentTooLarge {
        /// 1-based position of the attachment.
        index: usize,
        /// The attachment's name, when given before its content.
        name: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// The text of an element the relay reads, or one tag, is longer than the configured limit.
    #[error("{element} is longer than {limit} bytes")]
    TooLong {
        /// Path of the element (or "a tag" for markup).
        element: String,
        /// The limit in bytes.
        limit: usize,
    },
}

impl EdxmlError {
    /// The stable error code, for adapters, logs, metrics and `docs/errors.md`.
    pub fn code(&self) -> &'static str {
        match self {
            EdxmlError::Empty => "EDXML_EMPTY",
            EdxmlError::Malformed { .. } => "EDXML_MALFORMED",
            EdxmlError::DtdForbidden { .. } => "EDXML_DTD_FORBIDDEN",
            EdxmlError::EntityForbidden { .. } => "EDXML_ENTITY_FORBIDDEN",
            EdxmlError::Encoding { .. } => "EDXML_BAD_ENCODING",
            EdxmlError::InvalidUtf8 { .. } => "EDXML_INVALID_UTF8",
            EdxmlError::BadNamespace { .. } => "EDXML_BAD_NAMESPACE",
            EdxmlError::NotEdxml { .. } => "EDXML_NOT_EDXML",
            EdxmlError::NoHeader(_) => "EDXML_NO_HEADER",
            EdxmlError::MissingField { .. } => "EDXML_MISSING_FIELD",
            EdxmlError::NoRecipient => "EDXML_NO_RECIPIENT",
            EdxmlError::BadOrganId { .. } => "EDXML_BAD_ORGAN_ID",
            EdxmlError::BadField { .. } => "EDXML_BAD_FIELD",
            EdxmlError::BadBase64 { .. } => "EDXML_BAD_BASE64",
            EdxmlError::TooLarge { .. } => "EDXML_TOO_LARGE",
            EdxmlError::TooDeep { .. } => "EDXML_TOO_DEEP",
            EdxmlError::TooManyAttributes { .. } => "EDXML_TOO_MANY_ATTRIBUTES",
            EdxmlError::TooManyRecipients { .. } => "EDXML_TOO_MANY_RECIPIENTS",
            EdxmlError::TooManyAttachments { .. } => "EDXML_TOO_MANY_ATTACHMENTS",
            EdxmlError::AttachmentTooLarge { .. } => "EDXML_ATTACHMENT_TOO_LARGE",
            EdxmlError::TooLong { .. } => "EDXML_TOO_LONG",
        }
    }

    /// Every code this crate can return, for documentation tests and clients.
    pub const ALL_CODES: &'static [&'static str] = &[
        "EDXML_EMPTY",
        "EDXML_MALFORMED",
        "EDXML_DTD_FORBIDDEN",
        "EDXML_ENTITY_FORBIDDEN",
        "EDXML_BAD_ENCODING",
        "EDXML_INVALID_UTF8",
        "EDXML_BAD_NAMESPACE",
        "EDXML_NOT_EDXML",
        "EDXML_NO_HEADER",
        "EDXML_MISSING_FIELD",
        "EDXML_NO_RECIPIENT",
        "EDXML_BAD_ORGAN_ID",
        "EDXML_BAD_FIELD",
        "EDXML_BAD_BASE64",
        "EDXML_TOO_LARGE",
        "EDXML_TOO_DEEP",
        "EDXML_TOO_MANY_ATTRIBUTES",
        "EDXML_TOO_MANY_RECIPIENTS",
        "EDXML_TOO_MANY_ATTACHMENTS",
        "EDXML_ATTACHMENT_TOO_LARGE",
        "EDXML_TOO_LONG",
    ];

    pub(crate) fn malformed(offset: u64, reason: impl Into<String>) -> Self {
        EdxmlError::Malformed {
            offset,
            reason: reason.into(),
        }
    }
}
