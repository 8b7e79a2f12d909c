//! Builders of valid packages, for tests, the demo, the simulator, benchmarks, and people
//! testing their adapters (`trucctl doc new`).
//!
//! The `Signature` element they write has the structure of an enveloped XML-DSig signature
//! but no cryptographic value: real packages are signed by the sending QLVB system with its
//! unit's key, which the relay never holds.

use std::fmt::Write as _;

use crate::meta::{Business, Organization, ResponseFor, StaffInfo, TraceHeader};
use crate::org_code::OrgCode;
use crate::values::{BusinessDocType, CalendarDate, DocumentId, StatusCode};

/// An attachment to put in a built package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSource {
    /// `AttachmentName`, e.g. `congvan.pdf`.
    pub name: String,
    /// `ContentType`, e.g. `application/pdf`.
    pub content_type: String,
    /// `Description`.
    pub description: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl AttachmentSource {
    /// An attachment whose content type is guessed from the name's extension.
    pub fn new(name: &str, data: Vec<u8>) -> Self {
        AttachmentSource {
            name: name.to_owned(),
            content_type: content_type_for(name).to_owned(),
            description: name.to_owned(),
            data,
        }
    }
}

/// The MIME type edXML producers use for a file name.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "zip" => "application/zip",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// How the XML is laid out: producers differ, and the relay must read them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Prefix bound to the edXML namespace on child elements (`None`: default namespace only).
    pub prefix: Option<String>,
    /// Start with a UTF-8 byte order mark.
    pub bom: bool,
    /// Use CRLF line ends.
    pub crlf: bool,
    /// Wrap base64 at this many characters per line (`None`: one line).
    pub base64_line: Option<usize>,
    /// Put the `Signature` in the XML-DSig namespace (else in the edXML namespace).
    pub dsig_namespace: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            prefix: Some("edXML".into()),
            bom: false,
            crlf: false,
            base64_line: None,
            dsig_namespace: false,
        }
    }
}

/// Builds a document package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentBuilder {
    /// Sender.
    pub from: Organization,
    /// Recipients.
    pub to: Vec<Organization>,
    /// Số.
    pub code_number: String,
    /// Ký hiệu.
    pub code_notation: String,
    /// Place of promulgation.
    pub promulgation_place: String,
    /// Date of promulgation.
    pub promulgation_date: CalendarDate,
    /// `DocumentType/Type`.
    pub document_type: String,
    /// `DocumentType/TypeDetail`.
    pub document_type_detail: String,
    /// `DocumentType/TypeName`.
    pub document_type_name: String,
    /// Trích yếu.
    pub subject: String,
    /// Summary.
    pub content: String,
    /// `SignerInfo/Competence`.
    pub signer_competence: String,
    /// `SignerInfo/Position`.
    pub signer_position: String,
    /// `SignerInfo/FullName`.
    pub signer_full_name: String,
    /// Processing deadline.
    pub due_date: Option<CalendarDate>,
    /// `ToPlaces/Place`.
    pub to_places: Vec<String>,
    /// 0-4.
    pub priority: u8,
    /// `SteeringType`.
    pub steering_type: String,
    /// Documents answered.
    pub response_for: Vec<ResponseFor>,
    /// `None`: the standard id derived from sender, date, number and notation.
    pub document_id: Option<DocumentId>,
    /// The business trace (new, revoke, update, replace).
    pub business: Business,
    /// Trace headers; empty: one for the sender at the promulgation date.
    pub trace: Vec<TraceHeader>,
    /// Attachments.
    pub attachments: Vec<AttachmentSource>,
    /// `Some`: write a `Signature` element with this X509 subject name.
    pub signer_subject: Option<String>,
    /// Layout of the XML.
    pub layout: Layout,
}

impl DocumentBuilder {
    /// A new "Công văn" from `from` to `to`, dated `date`, with number `number/notation`.
    pub fn new(
        from: OrgCode,
        to: Vec<OrgCode>,
        date: CalendarDate,
        number: &str,
        notation: &str,
    ) -> Self {
        DocumentBuilder {
            from: Organization::new(from),
            to: to.into_iter().map(Organization::new).collect(),
            code_number: number.to_owned(),
            code_notation: notation.to_owned(),
            promulgation_place: "Hà Nội".into(),
            promulgation_date: date,
            document_type: "1".into(),
            document_type_detail: "0".into(),
            document_type_name: "Công văn".into(),
            subject: String::new(),
            content: String::new(),
            signer_competence: String::new(),
            signer_position: String::new(),
            signer_full_name: String::new(),
            due_date: None,
            to_places: Vec::new(),
            priority: 0,
            steering_type: "0".into(),
            response_for: Vec::new(),
            document_id: None,
            business: Business::default(),
            trace: Vec::new(),
            attachments: Vec::new(),
            signer_subject: Some("CN=Van thu".into()),
            layout: Layout::default(),
        }
    }

