//! Properties: no input panics the reader, and every built package reads back to what was
//! put in.

use proptest::prelude::*;
use truc_edxml::{
    parse, AttachmentSource, BusinessDocType, CalendarDate, DocumentBuilder, DocumentId, Layout,
    Limits, OrgCode, Organization, PackageReader, Sha256Digest, StatusBuilder, StatusCode,
};

fn feed_in_chunks(
    bytes: &[u8],
    chunk: usize,
) -> Result<truc_edxml::PackageMeta, truc_edxml::EdxmlError> {
    let mut r = PackageReader::new(Limits::default());
    for piece in bytes.chunks(chunk.max(1)) {
        r.feed(piece)?;
    }
    r.finish()
}

fn org_code() -> impl Strategy<Value = OrgCode> {
    prop_oneof![
        (
            1u8..=99,
            0u8..=99,
            prop::sample::select(vec!['G', 'H', 'K']),
            1u8..=99
        )
            .prop_map(|(y, z, letter, m)| OrgCode::parse(&format!(
                "000.{z:02}.{y:02}.{letter}{m:02}"
            ))
            .expect("standard code")),
        "[A-Za-z0-9]{1,6}(\\.[A-Za-z0-9]{1,6}){1,3}"
            .prop_map(|s| OrgCode::parse(&s).expect("free-form code")),
    ]
}

/// Text as a producer might write it: any characters XML can carry, no surrounding space
/// (the reader trims field values).
fn field_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 àáạảãâầấậẩẫăằắặẳẵèéẹẻẽêềếệểễìíịỉĩòóọỏõôồốộổỗơờớợởỡùúụủũưừứựửữỳýỵỷỹđĐ&<>\"'/,.;:!?()\\-]{0,40}"
        .prop_map(|s| s.trim().to_owned())
}

fn date() -> impl Strategy<Value = CalendarDate> {
    (2000u16..2100, 1u8..=12, 1u8..=28)
        .prop_map(|(y, m, d)| CalendarDate::new(y, m, d).expect("date"))
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::option::of(prop::sample::select(vec!["edXML", "e", "ns0"])),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![64usize, 76])),
        any::<bool>(),
    )
        .prop_map(|(prefix, bom, crlf, base64_line, dsig_namespace)| Layout {
            prefix: prefix.map(str::to_owned),
            bom,
            crlf,
            base64_line,
            dsig_namespace,
        })
}

