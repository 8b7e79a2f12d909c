//! Generated hostile input: each gets its error, bounded in memory, and nothing panics.

use truc_edxml::{
    parse, parse_with, AttachmentSource, CalendarDate, DocumentBuilder, EdxmlError, Limits,
    OrgCode, PackageReader,
};

fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).expect("code")
}

fn sample_document() -> Vec<u8> {
    DocumentBuilder::new(
        code("000.00.05.G04"),
        vec![code("000.00.07.G04"), code("000.00.00.G12")],
        CalendarDate::new(2026, 11, 20).expect("date"),
        "1234",
        "TCĐBVN-VP",
    )
    .subject("Về việc triển khai")
    .attachment(AttachmentSource::new("a.pdf", b"%PDF-1.4 hello".to_vec()))
    .build()
}

#[test]
fn entity_bombs_and_external_entities_are_refused_before_any_expansion() {
    let lol = (1..=9)
        .map(|i| {
            format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&lol{};", i - 1).repeat(10)
            )
        })
        .collect::<String>();
    let cases = [
        format!("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol0 \"lol\">{lol}]><edXML>&lol9;</edXML>"),
        "<!DOCTYPE edXML SYSTEM \"http://example.invalid/edxml.dtd\"><edXML/>".into(),
        "<!DOCTYPE edXML [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><edXML/>".into(),
        "<?xml version=\"1.0\"?>\n<!DOCTYPE edXML [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><edXML>&xxe;</edXML>".into(),
    ];
    for case in cases {
        let err = parse(case.as_bytes()).expect_err(&case);
        assert_eq!(err.code(), "EDXML_DTD_FORBIDDEN", "{case}: {err}");
    }
    // An entity used without any DTD is refused by name.
    let err = parse(b"<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\">&xxe;</edXML>")
        .expect_err("entity");
    assert_eq!(err.code(), "EDXML_ENTITY_FORBIDDEN");
    assert!(err.to_string().contains("&xxe;"), "{err}");
}

#[test]
fn hundred_thousand_deep_nesting_is_refused_at_the_limit() {
    let depth = 100_000;
    let mut doc = String::from("<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\">");
    doc.push_str(&"<a>".repeat(depth));
    doc.push_str(&"</a>".repeat(depth));
    doc.push_str("</edXML>");
    let err = parse(doc.as_bytes()).expect_err("deep");
    assert_eq!(err.code(), "EDXML_TOO_DEEP");
    // The error comes at the limit, not after reading everything.
    match err {
        EdxmlError::TooDeep { offset, limit } => {
            assert_eq!(limit, Limits::default().max_depth);
            assert!(offset < 1_000, "refused at byte {offset}");
        }
        other => panic!("{other}"),
    }
}

/// Streams `total` bytes of generated input without ever building it, and returns the
/// error and how many bytes were fed before it.
fn stream_until_error(
    limits: Limits,
    prefix: &[u8],
    filler: &[u8],
    total: u64,
) -> (EdxmlError, u64) {
    let mut reader = PackageReader::new(limits);
    let mut fed = 0u64;
    reader.feed(prefix).expect("prefix is fine");
    fed += prefix.len() as u64;
    let chunk = filler.repeat((64 * 1024 / filler.len()).max(1));
    while fed < total {
        if let Err(e) = reader.feed(&chunk) {
            return (e, fed);
        }
        fed += chunk.len() as u64;
    }
    (reader.finish().expect_err("must fail"), fed)
}

#[test]
fn a_one_gib_package_is_refused_at_the_size_limit_without_being_held() {
    let limits = Limits {
        max_package_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    };
    let prefix = b"<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"><Junk>";
    let (err, fed) = stream_until_error(limits, prefix, b"filler text ", 1 << 30);
    assert_eq!(err.code(), "EDXML_TOO_LARGE");
    assert!(fed <= 8 * 1024 * 1024, "fed {fed} bytes past the limit");
    // The whole-buffer entry point refuses before parsing at all.
    let limits = Limits {
        max_package_bytes: 1024,
        ..Limits::default()
    };
    assert_eq!(
        parse_with(&vec![b' '; 2048], &limits)
            .expect_err("big")
            .code(),
        "EDXML_TOO_LARGE"
    );
}

