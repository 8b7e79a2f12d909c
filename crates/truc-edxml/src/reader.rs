//! Reading a package: the public streaming reader and the extraction of metadata.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::base64_stream::{Base64Problem, Base64Stream};
use crate::error::EdxmlError;
use crate::limits::Limits;
use crate::meta::{
    Attachment, Business, BusinessReceiver, DocumentHeader, ManifestReference, Organization,
    PackageBody, PackageMeta, ResponseFor, SignatureInfo, StaffInfo, StatusHeader, TraceHeader,
};
use crate::org_code::OrgCode;
use crate::tokenizer::{Namespace, Sink, Tokenizer};
use crate::values::{BusinessDocType, CalendarDate, DocumentId, Sha256Digest, StatusCode};

/// The edXML namespace.
pub const EDXML_NS: &str = "http://www.mic.gov.vn/TBT/QCVN_102_2016";
/// The W3C XML-DSig namespace.
pub const XMLDSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Reads a package given in pieces, as it arrives from the network or a file.
///
/// The relay feeds each received chunk while writing it to disk, so a package of hundreds
/// of megabytes is checked without ever being held in memory; [`finish`](Self::finish)
/// returns the metadata and the digest of exactly the bytes fed.
pub struct PackageReader {
    tokenizer: Tokenizer,
    extractor: Extractor,
    hasher: Option<Sha256>,
    size: u64,
    max_size: u64,
    failed: Option<EdxmlError>,
}

impl PackageReader {
    /// A reader with the given limits.
    pub fn new(limits: Limits) -> Self {
        PackageReader {
            tokenizer: Tokenizer::new(&limits),
            max_size: limits.max_package_bytes,
            extractor: Extractor::new(limits),
            hasher: Some(Sha256::new()),
            size: 0,
            failed: None,
        }
    }

    /// The same reader, but leaving each attachment's `sha256` unset: the attachments are
    /// still decoded, sized and checked, only not hashed. For a relay, which forwards the
    /// package whole and keeps the digest of the package itself, hashing every attachment
    /// again costs a third of the reading time of a large package for nothing.
    pub fn without_attachment_digests(mut self) -> Self {
        self.extractor.attachment_digests = false;
        self
    }

    /// Feeds the next chunk. After an error, every later call returns the same error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), EdxmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(chunk);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), EdxmlError> {
        self.size += chunk.len() as u64;
        if self.size > self.max_size {
            return Err(EdxmlError::TooLarge {
                limit: self.max_size,
            });
        }
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        self.tokenizer.feed(chunk, &mut self.extractor)
    }

    /// Ends the package and returns its metadata.
    pub fn finish(mut self) -> Result<PackageMeta, EdxmlError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.tokenizer.finish(&mut self.extractor)?;
        let digest = match self.hasher {
            Some(h) => Sha256Digest(h.finalize().into()),
            None => Sha256Digest([0; 32]),
        };
        self.extractor.finish(self.size, digest)
    }

    /// Like `finish`, with the package digest computed elsewhere (see [`parse_with`]).
    fn finish_with_digest(mut self, digest: Sha256Digest) -> Result<PackageMeta, EdxmlError> {
        self.hasher = None;
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.tokenizer.finish(&mut self.extractor)?;
        self.extractor.finish(self.size, digest)
    }
}

/// Parses a whole package held in memory, with default limits.
pub fn parse(bytes: &[u8]) -> Result<PackageMeta, EdxmlError> {
    parse_with(bytes, &Limits::default())
}

/// Packages at least this large are hashed on a second thread while being parsed.
const PARALLEL_HASH_THRESHOLD: usize = 4 * 1024 * 1024;

/// Parses a whole package held in memory.
///
/// Large packages are hashed on a second thread while the first parses, which halves the
/// latency of checking a scanned document of tens of megabytes.
pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<PackageMeta, EdxmlError> {
    if bytes.len() as u64 > limits.max_package_bytes {
        return Err(EdxmlError::TooLarge {
            limit: limits.max_package_bytes,
        });
    }
    let mut reader = PackageReader::new(limits.clone());
    if bytes.len() < PARALLEL_HASH_THRESHOLD {
        reader.feed(bytes)?;
        return reader.finish();
    }
    reader.hasher = None;
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| Sha256Digest::of(bytes));
        let parsed = reader.feed(bytes);
        let digest = hashing.join().unwrap_or_else(|_| Sha256Digest::of(bytes));
        parsed?;
        reader.finish_with_digest(digest)
    })
}

