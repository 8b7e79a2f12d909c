//! What the relay knows of a package after reading it: the metadata, never the bytes.

use serde::{Deserialize, Serialize};

use crate::org_code::OrgCode;
use crate::values::{BusinessDocType, CalendarDate, DocumentId, Sha256Digest, StatusCode};

/// Whether a package carries a document or a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    /// A document package (`MessageHeader`, attachments).
    Document,
    /// A status package (`Status`: arrived, accepted, ... completed).
    Status,
}

impl PackageKind {
    /// `document` or `status`, as on the national axis's `messagetype`.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Document => "document",
            PackageKind::Status => "status",
        }
    }
}

/// A sending or receiving body (`From`, `To`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// The unit code: the only part routing uses.
    pub organ_id: OrgCode,
    /// `OrganizationInCharge`.
    #[serde(default)]
    pub organization_in_charge: String,
    /// `OrganName`.
    #[serde(default)]
    pub organ_name: String,
    /// `OrganAdd`.
    #[serde(default)]
    pub organ_add: String,
    /// `Email`.
    #[serde(default)]
    pub email: String,
    /// `Telephone`.
    #[serde(default)]
    pub telephone: String,
    /// `Fax`.
    #[serde(default)]
    pub fax: String,
    /// `Website`.
    #[serde(default)]
    pub website: String,
}

impl Organization {
    /// A body known only by its code (the other fields empty).
    pub fn new(organ_id: OrgCode) -> Self {
        Organization {
            organ_id,
            organization_in_charge: String::new(),
            organ_name: String::new(),
            organ_add: String::new(),
            email: String::new(),
            telephone: String::new(),
            fax: String::new(),
            website: String::new(),
        }
    }

    /// A body with a code and a name.
    pub fn named(organ_id: OrgCode, name: &str) -> Self {
        Organization {
            organ_name: name.to_owned(),
            organization_in_charge: name.to_owned(),
            ..Organization::new(organ_id)
        }
    }
}

/// The document this one answers or affects (`ResponseFor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFor {
    /// Issuer of the answered document, as written (not validated: it names a foreign body).
    pub organ_id: String,
    /// Its number/notation.
    pub code: String,
    /// Its promulgation date, as written.
    pub promulgation_date: String,
    /// Its DocumentId, the key the relay finds it by.
    pub document_id: Option<DocumentId>,
}

/// One system the package passed through (`TraceHeader`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// The system's unit code, as written.
    pub organ_id: String,
    /// `yyyy/MM/dd HH:mm:ss`, as written.
    pub timestamp: String,
}

/// A receiver added or removed by a revocation or update (`BussinessDocumentInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessReceiver {
    /// The receiver's unit code, as written.
    pub organ_id: String,
    /// 0 removed, 1 added, as written.
    pub receiver_type: String,
}

/// A document replaced by this one (`ReplacementInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The replaced DocumentId.
    pub document_id: Option<DocumentId>,
    /// Units concerned, as written.
    pub organ_ids: Vec<String>,
}

/// Contact of the clerk in charge (`StaffInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffInfo {
    /// `Department`.
    pub department: String,
    /// `Staff`.
    pub staff: String,
    /// `Mobile`.
    pub mobile: String,
    /// `Email`.
    pub email: String,
}

/// The business part of the trace (`Bussiness`): new, revoke, update or replace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Business {
    /// `BussinessDocType`.
    pub doc_type: BusinessDocType,
    /// `BussinessDocReason`.
    pub reason: String,
    /// The affected document, for revocations, updates and replacements.
    pub document_id: Option<DocumentId>,
    /// `Paper`: whether a paper copy follows, as written.
    pub paper: String,
    /// Receivers added or removed.
    pub receivers: Vec<BusinessReceiver>,
    /// `StaffInfo`.
    pub staff: StaffInfo,
    /// Documents replaced.
    pub replacements: Vec<Replacement>,
}

/// An attachment as carried in `AttachmentEncoded`, measured while decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `ContentId` (`cid:...`).
    pub content_id: String,
    /// `AttachmentName`.
    pub name: String,
    /// `Description`.
    pub description: String,
    /// `ContentType`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// SHA-256 of the decoded bytes.
    pub sha256: Option<Sha256Digest>,
}

/// An entry of `edXMLManifest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestReference {
    /// `ContentId`.
    pub content_id: String,
    /// `ContentType`.
    pub content_type: String,
    /// `Description`.
    pub description: String,
    /// `AttachmentName`.
    pub attachment_name: String,
}