#[test]
fn an_endless_attachment_is_refused_at_the_attachment_limit() {
    let limits = Limits {
        max_attachment_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let prefix = b"<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"><AttachmentEncoded><Attachment><AttachmentName>scan.pdf</AttachmentName><ContentTransferEncoded>";
    let (err, fed) = stream_until_error(limits, prefix, b"QUFBQUFBQUFB\r\n", 1 << 30);
    assert_eq!(err.code(), "EDXML_ATTACHMENT_TOO_LARGE", "{err}");
    assert!(err.to_string().contains("scan.pdf"), "{err}");
    assert!(fed < 2 * 1024 * 1024, "fed {fed}");
}

#[test]
fn endless_tags_fields_and_references_are_bounded() {
    let root = b"<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\">";
    // One tag that never ends.
    let (err, fed) = stream_until_error(Limits::default(), b"<edXML a=\"", b"x", 1 << 26);
    assert_eq!(err.code(), "EDXML_TOO_LONG", "{err}");
    assert!(fed < 1024 * 1024);
    // A Subject of endless text.
    let mut prefix = root.to_vec();
    prefix.extend_from_slice(b"<edXMLEnvelope><edXMLHeader><MessageHeader><Subject>");
    let limits = Limits {
        max_field_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mut reader = PackageReader::new(limits);
    reader.feed(&prefix).expect("prefix");
    reader
        .feed(&vec![b'a'; 200 * 1024])
        .expect("text is buffered up to the limit, then dropped");
    let err = reader.feed(b"</Subject>").expect_err("too long");
    assert_eq!(err.code(), "EDXML_TOO_LONG");
    assert!(err.to_string().contains("MessageHeader/Subject"), "{err}");
    // An endless reference name.
    let mut doc = root.to_vec();
    doc.extend_from_slice(b"<x>&");
    doc.extend(std::iter::repeat_n(b'a', 10_000));
    assert_eq!(parse(&doc).expect_err("ref").code(), "EDXML_MALFORMED");
}

#[test]
fn huge_unread_text_and_comments_stream_through() {
    // Text of elements the relay does not read, and comments, are not accumulated: a large
    // package of them is accepted with default limits.
    let mut doc = sample_document();
    let close = b"</edXML>\n";
    doc.truncate(doc.len() - close.len());
    doc.extend_from_slice(b"<!--");
    doc.extend(std::iter::repeat_n(b'-', 3 * 1024 * 1024));
    doc.extend_from_slice(b"-->");
    doc.extend_from_slice(b"<Extension>");
    doc.extend(std::iter::repeat_n(b'z', 3 * 1024 * 1024));
    doc.extend_from_slice(b"</Extension>");
    doc.extend_from_slice(close);
    parse(&doc).expect("valid");
}

#[test]
fn every_truncation_of_a_valid_package_is_an_error() {
    let doc = sample_document();
    let end = doc.len() - b"</edXML>\n".len();
    for cut in 0..end {
        let err = parse(&doc[..cut]).expect_err("truncated");
        let expected = if cut == 0 {
            "EDXML_EMPTY"
        } else {
            "EDXML_MALFORMED"
        };
        assert_eq!(err.code(), expected, "cut at {cut}: {err}");
    }
    // Cutting only the final newline leaves a complete package.
    parse(&doc[..doc.len() - 1]).expect("complete without the final newline");
}

#[test]
fn recipient_and_attachment_counts_are_bounded() {
    let limits = Limits {
        max_recipients: 5,
        max_attachments: 2,
        ..Limits::default()
    };
    let to: Vec<OrgCode> = (1..=6)
        .map(|i| code(&format!("000.00.{i:02}.G12")))
        .collect();
    let date = CalendarDate::new(2026, 1, 2).expect("date");
    let many_to = DocumentBuilder::new(code("000.00.05.G04"), to, date, "1", "X").build();
    assert_eq!(
        parse_with(&many_to, &limits).expect_err("to").code(),
        "EDXML_TOO_MANY_RECIPIENTS"
    );
    let mut b = DocumentBuilder::new(
        code("000.00.05.G04"),
        vec![code("000.00.07.G04")],
        date,
        "1",
        "X",
    );
    for i in 0..3 {
        b = b.attachment(AttachmentSource::new(&format!("{i}.pdf"), vec![1, 2, 3]));
    }
    assert_eq!(
        parse_with(&b.build(), &limits)
            .expect_err("attachments")
            .code(),
        "EDXML_TOO_MANY_ATTACHMENTS"
    );
}

#[test]
fn forged_and_odd_headers_get_clear_errors() {
    let date = CalendarDate::new(2026, 1, 2).expect("date");
    let ok = DocumentBuilder::new(
        code("000.00.05.G04"),
        vec![code("000.00.07.G04")],
        date,
        "1",
        "X",
    )
    .build();
    let text = String::from_utf8(ok).expect("utf8");
    // A recipient that is not a unit code.
    let bad_to = text.replacen(
        "<edXML:OrganId>000.00.07.G04</edXML:OrganId>",
        "<edXML:OrganId>nowhere</edXML:OrganId>",
        1,
    );
    let err = parse(bad_to.as_bytes()).expect_err("bad to");
    assert_eq!(err.code(), "EDXML_BAD_ORGAN_ID");
    assert!(
        err.to_string().contains("MessageHeader/To/OrganId"),
        "{err}"
    );
    // A business type outside 0-3.
    let bad_type = text.replace("<edXML:BussinessDocType>0<", "<edXML:BussinessDocType>7<");
    assert_eq!(
        parse(bad_type.as_bytes()).expect_err("type").code(),
        "EDXML_BAD_FIELD"
    );
    // No header at all.
    let no_header =
        b"<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"><edXMLEnvelope/></edXML>";
    assert_eq!(
        parse(no_header).expect_err("header").code(),
        "EDXML_NO_HEADER"
    );
    // Another root.
    assert_eq!(
        parse(b"<html/>").expect_err("root").code(),
        "EDXML_NOT_EDXML"
    );
    // Invalid UTF-8 in a field the relay reads.
    let bad_utf8 = text
        .replacen("<edXML:Subject>", "<edXML:Subject>\u{0}", 1)
        .replace('\u{0}', "\u{FFFD}");
    let mut bytes = bad_utf8.into_bytes();
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{FFFD}".as_bytes())
        .expect("marker");
    bytes[at] = 0xC3;
    bytes[at + 1] = 0x28;
    bytes[at + 2] = b' ';
    assert_eq!(
        parse(&bytes).expect_err("utf8").code(),
        "EDXML_INVALID_UTF8"
    );
}