/// Why reading a package from an `io::Read` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the bytes failed.
    #[error("reading the package: {0}")]
    Io(#[from] std::io::Error),
    /// The package is invalid.
    #[error(transparent)]
    Invalid(#[from] EdxmlError),
}

/// Parses a package from a reader (a file, a socket), 64 KiB at a time.
pub fn parse_reader<R: Read>(mut input: R, limits: &Limits) -> Result<PackageMeta, ReadError> {
    let mut reader = PackageReader::new(limits.clone());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        reader.feed(&buf[..n])?;
    }
    Ok(reader.finish()?)
}

/// Where a known element's text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Org(OrgSlot, OrgField),
    CodeNumber,
    CodeNotation,
    PromulgationPlace,
    PromulgationDate,
    DocType,
    DocTypeDetail,
    DocTypeName,
    Subject,
    Content,
    SignerCompetence,
    SignerPosition,
    SignerFullName,
    DueDate,
    ToPlace,
    Priority,
    Sphere,
    SteeringType,
    DocumentId,
    Response(ResponseSlot, ResponseField),
    TraceOrganId,
    TraceTimestamp,
    BusinessDocType,
    BusinessReason,
    BusinessDocumentId,
    BusinessPaper,
    ReceiverOrganId,
    ReceiverType,
    Staff(StaffSlot, StaffField),
    ReplacementDocumentId,
    ReplacementOrganId,
    Manifest(ManifestField),
    Attachment(AttachmentField),
    StatusCode,
    StatusDescription,
    StatusTimestamp,
    SignerSubject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgSlot {
    DocFrom,
    DocTo,
    StatusFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgField {
    OrganId,
    InCharge,
    Name,
    Address,
    Email,
    Telephone,
    Fax,
    Website,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseSlot {
    Document,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseField {
    OrganId,
    Code,
    PromulgationDate,
    DocumentId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaffSlot {
    Business,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaffField {
    Department,
    Staff,
    Mobile,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestField {
    ContentId,
    ContentType,
    Description,
    AttachmentName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttachmentField {
    ContentId,
    Name,
    Description,
    ContentType,
}

/// The parts of a package whose elements carry fields. They do not nest, so the reader
/// finds the one it is in when entering it, and inside matches paths relative to it:
/// short strings instead of long ones for every element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    MessageHeader,
    Status,
    TraceList,
    ManifestReference,
    Attachment,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::MessageHeader,
        Section::Status,
        Section::TraceList,
        Section::ManifestReference,
        Section::Attachment,
    ];

    /// The path of the section's element (local names below the root).
    fn root(self) -> &'static str {
        match self {
            Section::MessageHeader => "edXMLEnvelope/edXMLHeader/MessageHeader",
            Section::Status => "edXMLEnvelope/edXMLHeader/Status",
            Section::TraceList => "edXMLEnvelope/edXMLHeader/TraceHeaderList",
            Section::ManifestReference => "edXMLEnvelope/edXMLBody/edXMLManifest/Reference",
            Section::Attachment => "AttachmentEncoded/Attachment",
        }
    }

    /// The section whose element is at `path`.
    fn rooted_at(path: &str) -> Option<Section> {
        Self::ALL.into_iter().find(|s| s.root() == path)
    }
}

fn org_field(name: &str) -> Option<OrgField> {
    Some(match name {
        "OrganId" => OrgField::OrganId,
        "OrganizationInCharge" => OrgField::InCharge,
        "OrganName" => OrgField::Name,
        "OrganAdd" => OrgField::Address,
        "Email" => OrgField::Email,
        "Telephone" => OrgField::Telephone,
        "Fax" => OrgField::Fax,
        "Website" => OrgField::Website,
        _ => return None,
    })
}

fn response_field(name: &str) -> Option<ResponseField> {
    Some(match name {
        "OrganId" => ResponseField::OrganId,
        "Code" => ResponseField::Code,
        "PromulgationDate" => ResponseField::PromulgationDate,
        "DocumentId" => ResponseField::DocumentId,
        _ => return None,
    })
}

fn staff_field(name: &str) -> Option<StaffField> {
    Some(match name {
        "Department" => StaffField::Department,
        "Staff" => StaffField::Staff,
        "Mobile" => StaffField::Mobile,
        "Email" => StaffField::Email,
        _ => return None,
    })
}

/// The field whose text an element carries, by its section and its path below the
/// section's element.
fn field_at(section: Section, rest: &str) -> Option<Field> {
    Some(match section {
        Section::MessageHeader => match rest {
            "Code/CodeNumber" => Field::CodeNumber,
            "Code/CodeNotation" => Field::CodeNotation,
            "PromulgationInfo/Place" => Field::PromulgationPlace,
            "PromulgationInfo/PromulgationDate" => Field::PromulgationDate,
            "DocumentType/Type" => Field::DocType,
            "DocumentType/TypeDetail" => Field::DocTypeDetail,
            "DocumentType/TypeName" => Field::DocTypeName,
            "Subject" => Field::Subject,
            "Content" => Field::Content,
            "SignerInfo/Competence" => Field::SignerCompetence,
            "SignerInfo/Position" => Field::SignerPosition,
            "SignerInfo/FullName" => Field::SignerFullName,
            "DueDate" => Field::DueDate,
            "ToPlaces/Place" => Field::ToPlace,
            "OtherInfo/Priority" => Field::Priority,
            "OtherInfo/SphereOfPromulgation" => Field::Sphere,
            "SteeringType" => Field::SteeringType,
            "DocumentId" => Field::DocumentId,
            _ => {
                if let Some(f) = rest.strip_prefix("From/") {
                    Field::Org(OrgSlot::DocFrom, org_field(f)?)
                } else if let Some(f) = rest.strip_prefix("To/") {
                    Field::Org(OrgSlot::DocTo, org_field(f)?)
                } else if let Some(f) = rest.strip_prefix("ResponseFor/") {
                    Field::Response(ResponseSlot::Document, response_field(f)?)
                } else {
                    return None;
                }
            }
        },
        Section::Status => match rest {
            "StatusCode" => Field::StatusCode,
            "Description" => Field::StatusDescription,
            "Timestamp" => Field::StatusTimestamp,
            _ => {
                if let Some(f) = rest.strip_prefix("From/") {
                    Field::Org(OrgSlot::StatusFrom, org_field(f)?)
                } else if let Some(f) = rest.strip_prefix("ResponseFor/") {
                    Field::Response(ResponseSlot::Status, response_field(f)?)
                } else if let Some(f) = rest.strip_prefix("StaffInfo/") {
                    Field::Staff(StaffSlot::Status, staff_field(f)?)
                } else {
                    return None;
                }
            }
        },
        Section::TraceList => match rest {
            "TraceHeader/OrganId" => Field::TraceOrganId,
            "TraceHeader/Timestamp" => Field::TraceTimestamp,
            "Bussiness/BussinessDocType" => Field::BusinessDocType,
            "Bussiness/BussinessDocReason" => Field::BusinessReason,
            "Bussiness/DocumentId" => Field::BusinessDocumentId,
            "Bussiness/Paper" => Field::BusinessPaper,
            "Bussiness/BussinessDocumentInfo/ReceiverList/Receiver/OrganId" => {
                Field::ReceiverOrganId
            }
            "Bussiness/BussinessDocumentInfo/ReceiverList/Receiver/ReceiverType" => {
                Field::ReceiverType
            }
            "Bussiness/ReplacementInfoList/ReplacementInfo/DocumentId" => {
                Field::ReplacementDocumentId
            }
            "Bussiness/ReplacementInfoList/ReplacementInfo/OrganIdList/OrganId" => {
                Field::ReplacementOrganId
            }
            _ => Field::Staff(
                StaffSlot::Business,
                staff_field(rest.strip_prefix("Bussiness/StaffInfo/")?)?,
            ),
        },
        Section::ManifestReference => Field::Manifest(match rest {
            "ContentId" => ManifestField::ContentId,
            "ContentType" => ManifestField::ContentType,
            "Description" => ManifestField::Description,
            "AttachmentName" => ManifestField::AttachmentName,
            _ => return None,
        }),
        Section::Attachment => Field::Attachment(match rest {
            "ContentId" => AttachmentField::ContentId,
            "AttachmentName" => AttachmentField::Name,
            "Description" => AttachmentField::Description,
            "ContentType" => AttachmentField::ContentType,
            _ => return None,
        }),
    })
}

/// Where a `Signature` element may stand: under the root, the envelope or its header.
fn is_signature_place(parent: &str) -> bool {
    matches!(parent, "" | "edXMLEnvelope" | "edXMLEnvelope/edXMLHeader")
}

/// What the current element is, for `start`/`end` bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// An element the relay does not read.
    Other,
    /// An element whose text is a field.
    Field(Field),
    /// `ContentTransferEncoded` of an attachment: text goes to the base64 stream.
    AttachmentContent,
    /// The `Signature` element.
    Signature,
}

/// Organisation fields as read, validated at the end.
#[derive(Debug, Default)]
struct RawOrganization {
    organ_id: Option<String>,
    in_charge: String,
    name: String,
    address: String,
    email: String,
    telephone: String,
    fax: String,
    website: String,
}

impl RawOrganization {
    fn set(&mut self, field: OrgField, value: String) {
        match field {
            OrgField::OrganId => self.organ_id = Some(value),
            OrgField::InCharge => self.in_charge = value,
            OrgField::Name => self.name = value,
            OrgField::Address => self.address = value,
            OrgField::Email => self.email = value,
            OrgField::Telephone => self.telephone = value,
            OrgField::Fax => self.fax = value,
            OrgField::Website => self.website = value,
        }
    }

    fn finish(self, element: &'static str) -> Result<Organization, EdxmlError> {
        let raw = self
            .organ_id
            .filter(|s| !s.trim().is_empty())
            .ok_or(EdxmlError::MissingField { element })?;
        let organ_id = OrgCode::parse(&raw).map_err(|e| EdxmlError::BadOrganId {
            element: element.to_owned(),
            value: raw.clone(),
            reason: org_code_reason(e),
        })?;
        Ok(Organization {
            organ_id,
            organization_in_charge: self.in_charge,
            organ_name: self.name,
            organ_add: self.address,
            email: self.email,
            telephone: self.telephone,
            fax: self.fax,
            website: self.website,
        })
    }
}

fn org_code_reason(e: crate::org_code::OrgCodeError) -> &'static str {
    use crate::org_code::OrgCodeError as E;
    match e {
        E::Empty => "empty",
        E::TooLong => "longer than 35 characters",
        E::BadCharacter => "only letters, digits, '.', '-' and '_' are allowed",
        E::NoStructure => "expected dot-separated parts such as 000.00.05.G04",
        E::LevelGap => "a lower level is set under an empty higher level",
    }
}

/// The sink that turns tokens into metadata.
struct Extractor {
    limits: Limits,
    /// Whether attachments' digests are computed.
    attachment_digests: bool,
    /// Local names below the root, joined by `/`.
    path: String,
    path_lens: Vec<usize>,
    frames: Vec<Frame>,
    /// The section the reader is in, and the index of its element's frame.
    section: Option<(Section, usize)>,
    root_checked: bool,
    text: Vec<u8>,
    text_overflow: bool,
    base64: Option<Base64Stream>,
    saw_message_header: bool,
    saw_status: bool,
    in_signature: usize,

    doc_from: RawOrganization,
    doc_to: Vec<RawOrganization>,
    status_from: RawOrganization,
    fields: DocumentFields,
    doc_response: Vec<ResponseFor>,
    status_response: ResponseFor,
    trace: Vec<TraceHeader>,
    business: Business,
    business_doc_type_raw: Option<String>,
    manifest: Vec<ManifestReference>,
    attachments: Vec<Attachment>,
    status_code: Option<String>,
    status_description: String,
    status_timestamp: String,
    status_staff: StaffInfo,
    signature: Option<SignatureInfo>,
    warnings: Vec<String>,
}

#[derive(Debug, Default)]
struct DocumentFields {
    code_number: String,
    code_notation: String,
    promulgation_place: String,
    promulgation_date: String,
    doc_type: String,
    doc_type_detail: String,
    doc_type_name: String,
    subject: String,
    content: String,
    signer_competence: String,
    signer_position: String,
    signer_full_name: String,
    due_date: String,
    to_places: Vec<String>,
    priority: String,
    sphere: String,
    steering_type: String,
    document_id: String,
}

impl Extractor {
    fn new(limits: Limits) -> Self {
        Extractor {
            limits,
            attachment_digests: true,
            path: String::new(),
            path_lens: Vec::new(),
            frames: Vec::new(),
            section: None,
            root_checked: false,
            text: Vec::new(),
            text_overflow: false,
            base64: None,
            saw_message_header: false,
            saw_status: false,
            in_signature: 0,
            doc_from: RawOrganization::default(),
            doc_to: Vec::new(),
            status_from: RawOrganization::default(),
            fields: DocumentFields::default(),
            doc_response: Vec::new(),
            status_response: ResponseFor::default(),
            trace: Vec::new(),
            business: Business::default(),
            business_doc_type_raw: None,
            manifest: Vec::new(),
            attachments: Vec::new(),
            status_code: None,
            status_description: String::new(),
            status_timestamp: String::new(),
            status_staff: StaffInfo::default(),
            signature: None,
            warnings: Vec::new(),
        }
    }

    fn push_limited<T: Default>(
        list: &mut Vec<T>,
        limit: usize,
        what: &str,
    ) -> Result<(), EdxmlError> {
        if list.len() >= limit {
            return Err(EdxmlError::TooLong {
                element: format!("the list of {what}"),
                limit,
            });
        }
        list.push(T::default());
        Ok(())
    }

    /// Bookkeeping when an element opens at `self.path`; its frame will be at index
    /// `self.frames.len()`.
    fn open(&mut self) -> Result<Frame, EdxmlError> {
        if self.section.is_none() {
            self.section = Section::rooted_at(&self.path).map(|s| (s, self.frames.len()));
        }
        let Some((section, _)) = self.section else {
            return Ok(Frame::Other);
        };
        // The path below the section's element ("" for the element itself).
        let rest = self.path.get(section.root().len()..).unwrap_or_default();
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let list_limit = self.limits.max_list_entries;
        match (section, rest) {
            (Section::MessageHeader, "") => self.saw_message_header = true,
            (Section::Status, "") => self.saw_status = true,
            (Section::MessageHeader, "To") => {
                if self.doc_to.len() >= self.limits.max_recipients {
                    return Err(EdxmlError::TooManyRecipients {
                        limit: self.limits.max_recipients,
                    });
                }
                self.doc_to.push(RawOrganization::default());
            }
            (Section::MessageHeader, "ResponseFor") => {
                Self::push_limited(&mut self.doc_response, list_limit, "ResponseFor")?
            }
            (Section::TraceList, "TraceHeader") => {
                Self::push_limited(&mut self.trace, list_limit, "TraceHeader")?
            }
            (Section::TraceList, "Bussiness/BussinessDocumentInfo/ReceiverList/Receiver") => {
                Self::push_limited(&mut self.business.receivers, list_limit, "Receiver")?
            }
            (Section::TraceList, "Bussiness/ReplacementInfoList/ReplacementInfo") => {
                Self::push_limited(
                    &mut self.business.replacements,
                    list_limit,
                    "ReplacementInfo",
                )?
            }
            (Section::ManifestReference, "") => {
                Self::push_limited(&mut self.manifest, list_limit, "manifest references")?
            }
            (Section::Attachment, "") => {
                if self.attachments.len() >= self.limits.max_attachments {
                    return Err(EdxmlError::TooManyAttachments {
                        limit: self.limits.max_attachments,
                    });
                }
                self.attachments.push(Attachment::default());
            }
            (Section::Attachment, "ContentTransferEncoded") => {
                if self.base64.is_some() {
                    return Err(EdxmlError::BadField {
                        element: self.path.clone(),
                        value: String::new(),
                        reason: "one ContentTransferEncoded per Attachment",
                    });
                }
                self.base64 = Some(Base64Stream::new(
                    self.limits.max_attachment_bytes,
                    self.attachment_digests,
                ));
                return Ok(Frame::AttachmentContent);
            }
            _ => {}
        }
        Ok(match field_at(section, rest) {
            Some(f) => Frame::Field(f),
            None => Frame::Other,
        })
    }

    fn attachment_error(&self, problem: Base64Problem) -> EdxmlError {
        let index = self.attachments.len();
        let name = self
            .attachments
            .last()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        match problem {
            Base64Problem::Invalid(reason) => EdxmlError::BadBase64 {
                index,
                name,
                reason,
            },
            Base64Problem::TooLarge => EdxmlError::AttachmentTooLarge {
                index,
                name,
                limit: self.limits.max_attachment_bytes,
            },
        }
    }

    /// The text of the element that ends, trimmed (the buffer is kept for the next one).
    fn take_text(&mut self) -> Result<String, EdxmlError> {
        let text = std::str::from_utf8(&self.text)
            .map(|s| s.trim().to_owned())
            .map_err(|_| EdxmlError::InvalidUtf8 {
                element: self.path.clone(),
            });
        self.text.clear();
        text
    }

    fn store(&mut self, field: Field, value: String) -> Result<(), EdxmlError> {
        let f = &mut self.fields;
        match field {
            Field::Org(OrgSlot::DocFrom, of) => self.doc_from.set(of, value),
            Field::Org(OrgSlot::DocTo, of) => {
                if let Some(to) = self.doc_to.last_mut() {
                    to.set(of, value)
                }
            }
            Field::Org(OrgSlot::StatusFrom, of) => self.status_from.set(of, value),
            Field::CodeNumber => f.code_number = value,
            Field::CodeNotation => f.code_notation = value,
            Field::PromulgationPlace => f.promulgation_place = value,
            Field::PromulgationDate => f.promulgation_date = value,
            Field::DocType => f.doc_type = value,
            Field::DocTypeDetail => f.doc_type_detail = value,
            Field::DocTypeName => f.doc_type_name = value,
            Field::Subject => f.subject = value,
            Field::Content => f.content = value,
            Field::SignerCompetence => f.signer_competence = value,
            Field::SignerPosition => f.signer_position = value,
            Field::SignerFullName => f.signer_full_name = value,
            Field::DueDate => f.due_date = value,
            Field::ToPlace => {
                if f.to_places.len() >= self.limits.max_list_entries {
                    return Err(EdxmlError::TooLong {
                        element: "the list of ToPlaces".into(),
                        limit: self.limits.max_list_entries,
                    });
                }
                f.to_places.push(value)
            }
            Field::Priority => f.priority = value,
            Field::Sphere => f.sphere = value,
            Field::SteeringType => f.steering_type = value,
            Field::DocumentId => f.document_id = value,
            Field::Response(slot, rf) => {
                let target = match slot {
                    ResponseSlot::Document => match self.doc_response.last_mut() {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                    ResponseSlot::Status => &mut self.status_response,
                };
                match rf {
                    ResponseField::OrganId => target.organ_id = value,
                    ResponseField::Code => target.code = value,
                    ResponseField::PromulgationDate => target.promulgation_date = value,
                    ResponseField::DocumentId => target.document_id = non_empty_id(&value),
                }
            }
            Field::TraceOrganId => {
                if let Some(t) = self.trace.last_mut() {
                    t.organ_id = value
                }
            }
            Field::TraceTimestamp => {
                if let Some(t) = self.trace.last_mut() {
                    t.timestamp = value
                }
            }
            Field::BusinessDocType => self.business_doc_type_raw = Some(value),
            Field::BusinessReason => self.business.reason = value,
            Field::BusinessDocumentId => self.business.document_id = non_empty_id(&value),
            Field::BusinessPaper => self.business.paper = value,
            Field::ReceiverOrganId | Field::ReceiverType => {
                if let Some(r) = self.business.receivers.last_mut() {
                    set_receiver(r, field, value)
                }
            }
            Field::Staff(slot, sf) => {
                let staff = match slot {
                    StaffSlot::Business => &mut self.business.staff,
                    StaffSlot::Status => &mut self.status_staff,
                };
                match sf {
                    StaffField::Department => staff.department = value,
                    StaffField::Staff => staff.staff = value,
                    StaffField::Mobile => staff.mobile = value,
                    StaffField::Email => staff.email = value,
                }
            }
            Field::ReplacementDocumentId => {
                if let Some(r) = self.business.replacements.last_mut() {
                    r.document_id = non_empty_id(&value)
                }
            }
            Field::ReplacementOrganId => {
                if let Some(r) = self.business.replacements.last_mut() {
                    if r.organ_ids.len() < self.limits.max_list_entries {
                        r.organ_ids.push(value)
                    }
                }
            }
            Field::Manifest(mf) => {
                if let Some(m) = self.manifest.last_mut() {
                    match mf {
                        ManifestField::ContentId => m.content_id = value,
                        ManifestField::ContentType => m.content_type = value,
                        ManifestField::Description => m.description = value,
                        ManifestField::AttachmentName => m.attachment_name = value,
                    }
                }
            }
            Field::Attachment(af) => {
                if let Some(a) = self.attachments.last_mut() {
                    match af {
                        AttachmentField::ContentId => a.content_id = value,
                        AttachmentField::Name => a.name = value,
                        AttachmentField::Description => a.description = value,
                        AttachmentField::ContentType => a.content_type = value,
                    }
                }
            }
            Field::StatusCode => self.status_code = Some(value),
            Field::StatusDescription => self.status_description = value,
            Field::StatusTimestamp => self.status_timestamp = value,
            Field::SignerSubject => {
                if let Some(sig) = &mut self.signature {
                    sig.signer_subject = Some(value).filter(|v| !v.is_empty())
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, size: u64, sha256: Sha256Digest) -> Result<PackageMeta, EdxmlError> {
        let body = match (self.saw_message_header, self.saw_status) {
            (true, true) => {
                return Err(EdxmlError::NoHeader(
                    "the package has both a MessageHeader and a Status header",
                ))
            }
            (false, false) => {
                return Err(EdxmlError::NoHeader(
                    "the package has neither edXMLHeader/MessageHeader (document) nor edXMLHeader/Status (status)",
                ))
            }
            (true, false) => PackageBody::Document(Box::new(self.document()?)),
            (false, true) => PackageBody::Status(Box::new(self.status_header()?)),
        };
        Ok(PackageMeta {
            size,
            sha256,
            body,
            trace: self.trace,
            signature: self.signature,
            warnings: self.warnings,
        })
    }

    fn date(&mut self, element: &str, raw: &str) -> Option<CalendarDate> {
        if raw.is_empty() {
            return None;
        }
        let date = CalendarDate::parse(raw);
        if date.is_none() {
            self.warnings.push(format!(
                "{element}: {raw:?} is not a yyyy/MM/dd date; ignored"
            ));
        }
        date
    }

    fn document(&mut self) -> Result<DocumentHeader, EdxmlError> {
        let from = std::mem::take(&mut self.doc_from).finish("MessageHeader/From/OrganId")?;
        if self.doc_to.is_empty() {
            return Err(EdxmlError::NoRecipient);
        }
        let to = std::mem::take(&mut self.doc_to)
            .into_iter()
            .map(|o| o.finish("MessageHeader/To/OrganId"))
            .collect::<Result<Vec<_>, _>>()?;
        let f = std::mem::take(&mut self.fields);
        let priority = match f.priority.as_str() {
            "" => None,
            p => match p.parse::<u8>() {
                Ok(n) if n <= 4 => Some(n),
                _ => {
                    self.warnings.push(format!(
                        "MessageHeader/OtherInfo/Priority: {p:?} is not 0-4; ignored"
                    ));
                    None
                }
            },
        };
        let mut business = std::mem::take(&mut self.business);
        business.doc_type = match self.business_doc_type_raw.as_deref().unwrap_or("") {
            "" => BusinessDocType::New,
            raw => raw
                .parse::<u8>()
                .ok()
                .and_then(|n| BusinessDocType::try_from(n).ok())
                .ok_or_else(|| EdxmlError::BadField {
                    element: "TraceHeaderList/Bussiness/BussinessDocType".into(),
                    value: raw.to_owned(),
                    reason: "expected 0 (new), 1 (revoke), 2 (update) or 3 (replace)",
                })?,
        };
        if business.doc_type != BusinessDocType::New && business.document_id.is_none() {
            self.warnings.push(
                "Bussiness/DocumentId is missing: the MessageHeader DocumentId is taken as the affected document"
                    .into(),
            );
        }
        let promulgation_date =
            self.date("PromulgationInfo/PromulgationDate", &f.promulgation_date);
        let due_date = self.date("MessageHeader/DueDate", &f.due_date);
        Ok(DocumentHeader {
            from,
            to,
            code_number: f.code_number,
            code_notation: f.code_notation,
            promulgation_place: f.promulgation_place,
            promulgation_date,
            document_type: f.doc_type,
            document_type_detail: f.doc_type_detail,
            document_type_name: f.doc_type_name,
            subject: f.subject,
            content: f.content,
            signer_competence: f.signer_competence,
            signer_position: f.signer_position,
            signer_full_name: f.signer_full_name,
            due_date,
            to_places: f.to_places,
            priority,
            sphere_of_promulgation: f.sphere,
            steering_type: f.steering_type,
            response_for: std::mem::take(&mut self.doc_response),
            document_id: non_empty_id(&f.document_id),
            business,
            manifest: std::mem::take(&mut self.manifest),
            attachments: std::mem::take(&mut self.attachments),
        })
    }

    fn status_header(&mut self) -> Result<StatusHeader, EdxmlError> {
        let from = std::mem::take(&mut self.status_from).finish("Status/From/OrganId")?;
        let raw =
            self.status_code
                .take()
                .filter(|s| !s.is_empty())
                .ok_or(EdxmlError::MissingField {
                    element: "Status/StatusCode",
                })?;
        let status_code = StatusCode::new(&raw);
        if status_code.known().is_none() {
            self.warnings.push(format!(
                "Status/StatusCode: {raw:?} is not a code of QCVN 102 (01-06, 13, 15, 16); kept as is"
            ));
        }
        let response_for = std::mem::take(&mut self.status_response);
        if response_for.document_id.is_none() {
            return Err(EdxmlError::MissingField {
                element: "Status/ResponseFor/DocumentId",
            });
        }
        Ok(StatusHeader {
            response_for,
            from,
            status_code,
            description: std::mem::take(&mut self.status_description),
            timestamp: std::mem::take(&mut self.status_timestamp),
            staff: std::mem::take(&mut self.status_staff),
        })
    }
}

fn non_empty_id(value: &str) -> Option<DocumentId> {
    (!value.trim().is_empty()).then(|| DocumentId::new(value))
}

fn set_receiver(r: &mut BusinessReceiver, field: Field, value: String) {
    if field == Field::ReceiverOrganId {
        r.organ_id = value
    } else {
        r.receiver_type = value
    }
}

/// Indexes in [`Extractor`]'s known namespaces.
const KNOWN_EDXML: Option<u8> = Some(0);
const KNOWN_XMLDSIG: Option<u8> = Some(1);

impl Sink for Extractor {
    const KNOWN_NAMESPACES: &'static [&'static [u8]] =
        &[EDXML_NS.as_bytes(), XMLDSIG_NS.as_bytes()];

    fn start_element(
        &mut self,
        ns: Namespace<'_>,
        local: &str,
        _offset: u64,
    ) -> Result<(), EdxmlError> {
        let is_edxml = ns.known == KNOWN_EDXML;
        let is_dsig = ns.known == KNOWN_XMLDSIG;
        if !self.root_checked {
            self.root_checked = true;
            if local != "edXML" {
                return Err(EdxmlError::NotEdxml { root: local.into() });
            }
            if !is_edxml {
                return Err(EdxmlError::BadNamespace {
                    element: "edXML".into(),
                    found: String::from_utf8_lossy(ns.uri).into_owned(),
                });
            }
            self.path_lens.push(0);
            self.frames.push(Frame::Other);
            return Ok(());
        }
        let parent_len = self.path.len();
        self.path_lens.push(parent_len);
        if !self.path.is_empty() {
            self.path.push('/');
        }
        if is_edxml || is_dsig {
            self.path.push_str(local);
        } else {
            let misplaced_known = matches!(
                (&self.path[..parent_len], local),
                ("", "edXMLEnvelope")
                    | ("edXMLEnvelope", "edXMLHeader")
                    | ("edXMLEnvelope/edXMLHeader", "MessageHeader" | "Status")
            );
            if misplaced_known {
                return Err(EdxmlError::BadNamespace {
                    element: local.into(),
                    found: String::from_utf8_lossy(ns.uri).into_owned(),
                });
            }
            // Foreign elements never match a known path.
            self.path.push('*');
        }
        self.text.clear();
        self.text_overflow = false;

        let frame = if self.in_signature > 0 {
            if local == "X509SubjectName" && self.path.ends_with("KeyInfo/X509Data/X509SubjectName")
            {
                Frame::Field(Field::SignerSubject)
            } else {
                Frame::Other
            }
        } else if local == "Signature"
            && (is_edxml || is_dsig)
            && is_signature_place(&self.path[..parent_len])
        {
            self.signature = Some(SignatureInfo::default());
            Frame::Signature
        } else {
            self.open()?
        };
        if frame == Frame::Signature || self.in_signature > 0 {
            self.in_signature += 1;
        }
        self.frames.push(frame);
        Ok(())
    }

    fn end_element(&mut self) -> Result<(), EdxmlError> {
        let frame = self.frames.pop().unwrap_or(Frame::Other);
        if matches!(self.section, Some((_, at)) if at == self.frames.len()) {
            self.section = None;
        }
        if self.in_signature > 0 {
            self.in_signature -= 1;
        }
        match frame {
            Frame::Field(field) => {
                if self.text_overflow {
                    return Err(EdxmlError::TooLong {
                        element: self.path.clone(),
                        limit: self.limits.max_field_bytes,
                    });
                }
                let value = self.take_text()?;
                self.store(field, value)?;
            }
            Frame::AttachmentContent => {
                if let Some(stream) = self.base64.take() {
                    let (size, digest) = stream.finish().map_err(|p| self.attachment_error(p))?;
                    if let Some(a) = self.attachments.last_mut() {
                        a.size = size;
                        a.sha256 = digest;
                    }
                }
            }
            Frame::Other | Frame::Signature => {}
        }
        self.text.clear();
        let len = self.path_lens.pop().unwrap_or(0);
        self.path.truncate(len);
        Ok(())
    }

    fn text(&mut self, text: &[u8]) -> Result<(), EdxmlError> {
        match self.frames.last() {
            Some(Frame::Field(_)) => {
                if self.text.len() + text.len() > self.limits.max_field_bytes {
                    self.text_overflow = true;
                } else {
                    self.text.extend_from_slice(text);
                }
                Ok(())
            }
            Some(Frame::AttachmentContent) => {
                if let Some(stream) = &mut self.base64 {
                    if let Err(p) = stream.push(text) {
                        return Err(self.attachment_error(p));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