prop_compose! {
    fn document()(
        from in org_code(),
        to in prop::collection::vec(org_code(), 1..6),
        date in date(),
        number in "[0-9]{1,5}",
        notation in "[A-ZĐ]{1,6}(-[A-ZĐ]{1,4})?",
        subject in field_text(),
        content in field_text(),
        due in prop::option::of(date()),
        priority in 0u8..=4,
        business in prop::sample::select(vec![BusinessDocType::New, BusinessDocType::Revoke, BusinessDocType::Update, BusinessDocType::Replace]),
        attachments in prop::collection::vec(("[a-z]{1,8}\\.(pdf|docx|zip)", prop::collection::vec(any::<u8>(), 0..2000)), 0..4),
        signer in prop::option::of("CN=[A-Za-z ]{1,20}"),
        layout in layout(),
        names in (field_text(), field_text()),
    ) -> DocumentBuilder {
        let mut b = DocumentBuilder::new(from, to, date, &number, &notation).subject(&subject);
        b.content = content;
        b.due_date = due;
        b.priority = priority;
        b.signer_subject = signer.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        b.layout = layout;
        b.from.organ_name = names.0;
        b.to[0].organ_name = names.1;
        if business != BusinessDocType::New {
            b = b.affecting(business, DocumentId::new("000.00.00.G04,2026/01/01,1/BGTVT"));
        }
        for (name, data) in attachments {
            b = b.attachment(AttachmentSource::new(&name, data));
        }
        b
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..64) {
        let whole = parse(&bytes);
        prop_assert_eq!(feed_in_chunks(&bytes, chunk), whole);
    }

    #[test]
    fn xml_like_noise_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "<", ">", "</", "/>", "<!--", "-->", "<![CDATA[", "]]>", "<?", "?>", "&", ";", "&amp;", "&#x41;",
        "\"", "'", "=", " ", "edXML", "a", "xmlns", "xmlns:e", ":", "\u{feff}", "http://www.mic.gov.vn/TBT/QCVN_102_2016",
    ]), 0..200), chunk in 1usize..32) {
        let bytes = parts.concat().into_bytes();
        let whole = parse(&bytes);
        prop_assert_eq!(feed_in_chunks(&bytes, chunk), whole);
    }

    #[test]
    fn mutated_packages_never_panic(b in document(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = b.build();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let whole = parse(&bytes);
        prop_assert_eq!(feed_in_chunks(&bytes, 13), whole);
    }

    #[test]
    fn built_documents_read_back_to_their_fields(b in document(), chunk in 1usize..5000) {
        let bytes = b.build();
        let meta = feed_in_chunks(&bytes, chunk).map_err(|e| TestCaseError::fail(format!("{}: {e}", e.code())))?;
        prop_assert_eq!(&meta, &parse(&bytes).expect("whole"));
        prop_assert_eq!(meta.sha256, Sha256Digest::of(&bytes));
        prop_assert_eq!(meta.size, bytes.len() as u64);
        let d = meta.document().expect("document");
        prop_assert_eq!(&d.from.organ_id, &b.from.organ_id);
        prop_assert_eq!(&d.from.organ_name, &b.from.organ_name);
        let to: Vec<&OrgCode> = d.to.iter().map(|o| &o.organ_id).collect();
        let want: Vec<&OrgCode> = b.to.iter().map(|o: &Organization| &o.organ_id).collect();
        prop_assert_eq!(to, want);
        prop_assert_eq!(&d.to[0].organ_name, &b.to[0].organ_name);
        prop_assert_eq!(&d.code_number, &b.code_number);
        prop_assert_eq!(&d.code_notation, &b.code_notation);
        prop_assert_eq!(d.promulgation_date, Some(b.promulgation_date));
        prop_assert_eq!(&d.subject, &b.subject);
        prop_assert_eq!(&d.content, &b.content);
        prop_assert_eq!(d.due_date, b.due_date);
        prop_assert_eq!(d.priority, Some(b.priority));
        prop_assert_eq!(d.document_id.as_ref(), Some(&b.effective_document_id()));
        prop_assert_eq!(d.business.doc_type, b.business.doc_type);
        prop_assert_eq!(&d.business.document_id, &b.business.document_id);
        prop_assert_eq!(meta.signature.is_some(), b.signer_subject.is_some());
        prop_assert_eq!(
            meta.signature.as_ref().and_then(|s| s.signer_subject.clone()),
            b.signer_subject.clone()
        );
        prop_assert_eq!(d.attachments.len(), b.attachments.len());
        prop_assert_eq!(d.manifest.len(), b.attachments.len());
        for (got, src) in d.attachments.iter().zip(&b.attachments) {
            prop_assert_eq!(&got.name, &src.name);
            prop_assert_eq!(&got.content_type, &src.content_type);
            prop_assert_eq!(got.size, src.data.len() as u64);
            prop_assert_eq!(got.sha256, Some(Sha256Digest::of(&src.data)));
        }
        prop_assert!(meta.warnings.is_empty(), "{:?}", meta.warnings);
    }

    #[test]
    fn built_statuses_read_back_to_their_fields(
        from in org_code(),
        issuer in org_code(),
        date in date(),
        code in prop::sample::select(vec!["01", "02", "03", "04", "05", "06", "13", "15", "16", "09"]),
        description in field_text(),
        layout in layout(),
    ) {
        let doc_id = DocumentId::standard(&issuer, date, "12", "BGTVT-VP");
        let mut b = StatusBuilder::new(from.clone(), doc_id.clone(), StatusCode::new(code), "2026/11/21 10:00:00");
        b.description = description.clone();
        b.layout = layout;
        let meta = parse(&b.build()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s = meta.status().expect("status");
        prop_assert_eq!(&s.from.organ_id, &from);
        prop_assert_eq!(s.status_code.as_str(), code);
        prop_assert_eq!(s.response_for.document_id.as_ref(), Some(&doc_id));
        prop_assert_eq!(&s.response_for.organ_id, issuer.as_str());
        prop_assert_eq!(&s.description, &description);
        prop_assert_eq!(s.timestamp.as_str(), "2026/11/21 10:00:00");
        // Unknown codes are kept and flagged, never refused.
        prop_assert_eq!(meta.warnings.is_empty(), s.status_code.known().is_some());
    }
}