    /// Sets the subject (and the content, if empty).
    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = subject.to_owned();
        if self.content.is_empty() {
            self.content = subject.to_owned();
        }
        self
    }

    /// Adds an attachment.
    pub fn attachment(mut self, attachment: AttachmentSource) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// Makes this a revocation (1), update (2) or replacement (3) of `target`.
    pub fn affecting(mut self, doc_type: BusinessDocType, target: DocumentId) -> Self {
        self.business.doc_type = doc_type;
        self.business.document_id = Some(target);
        self
    }

    /// The DocumentId the built package will carry.
    pub fn effective_document_id(&self) -> DocumentId {
        self.document_id.clone().unwrap_or_else(|| {
            DocumentId::standard(
                &self.from.organ_id,
                self.promulgation_date,
                &self.code_number,
                &self.code_notation,
            )
        })
    }

    /// Writes the package.
    pub fn build(&self) -> Vec<u8> {
        let mut w = XmlWriter::new(&self.layout);
        w.open_root();
        w.open("edXMLEnvelope");
        w.open("edXMLHeader");
        w.open("MessageHeader");
        w.organization("From", &self.from);
        for to in &self.to {
            w.organization("To", to);
        }
        w.open("Code");
        w.leaf("CodeNumber", &self.code_number);
        w.leaf("CodeNotation", &self.code_notation);
        w.close("Code");
        w.open("PromulgationInfo");
        w.leaf("Place", &self.promulgation_place);
        w.leaf("PromulgationDate", &self.promulgation_date.to_string());
        w.close("PromulgationInfo");
        w.open("DocumentType");
        w.leaf("Type", &self.document_type);
        w.leaf("TypeDetail", &self.document_type_detail);
        w.leaf("TypeName", &self.document_type_name);
        w.close("DocumentType");
        w.leaf("Subject", &self.subject);
        w.leaf("Content", &self.content);
        w.open("SignerInfo");
        w.leaf("Competence", &self.signer_competence);
        w.leaf("Position", &self.signer_position);
        w.leaf("FullName", &self.signer_full_name);
        w.close("SignerInfo");
        if let Some(due) = self.due_date {
            w.leaf("DueDate", &due.to_string());
        }
        w.open("ToPlaces");
        for place in &self.to_places {
            w.leaf("Place", place);
        }
        w.close("ToPlaces");
        w.open("OtherInfo");
        w.leaf("Priority", &self.priority.to_string());
        w.leaf("SphereOfPromulgation", "Liên thông văn bản quốc gia");
        w.leaf("TyperNotation", "VT");
        w.leaf("PromulgationAmount", "1");
        w.leaf("PageAmount", "1");
        w.close("OtherInfo");
        for r in &self.response_for {
            w.response_for(r);
        }
        w.leaf("SteeringType", &self.steering_type);
        w.leaf("DocumentId", self.effective_document_id().as_str());
        w.close("MessageHeader");

        w.open("TraceHeaderList");
        let default_trace = [TraceHeader {
            organ_id: self.from.organ_id.to_string(),
            timestamp: format!("{} 08:00:00", self.promulgation_date),
        }];
        let trace = if self.trace.is_empty() {
            &default_trace[..]
        } else {
            &self.trace
        };
        for t in trace {
            w.open("TraceHeader");
            w.leaf("OrganId", &t.organ_id);
            w.leaf("Timestamp", &t.timestamp);
            w.close("TraceHeader");
        }
        w.business(&self.business);
        w.close("TraceHeaderList");
        if let Some(subject) = &self.signer_subject {
            w.signature(subject);
        }
        w.close("edXMLHeader");

        w.open("edXMLBody");
        w.open_with("edXMLManifest", " version=\"1.0\"");
        for (i, a) in self.attachments.iter().enumerate() {
            w.open("Reference");
            w.leaf("ContentId", &format!("cid:{}", i + 1));
            w.leaf("ContentType", &a.content_type);
            w.leaf("Description", &a.description);
            w.leaf("AttachmentName", &a.name);
            w.close("Reference");
        }
        w.close("edXMLManifest");
        w.close("edXMLBody");
        w.close("edXMLEnvelope");

        w.open("AttachmentEncoded");
        for (i, a) in self.attachments.iter().enumerate() {
            w.open("Attachment");
            w.leaf("ContentId", &format!("cid:{}", i + 1));
            w.leaf("AttachmentName", &a.name);
            w.leaf("Description", &a.description);
            w.leaf("ContentType", &a.content_type);
            w.base64("ContentTransferEncoded", &a.data);
            w.close("Attachment");
        }
        w.close("AttachmentEncoded");
        w.close_root();
        w.finish()
    }
}