/// The header of a document package (`MessageHeader` and the business trace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentHeader {
    /// The sender.
    pub from: Organization,
    /// Every recipient, in order.
    pub to: Vec<Organization>,
    /// `Code/CodeNumber` (số).
    pub code_number: String,
    /// `Code/CodeNotation` (ký hiệu).
    pub code_notation: String,
    /// `PromulgationInfo/Place`.
    pub promulgation_place: String,
    /// `PromulgationInfo/PromulgationDate`, when it is a date.
    pub promulgation_date: Option<CalendarDate>,
    /// `DocumentType/Type`, as written.
    pub document_type: String,
    /// `DocumentType/TypeDetail`, as written.
    pub document_type_detail: String,
    /// `DocumentType/TypeName` (e.g. "Công văn").
    pub document_type_name: String,
    /// `Subject` (trích yếu).
    pub subject: String,
    /// `Content`.
    pub content: String,
    /// `SignerInfo/Competence`.
    pub signer_competence: String,
    /// `SignerInfo/Position`.
    pub signer_position: String,
    /// `SignerInfo/FullName`.
    pub signer_full_name: String,
    /// `DueDate`: the processing deadline, when it is a date.
    pub due_date: Option<CalendarDate>,
    /// `ToPlaces/Place`.
    pub to_places: Vec<String>,
    /// `OtherInfo/Priority`: 0 normal ... 4 "hỏa tốc hẹn giờ".
    pub priority: Option<u8>,
    /// `OtherInfo/SphereOfPromulgation`.
    pub sphere_of_promulgation: String,
    /// `SteeringType`, kept as given (sources disagree on its values).
    pub steering_type: String,
    /// `ResponseFor` entries.
    pub response_for: Vec<ResponseFor>,
    /// `DocumentId`.
    pub document_id: Option<DocumentId>,
    /// `TraceHeaderList/Bussiness`.
    pub business: Business,
    /// `edXMLManifest/Reference` entries.
    pub manifest: Vec<ManifestReference>,
    /// Attachments, measured.
    pub attachments: Vec<Attachment>,
}

impl DocumentHeader {
    /// The document a revocation, update or replacement acts on: `Bussiness/DocumentId`
    /// when given, else the package's own `DocumentId` (producers that omit the former
    /// repeat the original id in the latter).
    pub fn affected_document_id(&self) -> Option<&DocumentId> {
        self.business
            .document_id
            .as_ref()
            .or(self.document_id.as_ref())
    }
}

/// The header of a status package (`Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusHeader {
    /// The document the status answers.
    pub response_for: ResponseFor,
    /// Who reports the status.
    pub from: Organization,
    /// `StatusCode`.
    pub status_code: StatusCode,
    /// `Description`.
    pub description: String,
    /// `Timestamp`, as written.
    pub timestamp: String,
    /// `StaffInfo`.
    pub staff: StaffInfo,
}

/// The kind-specific part of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PackageBody {
    /// A document.
    Document(Box<DocumentHeader>),
    /// A status.
    Status(Box<StatusHeader>),
}

/// The signature element, if present. The relay does not verify signatures (recipients
/// do); it records their presence because a package without one is worth flagging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    /// `KeyInfo/X509Data/X509SubjectName`, when given.
    pub signer_subject: Option<String>,
}

/// Everything the relay reads from a package: routing, tracking and integrity facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageMeta {
    /// Size of the package in bytes.
    pub size: u64,
    /// SHA-256 of the package bytes exactly as received.
    pub sha256: Sha256Digest,
    /// Header of a document or of a status.
    pub body: PackageBody,
    /// `TraceHeaderList/TraceHeader` entries.
    pub trace: Vec<TraceHeader>,
    /// The signature, if the package has one.
    pub signature: Option<SignatureInfo>,
    /// Oddities that did not make the package invalid (unknown status code, unreadable
    /// date...), for operators.
    pub warnings: Vec<String>,
}

impl PackageMeta {
    /// Document or status.
    pub fn kind(&self) -> PackageKind {
        match self.body {
            PackageBody::Document(_) => PackageKind::Document,
            PackageBody::Status(_) => PackageKind::Status,
        }
    }

    /// The sender's unit code.
    pub fn from(&self) -> &OrgCode {
        match &self.body {
            PackageBody::Document(d) => &d.from.organ_id,
            PackageBody::Status(s) => &s.from.organ_id,
        }
    }

    /// The document header, for document packages.
    pub fn document(&self) -> Option<&DocumentHeader> {
        match &self.body {
            PackageBody::Document(d) => Some(d),
            PackageBody::Status(_) => None,
        }
    }

    /// The status header, for status packages.
    pub fn status(&self) -> Option<&StatusHeader> {
        match &self.body {
            PackageBody::Status(s) => Some(s),
            PackageBody::Document(_) => None,
        }
    }

    /// The recipients named in the package (none for a status: it goes back to the sender
    /// of the document it answers).
    pub fn recipients(&self) -> impl Iterator<Item = &OrgCode> {
        self.document()
            .into_iter()
            .flat_map(|d| d.to.iter().map(|o| &o.organ_id))
    }

    /// The package's own DocumentId (documents), or that of the answered document (statuses).
    pub fn document_id(&self) -> Option<&DocumentId> {
        match &self.body {
            PackageBody::Document(d) => d.document_id.as_ref(),
            PackageBody::Status(s) => s.response_for.document_id.as_ref(),
        }
    }

    /// The business type (always `New` for status packages).
    pub fn business_doc_type(&self) -> BusinessDocType {
        self.document()
            .map(|d| d.business.doc_type)
            .unwrap_or_default()
    }

    /// Total decoded size of all attachments.
    pub fn attachment_bytes(&self) -> u64 {
        self.document()
            .map(|d| d.attachments.iter().map(|a| a.size).sum())
            .unwrap_or(0)
    }
}