/// Builds a status package answering a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBuilder {
    /// The answered document.
    pub response_for: ResponseFor,
    /// Who reports.
    pub from: Organization,
    /// The status.
    pub status_code: StatusCode,
    /// `Description`.
    pub description: String,
    /// `Timestamp` (`yyyy/MM/dd HH:mm:ss`).
    pub timestamp: String,
    /// `StaffInfo`.
    pub staff: StaffInfo,
    /// Layout of the XML.
    pub layout: Layout,
}

impl StatusBuilder {
    /// A status `code` from `from` about document `document_id`, issued by `issuer`.
    pub fn new(from: OrgCode, document_id: DocumentId, code: StatusCode, timestamp: &str) -> Self {
        let (organ_id, code_text, date) = match document_id.shape() {
            crate::values::DocumentIdShape::Standard {
                issuer,
                date,
                number,
                notation,
            } => (
                issuer.to_string(),
                format!("{number}/{notation}"),
                date.to_string(),
            ),
            _ => (String::new(), String::new(), String::new()),
        };
        let description = code
            .known()
            .map(|k| k.name_vi().to_owned())
            .unwrap_or_default();
        StatusBuilder {
            response_for: ResponseFor {
                organ_id,
                code: code_text,
                promulgation_date: date,
                document_id: Some(document_id),
            },
            from: Organization::new(from),
            status_code: code,
            description,
            timestamp: timestamp.to_owned(),
            staff: StaffInfo::default(),
            layout: Layout::default(),
        }
    }

    /// Writes the package.
    pub fn build(&self) -> Vec<u8> {
        let mut w = XmlWriter::new(&self.layout);
        w.open_root();
        w.open("edXMLEnvelope");
        w.open("edXMLHeader");
        w.open("Status");
        w.response_for(&self.response_for);
        w.organization("From", &self.from);
        w.leaf("StatusCode", self.status_code.as_str());
        w.leaf("Description", &self.description);
        w.leaf("Timestamp", &self.timestamp);
        w.staff(&self.staff);
        w.close("Status");
        w.close("edXMLHeader");
        w.close("edXMLEnvelope");
        w.close_root();
        w.finish()
    }
}

struct XmlWriter<'a> {
    out: String,
    layout: &'a Layout,
    prefix: String,
    newline: &'static str,
}

impl<'a> XmlWriter<'a> {
    fn new(layout: &'a Layout) -> Self {
        XmlWriter {
            out: String::with_capacity(8 * 1024),
            layout,
            prefix: layout
                .prefix
                .as_ref()
                .map(|p| format!("{p}:"))
                .unwrap_or_default(),
            newline: if layout.crlf { "\r\n" } else { "\n" },
        }
    }

    fn open_root(&mut self) {
        if self.layout.bom {
            self.out.push('\u{feff}');
        }
        self.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        self.out.push_str(self.newline);
        let ns = crate::reader::EDXML_NS;
        let _ = write!(self.out, "<edXML xmlns=\"{ns}\"");
        if let Some(p) = &self.layout.prefix {
            let _ = write!(self.out, " xmlns:{p}=\"{ns}\"");
        }
        self.out.push('>');
        self.out.push_str(self.newline);
    }

    fn close_root(&mut self) {
        self.out.push_str("</edXML>");
        self.out.push_str(self.newline);
    }

    fn open(&mut self, name: &str) {
        self.open_with(name, "");
    }

    fn open_with(&mut self, name: &str, attrs: &str) {
        // Pieces pushed, not `write!`: a package has about a hundred tags, and formatting
        // them was most of the time a load generator spent building packages.
        self.out.push('<');
        self.out.push_str(&self.prefix);
        self.out.push_str(name);
        self.out.push_str(attrs);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(&self.prefix);
        self.out.push_str(name);
        self.out.push('>');
        if matches!(
            name,
            "MessageHeader" | "TraceHeaderList" | "edXMLHeader" | "edXMLBody"
        ) {
            self.out.push_str(self.newline);
        }
    }

    fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name);
    }

    fn base64(&mut self, name: &str, data: &[u8]) {
        self.open(name);
        let encoded = base64_simd::STANDARD.encode_to_string(data);
        match self.layout.base64_line {
            Some(n) if n > 0 => {
                for (i, line) in encoded.as_bytes().chunks(n).enumerate() {
                    if i > 0 {
                        self.out.push_str(self.newline);
                    }
                    // Base64 output is ASCII, so any byte boundary is a char boundary.
                    self.out
                        .push_str(std::str::from_utf8(line).unwrap_or_default());
                }
            }
            _ => self.out.push_str(&encoded),
        }
        self.close(name);
    }

    fn organization(&mut self, name: &str, o: &Organization) {
        self.open(name);
        self.leaf("OrganId", o.organ_id.as_str());
        self.leaf("OrganizationInCharge", &o.organization_in_charge);
        self.leaf("OrganName", &o.organ_name);
        self.leaf("OrganAdd", &o.organ_add);
        self.leaf("Email", &o.email);
        self.leaf("Telephone", &o.telephone);
        self.leaf("Fax", &o.fax);
        self.leaf("Website", &o.website);
        self.close(name);
    }

    fn response_for(&mut self, r: &ResponseFor) {
        self.open("ResponseFor");
        self.leaf("OrganId", &r.organ_id);
        self.leaf("Code", &r.code);
        self.leaf("PromulgationDate", &r.promulgation_date);
        self.leaf(
            "DocumentId",
            r.document_id.as_ref().map(DocumentId::as_str).unwrap_or(""),
        );
        self.close("ResponseFor");
    }

    fn staff(&mut self, s: &StaffInfo) {
        self.open("StaffInfo");
        self.leaf("Department", &s.department);
        self.leaf("Staff", &s.staff);
        self.leaf("Mobile", &s.mobile);
        self.leaf("Email", &s.email);
        self.close("StaffInfo");
    }

    fn business(&mut self, b: &Business) {
        self.open("Bussiness");
        self.leaf("BussinessDocType", &b.doc_type.code().to_string());
        self.leaf("BussinessDocReason", &b.reason);
        if let Some(id) = &b.document_id {
            self.leaf("DocumentId", id.as_str());
        }
        if !b.receivers.is_empty() {
            self.open("BussinessDocumentInfo");
            self.open("ReceiverList");
            for r in &b.receivers {
                self.open("Receiver");
                self.leaf("OrganId", &r.organ_id);
                self.leaf("ReceiverType", &r.receiver_type);
                self.close("Receiver");
            }
            self.close("ReceiverList");
            self.close("BussinessDocumentInfo");
        }
        if b.staff != StaffInfo::default() {
            self.staff(&b.staff);
        }
        self.leaf("Paper", if b.paper.is_empty() { "0" } else { &b.paper });
        if !b.replacements.is_empty() {
            self.open("ReplacementInfoList");
            for r in &b.replacements {
                self.open("ReplacementInfo");
                self.leaf(
                    "DocumentId",
                    r.document_id.as_ref().map(DocumentId::as_str).unwrap_or(""),
                );
                self.open("OrganIdList");
                for o in &r.organ_ids {
                    self.leaf("OrganId", o);
                }
                self.close("OrganIdList");
                self.close("ReplacementInfo");
            }
            self.close("ReplacementInfoList");
        }
        self.close("Bussiness");
    }

    fn signature(&mut self, subject: &str) {
        let (open, p) = if self.layout.dsig_namespace {
            (
                format!("<ds:Signature xmlns:ds=\"{}\">", crate::reader::XMLDSIG_NS),
                "ds:",
            )
        } else {
            ("<Signature>".to_owned(), "")
        };
        self.out.push_str(&open);
        let _ = write!(
            self.out,
            "<{p}SignedInfo><{p}CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\
<{p}SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/><{p}Reference URI=\"\">\
<{p}Transforms><{p}Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/></{p}Transforms>\
<{p}DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><{p}DigestValue>AAAA</{p}DigestValue>\
</{p}Reference></{p}SignedInfo><{p}SignatureValue>AAAA</{p}SignatureValue><{p}KeyInfo><{p}X509Data><{p}X509SubjectName>"
        );
        escape_into(&mut self.out, subject);
        let _ = write!(
            self.out,
            "</{p}X509SubjectName></{p}X509Data></{p}KeyInfo></{p}Signature>"
        );
        self.out.push_str(self.newline);
    }

    fn finish(self) -> Vec<u8> {
        self.out.into_bytes()
    }
}

/// Escapes text for element content (text without `& < > CR`, the usual case, is copied
/// whole).
fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '\r']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => "&#13;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}
